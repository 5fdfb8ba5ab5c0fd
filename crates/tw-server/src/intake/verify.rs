//! Whether a delivery comes from the source it names, by the source's verification scheme
//! ([`tw_core::Verification`]), each against the source's secret and, during a rotation's grace
//! period, its previous one:
//!
//! - `hmac` (the spec's): `X-Webhook-Signature: sha256=<hex>`, an HMAC-SHA256 of
//!   `"<X-Webhook-Timestamp>.<body>"`, the timestamp within the source's window.
//! - `standard-webhooks`: `webhook-id`, `webhook-timestamp` (same window), `webhook-signature`.
//! - `github`: `X-Hub-Signature-256: sha256=<hex>` over the body alone.
//! - `header-token`: the named header holds the secret; `basic`: HTTP Basic with the secret as
//!   password; `url-token`: the secret is the URL's last path segment.
//!
//! Every comparison is constant-time; tokens are compared by their SHA-256, so the time taken
//! does not reveal their length either. No message carries a secret, token or signature. The
//! [`Verified`] proof says what it covered, from which the request key of a redelivery is made:
//! the same signed request (hmac), the same message id (standard-webhooks), or the same body (the
//! schemes without a timestamp, whose replay protection is idempotency).

use crate::ApiError;
use axum::http::HeaderMap;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tw_core::Verification;
use tw_core::signature::{VerifyError, verify_request_raw};
use tw_store::SourceRecord;

/// A request proven to come from its source, with what the proof covered.
#[derive(Debug, Clone, Copy)]
pub struct Verified<'h> {
    covered: Covered<'h>,
}

/// What makes a redelivery of the same request recognisable.
#[derive(Debug, Clone, Copy)]
enum Covered<'h> {
    /// The signed `X-Webhook-Timestamp` with the body (hmac).
    Timestamp(&'h str),
    /// The sender's message id (standard-webhooks `webhook-id`).
    MessageId(&'h str),
    /// The body alone (the schemes without a timestamp).
    Body,
}

impl Verified<'_> {
    /// SHA-256 of what the proof covered: the same request sent again has the same key, so the
    /// store counts it on its incident instead of creating another.
    pub fn request_key(&self, body: &[u8]) -> String {
        let mut h = Sha256::new();
        match self.covered {
            Covered::Timestamp(ts) => {
                h.update(ts.trim().as_bytes());
                h.update(b".");
                h.update(body);
            }
            Covered::MessageId(id) => {
                h.update(b"webhook-id:");
                h.update(id.trim().as_bytes());
            }
            Covered::Body => return body_request_key(body),
        }
        hex::encode(h.finalize())
    }
}

/// The request key of a body alone (what the schemes without a timestamp use): also the key of a
/// stored event whose delivery's key was not kept (dead letters from before keys were stored).
pub fn body_request_key(body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"body:");
    h.update(body);
    hex::encode(h.finalize())
}

/// A refusal in the scheme's own words.
fn refused(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::Unverified { code, message: message.into() }
}

/// Checks the request against `source`'s scheme at `now`. `url_token`: the path segment after the
/// source's name (`/api/webhooks/<source>/<token>`), when the request had one.
pub fn verify<'h>(
    source: &SourceRecord,
    headers: &'h HeaderMap,
    url_token: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Verified<'h>, ApiError> {
    let secrets = source.verifying_secrets(now);
    let name = &source.name;
    if url_token.is_some() && source.settings.verification != Verification::UrlToken {
        return Err(refused(
            "invalid_signature",
            format!(
                "Source '{name}' verifies with {}, not a token in the URL: POST /api/webhooks/{name}",
                source.settings.verification.scheme()
            ),
        ));
    }
    let text = |n: &str| headers.get(n).map(|v| v.to_str().map_err(|_| ()));
    match &source.settings.verification {
        Verification::Hmac => {
            // Raw bytes: a header that is present but not UTF-8 is invalid, not missing.
            let header_raw = |n: &str| headers.get(n).map(|v| v.as_bytes());
            verify_request_raw(
                &secrets,
                source.settings.timestamp_tolerance_secs,
                now.timestamp(),
                header_raw("x-webhook-timestamp"),
                header_raw("x-webhook-signature"),
                body,
            )?;
            let timestamp = headers.get("x-webhook-timestamp").and_then(|v| v.to_str().ok()).unwrap_or_default();
            Ok(Verified { covered: Covered::Timestamp(timestamp) })
        }
        Verification::StandardWebhooks => {
            let keys: Vec<Vec<u8>> = secrets.iter().filter_map(|s| tw_core::schemes::standard_webhooks_key(s.expose())).collect();
            let key_refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            // A header that is not text is present but wrong: "" fails the check it belongs to.
            let get = |n: &str| text(n).map(|r| r.unwrap_or("\u{0}"));
            let id = get("webhook-id");
            tw_core::schemes::verify_standard_webhooks(
                &key_refs,
                id,
                get("webhook-timestamp"),
                get("webhook-signature"),
                body,
                now.timestamp(),
                source.settings.timestamp_tolerance_secs,
            )
            .map_err(|e| standard_webhooks_error(e, id.is_none()))?;
            Ok(Verified { covered: Covered::MessageId(id.unwrap_or_default()) })
        }
        Verification::Github => {
            let raw: Vec<&[u8]> = secrets.iter().map(|s| s.expose().as_bytes()).collect();
            match text("x-hub-signature-256") {
                None => Err(refused("missing_signature", "X-Hub-Signature-256 header is missing")),
                Some(Err(())) => Err(refused("invalid_signature", GITHUB_MISMATCH)),
                Some(Ok(h)) => tw_core::schemes::verify_github(&raw, Some(h), body).map_err(|e| match e {
                    VerifyError::MissingSignature => refused("missing_signature", "X-Hub-Signature-256 header is empty"),
                    _ => refused("invalid_signature", GITHUB_MISMATCH),
                }),
            }?;
            Ok(Verified { covered: Covered::Body })
        }
        Verification::HeaderToken { header } => {
            let value = headers.get(header.as_str()).ok_or_else(|| {
                refused("missing_signature", format!("{} header is missing", crate::sources::header_display(header.as_str())))
            })?;
            let mut token = value.as_bytes().trim_ascii();
            if header.as_str() == "authorization" && token.len() > 7 && token[..7].eq_ignore_ascii_case(b"bearer ") {
                token = token[7..].trim_ascii();
            }
            if !matches_any(token, &secrets) {
                return Err(refused(
                    "invalid_signature",
                    format!("{} header does not hold the source's token", crate::sources::header_display(header.as_str())),
                ));
            }
            Ok(Verified { covered: Covered::Body })
        }
        Verification::Basic => {
            let value = headers
                .get(axum::http::header::AUTHORIZATION)
                .ok_or_else(|| refused("missing_signature", "Authorization header with HTTP Basic credentials is missing"))?;
            let password = basic_password(value.as_bytes()).ok_or_else(|| {
                refused("invalid_signature", "Authorization header is not HTTP Basic credentials (Basic base64(user:password))")
            })?;
            if !matches_any(&password, &secrets) {
                return Err(refused("invalid_signature", "HTTP Basic password does not match the source's secret"));
            }
            Ok(Verified { covered: Covered::Body })
        }
        Verification::UrlToken => {
            let token = url_token.ok_or_else(|| {
                refused("missing_signature", format!("Source '{name}' takes its token in the URL: POST /api/webhooks/{name}/<token>"))
            })?;
            if !matches_any(token.as_bytes(), &secrets) {
                return Err(refused("invalid_signature", "The token in the URL does not match the source's"));
            }
            Ok(Verified { covered: Covered::Body })
        }
    }
}

const GITHUB_MISMATCH: &str =
    "X-Hub-Signature-256 does not match the body (expected sha256=<hex HMAC-SHA256 of the raw body with the source's secret>)";

/// Standard Webhooks' refusals, naming its headers.
fn standard_webhooks_error(e: VerifyError, id_missing: bool) -> ApiError {
    match e {
        VerifyError::MissingSignature => refused("missing_signature", "webhook-signature header is missing"),
        VerifyError::MissingTimestamp => refused("missing_timestamp", "webhook-timestamp header is missing"),
        VerifyError::TimestampNotInteger => refused("timestamp_invalid", "webhook-timestamp must be unix seconds, e.g. 1705320000"),
        VerifyError::TimestampInFuture(t) => {
            refused("timestamp_invalid", format!("webhook-timestamp is too far in the future (>{t} seconds)"))
        }
        VerifyError::TimestampExpired(t) => refused("timestamp_expired", format!("webhook-timestamp is too old (>{t} seconds)")),
        VerifyError::InvalidSignature if id_missing => refused("missing_signature", "webhook-id header is missing"),
        VerifyError::InvalidSignature => refused(
            "invalid_signature",
            "webhook-signature does not match (v1,<base64 HMAC-SHA256 of \"<webhook-id>.<webhook-timestamp>.<body>\">)",
        ),
    }
}

/// Whether `token` is any of `secrets`, comparing SHA-256 digests in constant time (no early exit,
/// no length revealed).
fn matches_any(token: &[u8], secrets: &[&tw_core::Secret]) -> bool {
    let given = Sha256::digest(token);
    let mut ok = false;
    for s in secrets {
        let want = Sha256::digest(s.expose().as_bytes());
        ok |= tw_core::signature::constant_time_eq(&given, &want);
    }
    ok
}

/// The password of `Basic base64(user:password)`; `None` when it is not that.
fn basic_password(value: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let value = value.trim_ascii();
    if value.len() < 6 || !value[..6].eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(value[6..].trim_ascii()).ok()?);
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some(zeroize::Zeroizing::new(decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_read_as_rfc_7617_writes_them() {
        let enc = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        assert_eq!(basic_password(enc("kibana:s3cret:with:colons").as_bytes()).unwrap().as_slice(), b"s3cret:with:colons");
        assert_eq!(basic_password(enc(":pw").as_bytes()).unwrap().as_slice(), b"pw");
        assert_eq!(basic_password(b"basic a2liYW5hOnB3").unwrap().as_slice(), b"pw");
        assert!(basic_password(b"Bearer abc").is_none());
        assert!(basic_password(b"Basic !!!").is_none());
        assert!(basic_password(enc("no-colon").as_bytes()).is_none());
    }
}
