//! normalize() never panics, whatever JSON object it is given and whatever format is pinned;
//! normalize_mapped() never panics whatever JSON it is given, and Mapping::parse whatever
//! mapping.

use proptest::prelude::*;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use tw_core::{Format, Mapping, normalize, normalize_mapped};

/// Keys the normalizers look for, so random payloads reach the interesting code paths.
const KEYS: &[&str] = &[
    "event_type",
    "timestamp",
    "source",
    "data",
    "alert_id",
    "severity",
    "details",
    "title",
    "eventType",
    "id",
    "creationTime",
    "category",
    "entityType",
    "sender",
    "subject",
    "recipients",
    "metadata",
    "event",
    "eventCreationTime",
    "DetectId",
    "CompositeId",
    "Severity",
    "SeverityName",
    "DetectName",
    "Name",
    "ComputerName",
    "CommandLine",
    "FilePath",
    "FileName",
    "SHA256String",
    "NetworkAccesses",
    "RemoteAddress",
    "result",
    "search_name",
    "sid",
    "trigger_time",
    "_time",
    "Hashes",
    "src_ip",
    "user",
    "url",
    "evidence",
    "@odata.type",
    "alerts",
    "entities",
    "incidentId",
    "incidentName",
    "RecordType",
    "AlertId",
    "Data",
    "createdDateTime",
    "Type",
    "kind",
    "properties",
    "hostName",
    "address",
    "p2Sender",
    "emailAddress",
    "threatInfo",
    "threatId",
    "threatName",
    "confidenceLevel",
    "agentRealtimeInfo",
    "networkInterfaces",
    "inet",
    "indicators",
    "objectSchemaType",
    "object",
    "relatedEntities",
    "SystemAlertId",
    "AlertDisplayName",
    "Entities",
    "kibana",
    "alert",
    "uuid",
    "kibana.alert.uuid",
    "signal",
    "rule",
    "rule_name",
    "risk_score",
    "original_time",
    "terms",
    "x",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        ".{0,40}".prop_map(Value::String),
        prop_oneof![
            Just("203.0.113.5"),
            Just("2001:db8::1"),
            Just("a@b.example.com"),
            Just("https://x.example.com/p"),
            Just("0000000000000000000000000000000000000000"),
            Just("da16cc2bbd7dbc782aabb7489d3f0d6c"),
            Just("2024-06-10T15:01:44.2133817Z"),
            Just("1718031540"),
            Just("40"),
            Just("{\"tsd\":\"a@b.example.com\"}"),
            Just("SHA1=x,MD5=,SHA256"),
            Just("ldt:1:2"),
            Just("#microsoft.graph.security.alert"),
            Just("host"),
            Just(""),
            Just("é\u{0}\u{202e}"),
            Just("-"),
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..10)
        .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn normalize_never_panics(v in json_object()) {
        let mapping = BTreeMap::new();
        for pinned in std::iter::once(None).chain(Format::ALL.map(Some)) {
            let a = normalize(&v, pinned, &mapping).expect("objects always normalize");
            prop_assert!(!a.title.is_empty());
            prop_assert!(a.title.chars().count() <= 512);
            prop_assert!(a.entities.len() <= 200);
            prop_assert!(a.entities.iter().all(|e| !e.value.trim().is_empty()));
        }
    }
}

/// A mapping whose pointers reach into the random payloads' keys, arrays and escapes.
fn fixed_mapping() -> Mapping {
    Mapping::parse(&serde_json::json!({
        "title": "/title",
        "severity": "/data/severity",
        "alert_id": "/data/alert_id",
        "event_time": "/timestamp",
        "description": "/details/0",
        "entities": {
            "ip": ["/src_ip", "/data/details/src_ip", "/alerts/0/address", ""],
            "user": ["/user", "/x/~1y/~0z"],
            "url": ["/url", "/entities/1"],
            "email": ["/recipients", "/data/recipients"],
            "file_hash": ["/Hashes"],
            "hostname": ["/hostName", "/properties/hostName"],
        }
    }))
    .expect("the fixed mapping is valid")
}

fn any_json() -> impl Strategy<Value = Value> {
    prop_oneof![json_value(), json_object()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn normalize_mapped_never_panics(v in any_json()) {
        let mapping = fixed_mapping();
        let severities = BTreeMap::from([("high".to_string(), tw_core::Severity::Critical)]);
        match normalize_mapped(&v, &mapping, &severities) {
            Ok(a) => {
                prop_assert!(v.is_object());
                prop_assert!(!a.title.is_empty());
                prop_assert!(a.title.chars().count() <= 512);
                prop_assert!(a.entities.len() <= 200);
                prop_assert!(a.entities.iter().all(|e| !e.value.trim().is_empty()));
                prop_assert_eq!(a.format, Format::Generic);
            }
            Err(_) => prop_assert!(!v.is_object()),
        }
    }

    #[test]
    fn mapping_parse_never_panics(v in any_json(), p in ".{0,40}", q in "(/[a-z~0-9]{0,6}){0,4}") {
        let _ = Mapping::parse(&v);
        for m in [
            serde_json::json!({"title": p.clone(), "entities": {"ip": [q.clone(), p.clone()]}}),
            serde_json::json!({"severity": q.clone()}),
            serde_json::json!({"entities": {p.clone(): [q.clone()]}}),
        ] {
            if let Ok(parsed) = Mapping::parse(&m) {
                // A parsed mapping round-trips, and normalizes any payload without panicking.
                let back: Mapping = serde_json::from_value(serde_json::to_value(&parsed).unwrap()).unwrap();
                prop_assert_eq!(&back, &parsed);
                let _ = normalize_mapped(&v, &parsed, &BTreeMap::new());
            }
        }
    }
}

#[test]
fn huge_payloads_are_bounded() {
    // 5000 distinct IPs and URLs in a ~1 MiB payload: capped at 200 entities, no blow-up.
    let ips: Vec<Value> = (0..5000).map(|i| Value::from(format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256))).collect();
    let urls: Vec<Value> = (0..5000).map(|i| Value::from(format!("https://h{i}.example.com/{}", "a".repeat(100)))).collect();
    let v = serde_json::json!({"data": {"ips": ips, "urls": urls, "title": "x".repeat(100_000)}, "event_type": "t"});
    for pinned in std::iter::once(None).chain(Format::ALL.map(Some)) {
        let a = normalize(&v, pinned, &BTreeMap::new()).unwrap();
        assert!(a.entities.len() <= 200);
        assert!(a.title.chars().count() <= 512);
    }
}
