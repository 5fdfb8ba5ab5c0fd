//! The product run: the real server under load, its backlogs followed until they drain, and
//! its incidents counted.

use super::database::BenchDatabase;
use super::load::{self, Load, Target};
use super::payloads::Payloads;
use super::progress::Progress;
use super::report::{IncidentsCheck, RunReport, TriageDrain};
use super::servers::{self, Ready, ServerChild};
use super::{DRAIN_POLL, Plan, READY_WITHIN, SECRET, SOURCE, STALLED_AFTER};
use crate::client::Client;
use crate::client::with_query;
use crate::commands::seg;
use crate::commands::serve::StoreArgs;
use anyhow::{Context, Result, anyhow, bail};
use reqwest::Method;
use serde_json::json;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tw_core::IncidentNumber;
use tw_core::Secret;
use tw_server::api::incidents::IncidentList;

/// What the product run yields.
pub struct ProductRun {
    pub run: RunReport,
    pub incidents: IncidentsCheck,
    pub triage: Option<TriageDrain>,
    /// The server's base URL.
    pub url: String,
}

/// Starts `tw-cli serve` on a fresh store with an admin key made in-process, registers the
/// source, loads it, checks it, and stops it.
pub async fn started(
    plan: &Plan,
    listen: Option<SocketAddr>,
    cpu: Option<usize>,
    tmp: &Path,
    database: Option<&BenchDatabase>,
    payloads: Arc<Payloads>,
) -> Result<ProductRun> {
    let data_dir = tmp.join("data");
    let database_url = database.map(|d| d.url.clone());
    // The key is made exactly as `tw-cli api-key create` makes it, before the server starts; the
    // store settings other than where it is do not matter for that.
    let store = StoreArgs {
        data_dir: data_dir.clone(),
        database_url: database_url.clone(),
        db_pool_size: 2,
        db_connect_timeout_secs: 5,
        db_statement_timeout_secs: 10,
    };
    let (key, _) = crate::commands::new_api_key("bench", "admin", &store).await.context("cannot create the bench's API key")?;
    let addr = servers::listen_addr(listen)?;
    let mut args: Vec<OsString> = vec!["serve".into(), "--data-dir".into(), data_dir.into(), "--listen".into(), addr.to_string().into()];
    // Every connection of the load comes from one address: held to the per-client cap, a
    // --concurrency above it would measure refusals. The server's own cap still applies.
    args.extend(["--max-connections-per-client".into(), "1000000".into()]);
    if let Some(url) = &database_url {
        args.extend(["--database-url".into(), url.into()]);
    }
    let mut child = ServerChild::spawn("server", &args, addr, &tmp.join("server.log"), cpu)?;
    child.wait_ready(Ready::Health, READY_WITHIN).await?;
    let url = format!("http://{addr}");
    let api = Client::new(&url, Some(key.plaintext))?;
    let mut source = json!({"source": SOURCE, "secret": SECRET, "mode": plan.mode});
    if plan.auto_triage {
        source["auto_triage"] = true.into();
        source["playbook"] = "phishing_triage".into();
    }
    api.call(Method::POST, "/api/webhooks", Some(&source)).await.context("cannot register the source 'bench'")?;
    let target = Target::new(addr, &addr.to_string(), &format!("/api/webhooks/{SOURCE}"))?;
    let (outcome, incidents, triage) = measure(plan, &api, true, target, SECRET, SOURCE, payloads).await?;
    let peak_rss_bytes = child.peak_rss_bytes();
    child.stop().await?;
    Ok(ProductRun { run: RunReport { outcome, peak_rss_bytes }, incidents, triage, url })
}

/// Loads a server that is already running (no peak memory: it is not the bench's child).
pub async fn running(
    plan: &Plan,
    url: &str,
    source: &str,
    secret: &str,
    api_key: Option<String>,
    payloads: Arc<Payloads>,
) -> Result<ProductRun> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("--url '{url}' is not a URL"))?;
    if parsed.scheme() != "http" {
        bail!("--url {url}: the bench speaks plain HTTP only (run it next to the server, or behind the TLS terminator)");
    }
    let host = parsed.host_str().with_context(|| format!("--url {url} has no host"))?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let authority = parsed.port().map_or_else(|| host.to_string(), |p| format!("{host}:{p}"));
    let counting = api_key.is_some();
    let api = Client::new(url, api_key)?;
    // A wrong name or secret shows here, before the load, in the server's own words.
    crate::commands::webhook::signed_test(&api, source, &tw_core::Verification::Hmac, secret).await?;
    let addr = resolve(host, port).await?;
    let path = format!("{}/api/webhooks/{}", parsed.path().trim_end_matches('/'), seg(source));
    let target = Target::new(addr, &authority, &path)?;
    let (outcome, incidents, triage) = measure(plan, &api, counting, target, secret, source, payloads).await?;
    Ok(ProductRun { run: RunReport { outcome, peak_rss_bytes: None }, incidents, triage, url: url.to_string() })
}

/// The first address of `host` that accepts a connection.
async fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.trim_start_matches('[').trim_end_matches(']'), port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .collect();
    for addr in &addrs {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(*addr);
        }
    }
    bail!("cannot connect to {host}:{port}")
}

/// Loads the product, waits for its backlogs, and counts its incidents (when `counting`: the API
/// needs a key for that).
async fn measure(
    plan: &Plan,
    api: &Client,
    counting: bool,
    target: Target,
    secret: &str,
    source: &str,
    payloads: Arc<Payloads>,
) -> Result<(load::Outcome, IncidentsCheck, Option<TriageDrain>)> {
    // The newest incident before the load: the check counts the ones after it, row by row.
    let before = if counting { Some(newest_incident(api, source).await?) } else { None };
    let started = Instant::now();
    let load = Load { target, secret: Arc::new(Secret::new(secret)), concurrency: plan.concurrency, amount: plan.amount, payloads };
    let outcome = load::run(load, "product").await;
    let acknowledged = outcome.ok();
    // 202: queued (an async source, or a saturated sync intake); its incident comes later.
    if outcome.statuses.contains_key(&202) || plan.mode == "async" {
        wait_drained(api, "events").await?;
    }
    let incidents = match before {
        Some(before) => IncidentsCheck::Counted { acknowledged, stored: count_rows_after(api, source, before).await? },
        None => IncidentsCheck::Skipped("no API key to count them with (give --api-key or TW_API_KEY, any scope)".into()),
    };
    let triage = if plan.auto_triage {
        let done = wait_drained(api, "triage").await?;
        let incidents = count_incidents(api, source, None).await?;
        let triaged = count_incidents(api, source, Some("triaged")).await?;
        Some(TriageDrain { incidents, triaged, seconds: done.duration_since(started).as_secs_f64() })
    } else {
        None
    };
    Ok((outcome, incidents, triage))
}

/// The number of the newest incident of `source`, if it has any.
async fn newest_incident(api: &Client, source: &str) -> Result<Option<IncidentNumber>> {
    let v: IncidentList =
        api.get(&with_query("/api/incidents", &[("source", Some(source.to_string())), ("per_page", Some("1".into()))])).await?;
    v.data.first().map(|i| parse_number(&i.incident_number)).transpose()
}

fn parse_number(text: &str) -> Result<IncidentNumber> {
    text.parse().map_err(|_| anyhow!("the API answered an incident number '{text}' it cannot have made"))
}

/// The incidents of `source` newer than `after`, counted one by one by walking the listing's
/// pages (cursor, 200 a page), not taken from `meta.total`: the data-loss check must count the
/// stored rows themselves, not the store's own counter of them.
async fn count_rows_after(api: &Client, source: &str, after: Option<IncidentNumber>) -> Result<u64> {
    let mut counted = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path =
            with_query("/api/incidents", &[("source", Some(source.to_string())), ("per_page", Some("200".into())), ("cursor", cursor)]);
        let v: IncidentList = api.get(&path).await.context("cannot count the incidents")?;
        for item in &v.data {
            let number = parse_number(&item.incident_number)?;
            if after.is_some_and(|a| number <= a) {
                return Ok(counted);
            }
            counted += 1;
        }
        match v.meta.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(counted),
        }
    }
}

/// The number of `source`'s incidents (with `status`), from the API's list total.
async fn count_incidents(api: &Client, source: &str, status: Option<&str>) -> Result<u64> {
    let params = [("source", Some(source.to_string())), ("per_page", Some("1".into())), ("status", status.map(str::to_string))];
    let v: IncidentList = api.get(&with_query("/api/incidents", &params)).await.context("cannot count the incidents")?;
    Ok(v.meta.total)
}

/// The `webhook_queue_depth{kind="<kind>"}` gauge of the server's /metrics.
async fn queue_depth(api: &Client, kind: &str) -> Result<u64> {
    let (_, v) = api.call(Method::GET, "/metrics", None).await.context("cannot read /metrics to follow the backlog")?;
    let text = v.as_str().unwrap_or_default();
    let label = format!("kind=\"{kind}\"");
    text.lines()
        .filter(|l| l.starts_with("webhook_queue_depth{") && l.contains(&label))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|n| n as u64)
        .ok_or_else(|| anyhow!("/metrics has no webhook_queue_depth for {kind}"))
}

/// Waits until the server's `kind` backlog (events or triage) is empty; when it became so.
/// A backlog that does not shrink for [`STALLED_AFTER`] is an error.
async fn wait_drained(api: &Client, kind: &'static str) -> Result<Instant> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let first = queue_depth(api, kind).await?;
    if first == 0 {
        return Ok(Instant::now());
    }
    let depth = Arc::new(AtomicU64::new(first));
    let (label, items) = if kind == "triage" { ("triage", "jobs") } else { ("queue", "events") };
    let progress = Progress::start(
        label,
        {
            let depth = depth.clone();
            move || depth.load(Ordering::Relaxed)
        },
        move |_, left, rate| format!("{left} {items} left  {rate:>8.0}/s"),
    );
    let (mut lowest, mut progressed) = (first, Instant::now());
    let result = loop {
        tokio::time::sleep(DRAIN_POLL).await;
        let now_depth = match queue_depth(api, kind).await {
            Ok(d) => d,
            Err(e) => break Err(e),
        };
        depth.store(now_depth, Ordering::Relaxed);
        if now_depth == 0 {
            break Ok(Instant::now());
        }
        if now_depth < lowest {
            (lowest, progressed) = (now_depth, Instant::now());
        } else if progressed.elapsed() > STALLED_AFTER {
            break Err(anyhow!(
                "the {kind} backlog stopped draining: {now_depth} {items} left, none done in {} s",
                STALLED_AFTER.as_secs()
            ));
        }
    };
    progress.finish().await;
    result
}
