//! Deliveries: the recent deliveries of every source (or one), filtered by status and error code,
//! kept live by server-sent events; one delivery's page; reprocessing a source's dead letters.
//!
//! The list reads the store's delivery records through the query the API's
//! `GET /api/webhooks/{source}/events` uses (the newest [`LIST_LIMIT`] of each source, merged);
//! a delivery's page is `GET /api/deliveries/{request_id}` ([`routes::events::find`]). A record
//! holds no secret, token or signature, only which check failed (its `code`), so neither can this
//! page.
//!
//! The live stream (`/console/deliveries/stream`) looks for new records every [`POLL`] and sends
//! each as a rendered table row (`delivery` event); the page's script prepends it. Like the API's
//! log stream (`routes::logs`) it is bounded: [`STREAMS_PER_SESSION`] per session and
//! [`MAX_STREAMS`] per process at once (429 past that), it ends after [`MAX_LIFETIME`] (so an
//! unattended tab does not keep its session alive) or when the session or its key ends, with a
//! last `end` event saying why (`max_lifetime`, `signed_out`, `key_refused`, `stopping`). Without
//! JavaScript the page has a refresh link.

use super::views::{Nav, Viewer, csrf_field, layout, time};
use super::{Console, PageError};
use crate::ApiError;
use crate::api::deliveries::Delivery;
use crate::api::incidents::Incident;
use crate::api::reprocess::ReprocessResult;
use crate::routes::{events, sources as source_service};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::stream;
use maud::{Markup, html};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};
use tw_core::SourceName;
use tw_store::DeliveryFilter;

/// The most rows the list shows (and the most read per source).
pub const LIST_LIMIT: u32 = 100;
/// The most sources one list or poll reads.
const MAX_SOURCES: usize = 200;
/// Rows read per source at each poll of a live stream.
const POLL_LIMIT: u32 = 20;
/// How often (real time) a live stream looks for new deliveries and at the clock.
pub const POLL: std::time::Duration = std::time::Duration::from_secs(2);
/// Live streams one session may hold open at once.
pub const STREAMS_PER_SESSION: usize = 2;
/// Live streams this process holds open at once, all sessions together.
pub const MAX_STREAMS: usize = 32;
/// The longest a live stream lasts; the page then offers a refresh.
pub const MAX_LIFETIME: TimeDelta = TimeDelta::minutes(10);
/// The most payload characters a delivery's page shows.
pub const PAYLOAD_SHOWN: usize = 64 * 1024;

/// The list's filters, as the GET form sends them.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    pub source: Option<String>,
    pub status: Option<String>,
    pub code: Option<String>,
    /// The stream only: the newest time the page already shows (RFC 3339).
    pub after: Option<String>,
}

/// Which deliveries the list shows.
#[derive(Debug, Clone)]
pub struct Filter {
    pub source: Option<SourceName>,
    pub status: DeliveryFilter,
    /// An error code, exactly (`signature_mismatch`).
    pub code: Option<String>,
}

impl Filter {
    /// The filters of a request; a bad status is a 422 (the API's message), a source name that
    /// cannot be one is 404.
    pub fn parse(p: &ListParams) -> Result<Filter, ApiError> {
        let source = match p.source.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(source_service::parse_name(s)?),
        };
        let status = events::parse_status(p.status.as_deref().map(str::trim))?;
        let code = p.code.as_deref().map(str::trim).filter(|c| !c.is_empty()).map(|c| c.chars().take(64).collect());
        Ok(Filter { source, status, code })
    }

    fn matches(&self, d: &tw_store::Delivery) -> bool {
        self.code.as_deref().is_none_or(|c| d.code.as_deref() == Some(c))
    }

    fn status_str(&self) -> &'static str {
        match self.status {
            DeliveryFilter::All => "all",
            DeliveryFilter::Ok => "ok",
            DeliveryFilter::Failed => "failed",
        }
    }

    /// The filters as a query string (`source=edr&status=failed`), for links.
    pub fn query(&self) -> String {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(s) = &self.source {
            q.push(("source", s.to_string()));
        }
        if self.status != DeliveryFilter::All {
            q.push(("status", self.status_str().to_string()));
        }
        if let Some(c) = &self.code {
            q.push(("code", c.clone()));
        }
        serde_urlencoded::to_string(q).unwrap_or_default()
    }
}

/// The newest deliveries matching `filter`: the newest `per_source` of each source (the API's
/// events query), merged newest first. Bounded: at most [`MAX_SOURCES`] × `per_source` rows.
/// `listed`: the sources, when the caller has just read them.
async fn recent(
    state: &AppState,
    filter: &Filter,
    per_source: u32,
    listed: Option<&[tw_core::SourceName]>,
) -> Result<Vec<tw_store::Delivery>, ApiError> {
    let names = match (&filter.source, listed) {
        (Some(name), _) => vec![source_service::load(state, name).await?.name],
        (None, Some(listed)) => listed.iter().take(MAX_SOURCES).cloned().collect(),
        (None, None) => state.store.list_sources().await?.into_iter().take(MAX_SOURCES).map(|s| s.name).collect(),
    };
    let mut rows = Vec::new();
    for name in &names {
        rows.extend(state.store.list_deliveries(name, filter.status, per_source).await?.into_iter().filter(|d| filter.matches(d)));
    }
    rows.sort_by(|a, b| b.received_at.cmp(&a.received_at).then_with(|| b.request_id.cmp(&a.request_id)));
    Ok(rows)
}

/// A path segment with everything but `[A-Za-z0-9_.-]` percent-encoded.
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"_.-".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// A delivery's page.
pub fn detail_href(request_id: &str) -> String {
    format!("/console/deliveries/{}", segment(request_id))
}

/// An incident's page (built by the incidents pages).
pub fn incident_href(number: &str) -> String {
    format!("/console/incidents/{}", segment(number))
}

fn is_ok(status: u16) -> bool {
    (200..300).contains(&status)
}

/// `1.2 KiB`.
pub fn size(bytes: Option<u64>) -> String {
    match bytes {
        None => "—".into(),
        Some(b) if b < 1024 => format!("{b} B"),
        Some(b) if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        Some(b) => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

fn status_badge(d: &Delivery) -> Markup {
    html! {
        @if is_ok(d.status) { span.badge.on { "ok" } } @else { span.badge.failed { "failed" } }
        " " (d.status)
    }
}

/// What a delivery made: its incident (a link), its queued event, or nothing.
fn outcome(d: &Delivery) -> Markup {
    html! {
        @if let Some(n) = &d.incident_number {
            a href=(incident_href(n)) { (n) }
            @if d.duplicate { " " span.muted { "(duplicate)" } }
        } @else if let Some(q) = &d.queue_id {
            span.muted { "queued " } code { (q) }
        } @else {
            span.muted { "—" }
        }
    }
}

/// One row of the list (also what the live stream sends).
pub fn row(d: &Delivery) -> Markup {
    html! {
        tr data-id=(d.request_id) {
            td { (time(d.received_at)) }
            td { code { (d.source) } }
            td { a href=(detail_href(&d.request_id)) { code { (d.request_id) } } }
            td { (status_badge(d)) }
            td {
                @if let Some(c) = &d.code { code { (c) } }
                @if let Some(n) = d.refused_count { " " span.muted title="Refused requests counted in this row" { "×" (n) } }
            }
            td { (outcome(d)) }
            td.num { (size(d.body_len)) }
            td.num { (format!("{:.1} ms", d.latency_ms)) }
        }
    }
}

/// The list page: the filter form, the rows (newest first), a refresh link; the script keeps it
/// live from `data-stream`.
pub fn list_page(rows: &[Delivery], sources: &[String], filter: &Filter, viewer: &Viewer) -> Markup {
    let query = filter.query();
    let here = if query.is_empty() { "/console/deliveries".to_string() } else { format!("/console/deliveries?{query}") };
    let newest = rows.first().map(|d| d.received_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    let mut stream_query = query.clone();
    if let Some(n) = &newest {
        let after = serde_urlencoded::to_string([("after", n)]).unwrap_or_default();
        stream_query = if stream_query.is_empty() { after } else { format!("{stream_query}&{after}") };
    }
    let stream = format!("/console/deliveries/stream?{stream_query}");
    let selected = filter.source.as_ref().map(|s| s.to_string());
    layout(
        "Deliveries",
        Nav::Deliveries,
        Some(viewer),
        html! {
            div.toolbar {
                h1 { "Deliveries" }
                p.live { a href=(here) { "Refresh" } " " span.muted id="live-status" aria-live="polite" {} }
            }
            form.filters method="get" action="/console/deliveries" {
                label { "Source "
                    select name="source" {
                        option value="" selected[selected.is_none()] { "All sources" }
                        @for s in sources { option value=(s) selected[selected.as_deref() == Some(s.as_str())] { (s) } }
                    }
                }
                label { "Status "
                    select name="status" {
                        @for (v, l) in [("all", "All"), ("ok", "OK"), ("failed", "Failed")] {
                            option value=(v) selected[filter.status_str() == v] { (l) }
                        }
                    }
                }
                label { "Error code " input type="text" name="code" value=(filter.code.as_deref().unwrap_or_default()) placeholder="signature_mismatch" size="22"; }
                button type="submit" { "Filter" }
            }
            table.deliveries {
                thead { tr {
                    th scope="col" { "Time" } th scope="col" { "Source" } th scope="col" { "Request id" } th scope="col" { "Status" }
                    th scope="col" { "Code" } th scope="col" { "Made" } th.num scope="col" { "Body" } th.num scope="col" { "Latency" }
                } }
                tbody id="deliveries" data-stream=(stream) {
                    @for d in rows { (row(d)) }
                    @if rows.is_empty() {
                        tr.empty { td colspan="8" {
                            @if sources.is_empty() {
                                "No sources yet: " a href="/console/sources" { "add a source" } ", then point a sender at its URL."
                            } @else if filter.query().is_empty() {
                                "No deliveries yet. Send one from the sender, or use \u{201c}Send test event\u{201d} on " a href="/console/sources" { "Sources" } " (a test is not stored)."
                            } @else {
                                "No delivery matches these filters. " a href="/console/deliveries" { "Show all" }
                            }
                        } }
                    }
                }
            }
            p.muted { "The newest " (LIST_LIMIT) " deliveries of each source are read; refused requests past 5 a minute per source and code are counted into one row." }
        },
    )
}

/// `GET /console/deliveries`.
pub async fn list(State(state): State<AppState>, console: Console, Query(p): Query<ListParams>) -> Result<Markup, PageError> {
    let filter = Filter::parse(&p).map_err(|e| console.error(e))?;
    let names: Vec<tw_core::SourceName> =
        state.store.list_sources().await.map_err(|e| console.error(ApiError::from(e)))?.into_iter().map(|s| s.name).collect();
    let sources: Vec<String> = names.iter().map(ToString::to_string).collect();
    let mut rows = recent(&state, &filter, LIST_LIMIT, Some(&names)).await.map_err(|e| console.error(e))?;
    rows.truncate(LIST_LIMIT as usize);
    let rows: Vec<Delivery> = rows.into_iter().map(Delivery::from).collect();
    Ok(list_page(&rows, &sources, &filter, &console.viewer))
}

/// The payload as shown: pretty-printed when it is JSON, cut at [`PAYLOAD_SHOWN`] characters.
pub fn pretty_payload(raw: &str) -> (String, bool) {
    let pretty = serde_json::from_str::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| raw.to_string());
    match pretty.char_indices().nth(PAYLOAD_SHOWN) {
        Some((at, _)) => (pretty[..at].to_string(), true),
        None => (pretty, false),
    }
}

/// What the queue says of a delivery's queued event.
pub struct QueueInfo {
    pub status: &'static str,
    pub attempts: u32,
    pub error: Option<String>,
}

/// The normalized alert of the incident a delivery made, as the incident holds it now (read from
/// the incident: a later delivery, a reprocess or a playbook may have changed it since).
fn normalized(i: &Incident) -> Markup {
    html! {
        dl.facts {
            dt { "Title" } dd { (i.title) }
            dt { "Severity" } dd {
                span class=(format!("badge sev-{}", i.severity.as_str())) { (i.severity.as_str()) }
                @if let Some(v) = &i.vendor_severity { " " span.muted { "(vendor: " (v) ")" } }
            }
            dt { "Format" } dd { (i.format.as_str()) }
            dt { "Event type" } dd { (i.event_type.as_deref().unwrap_or("—")) }
            dt { "Event time" } dd { (super::views::maybe_time(i.event_time, "not given")) }
            dt { "Alert id" } dd { @match &i.external_id { Some(x) => code { (x) }, None => span.muted { "none" } } }
            @if let Some(desc) = &i.description { dt { "Description" } dd { (desc) } }
            dt { "Entities" } dd {
                @if i.entities.is_empty() { span.muted { "none found" } } @else {
                    ul.entities { @for e in &i.entities {
                        li { (e.kind.as_str()) ": " code { (e.value) } @if let Some(r) = &e.role { " " span.muted { "(" (r) ")" } } }
                    } }
                }
            }
        }
        p.muted { "As " a href=(incident_href(&i.incident_number)) { (i.incident_number) } " holds it now." }
    }
}

/// One delivery's page; `incident` is the one it made (its normalized alert is shown beside the
/// payload).
pub fn detail_page(d: &Delivery, queue: Option<&QueueInfo>, incident: Option<&Incident>, viewer: &Viewer) -> Markup {
    let failed = !is_ok(d.status);
    layout(
        "Delivery",
        Nav::Deliveries,
        Some(viewer),
        html! {
            h1 { "Delivery " code { (d.request_id) } }
            @if failed {
                div.notice.error role="alert" {
                    "Refused with " (d.status)
                    @if let Some(c) = &d.code { ": " code { (c) } }
                    "."
                }
            }
            div.panel {
                dl.facts {
                    dt { "Received" } dd { (time(d.received_at))
                        @if let Some(last) = d.last_received_at { " to " (time(last)) } }
                    dt { "Request id" } dd { code { (d.request_id) } }
                    dt { "Sender's request id" } dd {
                        @if let Some(s) = &d.sender_request_id { code { (s) } @if !d.verified { " " span.muted { "(unverified: the sender's word)" } } }
                        @else { span.muted { "none sent" } }
                    }
                    dt { "Source" } dd { a href=(format!("/console/deliveries?source={}", d.source)) { code { (d.source) } } }
                    dt { "Status" } dd { (status_badge(d)) }
                    dt { "Failed check" } dd {
                        @if let Some(c) = &d.code { code { (c) } } @else { span.muted { "none" } }
                    }
                    dt { "Signature" } dd { (if d.verified { "verified" } else { "not verified" }) }
                    @if let Some(n) = d.refused_count { dt { "Requests counted" } dd { (n) " refused requests in this row" } }
                    dt { "Body size" } dd { (size(d.body_len)) }
                    dt { "Latency" } dd { (format!("{:.1} ms", d.latency_ms)) }
                    dt { "Incident" } dd {
                        @if let Some(n) = &d.incident_number {
                            a href=(incident_href(n)) { (n) } @if d.duplicate { " " span.muted { "(a duplicate of it)" } }
                        } @else { span.muted { "none" } }
                    }
                    @if let Some(q) = &d.queue_id {
                        dt { "Queued event" } dd {
                            code { (q) }
                            @if let Some(info) = queue {
                                " — " (info.status) ", " (info.attempts) " attempts"
                                @if let Some(e) = &info.error { dd.fail { (e) } }
                            }
                        }
                    }
                    @if let Some(others) = &d.other_request_ids {
                        @if !others.is_empty() {
                            dt { "Same sender id" } dd { @for o in others { a href=(detail_href(o)) { code { (o) } } " " } }
                        }
                    }
                }
            }
            @if viewer.admin && d.incident_number.is_none() {
                div.panel {
                    h2 { "Dead letters" }
                    p { "Accepted events that did not normalize are kept as dead letters of the source. After fixing its mapping or format, normalize them again: each that now normalizes becomes an incident." }
                    form method="post" action=(format!("/console/sources/{}/reprocess-dead-letters", d.source)) {
                        (csrf_field(&viewer.csrf))
                        button type="submit" { "Reprocess dead letters of " (d.source) }
                    }
                }
            }
            div.panel {
                h2 { "Headers" }
                @match d.headers.as_deref() {
                    Some(h) if !h.is_empty() => {
                        table.headers {
                            @for line in h.lines() {
                                @let (name, value) = line.split_once(": ").unwrap_or((line, ""));
                                tr { th scope="row" { code { (name) } } td { code { (value) } } }
                            }
                        }
                        p.muted { "Credentials are never kept: signature, token, key and cookie headers show as [redacted]; of a request whose signature did not verify, only the names." }
                    }
                    _ => { p.muted { "Not kept: an accepted delivery keeps its headers only when it was its source's first of that second (a refused one always does), and an aggregate of refused requests keeps none." } }
                }
            }
            div.beside {
                section {
                    h2 { "Payload" }
                    @match d.raw_payload.as_deref() {
                        Some(raw) => {
                            @let (text, cut) = pretty_payload(raw);
                            pre.payload { code { (text) } }
                            @if cut { p.muted { "Cut at " (PAYLOAD_SHOWN / 1024) " KiB characters." } }
                        }
                        None => { p.muted { "Not stored (refused before its body was read, or pruned)." } }
                    }
                }
                @if let Some(i) = incident {
                    section.normalized {
                        h2 { "Normalized alert" }
                        div.panel { (normalized(i)) }
                    }
                }
            }
            p { a href="/console/deliveries" { "Back to deliveries" } }
        },
    )
}

/// `GET /console/deliveries/{request_id}`.
pub async fn detail(State(state): State<AppState>, console: Console, Path(request_id): Path<String>) -> Result<Markup, PageError> {
    let d = events::find(&state, &request_id).await.map_err(|e| console.error(e))?;
    let queue = match &d.queue_id {
        Some(id) => state.store.queue_entry(id).await.map_err(|e| console.error(ApiError::from(e)))?.map(|q| QueueInfo {
            status: match q.status {
                tw_store::QueueStatus::Pending => "pending",
                tw_store::QueueStatus::Processed => "processed",
                tw_store::QueueStatus::Failed => "failed (dead letter)",
            },
            attempts: q.attempts,
            error: q.error,
        }),
        None => None,
    };
    // The incident it made, read from the incident (a deleted one is simply not shown).
    let incident = match d.incident_id {
        Some(id) => match crate::routes::incidents::incident(&state, &id.to_string()).await {
            Ok(i) => Some(i),
            Err(ApiError::NotFound(_)) => None,
            Err(e) => return Err(console.error(e)),
        },
        None => None,
    };
    Ok(detail_page(&d, queue.as_ref(), incident.as_ref(), &console.viewer))
}

/// The result of reprocessing a source's dead letters.
pub fn reprocessed_page(r: &ReprocessResult, viewer: &Viewer) -> Markup {
    let d = &r.dead_letters;
    layout(
        "Dead letters reprocessed",
        Nav::Deliveries,
        Some(viewer),
        html! {
            h1 { "Dead letters of " code { (r.source) } " reprocessed" }
            div.notice.ok {
                (d.scanned) " read: " (d.created) " became incidents, " (d.duplicates) " were duplicates, " (d.still_failing) " still fail."
            }
            @if let Some(next) = &r.next {
                // Goes on after the letters read (those still failing stay where they are).
                form method="post" action=(format!("/console/sources/{}/reprocess-dead-letters", segment(&r.source))) {
                    (csrf_field(&viewer.csrf))
                    input type="hidden" name="cursor" value=(next);
                    p { "More remain. " button type="submit" { "Go on" } }
                }
            }
            p { a href=(format!("/console/deliveries?source={}", r.source)) { "Back to the deliveries of " (r.source) } }
        },
    )
}

/// `POST /console/sources/{name}/reprocess-dead-letters` (admin): one bounded step of
/// `POST /api/webhooks/{source}/reprocess` with `dead_letters: true`, audited as the API's.
pub async fn reprocess(
    State(state): State<AppState>,
    console: Console,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Markup, PageError> {
    let form = console.form(&body)?;
    let who = console.admin()?;
    let name = source_service::parse_name(&name).map_err(|e| console.error(e))?;
    let source = source_service::load(&state, &name).await.map_err(|e| console.error(e))?;
    // Dead letters only (the incidents' cursor already past its end), from where the last step
    // stopped when the form says.
    use crate::intake::reprocess::Cursor;
    let cursor = match form.get("cursor").filter(|c| !c.is_empty()) {
        None => Cursor::DeadLetters(None),
        Some(text) => match Cursor::parse(text) {
            Some(c @ Cursor::DeadLetters(_)) => c,
            _ => return Err(console.error(crate::ApiError::field("cursor", "must be the `next` of a previous step"))),
        },
    };
    let result = source_service::reprocess_source(&state, &who, &source, None, true, cursor, crate::intake::reprocess::LIMIT)
        .await
        .map_err(|e| console.error(e))?;
    Ok(reprocessed_page(&result, &console.viewer))
}

/// Open live streams per session (by the SHA-256 of its id), all sessions together at most
/// [`MAX_STREAMS`].
static STREAMS: LazyLock<Mutex<HashMap<[u8; 32], usize>>> = LazyLock::new(Default::default);

/// A place among the open live streams, given back when the stream ends.
struct StreamSlot([u8; 32]);

impl StreamSlot {
    fn take(session_id: &str) -> Option<StreamSlot> {
        let key: [u8; 32] = Sha256::digest(session_id.as_bytes()).into();
        let mut t = STREAMS.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = t.values().sum();
        let mine = t.get(&key).copied().unwrap_or(0);
        if total >= MAX_STREAMS || mine >= STREAMS_PER_SESSION {
            return None;
        }
        t.insert(key, mine + 1);
        Some(StreamSlot(key))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut t = STREAMS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = t.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.0);
            }
        }
    }
}

/// `GET /console/deliveries/stream`: new deliveries matching the list's filters, as server-sent
/// `delivery` events whose data is a rendered row; then an `end` event.
pub async fn stream(State(state): State<AppState>, console: Console, Query(p): Query<ListParams>) -> Result<Response, PageError> {
    let filter = Filter::parse(&p).map_err(|e| console.error(e))?;
    let after = p.after.as_deref().and_then(|a| DateTime::parse_from_rfc3339(a).ok()).map(|a| a.with_timezone(&Utc));
    let Some(slot) = StreamSlot::take(&console.session_id) else {
        return Err(console.error(crate::limits::refused(&state, crate::limits::LimitReason::ConsoleStreams, 30)));
    };
    let now = state.clock.now();
    let Some(session) = state.console_sessions.peek(&console.session_id, now).await.map_err(|e| console.error(e))? else {
        return Err(console.error(ApiError::Unauthorized("Session ended")));
    };
    // What the page shows is seen; newer rows (written since the page was made) come first, and
    // are seen too once sent: left out of `seen`, the first poll found them again and the page
    // showed a delivery twice (when it arrived between the page and its stream).
    let first = recent(&state, &filter, LIST_LIMIT, None).await.map_err(|e| console.error(e))?;
    let seen: HashSet<String> = first.iter().map(|d| d.request_id.clone()).collect();
    let new: Vec<_> = first.into_iter().filter(|d| after.is_some_and(|a| d.received_at > a)).collect();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let live = Live {
        filter,
        seen,
        pending: new.into_iter().rev().map(Delivery::from).collect(),
        session_id: console.session_id.clone(),
        key: crate::auth::KeyRecheck::new(session.key_hash, now),
        ends_at: now + MAX_LIFETIME,
        tick,
        stopping: state.stopping.clone(),
        state,
        _slot: slot,
    };
    let events = stream::unfold(Some(live), |live| async move {
        let mut live = live?;
        Some(match live.next().await {
            Next::Row(d) => (Ok::<_, std::convert::Infallible>(Event::default().event("delivery").data(row(&d).into_string())), Some(live)),
            Next::End(why) => (Ok(Event::default().event("end").data(why)), None),
        })
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// One live stream.
struct Live {
    filter: Filter,
    /// The request ids already sent or shown.
    seen: HashSet<String>,
    /// Found and not sent yet, oldest first.
    pending: std::collections::VecDeque<Delivery>,
    session_id: String,
    key: crate::auth::KeyRecheck,
    ends_at: DateTime<Utc>,
    tick: tokio::time::Interval,
    stopping: tokio::sync::watch::Receiver<bool>,
    state: AppState,
    _slot: StreamSlot,
}

enum Next {
    Row(Box<Delivery>),
    End(&'static str),
}

impl Live {
    async fn next(&mut self) -> Next {
        loop {
            if *self.stopping.borrow() {
                return Next::End("stopping");
            }
            if let Some(d) = self.pending.pop_front() {
                return Next::Row(Box::new(d));
            }
            tokio::select! {
                r = self.stopping.changed() => {
                    if r.is_err() || *self.stopping.borrow() {
                        return Next::End("stopping");
                    }
                }
                _ = self.tick.tick() => {
                    let now = self.state.clock.now();
                    if now >= self.ends_at {
                        return Next::End("max_lifetime");
                    }
                    // Signed out on any instance; a failing store is asked again at the next tick.
                    if matches!(self.state.console_sessions.peek(&self.session_id, now).await, Ok(None)) {
                        return Next::End("signed_out");
                    }
                    if !self.key.still_accepted(&self.state, now, "console deliveries").await {
                        return Next::End("key_refused");
                    }
                    // A failing store is asked again at the next tick.
                    if let Ok(rows) = recent(&self.state, &self.filter, POLL_LIMIT, None).await {
                        let ids: HashSet<String> = rows.iter().map(|d| d.request_id.clone()).collect();
                        for d in rows.into_iter().rev() {
                            if !self.seen.contains(&d.request_id) {
                                self.pending.push_back(Delivery::from(d));
                            }
                        }
                        // A row that left the newest few cannot come back: newer rows pushed it out.
                        self.seen = ids;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(admin: bool) -> Viewer {
        Viewer { key_name: "k".into(), key_prefix: "tw_x".into(), admin, csrf: "tok".into() }
    }

    fn delivery(id: &str, status: u16, code: Option<&str>) -> Delivery {
        serde_json::from_value(serde_json::json!({
            "request_id": id, "sender_request_id": "abc-1", "source": "edr", "received_at": "2026-01-02T03:04:05Z",
            "status": status, "code": code, "incident_id": null, "incident_number": if status == 201 { Some("INC-2026-0007") } else { None },
            "queue_id": null, "duplicate": false, "body_len": 2048, "latency_ms": 3.5, "verified": status == 201,
            "raw_payload": "{\"a\":\"<b>\",\"n\":1}",
            "headers": "content-type: application/json\nx-tw-signature: [redacted]\nx-note: <i>"
        }))
        .unwrap()
    }

    #[test]
    fn rows_show_status_code_and_link_to_the_delivery_and_incident() {
        let html = row(&delivery("req_1", 201, None)).into_string();
        assert!(html.contains(r#"href="/console/deliveries/req_1""#), "{html}");
        assert!(html.contains(r#"href="/console/incidents/INC-2026-0007""#), "{html}");
        assert!(html.contains("2.0 KiB") && html.contains("3.5 ms"), "{html}");
        let html = row(&delivery("req_2", 401, Some("signature_mismatch"))).into_string();
        assert!(html.contains("failed") && html.contains("<code>signature_mismatch</code>"), "{html}");
    }

    #[test]
    fn the_detail_escapes_and_pretty_prints_the_payload_and_offers_reprocess_to_admins_only() {
        let d = delivery("req_2", 422, Some("normalization_failed"));
        let html = detail_page(&d, None, None, &viewer(true)).into_string();
        assert!(html.contains("&quot;a&quot;: &quot;&lt;b&gt;&quot;"), "{html}");
        assert!(html.contains(r#"action="/console/sources/edr/reprocess-dead-letters""#), "{html}");
        let html = detail_page(&d, None, None, &viewer(false)).into_string();
        assert!(!html.contains("Normalized alert"), "no incident, no alert: {html}");
        assert!(!html.contains("reprocess-dead-letters") && !html.contains("<form method=\"post\" action=\"/console/sources"), "{html}");
        assert!(
            html.contains("<code>x-tw-signature</code></th><td><code>[redacted]</code>") && html.contains("<code>&lt;i&gt;</code>"),
            "the headers, escaped: {html}"
        );
        let (text, cut) = pretty_payload(&"x".repeat(PAYLOAD_SHOWN + 10));
        assert!(cut && text.len() == PAYLOAD_SHOWN);
    }

    #[test]
    fn the_incident_a_delivery_made_shows_its_normalized_alert_beside_the_payload() {
        let d = delivery("req_1", 201, None);
        let incident: Incident = serde_json::from_value(serde_json::json!({
            "id": "6f1c1d3e-7a52-4a53-9d1e-0c8c7f0f1a2b", "incident_number": "INC-2026-0007", "source": "edr", "format": "crowdstrike",
            "title": "Malicious <file>", "description": null, "severity": "high", "vendor_severity": "4", "status": "open",
            "event_type": "DetectionSummaryEvent", "event_time": null, "received_at": "2026-01-02T03:04:05Z", "external_id": "ldt:1",
            "entities": [{"kind": "hostname", "value": "WS-01", "role": "host"}], "delivery_count": 1,
            "last_delivery_at": "2026-01-02T03:04:05Z", "auto_triage": false, "playbook": null, "request_id": "req_1", "triage": null
        }))
        .unwrap();
        let html = detail_page(&d, None, Some(&incident), &viewer(false)).into_string();
        let payload = html.find("<h2>Payload</h2>").unwrap();
        let alert = html.find("<h2>Normalized alert</h2>").expect("the normalized alert");
        assert!(payload < alert, "{html}");
        for text in [
            "Malicious &lt;file&gt;",
            "sev-high",
            "(vendor: 4)",
            "DetectionSummaryEvent",
            "<code>ldt:1</code>",
            "hostname: <code>WS-01</code>",
            "crowdstrike",
        ] {
            assert!(html[alert..].contains(text), "{text}: {html}");
        }
    }

    #[test]
    fn filters_read_and_write_the_query() {
        let p = ListParams { source: Some("edr".into()), status: Some("failed".into()), code: Some(" bad_token ".into()), after: None };
        let f = Filter::parse(&p).unwrap();
        assert_eq!(f.query(), "source=edr&status=failed&code=bad_token");
        assert!(Filter::parse(&ListParams { status: Some("maybe".into()), ..Default::default() }).is_err());
        assert_eq!(Filter::parse(&ListParams::default()).unwrap().query(), "");
        assert_eq!(detail_href("a b/c"), "/console/deliveries/a%20b%2Fc");
    }

    #[test]
    fn streams_are_capped_per_session() {
        let a = StreamSlot::take("session-a-test").unwrap();
        let b = StreamSlot::take("session-a-test").unwrap();
        assert!(StreamSlot::take("session-a-test").is_none());
        drop(a);
        let c = StreamSlot::take("session-a-test");
        assert!(c.is_some());
        drop((b, c));
    }
}
