//! API keys and the audit log of administrative changes: sources from the config file audited,
//! log streams ended when their key is revoked or after an hour, and capped. The key commands and
//! `tw-cli audit list` are proven with the binary, in tw-cli's `hardening::admin`.

use crate::support::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use tw_server::state::ManualClock;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_from_the_config_file_are_audited_once_per_change() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let path = cfg_dir.path().join("webhook_config.yaml");
    let secret = "config-file-secret-0123456789";
    std::fs::write(&path, format!("sources:\n  edr:\n    secret: \"{secret}\"\n")).unwrap();
    let p = path.clone();
    let app = TestApp::spawn_with(move |cfg| cfg.webhook_config = Some(p)).await;
    let records = audit(&app, "target=edr").await;
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r["action"], "source.create");
    assert_eq!(r["actor"], json!({"kind": "config_file", "path": path.display().to_string()}));
    assert!(r["client_ip"].is_null() && r["after"]["managed_by_config"] == true, "{r}");
    assert!(!r.to_string().contains(secret), "{r}");

    // A restart with the same file changes nothing and records nothing; a changed file, one update.
    let dir = app.stop().await;
    let p = path.clone();
    let app = TestApp::spawn_in(dir, move |cfg| cfg.webhook_config = Some(p)).await;
    assert_eq!(audit(&app, "target=edr").await.len(), 1);
    let dir = app.stop().await;
    std::fs::write(&path, format!("sources:\n  edr:\n    secret: \"{secret}\"\n    enabled: false\n")).unwrap();
    let p = path.clone();
    let app = TestApp::spawn_in(dir, move |cfg| cfg.webhook_config = Some(p)).await;
    let records = audit(&app, "target=edr").await;
    assert_eq!(records.iter().map(|r| r["action"].as_str().unwrap()).collect::<Vec<_>>(), ["source.update", "source.create"]);
    assert_eq!((&records[0]["before"]["enabled"], &records[0]["after"]["enabled"]), (&json!(true), &json!(false)));
    // Taken out of the file: handed back to the API, and that is recorded too.
    let dir = app.stop().await;
    let app = TestApp::spawn_in(dir, |_| {}).await;
    assert_eq!(audit(&app, "target=edr").await[0]["action"], "source.release");
}

/// Opens `GET /api/logs?follow=true` (new lines only) with `key`.
async fn follow_logs(app: &TestApp, key: &str) -> reqwest::Response {
    app.http.get(app.url("/api/logs?follow=true&tail=0")).bearer_auth(key).send().await.expect("request")
}

/// Reads a log stream until the server ends it; the reason its `end` event gives. Generous: the
/// stream looks at the (manual) clock about once a second.
async fn end_of(mut stream: reqwest::Response) -> String {
    let read = async {
        let mut text = String::new();
        while let Some(chunk) = stream.chunk().await.expect("stream") {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(i) = text.find("event: end\ndata: ") {
                return text[i + 17..].lines().next().unwrap_or_default().to_string();
            }
        }
        panic!("the stream closed without an end event: {text}");
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), read).await.expect("the stream ended within a minute")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_stream_ends_when_its_key_is_revoked_and_after_an_hour() {
    let clock = Arc::new(ManualClock::at(now()));
    let c = clock.clone();
    let app = TestApp::spawn_with(move |cfg| {
        cfg.clock = c;
        cfg.log_buffer = Some(tw_server::logs::LogBuffer::new(100));
    })
    .await;
    let (key, record) = new_key(app.store(), "tailer", tw_store::Scope::Admin).await;
    let revoked = follow_logs(&app, &key).await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let lasting = follow_logs(&app, &app.admin_key).await;
    assert_eq!(lasting.status(), StatusCode::OK);
    // Revoked in the store, as `tw-cli api-key revoke` does it, not through this server.
    assert!(app.store().revoke_api_key(&record.id, chrono::Utc::now(), None).await.unwrap());
    // The key is looked up again 30 s (by the server's clock) into the stream.
    clock.set(now() + 31);
    assert_eq!(end_of(revoked).await, "key_refused");
    // A valid key's stream lasts an hour at most.
    clock.set(now() + 3600 + 1);
    assert_eq!(end_of(lasting).await, "max_lifetime");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_streams_are_capped_per_process() {
    let app = TestApp::spawn_with(|cfg| cfg.log_buffer = Some(tw_server::logs::LogBuffer::new(100))).await;
    let mut open = Vec::new();
    for _ in 0..tw_server::logs::MAX_FOLLOWERS {
        let s = follow_logs(&app, &app.admin_key).await;
        assert_eq!(s.status(), StatusCode::OK);
        open.push(s);
    }
    let refused = follow_logs(&app, &app.admin_key).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("30"));
    let v: Value = refused.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limited", "{v}");
    // Without follow, the tail is served as ever.
    assert_eq!(app.admin(Method::GET, "/api/logs", None).await.0, StatusCode::OK);
}
