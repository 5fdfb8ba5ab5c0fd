//! Delivery records are pruned by retention, the oldest and the expired, never the incidents.
//! (A refused-request flood's bounded rows and a copied `X-Request-Id` are proven down to what the
//! CLI shows of them, in tw-cli's `hardening::deliveries`.)
use crate::support::*;
use reqwest::Method;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "deliveries-secret";
/// Each source needs its own secret.
const QUIET_SECRET: &str = "deliveries-quiet-secret";
/// Generous: the flush of counted refusals runs every second, pruning as configured.
const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_the_oldest_and_the_expired_never_incidents() {
    let clock = Arc::new(tw_server::state::ManualClock::at(now()));
    let c = clock.clone();
    let app = TestApp::spawn_with(move |cfg| {
        cfg.clock = c;
        cfg.deliveries_retention = tw_store::DeliveryRetention {
            keep_per_source: 5,
            keep_refused_per_source: 5,
            max_age: Some(chrono::Duration::days(30)),
            batch: 2,
        };
        cfg.deliveries_prune_every = Duration::from_millis(100);
    })
    .await;
    app.add_source(json!({"source": "busy", "secret": SECRET})).await;
    app.add_source(json!({"source": "quiet", "secret": QUIET_SECRET})).await;
    let mut busy = Vec::new();
    for i in 0..12 {
        let (status, body, _, own) = deliver_with_id(&app, "busy", SECRET, &alert(&format!("busy-{i}")), None).await;
        assert_eq!(status, 201, "{body}");
        busy.push(own);
    }
    for i in 0..2 {
        assert_eq!(deliver_with_id(&app, "quiet", QUIET_SECRET, &alert(&format!("quiet-{i}")), None).await.0, 201);
    }
    // The newest 5 of the busy source are kept; the quiet one keeps its 2 (per source).
    let newest: Vec<String> = busy.iter().rev().take(5).cloned().collect();
    eventually("the busy source pruned to its newest 5", DEADLINE, || async {
        let ids: Vec<String> = events(&app, "busy").await.iter().map(|d| d["request_id"].as_str().unwrap().to_string()).collect();
        if ids == newest { Ok(()) } else { Err(format!("{ids:?}")) }
    })
    .await;
    assert_eq!(events(&app, "quiet").await.len(), 2);

    // 31 days later every record is past the age limit.
    clock.set(now() + 31 * 86_400);
    eventually("every record expired", DEADLINE, || async {
        let (b, q) = (events(&app, "busy").await.len(), events(&app, "quiet").await.len());
        if b + q == 0 { Ok(()) } else { Err(format!("busy {b}, quiet {q}")) }
    })
    .await;
    // Incidents are never pruned.
    let (_, page) = app.admin(Method::GET, "/api/incidents?per_page=50", None).await;
    assert_eq!(page["meta"]["total"], 14, "{page}");
}
