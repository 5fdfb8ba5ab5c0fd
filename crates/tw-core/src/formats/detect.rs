//! Format detection from the payload's shape (its keys, never the source name).
//!
//! Checked in this order; the first match wins and anything else is [`Format::Generic`]:
//! 1. **CrowdStrike**: `metadata` object with an `eventType`, together with an `event` object;
//!    or an `event` object / the top level carrying `DetectId`, `CompositeId` or `DetectName`.
//! 2. **Splunk**: a `search_name` key (even null) or a `sid`, together with `result`,
//!    `results_link` or `trigger_time`.
//! 3. **Defender**: a Graph `security.alert` (`@odata.type`, or `evidence[]` with
//!    `serviceSource`/`detectionSource`); an M365 Defender incident (`incidentId`, `alerts[]`
//!    and `incidentName` or `redirectIncidentId`); a Management Activity record (`RecordType` 40 or
//!    `"40"` or `"SecurityComplianceAlerts"`); or the spec's shape (`eventType` with `entityType`,
//!    or with a `data` object holding `sender`/`recipients`).
//! 4. **SentinelOne**: a `threatInfo` object with `threatId`, `threatName`, `confidenceLevel` or
//!    `classification`, at the top level or in the first item of a `data[]` array.
//! 5. **Sentinel**: the incident trigger (`objectSchemaType` text with an `object` object holding
//!    `properties`), or the alert trigger (`SystemAlertId` text with `AlertDisplayName` or an
//!    `Entities` array).
//! 6. **Elastic**: an `alerts` array whose first object is an Elastic Security alert
//!    (`kibana.alert.uuid` / `kibana.alert.rule`, nested or dotted, or a legacy `signal` with a
//!    `rule`); a `rule` object with `rule_name` or `rule_id` and an `alerts` array or
//!    `alerts_count` (the connector's template with no alert); or one alert document itself.
use super::entities::{has_ignore_case, text_at};
use super::{Format, Object};
use super::{elastic, sentinelone};
use serde_json::Value;

/// Which format a payload object is.
pub fn detect(obj: &Object) -> Format {
    if is_crowdstrike(obj) {
        Format::Crowdstrike
    } else if is_splunk(obj) {
        Format::Splunk
    } else if is_defender(obj) {
        Format::Defender
    } else if is_sentinelone(obj) {
        Format::Sentinelone
    } else if is_sentinel(obj) {
        Format::Sentinel
    } else if is_elastic(obj) {
        Format::Elastic
    } else {
        Format::Generic
    }
}

fn has_any(obj: &Object, keys: &[&str]) -> bool {
    keys.iter().any(|k| obj.contains_key(*k))
}

fn is_crowdstrike(obj: &Object) -> bool {
    let event = obj.get("event").and_then(Value::as_object);
    let meta_type = obj.get("metadata").and_then(Value::as_object).is_some_and(|m| m.get("eventType").is_some_and(Value::is_string));
    const DETECT_KEYS: &[&str] = &["DetectId", "CompositeId", "DetectName"];
    (meta_type && event.is_some())
        || event.is_some_and(|e| has_any(e, DETECT_KEYS))
        || (has_any(obj, DETECT_KEYS) && has_any(obj, &["Severity", "SeverityName", "ComputerName", "Hostname"]))
}

fn is_splunk(obj: &Object) -> bool {
    let named = obj.contains_key("search_name") || obj.get("sid").is_some_and(Value::is_string);
    named && has_any(obj, &["result", "results_link", "trigger_time"])
}

fn is_defender(obj: &Object) -> bool {
    let odata = obj.get("@odata.type").and_then(Value::as_str).unwrap_or("");
    let graph_alert = has_ignore_case(odata, "microsoft.graph.security.alert")
        || (obj.get("evidence").is_some_and(Value::is_array) && has_any(obj, &["serviceSource", "detectionSource"]));
    let incident = obj.contains_key("incidentId")
        && obj.get("alerts").is_some_and(Value::is_array)
        && has_any(obj, &["incidentName", "redirectIncidentId"]);
    let mgmt = match obj.get("RecordType") {
        Some(Value::Number(n)) => n.as_u64() == Some(40),
        Some(Value::String(s)) => matches!(s.trim(), "40" | "SecurityComplianceAlerts"),
        _ => false,
    };
    let spec = text_at(obj, "eventType").is_some()
        && (obj.contains_key("entityType")
            || obj.get("data").and_then(Value::as_object).is_some_and(|d| has_any(d, &["sender", "recipients", "subject"])));
    graph_alert || incident || mgmt || spec
}

fn is_sentinelone(obj: &Object) -> bool {
    let threat = sentinelone::threat(obj);
    threat
        .get("threatInfo")
        .and_then(Value::as_object)
        .is_some_and(|t| has_any(t, &["threatId", "threatName", "confidenceLevel", "classification"]))
}

fn is_sentinel(obj: &Object) -> bool {
    let incident = text_at(obj, "objectSchemaType").is_some()
        && obj.get("object").and_then(Value::as_object).is_some_and(|o| o.get("properties").is_some_and(Value::is_object));
    let alert = text_at(obj, "SystemAlertId").is_some()
        && (obj.contains_key("AlertDisplayName") || obj.get("Entities").is_some_and(Value::is_array));
    incident || alert
}

fn is_elastic(obj: &Object) -> bool {
    let alerts = obj.get("alerts").and_then(Value::as_array);
    let first_is_alert = alerts.and_then(|a| a.first()).and_then(Value::as_object).is_some_and(elastic::is_alert_doc);
    let template = obj.get("rule").is_some_and(Value::is_object)
        && has_any(obj, &["rule_name", "rule_id"])
        && (alerts.is_some() || obj.contains_key("alerts_count"));
    first_is_alert || template || elastic::is_alert_doc(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(v: Value) -> Format {
        detect(v.as_object().unwrap())
    }

    #[test]
    fn spec_examples_are_detected() {
        assert_eq!(
            d(
                json!({"event_type":"security_alert","timestamp":"2024-01-15T10:00:00Z","source":"email-gateway","data":{"alert_id":"alert-123","severity":"high","details":{}}})
            ),
            Format::Generic
        );
        assert_eq!(
            d(
                json!({"eventType":"PhishingEmail","id":"AAMkAGI2...","creationTime":"2024-01-15T10:00:00Z","severity":"high","category":"Phish","entityType":"Email","data":{"sender":"phisher@malicious.com","subject":"Urgent Action Required","recipients":["user@company.com"]}})
            ),
            Format::Defender
        );
        assert_eq!(
            d(
                json!({"metadata":{"eventType":"DetectionSummaryEvent","eventCreationTime":1705320000000u64},"event":{"DetectId":"ldt:abc123","Severity":4,"HostnameField":"WORKSTATION-01","DetectName":"Malicious File Detected"}})
            ),
            Format::Crowdstrike
        );
        assert_eq!(d(json!({"result":{"host":"server-01"},"search_name":"Failed Login Alert","trigger_time":1705320000})), Format::Splunk);
    }

    #[test]
    fn odd_shapes_fall_back_to_generic() {
        assert_eq!(d(json!({})), Format::Generic);
        assert_eq!(d(json!({"metadata": "x", "event": []})), Format::Generic);
        assert_eq!(d(json!({"search_name": null})), Format::Generic);
        assert_eq!(d(json!({"RecordType": 15})), Format::Generic);
        assert_eq!(d(json!({"RecordType": "40"})), Format::Defender);
        assert_eq!(d(json!({"eventType": "x"})), Format::Generic);
        assert_eq!(d(json!({"threatInfo": {}})), Format::Generic);
        assert_eq!(d(json!({"data": [{"threatInfo": {"threatId": "1"}}]})), Format::Sentinelone);
        assert_eq!(d(json!({"objectSchemaType": "Incident", "object": {"properties": []}})), Format::Generic);
        assert_eq!(d(json!({"SystemAlertId": "x"})), Format::Generic);
        assert_eq!(d(json!({"SystemAlertId": "x", "Entities": []})), Format::Sentinel);
        assert_eq!(d(json!({"alerts": [{"signal": {}}]})), Format::Generic);
        assert_eq!(d(json!({"alerts": [{"signal": {"rule": {}}}]})), Format::Elastic);
        assert_eq!(d(json!({"kibana.alert.uuid": "u"})), Format::Elastic);
        assert_eq!(d(json!({"rule": {}, "rule_name": "r", "alerts": []})), Format::Elastic);
    }
}
