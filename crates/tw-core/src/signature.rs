//! Request authentication: `X-Webhook-Signature: sha256=<hex>` over `"<timestamp>.<raw body>"`
//! with HMAC-SHA256, and the `X-Webhook-Timestamp` replay window.

use crate::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The default replay window: requests older or newer than this many seconds are refused.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;
/// At most this many signatures are tried from one header (secret rotation needs two); values
/// after the eighth digest are ignored, so a long header costs no more HMAC comparisons.
pub const MAX_CANDIDATES: usize = 8;

/// Why a request's timestamp or signature was refused. Each maps to one API error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("X-Webhook-Signature header is missing")]
    MissingSignature,
    #[error("X-Webhook-Timestamp header is missing")]
    MissingTimestamp,
    #[error("X-Webhook-Timestamp must be unix seconds, e.g. 1705320000")]
    TimestampNotInteger,
    #[error("Webhook timestamp is too far in the future (>{0} seconds)")]
    TimestampInFuture(i64),
    #[error("Webhook timestamp is too old (>{minutes} minutes)", minutes = fmt_minutes(*.0))]
    TimestampExpired(i64),
    #[error("Webhook signature verification failed")]
    InvalidSignature,
}

fn fmt_minutes(secs: i64) -> String {
    if secs % 60 == 0 { (secs / 60).to_string() } else { format!("{:.1}", secs as f64 / 60.0) }
}

/// Checks `X-Webhook-Timestamp` against `now` (unix seconds): at most `tolerance` seconds old and
/// at most `tolerance` seconds ahead. Returns the timestamp.
pub fn check_timestamp(header: Option<&str>, now: i64, tolerance: i64) -> Result<i64, VerifyError> {
    let raw = header.map(str::trim).filter(|h| !h.is_empty()).ok_or(VerifyError::MissingTimestamp)?;
    if raw.len() > 12 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::TimestampNotInteger);
    }
    let ts: i64 = raw.parse().map_err(|_| VerifyError::TimestampNotInteger)?;
    // Saturating: no clock or tolerance, however absurd, can make the window check overflow.
    if now.saturating_sub(ts) > tolerance {
        return Err(VerifyError::TimestampExpired(tolerance));
    }
    if ts.saturating_sub(now) > tolerance {
        return Err(VerifyError::TimestampInFuture(tolerance));
    }
    Ok(ts)
}

/// Reads every `sha256=` digest out of an `X-Webhook-Signature` header.
///
/// Accepted forms, possibly several separated by commas or spaces (secret rotation):
/// - `sha256=<64 hex>` (case-insensitive);
/// - what the spec's shell recipe produces, since `openssl dgst` prints a label before the hex:
///   `sha256=SHA2-256(stdin)= <hex>` (OpenSSL 3), `sha256=(stdin)= <hex>` (OpenSSL 1.1),
///   `sha256=SHA256(stdin)= <hex>`.
///
/// Returns [`VerifyError::MissingSignature`] for an empty header and
/// [`VerifyError::InvalidSignature`] when nothing in it is a SHA-256 digest.
pub fn parse_signature_header(header: &str) -> Result<Vec<[u8; 32]>, VerifyError> {
    if header.trim().is_empty() {
        return Err(VerifyError::MissingSignature);
    }
    let mut out = Vec::new();
    let mut tokens = header.split(|c: char| c == ',' || c.is_ascii_whitespace()).filter(|t| !t.is_empty()).peekable();
    while let Some(token) = tokens.next() {
        let Some(rest) = strip_prefix_ignore_case(token, "sha256=") else { continue };
        // openssl's "LABEL(stdin)= <hex>": the hex is either after the label in the same token
        // (no space) or the next token, unless that next token is itself a `sha256=` value (a
        // bare label then has no hex, and the next signature is read on its own).
        let hex_part = match rest.find(")=") {
            Some(i) if rest.contains('(') => {
                let after = &rest[i + 2..];
                if !after.is_empty() {
                    after
                } else {
                    tokens.next_if(|next| strip_prefix_ignore_case(next, "sha256=").is_none()).unwrap_or("")
                }
            }
            _ => rest,
        };
        if let Some(digest) = decode_digest(hex_part) {
            out.push(digest);
            if out.len() == MAX_CANDIDATES {
                break;
            }
        }
    }
    if out.is_empty() { Err(VerifyError::InvalidSignature) } else { Ok(out) }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

fn decode_digest(hex_str: &str) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    if hex_str.len() != 64 {
        return None;
    }
    hex::decode_to_slice(hex_str, &mut digest).ok()?;
    Some(digest)
}

/// The signature a sender computes: hex HMAC-SHA256 of `"<timestamp>.<body>"`.
pub fn sign(secret: &Secret, timestamp: &str, body: &[u8]) -> String {
    hex::encode(mac_for(secret, timestamp, body).finalize().into_bytes())
}

fn mac_for(secret: &Secret, timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// True when any candidate digest is the HMAC of `"<timestamp>.<body>"` under any of `secrets`.
/// Every comparison is constant-time; the body is hashed once per secret.
pub fn verify(secrets: &[&Secret], timestamp: &str, body: &[u8], candidates: &[[u8; 32]]) -> bool {
    let mut ok = false;
    for secret in secrets {
        let mac = mac_for(secret, timestamp, body);
        for candidate in candidates {
            // Evaluate all without short-circuit so timing does not tell which one matched.
            ok |= mac.clone().verify_slice(candidate).is_ok();
        }
    }
    ok
}

/// The whole check of one delivery, in the order the intake applies it: signature present,
/// timestamp present and inside `tolerance` of `now`, then the HMAC against each of `secrets`
/// (the current one, and the previous one during a rotation's grace period).
pub fn verify_request(
    secrets: &[&Secret],
    tolerance: i64,
    now: i64,
    timestamp_header: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
) -> Result<i64, VerifyError> {
    verify_headers(secrets, tolerance, now, Header::from_text(timestamp_header), Header::from_text(signature_header), body)
}

/// [`verify_request`] on the headers' raw bytes, as HTTP delivers them: a header that is present
/// but not UTF-8 text is refused as invalid (`timestamp_invalid`, `invalid_signature`), never as
/// missing, so the sender is told what is actually wrong.
pub fn verify_request_raw(
    secrets: &[&Secret],
    tolerance: i64,
    now: i64,
    timestamp_header: Option<&[u8]>,
    signature_header: Option<&[u8]>,
    body: &[u8],
) -> Result<i64, VerifyError> {
    verify_headers(secrets, tolerance, now, Header::from_bytes(timestamp_header), Header::from_bytes(signature_header), body)
}

/// A signature or timestamp header as received.
#[derive(Clone, Copy)]
enum Header<'a> {
    Absent,
    Text(&'a str),
    /// Present, but its bytes are not UTF-8.
    Unreadable,
}

impl<'a> Header<'a> {
    fn from_text(h: Option<&'a str>) -> Header<'a> {
        h.map_or(Header::Absent, Header::Text)
    }

    fn from_bytes(h: Option<&'a [u8]>) -> Header<'a> {
        match h.map(std::str::from_utf8) {
            None => Header::Absent,
            Some(Ok(t)) => Header::Text(t),
            Some(Err(_)) => Header::Unreadable,
        }
    }
}

fn verify_headers(
    secrets: &[&Secret],
    tolerance: i64,
    now: i64,
    timestamp_header: Header<'_>,
    signature_header: Header<'_>,
    body: &[u8],
) -> Result<i64, VerifyError> {
    if matches!(signature_header, Header::Absent) || matches!(signature_header, Header::Text(s) if s.trim().is_empty()) {
        return Err(VerifyError::MissingSignature);
    }
    let timestamp_text = match timestamp_header {
        Header::Absent => None,
        Header::Text(t) => Some(t),
        Header::Unreadable => return Err(VerifyError::TimestampNotInteger),
    };
    let ts = check_timestamp(timestamp_text, now, tolerance)?;
    let Header::Text(signature_text) = signature_header else { return Err(VerifyError::InvalidSignature) };
    let candidates = parse_signature_header(signature_text)?;
    let timestamp_text = timestamp_text.map(str::trim).unwrap_or_default();
    if verify(secrets, timestamp_text, body, &candidates) { Ok(ts) } else { Err(VerifyError::InvalidSignature) }
}

/// Compares two secrets (or tokens) without letting the time taken say how much of them matched:
/// both are hashed to a fixed length first, and the digests compared without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::Digest;
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    let diff = x.iter().zip(y.iter()).fold(0u8, |acc, (p, q)| acc | (p ^ q));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_705_320_000;

    fn sig(secret: &str, ts: &str, body: &str) -> String {
        sign(&Secret::new(secret), ts, body.as_bytes())
    }

    #[test]
    fn known_vector() {
        // printf '%s' '1705320000.{"event_type":"test","data":{}}' | openssl dgst -sha256 -hmac your-secret
        assert_eq!(
            sig("your-secret", "1705320000", r#"{"event_type":"test","data":{}}"#),
            "8ad00c4e6f4b6c5b3d4dcece915fd33fd924a31c208133e2a75b6bb9af1617e3"
        );
    }

    #[test]
    fn parses_every_header_form() {
        let hex = sig("s3cret-key", "1", "{}");
        let upper = hex.to_uppercase();
        let forms = [
            format!("sha256={hex}"),
            format!("  sha256={hex}  "),
            format!("SHA256={upper}"),
            format!("sha256=SHA2-256(stdin)= {hex}"),
            format!("sha256=(stdin)= {hex}"),
            format!("sha256=SHA256(stdin)= {hex}"),
            format!("sha256=SHA2-256(stdin)={hex}"),
            format!("sha256={},sha256={hex}", "0".repeat(64)),
            format!("sha256={} sha256={hex}", "0".repeat(64)),
            format!("sha256={}, sha256=SHA2-256(stdin)= {hex}", "0".repeat(64)),
        ];
        for form in &forms {
            let parsed = parse_signature_header(form).unwrap_or_else(|e| panic!("{form}: {e}"));
            assert!(verify(&[&Secret::new("s3cret-key")], "1", b"{}", &parsed), "{form}");
        }
    }

    #[test]
    fn bare_openssl_label_does_not_swallow_the_next_signature() {
        let secret = Secret::new("s3cret-key");
        let hex = sig("s3cret-key", "1", "{}");
        let parsed = parse_signature_header(&format!("sha256=(stdin)=, sha256={hex}")).expect("the second value is a digest");
        assert_eq!(parsed.len(), 1);
        assert!(verify(&[&secret], "1", b"{}", &parsed));
        for form in [format!("sha256=(stdin)= sha256={hex}"), format!("sha256=SHA2-256(stdin)=, SHA256={hex}")] {
            let parsed = parse_signature_header(&form).unwrap_or_else(|e| panic!("{form}: {e}"));
            assert!(verify(&[&secret], "1", b"{}", &parsed), "{form}");
        }
        // The label followed by its hex in the next token still works.
        let parsed = parse_signature_header(&format!("sha256=SHA2-256(stdin)= {hex}")).unwrap();
        assert_eq!(parsed.len(), 1);
        assert!(verify(&[&secret], "1", b"{}", &parsed));
        // A bare label alone is still no digest.
        assert_eq!(parse_signature_header("sha256=(stdin)="), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn rejects_headers_without_a_digest() {
        assert_eq!(parse_signature_header(""), Err(VerifyError::MissingSignature));
        assert_eq!(parse_signature_header("   "), Err(VerifyError::MissingSignature));
        for bad in
            ["abc", "sha256=", "sha256=xyz", "sha1=aaaa", &format!("sha256={}", "g".repeat(64)), &format!("sha256={}", "a".repeat(63))]
        {
            assert_eq!(parse_signature_header(bad), Err(VerifyError::InvalidSignature), "{bad}");
        }
    }

    #[test]
    fn wrong_secret_body_or_timestamp_fails() {
        let good = parse_signature_header(&format!("sha256={}", sig("right-secret", "10", "{}"))).unwrap();
        let right = Secret::new("right-secret");
        assert!(verify(&[&right], "10", b"{}", &good));
        assert!(!verify(&[&Secret::new("wrong-secret")], "10", b"{}", &good));
        assert!(!verify(&[&right], "11", b"{}", &good));
        assert!(!verify(&[&right], "10", b"{ }", &good));
        // Rotation: either of two secrets verifies.
        assert!(verify(&[&Secret::new("new-secret!"), &right], "10", b"{}", &good));
    }

    #[test]
    fn verify_request_checks_in_order() {
        let secret = Secret::new("the-secret");
        let ts = NOW.to_string();
        let header = format!("sha256={}", sign(&secret, &ts, b"{}"));
        let v = |t: Option<&str>, s: Option<&str>, body: &[u8]| verify_request(&[&secret], 300, NOW, t, s, body);
        assert_eq!(v(Some(&ts), Some(&header), b"{}"), Ok(NOW));
        assert_eq!(v(None, None, b"{}"), Err(VerifyError::MissingSignature));
        assert_eq!(v(None, Some(&header), b"{}"), Err(VerifyError::MissingTimestamp));
        assert_eq!(v(Some("1705000000"), Some(&header), b"{}"), Err(VerifyError::TimestampExpired(300)));
        assert_eq!(v(Some(&ts), Some(&header), b"{\"x\":1}"), Err(VerifyError::InvalidSignature));
        assert_eq!(v(Some(&ts), Some("sha256=nothex"), b"{}"), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn unreadable_headers_are_invalid_not_missing() {
        let secret = Secret::new("the-secret");
        let ts = NOW.to_string();
        let header = format!("sha256={}", sign(&secret, &ts, b"{}"));
        let v = |t: Option<&[u8]>, s: Option<&[u8]>| verify_request_raw(&[&secret], 300, NOW, t, s, b"{}");
        assert_eq!(v(Some(ts.as_bytes()), Some(header.as_bytes())), Ok(NOW));
        assert_eq!(v(Some(ts.as_bytes()), Some(b"sha256=\xff\xfe")), Err(VerifyError::InvalidSignature));
        assert_eq!(v(Some(b"17053\xff0000"), Some(header.as_bytes())), Err(VerifyError::TimestampNotInteger));
        assert_eq!(v(Some("1705320000é".as_bytes()), Some(header.as_bytes())), Err(VerifyError::TimestampNotInteger));
        assert_eq!(v(None, Some(b"\xff")), Err(VerifyError::MissingTimestamp));
        assert_eq!(v(Some(ts.as_bytes()), None), Err(VerifyError::MissingSignature));
        assert_eq!(v(Some(ts.as_bytes()), Some(b"  ")), Err(VerifyError::MissingSignature));
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"same-secret", b"same-secret"));
        assert!(!constant_time_eq(b"same-secret", b"same-secreT"));
        assert!(!constant_time_eq(b"short", b"short-but-longer"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn window_edges_are_exact() {
        let t = |ts: i64| check_timestamp(Some(&ts.to_string()), NOW, 300);
        assert_eq!(t(NOW), Ok(NOW));
        assert_eq!(t(NOW - 300), Ok(NOW - 300));
        assert_eq!(t(NOW - 301), Err(VerifyError::TimestampExpired(300)));
        assert_eq!(t(NOW + 300), Ok(NOW + 300));
        assert_eq!(t(NOW + 301), Err(VerifyError::TimestampInFuture(300)));
    }

    #[test]
    fn extreme_clocks_do_not_overflow() {
        assert_eq!(check_timestamp(Some("999999999999"), i64::MIN, 300), Err(VerifyError::TimestampInFuture(300)));
        assert_eq!(check_timestamp(Some("0"), i64::MAX, 300), Err(VerifyError::TimestampExpired(300)));
        assert_eq!(check_timestamp(Some("5"), 0, i64::MAX), Ok(5));
    }

    #[test]
    fn bad_timestamps() {
        assert_eq!(check_timestamp(None, NOW, 300), Err(VerifyError::MissingTimestamp));
        assert_eq!(check_timestamp(Some(""), NOW, 300), Err(VerifyError::MissingTimestamp));
        for bad in ["abc", "-5", "1.5", "1705320000000000", "2024-01-15T10:00:00Z"] {
            assert_eq!(check_timestamp(Some(bad), NOW, 300), Err(VerifyError::TimestampNotInteger), "{bad}");
        }
    }

    #[test]
    fn expired_message_matches_the_spec() {
        assert_eq!(VerifyError::TimestampExpired(300).to_string(), "Webhook timestamp is too old (>5 minutes)");
        assert_eq!(VerifyError::InvalidSignature.to_string(), "Webhook signature verification failed");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_headers_never_panic(header in ".{0,300}", ts in ".{0,30}", body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = parse_signature_header(&header);
            let _ = verify_request(&[&Secret::new("s3cret-key")], 300, NOW, Some(&ts), Some(&header), &body);
        }

        #[test]
        fn any_signed_body_verifies_and_any_change_fails(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..2000),
            secret in "[ -~]{8,64}",
            flip in proptest::prelude::any::<usize>(),
        ) {
            let s = Secret::new(secret);
            let ts = NOW.to_string();
            let header = format!("sha256={}", sign(&s, &ts, &body));
            proptest::prop_assert_eq!(verify_request(&[&s], 300, NOW, Some(&ts), Some(&header), &body), Ok(NOW));
            let mut changed = body.clone();
            let i = flip % changed.len();
            changed[i] ^= 1;
            proptest::prop_assert_eq!(verify_request(&[&s], 300, NOW, Some(&ts), Some(&header), &changed), Err(VerifyError::InvalidSignature));
        }
    }
}
