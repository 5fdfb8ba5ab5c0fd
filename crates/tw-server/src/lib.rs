//! The HTTP server of the webhook intake: the axum router ([`routes`]), the intake service
//! ([`intake`]), authentication, the config file, and the background workers ([`workers`]).
//! [`start`] binds and runs it; the `tw-cli serve` command calls it.

pub mod api;
pub mod audit;
pub mod auth;
pub mod client;
pub mod config;
pub mod console;
pub mod error;
pub mod intake;
pub mod intel;
pub mod key_usage;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod playbooks;
pub mod refusals;
pub mod request_ids;
pub mod routes;
pub mod serve;
pub mod sources;
pub mod state;
pub mod store_health;
#[cfg(feature = "testing")]
pub mod testing;
pub mod triage;
pub mod workers;

pub use error::ApiError;
pub use state::AppState;

use state::{SourceCache, SystemClock};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{Notify, Semaphore};
use tw_store::sqlite::DB_FILE;
use tw_store::{DatabaseUrl, MasterKey, Store, StoreOptions};

/// Everything `tw-cli serve` is told.
#[derive(Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://...`; defaults to `<data_dir>/tw.db`.
    pub database_url: Option<String>,
    /// Engine settings: PostgreSQL pool size, connect and statement timeouts (a timeout answers
    /// 503 unavailable). Its `observer` is set by [`start`].
    pub db: StoreOptions,
    /// How long a claimed queued event or triage job stays with one process before another may
    /// take it over (the claimer died).
    pub claim_lease_secs: i64,
    /// The webhook_config.yaml to load at start.
    pub webhook_config: Option<PathBuf>,
    /// TW_MASTER_KEY, when set.
    pub master_key: Option<String>,
    /// Queue workers to run; 0 makes an intake-only process (queued events wait for another).
    pub queue_workers: usize,
    /// Sync deliveries that may wait for a commit at once before new ones are queued instead;
    /// 0 queues every delivery (202), absorbing bursts at the cost of a later incident number.
    pub max_inflight: usize,
    /// A directory of playbook YAML files loaded at start.
    pub playbooks_dir: Option<PathBuf>,
    /// Local threat intelligence files; default `<data_dir>/intel`.
    pub intel_dir: Option<PathBuf>,
    /// Where this process's log records are kept for `GET /api/logs`.
    pub log_buffer: Option<Arc<logs::LogBuffer>>,
    /// Serve `/metrics` on this address instead of the API's.
    pub metrics_listen: Option<SocketAddr>,
    /// Triage workers; 0 runs no triage in this process.
    pub triage_workers: usize,
    /// Attempts per triage job before it is marked failed.
    pub triage_max_attempts: u32,
    /// The time the intake checks timestamps against (the system clock; tests set their own).
    pub clock: Arc<dyn state::Clock>,
    /// Proxies whose `X-Forwarded-For` names the client (rate limits, audit, logs); none by default.
    pub trusted_proxies: client::TrustedProxies,
    /// The bearer token `/metrics` asks for (`--metrics-token-file`, `TW_METRICS_TOKEN`); `None`
    /// leaves it open, as a scrape on a private address expects.
    pub metrics_token: Option<tw_core::Secret>,
    /// Budgets of failed authentications per address and of playbook tests per key
    /// ([`limits::LimitsConfig`]).
    pub limits: limits::LimitsConfig,
    /// Header, body and idle timeouts, the connection cap and the body budget
    /// ([`serve::ConnectionLimits`]).
    pub connection_limits: serve::ConnectionLimits,
    /// How long a stop waits for requests in flight and running triage jobs before it cuts them
    /// off (jobs cut off are released for another instance at once).
    pub shutdown_grace: std::time::Duration,
    /// Which delivery records are kept (`--deliveries-keep`, `--deliveries-max-age-days`).
    pub deliveries_retention: tw_store::DeliveryRetention,
    /// How often old delivery records are pruned.
    pub deliveries_prune_every: std::time::Duration,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_deref().map(tw_store::postgres::redact_url))
            .field("db", &self.db)
            .field("claim_lease_secs", &self.claim_lease_secs)
            .field("webhook_config", &self.webhook_config)
            .field("master_key", &self.master_key.as_ref().map(|_| "<redacted>"))
            .field("queue_workers", &self.queue_workers)
            .field("max_inflight", &self.max_inflight)
            .field("playbooks_dir", &self.playbooks_dir)
            .field("metrics_listen", &self.metrics_listen)
            .field("intel_dir", &self.intel_dir)
            .field("triage_workers", &self.triage_workers)
            .field("triage_max_attempts", &self.triage_max_attempts)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "<redacted>"))
            .field("limits", &self.limits)
            .field("connection_limits", &self.connection_limits)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("deliveries_retention", &self.deliveries_retention)
            .field("deliveries_prune_every", &self.deliveries_prune_every)
            .finish()
    }
}

impl ServerConfig {
    /// Defaults for a data dir: listen on 127.0.0.1:8080, SQLite in the data dir.
    pub fn new(data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir,
            database_url: None,
            db: StoreOptions::default(),
            claim_lease_secs: DEFAULT_CLAIM_LEASE_SECS,
            webhook_config: None,
            master_key: None,
            queue_workers: 2,
            max_inflight: 4096,
            playbooks_dir: None,
            metrics_listen: None,
            log_buffer: None,
            intel_dir: None,
            triage_workers: triage::playbook_threads(),
            triage_max_attempts: tw_store::DEFAULT_TRIAGE_MAX_ATTEMPTS,
            clock: Arc::new(SystemClock),
            trusted_proxies: client::TrustedProxies::default(),
            metrics_token: None,
            limits: limits::LimitsConfig::default(),
            connection_limits: serve::ConnectionLimits::default(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            deliveries_retention: tw_store::DeliveryRetention::default(),
            deliveries_prune_every: std::time::Duration::from_secs(10),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Store(#[from] tw_store::StoreError),
    // The cause is part of the message and deliberately not a `source`, so `{:#}` prints it once.
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: std::io::Error },
    #[error("{0}")]
    Other(String),
}

/// How long a claim lasts by default: far longer than a triage run or an event takes.
pub const DEFAULT_CLAIM_LEASE_SECS: i64 = 60;

impl ServerConfig {
    /// Where the data lives: `--database-url`, or the SQLite file in the data dir.
    pub fn database(&self) -> Result<DatabaseUrl, StartError> {
        match self.database_url.as_deref().filter(|u| !u.is_empty()) {
            None => Ok(DatabaseUrl::Sqlite(self.data_dir.join(DB_FILE))),
            Some(url) => Ok(DatabaseUrl::parse(url)?),
        }
    }
}

/// Opens the store named by the config (creating the data dir and master key as needed).
pub async fn open_store(cfg: &ServerConfig) -> Result<Arc<dyn Store>, StartError> {
    open_store_observed(cfg, None).await
}

async fn open_store_observed(
    cfg: &ServerConfig,
    observer: Option<Arc<dyn tw_store::CommitObserver>>,
) -> Result<Arc<dyn Store>, StartError> {
    tw_store::files::create_private_dir(&cfg.data_dir)
        .map_err(|e| StartError::Other(format!("cannot create data dir {}: {e}", cfg.data_dir.display())))?;
    let url = cfg.database()?;
    let key = MasterKey::load_or_create(cfg.master_key.as_deref(), &cfg.data_dir)?;
    let mut opts = cfg.db.clone();
    opts.observer = observer;
    let store = tw_store::open(&url, key, opts).await?;
    tracing::debug!(target: "store", engine = store.engine(), database = %url, "store opened");
    Ok(store)
}

/// How long a stop waits for open requests and running triage jobs by default.
pub const DEFAULT_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A running server.
pub struct RunningServer {
    stopping: tokio::sync::watch::Sender<bool>,
    pub addr: SocketAddr,
    /// Where `/metrics` is served when it has its own address.
    pub metrics_addr: Option<SocketAddr>,
    pub state: AppState,
    /// The API's and the metrics' accept loops.
    serving: Vec<tokio::task::JoinHandle<()>>,
    /// The triage workers, which release their claims when they stop.
    triage_workers: Vec<tokio::task::JoinHandle<()>>,
    /// The queue workers, which finish the event at hand and release the rest of their batch.
    queue_workers: Vec<tokio::task::JoinHandle<()>>,
    /// Background tasks that write to the store (last uses of keys, refusal counts, retention).
    writers: Vec<tokio::task::JoinHandle<()>>,
    grace: std::time::Duration,
}

impl RunningServer {
    /// Stops accepting, answers the requests in flight (their commits included), lets running
    /// triage jobs finish and releases the ones claimed but not run, all within the grace period;
    /// whatever is left then is cut off (and its triage jobs released).
    pub async fn shutdown(self) {
        let _ = self.stopping.send(true);
        // The accept loops and the workers keep the grace themselves; this bound is a backstop.
        let backstop = self.grace + std::time::Duration::from_secs(5);
        let tasks = self.serving.into_iter().chain(self.triage_workers).chain(self.queue_workers).chain(self.writers);
        let waits = tasks.map(|task| async move {
            let abort = task.abort_handle();
            if tokio::time::timeout(backstop, task).await.is_err() {
                tracing::warn!(grace_secs = backstop.as_secs(), "a server task did not stop in time; aborting it");
                abort.abort();
            }
        });
        futures_util::future::join_all(waits).await;
        // The background writers made their last pass when the stop began; requests answered
        // during the grace period counted refusals and key uses after it.
        workers::deliveries::flush(&self.state).await;
        self.state.key_usage.flush(&self.state.store).await;
        // Fire-and-forget writes (delivery records) still in the writer's queue get committed.
        match tokio::time::timeout(self.grace, self.state.store.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(target: "store", error = %e.chain(), "pending background writes not flushed at stop"),
            Err(_) => tracing::warn!(target: "store", "pending background writes not flushed within the grace period"),
        }
        tracing::info!("stopped");
    }

    /// Runs until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

/// Opens the store, loads the config file, binds, and starts serving and the workers.
pub async fn start(cfg: ServerConfig) -> Result<RunningServer, StartError> {
    let metrics = Arc::new(metrics::Metrics::new());
    let store_health = Arc::new(store_health::StoreHealth::new(metrics.clone()));
    let store = open_store_observed(&cfg, Some(store_health.clone())).await?;
    let registry = Arc::new(playbooks::PlaybookRegistry::new(store.clone()));
    if let Some(dir) = &cfg.playbooks_dir {
        let loaded = registry.load_dir(dir).await.map_err(StartError::Other)?;
        tracing::info!(target: "triage", dir = %dir.display(), playbooks = ?loaded, "playbooks loaded");
    }
    let intel_dir = cfg.intel_dir.clone().unwrap_or_else(|| cfg.data_dir.join("intel"));
    let intel = Arc::new(intel::IntelStore::open(&intel_dir).map_err(StartError::Other)?);
    let playbooks = registry.names().await?;
    let mut declared = Vec::new();
    if let Some(path) = &cfg.webhook_config {
        let sources = config::load(path, &playbooks, &|k| std::env::var(k).ok())?;
        config::refuse_shared_secrets(path, &sources, &store.list_sources().await?, cfg.clock.now())?;
        for s in sources {
            let name = s.name.clone();
            let before = store.get_source(&name).await?;
            let after = store.upsert_config_source(s).await?;
            audit::config_source(&store, path, before.as_ref(), &after).await;
            tracing::info!(target: "api", source = %name, file = %path.display(), "source loaded from config file");
            declared.push(name);
        }
    }
    // A source taken out of the file (or a start without one) goes back to the API's hands.
    for name in store.release_config_sources(&declared).await? {
        tracing::warn!(target: "api", source = %name, "source is no longer in the config file; the API may now change or delete it");
        audit::config_released(&store, cfg.webhook_config.as_deref(), &name).await;
    }
    let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
    let console_sessions = console::session::Sessions::new(store.clone(), console::session::MAX_SESSIONS);
    let state = AppState::new(state::AppStateInner {
        sources: Arc::new(SourceCache::new(store.clone())),
        store,
        clock: cfg.clock.clone(),
        sync_permits: Arc::new(Semaphore::new(cfg.max_inflight)),
        sync_limit: cfg.max_inflight,
        queue_wakeup: Arc::new(Notify::new()),
        playbooks: registry,
        intel: intel.clone(),
        triage: workers::settings::TriageSettings {
            workers: cfg.triage_workers,
            max_attempts: cfg.triage_max_attempts.max(1),
            grace: cfg.shutdown_grace,
        },
        claim_lease_secs: cfg.claim_lease_secs.max(1),
        triage_wakeup: Arc::new(Notify::new()),
        metrics,
        trusted_proxies: Arc::new(cfg.trusted_proxies.clone()),
        metrics_token: cfg.metrics_token.clone().map(Arc::new),
        limits: Arc::new(limits::Limits::new(&cfg.limits)),
        key_usage: Arc::new(key_usage::KeyUsage::new()),
        store_health,
        refusals: Arc::new(refusals::RefusalSampler::new()),
        console_sessions: Arc::new(console_sessions),
        logs: cfg.log_buffer.clone(),
        stopping: stopping_rx,
        heartbeats: Arc::new(state::Heartbeats {
            queue_workers: cfg.queue_workers,
            triage_workers: cfg.triage_workers,
            ..Default::default()
        }),
    });
    // Changes made through other processes reach this one's source cache.
    tokio::spawn(state.sources.clone().watch(state.stopping.clone()));
    // Tasks that write to the store until the server stops (their last write included): a stop
    // waits for them, so nothing touches the data after `shutdown` returns.
    let mut writers = Vec::new();
    // API keys' last use, written about once a minute per key rather than per request.
    writers.push(tokio::spawn(state.key_usage.clone().run(state.store.clone(), state.stopping.clone())));
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.map_err(|e| StartError::Bind { addr: cfg.listen, reason: e })?;
    let addr = listener.local_addr().map_err(|e| StartError::Bind { addr: cfg.listen, reason: e })?;
    let queue_workers = (0..cfg.queue_workers).map(|_| tokio::spawn(workers::queue::run(state.clone()))).collect();
    let triage_workers = (0..cfg.triage_workers).map(|_| tokio::spawn(workers::triage::run(state.clone()))).collect();
    tokio::spawn(intel.watch());
    // Refused requests counted rather than stored are written once a second; delivery records
    // are kept bounded by the retention.
    writers.push(tokio::spawn(workers::deliveries::flush_every_second(state.clone())));
    writers.push(tokio::spawn(workers::deliveries::prune_periodically(
        state.clone(),
        cfg.deliveries_retention,
        cfg.deliveries_prune_every,
    )));
    // The Prometheus recorder keeps every histogram sample until upkeep folds it into the
    // buckets: without a scraper, memory grew by ~0.4 MB/s under load (a 5-minute
    // `tw-cli bench --duration 300s` went from 57 to 140 MB). Folded every second instead.
    {
        let metrics = state.metrics.clone();
        let mut stopping = state.stopping.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => metrics.upkeep(),
                    _ = stopping.changed() => return,
                }
            }
        });
    }
    // A store that could not write is probed until it can, so recovery is seen (and `/api/ready`
    // turns 200 again) without waiting for a delivery.
    {
        let (health, store) = (state.store_health.clone(), state.store.clone());
        let mut stopping = state.stopping.clone();
        writers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(store_health::PROBE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => { health.probe(&*store, false).await; }
                    _ = stopping.changed() => return,
                }
            }
        }));
    }
    let app = routes::router(state.clone(), cfg.metrics_listen.is_none());
    let limits = cfg.connection_limits;
    for warning in limits.warnings() {
        tracing::warn!(target: "api", "{warning}");
    }
    let serve = |name, listener, router| {
        let trusted = state.trusted_proxies.clone();
        serve::serve(name, listener, router, limits, trusted, state.metrics.clone(), state.stopping.clone(), cfg.shutdown_grace)
    };
    let mut serving = Vec::new();
    let metrics_addr = match cfg.metrics_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| StartError::Bind { addr, reason: e })?;
            let bound = l.local_addr().map_err(|e| StartError::Bind { addr, reason: e })?;
            serving.push(tokio::spawn(serve("metrics", l, routes::metrics_router(state.clone()))));
            tracing::info!(addr = %bound, "metrics listening");
            Some(bound)
        }
        None => None,
    };
    serving.push(tokio::spawn(serve("api", listener, app)));
    let database = cfg.database().map(|u| u.to_string()).unwrap_or_default();
    tracing::info!(%addr, data_dir = %cfg.data_dir.display(), %database, "tw webhook intake listening");
    Ok(RunningServer { addr, metrics_addr, state, serving, triage_workers, queue_workers, writers, grace: cfg.shutdown_grace, stopping })
}
