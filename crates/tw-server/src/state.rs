//! Shared state of the server: the store, the per-process source cache, the clock.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};
use tw_core::SourceName;
use tw_store::{SourceRecord, Store, StoreError};

/// The time, injected so tests can move it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until told to move (tests set window edges exactly with it).
#[derive(Debug)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    /// A clock showing `unix_secs`.
    pub fn at(unix_secs: i64) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicI64::new(unix_secs))
    }

    /// Moves the clock to `unix_secs`.
    pub fn set(&self, unix_secs: i64) {
        self.0.store(unix_secs, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.0.load(std::sync::atomic::Ordering::SeqCst), 0).unwrap_or_default()
    }
}

/// Everything a handler needs. Cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub sources: Arc<SourceCache>,
    pub clock: Arc<dyn Clock>,
    /// Sync-mode requests allowed to wait for a commit at once; past this the intake queues.
    pub sync_permits: Arc<Semaphore>,
    /// Wakes the queue workers when an event is queued.
    pub queue_wakeup: Arc<Notify>,
    /// The playbooks sources and runs may name.
    pub playbooks: Arc<crate::playbooks::PlaybookRegistry>,
    /// Local threat intelligence.
    pub intel: Arc<crate::intel::IntelStore>,
    /// Triage workers and retry limits.
    pub triage: crate::triage::TriageSettings,
    /// How long a claim of a queued event or a triage job lasts: when this process dies, another
    /// takes its claimed work over after this (never sooner, so live work is never taken).
    pub claim_lease_secs: i64,
    /// Wakes the triage workers when a job is queued.
    pub triage_wakeup: Arc<Notify>,
    /// Retained logs, when this process keeps them (`tw-cli serve` does).
    pub logs: Option<Arc<crate::logs::LogBuffer>>,
    /// When each kind of worker last went round its loop.
    pub heartbeats: Arc<Heartbeats>,
    /// Becomes true when the server stops, so long-lived responses (log streams) end.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// This server's Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The last time (unix seconds) each kind of background worker was alive, and how many run.
#[derive(Debug, Default)]
pub struct Heartbeats {
    pub queue: std::sync::atomic::AtomicI64,
    pub triage: std::sync::atomic::AtomicI64,
    pub queue_workers: usize,
    pub triage_workers: usize,
}

impl Heartbeats {
    /// Records that a worker is alive now.
    pub fn beat(slot: &std::sync::atomic::AtomicI64) {
        slot.store(Utc::now().timestamp(), std::sync::atomic::Ordering::Relaxed);
    }
}

/// How long a cached source (or the knowledge that a name is unknown) is trusted at most. Changes
/// by any process are noticed sooner, through the store's sources version ([`SourceCache::watch`]).
const CACHE_TTL: Duration = Duration::from_secs(30);
/// How often the sources version is read: a change made through another process is honoured
/// here within this (plus one read).
pub const SOURCES_POLL: Duration = Duration::from_millis(500);
/// Bound on cached names, so a sender spraying random names cannot grow memory.
const CACHE_MAX: usize = 10_000;

/// Per-process cache of sources for the intake's hot path.
pub struct SourceCache {
    store: Arc<dyn Store>,
    entries: RwLock<HashMap<SourceName, (Instant, Option<Arc<SourceRecord>>)>>,
    /// Moves at every clear: a load that started before a clear must not put back what it read.
    generation: std::sync::atomic::AtomicU64,
}

impl SourceCache {
    pub fn new(store: Arc<dyn Store>) -> SourceCache {
        SourceCache { store, entries: RwLock::new(HashMap::new()), generation: Default::default() }
    }

    fn clear(&self) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        entries.clear();
    }

    /// Forgets everything whenever the store's sources version moves (a source was registered,
    /// changed, disabled, rotated or deleted by any process), until `stopping` turns true.
    pub async fn watch(self: Arc<Self>, mut stopping: tokio::sync::watch::Receiver<bool>) {
        let mut seen = self.store.sources_version().await.ok();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SOURCES_POLL) => {}
                _ = stopping.changed() => return,
            }
            if *stopping.borrow() {
                return;
            }
            match self.store.sources_version().await {
                Ok(v) if Some(v) != seen => {
                    self.clear();
                    seen = Some(v);
                }
                Ok(_) => {}
                // The database is away: entries expire by age meanwhile.
                Err(e) => tracing::debug!(target: "store", error = %e.chain(), "reading the sources version failed"),
            }
        }
    }

    /// The source named `name`, from cache when fresh.
    pub async fn get(&self, name: &SourceName) -> Result<Option<Arc<SourceRecord>>, StoreError> {
        if let Some((at, v)) = self.entries.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            if at.elapsed() < CACHE_TTL {
                return Ok(v.clone());
            }
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let loaded = self.store.get_source(name).await?.map(Arc::new);
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        // Cleared while this was loading (a change elsewhere): what was read may be stale, so it
        // answers this request but is not kept.
        if self.generation.load(std::sync::atomic::Ordering::SeqCst) != generation {
            return Ok(loaded);
        }
        if entries.len() >= CACHE_MAX {
            entries.clear();
        }
        entries.insert(name.clone(), (Instant::now(), loaded.clone()));
        Ok(loaded)
    }

    /// Forgets a source after this process changed it.
    pub fn invalidate(&self, name: &SourceName) {
        self.entries.write().unwrap_or_else(|p| p.into_inner()).remove(name);
    }
}
