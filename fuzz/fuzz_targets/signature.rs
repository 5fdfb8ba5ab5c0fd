//! The intake's header parsing: `X-Webhook-Signature` (several values, separators, prefixes) and
//! `X-Webhook-Timestamp`, then a full verification. Any input must give `Ok` or an error, never a
//! panic, and a verification must agree with the signature it was given.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tw_core::Secret;
use tw_core::signature::{check_timestamp, parse_signature_header, sign, verify};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The first line is the signature header, the second the timestamp, the rest the body.
    let mut parts = text.splitn(3, '\n');
    let header = parts.next().unwrap_or_default();
    let timestamp = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default().as_bytes();
    let now = 1_700_000_000;
    let _ = check_timestamp(Some(timestamp), now, 300);
    let _ = check_timestamp(Some(header), i64::MAX, i64::MAX);
    let _ = check_timestamp(Some(header), i64::MIN, 300);
    let secret = Secret::new("fuzz-secret-0123456789abcdef0123");
    if let Ok(candidates) = parse_signature_header(header) {
        assert!(!candidates.is_empty());
        let _ = verify(&[&secret], timestamp, body, &candidates);
    }
    // A header we produce always parses and verifies.
    let good = format!("sha256={}", sign(&secret, timestamp, body));
    let parsed = parse_signature_header(&good).expect("our own signature parses");
    assert!(verify(&[&secret], timestamp, body, &parsed));
});
