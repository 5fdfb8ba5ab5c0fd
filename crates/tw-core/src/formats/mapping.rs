//! Declarative mappings: a source may say where its vendor keeps each field, as JSON pointers
//! (RFC 6901), so a new vendor needs no code:
//!
//! ```json
//! {"title": "/alert/name", "severity": "/alert/level", "alert_id": "/alert/uid",
//!  "event_time": "/alert/ts", "description": "/alert/summary",
//!  "entities": {"ip": ["/alert/src_ip"], "user": ["/alert/user"]}}
//! ```
//!
//! [`Mapping::parse`] checks a mapping once, when the source is configured, and names every
//! problem by its field path (`mapping.entities.ip[1]`). [`normalize_mapped`] starts from the
//! generic reading of the payload and lets every mapped field that resolves to a value win:
//!
//! * strings, numbers and booleans become text (a missing pointer, `null`, an object, an array
//!   or an empty string fall back to the generic reading);
//! * `event_time` accepts RFC 3339 / ISO strings and epoch seconds or milliseconds (numbers or
//!   numeric strings, as every other format);
//! * the `severity` value becomes `vendor_severity`, goes through the source's
//!   `severity_mapping` and otherwise is read as the generic format reads a severity (our own
//!   names and vendor synonyms, 1-5, 0-100 scores; default medium);
//! * each entity pointer may point at one value or at an array (one entity per scalar element);
//!   values are validated as their kind (an `ip` pointer at `"n/a"` adds nothing) and added to
//!   the generically extracted entities without duplicates;
//! * the alert's format stays [`Format::Generic`](crate::Format::Generic).
use super::entities::{self, MAX_ENTITIES};
use super::generic::{self, read_severity};
use super::{NormalizeError, apply_severity_mapping, json_type};
use crate::{Alert, Entity, EntityKind, Severity};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// Longest JSON pointer accepted, in bytes.
pub const MAX_POINTER_LEN: usize = 512;
/// Most entity pointers one mapping may hold, all kinds together.
pub const MAX_ENTITY_POINTERS: usize = 64;

/// The mapping's scalar fields, in the order they are checked and documented.
const FIELDS: [&str; 5] = ["title", "severity", "alert_id", "event_time", "description"];

/// Where a vendor keeps each alert field, as JSON pointers into its payload. Build one from
/// operator input with [`Mapping::parse`] (deserializing checks the same rules), so a `Mapping`
/// always holds valid, bounded pointers.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct Mapping {
    /// Pointer to the alert's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    /// Pointer to the vendor's severity (kept as `vendor_severity`, mapped by `severity_mapping`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    severity: Option<String>,
    /// Pointer to the vendor's id of the alert (the dedupe key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alert_id: Option<String>,
    /// Pointer to when the event happened (ISO string, epoch seconds or milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_time: Option<String>,
    /// Pointer to a longer description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// Pointers to entities, by entity kind (`ip`, `user`, `file_hash`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    entities: BTreeMap<EntityKind, Vec<String>>,
}

/// One problem in a mapping: which field (`mapping.entities.ip[1]`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct MappingError {
    /// The field's path from `mapping` (`mapping.title`, `mapping.entities.ip[1]`).
    pub field: String,
    /// What is wrong with it.
    pub problem: MappingProblem,
}

/// What is wrong with one field of a mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingProblem {
    #[error("must be an object, got {0}")]
    NotAnObject(&'static str),
    #[error("must be a string holding a JSON pointer, got {0}")]
    NotAString(&'static str),
    #[error("must be an array of JSON pointers, got {0}")]
    NotAnArray(&'static str),
    #[error("is not a JSON pointer: it must be \"\" or start with \"/\"")]
    NotAPointer,
    #[error("invalid escape `{0}` in a JSON pointer (`~` must be followed by 0 or 1)")]
    InvalidEscape(String),
    #[error("is too long ({len} bytes, at most {max})")]
    TooLong { len: usize, max: usize },
    #[error("unknown field (expected title, severity, alert_id, event_time, description or entities)")]
    UnknownField,
    #[error("unknown entity kind (expected email, hostname, ip, user, file_hash, url, domain, file or process)")]
    UnknownKind,
    #[error("lists no pointer (list at least one, or leave the kind out)")]
    Empty,
    #[error("too many entity pointers ({count}, at most {max})")]
    TooManyPointers { count: usize, max: usize },
    #[error("maps no field (map at least one of title, severity, alert_id, event_time, description or entities)")]
    NothingMapped,
}

/// Every problem of a mapping, for serde (`Mapping`'s `Deserialize` checks the same rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingErrors(pub Vec<MappingError>);

impl fmt::Display for MappingErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for MappingErrors {}

impl TryFrom<Value> for Mapping {
    type Error = MappingErrors;
    fn try_from(v: Value) -> Result<Self, Self::Error> {
        Mapping::parse(&v).map_err(MappingErrors)
    }
}

/// Checks one JSON pointer (RFC 6901): `""` (the whole payload) or `/`-separated tokens, where
/// `~` only appears as `~0` or `~1`; at most [`MAX_POINTER_LEN`] bytes.
fn check_pointer(p: &str) -> Result<(), MappingProblem> {
    if p.len() > MAX_POINTER_LEN {
        return Err(MappingProblem::TooLong { len: p.len(), max: MAX_POINTER_LEN });
    }
    if !p.is_empty() && !p.starts_with('/') {
        return Err(MappingProblem::NotAPointer);
    }
    let mut chars = p.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '~' {
            match chars.peek() {
                Some((_, '0' | '1')) => {
                    chars.next();
                }
                Some((j, next)) => return Err(MappingProblem::InvalidEscape(p[i..j + next.len_utf8()].to_string())),
                None => return Err(MappingProblem::InvalidEscape("~".to_string())),
            }
        }
    }
    Ok(())
}

/// A pointer value of the mapping, checked; the problem is recorded under `field` otherwise.
fn pointer_at(v: &Value, field: String, errors: &mut Vec<MappingError>) -> Option<String> {
    let problem = match v {
        Value::String(p) => match check_pointer(p) {
            Ok(()) => return Some(p.clone()),
            Err(problem) => problem,
        },
        other => MappingProblem::NotAString(json_type(other)),
    };
    errors.push(MappingError { field, problem });
    None
}

/// An entity kind by its serialized name (`file_hash`).
fn kind_named(name: &str) -> Option<EntityKind> {
    const KINDS: [EntityKind; 9] = [
        EntityKind::Email,
        EntityKind::Hostname,
        EntityKind::Ip,
        EntityKind::User,
        EntityKind::FileHash,
        EntityKind::Url,
        EntityKind::Domain,
        EntityKind::File,
        EntityKind::Process,
    ];
    KINDS.into_iter().find(|k| k.as_str() == name)
}

impl Mapping {
    /// Parses and checks a mapping given as JSON. On failure, every problem found is returned,
    /// each naming its field (`mapping.title`, `mapping.entities.ip[1]`, `mapping.foo`).
    pub fn parse(v: &Value) -> Result<Mapping, Vec<MappingError>> {
        let err = |field: &str, problem| MappingError { field: field.to_string(), problem };
        let Some(obj) = v.as_object() else {
            return Err(vec![err("mapping", MappingProblem::NotAnObject(json_type(v)))]);
        };
        let mut errors = Vec::new();
        let mut entity_pointers = 0;
        let mut m = Mapping { title: None, severity: None, alert_id: None, event_time: None, description: None, entities: BTreeMap::new() };
        for (key, value) in obj {
            let field = format!("mapping.{key}");
            let slot = match key.as_str() {
                "title" => &mut m.title,
                "severity" => &mut m.severity,
                "alert_id" => &mut m.alert_id,
                "event_time" => &mut m.event_time,
                "description" => &mut m.description,
                "entities" => {
                    m.entities = parse_entities(value, &field, &mut entity_pointers, &mut errors);
                    continue;
                }
                _ => {
                    errors.push(MappingError { field, problem: MappingProblem::UnknownField });
                    continue;
                }
            };
            *slot = pointer_at(value, field, &mut errors);
        }
        if entity_pointers > MAX_ENTITY_POINTERS {
            errors.push(err("mapping.entities", MappingProblem::TooManyPointers { count: entity_pointers, max: MAX_ENTITY_POINTERS }));
        }
        if errors.is_empty() && m.is_empty() {
            errors.push(err("mapping", MappingProblem::NothingMapped));
        }
        if errors.is_empty() { Ok(m) } else { Err(errors) }
    }

    /// Whether no field is mapped (never true of a parsed mapping).
    fn is_empty(&self) -> bool {
        self.scalar_pointers().all(|(_, p)| p.is_none()) && self.entities.is_empty()
    }

    fn scalar_pointers(&self) -> impl Iterator<Item = (&'static str, Option<&str>)> {
        let ptrs = [&self.title, &self.severity, &self.alert_id, &self.event_time, &self.description];
        FIELDS.into_iter().zip(ptrs.map(Option::as_deref))
    }

    /// Pointer to the title, when mapped.
    pub fn title(&self) -> Option<&str> {
        self.title.as_deref()
    }

    /// Pointer to the vendor's severity, when mapped.
    pub fn severity(&self) -> Option<&str> {
        self.severity.as_deref()
    }

    /// Pointer to the vendor's alert id, when mapped.
    pub fn alert_id(&self) -> Option<&str> {
        self.alert_id.as_deref()
    }

    /// Pointer to the event time, when mapped.
    pub fn event_time(&self) -> Option<&str> {
        self.event_time.as_deref()
    }

    /// Pointer to the description, when mapped.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Entity pointers by kind.
    pub fn entities(&self) -> &BTreeMap<EntityKind, Vec<String>> {
        &self.entities
    }
}

/// The `entities` object; `count` is increased by the number of pointers listed (all of them,
/// though past [`MAX_ENTITY_POINTERS`] they are not checked one by one).
fn parse_entities(v: &Value, field: &str, count: &mut usize, errors: &mut Vec<MappingError>) -> BTreeMap<EntityKind, Vec<String>> {
    let mut out = BTreeMap::new();
    let Some(obj) = v.as_object() else {
        errors.push(MappingError { field: field.to_string(), problem: MappingProblem::NotAnObject(json_type(v)) });
        return out;
    };
    for (name, list) in obj {
        let kind_field = format!("{field}.{name}");
        let Some(kind) = kind_named(name) else {
            errors.push(MappingError { field: kind_field, problem: MappingProblem::UnknownKind });
            continue;
        };
        let Some(items) = list.as_array() else {
            errors.push(MappingError { field: kind_field, problem: MappingProblem::NotAnArray(json_type(list)) });
            continue;
        };
        if items.is_empty() {
            errors.push(MappingError { field: kind_field, problem: MappingProblem::Empty });
            continue;
        }
        *count = count.saturating_add(items.len());
        let pointers: Vec<String> = items
            .iter()
            .enumerate()
            .take(MAX_ENTITY_POINTERS)
            .filter_map(|(i, p)| pointer_at(p, format!("{kind_field}[{i}]"), errors))
            .collect();
        out.insert(kind, pointers);
    }
    out
}

/// A mapped value as text: trimmed strings (placeholders such as `-` or `N/A` count as absent),
/// numbers in their JSON form, booleans as `true` / `false`.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Bool(b) => Some(b.to_string()),
        other => entities::text(other),
    }
}

/// The value at a pointer of the mapping, when the pointer is mapped and resolves.
fn resolve<'a>(payload: &'a Value, pointer: Option<&str>) -> Option<&'a Value> {
    payload.pointer(pointer?)
}

/// Normalizes a payload with a source's mapping: the generic reading, with every mapped field
/// that resolves to a value winning (see the module documentation). `severity_mapping` is
/// applied to the vendor severity as in [`super::normalize`]. Fails only when the payload is
/// not a JSON object.
pub fn normalize_mapped(
    payload: &Value,
    mapping: &Mapping,
    severity_mapping: &BTreeMap<String, Severity>,
) -> Result<Alert, NormalizeError> {
    let obj = payload.as_object().ok_or(NormalizeError::NotAnObject(json_type(payload)))?;
    let mut alert = generic::normalize(obj);

    if let Some(title) = resolve(payload, mapping.title()).and_then(scalar_text) {
        alert.title = title;
    }
    if let Some(d) = entities::description(resolve(payload, mapping.description()).and_then(scalar_text)) {
        alert.description = Some(d);
    }
    if let Some(id) = resolve(payload, mapping.alert_id()).and_then(scalar_text) {
        alert.external_id = Some(id);
    }
    if let Some(t) = resolve(payload, mapping.event_time()).and_then(entities::time_any) {
        alert.event_time = Some(t);
    }
    if let Some(v) = resolve(payload, mapping.severity()) {
        let read = read_severity(v).or_else(|| scalar_text(v).map(|s| (generic::DEFAULT_SEVERITY, Some(s))));
        if let Some((severity, vendor)) = read {
            alert.severity = severity;
            alert.vendor_severity = vendor;
        }
    }

    add_mapped_entities(&mut alert.entities, payload, mapping);
    let mut alert = generic::finish(alert);
    apply_severity_mapping(&mut alert, severity_mapping);
    Ok(alert)
}

/// Adds the mapped entities (validated as their kind) after the generic ones, skipping those
/// already there; when the whole would exceed [`MAX_ENTITIES`], generic ones make room.
fn add_mapped_entities(list: &mut Vec<Entity>, payload: &Value, mapping: &Mapping) {
    let mut set = entities::EntitySet::new();
    for (kind, pointers) in mapping.entities() {
        for v in pointers.iter().filter_map(|p| payload.pointer(p)) {
            let items = match v {
                Value::Array(items) => items.as_slice(),
                single => std::slice::from_ref(single),
            };
            for text in items.iter().take(MAX_ENTITIES).filter_map(scalar_text) {
                set.add(*kind, &text, None);
            }
        }
    }
    let same = |a: &Entity, b: &Entity| {
        a.kind == b.kind
            && match a.kind {
                EntityKind::Email | EntityKind::Hostname | EntityKind::Domain | EntityKind::FileHash => {
                    a.value.eq_ignore_ascii_case(&b.value)
                }
                _ => a.value == b.value,
            }
    };
    let new: Vec<Entity> = set.into_vec().into_iter().filter(|m| !list.iter().any(|g| same(g, m))).collect();
    list.truncate(MAX_ENTITIES.saturating_sub(new.len()));
    list.extend(new);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format;
    use serde_json::json;

    fn example() -> Value {
        json!({"title": "/alert/name", "severity": "/alert/level", "alert_id": "/alert/uid", "event_time": "/alert/ts",
               "description": "/alert/summary", "entities": {"ip": ["/alert/src_ip"], "user": ["/alert/user"]}})
    }

    fn errors_of(v: Value) -> Vec<(String, MappingProblem)> {
        Mapping::parse(&v).unwrap_err().into_iter().map(|e| (e.field, e.problem)).collect()
    }

    #[test]
    fn the_example_parses_and_round_trips() {
        let m = Mapping::parse(&example()).unwrap();
        assert_eq!(m.title(), Some("/alert/name"));
        assert_eq!(m.entities()[&EntityKind::Ip], vec!["/alert/src_ip".to_string()]);
        assert_eq!(serde_json::to_value(&m).unwrap(), example());
        let back: Mapping = serde_json::from_value(example()).unwrap();
        assert_eq!(back, m);
        let m = Mapping::parse(&json!({"title": ""})).unwrap();
        assert_eq!(serde_json::to_value(&m).unwrap(), json!({"title": ""}), "unmapped fields are not written");
    }

    #[test]
    fn every_error_names_its_field() {
        assert_eq!(errors_of(json!([])), vec![("mapping".into(), MappingProblem::NotAnObject("an array"))]);
        assert_eq!(errors_of(json!({})), vec![("mapping".into(), MappingProblem::NothingMapped)]);
        assert_eq!(
            errors_of(json!({"title": 3, "severity": "alert/level", "alert_id": "/a~2b", "event_time": "/t~", "foo": "/x"})),
            vec![
                ("mapping.alert_id".into(), MappingProblem::InvalidEscape("~2".into())),
                ("mapping.event_time".into(), MappingProblem::InvalidEscape("~".into())),
                ("mapping.foo".into(), MappingProblem::UnknownField),
                ("mapping.severity".into(), MappingProblem::NotAPointer),
                ("mapping.title".into(), MappingProblem::NotAString("a number")),
            ]
        );
        let long = format!("/{}", "a".repeat(MAX_POINTER_LEN));
        assert_eq!(
            errors_of(json!({"description": long})),
            vec![("mapping.description".into(), MappingProblem::TooLong { len: MAX_POINTER_LEN + 1, max: MAX_POINTER_LEN })]
        );
        assert_eq!(
            errors_of(json!({"entities": {"ip": ["/a", "b", null], "hostname": "/h", "host": ["/h"], "url": []}})),
            vec![
                ("mapping.entities.host".into(), MappingProblem::UnknownKind),
                ("mapping.entities.hostname".into(), MappingProblem::NotAnArray("a string")),
                ("mapping.entities.ip[1]".into(), MappingProblem::NotAPointer),
                ("mapping.entities.ip[2]".into(), MappingProblem::NotAString("null")),
                ("mapping.entities.url".into(), MappingProblem::Empty),
            ]
        );
        assert_eq!(errors_of(json!({"entities": "ip"})), vec![("mapping.entities".into(), MappingProblem::NotAnObject("a string"))]);
        let many: Vec<String> = (0..40).map(|i| format!("/ip{i}")).collect();
        assert_eq!(
            errors_of(json!({"entities": {"ip": many, "user": many}})),
            vec![("mapping.entities".into(), MappingProblem::TooManyPointers { count: 80, max: MAX_ENTITY_POINTERS })]
        );
        let e = Mapping::parse(&json!({"title": 3})).unwrap_err();
        assert_eq!(e[0].to_string(), "mapping.title: must be a string holding a JSON pointer, got a number");
        let e = serde_json::from_value::<Mapping>(json!({"title": "x"})).unwrap_err();
        assert!(e.to_string().contains("mapping.title: is not a JSON pointer"), "{e}");
    }

    #[test]
    fn the_example_normalizes() {
        let m = Mapping::parse(&example()).unwrap();
        let payload = json!({"alert": {"name": "Impossible travel", "level": "sev2", "uid": "u-42", "ts": "2024-06-10T15:01:31Z",
            "summary": "Sign-ins from two countries within 10 minutes.", "src_ip": "203.0.113.9", "user": "jdoe"}});
        let a = normalize_mapped(&payload, &m, &BTreeMap::new()).unwrap();
        assert_eq!(a.format, Format::Generic);
        assert_eq!(a.title, "Impossible travel");
        assert_eq!(a.description.as_deref(), Some("Sign-ins from two countries within 10 minutes."));
        assert_eq!(a.external_id.as_deref(), Some("u-42"));
        assert_eq!(a.event_time.unwrap().to_rfc3339(), "2024-06-10T15:01:31+00:00");
        assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::Medium, Some("sev2")), "not understood: the default");
        let mapping = BTreeMap::from([("SEV2".to_string(), Severity::High)]);
        assert_eq!(normalize_mapped(&payload, &m, &mapping).unwrap().severity, Severity::High, "severity_mapping applies");
        assert!(a.entities.contains(&Entity::new(EntityKind::User, "jdoe")));
        assert_eq!(a.entities.iter().filter(|e| e.value == "203.0.113.9").count(), 1, "not duplicated with the generic one");
    }

    #[test]
    fn missing_pointers_fall_back_to_the_generic_reading() {
        let m = Mapping::parse(&example()).unwrap();
        let payload = json!({"title": "Generic title", "severity": "low", "alert_id": "g-1", "timestamp": 1718031691,
            "alert": {"name": null, "level": {}, "uid": "", "ts": "soon", "summary": []}});
        let a = normalize_mapped(&payload, &m, &BTreeMap::new()).unwrap();
        assert_eq!(a.title, "Generic title");
        assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::Low, Some("low")));
        assert_eq!(a.external_id.as_deref(), Some("g-1"));
        assert_eq!(a.event_time.unwrap().timestamp(), 1718031691);
        assert_eq!(a.description, None);
        assert!(normalize_mapped(&json!([1]), &m, &BTreeMap::new()).is_err());
    }

    #[test]
    fn numbers_booleans_and_arrays() {
        let m = Mapping::parse(&json!({"title": "/n", "severity": "/s", "alert_id": "/id", "event_time": "/ms", "description": "/b",
            "entities": {"ip": ["/ips", "/one"], "hostname": ["/hosts"], "email": ["/ips"]}}))
        .unwrap();
        let payload = json!({"n": 404, "s": 4, "id": 17, "ms": 1718031691500u64, "b": true,
            "ips": ["203.0.113.1", 7, null, ["198.51.100.1"], {"x": 1}, "not-an-ip", "203.0.113.1"], "one": "2001:db8::1",
            "hosts": ["WS-01", "ws-01"]});
        let a = normalize_mapped(&payload, &m, &BTreeMap::new()).unwrap();
        assert_eq!(a.title, "404");
        assert_eq!((a.severity, a.vendor_severity.as_deref()), (Severity::High, Some("4")));
        assert_eq!(a.external_id.as_deref(), Some("17"));
        assert_eq!(a.event_time.unwrap().timestamp_millis(), 1718031691500, "epoch milliseconds");
        assert_eq!(a.description.as_deref(), Some("true"));
        let ips: Vec<&str> = a.entities.iter().filter(|e| e.kind == EntityKind::Ip).map(|e| e.value.as_str()).collect();
        assert_eq!(ips.iter().filter(|ip| **ip == "203.0.113.1").count(), 1, "deduplicated: {ips:?}");
        assert!(ips.contains(&"2001:db8::1") && !ips.contains(&"7"), "validated as IPs: {ips:?}");
        assert!(!a.entities.iter().any(|e| e.kind == EntityKind::Email), "an email pointer at IPs adds nothing");
        assert_eq!(a.entities.iter().filter(|e| e.kind == EntityKind::Hostname).count(), 1, "host names compare ignoring case");
        let secs = normalize_mapped(&json!({"ms": "1718031691"}), &m, &BTreeMap::new()).unwrap();
        assert_eq!(secs.event_time.unwrap().timestamp(), 1718031691, "epoch seconds as a string");
    }

    #[test]
    fn mapped_entities_get_room_in_a_full_set() {
        let ips: Vec<Value> = (0..300).map(|i| Value::from(format!("10.0.{}.{}", i / 256, i % 256))).collect();
        let m = Mapping::parse(&json!({"entities": {"user": ["/who"]}})).unwrap();
        let a = normalize_mapped(&json!({"ips": ips, "who": "jdoe"}), &m, &BTreeMap::new()).unwrap();
        assert_eq!(a.entities.len(), MAX_ENTITIES);
        assert_eq!(a.entities.last(), Some(&Entity::new(EntityKind::User, "jdoe")));
    }
}
