//! Reading `/metrics` as Prometheus does, for tests that prove what a defence counted.

use super::TestApp;
use reqwest::StatusCode;

/// `GET /metrics` on `base` with an optional bearer token: status, text, and the
/// `X-Content-Type-Options` header (a scrape answer must not be sniffed as HTML).
pub async fn scrape(http: &reqwest::Client, base: &str, token: Option<&str>) -> (StatusCode, String, Option<String>) {
    let mut req = http.get(format!("{base}/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let nosniff = resp.headers().get("x-content-type-options").and_then(|v| v.to_str().ok()).map(str::to_string);
    (resp.status(), resp.text().await.unwrap(), nosniff)
}

/// The value of one series (labels in any order) in `/metrics`, 0 when absent (a counter not
/// incremented yet).
pub async fn metric(app: &TestApp, name: &str, labels: &[(&str, &str)]) -> f64 {
    series(app, name, labels).await.unwrap_or(0.0)
}

/// The value of one series (labels in any order) in `/metrics`, `None` when it is not there.
pub async fn series(app: &TestApp, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = app.metrics_text().await;
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
