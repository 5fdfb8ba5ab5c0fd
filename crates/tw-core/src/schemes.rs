//! Verification schemes other than the spec's HMAC ([`crate::signature`]) that real senders
//! produce, as pure functions: the proof a request carries, checked against a source's secret.
//! Issue 11 wires them into the intake (`tw-server/src/intake/verify.rs`) per source.
//!
//! - Standard Webhooks (Svix and the libraries at standardwebhooks.com): `webhook-id`,
//!   `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<ts>.<body>">`
//!   (several, space-separated), the key being the base64 after `whsec_`.
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`.

use crate::signature::{MAX_CANDIDATES, VerifyError, check_timestamp};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The longest `webhook-id` read (Svix's are about 30 characters).
pub const MAX_MESSAGE_ID_LEN: usize = 256;

/// The HMAC key of a Standard Webhooks secret: the base64 after `whsec_` (a secret without the
/// prefix is taken as base64 too, as the official libraries do). `None` when it is not base64.
pub fn standard_webhooks_key(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    STANDARD.decode(b64).ok().filter(|k| !k.is_empty())
}

/// The `v1,<base64>` signature a Standard Webhooks sender puts in `webhook-signature`.
pub fn standard_webhooks_sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    format!("v1,{}", STANDARD.encode(standard_webhooks_mac(key, id, timestamp, body).finalize().into_bytes()))
}

fn standard_webhooks_mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Verifies a Standard Webhooks delivery against any of `keys` (a rotation's old and new secret):
/// the id is present and sane, the timestamp within `tolerance` of `now` both ways, and one of the
/// first [`MAX_CANDIDATES`] `v1,` signatures matches. Returns the timestamp. Every comparison is
/// constant-time.
pub fn verify_standard_webhooks(
    keys: &[&[u8]],
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<i64, VerifyError> {
    let signature = signature.map(str::trim).filter(|s| !s.is_empty()).ok_or(VerifyError::MissingSignature)?;
    let ts = check_timestamp(timestamp, now, tolerance)?;
    let id = id.map(str::trim).filter(|i| !i.is_empty()).ok_or(VerifyError::InvalidSignature)?;
    if id.len() > MAX_MESSAGE_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(VerifyError::InvalidSignature);
    }
    let candidates: Vec<Vec<u8>> = signature
        .split_ascii_whitespace()
        .filter_map(|part| part.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .take(MAX_CANDIDATES)
        .collect();
    let mut ok = false;
    for key in keys {
        let mac = standard_webhooks_mac(key, id, ts, body);
        for candidate in &candidates {
            ok |= mac.clone().verify_slice(candidate).is_ok();
        }
    }
    if ok { Ok(ts) } else { Err(VerifyError::InvalidSignature) }
}

/// The `sha256=<hex>` a GitHub-style sender puts in `X-Hub-Signature-256`.
pub fn github_sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Verifies `X-Hub-Signature-256: sha256=<hex>` (the body alone is signed: no timestamp, so replay
/// protection comes from idempotency) against any of `secrets`, in constant time.
pub fn verify_github(secrets: &[&[u8]], header: Option<&str>, body: &[u8]) -> Result<(), VerifyError> {
    let header = header.map(str::trim).filter(|h| !h.is_empty()).ok_or(VerifyError::MissingSignature)?;
    let hex_digest = header.strip_prefix("sha256=").ok_or(VerifyError::InvalidSignature)?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut digest).map_err(|_| VerifyError::InvalidSignature)?;
    let mut ok = false;
    for secret in secrets {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(body);
        ok |= mac.verify_slice(&digest).is_ok();
    }
    if ok { Ok(()) } else { Err(VerifyError::InvalidSignature) }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification (and of Svix's documentation).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn the_specifications_example_signs_and_verifies() {
        let key = standard_webhooks_key(SECRET).unwrap();
        assert_eq!(standard_webhooks_sign(&key, ID, TS, BODY), SIGNATURE);
        let ts = TS.to_string();
        let verify = |sig: &str, now: i64| verify_standard_webhooks(&[&key], Some(ID), Some(&ts), Some(sig), BODY, now, 300);
        assert_eq!(verify(SIGNATURE, TS + 10), Ok(TS));
        // Several signatures (a rotation): one valid is enough, in any position.
        assert_eq!(verify(&format!("v1,AAAA {SIGNATURE}"), TS), Ok(TS));
        // The same window both ways as the spec's HMAC.
        assert_eq!(verify(SIGNATURE, TS + 301), Err(VerifyError::TimestampExpired(300)));
        assert_eq!(verify(SIGNATURE, TS - 301), Err(VerifyError::TimestampInFuture(300)));
        // Another body, id or key fails.
        let other = verify_standard_webhooks(&[&key], Some(ID), Some(&ts), Some(SIGNATURE), b"{}", TS, 300);
        assert_eq!(other, Err(VerifyError::InvalidSignature));
        let other_id = verify_standard_webhooks(&[&key], Some("msg_x"), Some(&ts), Some(SIGNATURE), BODY, TS, 300);
        assert_eq!(other_id, Err(VerifyError::InvalidSignature));
        let wrong_key = standard_webhooks_key("whsec_AAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        let wrong = verify_standard_webhooks(&[&wrong_key], Some(ID), Some(&ts), Some(SIGNATURE), BODY, TS, 300);
        assert_eq!(wrong, Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn missing_or_malformed_headers_are_refused_before_any_hmac() {
        let key = standard_webhooks_key(SECRET).unwrap();
        let ts = TS.to_string();
        let v = |id: Option<&str>, t: Option<&str>, s: Option<&str>| verify_standard_webhooks(&[&key], id, t, s, BODY, TS, 300);
        assert_eq!(v(Some(ID), Some(&ts), None), Err(VerifyError::MissingSignature));
        assert_eq!(v(Some(ID), None, Some(SIGNATURE)), Err(VerifyError::MissingTimestamp));
        assert_eq!(v(None, Some(&ts), Some(SIGNATURE)), Err(VerifyError::InvalidSignature));
        assert_eq!(v(Some("a b"), Some(&ts), Some(SIGNATURE)), Err(VerifyError::InvalidSignature));
        assert_eq!(v(Some(ID), Some("soon"), Some(SIGNATURE)), Err(VerifyError::TimestampNotInteger));
        assert_eq!(v(Some(ID), Some(&ts), Some("v2,abc not-base64!")), Err(VerifyError::InvalidSignature));
        assert!(standard_webhooks_key("whsec_not base64!").is_none());
    }

    #[test]
    fn github_signs_the_body_alone() {
        let secret = b"It's a Secret to Everybody";
        // GitHub's documented example: "Hello, World!" under that secret.
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(github_sign(secret, b"Hello, World!"), expected);
        assert_eq!(verify_github(&[secret], Some(expected), b"Hello, World!"), Ok(()));
        assert_eq!(verify_github(&[secret], Some(expected), b"Hello, World?"), Err(VerifyError::InvalidSignature));
        assert_eq!(verify_github(&[secret], None, b""), Err(VerifyError::MissingSignature));
        assert_eq!(verify_github(&[secret], Some("sha1=abc"), b""), Err(VerifyError::InvalidSignature));
        assert_eq!(verify_github(&[b"old-secret", secret], Some(expected), b"Hello, World!"), Ok(()));
    }
}
