//! Elastic Security alerts sent by the Kibana webhook connector. The body is the action's
//! template; we read the documented one: `{rule_id, rule_name, rule_url, space_id, date,
//! alerts_count, results_link, rule: {{context.rule}}, alerts: {{context.alerts}}}`. A body that is
//! one alert document itself is read as a list of one.
//!
//! Each alert is read in any of its spellings: nested objects (`kibana: {alert: {uuid}}`),
//! dotted keys as stored in the alerts index (`"kibana.alert.uuid"`), or the legacy `signal`
//! copy alone (`signal.rule.name`, `signal.original_time`, with `_id` as the alert id).
//!
//! * **title**: `rule_name`, else `rule.name`, else the first alert's rule name; else
//!   `"Elastic Security alert"`. (Empty template variables render as `""`: treated as absent.)
//! * **description**: the first alert's `kibana.alert.reason` / `signal.reason`, else the rule's
//!   description.
//! * **severity**: the rule's `severity` word (`rule.severity`, else the alert's
//!   `kibana.alert.severity` / `kibana.alert.rule.severity` / `signal.rule.severity`), else its
//!   0-100 `risk_score` (from 90 critical, 70 high, 40 medium, 20 low). **Default: medium.**
//!   `vendor_severity` is the word verbatim, else the risk score.
//! * **event time**: the first alert's `kibana.alert.original_time` / `signal.original_time`
//!   (when the source event happened), else its `@timestamp`, else the body's `date`.
//! * **external id**: the first alert's `kibana.alert.uuid`, else its `_id`. Never the rule's
//!   ids, which every execution of the rule shares.
//! * **event type**: the rule's `type` (`query`, `threshold`, `eql`, ...), else the alert's
//!   `kibana.alert.rule.rule_type_id`.
//! * **entities**, alert by alert, from ECS fields: `host.name` / `host.hostname` and `host.ip`
//!   (role `host`), `user.name`, `user.email`, `source.ip` (role `src`), `destination.ip` (role
//!   `dest`), `destination.domain`, `dns.question.name`, `url.full` / `url.original`,
//!   `email.from.address` (role `sender`), `email.to.address` (role `recipient`),
//!   `process.command_line` (role `process`), `process.executable`, `process.hash.*`, the
//!   parent's command line and executable (role `parent_process`), `file.hash.*`, the
//!   threshold rule's `threshold_result.terms[]` (role by field), `file.path` (else
//!   `file.name`), `related.ip` / `user` / `hash`; URLs inside command lines; then whatever the
//!   shared walker finds in the rest of the alert (not in `kibana`, `signal`, `rule`, `agent`,
//!   `event`, `ecs`, `file`, `related`). `rule_url`, `results_link` and
//!   Kibana pages are console links, never extracted.
//!
//! A body with no alert, no `rule` and no `rule_name` is read with the generic rules (see
//! [`super::generic`]).
use super::entities::{self, EntitySet, first_text, obj_at, text};
use super::generic::{self, finish};
use super::{Format, Object};
use crate::{Alert, EntityKind, Severity};
use serde_json::Value;

/// The severity used when neither a severity word nor a risk score is usable.
pub const DEFAULT_SEVERITY: Severity = Severity::Medium;

/// Most alerts read from one body (Kibana's own `max_signals` default is 100).
const MAX_ALERTS: usize = 1000;

/// Alert keys that hold the rule, the agent or our own metadata rather than the event.
/// `file` and `related` are read in full explicitly (the walker would add `file.name` beside
/// `file.path`, and `related.hosts` mixes host names with domains).
const NOT_EVENT_KEYS: &[&str] =
    &["kibana", "signal", "rule", "agent", "event", "ecs", "threshold_result", "_index", "_id", "file", "related"];

/// A field of an ECS document by its dotted name, whether it is stored nested
/// (`{"kibana": {"alert": {"uuid": ..}}}`), dotted (`{"kibana.alert.uuid": ..}`) or in between.
pub(crate) fn field<'a>(doc: &'a Object, dotted: &str) -> Option<&'a Value> {
    if let Some(v) = doc.get(dotted).filter(|v| !v.is_null()) {
        return Some(v);
    }
    dotted.match_indices('.').find_map(|(i, _)| {
        let inner = doc.get(&dotted[..i])?.as_object()?;
        field(inner, &dotted[i + 1..])
    })
}

/// `text` of the first of `names` present in `doc`.
fn field_text(doc: &Object, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| field(doc, n).and_then(text))
}

/// Whether an object is an Elastic Security alert document (8.x or the legacy signal).
pub(crate) fn is_alert_doc(doc: &Object) -> bool {
    // Every `kibana.alert...` path starts at a key that starts with `kibana` (nested or dotted):
    // without one, the three searches below (three map lookups each) cannot match. Detection asks
    // this of every payload, most of them not Elastic's.
    let kibana = doc.keys().any(|k| k.starts_with("kibana"));
    (kibana
        && (field(doc, "kibana.alert.uuid").is_some()
            || field(doc, "kibana.alert.rule").is_some_and(Value::is_object)
            || field(doc, "kibana.alert.rule.name").is_some()))
        || obj_at(doc, "signal").is_some_and(|s| s.contains_key("rule"))
}

/// The alert documents of a body: those of its `alerts[]` (other objects there are not Elastic
/// alerts: an M365 Defender incident has `alerts[]` too), or the body when it is one alert.
fn alert_docs(obj: &Object) -> Vec<&Object> {
    match obj.get("alerts").and_then(Value::as_array) {
        Some(list) => list.iter().take(MAX_ALERTS).filter_map(Value::as_object).filter(|a| is_alert_doc(a)).collect(),
        None if is_alert_doc(obj) => vec![obj],
        None => Vec::new(),
    }
}

/// Normalizes a Kibana webhook connector body (or one alert document).
pub fn normalize(obj: &Object) -> Alert {
    let alerts = alert_docs(obj);
    let first = alerts.first().copied();
    let rule = obj_at(obj, "rule");
    if first.is_none() && rule.is_none() && !obj.contains_key("rule_name") {
        // Not a connector body (a source pinned to `elastic` sent something else): generic rules.
        let mut alert = generic::normalize(obj);
        alert.format = Format::Elastic;
        return alert;
    }
    let from_alert = |names: &[&str]| first.and_then(|a| field_text(a, names));

    let title = first_text(obj, &["rule_name"])
        .or_else(|| rule.and_then(|r| first_text(r, &["name"])))
        .or_else(|| from_alert(&["kibana.alert.rule.name", "signal.rule.name"]))
        .unwrap_or_else(|| "Elastic Security alert".to_string());

    let description = from_alert(&["kibana.alert.reason", "signal.reason"])
        .or_else(|| rule.and_then(|r| first_text(r, &["description"])))
        .or_else(|| from_alert(&["kibana.alert.rule.description", "signal.rule.description"]));

    let word = rule
        .and_then(|r| first_text(r, &["severity"]))
        .or_else(|| from_alert(&["kibana.alert.severity", "kibana.alert.rule.severity", "signal.rule.severity"]));
    let score = rule.and_then(|r| r.get("risk_score")).filter(|v| text(v).is_some()).or_else(|| {
        first.and_then(|a| {
            ["kibana.alert.risk_score", "kibana.alert.rule.risk_score", "signal.rule.risk_score"].iter().find_map(|n| field(a, n))
        })
    });
    let (severity, vendor_severity) = match (word.as_deref().and_then(Severity::from_vendor_word), score.and_then(score_of)) {
        (Some(s), _) => (s, word),
        (None, Some(s)) => (s, score.and_then(text)),
        (None, None) => (DEFAULT_SEVERITY, word.or_else(|| score.and_then(text))),
    };

    let event_time = first
        .and_then(|a| {
            ["kibana.alert.original_time", "signal.original_time", "@timestamp"]
                .iter()
                .find_map(|n| field(a, n).and_then(entities::time_any))
        })
        .or_else(|| obj.get("date").and_then(entities::time_any));

    let external_id = from_alert(&["kibana.alert.uuid", "_id"]);
    let event_type =
        rule.and_then(|r| first_text(r, &["type"])).or_else(|| from_alert(&["kibana.alert.rule.rule_type_id", "signal.rule.type"]));

    let mut set = EntitySet::new();
    for a in &alerts {
        add_alert_entities(a, &mut set);
        if set.is_full() {
            break;
        }
    }

    finish(Alert {
        format: Format::Elastic,
        title,
        description: entities::description(description),
        severity,
        vendor_severity,
        event_time,
        external_id,
        event_type,
        entities: set.into_vec(),
    })
}

/// A 0-100 risk score, number or numeric string.
fn score_of(v: &Value) -> Option<Severity> {
    let n = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (n.is_finite() && (0.0..=100.0).contains(&n)).then(|| entities::severity_from_score(n))
}

fn add_alert_entities(a: &Object, set: &mut EntitySet) {
    const FIELDS: &[(&str, EntityKind, Option<&str>)] = &[
        ("host.name", EntityKind::Hostname, Some("host")),
        ("host.hostname", EntityKind::Hostname, Some("host")),
        ("host.ip", EntityKind::Ip, Some("host")),
        ("user.name", EntityKind::User, None),
        ("user.email", EntityKind::Email, None),
        ("source.ip", EntityKind::Ip, Some("src")),
        ("destination.ip", EntityKind::Ip, Some("dest")),
        ("destination.domain", EntityKind::Domain, Some("dest")),
        ("dns.question.name", EntityKind::Domain, None),
        ("url.full", EntityKind::Url, None),
        ("url.original", EntityKind::Url, None),
        ("email.from.address", EntityKind::Email, Some("sender")),
        ("email.to.address", EntityKind::Email, Some("recipient")),
        ("process.command_line", EntityKind::Process, Some("process")),
        ("process.executable", EntityKind::File, Some("process")),
        ("process.hash.sha256", EntityKind::FileHash, Some("process")),
        ("process.hash.sha1", EntityKind::FileHash, Some("process")),
        ("process.hash.md5", EntityKind::FileHash, Some("process")),
        ("process.parent.command_line", EntityKind::Process, Some("parent_process")),
        ("process.parent.executable", EntityKind::File, Some("parent_process")),
        ("file.hash.sha256", EntityKind::FileHash, None),
        ("file.hash.sha1", EntityKind::FileHash, None),
        ("file.hash.md5", EntityKind::FileHash, None),
    ];
    for (name, kind, role) in FIELDS {
        set.add_value(*kind, field(a, name), *role);
    }
    let file_path = field(a, "file.path").and_then(Value::as_str);
    let file_name = field(a, "file.name").and_then(Value::as_str);
    set.add_file(file_path, file_name, None);
    // A threshold rule's grouping values (`source.ip` = 198.51.100.250).
    let terms = field(a, "kibana.alert.threshold_result.terms").or_else(|| field(a, "signal.threshold_result.terms"));
    for t in terms.and_then(Value::as_array).into_iter().flatten().take(16).filter_map(Value::as_object) {
        if let (Some(name), Some(value)) = (t.get("field").and_then(Value::as_str), t.get("value"))
            && let Some((kind, role)) = FIELDS.iter().find(|(n, ..)| *n == name).map(|(_, k, r)| (*k, *r))
        {
            set.add_value(kind, Some(value), role);
        }
    }
    for (name, kind) in [("related.ip", EntityKind::Ip), ("related.user", EntityKind::User), ("related.hash", EntityKind::FileHash)] {
        set.add_value(kind, field(a, name), None);
    }
    for name in ["process.command_line", "process.parent.command_line"] {
        if let Some(c) = field(a, name).and_then(Value::as_str) {
            set.add_urls_in_text(c, None);
        }
    }
    entities::walk_object_except(a, is_not_event_key, set);
}

/// Keys of an alert the walker skips: the rule, the agent and Kibana's own fields.
fn is_not_event_key(k: &str) -> bool {
    NOT_EVENT_KEYS.iter().any(|n| k == *n || k.strip_prefix(n).is_some_and(|r| r.starts_with('.')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn norm(v: Value) -> Alert {
        normalize(v.as_object().unwrap())
    }

    #[test]
    fn fields_are_found_nested_or_dotted() {
        let o = json!({"kibana.alert": {"uuid": "a"}, "kibana": {"alert": {"reason": "r"}}, "x.y.z": 1});
        let o = o.as_object().unwrap();
        assert_eq!(field(o, "kibana.alert.uuid"), Some(&json!("a")));
        assert_eq!(field(o, "kibana.alert.reason"), Some(&json!("r")));
        assert_eq!(field(o, "x.y.z"), Some(&json!(1)));
        assert_eq!(field(o, "x.y"), None);
    }

    #[test]
    fn one_dotted_alert_document() {
        let a = norm(json!({"kibana.alert.uuid": "u-1", "kibana.alert.rule.name": "R", "kibana.alert.risk_score": 47,
            "kibana.alert.original_time": "2024-06-10T15:01:31Z", "source.ip": "203.0.113.5"}));
        assert_eq!((a.title.as_str(), a.external_id.as_deref()), ("R", Some("u-1")));
        assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::Medium, Some("47")));
        assert_eq!(a.event_time.unwrap().timestamp(), 1718031691);
        assert!(a.entities.iter().any(|e| e.value == "203.0.113.5" && e.role.as_deref() == Some("src")));
    }

    #[test]
    fn empty_template_variables_and_odd_types() {
        let a =
            norm(json!({"rule_name": "", "rule": {"name": "From rule", "severity": "", "risk_score": "99"}, "alerts": [1, {"signal": 2}]}));
        assert_eq!(a.title, "From rule");
        assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::Critical, Some("99")));
        let a = norm(json!({"alerts": "x", "rule": {}}));
        assert_eq!((a.title.as_str(), a.severity), ("Elastic Security alert", Severity::Medium));
        let a = norm(json!({"alerts": "x", "rule": [], "title": "Not Elastic"}));
        assert_eq!((a.format, a.title.as_str()), (Format::Elastic, "Not Elastic"));
    }
}
