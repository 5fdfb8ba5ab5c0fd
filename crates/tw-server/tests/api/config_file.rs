//! `webhook_config.yaml`: sources from the file, `${VAR}` substitution, and the API refusing to
//! change them.

use super::*;

fn write(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("webhook_config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn spec_config_file_loads_sources_with_env_secrets() {
    let email_var = "TWTEST_API_CFG_LOAD_EMAIL_SECRET";
    let edr_var = "TWTEST_API_CFG_LOAD_EDR_SECRET";
    let email_secret = "email-secret-from-env-1234";
    let edr_secret = "edr-secret-from-env-5678";
    // SAFETY: variable names unique to this test; nothing else reads or writes them.
    unsafe {
        std::env::set_var(email_var, email_secret);
        std::env::set_var(edr_var, edr_secret);
    }
    let cfg_dir = tempfile::tempdir().unwrap();
    let path = write(cfg_dir.path(), &spec_config(email_var, edr_var));
    let app = TestApp::spawn_with(|cfg| cfg.webhook_config = Some(path.clone())).await;

    let email = get_ok(&app, "/api/webhooks/email-gateway").await;
    assert_eq!(email["managed_by_config"], true, "{email}");
    assert_eq!(email["auto_triage"], true);
    assert_eq!(email["playbook"], "phishing_triage");
    assert_eq!(email["severity_mapping"], json!({"critical": "critical", "high": "high", "medium": "medium", "low": "low"}));
    assert!(email.get("secret").is_none() && !email.to_string().contains(email_secret));
    let edr = get_ok(&app, "/api/webhooks/edr").await;
    assert_eq!(edr["managed_by_config"], true);
    assert_eq!(edr["playbook"], "malware_triage");
    let list = get_ok(&app, "/api/webhooks").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "{list}");

    // Deliveries signed with the environment's secrets verify; the literal "${VAR}" does not.
    let (s, v) = app.deliver("email-gateway", email_secret, DEFENDER).await;
    let (id, _) = assert_accepted(s, &v);
    let inc = get_ok(&app, &format!("/api/incidents/{id}")).await;
    assert_eq!(inc["auto_triage"], true);
    assert_eq!(inc["playbook"], "phishing_triage");
    let (s, v) = app.deliver("edr", edr_secret, CROWDSTRIKE).await;
    assert_accepted(s, &v);
    let (s, v) = app.deliver("edr", &format!("${{{edr_var}}}"), &generic_with_id("literal")).await;
    assert_error(s, &v, 401, "invalid_signature");
    let (s, v) = app.deliver("edr", email_secret, &generic_with_id("cross")).await;
    assert_error(s, &v, 401, "invalid_signature");

    // The API may not change config-managed sources.
    let (s, v) = app.admin(Method::PATCH, "/api/webhooks/edr", Some(json!({"enabled": false}))).await;
    assert_error(s, &v, 409, "managed_by_config");
    let (s, v) = app.admin(Method::DELETE, "/api/webhooks/edr", None).await;
    assert_error(s, &v, 409, "managed_by_config");
    let (s, v) = app.admin(Method::POST, "/api/webhooks/edr/rotate-secret", None).await;
    assert_error(s, &v, 409, "managed_by_config");
    assert!(!v.to_string().contains(edr_secret));
    let (s, v) = app.admin(Method::POST, "/api/webhooks", Some(json!({"source": "edr", "secret": "another-secret-1"}))).await;
    assert_error(s, &v, 409, "source_exists");
    // Still there and unchanged.
    let edr = get_ok(&app, "/api/webhooks/edr").await;
    assert_eq!(edr["enabled"], true);
    let (s, v) = app.deliver("edr", edr_secret, &generic_with_id("still-works")).await;
    assert_accepted(s, &v);
}

#[tokio::test]
async fn default_values_in_variables() {
    let set_var = "TWTEST_API_CFG_DEFAULT_SET_SECRET";
    let unset_var = "TWTEST_API_CFG_DEFAULT_UNSET_SECRET";
    // SAFETY: variable names unique to this test.
    unsafe {
        std::env::set_var(set_var, "value-from-the-env-42");
        std::env::remove_var(unset_var);
    }
    let yaml = format!(
        "sources:\n  withdefault:\n    secret: \"${{{unset_var}:-fallback-secret-123}}\"\n  overridden:\n    secret: \"${{{set_var}:-not-this-one-0}}\"\n    mode: async\n"
    );
    let cfg_dir = tempfile::tempdir().unwrap();
    let path = write(cfg_dir.path(), &yaml);
    let app = TestApp::spawn_with(|cfg| cfg.webhook_config = Some(path.clone())).await;

    let (s, v) = app.deliver("withdefault", "fallback-secret-123", SPLUNK).await;
    assert_accepted(s, &v);
    let (s, v) = app.deliver("overridden", "not-this-one-0", SPLUNK).await;
    assert_error(s, &v, 401, "invalid_signature");
    let (s, v) = app.deliver("overridden", "value-from-the-env-42", SPLUNK).await;
    assert_eq!(s, StatusCode::ACCEPTED, "mode: async from the file: {v}");
    assert_eq!(v["status"], "queued");
}

#[tokio::test]
async fn missing_variable_stops_start_up_naming_variable_and_source() {
    let var = "TWTEST_API_CFG_MISSING_NEVER_SET_SECRET";
    // SAFETY: a name unique to this test.
    unsafe { std::env::remove_var(var) };
    let yaml = spec_config("TWTEST_API_CFG_MISSING_OTHER_SECRET", var)
        .replace("TWTEST_API_CFG_MISSING_OTHER_SECRET}", "TWTEST_API_CFG_MISSING_OTHER_SECRET:-ok-secret-1234}");
    let cfg_dir = tempfile::tempdir().unwrap();
    let path = write(cfg_dir.path(), &yaml);
    let data = tempfile::tempdir().unwrap();
    let mut cfg = tw_server::ServerConfig::new(data.path().to_path_buf());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.webhook_config = Some(path.clone());
    let err = match tw_server::start(cfg).await {
        Ok(server) => {
            server.shutdown().await;
            panic!("start-up succeeded with {var} unset");
        }
        Err(e) => e.to_string(),
    };
    assert!(err.contains(var), "names the variable: {err}");
    assert!(err.contains("edr"), "names the source: {err}");
    assert!(err.contains("webhook_config.yaml"), "names the file: {err}");
}

#[tokio::test]
async fn invalid_config_file_stops_start_up_naming_file_line_and_key() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let path = write(cfg_dir.path(), "sources:\n  edr:\n    secret: abcdefgh-1234\n    playbook: no_such_book\n");
    let data = tempfile::tempdir().unwrap();
    let mut cfg = tw_server::ServerConfig::new(data.path().to_path_buf());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.webhook_config = Some(path);
    let err = match tw_server::start(cfg).await {
        Ok(server) => {
            server.shutdown().await;
            panic!("start-up succeeded with an unknown playbook");
        }
        Err(e) => e.to_string(),
    };
    assert!(err.contains("webhook_config.yaml:4") && err.contains("playbook"), "{err}");
}

/// A source taken out of the file is handed back to the API at the next start: it keeps working
/// and can be changed or deleted; the ones still in the file stay managed.
#[tokio::test]
async fn a_source_removed_from_the_file_is_released() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let both = "sources:\n  keepme:\n    secret: keep-secret-123\n  dropme:\n    secret: drop-secret-123\n";
    let path = write(cfg_dir.path(), both);
    let app = TestApp::spawn_with(|cfg| cfg.webhook_config = Some(path.clone())).await;
    let (s, v) = app.admin(Method::DELETE, "/api/webhooks/dropme", None).await;
    assert_error(s, &v, 409, "managed_by_config");
    let dir = app.stop().await;

    write(cfg_dir.path(), "sources:\n  keepme:\n    secret: keep-secret-123\n");
    let app = TestApp::spawn_in(dir, |cfg| cfg.webhook_config = Some(path.clone())).await;
    assert_eq!(get_ok(&app, "/api/webhooks/dropme").await["managed_by_config"], false);
    assert_eq!(get_ok(&app, "/api/webhooks/keepme").await["managed_by_config"], true);
    let (s, v) = app.deliver("dropme", "drop-secret-123", SPLUNK).await;
    assert_accepted(s, &v);
    let (s, v) = app.admin(Method::DELETE, "/api/webhooks/keepme", None).await;
    assert_error(s, &v, 409, "managed_by_config");
    let (s, _) = app.admin(Method::DELETE, "/api/webhooks/dropme", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
}
