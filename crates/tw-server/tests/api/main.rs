//! HTTP integration tests of tw-server: the real router, store and workers in this process on a
//! free port ([`TestApp`]), spoken to over HTTP (and raw TCP where a misbehaving client is the
//! point). One module per area: the intake, sources, incidents, the async queue, triage,
//! observability, the OpenAPI document, and `hardening`, the server under attack and misuse.
//!
//! Every test starts its own [`TestApp`] (own temp data dir, own port) and talks to it over HTTP
//! only. Background work (queue workers, fire-and-forget counters) is awaited by polling with a
//! generous deadline, never by assuming a speed.
mod support;
use support::*;

mod async_queue;
mod concurrency;
mod config_file;
mod console;
mod database_down;
mod hardening;
mod incidents;
mod intake;
mod observability;
mod openapi;
mod reprocess;
mod restart;
mod schemes;
mod sources;
mod triage;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Every test of this binary runs on SQLite here, and again on PostgreSQL through this one, except
/// the OpenAPI document's checks (`openapi::`), which hold for either store.
#[test]
fn these_tests_pass_on_postgres() {
    tw_store::testing::rerun_on_postgres(&["--skip", "openapi::"]);
}

#[tokio::test]
async fn health_answers() {
    let app = TestApp::spawn().await;
    let (status, v) = app.with_key("", reqwest::Method::GET, "/api/health", None).await;
    assert_eq!(status, 200);
    assert_eq!(v["status"], "ok");
}

/// Framework rejections (wrong method, a path that is not UTF-8, a malformed query string) answer
/// in the spec's error shape too, and an undecodable source name is an unknown source.
#[tokio::test]
async fn every_error_has_the_spec_shape() {
    let app = TestApp::spawn().await;
    let resp = app.http.put(app.url("/api/webhooks")).bearer_auth(&app.admin_key).send().await.unwrap();
    let allow = resp.headers().get("allow").map(|v| v.to_str().unwrap().to_string());
    let (status, v) = into_json(resp).await;
    assert_error(status, &v, 405, "method_not_allowed");
    assert!(allow.is_some_and(|a| a.contains("POST") && a.contains("GET")), "Allow header kept");

    let (status, v) = post_intake(&app, "%FF%FE", &[], "{}").await;
    assert_error(status, &v, 404, "unknown_source");

    let (status, v) = app.admin(Method::GET, "/api/logs?tail=%FF", None).await;
    assert!(v.pointer("/error/code").and_then(Value::as_str).is_some(), "{status} {v}");
    let (status, v) = app.admin(Method::GET, "/api/incidents?page=1&page=2", None).await;
    assert!(status.is_client_error() && v.pointer("/error/code").and_then(Value::as_str).is_some(), "{status} {v}");

    let text = app.metrics_text().await;
    assert!(text.contains(r#"webhook_errors_total{source="_unregistered",code="unknown_source"} 1"#), "{text}");
}

/// The server-side test runs the real intake path: a disabled source fails it at "enabled", and
/// the checks after the failing one are not reached.
#[tokio::test]
async fn server_side_test_uses_the_intake_path() {
    let app = TestApp::spawn().await;
    add(&app, "mail", "mail-secret-123", json!({})).await;
    let (status, v) = app.admin(Method::POST, "/api/webhooks/mail/test", None).await;
    assert_eq!((status.as_u16(), &v["ok"]), (200, &json!(true)), "{v}");
    assert!(v["checks"].as_array().unwrap().iter().all(|c| c["ok"] == true), "{v}");
    let (status, _) = app.admin(Method::PATCH, "/api/webhooks/mail", Some(json!({"enabled": false}))).await;
    assert_eq!(status, 200);
    let (status, v) = app.admin(Method::POST, "/api/webhooks/mail/test", None).await;
    assert_eq!((status.as_u16(), &v["ok"]), (200, &json!(false)), "{v}");
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks[0]["ok"], true, "{v}");
    assert_eq!((checks[1]["check"].as_str(), checks[1]["ok"].as_bool()), (Some("enabled"), Some(false)), "{v}");
    assert!(checks[1]["error"].as_str().unwrap().starts_with("source_disabled"), "{v}");
    assert_eq!(checks[2]["error"], "not reached", "{v}");
    // Nothing was stored either way.
    assert_eq!(get_ok(&app, "/api/incidents").await["meta"]["total"], 0);
}

/// A chunked body (no Content-Length) over the source's limit is refused 413 once the limit is
/// passed: the length check does not rely on the declared size alone.
#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    use std::io::{Read, Write};
    let app = TestApp::spawn().await;
    add(&app, "small", "small-secret-1", json!({"max_body_bytes": 1000})).await;
    let addr = app.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST /api/webhooks/small HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
             X-Webhook-Timestamp: {}\r\nX-Webhook-Signature: sha256={}\r\nConnection: close\r\n\r\n",
            now(),
            "0".repeat(64)
        );
        stream.write_all(head.as_bytes()).unwrap();
        let chunk = "a".repeat(600);
        for _ in 0..3 {
            let _ = stream.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
        }
        let _ = stream.write_all(b"0\r\n\r\n");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");
}
