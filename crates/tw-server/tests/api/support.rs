//! What the HTTP tests share beyond [`tw_server::testing`] (the server in this process, signed
//! deliveries, raw HTTP, metrics, which tw-cli's tests use too): the spec's example payloads,
//! posting with exact headers, and assertions on the API's answers.

pub use tw_server::testing::*;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

// ---- the spec's payloads and answers ----

/// How long background work may take before a test gives up.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The spec's example payloads. The generic example's `"details": {...}` placeholder is filled
/// in (a title, a source IP, a user) so the payload is JSON.
pub const GENERIC: &str = r#"{
  "event_type": "security_alert",
  "timestamp": "2024-01-15T10:00:00Z",
  "source": "email-gateway",
  "data": {
    "alert_id": "alert-123",
    "severity": "high",
    "details": {"title": "Suspicious login", "src_ip": "203.0.113.7", "user": "alice@company.com"}
  }
}"#;

pub const DEFENDER: &str = r#"{
  "eventType": "PhishingEmail",
  "id": "AAMkAGI2...",
  "creationTime": "2024-01-15T10:00:00Z",
  "severity": "high",
  "category": "Phish",
  "entityType": "Email",
  "data": {
    "sender": "phisher@malicious.com",
    "subject": "Urgent Action Required",
    "recipients": ["user@company.com"]
  }
}"#;

pub const CROWDSTRIKE: &str = r#"{
  "metadata": {
    "eventType": "DetectionSummaryEvent",
    "eventCreationTime": 1705320000000
  },
  "event": {
    "DetectId": "ldt:abc123",
    "Severity": 4,
    "HostnameField": "WORKSTATION-01",
    "DetectName": "Malicious File Detected"
  }
}"#;

pub const SPLUNK: &str = r#"{
  "result": {
    "host": "server-01",
    "source": "WinEventLog:Security",
    "sourcetype": "WinEventLog",
    "_raw": "...",
    "EventCode": "4625"
  },
  "search_name": "Failed Login Alert",
  "trigger_time": 1705320000
}"#;

/// A generic payload with a given alert id.
pub fn generic_with_id(alert_id: &str) -> String {
    json!({"event_type": "security_alert", "source": "it", "data": {"alert_id": alert_id, "severity": "low",
           "details": {"title": format!("alert {alert_id}")}}})
    .to_string()
}

/// The current UTC year.
pub fn year() -> i32 {
    chrono::Datelike::year(&chrono::Utc::now())
}

/// Parses `INC-<year>-<4+ digits>` into (year, seq); panics on anything else.
pub fn parse_number(n: &Value) -> (i32, u32) {
    let s = n.as_str().unwrap_or_else(|| panic!("incident_number is not a string: {n}"));
    let parts: Vec<&str> = s.split('-').collect();
    assert_eq!(parts.len(), 3, "bad incident number {s}");
    assert_eq!(parts[0], "INC", "bad incident number {s}");
    assert_eq!(parts[1].len(), 4, "bad year in {s}");
    assert!(parts[2].len() >= 4 && parts[2].bytes().all(|b| b.is_ascii_digit()), "seq not zero-padded to 4 digits in {s}");
    (parts[1].parse().unwrap(), parts[2].parse().unwrap())
}

/// Checks a 201 intake answer: exactly status/incident_id/incident_number, a uuid and a number
/// of this year. Returns (id, number).
pub fn assert_accepted(status: StatusCode, v: &Value) -> (String, String) {
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let obj = v.as_object().unwrap_or_else(|| panic!("not an object: {v}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["incident_id", "incident_number", "status"], "{v}");
    assert_eq!(v["status"], "accepted");
    let id = v["incident_id"].as_str().unwrap().to_string();
    uuid_like(&id);
    let (y, _) = parse_number(&v["incident_number"]);
    assert_eq!(y, year(), "{v}");
    (id, v["incident_number"].as_str().unwrap().to_string())
}

/// Panics unless `s` is a hyphenated uuid.
pub fn uuid_like(s: &str) {
    let groups: Vec<usize> = s.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "not a uuid: {s}");
    assert!(s.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "not a uuid: {s}");
}

/// Checks an error answer: the status, the shape `{"error":{"code","message"[,"details"]}}`
/// (details only for validation errors) and the code. Returns the message.
pub fn assert_error(status: StatusCode, v: &Value, want_status: u16, code: &str) -> String {
    assert_eq!(status.as_u16(), want_status, "{v}");
    let top = v.as_object().unwrap_or_else(|| panic!("error body is not a JSON object: {v}"));
    assert_eq!(top.keys().collect::<Vec<_>>(), ["error"], "{v}");
    let inner = v["error"].as_object().unwrap_or_else(|| panic!("error is not an object: {v}"));
    let mut keys: Vec<&str> = inner.keys().map(String::as_str).collect();
    keys.sort();
    if code == "validation_error" {
        assert_eq!(keys, ["code", "details", "message"], "{v}");
    } else {
        assert_eq!(keys, ["code", "message"], "{v}");
    }
    assert_eq!(v["error"]["code"], code, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_else(|| panic!("message is not a string: {v}")).to_string();
    assert!(!msg.is_empty());
    msg
}

/// The `field` names of a validation error's details.
pub fn detail_fields(v: &Value) -> Vec<String> {
    v["error"]["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details: {v}"))
        .iter()
        .map(|d| {
            assert!(d["message"].as_str().is_some_and(|m| !m.is_empty()), "detail without message: {v}");
            d["field"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Posts raw bytes to the intake with exactly the given headers.
pub async fn post_intake(app: &TestApp, source: &str, headers: &[(&str, String)], body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
    let mut req = app.http.post(app.url(&format!("/api/webhooks/{source}")));
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    into_json(req.body(body).send().await.expect("request")).await
}

/// The usual headers of a delivery signed with `secret` at `ts`.
pub fn signed_headers(secret: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".to_string()),
        ("x-webhook-timestamp", ts.to_string()),
        ("x-webhook-signature", signature(secret, ts, body)),
    ]
}

/// Registers `name` with `secret` and defaults (plus `extra` fields).
pub async fn add(app: &TestApp, name: &str, secret: &str, extra: Value) -> Value {
    let mut body = json!({"source": name, "secret": secret});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            body[k] = v;
        }
    }
    app.add_source(body).await
}

/// GET with the admin key; panics unless 200.
pub async fn get_ok(app: &TestApp, path: &str) -> Value {
    let (status, v) = app.admin(Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {v}");
    v
}

/// Polls `GET path` (admin) until `done(body)` or [`DEADLINE`]; returns the last body.
pub async fn poll(app: &TestApp, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    poll_until(app, path, what, DEADLINE, done).await
}

/// Polls `GET path` (admin) until `done(body)`; panics with the last answer after `deadline`
/// (background work is awaited, never assumed to take a given time).
pub async fn poll_until(app: &TestApp, path: &str, what: &str, deadline: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (status, v) = app.admin(Method::GET, path, None).await;
        if status == StatusCode::OK && done(&v) {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("{what}: not reached within {deadline:?}; last answer {status} {v}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The raw payload bytes of an incident.
pub async fn raw_bytes(app: &TestApp, id: &str) -> Vec<u8> {
    let resp = app.http.get(app.url(&format!("/api/incidents/{id}/raw"))).bearer_auth(&app.read_key).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.bytes().await.unwrap().to_vec()
}

/// True when `entities` holds `kind`/`value`.
pub fn has_entity(incident: &Value, kind: &str, value: &str) -> bool {
    incident["entities"].as_array().is_some_and(|es| es.iter().any(|e| e["kind"] == kind && e["value"] == value))
}
