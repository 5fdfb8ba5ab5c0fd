//! The intake under attack and misuse: each reproduction of the hardening issue, as a test that
//! failed before its defence existed. In-process servers on free ports, spoken to over HTTP (and
//! raw TCP where a misbehaving client is the point). The defences the `tw-cli` binary takes part
//! in (its `serve` flags and signals, its commands) are proven in tw-cli's `hardening` tests.

mod admin;
mod connections;
mod deliveries;
mod disk;
mod exposures;
mod rate_limits;

use crate::support::TestApp;

/// The value of one series (labels in any order) in `/metrics`, 0 when absent (a counter not
/// incremented yet).
pub async fn metric(app: &TestApp, name: &str, labels: &[(&str, &str)]) -> f64 {
    series(app, name, labels).await.unwrap_or(0.0)
}

/// The value of one series (labels in any order) in `/metrics`, `None` when it is not there.
pub async fn series(app: &TestApp, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
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
