//! `tw-cli serve`: runs the server until Ctrl-C or SIGTERM.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tw_server::ServerConfig;

/// Where the data lives (shared by `serve` and `api-key create`).
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Directory for the database and the master key file; created if missing.
    #[arg(long, env = "TW_DATA_DIR", default_value = "./tw-data")]
    pub data_dir: PathBuf,
    /// Database URL: sqlite://PATH (default: tw.db in the data dir) or
    /// postgres://USER[:PASSWORD]@HOST:PORT/DB for several instances on one PostgreSQL.
    #[arg(long, env = "TW_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// PostgreSQL connections this process keeps.
    #[arg(long, env = "TW_DB_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u16).range(2..=1000))]
    pub db_pool_size: u16,
    /// Seconds to wait for a PostgreSQL connection before answering 503 unavailable.
    #[arg(long, env = "TW_DB_CONNECT_TIMEOUT_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub db_connect_timeout_secs: u64,
    /// Seconds PostgreSQL lets one statement run before cancelling it (503 unavailable).
    #[arg(long, env = "TW_DB_STATEMENT_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub db_statement_timeout_secs: u64,
}

impl StoreArgs {
    pub fn server_config(&self) -> ServerConfig {
        let mut cfg = ServerConfig::new(self.data_dir.clone());
        cfg.database_url = self.database_url.clone();
        cfg.master_key = std::env::var("TW_MASTER_KEY").ok();
        cfg.db.pool_size = usize::from(self.db_pool_size);
        cfg.db.connect_timeout = std::time::Duration::from_secs(self.db_connect_timeout_secs);
        cfg.db.statement_timeout = std::time::Duration::from_secs(self.db_statement_timeout_secs);
        cfg
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TW_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    store: StoreArgs,
    /// webhook_config.yaml declaring sources (loaded at start).
    #[arg(long, env = "TW_WEBHOOK_CONFIG")]
    config: Option<PathBuf>,
    /// Background workers for queued (async) events; 0 runs an intake-only process.
    #[arg(long, env = "TW_QUEUE_WORKERS", default_value_t = 2)]
    queue_workers: usize,
    /// Sync deliveries that may wait for their commit at once; beyond this, events are queued (202).
    /// 0 queues every delivery.
    #[arg(long, env = "TW_MAX_INFLIGHT", default_value_t = 4096)]
    max_inflight: usize,
    /// Directory of playbook YAML files to load at start.
    #[arg(long, env = "TW_PLAYBOOKS_DIR")]
    playbooks_dir: Option<PathBuf>,
    /// Directory of local threat intelligence (bad-domains.txt, ..., assets.yaml); default: DATA_DIR/intel.
    #[arg(long, env = "TW_INTEL_DIR")]
    intel_dir: Option<PathBuf>,
    /// Triage workers (default: one per core, at least 2); 0 runs no triage in this process.
    #[arg(long, env = "TW_TRIAGE_WORKERS")]
    triage_workers: Option<usize>,
    /// Seconds a claimed queued event or triage job stays with this process; when it dies, any
    /// instance takes the work over after this.
    #[arg(long, env = "TW_CLAIM_LEASE_SECS", default_value_t = 60, value_parser = clap::value_parser!(i64).range(1..=86400))]
    claim_lease_secs: i64,
    /// Attempts per triage job before it is marked failed.
    #[arg(long, env = "TW_TRIAGE_MAX_ATTEMPTS", default_value_t = 3)]
    triage_max_attempts: u32,
    /// Serve /metrics on this address (e.g. 127.0.0.1:9090) instead of the API's.
    #[arg(long, env = "TW_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// A file holding the bearer token /metrics then asks for (Prometheus:
    /// `authorization: {credentials_file: ...}`); or give the token in TW_METRICS_TOKEN. Without
    /// either, /metrics is open.
    #[arg(long, env = "TW_METRICS_TOKEN_FILE", value_name = "PATH")]
    metrics_token_file: Option<PathBuf>,
    /// Log records kept for `tw-cli logs` (in memory; the newest win), at most 200,000: a log
    /// query that matches nothing reads every one (about a millisecond per thousand).
    #[arg(long, env = "TW_LOG_RECORDS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=200_000))]
    log_records: u64,
    /// Bytes of log records kept on disk in DATA_DIR/logs (two rotating files).
    #[arg(long, env = "TW_LOG_MAX_BYTES", default_value_t = 32 * 1024 * 1024)]
    log_max_bytes: u64,
    /// Log lines on stderr: text (as `tw-cli logs` prints them) or json (one object per line, as in
    /// the log files).
    #[arg(long, env = "TW_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// A reverse proxy (address or CIDR range) whose X-Forwarded-For names the client, for rate
    /// limits, the audit log and log lines; repeat the flag or separate with commas. None by
    /// default: the TCP peer is the client.
    #[arg(long = "trusted-proxy", env = "TW_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_proxy)]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Failed signature verifications and wrong API keys a client address (an IPv6 /64) may make
    /// at once; past them, its intake and API requests are answered 429 rate_limited until
    /// failures are forgiven again at --auth-failure-per-minute. 0 disables the limit.
    #[arg(long, env = "TW_AUTH_FAILURE_BURST", default_value_t = tw_server::limits::DEFAULT_AUTH_FAILURE_BURST)]
    auth_failure_burst: u32,
    /// Failures a minute forgiven per client address (the refill of its budget). 0 disables the limit.
    #[arg(long, env = "TW_AUTH_FAILURE_PER_MINUTE", default_value_t = tw_server::limits::DEFAULT_AUTH_FAILURE_PER_MINUTE)]
    auth_failure_per_minute: u32,
    /// Playbook tests (POST /api/playbooks/NAME/test) one API key may run at once; past them, 429
    /// rate_limited. 0 disables the limit.
    #[arg(long, env = "TW_PLAYBOOK_TEST_BURST", default_value_t = tw_server::limits::DEFAULT_PLAYBOOK_TEST_BURST)]
    playbook_test_burst: u32,
    /// Playbook tests a minute per API key after the burst. 0 disables the limit.
    #[arg(long, env = "TW_PLAYBOOK_TEST_PER_MINUTE", default_value_t = tw_server::limits::DEFAULT_PLAYBOOK_TEST_PER_MINUTE)]
    playbook_test_per_minute: u32,
    /// Seconds a client has, from connecting (or from the first byte of a later request), to send
    /// complete request headers; a slower one is disconnected.
    #[arg(long, env = "TW_HEADER_TIMEOUT_SECS", default_value_t = tw_server::serve::DEFAULT_HEADER_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout_secs: u64,
    /// Seconds a request body has, from its headers, to arrive whole; a slower one is answered
    /// 408 request_timeout and the connection closed.
    #[arg(long, env = "TW_BODY_TIMEOUT_SECS", default_value_t = tw_server::serve::DEFAULT_BODY_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_timeout_secs: u64,
    /// Seconds a keep-alive connection may wait for its next request before it is closed.
    #[arg(long, env = "TW_IDLE_TIMEOUT_SECS", default_value_t = tw_server::serve::DEFAULT_IDLE_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=86400))]
    idle_timeout_secs: u64,
    /// Client connections open at once (default: 1024, or half the open-file limit when lower).
    /// At the cap, the connection idle the longest is closed to make room.
    #[arg(long, env = "TW_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: Option<u64>,
    /// Connections one client address (an IPv6 /64) may hold at once (default: an eighth of
    /// --max-connections, at least 8); one more is closed at accept. Connections from a
    /// --trusted-proxy are exempt, since they carry many clients.
    #[arg(long, env = "TW_MAX_CONNECTIONS_PER_CLIENT", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections_per_client: Option<u64>,
    /// Request body bytes held at once across all connections (each chunk of a body also counts
    /// 128 bytes); past it, requests are answered 503 unavailable with Retry-After instead of
    /// being read, and a body larger than the whole budget 413 payload_too_large. Keep it at
    /// least twice the largest max_body_bytes of a source.
    #[arg(long, env = "TW_MAX_BUFFERED_BODY_BYTES", default_value_t = tw_server::serve::DEFAULT_MAX_BUFFERED_BODY_BYTES, value_parser = clap::value_parser!(u64).range(65_536..=4_294_967_295))]
    max_buffered_body_bytes: u64,
    /// Seconds a stop (SIGTERM, Ctrl-C) waits for requests in flight and running triage jobs.
    #[arg(long, env = "TW_SHUTDOWN_GRACE_SECS", default_value_t = tw_server::DEFAULT_SHUTDOWN_GRACE.as_secs(), value_parser = clap::value_parser!(u64).range(0..=3600))]
    shutdown_grace_secs: u64,
    /// Delivery records (`tw-cli webhook events`) kept per source: the newest win; older ones are
    /// deleted in the background. Incidents are never deleted.
    #[arg(long, env = "TW_DELIVERIES_KEEP", default_value_t = tw_store::DEFAULT_DELIVERIES_KEEP, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    deliveries_keep: u64,
    /// Records of refused requests (bad signatures and the like, aggregate rows included) kept per
    /// source, apart from the verified deliveries above, so a sender without the secret cannot
    /// push real deliveries out.
    #[arg(long, env = "TW_DELIVERIES_KEEP_REFUSED", default_value_t = tw_store::DEFAULT_DELIVERIES_KEEP_REFUSED, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    deliveries_keep_refused: u64,
    /// Days a delivery record is kept at most; 0 keeps them regardless of age (--deliveries-keep
    /// still bounds them).
    #[arg(long, env = "TW_DELIVERIES_MAX_AGE_DAYS", default_value_t = tw_store::DEFAULT_DELIVERIES_MAX_AGE_DAYS, value_parser = clap::value_parser!(u32).range(0..=36_500))]
    deliveries_max_age_days: u32,
}

fn parse_proxy(s: &str) -> Result<ipnet::IpNet, String> {
    tw_server::client::TrustedProxies::parse_cidr(s)
}

pub async fn run(args: ServeArgs) -> Result<ExitCode> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Lines reach stderr in batches from a thread of their own; the guard writes the rest when
    // the server stops.
    let (stderr, _stderr_guard) = tw_server::logs::BatchedStderr::start(std::io::stderr()).context("cannot start the log writer")?;
    let format = match args.log_format {
        LogFormat::Json => tw_server::logs::LineFormat::Json,
        LogFormat::Text => tw_server::logs::LineFormat::Text,
    };
    let buffer = tw_server::logs::LogBuffer::new(usize::try_from(args.log_records).unwrap_or(usize::MAX));
    std::fs::create_dir_all(&args.store.data_dir).with_context(|| format!("cannot create data dir {}", args.store.data_dir.display()))?;
    let log_dir = args.store.data_dir.join("logs");
    buffer.persist_to(&log_dir, args.log_max_bytes).with_context(|| format!("cannot keep logs in {}", log_dir.display()))?;
    tracing_subscriber::registry().with(filter).with(tw_server::logs::BufferLayer::new(buffer.clone()).echo_to(stderr, format)).init();
    let mut cfg = args.store.server_config();
    cfg.log_buffer = Some(buffer.clone());
    cfg.listen = args.listen;
    cfg.webhook_config = args.config;
    cfg.queue_workers = args.queue_workers;
    cfg.max_inflight = args.max_inflight;
    cfg.playbooks_dir = args.playbooks_dir;
    cfg.metrics_listen = args.metrics_listen;
    cfg.metrics_token = tw_server::metrics::load_token(args.metrics_token_file.as_deref(), std::env::var("TW_METRICS_TOKEN").ok())
        .map_err(anyhow::Error::msg)?;
    cfg.intel_dir = args.intel_dir;
    if let Some(n) = args.triage_workers {
        cfg.triage_workers = n;
    }
    cfg.triage_max_attempts = args.triage_max_attempts;
    cfg.claim_lease_secs = args.claim_lease_secs;
    cfg.trusted_proxies = tw_server::client::TrustedProxies::new(args.trusted_proxies);
    cfg.limits = tw_server::limits::LimitsConfig {
        auth_failure_burst: args.auth_failure_burst,
        auth_failure_per_minute: args.auth_failure_per_minute,
        playbook_test_burst: args.playbook_test_burst,
        playbook_test_per_minute: args.playbook_test_per_minute,
        ..cfg.limits
    };
    cfg.connection_limits = tw_server::serve::ConnectionLimits {
        header_timeout: std::time::Duration::from_secs(args.header_timeout_secs),
        body_timeout: std::time::Duration::from_secs(args.body_timeout_secs),
        idle_timeout: std::time::Duration::from_secs(args.idle_timeout_secs),
        max_connections: args.max_connections.map_or(cfg.connection_limits.max_connections, |n| n as usize),
        max_connections_per_client: args.max_connections_per_client.map(|n| n as usize),
        max_buffered_body_bytes: args.max_buffered_body_bytes as usize,
    };
    cfg.shutdown_grace = std::time::Duration::from_secs(args.shutdown_grace_secs);
    cfg.deliveries_retention = tw_store::DeliveryRetention {
        keep_per_source: args.deliveries_keep,
        keep_refused_per_source: args.deliveries_keep_refused,
        max_age: (args.deliveries_max_age_days > 0).then(|| chrono::Duration::days(i64::from(args.deliveries_max_age_days))),
        ..cfg.deliveries_retention
    };
    // Registered before the server starts: its listener answers before `start` returns, and a
    // SIGTERM meanwhile must be a request to stop gracefully, not the default action that kills
    // the process with requests in flight (seen as a reset in the SIGTERM test under load).
    let stop = shutdown_signal();
    let server = tw_server::start(cfg).await?;
    println!("tw webhook intake listening on http://{}", server.addr);
    server.run_until(stop).await;
    buffer.close();
    Ok(ExitCode::SUCCESS)
}

/// Completes at SIGTERM or Ctrl-C. The handlers are registered when this is called, not when
/// the future is first polled.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate()).ok();
    let int = signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! { _ = wait(term) => {}, _ = wait(int) => {} }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
