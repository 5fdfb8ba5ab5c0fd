//! Built-in actions: the only things a playbook step can do. Each is a pure, deterministic
//! function of its resolved parameters, the incident, the local intelligence and the findings
//! so far; none fails at run time (missing or mistyped inputs count as empty), so a malformed
//! payload can never abort a triage.
//!
//! | action | parameters (`*` required) | outputs | findings (default weight) |
//! |---|---|---|---|
//! | `extract_indicators` | `include_raw` bool (true): also walk `incident.raw` (bounded), and take the links written in mail bodies | `emails domains urls ips hashes hostnames users senders recipients files processes subjects bodies sender_display_names` (arrays, normalized, deduplicated; URLs as a browser would request them, domains in ASCII form) | - |
//! | `lookup_intel` | `indicators`* object with any of `domains ips hashes urls emails` | `matches[{kind,indicator,listed}] indicators count` | `intel_bad_domain` 50 (parent domains down to the registrable one match too, each in its ASCII and Unicode form), `intel_bad_ip` 40, `intel_bad_hash` 70, `intel_bad_url` 60 |
//! | `check_sender` | `senders`* list (`a@b` or `Name <a@b>`), `display_names` list, `max_distance` number (2), `free_mail_domains` list, `internal_keywords` list | `senders domains internal lookalike lookalikes freemail` | `sender_lookalike_domain` 40, `sender_punycode_domain` 25, `sender_display_name_mismatch` 20, `sender_freemail_impersonation` 25 |
//! | `check_urls` | `urls`* list (read as a browser reads them), `max_distance` number (2), `shorteners` list, `suspicious_tlds` list, `keywords` list, `credential_cues` list (`check_text`'s `credentials`: the message asks for credentials) | `suspicious hosts count` | `url_ip_literal` 20, `url_punycode` 20, `url_shortener` 10, `url_suspicious_tld` 10, `url_credential_keywords` 15, `url_lookalike_domain` 35; with `credential_cues`, once per message: `url_shortener_credential_lure` 25 (a shortened link), `url_tld_credential_lure` 15 (an abused-TLD link with credential words in its path) |
//! | `check_text` | `texts`* list | `urgency payment credentials` (cues found) | `text_urgency` 10, `text_payment` 10, `text_credentials` 10 |
//! | `check_file` | `hashes` list, `names` list (file names, paths, command lines, detection names), `keywords` list | `bad_hashes malicious_names double_extensions suspicious_paths` | `intel_bad_hash` 70, `file_malicious_name` 30 (one per bad word), `file_double_extension` 25, `file_suspicious_path` 10 (one per file name) |
//! | `asset_criticality` | `hosts`* list | `max_criticality hosts[{host,asset,criticality,owner,tags}] critical` | `asset_critical` 0, `asset_high_value` 0 (context, not evidence) |
//! | `score` | `weights` object rule -> weight (e.g. `{{ variables.weights }}`) | `score total findings` | - (re-weighs every finding, now and later) |
//! | `set_verdict` | `malicious_at` number (70), `suspicious_at` number (40), `benign` bool (false), `benign_max` number (0) | `verdict score` | - |
//! | `recommend` | `action`* string, `reason`* string, `target` string or list (one recommendation per item) | `recommended` | - |
//! | `adjust_severity` | `to`* severity, `mode` `set`/`raise`/`lower` (`set`) | `from to changed` | - |
//!
//! Verdict rule (`set_verdict`): `score >= malicious_at` -> malicious; else `score >=
//! suspicious_at` -> suspicious; else `benign` true and `score <= benign_max` -> benign; else
//! inconclusive.

use super::{Finding, Intel, Recommendation, TriageIncident, Verdict};
use crate::Severity;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};

mod content;
mod decision;
mod indicators;
pub mod lookalike;
mod sender;

/// What an action sees.
pub struct ActionInput<'a> {
    pub incident: &'a TriageIncident,
    pub intel: &'a Intel,
    /// Findings recorded by earlier steps (deduplicated, weighted).
    pub findings: &'a [Finding],
    /// The running score (0-100).
    pub score: u8,
    /// The incident's current severity (after earlier `adjust_severity` steps).
    pub severity: Severity,
    /// The step's parameters after template resolution.
    pub params: &'a Map<String, Value>,
}

/// What an action produced.
#[derive(Debug, Default)]
pub struct ActionOutput {
    /// Stored under `steps.<output>` for later steps.
    pub outputs: Value,
    pub findings: Vec<Finding>,
    pub recommendations: Vec<Recommendation>,
    pub verdict: Option<Verdict>,
    pub severity: Option<Severity>,
    /// New weights by rule (from `score`), applied to every finding from now on.
    pub weights: Option<BTreeMap<String, i64>>,
}

/// The JSON shape a parameter must have (checked on literals at validation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Number,
    Bool,
    Object,
    /// A string or an array (of strings, or of values to flatten).
    List,
    /// Any value (a target may be a string or a list).
    Any,
    /// One of these words.
    OneOf(&'static [&'static str]),
}

impl ParamType {
    fn describe(self) -> String {
        match self {
            ParamType::String => "a string".into(),
            ParamType::Number => "a number".into(),
            ParamType::Bool => "a boolean".into(),
            ParamType::Object => "a mapping".into(),
            ParamType::List => "a list (or a single string)".into(),
            ParamType::Any => "any value".into(),
            ParamType::OneOf(words) => format!("one of {}", words.join(", ")),
        }
    }

    fn accepts(self, v: &Value) -> bool {
        match self {
            ParamType::String => v.is_string(),
            ParamType::Number => v.is_number(),
            ParamType::Bool => v.is_boolean(),
            ParamType::Object => v.is_object(),
            ParamType::List => v.is_array() || v.is_string(),
            ParamType::Any => true,
            ParamType::OneOf(words) => v.as_str().is_some_and(|s| words.contains(&s.trim().to_ascii_lowercase().as_str())),
        }
    }
}

/// One parameter of an action.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    pub required: bool,
}

const fn req(name: &'static str, ty: ParamType) -> ParamSpec {
    ParamSpec { name, ty, required: true }
}

const fn opt(name: &'static str, ty: ParamType) -> ParamSpec {
    ParamSpec { name, ty, required: false }
}

/// A built-in action.
pub struct ActionSpec {
    pub name: &'static str,
    pub summary: &'static str,
    pub params: &'static [ParamSpec],
    pub run: fn(&ActionInput) -> ActionOutput,
}

const SEVERITIES: &[&str] = &["info", "low", "medium", "high", "critical"];

/// Every built-in action, in documentation order.
pub const ACTIONS: &[ActionSpec] = &[
    ActionSpec {
        name: "extract_indicators",
        summary: "collect and normalize indicators from the incident's entities and raw payload",
        params: &[opt("include_raw", ParamType::Bool)],
        run: indicators::extract_indicators,
    },
    ActionSpec {
        name: "lookup_intel",
        summary: "look indicators up in the local bad-domain/IP/hash/URL lists",
        params: &[req("indicators", ParamType::Object)],
        run: indicators::lookup_intel,
    },
    ActionSpec {
        name: "check_sender",
        summary: "look-alike, punycode, display-name mismatch and free-mail impersonation checks",
        params: &[
            req("senders", ParamType::List),
            opt("display_names", ParamType::List),
            opt("max_distance", ParamType::Number),
            opt("free_mail_domains", ParamType::List),
            opt("internal_keywords", ParamType::List),
        ],
        run: sender::check_sender,
    },
    ActionSpec {
        name: "check_urls",
        summary: "IP-literal, punycode, shortener, suspicious-TLD, credential-keyword and look-alike URL checks",
        params: &[
            req("urls", ParamType::List),
            opt("max_distance", ParamType::Number),
            opt("shorteners", ParamType::List),
            opt("suspicious_tlds", ParamType::List),
            opt("keywords", ParamType::List),
            opt("credential_cues", ParamType::List),
        ],
        run: content::check_urls,
    },
    ActionSpec {
        name: "check_text",
        summary: "social-engineering cues (urgency, payment, credentials) in subjects and bodies",
        params: &[req("texts", ParamType::List)],
        run: content::check_text,
    },
    ActionSpec {
        name: "check_file",
        summary: "bad hashes, known-bad names, double extensions and suspicious paths",
        params: &[opt("hashes", ParamType::List), opt("names", ParamType::List), opt("keywords", ParamType::List)],
        run: content::check_file,
    },
    ActionSpec {
        name: "asset_criticality",
        summary: "host criticality from the local asset inventory",
        params: &[req("hosts", ParamType::List)],
        run: decision::asset_criticality,
    },
    ActionSpec {
        name: "score",
        summary: "weigh the findings (weights by rule) and sum them into a 0-100 score",
        params: &[opt("weights", ParamType::Object)],
        run: decision::score,
    },
    ActionSpec {
        name: "set_verdict",
        summary: "malicious / suspicious / benign / inconclusive from score thresholds",
        params: &[
            opt("malicious_at", ParamType::Number),
            opt("suspicious_at", ParamType::Number),
            opt("benign", ParamType::Bool),
            opt("benign_max", ParamType::Number),
        ],
        run: decision::set_verdict,
    },
    ActionSpec {
        name: "recommend",
        summary: "record a response action for the analyst (not executed)",
        params: &[req("action", ParamType::String), req("reason", ParamType::String), opt("target", ParamType::Any)],
        run: decision::recommend,
    },
    ActionSpec {
        name: "adjust_severity",
        summary: "raise, lower or set the incident's severity",
        params: &[req("to", ParamType::OneOf(SEVERITIES)), opt("mode", ParamType::OneOf(&["set", "raise", "lower"]))],
        run: decision::adjust_severity,
    },
];

/// The names of every built-in action.
pub fn action_names() -> Vec<&'static str> {
    ACTIONS.iter().map(|a| a.name).collect()
}

/// A built-in action by name.
pub fn find(name: &str) -> Option<&'static ActionSpec> {
    ACTIONS.iter().find(|a| a.name == name)
}

/// Checks a step's parameters against the action: required ones present, no unknown ones,
/// literal values of the right type (values that are exactly one template are checked at run
/// time). Returns `(parameter, message)` pairs.
pub fn validate_params(spec: &ActionSpec, params: &BTreeMap<String, Value>) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    for p in spec.params {
        match params.get(p.name) {
            None if p.required => errors.push((p.name.to_string(), format!("required by action '{}'", spec.name))),
            None => {}
            Some(Value::String(s)) if is_whole_template(s) => {}
            Some(v) if !p.ty.accepts(v) => {
                errors.push((p.name.to_string(), format!("must be {}, got {}", p.ty.describe(), crate::formats::json_type(v))))
            }
            Some(_) => {}
        }
    }
    for name in params.keys() {
        if !spec.params.iter().any(|p| p.name == name) {
            let known: Vec<&str> = spec.params.iter().map(|p| p.name).collect();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            errors.push((name.clone(), format!("unknown parameter for action '{}' (expected: {known})", spec.name)));
        }
    }
    errors
}

fn is_whole_template(s: &str) -> bool {
    let t = s.trim();
    t.starts_with("{{") && t.ends_with("}}") && t.matches("{{").count() == 1
}

/// The default weight of a finding rule (a playbook overrides it with `score`'s `weights`).
pub fn default_weight(rule: &str) -> i64 {
    match rule {
        "intel_bad_hash" => 70,
        "intel_bad_url" => 60,
        "intel_bad_domain" => 50,
        "intel_bad_ip" => 40,
        "sender_lookalike_domain" => 40,
        "sender_punycode_domain" => 25,
        "sender_display_name_mismatch" => 20,
        "sender_freemail_impersonation" => 25,
        "url_lookalike_domain" => 35,
        "url_ip_literal" | "url_punycode" => 20,
        "url_credential_keywords" => 15,
        "url_shortener" | "url_suspicious_tld" => 10,
        // Weak signals that together are a credential phish: with the shortener (10) or the
        // TLD and path words (10 + 15) and the message's credential cues (10), at least the
        // default suspicious threshold (40); each signal alone stays below it.
        "url_shortener_credential_lure" => 25,
        "url_tld_credential_lure" => 15,
        "text_urgency" | "text_payment" | "text_credentials" => 10,
        "file_malicious_name" => 30,
        "file_double_extension" => 25,
        "file_suspicious_path" => 10,
        _ => 0,
    }
}

/// A finding with its rule's default weight.
pub fn finding(rule: &str, detail: impl Into<String>, indicator: Option<&str>) -> Finding {
    Finding { rule: rule.to_string(), detail: detail.into(), weight: default_weight(rule), indicator: indicator.map(str::to_string) }
}

/// The sum of the findings' weights clamped to 0..=100.
pub fn score_of(findings: &[Finding]) -> u8 {
    let total: i64 = findings.iter().map(|f| f.weight).fold(0i64, i64::saturating_add);
    total.clamp(0, 100) as u8
}

// ---------------------------------------------------------------------------------------------
// Lenient parameter readers
// ---------------------------------------------------------------------------------------------

/// Most items read from one list parameter.
pub const MAX_LIST_ITEMS: usize = 1000;

/// A list parameter as strings: arrays are flattened (bounded), numbers become text, nulls and
/// empty strings are skipped, duplicates dropped (first wins).
pub(crate) fn strings(params: &Map<String, Value>, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    if let Some(v) = params.get(key) {
        flatten(v, 0, &mut out, &mut seen);
    }
    out
}

fn flatten(v: &Value, depth: usize, out: &mut Vec<String>, seen: &mut HashSet<String>) {
    if depth > 8 || out.len() >= MAX_LIST_ITEMS {
        return;
    }
    match v {
        Value::String(s) => {
            let t = s.trim();
            if !t.is_empty() && seen.insert(t.to_string()) {
                out.push(t.to_string());
            }
        }
        Value::Number(n) => {
            let t = n.to_string();
            if seen.insert(t.clone()) {
                out.push(t);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| flatten(i, depth + 1, out, seen)),
        _ => {}
    }
}

/// A list parameter, or `default` when it is absent or empty.
pub(crate) fn strings_or(params: &Map<String, Value>, key: &str, default: &[&str]) -> Vec<String> {
    let v = strings(params, key);
    if v.is_empty() { default.iter().map(|s| s.to_string()).collect() } else { v }
}

/// A number parameter (numbers or numeric strings), or `default`.
pub(crate) fn number(params: &Map<String, Value>, key: &str, default: f64) -> f64 {
    match params.get(key) {
        Some(Value::Number(n)) => n.as_f64().filter(|f| f.is_finite()).unwrap_or(default),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()).unwrap_or(default),
        _ => default,
    }
}

/// A boolean parameter by truthiness, or `default` when absent.
pub(crate) fn boolean(params: &Map<String, Value>, key: &str, default: bool) -> bool {
    match params.get(key) {
        None => default,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        Some(v) => super::expr::truthy(v),
    }
}

/// A string parameter (numbers as text), trimmed, non-empty.
pub(crate) fn string(params: &Map<String, Value>, key: &str) -> Option<String> {
    match params.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// Cuts a text to at most `max` bytes on a character boundary.
pub(crate) fn cap(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// An insertion-ordered set of strings, for deterministic outputs.
#[derive(Default)]
pub(crate) struct OrderedSet {
    items: Vec<String>,
    seen: HashSet<String>,
}

impl OrderedSet {
    /// Adds `value` unless an equal `key` was added before.
    pub fn add_keyed(&mut self, key: String, value: String) {
        if self.items.len() < MAX_LIST_ITEMS && self.seen.insert(key) {
            self.items.push(value);
        }
    }

    pub fn add(&mut self, value: String) {
        self.add_keyed(value.clone(), value);
    }

    pub fn contains(&self, key: &str) -> bool {
        self.seen.contains(key)
    }

    pub fn into_value(self) -> Value {
        Value::Array(self.items.into_iter().map(Value::String).collect())
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::{Entity, Format};
    use serde_json::json;

    pub fn incident(entities: Vec<Entity>, raw: Value) -> TriageIncident {
        TriageIncident {
            id: None,
            incident_number: None,
            title: "Test".into(),
            description: None,
            severity: Severity::Medium,
            source: "test".into(),
            format: Format::Generic,
            event_type: None,
            external_id: None,
            entities,
            raw,
        }
    }

    pub fn intel() -> Intel {
        let mut i = Intel { protected_domains: vec!["example.com".into(), "microsoft.com".into()], ..Intel::default() };
        i.bad_domains.insert("evil.example".into());
        i.bad_ips.insert("203.0.113.66".into());
        i.bad_hashes.insert("2fd727cc4f93d6122e0c77bbaa05fa82793404156aba313d82bc39adfb049d0f".into());
        i.bad_urls.insert("http://bad.example.org/payload".into());
        i
    }

    /// Runs an action by name with JSON params.
    pub fn run(name: &str, params: Value, incident: &TriageIncident, intel: &Intel, findings: &[Finding], score: u8) -> ActionOutput {
        let spec = find(name).expect("action exists");
        let params = params.as_object().cloned().unwrap_or_default();
        (spec.run)(&ActionInput { incident, intel, findings, score, severity: incident.severity, params: &params })
    }

    pub fn run_simple(name: &str, params: Value) -> ActionOutput {
        run(name, params, &incident(vec![], json!({})), &intel(), &[], 0)
    }

    pub fn rules(out: &ActionOutput) -> Vec<(String, Option<String>)> {
        out.findings.iter().map(|f| (f.rule.clone(), f.indicator.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_action_is_listed_once() {
        let names = action_names();
        let unique: HashSet<_> = names.iter().collect();
        assert_eq!(names.len(), unique.len());
        assert!(names.contains(&"extract_indicators") && names.contains(&"adjust_severity"));
    }

    #[test]
    fn params_are_validated() {
        let spec = find("recommend").unwrap();
        let p: BTreeMap<String, Value> = serde_json::from_value(json!({"action": 5, "bogus": 1})).unwrap();
        let errs = validate_params(spec, &p);
        let fields: Vec<&str> = errs.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(fields, ["action", "reason", "bogus"]);
        let spec = find("adjust_severity").unwrap();
        let p: BTreeMap<String, Value> = serde_json::from_value(json!({"to": "severe"})).unwrap();
        assert_eq!(validate_params(spec, &p).len(), 1);
        let p: BTreeMap<String, Value> = serde_json::from_value(json!({"to": "{{ variables.sev }}"})).unwrap();
        assert!(validate_params(spec, &p).is_empty());
    }

    #[test]
    fn lenient_readers() {
        let p = json!({"l": ["a", ["b", "a", null, 3]], "n": "12", "s": "  x ", "b": "false"});
        let p = p.as_object().unwrap();
        assert_eq!(strings(p, "l"), ["a", "b", "3"]);
        assert_eq!(strings(p, "missing"), Vec::<String>::new());
        assert_eq!(number(p, "n", 1.0), 12.0);
        assert_eq!(number(p, "s", 1.0), 1.0);
        assert_eq!(string(p, "s").as_deref(), Some("x"));
        assert!(!boolean(p, "b", true));
        assert!(boolean(p, "missing", true));
        assert_eq!(cap("héllo", 2), "h");
    }

    #[test]
    fn score_clamps() {
        let f = |w| Finding { rule: "r".into(), detail: String::new(), weight: w, indicator: None };
        assert_eq!(score_of(&[f(70), f(60)]), 100);
        assert_eq!(score_of(&[f(-50), f(10)]), 0);
        assert_eq!(score_of(&[f(i64::MAX), f(i64::MAX)]), 100);
    }
}
