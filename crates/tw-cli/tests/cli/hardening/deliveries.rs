//! What the CLI shows of stored deliveries: a refused-request flood as a few samples and one
//! aggregate line with its count, and a sender's `X-Request-Id` copied onto several deliveries
//! (each findable by its own stored id).

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "deliveries-secret";
/// Generous: the flush of counted refusals runs every second, pruning as configured.
const DEADLINE: Duration = Duration::from_secs(60);

/// Requests a listing stands for: one per row, or an aggregate row's count.
fn requests_in(rows: &[Value]) -> u64 {
    rows.iter().map(|d| d["refused_count"].as_u64().unwrap_or(1)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_flood_stores_a_few_rows_and_counts_the_rest() {
    // The per-address failure limit is off: an attacker spread over many addresses never meets
    // it, and the storage bound must hold all the same.
    let app = TestApp::spawn_with(|cfg| cfg.limits.auth_failure_per_minute = 0).await;
    app.add_source(json!({"source": "mail", "secret": SECRET})).await;
    const FLOOD: usize = 2_000;
    let started = chrono::Utc::now();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, base, sent) = (app.http.clone(), app.base.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < FLOOD {
                let (s, _) = post_signed(&http, &base, "mail", "not-the-secret", now(), alert("forged")).await;
                statuses.push(s.as_u16());
            }
            statuses
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.extend(t.await.unwrap());
    }
    assert_eq!(statuses.len(), FLOOD);
    assert!(statuses.iter().all(|s| *s == 401), "every forged delivery is refused");

    // A real delivery after the flood.
    let (status, body, _, own) = deliver_with_id(&app, "mail", SECRET, &alert("real-one"), None).await;
    assert_eq!(status, 201, "{body}");
    let number = body["incident_number"].as_str().unwrap().to_string();

    // Every refused request is accounted for, in a handful of rows.
    let rows = eventually("the flood counted in full", DEADLINE, || async {
        let rows = events(&app, "mail").await;
        let refused: Vec<Value> = rows.iter().filter(|d| d["status"] == 401).cloned().collect();
        if requests_in(&refused) == FLOOD as u64 && rows.first().is_some_and(|d| d["request_id"] == own.as_str()) {
            Ok(rows)
        } else {
            Err(format!("{} rows standing for {} refused requests", rows.len(), requests_in(&refused)))
        }
    })
    .await;
    let minutes = (chrono::Utc::now() - started).num_minutes() as usize + 2;
    // 5 samples and one aggregate row per minute (the flood may straddle a minute edge).
    assert!(rows.len() <= 1 + 6 * minutes, "{} rows for {FLOOD} refused requests: {rows:#?}", rows.len());
    // The real delivery is at the top of the listing, not buried.
    assert_eq!(rows[0]["status"], 201, "{:#?}", rows[0]);
    assert_eq!(rows[0]["incident_number"], number.as_str());
    let aggregates: Vec<&Value> = rows.iter().filter(|d| d["refused_count"].is_u64()).collect();
    assert!(!aggregates.is_empty(), "{rows:#?}");
    for a in &aggregates {
        assert_eq!(a["code"], "invalid_signature", "{a}");
        assert!(a["last_received_at"].as_str().unwrap() >= a["received_at"].as_str().unwrap(), "{a}");
        assert!(a["sender_request_id"].is_null(), "an aggregate row keeps no sender's id: {a}");
    }
    // The source's error count still counts every refused request.
    let (_, src) = app.admin(Method::GET, "/api/webhooks/mail", None).await;
    assert_eq!(src["error_count"], FLOOD as u64, "{src}");

    // The CLI shows the real delivery first and the aggregate as one line with its count.
    let out = cli(&app.base, Some(&app.read_key), &["webhook", "events", "mail"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", show(&out));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("SENDER ID"), "{text}");
    assert!(lines[1].contains(&own) && lines[1].contains(&number), "{text}");
    let biggest = aggregates.iter().map(|a| a["refused_count"].as_u64().unwrap()).max().unwrap();
    let grouped = if biggest >= 1000 { format!("{},{:03}", biggest / 1000, biggest % 1000) } else { biggest.to_string() };
    assert!(text.contains(&format!("({grouped} invalid_signature refused ")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_request_id_gets_two_stored_ids_both_findable() {
    let app = TestApp::spawn().await;
    app.add_source(json!({"source": "edr", "secret": SECRET})).await;

    // Two real deliveries carrying the same X-Request-Id.
    let (s1, b1, echo1, own1) = deliver_with_id(&app, "edr", SECRET, &alert("first"), Some("shared-id-1")).await;
    let (s2, b2, echo2, own2) = deliver_with_id(&app, "edr", SECRET, &alert("second"), Some("shared-id-1")).await;
    assert_eq!((s1, s2), (201, 201), "{b1} {b2}");
    // The sender's id is echoed, as before; the stored ids are the server's, distinct.
    assert_eq!((echo1.as_str(), echo2.as_str()), ("shared-id-1", "shared-id-1"));
    assert!(own1.starts_with("req_") && own2.starts_with("req_") && own1 != own2, "{own1} {own2}");
    // A forger copies the sender's id and a server id.
    let forged = post_forged(&app, "edr", "shared-id-1").await;
    assert_eq!(forged, 401);
    assert_eq!(post_forged(&app, "edr", &own1).await, 401);

    // Each is found by its own id, with its own incident.
    for (own, body) in [(&own1, &b1), (&own2, &b2)] {
        let d = eventually("the delivery recorded", DEADLINE, || async {
            let (status, d) = app.admin(Method::GET, &format!("/api/deliveries/{own}"), None).await;
            if status == 200 { Ok(d) } else { Err(d.to_string()) }
        })
        .await;
        assert_eq!(d["request_id"], own.as_str(), "{d}");
        assert_eq!(d["sender_request_id"], "shared-id-1", "{d}");
        assert_eq!(d["incident_number"], body["incident_number"], "{d}");
        assert_eq!(d["verified"], true, "{d}");
        assert!(d.get("other_request_ids").is_none(), "looked up by its own id: {d}");
        // The incident names the delivery that made it by its unique id.
        let (_, inc) = app.admin(Method::GET, &format!("/api/incidents/{}", body["incident_number"].as_str().unwrap()), None).await;
        assert_eq!(inc["request_id"], own.as_str(), "{inc}");
    }
    // By the sender's id: the newest verified one, the others named.
    let d = eventually("all three carrying shared-id-1 recorded", DEADLINE, || async {
        let (_, d) = app.admin(Method::GET, "/api/deliveries/shared-id-1", None).await;
        if d["other_request_ids"].as_array().is_some_and(|o| o.len() == 2) { Ok(d) } else { Err(d.to_string()) }
    })
    .await;
    assert_eq!(d["request_id"], own2.as_str(), "the newest verified delivery wins over a newer forged one: {d}");
    let others = d["other_request_ids"].as_array().unwrap();
    assert!(others[0] != own1.as_str() && others[1] == own1.as_str(), "newest first, the forged one then the first: {d}");
    // The forged one is listed with the sender's id, unverified, under its own server id.
    let rows = events(&app, "edr").await;
    let ids: std::collections::BTreeSet<&str> = rows.iter().map(|r| r["request_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), rows.len(), "stored request ids are unique: {rows:#?}");
    assert_eq!(rows.iter().filter(|r| r["sender_request_id"] == "shared-id-1").count(), 3, "{rows:#?}");
    // The forger who copied a server id does not shadow that delivery.
    let (_, d) = app.admin(Method::GET, &format!("/api/deliveries/{own1}"), None).await;
    assert_eq!((d["status"].as_u64(), d["verified"].as_bool()), (Some(201), Some(true)), "{d}");

    // The CLI shows both ids.
    let out = cli(&app.base, Some(&app.read_key), &["webhook", "events", "get", &own1]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", show(&out));
    assert!(text.lines().any(|l| l.starts_with("request_id ") && l.ends_with(&own1)), "{text}");
    assert!(text.lines().any(|l| l.starts_with("sender_request_id ") && l.ends_with("shared-id-1")), "{text}");
    let out = cli(&app.base, Some(&app.read_key), &["webhook", "events", "get", "shared-id-1"]);
    let text = stdout(&out);
    assert!(text.lines().any(|l| l.starts_with("same_sender_id ") && l.contains(&own1)), "{text}");
}

/// A delivery signed with the wrong secret and the given X-Request-Id; its status.
async fn post_forged(app: &TestApp, source: &str, rid: &str) -> u16 {
    deliver_with_id(app, source, "not-the-secret", &alert("forged"), Some(rid)).await.0
}
