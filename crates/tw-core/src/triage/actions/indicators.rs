//! `extract_indicators` and `lookup_intel`.

use super::{ActionInput, ActionOutput, OrderedSet, boolean, cap, finding, strings};
use crate::EntityKind;
use crate::formats::entities::{self, EntitySet, as_domain, as_email, as_ip, as_url, norm_key, url_host};
use crate::hosts::DomainName;
use serde_json::{Map, Value, json};

/// How many raw values the subject/body/display-name scan visits at most.
const RAW_SCAN_NODES: usize = 20_000;
/// How deep it descends.
const RAW_SCAN_DEPTH: usize = 16;
/// How many mail bodies are scanned for links (each up to `entities::MAX_TEXT_SCAN` bytes).
const MAX_BODIES_SCANNED: usize = 16;

const SUBJECT_KEYS: &[&str] = &["subject", "ms", "emailsubject", "mailsubject", "messagesubject"];
const BODY_KEYS: &[&str] = &["body", "bodypreview", "emailbody", "messagebody", "textbody", "plaintextbody", "htmlbody", "bodytext"];
const DISPLAY_NAME_KEYS: &[&str] = &["displayname", "sendername", "fromname", "senderdisplayname", "fromdisplayname", "name"];
const SENDER_KEYS: &[&str] = &[
    "sender",
    "from",
    "senderfromaddress",
    "senderaddress",
    "senderemail",
    "senderemailaddress",
    "fromaddress",
    "p1sender",
    "p2sender",
    "tsd",
    "emailaddress",
    "address",
    "mailfrom",
    "returnpath",
];

fn is_sender_context(key: &str, parent: &str) -> bool {
    let senderish = |k: &str| k.contains("sender") || k.starts_with("from") || k == "tsd" || k == "mailfrom";
    senderish(key) || senderish(parent)
}

/// Splits `Name <addr@x>` into its display name and address; a bare address has no name.
pub(crate) fn split_mailbox(s: &str) -> (Option<String>, Option<String>) {
    let t = s.trim();
    if let (Some(open), true) = (t.rfind('<'), t.ends_with('>')) {
        let name = t[..open].trim().trim_matches('"').trim();
        let addr = t[open + 1..t.len() - 1].trim();
        let name = (!name.is_empty()).then(|| name.to_string());
        let addr = addr.contains('@').then(|| addr.to_lowercase());
        return (name, addr);
    }
    if t.contains('@') && !t.contains(char::is_whitespace) {
        return (None, Some(t.trim_start_matches("mailto:").to_lowercase()));
    }
    (None, None)
}

/// The domain of an e-mail address (after the last `@`), lowercase.
pub(crate) fn email_domain(addr: &str) -> Option<String> {
    let (_, d) = addr.rsplit_once('@')?;
    let d = d.trim().trim_end_matches(['>', '.']).to_lowercase();
    (!d.is_empty()).then_some(d)
}

#[derive(Default)]
struct RawFinds {
    subjects: OrderedSet,
    bodies: OrderedSet,
    display_names: OrderedSet,
    senders: OrderedSet,
}

fn scan_raw(v: &Value, key: &str, parent: &str, depth: usize, budget: &mut usize, out: &mut RawFinds) {
    if depth > RAW_SCAN_DEPTH || *budget == 0 {
        return;
    }
    *budget -= 1;
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                if *budget == 0 {
                    return;
                }
                scan_raw(child, &norm_key(k), key, depth + 1, budget, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                if *budget == 0 {
                    return;
                }
                scan_raw(item, key, parent, depth + 1, budget, out);
            }
        }
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() || entities::is_placeholder(t) {
                return;
            }
            if SUBJECT_KEYS.contains(&key) {
                out.subjects.add(cap(t, 1024).to_string());
            } else if BODY_KEYS.contains(&key) {
                out.bodies.add(cap(t, 16 * 1024).to_string());
            } else if DISPLAY_NAME_KEYS.contains(&key) && is_sender_context(key, parent) && key != "name"
                || key == "name" && is_sender_context(parent, "")
            {
                out.display_names.add(cap(t, 256).to_string());
            } else if SENDER_KEYS.contains(&key) && is_sender_context(key, parent) && t.len() <= 512 {
                let (name, addr) = split_mailbox(t);
                if let Some(n) = name {
                    out.display_names.add(n);
                }
                if let Some(a) = addr {
                    out.senders.add(a);
                }
            }
        }
        _ => {}
    }
}

/// `extract_indicators`: the incident's entities plus (bounded) everything the entity walker
/// recognises in the raw payload, normalized; also subjects, bodies and sender display names.
pub fn extract_indicators(input: &ActionInput) -> ActionOutput {
    let include_raw = boolean(input.params, "include_raw", true);
    let mut set = EntitySet::new();
    for e in &input.incident.entities {
        set.add(e.kind, &e.value, e.role.as_deref());
    }
    let mut raw = RawFinds::default();
    if include_raw {
        entities::walk(&input.incident.raw, &mut set);
        let mut budget = RAW_SCAN_NODES;
        scan_raw(&input.incident.raw, "", "", 0, &mut budget, &mut raw);
        // Links written in a mail body, read as the reader's browser would follow them.
        for body in raw.bodies.items.iter().take(MAX_BODIES_SCANNED) {
            set.add_urls_in_text(body, None);
        }
    }
    let mut emails = OrderedSet::default();
    let mut domains = OrderedSet::default();
    let mut urls = OrderedSet::default();
    let mut ips = OrderedSet::default();
    let mut hashes = OrderedSet::default();
    let mut hostnames = OrderedSet::default();
    let mut users = OrderedSet::default();
    let mut senders = OrderedSet::default();
    let mut recipients = OrderedSet::default();
    let mut files = OrderedSet::default();
    let mut processes = OrderedSet::default();
    let add_domain = |domains: &mut OrderedSet, d: &str| {
        if let Some(d) = as_domain(d) {
            domains.add(d);
        }
    };
    for e in set.into_vec() {
        let v = e.value.trim();
        match e.kind {
            EntityKind::Email => {
                let Some(addr) = as_email(v) else { continue };
                if let Some(d) = email_domain(&addr) {
                    add_domain(&mut domains, &d);
                }
                match e.role.as_deref() {
                    Some("sender") => senders.add(addr.clone()),
                    Some("recipient") => recipients.add(addr.clone()),
                    _ => {}
                }
                emails.add(addr);
            }
            EntityKind::Url => {
                if let Some(host) = url_host(v) {
                    match as_ip(&host) {
                        Some(ip) => ips.add(ip),
                        None => add_domain(&mut domains, &host),
                    }
                }
                urls.add(v.to_string());
            }
            EntityKind::Domain => add_domain(&mut domains, v),
            EntityKind::Ip => {
                if let Some(ip) = as_ip(v) {
                    ips.add(ip)
                }
            }
            EntityKind::FileHash => hashes.add(v.to_ascii_lowercase()),
            EntityKind::Hostname => hostnames.add_keyed(v.to_lowercase(), v.to_string()),
            EntityKind::User => users.add(v.to_string()),
            EntityKind::File => files.add(v.to_string()),
            EntityKind::Process => processes.add(v.to_string()),
        }
    }
    // Senders found only by the raw scan (display-name form, or non-ASCII look-alike domains
    // the strict e-mail shape rejects) still count as senders.
    for s in raw.senders.into_strings() {
        if let Some(d) = email_domain(&s)
            && as_domain(&d).is_some()
        {
            domains.add(d);
        }
        if as_email(&s).is_some() && !emails.contains(&s) {
            emails.add(s.clone());
        }
        senders.add(s);
    }
    ActionOutput {
        outputs: json!({
            "emails": emails.into_value(),
            "domains": domains.into_value(),
            "urls": urls.into_value(),
            "ips": ips.into_value(),
            "hashes": hashes.into_value(),
            "hostnames": hostnames.into_value(),
            "users": users.into_value(),
            "senders": senders.into_value(),
            "recipients": recipients.into_value(),
            "files": files.into_value(),
            "processes": processes.into_value(),
            "subjects": raw.subjects.into_value(),
            "bodies": raw.bodies.into_value(),
            "sender_display_names": raw.display_names.into_value(),
        }),
        ..Default::default()
    }
}

impl OrderedSet {
    pub(crate) fn into_strings(self) -> Vec<String> {
        self.items
    }
}

/// The names a domain is looked up under: the domain and each parent down to its registrable
/// domain (`a.b.evil.example` -> itself, `b.evil.example`, `evil.example`; never a public
/// suffix such as `co.uk`), each in its ASCII (punycode) and its Unicode form, so that a list
/// may hold either form. Text that is not a domain name is looked up as it is.
fn domain_lookup_names(d: &str) -> Vec<String> {
    let Some(name) = DomainName::parse(d) else { return vec![d.to_lowercase()] };
    let suffix = name.suffix_labels();
    let labels = |s: &str| s.split('.').map(str::to_string).collect::<Vec<_>>();
    let ascii = labels(name.ascii());
    // Both forms have as many labels; should one ever not, only the ASCII form is used.
    let unicode = Some(labels(name.unicode())).filter(|u| u.len() == ascii.len()).unwrap_or_else(|| ascii.clone());
    // The registrable domain has one label more than the suffix (a bare suffix: itself only).
    let deepest = ascii.len().saturating_sub(suffix + 1).min(ascii.len() - 1);
    let mut out = Vec::new();
    for skip in 0..=deepest {
        for form in [&ascii, &unicode] {
            let n = form[skip..].join(".");
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// The forms a URL is looked up under: lowercase, without a fragment, with and without a
/// trailing slash, with and without its scheme; and the same of its browser serialization.
fn url_forms(url: &str) -> Vec<String> {
    let mut forms = Vec::new();
    for u in std::iter::once(url.to_string()).chain(as_url(url)) {
        let lower = u.trim().to_lowercase();
        let no_frag = lower.split('#').next().unwrap_or("").to_string();
        for f in [lower.clone(), no_frag.clone(), no_frag.trim_end_matches('/').to_string()] {
            let bare = f.split_once("://").map(|(_, rest)| rest.to_string());
            for g in std::iter::once(f).chain(bare) {
                if !forms.contains(&g) {
                    forms.push(g);
                }
            }
        }
    }
    forms
}

/// `lookup_intel`: each indicator list of `indicators` against the matching intel list.
pub fn lookup_intel(input: &ActionInput) -> ActionOutput {
    let Some(ind) = input.params.get("indicators").and_then(Value::as_object) else {
        return ActionOutput { outputs: json!({"matches": [], "indicators": [], "count": 0}), ..Default::default() };
    };
    let ind: &Map<String, Value> = ind;
    let intel = input.intel;
    let mut findings = Vec::new();
    let mut matches = Vec::new();
    let mut hit = |kind: &str, rule: &str, indicator: &str, listed: &str| {
        let detail = if indicator == listed {
            format!("{kind} {indicator} is on the local bad-{kind} list")
        } else {
            format!("{kind} {indicator} is on the local bad-{kind} list (as {listed})")
        };
        findings.push(finding(rule, detail, Some(indicator)));
        matches.push(json!({"kind": kind, "indicator": indicator, "listed": listed}));
    };
    // E-mail domains are looked up as domains too.
    let mut domains = strings(ind, "domains");
    for e in strings(ind, "emails").iter().chain(strings(ind, "senders").iter()) {
        if let Some(d) = email_domain(e)
            && !domains.contains(&d)
        {
            domains.push(d);
        }
    }
    for d in &domains {
        let d = d.to_lowercase();
        if let Some(listed) = domain_lookup_names(&d).into_iter().find(|c| intel.bad_domains.contains(c)) {
            hit("domain", "intel_bad_domain", &d, &listed);
        }
    }
    for ip in strings(ind, "ips") {
        let canon = as_ip(&ip).unwrap_or_else(|| ip.to_lowercase());
        if intel.bad_ips.contains(&canon) {
            hit("ip", "intel_bad_ip", &canon, &canon);
        }
    }
    for h in strings(ind, "hashes") {
        let h = h.to_ascii_lowercase();
        if intel.bad_hashes.contains(&h) {
            hit("hash", "intel_bad_hash", &h, &h);
        }
    }
    for u in strings(ind, "urls") {
        if let Some(listed) = url_forms(&u).into_iter().find(|f| intel.bad_urls.contains(f)) {
            hit("url", "intel_bad_url", &u, &listed);
        }
    }
    let count = matches.len();
    let indicators: Vec<Value> = matches.iter().map(|m| m["indicator"].clone()).collect();
    ActionOutput { outputs: json!({"matches": matches, "indicators": indicators, "count": count}), findings, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::{Entity, EntityKind};
    use serde_json::json;

    #[test]
    fn extracts_and_normalizes() {
        let inc = incident(
            vec![
                Entity::with_role(EntityKind::Email, "Phisher@Examp1e.COM", "sender"),
                Entity::with_role(EntityKind::Email, "jdoe@corp.example.com", "recipient"),
                Entity::new(EntityKind::Url, "http://Examp1e-Login.top/verify/account"),
                Entity::new(EntityKind::Url, "http://198.51.100.9/x"),
                Entity::new(EntityKind::FileHash, "DA16CC2BBD7DBC782AABB7489D3F0D6C"),
                Entity::with_role(EntityKind::Hostname, "WS-01", "host"),
                Entity::new(EntityKind::Hostname, "ws-01"),
                Entity::new(EntityKind::Ip, "not an ip"),
            ],
            json!({"email": {"subject": "Urgent: verify", "from": "IT Support <helpdesk@gmail.com>", "body": "Click now"},
                   "p2Sender": {"emailAddress": "x@y.example.net", "displayName": "Example Billing"},
                   "other": "https://cdn.example.org/a.js"}),
        );
        let out = run("extract_indicators", json!({}), &inc, &intel(), &[], 0).outputs;
        assert_eq!(out["senders"], json!(["phisher@examp1e.com", "helpdesk@gmail.com", "x@y.example.net"]));
        assert_eq!(out["recipients"], json!(["jdoe@corp.example.com"]));
        // URLs are given as a browser would request them: the host lowercased.
        assert_eq!(out["urls"][0], json!("http://examp1e-login.top/verify/account"));
        assert!(out["urls"].as_array().unwrap().contains(&json!("https://cdn.example.org/a.js")));
        assert_eq!(out["ips"], json!(["198.51.100.9"]));
        assert_eq!(out["hashes"], json!(["da16cc2bbd7dbc782aabb7489d3f0d6c"]));
        assert_eq!(out["hostnames"], json!(["WS-01"]));
        for d in ["examp1e.com", "corp.example.com", "examp1e-login.top", "cdn.example.org", "gmail.com"] {
            assert!(out["domains"].as_array().unwrap().contains(&json!(d)), "{d}");
        }
        assert_eq!(out["subjects"], json!(["Urgent: verify"]));
        assert_eq!(out["bodies"], json!(["Click now"]));
        assert_eq!(out["sender_display_names"], json!(["IT Support", "Example Billing"]));
        let no_raw = run("extract_indicators", json!({"include_raw": false}), &inc, &intel(), &[], 0).outputs;
        assert_eq!(no_raw["subjects"], json!([]));
    }

    #[test]
    fn junk_input_gives_empty_lists() {
        let inc = incident(vec![Entity::new(EntityKind::Email, "")], json!([null, 1, "x"]));
        let out = run("extract_indicators", json!({"include_raw": "{{ nonsense }}"}), &inc, &intel(), &[], 0).outputs;
        assert_eq!(out["emails"], json!([]));
    }

    #[test]
    fn intel_lookups() {
        let out = run_simple(
            "lookup_intel",
            json!({"indicators": {
                "domains": ["a.b.evil.example", "fine.example"],
                "emails": ["x@mail.evil.example"],
                "ips": ["203.0.113.66", "192.0.2.1"],
                "hashes": ["2FD727CC4F93D6122E0C77BBAA05FA82793404156ABA313D82BC39ADFB049D0F"],
                "urls": ["HTTP://BAD.example.org/payload/#frag", "http://ok.example.org/"]
            }}),
        );
        assert_eq!(
            rules(&out),
            [
                ("intel_bad_domain".to_string(), Some("a.b.evil.example".to_string())),
                ("intel_bad_domain".to_string(), Some("mail.evil.example".to_string())),
                ("intel_bad_ip".to_string(), Some("203.0.113.66".to_string())),
                ("intel_bad_hash".to_string(), Some("2fd727cc4f93d6122e0c77bbaa05fa82793404156aba313d82bc39adfb049d0f".to_string())),
                ("intel_bad_url".to_string(), Some("HTTP://BAD.example.org/payload/#frag".to_string())),
            ]
        );
        assert_eq!(out.outputs["count"], json!(5));
        assert_eq!(out.outputs["matches"][0]["listed"], json!("evil.example"));
        assert!(run_simple("lookup_intel", json!({"indicators": "oops"})).findings.is_empty());
    }

    #[test]
    fn mailbox_forms() {
        assert_eq!(super::split_mailbox("\"Bob\" <Bob@X.com>"), (Some("Bob".into()), Some("bob@x.com".into())));
        assert_eq!(super::split_mailbox("a@b.c"), (None, Some("a@b.c".into())));
        assert_eq!(super::split_mailbox("just words"), (None, None));
        assert_eq!(super::email_domain("a@B.com>").as_deref(), Some("b.com"));
    }

    fn listed(text: &str) -> std::collections::HashSet<String> {
        crate::triage::Intel::parse_list(text)
    }

    #[test]
    fn domains_are_looked_up_in_both_forms_down_to_the_registrable_domain() {
        assert_eq!(super::domain_lookup_names("a.b.evil.example"), ["a.b.evil.example", "b.evil.example", "evil.example"]);
        assert_eq!(super::domain_lookup_names("mail.acme.co.uk"), ["mail.acme.co.uk", "acme.co.uk"]);
        assert_eq!(
            super::domain_lookup_names("login.xn--exmple-cua.com"),
            ["login.xn--exmple-cua.com", "login.exämple.com", "xn--exmple-cua.com", "exämple.com"]
        );
        assert_eq!(super::domain_lookup_names("co.uk"), ["co.uk"]);
        let mut intel = intel();
        intel.bad_domains.extend(listed("EXÄMPLE.com"));
        intel.bad_domains.extend(listed("XN--BSE-SNA.example"));
        let inc = incident(vec![], json!({}));
        let out = run("lookup_intel", json!({"indicators": {"domains": ["www.xn--exmple-cua.com", "böse.example"]}}), &inc, &intel, &[], 0);
        assert_eq!(
            rules(&out),
            [
                ("intel_bad_domain".to_string(), Some("www.xn--exmple-cua.com".to_string())),
                ("intel_bad_domain".to_string(), Some("böse.example".to_string())),
            ]
        );
    }
}
