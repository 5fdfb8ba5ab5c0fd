//! End-to-end tests of the `tw-cli` binary as a user runs it: the real `tw-cli serve` in a
//! subprocess on a free port with its own temp data dir, the CLI as another subprocess, and the
//! spec's shell recipes (bash + openssl + curl) run verbatim. The commands of everyday use here;
//! logs and metrics, triage and playbooks, several instances on one database, and the binary's
//! part in the hardening issue's defences in the modules named after them.
mod support;
use support::*;

mod browser;
mod hardening;
mod multi_instance;
mod observability;
mod schemathesis;
mod senders;
mod triage;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SPEC_SECRET: &str = "your-secret-key";
const SPEC_BODY: &str = r#"{"event_type":"security_alert","data":{"alert_id":"a-1","severity":"high"}}"#;

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// `tw-cli api-key create --name ci --scope SCOPE --data-dir DIR [extra]`.
fn api_key_create(data: &Path, scope: &str, extra: &[&str]) -> Output {
    tw().args(["api-key", "create", "--name", "ci", "--scope", scope, "--data-dir"])
        .arg(data)
        .args(extra)
        .output()
        .expect("run api-key create")
}

/// Runs a shell script with bash; its Output.
fn bash(script: &str) -> Output {
    Command::new("bash").arg("-c").arg(script).stdin(Stdio::null()).output().expect("run bash")
}

/// `incident list --output json` meta.total.
fn incident_total(url: &str, key: &str, extra: &[&str]) -> u64 {
    let mut args = vec!["incident", "list", "--output", "json"];
    args.extend_from_slice(extra);
    let v = ok_json(cli(url, Some(key), &args));
    v["meta"]["total"].as_u64().unwrap_or_else(|| panic!("no meta.total: {v}"))
}

/// Spawns `tw-cli serve` that is expected to stop by itself; waits (30 s at most) and returns
/// its exit status and stderr.
fn serve_expect_exit(tmp: &Path, args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    serve_expect_exit_on(free_port(), tmp, args, env)
}

/// [`serve_expect_exit`] listening on `port`.
fn serve_expect_exit_on(port: u16, tmp: &Path, args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let err_path = tmp.join(format!("serve-exit-{}.err", free_port()));
    let err_file = std::fs::File::create(&err_path).unwrap();
    let mut cmd = tw();
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(tmp.join("data"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(err_file)
        .env_remove("EMAIL_GATEWAY_SECRET")
        .env_remove("EDR_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve did not exit within 30 s: {}", std::fs::read_to_string(&err_path).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&err_path).unwrap_or_default())
}

/// A server with an admin key (created before the server starts) and a read key.
struct Env {
    _tmp: tempfile::TempDir,
    server: ServerProcess,
    admin: String,
}

fn env_with(extra: &[&str], env: &[(&str, &str)]) -> Env {
    let (tmp, data) = workdir();
    let admin = new_key(&data, "admin");
    let server = ServerProcess::start(&data, extra, env);
    Env { _tmp: tmp, server, admin }
}

impl Env {
    fn cli(&self, args: &[&str]) -> Output {
        cli(&self.server.url, Some(&self.admin), args)
    }
    fn url(&self) -> &str {
        &self.server.url
    }
}

fn year_ok(n: &str) -> bool {
    use chrono::Datelike;
    let y = chrono::Utc::now().year();
    [y - 1, y, y + 1].iter().any(|y| n.starts_with(&format!("INC-{y}-")))
}

// ---------------------------------------------------------------------------------------------
// 1. bootstrap
// ---------------------------------------------------------------------------------------------

#[test]
fn api_key_create_before_and_while_server_runs() {
    let (_tmp, data) = workdir();

    // Before the server ever started: one key on stdout, the notice on stderr.
    let o = api_key_create(&data, "admin", &[]);
    let out = ok(o.clone());
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one key on stdout:\n{}", show(&o));
    let admin = lines[0].trim().to_string();
    assert!(admin.starts_with("tw_") && admin.len() > 20, "{admin}");
    assert!(!stderr(&o).trim().is_empty(), "a notice on stderr:\n{}", show(&o));
    assert!(!stderr(&o).contains(&admin), "the key is printed on stdout only");

    let server = ServerProcess::start(&data, &[], &[]);
    let url = server.url.clone();

    // While the server runs on the same data dir: a read key, and an admin key as JSON.
    let read = new_key(&data, "read");
    assert_ne!(read, admin);
    let v = ok_json(api_key_create(&data, "admin", &["--output", "json"]));
    let admin2 = v["key"].as_str().unwrap_or_else(|| panic!("no key: {v}")).to_string();
    assert!(admin2.starts_with("tw_"), "{v}");

    // The key created before start works.
    ok(cli(&url, Some(&admin), &["webhook", "add", "email-gateway", "--secret", SPEC_SECRET]));
    // The admin key created while the server runs works.
    ok(cli(&url, Some(&admin2), &["webhook", "add", "edr", "--secret", "edr-secret-123"]));
    // The read key reads ...
    let list = ok(cli(&url, Some(&read), &["webhook", "list"]));
    assert!(list.contains("email-gateway") && list.contains("edr"), "{list}");
    ok(cli(&url, Some(&read), &["incident", "list"]));
    // ... but cannot write: one clear line.
    let line = fails_with(cli(&url, Some(&read), &["webhook", "add", "siem", "--secret", "siem-secret-123"]), &["forbidden", "admin"]);
    assert!(!line.contains(&read), "the key is not echoed: {line}");
    let list = ok(cli(&url, Some(&read), &["webhook", "list"]));
    assert!(!list.contains("siem"), "{list}");
}

// ---------------------------------------------------------------------------------------------
// 2. sources through the CLI
// ---------------------------------------------------------------------------------------------

#[test]
fn spec_cli_line_list_and_show() {
    let e = env_with(&[], &[]);

    // The spec's line, each argument a separate argv entry as the shell passes them.
    let out = ok(e.cli(&[
        "webhook",
        "add",
        "email-gateway",
        "--secret",
        "your-secret-key",
        "--auto-triage",
        "true",
        "--playbook",
        "phishing_triage",
    ]));
    assert!(out.contains("email-gateway"), "{out}");
    assert!(out.contains("phishing_triage"), "{out}");

    // The table.
    let list = ok(e.cli(&["webhook", "list"]));
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines[0].starts_with("SOURCE"), "header first:\n{list}");
    let row = lines.iter().find(|l| l.starts_with("email-gateway")).unwrap_or_else(|| panic!("no row:\n{list}"));
    assert_aligned(lines[0], row);
    assert!(row.contains("phishing_triage"), "{row}");
    assert!(!list.contains(SPEC_SECRET), "{list}");

    // JSON variants.
    let v = ok_json(e.cli(&["webhook", "list", "--output", "json"]));
    let data = v["data"].as_array().unwrap_or_else(|| panic!("data array: {v}"));
    assert_eq!(data.len(), 1, "{v}");
    assert_eq!(data[0]["source"], "email-gateway");
    assert!(!v.to_string().contains(SPEC_SECRET), "{v}");
    let v = ok_json(e.cli(&["-o", "json", "webhook", "show", "email-gateway"]));
    assert_eq!(v["source"], "email-gateway", "{v}");
    assert_eq!(v["auto_triage"], true, "{v}");
    assert_eq!(v["playbook"], "phishing_triage", "{v}");
    let fp = v["secret_fingerprint"].as_str().unwrap_or_else(|| panic!("fingerprint: {v}")).to_string();
    assert!(!fp.is_empty() && !fp.contains(SPEC_SECRET), "{v}");
    assert!(v.get("secret").is_none() && !v.to_string().contains(SPEC_SECRET), "{v}");

    // Human show: settings and the fingerprint, never the secret.
    let shown = ok(e.cli(&["webhook", "show", "email-gateway"]));
    for needle in ["email-gateway", "phishing_triage", "auto_triage", "secret_fingerprint", fp.as_str()] {
        assert!(shown.contains(needle), "show lacks {needle}:\n{shown}");
    }
    assert!(!shown.contains(SPEC_SECRET), "{shown}");
    let add_json = ok_json(e.cli(&["webhook", "add", "edr", "--secret", "edr-secret-123", "--output", "json"]));
    assert_eq!(add_json["source"], "edr", "{add_json}");
}

#[test]
fn incident_list_pages_with_the_cursor_it_prints() {
    let e = env_with(&[], &[]);
    ok(e.cli(&["webhook", "add", "email-gateway", "--secret", SPEC_SECRET]));
    // Its own secret: the server refuses a secret another source uses.
    ok(e.cli(&["webhook", "add", "edr", "--secret", "edr-secret-123"]));
    let mut delivered = Vec::new();
    for i in 1..=5 {
        let (src, secret) = if i == 3 { ("edr", "edr-secret-123") } else { ("email-gateway", SPEC_SECRET) };
        let body = format!(r#"{{"event_type":"security_alert","data":{{"alert_id":"page-{i}","severity":"medium"}}}}"#);
        let (status, v) = curl_deliver(e.url(), src, secret, &body);
        assert_eq!(status, 201, "{v}");
        delivered.push((src, v["incident_number"].as_str().unwrap().to_string()));
    }

    // The table ends with the command for the next page: run it as printed until there is none.
    let mut args: Vec<String> = ["incident", "list", "--source", "email-gateway", "--per-page", "2"].map(String::from).to_vec();
    let mut seen = Vec::new();
    for pages in 1.. {
        let out = ok(e.cli(&args.iter().map(String::as_str).collect::<Vec<_>>()));
        seen.extend(out.lines().filter(|l| l.starts_with("INC-")).map(|l| l.split_whitespace().next().unwrap().to_string()));
        let last = out.lines().last().unwrap_or_default();
        match last.strip_prefix("next page: tw-cli ") {
            Some(next) => {
                assert!(next.starts_with("incident list --source email-gateway --per-page 2 --cursor "), "{out}");
                args = next.split_whitespace().map(String::from).collect();
            }
            None => {
                assert_eq!(last, "4 incidents", "a page asked for by cursor has no number:\n{out}");
                break;
            }
        }
        assert!(pages < 10, "the cursor never ends:\n{out}");
    }
    let expected: Vec<String> = delivered.iter().rev().filter(|(s, _)| *s == "email-gateway").map(|(_, n)| n.clone()).collect();
    assert_eq!(seen, expected, "every incident of the source once, newest first");

    // JSON: the cursor is in the meta.
    let v = ok_json(e.cli(&["incident", "list", "--per-page", "3", "-o", "json"]));
    assert_eq!((v["meta"]["page"].as_u64(), v["meta"]["total"].as_u64()), (Some(1), Some(5)), "{v}");
    let cursor = v["meta"]["next_cursor"].as_str().unwrap_or_else(|| panic!("no next_cursor: {v}")).to_string();
    let rest = ok_json(e.cli(&["incident", "list", "--per-page", "3", "--cursor", &cursor, "-o", "json"]));
    let numbers: Vec<&str> = rest["data"].as_array().unwrap().iter().map(|i| i["incident_number"].as_str().unwrap()).collect();
    let oldest: Vec<&str> = delivered[..2].iter().rev().map(|(_, n)| n.as_str()).collect();
    assert_eq!(numbers, oldest, "{rest}");
    assert!(rest["meta"]["next_cursor"].is_null() && rest["meta"].get("page").is_none(), "{rest}");

    // A cursor that is not one, or with --page, is refused.
    fails_with(e.cli(&["incident", "list", "--cursor", "bogus"]), &["cursor"]);
    fails(e.cli(&["incident", "list", "--cursor", &cursor, "--page", "2"]), &["--page", "--cursor"]);
}

#[test]
fn incident_list_sorts_as_the_api_does_and_pages_keep_the_sort() {
    let e = env_with(&[], &[]);
    ok(e.cli(&["webhook", "add", "email-gateway", "--secret", SPEC_SECRET]));
    let mut delivered = Vec::new();
    for (i, severity) in ["low", "critical", "medium", "critical", "high"].iter().enumerate() {
        let body = format!(r#"{{"event_type":"security_alert","data":{{"alert_id":"sort-{i}","severity":"{severity}"}}}}"#);
        let (status, v) = curl_deliver(e.url(), "email-gateway", SPEC_SECRET, &body);
        assert_eq!(status, 201, "{v}");
        delivered.push((*severity, v["incident_number"].as_str().unwrap().to_string()));
    }
    let numbers = |out: &str| -> Vec<String> {
        out.lines().filter(|l| l.starts_with("INC-")).map(|l| l.split_whitespace().next().unwrap().to_string()).collect()
    };
    let n = |i: usize| delivered[i].1.clone();

    // As typed: most severe first, newest first within a severity.
    let out = ok(e.cli(&["incident", "list", "--sort", "severity"]));
    assert_eq!(numbers(&out), [n(3), n(1), n(4), n(2), n(0)], "{out}");
    let out = ok(e.cli(&["incident", "list", "--sort", "oldest"]));
    assert_eq!(numbers(&out), [n(0), n(1), n(2), n(3), n(4)], "{out}");
    let out = ok(e.cli(&["incident", "list", "--sort", "newest"]));
    assert_eq!(numbers(&out), [n(4), n(3), n(2), n(1), n(0)], "{out}");

    // Paged: the printed next-page command keeps --sort (a cursor belongs to its sort).
    let mut args: Vec<String> = ["incident", "list", "--sort", "severity", "--per-page", "2"].map(String::from).to_vec();
    let mut seen = Vec::new();
    for pages in 1.. {
        let out = ok(e.cli(&args.iter().map(String::as_str).collect::<Vec<_>>()));
        seen.extend(numbers(&out));
        match out.lines().last().unwrap_or_default().strip_prefix("next page: tw-cli ") {
            Some(next) => {
                assert!(next.starts_with("incident list --sort severity --per-page 2 --cursor "), "{out}");
                args = next.split_whitespace().map(String::from).collect();
            }
            None => break,
        }
        assert!(pages < 10, "the cursor never ends:\n{out}");
    }
    assert_eq!(seen, [n(3), n(1), n(4), n(2), n(0)]);

    // JSON, with a filter; a cursor sent with another sort and an unknown sort are refused.
    let v = ok_json(e.cli(&["incident", "list", "--sort", "severity", "--severity", "critical", "--per-page", "1", "-o", "json"]));
    assert_eq!((v["data"][0]["incident_number"].as_str(), v["meta"]["total"].as_u64()), (Some(n(3).as_str()), Some(2)), "{v}");
    let cursor = v["meta"]["next_cursor"].as_str().unwrap_or_else(|| panic!("no next_cursor: {v}")).to_string();
    fails_with(e.cli(&["incident", "list", "--cursor", &cursor]), &["sort"]);
    fails(e.cli(&["incident", "list", "--sort", "loudest"]), &["loudest", "newest", "oldest", "severity"]);
}

#[test]
fn add_settings_generated_secret_duplicate_rotate_remove() {
    let e = env_with(&[], &[]);

    // Settings are reflected; no --secret: a generated secret printed once.
    let out = ok(e.cli(&[
        "webhook",
        "add",
        "x",
        "--format",
        "crowdstrike",
        "--mode",
        "async",
        "--severity-map",
        "4=critical",
        "--severity-map",
        "5=critical",
    ]));
    for needle in ["crowdstrike", "async", "4=critical", "5=critical"] {
        assert!(out.contains(needle), "add output lacks {needle}:\n{out}");
    }
    let secret_line = out.lines().find(|l| l.trim_start().starts_with("secret ")).unwrap_or_else(|| panic!("no generated secret:\n{out}"));
    let generated = secret_line.split_whitespace().nth(1).unwrap().to_string();
    assert!(generated.len() >= 16, "{generated}");
    let v = ok_json(e.cli(&["webhook", "show", "x", "--output", "json"]));
    assert_eq!(v["format"], "crowdstrike", "{v}");
    assert_eq!(v["mode"], "async", "{v}");
    assert_eq!(v["severity_mapping"]["4"], "critical", "{v}");
    assert_eq!(v["severity_mapping"]["5"], "critical", "{v}");
    // Shown once: never again.
    assert!(!v.to_string().contains(&generated), "{v}");
    let shown = ok(e.cli(&["webhook", "show", "x"]));
    assert!(!shown.contains(&generated), "{shown}");
    let list = ok(e.cli(&["webhook", "list"]));
    assert!(!list.contains(&generated), "{list}");
    // The generated secret is the one the server verifies with.
    ok(e.cli(&["webhook", "test", "x", "--secret", &generated]));

    // Duplicate.
    ok(e.cli(&["webhook", "add", "email-gateway", "--secret", SPEC_SECRET]));
    fails_with(e.cli(&["webhook", "add", "email-gateway", "--secret", "another-secret"]), &["source_exists"]);

    // Rotate: a new secret, printed; it verifies (and the old one still does, grace period).
    let fp_before = ok_json(e.cli(&["webhook", "show", "email-gateway", "-o", "json"]))["secret_fingerprint"].clone();
    let out = ok(e.cli(&["webhook", "rotate-secret", "email-gateway"]));
    let lines: Vec<&str> = out.lines().collect();
    let i = lines.iter().position(|l| l.contains("New secret")).unwrap_or_else(|| panic!("{out}"));
    let new_secret = lines[i + 1].trim().to_string();
    assert!(new_secret.len() >= 16 && new_secret != SPEC_SECRET, "{out}");
    ok(e.cli(&["webhook", "test", "email-gateway", "--secret", &new_secret]));
    ok(e.cli(&["webhook", "test", "email-gateway", "--secret", SPEC_SECRET]));
    let fp_after = ok_json(e.cli(&["webhook", "show", "email-gateway", "-o", "json"]))["secret_fingerprint"].clone();
    assert_ne!(fp_before, fp_after);
    let shown = ok(e.cli(&["webhook", "show", "email-gateway"]));
    assert!(!shown.contains(&new_secret), "{shown}");
    let v = ok_json(e.cli(&["webhook", "rotate-secret", "email-gateway", "--secret", "chosen-secret-9", "-o", "json"]));
    assert!(v.to_string().contains("chosen-secret-9") || v["secret"].is_string(), "{v}");
    ok(e.cli(&["webhook", "test", "email-gateway", "--secret", "chosen-secret-9"]));

    // Remove.
    let out = ok(e.cli(&["webhook", "remove", "x"]));
    assert!(out.contains('x'), "{out}");
    fails_with(e.cli(&["webhook", "show", "x"]), &["unknown_source"]);
    let list = ok(e.cli(&["webhook", "list"]));
    assert!(!list.lines().any(|l| l.starts_with("x ")), "{list}");
    let (status, v) = curl_deliver(e.url(), "x", &generated, SPEC_BODY);
    assert_eq!(status, 404, "{v}");
    fails_with(e.cli(&["webhook", "remove", "x"]), &["unknown_source"]);
}

// ---------------------------------------------------------------------------------------------
// 3. webhook test
// ---------------------------------------------------------------------------------------------

#[test]
fn webhook_test_verifies_without_creating_incidents() {
    let e = env_with(&[], &[]);
    ok(e.cli(&["webhook", "add", "email-gateway", "--secret", SPEC_SECRET, "--auto-triage", "true", "--playbook", "phishing_triage"]));

    // The spec's "Verify Configuration" line.
    let out = ok(e.cli(&["webhook", "test", "email-gateway"]));
    let ok_lines = out.lines().filter(|l| l.starts_with("ok")).count();
    assert!(ok_lines >= 2, "ok lines expected:\n{out}");
    assert!(!out.contains("FAIL"), "{out}");
    assert!(!out.contains(SPEC_SECRET), "{out}");
    let v = ok_json(e.cli(&["webhook", "test", "email-gateway", "-o", "json"]));
    assert_eq!(v["ok"], true, "{v}");

    // The sender's secret, signed by the CLI.
    let out = ok(e.cli(&["webhook", "test", "email-gateway", "--secret", SPEC_SECRET]));
    assert!(out.to_lowercase().contains("ok"), "{out}");

    // A wrong secret: non-zero, one line with the reason.
    fails_with(e.cli(&["webhook", "test", "email-gateway", "--secret", "not-the-secret"]), &["invalid_signature"]);

    // Unknown source, both ways.
    fails_with(e.cli(&["webhook", "test", "nope"]), &["unknown_source"]);
    fails_with(e.cli(&["webhook", "test", "nope", "--secret", SPEC_SECRET]), &["unknown_source"]);

    // None of that created an incident.
    assert_eq!(incident_total(e.url(), &e.admin, &[]), 0);
}

// ---------------------------------------------------------------------------------------------
// 4. webhook sign + the printed curl command
// ---------------------------------------------------------------------------------------------

#[test]
fn webhook_sign_prints_a_curl_command_that_works() {
    let e = env_with(&[], &[]);
    ok(e.cli(&["webhook", "add", "email-gateway", "--secret", SPEC_SECRET, "--auto-triage", "true", "--playbook", "phishing_triage"]));

    let out = ok(e.cli(&["webhook", "sign", "email-gateway", "--secret", SPEC_SECRET, "--body", SPEC_BODY, "--url", e.url()]));
    let ts_line = out.lines().find(|l| l.starts_with("X-Webhook-Timestamp: ")).unwrap_or_else(|| panic!("{out}"));
    let sig_line = out.lines().find(|l| l.starts_with("X-Webhook-Signature: ")).unwrap_or_else(|| panic!("{out}"));
    let ts: i64 = ts_line["X-Webhook-Timestamp: ".len()..].trim().parse().unwrap();
    assert_eq!(sig_line["X-Webhook-Signature: ".len()..].trim(), signature(SPEC_SECRET, ts, SPEC_BODY.as_bytes()));
    let start = out.find("curl ").unwrap_or_else(|| panic!("no curl command:\n{out}"));
    let curl = out[start..].trim_end().to_string();
    assert!(curl.contains(&format!("{}/api/webhooks/email-gateway", e.url())), "{curl}");
    assert!(!curl.contains("localhost:8080"), "{curl}");
    assert!(!out.contains(SPEC_SECRET), "the secret itself is not printed:\n{out}");

    // Run it as printed (plus -sS and a status write-out appended).
    let o = bash(&format!("{curl} -sS -w '\\nHTTP:%{{http_code}}'"));
    assert!(o.status.success(), "{}", show(&o));
    let (status, v) = split_status(&stdout(&o));
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["status"], "accepted", "{v}");
    let number = v["incident_number"].as_str().unwrap().to_string();
    let id = v["incident_id"].as_str().unwrap().to_string();
    assert!(number.ends_with("-0001") && year_ok(&number), "{number}");

    // Listed, and readable by number and by uuid.
    let list = ok(e.cli(&["incident", "list"]));
    let header = list.lines().next().unwrap();
    assert!(header.starts_with("NUMBER"), "{list}");
    let row = list.lines().find(|l| l.starts_with(&number)).unwrap_or_else(|| panic!("{list}"));
    assert_aligned(header, row);
    assert!(row.contains("high") && row.contains("email-gateway"), "{row}");
    let v = ok_json(e.cli(&["incident", "list", "--source", "email-gateway", "-o", "json"]));
    assert_eq!(v["meta"]["total"], 1, "{v}");

    // Without --url/TW_URL the command targets the default http://localhost:8080; with only the
    // host:port replaced it works too.
    let body2 = r#"{"event_type":"security_alert","data":{"alert_id":"a-2","severity":"low"}}"#;
    let out = ok(tw().args(["webhook", "sign", "email-gateway", "--secret", SPEC_SECRET, "--body", body2]).output().unwrap());
    let start = out.find("curl ").unwrap_or_else(|| panic!("no curl command:\n{out}"));
    let curl = out[start..].trim_end().to_string();
    assert!(curl.contains("http://localhost:8080/api/webhooks/email-gateway"), "{curl}");
    let curl = curl.replace("localhost:8080", &format!("127.0.0.1:{}", e.server.port));
    let (status, v2) = split_status(&stdout(&bash(&format!("{curl} -sS -w '\\nHTTP:%{{http_code}}'"))));
    assert_eq!(status, 201, "{v2}");
    assert!(v2["incident_number"].as_str().unwrap().ends_with("-0002"), "{v2}");
    // JSON output of sign.
    let j = ok_json(e.cli(&[
        "webhook",
        "sign",
        "email-gateway",
        "--secret",
        SPEC_SECRET,
        "--body",
        body2,
        "--timestamp",
        "1705320000",
        "-o",
        "json",
    ]));
    assert_eq!(j["timestamp"], "1705320000", "{j}");
    assert_eq!(j["signature"], signature(SPEC_SECRET, 1705320000, body2.as_bytes()), "{j}");
    assert!(j["curl"].as_str().unwrap_or_default().starts_with("curl "), "{j}");

    let j = ok_json(e.cli(&["incident", "get", &number, "-o", "json"]));
    assert_eq!(j["id"], id.as_str(), "{j}");
    assert_eq!(j["severity"], "high", "{j}");
    let title = j["title"].as_str().unwrap_or_default().to_string();
    assert!(!title.is_empty(), "{j}");
    for who in [&number, &id] {
        let shown = ok(e.cli(&["incident", "get", who]));
        for needle in [number.as_str(), id.as_str(), "high", title.as_str(), "a-1", "email-gateway"] {
            assert!(shown.contains(needle), "incident get {who} lacks {needle}:\n{shown}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. the spec's shell recipes, verbatim
// ---------------------------------------------------------------------------------------------

#[test]
fn spec_send_test_event_recipe_verbatim() {
    let e = env_with(&[], &[]);
    ok(e.cli(&["webhook", "add", "email-gateway", "--secret", "your-secret"]));
    let port = e.server.port;
    // Exactly the spec's recipe; only the port differs, and a status write-out is appended.
    let script = format!(
        r#"# Generate signature
TIMESTAMP=$(date +%s)
BODY='{{"event_type":"test","data":{{}}}}'
SIGNATURE=$(echo -n "${{TIMESTAMP}}.${{BODY}}" | openssl dgst -sha256 -hmac "your-secret")

# Send request
curl -X POST "http://localhost:{port}/api/webhooks/email-gateway" \
  -H "Content-Type: application/json" \
  -H "X-Webhook-Signature: sha256=${{SIGNATURE}}" \
  -H "X-Webhook-Timestamp: ${{TIMESTAMP}}" \
  -d "${{BODY}}" -s -w '\nHTTP:%{{http_code}}'
"#
    );
    assert!(script.contains(r#"BODY='{"event_type":"test","data":{}}'"#));
    let o = bash(&script);
    assert!(o.status.success(), "{}", show(&o));
    let (status, v) = split_status(&stdout(&o));
    assert_eq!(status, 201, "{v}\n{}", show(&o));
    assert_eq!(v["status"], "accepted", "{v}");
    assert_eq!(incident_total(e.url(), &e.admin, &[]), 1);
}

#[test]
fn spec_register_via_api_curl_verbatim() {
    let e = env_with(&[], &[]);
    let port = e.server.port;
    let key = &e.admin;
    // The spec's "Via API" example: only port and key differ (no Content-Type, as written).
    let script = format!(
        r#"curl -X POST "http://localhost:{port}/api/webhooks" \
  -H "Authorization: Bearer {key}" \
  -d '{{
    "source": "email-gateway",
    "secret": "your-secret-key",
    "auto_triage": true,
    "playbook": "phishing_triage"
  }}' -s -w '\nHTTP:%{{http_code}}'
"#
    );
    let o = bash(&script);
    assert!(o.status.success(), "{}", show(&o));
    let (status, v) = split_status(&stdout(&o));
    assert_eq!(status, 201, "{v}");
    let shown = ok_json(e.cli(&["webhook", "show", "email-gateway", "-o", "json"]));
    assert_eq!(shown["auto_triage"], true, "{shown}");
    assert_eq!(shown["playbook"], "phishing_triage", "{shown}");
    ok(e.cli(&["webhook", "test", "email-gateway", "--secret", SPEC_SECRET]));
}

// ---------------------------------------------------------------------------------------------
// 6. errors as a user sees them
// ---------------------------------------------------------------------------------------------

#[test]
fn server_not_running_is_one_clear_line() {
    let url = format!("http://127.0.0.1:{}", free_port());
    for args in [
        vec!["webhook", "list"],
        vec!["webhook", "add", "email-gateway", "--secret", SPEC_SECRET],
        vec!["webhook", "test", "email-gateway"],
        vec!["webhook", "test", "email-gateway", "--secret", SPEC_SECRET],
        vec!["incident", "list"],
        vec!["incident", "get", "INC-2024-0001"],
        vec!["queue", "queue-abc123"],
    ] {
        let line = fails_with(cli(&url, Some("tw_notarealkey"), &args), &["cannot connect"]);
        assert!(line.contains(&url) || line.contains("127.0.0.1"), "names where: {line}");
    }
}

#[test]
fn auth_and_not_found_errors_are_one_clear_line() {
    let e = env_with(&[], &[]);
    ok(e.cli(&["webhook", "add", "email-gateway", "--secret", SPEC_SECRET]));
    let url = e.url();

    // No key: unauthorized and a hint how to give one.
    for args in [vec!["webhook", "list"], vec!["incident", "list"], vec!["webhook", "add", "edr", "--secret", "edr-secret-123"]] {
        let line = fails_with(cli(url, None, &args), &["unauthorized"]);
        assert!(line.contains("TW_API_KEY") || line.contains("--api-key"), "hint expected: {line}");
    }
    // Wrong key.
    fails_with(cli(url, Some("tw_thisisnotavalidkey0000000000"), &["webhook", "list"]), &["unauthorized"]);
    fails_with(cli(url, Some("garbage"), &["incident", "list"]), &["unauthorized"]);
    // Wrong key given by flag instead of env.
    fails_with(cli(url, None, &["--api-key", "tw_wrong", "webhook", "list"]), &["unauthorized"]);

    // Not found.
    fails_with(e.cli(&["incident", "get", "INC-2099-9999"]), &["not_found"]);
    fails_with(e.cli(&["incident", "get", "00000000-0000-4000-8000-000000000000"]), &["not_found"]);
    fails_with(e.cli(&["webhook", "show", "nope"]), &["unknown_source"]);
    fails_with(e.cli(&["queue", "queue-doesnotexist"]), &["not_found"]);

    // Bad input: a clear validation error, no panic.
    let o = e.cli(&["webhook", "add", "Bad Name!", "--secret", SPEC_SECRET]);
    assert!(!o.status.success(), "{}", show(&o));
    assert_no_panic(&o);
    assert!(stderr(&o).contains("validation_error"), "{}", show(&o));
}

// ---------------------------------------------------------------------------------------------
// 7. durability across SIGKILL
// ---------------------------------------------------------------------------------------------

#[test]
fn incidents_and_sources_survive_sigkill_and_numbers_are_not_reused() {
    let (_tmp, data) = workdir();
    let admin = new_key(&data, "admin");
    let mut server = ServerProcess::start(&data, &[], &[]);
    ok(cli(&server.url, Some(&admin), &["webhook", "add", "email-gateway", "--secret", SPEC_SECRET]));

    let mut numbers = Vec::new();
    for i in 1..=20 {
        let body = format!(r#"{{"event_type":"security_alert","data":{{"alert_id":"kill-{i}","severity":"medium"}}}}"#);
        let (status, v) = curl_deliver(&server.url, "email-gateway", SPEC_SECRET, &body);
        assert_eq!(status, 201, "delivery {i}: {v}");
        numbers.push(v["incident_number"].as_str().unwrap().to_string());
    }
    server.kill();

    let server = ServerProcess::start(&data, &[], &[]);
    let url = server.url.clone();
    let v = ok_json(cli(&url, Some(&admin), &["incident", "list", "--per-page", "100", "-o", "json"]));
    assert_eq!(v["meta"]["total"], 20, "{v}");
    let mut listed: Vec<String> =
        v["data"].as_array().unwrap().iter().map(|i| i["incident_number"].as_str().unwrap().to_string()).collect();
    listed.sort();
    let mut expected = numbers.clone();
    expected.sort();
    assert_eq!(listed, expected);
    for (i, n) in expected.iter().enumerate() {
        assert!(n.ends_with(&format!("-{:04}", i + 1)), "{expected:?}");
    }
    // The source and its secret survived.
    ok(cli(&url, Some(&admin), &["webhook", "test", "email-gateway"]));
    ok(cli(&url, Some(&admin), &["webhook", "test", "email-gateway", "--secret", SPEC_SECRET]));
    // The next number is 21.
    let (status, v) = curl_deliver(
        &url,
        "email-gateway",
        SPEC_SECRET,
        r#"{"event_type":"security_alert","data":{"alert_id":"after-restart","severity":"low"}}"#,
    );
    assert_eq!(status, 201, "{v}");
    assert!(v["incident_number"].as_str().unwrap().ends_with("-0021"), "{v}");
    // A re-delivery of an old alert is a duplicate, not a new incident.
    let (status, v) = curl_deliver(
        &url,
        "email-gateway",
        SPEC_SECRET,
        r#"{"event_type":"security_alert","data":{"alert_id":"kill-7","severity":"medium"}}"#,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["incident_number"], numbers[6].as_str(), "{v}");
    assert_eq!(incident_total(&url, &admin, &[]), 21);
}

#[test]
fn queued_events_survive_sigkill_and_are_processed_after_restart() {
    let (_tmp, data) = workdir();
    let admin = new_key(&data, "admin");
    let mut server = ServerProcess::start(&data, &["--queue-workers", "0"], &[]);
    ok(cli(&server.url, Some(&admin), &["webhook", "add", "edr", "--secret", "edr-secret-123", "--mode", "async"]));

    let mut queue_ids = Vec::new();
    for i in 1..=5 {
        let body = format!(r#"{{"event_type":"security_alert","data":{{"alert_id":"q-{i}","severity":"high"}}}}"#);
        let (status, v) = curl_deliver(&server.url, "edr", "edr-secret-123", &body);
        assert_eq!(status, 202, "delivery {i}: {v}");
        assert_eq!(v["status"], "queued", "{v}");
        assert_eq!(v["message"], "Event queued for processing", "{v}");
        let id = v["queue_id"].as_str().unwrap().to_string();
        assert!(id.starts_with("queue-"), "{v}");
        queue_ids.push(id);
    }
    // No workers: still pending.
    let v = ok_json(cli(&server.url, Some(&admin), &["queue", &queue_ids[0], "-o", "json"]));
    assert_eq!(v["status"], "pending", "{v}");
    assert_eq!(incident_total(&server.url, &admin, &["--source", "edr"]), 0);
    server.kill();

    let server = ServerProcess::start(&data, &[], &[]);
    let url = server.url.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let total = incident_total(&url, &admin, &["--source", "edr"]);
        if total == 5 {
            break;
        }
        assert!(total < 5, "more incidents than events: {total}");
        assert!(Instant::now() < deadline, "only {total} of 5 queued events became incidents in 30 s:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut numbers = std::collections::HashSet::new();
    for id in &queue_ids {
        // Processing finishes with the incident commit; allow the queue row a moment too.
        let deadline = Instant::now() + Duration::from_secs(30);
        let v = loop {
            let v = ok_json(cli(&url, Some(&admin), &["queue", id, "-o", "json"]));
            if v["status"] == "processed" || Instant::now() > deadline {
                break v;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(v["status"], "processed", "{v}");
        let n = v["incident_number"].as_str().unwrap_or_else(|| panic!("{v}")).to_string();
        assert!(n.starts_with("INC-"), "{v}");
        numbers.insert(n.clone());
        let table = ok(cli(&url, Some(&admin), &["queue", id]));
        assert!(table.contains("processed") && table.contains(&n), "{table}");
    }
    assert_eq!(numbers.len(), 5);
}

// ---------------------------------------------------------------------------------------------
// 8. config file
// ---------------------------------------------------------------------------------------------

const CONFIG_ENV: &[(&str, &str)] = &[("EMAIL_GATEWAY_SECRET", "email-secret-from-env"), ("EDR_SECRET", "edr-secret-from-env")];

fn check_config_sources(url: &str, admin: &str) {
    let list = ok(cli(url, Some(admin), &["webhook", "list"]));
    assert!(list.lines().any(|l| l.starts_with("email-gateway")), "{list}");
    assert!(list.lines().any(|l| l.starts_with("edr")), "{list}");
    for (name, playbook) in [("email-gateway", "phishing_triage"), ("edr", "malware_triage")] {
        let v = ok_json(cli(url, Some(admin), &["webhook", "show", name, "--output", "json"]));
        assert_eq!(v["managed_by_config"], true, "{v}");
        assert_eq!(v["auto_triage"], true, "{v}");
        assert_eq!(v["playbook"], playbook, "{v}");
        assert!(!v.to_string().contains("secret-from-env"), "{v}");
    }
    let v = ok_json(cli(url, Some(admin), &["webhook", "show", "email-gateway", "--output", "json"]));
    assert_eq!(v["severity_mapping"]["high"], "high", "{v}");
    // The secrets are the substituted environment values.
    ok(cli(url, Some(admin), &["webhook", "test", "email-gateway", "--secret", "email-secret-from-env"]));
    ok(cli(url, Some(admin), &["webhook", "test", "edr", "--secret", "edr-secret-from-env"]));
    fails_with(cli(url, Some(admin), &["webhook", "test", "edr", "--secret", "${EDR_SECRET}"]), &["invalid_signature"]);
    // Managed by the file: the API refuses to delete it.
    fails_with(cli(url, Some(admin), &["webhook", "remove", "edr"]), &["managed_by_config"]);
    fails_with(cli(url, Some(admin), &["webhook", "rotate-secret", "edr"]), &["managed_by_config"]);
    assert!(ok(cli(url, Some(admin), &["webhook", "list"])).lines().any(|l| l.starts_with("edr")));
}

#[test]
fn config_file_via_flag() {
    let (tmp, data) = workdir();
    let file = tmp.path().join("webhook_config.yaml");
    std::fs::write(&file, spec_config("EMAIL_GATEWAY_SECRET", "EDR_SECRET")).unwrap();
    let admin = new_key(&data, "admin");
    let server = ServerProcess::start(&data, &["--config", file.to_str().unwrap()], CONFIG_ENV);
    check_config_sources(&server.url, &admin);
    let (status, v) = curl_deliver(&server.url, "edr", "edr-secret-from-env", SPEC_BODY);
    assert_eq!(status, 201, "{v}");
}

#[test]
fn config_file_via_env_var() {
    let (tmp, data) = workdir();
    let file = tmp.path().join("webhook_config.yaml");
    std::fs::write(&file, spec_config("EMAIL_GATEWAY_SECRET", "EDR_SECRET")).unwrap();
    let admin = new_key(&data, "admin");
    let mut env = CONFIG_ENV.to_vec();
    env.push(("TW_WEBHOOK_CONFIG", file.to_str().unwrap()));
    let server = ServerProcess::start(&data, &[], &env);
    check_config_sources(&server.url, &admin);
}

#[test]
fn config_file_missing_variable_stops_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("webhook_config.yaml");
    std::fs::write(&file, spec_config("EMAIL_GATEWAY_SECRET", "EDR_SECRET")).unwrap();
    // EDR_SECRET is not set at all (serve_expect_exit removes it from the environment).
    let (status, err) =
        serve_expect_exit(tmp.path(), &["--config", file.to_str().unwrap()], &[("EMAIL_GATEWAY_SECRET", "email-secret-from-env")]);
    assert!(!status.success(), "{err}");
    assert!(err.contains("EDR_SECRET"), "names the variable: {err}");
    assert!(err.contains("edr"), "names the source: {err}");
    assert!(err.contains("webhook_config.yaml"), "names the file: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn config_file_invalid_yaml_stops_start_up_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        // Bad indentation: `auto_triage` is under-indented relative to `secret`.
        ("bad_indent.yaml", "sources:\n  edr:\n    secret: \"edr-secret-123\"\n   auto_triage: true\n", None),
        // An unknown key on line 4.
        ("unknown_key.yaml", "sources:\n  edr:\n    secret: \"edr-secret-123\"\n    colour: blue\n", Some(4)),
        // A bad value on line 4.
        ("bad_playbook.yaml", "sources:\n  edr:\n    secret: \"edr-secret-123\"\n    playbook: nope\n", Some(4)),
    ];
    for (name, text, line) in cases {
        let file = tmp.path().join(name);
        std::fs::write(&file, text).unwrap();
        let (status, err) = serve_expect_exit(tmp.path(), &["--config", file.to_str().unwrap()], &[]);
        assert!(!status.success(), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        let pos = err.find(name).unwrap_or_else(|| panic!("{name}: the message names the file: {err}"));
        // FILE:LINE
        let after = &err[pos + name.len()..];
        let digits: String = after.strip_prefix(':').unwrap_or("").chars().take_while(char::is_ascii_digit).collect();
        assert!(!digits.is_empty(), "{name}: a line number after the file name: {err}");
        if let Some(l) = line {
            assert_eq!(digits.parse::<u32>().unwrap(), l, "{name}: {err}");
        }
        if name == "unknown_key.yaml" {
            assert!(err.contains("colour"), "names the key: {err}");
        }
    }
}

/// Start-up errors are one line that says it once. Today `StartError::Config` / `Bind` use
/// `#[error("{0}")]`/`{source}` together with `#[from]`/`source`, and `main` prints `{e:#}`, which
/// appends the source chain: the message is printed twice on the same line.
#[test]
fn start_up_errors_are_printed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("webhook_config.yaml");
    std::fs::write(&file, spec_config("EMAIL_GATEWAY_SECRET", "EDR_SECRET")).unwrap();
    let (status, err) =
        serve_expect_exit(tmp.path(), &["--config", file.to_str().unwrap()], &[("EMAIL_GATEWAY_SECRET", "email-secret-from-env")]);
    assert!(!status.success());
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert_eq!(lines[0].matches("EDR_SECRET is not set").count(), 1, "said twice: {err}");

    // Port already in use.
    let (_tmp2, data) = workdir();
    let server = ServerProcess::start(&data, &[], &[]);
    let (status, err) = serve_expect_exit_on(server.port, tmp.path(), &[], &[]);
    assert!(!status.success());
    let line = err.lines().find(|l| l.contains("cannot listen")).unwrap_or_else(|| panic!("{err}"));
    assert_eq!(line.matches("Address already in use").count(), 1, "said twice: {line}");
}

// ---------------------------------------------------------------------------------------------
// 9. help
// ---------------------------------------------------------------------------------------------

#[test]
fn help_lists_commands_and_flags() {
    let top = ok(tw().arg("--help").output().unwrap());
    for c in ["serve", "api-key", "webhook", "incident", "queue", "--url", "--api-key", "--output"] {
        assert!(top.contains(c), "tw-cli --help lacks {c}:\n{top}");
    }
    let wh = ok(tw().args(["webhook", "--help"]).output().unwrap());
    for c in ["add", "list", "show", "remove", "rotate-secret", "test", "sign"] {
        assert!(wh.contains(c), "webhook --help lacks {c}:\n{wh}");
    }
    let add = ok(tw().args(["webhook", "add", "--help"]).output().unwrap());
    for f in ["--secret", "--auto-triage", "--playbook", "--format", "--mode", "--severity-map", "<SOURCE>"] {
        assert!(add.contains(f), "webhook add --help lacks {f}:\n{add}");
    }
    let serve = ok(tw().args(["serve", "--help"]).output().unwrap());
    for f in ["--listen", "--data-dir", "--database-url", "--config", "TW_WEBHOOK_CONFIG"] {
        assert!(serve.contains(f), "serve --help lacks {f}:\n{serve}");
    }
    let o = tw().args(["webhook", "frobnicate"]).output().unwrap();
    assert!(!o.status.success());
    assert_no_panic(&o);
}

/// The in-memory log buffer is bounded whatever the operator asks for: a query that matches
/// nothing reads every record kept.
#[test]
fn serve_refuses_more_log_records_than_it_can_search() {
    let (_tmp, data) = workdir();
    let o = tw().args(["serve", "--listen", "127.0.0.1:0", "--log-records", "1000000", "--data-dir"]).arg(&data).output().unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("--log-records") && err.contains("200000"), "{err}");
    assert_no_panic(&o);
    assert!(!data.exists(), "nothing is created before the flags are read");
}

// ---------------------------------------------------------------------------------------------
// 10. the benchmark (behaviour only: nothing here depends on how fast the machine is)
// ---------------------------------------------------------------------------------------------

/// `tw-cli bench ARGS -o json`: exits 0; its report.
fn bench_json(args: &[&str]) -> serde_json::Value {
    ok_json(tw().arg("bench").args(args).args(["-o", "json"]).output().expect("run tw-cli bench"))
}

/// A load run in the report: every one of `requests` answered `status`, percentiles in order.
fn assert_bench_run(run: &serde_json::Value, requests: u64, status: &str) {
    assert_eq!(run["requests"], requests, "{run}");
    assert_eq!(run["ok_2xx"], requests, "{run}");
    assert_eq!(run["failed"], 0, "{run}");
    assert_eq!(run["statuses"][status], requests, "{run}");
    assert_eq!(run["transport_errors"], serde_json::json!({}), "{run}");
    let ms = |q: &str| run["latency_ms"][q].as_f64().unwrap_or_else(|| panic!("no latency {q}: {run}"));
    assert!(ms("p50") > 0.0, "{run}");
    assert!(ms("p50") <= ms("p90") && ms("p90") <= ms("p99") && ms("p99") <= ms("p99_9") && ms("p99_9") <= ms("max"), "{run}");
    assert!(run["throughput_rps"].as_f64().unwrap_or(0.0) > 0.0, "{run}");
}

#[test]
fn bench_loads_the_real_server_and_the_floor_and_counts_every_incident() {
    let r = bench_json(&["--requests", "300", "--concurrency", "8"]);
    assert_bench_run(&r["product"], 300, "201");
    assert_eq!(r["incidents"], serde_json::json!({"ok": true, "acknowledged": 300, "stored": 300}));
    assert_bench_run(&r["floor"], 300, "201");
    assert!(r["ratio"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
    for run in ["product", "floor"] {
        assert!(r[run]["peak_rss_bytes"].as_u64().unwrap_or(0) > 0, "{run} has no peak RSS: {r}");
    }
    assert_eq!(r["settings"]["engine"], "sqlite");
    assert_eq!(r["settings"]["alert_ids"], "sequential");
    assert_eq!((r["ok"].clone(), r["failures"].clone()), (serde_json::json!(true), serde_json::json!([])));
}

#[test]
fn bench_async_mixed_formats_and_large_bodies_wait_for_the_queue() {
    let r = bench_json(&[
        "--format",
        "mixed",
        "--payload-bytes",
        "4096",
        "--mode",
        "async",
        "--alert-ids",
        "random",
        "--no-floor",
        "--requests",
        "200",
    ]);
    assert_bench_run(&r["product"], 200, "202");
    // Each 202 is only queued: the check counts after the queue has drained. Random ids in every
    // vendor's id field are as unique as sequential ones: one incident per delivery.
    assert_eq!(r["incidents"], serde_json::json!({"ok": true, "acknowledged": 200, "stored": 200}));
    assert_eq!(r["settings"]["alert_ids"], "random");
    assert!(r["floor"].is_null() && r["ratio"].is_null(), "{r}");
    let min = r["settings"]["body_bytes"]["min"].as_u64().unwrap_or(0);
    assert!((4000..=4200).contains(&min), "{r}");
}

#[test]
fn bench_loads_a_running_server_through_url_source_and_secret() {
    let e = env_with(&[], &[]);
    ok(e.cli(&["webhook", "add", "edr", "--secret", "edr-secret-0123456789"]));
    let o = tw()
        .args(["bench", "--no-floor", "--requests", "50", "--concurrency", "4", "--format", "crowdstrike", "-o", "json"])
        .args(["--url", e.url(), "--source", "edr", "--secret", "edr-secret-0123456789", "--api-key", &e.admin])
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_str(&ok(o)).unwrap();
    assert_bench_run(&r["product"], 50, "201");
    assert_eq!(r["incidents"], serde_json::json!({"ok": true, "acknowledged": 50, "stored": 50}));
    assert!(r["product"]["peak_rss_bytes"].is_null(), "not our child: {r}");
    assert_eq!(incident_total(e.url(), &e.admin, &["--source", "edr"]), 50);

    // A wrong secret is refused before any load, in the server's words.
    let o = tw().args(["bench", "--url", e.url(), "--source", "edr", "--secret", "wrong"]).output().unwrap();
    fails_with(o, &["invalid_signature"]);
    // --url alone cannot say which source to load.
    fails_with(tw().args(["bench", "--url", e.url()]).output().unwrap(), &["--source", "--secret"]);
}

// ---------------------------------------------------------------------------------------------
// webhook reprocess
// ---------------------------------------------------------------------------------------------

/// After a source's mapping changes, `webhook reprocess` updates its incidents in place (same
/// numbers, new titles, none added), and a second run finds nothing to change.
#[test]
fn webhook_reprocess_applies_a_new_mapping_to_stored_incidents() {
    let e = env_with(&[], &[]);
    ok(e.cli(&["webhook", "add", "edr", "--secret", SPEC_SECRET]));
    let mut numbers = Vec::new();
    for n in 1..=2 {
        let body = format!(
            r#"{{"event_type":"security_alert","data":{{"alert_id":"g-{n}","severity":"low"}},"alert":{{"name":"Mapped {n}","uid":"u-{n}"}}}}"#
        );
        let (status, v) = curl_deliver(e.url(), "edr", SPEC_SECRET, &body);
        assert_eq!(status, 201, "{v}");
        numbers.push(v["incident_number"].as_str().unwrap().to_string());
    }
    let patch = bash(&format!(
        r#"curl -s -o /dev/null -w '%{{http_code}}' -X PATCH -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' \
           -d '{{"mapping": {{"title": "/alert/name", "alert_id": "/alert/uid"}}}}' {}/api/webhooks/edr"#,
        e.admin,
        e.url()
    ));
    assert_eq!(stdout(&patch), "200", "{}", show(&patch));

    let out = ok(e.cli(&["webhook", "reprocess", "edr", "--since", "1h", "--dead-letters"]));
    assert!(out.contains("Reprocessed source 'edr'"), "{out}");
    assert!(out.contains("2 scanned, 2 updated, 0 unchanged, 0 conflicts, 0 failed"), "{out}");
    assert!(out.contains("dead letters: 0 scanned"), "{out}");

    let list = ok_json(e.cli(&["incident", "list", "--output", "json"]));
    assert_eq!(list["meta"]["total"], 2, "{list}");
    let mut seen: Vec<(String, String)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["incident_number"].as_str().unwrap().to_string(), i["title"].as_str().unwrap().to_string()))
        .collect();
    seen.sort();
    assert_eq!(seen, vec![(numbers[0].clone(), "Mapped 1".to_string()), (numbers[1].clone(), "Mapped 2".to_string())]);

    let v = ok_json(e.cli(&["webhook", "reprocess", "edr", "--output", "json"]));
    assert_eq!(v["incidents"]["updated"], 0, "{v}");
    assert_eq!(v["incidents"]["unchanged"], 2, "{v}");
    assert!(v.get("next").is_none(), "{v}");

    fails_with(e.cli(&["webhook", "reprocess", "nope"]), &["unknown_source"]);
    fails_with(e.cli(&["webhook", "reprocess", "edr", "--since", "yesterday"]), &["since"]);
}
