//! Prometheus metrics. Each server owns its own recorder (not the process-global one), so several
//! servers in one process (the tests) count separately. Label values come only from registered
//! source names (unknown senders share `_unregistered`), static error codes, severities,
//! playbook names and verdicts: no sender can create new series.

use metrics::{Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// The `source` label of requests to names that are not registered.
pub const UNREGISTERED: &str = "_unregistered";

const METADATA: Metadata<'static> = Metadata::new("tw", metrics::Level::INFO, Some(module_path!()));

/// This server's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    counters: Handles<metrics::Counter>,
    histograms: Handles<metrics::Histogram>,
}

/// Handles of series already registered, found again by name and labels without building their
/// key: registering builds a [`Key`] (a vector and a string per label) for every sample, which
/// cost the intake several thousand instructions per delivery. Bounded like the recorder itself:
/// label values are registered source names, static codes, statuses and severities.
struct Handles<H>(std::sync::RwLock<std::collections::HashMap<u64, Vec<(Key, H)>>>);

impl<H: Clone> Handles<H> {
    fn new() -> Handles<H> {
        Handles(std::sync::RwLock::new(std::collections::HashMap::new()))
    }

    /// The handle of `name` with `labels`, registered by `register` the first time.
    fn get(&self, name: &'static str, labels: &[(&'static str, &str)], register: impl FnOnce(&Key) -> H) -> H {
        // FNV-1a: a few short strings, hashed in a fraction of SipHash's time; a collision only
        // costs a comparison (each slot holds its keys).
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for part in std::iter::once(name).chain(labels.iter().flat_map(|(k, v)| [*k, *v])) {
            for b in part.bytes().chain([0xff]) {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        let same = |k: &Key| {
            k.name() == name
                && k.labels().len() == labels.len()
                && k.labels().zip(labels).all(|(l, (n, v))| l.key() == *n && l.value() == *v)
        };
        if let Some(found) = self.0.read().unwrap_or_else(|e| e.into_inner()).get(&hash).and_then(|v| v.iter().find(|(k, _)| same(k))) {
            return found.1.clone();
        }
        let key = key(name, labels);
        let handle = register(&key);
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        let slot = map.entry(hash).or_default();
        if !slot.iter().any(|(k, _)| same(k)) {
            slot.push((key, handle.clone()));
        }
        handle
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    Key::from_parts(name, labels.iter().map(|(k, v)| Label::new(*k, v.to_string())).collect::<Vec<_>>())
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let seconds = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let bytes = [256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0];
        let batch = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("webhook_payload_bytes".into()), &bytes))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("store_commit_batch_size".into()), &batch))
            .expect("static bucket lists are non-empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let m = Metrics { recorder, handle, counters: Handles::new(), histograms: Handles::new() };
        m.describe();
        m.recorder.register_gauge(&key("tw_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), &METADATA).set(1.0);
        m
    }

    fn describe(&self) {
        let d = |name: &'static str, help: &'static str| self.recorder.describe_counter(name.into(), None, help.into());
        d("webhook_received_total", "Requests that reached the intake, by source");
        d("webhook_errors_total", "Intake requests answered with an error, by source and error code");
        d("webhook_duplicates_total", "Deliveries recognised as an alert already received");
        d("incidents_created_total", "Incidents created, by source and severity");
        d("triage_jobs_total", "Triage jobs finished, by playbook, verdict and status");
        d("triage_yields_total", "Times a triage worker let a saturated intake go first before claiming jobs (it waits a second at most)");
        d(
            "webhook_refusals_aggregated_total",
            "Refused intake requests counted into an aggregate delivery row instead of stored one by one, by source and code",
        );
        d("deliveries_pruned_total", "Delivery records deleted by the retention");
        d(
            "tw_auth_failures_total",
            "Failed intake verifications (kind=signature), intake requests to unregistered sources (kind=unknown_source), wrong API keys (kind=api_key) and intake bodies too slow or refused for the body budget (kind=slow_body)",
        );
        d("tw_rate_limited_total", "Requests refused with 429 rate_limited, by reason: source, auth_failures, playbook_test");
        // Present at 0 from the start, so an alert on their rate has a series before the first attack.
        for kind in ["signature", "api_key", "unknown_source", "slow_body"] {
            self.count("tw_auth_failures_total", &[("kind", kind)], 0);
        }
        for reason in ["source", "auth_failures", "playbook_test", "log_followers"] {
            self.count("tw_rate_limited_total", &[("reason", reason)], 0);
        }
        self.count("triage_yields_total", &[], 0);
        let h = |name: &'static str, help: &'static str| self.recorder.describe_histogram(name.into(), None, help.into());
        h("webhook_request_duration_seconds", "Intake request latency, by source and HTTP status");
        h("webhook_payload_bytes", "Size of intake request bodies");
        h("triage_duration_seconds", "Time to run a playbook");
        h("store_commit_batch_size", "Writes committed per transaction (group commit)");
        h("store_commit_duration_seconds", "Time to commit one batch");
        self.recorder.describe_gauge("webhook_queue_depth".into(), None, "Work waiting: queued events and triage jobs, by kind".into());
        self.recorder.describe_gauge("tw_build_info".into(), None, "Build information".into());
    }

    /// Adds `n` to a counter.
    pub fn count(&self, name: &'static str, labels: &[(&'static str, &str)], n: u64) {
        self.counters.get(name, labels, |k| self.recorder.register_counter(k, &METADATA)).increment(n);
    }

    /// Records one observation in a histogram.
    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], v: f64) {
        self.histograms.get(name, labels, |k| self.recorder.register_histogram(k, &METADATA)).record(v);
    }

    /// Sets a gauge.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)], v: f64) {
        self.recorder.register_gauge(&key(name, labels), &METADATA).set(v);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drains histogram buffers; call now and then.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// `text` (the exposition format) without the samples whose `source` label names a source that
/// `keep` refuses: the series of a deleted source stop being shown at once. The recorder cannot
/// forget a label set, so they stay in memory (bounded by the sources an admin ever registered)
/// and reappear, with their old counts, if a source of that name is registered again.
/// [`UNREGISTERED`] is always kept.
pub fn drop_sources(text: &str, keep: &dyn Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let shown = line.starts_with('#') || source_label(line).is_none_or(|s| s == UNREGISTERED || keep(s));
        if shown {
            out.push_str(line);
        }
    }
    out
}

/// The value of a sample line's `source` label. Source names need no escaping (letters, digits,
/// `-` and `_`), so the value ends at the next quote.
fn source_label(line: &str) -> Option<&str> {
    let labels = &line[line.find('{')?..];
    let at = labels.find("{source=\"").or_else(|| labels.find(",source=\""))? + "{source=\"".len();
    let value = &labels[at..];
    Some(&value[..value.find('"')?])
}

/// The smallest metrics token accepted: a guessable one would be no protection.
pub const MIN_TOKEN_LEN: usize = 16;

/// The metrics token from `--metrics-token-file` (`file`) or `TW_METRICS_TOKEN` (`env`), not both.
/// Surrounding whitespace is dropped (a file ends with a newline; Prometheus trims its
/// `credentials_file` the same way). At least [`MIN_TOKEN_LEN`] visible ASCII characters.
pub fn load_token(file: Option<&std::path::Path>, env: Option<String>) -> Result<Option<tw_core::Secret>, String> {
    let text = match (file, env.filter(|e| !e.trim().is_empty())) {
        (Some(_), Some(_)) => return Err("give the metrics token once: --metrics-token-file or TW_METRICS_TOKEN, not both".into()),
        (None, None) => return Ok(None),
        (None, Some(e)) => tw_core::Secret::new(e),
        (Some(path), None) => tw_core::Secret::new(
            std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read the metrics token: {e}", path.display()))?,
        ),
    };
    let token = text.expose().trim();
    if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "the metrics token must be at least {MIN_TOKEN_LEN} visible ASCII characters (no spaces), e.g. `openssl rand -hex 32`"
        ));
    }
    Ok(Some(tw_core::Secret::new(token)))
}

/// Whether `headers` carry `Authorization: Bearer <token>`, compared in constant time.
pub fn bearer_matches(headers: &axum::http::HeaderMap, token: &tw_core::Secret) -> bool {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION).map(|v| v.as_bytes()) else { return false };
    let given = value.strip_prefix(b"Bearer ").or_else(|| value.strip_prefix(b"bearer ")).unwrap_or_default().trim_ascii();
    tw_core::signature::constant_time_eq(given, token.expose().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_of_unknown_sources_are_left_out() {
        let text = "# HELP webhook_received_total x\n# TYPE webhook_received_total counter\nwebhook_received_total{source=\"gone\"} 3\nwebhook_received_total{source=\"live\"} 1\nwebhook_received_total{source=\"_unregistered\"} 9\nwebhook_errors_total{code=\"x\",source=\"gone\"} 1\nwebhook_request_duration_seconds_bucket{source=\"gone\",status=\"200\",le=\"0.1\"} 1\ntw_build_info{version=\"1\"} 1\nwebhook_queue_depth 0\n";
        let out = drop_sources(text, &|s| s == "live");
        assert!(!out.contains("gone"), "{out}");
        assert!(
            out.contains("source=\"live\"} 1\n")
                && out.contains("_unregistered")
                && out.contains("tw_build_info")
                && out.contains("queue_depth 0")
        );
        assert!(out.contains("# TYPE webhook_received_total counter"));
    }

    #[test]
    fn samples_reach_their_own_series_through_the_kept_handles() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.count("webhook_received_total", &[("source", "mail")], 1);
        }
        m.count("webhook_received_total", &[("source", "edr")], 2);
        m.count("webhook_errors_total", &[("source", "mail"), ("code", "invalid_signature")], 1);
        m.count("webhook_errors_total", &[("source", "mail"), ("code", "timestamp_expired")], 4);
        m.observe("webhook_payload_bytes", &[("source", "mail")], 300.0);
        m.observe("webhook_payload_bytes", &[("source", "mail")], 5000.0);
        m.observe("webhook_payload_bytes", &[("source", "edr")], 100.0);
        m.upkeep();
        let text = m.render();
        for line in [
            "webhook_received_total{source=\"mail\"} 3",
            "webhook_received_total{source=\"edr\"} 2",
            "webhook_errors_total{source=\"mail\",code=\"invalid_signature\"} 1",
            "webhook_errors_total{source=\"mail\",code=\"timestamp_expired\"} 4",
            "webhook_payload_bytes_count{source=\"mail\"} 2",
            "webhook_payload_bytes_sum{source=\"mail\"} 5300",
            "webhook_payload_bytes_count{source=\"edr\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn tokens_load_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        assert_eq!(load_token(Some(&path), None).unwrap().unwrap().expose(), "0123456789abcdef0123");
        assert_eq!(load_token(None, Some("  abcdefghijklmnop ".into())).unwrap().unwrap().expose(), "abcdefghijklmnop");
        assert!(load_token(None, None).unwrap().is_none());
        assert!(load_token(Some(&path), Some("abcdefghijklmnop".into())).is_err());
        assert!(load_token(None, Some("short".into())).is_err());
        assert!(load_token(None, Some("has a space in the middle".into())).is_err());
        assert!(load_token(Some(&dir.path().join("missing")), None).unwrap_err().contains("cannot read"));
        let mut h = axum::http::HeaderMap::new();
        let token = tw_core::Secret::new("abcdefghijklmnop");
        assert!(!bearer_matches(&h, &token));
        h.insert("authorization", "Bearer abcdefghijklmnop".parse().unwrap());
        assert!(bearer_matches(&h, &token));
        h.insert("authorization", "Bearer abcdefghijklmnoq".parse().unwrap());
        assert!(!bearer_matches(&h, &token));
        h.insert("authorization", "abcdefghijklmnop".parse().unwrap());
        assert!(!bearer_matches(&h, &token));
    }
}
