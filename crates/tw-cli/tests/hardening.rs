//! The intake under attack and misuse: each reproduction of the hardening issue, as a test that
//! failed before its defence existed. In-process servers on free ports, spoken to over HTTP (and
//! raw TCP where a misbehaving client is the point).
mod common;

#[path = "hardening/connections.rs"]
mod connections;
#[path = "hardening/rate_limits.rs"]
mod rate_limits;
#[path = "hardening/deliveries.rs"]
mod deliveries;
#[path = "hardening/admin.rs"]
mod admin;
#[path = "hardening/exposures.rs"]
mod exposures;
#[path = "hardening/disk.rs"]
mod disk;

/// Every test of this binary runs on SQLite here, and again on PostgreSQL through this one.
#[test]
fn these_tests_pass_on_postgres() {
    common::rerun_on_postgres();
}

/// The value of one series (labels in any order) in `/metrics`, 0 when absent (a counter not
/// incremented yet).
pub async fn metric(app: &common::TestApp, name: &str, labels: &[(&str, &str)]) -> f64 {
    series(app, name, labels).await.unwrap_or(0.0)
}

/// The value of one series (labels in any order) in `/metrics`, `None` when it is not there.
pub async fn series(app: &common::TestApp, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (n, mut got) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}').split(',').map(str::to_string).collect::<Vec<_>>()),
            None => (series, Vec::new()),
        };
        got.sort();
        if n == name && got == want {
            return Some(value.parse().unwrap());
        }
    }
    None
}
