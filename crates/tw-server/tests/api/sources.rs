//! Sources API: register, list, show, update, delete, rotate-secret; auth and validation.

use super::*;

/// The spec's "Via API" body.
fn spec_body() -> Value {
    json!({"source": "email-gateway", "secret": "your-secret-key", "auto_triage": true, "playbook": "phishing_triage"})
}

#[tokio::test]
async fn register_with_spec_body_echoes_settings_without_secret() {
    let app = TestApp::spawn().await;
    let (status, v) = app.admin(Method::POST, "/api/webhooks", Some(spec_body())).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["source"], "email-gateway");
    assert_eq!(v["auto_triage"], true);
    assert_eq!(v["playbook"], "phishing_triage");
    assert_eq!(v["enabled"], true);
    assert_eq!(v["mode"], "sync");
    assert_eq!(v["managed_by_config"], false);
    assert!(v.get("secret").is_none(), "a caller-given secret is not echoed: {v}");
    assert!(!v.to_string().contains("your-secret-key"), "{v}");
    assert!(v["secret_fingerprint"].as_str().is_some_and(|f| !f.is_empty()), "{v}");
    // And it verifies deliveries signed with that secret.
    let (status, d) = app.deliver("email-gateway", "your-secret-key", DEFENDER).await;
    assert_accepted(status, &d);
}

#[tokio::test]
async fn spec_curl_shape_without_or_with_form_content_type_works() {
    let app = TestApp::spawn().await;
    // curl -d without -H Content-Type: the spec's exact command. reqwest sends no Content-Type
    // for a plain string body; curl would say application/x-www-form-urlencoded.
    let text = r#"{
    "source": "email-gateway",
    "secret": "your-secret-key",
    "auto_triage": true,
    "playbook": "phishing_triage"
  }"#;
    let resp = app.http.post(app.url("/api/webhooks")).bearer_auth(&app.admin_key).body(text).send().await.unwrap();
    let (status, v) = into_json(resp).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["playbook"], "phishing_triage");

    // Its own secret: the server refuses a secret another source uses.
    let text =
        text.replace("email-gateway", "edr").replace("phishing_triage", "malware_triage").replace("your-secret-key", "edr-secret-key");
    let resp = app
        .http
        .post(app.url("/api/webhooks"))
        .bearer_auth(&app.admin_key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(text)
        .send()
        .await
        .unwrap();
    let (status, v) = into_json(resp).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["source"], "edr");
    assert_eq!(v["playbook"], "malware_triage");
}

#[tokio::test]
async fn generated_secret_is_returned_once_and_verifies() {
    let app = TestApp::spawn().await;
    let v = app.add_source(json!({"source": "edr"})).await;
    let secret = v["secret"].as_str().unwrap_or_else(|| panic!("no generated secret: {v}")).to_string();
    assert!(secret.len() >= 32, "a strong secret: {secret}");
    let (status, d) = app.deliver("edr", &secret, CROWDSTRIKE).await;
    assert_accepted(status, &d);

    let shown = get_ok(&app, "/api/webhooks/edr").await;
    assert!(shown.get("secret").is_none(), "{shown}");
    assert!(!shown.to_string().contains(&secret), "{shown}");
    let list = get_ok(&app, "/api/webhooks").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    assert!(list["data"][0].get("secret").is_none());
    assert!(!list.to_string().contains(&secret), "{list}");

    // Two generated secrets differ.
    let other = app.add_source(json!({"source": "edr2"})).await;
    assert_ne!(other["secret"], v["secret"]);
}

#[tokio::test]
async fn duplicate_registration_is_409() {
    let app = TestApp::spawn().await;
    app.add_source(spec_body()).await;
    let (status, v) = app.admin(Method::POST, "/api/webhooks", Some(spec_body())).await;
    assert_error(status, &v, 409, "source_exists");
    assert!(!v.to_string().contains("your-secret-key"));
}

#[tokio::test]
async fn auth_is_required_and_scoped() {
    let app = TestApp::spawn().await;
    add(&app, "edr", "edr-secret-123456", json!({})).await;
    // No key.
    for (m, path) in [(Method::POST, "/api/webhooks"), (Method::GET, "/api/webhooks"), (Method::GET, "/api/webhooks/edr")] {
        let (status, v) = app.with_key("", m.clone(), path, Some(spec_body())).await;
        assert_error(status, &v, 401, "unauthorized");
    }
    // A bad key, and a non-Bearer header.
    let (status, v) = app.with_key("tw_definitelynotakey", Method::POST, "/api/webhooks", Some(spec_body())).await;
    assert_error(status, &v, 401, "unauthorized");
    let (status, v) = app.with_key("garbage", Method::GET, "/api/webhooks", None).await;
    assert_error(status, &v, 401, "unauthorized");
    let resp = app.http.get(app.url("/api/webhooks")).header("authorization", format!("Basic {}", app.admin_key)).send().await.unwrap();
    let (status, v) = into_json(resp).await;
    assert_error(status, &v, 401, "unauthorized");

    // A read key: reads, but never changes.
    let rk = app.read_key.clone();
    let (status, v) = app.with_key(&rk, Method::POST, "/api/webhooks", Some(spec_body())).await;
    assert_error(status, &v, 403, "forbidden");
    let (status, v) = app.with_key(&rk, Method::PATCH, "/api/webhooks/edr", Some(json!({"enabled": false}))).await;
    assert_error(status, &v, 403, "forbidden");
    let (status, v) = app.with_key(&rk, Method::DELETE, "/api/webhooks/edr", None).await;
    assert_error(status, &v, 403, "forbidden");
    let (status, v) = app.with_key(&rk, Method::POST, "/api/webhooks/edr/rotate-secret", None).await;
    assert_error(status, &v, 403, "forbidden");
    let (status, v) = app.with_key(&rk, Method::GET, "/api/webhooks", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"][0]["source"], "edr");
    let (status, v) = app.with_key(&rk, Method::GET, "/api/webhooks/edr", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["enabled"], true, "the refused PATCH changed nothing");
    // Nothing was registered by the refused requests.
    let list = get_ok(&app, "/api/webhooks").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn validation_errors_name_the_field() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({"source": "Bad Name!", "secret": "a-good-secret-1"}), "source"),
        (json!({"secret": "a-good-secret-1"}), "source"),
        (json!({"source": "edr", "playbook": "no_such_playbook"}), "playbook"),
        (json!({"source": "edr", "mode": "sometimes"}), "mode"),
        (json!({"source": "edr", "severity_mapping": {"4": "apocalyptic"}}), "severity_mapping"),
        (json!({"source": "edr", "colour": "blue"}), "colour"),
        (json!({"source": "edr", "auto_triage": true}), "playbook"),
        (json!({"source": "edr", "secret": "short"}), "secret"),
        (json!({"source": "edr", "format": "nonsense"}), "format"),
    ];
    for (body, field) in cases {
        let (status, v) = app.admin(Method::POST, "/api/webhooks", Some(body.clone())).await;
        assert_error(status, &v, 422, "validation_error");
        assert!(detail_fields(&v).iter().any(|f| f == field), "{body} -> {v}: expected a detail for {field}");
    }
    // Several problems at once are all reported.
    let (status, v) = app.admin(Method::POST, "/api/webhooks", Some(json!({"source": "Bad Name!", "mode": "x", "colour": 1}))).await;
    assert_error(status, &v, 422, "validation_error");
    let fields = detail_fields(&v);
    for f in ["source", "mode", "colour"] {
        assert!(fields.iter().any(|x| x == f), "{v}");
    }
    // A body that is not a JSON object.
    let (status, v) = app.admin(Method::POST, "/api/webhooks", Some(json!([1]))).await;
    assert!(status == 400 || status == 422, "{status} {v}");
    let list = get_ok(&app, "/api/webhooks").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "nothing registered: {list}");
    // PATCH validates too.
    add(&app, "edr", "edr-secret-123456", json!({})).await;
    let (status, v) = app.admin(Method::PATCH, "/api/webhooks/edr", Some(json!({"mode": "never"}))).await;
    assert_error(status, &v, 422, "validation_error");
    assert_eq!(detail_fields(&v), ["mode"]);
    let (status, v) = app.admin(Method::PATCH, "/api/webhooks/edr", Some(json!({"auto_triage": true}))).await;
    assert_error(status, &v, 422, "validation_error");
    assert_eq!(detail_fields(&v), ["playbook"]);
}

#[tokio::test]
async fn show_reflects_deliveries_and_errors() {
    let app = TestApp::spawn().await;
    let secret = "stats-secret-123456";
    let created = add(&app, "edr", secret, json!({})).await;
    let v = get_ok(&app, "/api/webhooks/edr").await;
    assert_eq!(v["secret_fingerprint"], created["secret_fingerprint"]);
    assert!(v["secret_fingerprint"].as_str().is_some_and(|f| !f.is_empty() && !f.contains(secret)));
    assert!(v["created_at"].as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()), "{v}");
    assert!(v["last_delivery_at"].is_null(), "{v}");
    assert_eq!(v["delivery_count"], 0);
    assert_eq!(v["error_count"], 0);

    let (s, d) = app.deliver("edr", secret, &generic_with_id("a")).await;
    assert_accepted(s, &d);
    let (s, d) = app.deliver("edr", secret, &generic_with_id("b")).await;
    assert_accepted(s, &d);
    let (s, d) = app.deliver("edr", "not-the-secret-1", &generic_with_id("c")).await;
    assert_error(s, &d, 401, "invalid_signature");
    let (s, d) = app.deliver_at("edr", secret, &generic_with_id("d"), now() - 1000).await;
    assert_error(s, &d, 401, "timestamp_expired");

    let v = poll(&app, "/api/webhooks/edr", "error_count reaches 2", |v| v["error_count"] == 2).await;
    assert_eq!(v["delivery_count"], 2, "{v}");
    let last = v["last_delivery_at"].as_str().unwrap_or_else(|| panic!("last_delivery_at not set: {v}"));
    let last = chrono::DateTime::parse_from_rfc3339(last).unwrap();
    assert!((chrono::Utc::now() - last.with_timezone(&chrono::Utc)).num_seconds().abs() < 600, "{v}");
    assert!(v.get("secret").is_none());
    // Listed with the same statistics.
    let list = get_ok(&app, "/api/webhooks").await;
    assert_eq!(list["data"][0]["delivery_count"], 2);
    // Unknown source: 404.
    let (status, v) = app.admin(Method::GET, "/api/webhooks/nope", None).await;
    let msg = assert_error(status, &v, 404, "unknown_source");
    assert_eq!(msg, "Webhook source 'nope' is not registered");
}

#[tokio::test]
async fn patch_severity_mapping_changes_next_delivery() {
    let app = TestApp::spawn().await;
    let secret = "cs-secret-1234567";
    add(&app, "edr", secret, json!({})).await;
    let (s, d) = app.deliver("edr", secret, CROWDSTRIKE).await;
    let (id, _) = assert_accepted(s, &d);
    assert_eq!(get_ok(&app, &format!("/api/incidents/{id}")).await["severity"], "high");

    let (status, v) = app.admin(Method::PATCH, "/api/webhooks/edr", Some(json!({"severity_mapping": {"4": "critical"}}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["severity_mapping"], json!({"4": "critical"}));
    assert!(v.get("secret").is_none());
    assert_eq!(get_ok(&app, "/api/webhooks/edr").await["severity_mapping"], json!({"4": "critical"}));

    let body = CROWDSTRIKE.replace("ldt:abc123", "ldt:def456");
    let (s, d) = app.deliver("edr", secret, &body).await;
    let (id, _) = assert_accepted(s, &d);
    let inc = get_ok(&app, &format!("/api/incidents/{id}")).await;
    assert_eq!(inc["severity"], "critical", "{inc}");
    assert_eq!(inc["vendor_severity"], "4");

    // Other settings via PATCH: mode and playbook.
    let (status, v) = app.admin(Method::PATCH, "/api/webhooks/edr", Some(json!({"auto_triage": true, "playbook": "malware_triage"}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["auto_triage"], true);
    assert_eq!(v["playbook"], "malware_triage");
    assert_eq!(v["severity_mapping"], json!({"4": "critical"}), "untouched fields stay");
    // PATCH of an unknown source.
    let (status, v) = app.admin(Method::PATCH, "/api/webhooks/nope", Some(json!({"enabled": false}))).await;
    assert_error(status, &v, 404, "unknown_source");
}

#[tokio::test]
async fn delete_then_deliveries_are_unknown() {
    let app = TestApp::spawn().await;
    let secret = "del-secret-1234567";
    add(&app, "edr", secret, json!({})).await;
    let (s, d) = app.deliver("edr", secret, &generic_with_id("before")).await;
    let (id, _) = assert_accepted(s, &d);

    let resp = app.http.delete(app.url("/api/webhooks/edr")).bearer_auth(&app.admin_key).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp.bytes().await.unwrap().is_empty());

    let (s, d) = app.deliver("edr", secret, &generic_with_id("after")).await;
    let msg = assert_error(s, &d, 404, "unknown_source");
    assert_eq!(msg, "Webhook source 'edr' is not registered");
    let (s, d) = app.admin(Method::GET, "/api/webhooks/edr", None).await;
    assert_error(s, &d, 404, "unknown_source");
    let (s, d) = app.admin(Method::DELETE, "/api/webhooks/edr", None).await;
    assert_error(s, &d, 404, "unknown_source");
    // The incident it made stays.
    get_ok(&app, &format!("/api/incidents/{id}")).await;
    // The name can be registered again.
    add(&app, "edr", "a-brand-new-secret", json!({})).await;
    let (s, d) = app.deliver("edr", secret, &generic_with_id("old-secret")).await;
    assert_error(s, &d, 401, "invalid_signature");
}

#[tokio::test]
async fn rotate_secret_with_grace_then_without() {
    let app = TestApp::spawn().await;
    let a = "first-secret-AAAAAAAA";
    add(&app, "edr", a, json!({})).await;
    let before = get_ok(&app, "/api/webhooks/edr").await;

    // Rotate to a generated secret; default grace period.
    let (status, v) = app.admin(Method::POST, "/api/webhooks/edr/rotate-secret", None).await;
    assert_eq!(status, 200, "{v}");
    let b = v["secret"].as_str().unwrap_or_else(|| panic!("no new secret: {v}")).to_string();
    assert_ne!(b, a);
    assert_ne!(v["secret_fingerprint"], before["secret_fingerprint"]);
    assert!(v["previous_secret_expires_at"].is_string(), "{v}");
    let shown = get_ok(&app, "/api/webhooks/edr").await;
    assert!(shown.get("secret").is_none() && !shown.to_string().contains(&b), "{shown}");

    let (s, d) = app.deliver("edr", a, &generic_with_id("old-during-grace")).await;
    assert_accepted(s, &d);
    let (s, d) = app.deliver("edr", &b, &generic_with_id("new")).await;
    assert_accepted(s, &d);

    // Rotate again to a given secret with no grace: only the newest verifies.
    let c = "third-secret-CCCCCCCC";
    let (status, v) = app.admin(Method::POST, "/api/webhooks/edr/rotate-secret", Some(json!({"secret": c, "grace_period_secs": 0}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["secret"], c);
    let (s, d) = app.deliver("edr", &b, &generic_with_id("b-after-no-grace")).await;
    assert_error(s, &d, 401, "invalid_signature");
    let (s, d) = app.deliver("edr", a, &generic_with_id("a-after-no-grace")).await;
    assert_error(s, &d, 401, "invalid_signature");
    let (s, d) = app.deliver("edr", c, &generic_with_id("c")).await;
    assert_accepted(s, &d);

    // Bad rotate bodies.
    let (status, v) = app.admin(Method::POST, "/api/webhooks/edr/rotate-secret", Some(json!({"grace_period_secs": -1}))).await;
    assert_error(status, &v, 422, "validation_error");
    assert_eq!(detail_fields(&v), ["grace_period_secs"]);
    let (status, v) = app.admin(Method::POST, "/api/webhooks/nope/rotate-secret", None).await;
    assert_error(status, &v, 404, "unknown_source");
}

#[tokio::test]
async fn secrets_are_not_stored_in_clear() {
    let secret = "ZebraQuartzNebula-7781-distinctive";
    let generated;
    let dir;
    {
        let app = TestApp::spawn().await;
        add(&app, "edr", secret, json!({})).await;
        generated = app.add_source(json!({"source": "gen"})).await["secret"].as_str().unwrap().to_string();
        let (status, v) =
            app.admin(Method::POST, "/api/webhooks/edr/rotate-secret", Some(json!({"secret": "RotatedQuartzNebula-9913-x"}))).await;
        assert_eq!(status, 200, "{v}");
        let (s, d) = app.deliver("edr", secret, &generic_with_id("x")).await;
        assert_accepted(s, &d);
        assert_no_secret_in(app.dir.path(), &[secret, "RotatedQuartzNebula-9913-x", &generated]);
        if let Some(url) = app.database_url.clone() {
            // PostgreSQL: every row of every table, as text.
            let client = tw_store::testing::connect(&url).await.unwrap();
            let tables: Vec<String> = client
                .query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert!(tables.len() > 5, "{tables:?}");
            for t in tables {
                let dump: Option<String> =
                    client.query_one(&format!("SELECT string_agg(t::text, ' ') FROM {t} t"), &[]).await.unwrap().get(0);
                let dump = dump.unwrap_or_default();
                for s in [secret, "RotatedQuartzNebula-9913-x", generated.as_str()] {
                    assert!(!dump.contains(s), "secret in clear in table {t}");
                    assert!(!dump.contains(&hex::encode(s)), "secret in clear (bytea) in table {t}");
                }
            }
        }
        dir = app.stop().await;
    }
    // On PostgreSQL nothing of the store is in the data dir.
    assert_eq!(dir.path().join("tw.db").exists(), !tw_store::testing::engine_is_postgres());
    assert_no_secret_in(dir.path(), &[secret, "RotatedQuartzNebula-9913-x", &generated]);
}

fn assert_no_secret_in(dir: &std::path::Path, secrets: &[&str]) {
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            // SQLite removes its -wal and -shm files when the store closes, which may happen on
            // the writer thread while this walks the directory.
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("{}: {e}", path.display()),
            };
            files += 1;
            for s in secrets {
                let needle = s.as_bytes();
                assert!(!bytes.windows(needle.len()).any(|w| w == needle), "secret found in clear in {}", path.display());
            }
        }
    }
    assert!(files > 0, "no files in the data dir");
}
