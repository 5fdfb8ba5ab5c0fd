//! Load generator for the intake: signs unique alerts and posts them with bounded concurrency,
//! then prints throughput and latency percentiles. A benchmark, not a test.
//!
//! ```sh
//! cargo run --release -p tw-cli --example loadgen -- http://127.0.0.1:8080 email-gateway your-secret 20000 64
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tw_core::Secret;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: loadgen URL SOURCE SECRET REQUESTS CONCURRENCY");
        std::process::exit(2);
    }
    let (url, source, secret) = (args[1].clone(), args[2].clone(), Secret::new(args[3].clone()));
    let total: usize = args[4].parse().expect("REQUESTS");
    let concurrency: usize = args[5].parse().expect("CONCURRENCY");
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
    let endpoint = Arc::new(format!("{}/api/webhooks/{source}", url.trim_end_matches('/')));
    let secret = Arc::new(secret);
    let permits = Arc::new(Semaphore::new(concurrency));
    let run = std::process::id();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let (client, endpoint, secret) = (client.clone(), endpoint.clone(), secret.clone());
        tasks.push(tokio::spawn(async move {
            let body = format!(
                r#"{{"event_type":"security_alert","timestamp":"2024-01-15T10:00:00Z","data":{{"alert_id":"load-{run}-{i}","severity":"high","details":{{"title":"load test","src_ip":"192.0.2.{}"}}}}}}"#,
                i % 250
            );
            let ts = chrono::Utc::now().timestamp().to_string();
            let sig = format!("sha256={}", tw_core::signature::sign(&secret, &ts, body.as_bytes()));
            let t = Instant::now();
            let resp = client
                .post(endpoint.as_str())
                .header("content-type", "application/json")
                .header("x-webhook-timestamp", ts)
                .header("x-webhook-signature", sig)
                .body(body)
                .send()
                .await;
            drop(permit);
            let status = resp.map(|r| r.status().as_u16()).unwrap_or(0);
            (status, t.elapsed())
        }));
    }
    let mut lat: Vec<Duration> = Vec::with_capacity(total);
    let mut by_status = std::collections::BTreeMap::new();
    for t in tasks {
        let (status, d) = t.await.unwrap();
        *by_status.entry(status).or_insert(0usize) += 1;
        lat.push(d);
    }
    let elapsed = started.elapsed();
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!("requests: {total}  concurrency: {concurrency}  elapsed: {:.2}s", elapsed.as_secs_f64());
    println!("throughput: {:.0} req/s", total as f64 / elapsed.as_secs_f64());
    println!("latency p50 {:?}  p90 {:?}  p99 {:?}  max {:?}", p(0.50), p(0.90), p(0.99), lat[lat.len() - 1]);
    println!("statuses: {by_status:?}");
}
