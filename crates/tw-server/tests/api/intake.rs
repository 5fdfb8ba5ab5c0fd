//! `POST /api/webhooks/:source`: success shapes, every refusal, idempotency.

use super::*;

const SECRET: &str = "intake-secret-0123456789";

async fn app_with_source(name: &str) -> TestApp {
    let app = TestApp::spawn().await;
    add(&app, name, SECRET, json!({})).await;
    app
}

#[tokio::test]
async fn generic_payload_creates_incident_readable_by_id_and_number() {
    let app = app_with_source("email-gateway").await;
    let (status, v) = app.deliver("email-gateway", SECRET, GENERIC).await;
    let (id, number) = assert_accepted(status, &v);

    for key in [&id, &number] {
        let inc = get_ok(&app, &format!("/api/incidents/{key}")).await;
        assert_eq!(inc["id"], id.as_str());
        assert_eq!(inc["incident_number"], number.as_str());
        assert_eq!(inc["source"], "email-gateway");
        assert_eq!(inc["format"], "generic");
        assert_eq!(inc["title"], "security_alert: Suspicious login");
        assert_eq!(inc["severity"], "high");
        assert_eq!(inc["external_id"], "alert-123");
        assert_eq!(inc["status"], "open");
        assert_eq!(inc["delivery_count"], 1);
        assert!(has_entity(&inc, "ip", "203.0.113.7"), "{inc}");
        assert!(has_entity(&inc, "email", "alice@company.com"), "{inc}");
        assert_eq!(inc["event_time"], "2024-01-15T10:00:00Z");
        assert_eq!(inc["raw_payload"], serde_json::from_str::<Value>(GENERIC).unwrap());
    }
    // The read-only key reads incidents too.
    let (status, inc) = app.with_key(&app.read_key.clone(), Method::GET, &format!("/api/incidents/{number}"), None).await;
    assert_eq!(status, 200, "{inc}");
    assert_eq!(inc["id"], id.as_str());
    assert_eq!(raw_bytes(&app, &id).await, GENERIC.as_bytes());
}

#[tokio::test]
async fn defender_payload_is_normalized() {
    let app = app_with_source("m365").await;
    let (status, v) = app.deliver("m365", SECRET, DEFENDER).await;
    let (id, _) = assert_accepted(status, &v);
    let inc = get_ok(&app, &format!("/api/incidents/{id}")).await;
    assert_eq!(inc["format"], "defender");
    assert_eq!(inc["title"], "Urgent Action Required");
    assert_eq!(inc["severity"], "high");
    assert_eq!(inc["external_id"], "AAMkAGI2...");
    assert_eq!(inc["event_type"], "PhishingEmail");
    assert_eq!(inc["event_time"], "2024-01-15T10:00:00Z");
    assert!(has_entity(&inc, "email", "phisher@malicious.com"), "{inc}");
    assert!(has_entity(&inc, "email", "user@company.com"), "{inc}");
    assert_eq!(raw_bytes(&app, &id).await, DEFENDER.as_bytes());
}

#[tokio::test]
async fn crowdstrike_payload_is_normalized() {
    let app = app_with_source("edr").await;
    let (status, v) = app.deliver("edr", SECRET, CROWDSTRIKE).await;
    let (id, number) = assert_accepted(status, &v);
    let inc = get_ok(&app, &format!("/api/incidents/{number}")).await;
    assert_eq!(inc["format"], "crowdstrike");
    assert_eq!(inc["title"], "Malicious File Detected");
    assert_eq!(inc["severity"], "high", "CrowdStrike Severity 4 on the 1-5 scale");
    assert_eq!(inc["vendor_severity"], "4");
    assert_eq!(inc["external_id"], "ldt:abc123");
    assert_eq!(inc["event_time"], "2024-01-15T12:00:00Z", "eventCreationTime is epoch ms");
    assert!(has_entity(&inc, "hostname", "WORKSTATION-01"), "{inc}");
    assert_eq!(raw_bytes(&app, &id).await, CROWDSTRIKE.as_bytes());
}

#[tokio::test]
async fn splunk_payload_is_normalized() {
    let app = app_with_source("siem").await;
    let (status, v) = app.deliver("siem", SECRET, SPLUNK).await;
    let (id, _) = assert_accepted(status, &v);
    let inc = get_ok(&app, &format!("/api/incidents/{id}")).await;
    assert_eq!(inc["format"], "splunk");
    assert_eq!(inc["title"], "Failed Login Alert");
    assert_eq!(inc["severity"], "medium", "documented default: Splunk bodies carry no severity");
    assert_eq!(inc["event_time"], "2024-01-15T12:00:00Z", "trigger_time is epoch s");
    assert!(inc["external_id"].as_str().is_some_and(|s| s.starts_with("splunk:")), "{inc}");
    assert!(has_entity(&inc, "hostname", "server-01"), "{inc}");
    assert_eq!(raw_bytes(&app, &id).await, SPLUNK.as_bytes());
}

#[tokio::test]
async fn raw_payload_is_kept_byte_for_byte() {
    let app = app_with_source("odd").await;
    let body =
        "  {\"event_type\" :\t\"security_alert\" ,\r\n \"data\":{ \"alert_id\":\"raw-1\",\"note\":\"caf\u{e9} \\u00e9 \\/\"  }}\n\n\t ";
    let (status, v) = app.deliver("odd", SECRET, body).await;
    let (id, number) = assert_accepted(status, &v);
    assert_eq!(raw_bytes(&app, &id).await, body.as_bytes());
    assert_eq!(raw_bytes(&app, &number).await, body.as_bytes());
}

#[tokio::test]
async fn unknown_source_is_404_with_spec_message() {
    let app = TestApp::spawn().await;
    let (status, v) = app.deliver("unknown", SECRET, GENERIC).await;
    let msg = assert_error(status, &v, 404, "unknown_source");
    assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");
    assert_eq!(msg, "Webhook source 'unknown' is not registered");
    // Not even a valid source name: still 404 unknown_source.
    let (status, v) = app.deliver("Bad%20Name!", SECRET, GENERIC).await;
    assert_error(status, &v, 404, "unknown_source");
    assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");
    let (status, v) = app.deliver("UPPER", SECRET, GENERIC).await;
    assert_error(status, &v, 404, "unknown_source");
    assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");
}

#[tokio::test]
async fn disabled_source_is_403() {
    let app = app_with_source("edr").await;
    let (status, v) = app.admin(Method::PATCH, "/api/webhooks/edr", Some(json!({"enabled": false}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["enabled"], false);
    let (status, v) = app.deliver("edr", SECRET, GENERIC).await;
    assert_error(status, &v, 403, "source_disabled");
    assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");
    let (status, v) = app.admin(Method::PATCH, "/api/webhooks/edr", Some(json!({"enabled": true}))).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = app.deliver("edr", SECRET, GENERIC).await;
    assert_accepted(status, &v);
}

#[tokio::test]
async fn missing_or_bad_headers_are_401() {
    let app = app_with_source("edr").await;
    let body = GENERIC.as_bytes();
    let ts = now();
    let sig = signature(SECRET, ts, body);
    let ct = ("content-type", "application/json".to_string());

    let (status, v) = post_intake(&app, "edr", &[ct.clone(), ("x-webhook-timestamp", ts.to_string())], body.to_vec()).await;
    assert_error(status, &v, 401, "missing_signature");
    assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");

    let (status, v) = post_intake(&app, "edr", &[ct.clone(), ("x-webhook-signature", sig.clone())], body.to_vec()).await;
    assert_error(status, &v, 401, "missing_timestamp");
    assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");

    for bad_ts in ["abc", "1705320000.5", "-5", "2024-01-15T10:00:00Z"] {
        let sig = signature(SECRET, ts, body);
        let (status, v) = post_intake(
            &app,
            "edr",
            &[ct.clone(), ("x-webhook-timestamp", bad_ts.to_string()), ("x-webhook-signature", sig)],
            body.to_vec(),
        )
        .await;
        assert_error(status, &v, 401, "timestamp_invalid");
        assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");
    }

    // Signed with the wrong secret.
    let (status, v) = app.deliver("edr", "some-other-secret-xyz", GENERIC).await;
    let msg = assert_error(status, &v, 401, "invalid_signature");
    assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");
    assert_eq!(msg, "Webhook signature verification failed");

    // Body changed after signing.
    let tampered = GENERIC.replace("\"high\"", "\"low\"");
    let (status, v) = post_intake(&app, "edr", &signed_headers(SECRET, ts, body), tampered.into_bytes()).await;
    assert_error(status, &v, 401, "invalid_signature");
    assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");

    // Timestamp header changed after signing.
    let mut h = signed_headers(SECRET, ts, body);
    h[1].1 = (ts - 1).to_string();
    let (status, v) = post_intake(&app, "edr", &h, body.to_vec()).await;
    assert_error(status, &v, 401, "invalid_signature");
    assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");

    // Garbage in the signature header.
    let mut h = signed_headers(SECRET, ts, body);
    h[2].1 = "sha256=nothex".into();
    let (status, v) = post_intake(&app, "edr", &h, body.to_vec()).await;
    assert_error(status, &v, 401, "invalid_signature");
    assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");

    // No error body ever contains the secret; nothing was stored.
    let list = get_ok(&app, "/api/incidents").await;
    assert_eq!(list["meta"]["total"], 0, "{list}");
}

#[tokio::test]
async fn timestamp_window_edges() {
    // The server's clock stands still at T (now, so incident numbers carry this year), and every
    // edge is exact.
    let t0 = now();
    let clock = std::sync::Arc::new(tw_server::state::ManualClock::at(t0));
    let c = clock.clone();
    let app = TestApp::spawn_with(move |cfg| cfg.clock = c).await;
    add(&app, "edr", SECRET, json!({})).await;
    let expect = |status: StatusCode, v: &Value, want: Option<&str>| {
        match want {
            None => {
                assert_accepted(status, v);
            }
            Some(code) => {
                assert_error(status, v, 401, code);
            }
        }
        assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");
    };
    for (offset, want) in [
        (-300, None),
        (-301, Some("timestamp_expired")),
        (-3600, Some("timestamp_expired")),
        (0, None),
        (300, None),
        (301, Some("timestamp_invalid")),
        (86_400, Some("timestamp_invalid")),
    ] {
        let (status, v) = app.deliver_at("edr", SECRET, &generic_with_id(&format!("edge{offset}")), t0 + offset).await;
        expect(status, &v, want);
    }
    let (status, v) = app.deliver_at("edr", SECRET, &generic_with_id("old"), t0 - 301).await;
    assert_eq!(assert_error(status, &v, 401, "timestamp_expired"), "Webhook timestamp is too old (>5 minutes)");
    // Time moves on: the same timestamp that was fine is now too old.
    clock.set(t0 + 301);
    let (status, v) = app.deliver_at("edr", SECRET, &generic_with_id("later"), t0).await;
    expect(status, &v, Some("timestamp_expired"));
}

#[tokio::test]
async fn openssl_recipe_header_and_multiple_signatures_are_accepted() {
    let app = app_with_source("email-gateway").await;
    // What `openssl dgst -sha256 -hmac` prints (OpenSSL 3 and 1.1), prefixed with sha256= by the
    // spec's recipe: `sha256=SHA2-256(stdin)= <hex>`.
    let ts = now();
    for (i, label) in ["SHA2-256(stdin)= ", "(stdin)= "].into_iter().enumerate() {
        let body = format!(r#"{{"event_type":"test","data":{{"n":{i}}}}}"#);
        let hex = tw_core::signature::sign(&tw_core::Secret::new(SECRET), &ts.to_string(), body.as_bytes());
        let header = format!("sha256={label}{hex}");
        let (status, v) = post_intake(
            &app,
            "email-gateway",
            &[("content-type", "application/json".into()), ("x-webhook-timestamp", ts.to_string()), ("x-webhook-signature", header)],
            body,
        )
        .await;
        assert_accepted(status, &v);
    }

    // Two comma-separated values (rotation): one wrong, one right, in either order.
    for (i, order) in [true, false].into_iter().enumerate() {
        let body = generic_with_id(&format!("multi-{i}"));
        let good = signature(SECRET, ts, body.as_bytes());
        let bad = signature("the-old-secret-000", ts, body.as_bytes());
        let header = if order { format!("{bad},{good}") } else { format!("{good}, {bad}") };
        let (status, v) = post_intake(
            &app,
            "email-gateway",
            &[("content-type", "application/json".into()), ("x-webhook-timestamp", ts.to_string()), ("x-webhook-signature", header)],
            body,
        )
        .await;
        assert_accepted(status, &v);
    }
    // Two values, neither right.
    let body = generic_with_id("multi-bad");
    let header = format!("{},{}", signature("wrong-one-11111", ts, body.as_bytes()), signature("wrong-two-22222", ts, body.as_bytes()));
    let (status, v) =
        post_intake(&app, "email-gateway", &[("x-webhook-timestamp", ts.to_string()), ("x-webhook-signature", header)], body).await;
    assert_error(status, &v, 401, "invalid_signature");
    assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let app = app_with_source("big").await;
    // 1 MiB + 1 byte, validly signed JSON.
    let filler = "x".repeat(1024 * 1024);
    let body = format!("{{\"event_type\":\"big\",\"data\":{{\"blob\":\"{filler}\"}}}}");
    assert!(body.len() > 1024 * 1024);
    let ts = now();
    let (status, v) = post_intake(&app, "big", &signed_headers(SECRET, ts, body.as_bytes()), body.clone().into_bytes()).await;
    assert_error(status, &v, 413, "payload_too_large");
    assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");

    // Just under 1 MiB is fine.
    let filler = "y".repeat(1024 * 1024 - 100);
    let body = format!("{{\"event_type\":\"big\",\"data\":{{\"blob\":\"{filler}\"}}}}");
    assert!(body.len() <= 1024 * 1024);
    let (status, v) = post_intake(&app, "big", &signed_headers(SECRET, ts, body.as_bytes()), body.into_bytes()).await;
    assert_accepted(status, &v);

    // A per-source smaller limit.
    // Its own secret: the server refuses a secret another source uses.
    add(&app, "small", "intake-small-secret-0123", json!({"max_body_bytes": 100})).await;
    let body = generic_with_id("this-body-is-longer-than-one-hundred-bytes-for-sure");
    assert!(body.len() > 100);
    let (status, v) = post_intake(&app, "small", &signed_headers("intake-small-secret-0123", ts, body.as_bytes()), body.into_bytes()).await;
    let msg = assert_error(status, &v, 413, "payload_too_large");
    assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");
    assert!(msg.contains("100"), "{msg}");
    let body = r#"{"event_type":"tiny","data":{}}"#;
    let (status, v) = app.deliver("small", "intake-small-secret-0123", body).await;
    assert_accepted(status, &v);
}

#[tokio::test]
async fn invalid_json_is_400_only_after_a_valid_signature() {
    let app = app_with_source("edr").await;
    let ts = now();
    let bad = b"{not json".to_vec();
    let (status, v) = post_intake(&app, "edr", &signed_headers("wrong-secret-123", ts, &bad), bad.clone()).await;
    assert_error(status, &v, 401, "invalid_signature");
    assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");
    let (status, v) = post_intake(&app, "edr", &signed_headers(SECRET, ts, &bad), bad.clone()).await;
    assert_error(status, &v, 400, "invalid_payload");
    assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");

    for body in ["[1,2,3]", "[]", "\"string\"", "42", "null", ""] {
        let (status, v) = post_intake(&app, "edr", &signed_headers(SECRET, ts, body.as_bytes()), body.to_string()).await;
        assert_error(status, &v, 400, "invalid_payload");
        assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");
    }
    let list = get_ok(&app, "/api/incidents").await;
    assert_eq!(list["meta"]["total"], 0, "{list}");
}

#[tokio::test]
async fn same_alert_id_twice_is_a_duplicate() {
    let app = app_with_source("edr").await;
    let (status, first) = app.deliver_at("edr", SECRET, CROWDSTRIKE, now() - 10).await;
    let (id, number) = assert_accepted(status, &first);
    let (status, second) = app.deliver_at("edr", SECRET, CROWDSTRIKE, now()).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["status"], "accepted");
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["incident_id"], id.as_str());
    assert_eq!(second["incident_number"], number.as_str());
    let inc = get_ok(&app, &format!("/api/incidents/{id}")).await;
    assert_eq!(inc["delivery_count"], 2, "{inc}");
    let list = get_ok(&app, "/api/incidents").await;
    assert_eq!(list["meta"]["total"], 1);
}

#[tokio::test]
async fn exact_same_signed_request_resent_is_a_duplicate() {
    let app = app_with_source("gw").await;
    let body = r#"{"event_type":"ping","data":{"message":"hello there"}}"#;
    let ts = now();
    let (status, first) = post_intake(&app, "gw", &signed_headers(SECRET, ts, body.as_bytes()), body).await;
    let (id, number) = assert_accepted(status, &first);
    let inc = get_ok(&app, &format!("/api/incidents/{id}")).await;
    assert!(inc["external_id"].is_null(), "this payload must have no alert id: {inc}");

    let (status, again) = post_intake(&app, "gw", &signed_headers(SECRET, ts, body.as_bytes()), body).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["incident_id"], id.as_str());
    assert_eq!(again["incident_number"], number.as_str());

    // Same body, new timestamp, no alert id: a new event.
    let (status, third) = post_intake(&app, "gw", &signed_headers(SECRET, ts - 1, body.as_bytes()), body).await;
    let (id3, number3) = assert_accepted(status, &third);
    assert_ne!(id3, id);
    assert_eq!(parse_number(&json!(number3)).1, parse_number(&json!(number)).1 + 1);
    let list = get_ok(&app, "/api/incidents").await;
    assert_eq!(list["meta"]["total"], 2);
}

#[tokio::test]
async fn incident_numbers_are_sequential_and_zero_padded() {
    let app = app_with_source("edr").await;
    for i in 1..=3u32 {
        let (status, v) = app.deliver("edr", SECRET, &generic_with_id(&format!("seq-{i}"))).await;
        let (_, number) = assert_accepted(status, &v);
        assert_eq!(number, format!("INC-{}-{i:04}", year()));
    }
}

#[tokio::test]
async fn unrecognised_json_object_is_still_accepted_as_generic() {
    let app = app_with_source("misc").await;
    let body = r#"{"whatever": {"nested": [1, 2, 3]}, "host_ip": "198.51.100.23"}"#;
    let (status, v) = app.deliver("misc", SECRET, body).await;
    let (id, _) = assert_accepted(status, &v);
    let inc = get_ok(&app, &format!("/api/incidents/{id}")).await;
    assert_eq!(inc["format"], "generic");
    assert!(inc["title"].as_str().is_some_and(|t| !t.is_empty()), "{inc}");
    assert_eq!(inc["severity"], "medium", "documented default when a payload has no severity");
    assert_eq!(raw_bytes(&app, &id).await, body.as_bytes());
    let (status, v) = app.deliver("misc", SECRET, "{}").await;
    assert_accepted(status, &v);
}

#[tokio::test]
async fn signed_test_event_is_verified_but_not_stored() {
    let app = app_with_source("email-gateway").await;
    let body = r#"{"event_type":"tw.webhook.test","data":{"alert_id":"t-1","details":{"title":"hello"}}}"#;
    let (status, v) = app.deliver("email-gateway", SECRET, body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["test"], true);
    let (status, v) = app.deliver("email-gateway", "wrong-secret-xyz", body).await;
    assert_error(status, &v, 401, "invalid_signature");
    assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");
    // The server-side check ("Verify Configuration").
    let (status, v) = app.admin(Method::POST, "/api/webhooks/email-gateway/test", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    let (status, v) = app.admin(Method::POST, "/api/webhooks/nope/test", None).await;
    assert_error(status, &v, 404, "unknown_source");
    assert!(!v.to_string().contains(SECRET), "an error leaked the secret: {v}");
    assert_eq!(get_ok(&app, "/api/incidents").await["meta"]["total"], 0);
}

/// A delivery's record keeps its headers for the operator, never a credential; of a request
/// whose signature did not verify only the names (and the content type and user agent).
#[tokio::test]
async fn a_delivery_record_keeps_its_headers_never_a_credential() {
    let app = app_with_source("hdrs").await;
    let send = |secret: &'static str, id: &'static str| {
        signed_request(&app.http, &app.base, "hdrs", secret, now(), alert(id))
            .header("user-agent", "vendor-edr/4.2")
            .header("x-api-key", "k-live-123")
            .header("cookie", "session=abc")
            .header("x-note", "tab\there")
            .header("x-vendor-trace", "trace-77")
            .send()
    };
    let resp = send(SECRET, "hdr-1").await.unwrap();
    assert_eq!(resp.status(), 201);
    let own = resp.headers()["x-tw-request-id"].to_str().unwrap().to_string();
    let h = recorded_headers(&app, &own).await;
    for line in [
        "content-type: application/json",
        "user-agent: vendor-edr/4.2",
        "x-api-key: [redacted]",
        "cookie: [redacted]",
        "x-webhook-signature: [redacted]",
        "x-vendor-trace: trace-77",
        "x-note: tab\\there",
    ] {
        assert!(h.lines().any(|l| l == line), "{line} in\n{h}");
    }
    assert!(!h.contains("k-live-123") && !h.contains("session=abc") && !h.contains("v1="), "{h}");

    let resp = send("not-the-secret-0123456789", "hdr-2").await.unwrap();
    assert_eq!(resp.status(), 401);
    let own = resp.headers()["x-tw-request-id"].to_str().unwrap().to_string();
    let h = recorded_headers(&app, &own).await;
    assert!(h.lines().any(|l| l == "user-agent: vendor-edr/4.2"), "{h}");
    assert!(h.lines().any(|l| l.starts_with("x-vendor-trace: [not kept")), "{h}");
    assert!(!h.contains("trace-77") && !h.contains("k-live-123"), "{h}");
    // Listings carry no headers.
    let (_, list) = app.admin(Method::GET, "/api/webhooks/hdrs/events", None).await;
    assert!(list["data"].as_array().unwrap().iter().all(|d| d.get("headers").is_none()), "{list}");
}

/// The headers kept with the delivery `own`, once it is recorded (records are written behind).
async fn recorded_headers(app: &TestApp, own: &str) -> String {
    for _ in 0..200 {
        let (status, d) = app.admin(Method::GET, &format!("/api/deliveries/{own}"), None).await;
        if status == 200 {
            return d["headers"].as_str().unwrap_or_default().to_string();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("delivery {own} never recorded");
}
