//! Auto-triage through the HTTP API (in-process server on a free port): triage jobs created with
//! incidents, workers, restarts with pending jobs, a 1,000-job drain, on-demand runs, failures,
//! playbook validation on sources, and intel reloads.
//!
//! Every wait is a poll with a generous deadline, never an assumption about speed.

use crate::support::*;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "triage-secret-0123456789";
/// How long one triage may take before a test gives up.
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// payloads and intel (the cases tw-core/tests/core/triage_playbooks.rs proves)
// ---------------------------------------------------------------------------------------------

const CS_SHA256: &str = "2fd727cc4f93d6122e0c77bbaa05fa82793404156aba313d82bc39adfb049d0f";

/// A small generic alert with a unique id.
fn generic(alert_id: &str) -> String {
    json!({"event_type": "security_alert", "source": "it", "data": {"alert_id": alert_id, "severity": "low",
           "details": {"title": format!("alert {alert_id}"), "user": "alice@example.com"}}})
    .to_string()
}

/// Intel files for both playbooks: example.com protected, FS-02 critical; `bad_hashes` as given.
fn write_intel(dir: &Path, bad_hashes: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let files = [
        ("protected-domains.txt", "# our domains\nexample.com\n"),
        ("bad-domains.txt", "# known phishing kits\nevil.example\n"),
        ("bad-ips.txt", "203.0.113.250\n"),
        ("bad-urls.txt", "http://malware.example.org/drop.exe\n"),
        ("bad-hashes.txt", bad_hashes),
        ("assets.yaml", "assets:\n  FS-02: {criticality: critical, owner: finance}\n"),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// The intel dir of a data dir (as these tests lay it out).
fn intel_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("intel")
}

/// A server whose intel dir holds [`write_intel`] (with the CrowdStrike hash as bad), after `tweak`.
pub(crate) async fn spawn_triage(tweak: impl FnOnce(&mut tw_server::ServerConfig)) -> TestApp {
    TestApp::spawn_with(|cfg| {
        let dir = intel_dir(&cfg.data_dir);
        write_intel(&dir, &format!("# ransomware sample\n{}\n", CS_SHA256.to_uppercase()));
        cfg.intel_dir = Some(dir);
        tweak(cfg);
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// Each source's own secret: the server refuses a secret another source uses.
fn secret_for(source: &str) -> String {
    format!("{SECRET}-{source}")
}

async fn add_source(app: &TestApp, name: &str, extra: Value) {
    let mut body = json!({"source": name, "secret": secret_for(name)});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    app.add_source(body).await;
}

async fn get_ok(app: &TestApp, path: &str) -> Value {
    let (status, v) = app.admin(Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {v}");
    v
}

/// Delivers and checks the ordinary 201 intake answer; returns (id, number).
async fn deliver_created(app: &TestApp, source: &str, body: &str) -> (String, String) {
    let (status, v) = app.deliver(source, &secret_for(source), body).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["incident_id", "incident_number", "status"], "triage adds nothing to the intake answer: {v}");
    assert_eq!(v["status"], "accepted");
    (v["incident_id"].as_str().unwrap().to_string(), v["incident_number"].as_str().unwrap().to_string())
}

/// Waits until the incident's triage is finished (completed or failed); returns the incident.
async fn wait_triage(app: &TestApp, id: &str) -> Value {
    poll_until(app, &format!("/api/incidents/{id}"), &format!("triage of {id} finished"), DEADLINE, |v| {
        v["triage"]["status"] == "completed" || v["triage"]["status"] == "failed"
    })
    .await
}

/// Waits until job `job_id` is completed or failed; returns the job.
async fn wait_job(app: &TestApp, job_id: &str) -> Value {
    poll_until(app, &format!("/api/triage/jobs/{job_id}"), &format!("job {job_id} finished"), DEADLINE, |v| {
        v["status"] == "completed" || v["status"] == "failed"
    })
    .await
}

/// (rule, indicator) of every finding.
fn finding_keys(triage: &Value) -> Vec<(String, Option<String>)> {
    triage["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings array: {triage}"))
        .iter()
        .map(|f| (f["rule"].as_str().unwrap().to_string(), f["indicator"].as_str().map(str::to_string)))
        .collect()
}

fn assert_no_duplicate_findings(triage: &Value) {
    let keys = finding_keys(triage);
    let set: HashSet<_> = keys.iter().collect();
    assert_eq!(set.len(), keys.len(), "duplicate findings: {keys:?}");
}

fn ts(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}")))
        .unwrap_or_else(|e| panic!("{v}: {e}"))
        .to_utc()
}

/// The documented shape of a completed triage.
fn assert_completed_shape(t: &Value, playbook: &str) {
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["playbook"], playbook, "{t}");
    let verdict = t["verdict"].as_str().unwrap_or_else(|| panic!("no verdict: {t}"));
    assert!(["malicious", "suspicious", "benign", "inconclusive"].contains(&verdict), "{t}");
    let score = t["score"].as_u64().unwrap_or_else(|| panic!("score is not a whole number: {t}"));
    assert!(score <= 100, "{t}");
    for f in t["findings"].as_array().unwrap_or_else(|| panic!("no findings: {t}")) {
        assert!(f["rule"].as_str().is_some_and(|s| !s.is_empty()), "{f}");
        assert!(f["detail"].as_str().is_some_and(|s| !s.is_empty()), "{f}");
        assert!(f["weight"].is_i64() || f["weight"].is_u64(), "{f}");
        assert!(f.get("indicator").is_none_or(|i| i.is_string()), "{f}");
    }
    for r in t["recommended_actions"].as_array().unwrap_or_else(|| panic!("no recommended_actions: {t}")) {
        assert!(r["action"].as_str().is_some_and(|s| !s.is_empty()), "{r}");
        assert!(r["reason"].as_str().is_some_and(|s| !s.is_empty()), "{r}");
        assert!(r.get("target").is_none_or(|x| x.is_string()), "{r}");
    }
    let trace = t["trace"].as_array().unwrap_or_else(|| panic!("no trace: {t}"));
    assert!(!trace.is_empty(), "{t}");
    for s in trace {
        assert!(s["step"].is_string() && s["action"].is_string(), "{s}");
    }
    assert!(ts(&t["completed_at"]) >= ts(&t["started_at"]), "{t}");
    assert!(t["job_id"].as_str().is_some_and(|s| !s.is_empty()), "{t}");
}

fn recommends(t: &Value, action: &str, target: &str) -> bool {
    t["recommended_actions"].as_array().is_some_and(|a| a.iter().any(|r| r["action"] == action && r["target"] == target))
}

fn has_finding(t: &Value, rule: &str, indicator: &str) -> bool {
    finding_keys(t).contains(&(rule.to_string(), Some(indicator.to_string())))
}

// ---------------------------------------------------------------------------------------------
// 1. auto-triage results
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn lookalike_phish_on_auto_triage_source_is_triaged_malicious() {
    let app = spawn_triage(|_| {}).await;
    add_source(&app, "email-gateway", json!({"auto_triage": true, "playbook": "phishing_triage"})).await;
    let (id, number) = deliver_created(&app, "email-gateway", &phish("mail-7731")).await;

    let inc = wait_triage(&app, &id).await;
    let t = &inc["triage"];
    assert_completed_shape(t, "phishing_triage");
    assert_eq!(t["verdict"], "malicious", "{t}");
    assert!(t["score"].as_u64().unwrap() >= 70, "{t}");
    assert!(has_finding(t, "sender_lookalike_domain", "examp1e.com"), "{:?}", finding_keys(t));
    assert!(has_finding(t, "url_credential_keywords", PHISH_URL), "{:?}", finding_keys(t));
    assert!(has_finding(t, "url_lookalike_domain", PHISH_URL), "{:?}", finding_keys(t));
    assert!(recommends(t, "quarantine_email", "mail-7731"), "{}", t["recommended_actions"]);
    assert!(recommends(t, "block_sender", "it-support@examp1e.com"), "{}", t["recommended_actions"]);
    assert!(recommends(t, "block_url", PHISH_URL), "{}", t["recommended_actions"]);
    assert_no_duplicate_findings(t);
    assert_eq!(t["attempts"], 1, "{t}");
    // One trace entry per step of the playbook.
    let pb = get_ok(&app, "/api/playbooks/phishing_triage").await;
    assert_eq!(t["trace"].as_array().unwrap().len(), pb["steps"].as_array().unwrap().len(), "{}", t["trace"]);
    assert_eq!(inc["status"], "triaged", "{inc}");
    assert_eq!(inc["severity"], "high", "malicious phishing raises medium to high: {inc}");

    // The same via the incident number, and in the list.
    let by_number = get_ok(&app, &format!("/api/incidents/{number}")).await;
    assert_eq!(by_number["triage"]["verdict"], "malicious");
    let list = get_ok(&app, "/api/incidents?status=triaged").await;
    assert_eq!(list["meta"]["total"], 1, "{list}");
    assert_eq!(list["data"][0]["triage"]["verdict"], "malicious", "{list}");

    // The job behind it.
    let job = get_ok(&app, &format!("/api/triage/jobs/{}", t["job_id"].as_str().unwrap())).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(job["incident_id"], id.as_str(), "{job}");
    assert_eq!(job["playbook"], "phishing_triage", "{job}");
}

#[tokio::test]
async fn crowdstrike_bad_hash_on_critical_host_recommends_isolation() {
    let app = spawn_triage(|_| {}).await;
    add_source(&app, "edr", json!({"auto_triage": true, "playbook": "malware_triage"})).await;
    let (id, _) = deliver_created(&app, "edr", &crowdstrike_fixture()).await;

    let inc = wait_triage(&app, &id).await;
    let t = &inc["triage"];
    assert_completed_shape(t, "malware_triage");
    assert_eq!(t["verdict"], "malicious", "{t}");
    assert!(has_finding(t, "intel_bad_hash", CS_SHA256), "{:?}", finding_keys(t));
    assert!(has_finding(t, "asset_critical", "FS-02"), "{:?}", finding_keys(t));
    assert!(recommends(t, "isolate_host", "FS-02"), "{}", t["recommended_actions"]);
    assert!(recommends(t, "block_hash", CS_SHA256), "{}", t["recommended_actions"]);
    assert_no_duplicate_findings(t);
    assert_eq!(inc["status"], "triaged");
    assert_eq!(inc["severity"], "critical");
}

// ---------------------------------------------------------------------------------------------
// 2. no auto-triage
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn source_without_auto_triage_gets_no_triage() {
    let app = spawn_triage(|_| {}).await;
    add_source(&app, "plain", json!({})).await;
    add_source(&app, "with-playbook", json!({"auto_triage": false, "playbook": "phishing_triage"})).await;
    add_source(&app, "email-gateway", json!({"auto_triage": true, "playbook": "phishing_triage"})).await;
    let (plain, _) = deliver_created(&app, "plain", &phish("plain-1")).await;
    let (named, _) = deliver_created(&app, "with-playbook", &phish("named-1")).await;
    // An auto-triage incident delivered after them is triaged: the workers have had their chance.
    let (auto, _) = deliver_created(&app, "email-gateway", &phish("auto-1")).await;
    assert_eq!(wait_triage(&app, &auto).await["triage"]["status"], "completed");

    for id in [&plain, &named] {
        let inc = get_ok(&app, &format!("/api/incidents/{id}")).await;
        assert!(inc["triage"].is_null(), "{inc}");
        assert_eq!(inc["status"], "open", "{inc}");
        assert_eq!(inc["severity"], "medium", "{inc}");
    }
    let open = get_ok(&app, "/api/incidents?status=open").await;
    assert_eq!(open["meta"]["total"], 2, "{open}");
}

// ---------------------------------------------------------------------------------------------
// 3. restart with pending jobs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn pending_jobs_survive_a_restart_and_run_exactly_once() {
    const N: usize = 20;
    let app = spawn_triage(|cfg| cfg.triage_workers = 0).await;
    add_source(&app, "email-gateway", json!({"auto_triage": true, "playbook": "phishing_triage"})).await;
    let mut ids = Vec::new();
    for i in 0..N {
        let (id, _) = deliver_created(&app, "email-gateway", &phish(&format!("restart-{i}"))).await;
        ids.push(id);
    }
    let mut jobs = Vec::new();
    for id in &ids {
        let inc = get_ok(&app, &format!("/api/incidents/{id}")).await;
        assert_eq!(inc["triage"]["status"], "pending", "{inc}");
        assert_eq!(inc["triage"]["playbook"], "phishing_triage", "{inc}");
        assert_eq!(inc["status"], "open", "{inc}");
        let job_id = inc["triage"]["job_id"].as_str().unwrap_or_else(|| panic!("no job id: {inc}")).to_string();
        let job = get_ok(&app, &format!("/api/triage/jobs/{job_id}")).await;
        assert_eq!(job["status"], "pending", "{job}");
        assert_eq!(job["attempts"], 0, "{job}");
        jobs.push(job_id);
    }
    assert_eq!(jobs.iter().collect::<HashSet<_>>().len(), N);

    let dir = app.stop().await;
    let app = TestApp::spawn_in(dir, |cfg| cfg.intel_dir = Some(intel_dir(&cfg.data_dir))).await;
    poll_until(&app, "/api/incidents?status=triaged&per_page=1", "all 20 triaged after the restart", DEADLINE, |v| v["meta"]["total"] == N)
        .await;

    for (id, job_id) in ids.iter().zip(&jobs) {
        let inc = get_ok(&app, &format!("/api/incidents/{id}")).await;
        let t = &inc["triage"];
        assert_completed_shape(t, "phishing_triage");
        assert_eq!(t["job_id"], job_id.as_str(), "the job queued before the restart ran: {t}");
        assert_eq!(t["verdict"], "malicious", "{t}");
        assert_eq!(t["attempts"], 1, "{t}");
        assert_no_duplicate_findings(t);
        assert_eq!(inc["status"], "triaged");
        let job = get_ok(&app, &format!("/api/triage/jobs/{job_id}")).await;
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
    }
    let all = get_ok(&app, "/api/incidents?per_page=1").await;
    assert_eq!(all["meta"]["total"], N, "{all}");
}

// ---------------------------------------------------------------------------------------------
// 4. 1,000 jobs drain
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_queued_jobs_drain_with_none_lost_or_run_twice() {
    const N: usize = 1000;
    let app = spawn_triage(|cfg| cfg.triage_workers = 0).await;
    add_source(&app, "email-gateway", json!({"auto_triage": true, "playbook": "phishing_triage"})).await;

    let permits = Arc::new(tokio::sync::Semaphore::new(100));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let (http, base) = (app.http.clone(), app.base.clone());
        tasks.spawn(async move {
            let r =
                post_signed(&http, &base, "email-gateway", &secret_for("email-gateway"), now(), generic(&format!("drain-{i:04}"))).await;
            drop(permit);
            r
        });
    }
    while let Some(r) = tasks.join_next().await {
        let (status, v) = r.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    let pending = get_ok(&app, "/api/incidents?status=open&per_page=1").await;
    assert_eq!(pending["meta"]["total"], N, "no workers: all still open: {pending}");

    let dir = app.stop().await;
    let app = TestApp::spawn_in(dir, |cfg| cfg.intel_dir = Some(intel_dir(&cfg.data_dir))).await;
    poll_until(&app, "/api/incidents?status=triaged&per_page=1", "1,000 triaged", Duration::from_secs(120), |v| v["meta"]["total"] == N)
        .await;

    let mut job_ids = BTreeSet::new();
    let mut incident_ids = BTreeSet::new();
    for page in 1..=5 {
        let v = get_ok(&app, &format!("/api/incidents?per_page=200&page={page}")).await;
        assert_eq!(v["meta"]["total"], N, "{}", v["meta"]);
        for inc in v["data"].as_array().unwrap() {
            let t = &inc["triage"];
            assert_eq!(t["status"], "completed", "{inc}");
            assert_eq!(t["attempts"], 1, "{inc}");
            assert_eq!(inc["status"], "triaged", "{inc}");
            assert_no_duplicate_findings(t);
            incident_ids.insert(inc["id"].as_str().unwrap().to_string());
            job_ids.insert(t["job_id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(incident_ids.len(), N);
    assert_eq!(job_ids.len(), N, "one job per incident");

    // Every job: completed on its first attempt.
    let permits = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for job_id in job_ids {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let req = app.http.get(app.url(&format!("/api/triage/jobs/{job_id}"))).bearer_auth(&app.read_key);
        tasks.spawn(async move {
            let r = into_json(req.send().await.expect("request")).await;
            drop(permit);
            r
        });
    }
    let mut checked = 0;
    while let Some(r) = tasks.join_next().await {
        let (status, job) = r.unwrap();
        assert_eq!(status, StatusCode::OK, "{job}");
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
        assert!(incident_ids.contains(job["incident_id"].as_str().unwrap()), "{job}");
        checked += 1;
    }
    assert_eq!(checked, N);
}

// ---------------------------------------------------------------------------------------------
// 5. on demand
// ---------------------------------------------------------------------------------------------

fn assert_job_answer(v: &Value, id: &str, number: &str, playbook: &str) -> String {
    let mut keys: Vec<&str> = v.as_object().unwrap_or_else(|| panic!("{v}")).keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["incident_id", "incident_number", "job_id", "playbook", "status"], "{v}");
    assert_eq!(v["status"], "pending", "{v}");
    assert_eq!(v["incident_id"], id, "{v}");
    assert_eq!(v["incident_number"], number, "{v}");
    assert_eq!(v["playbook"], playbook, "{v}");
    v["job_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn on_demand_triage_runs_and_reruns_without_duplicating_findings() {
    let app = spawn_triage(|_| {}).await;
    add_source(&app, "email-gateway", json!({"auto_triage": true, "playbook": "phishing_triage"})).await;
    add_source(&app, "plain", json!({})).await;
    let (id, number) = deliver_created(&app, "email-gateway", &phish("ondemand-1")).await;
    let first = wait_triage(&app, &id).await["triage"].clone();
    assert_eq!(first["status"], "completed", "{first}");

    // Again with the source's playbook (no body), by number.
    let (status, v) = app.admin(Method::POST, &format!("/api/incidents/{number}/triage"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let job_id = assert_job_answer(&v, &id, &number, "phishing_triage");
    assert_ne!(job_id, first["job_id"].as_str().unwrap(), "a new job");
    let job = wait_job(&app, &job_id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(job["playbook"], "phishing_triage");
    let second = wait_triage(&app, &id).await["triage"].clone();
    assert_eq!(second["job_id"], job_id.as_str(), "{second}");
    assert_eq!(second["findings"], first["findings"], "a re-run gives the same findings, not more");
    assert_eq!(second["recommended_actions"], first["recommended_actions"]);
    assert_eq!((second["verdict"].clone(), second["score"].clone()), (first["verdict"].clone(), first["score"].clone()));
    assert_no_duplicate_findings(&second);

    // With an explicit playbook, by id.
    let (status, v) = app.admin(Method::POST, &format!("/api/incidents/{id}/triage"), Some(json!({"playbook": "malware_triage"}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let job_id = assert_job_answer(&v, &id, &number, "malware_triage");
    assert_eq!(wait_job(&app, &job_id).await["status"], "completed");
    let t = get_ok(&app, &format!("/api/incidents/{id}")).await["triage"].clone();
    assert_eq!(t["playbook"], "malware_triage", "{t}");
    assert_eq!(t["job_id"], job_id.as_str());

    // Variables overridable per run.
    let (status, v) = app
        .admin(
            Method::POST,
            &format!("/api/incidents/{id}/triage"),
            Some(json!({"playbook": "phishing_triage", "variables": {"thresholds": {"malicious": 200, "suspicious": 150}}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let job_id = v["job_id"].as_str().unwrap().to_string();
    assert_eq!(wait_job(&app, &job_id).await["status"], "completed");
    let t = get_ok(&app, &format!("/api/incidents/{id}")).await["triage"].clone();
    assert_eq!(t["verdict"], "inconclusive", "thresholds out of reach: {t}");
    assert_eq!(t["findings"], first["findings"]);

    // An open incident of a source without a playbook: the playbook must be named.
    let (plain_id, plain_number) = deliver_created(&app, "plain", &phish("ondemand-plain")).await;
    let (status, v) = app.admin(Method::POST, &format!("/api/incidents/{plain_id}/triage"), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "validation_error", "{v}");
    let (status, v) =
        app.admin(Method::POST, &format!("/api/incidents/{plain_number}/triage"), Some(json!({"playbook": "phishing_triage"}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let job_id = assert_job_answer(&v, &plain_id, &plain_number, "phishing_triage");
    wait_job(&app, &job_id).await;
    let inc = get_ok(&app, &format!("/api/incidents/{plain_id}")).await;
    assert_eq!(inc["triage"]["verdict"], "malicious", "{inc}");
    assert_eq!(inc["status"], "triaged", "{inc}");

    // Refusals.
    let read = app.read_key.clone();
    let (status, v) = app.with_key(&read, Method::POST, &format!("/api/incidents/{id}/triage"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "forbidden", "{v}");
    let (status, v) = app.with_key("", Method::POST, &format!("/api/incidents/{id}/triage"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let (status, v) = app.admin(Method::POST, &format!("/api/incidents/{id}/triage"), Some(json!({"playbook": "no_such_playbook"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "validation_error", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("no_such_playbook"), "{v}");
    for missing in ["00000000-0000-4000-8000-000000000000", "INC-2099-9999", "not-an-incident"] {
        let (status, v) =
            app.admin(Method::POST, &format!("/api/incidents/{missing}/triage"), Some(json!({"playbook": "phishing_triage"}))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}: {v}");
        assert_eq!(v["error"]["code"], "not_found", "{v}");
    }
    let (status, v) = app.admin(Method::GET, "/api/triage/jobs/no-such-job", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    // A read key may read a job.
    let (status, v) = app.with_key(&read, Method::GET, &format!("/api/triage/jobs/{job_id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["job_id"], job_id.as_str(), "{v}");
}

// ---------------------------------------------------------------------------------------------
// 6. failure
// ---------------------------------------------------------------------------------------------

// No built-in action can fail at run time (tw-core/src/triage/actions.rs: "none fails at run
// time"; templates and conditions are checked when a playbook is stored). The one run-time
// failure left is a job whose user playbook is gone when a worker takes it up: queue it with no
// workers, delete the playbook, restart with workers.
#[tokio::test]
async fn a_job_whose_playbook_is_gone_fails_visibly_and_the_incident_stays_open() {
    let app = spawn_triage(|cfg| {
        cfg.triage_workers = 0;
        cfg.triage_max_attempts = 2;
    })
    .await;
    add_source(&app, "plain", json!({})).await;
    let yaml = tw_core::triage::builtin_yaml("phishing_triage").unwrap().replace("name: phishing_triage", "name: doomed");
    let (status, v) = app.admin(Method::POST, "/api/playbooks", Some(json!({"yaml": yaml}))).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (id, number) = deliver_created(&app, "plain", &phish("doomed-1")).await;
    let (status, v) = app.admin(Method::POST, &format!("/api/incidents/{id}/triage"), Some(json!({"playbook": "doomed"}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let job_id = assert_job_answer(&v, &id, &number, "doomed");
    let (status, v) = app.admin(Method::DELETE, "/api/playbooks/doomed", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");

    let dir = app.stop().await;
    let app = TestApp::spawn_in(dir, |cfg| {
        cfg.intel_dir = Some(intel_dir(&cfg.data_dir));
        cfg.triage_max_attempts = 2;
    })
    .await;
    let inc = wait_triage(&app, &id).await;
    let t = &inc["triage"];
    assert_eq!(t["status"], "failed", "{inc}");
    assert_eq!(t["job_id"], job_id.as_str(), "{t}");
    let error = t["error"].as_str().unwrap_or_else(|| panic!("no error on the incident: {t}"));
    assert!(error.contains("doomed"), "{error}");
    assert_eq!(inc["status"], "open", "a failed triage leaves the incident open: {inc}");
    let job = get_ok(&app, &format!("/api/triage/jobs/{job_id}")).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["max_attempts"], 2, "{job}");
    let attempts = job["attempts"].as_u64().unwrap();
    assert!((1..=2).contains(&attempts), "{job}");
    assert!(job["error"].as_str().is_some_and(|e| e.contains("doomed")), "{job}");
    let open = get_ok(&app, "/api/incidents?status=open").await;
    assert_eq!(open["meta"]["total"], 1, "{open}");
}

// ---------------------------------------------------------------------------------------------
// 7. playbooks on sources (API level; the CLI side is in tw-cli's tests/cli/triage.rs)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sources_may_only_name_existing_playbooks_and_in_use_playbooks_stay() {
    let app = spawn_triage(|_| {}).await;
    let (status, v) = app
        .admin(Method::POST, "/api/webhooks", Some(json!({"source": "bad", "secret": SECRET, "auto_triage": true, "playbook": "nope"})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"]["details"].as_array().unwrap().iter().any(|d| d["field"] == "playbook"), "{v}");
    let (status, v) = app.admin(Method::POST, "/api/webhooks", Some(json!({"source": "bad", "secret": SECRET, "auto_triage": true}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "auto_triage needs a playbook: {v}");

    let yaml = tw_core::triage::builtin_yaml("malware_triage").unwrap().replace("name: malware_triage", "name: my_malware");
    let (status, v) = app.admin(Method::POST, "/api/playbooks", Some(json!({"yaml": yaml}))).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = app.admin(Method::POST, "/api/playbooks", Some(json!({"yaml": yaml}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "playbook_exists");
    add_source(&app, "edr", json!({"auto_triage": true, "playbook": "my_malware"})).await;
    let (status, v) = app.admin(Method::DELETE, "/api/playbooks/my_malware", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "playbook_in_use", "{v}");
    let pb = get_ok(&app, "/api/playbooks/my_malware").await;
    assert_eq!(pb["used_by"], json!(["edr"]), "{pb}");

    // A user playbook works as an auto-triage playbook.
    let (id, _) = deliver_created(&app, "edr", &crowdstrike_fixture()).await;
    let t = wait_triage(&app, &id).await["triage"].clone();
    assert_completed_shape(&t, "my_malware");
    assert!(recommends(&t, "isolate_host", "FS-02"), "{t}");

    for builtin in ["phishing_triage", "malware_triage"] {
        let (status, v) = app.admin(Method::DELETE, &format!("/api/playbooks/{builtin}"), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{v}");
        assert_eq!(v["error"]["code"], "builtin_playbook", "{v}");
    }
    let (status, _) = app.admin(Method::DELETE, "/api/webhooks/edr", None).await;
    assert!(status.is_success(), "{status}");
    let (status, v) = app.admin(Method::DELETE, "/api/playbooks/my_malware", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    let (status, _) = app.admin(Method::GET, "/api/playbooks/my_malware", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// 8. intel reload
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_changed_intel_file_is_picked_up_by_the_running_server() {
    let app = TestApp::spawn_with(|cfg| {
        let dir = intel_dir(&cfg.data_dir);
        write_intel(&dir, "# nothing yet\n");
        cfg.intel_dir = Some(dir);
    })
    .await;
    add_source(&app, "edr", json!({"auto_triage": true, "playbook": "malware_triage"})).await;
    let intel = get_ok(&app, "/api/intel").await;
    assert_eq!(intel["counts"]["bad-hashes"], 0, "{intel}");
    assert_eq!(intel["counts"]["assets"], 1, "{intel}");
    let (id, _) = deliver_created(&app, "edr", &crowdstrike_fixture()).await;
    let before = wait_triage(&app, &id).await["triage"].clone();
    assert_eq!(before["status"], "completed", "{before}");
    assert_ne!(before["verdict"], "malicious", "{before}");
    assert!(!recommends(&before, "isolate_host", "FS-02"), "{before}");

    // Change the file behind the server's back.
    std::fs::write(intel_dir(app.dir.path()).join("bad-hashes.txt"), format!("# added later\n{CS_SHA256}\n")).unwrap();
    poll_until(&app, "/api/intel", "bad-hashes reloaded", Duration::from_secs(30), |v| v["counts"]["bad-hashes"] == 1).await;

    let (status, v) = app.admin(Method::POST, &format!("/api/incidents/{id}/triage"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let job = wait_job(&app, v["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "completed", "{job}");
    let after = get_ok(&app, &format!("/api/incidents/{id}")).await["triage"].clone();
    assert_eq!(after["verdict"], "malicious", "{after}");
    assert!(has_finding(&after, "intel_bad_hash", CS_SHA256), "{:?}", finding_keys(&after));
    assert!(recommends(&after, "isolate_host", "FS-02"), "{after}");

    // The API adds indicators too, and they count at once.
    let (status, v) =
        app.admin(Method::POST, "/api/intel/bad-domains", Some(json!({"indicators": ["Evil2.Example", "evil.example"]}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["added"], 1, "evil.example was there already: {v}");
    assert_eq!(v["counts"]["bad-domains"], 2, "{v}");
    let (status, v) =
        app.with_key(&app.read_key.clone(), Method::POST, "/api/intel/bad-domains", Some(json!({"indicators": ["x.example"]}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, v) = app.admin(Method::POST, "/api/intel/no-such-list", Some(json!({"indicators": ["x"]}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
}

// ---------------------------------------------------------------------------------------------
// duplicates and async intake
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_redelivery_does_not_triage_again() {
    let app = spawn_triage(|_| {}).await;
    add_source(&app, "email-gateway", json!({"auto_triage": true, "playbook": "phishing_triage"})).await;
    let body = phish("dup-1");
    let (id, number) = deliver_created(&app, "email-gateway", &body).await;
    let first = wait_triage(&app, &id).await["triage"].clone();
    assert_eq!(first["status"], "completed", "{first}");
    let (status, v) = app.deliver("email-gateway", &secret_for("email-gateway"), &body).await;
    assert_eq!(status, StatusCode::OK, "a duplicate: {v}");
    assert_eq!(v["incident_number"], number.as_str(), "{v}");
    // A later incident is triaged; by then a job for the duplicate would have run as well.
    let (other, _) = deliver_created(&app, "email-gateway", &phish("dup-2")).await;
    wait_triage(&app, &other).await;
    let inc = get_ok(&app, &format!("/api/incidents/{id}")).await;
    assert_eq!(inc["delivery_count"], 2, "{inc}");
    assert_eq!(inc["triage"]["job_id"], first["job_id"], "no second job: {inc}");
    assert_eq!(inc["triage"]["completed_at"], first["completed_at"], "{inc}");
}

#[tokio::test]
async fn async_source_incidents_are_auto_triaged_too() {
    let app = spawn_triage(|_| {}).await;
    add_source(&app, "edr", json!({"auto_triage": true, "playbook": "malware_triage", "mode": "async"})).await;
    let (status, v) = app.deliver("edr", &secret_for("edr"), &crowdstrike_fixture()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let queue_id = v["queue_id"].as_str().unwrap().to_string();
    let q =
        poll_until(&app, &format!("/api/webhooks/queue/{queue_id}"), "queued event processed", DEADLINE, |v| v["status"] == "processed")
            .await;
    let id = q["incident_id"].as_str().unwrap_or_else(|| panic!("{q}")).to_string();
    let inc = wait_triage(&app, &id).await;
    assert_completed_shape(&inc["triage"], "malware_triage");
    assert!(recommends(&inc["triage"], "isolate_host", "FS-02"), "{inc}");
    assert_eq!(inc["status"], "triaged");
}

/// While the intake is saturated (16 sync deliveries or more waiting for the store), a triage
/// worker lets it go first: a job created then waits, and runs once the intake has room; under a
/// saturation that does not end, it still runs, about a second later.
#[tokio::test]
async fn triage_yields_to_a_saturated_intake_and_still_moves() {
    let app = spawn_triage(|_| {}).await;
    add_source(&app, "edr", json!({"auto_triage": true, "playbook": "malware_triage"})).await;
    // Sixteen deliveries waiting for a commit, as the workers see them.
    let held = app.state().sync_permits.clone().acquire_many_owned(16).await.unwrap();
    let (id, _) = deliver_created(&app, "edr", &generic("yield-1")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = get_ok(&app, &format!("/api/incidents/{id}")).await;
    assert_eq!(waiting["triage"]["status"], "pending", "triage ran while the intake was saturated: {waiting}");
    drop(held);
    assert_eq!(wait_triage(&app, &id).await["triage"]["status"], "completed");
    let yields = series(&app, "triage_yields_total", &[]).await.expect("no triage_yields_total in /metrics");
    assert!(yields >= 1.0, "the wait was not counted: {yields}");

    // A saturation that lasts: the job runs all the same.
    let _held = app.state().sync_permits.clone().acquire_many_owned(16).await.unwrap();
    let (id, _) = deliver_created(&app, "edr", &generic("yield-2")).await;
    assert_eq!(wait_triage(&app, &id).await["triage"]["status"], "completed");
}
