//! `tw-cli bench`: the intake's own benchmark.
//!
//! It starts the real server as a child process (SQLite in a temp dir, or a fresh PostgreSQL
//! database), registers a source, and sends it freshly signed deliveries over keep-alive
//! connections; then it checks that every acknowledged delivery is an incident in the store. The
//! same load then goes to the floor, a minimal responder in the bench itself (HTTP, HMAC check,
//! JSON parse), so the report says how much of the machine's bare capacity the product reaches.

mod database;
mod floor;
mod load;
mod payloads;
mod product;
mod progress;
mod report;
mod servers;

use super::Ctx;
use crate::output::{self, Output};
use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use database::BenchDatabase;
use load::Amount;
use payloads::{AlertIds, PayloadFormat, Payloads};
use report::Report;
use serde_json::{Value, json};
use servers::Pinning;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The source the bench registers on the server it starts.
const SOURCE: &str = "bench";
/// Its secret, and the floor's: a throwaway server needs no secret secret.
const SECRET: &str = "tw-bench-secret-5f2c9e61a8d04b37";
/// Requests when neither --requests nor --duration is given.
const DEFAULT_REQUESTS: u64 = 20_000;
/// How long a started server may take to answer its health check (PostgreSQL migrations
/// included).
const READY_WITHIN: Duration = Duration::from_secs(120);
/// A backlog (queued events, triage jobs) that does not shrink for this long has stalled.
const STALLED_AFTER: Duration = Duration::from_secs(60);
/// How often a draining backlog is looked at; the triage rate's end is this exact.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// `tw-cli bench`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  tw-cli bench --pin --concurrency 64 --requests 50000
  tw-cli bench --format mixed --payload-bytes 16384 --duration 30s
  tw-cli bench --auto-triage --mode async --requests 10000
  tw-cli bench --database-url postgres://postgres@127.0.0.1:5432/postgres
  tw-cli bench --url http://10.0.0.5:8080 --source edr --secret \"$EDR_SECRET\" --api-key \"$TW_API_KEY\"

Exits 1 when any request failed (non-2xx or no answer) or when the incidents in the store are not
exactly the deliveries acknowledged with a 2xx.")]
pub struct BenchArgs {
    /// Connections kept open at once; each sends its next delivery as soon as the previous answer
    /// has been read.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// Deliveries to send [default: 20000, unless --duration is given].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000), conflicts_with = "duration")]
    requests: Option<u64>,
    /// Send for this long instead: 30s, 2m, or plain seconds.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    duration: Option<Duration>,
    /// The vendor format of the alerts; mixed sends the four in turn.
    #[arg(long, value_enum, default_value = "generic")]
    format: PayloadFormat,
    /// Body size in bytes, reached with a filler field (a body never shrinks below the bare
    /// alert, 300 to 400 bytes).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    payload_bytes: u64,
    /// How the unique alert ids are spelled: sequential (`<run>-<n>`, each new dedupe key next to
    /// the last in the store's index) or random (no order, as vendors' GUIDs and hashes: each new
    /// key anywhere in the index, which a large store feels).
    #[arg(long, value_enum, default_value = "sequential")]
    alert_ids: AlertIds,
    /// The source's mode. sync: each incident is committed before its 201; async: the event is
    /// queued (202) and a worker makes the incident (the check waits for the queue to drain).
    #[arg(long, value_parser = ["sync", "async"], default_value = "sync")]
    mode: String,
    /// Register the source with auto-triage (playbook phishing_triage), wait for the triage
    /// backlog to drain, and report the triage rate.
    #[arg(long)]
    auto_triage: bool,
    /// Run the servers on one CPU and the load generator on another (the first two this process
    /// may use).
    #[arg(long)]
    pin: bool,
    /// Skip the floor run (and the ratio).
    #[arg(long)]
    no_floor: bool,
    /// Run the server on PostgreSQL: a database tw_bench_<pid> is created on this URL's server
    /// and dropped at the end [default: SQLite in a temp dir; TMPDIR picks its disk].
    #[arg(long, value_name = "postgres://USER@HOST:5432/DB")]
    database_url: Option<String>,
    /// Keep the temp dir (data and server logs) and the PostgreSQL database, and say where.
    #[arg(long)]
    keep: bool,
    /// Address for the server the bench starts [default: a free port on 127.0.0.1].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Load a running server instead of starting one: the name of a source registered there. Give
    /// --url, and --api-key (any scope) so the incidents can be counted.
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
    /// The HMAC secret of --source.
    #[arg(long, value_name = "SECRET")]
    secret: Option<String>,
    /// Print the report as one JSON object (the same as -o json).
    #[arg(long)]
    json: bool,
    /// Serve the floor responder on --listen with --secret (the bench starts it).
    #[arg(long, hide = true)]
    floor_serve: bool,
}

/// Parses `30s`, `2m`, `1.5` (seconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.strip_suffix("ms") {
        Some(n) => (n, 0.001),
        None => match s.strip_suffix('s') {
            Some(n) => (n, 1.0),
            None => match s.strip_suffix('m') {
                Some(n) => (n, 60.0),
                None => (s, 1.0),
            },
        },
    };
    let secs = num.trim().parse::<f64>().map(|n| n * unit).map_err(|_| format!("'{s}' is not a duration (e.g. 30s, 2m, 10)"))?;
    if !(0.1..=86_400.0).contains(&secs) {
        return Err(format!("'{s}': give 0.1 s to 24 h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The server the product run loads.
enum Server {
    /// One the bench starts, on `database_url` (PostgreSQL) or SQLite in its temp dir.
    Started { database_url: Option<String>, listen: Option<SocketAddr> },
    /// One already running.
    Running { url: String, source: String, secret: String, api_key: Option<String> },
}

/// The checked settings of a run.
struct Plan {
    concurrency: u32,
    amount: Amount,
    format: PayloadFormat,
    payload_bytes: usize,
    alert_ids: AlertIds,
    mode: String,
    auto_triage: bool,
    pin: bool,
    floor: bool,
    keep: bool,
    json: bool,
    server: Server,
}

impl Plan {
    fn new(ctx: &Ctx, url_given: bool, a: BenchArgs) -> Result<Plan> {
        let server = match (a.source, a.secret) {
            (Some(source), Some(secret)) => {
                for (given, flag) in [
                    (a.database_url.is_some(), "--database-url"),
                    (a.listen.is_some(), "--listen"),
                    (a.keep, "--keep"),
                    (a.auto_triage, "--auto-triage"),
                    (a.mode != "sync", "--mode"),
                ] {
                    if given {
                        bail!("{flag} sets up the server the bench starts; with --source the bench loads a running one as it is");
                    }
                }
                Server::Running { url: ctx.url.clone(), source, secret, api_key: ctx.api_key.clone() }
            }
            (Some(_), None) | (None, Some(_)) => bail!("--source and --secret go together (a source registered on --url, and its secret)"),
            (None, None) if url_given => {
                bail!(
                    "--url loads a running server: give --source and --secret of a source registered there (or leave --url out to start one)"
                )
            }
            (None, None) => {
                if let Some(url) = &a.database_url
                    && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
                {
                    bail!("--database-url takes a postgres:// URL (SQLite is the default, in a temp dir; TMPDIR picks its disk)");
                }
                Server::Started { database_url: a.database_url, listen: a.listen }
            }
        };
        let amount = match (a.requests, a.duration) {
            (_, Some(d)) => Amount::For(d),
            (Some(n), None) => Amount::Requests(n),
            (None, None) => Amount::Requests(DEFAULT_REQUESTS),
        };
        Ok(Plan {
            concurrency: a.concurrency,
            amount,
            format: a.format,
            payload_bytes: usize::try_from(a.payload_bytes)?,
            alert_ids: a.alert_ids,
            mode: a.mode,
            auto_triage: a.auto_triage,
            pin: a.pin,
            floor: !a.no_floor,
            keep: a.keep,
            json: a.json || ctx.output == Output::Json,
            server,
        })
    }
}

/// Runs `tw-cli bench` (or, with the hidden `--floor-serve`, the floor responder). Builds its own
/// runtime, after pinning the process when asked, so every runtime thread inherits the pin.
pub fn run(ctx: &Ctx, url_given: bool, args: BenchArgs) -> Result<ExitCode> {
    if args.floor_serve {
        let (Some(listen), Some(secret)) = (args.listen, args.secret) else { bail!("--floor-serve needs --listen and --secret") };
        return floor::serve(listen, secret);
    }
    let plan = Plan::new(ctx, url_given, args)?;
    let pinning = if plan.pin {
        match servers::plan_pinning() {
            Ok(p) => {
                servers::pin_current_thread(p.bench_cpu)?;
                Some(p)
            }
            Err(why) => {
                eprintln!("--pin: {why}; running unpinned");
                None
            }
        }
    } else {
        None
    };
    crate::runtime()?.block_on(async {
        let tmp = tempfile::Builder::new().prefix("tw-bench-").tempdir().context("cannot create a temp dir")?;
        let database = match &plan.server {
            Server::Started { database_url: Some(url), .. } => Some(BenchDatabase::create(url).await?),
            _ => None,
        };
        let result = tokio::select! {
            r = bench(&plan, pinning, tmp.path(), database.as_ref()) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        };
        if let Some(db) = database {
            if plan.keep {
                eprintln!("kept the PostgreSQL database {}", tw_store::postgres::redact_url(&db.url));
            } else if let Err(e) = db.drop_database().await {
                eprintln!("warning: {e:#}");
            }
        }
        if plan.keep {
            eprintln!("kept the temp dir {} (server data and logs)", tmp.keep().display());
        }
        result
    })
}

/// The product run, then the floor run, then the report.
async fn bench(plan: &Plan, pinning: Option<Pinning>, tmp: &Path, database: Option<&BenchDatabase>) -> Result<ExitCode> {
    let run_id = format!("bench-{:x}", chrono::Utc::now().timestamp_millis());
    let payloads = Arc::new(Payloads::new(plan.format, plan.payload_bytes, &run_id, plan.alert_ids));
    let server_cpu = pinning.map(|p| p.server_cpu);
    let product::ProductRun { run: product, incidents, triage, url } = match &plan.server {
        Server::Started { listen, .. } => product::started(plan, *listen, server_cpu, tmp, database, payloads.clone()).await?,
        Server::Running { url, source, secret, api_key } => {
            product::running(plan, url, source, secret, api_key.clone(), payloads.clone()).await?
        }
    };
    let floor = if plan.floor { Some(floor::run(plan, server_cpu, tmp, payloads.clone()).await?) } else { None };
    let report = Report {
        settings: settings_json(plan, pinning, &payloads, &url),
        headline: headline(plan, pinning, &payloads, &url),
        product,
        floor,
        incidents,
        triage,
    };
    if plan.json {
        output::json(&report.to_json());
    } else {
        report.print_table();
    }
    let failures = report.failures();
    for f in &failures {
        eprintln!("bench failed: {f}");
    }
    Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn engine(plan: &Plan) -> Option<&'static str> {
    match &plan.server {
        Server::Started { database_url: Some(_), .. } => Some("postgresql"),
        Server::Started { database_url: None, .. } => Some("sqlite"),
        Server::Running { .. } => None,
    }
}

fn settings_json(plan: &Plan, pinning: Option<Pinning>, payloads: &Payloads, url: &str) -> Value {
    let (min, max) = payloads.body_bytes();
    json!({
        "concurrency": plan.concurrency,
        "requests": match plan.amount { Amount::Requests(n) => Some(n), Amount::For(_) => None },
        "duration_secs": match plan.amount { Amount::For(d) => Some(d.as_secs_f64()), Amount::Requests(_) => None },
        "format": plan.format.as_str(),
        "payload_bytes": plan.payload_bytes,
        "alert_ids": plan.alert_ids.as_str(),
        "body_bytes": {"min": min, "max": max},
        // A running server's source is loaded as it is, whatever its mode.
        "mode": engine(plan).map(|_| plan.mode.as_str()),
        "auto_triage": plan.auto_triage,
        "pinned": pinning.map(|p| json!({"server_cpu": p.server_cpu, "bench_cpu": p.bench_cpu})),
        "server": if engine(plan).is_some() { "started" } else { "running" },
        "engine": engine(plan),
        "url": url,
    })
}

fn headline(plan: &Plan, pinning: Option<Pinning>, payloads: &Payloads, url: &str) -> String {
    let amount = match plan.amount {
        Amount::Requests(n) => format!("{n} requests"),
        Amount::For(d) => format!("{:.1} s of requests", d.as_secs_f64()),
    };
    let (min, max) = payloads.body_bytes();
    let bytes = if min == max { format!("{min} B") } else { format!("{min}-{max} B") };
    let server = match engine(plan) {
        Some("postgresql") => "tw-cli serve on a fresh PostgreSQL database".to_string(),
        Some(_) => "tw-cli serve on SQLite in a temp dir".to_string(),
        None => format!("the server at {url}"),
    };
    let pin = match pinning {
        Some(p) => format!("servers pinned to CPU {}, load generator to CPU {}", p.server_cpu, p.bench_cpu),
        None => "unpinned".into(),
    };
    let source = match &plan.server {
        Server::Started { .. } => {
            format!("to a {} source{}", plan.mode, if plan.auto_triage { " with auto-triage" } else { "" })
        }
        Server::Running { source, .. } => format!("to source '{source}'"),
    };
    format!(
        "tw-cli bench: {amount} over {} connections, {} alerts of {bytes} with {} ids {source}; {server}; {pin}",
        plan.concurrency,
        plan.format.as_str(),
        plan.alert_ids.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("ten").is_err());
    }
}
