//! `tw-cli webhook ...`: register, inspect, test and sign for webhook sources.

use super::{Ctx, seg};
use crate::client::with_query;
use crate::output::{self, Output, cell};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::process::ExitCode;
use tw_server::api::deliveries::{Delivery, DeliveryList};
use tw_server::api::intake::IntakeAnswer;
use tw_server::api::reprocess::ReprocessResult;
use tw_server::api::sources::{SourceList, SourceTestResult, SourceView};

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Register a source.
    Add(AddArgs),
    /// List sources.
    List,
    /// Show one source's settings and delivery statistics (never its secret).
    Show { source: String },
    /// Change a source's settings.
    Update(UpdateArgs),
    /// Remove a source.
    Remove { source: String },
    /// Replace a source's secret; the old one keeps verifying for the grace period.
    RotateSecret {
        source: String,
        /// The new secret (default: a strong one is generated and printed once).
        #[arg(long)]
        secret: Option<String>,
        /// Seconds the old secret keeps working.
        #[arg(long, default_value_t = 86400)]
        grace_period: i64,
    },
    /// Check a source end to end. Without --secret the server signs a test event with the stored
    /// secret; with --secret the CLI signs it by the source's verification scheme and posts it to
    /// the public endpoint, proving the sender's secret matches. Nothing is stored either way.
    Test {
        source: String,
        /// The secret the sending tool is configured with.
        #[arg(long)]
        secret: Option<String>,
        /// With --secret: the source's scheme, as the sender signs (default: read from the server
        /// with the API key; without a key, hmac).
        #[arg(long, value_parser = tw_core::verification::SCHEMES, requires = "secret")]
        verification: Option<String>,
        /// header-token: the header that carries the token.
        #[arg(long, value_name = "NAME", requires = "secret")]
        token_header: Option<String>,
    },
    /// Recent deliveries of a source (time, status, code, incident, request id, sender's request
    /// id); refused requests beyond 5 a minute per code show as one row with their count. `events
    /// get <request-id>` shows one with its payload.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Events {
        #[command(subcommand)]
        get: Option<EventsCommand>,
        /// The source.
        #[arg(required = true)]
        source: Option<String>,
        /// Only ok (2xx) or failed deliveries.
        #[arg(long, value_parser = ["ok", "failed", "all"])]
        status: Option<String>,
        /// How many of the newest.
        #[arg(long, default_value_t = 20)]
        tail: u32,
    },
    /// Normalize a source's stored incidents again, after changing its mapping or format.
    ///
    /// Each incident is updated in place with the source's current settings (same number; status,
    /// triage and delivery counts kept), never duplicated. An incident whose new alert id already
    /// belongs to another is left as it was and listed as a conflict. Runs in bounded server calls
    /// until done.
    ///
    /// Example: tw-cli webhook reprocess edr --since 24h --dead-letters
    Reprocess {
        /// The source name.
        source: String,
        /// Only events received since then: a duration back from now (30m, 24h, 7d, 2w) or an
        /// RFC 3339 time (2026-01-31T00:00:00Z). Default: all.
        #[arg(long)]
        since: Option<String>,
        /// Also normalize the source's dead letters again: each that now normalizes becomes an
        /// incident (deduped like a live delivery) and leaves the dead letters; the others stay
        /// with their new reason.
        #[arg(long)]
        dead_letters: bool,
    },
    /// Sign a body as a sender of the scheme would and print a ready-to-run curl command.
    Sign {
        source: String,
        #[arg(long)]
        secret: String,
        /// The source's verification scheme (default hmac).
        #[arg(long, value_parser = tw_core::verification::SCHEMES, default_value = "hmac")]
        verification: String,
        /// header-token: the header that carries the token.
        #[arg(long, value_name = "NAME")]
        token_header: Option<String>,
        /// The JSON body, or @FILE to read it from a file.
        #[arg(long)]
        body: String,
        /// Unix timestamp to sign with (default: now).
        #[arg(long)]
        timestamp: Option<i64>,
    },
}

/// The last cell of an aggregate row: `(1,532 invalid_signature refused 14:02:07-14:02:59)`.
fn refused_summary(n: u64, d: &Delivery) -> String {
    let time = |t: Option<String>| t.as_deref().and_then(|t| t.get(11..19)).unwrap_or("?").to_string();
    let digits = n.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let code = d.code.as_deref().unwrap_or("-");
    format!("({grouped} {code} refused {}-{})", time(Some(cell(&d.received_at))), time(d.last_received_at.as_ref().map(cell)))
}

/// `webhook events get`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// One delivery with its payload, by its own request id (the response's X-Tw-Request-Id) or
    /// the sender's X-Request-Id (the newest verified delivery that carried it; the others are
    /// listed).
    Get { request_id: String },
}

/// Settings shared by `add` and `update`.
#[derive(Debug, Args)]
pub struct SettingArgs {
    /// Triage incidents from this source automatically.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    auto_triage: Option<bool>,
    /// Playbook used for auto-triage (phishing_triage, malware_triage).
    #[arg(long)]
    playbook: Option<String>,
    /// Payload format: auto, generic, defender, crowdstrike, splunk, sentinelone, sentinel, elastic.
    #[arg(long)]
    format: Option<String>,
    /// sync: incident created before the response; async: queued (202), created by a worker.
    #[arg(long, value_parser = ["sync", "async"])]
    mode: Option<String>,
    /// Map a vendor severity to ours, e.g. --severity-map 4=critical (repeatable).
    #[arg(long = "severity-map", value_name = "VENDOR=OURS")]
    severity_map: Vec<String>,
    /// Replay window in seconds (default 300).
    #[arg(long)]
    timestamp_tolerance: Option<i64>,
    /// Largest accepted body in bytes (default 1 MiB).
    #[arg(long)]
    max_body_bytes: Option<u64>,
    /// Verified deliveries a second this source may make, e.g. 10 or 0.5 (default: unlimited);
    /// over it the intake answers 429 rate_limited with Retry-After. Counted per server process.
    #[arg(long, value_name = "PER_SECOND", conflicts_with = "no_rate_limit")]
    rate_limit: Option<f64>,
    /// Deliveries allowed at once under --rate-limit (default: one second's worth).
    #[arg(long, value_name = "N", requires = "rate_limit")]
    rate_burst: Option<u32>,
    /// Remove the source's rate limit.
    #[arg(long)]
    no_rate_limit: bool,
    /// Enable or disable deliveries.
    #[arg(long, value_name = "BOOL")]
    enabled: Option<bool>,
    /// How deliveries prove they come from the source: hmac (the default), standard-webhooks,
    /// github, header-token (with --token-header), basic or url-token.
    #[arg(long, value_parser = tw_core::verification::SCHEMES, value_name = "SCHEME")]
    verification: Option<String>,
    /// header-token: the header that carries the token, e.g. X-Api-Key (implies
    /// --verification header-token).
    #[arg(long, value_name = "NAME")]
    token_header: Option<String>,
    /// Accept deliveries only from this address or CIDR range (repeatable); behind a proxy, the
    /// client address counts only when the proxy is trusted (--trusted-proxy on serve).
    #[arg(long = "allowed-ip", value_name = "CIDR", conflicts_with = "any_ip")]
    allowed_ip: Vec<String>,
    /// Remove the address allow-list: accept deliveries from any address.
    #[arg(long)]
    any_ip: bool,
    /// Where the vendor keeps each alert field, as JSON pointers: a JSON object or @FILE, e.g.
    /// '{"title": "/alert/name", "alert_id": "/alert/uid", "entities": {"ip": ["/alert/src_ip"]}}'.
    #[arg(long, value_name = "JSON|@FILE", conflicts_with = "no_mapping")]
    mapping: Option<String>,
    /// Remove the source's mapping (back to the format's own reading).
    #[arg(long)]
    no_mapping: bool,
}

/// `--verification` with `--token-header` as the API's `verification` value.
fn verification_value(scheme: Option<&str>, header: Option<&str>) -> Result<Option<Value>> {
    Ok(match (scheme, header) {
        (None, None) => None,
        (Some("header-token") | None, Some(h)) => Some(json!({"scheme": "header-token", "header": h})),
        (Some("header-token"), None) => bail!("--verification header-token needs --token-header NAME (e.g. X-Api-Key)"),
        (Some(s), Some(_)) => bail!("--token-header applies to --verification header-token, not {s}"),
        (Some(s), None) => Some(Value::String(s.to_string())),
    })
}

/// A `verification` value as the core type, or the problem with it.
fn parse_scheme(v: &Value) -> Result<tw_core::Verification> {
    tw_core::Verification::parse(v).map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.message))
}

/// A JSON argument given inline or as @FILE.
fn json_arg(flag: &str, raw: &str) -> Result<Value> {
    let text = match raw.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("{flag}: cannot read {path}"))?,
        None => raw.to_string(),
    };
    serde_json::from_str(&text).with_context(|| format!("{flag}: not valid JSON"))
}

impl SettingArgs {
    fn into_body(self, body: &mut Map<String, Value>) -> Result<()> {
        if let Some(v) = self.auto_triage {
            body.insert("auto_triage".into(), v.into());
        }
        if let Some(v) = self.playbook {
            body.insert("playbook".into(), v.into());
        }
        if let Some(v) = self.format {
            body.insert("format".into(), v.into());
        }
        if let Some(v) = self.mode {
            body.insert("mode".into(), v.into());
        }
        if !self.severity_map.is_empty() {
            let mut m = Map::new();
            for pair in &self.severity_map {
                let (k, v) =
                    pair.split_once('=').with_context(|| format!("--severity-map '{pair}': expected VENDOR=OURS, e.g. 4=critical"))?;
                m.insert(k.trim().to_string(), v.trim().into());
            }
            body.insert("severity_mapping".into(), Value::Object(m));
        }
        if let Some(v) = self.timestamp_tolerance {
            body.insert("timestamp_tolerance_secs".into(), v.into());
        }
        if let Some(v) = self.max_body_bytes {
            body.insert("max_body_bytes".into(), v.into());
        }
        if let Some(per_second) = self.rate_limit {
            let mut limit = json!({"per_second": per_second});
            if let Some(burst) = self.rate_burst {
                limit["burst"] = burst.into();
            }
            body.insert("rate_limit".into(), limit);
        }
        if self.no_rate_limit {
            body.insert("rate_limit".into(), Value::Null);
        }
        if let Some(v) = self.enabled {
            body.insert("enabled".into(), v.into());
        }
        if let Some(v) = verification_value(self.verification.as_deref(), self.token_header.as_deref())? {
            body.insert("verification".into(), v);
        }
        if !self.allowed_ip.is_empty() {
            body.insert("allowed_ips".into(), self.allowed_ip.into());
        }
        if self.any_ip {
            body.insert("allowed_ips".into(), Value::Null);
        }
        if let Some(m) = &self.mapping {
            body.insert("mapping".into(), json_arg("--mapping", m)?);
        }
        if self.no_mapping {
            body.insert("mapping".into(), Value::Null);
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Source name, as in POST /api/webhooks/<source>.
    source: String,
    /// The source's secret, in its scheme's form (default: a strong one is generated and printed
    /// once, with what to paste into the sending tool).
    #[arg(long)]
    secret: Option<String>,
    #[command(flatten)]
    settings: SettingArgs,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    source: String,
    /// Replace the secret at once (no grace period; see rotate-secret).
    #[arg(long)]
    secret: Option<String>,
    #[command(flatten)]
    settings: SettingArgs,
}

pub async fn run(ctx: &Ctx, cmd: WebhookCommand) -> Result<ExitCode> {
    match cmd {
        WebhookCommand::Add(a) => {
            let mut body = Map::new();
            body.insert("source".into(), a.source.clone().into());
            let given = a.secret.clone();
            if let Some(s) = a.secret {
                body.insert("secret".into(), s.into());
            }
            a.settings.into_body(&mut body)?;
            let v: SourceView = ctx.client()?.send_json(Method::POST, "/api/webhooks", Some(&Value::Object(body))).await?;
            print_source(ctx, &v, &format!("Registered source '{}'.", a.source));
            if let Some(secret) = v.secret.as_ref().or(given.as_ref()) {
                print_recipe(ctx, &v, secret)?;
            }
        }
        WebhookCommand::Update(a) => {
            let mut body = Map::new();
            if let Some(s) = a.secret {
                body.insert("secret".into(), s.into());
            }
            a.settings.into_body(&mut body)?;
            if body.is_empty() {
                bail!("nothing to change: give at least one setting (see --help)");
            }
            let v: SourceView =
                ctx.client()?.send_json(Method::PATCH, &format!("/api/webhooks/{}", seg(&a.source)), Some(&Value::Object(body))).await?;
            print_source(ctx, &v, &format!("Updated source '{}'.", a.source));
        }
        WebhookCommand::List => {
            let v: SourceList = ctx.client()?.get("/api/webhooks").await?;
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => {
                    output::table_of(
                        &["SOURCE", "ENABLED", "MODE", "FORMAT", "VERIFICATION", "AUTO-TRIAGE", "DELIVERIES", "ERRORS", "LAST DELIVERY"],
                        &v.data,
                        |s| {
                            vec![
                                s.source.clone(),
                                if s.enabled { "yes".into() } else { "no".into() },
                                cell(&s.mode),
                                cell(&s.format),
                                s.verification.scheme_name().to_string(),
                                if s.auto_triage { cell(&s.playbook) } else { "-".into() },
                                s.delivery_count.to_string(),
                                s.error_count.to_string(),
                                cell(&s.last_delivery_at),
                            ]
                        },
                    );
                }
            }
        }
        WebhookCommand::Show { source } => {
            let v: SourceView = ctx.client()?.get(&format!("/api/webhooks/{}", seg(&source))).await?;
            print_source(ctx, &v, "");
        }
        WebhookCommand::Remove { source } => {
            ctx.client()?.call(Method::DELETE, &format!("/api/webhooks/{}", seg(&source)), None).await?;
            match ctx.output {
                Output::Json => output::json(&json!({"source": source, "removed": true})),
                Output::Table => println!("Removed source '{source}'."),
            }
        }
        WebhookCommand::RotateSecret { source, secret, grace_period } => {
            let mut body = json!({"grace_period_secs": grace_period});
            if let Some(s) = secret {
                body["secret"] = s.into();
            }
            let v: SourceView =
                ctx.client()?.send_json(Method::POST, &format!("/api/webhooks/{}/rotate-secret", seg(&source)), Some(&body)).await?;
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => {
                    println!("Rotated the secret of '{source}'. New secret (shown once):");
                    println!("{}", cell(&v.secret));
                    println!("The previous secret keeps verifying until {}.", cell(&v.previous_secret_expires_at));
                    if let Some(secret) = &v.secret {
                        print_recipe(ctx, &v, secret)?;
                    }
                }
            }
        }
        WebhookCommand::Test { source, secret, verification, token_header } => {
            let scheme = verification_value(verification.as_deref(), token_header.as_deref())?.map(|v| parse_scheme(&v)).transpose()?;
            return test(ctx, &source, secret, scheme).await;
        }
        WebhookCommand::Reprocess { source, since, dead_letters } => reprocess(ctx, &source, since, dead_letters).await?,
        WebhookCommand::Events { get: Some(EventsCommand::Get { request_id }), .. } => {
            let v: Delivery = ctx.client()?.get(&format!("/api/deliveries/{}", seg(&request_id))).await?;
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => {
                    let mut items = vec![
                        ("request_id", v.request_id.clone()),
                        ("sender_request_id", cell(&v.sender_request_id)),
                        ("source", v.source.clone()),
                        ("received_at", cell(&v.received_at)),
                        ("status", v.status.to_string()),
                        ("code", cell(&v.code)),
                        ("incident", cell(&v.incident_number)),
                        ("queue_id", cell(&v.queue_id)),
                        ("duplicate", v.duplicate.to_string()),
                        ("body_bytes", cell(&v.body_len)),
                        ("latency_ms", format!("{:.2}", v.latency_ms)),
                    ];
                    if let Some(n) = v.refused_count {
                        items.push(("refused_count", n.to_string()));
                        items.push(("last_received_at", cell(&v.last_received_at)));
                    }
                    if let Some(others) = v.other_request_ids.as_ref().filter(|o| !o.is_empty()) {
                        items.push(("same_sender_id", others.join(" ")));
                    }
                    output::pairs(&items);
                    println!(
                        "
payload:"
                    );
                    let raw = v.raw_payload.as_deref().unwrap_or("-");
                    match serde_json::from_str::<Value>(raw) {
                        Ok(j) => println!("{}", serde_json::to_string_pretty(&j).unwrap_or_else(|_| raw.to_string())),
                        Err(_) => println!("{raw}"),
                    }
                }
            }
        }
        WebhookCommand::Events { source, status, tail, .. } => {
            let source = source.unwrap_or_default();
            let path =
                with_query(&format!("/api/webhooks/{}/events", seg(&source)), &[("tail", Some(tail.to_string())), ("status", status)]);
            let v: DeliveryList = ctx.client()?.get(&path).await?;
            match ctx.output {
                Output::Json => output::json(&v),
                Output::Table => {
                    output::table_of(&["TIME", "STATUS", "CODE", "INCIDENT", "REQUEST ID", "SENDER ID"], &v.data, |d| {
                        // An aggregate row says what it stands for where a sender's id would be.
                        let sender = match d.refused_count {
                            Some(n) => refused_summary(n, d),
                            None => cell(&d.sender_request_id),
                        };
                        vec![
                            cell(&d.received_at),
                            d.status.to_string(),
                            cell(&d.code),
                            cell(&d.incident_number),
                            d.request_id.clone(),
                            sender,
                        ]
                    });
                }
            }
        }
        WebhookCommand::Sign { source, secret, verification, token_header, body, timestamp } => {
            let body = if let Some(path) = body.strip_prefix('@') {
                std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?
            } else {
                body
            };
            if serde_json::from_str::<Value>(&body).is_err() {
                eprintln!("warning: the body is not valid JSON; the server will refuse it with invalid_payload");
            }
            let scheme = parse_scheme(&verification_value(Some(&verification), token_header.as_deref())?.unwrap_or_default())?;
            let ts = timestamp.unwrap_or_else(|| chrono::Utc::now().timestamp());
            let message_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
            let signed = scheme.sign(&secret, body.as_bytes(), ts, &message_id);
            let mut url = format!("{}/api/webhooks/{}", ctx.url.trim_end_matches('/'), seg(&source));
            if let Some(token) = &signed.path_token {
                url = format!("{url}/{}", seg(token));
            }
            let mut curl = format!("curl -X POST \"{url}\" \\\n  -H \"Content-Type: application/json\"");
            for (n, v) in &signed.headers {
                curl.push_str(&format!(" \\\n  -H \"{n}: {v}\""));
            }
            curl.push_str(&format!(" \\\n  --data-binary '{}'", body.replace('\'', "'\\''")));
            match ctx.output {
                Output::Json => {
                    let headers: Map<String, Value> = signed.headers.iter().map(|(n, v)| (n.clone(), v.clone().into())).collect();
                    let mut out = json!({"timestamp": ts.to_string(), "headers": headers, "url": url, "curl": curl});
                    // The spec's scheme's fields, as they always were.
                    if scheme == tw_core::Verification::Hmac {
                        out["signature"] = headers.get("X-Webhook-Signature").cloned().unwrap_or_default();
                    }
                    output::json(&out)
                }
                Output::Table => {
                    for (n, v) in &signed.headers {
                        println!("{n}: {v}");
                    }
                    println!();
                    println!("{curl}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn test(ctx: &Ctx, source: &str, secret: Option<String>, scheme: Option<tw_core::Verification>) -> Result<ExitCode> {
    let client = ctx.client()?;
    let Some(secret) = secret else {
        let v: SourceTestResult = client.send_json(Method::POST, &format!("/api/webhooks/{}/test", seg(source)), None).await?;
        let ok = v.ok;
        match ctx.output {
            Output::Json => output::json(&v),
            Output::Table => {
                for c in &v.checks {
                    let mark = if c.result.ok { "ok  " } else { "FAIL" };
                    let detail = c.result.detail.as_ref().or(c.result.error.as_ref()).cloned().unwrap_or_default();
                    println!("{mark}  {:<11} {detail}", c.check);
                }
                if ok {
                    println!("Source '{source}' is ready to receive webhooks.");
                } else {
                    eprintln!("error: source '{source}' failed its test");
                }
            }
        }
        return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    };
    let scheme = match scheme {
        Some(s) => s,
        // Without a key the scheme cannot be read: the spec's, as a sender of the default scheme
        // tests (a source of another scheme answers which one it takes).
        None if ctx.api_key.is_none() => tw_core::Verification::Hmac,
        None => {
            let view: SourceView =
                client.get(&format!("/api/webhooks/{}", seg(source))).await.context("reading the source's verification scheme")?;
            scheme_of(&view)?
        }
    };
    let v = signed_test(&client, source, &scheme, &secret).await?;
    match ctx.output {
        Output::Json => output::json(&v),
        Output::Table => println!("ok: the server verified a test event signed with this secret for '{source}' (nothing stored)"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The scheme a source shows, as the core type that signs.
pub fn scheme_of(view: &SourceView) -> Result<tw_core::Verification> {
    view.verification.verification().map_err(|e| anyhow::anyhow!("unexpected verification from the server: {e}"))
}

/// Posts a test event signed with `secret` by `scheme` to `source`'s public intake, as its
/// sender would: the server verifies it and stores nothing. Its answer, or why it was refused.
pub async fn signed_test(
    client: &crate::client::Client,
    source: &str,
    scheme: &tw_core::Verification,
    secret: &str,
) -> Result<IntakeAnswer> {
    let now = chrono::Utc::now();
    let name = tw_core::SourceName::parse(source).map_err(|e| anyhow::anyhow!("invalid source name '{source}': {e}"))?;
    let body = serde_json::to_vec(&tw_server::intake::test_event(&name, now))?;
    let signed = scheme.sign(secret, &body, now.timestamp(), &format!("msg_{}", uuid::Uuid::new_v4().simple()));
    let mut path = format!("/api/webhooks/{}", seg(source));
    if let Some(token) = &signed.path_token {
        path = format!("{path}/{}", seg(token));
    }
    match client.post_raw(&path, body, signed.headers).await {
        Ok((_, v)) => serde_json::from_value(v).context("unexpected answer from the server (another version?)"),
        Err(e) => Err(e.context(format!("test delivery to '{source}' was refused"))),
    }
}

/// What to paste into the sending tool's form, for the source's scheme (table output only: the
/// JSON answer already holds the secret and the scheme).
fn print_recipe(ctx: &Ctx, v: &SourceView, secret: &str) -> Result<()> {
    if ctx.output != Output::Table {
        return Ok(());
    }
    let name = tw_core::SourceName::parse(&v.source).map_err(|e| anyhow::anyhow!("{e}"))?;
    let lines = tw_server::sources::recipe(&scheme_of(v)?, &ctx.url, &name, secret);
    println!();
    println!("Paste into the sending tool ({} verification):", v.verification.scheme_name());
    let width = lines.iter().map(|l| l.label.len()).max().unwrap_or(0);
    for l in lines {
        println!("  {:<width$}  {}", l.label, l.value);
    }
    Ok(())
}

fn print_source(ctx: &Ctx, v: &SourceView, headline: &str) {
    match ctx.output {
        Output::Json => output::json(v),
        Output::Table => {
            if !headline.is_empty() {
                println!("{headline}");
            }
            let mapping = Some(&v.severity_mapping)
                .filter(|m| !m.is_empty())
                .map(|m| m.iter().map(|(k, s)| format!("{k}={}", s.as_str())).collect::<Vec<_>>().join(", "))
                .unwrap_or_else(|| "-".into());
            let mut items = vec![
                ("source", v.source.clone()),
                ("enabled", v.enabled.to_string()),
                ("mode", cell(&v.mode)),
                ("format", cell(&v.format)),
                ("auto_triage", v.auto_triage.to_string()),
                ("playbook", cell(&v.playbook)),
                ("severity_mapping", mapping),
                ("timestamp_tolerance", format!("{}s", v.timestamp_tolerance_secs)),
                ("max_body_bytes", v.max_body_bytes.to_string()),
                (
                    "rate_limit",
                    match v.rate_limit {
                        Some(r) => format!("{}/s, burst {}", r.per_second, r.burst),
                        None => "none".into(),
                    },
                ),
                ("verification", v.verification.label()),
                ("allowed_ips", if v.allowed_ips.is_empty() { "any".into() } else { v.allowed_ips.join(", ") }),
                ("mapping", v.mapping.as_ref().and_then(|m| serde_json::to_string(m).ok()).unwrap_or_else(|| "-".into())),
                ("managed_by_config", v.managed_by_config.to_string()),
                ("secret_fingerprint", v.secret_fingerprint.clone()),
                ("created_at", cell(&v.created_at)),
                ("last_delivery_at", cell(&v.last_delivery_at)),
                ("deliveries", v.delivery_count.to_string()),
                ("errors", v.error_count.to_string()),
                ("webhook_path", v.webhook_path.clone()),
            ];
            if let Some(secret) = &v.secret {
                items.push(("secret", format!("{secret}  (shown once: store it now)")));
            }
            output::pairs(&items);
        }
    }
}

/// `webhook reprocess`: calls the API until it has no `next`, adding up what every call did.
async fn reprocess(ctx: &Ctx, source: &str, since: Option<String>, dead_letters: bool) -> Result<()> {
    let client = ctx.client()?;
    let path = format!("/api/webhooks/{}/reprocess", seg(source));
    let mut body = json!({"dead_letters": dead_letters});
    if let Some(s) = since {
        body["since"] = s.into();
    }
    let mut total: Option<ReprocessResult> = None;
    loop {
        let v: ReprocessResult = client.send_json(Method::POST, &path, Some(&body)).await?;
        let next = v.next.clone();
        // The server resolved `since` once: later calls send that time, so the window does not move.
        match v.since {
            Some(t) => body["since"] = t.to_rfc3339().into(),
            None => {
                body.as_object_mut().map(|b| b.remove("since"));
            }
        }
        total = Some(match total.take() {
            None => v,
            Some(mut t) => {
                let (i, d) = (&mut t.incidents, &v.incidents);
                (i.scanned, i.updated, i.unchanged, i.conflicts, i.failed) = (
                    i.scanned + d.scanned,
                    i.updated + d.updated,
                    i.unchanged + d.unchanged,
                    i.conflicts + d.conflicts,
                    i.failed + d.failed,
                );
                let (l, d) = (&mut t.dead_letters, &v.dead_letters);
                (l.scanned, l.created, l.duplicates, l.still_failing) =
                    (l.scanned + d.scanned, l.created + d.created, l.duplicates + d.duplicates, l.still_failing + d.still_failing);
                t.conflicting.extend(v.conflicting);
                t
            }
        });
        match next {
            Some(cursor) => {
                body["cursor"] = cursor.into();
                if ctx.output == Output::Table {
                    let t = total.as_ref().map_or(0, |t| t.incidents.scanned + t.dead_letters.scanned);
                    eprintln!("... {t} events so far");
                }
            }
            None => break,
        }
    }
    let Some(mut t) = total else { bail!("the server answered nothing") };
    t.next = None;
    match ctx.output {
        Output::Json => output::json(&t),
        Output::Table => {
            let window = t.since.map(|s| format!(" (received since {})", cell(&s))).unwrap_or_default();
            println!("Reprocessed source '{}'{window}.", t.source);
            let i = &t.incidents;
            println!(
                "incidents:    {} scanned, {} updated, {} unchanged, {} conflicts, {} failed",
                i.scanned, i.updated, i.unchanged, i.conflicts, i.failed
            );
            if dead_letters {
                let d = &t.dead_letters;
                println!(
                    "dead letters: {} scanned, {} created, {} duplicates, {} still failing",
                    d.scanned, d.created, d.duplicates, d.still_failing
                );
            }
            if i.failed > 0 {
                println!("Incidents whose payload no longer normalizes were left as they were (see the server log).");
            }
            if !t.conflicting.is_empty() {
                println!("Left as they were, their new alert id belongs to another incident:");
                output::table_of(&["INCIDENT", "ALERT ID", "HELD BY"], &t.conflicting, |c| {
                    vec![c.incident_number.clone(), c.external_id.clone(), c.held_by.clone()]
                });
            }
        }
    }
    Ok(())
}
