//! `tw-cli db migrate` and `tw-cli db status`: for operators who migrate the database separately
//! from starting the servers (the servers also migrate at start-up).

use super::Ctx;
use super::serve::StoreArgs;
use crate::output::{self, Output};
use anyhow::Result;
use clap::Subcommand;
use serde_json::json;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply the migrations this build has and the database lacks.
    Migrate {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show the database's schema version and this build's.
    Status {
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub async fn run(ctx: &Ctx, cmd: DbCommand) -> Result<ExitCode> {
    match cmd {
        DbCommand::Migrate { store } => {
            let cfg = store.server_config();
            let url = cfg.database()?;
            let applied = tw_store::migrate(&url, &cfg.db).await?;
            let status = tw_store::migration_status(&url, &cfg.db).await?;
            match ctx.output {
                Output::Json => output::json(&json!({"database": url.to_string(), "applied": applied, "version": status.current()})),
                Output::Table if applied.is_empty() => println!("{url}: already at schema version {}", status.current()),
                Output::Table => println!(
                    "{url}: applied {} migration(s) ({}); now at schema version {}",
                    applied.len(),
                    applied.iter().map(|v| format!("v{v}")).collect::<Vec<_>>().join(", "),
                    status.current()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Status { store } => {
            let cfg = store.server_config();
            let url = cfg.database()?;
            let status = tw_store::migration_status(&url, &cfg.db).await?;
            let state = match status.current().cmp(&status.latest) {
                std::cmp::Ordering::Equal => "up to date",
                std::cmp::Ordering::Less => "behind: run `tw-cli db migrate` (or start the server)",
                std::cmp::Ordering::Greater => "newer than this build: upgrade tw-cli",
            };
            match ctx.output {
                Output::Json => output::json(&json!({
                    "database": url.to_string(),
                    "version": status.current(),
                    "latest": status.latest,
                    "state": state,
                    "applied": status.applied.iter().map(|(v, at)| json!({"version": v, "applied_at": at})).collect::<Vec<_>>(),
                })),
                Output::Table => {
                    println!("database:        {url}");
                    println!("schema version:  {} ({state})", status.current());
                    println!("this build:      {}", status.latest);
                    for (v, at) in &status.applied {
                        println!("  v{v} applied {}", at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                    }
                }
            }
            // Exit 1 when the database needs attention, so scripts can check it.
            Ok(if status.current() == status.latest { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}
