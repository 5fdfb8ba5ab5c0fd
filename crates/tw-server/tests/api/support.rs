//! What the HTTP tests share: the server in this process on a free port with a temp data dir
//! ([`TestApp`]), signed deliveries, the spec's example payloads, and assertions on answers.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tw_core::Secret;

/// Unix seconds now.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `sha256=<hex>` for a body signed at `ts` with `secret`.
pub fn signature(secret: &str, ts: i64, body: &[u8]) -> String {
    format!("sha256={}", tw_core::signature::sign(&Secret::new(secret), &ts.to_string(), body))
}

/// An in-process server (the real router, store and workers) on 127.0.0.1:0.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    /// An admin API key.
    pub admin_key: String,
    /// A read-only API key.
    pub read_key: String,
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database's URL when the tests run on PostgreSQL.
    pub database_url: Option<String>,
    server: Option<tw_server::RunningServer>,
}

impl TestApp {
    /// A fresh server with an empty data dir.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// A fresh server whose config `tweak` may adjust (e.g. to set `webhook_config`).
    pub async fn spawn_with(tweak: impl FnOnce(&mut tw_server::ServerConfig)) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::spawn_in(dir, tweak).await
    }

    /// A server on an existing data dir (to test restarts). With `TW_TEST_ENGINE=postgres` its
    /// store is a PostgreSQL database of its own, the same one again for the same data dir.
    pub async fn spawn_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut tw_server::ServerConfig)) -> TestApp {
        let mut cfg = tw_server::ServerConfig::new(dir.path().to_path_buf());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        if tw_store::testing::engine_is_postgres() {
            cfg.database_url = Some(tw_store::testing::database_for(dir.path()).await);
        }
        tweak(&mut cfg);
        let database_url = cfg.database_url.clone().filter(|u| u.starts_with("postgres"));
        let server = tw_server::start(cfg).await.expect("server starts");
        let mut keys = Vec::new();
        for scope in [tw_store::Scope::Admin, tw_store::Scope::Read] {
            keys.push(new_key(&server.state.store, "test", scope).await.0);
        }
        let addr = server.addr;
        TestApp {
            addr,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            read_key: keys.pop().unwrap(),
            admin_key: keys.pop().unwrap(),
            dir,
            database_url,
            server: Some(server),
        }
    }

    /// Stops the server gracefully and hands back its data dir.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        self.dir
    }

    /// The server's store, for what the operator does on it directly rather than over HTTP
    /// (`tw-cli api-key ...`).
    pub fn store(&self) -> &Arc<dyn tw_store::Store> {
        &self.server.as_ref().expect("the server runs").state.store
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with the admin key and a JSON body.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.with_key(&self.admin_key.clone(), method, path, body).await
    }

    /// A request with a given key (or none, with "").
    pub async fn with_key(&self, key: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path));
        if !key.is_empty() {
            req = req.bearer_auth(key);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        into_json(resp).await
    }

    /// Registers a source with the admin key; panics unless 201.
    pub async fn add_source(&self, body: Value) -> Value {
        let (status, v) = self.admin(reqwest::Method::POST, "/api/webhooks", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v
    }

    /// Posts a body signed with `secret` at the current time to the intake.
    pub async fn deliver(&self, source: &str, secret: &str, body: &str) -> (StatusCode, Value) {
        self.deliver_at(source, secret, body, now()).await
    }

    /// Posts a body signed with `secret` at timestamp `ts`.
    pub async fn deliver_at(&self, source: &str, secret: &str, body: &str, ts: i64) -> (StatusCode, Value) {
        post_signed(&self.http, &self.base, source, secret, ts, body.to_string()).await
    }
}

/// A new API key of `scope` named `name` in `store`, written directly as `tw-cli api-key create`
/// does: its plaintext, and its record.
pub async fn new_key(store: &Arc<dyn tw_store::Store>, name: &str, scope: tw_store::Scope) -> (String, tw_store::ApiKeyRecord) {
    let k = tw_store::api_key::generate().unwrap();
    let record = store.create_api_key(name, scope, k.hash, &k.prefix).await.unwrap();
    (k.plaintext, record)
}

/// Posts `body` signed with `secret` at `ts` to `base`'s intake for `source`, with any client
/// (tasks sending concurrently share one).
pub async fn post_signed(http: &reqwest::Client, base: &str, source: &str, secret: &str, ts: i64, body: String) -> (StatusCode, Value) {
    try_post_signed(http, base, source, secret, ts, body).await.expect("request")
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Status and JSON body of a response (`Null` when empty).
pub async fn into_json(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let v = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, v)
}

// ---- shared payloads and deliveries ----

/// The credential-harvesting URL of [`phish`].
pub const PHISH_URL: &str = "http://examp1e-login.top/verify/account";

/// A look-alike-domain phish (examp1e.com vs a protected example.com) with a credential URL: the
/// payload tw-core's playbook tests prove malicious.
pub fn phish(alert_id: &str) -> String {
    serde_json::json!({
        "event_type": "email_threat",
        "timestamp": "2024-06-10T15:01:12Z",
        "source": "email-gateway",
        "data": {
            "alert_id": alert_id,
            "severity": "medium",
            "details": {
                "title": "User-reported message",
                "sender": "it-support@examp1e.com",
                "recipients": ["jdoe@example.com"],
                "subject": "Action required: verify your account within 24 hours",
                "urls": [PHISH_URL],
                "sender_ip": "198.51.100.77"
            }
        }
    })
    .to_string()
}

/// The shared CrowdStrike fixture with a critical detection on FS-02.
pub fn crowdstrike_fixture() -> String {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/vendors/crowdstrike-detection-summary-critical.json");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Like [`post_signed`], but a request that gets no answer (connection refused or cut, timeout)
/// is an `Err` instead of a panic: for tests whose servers may die mid-request.
pub async fn try_post_signed(
    http: &reqwest::Client,
    base: &str,
    source: &str,
    secret: &str,
    ts: i64,
    body: String,
) -> Result<(StatusCode, Value), reqwest::Error> {
    let resp = signed_request(http, base, source, secret, ts, body).send().await?;
    Ok(into_json(resp).await)
}

/// A delivery to `base`'s intake for `source`, signed with `secret` at `ts`, ready for more
/// headers before it is sent.
pub fn signed_request(http: &reqwest::Client, base: &str, source: &str, secret: &str, ts: i64, body: impl Into<String>) -> reqwest::RequestBuilder {
    let body = body.into();
    http.post(format!("{base}/api/webhooks/{source}"))
        .header("content-type", "application/json")
        .header("x-webhook-timestamp", ts.to_string())
        .header("x-webhook-signature", signature(secret, ts, body.as_bytes()))
        .body(body)
}

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

/// Polls `GET path` (admin) until `done(body)` or the deadline; returns the last body.
pub async fn poll(app: &TestApp, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (status, v) = app.admin(Method::GET, path, None).await;
        if status == StatusCode::OK && done(&v) {
            return v;
        }
        if start.elapsed() > DEADLINE {
            panic!("{what}: not reached within {DEADLINE:?}; last answer {status} {v}");
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
