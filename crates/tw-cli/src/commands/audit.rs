//! `tw-cli audit list`: the server's audit log of administrative changes (admin key).

use super::{Ctx, seg};
use crate::output::{self, Output, cell};
use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Administrative changes, newest first: who, from where, what, on what.
    List {
        /// Only this action (source.create) or family of actions (source).
        #[arg(long)]
        action: Option<String>,
        /// Only changes to this target (a source or playbook name, a key prefix, an intel list).
        #[arg(long)]
        target: Option<String>,
        /// Only changes since this: a duration back from now (30m, 12h, 7d) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// How many records (1 to 200).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=200))]
        limit: u32,
        /// Where to continue: the cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
    },
}

/// Runs an `audit` command.
pub async fn run(ctx: &Ctx, cmd: AuditCommand) -> Result<ExitCode> {
    let AuditCommand::List { action, target, since, limit, cursor } = cmd;
    let mut path = format!("/api/audit?per_page={limit}");
    for (k, v) in [("action", &action), ("target", &target), ("since", &since), ("cursor", &cursor)] {
        if let Some(v) = v {
            path.push_str(&format!("&{k}={}", seg(v)));
        }
    }
    let (_, v) = ctx.client()?.call(Method::GET, &path, None).await?;
    match ctx.output {
        Output::Json => output::json(&v),
        Output::Table => {
            let rows = super::rows_of(&v["data"], |r| {
                vec![
                    cell(&r["at"]),
                    cell(&r["action"]),
                    cell(&r["target"]),
                    actor(&r["actor"]),
                    cell(&r["client_ip"]),
                    cell(&r["request_id"]),
                ]
            });
            output::table(&["TIME", "ACTION", "TARGET", "ACTOR", "ADDRESS", "REQUEST"], &rows);
            if let Some(next) = v.pointer("/meta/next_cursor").and_then(Value::as_str) {
                eprintln!("More records: add --cursor {next}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An actor as one cell: `ops (tw_1a2b3c4d)`, `cli:alice`, `config file /etc/tw/webhook_config.yaml`.
fn actor(a: &Value) -> String {
    let s = |k: &str| a[k].as_str().unwrap_or("-").to_string();
    match a["kind"].as_str() {
        Some("api_key") => format!("{} ({})", s("name"), s("key_prefix")),
        Some("cli") => format!("cli:{}", s("user")),
        Some("config_file") => format!("config file {}", s("path")),
        _ => cell(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actors_read_as_one_cell() {
        assert_eq!(actor(&json!({"kind": "api_key", "name": "ops", "key_prefix": "tw_1a2b3c4d"})), "ops (tw_1a2b3c4d)");
        assert_eq!(actor(&json!({"kind": "cli", "user": "alice"})), "cli:alice");
        assert_eq!(actor(&json!({"kind": "config_file", "path": "/etc/c.yaml"})), "config file /etc/c.yaml");
    }
}
