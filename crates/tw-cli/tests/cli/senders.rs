//! The senders a SOC really runs, against the real `tw-cli serve`, each connected the way its
//! operator would: `tw-cli webhook add --verification ...`, then the paste recipe it prints used
//! as written, with a delivery made by something we did not write: the official Standard
//! Webhooks library (PyPI `standardwebhooks`, via `scripts/standard-webhooks.py`), OpenSSL for a
//! GitHub-style signature, curl for static headers, Basic auth and a Splunk alert action's
//! token URL. A url-token's token never reaches the server's log, metrics or delivery records.
//!
//! Without the Python library the Standard Webhooks part says it skipped; `.ci/run` installs it
//! and sets `TW_TEST_REQUIRE_STANDARDWEBHOOKS`, where a missing library is a failure.

use crate::support::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// The line of `webhook add`'s recipe labelled `label`, its value.
fn recipe_value(out: &str, label: &str) -> String {
    out.lines()
        .skip_while(|l| !l.starts_with("Paste into the sending tool"))
        .find_map(|l| l.trim_start().strip_prefix(label).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no '{label}' in the recipe:\n{out}"))
}

/// curl POST of the file `body` to `url` with `headers`; (status, JSON).
fn curl(url: &str, headers: &[String], body: &std::path::Path) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", "POST", url, "-H", "Content-Type: application/json"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg("--data-binary").arg(format!("@{}", body.display())).args(["-w", "\n%{http_code}"]);
    split_status(&stdout(&cmd.output().expect("run curl")))
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/vendors").join(name)
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/standard-webhooks.py")
}

#[test]
fn each_sender_connects_with_the_recipe_webhook_add_prints() {
    let (tmp, data) = workdir();
    let server = ServerProcess::start(&data, &[], &[]);
    let key = new_key(&data, "admin");
    let url = server.url.clone();
    let tw = |args: &[&str]| cli(&url, Some(&key), args);

    // Splunk's alert action: nothing but a URL. The fixture is what Splunk posts.
    let out = ok(tw(&["webhook", "add", "splunk", "--verification", "url-token"]));
    let splunk_url = recipe_value(&out, "URL");
    let token = splunk_url.rsplit('/').next().unwrap().to_string();
    assert!(splunk_url.starts_with(&format!("{url}/api/webhooks/splunk/")) && token.len() >= 32, "{out}");
    let (status, v) = curl(&splunk_url, &[], &fixture("splunk-alert-failed-login.json"));
    assert_eq!(status, 201, "{v}");
    let (status, v) = curl(&splunk_url, &[], &fixture("splunk-alert-failed-login.json"));
    assert_eq!((status, &v["duplicate"]), (200, &Value::Bool(true)), "a replay is counted, not a second incident: {v}");
    let wrong = format!("{url}/api/webhooks/splunk/not-the-token-0123456789");
    let (status, v) = curl(&wrong, &[], &fixture("splunk-alert-failed-login.json"));
    assert_eq!((status, v["error"]["code"].as_str()), (401, Some("invalid_signature")), "{v}");

    // Kibana's connector (and SentinelOne receivers): a static header.
    let kibana = ok(tw(&["webhook", "add", "kibana", "--token-header", "X-Api-Key"]));
    let header = format!("{}: {}", recipe_value(&kibana, "Header name"), recipe_value(&kibana, "Header value"));
    assert!(header.starts_with("X-Api-Key: "), "{kibana}");
    let (status, v) = curl(&format!("{url}/api/webhooks/kibana"), &[header], &fixture("elastic-security-alert.json"));
    assert_eq!(status, 201, "{v}");

    // A Sentinel Logic App with Basic authentication (curl -u).
    let out = ok(tw(&["webhook", "add", "sentinel", "--verification", "basic"]));
    let password = recipe_value(&out, "Password");
    let o = Command::new("curl")
        .args(["-sS", "-X", "POST", &format!("{url}/api/webhooks/sentinel"), "-u", &format!("logicapp:{password}")])
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", fixture("sentinel-incident.json").display()))
        .args(["-w", "\n%{http_code}"])
        .output()
        .unwrap();
    let (status, v) = split_status(&stdout(&o));
    assert_eq!(status, 201, "{v}");

    // A GitHub-style sender, signed by OpenSSL over the raw body.
    let out = ok(tw(&["webhook", "add", "gh", "--verification", "github"]));
    let secret = recipe_value(&out, "Secret");
    let body = fixture("sentinelone-threat.json");
    let o = Command::new("openssl").args(["dgst", "-sha256", "-hmac", &secret]).arg(&body).output().expect("openssl");
    let digest = stdout(&o).trim().rsplit(' ').next().unwrap().to_string();
    assert_eq!(digest.len(), 64, "{}", show(&o));
    let (status, v) = curl(&format!("{url}/api/webhooks/gh"), &[format!("X-Hub-Signature-256: sha256={digest}")], &body);
    assert_eq!(status, 201, "{v}");
    let (status, v) = curl(&format!("{url}/api/webhooks/gh"), &[format!("X-Hub-Signature-256: sha256={}", "0".repeat(64))], &body);
    assert_eq!((status, v["error"]["code"].as_str()), (401, Some("invalid_signature")), "{v}");

    // `webhook test` passes for every scheme, server-side and with the sender's secret.
    for source in ["splunk", "kibana", "sentinel", "gh"] {
        let out = ok(tw(&["webhook", "test", source]));
        assert!(out.contains("is ready to receive webhooks"), "{out}");
    }
    ok(tw(&["webhook", "test", "splunk", "--secret", &token]));
    ok(tw(&["webhook", "test", "gh", "--secret", &secret]));
    // The sender's side needs no API key when it names the scheme.
    ok(cli(
        &url,
        None,
        &[
            "webhook",
            "test",
            "kibana",
            "--secret",
            &recipe_value(&kibana, "Header value"),
            "--verification",
            "header-token",
            "--token-header",
            "X-Api-Key",
        ],
    ));
    let o = tw(&["webhook", "test", "sentinel", "--secret", "not-the-password-0123"]);
    assert!(!o.status.success() && stderr(&o).contains("invalid_signature"), "{}", show(&o));

    // The token was in a URL the server read: it is nowhere the server writes.
    let events = ok(tw(&["webhook", "events", "splunk", "--output", "json"]));
    let metrics = Command::new("curl").args(["-sS", &format!("{url}/metrics")]).output().unwrap();
    let logs = ok(tw(&["logs", "--tail", "500", "--output", "json"]));
    let mut written = server.log();
    drop(server);
    for entry in walk(&data) {
        written.push_str(&String::from_utf8_lossy(&std::fs::read(entry).unwrap_or_default()));
    }
    // Not vacuous: the places looked at do record the deliveries.
    assert!(events.contains("invalid_signature") && written.contains("splunk"), "{events}");
    for (what, text) in [("events", events), ("metrics", stdout(&metrics)), ("logs", logs), ("data dir and server log", written)] {
        assert!(!text.contains(&token), "the url-token appears in the {what}");
    }
    drop(tmp);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn standard_webhooks_agrees_with_the_official_library_byte_for_byte() {
    let probe = Command::new("python3").arg(script()).arg("--help").output();
    if probe.as_ref().map_or(true, |o| o.status.code() == Some(3) || o.status.code().is_none()) {
        let why = "python3 with the standardwebhooks package is needed: pip install standardwebhooks";
        assert!(std::env::var_os("TW_TEST_REQUIRE_STANDARDWEBHOOKS").is_none(), "required (TW_TEST_REQUIRE_STANDARDWEBHOOKS) but {why}");
        println!("standard webhooks library test skipped: {why}");
        return;
    }
    let (tmp, data) = workdir();
    let server = ServerProcess::start(&data, &[], &[]);
    let key = new_key(&data, "admin");
    let url = server.url.clone();
    let tw = |args: &[&str]| cli(&url, Some(&key), args);
    let out = ok(tw(&["webhook", "add", "svix", "--verification", "standard-webhooks"]));
    let secret = recipe_value(&out, "Signing secret");
    assert!(secret.starts_with("whsec_"), "{out}");

    let sign = |msg_id: &str, ts: i64, body: &std::path::Path| {
        let o = Command::new("python3").arg(script()).args(["sign", &secret, msg_id, &ts.to_string()]).arg(body).output().unwrap();
        assert!(o.status.success(), "{}", show(&o));
        stdout(&o).trim().to_string()
    };
    let headers = |msg_id: &str, ts: i64, sig: &str| {
        vec![format!("webhook-id: {msg_id}"), format!("webhook-timestamp: {ts}"), format!("webhook-signature: {sig}")]
    };
    // Every vendor fixture, signed by the library, verifies and becomes an incident.
    let dir = fixture("");
    let mut names: Vec<_> =
        std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
    names.sort();
    for (i, body) in names.iter().enumerate() {
        let (msg_id, ts) = (format!("msg_{i:04}"), now());
        let (status, v) = curl(&format!("{url}/api/webhooks/svix"), &headers(&msg_id, ts, &sign(&msg_id, ts, body)), body);
        assert!(status == 201 || status == 200, "{}: {status} {v}", body.display());
    }
    // A tampered body, or a signature of another message id, is refused.
    let body = &names[0];
    let ts = now();
    let sig = sign("msg_a", ts, body);
    let (status, v) = curl(&format!("{url}/api/webhooks/svix"), &headers("msg_b", ts, &sig), body);
    assert_eq!((status, v["error"]["code"].as_str()), (401, Some("invalid_signature")), "{v}");

    // The other way: what `tw-cli webhook sign` makes, the library verifies.
    let body_file = tmp.path().join("body.json");
    std::fs::write(&body_file, r#"{"event_type":"security_alert","data":{"alert_id":"sw-1"}}"#).unwrap();
    let signed = ok_json(cli(
        &url,
        None,
        &[
            "webhook",
            "sign",
            "svix",
            "--verification",
            "standard-webhooks",
            "--secret",
            &secret,
            "--body",
            &format!("@{}", body_file.display()),
            "--output",
            "json",
        ],
    ));
    let h = &signed["headers"];
    let o = Command::new("python3")
        .arg(script())
        .args([
            "verify",
            &secret,
            h["webhook-id"].as_str().unwrap(),
            h["webhook-timestamp"].as_str().unwrap(),
            h["webhook-signature"].as_str().unwrap(),
        ])
        .arg(&body_file)
        .output()
        .unwrap();
    assert!(o.status.success(), "the official library refuses tw-cli's signature: {}", show(&o));
    drop(server);
}
