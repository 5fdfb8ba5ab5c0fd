//! `POST /api/webhooks/{source}/reprocess`: stored events normalized again after a source's
//! mapping changed; incidents updated in place, never duplicated; dead letters ingested once.

use super::*;

const SECRET: &str = "reprocess-secret-0123456789";

/// A generic payload whose own id and title the default reading takes, carrying a vendor block a
/// mapping can read instead.
fn payload(n: u32, uid: &str) -> String {
    json!({"event_type": "security_alert", "data": {"alert_id": format!("g-{n}"), "severity": "low",
           "details": {"title": format!("old title {n}")}},
           "alert": {"name": format!("new title {n}"), "uid": uid}})
    .to_string()
}

async fn reprocess(app: &TestApp, source: &str, body: Value) -> Value {
    let (status, v) = app.admin(Method::POST, &format!("/api/webhooks/{source}/reprocess"), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

/// Follows `next` to the end, summing the counts of every call.
async fn reprocess_all(app: &TestApp, source: &str, mut body: Value) -> (Value, u32) {
    let mut total = json!({"incidents": {"scanned": 0, "updated": 0, "unchanged": 0, "conflicts": 0, "failed": 0},
                           "dead_letters": {"scanned": 0, "created": 0, "duplicates": 0, "still_failing": 0}});
    let mut calls = 0;
    loop {
        let v = reprocess(app, source, body.clone()).await;
        calls += 1;
        for group in ["incidents", "dead_letters"] {
            for (k, n) in v[group].as_object().unwrap() {
                total[group][k] = json!(total[group][k].as_u64().unwrap() + n.as_u64().unwrap());
            }
        }
        match v.get("next") {
            Some(next) => {
                body["cursor"] = next.clone();
                body["since"] = v["since"].clone();
                if body["since"].is_null() {
                    body.as_object_mut().unwrap().remove("since");
                }
            }
            None => return (total, calls),
        }
        assert!(calls < 50, "no end: {v}");
    }
}

#[tokio::test]
async fn a_mapping_change_updates_incidents_in_place_and_never_duplicates() {
    let app = TestApp::spawn().await;
    add(&app, "edr", SECRET, json!({})).await;
    let mut numbers = Vec::new();
    // The third alert's vendor id is the second's: under the mapping they collide.
    for (n, uid) in [(1, "u-1"), (2, "u-2"), (3, "u-2")] {
        let (status, v) = app.deliver("edr", SECRET, &payload(n, uid)).await;
        numbers.push(assert_accepted(status, &v));
    }
    let (status, v) =
        app.admin(Method::PATCH, "/api/webhooks/edr", Some(json!({"mapping": {"title": "/alert/name", "alert_id": "/alert/uid"}}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");

    // Two events a call: the CLI's loop, by hand.
    let (counts, calls) = reprocess_all(&app, "edr", json!({"since": "1h", "limit": 2})).await;
    assert_eq!(counts["incidents"], json!({"scanned": 3, "updated": 2, "unchanged": 0, "conflicts": 1, "failed": 0}), "{counts}");
    assert_eq!(counts["dead_letters"]["scanned"], 0);
    assert!(calls >= 2, "paged: {calls} calls");

    let list = get_ok(&app, "/api/incidents?source=edr").await;
    assert_eq!(list["meta"]["total"], 3, "no incident added: {list}");
    for (n, (id, number)) in numbers.iter().enumerate() {
        let inc = get_ok(&app, &format!("/api/incidents/{id}")).await;
        assert_eq!(inc["incident_number"], number.as_str(), "same number");
        assert_eq!(inc["status"], "open");
        assert_eq!(inc["delivery_count"], 1);
        let want = if n < 2 { format!("new title {}", n + 1) } else { "security_alert: old title 3".to_string() };
        assert_eq!(inc["title"], want.as_str(), "{inc}");
    }

    // The conflict is named, in a one-shot call too; nothing changes any more.
    let again = reprocess(&app, "edr", json!({})).await;
    assert_eq!(again["incidents"], json!({"scanned": 3, "updated": 0, "unchanged": 2, "conflicts": 1, "failed": 0}), "{again}");
    assert_eq!(again["conflicting"], json!([{"incident_number": numbers[2].1, "held_by": numbers[1].1, "external_id": "u-2"}]));
    assert!(again.get("next").is_none(), "{again}");

    // The dedupe key followed the new alert id: a redelivery under it is the same incident.
    let (status, dup) = app.deliver("edr", SECRET, &payload(9, "u-1")).await;
    assert_eq!(status, StatusCode::OK, "{dup}");
    assert_eq!(dup["incident_number"], numbers[0].1.as_str());

    // `since` excludes older incidents; each call is audited.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    assert_eq!(reprocess(&app, "edr", json!({"since": later})).await["incidents"]["scanned"], 0);
    let audit = get_ok(&app, "/api/audit?action=source.reprocess").await;
    assert!(audit["data"].as_array().unwrap().len() >= 3, "{audit}");
}

#[tokio::test]
async fn bad_requests_are_refused_by_field() {
    let app = TestApp::spawn().await;
    add(&app, "edr", SECRET, json!({})).await;
    let (status, v) = app.admin(Method::POST, "/api/webhooks/nope/reprocess", Some(json!({}))).await;
    assert_error(status, &v, 404, "unknown_source");
    let (status, v) = app
        .admin(
            Method::POST,
            "/api/webhooks/edr/reprocess",
            Some(json!({"since": "soon", "cursor": "x", "limit": 0, "dead_letters": "maybe", "extra": 1})),
        )
        .await;
    assert_error(status, &v, 422, "validation_error");
    let mut fields = detail_fields(&v);
    fields.sort();
    assert_eq!(fields, ["cursor", "dead_letters", "extra", "limit", "since"]);
    let (status, v) = app.admin(Method::POST, "/api/webhooks/edr/reprocess", Some(json!({"cursor": "dead-letters:"}))).await;
    assert_error(status, &v, 422, "validation_error");
    let (status, v) = app.with_key(&app.read_key.clone(), Method::POST, "/api/webhooks/edr/reprocess", Some(json!({}))).await;
    assert_error(status, &v, 403, "forbidden");
}

/// A dead letter (here: an event queued for a source deleted before a worker took it) becomes an
/// incident once the source exists again, exactly once.
#[tokio::test]
async fn dead_letters_that_now_normalize_become_incidents_once() {
    let app = TestApp::spawn_with(|cfg| cfg.queue_workers = 0).await;
    add(&app, "edr", SECRET, json!({"mode": "async"})).await;
    let body = generic_with_id("dl-1");
    let (status, v) = app.deliver("edr", SECRET, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let (status, v) = app.admin(Method::DELETE, "/api/webhooks/edr", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    let app = TestApp::spawn_in(app.stop().await, |_| {}).await;
    poll(&app, "/api/dead-letters?source=edr", "dead-lettered", |v| v["meta"]["total"] == 1).await;

    add(&app, "edr", SECRET, json!({"auto_triage": true, "playbook": "malware_triage"})).await;
    // Without `dead_letters`, they are not touched.
    assert_eq!(reprocess(&app, "edr", json!({})).await["dead_letters"]["scanned"], 0);
    let v = reprocess(&app, "edr", json!({"dead_letters": true})).await;
    assert_eq!(v["dead_letters"], json!({"scanned": 1, "created": 1, "duplicates": 0, "still_failing": 0}), "{v}");
    assert_eq!(get_ok(&app, "/api/dead-letters?source=edr").await["meta"]["total"], 0);
    let list = get_ok(&app, "/api/incidents?source=edr").await;
    assert_eq!(list["meta"]["total"], 1, "{list}");
    assert_eq!(list["data"][0]["title"], "security_alert: alert dl-1");
    // Auto-triage applies as to a live delivery.
    let id = list["data"][0]["id"].as_str().unwrap().to_string();
    poll(&app, &format!("/api/incidents/{id}"), "auto-triaged", |v| !v["triage"].is_null()).await;

    // Again: nothing left to ingest; the same alert delivered live is a duplicate of it.
    let v = reprocess(&app, "edr", json!({"dead_letters": true})).await;
    assert_eq!(v["dead_letters"]["scanned"], 0, "{v}");
    assert_eq!(v["incidents"]["unchanged"], 1, "{v}");
    let (status, dup) = app.deliver("edr", SECRET, &body).await;
    assert_eq!(status, StatusCode::OK, "{dup}");
    assert_eq!(dup["incident_number"], list["data"][0]["incident_number"]);
    assert_eq!(get_ok(&app, "/api/incidents?source=edr").await["meta"]["total"], 1);
}
