//! `tw-cli incident list|get`.

use super::{Ctx, seg};
use crate::client::with_query;
use crate::output::{self, Output, cell};
use anyhow::Result;
use clap::Subcommand;
use clap::builder::TypedValueParser;
use std::process::ExitCode;
use tw_server::api::incidents::{IncidentDetail, IncidentList};
use tw_store::IncidentOrder;

/// `--per-page` when not given (the API's default too).
const DEFAULT_PER_PAGE: u32 = 50;

#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// List incidents, newest first by number (or as --sort says).
    ///
    /// The table ends with the command for the next page (`--cursor`); `-o json` has it in
    /// `meta.next_cursor`.
    List {
        #[arg(long)]
        source: Option<String>,
        /// critical, high, medium, low or info.
        #[arg(long)]
        severity: Option<String>,
        /// open, triaged or closed.
        #[arg(long)]
        status: Option<String>,
        /// newest (the default) or oldest first by number, or severity: most severe first, newest
        /// first within a severity (the API's `sort`). A --cursor must come with the --sort of the
        /// page that printed it (the next-page command keeps it).
        #[arg(long, value_parser = sort_parser())]
        sort: Option<IncidentOrder>,
        /// Page number (default 1). Deep pages cost the server more; --cursor does not.
        #[arg(long, conflicts_with = "cursor")]
        page: Option<u32>,
        #[arg(long, default_value_t = DEFAULT_PER_PAGE)]
        per_page: u32,
        /// Start right after the page that printed this cursor (use the same filters).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one incident by id or number (INC-2024-0001).
    Get { id: String },
}

pub async fn run(ctx: &Ctx, cmd: IncidentCommand) -> Result<ExitCode> {
    let client = ctx.client()?;
    match cmd {
        IncidentCommand::List { source, severity, status, sort, page, per_page, cursor } => {
            // `sort` travels with the filters: the next page's command must repeat it.
            let sort = sort.map(|o| o.as_str().to_string());
            let filters = [("source", source), ("severity", severity), ("status", status), ("sort", sort)];
            let mut params = vec![("per_page", Some(per_page.to_string()))];
            params.extend(filters.iter().cloned());
            params.extend([("page", page.map(|p| p.to_string())), ("cursor", cursor)]);
            let v: IncidentList = client.get(&with_query("/api/incidents", &params)).await?;
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => {
                    output::table_of(&["NUMBER", "SEVERITY", "STATUS", "SOURCE", "RECEIVED", "TITLE"], &v.data, |i| {
                        vec![
                            i.incident_number.clone(),
                            cell(&i.severity),
                            cell(&i.status),
                            i.source.clone(),
                            cell(&i.received_at),
                            i.title.chars().take(70).collect(),
                        ]
                    });
                    let m = &v.meta;
                    match m.page {
                        None => println!("{} incidents", m.total),
                        Some(page) => println!("page {page} of {} ({} incidents)", m.total_pages, m.total),
                    }
                    if let Some(next) = &m.next_cursor {
                        println!("next page: {}", next_page_command(&filters, per_page, next));
                    }
                }
            }
        }
        IncidentCommand::Get { id } => {
            let v: IncidentDetail = client.get(&format!("/api/incidents/{}", seg(&id))).await?;
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => print_incident(&v),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--sort`'s values: the API's names of [`IncidentOrder`], listed in `--help`.
fn sort_parser() -> impl TypedValueParser<Value = IncidentOrder> {
    clap::builder::PossibleValuesParser::new(IncidentOrder::ALL.map(IncidentOrder::as_str)).try_map(|s| s.parse::<IncidentOrder>())
}

/// The command that lists the page after this one: the same filters, with the cursor.
fn next_page_command(filters: &[(&str, Option<String>)], per_page: u32, cursor: &str) -> String {
    let mut cmd = vec!["tw-cli incident list".to_string()];
    for (k, v) in filters {
        if let Some(v) = v {
            cmd.push(format!("--{k} {}", shell_word(v)));
        }
    }
    if per_page != DEFAULT_PER_PAGE {
        cmd.push(format!("--per-page {per_page}"));
    }
    cmd.push(format!("--cursor {}", shell_word(cursor)));
    cmd.join(" ")
}

/// `s` as one shell word: as is when it is plain, else single-quoted.
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/=".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn print_incident(v: &IncidentDetail) {
    print_summary(&v.incident);
    if let Some(t) = v.incident.triage.as_ref().filter(|t| !t.is_null()) {
        println!();
        super::triage::print_triage(t);
    }
}

fn print_summary(v: &tw_server::api::incidents::Incident) {
    output::pairs(&[
        ("incident", v.incident_number.clone()),
        ("id", v.id.to_string()),
        ("title", v.title.clone()),
        ("severity", format!("{} (vendor: {})", cell(&v.severity), cell(&v.vendor_severity))),
        ("status", cell(&v.status)),
        ("source", format!("{} ({})", v.source, cell(&v.format))),
        ("event_type", cell(&v.event_type)),
        ("event_time", cell(&v.event_time)),
        ("received_at", cell(&v.received_at)),
        ("external_id", cell(&v.external_id)),
        ("deliveries", v.delivery_count.to_string()),
        ("description", cell(&v.description)),
    ]);
    if !v.entities.is_empty() {
        println!("\nentities:");
        output::table_of(&["  KIND", "VALUE", "ROLE"], &v.entities, |e| {
            vec![format!("  {}", e.kind.as_str()), e.value.clone(), cell(&e.role)]
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_command_keeps_the_filters() {
        let filters = [("source", Some("edr".to_string())), ("severity", None), ("status", Some("open".to_string()))];
        assert_eq!(
            next_page_command(&filters, 20, "2026-42"),
            "tw-cli incident list --source edr --status open --per-page 20 --cursor 2026-42"
        );
        assert_eq!(next_page_command(&[("source", None)], 50, "abc"), "tw-cli incident list --cursor abc");
        let sorted = [("severity", None), ("sort", Some("severity".to_string()))];
        assert_eq!(next_page_command(&sorted, 50, "high-2026-7"), "tw-cli incident list --sort severity --cursor high-2026-7");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
