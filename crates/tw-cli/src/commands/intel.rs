//! `tw-cli intel ...`: the local threat intelligence lists.

use super::{Ctx, seg};
use crate::output::{self, Output, cell};
use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;
use std::process::ExitCode;
use tw_server::api::intel::{IntelAdded, IntelSummary};

#[derive(Debug, Subcommand)]
pub enum IntelCommand {
    /// Indicator counts per list.
    List,
    /// Add indicators to a list (bad-domains, bad-ips, bad-hashes, bad-urls, protected-domains), or
    /// set hosts' criticality with `--list assets FS-02=critical WS-7=low`.
    Add {
        #[arg(long)]
        list: String,
        /// The indicators.
        #[arg(required = true)]
        indicators: Vec<String>,
    },
}

pub async fn run(ctx: &Ctx, cmd: IntelCommand) -> Result<ExitCode> {
    let client = ctx.client()?;
    match cmd {
        IntelCommand::List => {
            let v: IntelSummary = client.get("/api/intel").await?;
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => {
                    // Listed by name, as the API writes them.
                    let counts = serde_json::to_value(&v.counts)?.as_object().cloned().unwrap_or_default();
                    output::table_of(&["LIST", "ENTRIES"], &counts, |(k, n)| vec![k.clone(), cell(n)]);
                    println!("from {}", v.dir);
                }
            }
        }
        IntelCommand::Add { list, indicators } => {
            let v: IntelAdded =
                client.send_json(Method::POST, &format!("/api/intel/{}", seg(&list)), Some(&json!({"indicators": indicators}))).await?;
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => {
                    let counts = serde_json::to_value(&v.counts)?;
                    println!("Added {} new indicator(s) to {list} ({} in the list now).", v.added, cell(&counts[&list]))
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
