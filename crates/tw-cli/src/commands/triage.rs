//! `tw-cli triage run`, `tw-cli playbook ...`, `tw-cli intel ...`.

use super::{Ctx, seg};
use crate::output::{self, Output, cell};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

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

#[derive(Debug, Subcommand)]
pub enum PlaybookCommand {
    /// List playbooks (built-in and yours).
    List,
    /// Show a playbook: description, variables, steps.
    Get { name: String },
    /// Print a playbook's YAML (to edit and add back under a new name).
    Export { name: String },
    /// Add a playbook from a YAML file (--replace to overwrite one of the same name).
    Add {
        file: PathBuf,
        #[arg(long)]
        replace: bool,
    },
    /// Check a playbook file and report every error with its step and field (no server needed).
    Validate { file: PathBuf },
    /// Delete a playbook (refused while a source uses it).
    Delete { name: String },
    /// Run a playbook on a payload without storing anything, and print the result.
    Test {
        name: String,
        /// A JSON payload as a sender would post it.
        #[arg(long)]
        data: PathBuf,
        /// Read the payload as this format (default: detect).
        #[arg(long)]
        source_format: Option<String>,
    },
}

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

pub async fn run_triage(ctx: &Ctx, cmd: TriageCommand) -> Result<ExitCode> {
    let TriageCommand::Run { incident, playbook, wait, timeout } = cmd;
    let client = ctx.client()?;
    let body = match playbook {
        Some(p) => json!({"playbook": p}),
        None => json!({}),
    };
    let (_, job) = client.call(Method::POST, &format!("/api/incidents/{}/triage", seg(&incident)), Some(&body)).await?;
    let job_id = cell(&job["job_id"]);
    if !wait {
        match ctx.output {
            Output::Json => output::json(&job),
            Output::Table => {
                println!("Queued triage {job_id} of {} with playbook {}.", cell(&job["incident_number"]), cell(&job["playbook"]))
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let status = loop {
        let (_, j) = client.call(Method::GET, &format!("/api/triage/jobs/{}", seg(&job_id)), None).await?;
        let status = cell(&j["status"]);
        if status == "completed" || status == "failed" {
            break status;
        }
        if Instant::now() > deadline {
            bail!("triage {job_id} is still {status} after {timeout}s (see `tw-cli incident get {incident}` later)");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let (_, inc) = client.call(Method::GET, &format!("/api/incidents/{}", seg(&incident)), None).await?;
    match ctx.output {
        Output::Json => output::json(&inc["triage"]),
        Output::Table => {
            println!("{} {}", cell(&inc["incident_number"]), cell(&inc["title"]));
            print_triage(&inc["triage"]);
        }
    }
    Ok(if status == "completed" { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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

pub async fn run_playbook(ctx: &Ctx, cmd: PlaybookCommand) -> Result<ExitCode> {
    match cmd {
        PlaybookCommand::Validate { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            return match tw_core::triage::parse_playbook(&text) {
                Ok(p) => {
                    match ctx.output {
                        Output::Json => output::json(&json!({"valid": true, "name": p.name, "steps": p.steps.len()})),
                        Output::Table => println!("{}: valid playbook '{}' ({} steps)", file.display(), p.name, p.steps.len()),
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => {
                    match ctx.output {
                        Output::Json => output::json(&json!({"valid": false, "errors": errors})),
                        Output::Table => {
                            for e in &errors {
                                eprintln!("{}: {e}", file.display());
                            }
                            eprintln!("{} error(s)", errors.len());
                        }
                    }
                    Ok(ExitCode::FAILURE)
                }
            };
        }
        PlaybookCommand::List => {
            let (_, v) = ctx.client()?.call(Method::GET, "/api/playbooks", None).await?;
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => {
                    let rows = super::rows_of(&v["data"], |p| {
                        let used: Vec<String> = p["used_by"].as_array().map(|a| a.iter().map(cell).collect()).unwrap_or_default();
                        vec![
                            cell(&p["name"]),
                            cell(&p["version"]),
                            cell(&p["origin"]),
                            p["steps"].as_array().map_or("-".into(), |s| s.len().to_string()),
                            if used.is_empty() { "-".into() } else { used.join(",") },
                            cell(&p["description"]).chars().take(60).collect(),
                        ]
                    });
                    output::table(&["NAME", "VERSION", "ORIGIN", "STEPS", "USED BY", "DESCRIPTION"], &rows);
                }
            }
        }
        PlaybookCommand::Get { name } => {
            let (_, v) = ctx.client()?.call(Method::GET, &format!("/api/playbooks/{}", seg(&name)), None).await?;
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => {
                    output::pairs(&[
                        ("name", cell(&v["name"])),
                        ("version", cell(&v["version"])),
                        ("origin", cell(&v["origin"])),
                        ("description", cell(&v["description"])),
                        ("variables", cell(&v["variables"])),
                    ]);
                    println!();
                    let rows =
                        super::rows_of(&v["steps"], |s| vec![cell(&s["name"]), cell(&s["action"]), cell(&s["output"]), cell(&s["when"])]);
                    output::table(&["STEP", "ACTION", "OUTPUT", "WHEN"], &rows);
                }
            }
        }
        PlaybookCommand::Export { name } => {
            let (_, v) = ctx.client()?.call(Method::GET, &format!("/api/playbooks/{}", seg(&name)), None).await?;
            match v.get("yaml").and_then(Value::as_str) {
                Some(y) => print!("{y}{}", if y.ends_with('\n') { "" } else { "\n" }),
                None => bail!("the server returned no YAML for '{name}'"),
            }
        }
        PlaybookCommand::Add { file, replace } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let client = ctx.client()?;
            let body = json!({"yaml": text});
            let (_, v) = if replace {
                let name = tw_core::triage::parse_playbook(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {}", file.display(), e.first().map(ToString::to_string).unwrap_or_default()))?
                    .name;
                client.call(Method::PUT, &format!("/api/playbooks/{}", seg(&name)), Some(&body)).await?
            } else {
                client.call(Method::POST, "/api/playbooks", Some(&body)).await?
            };
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => println!("Stored playbook '{}' ({} steps).", cell(&v["name"]), v["steps"].as_array().map_or(0, Vec::len)),
            }
        }
        PlaybookCommand::Delete { name } => {
            ctx.client()?.call(Method::DELETE, &format!("/api/playbooks/{}", seg(&name)), None).await?;
            match ctx.output {
                Output::Json => output::json(&json!({"name": name, "deleted": true})),
                Output::Table => println!("Deleted playbook '{name}'."),
            }
        }
        PlaybookCommand::Test { name, data, source_format } => {
            let text = std::fs::read_to_string(&data).with_context(|| format!("cannot read {}", data.display()))?;
            let payload: Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", data.display()))?;
            let mut body = json!({"payload": payload});
            if let Some(f) = source_format {
                body["format"] = f.into();
            }
            let (_, v) = ctx.client()?.call(Method::POST, &format!("/api/playbooks/{}/test", seg(&name)), Some(&body)).await?;
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => {
                    let a = &v["alert"];
                    println!("{} alert: {} (severity {})", cell(&a["format"]), cell(&a["title"]), cell(&a["severity"]));
                    let mut t = v["triage"].clone();
                    t["status"] = "completed".into();
                    print_triage_result(&t);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_triage_result(t: &Value) {
    // A test run has no job, attempts or completion time: print the verdict part only.
    let mut t = t.clone();
    if let Some(o) = t.as_object_mut() {
        o.insert("completed_at".into(), "(test run, not stored)".into());
        o.insert("attempts".into(), "-".into());
    }
    print_triage(&t);
    if let Some(trace) = t["trace"].as_array() {
        println!("\ntrace:");
        for s in trace {
            let state = if s["skipped"] == true { "skipped" } else { "ran" };
            println!("  {:<24} {:<20} {state:<7} {}us", cell(&s["step"]), cell(&s["action"]), cell(&s["duration_us"]));
        }
    }
}

pub async fn run_intel(ctx: &Ctx, cmd: IntelCommand) -> Result<ExitCode> {
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
