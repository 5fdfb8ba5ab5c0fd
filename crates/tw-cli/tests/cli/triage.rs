use crate::support::*;

// End-to-end tests of triage from the command line: the real `tw-cli serve` in a subprocess on
// a free port with its own temp data dir, and `tw-cli playbook|triage|intel|incident` as a user
// types them. Every wait is a poll with a generous deadline.

use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "triage-cli-secret-0123456789";
const CS_SHA256: &str = "2fd727cc4f93d6122e0c77bbaa05fa82793404156aba313d82bc39adfb049d0f";
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// A server with an admin and a read key (created before it starts) and its own intel dir.
struct Env {
    tmp: tempfile::TempDir,
    server: ServerProcess,
    admin: String,
    read: String,
}

impl Env {
    /// `serve --intel-dir TMP/intel` plus `extra`; the intel dir holds [`write_intel`] first.
    fn start(extra: &[&str], bad_hashes: &str) -> Env {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data = tmp.path().join("data");
        let intel = tmp.path().join("intel");
        write_intel(&intel, bad_hashes);
        let admin = new_key(&data, "admin");
        let read = new_key(&data, "read");
        let mut args = vec!["--intel-dir", intel.to_str().unwrap()];
        args.extend_from_slice(extra);
        let server = ServerProcess::start(&data, &args, &[]);
        Env { tmp, server, admin, read }
    }

    fn cli(&self, args: &[&str]) -> Output {
        cli(&self.server.url, Some(&self.admin), args)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Writes `text` to a file in the temp dir; its path as text.
    fn file(&self, name: &str, text: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }

    fn incident_total(&self, extra: &[&str]) -> u64 {
        let mut args = vec!["incident", "list", "-o", "json"];
        args.extend_from_slice(extra);
        let v = ok_json(self.cli(&args));
        v["meta"]["total"].as_u64().unwrap_or_else(|| panic!("no meta.total: {v}"))
    }
}

fn write_intel(dir: &Path, bad_hashes: &str) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in [
        ("protected-domains.txt", "# our domains\nexample.com\n"),
        ("bad-ips.txt", "203.0.113.250\n"),
        ("bad-hashes.txt", bad_hashes),
        ("assets.yaml", "assets:\n  FS-02: {criticality: critical, owner: finance}\n"),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// Posts `body` signed with the test secret now, with curl.
fn deliver(url: &str, source: &str, body: &str) -> (u16, Value) {
    curl_deliver(url, source, SECRET, body)
}

/// Delivers and expects 201; the incident number.
fn deliver_created(url: &str, source: &str, body: &str) -> String {
    let (status, v) = deliver(url, source, body);
    assert_eq!(status, 201, "{v}");
    v["incident_number"].as_str().unwrap().to_string()
}

/// Polls `incident get ID -o json` until `done`; the last incident.
fn wait_incident(env: &Env, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let v = ok_json(env.cli(&["incident", "get", id, "-o", "json"]));
        if done(&v) {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "{what}: not reached within {DEADLINE:?}; last {v}\n{}", env.server.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Byte offset of `needle` in `hay`; panics when absent.
fn at(hay: &str, needle: &str) -> usize {
    hay.find(needle).unwrap_or_else(|| panic!("'{needle}' not in:\n{hay}"))
}

fn builtin_yaml(name: &str) -> &'static str {
    tw_core::triage::builtin_yaml(name).unwrap_or_else(|| panic!("no builtin {name}"))
}

const BROKEN: &str = r#"name: broken
description: three mistakes
version: "1"
steps:
  - name: Extract
    action: extract_indicators
    output: indicators
  - name: Extract
    action: extract_indicators
  - name: Magic
    action: do_magic
  - name: Lookup
    action: lookup_intel
    parameters:
      indicators: "{{ steps.nowhere.domains }}"
"#;

// ---------------------------------------------------------------------------------------------
// playbooks
// ---------------------------------------------------------------------------------------------

#[test]
fn playbook_list_get_export_validate() {
    let env = Env::start(&[], "");

    let table = ok(env.cli(&["playbook", "list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].contains("NAME") && lines[0].contains("ORIGIN"), "{table}");
    for name in ["phishing_triage", "malware_triage"] {
        let row = lines.iter().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} not listed:\n{table}"));
        assert!(row.contains("builtin"), "{row}");
    }
    let v = ok_json(env.cli(&["playbook", "list", "-o", "json"]));
    let names: Vec<&str> = v["data"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"phishing_triage") && names.contains(&"malware_triage"), "{v}");
    // A read key may list.
    ok(cli(&env.server.url, Some(&env.read), &["playbook", "list"]));

    let get = ok(env.cli(&["playbook", "get", "phishing_triage"]));
    for needle in ["phishing_triage", "1.0.0", "builtin", "Extract indicators", "extract_indicators", "Quarantine the message", "recommend"]
    {
        assert!(get.contains(needle), "'{needle}' missing:\n{get}");
    }
    let v = ok_json(env.cli(&["playbook", "get", "malware_triage", "-o", "json"]));
    assert_eq!(v["name"], "malware_triage");
    assert_eq!(v["builtin"], true);
    assert!(v["steps"].as_array().unwrap().iter().any(|s| s["name"] == "Isolate the host"), "{v}");
    fails(env.cli(&["playbook", "get", "no_such_playbook"]), &["not_found"]);

    let yaml = ok(env.cli(&["playbook", "export", "phishing_triage"]));
    assert_eq!(yaml.trim_end(), builtin_yaml("phishing_triage").trim_end(), "export prints the shipped YAML with its comments");
    let file = env.file("phishing.yaml", &yaml);
    let out = ok(env.cli(&["playbook", "validate", &file]));
    assert!(out.contains("valid") && out.contains("phishing_triage"), "{out}");
    // validate needs no server.
    let o = tw().args(["playbook", "validate", &file]).env("TW_URL", "http://127.0.0.1:9").output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let malware = env.file("malware.yaml", &ok(env.cli(&["playbook", "export", "malware_triage"])));
    ok(env.cli(&["playbook", "validate", &malware]));

    // A broken file: every error, with its step and field.
    let broken = env.file("broken.yaml", BROKEN);
    let err = fails(env.cli(&["playbook", "validate", &broken]), &[]);
    let line_of = |needles: &[&str]| -> String {
        err.lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .unwrap_or_else(|| panic!("no error line with {needles:?}:\n{err}"))
            .to_string()
    };
    line_of(&["step 'Extract'", "name", "duplicate"]);
    line_of(&["step 'Magic'", "action", "do_magic"]);
    line_of(&["step 'Lookup'", "parameters.indicators", "nowhere"]);
    for l in err.lines().filter(|l| l.contains("step '")) {
        assert!(l.starts_with(&broken), "each error names the file: {l}");
    }
    assert!(err.contains("error(s)"), "{err}");
    let o = env.cli(&["playbook", "validate", &broken, "-o", "json"]);
    assert!(!o.status.success(), "{}", show(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", show(&o)));
    assert_eq!(v["valid"], false);
    let errors: Vec<(String, String)> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["step"].as_str().unwrap_or("").to_string(), e["field"].as_str().unwrap().to_string()))
        .collect();
    for want in [("Extract", "name"), ("Magic", "action"), ("Lookup", "parameters.indicators")] {
        assert!(errors.contains(&(want.0.to_string(), want.1.to_string())), "{want:?} not in {errors:?}");
    }
    // Not YAML at all, and a missing file.
    let garbage = env.file("garbage.yaml", "name: [unclosed\n");
    fails(env.cli(&["playbook", "validate", &garbage]), &[]);
    fails(env.cli(&["playbook", "validate", &env.path("missing.yaml").to_string_lossy()]), &["missing.yaml"]);
    // The server refuses the broken one too.
    fails(env.cli(&["playbook", "add", &broken]), &["validation_error", "do_magic"]);
}

#[test]
fn user_playbook_add_use_delete_and_builtins_are_protected() {
    let env = Env::start(&[], &format!("{CS_SHA256}\n"));
    let mine = env.file("mine.yaml", &builtin_yaml("malware_triage").replace("name: malware_triage", "name: my_malware"));
    let out = ok(env.cli(&["playbook", "add", &mine]));
    assert!(out.contains("my_malware"), "{out}");
    fails(env.cli(&["playbook", "add", &mine]), &["playbook_exists"]);
    let list = ok(env.cli(&["playbook", "list"]));
    let row = list.lines().find(|l| l.starts_with("my_malware")).unwrap_or_else(|| panic!("{list}"));
    assert!(row.contains("api"), "{row}");
    // A read key cannot add.
    fails(cli(&env.server.url, Some(&env.read), &["playbook", "add", &mine]), &["forbidden"]);

    ok(env.cli(&["webhook", "add", "x", "--secret", SECRET, "--auto-triage", "true", "--playbook", "my_malware"]));
    let shown = ok_json(env.cli(&["webhook", "show", "x", "-o", "json"]));
    assert_eq!(shown["auto_triage"], true, "{shown}");
    assert_eq!(shown["playbook"], "my_malware", "{shown}");
    let list = ok(env.cli(&["playbook", "list"]));
    let row = list.lines().find(|l| l.starts_with("my_malware")).unwrap();
    assert!(row.contains(" x "), "used by x: {row}");

    // The source triages with it.
    let number = deliver_created(env.server.url.as_str(), "x", &crowdstrike_fixture());
    let inc = wait_incident(&env, &number, "triaged with my_malware", |v| v["triage"]["status"] == "completed");
    assert_eq!(inc["triage"]["playbook"], "my_malware", "{inc}");
    assert_eq!(inc["triage"]["verdict"], "malicious", "{inc}");

    fails(env.cli(&["playbook", "delete", "my_malware"]), &["playbook_in_use", "x"]);
    ok(env.cli(&["webhook", "remove", "x"]));
    let out = ok(env.cli(&["playbook", "delete", "my_malware"]));
    assert!(out.contains("my_malware"), "{out}");
    let list = ok(env.cli(&["playbook", "list"]));
    assert!(!list.contains("my_malware"), "{list}");
    fails(env.cli(&["playbook", "delete", "my_malware"]), &["not_found"]);

    // Built-ins cannot be deleted or shadowed.
    fails(env.cli(&["playbook", "delete", "phishing_triage"]), &["builtin_playbook"]);
    let shadow = env.file("shadow.yaml", builtin_yaml("phishing_triage"));
    fails(env.cli(&["playbook", "add", &shadow]), &["builtin_playbook"]);

    // A source naming an unknown playbook is refused (422).
    fails(
        env.cli(&["webhook", "add", "y", "--secret", SECRET, "--auto-triage", "true", "--playbook", "no_such_playbook"]),
        &["validation_error", "no_such_playbook"],
    );
    let sources = ok_json(env.cli(&["webhook", "list", "-o", "json"]));
    assert!(!sources.to_string().contains("\"y\""), "{sources}");
    let body = json!({"source": "y", "secret": SECRET, "auto_triage": true, "playbook": "no_such_playbook"}).to_string();
    let o = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg(format!("{}/api/webhooks", env.server.url))
        .args(["-H", &format!("Authorization: Bearer {}", env.admin), "-H", "Content-Type: application/json", "--data-binary", &body])
        .output()
        .unwrap();
    assert_eq!(stdout(&o).trim(), "422", "{}", show(&o));
}

#[test]
fn playbooks_dir_is_loaded_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("playbooks");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dir_phish.yaml"), builtin_yaml("phishing_triage").replace("name: phishing_triage", "name: dir_phish"))
        .unwrap();
    std::fs::write(dir.join("README.txt"), "not a playbook").unwrap();
    let data = tmp.path().join("data");
    let admin = new_key(&data, "admin");
    let server = ServerProcess::start(&data, &["--playbooks-dir", dir.to_str().unwrap()], &[]);
    let v = ok_json(cli(&server.url, Some(&admin), &["playbook", "list", "-o", "json"]));
    let p = v["data"].as_array().unwrap().iter().find(|p| p["name"] == "dir_phish").unwrap_or_else(|| panic!("dir_phish not listed: {v}"));
    assert_eq!(p["origin"], "dir", "{p}");
    assert_eq!(p["builtin"], false, "{p}");
    let table = ok(cli(&server.url, Some(&admin), &["playbook", "list"]));
    let row = table.lines().find(|l| l.starts_with("dir_phish")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("dir"), "{row}");
    // A source may use it.
    ok(cli(&server.url, Some(&admin), &["webhook", "add", "mail", "--secret", SECRET, "--auto-triage", "--playbook", "dir_phish"]));
    drop(server);

    // A broken file in the dir stops start-up, naming the file and the error.
    std::fs::write(dir.join("zz_broken.yaml"), BROKEN).unwrap();
    let log = tmp.path().join("broken-start.log");
    let mut child = tw()
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(&data)
        .arg("--playbooks-dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve with a broken playbook did not exit: {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("zz_broken.yaml") && err.contains("do_magic"), "{err}");
}

#[test]
fn playbook_test_prints_a_verdict_and_stores_nothing() {
    let env = Env::start(&[], &format!("{CS_SHA256}\n"));
    let data = env.file("phish.json", &phish("test-1"));
    let out = ok(env.cli(&["playbook", "test", "phishing_triage", "--data", &data]));
    for needle in ["verdict: MALICIOUS", "/100", "sender_lookalike_domain", "quarantine_email", "trace:", "Extract indicators"] {
        assert!(out.contains(needle), "'{needle}' missing:\n{out}");
    }
    assert!(at(&out, "verdict:") < at(&out, "findings (") && at(&out, "findings (") < at(&out, "recommended actions ("), "{out}");
    let v = ok_json(env.cli(&["playbook", "test", "phishing_triage", "--data", &data, "-o", "json"]));
    assert_eq!(v["triage"]["verdict"], "malicious", "{v}");
    let score = v["triage"]["score"].as_u64().unwrap();
    assert!((70..=100).contains(&score), "{v}");

    let cs = env.file("cs.json", &crowdstrike_fixture());
    let out = ok(env.cli(&["playbook", "test", "malware_triage", "--data", &cs, "--source-format", "crowdstrike"]));
    assert!(out.contains("verdict: MALICIOUS") && out.contains("isolate_host FS-02"), "{out}");
    // A read key may test.
    ok(cli(&env.server.url, Some(&env.read), &["playbook", "test", "malware_triage", "--data", &cs]));

    fails(env.cli(&["playbook", "test", "no_such_playbook", "--data", &data]), &["no_such_playbook"]);
    let bad = env.file("bad.json", "{not json");
    fails(env.cli(&["playbook", "test", "phishing_triage", "--data", &bad]), &["bad.json"]);

    assert_eq!(env.incident_total(&[]), 0, "playbook test stores nothing");
}

// ---------------------------------------------------------------------------------------------
// triage run, incident get
// ---------------------------------------------------------------------------------------------

#[test]
fn triage_run_wait_and_incident_get_print_verdict_first() {
    let env = Env::start(&[], "");
    ok(env.cli(&["webhook", "add", "mail", "--secret", SECRET]));
    let number = deliver_created(&env.server.url, "mail", &phish("run-1"));
    let inc = ok_json(env.cli(&["incident", "get", &number, "-o", "json"]));
    assert!(inc["triage"].is_null(), "{inc}");

    let out = ok(env.cli(&["triage", "run", "--incident", &number, "--playbook", "phishing_triage", "--wait"]));
    assert!(out.contains(&number), "{out}");
    assert!(out.contains("verdict: MALICIOUS"), "{out}");
    let score_at = at(&out, "score: ");
    let score: u64 = out[score_at + 7..].split('/').next().unwrap().trim().parse().unwrap_or_else(|_| panic!("no score in:\n{out}"));
    assert!((70..=100).contains(&score), "{out}");

    let inc = ok_json(env.cli(&["incident", "get", &number, "-o", "json"]));
    assert_eq!(inc["status"], "triaged", "{inc}");
    assert_eq!(inc["triage"]["score"], score, "{inc}");

    let text = ok(env.cli(&["incident", "get", &number]));
    let v = at(&text, "verdict: MALICIOUS");
    let s = at(&text, &format!("score: {score}/100"));
    let f = at(&text, "findings (");
    let r = at(&text, "recommended actions (");
    assert!(v < s && s < f && f < r, "verdict and score first, then findings, then recommendations:\n{text}");
    assert!(at(&text, "sender_lookalike_domain") > f && at(&text, "sender_lookalike_domain") < r, "{text}");
    assert!(at(&text, "quarantine_email") > r, "{text}");
    assert!(text.contains(PHISH_URL), "{text}");

    // Without --wait: queued, and it finishes.
    let out = ok(env.cli(&["triage", "run", "--incident", &number, "--playbook", "phishing_triage"]));
    assert!(out.contains("Queued") && out.contains(&number), "{out}");
    let v = ok_json(env.cli(&["triage", "run", "--incident", &number, "--playbook", "phishing_triage", "-o", "json"]));
    let job_id = v["job_id"].as_str().unwrap().to_string();
    wait_incident(&env, &number, "the last run finished", |i| {
        i["triage"]["job_id"] == job_id.as_str() && i["triage"]["status"] == "completed"
    });

    // Refusals: a read key, an unknown playbook, an unknown incident.
    fails(
        cli(&env.server.url, Some(&env.read), &["triage", "run", "--incident", &number, "--playbook", "phishing_triage"]),
        &["forbidden"],
    );
    fails(env.cli(&["triage", "run", "--incident", &number, "--playbook", "no_such_playbook"]), &["no_such_playbook"]);
    fails(env.cli(&["triage", "run", "--incident", "INC-2099-9999", "--playbook", "phishing_triage", "--wait"]), &["not_found"]);
    // The mail source has no playbook: one must be named.
    fails(env.cli(&["triage", "run", "--incident", &number]), &["playbook"]);
}

// ---------------------------------------------------------------------------------------------
// intel
// ---------------------------------------------------------------------------------------------

#[test]
fn intel_add_and_list() {
    let env = Env::start(&[], "");
    let out = ok(env.cli(&["intel", "add", "--list", "bad-domains", "evil.example"]));
    assert!(out.contains('1') && out.contains("bad-domains"), "{out}");
    let table = ok(env.cli(&["intel", "list"]));
    let row = table.lines().find(|l| l.starts_with("bad-domains")).unwrap_or_else(|| panic!("{table}"));
    assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["bad-domains", "1"], "{table}");
    let row = table.lines().find(|l| l.starts_with("protected-domains")).unwrap_or_else(|| panic!("{table}"));
    assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["protected-domains", "1"], "{table}");
    assert!(table.contains(&env.path("intel").display().to_string()), "{table}");
    let text = std::fs::read_to_string(env.path("intel").join("bad-domains.txt")).unwrap();
    assert!(text.lines().any(|l| l == "evil.example"), "{text}");

    // Again plus a new one: only the new one is added.
    let v = ok_json(env.cli(&["intel", "add", "--list", "bad-domains", "evil.example", "Other.Example", "-o", "json"]));
    assert_eq!(v["added"], 1, "{v}");
    let v = ok_json(env.cli(&["intel", "list", "-o", "json"]));
    assert_eq!(v["counts"]["bad-domains"], 2, "{v}");
    assert_eq!(v["counts"]["assets"], 1, "{v}");

    fails(env.cli(&["intel", "add", "--list", "no-such-list", "x"]), &["no-such-list"]);
    fails(cli(&env.server.url, Some(&env.read), &["intel", "add", "--list", "bad-ips", "192.0.2.1"]), &["forbidden"]);
    ok(cli(&env.server.url, Some(&env.read), &["intel", "list"]));
}

// ---------------------------------------------------------------------------------------------
// crash mid-run
// ---------------------------------------------------------------------------------------------

/// SIGKILL while the workers are busy, restart: every incident ends triaged once in effect (its
/// job completed, within its attempt limit, findings not duplicated). Whether a job was mid-run
/// at the kill depends on timing; the assertions hold either way. Jobs the killed process had
/// claimed are taken over when their lease (3 s here) runs out.
#[test]
fn sigkill_while_triaging_then_restart_finishes_every_job() {
    const N: usize = 150;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let intel = tmp.path().join("intel");
    write_intel(&intel, "");
    let admin = new_key(&data, "admin");
    let args = ["--intel-dir", intel.to_str().unwrap(), "--triage-workers", "2", "--claim-lease-secs", "3"];
    let mut server = ServerProcess::start(&data, &args, &[]);
    ok(cli(&server.url, Some(&admin), &["webhook", "add", "mail", "--secret", SECRET, "--auto-triage", "--playbook", "phishing_triage"]));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let url = server.url.clone();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in (0..N).collect::<Vec<_>>().chunks(25) {
            for &i in chunk {
                let (http, url) = (http.clone(), url.clone());
                tasks.spawn(async move { post_signed(&http, &url, "mail", SECRET, now(), phish(&format!("kill-{i}"))).await });
            }
            while let Some(r) = tasks.join_next().await {
                let (status, v) = r.unwrap();
                assert_eq!(status, 201, "{v}");
            }
        }
    });
    server.kill();

    let server = ServerProcess::start(&data, &args, &[]);
    let start = Instant::now();
    loop {
        let v = ok_json(cli(&server.url, Some(&admin), &["incident", "list", "--status", "triaged", "--per-page", "1", "-o", "json"]));
        if v["meta"]["total"] == N {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "not all triaged after the restart: {}\n{}", v["meta"], server.log());
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut jobs = HashSet::new();
    for page in ["1", "2"] {
        let v = ok_json(cli(&server.url, Some(&admin), &["incident", "list", "--per-page", "100", "--page", page, "-o", "json"]));
        assert_eq!(v["meta"]["total"], N, "{}", v["meta"]);
        for inc in v["data"].as_array().unwrap() {
            let t = &inc["triage"];
            assert_eq!(t["status"], "completed", "{inc}");
            let attempts = t["attempts"].as_u64().unwrap();
            assert!((1..=3).contains(&attempts), "{t}");
            let keys: Vec<(String, Option<String>)> = t["findings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| (f["rule"].as_str().unwrap().to_string(), f["indicator"].as_str().map(str::to_string)))
                .collect();
            assert_eq!(keys.iter().collect::<HashSet<_>>().len(), keys.len(), "duplicate findings: {keys:?}");
            assert_eq!(t["verdict"], "malicious", "{t}");
            jobs.insert(t["job_id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(jobs.len(), N, "one job per incident");
}

#[test]
fn intel_add_sets_asset_criticality_that_triage_uses() {
    let (_tmp, data) = workdir();
    std::fs::create_dir_all(data.join("intel")).unwrap();
    std::fs::write(data.join("intel/assets.yaml"), "assets:\n  ws-7: {criticality: low, owner: finance}\n").unwrap();
    let server = ServerProcess::start(&data, &[], &[]);
    let admin = new_key(&data, "admin");
    let run = |args: &[&str]| tw().env("TW_URL", &server.url).env("TW_API_KEY", &admin).args(args).output().unwrap();
    let out = ok(run(&["intel", "add", "--list", "assets", "FS-02=critical", "ws-7=High"]));
    assert!(out.contains("Added 2"), "{out}");
    let v = ok_json(run(&["intel", "list", "-o", "json"]));
    assert_eq!(v["counts"]["assets"], 2);
    // The rewritten file parses, keeps the owner, and has the new values.
    let text = std::fs::read_to_string(data.join("intel/assets.yaml")).unwrap();
    let assets = tw_core::triage::Intel::parse_assets(&text).unwrap();
    assert_eq!(assets["fs-02"].criticality, tw_core::triage::Criticality::Critical);
    assert_eq!(assets["ws-7"].criticality, tw_core::triage::Criticality::High);
    assert_eq!(assets["ws-7"].owner.as_deref(), Some("finance"));
    // Setting the same value again changes nothing; bad entries are refused with the reason.
    assert!(ok(run(&["intel", "add", "--list", "assets", "fs-02=critical"])).contains("Added 0"));
    fails(run(&["intel", "add", "--list", "assets", "fs-02"]), &["validation_error", "HOST=CRITICALITY"]);
    fails(run(&["intel", "add", "--list", "assets", "fs-02=urgent"]), &["validation_error", "criticality"]);
    // A CrowdStrike detection on FS-02 now meets a critical asset.
    let fixture = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures/vendors/crowdstrike-detection-summary-critical.json"),
    )
    .unwrap();
    let payload = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(payload.path(), fixture).unwrap();
    let out = ok(run(&["playbook", "test", "malware_triage", "--data", payload.path().to_str().unwrap()]));
    assert!(out.contains("asset_critical"), "{out}");
}
