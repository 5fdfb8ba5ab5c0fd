//! Test support shared by the integration tests of tw-server (over HTTP) and of tw-cli (the
//! binary against a server), so both prove the same server with the same tools: the server in
//! the test process ([`TestApp`]), signed deliveries, raw HTTP over TCP for misbehaving clients,
//! `/metrics` scraping, and the shared payloads. Compiled only with the `testing` feature, which
//! the two crates' dev-dependencies turn on, so a production build carries none of it.

mod app;
mod deliveries;
mod fixtures;
mod metrics;
mod raw_http;

pub use app::{TestApp, new_key};
pub use deliveries::{alert, audit, deliver_with_id, events, into_json, post_signed, signature, signed_request, try_post_signed};
pub use fixtures::{PHISH_URL, crowdstrike_fixture, phish, spec_config};
pub use metrics::{metric, scrape, series};
pub use raw_http::{body_of, delivery_head, free_port, read_head, read_response, read_until_closed, status_of};

use std::time::{Duration, Instant};

/// Unix seconds now.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Retries `f` until it returns `Ok`, or panics with the last `Err` after `deadline`: background
/// work (flushes, pruning) is awaited by polling, never by assuming a speed.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let until = Instant::now() + deadline;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > until => panic!("{what}: still not so after {deadline:?}; last: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
