//! Smaller exposures where the binary is the point: `triage run --wait --timeout` at the edge of
//! its range, and the `/metrics` token read from a file as Prometheus writes it.

use crate::support::*;
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

/// `Instant::now() + timeout` panicked in the CLI once the job was queued.
#[tokio::test]
async fn cli_triage_wait_timeout_is_range_checked() {
    let app = TestApp::spawn_with(|cfg| cfg.triage_workers = 0).await;
    app.add_source(json!({"source": "cli-src", "secret": "cli-src-secret", "playbook": "phishing_triage"})).await;
    let (status, v) = app.deliver("cli-src", "cli-src-secret", &phish("cli-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let number = v["incident_number"].as_str().unwrap().to_string();
    let (base, key) = (app.base.clone(), app.admin_key.clone());
    let o = tokio::task::spawn_blocking(move || {
        cli(&base, Some(&key), &["triage", "run", "--incident", &number, "--wait", "--timeout", "18446744073709551615"])
    })
    .await
    .unwrap();
    assert_no_panic(&o);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--timeout"), "{}", show(&o));
}

const METRICS_TOKEN: &str = "metrics-token-0123456789abcdef";

#[tokio::test]
async fn the_real_binary_reads_the_metrics_token_file_as_prometheus_writes_it() {
    let (tmp, data) = workdir();
    let token_file = tmp.path().join("metrics.token");
    std::fs::write(&token_file, format!("{METRICS_TOKEN}\n")).unwrap();
    let metrics_port = free_port();
    let server = ServerProcess::start(
        &data,
        &["--metrics-listen", &format!("127.0.0.1:{metrics_port}"), "--metrics-token-file", token_file.to_str().unwrap()],
        &[],
    );
    let metrics_addr = format!("http://127.0.0.1:{metrics_port}");
    let http = reqwest::Client::new();
    // The metrics listener is bound just after the API's, which is what start() waited for.
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, _) = scrape(&http, &metrics_addr, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body, nosniff) = scrape(&http, &metrics_addr, Some(METRICS_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(nosniff.as_deref(), Some("nosniff"));
    drop(server);

    // Both ways at once, or a short token: the server refuses to start, and says why.
    for (env, file) in [(METRICS_TOKEN, token_file.to_str().unwrap()), ("short", "")] {
        let mut cmd = tw();
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir", data.to_str().unwrap()])
            .env("TW_METRICS_TOKEN", env);
        if !file.is_empty() {
            cmd.args(["--metrics-token-file", file]);
        }
        let o = cmd.output().unwrap();
        assert!(!o.status.success());
        assert!(stderr(&o).contains("metrics token"), "{}", stderr(&o));
    }
}
