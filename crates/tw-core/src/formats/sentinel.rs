//! Microsoft Sentinel, as a playbook (Logic App) posts it, in two shapes:
//!
//! 1. **Incident trigger** `{objectSchemaType: "Incident", objectEventType: "Create"|"Update",
//!    object: {name, properties: {...}}}`: title `properties.title`; description
//!    `properties.description`; severity `properties.severity`; time `createdTimeUtc`, else
//!    `firstActivityTimeUtc`; id `incidentNumber` (else `providerIncidentId`, else the incident's
//!    GUID `object.name`), so an Update of an incident is recognised as the incident already
//!    received; event type `objectSchemaType` (`Incident`); entities from
//!    `relatedEntities[]` (`kind` + camelCase `properties`), then the entities of
//!    `alerts[].properties.entities[]` when an alert carries its own. `incidentUrl` and `owner`
//!    (the analyst the incident is assigned to) are never extracted.
//! 2. **Alert trigger** `{SystemAlertId, AlertDisplayName, Severity, Intent, Entities[]}`:
//!    title `AlertDisplayName` (else `AlertType`); description `Description`; severity
//!    `Severity`; time `StartTimeUtc`, else `TimeGenerated`; id `SystemAlertId`; event type
//!    `Intent` (the kill-chain tactic), else `"Alert"`; entities from `Entities[]` (`Type` +
//!    PascalCase fields; `$ref` stubs skipped).
//!
//! Severity is High/Medium/Low/Informational through [`Severity::from_vendor_word`];
//! **default when absent or not understood: medium**; `vendor_severity` is the word verbatim.
//! Anything that is neither shape is read with the generic rules (see [`super::generic`]).
use super::entities::{self, EntitySet, add_typed_entities, first_text, obj_at, path, text_at};
use super::generic::{self, finish};
use super::{Format, Object};
use crate::{Alert, Severity};
use serde_json::Value;

/// The severity used when the payload has none (or none we understand).
pub const DEFAULT_SEVERITY: Severity = Severity::Medium;

/// Most entity objects read from one payload (the set keeps at most 200 entities anyway).
const MAX_ENTITY_OBJECTS: usize = 1000;

/// Normalizes either Sentinel shape.
pub fn normalize(obj: &Object) -> Alert {
    let alert = if let Some(props) = path(obj, &["object", "properties"]).and_then(Value::as_object) {
        incident(obj, props)
    } else if obj.contains_key("SystemAlertId") || obj.contains_key("AlertDisplayName") {
        alert_trigger(obj)
    } else {
        generic::normalize(obj)
    };
    let mut alert = finish(alert);
    alert.format = Format::Sentinel;
    alert
}

fn severity_of(v: Option<&Value>) -> (Severity, Option<String>) {
    generic::read_severity_or(v, DEFAULT_SEVERITY)
}

fn incident(obj: &Object, p: &Object) -> Alert {
    let mut set = EntitySet::new();
    add_typed_entities(p.get("relatedEntities"), &mut set);
    for a in p.get("alerts").and_then(Value::as_array).into_iter().flatten().take(MAX_ENTITY_OBJECTS).filter_map(Value::as_object) {
        add_typed_entities(obj_at(a, "properties").and_then(|ap| ap.get("entities")), &mut set);
    }
    let (severity, vendor_severity) = severity_of(p.get("severity"));
    let first_alert_title = || {
        let a = p.get("alerts")?.as_array()?.first()?.as_object()?;
        obj_at(a, "properties").and_then(|ap| first_text(ap, &["alertDisplayName", "friendlyName"]))
    };
    Alert {
        format: Format::Sentinel,
        title: text_at(p, "title").or_else(first_alert_title).unwrap_or_default(),
        description: entities::description(text_at(p, "description")),
        severity,
        vendor_severity,
        event_time: ["createdTimeUtc", "firstActivityTimeUtc", "lastModifiedTimeUtc"]
            .iter()
            .find_map(|k| p.get(*k).and_then(entities::time_any)),
        external_id: first_text(p, &["incidentNumber", "providerIncidentId"])
            .or_else(|| obj_at(obj, "object").and_then(|o| text_at(o, "name"))),
        event_type: text_at(obj, "objectSchemaType").or_else(|| Some("Incident".to_string())),
        entities: set.into_vec(),
    }
}

fn alert_trigger(obj: &Object) -> Alert {
    let mut set = EntitySet::new();
    add_typed_entities(obj.get("Entities"), &mut set);
    let (severity, vendor_severity) = severity_of(obj.get("Severity"));
    Alert {
        format: Format::Sentinel,
        title: first_text(obj, &["AlertDisplayName", "AlertType"]).unwrap_or_default(),
        description: entities::description(text_at(obj, "Description")),
        severity,
        vendor_severity,
        event_time: ["StartTimeUtc", "TimeGenerated", "EndTimeUtc"].iter().find_map(|k| obj.get(*k).and_then(entities::time_any)),
        external_id: first_text(obj, &["SystemAlertId", "ProviderAlertId"]),
        event_type: text_at(obj, "Intent").or_else(|| Some("Alert".to_string())),
        entities: set.into_vec(),
    }
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
    fn incident_falls_back_to_the_guid_and_first_alert() {
        let a = norm(json!({"objectSchemaType": "Incident", "object": {"name": "guid-1", "properties": {
            "severity": "Informational",
            "alerts": [{"properties": {"alertDisplayName": "From the alert"}}]}}}));
        assert_eq!(a.title, "From the alert");
        assert_eq!(a.external_id.as_deref(), Some("guid-1"));
        assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::Info, Some("Informational")));
    }

    #[test]
    fn alert_trigger_entities_and_odd_types() {
        let a = norm(json!({"SystemAlertId": "s1", "Severity": "Low", "Entities": [
            {"$ref": "4"}, 7, {"Type": "ip", "Address": "203.0.113.9"}, {"Type": "account", "Name": "jdoe"}]}));
        assert_eq!(a.external_id.as_deref(), Some("s1"));
        assert_eq!(a.title, "Untitled alert s1");
        assert_eq!(a.severity, Severity::Low);
        assert_eq!(a.entities, vec![Entity::new(EntityKind::Ip, "203.0.113.9"), Entity::new(EntityKind::User, "jdoe")]);
        let a = norm(json!({"SystemAlertId": ["x"], "Entities": {"Type": "ip"}, "Severity": 99}));
        assert_eq!((a.external_id, a.severity), (None, Severity::Critical));
    }
}
