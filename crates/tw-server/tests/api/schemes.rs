//! Verification schemes other than the spec's HMAC, an address allow-list and declarative
//! mappings, over HTTP: what each scheme accepts and refuses (with which code), what it dedupes
//! on, rotation with a grace period for every scheme, and the settings' validation. Deliveries
//! signed by the official Standard Webhooks library, by OpenSSL and sent by curl are in tw-cli's
//! `senders` tests.

use super::*;
use base64::Engine as _;
use tw_core::Verification;

/// Posts `body` to `path` with `headers`.
async fn post(app: &TestApp, path: &str, headers: &[(String, String)], body: &str) -> (StatusCode, Value) {
    let mut req = app.http.post(app.url(path)).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    into_json(req.body(body.to_string()).send().await.expect("request")).await
}

/// Posts `body` to `source` signed by `scheme` with `secret` at `ts`, as its sender would.
async fn send(app: &TestApp, source: &str, scheme: &Verification, secret: &str, body: &str, ts: i64, msg_id: &str) -> (StatusCode, Value) {
    let signed = scheme.sign(secret, body.as_bytes(), ts, msg_id);
    let path = match &signed.path_token {
        Some(token) => format!("/api/webhooks/{source}/{token}"),
        None => format!("/api/webhooks/{source}"),
    };
    post(app, &path, &signed.headers, body).await
}

/// The fields a 422 names.
fn invalid(status: StatusCode, v: &Value) -> Vec<String> {
    assert_error(status, v, 422, "validation_error");
    detail_fields(v)
}

fn scheme(v: Value) -> Verification {
    Verification::parse(&v).unwrap()
}

const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test]
async fn every_scheme_accepts_its_senders_and_refuses_the_rest() {
    let app = TestApp::spawn().await;
    let cases = [
        ("sw", json!("standard-webhooks"), SW_SECRET),
        ("gh", json!("github"), "github-secret-0123456789"),
        ("kib", json!({"scheme": "header-token", "header": "X-Api-Key"}), "header-token-0123456789"),
        ("s1", json!("basic"), "basic-password-0123456789"),
        ("splunk", json!("url-token"), "url-token-0123456789abcdef"),
        ("spec", json!("hmac"), "hmac-secret-0123456789"),
    ];
    for (i, (name, verification, secret)) in cases.iter().enumerate() {
        let v = add(&app, name, secret, json!({"verification": verification})).await;
        let s = scheme(verification.clone());
        assert_eq!(v["verification"], s.to_value(), "{v}");
        let body = generic_with_id(&format!("{name}-1"));
        let (status, answer) = send(&app, name, &s, secret, &body, now(), &format!("msg_{i}")).await;
        assert_eq!(status, 201, "{name}: {answer}");
        // Signed with another secret: refused, the incident count unchanged.
        let (status, answer) =
            send(&app, name, &s, "not-the-secret-0123456789", &generic_with_id(&format!("{name}-2")), now(), "msg_x").await;
        assert_error(status, &answer, 401, "invalid_signature");
        // Sent with nothing at all (no headers, no token).
        let (status, answer) = post(&app, &format!("/api/webhooks/{name}"), &[], &body).await;
        assert_error(status, &answer, 401, "missing_signature");
        // Another scheme's proof does not pass.
        let other = &cases[(i + 1) % cases.len()];
        let (status, _) = send(&app, name, &scheme(other.1.clone()), secret, &generic_with_id(&format!("{name}-3")), now(), "msg_y").await;
        assert_eq!(status, 401, "{name} took a {} proof", other.1);
    }
    assert_eq!(get_ok(&app, "/api/incidents").await["meta"]["total"], cases.len());
    // The server's own test signs by each scheme.
    for (name, ..) in &cases {
        let (status, v) = app.admin(Method::POST, &format!("/api/webhooks/{name}/test"), None).await;
        assert_eq!((status.as_u16(), &v["ok"]), (200, &json!(true)), "{name}: {v}");
    }
}

#[tokio::test]
async fn standard_webhooks_keeps_the_window_and_dedupes_by_message_id() {
    let app = TestApp::spawn().await;
    add(&app, "svix", SW_SECRET, json!({"verification": "standard-webhooks"})).await;
    let s = Verification::StandardWebhooks;
    // The body has no alert id: the message id is what makes a redelivery the same.
    let body = r#"{"event_type":"x","data":{"severity":"high","details":{"title":"no id"}}}"#;
    let (status, first) = send(&app, "svix", &s, SW_SECRET, body, now(), "msg_2Kx").await;
    assert_eq!(status, 201, "{first}");
    // Svix retries re-sign the same message with a new timestamp.
    let (status, again) = send(&app, "svix", &s, SW_SECRET, body, now() + 5, "msg_2Kx").await;
    assert_eq!((status.as_u16(), &again["duplicate"]), (200, &json!(true)), "{again}");
    assert_eq!(again["incident_id"], first["incident_id"]);
    let (status, _) = send(&app, "svix", &s, SW_SECRET, body, now(), "msg_other").await;
    assert_eq!(status, 201);
    // The window holds both ways.
    let (status, v) = send(&app, "svix", &s, SW_SECRET, body, now() - 301, "msg_old").await;
    assert_error(status, &v, 401, "timestamp_expired");
    let (status, v) = send(&app, "svix", &s, SW_SECRET, body, now() + 301, "msg_new").await;
    assert_error(status, &v, 401, "timestamp_invalid");
    // Several signatures (the sender rotating): one valid is enough; no id is missing_signature.
    let ts = now();
    let signed = s.sign(SW_SECRET, body.as_bytes(), ts, "msg_rot");
    let mut headers = signed.headers.clone();
    headers[2].1 = format!("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {}", headers[2].1);
    let (status, v) = post(&app, "/api/webhooks/svix", &headers, body).await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = post(&app, "/api/webhooks/svix", &headers[1..], body).await;
    assert_error(status, &v, 401, "missing_signature");
    assert!(v["error"]["message"].as_str().unwrap().contains("webhook-id"), "{v}");
}

#[tokio::test]
async fn token_schemes_take_the_token_where_senders_put_it() {
    let app = TestApp::spawn().await;
    let token = "header-token-0123456789";
    add(&app, "kib", token, json!({"verification": {"scheme": "header-token", "header": "Authorization"}})).await;
    let bearer = [("authorization".to_string(), format!("Bearer {token}"))];
    let (status, v) = post(&app, "/api/webhooks/kib", &bearer, &generic_with_id("k-1")).await;
    assert_eq!(status, 201, "{v}");
    let bare = [("authorization".to_string(), token.to_string())];
    let (status, v) = post(&app, "/api/webhooks/kib", &bare, &generic_with_id("k-2")).await;
    assert_eq!(status, 201, "{v}");
    // A prefix or an extension of the token is not the token.
    for wrong in [&token[..token.len() - 1], &format!("{token}x")] {
        let (status, v) = post(&app, "/api/webhooks/kib", &[("authorization".into(), wrong.to_string())], &generic_with_id("k-3")).await;
        assert_error(status, &v, 401, "invalid_signature");
        assert!(!v.to_string().contains(token), "the token is never echoed: {v}");
    }

    add(&app, "s1", "basic-password-0123456789", json!({"verification": "basic"})).await;
    let basic = |user: &str, pw: &str| {
        vec![("authorization".to_string(), format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))))]
    };
    let (status, v) = post(&app, "/api/webhooks/s1", &basic("kibana", "basic-password-0123456789"), &generic_with_id("b-1")).await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = post(&app, "/api/webhooks/s1", &basic("", "basic-password-0123456789"), &generic_with_id("b-2")).await;
    assert_eq!(status, 201, "any user name: {v}");
    let (status, v) = post(&app, "/api/webhooks/s1", &basic("kibana", "basic-password-012345678"), &generic_with_id("b-3")).await;
    assert_error(status, &v, 401, "invalid_signature");
    let (status, v) = post(&app, "/api/webhooks/s1", &[("authorization".into(), "Basic !!!".into())], &generic_with_id("b-4")).await;
    assert_error(status, &v, 401, "invalid_signature");

    // Schemes without a timestamp: a replayed body is counted on its incident, never a second one.
    let body = r#"{"search_name":"Failed Login Alert","sid":"scheduler__admin__search__RMD5","result":{"user":"bob"}}"#;
    add(&app, "splunk", "url-token-0123456789abcdef", json!({"verification": "url-token"})).await;
    let (status, first) = post(&app, "/api/webhooks/splunk/url-token-0123456789abcdef", &[], body).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = post(&app, "/api/webhooks/splunk/url-token-0123456789abcdef", &[], body).await;
    assert_eq!((status.as_u16(), &again["duplicate"]), (200, &json!(true)), "{again}");
    // A token on an hmac source's URL is refused like a bad signature.
    add(&app, "spec", "hmac-secret-0123456789", json!({})).await;
    let (status, v) = post(&app, "/api/webhooks/spec/hmac-secret-0123456789", &[], body).await;
    assert_error(status, &v, 401, "invalid_signature");
    // Neither the token nor any part of the URL after the source is kept with the refusals.
    let (status, v) = post(&app, "/api/webhooks/splunk/wrong-token-0123456789", &[], body).await;
    assert_error(status, &v, 401, "invalid_signature");
    let events =
        poll(&app, "/api/webhooks/splunk/events", "the refusal's record", |v| v["data"].as_array().is_some_and(|d| d.len() >= 3)).await;
    let text = events.to_string();
    assert!(!text.contains("url-token-0123456789abcdef") && !text.contains("wrong-token"), "{text}");
    assert!(!app.metrics_text().await.contains("token-0123456789"));
}

#[tokio::test]
async fn rotation_keeps_the_old_secret_for_its_grace_period_in_every_scheme() {
    let app = TestApp::spawn().await;
    for (name, verification) in [
        ("sw", json!("standard-webhooks")),
        ("gh", json!("github")),
        ("kib", json!({"scheme": "header-token", "header": "X-Api-Key"})),
        ("s1", json!("basic")),
        ("splunk", json!("url-token")),
    ] {
        let s = scheme(verification.clone());
        let created = app.add_source(json!({"source": name, "verification": verification})).await;
        let old = created["secret"].as_str().unwrap().to_string();
        assert!(s.check_secret(&old).is_ok(), "{name}: the generated secret has the scheme's form: {old}");
        let (status, rotated) =
            app.admin(Method::POST, &format!("/api/webhooks/{name}/rotate-secret"), Some(json!({"grace_period_secs": 3600}))).await;
        assert_eq!(status, 200, "{rotated}");
        let new = rotated["secret"].as_str().unwrap().to_string();
        assert!(s.check_secret(&new).is_ok() && new != old, "{name}: {new}");
        for (secret, id) in [(&old, "old"), (&new, "new")] {
            let (status, v) = send(&app, name, &s, secret, &generic_with_id(&format!("{name}-{id}")), now(), &format!("msg_{id}")).await;
            assert_eq!(status, 201, "{name} with the {id} secret: {v}");
        }
        // Without a grace period the old secret stops at once.
        let (status, rotated) =
            app.admin(Method::POST, &format!("/api/webhooks/{name}/rotate-secret"), Some(json!({"grace_period_secs": 0}))).await;
        assert_eq!(status, 200, "{rotated}");
        let (status, v) = send(&app, name, &s, &new, &generic_with_id(&format!("{name}-late")), now(), "msg_late").await;
        assert_eq!(status, 401, "{name}: {v}");
        // A given secret must have the scheme's form.
        if name == "sw" {
            let (status, v) =
                app.admin(Method::POST, "/api/webhooks/sw/rotate-secret", Some(json!({"secret": "plain-secret-0123456789"}))).await;
            assert_eq!(invalid(status, &v), ["secret"], "{v}");
        }
    }
}

#[tokio::test]
async fn settings_are_validated_field_by_field() {
    let app = TestApp::spawn().await;
    let create = |body: Value| async { app.admin(Method::POST, "/api/webhooks", Some(body)).await };
    let (status, v) = create(json!({"source": "a", "verification": {"scheme": "header-token"}})).await;
    assert_eq!(invalid(status, &v), ["verification.header"], "{v}");
    let (status, v) = create(json!({"source": "a", "verification": "hmac-sha1"})).await;
    assert_eq!(invalid(status, &v), ["verification"], "{v}");
    let (status, v) = create(json!({"source": "a", "verification": {"scheme": "header-token", "header": "Host"}})).await;
    assert_eq!(invalid(status, &v), ["verification.header"], "{v}");
    let (status, v) = create(json!({"source": "a", "verification": "url-token", "secret": "has/a/slash-0123456789"})).await;
    assert_eq!(invalid(status, &v), ["secret"], "{v}");
    let (status, v) = create(json!({"source": "a", "allowed_ips": ["10.0.0.0/8", "nope"]})).await;
    assert_eq!(invalid(status, &v), ["allowed_ips[1]"], "{v}");
    let (status, v) = create(json!({"source": "a", "mapping": {"title": "alert/name", "entities": {"ip": ["/a", 3]}}})).await;
    assert_error(status, &v, 422, "validation_error");
    let fields: Vec<&str> = v["error"]["details"].as_array().unwrap().iter().filter_map(|d| d["field"].as_str()).collect();
    assert_eq!(fields, ["mapping.entities.ip[1]", "mapping.title"], "{v}");

    // Changing to a scheme the current secret does not fit needs a new secret in the same request.
    add(&app, "b", "plain-secret-0123456789", json!({})).await;
    let (status, v) = app.admin(Method::PATCH, "/api/webhooks/b", Some(json!({"verification": "standard-webhooks"}))).await;
    assert_eq!(invalid(status, &v), ["verification"], "{v}");
    let (status, v) =
        app.admin(Method::PATCH, "/api/webhooks/b", Some(json!({"verification": "standard-webhooks", "secret": SW_SECRET}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["verification"], json!({"scheme": "standard-webhooks"}));
    let (status, v) = app.admin(Method::PATCH, "/api/webhooks/b", Some(json!({"allowed_ips": ["192.0.2.7", "2001:db8::/32"]}))).await;
    assert_eq!((status.as_u16(), &v["allowed_ips"]), (200, &json!(["192.0.2.7/32", "2001:db8::/32"])), "{v}");
    let (status, v) = app.admin(Method::PATCH, "/api/webhooks/b", Some(json!({"allowed_ips": null}))).await;
    assert_eq!((status.as_u16(), &v["allowed_ips"]), (200, &json!([])), "{v}");
}

#[tokio::test]
async fn the_allow_list_believes_forwarded_addresses_only_from_trusted_proxies() {
    // The test client connects from 127.0.0.1: first as a client, then as a trusted proxy.
    let direct = TestApp::spawn().await;
    add(&direct, "edr", "edr-secret-0123456789", json!({"allowed_ips": ["192.0.2.0/24"]})).await;
    let body = generic_with_id("ip-1");
    let mut headers: Vec<(String, String)> =
        signed_headers("edr-secret-0123456789", now(), body.as_bytes()).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let (status, v) = post(&direct, "/api/webhooks/edr", &headers, &body).await;
    assert_error(status, &v, 403, "ip_not_allowed");
    headers.push(("x-forwarded-for".into(), "192.0.2.5".into()));
    let (status, v) = post(&direct, "/api/webhooks/edr", &headers, &body).await;
    assert_error(status, &v, 403, "ip_not_allowed");

    let proxied = TestApp::spawn_with(|cfg| {
        cfg.trusted_proxies = tw_server::client::TrustedProxies::new(vec!["127.0.0.1/32".parse().unwrap()]);
    })
    .await;
    add(&proxied, "edr", "edr-secret-0123456789", json!({"allowed_ips": ["192.0.2.0/24"]})).await;
    let (status, v) = post(&proxied, "/api/webhooks/edr", &headers, &body).await;
    assert_eq!(status, 201, "{v}");
    headers.pop();
    headers.push(("x-forwarded-for".into(), "198.51.100.9".into()));
    let (status, v) = post(&proxied, "/api/webhooks/edr", &headers, &body).await;
    assert_error(status, &v, 403, "ip_not_allowed");
}

#[tokio::test]
async fn a_mapping_reads_a_vendor_without_code() {
    let app = TestApp::spawn().await;
    add(
        &app,
        "acme",
        "acme-secret-0123456789",
        json!({
            "mapping": {"title": "/alert/name", "severity": "/alert/level", "alert_id": "/alert/uid",
                        "event_time": "/alert/ts", "description": "/alert/summary",
                        "entities": {"ip": ["/alert/src_ip"], "user": ["/alert/user"]}},
            "severity_mapping": {"P1": "critical"}
        }),
    )
    .await;
    let body = json!({"alert": {"name": "Impossible travel", "level": "P1", "uid": "acme-77", "ts": 1705320000,
                                "summary": "Logins from two continents", "src_ip": "203.0.113.9", "user": "carol"}})
    .to_string();
    let (status, v) = app.deliver("acme", "acme-secret-0123456789", &body).await;
    assert_eq!(status, 201, "{v}");
    let incident = get_ok(&app, &format!("/api/incidents/{}", v["incident_number"].as_str().unwrap())).await;
    assert_eq!(incident["title"], "Impossible travel", "{incident}");
    assert_eq!(incident["severity"], "critical");
    assert_eq!(incident["description"], "Logins from two continents");
    let entities = incident["entities"].to_string();
    assert!(entities.contains("203.0.113.9") && entities.contains("carol"), "{entities}");
    // The mapped id dedupes a redelivery with another body.
    let again = body.replace("two continents", "2 continents");
    let (status, v) = app.deliver("acme", "acme-secret-0123456789", &again).await;
    assert_eq!((status.as_u16(), &v["duplicate"]), (200, &json!(true)), "{v}");
    let shown = get_ok(&app, "/api/webhooks/acme").await;
    assert_eq!(shown["mapping"]["alert_id"], "/alert/uid", "{shown}");
}
