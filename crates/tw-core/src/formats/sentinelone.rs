//! SentinelOne threats, as one item of `GET /web/api/v2.1/threats` `data[]`:
//! `{id, threatInfo: {...}, agentRealtimeInfo: {...}, agentDetectionInfo: {...}, indicators: [...]}`.
//! A body `{data: [threat, ...]}` (the API response itself) is read as its first threat.
//!
//! * **title**: `"<classification>: <threatName>"` (`"Trojan: zoom_update_5.17.exe"`); the
//!   threat name alone without a classification; else `"SentinelOne threat"`.
//! * **description**: the `indicators[].description` lines, deduplicated, one per line.
//! * **severity**: `threatInfo.confidenceLevel`: `malicious` -> high, `suspicious` -> medium;
//!   S1 has no numeric severity. **Default (absent, `n/a` or unknown): medium.**
//!   `vendor_severity` is the confidence level verbatim.
//! * **event time**: `threatInfo.createdAt` (ISO, microseconds), else `identifiedAt`.
//! * **external id**: `threatInfo.threatId`, else the threat's top-level `id` (the same value).
//! * **event type**: `threatInfo.classification`.
//! * **entities**, in this order: the agent's computer name (role `host`), its interface
//!   addresses and `agentIpV4`/`agentIpV6` (role `host`), `externalIp` (role `external`), the
//!   process user, the malicious process's arguments (role `process`), the originator process
//!   (role `originator`: the downloader for a static detection, the process itself for a
//!   behavioural one), the threat file (`filePath`) and its SHA-256/SHA-1/MD5, URLs in the
//!   process arguments, then the agent's last logged-in user (role `logged_in`). MITRE technique
//!   links and `mitigationStatus[].latestReport` are console links and never extracted.
//!
//! A body without a `threatInfo` object is read with the generic rules (see [`super::generic`]).
use super::entities::{self, EntitySet, first_text, obj_at, text_at, text_ref_at};
use super::generic::{self, finish};
use super::{Format, Object};
use crate::{Alert, EntityKind, Severity};
use serde_json::Value;

/// The severity used when the threat has no confidence level we understand.
pub const DEFAULT_SEVERITY: Severity = Severity::Medium;

/// Most indicator descriptions kept in the description.
const MAX_INDICATORS: usize = 64;

/// The threat object of a body: the body itself, or the first of an API response's `data[]`.
pub(crate) fn threat(obj: &Object) -> &Object {
    if obj.contains_key("threatInfo") {
        return obj;
    }
    obj.get("data").and_then(Value::as_array).and_then(|d| d.first()).and_then(Value::as_object).unwrap_or(obj)
}

/// Normalizes a SentinelOne threat.
pub fn normalize(obj: &Object) -> Alert {
    let t = threat(obj);
    let Some(info) = obj_at(t, "threatInfo") else {
        // Not a threat (a source pinned to `sentinelone` sent something else): generic rules.
        let mut alert = generic::normalize(obj);
        alert.format = Format::Sentinelone;
        return alert;
    };

    let name = first_text(info, &["threatName", "fileDisplayName"]);
    let classification = text_at(info, "classification");
    let title = match (&classification, &name) {
        (Some(c), Some(n)) => format!("{c}: {n}"),
        (None, Some(n)) => n.clone(),
        (Some(c), None) => format!("SentinelOne {c} threat"),
        (None, None) => "SentinelOne threat".to_string(),
    };

    let vendor_severity = text_at(info, "confidenceLevel");
    let severity = vendor_severity.as_deref().and_then(severity_of).unwrap_or(DEFAULT_SEVERITY);

    let event_time = ["createdAt", "identifiedAt"].iter().find_map(|k| info.get(*k).and_then(entities::time_any));

    finish(Alert {
        format: Format::Sentinelone,
        title,
        description: entities::description(indicator_lines(t)),
        severity,
        vendor_severity,
        event_time,
        external_id: text_at(info, "threatId").or_else(|| text_at(t, "id")),
        event_type: classification,
        entities: extract_entities(t, info),
    })
}

/// `malicious` -> high, `suspicious` -> medium; other words as any vendor's.
fn severity_of(level: &str) -> Option<Severity> {
    match level.trim().to_ascii_lowercase().as_str() {
        "malicious" => Some(Severity::High),
        "suspicious" => Some(Severity::Medium),
        other => Severity::from_vendor_word(other),
    }
}

fn indicator_lines(t: &Object) -> Option<String> {
    let mut lines: Vec<String> = Vec::new();
    for ind in t.get("indicators").and_then(Value::as_array).into_iter().flatten().take(MAX_INDICATORS).filter_map(Value::as_object) {
        if let Some(d) = text_at(ind, "description")
            && !lines.contains(&d)
        {
            lines.push(d);
        }
    }
    (!lines.is_empty()).then(|| lines.join("\n"))
}

fn extract_entities(t: &Object, info: &Object) -> Vec<crate::Entity> {
    let empty = Object::new();
    let realtime = obj_at(t, "agentRealtimeInfo").unwrap_or(&empty);
    let detection = obj_at(t, "agentDetectionInfo").unwrap_or(&empty);
    let mut set = EntitySet::new();

    set.add_value(EntityKind::Hostname, realtime.get("agentComputerName"), Some("host"));
    for nic in realtime.get("networkInterfaces").and_then(Value::as_array).into_iter().flatten().take(32).filter_map(Value::as_object) {
        set.add_value(EntityKind::Ip, nic.get("inet"), Some("host"));
        set.add_value(EntityKind::Ip, nic.get("inet6"), Some("host"));
    }
    set.add_value(EntityKind::Ip, detection.get("agentIpV4"), Some("host"));
    set.add_value(EntityKind::Ip, detection.get("agentIpV6"), Some("host"));
    set.add_value(EntityKind::Ip, detection.get("externalIp"), Some("external"));

    set.add_value(EntityKind::User, info.get("processUser"), None);
    let args = text_ref_at(info, "maliciousProcessArguments");
    if let Some(a) = &args {
        set.add(EntityKind::Process, a, Some("process"));
    }
    set.add_value(EntityKind::Process, info.get("originatorProcess"), Some("originator"));
    set.add_value(EntityKind::File, info.get("filePath"), None);
    for k in ["sha256", "sha1", "md5"] {
        set.add_value(EntityKind::FileHash, info.get(k), None);
    }
    if let Some(a) = &args {
        set.add_urls_in_text(a, None);
    }
    set.add_value(EntityKind::User, detection.get("agentLastLoggedInUserName"), Some("logged_in"));
    set.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn norm(v: Value) -> Alert {
        normalize(v.as_object().unwrap())
    }

    #[test]
    fn confidence_levels() {
        let sev = |c: Value| norm(json!({"threatInfo": {"confidenceLevel": c}})).severity;
        assert_eq!(sev(json!("malicious")), Severity::High);
        assert_eq!(sev(json!("Suspicious")), Severity::Medium);
        assert_eq!(sev(json!("n/a")), Severity::Medium);
        assert_eq!(sev(json!(null)), Severity::Medium);
        assert_eq!(sev(json!(["x"])), Severity::Medium);
    }

    #[test]
    fn api_response_and_odd_types() {
        let a = norm(json!({"data": [{"threatInfo": {"threatId": "7", "threatName": "x.exe", "classification": "Malware"}}]}));
        assert_eq!((a.title.as_str(), a.external_id.as_deref()), ("Malware: x.exe", Some("7")));
        let a = norm(
            json!({"threatInfo": {"threatName": []}, "indicators": {"a": 1}, "agentRealtimeInfo": {"networkInterfaces": [1, {"inet": 5}]}}),
        );
        assert_eq!(a.title, "SentinelOne threat");
        assert!(a.entities.is_empty());
    }
}
