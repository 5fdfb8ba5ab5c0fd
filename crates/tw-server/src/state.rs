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
/// A cheap handle on the server's state: one reference count per clone (axum clones the state
/// for every request, and a struct of a dozen `Arc`s cost a dozen atomic operations each way).
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl AppState {
    pub fn new(inner: AppStateInner) -> AppState {
        AppState(Arc::new(inner))
    }

    /// Sync deliveries waiting for the store right now (holding a permit of `sync_permits`).
    pub fn sync_writes_waiting(&self) -> usize {
        self.sync_limit.saturating_sub(self.sync_permits.available_permits())
    }
}

/// The proxies [`crate::client::ClientIp`] is extracted with.
impl AsRef<crate::client::TrustedProxies> for AppState {
    fn as_ref(&self) -> &crate::client::TrustedProxies {
        &self.trusted_proxies
    }
}

/// The tables, metrics and clock the rate limits are applied with.
impl crate::limits::LimitsState for AppState {
    fn limits(&self) -> &crate::limits::Limits {
        &self.0.limits
    }
    fn metrics(&self) -> &crate::metrics::Metrics {
        &self.0.metrics
    }
    fn now(&self) -> DateTime<Utc> {
        self.0.clock.now()
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// What an [`AppState`] holds.
pub struct AppStateInner {
    pub store: Arc<dyn Store>,
    pub sources: Arc<SourceCache>,
    pub clock: Arc<dyn Clock>,
    /// Sync-mode requests allowed to wait for a commit at once; past this the intake queues.
    pub sync_permits: Arc<Semaphore>,
    /// How many permits `sync_permits` started with (`--max-inflight`).
    pub sync_limit: usize,
    /// Wakes the queue workers when an event is queued.
    pub queue_wakeup: Arc<Notify>,
    /// The playbooks sources and runs may name.
    pub playbooks: Arc<crate::playbooks::PlaybookRegistry>,
    /// Local threat intelligence.
    pub intel: Arc<crate::intel::IntelStore>,
    /// Triage workers and retry limits.
    pub triage: crate::workers::settings::TriageSettings,
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
    /// Proxies whose `X-Forwarded-For` is believed ([`crate::client::ClientIp`]).
    pub trusted_proxies: Arc<crate::client::TrustedProxies>,
    /// The bearer token `/metrics` asks for; `None`: it is open.
    pub metrics_token: Option<Arc<tw_core::Secret>>,
    /// Rate-limit buckets: per source, per failing address, per key ([`crate::limits`]).
    pub limits: Arc<crate::limits::Limits>,
    /// When each API key was last used, written to the store about once a minute per key.
    pub key_usage: Arc<crate::key_usage::KeyUsage>,
    /// Whether the store can write ([`crate::store_health`]).
    pub store_health: Arc<crate::store_health::StoreHealth>,
    /// Refused requests: which are stored in full, which counted ([`crate::refusals`]).
    pub refusals: Arc<crate::refusals::RefusalSampler>,
    /// Who is signed in to the console ([`crate::console::session`]).
    pub console_sessions: Arc<crate::console::session::Sessions>,
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

/// How long the table of sources is trusted at most. Changes by any process are noticed sooner,
/// through the store's sources version ([`SourceCache::watch`]).
const CACHE_TTL: Duration = Duration::from_secs(30);
/// How often the sources version is read: a change made through another process is honoured
/// here within this (plus one read).
pub const SOURCES_POLL: Duration = Duration::from_millis(500);

/// Every registered source by name.
type SourceTable = Arc<HashMap<SourceName, Arc<SourceRecord>>>;

/// Every registered source, held in memory for the intake's hot path: a delivery, whatever name
/// it carries, is answered from here, so a sender spraying unregistered names costs no database
/// read, and memory is bounded by the sources an admin registered. Reloaded as a whole when the
/// store's sources version moves, when this process changed a source, or after [`CACHE_TTL`].
pub struct SourceCache {
    store: Arc<dyn Store>,
    /// The table and when it was read; `None` when it must be read again.
    table: RwLock<Option<(Instant, SourceTable)>>,
    /// Moves at every change: a load that started before one must not keep what it read.
    generation: std::sync::atomic::AtomicU64,
    /// One load at a time: the requests that find the table stale wait for that one load.
    loading: tokio::sync::Mutex<()>,
}

impl SourceCache {
    pub fn new(store: Arc<dyn Store>) -> SourceCache {
        SourceCache { store, table: RwLock::new(None), generation: Default::default(), loading: tokio::sync::Mutex::new(()) }
    }

    /// Forgets the table (it is read again on the next lookup).
    fn clear(&self) {
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *table = None;
    }

    fn fresh(&self) -> Option<SourceTable> {
        match &*self.table.read().unwrap_or_else(|p| p.into_inner()) {
            Some((at, t)) if at.elapsed() < CACHE_TTL => Some(t.clone()),
            _ => None,
        }
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
                // The database is away: the table expires by age meanwhile.
                Err(e) => tracing::debug!(target: "store", error = %e.chain(), "reading the sources version failed"),
            }
        }
    }

    /// The source named `name` (`None`: not registered), from the table in memory.
    pub async fn get(&self, name: &SourceName) -> Result<Option<Arc<SourceRecord>>, StoreError> {
        Ok(self.table().await?.get(name).cloned())
    }

    /// The name of every registered source (`/metrics` shows no other).
    pub async fn names(&self) -> Result<std::collections::HashSet<SourceName>, StoreError> {
        Ok(self.table().await?.keys().cloned().collect())
    }

    /// The table in memory, read again when stale.
    async fn table(&self) -> Result<SourceTable, StoreError> {
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let _one = self.loading.lock().await;
        // Loaded by the request this one waited for.
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let loaded: SourceTable = Arc::new(self.store.list_sources().await?.into_iter().map(|s| (s.name.clone(), Arc::new(s))).collect());
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        // Changed while this was loading (here or elsewhere): what was read may be stale, so it
        // answers this request but is not kept.
        if self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
            *table = Some((Instant::now(), loaded.clone()));
        }
        Ok(loaded)
    }

    /// Forgets the table after this process changed `name`.
    pub fn invalidate(&self, _name: &SourceName) {
        self.clear();
    }
}
