//! Signed deliveries to the intake and reading the answers, as a sender and an operator see them.

use super::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tw_core::Secret;

/// `sha256=<hex>` for a body signed at `ts` with `secret`.
pub fn signature(secret: &str, ts: i64, body: &[u8]) -> String {
    format!("sha256={}", tw_core::signature::sign(&Secret::new(secret), &ts.to_string(), body))
}

/// Status and JSON body of a response (`Null` when empty).
pub async fn into_json(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let v = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, v)
}

/// A delivery to `base`'s intake for `source`, signed with `secret` at `ts`, ready for more
/// headers before it is sent.
pub fn signed_request(
    http: &reqwest::Client,
    base: &str,
    source: &str,
    secret: &str,
    ts: i64,
    body: impl Into<String>,
) -> reqwest::RequestBuilder {
    let body = body.into();
    http.post(format!("{base}/api/webhooks/{source}"))
        .header("content-type", "application/json")
        .header("x-webhook-timestamp", ts.to_string())
        .header("x-webhook-signature", signature(secret, ts, body.as_bytes()))
        .body(body)
}

/// Posts `body` signed with `secret` at `ts` to `base`'s intake for `source`, with any client
/// (tasks sending concurrently share one).
pub async fn post_signed(http: &reqwest::Client, base: &str, source: &str, secret: &str, ts: i64, body: String) -> (StatusCode, Value) {
    try_post_signed(http, base, source, secret, ts, body).await.expect("request")
}

/// Like [`post_signed`], but a request that gets no answer (connection refused or cut, timeout)
/// is an `Err` instead of a panic: for tests whose servers may die mid-request.
pub async fn try_post_signed(
    http: &reqwest::Client,
    base: &str,
    source: &str,
    secret: &str,
    ts: i64,
    body: String,
) -> Result<(StatusCode, Value), reqwest::Error> {
    let resp = signed_request(http, base, source, secret, ts, body).send().await?;
    Ok(into_json(resp).await)
}

/// A signed delivery with an own `X-Request-Id` (when given): (status, body, X-Request-Id,
/// X-Tw-Request-Id), the two ids a sender and an operator match deliveries by.
pub async fn deliver_with_id(app: &TestApp, source: &str, secret: &str, body: &str, rid: Option<&str>) -> (u16, Value, String, String) {
    let ts = super::now();
    let mut req = signed_request(&app.http, &app.base, source, secret, ts, body);
    if let Some(r) = rid {
        req = req.header("x-request-id", r);
    }
    let resp = req.send().await.expect("request");
    let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (echoed, own) = (header("x-request-id"), header("x-tw-request-id"));
    let (status, v) = into_json(resp).await;
    (status.as_u16(), v, echoed, own)
}

/// A minimal high-severity generic alert with the given id.
pub fn alert(id: &str) -> String {
    json!({"event_type": "security_alert", "data": {"alert_id": id, "severity": "high"}}).to_string()
}

/// The stored delivery records of `source` (up to 1000, newest first); panics unless 200.
pub async fn events(app: &TestApp, source: &str) -> Vec<Value> {
    let (status, v) = app.admin(Method::GET, &format!("/api/webhooks/{source}/events?tail=1000"), None).await;
    assert_eq!(status, 200, "{v}");
    v["data"].as_array().cloned().unwrap_or_default()
}

/// Every audit record matching `query` (newest first), following the cursors.
pub async fn audit(app: &TestApp, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if query.is_empty() { "" } else { "&" };
        let path = match &cursor {
            Some(c) => format!("/api/audit?{query}{sep}cursor={c}"),
            None => format!("/api/audit?{query}"),
        };
        let (status, v) = app.admin(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {v}");
        out.extend(v["data"].as_array().unwrap().iter().cloned());
        match v["meta"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}
