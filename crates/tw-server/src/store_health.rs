//! Whether the store can write, as this process last saw it.
//!
//! A full disk (or a failing volume, or a PostgreSQL that refuses writes) leaves reads working:
//! `/api/ready`'s ping alone would keep saying `ready` while every delivery is refused. The
//! writers tell [`StoreHealth`] about each batch; one that could not commit because the database
//! cannot write marks the store unwritable. A batch that wrote, or a probe write, marks it
//! writable again; a batch that changed nothing (an idle worker's claim finding no work) commits
//! even on a full disk, so it proves nothing. While it is unwritable, `/api/ready` answers 503 naming the
//! cause, the `store_writable` gauge is 0, and a probe every [`PROBE_EVERY`] (64 KiB, more than
//! any free room SQLite keeps in its files) notices recovery even when no delivery arrives (a load
//! balancer that honours `/api/ready` sends none). Each change is logged once, not per request.

use crate::metrics::Metrics;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often an unwritable store is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Why and since when the store cannot write.
#[derive(Debug, Clone)]
pub struct WriteFailure {
    pub cause: String,
    pub since: chrono::DateTime<chrono::Utc>,
    started: Instant,
}

#[derive(Debug)]
pub struct StoreHealth {
    metrics: Arc<Metrics>,
    failure: Mutex<Option<WriteFailure>>,
    last_probe: Mutex<Option<Instant>>,
}

impl StoreHealth {
    pub fn new(metrics: Arc<Metrics>) -> StoreHealth {
        metrics.gauge("store_writable", &[], 1.0);
        StoreHealth { metrics, failure: Mutex::new(None), last_probe: Mutex::new(None) }
    }

    /// The current failure, if the store cannot write.
    pub fn failure(&self) -> Option<WriteFailure> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records that the store wrote (a batch committed, a probe passed).
    pub fn writable(&self) {
        let was = self.failure.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(f) = was {
            self.metrics.gauge("store_writable", &[], 1.0);
            tracing::info!(target: "store", down_secs = f.started.elapsed().as_secs(), cause = %f.cause, "the store writes again; deliveries are accepted");
        }
    }

    /// Records that the store could not write.
    pub fn unwritable(&self, cause: &str) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.is_none() {
            self.metrics.gauge("store_writable", &[], 0.0);
            self.metrics.count("store_write_failures_total", &[], 1);
            tracing::error!(target: "store", cause, "the store cannot write; deliveries are answered 503 until it can (check free disk space and the database)");
            *failure = Some(WriteFailure { cause: cause.to_string(), since: chrono::Utc::now(), started: Instant::now() });
        }
    }

    /// Tries a write when the store is marked unwritable and the last try is [`PROBE_EVERY`] old
    /// (or `force`); returns the failure that remains, if any.
    pub async fn probe(&self, store: &dyn tw_store::Store, force: bool) -> Option<WriteFailure> {
        self.failure()?;
        {
            let mut last = self.last_probe.lock().unwrap_or_else(|e| e.into_inner());
            if !force && last.is_some_and(|t| t.elapsed() < PROBE_EVERY) {
                return self.failure();
            }
            *last = Some(Instant::now());
        }
        match store.probe_write().await {
            Ok(()) => self.writable(),
            Err(e) if e.is_unavailable() => tracing::debug!(target: "store", error = %e.chain(), "write probe failed"),
            Err(e) => tracing::warn!(target: "store", error = %e.chain(), "write probe failed"),
        }
        self.failure()
    }
}

impl tw_store::CommitObserver for StoreHealth {
    fn committed(&self, batch: usize, elapsed: Duration, wrote: bool) {
        self.metrics.observe("store_commit_batch_size", &[], batch as f64);
        self.metrics.observe("store_commit_duration_seconds", &[], elapsed.as_secs_f64());
        // A batch that wrote proves the database takes writes again; one that changed nothing
        // (an idle claim) proves nothing. Cheap when nothing failed: one uncontended lock.
        if wrote {
            self.writable();
        }
    }

    fn unavailable(&self, cause: &str) {
        self.unwritable(cause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_kept_until_a_write_succeeds_and_logged_once() {
        let h = StoreHealth::new(Arc::new(Metrics::new()));
        assert!(h.failure().is_none());
        h.unwritable("database or disk is full");
        h.unwritable("another cause");
        assert_eq!(h.failure().unwrap().cause, "database or disk is full");
        assert!(h.metrics.render().contains("store_writable 0"));
        // A committed batch that changed nothing proves nothing; one that wrote clears it.
        tw_store::CommitObserver::committed(&h, 1, Duration::from_millis(1), false);
        assert!(h.failure().is_some());
        tw_store::CommitObserver::committed(&h, 1, Duration::from_millis(1), true);
        assert!(h.failure().is_none());
        assert!(h.metrics.render().contains("store_writable 1"));
    }
}
