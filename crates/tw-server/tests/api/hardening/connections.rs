//! Connection limits: clients that send headers or bodies too slowly, idle keep-alive
//! connections, more connections than the cap (or one address's share of it), more body bytes
//! than the budget. (The stop on SIGTERM is the binary's: tw-cli's `hardening::connections`.)
//! Misbehaving clients speak raw TCP; one that must be another address than the test's other
//! clients connects from 127.0.0.2 (all of 127.0.0.0/8 is loopback).
use crate::support::*;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tw_server::serve::ConnectionLimits;

const SECRET: &str = "connections-secret-0123456789abcdef";
/// How long a test waits for the server to act; generous, never asserted as a speed.
const PATIENCE: Duration = Duration::from_secs(30);

/// Short timeouts so each test takes seconds; the cap and budget far from anything the test
/// does unless it says otherwise.
fn limits() -> ConnectionLimits {
    ConnectionLimits {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        max_connections: 256,
        max_connections_per_client: None,
        max_buffered_body_bytes: 64 * 1024 * 1024,
    }
}

async fn spawn(tweak: impl FnOnce(&mut ConnectionLimits)) -> TestApp {
    let mut l = limits();
    tweak(&mut l);
    let app = TestApp::spawn_with(|cfg| cfg.connection_limits = l).await;
    app.add_source(json!({"source": "edr", "secret": SECRET})).await;
    app
}

/// An alert of about `size` bytes.
fn alert(id: &str, size: usize) -> String {
    let pad = "x".repeat(size.saturating_sub(120));
    json!({"event_type": "security_alert", "source": "edr", "data": {"alert_id": id, "severity": "low", "details": {"pad": pad}}})
        .to_string()
}

/// Sends one header byte every 100 ms, never the blank line, until the server cuts the
/// connection (true) or for 30 s at most (false).
async fn dribble(s: &mut TcpStream) -> bool {
    let go = async {
        for _ in 0..300 {
            if s.write_all(b"X").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    tokio::time::timeout(PATIENCE, go).await.unwrap_or(false)
}

/// A connection that has had one request answered (200) and is kept alive.
async fn kept_alive_after_one_request(app: &TestApp) -> TcpStream {
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"GET /api/health HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), Some(200));
    s
}

#[tokio::test]
async fn a_client_dribbling_headers_is_disconnected() {
    let app = spawn(|_| {}).await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"GET /api/health HTTP/1.1\r\nHost: test\r\n").await.unwrap();
    // One header byte now and then, never the blank line: the old server waited forever.
    let cut = dribble(&mut s).await;
    assert!(cut || read_until_closed(&mut s).await.is_some(), "a slowloris client must be disconnected");
    let (status, _) = app.with_key("", Method::GET, "/api/health", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_connection_that_never_sends_headers_is_closed() {
    let app = spawn(|_| {}).await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    assert!(read_until_closed(&mut s).await.is_some(), "a silent connection must be closed after the header timeout");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = spawn(|l| l.header_timeout = Duration::from_secs(60)).await;
    let mut s = kept_alive_after_one_request(&app).await;
    // Kept alive, then nothing: closed after the idle timeout (the header timeout is far off).
    assert!(read_until_closed(&mut s).await.is_some(), "an idle keep-alive connection must be closed");
}

/// The header timeout of a keep-alive connection's next request, far shorter than its idle
/// timeout: the watchdog, asleep until the idle deadline, must be woken by the first bytes (a
/// phase change wakes it only when its deadline comes sooner than the watchdog's next look).
#[tokio::test]
async fn a_keep_alive_connection_dribbling_its_next_request_is_closed_at_the_header_timeout() {
    let app = spawn(|l| l.idle_timeout = Duration::from_secs(600)).await;
    let mut s = kept_alive_after_one_request(&app).await;
    // Past the header timeout of the first request: the watchdog now sleeps until the idle
    // deadline, ten minutes off.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(b"GET /api/health HTTP/1.1\r\nHost: test\r\n").await.unwrap();
    let cut = dribble(&mut s).await;
    assert!(cut || read_until_closed(&mut s).await.is_some(), "the next request's headers must arrive within the header timeout");
}

#[tokio::test]
async fn a_stalled_body_is_answered_408_and_its_budget_released() {
    // The budget holds one 100 KB body but not two.
    let app = spawn(|l| l.max_buffered_body_bytes = 150 * 1024).await;
    let body = alert("stalled-1", 100 * 1024);
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(delivery_head("edr", SECRET, &body).as_bytes()).await.unwrap();
    s.write_all(&body.as_bytes()[..body.len() - 10]).await.unwrap();
    // ... and the last 10 bytes never come.
    let response = read_until_closed(&mut s).await.expect("a stalled body must end its connection");
    // The socket is drained before it is closed, so the client reads the answer, not a reset.
    assert_eq!(status_of(&response), Some(408), "{response}");
    assert_eq!(body_of(&response)["error"]["code"], "request_timeout", "{response}");
    // What it held is free again: a body as large is accepted.
    let (status, v) = app.deliver("edr", SECRET, &alert("after-stall", 100 * 1024)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    // The delivery record says what the client was told.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, v) = app.admin(reqwest::Method::GET, "/api/webhooks/edr/events?status=failed&tail=5", None).await;
        let codes: Vec<&str> = v["data"].as_array().map(|a| a.iter().filter_map(|d| d["code"].as_str()).collect()).unwrap_or_default();
        if !codes.is_empty() {
            assert_eq!(codes, ["request_timeout"], "{v}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the stalled delivery was never recorded: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn bodies_past_the_budget_are_refused_503_with_retry_after() {
    let app = spawn(|l| {
        l.max_buffered_body_bytes = 250 * 1024;
        l.body_timeout = Duration::from_secs(60);
    })
    .await;
    // Two senders declare 200 KB, send 100 KB each and stall, holding 200 KB of the budget.
    let mut stalled = Vec::new();
    for i in 0..2 {
        let body = alert(&format!("stall-{i}"), 200 * 1024);
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(delivery_head("edr", SECRET, &body).as_bytes()).await.unwrap();
        s.write_all(&body.as_bytes()[..100 * 1024]).await.unwrap();
        stalled.push(s);
    }
    // The server has read what they sent (its gauge says so, within a second).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while buffered_body_bytes(&app).await < 200.0 * 1024.0 {
        assert!(tokio::time::Instant::now() < deadline, "the stalled bodies were never read");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A third body of 100 KB does not fit.
    let body = alert("one-too-many", 100 * 1024);
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(delivery_head("edr", SECRET, &body).as_bytes()).await.unwrap();
    // The server may stop reading once it refuses: a failed write is expected then.
    let _ = s.write_all(body.as_bytes()).await;
    let response = read_response(&mut s).await;
    assert_eq!(status_of(&response), Some(503), "{response}");
    assert!(response.to_ascii_lowercase().contains("\r\nretry-after:"), "503 must carry Retry-After: {response}");
    assert_eq!(body_of(&response)["error"]["code"], "unavailable", "{response}");
    // Small deliveries that fit what is left still go through.
    let (status, v) = app.deliver("edr", SECRET, &alert("small", 1024)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    drop(stalled);
}

#[tokio::test]
async fn past_the_connection_cap_the_oldest_idle_connections_make_room() {
    const CAP: usize = 8;
    let app = spawn(|l| {
        l.max_connections = CAP;
        // One address plays both the attacker and the clients here: the per-client cap is
        // another test's business.
        l.max_connections_per_client = Some(usize::MAX);
        // The attackers' connections do not time out during the test: only the cap can help.
        l.header_timeout = Duration::from_secs(600);
        l.idle_timeout = Duration::from_secs(600);
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..3 * CAP {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(b"GET /api/health HTTP/1.1\r\n").await.unwrap();
        idle.push(s);
    }
    // Well-behaved clients on new connections are still served.
    for i in 0..3 {
        let http = reqwest::Client::new();
        let resp = tokio::time::timeout(PATIENCE, http.get(app.url("/api/health")).send()).await.expect("health answers").unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let ts = now();
        let (status, v) =
            tokio::time::timeout(PATIENCE, post_signed(&http, &app.base, "edr", SECRET, ts, alert(&format!("capped-{i}"), 512)))
                .await
                .expect("the delivery is answered");
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    // The room was made by closing the idle ones, oldest first.
    let mut closed = 0;
    for s in &mut idle {
        let mut buf = [0u8; 1024];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert!(closed >= 2 * CAP, "only {closed} of {} idle connections were closed", idle.len());
}

/// A connection from `ip` (a loopback address) to the server.
async fn connect_from(ip: &str, app: &TestApp) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(app.addr).await.unwrap()
}

/// A delivery whose handler is reading its body, which never ends: the server said
/// `100 Continue` (so the request is in a handler, a busy connection) and got half the body.
async fn slow_body_from(ip: &str, app: &TestApp, id: &str) -> TcpStream {
    let body = alert(id, 4096);
    let mut s = connect_from(ip, app).await;
    let head = delivery_head("edr", SECRET, &body).replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let interim = read_head(&mut s).await;
    assert_eq!(status_of(&interim), Some(100), "{interim}");
    s.write_all(&body.as_bytes()[..body.len() / 2]).await.unwrap();
    s
}

/// Whether the server still holds the connection open: nothing to read, and not closed, for a
/// moment. Only ever asked of connections whose every timeout is minutes away.
async fn still_open(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await.is_err()
}

/// Busy connections are never closed for room, so one address with a slow body on every slot
/// kept `/api/health` waiting until the bodies timed out. Now that address gets its share of the
/// slots and no more: one connection beyond it is closed at accept, unanswered, while the ones
/// within it carry on, and another address is served.
#[tokio::test]
async fn one_address_with_slow_bodies_gets_its_share_of_the_slots_and_no_more() {
    const CAP: usize = 8;
    const PER_CLIENT: usize = 4;
    let app = spawn(|l| {
        l.max_connections = CAP;
        l.max_connections_per_client = Some(PER_CLIENT);
        // Nothing times out during the test: only the caps decide.
        l.body_timeout = Duration::from_secs(600);
        l.header_timeout = Duration::from_secs(600);
    })
    .await;
    let mut within = Vec::new();
    for i in 0..PER_CLIENT {
        within.push(slow_body_from("127.0.0.2", &app, &format!("slow-{i}")).await);
    }
    // Enough more to fill the whole server, were they let in.
    for i in PER_CLIENT..CAP {
        let body = alert(&format!("slow-{i}"), 4096);
        let mut s = connect_from("127.0.0.2", &app).await;
        let head = delivery_head("edr", SECRET, &body).replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n");
        // The server may have closed it already: a failed write is expected then.
        let _ = s.write_all(head.as_bytes()).await;
        let response = read_until_closed(&mut s).await.expect("a connection beyond the address's share must be closed");
        assert_eq!(response, "", "closed at accept, before any request is read");
    }
    for s in &mut within {
        assert!(still_open(s).await, "connections within the share are not closed for the ones beyond it");
    }
    // Another address is served at once: the slow one holds half of the slots.
    let resp = tokio::time::timeout(PATIENCE, app.http.get(app.url("/api/health")).send()).await.expect("health answers").unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let closed = metric(&app, "http_connections_closed_total", &[("reason", "per_client_cap")]).await;
    assert_eq!(closed, (CAP - PER_CLIENT) as f64);
    drop(within);
}

/// Behind a trusted proxy every client has the proxy's address: it is not held to the share.
#[tokio::test]
async fn a_trusted_proxy_is_not_held_to_the_per_client_cap() {
    const PER_CLIENT: usize = 2;
    let mut l = limits();
    l.max_connections_per_client = Some(PER_CLIENT);
    l.body_timeout = Duration::from_secs(600);
    let app = TestApp::spawn_with(|cfg| {
        cfg.connection_limits = l;
        cfg.trusted_proxies = tw_server::client::TrustedProxies::new(vec!["127.0.0.2/32".parse().unwrap()]);
    })
    .await;
    app.add_source(json!({"source": "edr", "secret": SECRET})).await;
    let mut open = Vec::new();
    for i in 0..3 * PER_CLIENT {
        // Each one reaches its handler (`100 Continue`): none is closed at accept.
        open.push(slow_body_from("127.0.0.2", &app, &format!("proxied-{i}")).await);
    }
    for s in &mut open {
        assert!(still_open(s).await);
    }
    assert_eq!(metric(&app, "http_connections_closed_total", &[("reason", "per_client_cap")]).await, 0.0);
}

/// A body too slow spends its address's failure budget, like a forged signature: a repeat
/// offender is refused 429 before its next body is read, instead of holding a connection and
/// budget until each body times out.
#[tokio::test]
async fn slow_bodies_spend_the_failure_budget_until_the_address_gets_429() {
    // The clock stands still: the budget refills only if the test moves it.
    let clock = std::sync::Arc::new(tw_server::state::ManualClock::at(now()));
    let c = clock.clone();
    let app = TestApp::spawn_with(move |cfg| {
        cfg.connection_limits = limits();
        cfg.clock = c;
        cfg.limits.auth_failure_burst = 2;
        cfg.limits.auth_failure_per_minute = 1;
    })
    .await;
    app.add_source(json!({"source": "edr", "secret": SECRET})).await;
    assert_eq!(series(&app, "tw_auth_failures_total", &[("kind", "slow_body")]).await, Some(0.0), "present at 0 from the start");
    for i in 0..2 {
        let body = alert(&format!("slow-{i}"), 4096);
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(delivery_head("edr", SECRET, &body).as_bytes()).await.unwrap();
        s.write_all(&body.as_bytes()[..body.len() - 10]).await.unwrap();
        let response = read_until_closed(&mut s).await.expect("a stalled body must end its connection");
        assert_eq!(status_of(&response), Some(408), "{response}");
    }
    assert_eq!(metric(&app, "tw_auth_failures_total", &[("kind", "slow_body")]).await, 2.0);
    let (status, v) = app.deliver("edr", SECRET, &alert("after-slow-bodies", 512)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["error"]["code"], "rate_limited", "{v}");
}

/// A body sent in one-byte chunks is a frame per byte, each holding memory far beyond its byte:
/// its frames are charged to the budget too. 4 KiB of data, in 4,096 chunks, is more than a
/// 256 KiB budget could ever hold, and answered 413 rather than read (or told to retry).
#[tokio::test]
async fn a_body_of_one_byte_chunks_pays_for_its_frames() {
    let app = spawn(|l| l.max_buffered_body_bytes = 256 * 1024).await;
    let body = alert("tiny-chunks", 4096);
    let ts = now();
    let head = format!(
        "POST /api/webhooks/edr HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nX-Webhook-Timestamp: {ts}\r\n\
         X-Webhook-Signature: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        signature(SECRET, ts, body.as_bytes()),
    );
    let mut wire = head.into_bytes();
    for b in body.bytes() {
        wire.extend_from_slice(b"1\r\n");
        wire.push(b);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    // The server may stop reading once it refuses: a failed write is expected then.
    let _ = s.write_all(&wire).await;
    let response = read_response(&mut s).await;
    assert_eq!(status_of(&response), Some(413), "{response}");
    assert_eq!(body_of(&response)["error"]["code"], "payload_too_large", "{response}");
    // The same body in one piece fits.
    let (status, v) = app.deliver("edr", SECRET, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
}

/// `--max-buffered-body-bytes` may be set below a source's `max_body_bytes`: a body declaring
/// more than the whole budget was told 503 "retry later", forever. It is too large, and said so.
#[tokio::test]
async fn a_body_larger_than_the_whole_budget_is_413_not_retry_later() {
    let app = spawn(|l| l.max_buffered_body_bytes = 128 * 1024).await;
    let body = alert("bigger-than-budget", 200 * 1024);
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(delivery_head("edr", SECRET, &body).as_bytes()).await.unwrap();
    let _ = s.write_all(body.as_bytes()).await;
    let response = read_response(&mut s).await;
    assert_eq!(status_of(&response), Some(413), "{response}");
    assert_eq!(body_of(&response)["error"]["code"], "payload_too_large", "{response}");
    assert!(!response.to_ascii_lowercase().contains("\r\nretry-after:"), "no point retrying: {response}");
}

/// The request body bytes the API's listener holds, from `/metrics`.
async fn buffered_body_bytes(app: &TestApp) -> f64 {
    app.metrics_text()
        .await
        .lines()
        .find(|l| l.starts_with("http_buffered_body_bytes{listener=\"api\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}
