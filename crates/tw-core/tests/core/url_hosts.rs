//! The host the entities report for a URL is the host a browser goes to: the WHATWG URL
//! parser's (the `url` crate), for adversarial URLs (backslashes, `@` and userinfo, ports,
//! IPv6, percent-encoding, Unicode hosts, tabs and newlines the standard drops), whether the
//! URL is a value of its own or written inside a mail body.

use proptest::prelude::*;
use serde_json::json;
use tw_core::formats::entities::{EntitySet, url_host, walk};
use tw_core::{Entity, EntityKind};
use url::{Host, Url};

/// What a browser reads as the URL's host: `None` unless it is an http(s)/ftp URL with a host.
fn browser_host(s: &str) -> Option<String> {
    let url = Url::parse(s).ok().filter(|u| matches!(u.scheme(), "http" | "https" | "ftp"))?;
    match url.host()? {
        Host::Domain(d) => Some(d.to_string()),
        Host::Ipv4(a) => Some(a.to_string()),
        Host::Ipv6(a) => Some(a.to_string()),
    }
}

fn urls(set: EntitySet) -> Vec<String> {
    set.into_vec().into_iter().filter(|e: &Entity| e.kind == EntityKind::Url).map(|e| e.value).collect()
}

/// The hosts of the URL entities found in `payload` by the generic walker.
fn walked_hosts(payload: serde_json::Value) -> Vec<Option<String>> {
    let mut set = EntitySet::new();
    walk(&payload, &mut set);
    urls(set).iter().map(|u| url_host(u)).collect()
}

fn arb_scheme() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("https://"),
        Just("http://"),
        Just("HTTPS://"),
        Just("hTtP://"),
        Just("ftp://"),
        Just("https:"),
        Just("https:/"),
        Just("https:\\\\"),
        Just("https:/\\"),
        Just("http:///"),
        Just("javascript:"),
        Just("mailto:"),
        Just("file://"),
    ]
    .prop_map(str::to_string)
}

fn arb_userinfo() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(""),
        Just("user@"),
        Just("user:pw@"),
        Just("good.com@"),
        Just("good.com\\@"),
        Just("evil.example\\@"),
        Just("a@b@"),
        Just("%40@"),
        Just("good.com%2F@"),
        Just(":@"),
        Just("üser@"),
    ]
    .prop_map(str::to_string)
}

fn arb_host() -> impl Strategy<Value = String> {
    let fixed = prop_oneof![
        Just("evil.example"),
        Just("EVIL.Example"),
        Just("good.com"),
        Just("evil.example."),
        Just("%65vil.example"),
        Just("evil%2Eexample"),
        Just("exämple.com"),
        Just("xn--exmple-cua.com"),
        Just("раураl.com"),
        Just("ｅvil.example"),
        Just("evil。example"),
        Just("192.0.2.1"),
        Just("0x7f.1"),
        Just("3221225985"),
        Just("[2001:db8::1]"),
        Just("[::ffff:192.0.2.1]"),
        Just("[2001:db8::1"),
        Just("evil.example\\"),
        Just("evil.example#good.com"),
        Just("evil.example?good.com"),
        Just(""),
        Just("exa mple.com"),
    ]
    .prop_map(str::to_string);
    prop_oneof![fixed, "[a-z0-9.-]{1,20}"]
}

fn arb_port() -> impl Strategy<Value = String> {
    prop_oneof![Just(""), Just(":8443"), Just(":"), Just(":0"), Just(":99999"), Just(":443"), Just(":x")].prop_map(str::to_string)
}

fn arb_rest() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("/login".to_string()),
        Just("\\@good.com/login".to_string()),
        Just("/@good.com".to_string()),
        Just("?next=https://good.com/".to_string()),
        Just("#@good.com".to_string()),
        "[/\\\\@?#%.:a-z0-9é\u{2044}]{0,24}",
    ]
}

/// A URL assembled from adversarial parts, with ASCII tabs and newlines (which the standard
/// drops) inserted at random places after the scheme.
fn arb_url() -> impl Strategy<Value = String> {
    (
        arb_scheme(),
        arb_userinfo(),
        arb_host(),
        arb_port(),
        arb_rest(),
        prop::collection::vec((any::<prop::sample::Index>(), 0..3usize), 0..3),
    )
        .prop_map(|(scheme, user, host, port, rest, breaks)| {
            let mut tail: Vec<char> = format!("{user}{host}{port}{rest}").chars().collect();
            for (at, which) in breaks {
                let i = at.index(tail.len() + 1);
                tail.insert(i, ['\t', '\n', '\r'][which]);
            }
            format!("{scheme}{}", tail.into_iter().collect::<String>())
        })
}

/// Characters that end a URL written in plain text (besides whitespace).
const TEXT_DELIMITERS: &str = "'\"<>()[]{}|`,;";

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A URL as a value of its own: added as a URL entity, or found by the walker under a key
    /// that says it is a URL or one that does not, it reports the browser's host or nothing,
    /// and nothing only when the browser finds no host either.
    #[test]
    fn a_urls_host_is_the_browsers(url in arb_url()) {
        let want = browser_host(&url);
        let mut set = EntitySet::new();
        set.add(EntityKind::Url, &url, None);
        let added: Vec<Option<String>> = urls(set).iter().map(|u| url_host(u)).collect();
        prop_assert_eq!(&added, &want.iter().cloned().map(Some).collect::<Vec<_>>(), "added {:?}", url);
        prop_assert_eq!(url_host(&url), want.clone());
        prop_assert_eq!(walked_hosts(json!({"url": url})), want.iter().cloned().map(Some).collect::<Vec<_>>());
        // Under an unnamed key a value with a space is prose; the generated URLs have none
        // outside an invalid host.
        let walked = walked_hosts(json!({"x": url}));
        if !url.contains(' ') {
            prop_assert_eq!(walked, want.iter().cloned().map(Some).collect::<Vec<_>>());
        } else {
            prop_assert!(walked.is_empty() || walked == vec![want.clone()]);
        }
    }

    /// The same URL written in a mail body: in an HTML attribute (where the browser drops the
    /// tabs and newlines inside it), and in plain text when it holds no whitespace or text
    /// delimiter (where a reader's mail client would end the link).
    #[test]
    fn a_url_in_a_body_has_the_browsers_host(url in arb_url()) {
        let want = browser_host(&url);
        let scheme_ok = url.get(..4).is_some_and(|s| s.eq_ignore_ascii_case("http"));
        if scheme_ok && !url.contains('"') {
            let mut set = EntitySet::new();
            set.add_urls_in_text(&format!("<p>Your document is ready: <a href=\"{url}\">good.com</a></p>"), None);
            let got = urls(set).first().and_then(|u| url_host(u));
            prop_assert_eq!(got, want.clone(), "in an attribute: {:?}", url);
        }
        let plain = !url.chars().any(|c| c.is_whitespace() || TEXT_DELIMITERS.contains(c));
        if scheme_ok && plain {
            let mut set = EntitySet::new();
            set.add_urls_in_text(&format!("Hello,\nplease sign in at {url} before Friday.\nIT"), None);
            let got = urls(set).first().and_then(|u| url_host(u));
            prop_assert_eq!(got, want, "in text: {:?}", url);
        }
    }
}

#[test]
fn the_reported_case_and_its_cousins() {
    for (url, host) in [
        ("https://evil.example\\@good.com/login", Some("evil.example")),
        ("https://good.com@evil.example/login", Some("evil.example")),
        ("https://evil.example%5C@good.com/login", Some("good.com")),
        ("https://evil.exa\nmple/login", Some("evil.example")),
        ("https:\\\\evil.example\\login", Some("evil.example")),
        ("https://xn--exmple-cua.com/", Some("xn--exmple-cua.com")),
        ("https://exämple.com/", Some("xn--exmple-cua.com")),
        ("http://[2001:db8::1]:8080/", Some("2001:db8::1")),
        ("https://", None),
    ] {
        assert_eq!(browser_host(url).as_deref(), host, "{url}: the test's reading");
        assert_eq!(url_host(url).as_deref(), host, "{url}");
    }
}

#[test]
fn a_body_link_is_extracted_with_the_browsers_host() {
    let mut set = EntitySet::new();
    set.add_urls_in_text(
        "Dear user,\r\nyour mailbox is full. Sign in at https://evil.example\\@good.com/login to keep it.\r\n\
         <a href=\"https://evil.exa\n\tmple/verify\">https://good.com/verify</a>",
        None,
    );
    let got = urls(set);
    assert_eq!(got, ["https://evil.example/@good.com/login", "https://evil.example/verify", "https://good.com/verify"]);
    assert_eq!(url_host(&got[0]).as_deref(), Some("evil.example"));
}
