//! `tw-cli logs`: the server's retained log lines, filtered; `--follow` streams new ones.

use super::{Ctx, seg};
use crate::output::Output;
use anyhow::Result;
use clap::Args;
use reqwest::Method;
use serde_json::Value;
use std::process::ExitCode;
use tw_server::logs::LogRecord;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// A component (webhook, triage, store, api, auth) or text to search for.
    #[arg(long)]
    filter: Option<String>,
    /// How many of the most recent matching lines.
    #[arg(long, default_value_t = 100)]
    tail: usize,
    /// Minimum level: trace, debug, info, warn, error.
    #[arg(long)]
    level: Option<String>,
    /// Only lines newer than this: 30s, 10m, 2h, 1d.
    #[arg(long)]
    since: Option<String>,
    /// Only lines about this source.
    #[arg(long)]
    source: Option<String>,
    /// Keep printing new lines as they come (Ctrl-C to stop).
    #[arg(long, short = 'f')]
    follow: bool,
}

pub async fn run(ctx: &Ctx, a: LogsArgs) -> Result<ExitCode> {
    let mut q = vec![format!("tail={}", a.tail)];
    for (k, v) in [("filter", &a.filter), ("level", &a.level), ("since", &a.since), ("source", &a.source)] {
        if let Some(v) = v {
            q.push(format!("{k}={}", seg(v)));
        }
    }
    let client = ctx.client()?;
    if !a.follow {
        let (_, v) = client.call(Method::GET, &format!("/api/logs?{}", q.join("&")), None).await?;
        for r in v["data"].as_array().into_iter().flatten() {
            print_record(ctx, r);
        }
        return Ok(ExitCode::SUCCESS);
    }
    q.push("follow=true".into());
    let mut resp = client.stream(&format!("/api/logs?{}", q.join("&"))).await?;
    let mut pending = String::new();
    while let Some(chunk) = resp.chunk().await? {
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = pending.find('\n') {
            let line = pending[..i].trim_end_matches('\r').to_string();
            pending.drain(..=i);
            if let Some(data) = line.strip_prefix("data:")
                && let Ok(v) = serde_json::from_str::<Value>(data.trim_start()) {
                    print_record(ctx, &v);
                }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_record(ctx: &Ctx, v: &Value) {
    match ctx.output {
        Output::Json => println!("{v}"),
        Output::Table => match serde_json::from_value::<LogRecord>(v.clone()) {
            Ok(r) => println!("{}", r.to_line()),
            Err(_) => println!("{v}"),
        },
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
