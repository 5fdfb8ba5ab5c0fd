//! Many deliveries at once: distinct alerts get distinct, gap-free numbers; one alert delivered
//! many times at once makes exactly one incident.

use super::*;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const SECRET: &str = "concurrency-secret-0123";
/// At most this many requests in flight at once (all of them real concurrent HTTP requests).
const PARALLEL: usize = 100;

/// Sends every body to the intake concurrently; returns (status, json) in the order given.
async fn deliver_all(app: &TestApp, source: &str, bodies: Vec<String>) -> Vec<(StatusCode, Value)> {
    let gate = Arc::new(Semaphore::new(PARALLEL));
    let mut set = JoinSet::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let http = app.http.clone();
        let (base, source) = (app.base.clone(), source.to_string());
        let gate = gate.clone();
        set.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            (i, post_signed(&http, &base, &source, SECRET, now(), body).await)
        });
    }
    let mut out: Vec<Option<(StatusCode, Value)>> = Vec::new();
    out.resize_with(set.len(), || None);
    while let Some(res) = set.join_next().await {
        let (i, r) = res.expect("task");
        out[i] = Some(r);
    }
    out.into_iter().map(Option::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_parallel_deliveries_get_numbers_1_to_500() {
    let app = TestApp::spawn().await;
    add(&app, "edr", SECRET, json!({})).await;
    let bodies: Vec<String> = (0..500).map(|i| generic_with_id(&format!("par-{i}"))).collect();
    let results = deliver_all(&app, "edr", bodies).await;

    let mut ids = std::collections::HashSet::new();
    let mut seqs = Vec::new();
    for (status, v) in &results {
        let (id, _) = assert_accepted(*status, v);
        ids.insert(id);
        let (y, seq) = parse_number(&v["incident_number"]);
        assert_eq!(y, year());
        seqs.push(seq);
    }
    assert_eq!(ids.len(), 500, "500 distinct incidents");
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=500).collect::<Vec<u32>>(), "numbers 1..=500, no gaps, no duplicates");

    let list = get_ok(&app, "/api/incidents?per_page=1").await;
    assert_eq!(list["meta"]["total"], 500);
    // Each answer's number belongs to the incident it names.
    for (_, v) in results.iter().step_by(50) {
        let inc = get_ok(&app, &format!("/api/incidents/{}", v["incident_id"].as_str().unwrap())).await;
        assert_eq!(inc["incident_number"], v["incident_number"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_deliveries_of_one_alert_make_one_incident() {
    let app = TestApp::spawn().await;
    add(&app, "edr", SECRET, json!({})).await;
    let bodies: Vec<String> = (0..50).map(|_| CROWDSTRIKE.to_string()).collect();
    let results = deliver_all(&app, "edr", bodies).await;

    let created: Vec<&Value> = results.iter().filter(|(s, _)| *s == StatusCode::CREATED).map(|(_, v)| v).collect();
    assert_eq!(created.len(), 1, "exactly one 201: {results:?}");
    let (id, number) = assert_accepted(StatusCode::CREATED, created[0]);
    let mut dups = 0;
    for (status, v) in &results {
        if *status == StatusCode::OK {
            assert_eq!(v["duplicate"], true, "{v}");
            assert_eq!(v["incident_id"], id.as_str());
            assert_eq!(v["incident_number"], number.as_str());
            dups += 1;
        } else {
            assert_eq!(*status, StatusCode::CREATED, "{v}");
        }
    }
    assert_eq!(dups, 49);
    let inc = get_ok(&app, &format!("/api/incidents/{id}")).await;
    assert_eq!(inc["delivery_count"], 50, "{inc}");
    assert_eq!(get_ok(&app, "/api/incidents").await["meta"]["total"], 1);
}
