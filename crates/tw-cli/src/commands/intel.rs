//! `tw-cli intel ...`: the local threat intelligence lists.

use super::{Ctx, seg};
use crate::output::{self, Output, cell};
use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;
use std::process::ExitCode;

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
            let (_, v) = client.call(Method::GET, "/api/intel", None).await?;
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => {
                    let counts = v["counts"].as_object().cloned().unwrap_or_default();
                    let rows: Vec<Vec<String>> = counts.iter().map(|(k, n)| vec![k.clone(), cell(n)]).collect();
                    output::table(&["LIST", "ENTRIES"], &rows);
                    println!("from {}", cell(&v["dir"]));
                }
            }
        }
        IntelCommand::Add { list, indicators } => {
            let (_, v) = client.call(Method::POST, &format!("/api/intel/{}", seg(&list)), Some(&json!({"indicators": indicators}))).await?;
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => {
                    println!("Added {} new indicator(s) to {list} ({} in the list now).", cell(&v["added"]), cell(&v["counts"][&list]))
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
