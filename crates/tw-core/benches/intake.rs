//! Micro-benchmarks of the intake's pure code, so that a regression shows as a number:
//! signature verification, format detection, each vendor normalizer, entity extraction and a
//! playbook run.
//!
//! Run with `cargo bench -p tw-core --bench intake` (add a filter such as `-- normalize` to run
//! one group). The payloads in `benches/data/` are copies of fixtures from the shared vendor
//! fixture set (`fixtures/vendors/`), embedded so the benches build without that folder.

use divan::counter::BytesCount;
use divan::{Bencher, black_box};
use serde_json::Value;
use std::collections::BTreeMap;
use tw_core::formats::entities::{self, EntitySet};
use tw_core::signature::{DEFAULT_TOLERANCE_SECS, sign, verify_request};
use tw_core::{Format, Secret, Severity, normalize};

fn main() {
    divan::main();
}

/// One typical payload per vendor format, chosen to exercise most of its normalizer's rules.
fn payload(format: Format) -> &'static str {
    match format {
        Format::Generic => include_str!("data/generic-full.json"),
        Format::Defender => include_str!("data/defender-o365-phish-typical.json"),
        Format::Crowdstrike => include_str!("data/crowdstrike-detection-summary-critical.json"),
        Format::Splunk => include_str!("data/splunk-alert-process-many-entities.json"),
        Format::Sentinelone => include_str!("data/sentinelone-threat-many-indicators.json"),
        Format::Sentinel => include_str!("data/sentinel-incident-many-entities.json"),
        Format::Elastic => include_str!("data/elastic-security-alert-many-entities.json"),
    }
}

/// Payloads with many entities (about 16–18 KB), for the shared entity walker.
const LARGE: &[(&str, &str)] = &[
    ("elastic-many-entities", include_str!("data/elastic-security-alert-many-entities.json")),
    ("defender-many-urls", include_str!("data/defender-o365-phish-many-urls.json")),
];

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("bench payloads are valid JSON")
}

fn no_mapping() -> BTreeMap<String, Severity> {
    BTreeMap::new()
}

/// Signature verification: `verify_request` as the intake calls it, one header and one body.
mod signature {
    use super::*;

    const NOW: i64 = 1_718_035_200;
    const KB: usize = 1024;

    /// A body of `len` bytes: a real payload repeated (the HMAC cost depends on length only).
    fn body(len: usize) -> Vec<u8> {
        payload(Format::Generic).bytes().cycle().take(len).collect()
    }

    struct Request {
        timestamp: String,
        header: String,
        body: Vec<u8>,
    }

    fn request(secret: &Secret, len: usize) -> Request {
        let timestamp = NOW.to_string();
        let body = body(len);
        let header = format!("sha256={}", sign(secret, &timestamp, &body));
        Request { timestamp, header, body }
    }

    fn run(secrets: &[&Secret], r: &Request) -> Result<i64, tw_core::signature::VerifyError> {
        verify_request(
            black_box(secrets),
            DEFAULT_TOLERANCE_SECS,
            black_box(NOW),
            black_box(Some(r.timestamp.as_str())),
            black_box(Some(r.header.as_str())),
            black_box(&r.body),
        )
    }

    /// A valid signature with one secret, by body size.
    #[divan::bench(args = [KB, 16 * KB, 256 * KB])]
    fn valid(bencher: Bencher, len: usize) {
        let secret = Secret::new("whsec-current-0123456789abcdef");
        let r = request(&secret, len);
        assert!(run(&[&secret], &r).is_ok());
        bencher.counter(BytesCount::new(len)).bench(|| run(&[&secret], &r));
    }

    /// A wrong signature (signed with another secret): the same HMAC work, then a refusal.
    #[divan::bench]
    fn invalid_1kb(bencher: Bencher) {
        let secret = Secret::new("whsec-current-0123456789abcdef");
        let r = request(&Secret::new("whsec-attacker-guess-000000000"), KB);
        assert!(run(&[&secret], &r).is_err());
        bencher.counter(BytesCount::new(KB)).bench(|| run(&[&secret], &r));
    }

    /// Rotation grace period: two secrets, the first does not match; the body is hashed twice.
    #[divan::bench]
    fn rotation_two_secrets_1kb(bencher: Bencher) {
        let new = Secret::new("whsec-next-fedcba9876543210fedc");
        let old = Secret::new("whsec-current-0123456789abcdef");
        let r = request(&old, KB);
        assert!(run(&[&new, &old], &r).is_ok());
        bencher.counter(BytesCount::new(KB)).bench(|| run(&[&new, &old], &r));
    }
}

/// Format detection from the payload's shape, on an already parsed object.
#[divan::bench(args = Format::ALL)]
fn detect(bencher: Bencher, format: Format) {
    let value = parse(payload(format));
    let obj = value.as_object().expect("payloads are objects");
    assert_eq!(tw_core::formats::detect(obj), format);
    bencher.bench(|| tw_core::formats::detect(black_box(obj)));
}

/// Each vendor normalizer through the public entry point, format pinned, JSON already parsed.
#[divan::bench(args = Format::ALL)]
fn normalize_pinned(bencher: Bencher, format: Format) {
    let value = parse(payload(format));
    let mapping = no_mapping();
    bencher.counter(BytesCount::of_str(payload(format))).bench(|| normalize(black_box(&value), black_box(Some(format)), &mapping));
}

/// What the server does per delivery: parse the raw body, then normalize with the format
/// detected (no format pinned on the source).
#[divan::bench(args = Format::ALL)]
fn parse_and_normalize(bencher: Bencher, format: Format) {
    let text = payload(format);
    let mapping = no_mapping();
    let alert = normalize(&parse(text), None, &mapping).expect("payloads are objects");
    assert_eq!(alert.format, format);
    bencher.counter(BytesCount::of_str(text)).bench(|| {
        let value: Value = serde_json::from_slice(black_box(text.as_bytes())).expect("valid JSON");
        normalize(&value, None, &mapping)
    });
}

/// JSON parsing alone, to tell how much of `parse_and_normalize` is serde_json's.
#[divan::bench(args = Format::ALL)]
fn parse_only(bencher: Bencher, format: Format) {
    let text = payload(format);
    bencher.counter(BytesCount::of_str(text)).bench(|| serde_json::from_slice::<Value>(black_box(text.as_bytes())).expect("valid JSON"));
}

/// The shared entity walker (`entities::walk`) over a whole large payload.
#[divan::bench(args = LARGE.iter().map(|(name, _)| *name))]
fn entity_walk(bencher: Bencher, name: &str) {
    let text = LARGE.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).expect("known payload");
    let value = parse(text);
    bencher.counter(BytesCount::of_str(text)).bench(|| {
        let mut set = EntitySet::new();
        entities::walk(black_box(&value), &mut set);
        set.into_vec()
    });
}

/// The same large payloads through the whole normalizer (detected format), for comparison
/// with the walker alone.
#[divan::bench(args = LARGE.iter().map(|(name, _)| *name))]
fn normalize_large(bencher: Bencher, name: &str) {
    let text = LARGE.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).expect("known payload");
    let value = parse(text);
    let mapping = no_mapping();
    bencher.counter(BytesCount::of_str(text)).bench(|| normalize(black_box(&value), None, &mapping));
}

/// A whole playbook run (`phishing_triage` over a Defender phishing alert, `malware_triage` over
/// a CrowdStrike detection), prepared once as the server keeps it, and prepared for every run
/// (`tw_core::triage::run`) to show what preparing costs.
mod triage {
    use super::*;
    use tw_core::triage::{Intel, PreparedPlaybook, TriageIncident, builtin};

    const CASES: &[(&str, Format)] = &[("phishing_triage", Format::Defender), ("malware_triage", Format::Crowdstrike)];

    fn case(playbook: &str) -> (PreparedPlaybook, TriageIncident) {
        let format = CASES.iter().find(|(p, _)| *p == playbook).map(|(_, f)| *f).expect("known case");
        let raw = parse(payload(format));
        let alert = normalize(&raw, None, &no_mapping()).expect("fixtures normalize");
        let prepared = PreparedPlaybook::new(builtin(playbook).expect("built-in playbook"));
        (prepared, TriageIncident::from_alert(&alert, "bench", raw))
    }

    #[divan::bench(args = CASES.iter().map(|(p, _)| *p))]
    fn prepared(bencher: Bencher, playbook: &str) {
        let (prepared, incident) = case(playbook);
        let (intel, overrides) = (Intel::default(), BTreeMap::new());
        // The server hands each run an incident of its own (its payload parsed for the run).
        bencher
            .with_inputs(|| incident.clone())
            .bench_values(|incident| prepared.run(black_box(incident), &intel, &overrides).expect("the run succeeds"));
    }

    #[divan::bench(args = CASES.iter().map(|(p, _)| *p))]
    fn prepared_each_run(bencher: Bencher, playbook: &str) {
        let (prepared, incident) = case(playbook);
        let (intel, overrides) = (Intel::default(), BTreeMap::new());
        bencher.bench(|| tw_core::triage::run(prepared.playbook(), black_box(&incident), &intel, &overrides).expect("the run succeeds"));
    }
}
