//! `check_urls`, `check_text` and `check_file`: what the alert's URLs, words and files say.

use super::lookalike::{is_internal, lookalike};
use super::sender::has_word;
use super::{ActionInput, ActionOutput, cap, finding, number, strings, strings_or};
use crate::hosts::{self, DomainName};
use serde_json::json;
use url::Position;

/// Known URL shorteners.
pub const SHORTENERS: &[&str] = &[
    "bit.ly",
    "tinyurl.com",
    "t.co",
    "goo.gl",
    "ow.ly",
    "is.gd",
    "buff.ly",
    "rebrand.ly",
    "cutt.ly",
    "t.ly",
    "tiny.cc",
    "shorturl.at",
    "rb.gy",
    "bl.ink",
    "s.id",
    "v.gd",
    "soo.gd",
    "lnkd.in",
    "qrco.de",
    "shorte.st",
    "adf.ly",
];

/// Top-level domains abused far more than they are used.
pub const SUSPICIOUS_TLDS: &[&str] = &[
    "zip", "mov", "top", "xyz", "click", "country", "gq", "tk", "ml", "cf", "ga", "work", "support", "rest", "fit", "link", "live", "cam",
    "icu", "buzz", "monster", "cyou", "sbs", "quest", "lol", "ru", "su",
];

/// Words of credential-harvesting pages, looked for in URL paths and queries.
pub const CREDENTIAL_KEYWORDS: &[&str] = &[
    "login",
    "log-in",
    "logon",
    "signin",
    "sign-in",
    "verify",
    "verification",
    "account",
    "password",
    "passwd",
    "update",
    "secure",
    "security",
    "webscr",
    "auth",
    "authenticate",
    "credential",
    "credentials",
    "wallet",
    "unlock",
    "confirm",
    "validate",
    "session",
    "reset",
    "owa",
    "sso",
    "mfa",
    "2fa",
    "billing",
];

/// Social-engineering cues by category: (finding rule, output key, phrases).
pub const TEXT_CUES: &[(&str, &str, &[&str])] = &[
    (
        "text_urgency",
        "urgency",
        &[
            "urgent",
            "urgently",
            "immediately",
            "immediate action",
            "within 24 hours",
            "within 48 hours",
            "action required",
            "action needed",
            "suspended",
            "will be suspended",
            "final notice",
            "final warning",
            "expires today",
            "as soon as possible",
            "asap",
            "last chance",
            "deactivated",
            "locked",
        ],
    ),
    (
        "text_payment",
        "payment",
        &[
            "invoice",
            "overdue",
            "wire transfer",
            "payment",
            "gift card",
            "gift cards",
            "bank details",
            "bank account",
            "remittance",
            "outstanding balance",
            "purchase order",
            "refund",
            "swift",
            "iban",
        ],
    ),
    (
        "text_credentials",
        "credentials",
        &[
            "password",
            "verify your account",
            "verify your identity",
            "confirm your account",
            "login",
            "log in",
            "sign in",
            "credentials",
            "mfa",
            "one-time code",
            "2fa",
            "reset your password",
            "username",
            "security code",
        ],
    ),
];

/// Names that only malware and attack tools carry.
pub const MALICIOUS_NAME_KEYWORDS: &[&str] = &[
    "ransom",
    "mimikatz",
    "cobalt",
    "cobaltstrike",
    "beacon",
    "trojan",
    "credential dump",
    "credential theft",
    "lsass",
    "meterpreter",
    "metasploit",
    "keylogger",
    "backdoor",
    "rootkit",
    "cryptolocker",
    "wannacry",
    "emotet",
    "qakbot",
    "trickbot",
    "icedid",
    "lockbit",
    "ryuk",
    "blackcat",
    "shadow cop",
    "vssadmin delete",
    "procdump",
    "sekurlsa",
    "rubeus",
    "bloodhound",
    "sharphound",
    "lazagne",
    "wiper",
    "infostealer",
    "stealer",
    "webshell",
];

const DOCUMENT_EXTS: &[&str] =
    &["pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "txt", "rtf", "jpg", "jpeg", "png", "gif", "csv", "zip", "html", "htm"];
const EXECUTABLE_EXTS: &[&str] =
    &["exe", "scr", "com", "pif", "bat", "cmd", "js", "jse", "vbs", "vbe", "wsf", "hta", "lnk", "ps1", "jar", "msi", "dll", "iso", "img"];
const SUSPICIOUS_PATHS: &[&str] = &[
    "\\appdata\\local\\temp\\",
    "\\appdata\\roaming\\",
    "\\windows\\temp\\",
    "\\users\\public\\",
    "\\programdata\\",
    "\\$recycle.bin\\",
    "\\downloads\\",
    "\\perflogs\\",
    "/tmp/",
    "/dev/shm/",
    "/var/tmp/",
];

/// Most URLs checked by one step.
const MAX_URLS: usize = 500;

/// Whether the words of a URL's path and query (lowercase, percent-decoded) name one of the
/// credential keywords; the first five found.
fn credential_words<'k>(tail: &str, keywords: &'k [String]) -> Vec<&'k str> {
    keywords
        .iter()
        .map(String::as_str)
        .filter(|k| tail.split(|c: char| !c.is_alphanumeric() && c != '-').any(|tok| tok == *k || (k.len() >= 5 && tok.contains(*k))))
        .take(5)
        .collect()
}

/// `check_urls`. Every URL is read as a browser reads it (WHATWG), so the host judged is the
/// host a click reaches; hosts are judged in both forms (punycode for lists, Unicode for
/// look-alikes). With `credential_cues` (what `check_text` found), weak link signals that
/// together make a credential phish are scored as such: a shortened link, or a link on an
/// often-abused TLD with credential words in its path, in a message asking for credentials.
pub fn check_urls(input: &ActionInput) -> ActionOutput {
    let p = input.params;
    let protected = &input.intel.protected_domains;
    let max_distance = number(p, "max_distance", 2.0).clamp(0.0, 10.0) as usize;
    // Shortener hosts in ASCII form, read once (a listed name that is no domain is skipped).
    let shorteners: Vec<(String, DomainName)> =
        strings_or(p, "shorteners", SHORTENERS).into_iter().filter_map(|s| DomainName::parse(&s).map(|d| (s, d))).collect();
    let tlds = strings_or(p, "suspicious_tlds", SUSPICIOUS_TLDS);
    let keywords = strings_or(p, "keywords", CREDENTIAL_KEYWORDS);
    let asks_credentials = !strings(p, "credential_cues").is_empty();
    let mut findings = Vec::new();
    let mut suspicious = Vec::new();
    let mut seen_hosts = Vec::new();
    // The first link of each credential-lure kind (one finding per message, not per link).
    let (mut shortened_lure, mut tld_lure) = (None, None);
    for url in strings(p, "urls").into_iter().take(MAX_URLS) {
        let Some(parsed) = hosts::web_url(&url) else { continue };
        let Some(host) = hosts::url_host_text(&parsed) else { continue };
        if !seen_hosts.contains(&host) {
            seen_hosts.push(host.clone());
        }
        if is_internal(&host, protected) {
            continue;
        }
        let before = findings.len();
        let u = Some(url.as_str());
        let (mut shortened, mut abused_tld) = (false, false);
        let is_ip = hosts::url_ip(&parsed).is_some();
        let name = if is_ip { None } else { DomainName::parse(&host) };
        if is_ip {
            findings.push(finding("url_ip_literal", format!("{url} points at a bare IP address"), u));
        } else if let Some(name) = &name {
            let ascii = name.ascii();
            if name.is_idn() {
                findings.push(finding("url_punycode", format!("{url} uses a punycode host {ascii} ({})", name.unicode()), u));
            }
            if let Some((s, _)) = shorteners.iter().find(|(_, d)| hosts::is_within(ascii, d.ascii())) {
                shortened = true;
                findings.push(finding("url_shortener", format!("{url} goes through the shortener {s}"), u));
            }
            let tld = ascii.rsplit('.').next().unwrap_or("");
            let tld_shown = name.unicode().rsplit('.').next().unwrap_or("");
            if tlds.iter().map(|t| t.trim_start_matches('.')).any(|t| t.eq_ignore_ascii_case(tld) || t.to_lowercase() == tld_shown) {
                abused_tld = true;
                findings.push(finding("url_suspicious_tld", format!("{url} uses the often-abused TLD .{tld_shown}"), u));
            }
            if let Some(l) = lookalike(name.unicode(), protected, max_distance) {
                findings.push(finding("url_lookalike_domain", format!("{url}: host {} {}", name.unicode(), l.reason), u));
            }
        }
        // The path, query and fragment as the browser sends them, percent-decoded so that
        // `/l%6Fgin` reads `login`.
        let tail = cap(&parsed[Position::BeforePath..], 4096);
        let tail = percent_encoding::percent_decode_str(tail).decode_utf8_lossy().to_lowercase();
        let hit = credential_words(&tail, &keywords);
        if !hit.is_empty() {
            findings.push(finding(
                "url_credential_keywords",
                format!("{url} has credential-harvesting words in its path: {}", hit.join(", ")),
                u,
            ));
        }
        if asks_credentials && shortened && shortened_lure.is_none() {
            shortened_lure = Some(url.clone());
        }
        if asks_credentials && abused_tld && !hit.is_empty() && tld_lure.is_none() {
            tld_lure = Some(url.clone());
        }
        if findings.len() > before {
            suspicious.push(url.clone());
        }
    }
    if let Some(url) = shortened_lure {
        findings.push(finding(
            "url_shortener_credential_lure",
            format!("{url} hides where it goes behind a shortener, in a message that asks for credentials"),
            Some(&url),
        ));
    }
    if let Some(url) = tld_lure {
        findings.push(finding(
            "url_tld_credential_lure",
            format!("{url} asks for credentials on an often-abused TLD, in a message that asks for credentials"),
            Some(&url),
        ));
    }
    let count = suspicious.len();
    ActionOutput { outputs: json!({"suspicious": suspicious, "hosts": seen_hosts, "count": count}), findings, ..Default::default() }
}

/// `check_text`: one finding per category with the cues found.
pub fn check_text(input: &ActionInput) -> ActionOutput {
    let texts: Vec<String> = strings(input.params, "texts").iter().map(|t| cap(t, 64 * 1024).to_lowercase()).collect();
    let mut findings = Vec::new();
    let mut outputs = serde_json::Map::new();
    for (rule, key, cues) in TEXT_CUES {
        let found: Vec<&str> = cues.iter().copied().filter(|c| texts.iter().any(|t| has_word(t, c))).collect();
        if !found.is_empty() {
            findings.push(finding(rule, format!("{key} cues: {}", found.join(", ")), None));
        }
        outputs.insert(key.to_string(), json!(found));
    }
    ActionOutput { outputs: outputs.into(), findings, ..Default::default() }
}

/// The last component of a Windows or POSIX path (command lines: the first token's).
fn base_name(s: &str) -> &str {
    let first = s.trim().trim_start_matches('"');
    let first = first.split('"').next().unwrap_or(first);
    first.rsplit(['\\', '/']).next().unwrap_or(first).trim()
}

/// Whether a file name hides an executable behind a document extension (`invoice.pdf.exe`).
pub fn double_extension(name: &str) -> bool {
    let lower = name.to_lowercase();
    let parts: Vec<&str> = lower.split('.').collect();
    parts.len() >= 3 && EXECUTABLE_EXTS.contains(&parts[parts.len() - 1].trim()) && DOCUMENT_EXTS.contains(&parts[parts.len() - 2].trim())
}

/// `check_file`.
pub fn check_file(input: &ActionInput) -> ActionOutput {
    let p = input.params;
    let keywords = strings_or(p, "keywords", MALICIOUS_NAME_KEYWORDS);
    let mut findings = Vec::new();
    let mut bad_hashes = Vec::new();
    for h in strings(p, "hashes") {
        let h = h.to_ascii_lowercase();
        if input.intel.bad_hashes.contains(&h) {
            findings.push(finding("intel_bad_hash", format!("file hash {h} is on the local bad-hash list"), Some(&h)));
            bad_hashes.push(h);
        }
    }
    let mut malicious = Vec::new();
    let mut doubles = Vec::new();
    let mut paths = Vec::new();
    for name in strings(p, "names").into_iter().take(500) {
        let shown = cap(&name, 512).to_string();
        let lower = shown.to_lowercase();
        let hits: Vec<&str> = keywords.iter().map(String::as_str).filter(|k| lower.contains(&k.to_lowercase())).take(5).collect();
        // One finding per known-bad word (not per name), so one tool named in a file name, a
        // command line and the detection title counts once.
        for k in &hits {
            findings.push(finding("file_malicious_name", format!("\"{shown}\" carries the known-bad word '{k}'"), Some(k)));
        }
        if !hits.is_empty() {
            malicious.push(shown.clone());
        }
        let base = base_name(&shown);
        if double_extension(base) {
            findings.push(finding(
                "file_double_extension",
                format!("\"{base}\" hides an executable behind a document extension"),
                Some(base),
            ));
            doubles.push(base.to_string());
        }
        let is_exe = base.rsplit('.').next().is_some_and(|e| EXECUTABLE_EXTS.contains(&e.to_lowercase().as_str()));
        if is_exe && let Some(sp) = SUSPICIOUS_PATHS.iter().find(|sp| lower.contains(*sp)) {
            // Keyed by the file name: the same executable seen as a path and as a command
            // line is one finding.
            findings.push(finding(
                "file_suspicious_path",
                format!("executable \"{shown}\" runs from a user-writable location ({})", sp.trim_matches(['\\', '/'])),
                Some(&base.to_lowercase()),
            ));
            paths.push(shown.clone());
        }
    }
    ActionOutput {
        outputs: json!({"bad_hashes": bad_hashes, "malicious_names": malicious, "double_extensions": doubles, "suspicious_paths": paths}),
        findings,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use serde_json::json;

    fn rule_names(out: &super::ActionOutput) -> Vec<String> {
        out.findings.iter().map(|f| f.rule.clone()).collect()
    }

    #[test]
    fn url_checks() {
        let out = run_simple(
            "check_urls",
            json!({"urls": [
                "http://examp1e-login.top/verify/account",
                "https://bit.ly/3xYz",
                "http://198.51.100.7/office365/login.php",
                "https://xn--exmple-cua.com/",
                "https://www.example.com/login",
                "https://docs.rust-lang.org/book/"
            ]}),
        );
        let r: Vec<(String, Option<String>)> = rules(&out);
        let has = |rule: &str, url: &str| r.contains(&(rule.to_string(), Some(url.to_string())));
        assert!(has("url_lookalike_domain", "http://examp1e-login.top/verify/account"));
        assert!(has("url_suspicious_tld", "http://examp1e-login.top/verify/account"));
        assert!(has("url_credential_keywords", "http://examp1e-login.top/verify/account"));
        assert!(has("url_shortener", "https://bit.ly/3xYz"));
        assert!(has("url_ip_literal", "http://198.51.100.7/office365/login.php"));
        assert!(has("url_credential_keywords", "http://198.51.100.7/office365/login.php"));
        assert!(has("url_punycode", "https://xn--exmple-cua.com/"));
        // Internal links and ordinary pages raise nothing.
        assert!(!r.iter().any(|(_, u)| u.as_deref() == Some("https://www.example.com/login")));
        assert!(!r.iter().any(|(_, u)| u.as_deref() == Some("https://docs.rust-lang.org/book/")));
        assert_eq!(out.outputs["count"], json!(4));
        assert!(run_simple("check_urls", json!({"urls": ["not a url", 5, null]})).findings.is_empty());
    }

    #[test]
    fn text_cues() {
        let out = run_simple("check_text", json!({"texts": ["URGENT: your mailbox will be suspended", ["Overdue invoice 44817", null]]}));
        assert_eq!(rule_names(&out), ["text_urgency", "text_payment"]);
        assert_eq!(out.outputs["urgency"], json!(["urgent", "suspended", "will be suspended"]));
        let out = run_simple("check_text", json!({"texts": "Please verify your account and confirm your password"}));
        assert_eq!(rule_names(&out), ["text_credentials"]);
        assert!(run_simple("check_text", json!({"texts": ["Company newsletter: June highlights"]})).findings.is_empty());
        // Words inside other words are not cues.
        assert!(run_simple("check_text", json!({"texts": ["prepayments are urgentish"]})).findings.is_empty());
    }

    #[test]
    fn file_checks() {
        let out = run_simple(
            "check_file",
            json!({"hashes": ["2FD727CC4F93D6122E0C77BBAA05FA82793404156ABA313D82BC39ADFB049D0F", "00"],
                   "names": ["invoice.pdf.exe", "C:\\Users\\Public\\svc.exe", "mimikatz.exe", "report.docx", "C:\\Windows\\System32\\cmd.exe"]}),
        );
        assert_eq!(rule_names(&out), ["intel_bad_hash", "file_double_extension", "file_suspicious_path", "file_malicious_name"]);
        assert_eq!(out.findings[1].indicator.as_deref(), Some("invoice.pdf.exe"));
        assert!(run_simple("check_file", json!({})).findings.is_empty());
        assert!(super::double_extension("Invoice.PDF.exe"));
        assert!(!super::double_extension("setup.exe"));
        assert_eq!(super::base_name("\"C:\\a b\\x.exe\" --flag"), "x.exe");
    }
}
