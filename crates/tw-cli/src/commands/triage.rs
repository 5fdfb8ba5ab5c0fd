//! `tw-cli triage run`: queue a triage of one incident, optionally wait for it; and how a triage is
//! printed (`incident get` and `playbook test` print one too).

use super::{Ctx, seg};
use crate::output::{self, Output, cell};
use anyhow::{Result, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tw_server::api::incidents::IncidentDetail;
use tw_server::api::triage::{TriageJob, TriageQueued};
use tw_store::TriageJobStatus;

#[derive(Debug, Subcommand)]
pub enum TriageCommand {
    /// Queue a triage of one incident; with --wait, wait for the result and print it.
    Run {
        /// Incident id or number (INC-2024-0001).
        #[arg(long)]
        incident: String,
        /// Playbook to run (default: the one of the incident's source).
        #[arg(long)]
        playbook: Option<String>,
        /// Wait for the result and print it.
        #[arg(long)]
        wait: bool,
        /// Seconds to wait with --wait (1 to 86400).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
        timeout: u64,
    },
}

pub async fn run(ctx: &Ctx, cmd: TriageCommand) -> Result<ExitCode> {
    let TriageCommand::Run { incident, playbook, wait, timeout } = cmd;
    let client = ctx.client()?;
    let body = match playbook {
        Some(p) => json!({"playbook": p}),
        None => json!({}),
    };
    let job: TriageQueued = client.send_json(Method::POST, &format!("/api/incidents/{}/triage", seg(&incident)), Some(&body)).await?;
    let job_id = job.job_id.clone();
    if !wait {
        match ctx.output {
            Output::Json => output::json(&job),
            Output::Table => println!("Queued triage {job_id} of {} with playbook {}.", job.incident_number, job.playbook),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let status = loop {
        let j: TriageJob = client.get(&format!("/api/triage/jobs/{}", seg(&job_id))).await?;
        if matches!(j.status, TriageJobStatus::Completed | TriageJobStatus::Failed) {
            break j.status;
        }
        if Instant::now() > deadline {
            bail!("triage {job_id} is still {} after {timeout}s (see `tw-cli incident get {incident}` later)", cell(&j.status));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let inc: IncidentDetail = client.get(&format!("/api/incidents/{}", seg(&incident))).await?;
    let triage = inc.incident.triage.unwrap_or_default();
    match ctx.output {
        Output::Json => output::json(&triage),
        Output::Table => {
            println!("{} {}", inc.incident.incident_number, inc.incident.title);
            print_triage(&triage);
        }
    }
    Ok(if status == TriageJobStatus::Completed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Prints a triage readably: verdict and score first, then findings, then recommendations.
pub fn print_triage(t: &Value) {
    let status = cell(&t["status"]);
    if status != "completed" {
        println!("triage: {status} (playbook {})", cell(&t["playbook"]));
        if let Some(e) = t.get("error").or_else(|| t.get("last_error")).filter(|e| !e.is_null()) {
            println!("  error: {}", cell(e));
        }
        return;
    }
    println!(
        "verdict: {}   score: {}/100   playbook: {} {}",
        cell(&t["verdict"]).to_uppercase(),
        cell(&t["score"]),
        cell(&t["playbook"]),
        cell(&t["playbook_version"])
    );
    if let Some(sev) = t.get("severity").filter(|s| !s.is_null()) {
        println!("severity set to: {}", cell(sev));
    }
    let findings = t["findings"].as_array().cloned().unwrap_or_default();
    println!("\nfindings ({}):", findings.len());
    for f in &findings {
        let ind = f.get("indicator").filter(|i| !i.is_null()).map(|i| format!(" [{}]", cell(i))).unwrap_or_default();
        println!("  {:+4}  {}: {}{ind}", f["weight"].as_i64().unwrap_or(0), cell(&f["rule"]), cell(&f["detail"]));
    }
    let actions = t["recommended_actions"].as_array().cloned().unwrap_or_default();
    println!("\nrecommended actions ({}):", actions.len());
    for a in &actions {
        let target = a.get("target").filter(|x| !x.is_null()).map(|x| format!(" {}", cell(x))).unwrap_or_default();
        println!("  - {}{target}: {}", cell(&a["action"]), cell(&a["reason"]));
    }
    println!("\ncompleted {} (attempt {})", cell(&t["completed_at"]), cell(&t["attempts"]));
}
