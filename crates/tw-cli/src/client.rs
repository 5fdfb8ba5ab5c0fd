//! A thin HTTP client for the API that turns every failure into one clear line.

use anyhow::{Result, anyhow, bail};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tw_server::api::ErrorBody;

/// Extra request headers, as (name, value).
type Headers = Vec<(String, String)>;

/// Talks to one server with one API key.
pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

impl Client {
    pub fn new(base: &str, api_key: Option<String>) -> Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| anyhow!("cannot build HTTP client: {e}"))?;
        Ok(Client { http, base: base.trim_end_matches('/').to_string(), api_key: api_key.filter(|k| !k.is_empty()) })
    }

    /// Opens a long-lived GET (no timeout) for streaming; error statuses become errors.
    pub async fn stream(&self, path: &str) -> Result<reqwest::Response> {
        let http = reqwest::Client::builder().build().map_err(|e| anyhow!("cannot build HTTP client: {e}"))?;
        let mut req = http.get(format!("{}{}", self.base, path)).header("accept", "text/event-stream");
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow!("cannot connect to {} (is `tw-cli serve` running? set --url or TW_URL)", self.base)
            } else {
                anyhow!("request failed: {e}")
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let json: Value = resp.json().await.unwrap_or(Value::Null);
        let error = serde_json::from_value::<ErrorBody>(json).ok().map(|b| b.error);
        let code = error.as_ref().map_or("error", |e| e.code.as_str());
        let message = error.as_ref().map_or(status.canonical_reason().unwrap_or("request failed"), |e| e.message.as_str());
        bail!("{code}: {message}")
    }

    /// Sends a request and returns the status and JSON body; connection problems and error
    /// statuses become errors with the server's own message.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(StatusCode, Value)> {
        self.send(method, path, body.map(|b| (b.to_string().into_bytes(), Vec::new())), true).await
    }

    /// GETs `path` and parses the answer as the API type `T` (`tw_server::api`).
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let (_, v) = self.call(Method::GET, path, None).await?;
        parse(v)
    }

    /// Sends `body` (or nothing) and parses the answer as the API type `T`.
    pub async fn send_json<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<&Value>) -> Result<T> {
        let (_, v) = self.call(method, path, body).await?;
        parse(v)
    }

    /// Like [`Client::call`], with a raw body and extra headers, and without the API key (the
    /// public intake endpoint).
    pub async fn post_raw(&self, path: &str, body: Vec<u8>, headers: Headers) -> Result<(StatusCode, Value)> {
        self.send(Method::POST, path, Some((body, headers)), false).await
    }

    async fn send(&self, method: Method, path: &str, body: Option<(Vec<u8>, Headers)>, auth: bool) -> Result<(StatusCode, Value)> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url);
        if auth && let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        if let Some((bytes, headers)) = body {
            req = req.header("content-type", "application/json").body(bytes);
            for (k, v) in headers {
                req = req.header(k, v);
            }
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow!("cannot connect to {} (is `tw-cli serve` running? set --url or TW_URL)", self.base)
            } else if e.is_timeout() {
                anyhow!("{} did not answer in time", self.base)
            } else {
                anyhow!("request to {url} failed: {e}")
            }
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let json: Value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if status.is_success() {
            return Ok((status, json));
        }
        let error = serde_json::from_value::<ErrorBody>(json).ok().map(|b| b.error);
        let code = error.as_ref().map_or("error", |e| e.code.as_str());
        let message = error.as_ref().map_or(status.canonical_reason().unwrap_or("request failed"), |e| e.message.as_str());
        let hint = match (status, auth, self.api_key.is_some()) {
            (StatusCode::UNAUTHORIZED, true, false) => {
                " (no API key given: set --api-key or TW_API_KEY; create one with `tw-cli api-key create`)"
            }
            (StatusCode::FORBIDDEN, true, _) if code == "forbidden" => " (use a key with the admin scope)",
            _ => "",
        };
        let details = error
            .as_ref()
            .and_then(|e| e.details.as_ref())
            .filter(|d| d.len() > 1)
            .map(|d| d.iter().map(|x| format!("\n  {}: {}", x.field, x.message)).collect::<String>())
            .unwrap_or_default();
        if details.is_empty() {
            bail!("{code}: {message}{hint}")
        }
        bail!("{code}:{details}")
    }
}

/// An answer read as the API type the server serializes it from; a mismatch means a server of
/// another version.
fn parse<T: DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| anyhow!("unexpected answer from the server (another version?): {e}"))
}

/// `path` with a query string of the parameters that are set, each percent-encoded.
pub fn with_query(path: &str, params: &[(&str, Option<String>)]) -> String {
    let query: Vec<String> = params.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", seg(v)))).collect();
    if query.is_empty() { path.to_string() } else { format!("{path}?{}", query.join("&")) }
}

/// Percent-encodes a path segment.
pub fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
