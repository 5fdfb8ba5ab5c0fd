//! `check_sender`: who the mail claims to come from, against the protected domains.

use super::indicators::{email_domain, split_mailbox};
use super::lookalike::{brand_of, is_internal, lookalike, normalize_domain};
use super::{ActionInput, ActionOutput, finding, number, strings, strings_or};
use crate::hosts::DomainName;
use serde_json::json;

/// Free-mail providers: anyone can get an address there.
pub const FREE_MAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "yahoo.com",
    "ymail.com",
    "aol.com",
    "icloud.com",
    "me.com",
    "mail.com",
    "gmx.com",
    "gmx.net",
    "gmx.de",
    "web.de",
    "proton.me",
    "protonmail.com",
    "zoho.com",
    "yandex.com",
    "yandex.ru",
    "mail.ru",
    "qq.com",
    "163.com",
];

/// Display-name words that claim an internal role.
pub const INTERNAL_KEYWORDS: &[&str] = &[
    "ceo",
    "cfo",
    "cto",
    "president",
    "director",
    "it support",
    "it department",
    "it helpdesk",
    "helpdesk",
    "help desk",
    "service desk",
    "administrator",
    "admin",
    "hr",
    "human resources",
    "payroll",
    "finance",
    "accounts payable",
    "security team",
];

/// Whether `word` occurs in `text` (both lowercase) as a whole word or phrase.
pub(crate) fn has_word(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let mut from = 0;
    while let Some(rel) = text.get(from..).and_then(|t| t.find(word)) {
        let start = from + rel;
        let end = start + word.len();
        let before_ok = text[..start].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
        let after_ok = text[end..].chars().next().is_none_or(|c| !c.is_alphanumeric());
        if before_ok && after_ok {
            return true;
        }
        from = start + word.chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// The protected domain a (lowercase) display name claims: named outright, or by its brand as a
/// word (brands of 4 characters or more). `protected`: each domain with its brand, worked out once.
fn claimed_org<'a>(lname: &str, protected: &'a [(String, String)]) -> Option<&'a str> {
    protected
        .iter()
        .find(|(pd, brand)| lname.contains(pd.as_str()) || (brand.chars().count() >= 4 && has_word(lname, brand)))
        .map(|(pd, _)| pd.as_str())
}

/// Domains of e-mail addresses written inside a display name (`"ceo@example.com" <x@evil>`).
fn emails_in(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || "<>()\"',;[]".contains(c)).filter(|t| t.contains('@')).filter_map(email_domain).collect()
}

/// `check_sender`.
pub fn check_sender(input: &ActionInput) -> ActionOutput {
    let p = input.params;
    let protected: Vec<String> = input.intel.protected_domains.iter().map(|d| normalize_domain(d)).filter(|d| !d.is_empty()).collect();
    // Each brand once (IDNA and the public suffix list), not per sender and display name.
    let brands: Vec<(String, String)> = protected.iter().map(|pd| (pd.clone(), brand_of(pd))).collect();
    let max_distance = number(p, "max_distance", 2.0).clamp(0.0, 10.0) as usize;
    let free_mail = strings_or(p, "free_mail_domains", FREE_MAIL_DOMAINS);
    let keywords = strings_or(p, "internal_keywords", INTERNAL_KEYWORDS);
    let mut display_names: Vec<String> = strings(p, "display_names");
    let mut addresses = Vec::new();
    for s in strings(p, "senders") {
        let (name, addr) = split_mailbox(&s);
        if let Some(n) = name
            && !display_names.contains(&n)
        {
            display_names.push(n);
        }
        if let Some(a) = addr
            && !addresses.contains(&a)
        {
            addresses.push(a);
        }
    }
    let mut findings = Vec::new();
    let mut domains = Vec::new();
    let mut lookalikes = Vec::new();
    let mut internal_count = 0;
    let mut freemail = false;
    for addr in &addresses {
        let Some(domain) = email_domain(addr) else { continue };
        if !domains.contains(&domain) {
            domains.push(domain.clone());
        }
        let internal = is_internal(&domain, &protected);
        if internal {
            internal_count += 1;
        }
        if let Some(l) = lookalike(&domain, &protected, max_distance) {
            findings.push(finding("sender_lookalike_domain", format!("sender {addr}: domain {domain} {}", l.reason), Some(&domain)));
            lookalikes.push(json!({"domain": domain, "protected": l.protected, "reason": l.reason}));
        }
        // Either form of an internationalized name: `exämple.com` is `xn--exmple-cua.com`.
        if let Some(name) = DomainName::parse(&domain).filter(DomainName::is_idn) {
            findings.push(finding(
                "sender_punycode_domain",
                format!("sender {addr} uses an internationalized (punycode) domain {} ({})", name.ascii(), name.unicode()),
                Some(&domain),
            ));
        }
        let is_free = free_mail.iter().any(|f| f.eq_ignore_ascii_case(&domain));
        freemail |= is_free;
        for name in &display_names {
            let lname = name.to_lowercase();
            // An address in the display name that is not the sender's.
            if let Some(other) = emails_in(&lname).into_iter().find(|d| *d != domain) {
                findings.push(finding(
                    "sender_display_name_mismatch",
                    format!("display name \"{name}\" shows an address at {other} but the mail comes from {addr}"),
                    Some(addr),
                ));
                continue;
            }
            // A protected domain or brand named by an outsider.
            if !internal && let Some(pd) = claimed_org(&lname, &brands) {
                findings.push(finding(
                    "sender_display_name_mismatch",
                    format!("display name \"{name}\" claims {pd} but the mail comes from {addr}"),
                    Some(addr),
                ));
                continue;
            }
            if is_free && let Some(k) = keywords.iter().find(|k| has_word(&lname, &k.to_lowercase())) {
                findings.push(finding(
                    "sender_freemail_impersonation",
                    format!("free-mail sender {addr} uses the internal-sounding display name \"{name}\" ({k})"),
                    Some(addr),
                ));
            }
        }
        // A free-mail sender whose display name names the organisation is covered above as a
        // mismatch; record the free-mail impersonation too.
        if is_free && !findings.iter().any(|f| f.rule == "sender_freemail_impersonation" && f.indicator.as_deref() == Some(addr)) {
            let claims_org = display_names.iter().any(|n| claimed_org(&n.to_lowercase(), &brands).is_some());
            if claims_org {
                findings.push(finding(
                    "sender_freemail_impersonation",
                    format!("free-mail sender {addr} claims to be the organization"),
                    Some(addr),
                ));
            }
        }
    }
    let internal = !addresses.is_empty() && internal_count == addresses.len();
    ActionOutput {
        outputs: json!({
            "senders": addresses,
            "domains": domains,
            "display_names": display_names,
            "internal": internal,
            "lookalike": !lookalikes.is_empty(),
            "lookalikes": lookalikes,
            "freemail": freemail,
        }),
        findings,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use serde_json::json;

    fn check(params: serde_json::Value) -> super::ActionOutput {
        run_simple("check_sender", params)
    }

    #[test]
    fn lookalike_sender() {
        let out = check(json!({"senders": ["billing@examp1e.com"]}));
        assert_eq!(rules(&out), [("sender_lookalike_domain".into(), Some("examp1e.com".into()))]);
        assert_eq!(out.outputs["lookalike"], json!(true));
        assert_eq!(out.outputs["internal"], json!(false));
        let out = check(json!({"senders": ["Security <no-reply@rnicrosoft.com>"]}));
        assert_eq!(out.findings[0].rule, "sender_lookalike_domain");
        assert!(out.findings[0].detail.contains("microsoft.com"), "{}", out.findings[0].detail);
        // The distance threshold is a parameter.
        assert!(
            check(json!({"senders": ["a@exannple.com"], "max_distance": 0}))
                .findings
                .iter()
                .all(|f| f.rule != "sender_lookalike_domain" || f.detail.contains("confusable"))
        );
    }

    #[test]
    fn internal_sender_is_clean() {
        let out = check(json!({"senders": ["news@example.com", "hr@mail.example.com"], "display_names": ["Example Communications"]}));
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        assert_eq!(out.outputs["internal"], json!(true));
        assert_eq!(check(json!({"senders": []})).outputs["internal"], json!(false));
    }

    #[test]
    fn punycode_sender() {
        let out = check(json!({"senders": ["a@xn--exmple-cua.com"]}));
        assert!(rules(&out).contains(&("sender_punycode_domain".into(), Some("xn--exmple-cua.com".into()))));
    }

    #[test]
    fn display_name_mismatch() {
        let out = check(json!({"senders": ["\"ceo@example.com\" <x@evil-mail.test>"]}));
        assert_eq!(rules(&out), [("sender_display_name_mismatch".into(), Some("x@evil-mail.test".into()))]);
        let out = check(json!({"senders": ["x@evil-mail.test"], "display_names": ["Microsoft Account Team"]}));
        assert_eq!(out.findings[0].rule, "sender_display_name_mismatch");
    }

    #[test]
    fn freemail_claiming_internal_role() {
        let out = check(json!({"senders": ["IT Helpdesk <it.helpdesk.example@gmail.com>"]}));
        assert_eq!(rules(&out), [("sender_freemail_impersonation".into(), Some("it.helpdesk.example@gmail.com".into()))]);
        let out = check(json!({"senders": ["Example Payroll <pay@outlook.com>"]}));
        let r: Vec<String> = out.findings.iter().map(|f| f.rule.clone()).collect();
        assert!(r.contains(&"sender_display_name_mismatch".into()) && r.contains(&"sender_freemail_impersonation".into()), "{r:?}");
        assert!(check(json!({"senders": ["Grandma <granny@gmail.com>"]})).findings.is_empty());
    }

    #[test]
    fn words() {
        assert!(super::has_word("it support team", "it support"));
        assert!(!super::has_word("hrm", "hr"));
        assert!(super::has_word("the hr.", "hr"));
    }
}
