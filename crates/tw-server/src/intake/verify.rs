//! Whether a delivery comes from the source it names. Every source signs the spec's way today:
//! `X-Webhook-Signature: sha256=<hex>`, an HMAC-SHA256 with the source's secret (its previous one
//! too during a rotation's grace period) of `"<X-Webhook-Timestamp>.<body>"`, the timestamp within
//! the source's window; compared in constant time. A source that names another scheme (a later
//! setting) branches in [`verify`], and its [`Verified`] says what the proof covered, from which
//! the request key of a redelivery is made.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tw_core::signature::{VerifyError, verify_request_raw};
use tw_store::SourceRecord;

/// A request proven to come from its source, with what the proof covered.
#[derive(Debug, Clone, Copy)]
pub struct Verified<'h> {
    /// The signed `X-Webhook-Timestamp`, as sent.
    timestamp: &'h str,
}

impl Verified<'_> {
    /// SHA-256 of `"<timestamp>.<body>"`: the same signed request sent again has the same key, so
    /// the store counts it on its incident instead of creating another.
    pub fn request_key(&self, body: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(self.timestamp.trim().as_bytes());
        h.update(b".");
        h.update(body);
        hex::encode(h.finalize())
    }
}

/// Checks the request's signature headers and `body` against `source` at `now`.
pub fn verify<'h>(source: &SourceRecord, headers: &'h HeaderMap, body: &[u8], now: DateTime<Utc>) -> Result<Verified<'h>, VerifyError> {
    // Raw bytes: a header that is present but not UTF-8 is invalid, not missing.
    let header_raw = |n: &str| headers.get(n).map(|v| v.as_bytes());
    verify_request_raw(
        &source.verifying_secrets(now),
        source.settings.timestamp_tolerance_secs,
        now.timestamp(),
        header_raw("x-webhook-timestamp"),
        header_raw("x-webhook-signature"),
        body,
    )?;
    let timestamp = headers.get("x-webhook-timestamp").and_then(|v| v.to_str().ok()).unwrap_or_default();
    Ok(Verified { timestamp })
}
