//! `tw-cli playbook ...`: list, show, export, add, validate, delete and test playbooks.

use super::triage::print_triage;
use super::{Ctx, seg};
use crate::output::{self, Output, cell};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;
use tw_server::api::playbooks::{PlaybookList, PlaybookListEntry, PlaybookTestResult, PlaybookView};

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

pub async fn run(ctx: &Ctx, cmd: PlaybookCommand) -> Result<ExitCode> {
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
            let v: PlaybookList = ctx.client()?.get("/api/playbooks").await?;
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => {
                    output::table_of(&["NAME", "VERSION", "ORIGIN", "STEPS", "USED BY", "DESCRIPTION"], &v.data, |entry| match entry {
                        PlaybookListEntry::Playbook(p) => vec![
                            p.name.clone(),
                            p.version.clone(),
                            cell(&p.origin),
                            p.steps.len().to_string(),
                            if p.used_by.is_empty() { "-".into() } else { p.used_by.join(",") },
                            p.description.chars().take(60).collect(),
                        ],
                        PlaybookListEntry::Broken(b) => {
                            vec![b.name.clone(), "-".into(), cell(&b.origin), "-".into(), "-".into(), b.error.clone()]
                        }
                    });
                }
            }
        }
        PlaybookCommand::Get { name } => {
            let v: PlaybookView = ctx.client()?.get(&format!("/api/playbooks/{}", seg(&name))).await?;
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => {
                    output::pairs(&[
                        ("name", v.name.clone()),
                        ("version", v.version.clone()),
                        ("origin", cell(&v.origin)),
                        ("description", v.description.clone()),
                        ("variables", cell(&v.variables)),
                    ]);
                    println!();
                    output::table_of(&["STEP", "ACTION", "OUTPUT", "WHEN"], &v.steps, |s| {
                        vec![s.name.clone(), s.action.clone(), cell(&s.output), cell(&s.when)]
                    });
                }
            }
        }
        PlaybookCommand::Export { name } => {
            let v: PlaybookView = ctx.client()?.get(&format!("/api/playbooks/{}", seg(&name))).await?;
            match v.yaml.as_deref() {
                Some(y) => print!("{y}{}", if y.ends_with('\n') { "" } else { "\n" }),
                None => bail!("the server returned no YAML for '{name}'"),
            }
        }
        PlaybookCommand::Add { file, replace } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let client = ctx.client()?;
            let body = json!({"yaml": text});
            let v: PlaybookView = if replace {
                let name = tw_core::triage::parse_playbook(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {}", file.display(), e.first().map(ToString::to_string).unwrap_or_default()))?
                    .name;
                client.send_json(Method::PUT, &format!("/api/playbooks/{}", seg(&name)), Some(&body)).await?
            } else {
                client.send_json(Method::POST, "/api/playbooks", Some(&body)).await?
            };
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => println!("Stored playbook '{}' ({} steps).", v.name, v.steps.len()),
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
            let v: PlaybookTestResult =
                ctx.client()?.send_json(Method::POST, &format!("/api/playbooks/{}/test", seg(&name)), Some(&body)).await?;
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => {
                    let a = &v.alert;
                    println!("{} alert: {} (severity {})", a.format.as_str(), a.title, a.severity.as_str());
                    let mut t = v.triage.clone();
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
