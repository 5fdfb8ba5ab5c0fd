//! The built-in playbooks on realistic payloads: a look-alike phish, a benign internal
//! newsletter, a CrowdStrike detection of a known-bad hash on a critical server, every vendor
//! fixture, determinism, and arbitrary payloads that must never panic.

use crate::fixtures::{all_fixture_names, load};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use tw_core::triage::{Intel, TriageIncident, TriageOutcome, Verdict, builtin, builtin_names, run};
use tw_core::{Entity, EntityKind, Format, Severity, normalize};

fn incident_from(payload: Value) -> TriageIncident {
    let alert = normalize(&payload, None, &BTreeMap::new()).expect("payload is an object");
    TriageIncident::from_alert(&alert, "test-source", payload)
}

/// Intel as an intel dir would hold it, parsed by the same functions.
fn intel(protected: &str, bad_hashes: &str, assets: &str) -> Intel {
    let mut protected: Vec<String> = Intel::parse_list(protected).into_iter().collect();
    protected.sort();
    Intel {
        bad_domains: Intel::parse_list("# known phishing kits\nevil.example\n"),
        bad_ips: Intel::parse_list("203.0.113.250\n"),
        bad_hashes: Intel::parse_list(bad_hashes),
        bad_urls: Intel::parse_list("http://malware.example.org/drop.exe\n"),
        protected_domains: protected,
        assets: Intel::parse_assets(assets).expect("assets parse"),
    }
}

fn triage(playbook: &str, incident: &TriageIncident, intel: &Intel) -> TriageOutcome {
    let pb = builtin(playbook).unwrap_or_else(|| panic!("builtin {playbook}"));
    run(&pb, incident, intel, &BTreeMap::new()).unwrap_or_else(|e| panic!("{playbook}: {e}"))
}

fn rules(o: &TriageOutcome) -> Vec<(String, Option<String>)> {
    o.findings.iter().map(|f| (f.rule.clone(), f.indicator.clone())).collect()
}

const PHISH_URL: &str = "http://examp1e-login.top/verify/account";

fn lookalike_phish() -> Value {
    json!({
        "event_type": "email_threat",
        "timestamp": "2024-06-10T15:01:12Z",
        "source": "email-gateway",
        "data": {
            "alert_id": "mail-7731",
            "severity": "medium",
            "details": {
                "title": "User-reported message",
                "sender": "it-support@examp1e.com",
                "recipients": ["jdoe@example.com"],
                "subject": "Action required: verify your account within 24 hours",
                "urls": [PHISH_URL],
                "sender_ip": "198.51.100.77"
            }
        }
    })
}

#[test]
fn lookalike_phish_is_malicious_and_names_sender_and_url() {
    let inc = incident_from(lookalike_phish());
    let intel = intel("# our domains\nexample.com\n", "", "");
    let out = triage("phishing_triage", &inc, &intel);
    assert_eq!(out.verdict, Verdict::Malicious, "{out:#?}");
    assert!(out.score >= 70);
    let r = rules(&out);
    assert!(r.contains(&("sender_lookalike_domain".into(), Some("examp1e.com".into()))), "{r:?}");
    let sender = out.findings.iter().find(|f| f.rule == "sender_lookalike_domain").unwrap();
    assert!(sender.detail.contains("it-support@examp1e.com") && sender.detail.contains("example.com"), "{}", sender.detail);
    for rule in ["url_lookalike_domain", "url_credential_keywords", "url_suspicious_tld"] {
        assert!(r.contains(&(rule.into(), Some(PHISH_URL.into()))), "{rule} missing: {r:?}");
    }
    assert!(r.iter().any(|(rule, _)| rule == "text_urgency"));
    let recs: Vec<(&str, Option<&str>)> = out.recommended_actions.iter().map(|r| (r.action.as_str(), r.target.as_deref())).collect();
    assert!(recs.contains(&("quarantine_email", Some("mail-7731"))), "{recs:?}");
    assert!(recs.contains(&("block_sender", Some("it-support@examp1e.com"))));
    assert!(recs.contains(&("block_url", Some(PHISH_URL))));
    assert_eq!(out.severity, Some(Severity::High));
    assert_eq!(out.playbook, "phishing_triage");
}

#[test]
fn cyrillic_and_rn_lookalikes_of_a_protected_brand() {
    let intel = intel("microsoft.com\n", "", "");
    for sender in ["security@rnicrosoft.com", "Microsoft Security <alert@micros0ft-support.com>", "security@mi\u{441}rosoft.com"] {
        let mut payload = lookalike_phish();
        payload["data"]["details"]["sender"] = json!(sender);
        payload["data"]["details"]["urls"] = json!(["https://rnicrosoft-account.xyz/signin"]);
        let out = triage("phishing_triage", &incident_from(payload), &intel);
        assert_eq!(out.verdict, Verdict::Malicious, "{sender}: {:#?}", out.findings);
        assert!(out.findings.iter().any(|f| f.rule == "sender_lookalike_domain"), "{sender}");
    }
}

#[test]
fn internal_newsletter_is_benign() {
    let payload = json!({
        "event_type": "email_delivered",
        "timestamp": "2024-06-10T08:00:00Z",
        "source": "email-gateway",
        "data": {
            "alert_id": "mail-1001",
            "severity": "low",
            "details": {
                "title": "Example monthly newsletter",
                "sender": "newsletter@example.com",
                "recipients": ["all-staff@example.com"],
                "subject": "June news from the Example team",
                "urls": ["https://www.example.com/news/2024-06", "https://intranet.example.com/events"]
            }
        }
    });
    let inc = incident_from(payload);
    let out = triage("phishing_triage", &inc, &intel("example.com\n", "", ""));
    assert_eq!(out.verdict, Verdict::Benign, "{:#?}", out.findings);
    assert_eq!(out.score, 0);
    assert!(out.findings.is_empty());
    assert!(out.recommended_actions.is_empty());
    assert_eq!(out.severity, Some(Severity::Info));
}

#[test]
fn external_mail_with_nothing_found_is_inconclusive_not_benign() {
    let mut payload = lookalike_phish();
    payload["data"]["details"] = json!({"title": "Hello", "sender": "friend@elsewhere.test", "subject": "Lunch?"});
    let out = triage("phishing_triage", &incident_from(payload), &intel("example.com\n", "", ""));
    assert_eq!(out.verdict, Verdict::Inconclusive);
}

const CS_SHA256: &str = "2fd727cc4f93d6122e0c77bbaa05fa82793404156aba313d82bc39adfb049d0f";

#[test]
fn crowdstrike_bad_hash_on_critical_asset_is_malicious_with_isolation() {
    let inc = incident_from(load("crowdstrike-detection-summary-critical.json"));
    assert_eq!(inc.format, Format::Crowdstrike);
    let intel = intel(
        "example.com\n",
        &format!("# ransomware sample\n{}\n", CS_SHA256.to_uppercase()),
        "assets:\n  FS-02: {criticality: critical, owner: finance}\n",
    );
    let out = triage("malware_triage", &inc, &intel);
    assert_eq!(out.verdict, Verdict::Malicious, "{out:#?}");
    let r = rules(&out);
    assert!(r.contains(&("intel_bad_hash".into(), Some(CS_SHA256.into()))), "{r:?}");
    assert!(r.contains(&("asset_critical".into(), Some("FS-02".into()))), "{r:?}");
    assert_eq!(r.iter().filter(|(rule, _)| rule == "intel_bad_hash").count(), 1, "found by two steps, recorded once");
    let isolate: Vec<_> = out.recommended_actions.iter().filter(|r| r.action == "isolate_host").collect();
    assert_eq!(isolate.len(), 1);
    assert_eq!(isolate[0].target.as_deref(), Some("FS-02"));
    assert!(out.recommended_actions.iter().any(|r| r.action == "block_hash" && r.target.as_deref() == Some(CS_SHA256)));
    // Already critical: nothing to raise.
    assert_eq!(out.severity, None);
}

#[test]
fn crowdstrike_on_a_high_severity_detection_raises_to_critical_on_a_critical_asset() {
    let mut payload = load("crowdstrike-detection-summary-critical.json");
    payload["event"]["Severity"] = json!(4);
    payload["event"]["SeverityName"] = json!("High");
    let inc = incident_from(payload);
    assert_eq!(inc.severity, Severity::High);
    let intel = intel("", CS_SHA256, "fs-02.corp.example: critical\n");
    let out = triage("malware_triage", &inc, &intel);
    assert_eq!(out.verdict, Verdict::Malicious);
    assert_eq!(out.severity, Some(Severity::Critical));
}

#[test]
fn crowdstrike_without_intel_is_not_malicious() {
    let inc = incident_from(load("crowdstrike-detection-summary-critical.json"));
    let out = triage("malware_triage", &inc, &Intel::default());
    assert_ne!(out.verdict, Verdict::Malicious, "{:#?}", out.findings);
    assert!(out.recommended_actions.iter().all(|r| r.action != "isolate_host"));
}

fn all_fixtures() -> Vec<(String, Value)> {
    all_fixture_names().into_iter().map(|n| (n.clone(), load(&n))).collect()
}

#[test]
fn every_builtin_runs_on_every_fixture_deterministically() {
    let intel = intel("example.com\ncorp.example.com\n", CS_SHA256, "fs-02: critical\nws-0427: high\n");
    let fixtures = all_fixtures();
    assert!(fixtures.len() >= 26);
    for (name, payload) in fixtures {
        let inc = incident_from(payload);
        for pb_name in builtin_names() {
            let pb = builtin(pb_name).unwrap();
            let a = run(&pb, &inc, &intel, &BTreeMap::new()).unwrap_or_else(|e| panic!("{pb_name} on {name}: {e}"));
            let b = run(&pb, &inc, &intel, &BTreeMap::new()).unwrap();
            assert_eq!(a.without_durations(), b.without_durations(), "{pb_name} on {name} is not deterministic");
            assert_eq!(a.trace.len(), pb.steps.len());
            assert!(a.score <= 100);
            let keys: HashSet<_> = a.findings.iter().map(|f| (&f.rule, &f.indicator)).collect();
            assert_eq!(keys.len(), a.findings.len(), "{pb_name} on {name}: duplicate findings");
            let recs: HashSet<_> = a.recommended_actions.iter().map(|r| (&r.action, &r.target)).collect();
            assert_eq!(recs.len(), a.recommended_actions.len(), "{pb_name} on {name}: duplicate recommendations");
            // The outcome is what the store keeps: it must survive JSON.
            let back: TriageOutcome = serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
            assert_eq!(back, a);
        }
    }
}

#[test]
fn defender_phish_fixture_flags_its_lure() {
    let inc = incident_from(load("defender-o365-phish-typical.json"));
    let out = triage("phishing_triage", &inc, &intel("corp.example.com\n", "", ""));
    let r = rules(&out);
    // "Overdue invoice 44817 - action needed", a /session/renew URL.
    assert!(r.iter().any(|(rule, _)| rule == "text_payment"), "{r:?}");
    assert!(r.iter().any(|(rule, _)| rule == "text_urgency"), "{r:?}");
    assert!(
        r.iter()
            .any(|(rule, i)| rule == "url_credential_keywords" && i.as_deref() == Some("https://login.example.net/session/renew?id=7731")),
        "{r:?}"
    );
}

#[test]
fn variables_can_be_overridden_per_run() {
    let inc = incident_from(lookalike_phish());
    let intel = intel("example.com\n", "", "");
    let pb = builtin("phishing_triage").unwrap();
    let overrides = BTreeMap::from([("thresholds".to_string(), json!({"malicious": 200, "suspicious": 150}))]);
    let out = run(&pb, &inc, &intel, &overrides).unwrap();
    assert_eq!(out.verdict, Verdict::Inconclusive);
    assert!(out.recommended_actions.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Arbitrary input never panics
// ---------------------------------------------------------------------------------------------

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        prop_oneof![
            Just("it-support@examp1e.com"),
            Just("IT Helpdesk <x@gmail.com>"),
            Just("http://examp1e-login.top/verify/account"),
            Just("http://[::1]:80/login"),
            Just("xn--exmple-cua.com"),
            Just("2fd727cc4f93d6122e0c77bbaa05fa82793404156aba313d82bc39adfb049d0f"),
            Just("C:\\Users\\Public\\invoice.pdf.exe"),
            Just("FS-02"),
            Just("203.0.113.250"),
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    let keys = prop_oneof![
        Just("sender"),
        Just("from"),
        Just("subject"),
        Just("body"),
        Just("urls"),
        Just("displayName"),
        Just("p2Sender"),
        Just("hostname"),
        Just("sha256"),
        Just("data"),
        Just("details"),
        Just("entities"),
        Just("x"),
    ]
    .prop_map(str::to_string);
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_entity() -> impl Strategy<Value = Entity> {
    let kinds = prop_oneof![
        Just(EntityKind::Email),
        Just(EntityKind::Hostname),
        Just(EntityKind::Ip),
        Just(EntityKind::User),
        Just(EntityKind::FileHash),
        Just(EntityKind::Url),
        Just(EntityKind::Domain),
        Just(EntityKind::File),
        Just(EntityKind::Process),
    ];
    let roles = prop::option::of(prop_oneof![Just("sender"), Just("recipient"), Just("host"), Just("process")]);
    (kinds, ".{0,60}", roles).prop_map(|(kind, value, role)| Entity { kind, value, role: role.map(str::to_string) })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_payloads_and_entities_never_panic(raw in arb_json(), entities in prop::collection::vec(arb_entity(), 0..12), title in ".{0,80}") {
        let inc = TriageIncident {
            id: None,
            incident_number: None,
            title,
            description: None,
            severity: Severity::Medium,
            source: "fuzz".into(),
            format: Format::Generic,
            event_type: None,
            external_id: None,
            entities,
            raw,
        };
        let intel = intel("example.com\n", CS_SHA256, "fs-02: critical\n");
        for name in builtin_names() {
            let pb = builtin(name).unwrap();
            let out = run(&pb, &inc, &intel, &BTreeMap::new()).unwrap();
            prop_assert!(out.score <= 100);
        }
    }

    #[test]
    fn arbitrary_objects_normalized_then_triaged_never_panic(raw in arb_json()) {
        if raw.is_object() {
            let inc = incident_from(raw);
            for name in builtin_names() {
                let pb = builtin(name).unwrap();
                prop_assert!(run(&pb, &inc, &Intel::default(), &BTreeMap::new()).is_ok());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Links read as a browser reads them, and weak signals that add up
// ---------------------------------------------------------------------------------------------

/// A mail from an outside sender with `urls` listed as its links, `body` as its text.
fn mail_with_links(urls: &[&str], subject: &str, body: &str) -> Value {
    json!({
        "event_type": "email_threat",
        "timestamp": "2024-06-10T15:01:12Z",
        "source": "email-gateway",
        "data": {
            "alert_id": "mail-9001",
            "severity": "medium",
            "details": {
                "title": "User-reported message",
                "sender": "noreply@docs-share.test",
                "recipients": ["jdoe@good.com"],
                "subject": subject,
                "body": body,
                "urls": urls
            }
        }
    })
}

const SIGN_IN: &str = "Please sign in to read the shared document";

/// The reported case: `\` ends the host of an https URL in a browser, so the link below goes
/// to evil.example (on the bad-domains list), not to the protected good.com. It was judged
/// inconclusive (score 10) while the plain link was malicious (75).
#[test]
fn a_backslash_before_an_at_sign_does_not_hide_a_bad_host() {
    let intel = intel("good.com\n", "", "");
    let plain = triage("phishing_triage", &incident_from(mail_with_links(&["https://evil.example/login"], SIGN_IN, "")), &intel);
    let tricky =
        triage("phishing_triage", &incident_from(mail_with_links(&["https://evil.example\\@good.com/login"], SIGN_IN, "")), &intel);
    assert_eq!(plain.verdict, Verdict::Malicious, "{:#?}", plain.findings);
    assert_eq!(plain.score, 75);
    assert_eq!(tricky.verdict, Verdict::Malicious, "{:#?}", tricky.findings);
    assert_eq!(tricky.score, plain.score);
    assert!(rules(&tricky).contains(&("intel_bad_domain".into(), Some("evil.example".into()))), "{:?}", rules(&tricky));
    // The link to block is the one the browser follows, which no reader can mistake for good.com.
    let block: Vec<_> = tricky.recommended_actions.iter().filter(|r| r.action == "block_url").filter_map(|r| r.target.clone()).collect();
    assert_eq!(block, ["https://evil.example/@good.com/login"]);

    // The same link written in the body, not listed by the gateway; and in an HTML attribute
    // split by a newline, which the browser drops.
    for body in [
        "Hello,\nsign in at https://evil.example\\@good.com/login to read it.",
        "<p>Hello, <a href=\"https://evil.exa\nmple/login\">https://good.com/login</a></p>",
    ] {
        let out = triage("phishing_triage", &incident_from(mail_with_links(&[], SIGN_IN, body)), &intel);
        assert_eq!(out.verdict, Verdict::Malicious, "{body}: {:#?}", out.findings);
        assert!(rules(&out).contains(&("intel_bad_domain".into(), Some("evil.example".into()))), "{body}");
    }
}

/// A host in its Unicode or its punycode form is one host: either form of the link meets a
/// bad-domains entry in either form, and the look-alike check sees what the reader sees.
#[test]
fn unicode_and_punycode_hosts_are_one_host() {
    let ascii = url::Url::parse("https://bäd.example/").unwrap().host_str().unwrap().to_string();
    assert!(ascii.starts_with("xn--"));
    for listed in ["bäd.example", ascii.as_str()] {
        let mut intel = intel("good.com\n", "", "");
        intel.bad_domains = Intel::parse_list(listed);
        for link in ["https://bäd.example/login".to_string(), format!("https://{ascii}/login"), format!("https://www.{ascii}/login")] {
            let out = triage("phishing_triage", &incident_from(mail_with_links(&[&link], SIGN_IN, "")), &intel);
            assert!(out.findings.iter().any(|f| f.rule == "intel_bad_domain"), "{link} against {listed}: {:#?}", out.findings);
            assert_eq!(out.verdict, Verdict::Malicious, "{link} against {listed}");
        }
    }
    let intel = intel("example.com\n", "", "");
    for link in ["https://exämple.com/login", "https://xn--exmple-cua.com/login"] {
        let out = triage("phishing_triage", &incident_from(mail_with_links(&[link], SIGN_IN, "")), &intel);
        let lookalike =
            out.findings.iter().find(|f| f.rule == "url_lookalike_domain").unwrap_or_else(|| panic!("{link}: {:#?}", out.findings));
        assert!(lookalike.detail.contains("exämple.com") && lookalike.detail.contains("example.com"), "{}", lookalike.detail);
        assert!(out.findings.iter().any(|f| f.rule == "url_punycode"), "{link}");
    }
}

fn verdict_of(urls: &[&str], subject: &str) -> (Verdict, u8, Vec<String>) {
    let out = triage("phishing_triage", &incident_from(mail_with_links(urls, subject, "")), &intel("good.com\n", "", ""));
    (out.verdict, out.score, out.findings.iter().map(|f| f.rule.clone()).collect())
}

/// A shortened link alone, or a request to sign in alone, is common in honest mail; the two
/// together are how a credential phish hides where it goes.
#[test]
fn a_shortened_link_in_a_mail_asking_for_credentials_is_suspicious() {
    let (verdict, score, rules) = verdict_of(&["https://bit.ly/3xYzq"], "Please sign in to confirm your password");
    assert!(matches!(verdict, Verdict::Suspicious | Verdict::Malicious), "{score} {rules:?}");
    assert!(rules.contains(&"url_shortener_credential_lure".to_string()), "{rules:?}");
    // Each signal alone stays below the suspicious threshold (40).
    let (verdict, score, rules) = verdict_of(&["https://bit.ly/3xYzq"], "Photos from the weekend");
    assert_eq!(verdict, Verdict::Inconclusive, "{score} {rules:?}");
    assert!(!rules.contains(&"url_shortener_credential_lure".to_string()));
    let (verdict, score, rules) = verdict_of(&[], "Please sign in to confirm your password");
    assert_eq!(verdict, Verdict::Inconclusive, "{score} {rules:?}");
    // Several shortened links are one lure, not one each.
    let (_, _, rules) = verdict_of(&["https://bit.ly/a1", "https://tinyurl.com/b2", "https://t.co/c3"], SIGN_IN);
    assert_eq!(rules.iter().filter(|r| *r == "url_shortener_credential_lure").count(), 1);
}

/// A link on an often-abused TLD with credential words in its path, in a mail that asks for
/// credentials, is suspicious; the TLD with either the path words or the mail's request alone
/// is not.
#[test]
fn an_abused_tld_with_credential_words_in_link_and_text_is_suspicious() {
    let (verdict, score, rules) = verdict_of(&["https://docs-portal.top/signin/verify"], SIGN_IN);
    assert!(matches!(verdict, Verdict::Suspicious | Verdict::Malicious), "{score} {rules:?}");
    for rule in ["url_suspicious_tld", "url_credential_keywords", "text_credentials", "url_tld_credential_lure"] {
        assert!(rules.contains(&rule.to_string()), "{rule}: {rules:?}");
    }
    // Percent-encoded path words are still words.
    let (verdict, _, rules) = verdict_of(&["https://docs-portal.top/s%69gnin/verify"], SIGN_IN);
    assert_eq!(verdict, Verdict::Suspicious, "{rules:?}");
    for (urls, subject) in [
        (["https://docs-portal.top/signin/verify"], "Photos from the weekend"),
        (["https://docs-portal.top/photos/2024"], SIGN_IN),
        (["https://docs-portal.com/signin/verify"], SIGN_IN),
    ] {
        let (verdict, score, rules) = verdict_of(&urls, subject);
        assert_eq!(verdict, Verdict::Inconclusive, "{urls:?} / {subject}: {score} {rules:?}");
        assert!(!rules.contains(&"url_tld_credential_lure".to_string()));
    }
}
