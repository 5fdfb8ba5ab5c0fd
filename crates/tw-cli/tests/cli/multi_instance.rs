//! Several `tw-cli serve` processes on one PostgreSQL database behave as one system: the real
//! binary, twice, on a fresh database of its own (see `tw_store::testing`; without a reachable
//! PostgreSQL every test here returns at once and the skip is said once on stderr).
//!
//! What the tests prove:
//! - `two_instances_behave_as_one`: 2,000 deliveries (200 of them duplicates sent to the other
//!   instance, half of those at the same moment as their original) make exactly 1,800 incidents
//!   numbered 1..=1800 without a gap; every duplicate names its original's incident; every triage
//!   job runs exactly once; a secret rotated on one instance is honoured by the other within 2 s.
//! - `sigkill_mid_load_loses_nothing_acknowledged`: an instance killed with SIGKILL mid-load
//!   loses no acknowledged delivery, and the survivor finishes every triage job, including the
//!   ones the dead instance had claimed (after their 3 s lease).
//! - `restarting_one_instance_does_not_disturb_the_other`: killing and restarting an instance
//!   over and over while the other holds claimed triage jobs never takes those jobs away from it
//!   (no job runs twice) and both keep answering.
//!
//! The tests run one at a time (a lock), each with two servers, on a machine of 2 cores: every
//! wait is a poll with a deadline, and no assertion is on speed.

use crate::support::*;

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tw_store::testing::TestDatabase;

const SOURCE: &str = "edr";
const SECRET: &str = "multi-instance-secret-0123456789";
const PLAYBOOK: &str = "malware_triage";
/// Requests in flight at once.
const IN_FLIGHT: usize = 32;

/// The tests here run one after the other: each starts two servers on 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// The master key every instance shares (the database's secrets are encrypted with it).
fn master_key() -> String {
    "ab".repeat(32)
}

/// `tw-cli serve` on the shared database with a 3 s claim lease, plus `extra`.
fn serve(data: &Path, url: &str, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--database-url", url, "--claim-lease-secs", "3"];
    args.extend_from_slice(extra);
    let key = master_key();
    ServerProcess::start(data, &args, &[("TW_MASTER_KEY", key.as_str()), ("RUST_LOG", "info")])
}

/// What every test here starts from: the turn (the lock), a fresh database, a temp dir with the
/// two instances' data dirs, an admin key and a connection of the test's own. A test declares its
/// servers after its `Cluster`, so they are dropped (killed) before the database is.
struct Cluster {
    /// The test's own connection to the shared database.
    db: tokio_postgres::Client,
    http: reqwest::Client,
    /// An admin API key in the shared database.
    key: String,
    data_a: PathBuf,
    data_b: PathBuf,
    _tmp: tempfile::TempDir,
    url: String,
    _database: TestDatabase,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

/// Waits for this test's turn and sets up a [`Cluster`], or `None` without PostgreSQL (the
/// test then returns at once). The admin key is made with `tw-cli api-key create`, as an
/// operator would, in data dir `first` ("a" or "b"), the one of the instance started first.
async fn cluster(first: &str) -> Option<Cluster> {
    assert!(first == "a" || first == "b", "data dir {first}");
    let serial = SERIAL.lock().await;
    let database = TestDatabase::create().await?;
    let url = database.url.clone();
    let tmp = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let master = master_key();
    let key = new_key_with(&tmp.path().join(first), "admin", &["--database-url", &url], &[("TW_MASTER_KEY", &master)]);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let db = pg(&url).await;
    Some(Cluster { db, http, key, data_a, data_b, _tmp: tmp, url, _database: database, _serial: serial })
}

/// The last `n` lines of each server's log, for failure messages.
fn logs(servers: &[(&str, &ServerProcess)]) -> String {
    let mut out = String::new();
    for (name, s) in servers {
        let log = s.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        out.push_str(&format!("\n--- last {} lines of {name}'s log ({}) ---\n{}\n", tail.len(), s.log.display(), tail.join("\n")));
    }
    out
}

/// An admin request; (status, JSON).
async fn admin(http: &reqwest::Client, key: &str, method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut req = http.request(method, url).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("admin request");
    let (status, v) = into_json(resp).await;
    (status.as_u16(), v)
}

/// Registers the auto-triaged source through `base`.
async fn add_source(http: &reqwest::Client, key: &str, base: &str) {
    let body = json!({"source": SOURCE, "secret": SECRET, "auto_triage": true, "playbook": PLAYBOOK});
    let (status, v) = admin(http, key, reqwest::Method::POST, format!("{base}/api/webhooks"), Some(body)).await;
    assert_eq!(status, 201, "registering the source: {v}");
}

/// A generic-format alert.
fn alert(alert_id: &str, title: &str) -> String {
    json!({
        "event_type": "security_alert",
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "source": SOURCE,
        "data": {
            "alert_id": alert_id,
            "severity": "high",
            "title": title,
            "details": {"hostname": "WS-0042", "file_hash": "44d88612fea8a8f36de82e1278abb02f"}
        }
    })
    .to_string()
}

/// One answer to a delivery: the HTTP status and body, or why no answer came.
type Answer = Result<(u16, Value), String>;

fn is_2xx(a: &Answer) -> bool {
    matches!(a, Ok((s, _)) if (200..300).contains(s))
}

/// Posts `body` to `base`'s intake for the source, signed with `secret` now; a request that got
/// no answer is an `Err`, never a panic.
async fn deliver(http: &reqwest::Client, base: &str, secret: &str, body: &str) -> Answer {
    try_post_signed(http, base, SOURCE, secret, now(), body.to_string())
        .await
        .map(|(status, v)| (status.as_u16(), v))
        .map_err(|e| format!("{e:?}"))
}

/// Runs `send(item)` for every item, `IN_FLIGHT` at a time, each in a task of its own; their
/// results in the order they finished.
async fn send_all<I, F, Fut>(items: I, mut send: F) -> Vec<Fut::Output>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut set = JoinSet::new();
    for item in items {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let sending = send(item);
        set.spawn(async move {
            let _permit = permit;
            sending.await
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("sender task"));
    }
    out
}

/// A connection of the test's own to the shared database.
async fn pg(url: &str) -> tokio_postgres::Client {
    tw_store::testing::connect(url).await.expect("connect to the test database")
}

async fn scalar(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// Triage jobs by status.
async fn job_states(db: &tokio_postgres::Client) -> BTreeMap<String, i64> {
    let rows = db.query("SELECT status, COUNT(*) FROM triage_jobs GROUP BY status", &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Waits until `expected` triage jobs exist and every one is completed; panics on a failed job
/// or at the deadline, with the servers' logs.
async fn wait_all_triaged(db: &tokio_postgres::Client, expected: i64, within: Duration, servers: &[(&str, &ServerProcess)]) {
    let start = Instant::now();
    loop {
        let states = job_states(db).await;
        if let Some(n) = states.get("failed") {
            let errors = db.query("SELECT id, attempts, error FROM triage_jobs WHERE status = 'failed' LIMIT 5", &[]).await.unwrap();
            let errors: Vec<String> = errors
                .iter()
                .map(|r| format!("{} attempts={} error={:?}", r.get::<_, String>(0), r.get::<_, i64>(1), r.get::<_, Option<String>>(2)))
                .collect();
            panic!("{n} triage job(s) failed: {errors:?}{}", logs(servers));
        }
        let total: i64 = states.values().sum();
        if total == expected && states.get("completed") == Some(&expected) {
            return;
        }
        assert!(
            start.elapsed() < within,
            "triage not finished within {within:?}: jobs by status {states:?}, expected {expected} completed{}",
            logs(servers)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Triage jobs not claimed exactly once: how many, and the first 10 (most attempts first).
async fn reruns(db: &tokio_postgres::Client) -> (i64, Vec<String>) {
    let first = db
        .query("SELECT id, attempts FROM triage_jobs WHERE attempts <> 1 ORDER BY attempts DESC LIMIT 10", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{} attempts={}", r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    (scalar(db, "SELECT COUNT(*) FROM triage_jobs WHERE attempts <> 1").await, first)
}

/// Ids of the triage jobs running now.
async fn running_jobs(db: &tokio_postgres::Client) -> Vec<String> {
    db.query("SELECT id FROM triage_jobs WHERE status = 'running'", &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
}

/// Waits until every transaction open in the database now (but the caller's) has ended: then
/// whatever a process killed just before committed is visible, and what it had not is gone.
async fn wait_open_transactions_end(db: &tokio_postgres::Client, within: Duration) {
    let cutoff: f64 = db.query_one("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8", &[]).await.unwrap().get(0);
    let start = Instant::now();
    loop {
        let open: i64 = db
            .query_one(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND pid <> pg_backend_pid() AND xact_start < to_timestamp($1::float8)",
                &[&cutoff],
            )
            .await
            .unwrap()
            .get(0);
        if open == 0 {
            return;
        }
        assert!(start.elapsed() < within, "{open} transaction(s) still open {within:?} after the kill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `INC-<year>-<seq>` as (year, seq).
fn parse_number(v: &Value) -> (i32, i64) {
    let s = v.as_str().unwrap_or_else(|| panic!("not an incident number: {v}"));
    let mut parts = s.strip_prefix("INC-").unwrap_or_else(|| panic!("not an incident number: {s}")).splitn(2, '-');
    (parts.next().unwrap().parse().unwrap(), parts.next().unwrap().parse().unwrap())
}

/// Job ids of the "triage job finished" lines of a server log.
fn finished_jobs(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("triage job finished"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("job_id=")).map(|s| s.trim_matches('"').to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// two instances behave as one
// ---------------------------------------------------------------------------------------------

/// One delivery made by the load of `two_instances_behave_as_one`.
struct Sent {
    alert: usize,
    duplicate: bool,
    to: &'static str,
    answer: Answer,
}

const ALERTS: usize = 1800;

/// Alerts whose duplicate goes to the other instance at the same moment as the original (100).
fn sent_together(i: usize) -> bool {
    i.is_multiple_of(18)
}

/// Alerts whose duplicate goes to the other instance after every original was answered (100).
fn sent_later(i: usize) -> bool {
    i % 18 == 9
}

fn alert_id(i: usize) -> String {
    format!("edr-alert-{i:05}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_behave_as_one() {
    let Some(c) = cluster("a").await else { return };
    let (db, http, key) = (&c.db, &c.http, c.key.as_str());
    let workers = ["--triage-workers", "2", "--queue-workers", "1"];
    let a = serve(&c.data_a, &c.url, &workers);
    let b = serve(&c.data_b, &c.url, &workers);
    let servers = [("A", &a), ("B", &b)];
    add_source(http, key, &a.url).await;

    // 1,800 originals alternately on A and B, 32 in flight; 100 duplicates sent to the other
    // instance at the same moment as their original.
    let started = Instant::now();
    let mut sent: Vec<Sent> = send_all(0..ALERTS, |i| {
        let ((to, base), (other, other_base)) =
            if i % 2 == 0 { (("A", a.url.clone()), ("B", b.url.clone())) } else { (("B", b.url.clone()), ("A", a.url.clone())) };
        let http = http.clone();
        async move {
            let id = alert_id(i);
            let body = alert(&id, &format!("Malware detected #{i}"));
            if sent_together(i) {
                let again = alert(&id, &format!("Malware detected #{i} (sent again)"));
                let (first, second) = tokio::join!(deliver(&http, &base, SECRET, &body), deliver(&http, &other_base, SECRET, &again));
                vec![Sent { alert: i, duplicate: false, to, answer: first }, Sent { alert: i, duplicate: true, to: other, answer: second }]
            } else {
                vec![Sent { alert: i, duplicate: false, to, answer: deliver(&http, &base, SECRET, &body).await }]
            }
        }
    })
    .await
    .into_iter()
    .flatten()
    .collect();
    // 100 more duplicates, later, each to the instance its original did not go to.
    let later = send_all((0..ALERTS).filter(|&i| sent_later(i)), |i| {
        let (to, base) = if i % 2 == 0 { ("B", b.url.clone()) } else { ("A", a.url.clone()) };
        let http = http.clone();
        async move {
            let body = alert(&alert_id(i), &format!("Malware detected #{i} (sent later)"));
            Sent { alert: i, duplicate: true, to, answer: deliver(&http, &base, SECRET, &body).await }
        }
    })
    .await;
    sent.extend(later);
    let load_took = started.elapsed();
    assert_eq!(sent.len(), 2000, "2,000 deliveries");

    // Every delivery answered 201 (created) or 200 (duplicate).
    let bad: Vec<String> = sent
        .iter()
        .filter(|s| !matches!(&s.answer, Ok((201 | 200, _))))
        .take(10)
        .map(|s| format!("alert {} (duplicate: {}) to {}: {:?}", s.alert, s.duplicate, s.to, s.answer))
        .collect();
    assert!(bad.is_empty(), "deliveries not answered 201 or 200 (first 10): {bad:#?}{}", logs(&servers));

    // Per alert: exactly one 201; a duplicate's 200 names the same incident and number.
    let mut by_alert: BTreeMap<usize, Vec<&Sent>> = BTreeMap::new();
    for s in &sent {
        by_alert.entry(s.alert).or_default().push(s);
    }
    assert_eq!(by_alert.len(), ALERTS);
    let mut created: HashMap<String, (usize, Value)> = HashMap::new(); // incident id -> (alert, number)
    for (&i, answers) in &by_alert {
        let expected = if sent_together(i) || sent_later(i) { 2 } else { 1 };
        assert_eq!(answers.len(), expected, "alert {i}");
        let bodies: Vec<(u16, &Value)> = answers.iter().map(|s| s.answer.as_ref().map(|(c, v)| (*c, v)).unwrap()).collect();
        let firsts: Vec<&(u16, &Value)> = bodies.iter().filter(|(c, _)| *c == 201).collect();
        assert_eq!(firsts.len(), 1, "alert {i}: exactly one delivery creates its incident: {bodies:?}");
        let (_, first) = firsts[0];
        assert_eq!(first["status"], "accepted", "{first}");
        let id = first["incident_id"].as_str().unwrap_or_else(|| panic!("no incident_id: {first}")).to_string();
        let previous = created.insert(id.clone(), (i, first["incident_number"].clone()));
        assert!(previous.is_none(), "incident {id} reported created twice (alerts {i} and {:?})", previous.map(|p| p.0));
        if sent_later(i) {
            // The late duplicate is always the one that finds the incident.
            let late = answers.iter().find(|s| s.duplicate).unwrap();
            assert!(matches!(late.answer, Ok((200, _))), "alert {i}: the late duplicate: {:?}", late.answer);
        }
        for (_, v) in bodies.iter().filter(|(c, _)| *c == 200) {
            assert_eq!(v["status"], "accepted", "alert {i}: {v}");
            assert_eq!(v["duplicate"], true, "alert {i}: {v}");
            assert_eq!(v["delivery_count"], 2, "alert {i}: {v}");
            assert_eq!(v["incident_id"], first["incident_id"], "alert {i}: the duplicate names another incident: {v} vs {first}");
            assert_eq!(v["incident_number"], first["incident_number"], "alert {i}: {v} vs {first}");
        }
    }
    let n201 = sent.iter().filter(|s| matches!(s.answer, Ok((201, _)))).count();
    let n200 = sent.iter().filter(|s| matches!(s.answer, Ok((200, _)))).count();
    assert_eq!((n201, n200), (1800, 200), "1,800 created, 200 duplicates");
    assert_eq!(created.len(), 1800, "1,800 distinct incidents reported created");
    // How often the copy sent at the same moment to the other instance won the race.
    let races_won_by_copy = sent.iter().filter(|s| s.duplicate && sent_together(s.alert) && matches!(s.answer, Ok((201, _)))).count();

    // The database holds exactly those 1,800 incidents, numbered 1..=1800 for the year.
    let rows = db.query("SELECT id::text, year, seq, external_id, delivery_count FROM incidents ORDER BY year, seq", &[]).await.unwrap();
    assert_eq!(rows.len(), 1800, "exactly 1,800 incidents in the database{}", logs(&servers));
    let years: BTreeSet<i32> = rows.iter().map(|r| r.get::<_, i32>(1)).collect();
    assert_eq!(years.len(), 1, "one year: {years:?}");
    let year = *years.iter().next().unwrap();
    let seqs: Vec<i64> = rows.iter().map(|r| r.get(2)).collect();
    assert_eq!(seqs, (1..=1800).collect::<Vec<i64>>(), "incident numbers 1..=1800, no gap, none twice");
    let counter = scalar(db, &format!("SELECT last_seq FROM incident_counters WHERE year = {year}")).await;
    assert_eq!(counter, 1800, "the year's counter");
    for r in &rows {
        let (id, seq, external, count): (String, i64, Option<String>, i64) = (r.get(0), r.get(2), r.get(3), r.get(4));
        let (alert, number) = created.get(&id).unwrap_or_else(|| panic!("incident {id} (seq {seq}) was never reported created"));
        assert_eq!(parse_number(number), (year, seq), "incident {id}: the number answered is not the stored one");
        assert_eq!(external.as_deref(), Some(alert_id(*alert).as_str()), "incident {id}");
        let expected = if sent_together(*alert) || sent_later(*alert) { 2 } else { 1 };
        assert_eq!(count, expected, "incident {id} (alert {alert}): delivery_count");
    }
    // Both instances list the same 1,800.
    for (name, s) in servers {
        let (status, v) = admin(http, key, reqwest::Method::GET, format!("{}/api/incidents?per_page=1", s.url), None).await;
        assert_eq!(status, 200, "{name}: {v}");
        assert_eq!(v["meta"]["total"], 1800, "{name} lists: {v}");
    }
    let (status, one) =
        admin(http, key, reqwest::Method::GET, format!("{}/api/incidents/{}", b.url, rows[0].get::<_, String>(0)), None).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["incident_number"], format!("INC-{year}-0001"), "{one}");

    // Every triage job ran exactly once: 1,800 jobs, one per incident, all completed at attempt 1.
    wait_all_triaged(db, 1800, Duration::from_secs(40), &servers).await;
    let triage_took = started.elapsed();
    assert_eq!(scalar(db, "SELECT COUNT(DISTINCT incident_id) FROM triage_jobs").await, 1800, "one job per incident");
    let (rerun_count, reruns) = reruns(db).await;
    assert!(reruns.is_empty(), "{rerun_count} triage job(s) were claimed more than once (first 10: {reruns:?}){}", logs(&servers));
    let shown = scalar(
        db,
        "SELECT COUNT(*) FROM incidents i JOIN triage_jobs j ON j.id = i.triage_job_id \
         WHERE j.status = 'completed' AND (i.triage::json ->> 'status') = 'completed'",
    )
    .await;
    assert_eq!(shown, 1800, "every incident shows its completed triage");
    // The logs agree: each job finished once, on one instance or the other, none dropped.
    let (fin_a, fin_b) = (finished_jobs(&a.log()), finished_jobs(&b.log()));
    let all: HashSet<&String> = fin_a.iter().chain(&fin_b).collect();
    assert_eq!(
        (fin_a.len() + fin_b.len(), all.len()),
        (1800, 1800),
        "'triage job finished' lines: A {}, B {}, distinct jobs {}",
        fin_a.len(),
        fin_b.len(),
        all.len()
    );
    for (name, s) in servers {
        assert!(!s.log().contains("result dropped"), "{name} ran a job another worker had taken over{}", logs(&servers));
    }
    eprintln!(
        "two_instances_behave_as_one: 2,000 deliveries answered in {load_took:.1?} (the copy sent at the same moment \
         created the incident in {races_won_by_copy} of 100 races); all triaged after {triage_took:.1?} (A ran {}, B ran {})",
        fin_a.len(),
        fin_b.len()
    );

    // A secret rotated on A is honoured by B within 2 s. Just before the rotation B verifies a
    // delivery signed with the old secret: B has the source cached (its table of sources, kept 30 s
    // at most), so a pass below is not B merely loading the source for the first time.
    let warm = deliver(http, &b.url, SECRET, &alert("edr-alert-before-rotation", "Before the rotation")).await;
    assert!(matches!(warm, Ok((201, _))), "B refused the old secret before the rotation: {warm:?}{}", logs(&servers));
    let (status, rotated) =
        admin(http, key, reqwest::Method::POST, format!("{}/api/webhooks/{SOURCE}/rotate-secret", a.url), Some(json!({}))).await;
    assert_eq!(status, 200, "rotate-secret: {rotated}");
    let new_secret = rotated["secret"].as_str().unwrap_or_else(|| panic!("no new secret: {rotated}")).to_string();
    assert_ne!(new_secret, SECRET);
    let rotated_at = Instant::now();
    let body = alert("edr-alert-after-rotation", "After the rotation");
    let mut refusals = Vec::new();
    let accepted = loop {
        let answer = deliver(http, &b.url, &new_secret, &body).await;
        if is_2xx(&answer) {
            break answer;
        }
        // Until B has noticed, the new secret is refused as a bad signature, nothing else.
        assert!(matches!(answer, Ok((401, _))), "B answered a delivery signed with the new secret: {answer:?}{}", logs(&servers));
        refusals.push(rotated_at.elapsed());
        assert!(
            rotated_at.elapsed() < Duration::from_secs(2),
            "B still refuses the new secret {:?} after the rotation on A ({} refusals){}",
            rotated_at.elapsed(),
            refusals.len(),
            logs(&servers)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = rotated_at.elapsed();
    assert!(took < Duration::from_secs(2), "B accepted the new secret only after {took:?}");
    assert!(matches!(accepted, Ok((201, _))), "{accepted:?}");
    // The old secret still verifies on both during its grace period.
    let old = alert("edr-alert-old-secret", "Signed with the old secret");
    for (name, s) in servers {
        let answer = deliver(http, &s.url, SECRET, &old).await;
        assert!(is_2xx(&answer), "{name} refused the old secret within its grace period: {answer:?}");
    }
    eprintln!(
        "two_instances_behave_as_one: B accepted the rotated secret {took:.1?} after the rotation on A ({} refusals first)",
        refusals.len()
    );
}

// ---------------------------------------------------------------------------------------------
// SIGKILL mid-load
// ---------------------------------------------------------------------------------------------

/// One attempt at delivering alert `alert` to `to`.
struct Attempt {
    alert: usize,
    to: &'static str,
    answer: Answer,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_nothing_acknowledged() {
    let Some(c) = cluster("a").await else { return };
    let (db, http) = (&c.db, &c.http);
    // B's one triage worker holds at most one claim of 8 jobs: more running jobs than that means A
    // holds some, which is when A is killed.
    let mut a = serve(&c.data_a, &c.url, &["--triage-workers", "3", "--queue-workers", "1"]);
    let b = serve(&c.data_b, &c.url, &["--triage-workers", "1", "--queue-workers", "1"]);
    add_source(http, &c.key, &a.url).await;

    // Senders alternate between A and B; a delivery A does not answer with a 2xx is sent again
    // to B, as a sender (or a load balancer) retries.
    const TOTAL: usize = 1400;
    const KILL_AFTER: usize = 300;
    let next = Arc::new(AtomicUsize::new(0));
    let acked_by_a = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (next, acked_by_a, http) = (next.clone(), acked_by_a.clone(), http.clone());
        let (a_url, b_url) = (a.url.clone(), b.url.clone());
        set.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= TOTAL {
                    return out;
                }
                let body = alert(&format!("kill-{i:05}"), &format!("Malware detected #{i}"));
                if i % 2 == 0 {
                    let answer = deliver(&http, &a_url, SECRET, &body).await;
                    let ok = is_2xx(&answer);
                    if ok {
                        acked_by_a.fetch_add(1, Ordering::SeqCst);
                    }
                    out.push(Attempt { alert: i, to: "A", answer });
                    if ok {
                        continue;
                    }
                }
                out.push(Attempt { alert: i, to: "B", answer: deliver(&http, &b_url, SECRET, &body).await });
            }
        });
    }

    // SIGKILL A once it has acknowledged 300, while the senders go on.
    let start = Instant::now();
    while acked_by_a.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "A acknowledged only {} deliveries{}",
            acked_by_a.load(Ordering::SeqCst),
            logs(&[("A", &a), ("B", &b)])
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let live_claims = "SELECT COUNT(*) FROM triage_jobs WHERE status = 'running' AND lease_until > now()";
    while scalar(db, live_claims).await <= 8 {
        assert!(
            next.load(Ordering::SeqCst) < TOTAL,
            "the load ended before A was seen holding triage claims (more than 8 running){}",
            logs(&[("A", &a), ("B", &b)])
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    a.kill();
    let killed_at = Instant::now();
    let sent_at_kill = next.load(Ordering::SeqCst);
    // The jobs claimed at that moment, A's among them: they must end completed too. A claim A
    // sent its COMMIT for just before dying shows only once that transaction has ended, so they
    // are read again then (B's claims made meanwhile come in too; B runs those at attempt 1).
    let mut claimed_at_kill = running_jobs(db).await;
    wait_open_transactions_end(db, Duration::from_secs(10)).await;
    for id in running_jobs(db).await {
        if !claimed_at_kill.contains(&id) {
            claimed_at_kill.push(id);
        }
    }

    let mut attempts: Vec<Attempt> = Vec::new();
    while let Some(r) = set.join_next().await {
        attempts.extend(r.expect("sender task"));
    }
    let servers = [("A", &a), ("B", &b)];
    assert!(sent_at_kill < TOTAL, "the load ended before the kill");

    // A answered with a 2xx or not at all (it died); B answered every delivery with a 2xx.
    let a_errors: Vec<String> = attempts
        .iter()
        .filter(|t| t.to == "A" && matches!(&t.answer, Ok((s, _)) if !(200..300).contains(s)))
        .map(|t| format!("alert {}: {:?}", t.alert, t.answer))
        .collect();
    assert!(a_errors.is_empty(), "A answered with an error status: {a_errors:?}{}", logs(&servers));
    let b_bad: Vec<String> = attempts
        .iter()
        .filter(|t| t.to == "B" && !is_2xx(&t.answer))
        .take(10)
        .map(|t| format!("alert {}: {:?}", t.alert, t.answer))
        .collect();
    assert!(b_bad.is_empty(), "B failed deliveries (first 10): {b_bad:?}{}", logs(&servers));
    let acked_a = attempts.iter().filter(|t| t.to == "A" && is_2xx(&t.answer)).count();
    let unanswered_a = attempts.iter().filter(|t| t.to == "A" && t.answer.is_err()).count();
    assert!(acked_a >= KILL_AFTER, "A acknowledged {acked_a}");
    let b_after_kill = attempts.iter().filter(|t| t.to == "B" && t.alert >= sent_at_kill).count();
    assert!(b_after_kill > 0, "no delivery reached B after the kill");

    // Every acknowledged delivery is in the database, as the incident its answer named.
    let rows = db.query("SELECT id::text, external_id FROM incidents", &[]).await.unwrap();
    let stored: HashMap<String, Option<String>> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut acked = 0;
    for t in attempts.iter().filter(|t| is_2xx(&t.answer)) {
        let v = &t.answer.as_ref().unwrap().1;
        let id = v["incident_id"].as_str().unwrap_or_else(|| panic!("alert {} from {}: no incident_id: {v}", t.alert, t.to));
        let external = stored.get(id).unwrap_or_else(|| {
            panic!("alert {}: {} acknowledged incident {id} ({v}), which is not in the database{}", t.alert, t.to, logs(&servers))
        });
        assert_eq!(external.as_deref(), Some(format!("kill-{:05}", t.alert).as_str()), "incident {id}");
        acked += 1;
    }
    // With the retries every alert was acknowledged once at least, and stored exactly once.
    let alerts: HashSet<usize> = attempts.iter().filter(|t| is_2xx(&t.answer)).map(|t| t.alert).collect();
    assert_eq!(alerts.len(), TOTAL, "every alert acknowledged (by A, or by B on the retry)");
    assert_eq!(stored.len(), TOTAL, "one incident per alert");
    let externals: HashSet<&Option<String>> = stored.values().collect();
    assert_eq!(externals.len(), TOTAL, "no alert stored twice");

    // B finishes every triage job, those A had claimed included (after their 3 s lease).
    wait_all_triaged(db, TOTAL as i64, Duration::from_secs(30), &servers).await;
    assert_eq!(scalar(db, "SELECT COUNT(*) FROM triage_jobs WHERE attempts < 1").await, 0, "a completed job was never claimed");
    let mut unfinished = Vec::new();
    for id in &claimed_at_kill {
        let status: String = db.query_one("SELECT status FROM triage_jobs WHERE id = $1", &[id]).await.unwrap().get(0);
        if status != "completed" {
            unfinished.push((id.clone(), status));
        }
    }
    assert!(unfinished.is_empty(), "jobs claimed at the kill not completed: {unfinished:?}");
    // B never stops, so a job claimed twice must be one A held when it died, taken over after its
    // lease; a job run again after an error does not count.
    let claimed: HashSet<&String> = claimed_at_kill.iter().collect();
    let rows = db.query("SELECT id, attempts, error FROM triage_jobs WHERE attempts > 1 ORDER BY id", &[]).await.unwrap();
    let retaken = rows.len();
    assert!(retaken >= 1, "no job A had claimed was taken over: {} running at the kill{}", claimed_at_kill.len(), logs(&servers));
    let strays: Vec<String> = rows
        .iter()
        .filter(|r| !claimed.contains(&r.get::<_, String>(0)))
        .map(|r| format!("{} attempts={} error={:?}", r.get::<_, String>(0), r.get::<_, i64>(1), r.get::<_, Option<String>>(2)))
        .collect();
    assert!(
        strays.is_empty(),
        "{} job(s) ran more than once though not claimed at the kill (of {retaken} run more than once): {strays:?}{}",
        strays.len(),
        logs(&servers)
    );
    // A retry B answers as a duplicate: A had committed the delivery but died before answering.
    let committed_unanswered = attempts.iter().filter(|t| t.to == "B" && t.alert % 2 == 0 && matches!(t.answer, Ok((200, _)))).count();
    eprintln!(
        "sigkill_mid_load: A acknowledged {acked_a} then died ({unanswered_a} deliveries unanswered, retried on B, \
         {committed_unanswered} of them committed by A before it died); {acked} acknowledgements all stored; \
         {} jobs were running just after the kill, {retaken} ran again after their lease; all {TOTAL} triaged {:.1?} after the kill",
        claimed_at_kill.len(),
        killed_at.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// restarting one instance
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_one_instance_does_not_disturb_the_other() {
    let Some(c) = cluster("b").await else { return };
    let (db, http) = (&c.db, &c.http);

    // B runs no triage: every job below is A's to claim, and only B's restarts could disturb them.
    let b_args = ["--triage-workers", "0", "--queue-workers", "1"];
    let mut b = serve(&c.data_b, &c.url, &b_args);
    add_source(http, &c.key, &b.url).await;
    // A backlog of jobs, queued through B before A starts.
    const BACKLOG: usize = 1200;
    let backlog = send_all(0..BACKLOG, |i| {
        let (http, base) = (http.clone(), b.url.clone());
        async move { (i, deliver(&http, &base, SECRET, &alert(&format!("backlog-{i:05}"), "Malware detected")).await) }
    })
    .await;
    for (i, answer) in backlog {
        assert!(matches!(answer, Ok((201, _))), "backlog delivery {i}: {answer:?}{}", logs(&[("B", &b)]));
    }
    assert_eq!(job_states(db).await, BTreeMap::from([("pending".to_string(), BACKLOG as i64)]), "B claimed nothing");

    // A works through the backlog with one worker (one claim of 8 at a time) while B is killed and
    // started again, again and again; both keep taking deliveries.
    let a = serve(&c.data_a, &c.url, &["--triage-workers", "1", "--queue-workers", "1"]);
    let started = Instant::now();
    let mut restarts = 0;
    let mut restarts_while_a_held_claims = 0;
    let mut extra = 0;
    // The log of every B process that has ended (each start writes a log of its own, named by its
    // port), read once it is complete and before a new start on the same port could overwrite it.
    let mut b_logs: Vec<(PathBuf, String)> = Vec::new();
    loop {
        let held_before = scalar(db, "SELECT COUNT(*) FROM triage_jobs WHERE status = 'running'").await;
        b.kill();
        b_logs.push((b.log.clone(), b.log()));
        b = tokio::task::spawn_blocking({
            let (data_b, url) = (c.data_b.clone(), c.url.clone());
            move || serve(&data_b, &url, &b_args)
        })
        .await
        .unwrap();
        let held_after = scalar(db, "SELECT COUNT(*) FROM triage_jobs WHERE status = 'running'").await;
        restarts += 1;
        if held_before > 0 || held_after > 0 {
            restarts_while_a_held_claims += 1;
        }
        for (name, s) in [("B", &b), ("A", &a)] {
            let answer = deliver(http, &s.url, SECRET, &alert(&format!("during-restarts-{extra}"), "Malware detected")).await;
            assert!(matches!(answer, Ok((201, _))), "{name} after B's restart {restarts}: {answer:?}{}", logs(&[("A", &a), ("B", &b)]));
            extra += 1;
        }
        let open = scalar(db, "SELECT COUNT(*) FROM triage_jobs WHERE status IN ('pending', 'running')").await;
        if (open == 0 && restarts >= 3) || restarts >= 12 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "still {open} open jobs after {restarts} restarts{}",
            logs(&[("A", &a), ("B", &b)])
        );
    }
    let servers = [("A", &a), ("B", &b)];
    assert!(
        restarts_while_a_held_claims >= 1,
        "A never held a claimed job while B restarted ({restarts} restarts): the test proved nothing; make the backlog bigger"
    );

    wait_all_triaged(db, (BACKLOG + extra) as i64, Duration::from_secs(40), &servers).await;
    let (rerun_count, reruns) = reruns(db).await;
    assert!(
        reruns.is_empty(),
        "B's restarts took jobs from A, which ran them again: {rerun_count} job(s), first 10: {reruns:?}{}",
        logs(&servers)
    );
    // No B process ran triage, the ones killed included.
    b_logs.push((b.log.clone(), b.log()));
    assert_eq!(b_logs.len(), restarts + 1, "one log per B process");
    for (path, log) in &b_logs {
        assert!(!log.is_empty(), "B's log {} is empty", path.display());
        let ran = finished_jobs(log);
        assert!(ran.is_empty(), "B ran triage with --triage-workers 0: {} job(s) in {}: {ran:?}", ran.len(), path.display());
    }
    eprintln!(
        "restarting_one_instance: B restarted {restarts} times ({restarts_while_a_held_claims} while A held claims); \
         all {} jobs ran once, in {:.1?}",
        BACKLOG + extra,
        started.elapsed()
    );
}
