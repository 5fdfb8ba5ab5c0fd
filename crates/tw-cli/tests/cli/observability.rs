use crate::support::*;

// End-to-end tests of the observability features with the real binaries: `tw-cli serve` in a
// subprocess, `tw-cli logs` / `tw-cli webhook events` as further subprocesses, deliveries with
// curl. Nothing depends on how fast the machine is: everything that happens asynchronously is
// polled with a generous deadline.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "obs-cli-secret-0123456789abcdef";
const WRONG_SECRET: &str = "not-the-right-secret-9876543210";
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// A running `tw-cli serve` with an admin key created before it started.
struct Env {
    tmp: tempfile::TempDir,
    data: PathBuf,
    server: ServerProcess,
    admin: String,
}

fn env_with(extra: &[&str]) -> Env {
    let (tmp, data) = workdir();
    let admin = admin_key_for(&data);
    let server = ServerProcess::start(&data, extra, &[]);
    Env { tmp, data, server, admin }
}

impl Env {
    fn cli(&self, args: &[&str]) -> Output {
        cli(&self.server.url, Some(&self.admin), args)
    }
    fn url(&self) -> String {
        self.server.url.clone()
    }
    /// Registers `name` with SECRET (and any extra `webhook add` flags).
    fn add_source(&self, name: &str, extra: &[&str]) {
        let mut args = vec!["webhook", "add", name, "--secret", SECRET];
        args.extend_from_slice(extra);
        ok(self.cli(&args));
    }
}

/// One intake response.
#[derive(Debug, Clone)]
struct Resp {
    status: u16,
    /// Response headers, names lowercased.
    headers: BTreeMap<String, String>,
    body: Value,
    /// The X-Webhook-Signature value sent.
    sig: String,
}

impl Resp {
    fn request_id(&self) -> String {
        self.headers.get("x-request-id").cloned().unwrap_or_else(|| panic!("no X-Request-Id header: {self:?}"))
    }
    fn code(&self) -> String {
        self.body["error"]["code"].as_str().unwrap_or("-").to_string()
    }
}

/// POSTs `body` to the intake of `source` with curl, signed with `secret` at `ts`; an own
/// X-Request-Id when `rid` is given.
fn post(url: &str, source: &str, secret: &str, ts: i64, body: &str, rid: Option<&str>) -> Resp {
    let sig = signature(secret, ts, body.as_bytes());
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "-X", "POST"])
        .arg(format!("{url}/api/webhooks/{source}"))
        .args(["-H", "Content-Type: application/json", "-H", "Expect:"])
        .args(["-H", &format!("X-Webhook-Signature: {sig}")])
        .args(["-H", &format!("X-Webhook-Timestamp: {ts}")]);
    if let Some(r) = rid {
        cmd.args(["-H", &format!("X-Request-Id: {r}")]);
    }
    let o = cmd.args(["--data-binary", body]).args(["-w", "\n%{http_code}"]).stdin(Stdio::null()).output().expect("run curl");
    assert!(o.status.success(), "curl failed: {}", show(&o));
    let out = stdout(&o);
    let (head, rest) = out.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header block in curl output: {out}"));
    let rest = rest.trim_end();
    let (body_text, code) = rest.rsplit_once('\n').unwrap_or(("", rest));
    let status: u16 = code.trim().parse().unwrap_or_else(|_| panic!("no status in curl output: {out}"));
    let mut headers = BTreeMap::new();
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_lowercase(), v.trim().to_string());
        }
    }
    let body = serde_json::from_str(body_text.trim()).unwrap_or_else(|_| Value::String(body_text.to_string()));
    Resp { status, headers, body, sig }
}

/// A generic alert with a unique id.
fn alert(id: &str) -> String {
    format!(r#"{{"event_type":"security_alert","data":{{"alert_id":"{id}","severity":"high","title":"obs test {id}"}}}}"#)
}

/// GET `path` with curl and no key: (status, body text).
fn get(url: &str, path: &str) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .arg(format!("{url}{path}"))
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    assert!(o.status.success(), "curl failed: {}", show(&o));
    let out = stdout(&o);
    let out = out.trim_end();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", out));
    (code.trim().parse().unwrap_or_else(|_| panic!("no status: {out}")), body.to_string())
}

/// Retries `f` until it returns Some, for DEADLINE; panics with `what` and the last attempt.
fn poll<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => {
                if Instant::now() > deadline {
                    panic!("timed out waiting for {what}; last attempt:\n{last}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Non-empty lines of a text.
fn lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// All text of the files under `dir` (recursively).
fn read_tree(dir: &Path) -> String {
    let mut out = String::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push_str(&read_tree(&p));
            } else {
                out.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out
}

/// The known set of deliveries of section 1: good 201, bad signature 401, expired 401,
/// duplicate 200 to `source`, and one to an unregistered name (404). In that order.
fn known_deliveries(url: &str, source: &str, tag: &str) -> Vec<Resp> {
    let good_body = alert(&format!("{tag}-good"));
    let good = post(url, source, SECRET, now(), &good_body, None);
    assert_eq!(good.status, 201, "{good:?}");
    let bad = post(url, source, WRONG_SECRET, now(), &alert(&format!("{tag}-bad")), None);
    assert_eq!((bad.status, bad.code().as_str()), (401, "invalid_signature"), "{bad:?}");
    let expired = post(url, source, SECRET, now() - 3600, &alert(&format!("{tag}-expired")), None);
    assert_eq!((expired.status, expired.code().as_str()), (401, "timestamp_expired"), "{expired:?}");
    let dup = post(url, source, SECRET, now(), &good_body, None);
    assert_eq!(dup.status, 200, "{dup:?}");
    assert_eq!(dup.body["duplicate"], true, "{dup:?}");
    let unreg = post(url, "no-such-source", SECRET, now(), &alert(&format!("{tag}-unreg")), None);
    assert_eq!((unreg.status, unreg.code().as_str()), (404, "unknown_source"), "{unreg:?}");
    vec![good, bad, expired, dup, unreg]
}

/// `(status, code, source)` the log line of each of [`known_deliveries`] must show.
fn expected_of(source: &str) -> Vec<(u16, &'static str, String)> {
    vec![
        (201, "-", source.to_string()),
        (401, "invalid_signature", source.to_string()),
        (401, "timestamp_expired", source.to_string()),
        (200, "-", source.to_string()),
        (404, "unknown_source", "_unregistered".to_string()),
    ]
}

// ---------------------------------------------------------------------------------------------
// 1. tw-cli logs: filter, tail, json, source, level, since, free text, triage
// ---------------------------------------------------------------------------------------------

#[test]
fn logs_tail_shows_exactly_the_known_deliveries() {
    let e = env_with(&[]);
    e.add_source("mail", &[]);
    let url = e.url();
    let sent = known_deliveries(&url, "mail", "t1");
    let rids: Vec<String> = sent.iter().map(Resp::request_id).collect();
    let expected = expected_of("mail");

    // The spec's command, human lines: exactly 5, in delivery order, each about its delivery.
    let out = ok(e.cli(&["logs", "--filter", "webhook", "--tail", "5"]));
    let got = lines(&out);
    assert_eq!(got.len(), 5, "expected exactly 5 lines:\n{out}");
    for (i, line) in got.iter().enumerate() {
        let (status, code, source) = &expected[i];
        assert!(line.contains("webhook delivery"), "line {i}: {line}");
        assert!(line.contains(&format!("request_id={}", rids[i])), "line {i} lacks request id {}: {line}", rids[i]);
        assert!(line.contains(&format!("status={status}")), "line {i} lacks status={status}: {line}");
        assert!(line.contains(&format!("code={code}")), "line {i} lacks code={code}: {line}");
        assert!(line.contains(&format!("source={source}")), "line {i} lacks source={source}: {line}");
        assert!(line.contains("latency_ms="), "line {i}: {line}");
    }
    // The good delivery and its duplicate name the incident.
    let number = sent[0].body["incident_number"].as_str().unwrap().to_string();
    assert!(got[0].contains(&format!("incident={number}")), "{}", got[0]);
    assert!(got[3].contains(&format!("incident={number}")), "{}", got[3]);
    assert!(got[4].contains("requested_source=no-such-source"), "{}", got[4]);

    // --output json: one raw record per line with the fields.
    let out = ok(e.cli(&["logs", "--filter", "webhook", "--tail", "5", "--output", "json"]));
    let got = lines(&out);
    assert_eq!(got.len(), 5, "{out}");
    for (i, line) in got.iter().enumerate() {
        let r: Value = serde_json::from_str(line).unwrap_or_else(|err| panic!("line {i} is not JSON ({err}): {line}"));
        let (status, code, source) = &expected[i];
        assert_eq!(r["message"], "webhook delivery", "{r}");
        assert_eq!(r["target"], "webhook", "{r}");
        assert_eq!(r["level"], "INFO", "{r}");
        assert!(r["ts"].is_string(), "{r}");
        let f = &r["fields"];
        assert_eq!(f["request_id"], rids[i].as_str(), "{r}");
        assert_eq!(f["source"], source.as_str(), "{r}");
        assert_eq!(f["status"], *status, "{r}");
        assert_eq!(f["code"], *code, "{r}");
    }

    // --source: only that source's deliveries.
    let out = ok(e.cli(&["logs", "--filter", "webhook", "--source", "mail", "--tail", "100"]));
    let got = lines(&out);
    assert_eq!(got.len(), 4, "{out}");
    for (line, rid) in got.iter().zip(&rids[..4]) {
        assert!(line.contains(&format!("request_id={rid}")) && line.contains("source=mail"), "{line}");
    }
    let out = ok(e.cli(&["logs", "--source", "_unregistered", "--tail", "100"]));
    let got = lines(&out);
    assert_eq!(got.len(), 1, "{out}");
    assert!(got[0].contains(&rids[4]), "{out}");
    let out = ok(e.cli(&["logs", "--source", "nobody", "--tail", "100"]));
    assert!(lines(&out).is_empty(), "{out}");

    // --level error: none of them (they are info).
    let out = ok(e.cli(&["logs", "--level", "error", "--tail", "1000"]));
    for rid in &rids {
        assert!(!out.contains(rid.as_str()), "{rid} shown at --level error:\n{out}");
    }
    for line in lines(&out) {
        assert!(line.contains("ERROR"), "non-error line at --level error: {line}");
    }
    // --level info keeps them.
    let out = ok(e.cli(&["logs", "--filter", "webhook", "--level", "info", "--tail", "5"]));
    assert_eq!(lines(&out).len(), 5, "{out}");

    // --since 10m includes them.
    let out = ok(e.cli(&["logs", "--filter", "webhook", "--since", "10m", "--tail", "100"]));
    for rid in &rids {
        assert!(out.contains(rid.as_str()), "{rid} missing with --since 10m:\n{out}");
    }

    // Free text: a request id finds exactly its line.
    for rid in &rids {
        let out = ok(e.cli(&["logs", "--filter", rid, "--tail", "100"]));
        let got = lines(&out);
        assert_eq!(got.len(), 1, "--filter {rid}:\n{out}");
        assert!(got[0].contains("webhook delivery"), "{out}");
    }
    // Free text over messages too, case-insensitively.
    let out = ok(e.cli(&["logs", "--filter", "WEBHOOK DELIVERY", "--tail", "100"]));
    assert_eq!(lines(&out).len(), 5, "{out}");
}

#[test]
fn logs_filter_triage_shows_the_finished_job() {
    let e = env_with(&[]);
    e.add_source("phish", &["--auto-triage", "true", "--playbook", "phishing_triage"]);
    let r = post(&e.url(), "phish", SECRET, now(), &alert("triage-1"), None);
    assert_eq!(r.status, 201, "{r:?}");
    let number = r.body["incident_number"].as_str().unwrap().to_string();
    let line = poll("a 'triage job finished' line", || {
        let out = ok(e.cli(&["logs", "--filter", "triage", "--tail", "100"]));
        lines(&out)
            .into_iter()
            .find(|l| l.contains("triage job finished") && l.contains(&format!("incident={number}")))
            .map(str::to_string)
            .ok_or(out)
    });
    assert!(line.contains("playbook=phishing_triage"), "{line}");
    // The component filter selects only triage records.
    let out = ok(e.cli(&["logs", "--filter", "triage", "--tail", "100", "--output", "json"]));
    for l in lines(&out) {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|err| panic!("not JSON ({err}): {l}"));
        assert_eq!(v["target"], "triage", "{v}");
    }
    // And the webhook filter does not show it.
    let out = ok(e.cli(&["logs", "--filter", "webhook", "--tail", "100"]));
    assert!(!out.contains("triage job finished"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// 2. --follow
// ---------------------------------------------------------------------------------------------

/// Kills the follow child when the test ends, however it ends.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn logs_follow_streams_a_delivery_made_after_it_started() {
    let e = env_with(&[]);
    e.add_source("mail", &[]);
    let url = e.url();
    // Before the follower starts: must not be printed with --tail 0.
    let before = post(&url, "mail", SECRET, now(), &alert("before-follow"), Some("before-follow-1"));
    assert_eq!(before.status, 201, "{before:?}");

    let child = tw()
        .args(["logs", "--filter", "webhook", "--tail", "0", "--follow"])
        .env("TW_URL", &url)
        .env("TW_API_KEY", &e.admin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tw-cli logs --follow");
    let mut guard = ChildGuard(child);
    let out = guard.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // The follower subscribes at some point after it starts; deliveries made before that are
    // (correctly) not streamed. So deliver, wait a while for its line, and deliver again if it
    // did not come: the first streamed line must be about one of these deliveries.
    let deadline = Instant::now() + DEADLINE;
    let mut sent: Vec<String> = Vec::new();
    let mut received: Vec<String> = Vec::new();
    let mut found = None;
    let mut n = 0;
    while found.is_none() && Instant::now() < deadline {
        n += 1;
        let r = post(&url, "mail", SECRET, now(), &alert(&format!("follow-{n}")), None);
        assert_eq!(r.status, 201, "{r:?}");
        let rid = r.request_id();
        assert!(!rid.is_empty());
        sent.push(rid.clone());
        let wait_until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < wait_until {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if line.contains(&rid) {
                        found = Some(line.clone());
                    }
                    received.push(line);
                    if found.is_some() {
                        break;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = guard.0.wait();
                    let mut err = String::new();
                    let _ = std::io::Read::read_to_string(guard.0.stderr.as_mut().unwrap(), &mut err);
                    panic!("the follower exited early: {err}\nlines: {received:?}");
                }
            }
        }
    }
    let line = found.unwrap_or_else(|| panic!("no streamed line for any of {sent:?} within 30 s; got {received:?}"));
    assert!(line.contains("webhook delivery") && line.contains("status=201") && line.contains("source=mail"), "{line}");
    // Every streamed line is a webhook line about a delivery made after the start; the earlier
    // one is not replayed with --tail 0.
    for l in &received {
        assert!(!l.contains("before-follow-1"), "--tail 0 replayed an old line: {l}");
        assert!(l.contains("webhook delivery"), "{l}");
        assert!(sent.iter().any(|rid| l.contains(rid.as_str())), "a line for no delivery of ours: {l}");
    }
    // The follower is still running (it streams until stopped); then stop it.
    assert!(guard.0.try_wait().unwrap().is_none(), "the follower stopped by itself");

    // One more delivery now that the stream is certainly live: its line arrives too.
    let r = post(&url, "mail", SECRET, now(), &alert("follow-last"), Some("follow-last-id"));
    assert_eq!(r.request_id(), "follow-last-id");
    let deadline = Instant::now() + DEADLINE;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l.contains("follow-last-id") => break,
            Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("the follower went away: {e}"),
        }
        assert!(Instant::now() < deadline, "no line for follow-last-id within 30 s");
    }
    drop(guard);
}

// ---------------------------------------------------------------------------------------------
// 3. no secret, signature or API key anywhere
// ---------------------------------------------------------------------------------------------

#[test]
fn no_secret_signature_or_api_key_in_logs_files_or_metrics() {
    let e = env_with(&[]);
    e.add_source("mail", &[]);
    // Its own secret: the server refuses a secret another source uses.
    let queued_secret = "queued-secret-0123456789abcdef";
    ok(e.cli(&["webhook", "add", "queued", "--secret", queued_secret, "--mode", "async"]));
    let url = e.url();
    let mut sent = known_deliveries(&url, "mail", "t3");
    sent.push(post(&url, "queued", queued_secret, now(), &alert("t3-async"), None));
    assert_eq!(sent.last().unwrap().status, 202, "{:?}", sent.last());
    sent.push(post(&url, "queued", WRONG_SECRET, now(), &alert("t3-async-bad"), None));
    assert_eq!(sent.last().unwrap().status, 401, "{:?}", sent.last());
    // A signed test event from the CLI, and a secret rotation (the new secret must not leak either).
    ok(e.cli(&["webhook", "test", "mail", "--secret", SECRET]));
    let new_secret = "rotated-secret-abcdef0123456789xyz";
    ok(e.cli(&["webhook", "rotate-secret", "mail", "--secret", new_secret]));
    sent.push(post(&url, "mail", new_secret, now(), &alert("t3-rotated"), None));
    assert_eq!(sent.last().unwrap().status, 201, "{:?}", sent.last());
    // Wrong API keys are not echoed either.
    let wrong_key = "tw_thisisnotavalidkey0000000000abcd";
    assert!(!cli(&url, Some(wrong_key), &["logs", "--tail", "1"]).status.success());

    let last_rid = sent.last().unwrap().request_id();
    let mut needles: Vec<(String, String)> = vec![
        ("source secret".into(), SECRET.into()),
        ("second source's secret".into(), queued_secret.into()),
        ("rotated secret".into(), new_secret.into()),
        ("wrong secret".into(), WRONG_SECRET.into()),
        ("admin API key".into(), e.admin.clone()),
        ("wrong API key".into(), wrong_key.into()),
    ];
    for r in &sent {
        needles.push((format!("signature of {}", r.request_id()), r.sig.clone()));
        let hex = r.sig.trim_start_matches("sha256=").to_string();
        assert_eq!(hex.len(), 64, "{}", r.sig);
        needles.push((format!("signature hex of {}", r.request_id()), hex));
    }
    let check = |place: &str, text: &str| {
        for (what, needle) in &needles {
            assert!(!text.contains(needle.as_str()), "{what} ({needle}) found in {place}:\n{text}");
        }
    };

    // (b) the retained logs, raw: must really hold the deliveries (so the check means something).
    let logs = ok(e.cli(&["logs", "--tail", "1000", "--output", "json"]));
    assert!(logs.contains(&last_rid), "the logs lack the last delivery:\n{logs}");
    check("tw-cli logs --output json", &logs);
    let human = ok(e.cli(&["logs", "--tail", "1000"]));
    check("tw-cli logs", &human);

    // (c) the files in DATA_DIR/logs (written in the background: wait for the last delivery).
    let log_dir = e.data.join("logs");
    let files = poll("the log files to hold the last delivery", || {
        let t = read_tree(&log_dir);
        if t.contains(&last_rid) { Ok(t) } else { Err(format!("{} bytes in {}", t.len(), log_dir.display())) }
    });
    check("DATA_DIR/logs", &files);

    // (d) /metrics.
    let (status, metrics) = get(&url, "/metrics");
    assert_eq!(status, 200, "{metrics}");
    assert!(metrics.contains("webhook_received_total"), "{metrics}");
    check("/metrics", &metrics);

    // (a) the server's stderr (after the rest, so it holds everything above).
    let stderr_log = e.server.log();
    assert!(stderr_log.contains(&last_rid), "the server's stderr lacks the last delivery:\n{stderr_log}");
    check("the server's stderr", &stderr_log);
    let _ = &e.tmp;
}

// ---------------------------------------------------------------------------------------------
// 4. logs survive a graceful restart
// ---------------------------------------------------------------------------------------------

#[test]
fn logs_survive_a_graceful_restart() {
    let mut e = env_with(&[]);
    e.add_source("mail", &[]);
    let url = e.url();
    let sent = known_deliveries(&url, "mail", "t4");
    let rids: Vec<String> = sent.iter().map(Resp::request_id).collect();

    // SIGTERM, then wait for a clean exit.
    let pid = e.server.child.id().to_string();
    let o = Command::new("kill").args(["-TERM", &pid]).output().expect("run kill");
    assert!(o.status.success(), "{}", show(&o));
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(s) = e.server.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "server did not stop within 30 s of SIGTERM:\n{}", e.server.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "graceful stop exited with {status}:\n{}", e.server.log());

    // Same data dir, new process (new port).
    let again = ServerProcess::start(&e.data, &[], &[]);
    let out = ok(cli(&again.url, Some(&e.admin), &["logs", "--filter", "webhook", "--tail", "100"]));
    for rid in &rids {
        assert!(out.contains(rid.as_str()), "{rid} lost across the restart:\n{out}");
    }
    // Still in order, and the human line is the same kind of line as before.
    let pos: Vec<usize> = rids.iter().map(|r| out.find(r.as_str()).unwrap()).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "order changed across the restart:\n{out}");
    let line = lines(&out).into_iter().find(|l| l.contains(&rids[1])).unwrap();
    assert!(line.contains("status=401") && line.contains("code=invalid_signature"), "{line}");
    // New deliveries append after the old ones.
    let r = post(&again.url, "mail", SECRET, now(), &alert("t4-after"), Some("after-restart-1"));
    assert_eq!(r.status, 201, "{r:?}");
    let out = ok(cli(&again.url, Some(&e.admin), &["logs", "--filter", "webhook", "--tail", "100"]));
    let got = lines(&out);
    assert!(got.last().unwrap().contains("after-restart-1"), "{out}");
    assert!(out.find(&rids[4]).unwrap() < out.find("after-restart-1").unwrap(), "{out}");
}

// ---------------------------------------------------------------------------------------------
// 5. X-Request-Id end to end, webhook events
// ---------------------------------------------------------------------------------------------

/// `webhook events get RID`, retried until the delivery record is there (it is written in the
/// background after the response).
fn events_get(e: &Env, rid: &str) -> String {
    poll(&format!("webhook events get {rid}"), || {
        let o = e.cli(&["webhook", "events", "get", rid]);
        if o.status.success() { Ok(stdout(&o)) } else { Err(show(&o)) }
    })
}

/// The value of `key` in `pairs` output (`key  value` lines).
fn pair<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key).filter(|rest| rest.starts_with(' ')).map(str::trim))
        .unwrap_or_else(|| panic!("no '{key}' in:\n{out}"))
}

#[test]
fn request_ids_trace_a_delivery_and_webhook_events_lists_them() {
    let e = env_with(&[]);
    e.add_source("mail", &[]);
    let url = e.url();

    // 1. The sender's own id is echoed.
    let good_body = alert("t5-good-payload-marker");
    let mine = post(&url, "mail", SECRET, now(), &good_body, Some("my-req-123"));
    assert_eq!(mine.status, 201, "{mine:?}");
    assert_eq!(mine.request_id(), "my-req-123");
    let number = mine.body["incident_number"].as_str().unwrap().to_string();
    // 2. None sent: one is generated, unique.
    let gen1 = post(&url, "mail", SECRET, now(), &alert("t5-second"), None);
    assert_eq!(gen1.status, 201, "{gen1:?}");
    let gen_rid = gen1.request_id();
    assert!(!gen_rid.is_empty() && gen_rid != "my-req-123", "{gen_rid}");
    // 3. refused: bad signature, with its own id and a recognisable body.
    let bad = post(&url, "mail", WRONG_SECRET, now(), &alert("t5-refused-body-marker"), Some("ev-bad-sig"));
    assert_eq!((bad.status, bad.code().as_str()), (401, "invalid_signature"), "{bad:?}");
    assert_eq!(bad.request_id(), "ev-bad-sig");
    // 4. refused: expired.
    let exp = post(&url, "mail", SECRET, now() - 3600, &alert("t5-expired"), Some("ev-expired"));
    assert_eq!((exp.status, exp.code().as_str()), (401, "timestamp_expired"), "{exp:?}");
    // 5. duplicate of the first.
    let dup = post(&url, "mail", SECRET, now(), &good_body, Some("ev-dup"));
    assert_eq!(dup.status, 200, "{dup:?}");

    // Every intake response has one: unregistered source, unsigned, generated ids differ.
    let unreg = post(&url, "nope", SECRET, now(), &alert("x"), None);
    assert_eq!(unreg.status, 404);
    let unreg_rid = unreg.request_id();
    assert!(!unreg_rid.is_empty() && unreg_rid != gen_rid, "{unreg_rid}");
    // The log line carries the sender's id.
    let out = ok(e.cli(&["logs", "--filter", "my-req-123", "--tail", "100"]));
    let got = lines(&out);
    assert_eq!(got.len(), 1, "{out}");
    assert!(got[0].contains("webhook delivery") && got[0].contains("request_id=my-req-123"), "{out}");
    assert!(got[0].contains("status=201") && got[0].contains(&format!("incident={number}")), "{out}");

    // events get: status, incident, the raw payload.
    let one = events_get(&e, "my-req-123");
    // Stored under the server's own id, the sender's beside it.
    assert_eq!(pair(&one, "sender_request_id"), "my-req-123", "{one}");
    assert!(pair(&one, "request_id").starts_with("req_"), "{one}");
    assert_eq!(pair(&one, "source"), "mail", "{one}");
    assert_eq!(pair(&one, "status"), "201", "{one}");
    assert_eq!(pair(&one, "incident"), number, "{one}");
    assert!(one.contains("payload:"), "{one}");
    assert!(one.contains("t5-good-payload-marker"), "raw payload missing:\n{one}");
    let j: Value = serde_json::from_str(&ok(e.cli(&["webhook", "events", "get", "my-req-123", "--output", "json"]))).unwrap();
    assert_eq!(j["status"], 201, "{j}");
    assert_eq!(j["incident_number"], number.as_str(), "{j}");
    let raw_payload: Value = serde_json::from_str(j["raw_payload"].as_str().unwrap_or_else(|| panic!("{j}"))).unwrap();
    assert_eq!(raw_payload, serde_json::from_str::<Value>(&good_body).unwrap(), "{j}");

    // A delivery refused before its signature verified is listed, but its body is not stored:
    // nothing an unauthenticated sender sends is kept.
    let refused = events_get(&e, "ev-bad-sig");
    assert_eq!(pair(&refused, "status"), "401", "{refused}");
    assert_eq!(pair(&refused, "code"), "invalid_signature", "{refused}");
    assert_eq!(pair(&refused, "incident"), "-", "{refused}");
    assert!(!refused.contains("t5-refused-body-marker"), "an unauthenticated body was stored:\n{refused}");
    // Not a secret nor a signature in it.
    assert!(!refused.contains(&bad.sig) && !refused.contains(WRONG_SECRET) && !refused.contains(SECRET), "{refused}");

    // Unknown request id: one clear line, non-zero exit.
    fails_with(e.cli(&["webhook", "events", "get", "no-such-request-id"]), &["not_found"]);

    // events <source>: newest first, aligned, all columns.
    let order = ["ev-dup", "ev-expired", "ev-bad-sig", gen_rid.as_str(), "my-req-123"];
    let table = poll("all 5 deliveries in webhook events", || {
        let out = ok(e.cli(&["webhook", "events", "mail"]));
        if lines(&out).len() == 6 { Ok(out) } else { Err(out) }
    });
    let rows = lines(&table);
    let header = rows[0];
    for h in ["TIME", "STATUS", "CODE", "INCIDENT", "REQUEST ID", "SENDER ID"] {
        assert!(header.contains(h), "header lacks {h}:\n{table}");
    }
    assert!(header.find("TIME") < header.find("STATUS") && header.find("STATUS") < header.find("CODE"), "{table}");
    assert!(header.find("CODE") < header.find("INCIDENT") && header.find("INCIDENT") < header.find("REQUEST ID"), "{table}");
    let expect_rows: [(&str, &str, &str); 5] = [
        ("200", "-", number.as_str()),
        ("401", "timestamp_expired", "-"),
        ("401", "invalid_signature", "-"),
        ("201", "-", ""),
        ("201", "-", number.as_str()),
    ];
    let this_year = chrono::Utc::now().format("%Y").to_string();
    for (i, row) in rows[1..].iter().enumerate() {
        assert_aligned(header, row);
        let cells: Vec<&str> = row.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(cells.len(), 6, "row {i}: {row}");
        let (status, code, incident) = expect_rows[i];
        assert!(cells[0].starts_with(&this_year) || cells[0].contains('T') || cells[0].contains(':'), "time cell: {row}");
        assert_eq!(cells[1], status, "row {i}:\n{table}");
        assert_eq!(cells[2], code, "row {i}:\n{table}");
        if incident.is_empty() {
            assert!(cells[3].starts_with("INC-") && cells[3] != number, "row {i}:\n{table}");
        } else {
            assert_eq!(cells[3], incident, "row {i}:\n{table}");
        }
        // The server's own id, and the sender's beside it when it sent one (the response's
        // X-Request-Id is the sender's, else the server's).
        assert!(cells[4].starts_with("req_"), "row {i}:\n{table}");
        let echoed = if cells[5] == "-" { cells[4] } else { cells[5] };
        assert_eq!(echoed, order[i], "row {i} (newest first):\n{table}");
    }

    // --status failed: only the refused ones.
    let out = ok(e.cli(&["webhook", "events", "mail", "--status", "failed"]));
    let rows = lines(&out);
    assert_eq!(rows.len(), 3, "{out}");
    assert!(rows[1].contains("ev-expired") && rows[2].contains("ev-bad-sig"), "{out}");
    assert!(!out.contains("my-req-123") && !out.contains("ev-dup"), "{out}");
    // --status ok: only the accepted ones.
    let out = ok(e.cli(&["webhook", "events", "mail", "--status", "ok"]));
    assert_eq!(lines(&out).len(), 4, "{out}");
    assert!(!out.contains("ev-bad-sig") && !out.contains("ev-expired"), "{out}");
    // --tail 2: the two newest.
    let out = ok(e.cli(&["webhook", "events", "mail", "--tail", "2"]));
    let rows = lines(&out);
    assert_eq!(rows.len(), 3, "{out}");
    assert!(rows[1].contains("ev-dup") && rows[2].contains("ev-expired"), "{out}");
    // --output json lists the same.
    let j: Value = serde_json::from_str(&ok(e.cli(&["webhook", "events", "mail", "--tail", "2", "--output", "json"]))).unwrap();
    let data = j["data"].as_array().unwrap_or_else(|| panic!("{j}"));
    assert_eq!(data.iter().map(|d| d["sender_request_id"].as_str().unwrap()).collect::<Vec<_>>(), ["ev-dup", "ev-expired"], "{j}");
    // The unregistered delivery is not recorded for any source; an unknown source is an error.
    fails_with(e.cli(&["webhook", "events", "nope"]), &["unknown_source"]);

    // An unsigned delivery gets one too (done last: it is recorded as a delivery of mail).
    let o = Command::new("curl")
        .args(["-sS", "-i", "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "{}"])
        .arg(format!("{url}/api/webhooks/mail"))
        .output()
        .unwrap();
    let raw = stdout(&o);
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");
    assert!(raw.to_lowercase().contains("\nx-request-id: "), "unsigned delivery lacks X-Request-Id:\n{raw}");

    // An unauthenticated sender reusing a real request id cannot shadow that delivery.
    let forged = post(&url, "mail", WRONG_SECRET, now(), &alert("t5-forged"), Some("my-req-123"));
    assert_eq!(forged.status, 401);
    poll("the forged delivery to be recorded", || {
        let out = ok(e.cli(&["webhook", "events", "mail", "--status", "failed", "--output", "json"]));
        if out.matches("my-req-123").count() >= 1 { Ok(()) } else { Err(out) }
    });
    let one = events_get(&e, "my-req-123");
    assert_eq!(pair(&one, "status"), "201", "the verified delivery must win:\n{one}");
    assert!(one.contains("t5-good-payload-marker") && !one.contains("t5-forged"), "{one}");
    // A delivery refused after its signature verified (not a JSON object) keeps its body.
    let signed_bad = post(&url, "mail", SECRET, now(), r#"["t5-signed-array-marker"]"#, Some("ev-signed-bad"));
    assert_eq!((signed_bad.status, signed_bad.code().as_str()), (400, "invalid_payload"), "{signed_bad:?}");
    let kept = poll("the signed refused delivery", || {
        let out = e.cli(&["webhook", "events", "get", "ev-signed-bad"]);
        if out.status.success() { Ok(stdout(&out)) } else { Err(stderr(&out)) }
    });
    assert!(kept.contains("t5-signed-array-marker"), "{kept}");
}

// ---------------------------------------------------------------------------------------------
// 6. health and readiness
// ---------------------------------------------------------------------------------------------

fn ready_checks(url: &str) -> Value {
    poll("GET /api/ready to be 200", || {
        let (status, body) = get(url, "/api/ready");
        if status == 200 {
            Ok(serde_json::from_str::<Value>(&body).map_err(|e| format!("{e}: {body}"))?)
        } else {
            Err(format!("{status}: {body}"))
        }
    })
}

#[test]
fn health_and_ready_without_a_key() {
    let e = env_with(&[]);
    let url = e.url();
    let (status, body) = get(&url, "/api/health");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok", "{v}");

    let v = ready_checks(&url);
    assert_eq!(v["status"], "ready", "{v}");
    for check in ["store", "migrations", "queue_workers", "triage_workers"] {
        assert_eq!(v["checks"][check]["ok"], true, "{check}: {v}");
    }
    assert!(v["checks"]["queue_workers"]["detail"].as_str().unwrap().contains("running"), "{v}");
    assert!(v["checks"]["triage_workers"]["detail"].as_str().unwrap().contains("running"), "{v}");
    assert!(v["checks"]["migrations"]["detail"].as_str().unwrap().contains("schema version"), "{v}");
}

#[test]
fn ready_without_workers_says_none_in_this_process() {
    let e = env_with(&["--queue-workers", "0", "--triage-workers", "0"]);
    let url = e.url();
    let (status, _) = get(&url, "/api/health");
    assert_eq!(status, 200);
    let v = ready_checks(&url);
    assert_eq!(v["status"], "ready", "{v}");
    for check in ["store", "migrations", "queue_workers", "triage_workers"] {
        assert_eq!(v["checks"][check]["ok"], true, "{check}: {v}");
    }
    for check in ["queue_workers", "triage_workers"] {
        assert_eq!(v["checks"][check]["detail"], "none in this process", "{check}: {v}");
    }
}

// ---------------------------------------------------------------------------------------------
// extra: --log-format json on stderr
// ---------------------------------------------------------------------------------------------

#[test]
fn log_format_json_writes_one_json_object_per_line_without_secrets() {
    let e = env_with(&["--log-format", "json"]);
    e.add_source("mail", &[]);
    let r = post(&e.url(), "mail", SECRET, now(), &alert("t7"), Some("json-format-1"));
    assert_eq!(r.status, 201, "{r:?}");
    let line = poll("the delivery line on stderr", || {
        let log = e.server.log();
        log.lines().find(|l| l.contains("json-format-1")).map(str::to_string).ok_or(log)
    });
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
    assert!(v.to_string().contains("webhook delivery"), "{v}");
    let log = e.server.log();
    for l in lines(&log) {
        assert!(serde_json::from_str::<Value>(l).is_ok(), "a non-JSON stderr line with --log-format json: {l}");
    }
    for needle in [SECRET, r.sig.as_str(), r.sig.trim_start_matches("sha256="), e.admin.as_str()] {
        assert!(!log.contains(needle), "{needle} in stderr:\n{log}");
    }
}

/// A new admin key for the store in `data`.
fn admin_key_for(data: &Path) -> String {
    new_key(data, "admin")
}

/// Refused API keys leave an `auth` line (never the key), and API requests an `api` line.
#[test]
fn auth_refusals_and_api_requests_are_logged() {
    let e = env_with(&[]);
    let url = e.url();
    let bad_key = "tw_0000000000000000000000000000000000000000000000000000000000000000";
    let o = tw().env("TW_URL", &url).env("TW_API_KEY", bad_key).args(["webhook", "list"]).output().unwrap();
    fails(o, &["unauthorized"]);
    let out = poll("the auth line", || {
        let out = ok(e.cli(&["logs", "--filter", "auth", "--tail", "10"]));
        if out.contains("API key refused") { Ok(out) } else { Err(out) }
    });
    assert!(out.contains("path=/api/webhooks") && !out.contains(bad_key), "{out}");
    let out = poll("the api line", || {
        let out = ok(e.cli(&["logs", "--filter", "api", "--tail", "50"]));
        if out.contains("route=/api/webhooks status=401") { Ok(out) } else { Err(out) }
    });
    assert!(out.contains("api request") && out.contains("method=GET"), "{out}");
}
