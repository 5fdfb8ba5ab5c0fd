//! The spec's generic format, and the fallback for every payload no other format recognises
//! (and the reading a source's declarative mapping starts from: see [`super::mapping`]).
//!
//! Spec shape: `{event_type, timestamp, source, data: {alert_id, severity, details: {...}}}`.
//!
//! * **title**: `"<event_type>: <detail>"` where the detail is `data.details.title` / `name` /
//!   `rule_name` / `subject` / `summary` / `description`, or else the first well-known title key
//!   found anywhere, shallowest first (`title`, `AlertDisplayName`, `incidentName`, `rule_name`, `threatName`,
//!   `DetectName`, `search_name`, ..., then a shallow `name`). Without a detail:
//!   `"<event_type> from <source>"`, `"<event_type>"`, `"Alert from <source>"`, and finally
//!   `"Untitled alert"`. Trimmed and capped at 512 characters.
//! * **severity**: `data.severity`, else a top-level or nested `severity` / `SeverityName` /
//!   `level` / `urgency` / `priority` / `confidenceLevel` / `risk_score`; words through
//!   [`Severity::from_vendor_word`], 1-5 as that scale, larger numbers as a 0-100 score.
//!   **Default when none (or not understood): medium.** The value is kept verbatim in
//!   `vendor_severity` so a source's `severity_mapping` can still map it.
//! * **event time**: `timestamp`, else the first well-known time key (`original_time`, `createdDateTime`,
//!   `createdTimeUtc`, `original_time`, `@timestamp`, `date`, `_time`, ...); ISO-8601 (zone-less =
//!   UTC) or epoch numbers (above 10^11 = milliseconds, else seconds).
//! * **external id** (the store's dedupe key): `data.alert_id` (the spec), else a top-level
//!   `alert_id` / `alertId`; otherwise none. It is **never** searched for in nested objects:
//!   ids found there (`actor.id`, Elastic `rule.id` / `rule.uuid`, Sentinel `incidentNumber`, ...)
//!   are shared by different alerts, and two alerts with the same external id are one incident
//!   (the second would be dropped as a duplicate).
//! * **event type**: `event_type`, else `eventType` / `objectSchemaType` / `classification` /
//!   `category`.
//! * **entities**: the whole payload walked with [`entities::walk_object`].
use super::entities::{self, EntitySet, KeyList, KeySearch, find_keys, keep, obj_at, text, text_at};
use super::{Format, Object};
use crate::{Alert, Severity};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::LazyLock;

/// The severity used when a payload has none (or none we understand).
pub const DEFAULT_SEVERITY: Severity = Severity::Medium;

const TITLE_KEYS: &[&str] = &[
    "title",
    "AlertDisplayName",
    "alertDisplayName",
    "incidentName",
    "rule_name",
    "ruleName",
    "alert_name",
    "alertName",
    "threatName",
    "DetectName",
    "search_name",
    "signature",
    "subject",
];
const DESCRIPTION_KEYS: &[&str] = &["description", "reason", "summary", "message", "details"];
const SEVERITY_KEYS: &[&str] =
    &["severity", "SeverityName", "severity_name", "level", "urgency", "priority", "risk_level", "confidenceLevel", "risk_score"];
const TIME_KEYS: &[&str] = &[
    "original_time",
    "event_time",
    "eventTime",
    "timestamp",
    "createdDateTime",
    "createdTimeUtc",
    "creationTime",
    "createdAt",
    "StartTimeUtc",
    "firstActivityTimeUtc",
    "TimeGenerated",
    "@timestamp",
    "date",
    "time",
    "_time",
    "eventCreationTime",
];
/// Top-level keys that name this very alert (after `data.alert_id`). Exact keys, never searched.
const TOP_LEVEL_ID_KEYS: &[&str] = &["alert_id", "alertId"];
const EVENT_TYPE_KEYS: &[&str] = &["event_type", "eventType", "objectSchemaType", "classification", "category"];

/// How deep the well-known-key search looks.
const SEARCH_DEPTH: usize = 6;

/// The key lists above, normalised once for [`find_keys`].
static TITLE_LIST: LazyLock<KeyList> = LazyLock::new(|| KeyList::new(TITLE_KEYS));
static NAME_LIST: LazyLock<KeyList> = LazyLock::new(|| KeyList::new(&["name", "Name"]));
static DESCRIPTION_LIST: LazyLock<KeyList> = LazyLock::new(|| KeyList::new(DESCRIPTION_KEYS));
static SEVERITY_LIST: LazyLock<KeyList> = LazyLock::new(|| KeyList::new(SEVERITY_KEYS));
static TIME_LIST: LazyLock<KeyList> = LazyLock::new(|| KeyList::new(TIME_KEYS));
static EVENT_TYPE_LIST: LazyLock<KeyList> = LazyLock::new(|| KeyList::new(EVENT_TYPE_KEYS));

/// Which well-known keys to look for anywhere in the payload (those the spec's own fields did
/// not already give).
#[derive(Default)]
struct Wanted {
    event_type: bool,
    title: bool,
    description: bool,
    severity: bool,
    time: bool,
}

/// What the search for well-known keys found.
#[derive(Default)]
struct Found {
    event_type: Option<String>,
    title: Option<String>,
    /// A shallow `name`, the title when no title key is found.
    name: Option<String>,
    description: Option<String>,
    severity: Option<(Severity, Option<String>)>,
    time: Option<DateTime<Utc>>,
}

/// Looks for every wanted well-known key in one pass over the payload; each result is what a
/// search for that key list alone would find ([`entities::find_key`] and
/// [`entities::find_key_shallow`] rules).
fn find_well_known(obj: &Object, wanted: Wanted) -> Found {
    const EVENT_TYPE: usize = 0;
    const TITLE: usize = 1;
    const NAME: usize = 2;
    const DESCRIPTION: usize = 3;
    const SEVERITY: usize = 4;
    const TIME: usize = 5;
    let search = |want: bool, keys: &'static KeyList, max_depth: usize, shallow_first: bool| {
        want.then_some(KeySearch { keys, max_depth, shallow_first })
    };
    let searches = [
        search(wanted.event_type, &EVENT_TYPE_LIST, 2, false),
        search(wanted.title, &TITLE_LIST, SEARCH_DEPTH, true),
        search(wanted.title, &NAME_LIST, 1, false),
        search(wanted.description, &DESCRIPTION_LIST, SEARCH_DEPTH, false),
        search(wanted.severity, &SEVERITY_LIST, SEARCH_DEPTH, false),
        search(wanted.time, &TIME_LIST, SEARCH_DEPTH, false),
    ];
    let mut found = Found::default();
    find_keys(obj, searches, |i, v| match i {
        EVENT_TYPE => keep(&mut found.event_type, text(v)),
        TITLE => keep(&mut found.title, text(v)),
        NAME => keep(&mut found.name, text(v)),
        DESCRIPTION => keep(&mut found.description, text(v)),
        SEVERITY => keep(&mut found.severity, read_severity(v)),
        TIME => keep(&mut found.time, entities::time_any(v)),
        _ => false,
    });
    found
}

/// Normalizes the generic format (never fails, whatever the object holds).
pub fn normalize(obj: &Object) -> Alert {
    let data = obj_at(obj, "data");
    let details = data.and_then(|d| d.get("details"));
    let details_obj = details.and_then(Value::as_object);

    // The spec's own fields first; the payload is searched (once) only for what they lack.
    let spec_event_type = text_at(obj, "event_type");
    let spec_detail =
        details_obj.and_then(|d| entities::first_text(d, &["title", "name", "rule_name", "subject", "summary", "description"]));
    let spec_description = details_obj
        .and_then(|d| entities::first_text(d, &["description", "summary", "message"]))
        .or_else(|| details.and_then(Value::as_str).map(str::to_string));
    let spec_severity = data.and_then(|d| d.get("severity")).and_then(read_severity);
    let spec_time = obj.get("timestamp").and_then(entities::time_any);
    let found = find_well_known(
        obj,
        Wanted {
            event_type: spec_event_type.is_none(),
            title: spec_detail.is_none(),
            description: spec_description.is_none(),
            severity: spec_severity.is_none(),
            time: spec_time.is_none(),
        },
    );

    let has_spec_event_type = spec_event_type.is_some();
    let event_type = spec_event_type.or(found.event_type);
    let detail = spec_detail.or(found.title).or(found.name);
    let source = text_at(obj, "source");
    let title = match (&event_type, detail, source) {
        (Some(et), Some(d), _) if has_spec_event_type => format!("{et}: {d}"),
        (_, Some(d), _) => d,
        (Some(et), None, Some(src)) => format!("{et} from {src}"),
        (Some(et), None, None) => et.clone(),
        (None, None, Some(src)) => format!("Alert from {src}"),
        (None, None, None) => String::new(),
    };

    let description = spec_description.or(found.description);
    let (severity, vendor_severity) = spec_severity.or(found.severity).unwrap_or((DEFAULT_SEVERITY, None));
    let event_time = spec_time.or(found.time);

    let external_id = own_alert_id(obj);

    let mut set = EntitySet::new();
    entities::walk_object(obj, &mut set);

    finish(Alert {
        format: Format::Generic,
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

/// The dedupe key: `data.alert_id`, else a top-level `alert_id` / `alertId`, else none. Only
/// fields that name this alert; never a nested search (nested ids are shared between alerts).
pub fn own_alert_id(obj: &Object) -> Option<String> {
    obj_at(obj, "data").and_then(|d| text_at(d, "alert_id")).or_else(|| entities::first_text(obj, TOP_LEVEL_ID_KEYS))
}

/// The first well-known title anywhere in the payload, or a shallow `name`.
pub fn discover_title(obj: &Object) -> Option<String> {
    let found = find_well_known(obj, Wanted { title: true, ..Wanted::default() });
    found.title.or(found.name)
}

/// Reads a severity value: `Some((ours, verbatim))` when it is non-empty text or a number.
/// Not understood -> the default, with the verbatim value kept for `severity_mapping`.
/// [`read_severity`] of an optional value, `default` (and no vendor value) when it reads nothing.
pub fn read_severity_or(v: Option<&Value>, default: Severity) -> (Severity, Option<String>) {
    v.and_then(read_severity).unwrap_or((default, None))
}

pub fn read_severity(v: &Value) -> Option<(Severity, Option<String>)> {
    let verbatim = text(v)?;
    Some((entities::severity_from_value(v).unwrap_or(DEFAULT_SEVERITY), Some(verbatim)))
}

/// Final clean-up shared by every format: title trimmed, capped, never empty.
pub fn finish(mut alert: Alert) -> Alert {
    // The `_owned` forms keep a string that needs no change instead of copying it.
    alert.title = entities::title_owned(std::mem::take(&mut alert.title));
    if alert.title.is_empty() {
        alert.title = match &alert.external_id {
            Some(id) => entities::title(&format!("Untitled alert {id}")),
            None => "Untitled alert".to_string(),
        };
    }
    alert.vendor_severity = alert.vendor_severity.map(|s| entities::cap_owned(s, 128));
    alert.external_id = alert.external_id.map(|s| entities::cap_owned(s, 512)).filter(|s| !s.is_empty());
    alert.event_type = alert.event_type.map(|s| entities::cap_owned(s, 256)).filter(|s| !s.is_empty());
    alert
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EntityKind;
    use serde_json::json;

    fn norm(v: Value) -> Alert {
        normalize(v.as_object().unwrap())
    }

    #[test]
    fn spec_example() {
        let a = norm(json!({
            "event_type": "security_alert",
            "timestamp": "2024-01-15T10:00:00Z",
            "source": "email-gateway",
            "data": {"alert_id": "alert-123", "severity": "high", "details": {"title": "Suspicious login", "src_ip": "203.0.113.9", "user": "jdoe"}}
        }));
        assert_eq!(a.title, "security_alert: Suspicious login");
        assert_eq!(a.severity, Severity::High);
        assert_eq!(a.vendor_severity.as_deref(), Some("high"));
        assert_eq!(a.event_time.unwrap().to_rfc3339(), "2024-01-15T10:00:00+00:00");
        assert_eq!(a.external_id.as_deref(), Some("alert-123"));
        assert_eq!(a.event_type.as_deref(), Some("security_alert"));
        assert!(a.entities.contains(&crate::Entity::with_role(EntityKind::Ip, "203.0.113.9", "src")));
        assert!(a.entities.contains(&crate::Entity::new(EntityKind::User, "jdoe")));
    }

    #[test]
    fn spec_example_with_empty_details() {
        let a = norm(json!({"event_type": "security_alert", "timestamp": "2024-01-15T10:00:00Z", "source": "email-gateway",
            "data": {"alert_id": "alert-123", "severity": "high", "details": {}}}));
        assert_eq!(a.title, "security_alert from email-gateway");
        assert_eq!(a.external_id.as_deref(), Some("alert-123"));
        assert!(a.entities.is_empty());
    }

    #[test]
    fn defaults_and_odd_types() {
        let a = norm(json!({}));
        assert_eq!(a.title, "Untitled alert");
        assert_eq!(a.severity, Severity::Medium);
        assert_eq!(a.vendor_severity, None);
        let a = norm(json!({"event_type": 7, "data": [1, 2], "timestamp": {"x": 1}, "severity": "P1"}));
        assert_eq!(a.title, "7");
        assert_eq!(a.severity, Severity::Medium);
        assert_eq!(a.vendor_severity.as_deref(), Some("P1"));
        let a = norm(json!({"title": "  x\u{0}y  ", "risk_score": 99, "createdAt": 1718035207000u64}));
        assert_eq!(a.title, "x y");
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(a.event_time.unwrap().timestamp(), 1718035207);
    }

    #[test]
    fn alerts_sharing_a_nested_id_get_no_external_id() {
        let a = norm(json!({"event_type": "login_failed", "actor": {"id": 42}}));
        let b = norm(json!({"event_type": "malware_found", "actor": {"id": 42}, "details": {"file": "evil.exe"}}));
        assert_eq!(a.external_id, None);
        assert_eq!(b.external_id, None);
        // Other nested or non-spec ids are never the dedupe key either, at any depth.
        for v in [
            json!({"id": "x1"}),
            json!({"uuid": "u-1", "event_id": 7, "incidentNumber": 3, "SystemAlertId": "s", "threatId": "t"}),
            json!({"rule": {"id": "r-1", "uuid": "r-uuid"}, "kibana": {"alert": {"uuid": "k"}}}),
            json!({"object": {"properties": {"alertId": "nested"}}}),
            json!({"data": {"details": {"alert_id": "too-deep"}}}),
        ] {
            assert_eq!(norm(v.clone()).external_id, None, "{v}");
        }
    }

    #[test]
    fn external_id_comes_only_from_fields_that_name_this_alert() {
        let a = norm(json!({"event_type": "x", "actor": {"id": 42}, "data": {"alert_id": "alert-9", "details": {"id": 1}}}));
        assert_eq!(a.external_id.as_deref(), Some("alert-9"));
        let a = norm(json!({"data": {"alert_id": 17}, "alert_id": "top"}));
        assert_eq!(a.external_id.as_deref(), Some("17"), "data.alert_id (the spec) wins");
        assert_eq!(norm(json!({"alert_id": "top", "actor": {"id": 1}})).external_id.as_deref(), Some("top"));
        assert_eq!(norm(json!({"alertId": "camel", "id": "other"})).external_id.as_deref(), Some("camel"));
        assert_eq!(norm(json!({"data": {"alert_id": ""}, "alertId": "camel"})).external_id.as_deref(), Some("camel"));
    }
}
