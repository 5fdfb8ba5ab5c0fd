//! Splunk webhook alert action: `{sid, search_name, app, owner, results_link, result}` (the real
//! body), and the spec's `{result, search_name, trigger_time}` form.
//!
//! * **title**: `search_name`; when null or empty `"Splunk alert <sid>"`, else `"Splunk alert"`.
//! * **description**: `result.description` / `message` / `reason` / `signature` when present.
//! * **severity**: Splunk's webhook body carries **no severity**, so the **default is medium**.
//!   When the search itself produced a `severity` / `urgency` field (e.g. Enterprise Security
//!   notables), or the body has a top-level `severity`, that value is used (and kept verbatim in
//!   `vendor_severity`, otherwise `vendor_severity` is `None`).
//! * **event time**: `trigger_time` (epoch **s**, number or string); else `result._time`
//!   (string epoch s, fractions allowed, or ISO); else the `firstTime` / `lastTime` that
//!   Enterprise Security correlation searches produce.
//! * **external id**: `sid`; without one, `"splunk:"` + hex SHA-256 of
//!   `search_name + "\n" + trigger_time + "\n" + result` (the result as compact JSON with
//!   sorted keys), so a re-delivery of the same alert gets the same id.
//! * **event type**: `result.sourcetype` when present.
//! * **entities**: the `result` row walked with the shared key/shape rules (CIM `dest`, `host`,
//!   `user`, `src_user`, `src_ip`, `dest_ip`, `url`, `process`, `parent_process`, `file_name`,
//!   `file_hash`, `recipient`, Sysmon `Hashes`, multivalue arrays); `_raw` is not mined and
//!   `results_link` is a console link, never extracted.
use super::entities::{self, EntitySet, first_text, obj_at, text, text_at};
use super::generic::{finish, read_severity};
use super::{Format, Object};
use crate::{Alert, Severity};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Splunk sends no severity: the default for every Splunk alert without one in its result.
pub const DEFAULT_SEVERITY: Severity = Severity::Medium;

/// Normalizes a Splunk webhook alert action body.
pub fn normalize(obj: &Object) -> Alert {
    let empty = Object::new();
    let result = obj_at(obj, "result")
        .or_else(|| obj.get("results").and_then(Value::as_array).and_then(|a| a.first()).and_then(Value::as_object))
        .unwrap_or(&empty);
    let sid = text_at(obj, "sid");
    let search_name = text_at(obj, "search_name");

    let title = match (&search_name, &sid) {
        (Some(n), _) => n.clone(),
        (None, Some(s)) => format!("Splunk alert {s}"),
        (None, None) => "Splunk alert".to_string(),
    };
    let description = first_text(result, &["description", "message", "reason", "signature"]);

    let (severity, vendor_severity) = ["severity", "urgency"]
        .iter()
        .find_map(|k| result.get(*k).and_then(read_severity))
        .or_else(|| obj.get("severity").and_then(read_severity))
        .unwrap_or((DEFAULT_SEVERITY, None));

    let event_time = obj.get("trigger_time").and_then(entities::time_epoch_secs).or_else(|| {
        ["_time", "firstTime", "lastTime"].iter().find_map(|k| result.get(*k).and_then(first_of).and_then(entities::time_epoch_secs))
    });

    let external_id = sid.clone().or_else(|| Some(stable_id(search_name.as_deref(), obj.get("trigger_time"), result)));

    let mut set = EntitySet::new();
    entities::walk_object(result, &mut set);

    finish(Alert {
        format: Format::Splunk,
        title,
        description: entities::description(description),
        severity,
        vendor_severity,
        event_time,
        external_id,
        event_type: text_at(result, "sourcetype"),
        entities: set.into_vec(),
    })
}

/// A multivalue field's first value, or the value itself.
fn first_of(v: &Value) -> Option<&Value> {
    match v {
        Value::Array(a) => a.first(),
        other => Some(other),
    }
}

/// `splunk:<sha256 hex>` of search name, trigger time and the canonical result JSON.
fn stable_id(search_name: Option<&str>, trigger_time: Option<&Value>, result: &Object) -> String {
    let mut h = Sha256::new();
    h.update(search_name.unwrap_or("").as_bytes());
    h.update(b"\n");
    h.update(trigger_time.and_then(text).unwrap_or_default().as_bytes());
    h.update(b"\n");
    // serde_json's map is ordered by key, so this serialization is canonical.
    h.update(serde_json::to_string(result).unwrap_or_default().as_bytes());
    format!("splunk:{}", hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Entity, EntityKind};
    use serde_json::json;

    fn norm(v: Value) -> Alert {
        normalize(v.as_object().unwrap())
    }

    #[test]
    fn spec_example() {
        let v = json!({
            "result": {"host": "server-01", "source": "WinEventLog:Security", "sourcetype": "WinEventLog", "_raw": "...", "EventCode": "4625"},
            "search_name": "Failed Login Alert",
            "trigger_time": 1705320000
        });
        let a = norm(v.clone());
        assert_eq!(a.title, "Failed Login Alert");
        assert_eq!(a.severity, Severity::Medium);
        assert_eq!(a.vendor_severity, None);
        assert_eq!(a.event_time.unwrap().to_rfc3339(), "2024-01-15T12:00:00+00:00");
        let id = a.external_id.clone().unwrap();
        assert!(id.starts_with("splunk:") && id.len() == "splunk:".len() + 64, "{id}");
        assert_eq!(norm(v).external_id.unwrap(), id, "the fallback id is stable");
        let other = norm(json!({"result": {"host": "server-02"}, "search_name": "Failed Login Alert", "trigger_time": 1705320000}));
        assert_ne!(other.external_id.unwrap(), id);
        assert_eq!(a.event_type.as_deref(), Some("WinEventLog"));
        assert_eq!(a.entities, vec![Entity::with_role(EntityKind::Hostname, "server-01", "host")]);
    }

    #[test]
    fn null_search_name_and_string_time() {
        let a = norm(json!({"sid": "abc", "search_name": null, "result": {"_time": "1718031540.500", "urgency": "critical"}}));
        assert_eq!(a.title, "Splunk alert abc");
        assert_eq!(a.external_id.as_deref(), Some("abc"));
        assert_eq!(a.event_time.unwrap().timestamp_millis(), 1718031540500);
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(a.vendor_severity.as_deref(), Some("critical"));
        let a = norm(json!({"search_name": ["x"], "result": "nope", "trigger_time": "soon"}));
        assert_eq!(a.title, "Splunk alert");
        assert_eq!(a.event_time, None);
    }
}
