//! API keys (create, list, revoke, expiry, last use) with the CLI's key commands, `tw-cli audit
//! list`, and `tw-cli logs --follow` across the server's ends of a stream.
//!
//! The key commands work on the store directly, so they run against an in-process server's own
//! data dir (and its PostgreSQL database when the tests run there), while the server keeps
//! answering: a revocation or an expiry must be honoured by that running server at once.

use crate::support::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use tw_server::state::ManualClock;

/// The flags that name `app`'s store for `tw-cli api-key ...`.
fn store_flags(app: &TestApp) -> Vec<String> {
    let mut flags = vec!["--data-dir".to_string(), app.dir.path().display().to_string()];
    if let Some(url) = &app.database_url {
        flags.extend(["--database-url".to_string(), url.clone()]);
    }
    flags
}

/// `tw-cli ARGS <app's store flags>`.
fn tw_store(app: &TestApp, args: &[&str]) -> std::process::Output {
    tw().args(args).args(store_flags(app)).output().expect("run tw-cli")
}

/// The key named `name` in `GET /api/keys`.
async fn listed_key(app: &TestApp, name: &str) -> Value {
    let (status, v) = app.admin(Method::GET, "/api/keys", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["data"].as_array().unwrap().iter().find(|k| k["name"] == name).cloned().unwrap_or_else(|| panic!("no key '{name}' in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_listed_revoked_at_once_and_show_their_last_use() {
    let app = TestApp::spawn().await;
    let created =
        ok_json(tw_store(&app, &["api-key", "create", "--name", "ci-bot", "--scope", "read", "--expires-in", "90d", "-o", "json"]));
    let key = created["key"].as_str().unwrap().to_string();
    let prefix = created["prefix"].as_str().unwrap().to_string();
    assert!(key.starts_with(&prefix) && prefix.len() < key.len(), "{created}");

    // Listed with its scope, status and expiry; never the key.
    let list = tw_store(&app, &["api-key", "list", "-o", "json"]);
    let text = ok(list);
    assert!(!text.contains(&key), "the key itself is never listed:\n{text}");
    let listed: Value = serde_json::from_str(&text).unwrap();
    let k = listed["data"].as_array().unwrap().iter().find(|k| k["name"] == "ci-bot").expect("listed").clone();
    assert_eq!((k["prefix"].as_str(), k["scope"].as_str(), k["status"].as_str()), (Some(prefix.as_str()), Some("read"), Some("active")));
    let expires = chrono::DateTime::parse_from_rfc3339(k["expires_at"].as_str().unwrap()).unwrap();
    let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours() as f64 / 24.0;
    assert!((89.9..=90.0).contains(&days), "expires in {days} days");
    assert!(k["last_used_at"].is_null() && k["revoked_at"].is_null(), "{k}");
    let table = ok(tw_store(&app, &["api-key", "list"]));
    let header = table.lines().next().unwrap();
    for col in ["NAME", "PREFIX", "SCOPE", "STATUS", "CREATED", "EXPIRES", "LAST USED", "REVOKED"] {
        assert!(header.contains(col), "{table}");
    }
    let row = table.lines().find(|l| l.starts_with("ci-bot")).unwrap_or_else(|| panic!("{table}"));
    assert_aligned(header, row);
    assert!(row.contains(&prefix) && row.contains("active"), "{table}");

    // Used: accepted, and its last use shows (written off the request path, soon after).
    let (status, _) = app.with_key(&key, Method::GET, "/api/webhooks", None).await;
    assert_eq!(status, StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let k = listed_key(&app, "ci-bot").await;
        if !k["last_used_at"].is_null() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "last use never recorded: {k}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let k = ok_json(tw_store(&app, &["api-key", "list", "-o", "json"]));
    assert!(k.to_string().contains("last_used_at\":\"20"), "the CLI shows it too: {k}");

    // A second server on the same store (another instance behind the load balancer).
    let second = app.second_instance().await;
    let on_second = |key: &str| {
        let req = app.http.get(format!("http://{}/api/webhooks", second.addr)).bearer_auth(key);
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(on_second(&key).await, StatusCode::OK);

    // Revoked by name: both running servers refuse it on their very next request.
    let o = tw_store(&app, &["api-key", "revoke", "ci-bot"]);
    assert!(stderr(&o).contains("Revoked"), "{}", show(&o));
    ok(o);
    let (status, v) = app.with_key(&key, Method::GET, "/api/webhooks", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["code"], "unauthorized");
    assert_eq!(on_second(&key).await, StatusCode::UNAUTHORIZED);
    assert_eq!(on_second(&app.admin_key).await, StatusCode::OK);
    second.shutdown().await;
    let k = listed_key(&app, "ci-bot").await;
    assert_eq!(k["status"], "revoked");
    assert!(k["revoked_at"].is_string());
    // Other keys are untouched.
    assert_eq!(app.admin(Method::GET, "/api/webhooks", None).await.0, StatusCode::OK);

    // Revoking again changes nothing (and is not audited); an unknown key is an error.
    let again = tw_store(&app, &["api-key", "revoke", &prefix]);
    assert!(stderr(&again).contains("already revoked"), "{}", show(&again));
    ok(again);
    fails_with(tw_store(&app, &["api-key", "revoke", "nobody"]), &["no API key"]);

    // Both changes are in the audit log, by the CLI's user, with no address and no key.
    let records = audit(&app, "action=api_key").await;
    let actions: Vec<&str> = records.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["api_key.revoke", "api_key.create"], "{records:?}");
    for r in &records {
        assert_eq!(r["target"], prefix.as_str());
        assert_eq!(r["actor"]["kind"], "cli", "{r}");
        assert!(r["actor"]["user"].as_str().is_some_and(|u| !u.is_empty()), "{r}");
        assert!(r["client_ip"].is_null(), "{r}");
        assert!(!r.to_string().contains(&key), "the key is never recorded: {r}");
    }
    assert_eq!(records[0]["before"]["status"], "active");
    assert_eq!(records[0]["after"]["status"], "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_refused_saying_it_expired() {
    let clock = Arc::new(ManualClock::at(now()));
    let c = clock.clone();
    let app = TestApp::spawn_with(move |cfg| cfg.clock = c).await;
    let key =
        ok(tw_store(&app, &["api-key", "create", "--name", "short-lived", "--scope", "read", "--expires-in", "1h"])).trim().to_string();
    assert_eq!(app.with_key(&key, Method::GET, "/api/webhooks", None).await.0, StatusCode::OK);
    clock.set(now() + 3600 + 60);
    let (status, v) = app.with_key(&key, Method::GET, "/api/webhooks", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["code"], "unauthorized");
    assert!(v["error"]["message"].as_str().unwrap().contains("expired"), "{v}");
    assert_eq!(listed_key(&app, "short-lived").await["status"], "expired");
    // A key that would be born expired is refused by the CLI.
    fails_with(
        tw_store(&app, &["api-key", "create", "--name", "late", "--expires-at", "2020-01-01T00:00:00Z"]),
        &["--expires-at", "not in the future"],
    );
    fails(tw_store(&app, &["api-key", "create", "--name", "odd", "--expires-in", "99999999999d"]), &["--expires-in"]);
}

/// A valid user playbook named `audit_me`, ending in a comment line `# {version}`.
fn playbook(version: &str) -> String {
    let yaml = tw_core::triage::builtin_yaml("malware_triage").unwrap().replace("name: malware_triage", "name: audit_me");
    format!("{yaml}\n# {version}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_change_writes_one_record_without_secrets() {
    let proxies = tw_server::client::TrustedProxies::new(vec![tw_server::client::TrustedProxies::parse_cidr("127.0.0.1").unwrap()]);
    let app = TestApp::spawn_with(move |cfg| cfg.trusted_proxies = proxies).await;
    let admin_prefix = app.admin_key[..11].to_string();
    let secrets = ["audit-secret-one-0123456789", "audit-secret-two-0123456789", "audit-secret-three-0123456789"];
    let mut n = 0;
    let mut call = |key: &str, method: Method, path: &str, body: Option<Value>| {
        n += 1;
        let mut req = app
            .http
            .request(method, app.url(path))
            .bearer_auth(key)
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-request-id", format!("audit-req-{n}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move { into_json(req.send().await.unwrap()).await }
    };
    let admin = app.admin_key.clone();
    let ok_status = |s: StatusCode, v: &Value| assert!(s.is_success(), "{s}: {v}");

    let (s, v) = call(&admin, Method::POST, "/api/webhooks", Some(json!({"source": "mail", "secret": secrets[0]}))).await;
    ok_status(s, &v);
    let (s, v) = call(&admin, Method::PATCH, "/api/webhooks/mail", Some(json!({"enabled": false}))).await;
    ok_status(s, &v);
    let (s, v) = call(&admin, Method::POST, "/api/webhooks/mail/rotate-secret", Some(json!({"secret": secrets[1]}))).await;
    ok_status(s, &v);
    let (s, v) = call(&admin, Method::PATCH, "/api/webhooks/mail", Some(json!({"secret": secrets[2]}))).await;
    ok_status(s, &v);
    // Refused changes are not changes: no record.
    let (s, _) = call(&admin, Method::PATCH, "/api/webhooks/mail", Some(json!({"max_body_bytes": -1}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = call(&app.read_key, Method::DELETE, "/api/webhooks/mail", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = call(&admin, Method::POST, "/api/playbooks", Some(json!({"yaml": playbook("first")}))).await;
    ok_status(s, &v);
    let (s, v) = call(&admin, Method::PUT, "/api/playbooks/audit_me", Some(json!({"yaml": playbook("second")}))).await;
    ok_status(s, &v);
    let (s, v) = call(&admin, Method::DELETE, "/api/playbooks/audit_me", None).await;
    ok_status(s, &v);
    let (s, v) = call(&admin, Method::POST, "/api/intel/bad-domains", Some(json!({"indicators": ["evil.example"]}))).await;
    ok_status(s, &v);
    let (s, v) = call(&admin, Method::DELETE, "/api/webhooks/mail", None).await;
    ok_status(s, &v);

    let records = audit(&app, "").await;
    let got: Vec<(&str, &str)> = records.iter().map(|r| (r["action"].as_str().unwrap(), r["target"].as_str().unwrap())).collect();
    assert_eq!(
        got,
        [
            ("source.delete", "mail"),
            ("intel.add", "bad-domains"),
            ("playbook.delete", "audit_me"),
            ("playbook.put", "audit_me"),
            ("playbook.create", "audit_me"),
            ("source.update", "mail"),
            ("source.rotate_secret", "mail"),
            ("source.update", "mail"),
            ("source.create", "mail"),
        ],
        "exactly one record per change, newest first"
    );
    let raw = serde_json::to_string(&records).unwrap();
    for secret in secrets.iter().chain([&app.admin_key.as_str(), &app.read_key.as_str()]) {
        assert!(!raw.contains(secret), "a secret or key in the audit log: {raw}");
    }
    for r in &records {
        assert_eq!(r["actor"], json!({"kind": "api_key", "name": "test", "key_prefix": admin_prefix}), "{r}");
        assert_eq!(r["client_ip"], "203.0.113.7", "the address behind the trusted proxy: {r}");
        assert!(r["request_id"].as_str().is_some_and(|id| id.starts_with("audit-req-")), "{r}");
        assert!(r["id"].is_string() && r["at"].is_string(), "{r}");
    }
    let by = |action: &str| records.iter().rev().find(|r| r["action"] == action).unwrap();
    let create = by("source.create");
    assert!(create["before"].is_null() && create["after"]["secret_fingerprint"].is_string(), "{create}");
    let rotate = by("source.rotate_secret");
    assert_ne!(rotate["before"]["secret_fingerprint"], rotate["after"]["secret_fingerprint"], "{rotate}");
    let disable = by("source.update");
    assert_eq!((&disable["before"]["enabled"], &disable["after"]["enabled"]), (&json!(true), &json!(false)), "{disable}");
    let put = by("playbook.put");
    assert!(
        put["before"]["yaml"].as_str().unwrap().contains("first") && put["after"]["yaml"].as_str().unwrap().contains("second"),
        "{put}"
    );
    assert!(by("source.delete")["after"].is_null());
    assert_eq!(by("intel.add")["after"]["entries"], json!(["evil.example"]));

    // Filters and paging.
    assert_eq!(audit(&app, "action=source").await.len(), 5);
    assert_eq!(audit(&app, "action=source.update").await.len(), 2);
    assert_eq!(audit(&app, "target=audit_me").await.len(), 3);
    assert_eq!(audit(&app, "since=1h").await.len(), 9);
    assert!(audit(&app, "since=2999-01-01T00:00:00Z").await.is_empty());
    let paged = audit(&app, "per_page=2").await;
    assert_eq!(paged, records, "pages of 2 hold every record once, in order");
    for bad in ["since=99999999999d", "since=yesterday", "action=Source%27", "cursor=nope", "per_page=0"] {
        let (status, v) = app.admin(Method::GET, &format!("/api/audit?{bad}"), None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
        assert_eq!(v["error"]["details"][0]["field"], bad.split('=').next().unwrap(), "{v}");
    }

    // The audit log and the key list are for admins.
    for path in ["/api/audit", "/api/keys"] {
        let (status, v) = app.with_key(&app.read_key, Method::GET, path, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {v}");
        assert_eq!(app.with_key("", Method::GET, path, None).await.0, StatusCode::UNAUTHORIZED);
    }

    // `tw-cli audit list`, as an operator reads it.
    let table = ok(cli(&app.base, Some(&app.admin_key), &["audit", "list"]));
    let header = table.lines().next().unwrap();
    for col in ["TIME", "ACTION", "TARGET", "ACTOR", "ADDRESS", "REQUEST"] {
        assert!(header.contains(col), "{table}");
    }
    assert_eq!(table.lines().count(), 10, "{table}");
    let row = table.lines().find(|l| l.contains("source.rotate_secret")).unwrap_or_else(|| panic!("{table}"));
    assert_aligned(header, row);
    assert!(row.contains(&format!("test ({admin_prefix})")) && row.contains("203.0.113.7"), "{table}");
    let json = ok_json(cli(&app.base, Some(&app.admin_key), &["audit", "list", "--action", "playbook", "--since", "1d", "-o", "json"]));
    let actions: Vec<&str> = json["data"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["playbook.delete", "playbook.put", "playbook.create"], "{json}");
    fails_with(cli(&app.base, Some(&app.read_key), &["audit", "list"]), &["forbidden"]);
}

/// A log record saying `message`, as the server's own would be.
fn record(message: &str) -> tw_server::logs::LogRecord {
    tw_server::logs::LogRecord {
        ts: chrono::Utc::now(),
        level: "INFO".into(),
        target: "api".into(),
        message: message.into(),
        fields: Default::default(),
    }
}

/// Logs `name-1`, `name-2`, ... into `buffer` until the follower prints one (it may not be
/// listening yet); the lines it printed.
fn until_printed(buffer: &tw_server::logs::LogBuffer, lines: &std::sync::mpsc::Receiver<String>, name: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = Vec::new();
    for n in 1.. {
        assert!(std::time::Instant::now() < deadline, "the follower printed no {name} line; got {seen:?}");
        buffer.push(record(&format!("{name}-{n}")));
        while let Ok(l) = lines.recv_timeout(std::time::Duration::from_millis(300)) {
            seen.push(l);
        }
        if seen.iter().any(|l| l.contains(name)) {
            return seen;
        }
    }
    unreachable!()
}

/// The lines `out` gives, as they come.
fn lines_of(out: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_logs_follow_reconnects_after_an_hour_and_stops_when_its_key_is_revoked() {
    let clock = Arc::new(ManualClock::at(now()));
    let buffer = tw_server::logs::LogBuffer::new(100);
    let (c, b) = (clock.clone(), buffer.clone());
    let app = TestApp::spawn_with(move |cfg| {
        cfg.clock = c;
        cfg.log_buffer = Some(b);
    })
    .await;
    let key = ok(tw_store(&app, &["api-key", "create", "--name", "cli-tailer", "--scope", "admin"])).trim().to_string();
    let mut child = tw()
        .args(["logs", "--tail", "0", "--follow"])
        .env("TW_URL", &app.base)
        .env("TW_API_KEY", &key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tw-cli logs --follow");
    let lines = lines_of(child.stdout.take().unwrap());
    let notes = lines_of(child.stderr.take().unwrap());
    let b = buffer.clone();
    let (first, lines) = tokio::task::spawn_blocking(move || (until_printed(&b, &lines, "first"), lines)).await.unwrap();
    // An hour later the server ends the stream; the CLI connects again and repeats nothing.
    clock.set(now() + 3600 + 1);
    let note = notes.recv_timeout(std::time::Duration::from_secs(60)).expect("a note on stderr");
    assert!(note.contains("reconnecting"), "{note}");
    let b = buffer.clone();
    let (second, lines) = tokio::task::spawn_blocking(move || (until_printed(&b, &lines, "second"), lines)).await.unwrap();
    assert!(second.iter().all(|l| !l.contains("first")), "repeated: {second:?} after {first:?}");
    assert!(child.try_wait().unwrap().is_none(), "the follower stopped");
    // Revoked: the next look at the key ends the stream, and the CLI says why.
    ok(tw_store(&app, &["api-key", "revoke", "cli-tailer"]));
    clock.set(now() + 3600 + 1 + 31);
    let (status, rest) = tokio::task::spawn_blocking(move || (child.wait().unwrap(), notes.iter().collect::<Vec<_>>())).await.unwrap();
    drop(lines);
    assert!(!status.success(), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("no longer accepted")), "{rest:?}");
}
