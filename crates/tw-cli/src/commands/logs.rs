//! `tw-cli logs`: the server's retained log lines, filtered; `--follow` streams new ones.

use super::{Ctx, seg};
use crate::output::Output;
use anyhow::Result;
use clap::Args;
use std::process::ExitCode;
use tw_server::api::logs::LogList;
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
    /// Keep printing new lines as they come (Ctrl-C to stop). The server ends a stream after an
    /// hour (this reconnects, without repeating lines) or when the API key is revoked or expires
    /// (this stops with an error).
    #[arg(long, short = 'f')]
    follow: bool,
}

pub async fn run(ctx: &Ctx, a: LogsArgs) -> Result<ExitCode> {
    let mut q = vec![format!("tail={}", a.tail)];
    // The API spells levels in lowercase; `--level WARN` means the same.
    let level = a.level.map(|l| l.to_ascii_lowercase());
    for (k, v) in [("filter", &a.filter), ("level", &level), ("since", &a.since), ("source", &a.source)] {
        if let Some(v) = v {
            q.push(format!("{k}={}", seg(v)));
        }
    }
    let client = ctx.client()?;
    if !a.follow {
        let v: LogList = client.get(&format!("/api/logs?{}", q.join("&"))).await?;
        for r in &v.data {
            print_record(ctx, r);
        }
        return Ok(ExitCode::SUCCESS);
    }
    q.push("follow=true".into());
    loop {
        match follow(ctx, &client, &q).await? {
            Some("max_lifetime") => {
                eprintln!("the server ends a log stream after an hour; reconnecting");
                // Only new lines after the first stream: its tail was shown already.
                q.retain(|p| !p.starts_with("tail=") && !p.starts_with("since="));
                q.push("tail=0".into());
            }
            Some("key_refused") => {
                anyhow::bail!("the server ended the log stream: this API key is no longer accepted (revoked or expired)")
            }
            Some("stopping") => {
                eprintln!("the server closed the log stream (it is stopping)");
                return Ok(ExitCode::SUCCESS);
            }
            // A network cut, a proxy's timeout, or a reason this build does not know.
            other => anyhow::bail!("the log stream ended unexpectedly{}", other.map(|r| format!(" ({r})")).unwrap_or_default()),
        }
    }
}

/// Prints one log stream's records until it ends; the reason the server gave in its `end` event,
/// if any.
async fn follow(ctx: &Ctx, client: &crate::client::Client, q: &[String]) -> Result<Option<&'static str>> {
    let mut resp = client.stream(&format!("/api/logs?{}", q.join("&"))).await?;
    let mut pending = String::new();
    let mut event: Option<String> = None;
    while let Some(chunk) = resp.chunk().await? {
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = pending.find('\n') {
            let line = pending[..i].trim_end_matches('\r').to_string();
            pending.drain(..=i);
            if line.is_empty() {
                event = None;
            } else if let Some(name) = line.strip_prefix("event:") {
                event = Some(name.trim().to_string());
            } else if let Some(data) = line.strip_prefix("data:") {
                let data = data.trim_start();
                if event.as_deref() == Some("end") {
                    return Ok(["max_lifetime", "key_refused", "stopping"].into_iter().find(|r| *r == data));
                }
                match serde_json::from_str::<LogRecord>(data) {
                    Ok(r) => print_record(ctx, &r),
                    Err(_) => println!("{data}"),
                }
            }
        }
    }
    Ok(None)
}

fn print_record(ctx: &Ctx, r: &LogRecord) {
    match ctx.output {
        Output::Json => println!("{}", serde_json::to_string(r).unwrap_or_default()),
        Output::Table => println!("{}", r.to_line()),
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
