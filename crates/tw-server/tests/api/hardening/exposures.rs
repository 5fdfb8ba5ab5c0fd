//! Amplification and smaller exposures: triage output caps (refused at validation where the size
//! is known, a failed run otherwise), time parameters that once overflowed, unreadable signature
//! headers, `nosniff`, the `/metrics` token and deleted sources' series, and shared secrets.

use crate::support::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

/// A playbook whose one step copies the whole raw payload into its reason 200 times: the issue's
/// reproduction (a 1 MB payload made a 600 MB response).
fn amplifier_yaml() -> String {
    let reason = "{{ incident.raw }}".repeat(200);
    format!("name: amplifier\nsteps:\n  - name: r\n    action: recommend\n    parameters: {{action: notify, reason: \"{reason}\"}}\n")
}

/// A playbook that passes validation (it reads one field of the payload per step) but whose result
/// outgrows the cap on a large field: 100 steps, each copying a body cut to 64 KiB three times.
fn dynamic_amplifier_yaml() -> String {
    let mut yaml = String::from("name: wide\nsteps:\n");
    for n in 0..100 {
        yaml.push_str(&format!(
            "  - name: s{n}\n    action: recommend\n    parameters: {{action: a{n}, reason: \"{{{{ incident.raw.body }}}}\"}}\n"
        ));
    }
    yaml
}

/// A signed-able alert with a `body` field of `len` bytes.
fn alert_with_body(id: &str, len: usize) -> Value {
    let mut v: Value = serde_json::from_str(&phish(id)).unwrap();
    v["body"] = Value::String("B".repeat(len));
    v
}

/// Polls `GET path` (admin key) until `done`; panics with the last answer after a minute.
async fn poll(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    poll_until(app, path, path, Duration::from_secs(60), done).await
}

fn field_errors(v: &Value) -> Vec<(String, String)> {
    v["error"]["details"]
        .as_array()
        .map(|d| {
            d.iter().map(|e| (e["field"].as_str().unwrap_or("").to_string(), e["message"].as_str().unwrap_or("").to_string())).collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_playbook_copying_the_raw_payload_200_times_is_refused_at_validation() {
    let app = TestApp::spawn().await;
    let yaml = amplifier_yaml();
    for (key, method, path) in [
        (app.read_key.clone(), Method::POST, "/api/playbooks/validate"),
        (app.admin_key.clone(), Method::POST, "/api/playbooks"),
        (app.admin_key.clone(), Method::PUT, "/api/playbooks/amplifier"),
    ] {
        let (status, v) = app.with_key(&key, method.clone(), path, Some(json!({"yaml": yaml}))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "validation_error");
        let errors = field_errors(&v);
        let on_reason = |needle: &str| errors.iter().any(|(f, m)| f == "steps.r.parameters.reason" && m.contains(needle));
        assert!(on_reason("200 interpolations"), "{v}");
        assert!(on_reason("copies the whole incident payload"), "{v}");
    }
    let (status, _) = app.admin(Method::GET, "/api/playbooks/amplifier", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");

    // The playbooks dir at start: the server does not start, and says why.
    let dir = tempfile::tempdir().unwrap();
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir(&playbooks).unwrap();
    std::fs::write(playbooks.join("amplifier.yaml"), &yaml).unwrap();
    let mut cfg = tw_server::ServerConfig::new(dir.path().join("data"));
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    // Its own SQLite store (on either engine): the playbooks are checked before anything is written.
    cfg.playbooks_dir = Some(playbooks);
    let err = tw_server::start(cfg).await.err().expect("a playbooks dir with an amplifier refuses to start").to_string();
    assert!(err.contains("amplifier.yaml") && err.contains("interpolations") && err.contains("parameters.reason"), "{err}");
}

#[tokio::test]
async fn a_result_over_the_cap_fails_the_test_run_and_the_auto_triage_job_once_with_bounded_storage() {
    let app = TestApp::spawn().await;
    let (status, v) = app.admin(Method::POST, "/api/playbooks", Some(json!({"yaml": dynamic_amplifier_yaml()}))).await;
    assert_eq!(status, StatusCode::CREATED, "a field of the payload is allowed: {v}");

    // The test endpoint, with a read key, on a large payload: a clear 422, a small answer.
    let resp = app
        .http
        .post(app.url("/api/playbooks/wide/test"))
        .bearer_auth(&app.read_key)
        .json(&json!({"payload": alert_with_body("t-1", 900 * 1024)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let text = resp.text().await.unwrap();
    assert!(text.len() < 4096, "{} bytes", text.len());
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "validation_error", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("would exceed 8388608 bytes"), "{v}");

    // A single long value is cut and marked, and the run succeeds.
    let one =
        "name: one\nsteps:\n  - name: r\n    action: recommend\n    parameters: {action: notify, reason: \"{{ incident.raw.body }}!\"}\n";
    let (status, v) = app.admin(Method::POST, "/api/playbooks", Some(json!({"yaml": one}))).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = app
        .with_key(
            &app.read_key.clone(),
            Method::POST,
            "/api/playbooks/one/test",
            Some(json!({"payload": alert_with_body("t-2", 900 * 1024)})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let reason = v["triage"]["recommended_actions"][0]["reason"].as_str().unwrap();
    assert_eq!(reason.len(), tw_core::triage::expr::MAX_RENDERED_BYTES);
    assert!(reason.ends_with(tw_core::triage::expr::TRUNCATED_MARK), "{}", &reason[reason.len() - 40..]);

    // The test endpoint's own input is bounded.
    let (status, v) = app
        .with_key(
            &app.read_key.clone(),
            Method::POST,
            "/api/playbooks/one/test",
            Some(json!({"payload": alert_with_body("t-3", 1200 * 1024)})),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["error"]["code"], "payload_too_large");

    // Auto-triage: one signed 200 KB alert; the job fails once (no retry) with the error, and
    // what is stored on the incident stays small.
    let src = app.add_source(json!({"source": "amp-src", "secret": "amp-src-secret-1", "auto_triage": true, "playbook": "wide"})).await;
    assert_eq!(src["playbook"], "wide");
    let (status, v) = app.deliver("amp-src", "amp-src-secret-1", &alert_with_body("auto-1", 200 * 1024).to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = v["incident_id"].as_str().unwrap().to_string();
    let inc =
        poll(&app, &format!("/api/incidents/{id}"), |v| v["triage"]["status"] == "failed" || v["triage"]["status"] == "completed").await;
    let triage = &inc["triage"];
    assert_eq!(triage["status"], "failed", "{triage}");
    assert!(triage["error"].as_str().unwrap().contains("would exceed 8388608 bytes"), "{triage}");
    assert!(triage.to_string().len() < 4096, "stored triage: {} bytes", triage.to_string().len());
    let job = poll(&app, &format!("/api/triage/jobs/{}", triage["job_id"].as_str().unwrap()), |v| v["status"] == "failed").await;
    assert_eq!(job["attempts"], 1, "not retried: {job}");
}

#[tokio::test]
async fn an_overflowing_since_is_422_naming_since_and_the_server_stays_up() {
    let app = TestApp::spawn_with(|cfg| cfg.log_buffer = Some(tw_server::logs::LogBuffer::new(100))).await;
    // More digits than the document's pattern allows (`^[0-9]{1,9}[smhdw]$`): refused, never
    // parsed into an overflow.
    for since in ["99999999999d", "9223372036854775807s", "99999999999999999999999h", "1y"] {
        let (status, v) = app.admin(Method::GET, &format!("/api/logs?since={since}"), None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{since}: {v}");
        assert_eq!(v["error"]["code"], "validation_error");
        assert_eq!(field_errors(&v)[0].0, "since", "{v}");
    }
    // Any duration the pattern allows is answered, the longest ones reaching back before every
    // record: everything kept.
    for since in ["366d", "367d", "999999999w"] {
        let (status, v) = app.admin(Method::GET, &format!("/api/logs?since={since}"), None).await;
        assert_eq!(status, StatusCode::OK, "{since}: {v}");
        assert!(v["data"].is_array(), "{since}: {v}");
    }
    let (status, _) = app.with_key("", Method::GET, "/api/health", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn signature_headers_that_are_not_utf8_are_invalid_not_missing() {
    let app = TestApp::spawn().await;
    app.add_source(json!({"source": "bytes", "secret": "bytes-secret-1"})).await;
    let body = phish("utf8-1");
    let ts = now();
    let send = |sig: reqwest::header::HeaderValue, ts: reqwest::header::HeaderValue| {
        app.http
            .post(app.url("/api/webhooks/bytes"))
            .header("content-type", "application/json")
            .header("x-webhook-signature", sig)
            .header("x-webhook-timestamp", ts)
            .body(body.clone())
            .send()
    };
    let good_sig = reqwest::header::HeaderValue::from_str(&signature("bytes-secret-1", ts, body.as_bytes())).unwrap();
    let good_ts = reqwest::header::HeaderValue::from_str(&ts.to_string()).unwrap();
    let bad = |b: &[u8]| reqwest::header::HeaderValue::from_bytes(b).unwrap();

    let (status, v) = into_json(send(bad(b"sha256=\xff\xfe"), good_ts.clone()).await.unwrap()).await;
    assert_eq!((status, v["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_signature")), "{v}");
    let (status, v) = into_json(send(good_sig.clone(), bad(b"17\xff")).await.unwrap()).await;
    assert_eq!((status, v["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("timestamp_invalid")), "{v}");
    let (status, v) = into_json(send(good_sig, good_ts).await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "the same request with readable headers is accepted: {v}");
}

#[tokio::test]
async fn every_response_says_nosniff() {
    let app = TestApp::spawn().await;
    for (key, path, want) in [
        ("", "/api/health", StatusCode::OK),
        ("", "/no/such/endpoint", StatusCode::NOT_FOUND),
        ("", "/api/webhooks", StatusCode::UNAUTHORIZED),
        ("", "/metrics", StatusCode::OK),
        (app.read_key.as_str(), "/api/incidents?per_page=0", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let mut req = app.http.get(app.url(path));
        if !key.is_empty() {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), want, "{path}");
        assert_eq!(resp.headers().get("x-content-type-options").and_then(|v| v.to_str().ok()), Some("nosniff"), "{path}");
    }
    let resp = app.http.post(app.url("/api/webhooks/nope")).body("{}").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers().get("x-content-type-options").unwrap(), "nosniff");
}

const METRICS_TOKEN: &str = "metrics-token-0123456789abcdef";

#[tokio::test]
async fn metrics_with_a_token_needs_it() {
    let app = TestApp::spawn_with(|cfg| cfg.metrics_token = Some(tw_core::Secret::new(METRICS_TOKEN))).await;
    for token in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
        let (status, body, nosniff) = scrape(&app.http, &app.base, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "unauthorized", "{v}");
        assert!(!body.contains("webhook_"), "{body}");
        assert_eq!(nosniff.as_deref(), Some("nosniff"));
    }
    let (status, body, _) = scrape(&app.http, &app.base, Some(METRICS_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("tw_build_info"), "{body}");
    // An API key is not the metrics token.
    let (status, _, _) = scrape(&app.http, &app.base, Some(&app.admin_key.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_deleted_source_leaves_metrics() {
    let app = TestApp::spawn().await;
    for name in ["doomed-src", "kept-src"] {
        app.add_source(json!({"source": name, "secret": format!("{name}-secret")})).await;
        let (status, v) = app.deliver(name, &format!("{name}-secret"), &phish(&format!("{name}-1"))).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        let (status, _) = app.deliver(name, "a-wrong-secret", &phish("x")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (_, body, _) = scrape(&app.http, &app.base, None).await;
    assert!(body.contains("source=\"doomed-src\"") && body.contains("source=\"kept-src\""), "{body}");
    let (status, v) = app.admin(Method::DELETE, "/api/webhooks/doomed-src", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    let (_, body, _) = scrape(&app.http, &app.base, None).await;
    assert!(!body.contains("doomed-src"), "{body}");
    assert!(body.contains("webhook_received_total{source=\"kept-src\"}"), "{body}");
}

#[tokio::test]
async fn a_secret_another_source_uses_is_refused_on_create_update_rotate_and_in_the_config_file() {
    let app = TestApp::spawn().await;
    let shared = "shared-secret-123";
    app.add_source(json!({"source": "first", "secret": shared})).await;
    let refused = |status: StatusCode, v: &Value| {
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["error"]["code"], "validation_error");
        let errors = field_errors(v);
        assert!(errors.iter().any(|(f, m)| f == "secret" && m.contains("another source")), "{v}");
        assert!(!v.to_string().contains("first"), "the other source is not named: {v}");
    };
    let (status, v) = app.admin(Method::POST, "/api/webhooks", Some(json!({"source": "second", "secret": shared}))).await;
    refused(status, &v);
    app.add_source(json!({"source": "second", "secret": "second-secret-1"})).await;
    let (status, v) = app.admin(Method::PATCH, "/api/webhooks/second", Some(json!({"secret": shared}))).await;
    refused(status, &v);
    let (status, v) = app.admin(Method::POST, "/api/webhooks/second/rotate-secret", Some(json!({"secret": shared}))).await;
    refused(status, &v);
    // A rotated-out secret still verifies during its grace period: it is still taken.
    let (status, v) = app.admin(Method::POST, "/api/webhooks/first/rotate-secret", Some(json!({"secret": "first-new-secret"}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = app.admin(Method::POST, "/api/webhooks", Some(json!({"source": "third", "secret": shared}))).await;
    refused(status, &v);
    let (status, v) = app.admin(Method::POST, "/api/webhooks/second/rotate-secret", Some(json!({"secret": "first-new-secret"}))).await;
    refused(status, &v);
    // A source may keep (or re-send) its own secret.
    let (status, v) = app.admin(Method::PATCH, "/api/webhooks/second", Some(json!({"secret": "second-secret-1"}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // Only the two deliveries' rightful sources accept them.
    let (status, _) = app.deliver("second", shared, &phish("cross-1")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The config file: two sources sharing a secret, or one taking a registered source's.
    let database_url = app.database_url.clone();
    let dir = app.stop().await;
    for (file, needle) in [
        ("sources:\n  a-src:\n    secret: same-secret-xyz\n  b-src:\n    secret: same-secret-xyz\n", "the same secret as source 'a-src'"),
        ("sources:\n  c-src:\n    secret: second-secret-1\n", "the secret of registered source 'second'"),
    ] {
        let path = dir.path().join("webhook_config.yaml");
        std::fs::write(&path, file).unwrap();
        let mut cfg = tw_server::ServerConfig::new(dir.path().to_path_buf());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.webhook_config = Some(path);
        cfg.database_url = database_url.clone();
        let err = match tw_server::start(cfg).await {
            Ok(_) => panic!("a config file reusing a secret must not start"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(needle) && err.contains("secret"), "{err}");
        assert!(!err.contains("same-secret-xyz") && !err.contains("second-secret-1"), "the secret is never printed: {err}");
    }
}
