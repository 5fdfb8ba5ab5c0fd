//! Metrics: exact counters after known deliveries, every metric the shipped dashboard and alert
//! rules use exists in a live `/metrics`, and nothing secret leaks into it.

use crate::support::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

/// `name{sorted labels}` -> value, from the text exposition format.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let key = match series.split_once('{') {
            Some((name, rest)) => {
                let mut labels: Vec<String> =
                    rest.trim_end_matches('}').split("\",").map(|l| format!("{}\"", l.trim_end_matches('"'))).collect();
                labels.sort();
                format!("{name}{{{}}}", labels.join(","))
            }
            None => series.to_string(),
        };
        out.insert(key, value.parse().unwrap_or(f64::NAN));
    }
    out
}

#[tokio::test]
async fn counters_match_known_deliveries_exactly() {
    let app = TestApp::spawn().await;
    app.add_source(json!({"source": "mail", "secret": "mail-secret-AAA"})).await;
    app.add_source(json!({"source": "edr", "secret": "edr-secret-BBB"})).await;
    let body = r#"{"event_type":"security_alert","data":{"alert_id":"a-1","severity":"high"}}"#;
    assert_eq!(app.deliver("mail", "mail-secret-AAA", body).await.0, 201);
    assert_eq!(app.deliver("mail", "mail-secret-AAA", body).await.0, 200); // duplicate
    assert_eq!(app.deliver("mail", "wrong-secret-123", body).await.0, 401);
    assert_eq!(app.deliver_at("mail", "mail-secret-AAA", r#"{"event_type":"x"}"#, now() - 3600).await.0, 401);
    assert_eq!(app.deliver("edr", "edr-secret-BBB", r#"{"event_type":"y","data":{"severity":"low"}}"#).await.0, 201);
    for name in ["nope", "also-nope", "Not%20Valid"] {
        assert_eq!(app.deliver(name, "x-secret-123", body).await.0, 404);
    }
    let text = app.metrics_text().await;
    let m = parse_metrics(&text);
    let get = |k: &str| m.get(k).copied().unwrap_or_else(|| panic!("missing {k} in\n{text}"));
    assert_eq!(get(r#"webhook_received_total{source="mail"}"#), 4.0);
    assert_eq!(get(r#"webhook_received_total{source="edr"}"#), 1.0);
    assert_eq!(get(r#"webhook_received_total{source="_unregistered"}"#), 3.0);
    assert_eq!(get(r#"webhook_errors_total{code="invalid_signature",source="mail"}"#), 1.0);
    assert_eq!(get(r#"webhook_errors_total{code="timestamp_expired",source="mail"}"#), 1.0);
    assert_eq!(get(r#"webhook_errors_total{code="unknown_source",source="_unregistered"}"#), 3.0);
    assert_eq!(get(r#"webhook_duplicates_total{source="mail"}"#), 1.0);
    assert_eq!(get(r#"incidents_created_total{severity="high",source="mail"}"#), 1.0);
    assert_eq!(get(r#"incidents_created_total{severity="low",source="edr"}"#), 1.0);
    assert_eq!(get(r#"webhook_request_duration_seconds_count{source="mail",status="401"}"#), 2.0);
    // Senders cannot mint series: the unknown names appear nowhere.
    assert!(!text.contains("also-nope") && !text.contains("Not Valid"), "{text}");
    assert!(get("store_commit_batch_size_count") >= 3.0);
    // No secret or signature in the exposition.
    for secret in ["mail-secret-AAA", "edr-secret-BBB", "wrong-secret-123", "sha256="] {
        assert!(!text.contains(secret), "{secret} leaked into /metrics");
    }
}

/// Metric families named in a file: identifiers with our prefixes, without histogram suffixes.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts = ["webhook_", "incidents_", "triage_", "store_", "tw_build"].iter().any(|p| text[i..].starts_with(p));
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts && boundary {
            let end = text[i..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(text.len(), |e| i + e);
            let name = &text[i..end];
            let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            out.insert(family.to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

#[tokio::test]
async fn every_metric_in_the_dashboard_and_alerts_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let dashboard = std::fs::read_to_string(root.join("grafana/tw-webhooks.json")).unwrap();
    let alerts = std::fs::read_to_string(root.join("prometheus/alerts.yml")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is valid JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| !p.is_empty()));
    let mut wanted = referenced(&dashboard);
    wanted.extend(referenced(&alerts));
    assert!(wanted.contains("webhook_received_total") && wanted.contains("webhook_errors_total"), "{wanted:?}");

    // Traffic that makes every series appear: a sync incident, an error, a duplicate, an async
    // event, and an auto-triaged incident.
    let app = TestApp::spawn().await;
    app.add_source(json!({"source": "mail", "secret": "mail-secret-AAA", "auto_triage": true, "playbook": "phishing_triage"})).await;
    app.add_source(json!({"source": "bulk", "secret": "bulk-secret-CCC", "mode": "async"})).await;
    let body = r#"{"event_type":"security_alert","data":{"alert_id":"a-1","severity":"high"}}"#;
    assert_eq!(app.deliver("mail", "mail-secret-AAA", body).await.0, 201);
    assert_eq!(app.deliver("mail", "mail-secret-AAA", body).await.0, 200);
    assert_eq!(app.deliver("mail", "nope-nope-nope", body).await.0, 401);
    assert_eq!(app.deliver("bulk", "bulk-secret-CCC", body).await.0, 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let text = loop {
        let text = app.metrics_text().await;
        if text.contains("triage_jobs_total{") || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let live: BTreeSet<String> = parse_metrics(&text)
        .keys()
        .map(|k| {
            let name = k.split('{').next().unwrap();
            ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name).to_string()
        })
        .collect();
    let missing: Vec<&String> = wanted.iter().filter(|w| !live.contains(*w)).collect();
    assert!(missing.is_empty(), "referenced but not exported: {missing:?}\nlive: {live:?}");
}

#[tokio::test]
async fn metrics_can_move_to_their_own_address() {
    let port = free_port();
    let app = TestApp::spawn_with(|cfg| cfg.metrics_listen = Some(format!("127.0.0.1:{port}").parse().unwrap())).await;
    let on_api = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(on_api.status(), 404);
    let own = app.http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap();
    assert_eq!(own.status(), 200);
    assert!(own.text().await.unwrap().contains("tw_build_info"));
}
