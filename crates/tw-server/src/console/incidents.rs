//! Incidents: the list (filters by source, severity and status; sorted by number or severity from
//! its column headers; pages by the API's cursor), one
//! incident (entities, triage, the raw payload), and "Re-run triage" (admin). The list and the
//! incident come from the functions the API's handlers call (`routes::incidents::list_incidents`,
//! `incident_detail`), so the filters' rules and the indexed listing are the API's; a re-run is
//! `routes::triage::queue_triage`.

use super::triage::{panel, verdict_label};
use super::views::{Nav, Viewer, csrf_field, layout, maybe_time, problems, time};
use super::{Console, Form, PageError, redirect};
use crate::ApiError;
use crate::api::FieldError;
use crate::api::incidents::{Incident, IncidentDetail, IncidentList, IncidentListParams};
use crate::routes::incidents as service;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::{Map, Value};
use tw_core::Severity;
use tw_store::{IncidentOrder, IncidentStatus};

/// How much of a raw payload the incident page shows (the whole body is at
/// `GET /api/incidents/{id}/raw`).
pub const RAW_SHOWN_BYTES: usize = 64 * 1024;

/// The list's filters, order and position, as the page's GET form, its column headers and its
/// paging links send them. Empty fields are left out (a form sends every field; the API refuses
/// empty values).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub source: String,
    pub severity: String,
    pub status: String,
    /// The API's `sort` (`newest`, `oldest`, `severity`); empty for its default, newest first.
    pub sort: String,
    pub cursor: String,
}

impl ListQuery {
    /// Reads `?source=&severity=&status=&sort=&cursor=`; anything else is ignored.
    pub fn parse(query: Option<&str>) -> ListQuery {
        let form = Form::parse(query.unwrap_or_default().as_bytes());
        let get = |k: &str| form.text(k).to_string();
        ListQuery { source: get("source"), severity: get("severity"), status: get("status"), sort: get("sort"), cursor: get("cursor") }
    }

    fn filters(&self) -> [(&'static str, &str); 3] {
        [("source", &self.source), ("severity", &self.severity), ("status", &self.status)]
    }

    /// The order shown: the API's name, `newest` when none was asked for.
    fn order(&self) -> &str {
        if self.sort.is_empty() { IncidentOrder::Newest.as_str() } else { &self.sort }
    }

    /// The first page of the list with the same filters in `order`.
    pub fn sorted_href(&self, order: IncidentOrder) -> String {
        let q = ListQuery {
            sort: if order == IncidentOrder::Newest { String::new() } else { order.as_str().to_string() },
            cursor: String::new(),
            ..self.clone()
        };
        q.href(None)
    }

    /// Whether any filter is set.
    pub fn filtered(&self) -> bool {
        self.filters().iter().any(|(_, v)| !v.is_empty())
    }

    /// The API's parameters: the set fields only, the default page size.
    pub fn params(&self) -> IncidentListParams {
        let some = |v: &str| (!v.is_empty()).then(|| v.to_string());
        IncidentListParams {
            source: some(&self.source),
            severity: some(&self.severity),
            status: some(&self.status),
            sort: some(&self.sort),
            cursor: some(&self.cursor),
            page: Default::default(),
        }
    }

    /// The list with the same filters, from `cursor` (the first page without one).
    pub fn href(&self, cursor: Option<&str>) -> String {
        let mut pairs: Vec<(&str, &str)> = self.filters().into_iter().filter(|(_, v)| !v.is_empty()).collect();
        if !self.sort.is_empty() {
            pairs.push(("sort", &self.sort));
        }
        if let Some(c) = cursor {
            pairs.push(("cursor", c));
        }
        let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        if query.is_empty() { "/console/incidents".to_string() } else { format!("/console/incidents?{query}") }
    }
}

pub use super::deliveries::incident_href;

fn severity_badge(s: Severity) -> Markup {
    html! { span class=(format!("badge sev-{}", s.as_str())) { (s.as_str()) } }
}

fn options(name: &str, label: &str, any: &str, values: &[String], chosen: &str) -> Markup {
    html! {
        label {
            (label)
            select name=(name) {
                option value="" selected[chosen.is_empty()] { (any) }
                @for v in values { option value=(v) selected[v == chosen] { (v) } }
                @if !chosen.is_empty() && !values.iter().any(|v| v == chosen) { option value=(chosen) selected { (chosen) } }
            }
        }
    }
}

fn filter_form(q: &ListQuery, sources: &[String]) -> Markup {
    let severities: Vec<String> = Severity::ALL.iter().map(|s| s.as_str().to_string()).collect();
    let statuses: Vec<String> = IncidentStatus::ALL.iter().map(|s| s.as_str().to_string()).collect();
    html! {
        form.filters method="get" action="/console/incidents" {
            (options("source", "Source", "any source", sources, &q.source))
            (options("severity", "Severity", "any severity", &severities, &q.severity))
            (options("status", "Status", "any status", &statuses, &q.status))
            @if !q.sort.is_empty() { input type="hidden" name="sort" value=(q.sort); }
            div.actions {
                button.primary type="submit" { "Filter" }
                @if q.filtered() { a.button href="/console/incidents" { "Clear" } }
            }
        }
    }
}

/// The Number column's header: a link to the other number order (newest first, oldest first),
/// with the filters kept; `aria-sort` says which order is shown.
fn number_header(q: &ListQuery) -> Markup {
    let (sort, next, arrow) = match q.order() {
        "newest" => (Some("descending"), IncidentOrder::Oldest, " ↓"),
        "oldest" => (Some("ascending"), IncidentOrder::Newest, " ↑"),
        _ => (None, IncidentOrder::Newest, ""),
    };
    let title = if next == IncidentOrder::Oldest { "Sort oldest first" } else { "Sort newest first" };
    html! {
        th scope="col" aria-sort=[sort] {
            a.sort href=(q.sorted_href(next)) title=(title) aria-current=[sort.map(|_| "true")] { "Number" (arrow) }
        }
    }
}

/// The Severity column's header: a link to the list most severe first (newest first within a
/// severity), with the filters kept.
fn severity_header(q: &ListQuery) -> Markup {
    let on = q.order() == IncidentOrder::Severity.as_str();
    html! {
        th scope="col" aria-sort=[on.then_some("descending")] {
            a.sort href=(q.sorted_href(IncidentOrder::Severity)) title="Sort most severe first" aria-current=[on.then_some("true")] {
                "Severity" @if on { " ↓" }
            }
        }
    }
}

fn row(i: &Incident) -> Markup {
    html! {
        tr {
            th scope="row" { a href=(incident_href(&i.incident_number)) { (i.incident_number) } }
            td { (severity_badge(i.severity)) }
            td { (i.status.as_str()) }
            td { @match verdict_label(i.triage.as_ref()) { Some(v) => (v), None => span.muted { "—" } } }
            td { code { (i.source) } }
            td { (i.title) }
            td { (time(i.received_at)) }
        }
    }
}

/// The incidents page: filters, one page of rows, the way to the next page; or what to do when
/// there is nothing to show. `problems` are the API's objections to the query (a hand-edited
/// URL).
pub fn list_page(list: Option<&IncidentList>, q: &ListQuery, sources: &[String], problems_found: &[FieldError], viewer: &Viewer) -> Markup {
    let rows = list.map(|l| l.data.as_slice()).unwrap_or_default();
    layout(
        "Incidents",
        Nav::Incidents,
        Some(viewer),
        html! {
            div.toolbar {
                h1 { "Incidents" }
                @if let Some(l) = list { span.muted { (l.meta.total) (if l.meta.total == 1 { " incident" } else { " incidents" }) @if q.filtered() { " match" } } }
            }
            (filter_form(q, sources))
            @if !problems_found.is_empty() { (problems("The list could not be shown:", problems_found)) }
            @if rows.is_empty() && problems_found.is_empty() {
                div.panel {
                    @if q.filtered() || !q.cursor.is_empty() {
                        h2 { "No incidents match" }
                        p { "Nothing here with these filters. " a href="/console/incidents" { "Clear the filters" } " to see every incident." }
                    } @else {
                        h2 { "No incidents yet" }
                        p { "An incident is made from each alert a source delivers. "
                            a href="/console/sources" { "Add a source" } ", paste its URL and secret into the sending tool, "
                            "then send a test event from the sources page or let the tool fire an alert." }
                    }
                }
            } @else if !rows.is_empty() {
                table {
                    thead { tr {
                        (number_header(q)) (severity_header(q)) th scope="col" { "Status" } th scope="col" { "Verdict" }
                        th scope="col" { "Source" } th scope="col" { "Title" } th scope="col" { "Received" }
                    } }
                    tbody { @for i in rows { (row(i)) } }
                }
            }
            @if let Some(l) = list {
                nav.pager aria-label="Pages" {
                    @if !q.cursor.is_empty() { a.button href=(q.href(None)) { "First page" } }
                    @if let Some(next) = &l.meta.next_cursor { a.button href=(q.href(Some(next))) rel="next" { "Next page" } }
                }
            }
        },
    )
}

/// `GET /console/incidents`: the API's listing with the form's filters.
pub async fn list(State(state): State<AppState>, console: Console, RawQuery(query): RawQuery) -> Result<Response, PageError> {
    let q = ListQuery::parse(query.as_deref());
    let sources = state.store.list_sources().await.map_err(|e| console.error(ApiError::from(e)))?;
    let names: Vec<String> = sources.iter().map(|s| s.name.to_string()).collect();
    match service::list_incidents(&state, q.params()).await {
        Ok(list) => Ok(list_page(Some(&list), &q, &names, &[], &console.viewer).into_response()),
        Err(ApiError::Validation { details, .. }) => {
            Ok((StatusCode::UNPROCESSABLE_ENTITY, list_page(None, &q, &names, &details, &console.viewer)).into_response())
        }
        Err(e) => Err(console.error(e)),
    }
}

/// The raw payload as shown: JSON pretty-printed (a body that was not JSON, as received), cut at
/// [`RAW_SHOWN_BYTES`] on a character boundary; the second value says whether it was cut, and the
/// third is the full length.
pub fn raw_text(raw: &Value) -> (String, bool, usize) {
    let mut text = match raw {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    };
    let len = text.len();
    if len <= RAW_SHOWN_BYTES {
        return (text, false, len);
    }
    let mut cut = RAW_SHOWN_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    (text, true, len)
}

fn rerun_form(i: &Incident, playbooks: &[String], viewer: &Viewer) -> Markup {
    html! {
        form.inline method="post" action=(format!("{}/triage", incident_href(&i.incident_number))) {
            (csrf_field(&viewer.csrf))
            label {
                "Playbook "
                select name="playbook" {
                    option value="" selected { @match &i.playbook { Some(p) => { "the source's (" (p) ")" }, None => "the source's (none set)" } }
                    @for p in playbooks { option value=(p) { (p) } }
                }
            }
            " "
            button.primary type="submit" { "Re-run triage" }
        }
    }
}

/// One incident: its facts, entities, triage and raw payload; "Re-run triage" for an admin.
pub fn detail_page(d: &IncidentDetail, playbooks: &[String], viewer: &Viewer) -> Markup {
    let i = &d.incident;
    layout(
        &i.incident_number,
        Nav::Incidents,
        Some(viewer),
        html! {
            p { a href="/console/incidents" { "← Incidents" } }
            div.toolbar {
                h1 { (i.incident_number) " · " (i.title) }
            }
            div.panel {
                dl.facts {
                    dt { "Severity" } dd { (severity_badge(i.severity)) @if let Some(v) = &i.vendor_severity { " " span.muted { "(vendor: " (v) ")" } } }
                    dt { "Status" } dd { (i.status.as_str()) }
                    dt { "Source" } dd { code { (i.source) } " (" (i.format.as_str()) ")" }
                    dt { "Event type" } dd { (i.event_type.as_deref().unwrap_or("—")) }
                    dt { "Event time" } dd { (maybe_time(i.event_time, "not given")) }
                    dt { "Received" } dd { (time(i.received_at)) }
                    dt { "Deliveries" } dd { (i.delivery_count) ", last " (time(i.last_delivery_at)) }
                    dt { "External id" } dd { @match &i.external_id { Some(x) => code { (x) }, None => span.muted { "none" } } }
                    @if let Some(r) = &i.request_id { dt { "Request id" } dd { code { (r) } } }
                    @if let Some(desc) = &i.description { dt { "Description" } dd { (desc) } }
                }
            }
            h2 { "Entities (" (i.entities.len()) ")" }
            @if i.entities.is_empty() { p.muted { "None were found in the alert." } } @else {
                table {
                    thead { tr { th scope="col" { "Kind" } th scope="col" { "Value" } th scope="col" { "Role" } } }
                    tbody { @for e in &i.entities { tr {
                        td { (e.kind.as_str()) } td { code { (e.value) } } td { (e.role.as_deref().unwrap_or("")) }
                    } } }
                }
            }
            h2 { "Triage" }
            @match i.triage.as_ref().filter(|t| !t.is_null()) {
                Some(t) => (panel(t)),
                None => p.muted { "Not triaged." @if !viewer.admin { " An admin can run a playbook on it." } },
            }
            @if viewer.admin { (rerun_form(i, playbooks, viewer)) }
            h2 { "Raw payload" }
            @match &d.raw_payload {
                Some(raw) => {
                    @let (text, cut, len) = raw_text(raw);
                    @if cut {
                        p.notice { "The first " (RAW_SHOWN_BYTES / 1024) " KiB of " (len) " bytes are shown; the whole body as received is at "
                            code { "GET /api/incidents/" (i.incident_number) "/raw" } "." }
                    }
                    pre.payload { code { (text) } }
                }
                None => p.muted { "Not kept." },
            }
        },
    )
}

/// `GET /console/incidents/{number}` (or its uuid).
pub async fn detail(State(state): State<AppState>, console: Console, Path(id): Path<String>) -> Result<Markup, PageError> {
    let d = service::incident_detail(&state, &id).await.map_err(|e| console.error(e))?;
    let playbooks =
        if console.viewer.admin { state.playbooks.names().await.map_err(|e| console.error(ApiError::from(e)))? } else { Vec::new() };
    Ok(detail_page(&d, &playbooks, &console.viewer))
}

/// `POST /console/incidents/{number}/triage` (admin): queues a run as
/// `POST /api/incidents/{id}/triage` does, then back to the incident (its triage shows the job).
pub async fn rerun(State(state): State<AppState>, console: Console, Path(id): Path<String>, body: Bytes) -> Result<Response, PageError> {
    let form = console.form(&body)?;
    console.admin()?;
    let mut request = Map::new();
    let playbook = form.text("playbook");
    if !playbook.is_empty() {
        request.insert("playbook".into(), Value::String(playbook.to_string()));
    }
    let queued = crate::routes::triage::queue_triage(&state, &id, &request).await.map_err(|e| console.error(e))?;
    tracing::info!(target: "api", key = %console.key.prefix, incident = %queued.incident_number, "triage re-run from the console");
    Ok(redirect(&incident_href(&queued.incident_number), &[]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn viewer(admin: bool) -> Viewer {
        Viewer { key_name: "k".into(), key_prefix: "tw_x".into(), admin, csrf: "tok".into() }
    }

    fn incident(number: &str, triage: Value) -> Incident {
        serde_json::from_value(json!({
            "id": "6f1c1d3e-7a52-4a53-9d1e-0c8c7f0f1a2b", "incident_number": number, "source": "edr", "format": "crowdstrike",
            "title": "Malicious <file>", "description": null, "severity": "high", "vendor_severity": "4", "status": "open",
            "event_type": "DetectionSummaryEvent", "event_time": null, "received_at": "2026-01-02T03:04:05Z", "external_id": "ldt:1",
            "entities": [{"kind": "hostname", "value": "WS-01", "role": "host"}], "delivery_count": 2,
            "last_delivery_at": "2026-01-02T03:05:00Z", "auto_triage": true, "playbook": "malware_triage", "request_id": null,
            "triage": triage
        }))
        .unwrap()
    }

    fn list(items: Vec<Incident>, next: Option<&str>) -> IncidentList {
        serde_json::from_value(
            json!({"data": items, "meta": {"per_page": 50, "total": items.len(), "total_pages": 1, "next_cursor": next}}),
        )
        .unwrap()
    }

    #[test]
    fn the_query_keeps_set_filters_and_pages_with_them() {
        let q = ListQuery::parse(Some("source=edr&severity=&status=open&other=1"));
        assert_eq!(q, ListQuery { source: "edr".into(), status: "open".into(), ..Default::default() });
        let p = q.params();
        assert_eq!((p.source.as_deref(), p.severity, p.status.as_deref(), p.sort, p.cursor), (Some("edr"), None, Some("open"), None, None));
        assert_eq!(q.href(Some("2026-42")), "/console/incidents?source=edr&status=open&cursor=2026-42");
        assert_eq!(ListQuery::default().href(None), "/console/incidents");
        assert!(!ListQuery::parse(None).filtered());
    }

    #[test]
    fn column_headers_sort_with_the_filters_kept_and_say_which_order_is_shown() {
        let q = ListQuery::parse(Some("source=edr&cursor=2026-9"));
        let l = list(vec![incident("INC-2026-0007", Value::Null)], None);
        let html = list_page(Some(&l), &q, &["edr".into()], &[], &viewer(false)).into_string();
        assert!(
            html.contains(r#"<th scope="col" aria-sort="descending"><a class="sort" href="/console/incidents?source=edr&amp;sort=oldest""#),
            "{html}"
        );
        assert!(
            html.contains(r#"href="/console/incidents?source=edr&amp;sort=severity" title="Sort most severe first">Severity</a>"#),
            "{html}"
        );
        let q = ListQuery::parse(Some("severity=high&sort=severity"));
        assert_eq!(q.href(Some("high-2026-3")), "/console/incidents?severity=high&sort=severity&cursor=high-2026-3");
        assert_eq!(q.params().sort.as_deref(), Some("severity"));
        let html = list_page(Some(&l), &q, &[], &[], &viewer(false)).into_string();
        assert!(
            html.contains(
                r#"<th scope="col" aria-sort="descending"><a class="sort" href="/console/incidents?severity=high&amp;sort=severity""#
            ),
            "{html}"
        );
        assert!(html.contains(r#"href="/console/incidents?severity=high" title="Sort newest first">Number</a>"#), "{html}");
        assert!(html.contains(r#"<input type="hidden" name="sort" value="severity">"#), "the filter form keeps the order: {html}");
    }

    #[test]
    fn rows_link_to_the_incident_with_severity_and_verdict() {
        let l = list(vec![incident("INC-2026-0007", json!({"status": "completed", "verdict": "malicious"}))], Some("2026-7"));
        let html = list_page(Some(&l), &ListQuery::default(), &["edr".into()], &[], &viewer(false)).into_string();
        for text in [
            r#"href="/console/incidents/INC-2026-0007""#,
            "sev-high",
            "malicious",
            "Malicious &lt;file&gt;",
            r#"<time datetime="2026-01-02T03:04:05Z""#,
            r#"href="/console/incidents?cursor=2026-7""#,
            r#"<option value="edr">edr</option>"#,
        ] {
            assert!(html.contains(text), "{text}: {html}");
        }
    }

    #[test]
    fn empty_states_say_what_to_do_next() {
        let html = list_page(Some(&list(vec![], None)), &ListQuery::default(), &[], &[], &viewer(true)).into_string();
        assert!(html.contains("No incidents yet") && html.contains(r#"href="/console/sources""#), "{html}");
        let q = ListQuery { severity: "critical".into(), ..Default::default() };
        let html = list_page(Some(&list(vec![], None)), &q, &[], &[], &viewer(true)).into_string();
        assert!(html.contains("No incidents match") && html.contains("Clear the filters"), "{html}");
        assert!(html.contains(r#"<option value="critical" selected>critical</option>"#), "{html}");
        let html = list_page(None, &q, &[], &[FieldError::new("cursor", "is not a cursor")], &viewer(true)).into_string();
        assert!(html.contains("<code>cursor</code>: is not a cursor") && !html.contains("No incidents"), "{html}");
    }

    #[test]
    fn the_detail_shows_entities_and_only_an_admin_gets_the_rerun_button() {
        let d = IncidentDetail { incident: incident("INC-2026-0001", Value::Null), raw_payload: Some(json!({"a": "<b>"})) };
        let html = detail_page(&d, &["malware_triage".into()], &viewer(true)).into_string();
        for text in [
            "WS-01",
            "Entities (1)",
            "Not triaged",
            "Re-run triage",
            r#"action="/console/incidents/INC-2026-0001/triage""#,
            r#"name="csrf" value="tok""#,
            "&quot;&lt;b&gt;&quot;",
            "the source's (malware_triage)",
        ] {
            assert!(html.contains(text), "{text}: {html}");
        }
        let html = detail_page(&d, &[], &viewer(false)).into_string();
        assert!(!html.contains("Re-run triage") && !html.contains("/triage\""), "{html}");
    }

    #[test]
    fn a_large_payload_is_cut_on_a_character_boundary() {
        let (text, cut, len) = raw_text(&json!({"k": "v"}));
        assert_eq!((text.as_str(), cut, len), ("{\n  \"k\": \"v\"\n}", false, 14));
        let big = Value::String("é".repeat(RAW_SHOWN_BYTES));
        let (text, cut, len) = raw_text(&big);
        assert!(cut && len == 2 * RAW_SHOWN_BYTES && text.len() <= RAW_SHOWN_BYTES && text.len() >= RAW_SHOWN_BYTES - 1);
    }
}
