//! Prometheus metrics. Each server owns its own recorder (not the process-global one), so several
//! servers in one process (the tests) count separately. Label values come only from registered
//! source names (unknown senders share `_unregistered`), static error codes, severities,
//! playbook names and verdicts: no sender can create new series.

use metrics::{Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use std::time::Duration;

/// The `source` label of requests to names that are not registered.
pub const UNREGISTERED: &str = "_unregistered";

const METADATA: Metadata<'static> = Metadata::new("tw", metrics::Level::INFO, Some(module_path!()));

/// This server's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
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
        let m = Metrics { recorder, handle };
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
        self.recorder.register_counter(&key(name, labels), &METADATA).increment(n);
    }

    /// Records one observation in a histogram.
    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], v: f64) {
        self.recorder.register_histogram(&key(name, labels), &METADATA).record(v);
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

impl tw_store::CommitObserver for Metrics {
    fn committed(&self, batch: usize, elapsed: Duration) {
        self.observe("store_commit_batch_size", &[], batch as f64);
        self.observe("store_commit_duration_seconds", &[], elapsed.as_secs_f64());
    }
}
