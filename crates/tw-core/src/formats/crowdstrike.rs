//! CrowdStrike Falcon streaming-API detections: `{metadata: {eventType, eventCreationTime},
//! event: {...}}`, both the legacy `DetectionSummaryEvent` and the current
//! `EppDetectionSummaryEvent`. A flat body (the event's fields at the top level) is accepted too.
//!
//! * **title**: `DetectName` (legacy) or `Name` (EPP); else `"CrowdStrike <eventType>"`.
//! * **description**: `DetectDescription` / `Description`.
//! * **severity**: `SeverityName` when it is a known word (preferred, both shapes); otherwise the
//!   numeric `Severity`: legacy 1-5 scale (5 critical, 4 high, 3 medium, 2 low, 1 and 0 info);
//!   EPP (or any value above 5) is a 0-100 score: from 90 critical, from 70 high, from 40
//!   medium, from 20 low, else info. **Default when neither is usable: medium.** `vendor_severity` is the
//!   numeric `Severity` verbatim (`"4"`, `"70"`), else `SeverityName`.
//! * **event time**: `metadata.eventCreationTime` (epoch **ms**); else the event's
//!   `ProcessStartTime` / `Timestamp` (epoch **s**).
//! * **external id**: `DetectId` (legacy) or `CompositeId` (EPP), at the event's top level; else
//!   none. Never `AggregateId`: an aggregate groups several detections, so it would merge them.
//! * **event type**: `metadata.eventType`.
//! * **entities**, in this order: host (`ComputerName` / `Hostname` / `HostnameField`), its
//!   `LocalIP`/`LocalIPv6`, user, the process (`CommandLine`, role `process`), its image file
//!   (`FilePath` + `FileName`), hashes (SHA256, SHA1, MD5, `IOCValue`; never all-zero ones),
//!   URLs inside command lines, parent and grandparent processes (roles `parent_process`,
//!   `grandparent_process`), `NetworkAccesses[].RemoteAddress` (role `remote`),
//!   `ExecutablesWritten[]`, `DocumentsAccessed[]`, `AssociatedFile`. `FalconHostLink` is a
//!   console link and is never extracted; empty strings (`""` means absent) are skipped.
use super::entities::{self, EntitySet, first_text, has_ignore_case, obj_at, path, starts_with_ignore_case, text, text_at, text_ref_at};
use super::generic::finish;
use super::{Format, Object};
use crate::{Alert, EntityKind, Severity};
use serde_json::Value;

/// The severity used when the payload has no usable severity.
pub const DEFAULT_SEVERITY: Severity = Severity::Medium;

/// Normalizes a CrowdStrike Falcon detection event.
pub fn normalize(obj: &Object) -> Alert {
    let meta = obj_at(obj, "metadata");
    let ev = obj_at(obj, "event").unwrap_or(obj);
    let event_type = meta.and_then(|m| text_at(m, "eventType")).or_else(|| text_at(obj, "eventType"));
    let is_epp = event_type.as_deref().is_some_and(|t| starts_with_ignore_case(t, "epp"))
        || (ev.contains_key("CompositeId") && !ev.contains_key("DetectId"));

    let title = first_text(ev, &["DetectName", "Name"])
        .or_else(|| event_type.as_ref().map(|t| format!("CrowdStrike {t}")))
        .unwrap_or_else(|| "CrowdStrike detection".to_string());
    let description = first_text(ev, &["DetectDescription", "Description"]);

    let numeric = ev.get("Severity").and_then(text);
    let name = text_at(ev, "SeverityName");
    let severity = name
        .as_deref()
        .and_then(Severity::from_vendor_word)
        .or_else(|| severity_from_number(ev.get("Severity")?, is_epp))
        .unwrap_or(DEFAULT_SEVERITY);
    let vendor_severity = numeric.or(name);

    let event_time = meta.and_then(|m| m.get("eventCreationTime")).and_then(entities::time_epoch_millis).or_else(|| {
        ["ProcessStartTime", "Timestamp"]
            .iter()
            .find_map(|k| ev.get(*k).filter(|v| v.as_f64() != Some(0.0)).and_then(entities::time_epoch_secs))
    });

    let external_id = first_text(ev, &["DetectId", "CompositeId"]);

    finish(Alert {
        format: Format::Crowdstrike,
        title,
        description: entities::description(description),
        severity,
        vendor_severity,
        event_time,
        external_id,
        event_type,
        entities: extract_entities(ev),
    })
}

/// Legacy 1-5, or a 0-100 score for EPP and for any value above 5.
fn severity_from_number(v: &Value, is_epp: bool) -> Option<Severity> {
    let n = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    if !is_epp && n <= 5.0 {
        return Some(match n.round() as u8 {
            5 => Severity::Critical,
            4 => Severity::High,
            3 => Severity::Medium,
            2 => Severity::Low,
            _ => Severity::Info,
        });
    }
    (n <= 100.0).then(|| entities::severity_from_score(n))
}

fn extract_entities(ev: &Object) -> Vec<crate::Entity> {
    let mut set = EntitySet::new();
    set.add_value(EntityKind::Hostname, ev.get("ComputerName"), Some("host"));
    set.add_value(EntityKind::Hostname, ev.get("Hostname"), Some("host"));
    set.add_value(EntityKind::Hostname, ev.get("HostnameField"), Some("host"));
    set.add_value(EntityKind::Ip, ev.get("LocalIP"), Some("host"));
    set.add_value(EntityKind::Ip, ev.get("LocalIPv6"), Some("host"));
    set.add_value(EntityKind::Ip, ev.get("ExternalIP"), Some("host"));
    set.add_value(EntityKind::User, ev.get("UserName"), None);

    let cmd = text_ref_at(ev, "CommandLine");
    if let Some(c) = &cmd {
        set.add(EntityKind::Process, c, Some("process"));
    }
    let file_path = text_ref_at(ev, "FilePath");
    let file_name = text_ref_at(ev, "FileName");
    set.add_file(file_path.as_deref(), file_name.as_deref(), Some("process"));

    for k in ["SHA256String", "SHA1String", "MD5String"] {
        set.add_value(EntityKind::FileHash, ev.get(k), Some("process"));
    }
    let ioc_type = text_ref_at(ev, "IOCType").unwrap_or_default();
    if let Some(ioc) = text_ref_at(ev, "IOCValue") {
        let names = |word| has_ignore_case(&ioc_type, word);
        let kind = if names("hash") || names("sha") || names("md5") {
            Some(EntityKind::FileHash)
        } else if names("domain") {
            Some(EntityKind::Domain)
        } else if names("ip") {
            Some(EntityKind::Ip)
        } else {
            None
        };
        if let Some(kind) = kind {
            set.add(kind, &ioc, None);
        }
    }
    if let Some(c) = &cmd {
        set.add_urls_in_text(c, None);
    }

    // (command line, image file name, image file path, role) of the parent and grandparent (legacy
    // and EPP spellings).
    const ANCESTORS: [(&str, &str, &str, &str); 3] = [
        ("ParentCommandLine", "ParentImageFileName", "ParentImageFilePath", "parent_process"),
        ("GrandparentCommandLine", "GrandparentImageFileName", "GrandparentImageFilePath", "grandparent_process"),
        ("GrandParentCommandLine", "GrandParentImageFileName", "GrandParentImageFilePath", "grandparent_process"),
    ];
    for (cmdline_key, image_key, image_path_key, role) in ANCESTORS {
        let cmdline = text_ref_at(ev, cmdline_key);
        if let Some(c) = &cmdline {
            set.add(EntityKind::Process, c, Some(role));
        }
        let image = text_ref_at(ev, image_key);
        let image_path = text_ref_at(ev, image_path_key);
        set.add_file(image_path.as_deref(), image.as_deref(), Some(role));
        if let Some(c) = &cmdline {
            set.add_urls_in_text(c, None);
        }
    }
    for k in ["ParentSHA256String", "ParentMD5String", "GrandparentSHA256String"] {
        set.add_value(EntityKind::FileHash, ev.get(k), Some("parent_process"));
    }

    for access in array_objects(ev, "NetworkAccesses") {
        set.add_value(EntityKind::Ip, access.get("RemoteAddress"), Some("remote"));
    }
    for (key, role) in [("ExecutablesWritten", "executable_written"), ("DocumentsAccessed", "document_accessed")] {
        for f in array_objects(ev, key) {
            let dir = text_ref_at(f, "FilePath");
            let name = text_ref_at(f, "FileName");
            set.add_file(dir.as_deref(), name.as_deref(), Some(role));
        }
    }
    set.add_value(EntityKind::File, ev.get("AssociatedFile"), None);
    if let Some(domain) = path(ev, &["DnsRequests"]).and_then(Value::as_array) {
        for d in domain.iter().take(64).filter_map(Value::as_object) {
            set.add_value(EntityKind::Domain, d.get("DomainName"), None);
        }
    }
    set.into_vec()
}

fn array_objects<'a>(obj: &'a Object, key: &str) -> impl Iterator<Item = &'a Object> {
    obj.get(key).and_then(Value::as_array).into_iter().flatten().take(entities::MAX_ENTITIES).filter_map(Value::as_object)
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
            "metadata": {"eventType": "DetectionSummaryEvent", "eventCreationTime": 1705320000000u64},
            "event": {"DetectId": "ldt:abc123", "Severity": 4, "HostnameField": "WORKSTATION-01", "DetectName": "Malicious File Detected"}
        }));
        assert_eq!(a.title, "Malicious File Detected");
        assert_eq!(a.severity, Severity::High);
        assert_eq!(a.vendor_severity.as_deref(), Some("4"));
        assert_eq!(a.event_time.unwrap().to_rfc3339(), "2024-01-15T12:00:00+00:00");
        assert_eq!(a.external_id.as_deref(), Some("ldt:abc123"));
        assert_eq!(a.event_type.as_deref(), Some("DetectionSummaryEvent"));
        assert_eq!(a.entities, vec![Entity::with_role(EntityKind::Hostname, "WORKSTATION-01", "host")]);
    }

    #[test]
    fn legacy_and_epp_severity_scales() {
        let sev = |meta: &str, s: Value, name: Value| {
            norm(json!({"metadata": {"eventType": meta}, "event": {"Severity": s, "SeverityName": name}})).severity
        };
        assert_eq!(sev("DetectionSummaryEvent", json!(5), json!(null)), Severity::Critical);
        assert_eq!(sev("DetectionSummaryEvent", json!(3), json!(null)), Severity::Medium);
        assert_eq!(sev("DetectionSummaryEvent", json!("2"), json!(null)), Severity::Low);
        assert_eq!(sev("DetectionSummaryEvent", json!(1), json!(null)), Severity::Info);
        assert_eq!(sev("EppDetectionSummaryEvent", json!(90), json!(null)), Severity::Critical);
        assert_eq!(sev("EppDetectionSummaryEvent", json!(70), json!(null)), Severity::High);
        assert_eq!(sev("EppDetectionSummaryEvent", json!(50), json!(null)), Severity::Medium);
        assert_eq!(sev("EppDetectionSummaryEvent", json!(30), json!(null)), Severity::Low);
        assert_eq!(sev("EppDetectionSummaryEvent", json!(10), json!(null)), Severity::Info);
        assert_eq!(sev("EppDetectionSummaryEvent", json!(4), json!(null)), Severity::Info);
        assert_eq!(sev("EppDetectionSummaryEvent", json!(30), json!("High")), Severity::High);
        assert_eq!(sev("DetectionSummaryEvent", json!(null), json!(null)), Severity::Medium);
        assert_eq!(sev("DetectionSummaryEvent", json!(1e9), json!(["x"])), Severity::Medium);
    }

    #[test]
    fn odd_types_do_not_panic() {
        let a = norm(
            json!({"metadata": [], "event": {"NetworkAccesses": {"RemoteAddress": "1.2.3.4"}, "ExecutablesWritten": [1, null, "x"], "CommandLine": 5}}),
        );
        assert_eq!(a.title, "CrowdStrike detection");
        assert_eq!(a.severity, Severity::Medium);
    }
}
