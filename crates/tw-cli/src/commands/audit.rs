//! `tw-cli audit list`: the server's audit log of administrative changes (admin key).

use super::Ctx;
use crate::client::with_query;
use crate::output::{self, Output, cell};
use anyhow::Result;
use clap::Subcommand;
use std::process::ExitCode;
use tw_server::api::audit::AuditList;
use tw_store::AuditActor;

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
    let params = [("per_page", Some(limit.to_string())), ("action", action), ("target", target), ("since", since), ("cursor", cursor)];
    let v: AuditList = ctx.client()?.get(&with_query("/api/audit", &params)).await?;
    match ctx.output {
        Output::Json => output::json(&v),
        Output::Table => {
            output::table_of(&["TIME", "ACTION", "TARGET", "ACTOR", "ADDRESS", "REQUEST"], &v.data, |r| {
                vec![cell(&r.at), r.action.clone(), r.target.clone(), actor(&r.actor), cell(&r.client_ip), cell(&r.request_id)]
            });
            if let Some(next) = &v.meta.next_cursor {
                eprintln!("More records: add --cursor {next}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An actor as one cell: `ops (tw_1a2b3c4d)`, `cli:alice`, `config file /etc/tw/webhook_config.yaml`.
fn actor(a: &AuditActor) -> String {
    match a {
        AuditActor::ApiKey { name, key_prefix } => format!("{name} ({key_prefix})"),
        AuditActor::Cli { user } => format!("cli:{user}"),
        AuditActor::ConfigFile { path } => format!("config file {path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_read_as_one_cell() {
        let api_key = AuditActor::ApiKey { name: "ops".into(), key_prefix: "tw_1a2b3c4d".into() };
        assert_eq!(actor(&api_key), "ops (tw_1a2b3c4d)");
        assert_eq!(actor(&AuditActor::Cli { user: "alice".into() }), "cli:alice");
        assert_eq!(actor(&AuditActor::ConfigFile { path: "/etc/c.yaml".into() }), "config file /etc/c.yaml");
    }
}
