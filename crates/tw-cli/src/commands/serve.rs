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
    /// Triage workers (default: one per core); 0 runs no triage in this process.
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
    /// Log records kept for `tw-cli logs` (in memory; the newest win).
    #[arg(long, env = "TW_LOG_RECORDS", default_value_t = 20_000)]
    log_records: usize,
    /// Bytes of log records kept on disk in DATA_DIR/logs (two rotating files).
    #[arg(long, env = "TW_LOG_MAX_BYTES", default_value_t = 32 * 1024 * 1024)]
    log_max_bytes: u64,
    /// Log format.
    #[arg(long, env = "TW_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// A reverse proxy (address or CIDR range) whose X-Forwarded-For names the client, for rate
    /// limits, the audit log and log lines; repeat the flag or separate with commas. None by
    /// default: the TCP peer is the client.
    #[arg(long = "trusted-proxy", env = "TW_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_proxy)]
    trusted_proxies: Vec<ipnet::IpNet>,
}

fn parse_proxy(s: &str) -> Result<ipnet::IpNet, String> {
    tw_server::client::TrustedProxies::parse_cidr(s)
}

pub async fn run(args: ServeArgs) -> Result<ExitCode> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (text, json) = match args.log_format {
        LogFormat::Json => (None, Some(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr))),
        LogFormat::Text => (Some(tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr)), None),
    };
    let buffer = tw_server::logs::LogBuffer::new(args.log_records);
    std::fs::create_dir_all(&args.store.data_dir).with_context(|| format!("cannot create data dir {}", args.store.data_dir.display()))?;
    let log_dir = args.store.data_dir.join("logs");
    buffer.persist_to(&log_dir, args.log_max_bytes).with_context(|| format!("cannot keep logs in {}", log_dir.display()))?;
    tracing_subscriber::registry().with(filter).with(text).with(json).with(tw_server::logs::BufferLayer(buffer.clone())).init();
    let mut cfg = args.store.server_config();
    cfg.log_buffer = Some(buffer.clone());
    cfg.listen = args.listen;
    cfg.webhook_config = args.config;
    cfg.queue_workers = args.queue_workers;
    cfg.max_inflight = args.max_inflight;
    cfg.playbooks_dir = args.playbooks_dir;
    cfg.metrics_listen = args.metrics_listen;
    cfg.intel_dir = args.intel_dir;
    if let Some(n) = args.triage_workers {
        cfg.triage_workers = n;
    }
    cfg.triage_max_attempts = args.triage_max_attempts;
    cfg.claim_lease_secs = args.claim_lease_secs;
    cfg.trusted_proxies = tw_server::client::TrustedProxies::new(args.trusted_proxies);
    let server = tw_server::start(cfg).await?;
    println!("tw webhook intake listening on http://{}", server.addr);
    server.run_until(shutdown_signal()).await;
    buffer.close();
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
