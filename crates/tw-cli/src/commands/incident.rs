//! `tw-cli incident list|get`.

use super::{Ctx, seg};
use crate::output::{self, Output, cell};
use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;
use std::process::ExitCode;

/// `--per-page` when not given (the API's default too).
const DEFAULT_PER_PAGE: u32 = 50;

#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// List incidents, newest first by number.
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
        IncidentCommand::List { source, severity, status, page, per_page, cursor } => {
            let filters = [("source", source), ("severity", severity), ("status", status)];
            let mut q = vec![format!("per_page={per_page}")];
            for (k, v) in &filters {
                if let Some(v) = v {
                    q.push(format!("{k}={}", seg(v)));
                }
            }
            if let Some(page) = page {
                q.push(format!("page={page}"));
            }
            if let Some(cursor) = &cursor {
                q.push(format!("cursor={}", seg(cursor)));
            }
            let (_, v) = client.call(Method::GET, &format!("/api/incidents?{}", q.join("&")), None).await?;
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => {
                    let rows = super::rows_of(&v["data"], |i| {
                        vec![
                            cell(&i["incident_number"]),
                            cell(&i["severity"]),
                            cell(&i["status"]),
                            cell(&i["source"]),
                            cell(&i["received_at"]),
                            cell(&i["title"]).chars().take(70).collect(),
                        ]
                    });
                    output::table(&["NUMBER", "SEVERITY", "STATUS", "SOURCE", "RECEIVED", "TITLE"], &rows);
                    let m = &v["meta"];
                    if m["page"].is_null() {
                        println!("{} incidents", cell(&m["total"]));
                    } else {
                        println!("page {} of {} ({} incidents)", cell(&m["page"]), cell(&m["total_pages"]), cell(&m["total"]));
                    }
                    if let Some(next) = m["next_cursor"].as_str() {
                        println!("next page: {}", next_page_command(&filters, per_page, next));
                    }
                }
            }
        }
        IncidentCommand::Get { id } => {
            let (_, v) = client.call(Method::GET, &format!("/api/incidents/{}", seg(&id)), None).await?;
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => print_incident(&v),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
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

fn print_incident(v: &Value) {
    print_summary(v);
    if let Some(t) = v.get("triage").filter(|t| !t.is_null()) {
        println!();
        super::triage::print_triage(t);
    }
}

fn print_summary(v: &Value) {
    output::pairs(&[
        ("incident", cell(&v["incident_number"])),
        ("id", cell(&v["id"])),
        ("title", cell(&v["title"])),
        ("severity", format!("{} (vendor: {})", cell(&v["severity"]), cell(&v["vendor_severity"]))),
        ("status", cell(&v["status"])),
        ("source", format!("{} ({})", cell(&v["source"]), cell(&v["format"]))),
        ("event_type", cell(&v["event_type"])),
        ("event_time", cell(&v["event_time"])),
        ("received_at", cell(&v["received_at"])),
        ("external_id", cell(&v["external_id"])),
        ("deliveries", cell(&v["delivery_count"])),
        ("description", cell(&v["description"])),
    ]);
    let entities = v["entities"].as_array().cloned().unwrap_or_default();
    if !entities.is_empty() {
        println!("\nentities:");
        let rows: Vec<Vec<String>> = entities
            .iter()
            .map(|e| vec![format!("  {}", cell(&e["kind"])), cell(&e["value"]), e.get("role").map(cell).unwrap_or_else(|| "-".into())])
            .collect();
        output::table(&["  KIND", "VALUE", "ROLE"], &rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_command_keeps_the_filters() {
        let filters = [("source", Some("edr".to_string())), ("severity", None), ("status", Some("open".to_string()))];
        assert_eq!(
            next_page_command(&filters, 20, "aTE6MjAyNjo0Mg"),
            "tw-cli incident list --source edr --status open --per-page 20 --cursor aTE6MjAyNjo0Mg"
        );
        assert_eq!(next_page_command(&[("source", None)], 50, "abc"), "tw-cli incident list --cursor abc");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
