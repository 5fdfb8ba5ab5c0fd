//! The OpenAPI document (`GET /api/openapi.json`): a well-formed OpenAPI 3.1 description in which
//! every route the server answers appears, every `$ref` resolves and every operation documents
//! the errors it can return; and `docs/openapi.json` is the current document.
//!
//! Regenerate the committed copy with `UPDATE_OPENAPI=1 cargo test -p tw-server --test api openapi`.

use crate::support::TestApp;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The routes `routes/mod.rs` registers, written out by hand: a route that leaves the
/// `routes!` registrations (and so the document) still fails here. Add new routes to this list.
const KNOWN_ROUTES: &[(&str, &str)] = &[
    ("GET", "/metrics"),
    ("GET", "/api/health"),
    ("GET", "/api/openapi.json"),
    ("POST", "/api/webhooks"),
    ("GET", "/api/webhooks"),
    ("GET", "/api/webhooks/queue/{queue_id}"),
    ("POST", "/api/webhooks/{source}"),
    ("GET", "/api/webhooks/{source}"),
    ("PATCH", "/api/webhooks/{source}"),
    ("DELETE", "/api/webhooks/{source}"),
    ("POST", "/api/webhooks/{source}/rotate-secret"),
    ("POST", "/api/webhooks/{source}/test"),
    ("POST", "/api/webhooks/{source}/{token}"),
    ("POST", "/api/webhooks/{source}/reprocess"),
    ("GET", "/api/incidents"),
    ("GET", "/api/incidents/{id}"),
    ("GET", "/api/incidents/{id}/raw"),
    ("POST", "/api/incidents/{id}/triage"),
    ("GET", "/api/triage/jobs/{id}"),
    ("GET", "/api/playbooks"),
    ("POST", "/api/playbooks"),
    ("POST", "/api/playbooks/validate"),
    ("GET", "/api/playbooks/{name}"),
    ("PUT", "/api/playbooks/{name}"),
    ("DELETE", "/api/playbooks/{name}"),
    ("POST", "/api/playbooks/{name}/test"),
    ("GET", "/api/intel"),
    ("POST", "/api/intel/{list}"),
    ("GET", "/api/logs"),
    ("GET", "/api/dead-letters"),
    ("GET", "/api/ready"),
    ("GET", "/api/webhooks/{source}/events"),
    ("GET", "/api/deliveries/{request_id}"),
    ("GET", "/api/audit"),
    ("GET", "/api/keys"),
];

/// Error statuses whose body is deliberately not the `ErrorBody` shape (documented with their own
/// schema): readiness answers 503 with every check, not just an error.
const OWN_ERROR_SHAPE: &[(&str, &str, &str)] = &[("GET", "/api/ready", "503")];

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options", "trace"];

fn document() -> Value {
    serde_json::to_value(tw_server::routes::openapi::document()).expect("the document serializes")
}

/// `(METHOD, path, operation)` for every operation of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths is an object") {
        for m in METHODS {
            if let Some(op) = item.get(*m) {
                out.push((m.to_uppercase(), path.clone(), op.clone()));
            }
        }
    }
    out
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn document_is_openapi_3_1_with_operations_and_responses() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3.1."), "openapi is {version}");
    assert!(doc["info"]["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(doc["info"]["version"].as_str().is_some_and(|t| !t.is_empty()));
    let paths = doc["paths"].as_object().expect("paths");
    assert!(!paths.is_empty());
    let mut ids = BTreeSet::new();
    for (path, item) in paths {
        assert!(path.starts_with('/'), "{path}");
        let ops: Vec<&str> = METHODS.iter().copied().filter(|m| item.get(*m).is_some()).collect();
        assert!(!ops.is_empty(), "{path} has no operation");
        for m in ops {
            let op = &item[m];
            let where_ = format!("{} {path}", m.to_uppercase());
            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{where_}: no responses"));
            assert!(responses.keys().any(|s| s.starts_with('2')), "{where_}: no success response");
            for (status, r) in responses {
                assert!(status.len() == 3 && status.parse::<u16>().is_ok(), "{where_}: status {status}");
                assert!(r["description"].as_str().is_some_and(|d| !d.is_empty()), "{where_} {status}: no description");
            }
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{where_}: no operationId"));
            assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
            assert!(op["tags"].as_array().is_some_and(|t| !t.is_empty()), "{where_}: no tag");
            // Every `{param}` of the path template is a declared path parameter, and back.
            let in_template: BTreeSet<String> =
                path.split('/').filter(|s| s.starts_with('{')).map(|s| s.trim_matches(|c| c == '{' || c == '}').to_string()).collect();
            let declared: BTreeSet<String> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(p["required"], true, "{where_}: path parameter {} must be required", p["name"]);
                    p["name"].as_str().unwrap().to_string()
                })
                .collect();
            assert_eq!(in_template, declared, "{where_}: path parameters");
        }
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|x| collect_refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

#[test]
fn every_ref_resolves() {
    let doc = document();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r} is not a local reference"));
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
}

#[test]
fn every_operation_documents_its_errors_with_the_error_schema() {
    let doc = document();
    let codes: BTreeSet<&str> =
        doc["components"]["schemas"]["ErrorCode"]["enum"].as_array().expect("ErrorCode enum").iter().map(|v| v.as_str().unwrap()).collect();
    let scheme = &doc["components"]["securitySchemes"]["api_key"];
    assert_eq!((scheme["type"].as_str(), scheme["scheme"].as_str()), (Some("http"), Some("bearer")));
    for (method, path, op) in operations(&doc) {
        let where_ = format!("{method} {path}");
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.contains_key("500"), "{where_}: no 500");
        let roles: Vec<&str> = op["security"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|req| req["api_key"].as_array())
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if op.get("security").is_some() {
            assert!(!roles.is_empty(), "{where_}: security names no API-key scope");
            assert!(roles.iter().all(|r| *r == "read" || *r == "admin"), "{where_}: scopes {roles:?}");
            assert!(responses.contains_key("401") && responses.contains_key("503"), "{where_}: an API-key route without 401/503");
            assert_eq!(responses.contains_key("403"), roles.contains(&"admin"), "{where_}: 403 forbidden iff admin");
        }
        for (status, r) in responses {
            if !(status.starts_with('4') || status.starts_with('5'))
                || OWN_ERROR_SHAPE.contains(&(method.as_str(), path.as_str(), status.as_str()))
            {
                continue;
            }
            let schema = &r["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(schema, "#/components/schemas/ErrorBody", "{where_} {status}: not the error schema");
            let description = r["description"].as_str().unwrap();
            // The description starts with the codes, each in backticks: "`a` | `b`: why".
            let head = description.split(':').next().unwrap();
            let named: Vec<&str> = head.split('|').map(|c| c.trim().trim_matches('`')).collect();
            assert!(!named.is_empty(), "{where_} {status}: names no error code");
            for c in named {
                assert!(codes.contains(c), "{where_} {status}: '{c}' is not an error code");
            }
        }
    }
    // The intake documents each of its refusals by code.
    let intake = &doc["paths"]["/api/webhooks/{source}"]["post"]["responses"];
    for (status, code) in [
        ("400", "invalid_payload"),
        ("401", "missing_signature"),
        ("401", "missing_timestamp"),
        ("401", "timestamp_invalid"),
        ("401", "timestamp_expired"),
        ("401", "invalid_signature"),
        ("403", "source_disabled"),
        ("403", "ip_not_allowed"),
        ("404", "unknown_source"),
        ("413", "payload_too_large"),
    ] {
        let d = intake[status]["description"].as_str().unwrap_or_default();
        assert!(d.contains(&format!("`{code}`")), "intake {status} does not name {code}");
    }
    let params: Vec<&str> = doc["paths"]["/api/webhooks/{source}"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(params.contains(&"X-Webhook-Signature") && params.contains(&"X-Webhook-Timestamp"), "{params:?}");
}

#[test]
fn committed_document_is_current() {
    let path = manifest_dir().join("../../docs/openapi.json");
    let current = tw_server::routes::openapi::document_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &current).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "docs/openapi.json is out of date with the code; regenerate it with\n\n    UPDATE_OPENAPI=1 cargo test -p tw-server --test api openapi\n"
    );
}

/// Every router registration goes through `routes!`, which documents it; a plain `.route(` (or a
/// nested or merged router) anywhere in the server would be served undocumented.
#[test]
fn routes_are_registered_only_through_the_documented_router() {
    fn visit(dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                visit(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, line) in text.lines().enumerate() {
                    // The console's router is merged into the server's in one place (below).
                    let code = line.split("//").next().unwrap().replacen(".merge(crate::console::router())", "", 1);
                    for call in [".route(", ".route_service(", ".nest(", ".nest_service(", ".merge("] {
                        if code.contains(call) {
                            out.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
                        }
                    }
                }
            }
        }
    }
    let mut found = Vec::new();
    visit(&manifest_dir().join("src"), &mut found);
    // The console (src/console/) is HTML for people, not API: its pages are deliberately left out
    // of the OpenAPI document, registered with plain `.route(...)` in its own router, and merged
    // into the server's router in one place. Everything else still goes through `api_routes`.
    let console_dir = manifest_dir().join("src").join("console");
    found.retain(|f| !f.starts_with(&console_dir.display().to_string()));
    assert!(found.is_empty(), "register routes with `.routes(routes!(handler))` in routes::api_routes, not:\n{}", found.join("\n"));
}

/// No queue or triage workers: these tests look at answers, not at background work.
fn without_workers(cfg: &mut tw_server::ServerConfig) {
    cfg.queue_workers = 0;
    cfg.triage_workers = 0;
}

fn concrete(path: &str) -> String {
    path.split('/').map(|s| if s.starts_with('{') { "x" } else { s }).collect::<Vec<_>>().join("/")
}

#[tokio::test]
async fn every_served_route_is_documented_and_every_documented_route_is_served() {
    let doc = document();
    let documented: BTreeSet<(String, String)> = operations(&doc).into_iter().map(|(m, p, _)| (m, p)).collect();
    let known: BTreeSet<(String, String)> = KNOWN_ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    let missing: Vec<_> = known.difference(&documented).collect();
    assert!(missing.is_empty(), "routes of routes/mod.rs missing from the document: {missing:?}");
    let unlisted: Vec<_> = documented.difference(&known).collect();
    assert!(unlisted.is_empty(), "documented routes not in KNOWN_ROUTES of tests/api/openapi.rs (add them): {unlisted:?}");

    let app = TestApp::spawn_with(without_workers).await;
    let base = format!("http://{}", app.addr);
    let client = reqwest::Client::new();
    let mut by_path: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, p) in &documented {
        by_path.entry(p.clone()).or_default().insert(m.clone());
    }
    for (path, methods) in &by_path {
        let url = format!("{base}{}", concrete(path));
        for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let resp = client.request(m.parse().unwrap(), &url).send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let fallback = status == 404 && body["error"]["code"] == "not_found" && body["error"]["message"] == "No such endpoint";
            if methods.contains(m) {
                assert!(!fallback && status != 405, "{m} {path} is documented but not served ({status} {body})");
            } else {
                // Served without being documented (or the wrong handlers share a path).
                assert_eq!(status, 405, "{m} {path} is served ({status}) but not documented");
            }
        }
    }
    // The fallback still answers unknown paths in the error shape.
    let resp = client.get(format!("{base}/api/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    app.stop().await;
}

#[tokio::test]
async fn the_document_is_served_without_an_api_key() {
    let app = TestApp::spawn_with(without_workers).await;
    let resp = reqwest::get(format!("http://{}/api/openapi.json", app.addr)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let served: Value = resp.json().await.unwrap();
    assert_eq!(served, document());
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Real responses match their documented schemas, checked by a JSON Schema validator (the
// `jsonschema` crate, draft 2020-12, which OpenAPI 3.1 schemas are).

/// The document's component schemas made strict for checking responses: every object schema
/// refuses properties it does not list (`unevaluatedProperties: false`), so a field the server
/// sends but the document leaves out fails too. Schemas that are parts of an `allOf` are left
/// open (the `allOf` itself is closed instead: it sees what each part evaluated).
fn strict_components(doc: &Value) -> Value {
    fn names_in_all_of(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for part in m.get("allOf").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(r) = part.get("$ref").and_then(Value::as_str) {
                        out.insert(r.rsplit('/').next().unwrap_or_default().to_string());
                    }
                }
                m.values().for_each(|x| names_in_all_of(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| names_in_all_of(x, out)),
            _ => {}
        }
    }
    fn close(v: &mut Value, open: bool) {
        match v {
            Value::Object(m) => {
                let is_object_schema = m.contains_key("properties") || m.contains_key("allOf");
                if is_object_schema && !open && !m.contains_key("additionalProperties") {
                    m.insert("unevaluatedProperties".into(), Value::Bool(false));
                }
                for (k, x) in m.iter_mut() {
                    // The parts of an allOf stay open; everything else nested is closed.
                    if k == "allOf" {
                        for part in x.as_array_mut().into_iter().flatten() {
                            close(part, true);
                        }
                    } else {
                        close(x, false);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| close(x, false)),
            _ => {}
        }
    }
    let mut components = doc["components"].clone();
    let mut in_all_of = BTreeSet::new();
    names_in_all_of(&components, &mut in_all_of);
    for (name, schema) in components["schemas"].as_object_mut().expect("component schemas") {
        close(schema, in_all_of.contains(name));
    }
    components
}

/// Every mismatch of `value` with `schema` (which may `$ref` the document's components).
fn check(components: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let root = serde_json::json!({"allOf": [schema], "components": components});
    let validator = jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{schema} is not a valid JSON Schema: {e}"));
    validator.iter_errors(value).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

/// The validator the response test relies on fails where it should: a documented body passes,
/// an undocumented field, a wrong type and a missing required field do not, also inside a list
/// and through an `allOf` (a flattened type).
#[test]
fn the_response_check_refuses_what_the_document_does_not_allow() {
    let doc = document();
    let components = strict_components(&doc);
    let health = serde_json::json!({"$ref": "#/components/schemas/Health"});
    assert!(check(&components, &health, &serde_json::json!({"status": "ok", "version": "1"})).is_empty());
    assert!(!check(&components, &health, &serde_json::json!({"status": "ok", "version": "1", "extra": 1})).is_empty());
    assert!(!check(&components, &health, &serde_json::json!({"status": "ok", "version": 1})).is_empty());
    assert!(!check(&components, &health, &serde_json::json!({"status": "ok"})).is_empty());
    let sources = serde_json::json!({"$ref": "#/components/schemas/SourceList"});
    assert!(!check(&components, &sources, &serde_json::json!({"data": [{"source": "x"}]})).is_empty());
    let test = serde_json::json!({"$ref": "#/components/schemas/SourceTestResult"});
    let result =
        |check: serde_json::Value| serde_json::json!({"ok": true, "source": "s", "secret_fingerprint": "hmac:1", "checks": [check]});
    assert!(check(&components, &test, &result(serde_json::json!({"check": "signature", "ok": true, "detail": "d"}))).is_empty());
    let extra = result(serde_json::json!({"check": "signature", "ok": true, "bogus": 1}));
    assert!(!check(&components, &test, &extra).is_empty());
}

struct Api {
    doc: Value,
    components: Value,
    base: String,
    key: String,
    client: reqwest::Client,
    checked: BTreeSet<(String, String, u16)>,
}

impl Api {
    /// Sends a request and checks that its status is documented for the operation and that the
    /// body matches the documented schema.
    async fn call(&mut self, method: &str, template: &str, path: &str, body: Option<&str>, headers: &[(&str, String)]) -> (u16, Value) {
        let mut req = self.client.request(method.parse().unwrap(), format!("{}{path}", self.base)).bearer_auth(&self.key);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let op = &self.doc["paths"][template][method.to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not documented");
        let response = &op["responses"][status.to_string()];
        assert!(response.is_object(), "{method} {path}: status {status} is not documented ({text})");
        let value: Value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text.clone())) };
        if let Some(schema) = response["content"]["application/json"].get("schema") {
            let errors = check(&self.components, schema, &value);
            assert!(errors.is_empty(), "{method} {path} {status} does not match its schema:\n{}\nbody: {value:#}", errors.join("\n"));
        } else {
            assert!(text.is_empty() || response["content"].is_object(), "{method} {path} {status}: undocumented body {text}");
        }
        self.checked.insert((method.to_string(), template.to_string(), status));
        (status, value)
    }

    async fn deliver(&mut self, source: &str, secret: &str, body: &str) -> (u16, Value) {
        let ts = chrono::Utc::now().timestamp().to_string();
        let sig = format!("sha256={}", tw_core::signature::sign(&tw_core::Secret::new(secret), &ts, body.as_bytes()));
        let path = format!("/api/webhooks/{source}");
        self.call("POST", "/api/webhooks/{source}", &path, Some(body), &[("x-webhook-timestamp", ts), ("x-webhook-signature", sig)]).await
    }
}

#[tokio::test]
async fn responses_match_their_documented_schemas() {
    let app = TestApp::spawn_with(without_workers).await;
    let doc = document();
    let mut api = Api {
        components: strict_components(&doc),
        doc,
        base: format!("http://{}", app.addr),
        key: app.admin_key.clone(),
        client: reqwest::Client::new(),
        checked: BTreeSet::new(),
    };
    let secret = "a-test-secret-of-some-length-0123";

    assert_eq!(api.call("GET", "/api/health", "/api/health", None, &[]).await.0, 200);
    assert_eq!(api.call("POST", "/api/webhooks", "/api/webhooks", Some(r#"{"source":"gen"}"#), &[]).await.0, 201);
    let body = format!(r#"{{"source":"s1","secret":"{secret}","severity_mapping":{{"4":"critical"}}}}"#);
    assert_eq!(api.call("POST", "/api/webhooks", "/api/webhooks", Some(&body), &[]).await.0, 201);
    assert_eq!(api.call("POST", "/api/webhooks", "/api/webhooks", Some(&body), &[]).await.0, 409);
    assert_eq!(api.call("POST", "/api/webhooks", "/api/webhooks", Some(r#"{"source":"Bad Name!"}"#), &[]).await.0, 422);
    assert_eq!(api.call("POST", "/api/webhooks", "/api/webhooks", Some("[1]"), &[]).await.0, 400);
    assert_eq!(api.call("GET", "/api/webhooks", "/api/webhooks", None, &[]).await.0, 200);
    assert_eq!(api.call("GET", "/api/webhooks/{source}", "/api/webhooks/s1", None, &[]).await.0, 200);
    assert_eq!(api.call("GET", "/api/webhooks/{source}", "/api/webhooks/nope", None, &[]).await.0, 404);
    assert_eq!(api.call("PATCH", "/api/webhooks/{source}", "/api/webhooks/s1", Some(r#"{"enabled":true}"#), &[]).await.0, 200);
    assert_eq!(api.call("POST", "/api/webhooks/{source}/test", "/api/webhooks/s1/test", None, &[]).await.0, 200);
    let rotate = format!(r#"{{"secret":"{secret}","grace_period_secs":0}}"#);
    assert_eq!(api.call("POST", "/api/webhooks/{source}/rotate-secret", "/api/webhooks/s1/rotate-secret", Some(&rotate), &[]).await.0, 200);

    // The intake: created, duplicate, test event, refusals; an async source queues.
    let event = r#"{"event_type":"malware","data":{"alert_id":"a-1","severity":"high","details":{"title":"x"}}}"#;
    let (status, created) = api.deliver("s1", secret, event).await;
    assert_eq!(status, 201);
    assert_eq!(api.deliver("s1", secret, event).await.0, 200);
    let test_event = r#"{"event_type":"tw.webhook.test","data":{"alert_id":"t-1","severity":"info"}}"#;
    assert_eq!(api.deliver("s1", secret, test_event).await.0, 200);
    assert_eq!(api.deliver("s1", "another-secret-entirely-0123456", event).await.0, 401);
    assert_eq!(api.deliver("s1", secret, "[1]").await.0, 400);
    assert_eq!(api.deliver("nope", secret, event).await.0, 404);
    // Each source needs its own secret (the signature does not cover the source).
    let secret2 = "second-source-secret-0123456789";
    let async_source = format!(r#"{{"source":"s2","secret":"{secret2}","mode":"async"}}"#);
    assert_eq!(api.call("POST", "/api/webhooks", "/api/webhooks", Some(&async_source), &[]).await.0, 201);
    let (status, queued) = api.deliver("s2", secret2, event).await;
    assert_eq!(status, 202);
    let queue_path = format!("/api/webhooks/queue/{}", queued["queue_id"].as_str().unwrap());
    assert_eq!(api.call("GET", "/api/webhooks/queue/{queue_id}", &queue_path, None, &[]).await.0, 200);
    assert_eq!(api.call("GET", "/api/webhooks/queue/{queue_id}", "/api/webhooks/queue/nope", None, &[]).await.0, 404);
    assert_eq!(api.call("GET", "/api/dead-letters", "/api/dead-letters", None, &[]).await.0, 200);
    let rp = "/api/webhooks/{source}/reprocess";
    assert_eq!(
        api.call("POST", rp, "/api/webhooks/s1/reprocess", Some(r#"{"since":"1h","dead_letters":true,"limit":1}"#), &[]).await.0,
        200
    );
    assert_eq!(api.call("POST", rp, "/api/webhooks/s1/reprocess", Some(r#"{"cursor":"nope"}"#), &[]).await.0, 422);
    assert_eq!(api.call("POST", rp, "/api/webhooks/s1/reprocess", Some("[1]"), &[]).await.0, 400);
    assert_eq!(api.call("POST", rp, "/api/webhooks/nope/reprocess", None, &[]).await.0, 404);

    // Incidents and triage.
    let number = created["incident_number"].as_str().unwrap().to_string();
    assert_eq!(api.call("GET", "/api/incidents", "/api/incidents", None, &[]).await.0, 200);
    assert_eq!(api.call("GET", "/api/incidents", "/api/incidents?per_page=0", None, &[]).await.0, 422);
    // Paging by cursor: the meta has no page number then, and a cursor on every page but the last.
    let second = r#"{"event_type":"malware","data":{"alert_id":"a-2","severity":"low","details":{"title":"y"}}}"#;
    assert_eq!(api.deliver("s1", secret, second).await.0, 201);
    let (status, first_page) = api.call("GET", "/api/incidents", "/api/incidents?source=s1&per_page=1", None, &[]).await;
    assert_eq!(status, 200);
    let cursor = first_page["meta"]["next_cursor"].as_str().expect("a second page").to_string();
    let next_path = format!("/api/incidents?source=s1&per_page=1&cursor={cursor}");
    let (status, next_page) = api.call("GET", "/api/incidents", &next_path, None, &[]).await;
    assert_eq!(status, 200);
    assert!(next_page["meta"].get("page").is_none() && next_page["meta"]["next_cursor"].is_null(), "{next_page}");
    assert_eq!(api.call("GET", "/api/incidents", "/api/incidents?cursor=bogus", None, &[]).await.0, 422);
    assert_eq!(api.call("GET", "/api/incidents/{id}", &format!("/api/incidents/{number}"), None, &[]).await.0, 200);
    assert_eq!(api.call("GET", "/api/incidents/{id}", "/api/incidents/INC-1999-0001", None, &[]).await.0, 404);
    assert_eq!(api.call("GET", "/api/incidents/{id}/raw", &format!("/api/incidents/{number}/raw"), None, &[]).await.0, 200);
    let triage_path = format!("/api/incidents/{number}/triage");
    let (status, job) = api.call("POST", "/api/incidents/{id}/triage", &triage_path, Some(r#"{"playbook":"malware_triage"}"#), &[]).await;
    assert_eq!(status, 202);
    assert_eq!(api.call("POST", "/api/incidents/{id}/triage", &triage_path, Some(r#"{"nope":1}"#), &[]).await.0, 422);
    let job_path = format!("/api/triage/jobs/{}", job["job_id"].as_str().unwrap());
    assert_eq!(api.call("GET", "/api/triage/jobs/{id}", &job_path, None, &[]).await.0, 200);

    // Playbooks.
    assert_eq!(api.call("GET", "/api/playbooks", "/api/playbooks", None, &[]).await.0, 200);
    assert_eq!(api.call("GET", "/api/playbooks/{name}", "/api/playbooks/phishing_triage", None, &[]).await.0, 200);
    let yaml = tw_core::triage::builtin_yaml("phishing_triage").unwrap().replacen("name: phishing_triage", "name: custom_one", 1);
    let wrapped = serde_json::json!({ "yaml": yaml }).to_string();
    assert_eq!(api.call("POST", "/api/playbooks/validate", "/api/playbooks/validate", Some(&wrapped), &[]).await.0, 200);
    assert_eq!(api.call("POST", "/api/playbooks/validate", "/api/playbooks/validate", Some(r#"{"yaml":"name: [1"}"#), &[]).await.0, 422);
    assert_eq!(api.call("POST", "/api/playbooks", "/api/playbooks", Some(&wrapped), &[]).await.0, 201);
    assert_eq!(api.call("POST", "/api/playbooks", "/api/playbooks", Some(&wrapped), &[]).await.0, 409);
    assert_eq!(api.call("PUT", "/api/playbooks/{name}", "/api/playbooks/custom_one", Some(&wrapped), &[]).await.0, 200);
    assert_eq!(api.call("GET", "/api/playbooks/{name}", "/api/playbooks/custom_one", None, &[]).await.0, 200);
    let run = format!(r#"{{"payload":{event}}}"#);
    assert_eq!(api.call("POST", "/api/playbooks/{name}/test", "/api/playbooks/custom_one/test", Some(&run), &[]).await.0, 200);
    assert_eq!(api.call("DELETE", "/api/playbooks/{name}", "/api/playbooks/custom_one", None, &[]).await.0, 204);
    assert_eq!(api.call("DELETE", "/api/playbooks/{name}", "/api/playbooks/phishing_triage", None, &[]).await.0, 409);

    // Intel, logs, the rest.
    assert_eq!(api.call("GET", "/api/intel", "/api/intel", None, &[]).await.0, 200);
    assert_eq!(api.call("POST", "/api/intel/{list}", "/api/intel/bad-ips", Some(r#"{"indicators":["203.0.113.9"]}"#), &[]).await.0, 200);
    assert_eq!(api.call("POST", "/api/intel/{list}", "/api/intel/nope", Some(r#"{"indicators":["x"]}"#), &[]).await.0, 404);
    assert_eq!(api.call("GET", "/api/logs", "/api/logs", None, &[]).await.0, 404);
    assert_eq!(api.call("GET", "/api/ready", "/api/ready", None, &[]).await.0, 200);
    // Deliveries are recorded in the background: poll until the first one shows.
    let mut events = Value::Null;
    for _ in 0..300 {
        let (status, v) = api.call("GET", "/api/webhooks/{source}/events", "/api/webhooks/s1/events?tail=5", None, &[]).await;
        assert_eq!(status, 200);
        if v["data"].as_array().is_some_and(|a| !a.is_empty()) {
            events = v;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let rid = events["data"][0]["request_id"].as_str().expect("a delivery was recorded").to_string();
    assert_eq!(api.call("GET", "/api/deliveries/{request_id}", &format!("/api/deliveries/{rid}"), None, &[]).await.0, 200);
    assert_eq!(api.call("GET", "/api/deliveries/{request_id}", "/api/deliveries/nope", None, &[]).await.0, 404);
    assert_eq!(api.call("GET", "/api/webhooks/{source}/events", "/api/webhooks/nope/events", None, &[]).await.0, 404);
    assert_eq!(api.call("GET", "/api/webhooks/{source}/events", "/api/webhooks/s1/events?status=bogus", None, &[]).await.0, 422);
    // A url-token source: a delivery with the token, and one with another.
    let body = r#"{"source":"splunk","verification":"url-token","secret":"splunk-token-0123456789","allowed_ips":["127.0.0.1"],"mapping":{"title":"/search_name"}}"#;
    assert_eq!(api.call("POST", "/api/webhooks", "/api/webhooks", Some(body), &[]).await.0, 201);
    let token_path = "/api/webhooks/{source}/{token}";
    let alert = r#"{"sid":"rt_1","search_name":"Failed Login Alert","result":{"user":"bob"}}"#;
    assert_eq!(api.call("POST", token_path, "/api/webhooks/splunk/splunk-token-0123456789", Some(alert), &[]).await.0, 201);
    assert_eq!(api.call("POST", token_path, "/api/webhooks/splunk/splunk-token-9876543210", Some(alert), &[]).await.0, 401);
    assert_eq!(api.call("GET", "/api/webhooks/{source}", "/api/webhooks/splunk", None, &[]).await.0, 200);
    assert_eq!(api.call("DELETE", "/api/webhooks/{source}", "/api/webhooks/s1", None, &[]).await.0, 204);
    // The audit log holds the changes above; API keys are listed without secrets.
    let (status, audit) = api.call("GET", "/api/audit", "/api/audit?action=source&per_page=2", None, &[]).await;
    assert_eq!(status, 200);
    assert!(audit["data"].as_array().is_some_and(|a| a.len() == 2) && audit["meta"]["next_cursor"].is_string(), "{audit}");
    assert_eq!(api.call("GET", "/api/audit", "/api/audit?since=99999999999d", None, &[]).await.0, 422);
    assert_eq!(api.call("GET", "/api/keys", "/api/keys", None, &[]).await.0, 200);
    api.key = "tw_not-a-key".into();
    assert_eq!(api.call("GET", "/api/incidents", "/api/incidents", None, &[]).await.0, 401);

    // Every operation was exercised at least once (except the document and /metrics, which are
    // not JSON schemas of ours).
    let exercised: BTreeSet<(String, String)> = api.checked.iter().map(|(m, p, _)| (m.clone(), p.clone())).collect();
    for (m, p, _) in operations(&api.doc) {
        if p == "/api/openapi.json" || p == "/metrics" {
            continue;
        }
        assert!(exercised.contains(&(m.clone(), p.clone())), "{m} {p} has no response-shape check here");
    }
    app.stop().await;
}
