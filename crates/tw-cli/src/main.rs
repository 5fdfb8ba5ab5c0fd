//! `tw-cli`: runs the webhook intake server (`serve`) and operates it through its API.

/// mimalloc: the intake allocates a few small buffers per delivery on one thread and frees them on
/// another; under load glibc's malloc spent about a tenth of the CPU (perf), mimalloc less. Called
/// as `std` calls `malloc` ([`alloc`]).
#[global_allocator]
static GLOBAL: alloc::Mimalloc = alloc::Mimalloc;

mod alloc;
mod client;
mod commands;
mod output;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use output::Output;
use std::path::PathBuf;

/// The webhook intake of the triage platform: receive signed alerts from security tools, turn each
/// into an incident, and operate it all from here.
#[derive(Debug, Parser)]
#[command(name = "tw-cli", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// The server's base URL.
    #[arg(long, env = "TW_URL", default_value = "http://localhost:8080", global = true)]
    url: String,
    /// API key (tw_...) for the server's API.
    #[arg(long, env = "TW_API_KEY", global = true, hide_env_values = true)]
    api_key: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table", global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<commands::serve::ServeArgs>),
    /// Manage API keys (opens the store directly; run it where the server's data lives).
    #[command(subcommand, name = "api-key")]
    ApiKey(commands::api_key::ApiKeyCommand),
    /// Read the audit log of administrative changes (admin key).
    #[command(subcommand)]
    Audit(commands::audit::AuditCommand),
    /// Register and manage webhook sources.
    #[command(subcommand)]
    Webhook(commands::webhook::WebhookCommand),
    /// Read incidents.
    #[command(subcommand)]
    Incident(commands::incident::IncidentCommand),
    /// Run a playbook on an incident.
    #[command(subcommand)]
    Triage(commands::triage::TriageCommand),
    /// Manage and test playbooks.
    #[command(subcommand)]
    Playbook(commands::playbook::PlaybookCommand),
    /// Manage local threat intelligence lists.
    #[command(subcommand)]
    Intel(commands::intel::IntelCommand),
    /// Migrate the database or show its schema version (opens the store directly).
    #[command(subcommand)]
    Db(commands::db::DbCommand),
    /// Show the server's recent log lines (admin key).
    Logs(commands::logs::LogsArgs),
    /// Show the state of a queued (async) event.
    Queue {
        /// The queue id from a 202 response (queue-...).
        queue_id: String,
    },
    /// List accepted events that could not be normalized.
    DeadLetters {
        /// Only this source's.
        #[arg(long)]
        source: Option<String>,
    },
    /// Measure the intake: a real server under signed load, checked for lost incidents, next to
    /// a minimal HMAC + JSON responder on the same machine (the floor).
    Bench(commands::bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    // `bench` targets a running server only when --url is typed, not when TW_URL or the default
    // supplies it.
    let url_given = matches.value_source("url") == Some(clap::parser::ValueSource::CommandLine);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let ctx = commands::Ctx { url: cli.url.clone(), api_key: cli.api_key.clone(), output: cli.output };
    let result = match cli.command {
        // Builds its own runtime: `--pin` must pin the process before any runtime thread exists.
        Command::Bench(args) => commands::bench::run(&ctx, url_given, args),
        command => runtime().map_err(anyhow::Error::from).and_then(|rt| rt.block_on(dispatch(&ctx, command))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The runtime every command runs on, `serve` included: tokio's multi-threaded one with a worker
/// per core (what `#[tokio::main]` builds).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().on_thread_park(release_memory).build()
}

// mimalloc's own entry point (linked in through the `mimalloc` crate).
unsafe extern "C" {
    fn mi_collect(force: bool);
}

/// Gives the memory this thread freed back to the system when the thread goes idle, at most once
/// a second. mimalloc frees a thread's empty pages only when that thread calls into it again: after
/// a connection storm (300 stalled 1 MiB bodies), the idle server kept its peak of 118 MB for as
/// long as it stayed idle.
fn release_memory() {
    use std::cell::Cell;
    use std::time::{Duration, Instant};
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    let due = LAST.with(|last| {
        let due = last.get().is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1));
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        // SAFETY: mi_collect takes no pointers; it only returns this thread's free memory.
        unsafe { mi_collect(true) };
    }
}

async fn dispatch(ctx: &commands::Ctx, command: Command) -> anyhow::Result<std::process::ExitCode> {
    match command {
        Command::Serve(args) => commands::serve::run(*args).await,
        Command::ApiKey(cmd) => commands::api_key::run(ctx, cmd).await,
        Command::Audit(cmd) => commands::audit::run(ctx, cmd).await,
        Command::Webhook(cmd) => commands::webhook::run(ctx, cmd).await,
        Command::Incident(cmd) => commands::incident::run(ctx, cmd).await,
        Command::Triage(cmd) => commands::triage::run(ctx, cmd).await,
        Command::Playbook(cmd) => commands::playbook::run(ctx, cmd).await,
        Command::Intel(cmd) => commands::intel::run(ctx, cmd).await,
        Command::Logs(args) => commands::logs::run(ctx, args).await,
        Command::Db(cmd) => commands::db::run(ctx, cmd).await,
        Command::Queue { queue_id } => commands::queue_get(ctx, &queue_id).await,
        Command::DeadLetters { source } => commands::dead_letters(ctx, source.as_deref()).await,
        Command::Bench(_) => unreachable!("bench runs outside the shared runtime"),
    }
}

/// The default data dir.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("./tw-data")
}
