//! Rate limits through the binary: a source's `rate_limit` set, shown and cleared with the CLI,
//! and the `tw-cli serve` flags of the failed-authentication budget, whose flood logs once.

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "rate-limit-secret-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_shows_and_clears_a_rate_limit() {
    let app = TestApp::spawn().await;
    let (url, key) = (app.base.clone(), app.admin_key.clone());
    let run = move |args: Vec<&'static str>| {
        let (url, key) = (url.clone(), key.clone());
        tokio::task::spawn_blocking(move || cli(&url, Some(&key), &args))
    };
    let v = ok_json(
        run(vec!["webhook", "add", "edr", "--secret", SECRET, "--rate-limit", "0.5", "--rate-burst", "4", "-o", "json"]).await.unwrap(),
    );
    assert_eq!(v["rate_limit"], json!({"per_second": 0.5, "burst": 4}), "{v}");
    let shown = ok(run(vec!["webhook", "show", "edr"]).await.unwrap());
    assert!(shown.lines().any(|l| l.starts_with("rate_limit") && l.ends_with("0.5/s, burst 4")), "{shown}");
    let v = ok_json(run(vec!["webhook", "update", "edr", "--rate-limit", "20", "-o", "json"]).await.unwrap());
    assert_eq!(v["rate_limit"], json!({"per_second": 20.0, "burst": 20}), "the burst defaults to a second's worth: {v}");
    let v = ok_json(run(vec!["webhook", "update", "edr", "--no-rate-limit", "-o", "json"]).await.unwrap());
    assert_eq!(v["rate_limit"], Value::Null, "{v}");
    let shown = ok(run(vec!["webhook", "show", "edr"]).await.unwrap());
    assert!(shown.lines().any(|l| l.starts_with("rate_limit") && l.ends_with("none")), "{shown}");
    // Mistakes are one clear line.
    fails_with(run(vec!["webhook", "update", "edr", "--rate-limit", "0"]).await.unwrap(), &["rate_limit.per_second"]);
    fails(run(vec!["webhook", "update", "edr", "--rate-burst", "3"]).await.unwrap(), &["--rate-limit"]);
    fails(run(vec!["webhook", "update", "edr", "--rate-limit", "1", "--no-rate-limit"]).await.unwrap(), &["--no-rate-limit"]);
}

/// The real binary: the `tw-cli serve` flags, and one `auth` log line per throttled address per
/// episode however long the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_flags_set_the_failure_budget_and_a_flood_logs_once() {
    let (_tmp, data) = workdir();
    let admin = new_key(&data, "admin");
    let server = ServerProcess::start(
        &data,
        &["--auth-failure-burst", "3", "--auth-failure-per-minute", "1", "--trusted-proxy", "127.0.0.1/32"],
        &[("RUST_LOG", "info")],
    );
    let http = reqwest::Client::new();
    let url = server.url.clone();
    let (s, v) = into_json(
        http.post(format!("{url}/api/webhooks"))
            .bearer_auth(&admin)
            .json(&json!({"source": "edr", "secret": SECRET}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let mut statuses = Vec::new();
    for i in 0..40 {
        let body = alert(&format!("flood-{i}"));
        let ts = now();
        let resp = http
            .post(format!("{url}/api/webhooks/edr"))
            .header("x-forwarded-for", "203.0.113.77")
            .header("x-webhook-timestamp", ts.to_string())
            .header("x-webhook-signature", signature("forged-secret-0123456789", ts, body.as_bytes()))
            .body(body)
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 37, "{statuses:?}");
    // The log line is written as the first refusal is answered: it is there by now.
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("too many failed authentications")).collect();
    assert_eq!(lines.len(), 1, "one line per throttling episode:\n{log}");
    assert!(lines[0].contains("auth:") && lines[0].contains("203.0.113.77"), "{}", lines[0]);
    let metrics = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tw_auth_failures_total{kind=\"signature\"} 3"), "{metrics}");
    assert!(metrics.contains("tw_rate_limited_total{reason=\"auth_failures\"} 37"), "{metrics}");
}
