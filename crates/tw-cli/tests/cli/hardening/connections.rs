//! Graceful shutdown of the real `tw-cli serve`: a SIGTERM with a request and triage jobs in
//! flight. The request is sent over raw TCP, to be sure it is in flight when the signal comes.

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const SECRET: &str = "connections-secret-0123456789abcdef";
/// How long a test waits for the server to act; generous, never asserted as a speed.
const PATIENCE: Duration = Duration::from_secs(30);

/// A `tw-cli serve` with a slow delivery in flight and triage jobs claimed is sent SIGTERM: the
/// delivery is answered, the process exits 0, and the jobs it claimed are released (another
/// instance runs them at once, although their lease would last an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_requests_in_flight_releases_triage_and_exits_zero() {
    const JOBS: usize = 150;
    let (_tmp, data) = workdir();
    std::fs::create_dir_all(&data).unwrap();
    let key = new_key(&data, "admin");
    let http = reqwest::Client::new();
    // First, an instance without triage workers queues the jobs.
    let mut a = ServerProcess::start(&data, &["--triage-workers", "0"], &[]);
    let resp = http
        .post(format!("{}/api/webhooks", a.url))
        .bearer_auth(&key)
        .json(&json!({"source": "mail", "secret": SECRET, "auto_triage": true, "playbook": "phishing_triage"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    for i in 0..JOBS {
        let (status, v) = post_signed(&http, &a.url, "mail", SECRET, now(), heavy_phish(&format!("sig-{i}"))).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    terminate(&mut a).await;

    // Then one that runs them, one at a time, holding its claims for an hour.
    let mut b = ServerProcess::start(&data, &["--triage-workers", "1", "--claim-lease-secs", "3600"], &[]);
    let body = phish("in-flight");
    let mut s = TcpStream::connect(("127.0.0.1", b.port)).await.unwrap();
    // `Expect: 100-continue`: the server says "100 Continue" once its handler reads the body, so
    // the request is certainly in flight when the signal comes.
    let head = delivery_head("mail", SECRET, &body).replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let interim = read_head(&mut s).await;
    assert_eq!(status_of(&interim), Some(100), "{interim}");
    s.write_all(&body.as_bytes()[..body.len() / 2]).await.unwrap();
    // SAFETY: signals the child this test started.
    assert_eq!(unsafe { libc::kill(b.child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Err(e) = s.write_all(&body.as_bytes()[body.len() / 2..]).await {
        panic!("the rest of the body in flight could not be sent ({e}):\n{}", b.log());
    }
    let response = read_response(&mut s).await;
    assert_eq!(status_of(&response), Some(201), "the request in flight is answered: {response}\n{}", b.log());
    let status = wait_exit(&mut b).await;
    assert!(status.success(), "exit status {status:?}:\n{}", b.log());

    // A third instance takes every job the second left at once: none waits for its lease.
    let c = ServerProcess::start(&data, &["--triage-workers", "2"], &[]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let v: Value =
            http.get(format!("{}/api/incidents?per_page=200", c.url)).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        let rows = v["data"].as_array().cloned().unwrap_or_default();
        let unfinished: Vec<&Value> = rows.iter().filter(|i| i["triage"]["status"] != "completed").collect();
        if rows.len() == JOBS + 1 && unfinished.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "triage jobs left claimed by the stopped instance: {:?}\n{}",
            unfinished.iter().map(|i| &i["triage"]).collect::<Vec<_>>(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(b.log().contains("released"), "the stopping instance says what it released:\n{}", b.log());
}

/// A phish with many look-alike links: a playbook run takes a while, so the stop finds jobs
/// claimed and not yet run.
fn heavy_phish(alert_id: &str) -> String {
    let mut v: Value = serde_json::from_str(&phish(alert_id)).unwrap();
    let urls: Vec<String> = (0..400).map(|i| format!("http://examp1e-login{i}.top/verify/account?session={i}")).collect();
    v["data"]["details"]["urls"] = json!(urls);
    v.to_string()
}

/// SIGTERM, then the exit status (which must be 0).
async fn terminate(p: &mut ServerProcess) {
    // SAFETY: signals the child this test started.
    assert_eq!(unsafe { libc::kill(p.child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let status = wait_exit(p).await;
    assert!(status.success(), "exit status {status:?}:\n{}", p.log());
}

async fn wait_exit(p: &mut ServerProcess) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "the server did not exit after SIGTERM:\n{}", p.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
