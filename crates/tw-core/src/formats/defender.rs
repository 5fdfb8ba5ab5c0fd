//! Microsoft Defender for Office 365 / Microsoft 365 Defender, in four shapes:
//!
//! 1. **Graph `security.alert` (alerts_v2)**: title `title`; description `description`;
//!    severity `severity`; time `createdDateTime` (7 fractional digits), else
//!    `firstActivityDateTime`; id `id` (else `providerAlertId`); event type `category`;
//!    entities from `evidence[]` by `@odata.type` (analyzed message: P2 sender, P1 envelope
//!    sender, recipient, sender IP, URLs; mailbox; URL; IP; file hashes and name; device; user;
//!    process). `alertWebUrl` / `incidentWebUrl` are console links, never extracted.
//! 2. **M365 Defender incident (incidents API)**: title `incidentName` (else the first alert's
//!    `title`); description: the first alert's; severity `severity`; time `createdTime`; id
//!    `incidentId`; event type: the first alert's `category`; entities from
//!    `alerts[].entities[]` by `entityType` (null fields skipped) and `alerts[].devices[]`.
//! 3. **Management Activity API alert record (`RecordType` 40, number or string)**: title
//!    `Name`; description `"Email subject: <Data.ms>"` when known, else `Comments`; severity
//!    `Severity`; time `CreationTime` (no zone: UTC); id `AlertId` (else `Id`); event type
//!    `Category`; entities from `Data`, a JSON **string** (an object is accepted too) with short
//!    keys: `tsd` sender, `trc` recipient, `sip` sender IP, `suid` reporting user, then
//!    `AlertEntityId` by `EntityType`.
//! 4. **The spec's shape** `{eventType, id, creationTime, severity, category, entityType,
//!    data: {sender, subject, recipients}}`: title `data.subject` (the e-mail subject), else
//!    `"<eventType> (<category>)"`; severity `severity`; time `creationTime`; id `id`; event type
//!    `eventType`; entities: sender (role `sender`), recipients (role `recipient`), then whatever
//!    else the shared walker finds in `data`.
//!
//! Severity words go through [`Severity::from_vendor_word`] (`informational` -> info,
//! `unknown` -> info); **default when absent or not understood: medium**; `vendor_severity` is
//! the vendor's word verbatim. Anything that is none of these shapes is read with the generic
//! rules (see [`super::generic`]).
use super::entities::{self, EntitySet, add_typed_entity, first_text, has_ignore_case, obj_at, text, text_at};
use super::generic::{self, finish};
use super::{Format, Object};
use crate::{Alert, EntityKind, Severity};
use serde_json::Value;

/// The severity used when the payload has none (or none we understand).
pub const DEFAULT_SEVERITY: Severity = Severity::Medium;

/// Longest `Data` string we parse (the real ones are about 1 KiB).
const MAX_DATA_STRING: usize = 64 * 1024;

/// Normalizes any of the Defender shapes.
pub fn normalize(obj: &Object) -> Alert {
    let alert = if obj.get("evidence").is_some_and(Value::is_array)
        || obj.get("@odata.type").and_then(Value::as_str).is_some_and(|t| has_ignore_case(t, "security.alert"))
    {
        graph_alert(obj)
    } else if obj.contains_key("incidentId") && obj.get("alerts").is_some_and(Value::is_array) {
        incident(obj)
    } else if obj.contains_key("RecordType") || (obj.contains_key("AlertId") && obj.contains_key("Data")) {
        mgmt_activity(obj)
    } else if obj.contains_key("eventType") || obj.contains_key("entityType") {
        spec_shape(obj)
    } else {
        generic::normalize(obj)
    };
    let mut alert = finish(alert);
    alert.format = Format::Defender;
    alert
}

fn severity_of(v: Option<&Value>) -> (Severity, Option<String>) {
    generic::read_severity_or(v, DEFAULT_SEVERITY)
}

fn graph_alert(obj: &Object) -> Alert {
    let mut set = EntitySet::new();
    for ev in obj.get("evidence").and_then(Value::as_array).into_iter().flatten().take(1000) {
        if let Some(e) = ev.as_object()
            && !add_typed_entity(e, &mut set)
        {
            entities::walk_object(e, &mut set);
        }
    }
    let (severity, vendor_severity) = severity_of(obj.get("severity"));
    let subject = obj
        .get("evidence")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .find_map(|e| text_at(e, "subject"));
    Alert {
        format: Format::Defender,
        title: first_text(obj, &["title", "threatDisplayName"]).or(subject).unwrap_or_default(),
        description: entities::description(text_at(obj, "description")),
        severity,
        vendor_severity,
        event_time: ["createdDateTime", "firstActivityDateTime", "lastUpdateDateTime"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(entities::time_any)),
        external_id: first_text(obj, &["id", "providerAlertId"]),
        event_type: first_text(obj, &["category", "serviceSource"]),
        entities: set.into_vec(),
    }
}

fn incident(obj: &Object) -> Alert {
    let alerts: Vec<&Object> =
        obj.get("alerts").and_then(Value::as_array).into_iter().flatten().take(1000).filter_map(Value::as_object).collect();
    let first = alerts.first().copied();
    let mut set = EntitySet::new();
    for a in &alerts {
        entities::add_typed_entities(a.get("entities"), &mut set);
        for d in a.get("devices").and_then(Value::as_array).into_iter().flatten().take(100) {
            if let Some(d) = d.as_object() {
                set.add_value(EntityKind::Hostname, d.get("deviceDnsName"), Some("host"));
            }
        }
    }
    let (severity, vendor_severity) = severity_of(obj.get("severity").or_else(|| first?.get("severity")));
    Alert {
        format: Format::Defender,
        title: text_at(obj, "incidentName").or_else(|| first.and_then(|a| text_at(a, "title"))).unwrap_or_default(),
        description: entities::description(first.and_then(|a| text_at(a, "description"))),
        severity,
        vendor_severity,
        event_time: ["createdTime", "lastUpdateTime"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(entities::time_any))
            .or_else(|| first.and_then(|a| a.get("creationTime")).and_then(entities::time_any)),
        external_id: text_at(obj, "incidentId").or_else(|| first.and_then(|a| text_at(a, "alertId"))),
        event_type: first.and_then(|a| text_at(a, "category")).or_else(|| Some("Incident".to_string())),
        entities: set.into_vec(),
    }
}

fn mgmt_activity(obj: &Object) -> Alert {
    let parsed: Option<Value> = match obj.get("Data") {
        Some(Value::String(s)) if s.len() <= MAX_DATA_STRING => serde_json::from_str(s).ok(),
        Some(v @ Value::Object(_)) => Some(v.clone()),
        _ => None,
    };
    let data = parsed.as_ref().and_then(Value::as_object);
    let mut set = EntitySet::new();
    if let Some(d) = data {
        set.add_value(EntityKind::Email, d.get("tsd"), Some("sender"));
        set.add_value(EntityKind::Email, d.get("trc"), Some("recipient"));
        set.add_value(EntityKind::Ip, d.get("sip"), Some("sender"));
        set.add_value(EntityKind::Email, d.get("suid"), Some("reporter"));
        entities::walk_object(d, &mut set);
    }
    if let Some(id) = text_at(obj, "AlertEntityId") {
        let etype = text_at(obj, "EntityType").unwrap_or_default().to_ascii_lowercase();
        match etype.as_str() {
            "user" | "mailbox" if entities::as_email(&id).is_some() => {
                set.add(EntityKind::Email, &id, None);
            }
            "user" => {
                set.add(EntityKind::User, &id, None);
            }
            "ip" => {
                set.add(EntityKind::Ip, &id, None);
            }
            "url" => {
                set.add(EntityKind::Url, &id, None);
            }
            _ => {}
        }
    }
    let subject = data.and_then(|d| text_at(d, "ms"));
    let (severity, vendor_severity) = severity_of(obj.get("Severity"));
    Alert {
        format: Format::Defender,
        title: first_text(obj, &["Name", "AlertType"]).or_else(|| subject.clone()).unwrap_or_default(),
        description: entities::description(subject.map(|s| format!("Email subject: {s}")).or_else(|| text_at(obj, "Comments"))),
        severity,
        vendor_severity,
        event_time: obj.get("CreationTime").and_then(entities::time_any),
        external_id: first_text(obj, &["AlertId", "Id"]),
        event_type: first_text(obj, &["Category", "Operation"]),
        entities: set.into_vec(),
    }
}

fn spec_shape(obj: &Object) -> Alert {
    let data = obj_at(obj, "data");
    let mut set = EntitySet::new();
    if let Some(d) = data {
        set.add_value(EntityKind::Email, d.get("sender"), Some("sender"));
        set.add_value(EntityKind::Email, d.get("recipients"), Some("recipient"));
        set.add_value(EntityKind::Email, d.get("recipient"), Some("recipient"));
        entities::walk_object(d, &mut set);
    }
    let event_type = text_at(obj, "eventType");
    let fallback_title = match (&event_type, text_at(obj, "category")) {
        (Some(t), Some(c)) => Some(format!("{t} ({c})")),
        (Some(t), None) => Some(t.clone()),
        (None, c) => c,
    };
    let (severity, vendor_severity) = severity_of(obj.get("severity"));
    Alert {
        format: Format::Defender,
        title: data
            .and_then(|d| first_text(d, &["subject", "title"]))
            .or_else(|| text_at(obj, "title"))
            .or(fallback_title)
            .unwrap_or_default(),
        description: entities::description(text_at(obj, "description").or_else(|| data.and_then(|d| text_at(d, "description")))),
        severity,
        vendor_severity,
        event_time: ["creationTime", "createdDateTime", "timestamp"].iter().find_map(|k| obj.get(*k).and_then(entities::time_any)),
        external_id: obj.get("id").and_then(text),
        event_type,
        entities: set.into_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Entity;
    use serde_json::json;

    fn norm(v: Value) -> Alert {
        normalize(v.as_object().unwrap())
    }

    #[test]
    fn spec_example() {
        let a = norm(json!({
            "eventType": "PhishingEmail",
            "id": "AAMkAGI2...",
            "creationTime": "2024-01-15T10:00:00Z",
            "severity": "high",
            "category": "Phish",
            "entityType": "Email",
            "data": {"sender": "phisher@malicious.com", "subject": "Urgent Action Required", "recipients": ["user@company.com"]}
        }));
        assert_eq!(a.format, Format::Defender);
        assert_eq!(a.title, "Urgent Action Required");
        assert_eq!(a.severity, Severity::High);
        assert_eq!(a.vendor_severity.as_deref(), Some("high"));
        assert_eq!(a.event_time.unwrap().to_rfc3339(), "2024-01-15T10:00:00+00:00");
        assert_eq!(a.external_id.as_deref(), Some("AAMkAGI2..."));
        assert_eq!(a.event_type.as_deref(), Some("PhishingEmail"));
        assert_eq!(
            a.entities,
            vec![
                Entity::with_role(EntityKind::Email, "phisher@malicious.com", "sender"),
                Entity::with_role(EntityKind::Email, "user@company.com", "recipient"),
            ]
        );
    }

    #[test]
    fn spec_shape_without_subject_and_with_odd_types() {
        let a = norm(json!({"eventType": "PhishingEmail", "category": "Phish", "id": 12, "severity": 3, "data": "x"}));
        assert_eq!(a.title, "PhishingEmail (Phish)");
        assert_eq!(a.external_id.as_deref(), Some("12"));
        assert_eq!(a.severity, Severity::Medium);
        assert_eq!(a.vendor_severity.as_deref(), Some("3"));
    }

    #[test]
    fn mgmt_activity_with_bad_data_string() {
        let a = norm(
            json!({"RecordType": "40", "AlertId": "x", "Data": "{not json", "Severity": "Low", "CreationTime": "2024-06-10T16:20:03"}),
        );
        assert_eq!(a.external_id.as_deref(), Some("x"));
        assert_eq!(a.severity, Severity::Low);
        assert_eq!(a.event_time.unwrap().to_rfc3339(), "2024-06-10T16:20:03+00:00");
        assert_eq!(a.title, "Untitled alert x");
    }
}
