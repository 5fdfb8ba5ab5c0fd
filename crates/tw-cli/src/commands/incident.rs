//! `tw-cli incident list|get`.

use super::{Ctx, seg};
use crate::output::{self, Output, cell};
use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// List incidents, newest first.
    List {
        #[arg(long)]
        source: Option<String>,
        /// critical, high, medium, low or info.
        #[arg(long)]
        severity: Option<String>,
        /// open, triaged or closed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: u32,
        #[arg(long, default_value_t = 50)]
        per_page: u32,
    },
    /// Show one incident by id or number (INC-2024-0001).
    Get { id: String },
}

pub async fn run(ctx: &Ctx, cmd: IncidentCommand) -> Result<ExitCode> {
    let client = ctx.client()?;
    match cmd {
        IncidentCommand::List { source, severity, status, page, per_page } => {
            let mut q = vec![format!("page={page}"), format!("per_page={per_page}")];
            for (k, v) in [("source", source), ("severity", severity), ("status", status)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", seg(&v)));
                }
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
                    println!("page {} of {} ({} incidents)", cell(&m["page"]), cell(&m["total_pages"]), cell(&m["total"]));
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
