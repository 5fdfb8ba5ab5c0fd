//! The database goes away and comes back (PostgreSQL, through a TCP relay the test can cut):
//! deliveries answer `503 unavailable` with `Retry-After`, never a 2xx and never a hang;
//! `/api/ready` says so; the server recovers by itself.

use super::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::{TcpListener, TcpStream};

/// Forwards loopback connections to PostgreSQL until cut; new connections are refused while cut.
struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    async fn start(upstream: std::net::SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let flag = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                if !flag.load(Ordering::SeqCst) {
                    drop(client); // refused in effect: closed at once
                    continue;
                }
                let mut cuts = cuts.clone();
                cuts.borrow_and_update(); // only a cut from now on ends this connection
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Relay { port, up, cut }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

/// `url` with its `host:port` replaced by the relay's.
fn relay_url(url: &str, port: u16) -> String {
    let scheme_end = url.find("://").unwrap() + 3;
    let authority_end = url[scheme_end..].find('/').map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let userinfo = authority.rfind('@').map_or("", |at| &authority[..=at]);
    format!("{}{userinfo}127.0.0.1:{port}{}", &url[..scheme_end], &url[authority_end..])
}

#[test]
fn relay_urls_keep_credentials_and_options() {
    assert_eq!(relay_url("postgres://u:p@h:5432/db?x=1", 9), "postgres://u:p@127.0.0.1:9/db?x=1");
    assert_eq!(relay_url("postgres://h/db", 9), "postgres://127.0.0.1:9/db");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_gives_503_and_the_server_recovers() {
    if tw_store::testing::engine_is_postgres() {
        return; // this test makes its own PostgreSQL arrangement; once is enough
    }
    let Some(db) = tw_store::testing::TestDatabase::create().await else { return };
    let url: tokio_postgres::Config = db.url.parse().unwrap();
    let host = match url.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let upstream_port = url.get_ports().first().copied().unwrap_or(5432);
    let upstream = tokio::net::lookup_host((host.as_str(), upstream_port)).await.unwrap().next().unwrap();
    let relay = Relay::start(upstream).await;
    // The same URL (user, password, database, options) with the relay as the server.
    let relayed = relay_url(&db.url, relay.port);
    let app = TestApp::spawn_with(|cfg| {
        cfg.database_url = Some(relayed.clone());
        cfg.db.connect_timeout = Duration::from_secs(2);
        cfg.db.statement_timeout = Duration::from_secs(5);
    })
    .await;
    add(&app, "edr", "edr-secret-123", json!({})).await;
    let (s, v) = app.deliver("edr", "edr-secret-123", &generic_with_id("before")).await;
    assert_eq!(s, 201, "{v}");

    relay.set_up(false);
    // Every delivery while it is away: 503 with Retry-After, in bounded time (the client's
    // timeout turns a hang into a failure).
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    for i in 0..5 {
        let body = generic_with_id(&format!("during-{i}"));
        let ts = now();
        let resp = signed_request(&http, &app.base, "edr", "edr-secret-123", ts, body).send().await.expect("answered, not hung");
        let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let (status, v) = into_json(resp).await;
        assert_eq!(status, 503, "{v}");
        assert_eq!(v["error"]["code"], "unavailable", "{v}");
        assert!(retry_after.as_deref().and_then(|s| s.parse::<u64>().ok()).is_some(), "Retry-After: {retry_after:?}");
    }
    let (status, v) = into_json(http.get(app.url("/api/ready")).send().await.unwrap()).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["checks"]["store"]["ok"], false, "names the failing check: {v}");

    relay.set_up(true);
    // It recovers by itself: no restart.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // With the bounded client: a hang fails the test instead of stalling it.
        let (s, v) = post_signed(&http, &app.base, "edr", "edr-secret-123", now(), generic_with_id("after")).await;
        if s == 201 {
            break;
        }
        assert_eq!(s, 503, "only 503 while recovering: {v}");
        assert!(Instant::now() < deadline, "did not recover: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, v) = into_json(http.get(app.url("/api/ready")).send().await.unwrap()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["checks"]["store"]["ok"], true, "{v}");
    // Nothing refused was stored; both acknowledged ones were.
    let (_, list) = app.admin(Method::GET, "/api/incidents?per_page=100", None).await;
    assert_eq!(list["meta"]["total"], 2, "{list}");
    drop(app);
    drop(db);
}
