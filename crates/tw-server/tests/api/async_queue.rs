//! Queued intake: async sources, saturation fallback, the queue status endpoint, dead letters,
//! and queued events surviving a restart.

use super::*;

const SECRET: &str = "queue-secret-0123456789";

/// Checks a 202 answer and returns the queue id.
fn assert_queued(status: StatusCode, v: &Value) -> String {
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["message", "queue_id", "status"], "{v}");
    assert_eq!(v["status"], "queued");
    assert_eq!(v["message"], "Event queued for processing");
    let id = v["queue_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("queue-") && id.len() > "queue-".len(), "{id}");
    id
}

/// Polls the queue entry until it is no longer pending.
async fn wait_done(app: &TestApp, queue_id: &str) -> Value {
    poll(app, &format!("/api/webhooks/queue/{queue_id}"), "queued event finished", |v| v["status"] != "pending").await
}

#[tokio::test]
async fn async_source_queues_then_processes() {
    let app = TestApp::spawn().await;
    add(&app, "siem", SECRET, json!({"mode": "async"})).await;
    let (s, v) = app.deliver("siem", SECRET, SPLUNK).await;
    let qid = assert_queued(s, &v);

    let entry = wait_done(&app, &qid).await;
    assert_eq!(entry["status"], "processed", "{entry}");
    assert_eq!(entry["queue_id"], qid.as_str());
    assert_eq!(entry["source"], "siem");
    let id = entry["incident_id"].as_str().unwrap_or_else(|| panic!("no incident_id: {entry}")).to_string();
    uuid_like(&id);
    let (y, _) = parse_number(&entry["incident_number"]);
    assert_eq!(y, year());
    let inc = get_ok(&app, &format!("/api/incidents/{id}")).await;
    assert_eq!(inc["incident_number"], entry["incident_number"]);
    assert_eq!(inc["title"], "Failed Login Alert");
    assert_eq!(raw_bytes(&app, &id).await, SPLUNK.as_bytes());

    // The read key may look at queue entries; no key may not; an unknown id is 404.
    let (s, v) = app.with_key(&app.read_key.clone(), Method::GET, &format!("/api/webhooks/queue/{qid}"), None).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = app.with_key("", Method::GET, &format!("/api/webhooks/queue/{qid}"), None).await;
    assert_error(s, &v, 401, "unauthorized");
    let (s, v) = app.admin(Method::GET, "/api/webhooks/queue/queue-doesnotexist", None).await;
    assert_error(s, &v, 404, "not_found");

    // The same alert queued again is recognised as a duplicate when processed.
    let (s, v) = app.deliver("siem", SECRET, SPLUNK).await;
    let qid2 = assert_queued(s, &v);
    assert_ne!(qid2, qid);
    let entry2 = wait_done(&app, &qid2).await;
    assert_eq!(entry2["status"], "processed", "{entry2}");
    assert_eq!(entry2["incident_id"], id.as_str());
    assert_eq!(entry2["duplicate"], true, "{entry2}");
    let inc = get_ok(&app, &format!("/api/incidents/{id}")).await;
    assert_eq!(inc["delivery_count"], 2);
}

#[tokio::test]
async fn async_source_still_verifies_before_queueing() {
    let app = TestApp::spawn_with(|cfg| cfg.queue_workers = 0).await;
    add(&app, "siem", SECRET, json!({"mode": "async"})).await;
    let (s, v) = app.deliver("siem", "wrong-secret-999999", SPLUNK).await;
    assert_error(s, &v, 401, "invalid_signature");
    let ts = now();
    let (s, v) = post_intake(&app, "siem", &signed_headers(SECRET, ts, b"{oops"), "{oops").await;
    assert_error(s, &v, 400, "invalid_payload");
}

#[tokio::test]
async fn pending_without_workers_then_processed_after_restart() {
    let app = TestApp::spawn_with(|cfg| cfg.queue_workers = 0).await;
    add(&app, "siem", SECRET, json!({"mode": "async"})).await;
    let (s, v) = app.deliver("siem", SECRET, SPLUNK).await;
    let qid = assert_queued(s, &v);
    let (s, v) = app.deliver("siem", SECRET, DEFENDER).await;
    let qid2 = assert_queued(s, &v);

    // Nothing processes it: pending, and no incident.
    for _ in 0..3 {
        let entry = get_ok(&app, &format!("/api/webhooks/queue/{qid}")).await;
        assert_eq!(entry["status"], "pending", "{entry}");
        assert!(entry.get("incident_id").is_none(), "{entry}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(get_ok(&app, "/api/incidents").await["meta"]["total"], 0);

    let dir = app.stop().await;
    let app = TestApp::spawn_in(dir, |_| {}).await;
    for (q, title) in [(&qid, "Failed Login Alert"), (&qid2, "Urgent Action Required")] {
        let entry = wait_done(&app, q).await;
        assert_eq!(entry["status"], "processed", "{entry}");
        let id = entry["incident_id"].as_str().unwrap();
        let inc = get_ok(&app, &format!("/api/incidents/{id}")).await;
        assert_eq!(inc["title"], title);
    }
    assert_eq!(get_ok(&app, "/api/incidents").await["meta"]["total"], 2);
}

#[tokio::test]
async fn saturated_sync_intake_queues_instead_of_failing() {
    let app = TestApp::spawn_with(|cfg| cfg.max_inflight = 0).await;
    add(&app, "edr", SECRET, json!({})).await;
    let mut qids = Vec::new();
    for i in 0..3 {
        let (s, v) = app.deliver("edr", SECRET, &generic_with_id(&format!("sat-{i}"))).await;
        qids.push(assert_queued(s, &v));
    }
    let mut numbers = Vec::new();
    for q in &qids {
        let entry = wait_done(&app, q).await;
        assert_eq!(entry["status"], "processed", "{entry}");
        let id = entry["incident_id"].as_str().unwrap();
        let inc = get_ok(&app, &format!("/api/incidents/{id}")).await;
        assert_eq!(inc["source"], "edr");
        numbers.push(parse_number(&entry["incident_number"]).1);
    }
    numbers.sort();
    assert_eq!(numbers, [1, 2, 3]);
}

#[tokio::test]
async fn queued_event_of_a_deleted_source_is_dead_lettered() {
    let app = TestApp::spawn_with(|cfg| cfg.queue_workers = 0).await;
    add(&app, "gone", SECRET, json!({"mode": "async"})).await;
    let body = "{\"event_type\":\"security_alert\",  \"data\":{\"alert_id\":\"dl-1\"}}";
    let (s, v) = app.deliver("gone", SECRET, body).await;
    let qid = assert_queued(s, &v);
    let (s, v) = app.admin(Method::DELETE, "/api/webhooks/gone", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");

    let dir = app.stop().await;
    let app = TestApp::spawn_in(dir, |_| {}).await;
    let entry = wait_done(&app, &qid).await;
    assert_eq!(entry["status"], "failed", "{entry}");
    let err = entry["error"].as_str().unwrap_or_else(|| panic!("no error: {entry}"));
    assert!(err.contains("gone"), "the reason names the source: {err}");
    assert!(entry.get("incident_id").is_none());

    let letters = get_ok(&app, "/api/dead-letters").await;
    assert_eq!(letters["meta"]["total"], 1, "{letters}");
    let letter = &letters["data"][0];
    assert_eq!(letter["source"], "gone");
    assert_eq!(letter["queue_id"], qid.as_str());
    assert_eq!(letter["raw_payload"], body);
    assert!(letter["reason"].as_str().is_some_and(|r| r.contains("gone")), "{letter}");
    // Filter by source.
    let letters = get_ok(&app, "/api/dead-letters?source=other").await;
    assert_eq!(letters["meta"]["total"], 0);
    let letters = get_ok(&app, "/api/dead-letters?source=gone").await;
    assert_eq!(letters["meta"]["total"], 1);
    assert_eq!(get_ok(&app, "/api/incidents").await["meta"]["total"], 0);
}
