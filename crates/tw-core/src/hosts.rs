//! Hosts as a browser and DNS see them: URLs parsed by the WHATWG URL standard (the `url`
//! crate, what every browser follows), domain names in both their ASCII (punycode) and Unicode
//! forms (IDNA/UTS #46), registrable domains from the Public Suffix List (`psl`), and the
//! confusable skeletons of Unicode's UTS #39 (`unicode-security`).
//!
//! Why not hand parsing: `https://evil.example\@good.com/` goes to `evil.example` in a browser
//! (`\` ends the host of an http(s) URL), tabs and newlines inside a URL are dropped, hosts are
//! percent-decoded and IDNA-mapped (`https://EVIL.%65xample/` is `evil.example`). A triage that
//! reads another host than the browser's can be steered by the attacker.
//!
//! Every function here takes attacker-controlled text: none panics, and each bounds its input.

use std::net::IpAddr;
use url::{Host, Url};

/// Longest URL parsed (bytes); longer text is never a URL entity.
pub const MAX_URL_LEN: usize = 2048;
/// Longest domain name (bytes) accepted in either form; a DNS name has at most 253 in ASCII,
/// and a Unicode character takes at most 4 bytes.
const MAX_DOMAIN_INPUT: usize = 253 * 4;

/// Whether `s` starts with the scheme `http:`, `https:` or `ftp:` (ASCII case ignored), as
/// the URL parser reads it: ASCII tabs and newlines anywhere are dropped before parsing, so
/// they are skipped here too. A cheap test that keeps the parser away from ordinary text.
pub fn has_web_scheme(s: &str) -> bool {
    let mut scheme = [0u8; 5];
    for (len, b) in s.bytes().filter(|b| !matches!(b, b'\t' | b'\n' | b'\r')).enumerate() {
        if b == b':' {
            return matches!(&scheme[..len], b"http" | b"https" | b"ftp");
        }
        if len == scheme.len() || !b.is_ascii_alphabetic() {
            return false;
        }
        scheme[len] = b.to_ascii_lowercase();
    }
    false
}

/// An `http`, `https` or `ftp` URL with a host, parsed as a browser parses it; `None` for
/// anything else (other schemes, no host, invalid, longer than [`MAX_URL_LEN`]). Leading and
/// trailing spaces and control characters are dropped, as the standard says.
pub fn web_url(s: &str) -> Option<Url> {
    let t = s.trim_matches(|c: char| c <= ' ');
    if t.is_empty() || t.len() > MAX_URL_LEN || !has_web_scheme(t) {
        return None;
    }
    let url = Url::parse(t).ok()?;
    (matches!(url.scheme(), "http" | "https" | "ftp") && url.host().is_some()).then_some(url)
}

/// The host of a parsed URL as text: a domain in its ASCII (punycode) form, lowercase, as the
/// parser reports it; an IP address in its canonical form (IPv6 without brackets).
pub fn url_host_text(url: &Url) -> Option<String> {
    match url.host()? {
        Host::Domain(d) => Some(d.to_string()),
        Host::Ipv4(a) => Some(a.to_string()),
        Host::Ipv6(a) => Some(a.to_string()),
    }
}

/// The IP address a URL points at, if its host is one.
pub fn url_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        Host::Domain(_) => None,
        Host::Ipv4(a) => Some(IpAddr::V4(a)),
        Host::Ipv6(a) => Some(IpAddr::V6(a)),
    }
}

/// A domain name in its two forms: ASCII (punycode, `xn--exmple-cua.com`), which is what DNS,
/// URL parsers and most intel feeds use, and Unicode (`exämple.com`), which is what a person
/// sees and what look-alike checks compare. Both are lowercase, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainName {
    ascii: String,
    unicode: String,
}

impl DomainName {
    /// Reads a domain in either form (IDNA/UTS #46 mapping: case folded, full stops such as
    /// `。` read as dots). `None` when it is not a valid name, or is an IP address.
    pub fn parse(s: &str) -> Option<Self> {
        let t = s.trim().trim_end_matches(['.', '。', '．', '｡']);
        if t.is_empty() || t.len() > MAX_DOMAIN_INPUT || t.parse::<IpAddr>().is_ok() {
            return None;
        }
        // The URL standard's deny list: no spaces, controls or URL delimiters in a host.
        let ascii = idna::domain_to_ascii_cow(t.as_bytes(), idna::AsciiDenyList::URL).ok()?;
        let ascii = ascii.trim_end_matches('.');
        if ascii.is_empty() || ascii.len() > 253 || ascii.split('.').any(str::is_empty) {
            return None;
        }
        // A label that is not valid punycode stays as written: the name is still compared,
        // only without a Unicode form.
        let (unicode, ok) = idna::domain_to_unicode(ascii);
        let unicode = if ok.is_ok() { unicode } else { ascii.to_string() };
        Some(DomainName { ascii: ascii.to_string(), unicode })
    }

    /// The ASCII (punycode) form.
    pub fn ascii(&self) -> &str {
        &self.ascii
    }

    /// The Unicode form (the ASCII form when no label is punycode).
    pub fn unicode(&self) -> &str {
        &self.unicode
    }

    /// Whether any label is internationalized (punycode in the ASCII form).
    pub fn is_idn(&self) -> bool {
        self.ascii.split('.').any(|l| l.len() > 4 && l.as_bytes()[..4].eq_ignore_ascii_case(b"xn--"))
    }

    /// How many trailing labels are the public suffix (`co.uk`: 2), by the Public Suffix List;
    /// a TLD the list does not know counts as one label (the list's default rule).
    pub fn suffix_labels(&self) -> usize {
        // The list holds internationalized suffixes in their Unicode form.
        psl::suffix_str(&self.unicode).map_or(1, |s| s.split('.').count())
    }

    /// The registrable domain (eTLD+1: `mail.example.co.uk` -> `example.co.uk`); `None` when
    /// the name is itself a public suffix or a single label.
    pub fn registrable(&self) -> Option<DomainName> {
        let labels = self.suffix_labels() + 1;
        let count = self.unicode.split('.').count();
        if count < labels || self.ascii.split('.').count() != count {
            return None;
        }
        // Both forms have `count` labels, so the last `labels` of each are the same labels.
        let last = |s: &str| s.split('.').skip(count - labels).collect::<Vec<_>>().join(".");
        Some(DomainName { ascii: last(&self.ascii), unicode: last(&self.unicode) })
    }

    /// The organisation's label: the registrable domain without its public suffix
    /// (`mail.example.co.uk` -> `example`), in Unicode form; the first label when the name has
    /// no registrable domain.
    pub fn brand(&self) -> String {
        let reg = self.registrable();
        let name = reg.as_ref().map_or(self.unicode.as_str(), |r| r.unicode.as_str());
        name.split('.').next().unwrap_or("").to_string()
    }

    /// The labels before the public suffix (`a.examp1e-login.co.uk` -> `a`, `examp1e-login`).
    pub fn labels_before_suffix(&self) -> Vec<&str> {
        let labels: Vec<&str> = self.unicode.split('.').collect();
        let keep = labels.len().saturating_sub(self.suffix_labels());
        labels[..keep].to_vec()
    }
}

/// Whether `host` is `parent` or one of its subdomains (both in one form, lowercase).
pub fn is_within(host: &str, parent: &str) -> bool {
    !parent.is_empty()
        && (host == parent
            || (host.len() > parent.len() && host.ends_with(parent) && host.as_bytes()[host.len() - parent.len() - 1] == b'.'))
}

/// Longest text given a skeleton (characters); hosts and their labels are far shorter.
const MAX_SKELETON_INPUT: usize = 256;

/// What a name looks like: the UTS #39 skeleton (Unicode's confusables data: Cyrillic `а` and
/// Latin `a`, `rn` and `m`, `0` and `O`, `1` and `l` fold together), made caseless and without
/// diacritics, since hosts are compared ignoring case and an accent is easily missed:
/// skeleton, drop combining marks, lowercase, skeleton again (`g00gle` -> `gOOgle` -> `google`).
/// Unicode's data maps single characters only (`m` -> `rn`), so the two ASCII pairs it cannot
/// express, `vv` (for `w`) and `cl` (for `d`), are folded after it. Input past 256 characters
/// is cut there.
pub fn skeleton(s: &str) -> String {
    let capped: String = s.chars().take(MAX_SKELETON_INPUT).flat_map(char::to_lowercase).collect();
    let once: String = unicode_security::skeleton(&capped)
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    let twice: String = unicode_security::skeleton(&once).collect();
    twice.replace("vv", "w").replace("cl", "d")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> Option<String> {
        web_url(s).as_ref().and_then(url_host_text)
    }

    #[test]
    fn hosts_are_the_browsers() {
        assert_eq!(host("https://evil.example\\@good.com/login").as_deref(), Some("evil.example"));
        assert_eq!(host("https://user:pw@evil.example:8443/x").as_deref(), Some("evil.example"));
        assert_eq!(host("https://good.com@evil.example/").as_deref(), Some("evil.example"));
        assert_eq!(host("HTTPS://EVIL.%65xample/").as_deref(), Some("evil.example"));
        assert_eq!(host("https://evil.exa\tmple/").as_deref(), Some("evil.example"));
        assert_eq!(host("ht\ntps://evil.example/").as_deref(), Some("evil.example"));
        assert_eq!(host("https:evil.example/").as_deref(), Some("evil.example"));
        assert_eq!(host("https:/\\evil.example/").as_deref(), Some("evil.example"));
        assert_eq!(host("http://[2001:db8::1]:80/").as_deref(), Some("2001:db8::1"));
        assert_eq!(host("http://0x7f.1/").as_deref(), Some("127.0.0.1"));
        assert_eq!(host("https://exämple.com/").as_deref(), Some("xn--exmple-cua.com"));
        assert_eq!(host("javascript:alert(1)"), None);
        assert_eq!(host("mailto:a@b.example"), None);
        assert_eq!(host("https://"), None);
        assert_eq!(host("http://exa mple.com/"), None);
        assert!(!has_web_scheme("httpss://x") && !has_web_scheme("xhttp://x") && has_web_scheme("FtP://x"));
    }

    #[test]
    fn domain_forms() {
        let a = DomainName::parse("xn--exmple-cua.com").unwrap();
        let u = DomainName::parse("EXÄMPLE.com.").unwrap();
        assert_eq!(a, u);
        assert_eq!((a.ascii(), a.unicode()), ("xn--exmple-cua.com", "exämple.com"));
        assert!(a.is_idn() && !DomainName::parse("example.com").unwrap().is_idn());
        assert_eq!(DomainName::parse("example。com").unwrap().ascii(), "example.com");
        assert_eq!(DomainName::parse("10.0.0.1"), None);
        assert_eq!(DomainName::parse("a..b"), None);
        assert_eq!(DomainName::parse(""), None);
        // Invalid punycode, spaces and URL delimiters are no domain name.
        assert_eq!(DomainName::parse("xn--a.com"), None);
        assert_eq!(DomainName::parse("not a domain"), None);
        assert_eq!(DomainName::parse("evil.example\\@good.com"), None);
    }

    #[test]
    fn registrable_domains_follow_the_public_suffix_list() {
        let reg = |s: &str| DomainName::parse(s).and_then(|d| d.registrable()).map(|r| r.ascii().to_string());
        assert_eq!(reg("mail.example.co.uk").as_deref(), Some("example.co.uk"));
        assert_eq!(reg("a.b.evil.example").as_deref(), Some("evil.example"));
        assert_eq!(reg("login.x.github.io").as_deref(), Some("x.github.io"));
        assert_eq!(reg("co.uk"), None);
        assert_eq!(reg("localhost"), None);
        assert_eq!(DomainName::parse("mail.acme.co.uk").unwrap().brand(), "acme");
        assert_eq!(DomainName::parse("xn--exmple-cua.com").unwrap().brand(), "exämple");
        assert_eq!(DomainName::parse("a.examp1e-login.co.uk").unwrap().labels_before_suffix(), ["a", "examp1e-login"]);
    }

    #[test]
    fn skeletons_fold_confusables() {
        for (a, b) in [
            ("rnicrosoft", "microsoft"),
            ("examp1e", "example"),
            ("g00gle", "google"),
            ("vvave", "wave"),
            ("ехаmple", "example"),
            ("exämple", "example"),
            ("PayPal", "paypal"),
            ("раураl", "paypal"),
            ("cl0udflare", "cloudflare"),
        ] {
            assert_eq!(skeleton(a), skeleton(b), "{a} {b}");
        }
        assert_ne!(skeleton("example"), skeleton("exemple"));
        assert_eq!(skeleton(&"a".repeat(10_000)).chars().count(), MAX_SKELETON_INPUT);
    }

    proptest::proptest! {
        /// Attacker-controlled text never panics any reading of a host, and what is read
        /// holds together: both forms of a name read back as the same name.
        #[test]
        fn any_text_is_read_without_panic(prefix in "(https?://|ftp:|xn--|)", s in "\\PC{0,60}") {
            let text = format!("{prefix}{s}");
            if let Some(url) = web_url(&text) {
                let _ = (url_host_text(&url), url_ip(&url));
            }
            if let Some(name) = DomainName::parse(&text) {
                let _ = (name.registrable(), name.brand(), name.labels_before_suffix(), name.is_idn());
                proptest::prop_assert_eq!(DomainName::parse(name.unicode()), Some(name.clone()));
                proptest::prop_assert_eq!(DomainName::parse(name.ascii()), Some(name.clone()));
            }
            let _ = skeleton(&text);
        }
    }
}
