//! Sources: the list, add (the secret shown once with the recipe for its scheme), rotate secret,
//! disable/enable, delete with a confirmation step, send a test event. Every change goes through
//! the function the API's handler calls (`routes::sources::create_source`, ...), with the caller
//! as the audit log's author.

use super::overview::{SourceDay, last_hour_cell, source_days};
use super::views::{self, Nav, Viewer, csrf_field, layout, maybe_time, recipe, time};
use super::{Console, Form, PageError, redirect};
use crate::ApiError;
use crate::api::FieldError;
use crate::api::sources::{SourceTestResult, SourceView};
use crate::routes::sources as service;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use tw_core::{Format, SourceMode, SourceName};

/// The CLI line the empty state and the form suggest.
const CLI_ADD: &str = "tw-cli webhook add email-gateway --verification hmac";

/// The grace periods the rotate form offers for the old secret (seconds, label); the API's
/// default (24 h) is chosen unless another is picked.
pub const GRACE_PERIODS: [(i64, &str); 4] =
    [(0, "none"), (3600, "1 hour"), (service::DEFAULT_GRACE_SECS, "24 hours"), (7 * 86400, "7 days")];

/// "Rotate secret" with the old secret's grace period to choose.
pub(super) fn rotate_form(source: &str, viewer: &Viewer) -> Markup {
    html! {
        form.inline method="post" action=(format!("/console/sources/{source}/rotate")) {
            (csrf_field(&viewer.csrf))
            label {
                "Old secret verifies for "
                select name="grace_period_secs" {
                    @for (secs, label) in GRACE_PERIODS {
                        option value=(secs) selected[secs == service::DEFAULT_GRACE_SECS] { (label) }
                    }
                }
            }
            " "
            button type="submit" { "Rotate secret" }
        }
    }
}

/// The source's format as its settings write it (`auto` when none is pinned).
pub(super) fn format_label(v: &SourceView) -> &'static str {
    v.format.format().map_or("auto", Format::as_str)
}

/// One row's buttons: only those the viewer's key may use on this source.
fn row_actions(v: &SourceView, viewer: &Viewer) -> Markup {
    let base = format!("/console/sources/{}", v.source);
    html! {
        div.actions {
            a.button href=(format!("{base}/settings")) { "Settings" }
            form method="post" action=(format!("{base}/test")) {
                (csrf_field(&viewer.csrf))
                button type="submit" { "Send test event" }
            }
            @if !v.managed_by_config {
                form method="post" action=(format!("{base}/enabled")) {
                    (csrf_field(&viewer.csrf))
                    input type="hidden" name="enabled" value=(if v.enabled { "false" } else { "true" });
                    button type="submit" { (if v.enabled { "Disable" } else { "Enable" }) }
                }
                (rotate_form(&v.source, viewer))
                a.button.danger href=(format!("{base}/delete")) { "Delete" }
            }
        }
    }
}

/// The sources table (or, on a new install, how to add the first source).
pub fn list_page(sources: &[SourceView], days: &HashMap<String, SourceDay>, viewer: &Viewer) -> Markup {
    layout(
        "Sources",
        Nav::Sources,
        Some(viewer),
        html! {
            div.toolbar {
                h1 { "Sources" }
                @if viewer.admin { a.button.primary href="/console/sources/new" { "Add source" } }
            }
            @if sources.is_empty() {
                div.panel {
                    h2 { "No sources yet" }
                    p { "A source is one sending tool (an email gateway, an EDR, a SIEM): it gets its own URL and secret." }
                    @if viewer.admin {
                        p { a href="/console/sources/new" { "Add the first source" } ", or from a shell:" }
                    } @else {
                        p { "Ask an admin to add one (this key can only read), for example from a shell:" }
                    }
                    pre { code { (CLI_ADD) } }
                }
            } @else {
                table {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Enabled" } th scope="col" { "Format" }
                        th scope="col" { "Verification" } th scope="col" { "Mode" } th scope="col" { "Auto-triage" }
                        th scope="col" { "Last delivery" } th.num scope="col" { "Deliveries" } th.num scope="col" { "Errors" }
                        th scope="col" title="Deliveries / errors this hour; the line: deliveries per hour over 24 hours" { "Last hour" }
                        @if viewer.admin { th scope="col" { "Actions" } }
                    } }
                    tbody {
                        @for v in sources {
                            tr {
                                th scope="row" {
                                    code { (v.source) }
                                    @if v.managed_by_config { " " span.badge.config title="Defined in the config file: change it there" { "config" } }
                                }
                                td { @if v.enabled { span.badge.on { "enabled" } } @else { span.badge.off { "disabled" } } }
                                td { (format_label(v)) }
                                td { (v.verification.label()) }
                                td { (v.mode.as_str()) }
                                td {
                                    @if v.auto_triage { "on" } @else { span.muted { "off" } }
                                    @if let Some(p) = &v.playbook { " · " code { (p) } }
                                }
                                td { (maybe_time(v.last_delivery_at, "never")) }
                                td.num { (v.delivery_count) }
                                td.num { (v.error_count) }
                                td { (last_hour_cell(days.get(&v.source), &v.source)) }
                                @if viewer.admin { td { (row_actions(v, viewer)) } }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// `GET /console/sources`.
pub async fn list(State(state): State<AppState>, console: Console) -> Result<Markup, PageError> {
    let sources = state.store.list_sources().await.map_err(|e| console.error(ApiError::from(e)))?;
    let views: Vec<SourceView> = sources.iter().map(SourceView::from).collect();
    let (activity, start) = super::overview::day_of(&state).await.map_err(|e| console.error(e))?;
    Ok(list_page(&views, &source_days(&activity, start), &console.viewer))
}

/// What the add form was filled with (kept when it comes back with problems).
#[derive(Debug, Default, Clone)]
pub struct NewSource {
    pub source: String,
    pub verification: String,
    pub header: String,
    pub format: String,
    pub mode: String,
}

impl NewSource {
    fn from_form(form: &Form) -> NewSource {
        NewSource {
            source: form.text("source").to_string(),
            verification: form.text("verification").to_string(),
            header: form.text("header").to_string(),
            format: form.text("format").to_string(),
            mode: form.text("mode").to_string(),
        }
    }

    /// The API's create body for these fields: what `POST /api/webhooks` would be sent, so the
    /// API's rules read it. An empty choice is left out (the API's default).
    pub fn body(&self) -> Map<String, Value> {
        let mut body = Map::new();
        body.insert("source".into(), Value::String(self.source.clone()));
        match self.verification.as_str() {
            "" => {}
            "header-token" => {
                body.insert("verification".into(), json!({"scheme": "header-token", "header": self.header}));
            }
            scheme => {
                body.insert("verification".into(), Value::String(scheme.to_string()));
            }
        }
        for (k, v) in [("format", &self.format), ("mode", &self.mode)] {
            if !v.is_empty() {
                body.insert(k.into(), Value::String(v.clone()));
            }
        }
        body
    }
}

/// A `<select>` of `options` with `chosen` selected.
pub(super) fn select(name: &str, options: &[&str], chosen: &str) -> Markup {
    html! {
        select name=(name) id=(name) {
            @for o in options {
                option value=(o) selected[*o == chosen] { (o) }
            }
        }
    }
}

/// The add-source form, with `problems` (field, message) when a submission was refused.
pub fn new_page(viewer: &Viewer, values: &NewSource, problems: &[FieldError]) -> Markup {
    let formats: Vec<&str> = std::iter::once("auto").chain(Format::ALL.iter().map(|f| f.as_str())).collect();
    let modes = [SourceMode::Sync.as_str(), SourceMode::Async.as_str()];
    let scheme = if values.verification.is_empty() { "hmac" } else { values.verification.as_str() };
    layout(
        "Add source",
        Nav::Sources,
        Some(viewer),
        html! {
            h1 { "Add source" }
            @if !problems.is_empty() { (views::problems("The source was not added:", problems)) }
            div.panel {
                form.stack method="post" action="/console/sources" {
                    (csrf_field(&viewer.csrf))
                    label {
                        "Name"
                        input type="text" name="source" value=(values.source) required spellcheck="false" autocomplete="off";
                        span.hint { "Part of the URL the sender posts to: " code { "/api/webhooks/<name>" } "." }
                    }
                    label {
                        "Verification scheme"
                        (select("verification", &tw_core::verification::SCHEMES, scheme))
                        span.hint { "How deliveries prove they come from the sender; pick what the sending tool supports." }
                    }
                    label {
                        "Header name (header-token only)"
                        input type="text" name="header" value=(values.header) placeholder="X-Api-Key" spellcheck="false" autocomplete="off";
                    }
                    label {
                        "Format"
                        (select("format", &formats, if values.format.is_empty() { "auto" } else { values.format.as_str() }))
                        span.hint { "auto detects the vendor per payload." }
                    }
                    label {
                        "Mode"
                        (select("mode", &modes, if values.mode.is_empty() { "sync" } else { values.mode.as_str() }))
                        span.hint { "sync: the incident exists before the answer (201); async: stored, answered 202, turned into an incident by a worker." }
                    }
                    p.hint.muted { "A strong secret is generated and shown once, with what to paste into the sender." }
                    div.actions { button.primary type="submit" { "Add source" } a.button href="/console/sources" { "Cancel" } }
                }
            }
            p.muted { "From a shell instead: " code { (CLI_ADD) } }
        },
    )
}

/// `GET /console/sources/new` (admin).
pub async fn new_form(console: Console) -> Result<Markup, PageError> {
    console.admin()?;
    Ok(new_page(&console.viewer, &NewSource::default(), &[]))
}

/// The page that shows a secret, once, with what to paste into the sender.
fn secret_page(console: &Console, title: &str, view: &SourceView, lead: Markup) -> Result<Markup, PageError> {
    let secret = view.secret.as_deref().ok_or_else(|| console.error(ApiError::Internal("no secret to show".into())))?;
    let name = SourceName::parse(&view.source).map_err(|_| console.error(ApiError::UnknownSource(view.source.clone())))?;
    let scheme = view.verification.verification().map_err(|e| console.error(ApiError::Internal(e)))?;
    let lines = crate::sources::recipe(&scheme, &console.base_url(), &name, secret);
    Ok(layout(
        title,
        Nav::Sources,
        Some(&console.viewer),
        html! {
            h1 { (title) }
            div.notice.ok { (lead) }
            div.panel.notice.secret {
                h2 { "Paste this into the sender (" (view.verification.label()) ")" }
                p { strong { "The secret is shown only now." } " Store it in the sending tool; this page cannot show it again (rotate the secret if it is lost)." }
                (recipe(&lines))
            }
            p { a href="/console/sources" { "Back to sources" } }
        },
    ))
}

/// `POST /console/sources` (admin): registers the source by the API's rules; shows the secret
/// and recipe once, or the form again with what was wrong.
pub async fn create(State(state): State<AppState>, console: Console, body: Bytes) -> Result<Response, PageError> {
    let form = console.form(&body)?;
    let who = console.admin()?;
    let values = NewSource::from_form(&form);
    match service::create_source(&state, &who, &values.body()).await {
        Ok(view) => {
            let lead = html! { "Source " code { (view.source) } " is registered and accepting deliveries." };
            Ok((StatusCode::CREATED, secret_page(&console, "Source added", &view, lead)?).into_response())
        }
        Err(ApiError::Validation { details, .. }) => {
            Ok((StatusCode::UNPROCESSABLE_ENTITY, new_page(&console.viewer, &values, &details)).into_response())
        }
        Err(e @ ApiError::SourceExists(_)) => {
            Ok((e.status(), new_page(&console.viewer, &values, &[FieldError::new("source", e.to_string())])).into_response())
        }
        Err(e) => Err(console.error(e)),
    }
}

/// `POST /console/sources/{name}/rotate` (admin): a generated secret; the old one keeps verifying
/// for the chosen `grace_period_secs` (the API's default without one; the API checks it).
pub async fn rotate(State(state): State<AppState>, console: Console, Path(name): Path<String>, body: Bytes) -> Result<Markup, PageError> {
    let form = console.form(&body)?;
    let who = console.admin()?;
    let name = service::parse_name(&name).map_err(|e| console.error(e))?;
    let mut request = Map::new();
    if let Some(grace) = form.get("grace_period_secs") {
        request.insert("grace_period_secs".into(), Value::String(grace.trim().to_string()));
    }
    let view = match service::rotate_source_secret(&state, &who, &name, &request).await {
        Ok(view) => view,
        Err(ApiError::Validation { details, .. }) => {
            let message = details.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; ");
            return Err(console.error(PageError::new(StatusCode::UNPROCESSABLE_ENTITY, "Refused", message)));
        }
        Err(e) => return Err(console.error(e)),
    };
    let lead = html! {
        "The secret of " code { (view.source) } " was rotated."
        @match view.previous_secret_expires_at.filter(|until| Some(*until) > view.secret_rotated_at) {
            Some(until) => { " The previous secret keeps verifying until " (time(until)) "." }
            None => " The previous secret no longer verifies.",
        }
    };
    secret_page(&console, "Secret rotated", &view, lead)
}

/// `POST /console/sources/{name}/enabled` (admin): `enabled=true|false`.
pub async fn set_enabled(
    State(state): State<AppState>,
    console: Console,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    let form = console.form(&body)?;
    let who = console.admin()?;
    let body: Map<String, Value> = [("enabled".to_string(), Value::String(form.text("enabled").to_string()))].into_iter().collect();
    let name = service::parse_name(&name).map_err(|e| console.error(e))?;
    service::update_source(&state, &who, &name, &body).await.map_err(|e| console.error(e))?;
    Ok(redirect("/console/sources", &[]))
}

/// `GET /console/sources/{name}/delete` (admin): the confirmation step.
pub async fn confirm_delete(State(state): State<AppState>, console: Console, Path(name): Path<String>) -> Result<Markup, PageError> {
    console.admin()?;
    let source = service::parse_name(&name).map_err(|e| console.error(e))?;
    let record = service::load(&state, &source).await.map_err(|e| console.error(e))?;
    Ok(layout(
        "Delete source",
        Nav::Sources,
        Some(&console.viewer),
        html! {
            h1 { "Delete source " code { (record.name) } "?" }
            div.panel {
                p { "Deliveries to " code { "/api/webhooks/" (record.name) } " will be refused with " code { "404 unknown_source" } ". "
                    "Its incidents stay. Registering the name again makes a new source with a new secret." }
                p { (record.delivery_count) " deliveries so far; last " (maybe_time(record.last_delivery_at, "never")) "." }
                form method="post" action=(format!("/console/sources/{}/delete", record.name)) {
                    (csrf_field(&console.viewer.csrf))
                    div.actions {
                        button.danger type="submit" { "Delete " (record.name) }
                        a.button href="/console/sources" { "Cancel" }
                    }
                }
            }
        },
    ))
}

/// `POST /console/sources/{name}/delete` (admin).
pub async fn delete(State(state): State<AppState>, console: Console, Path(name): Path<String>, body: Bytes) -> Result<Response, PageError> {
    console.form(&body)?;
    let who = console.admin()?;
    let name = service::parse_name(&name).map_err(|e| console.error(e))?;
    service::remove_source(&state, &who, &name).await.map_err(|e| console.error(e))?;
    Ok(redirect("/console/sources", &[]))
}

/// The checks of a test delivery, in order.
pub fn test_page(result: &SourceTestResult, viewer: &Viewer) -> Markup {
    layout(
        "Test event",
        Nav::Sources,
        Some(viewer),
        html! {
            h1 { "Test event for " code { (result.source) } }
            @if result.ok {
                div.notice.ok { "Passed: a delivery signed with the stored secret would be accepted. Nothing was stored." }
            } @else {
                div.notice.error role="alert" { "Failed: see the first failing check. Nothing was stored." }
            }
            div.panel {
                ol.checks {
                    @for c in &result.checks {
                        li {
                            strong { (c.check) } ": "
                            @if c.result.ok {
                                span.pass { "passed" } " — " (c.result.detail.as_deref().unwrap_or_default())
                            } @else {
                                span.fail { "failed" } " — " (c.result.error.as_deref().unwrap_or_default())
                            }
                        }
                    }
                }
                p.muted { "Secret fingerprint: " code { (result.secret_fingerprint) } }
            }
            p { a href="/console/sources" { "Back to sources" } }
        },
    )
}

/// `POST /console/sources/{name}/test` (admin): the API's server-side test delivery.
pub async fn test(State(state): State<AppState>, console: Console, Path(name): Path<String>, body: Bytes) -> Result<Markup, PageError> {
    console.form(&body)?;
    console.admin()?;
    let name = service::parse_name(&name).map_err(|e| console.error(e))?;
    let result = service::test_source(&state, &name).await.map_err(|e| console.error(e))?;
    Ok(test_page(&result, &console.viewer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(admin: bool) -> Viewer {
        Viewer { key_name: "k".into(), key_prefix: "tw_x".into(), admin, csrf: "tok".into() }
    }

    fn view(name: &str) -> SourceView {
        let json = json!({
            "source": name, "enabled": true, "auto_triage": true, "playbook": "phishing_triage", "format": "auto",
            "mode": "sync", "severity_mapping": {}, "timestamp_tolerance_secs": 300, "max_body_bytes": 1048576,
            "rate_limit": null, "verification": {"scheme": "header-token", "header": "x-api-key"}, "allowed_ips": [],
            "mapping": null, "managed_by_config": false, "secret_fingerprint": "hmac:1a2b3c4d", "secret_rotated_at": null,
            "previous_secret_expires_at": null, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "last_delivery_at": "2026-01-02T03:04:05Z", "delivery_count": 12, "error_count": 3, "webhook_path": format!("/api/webhooks/{name}")
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_form_becomes_the_apis_create_body() {
        let v = NewSource {
            source: "kibana".into(),
            verification: "header-token".into(),
            header: "X-Api-Key".into(),
            format: "elastic".into(),
            mode: "".into(),
        };
        assert_eq!(
            Value::Object(v.body()),
            json!({"source": "kibana", "verification": {"scheme": "header-token", "header": "X-Api-Key"}, "format": "elastic"})
        );
        let v = NewSource { source: "mail".into(), verification: "github".into(), ..Default::default() };
        assert_eq!(Value::Object(v.body()), json!({"source": "mail", "verification": "github"}));
    }

    #[test]
    fn an_admin_sees_every_column_and_control() {
        let html = list_page(&[view("edr")], &HashMap::new(), &viewer(true)).into_string();
        for text in ["Add source", "Send test event", "Disable", "Rotate secret", "Delete", "header-token (X-Api-Key)", "phishing_triage"] {
            assert!(html.contains(text), "{text}: {html}");
        }
        assert!(html.contains(r#"<td class="num">12</td><td class="num">3</td>"#), "{html}");
        assert!(html.contains(r#"<time datetime="2026-01-02T03:04:05Z""#), "{html}");
        assert!(html.contains(r#"action="/console/sources/edr/rotate""#), "{html}");
    }

    #[test]
    fn a_read_key_sees_no_control_it_cannot_use() {
        let html = list_page(&[view("edr")], &HashMap::new(), &viewer(false)).into_string();
        for text in
            ["Add source", "Send test event", "Disable", "Rotate secret", "Delete", "<form method=\"post\" action=\"/console/sources"]
        {
            assert!(!html.contains(text), "{text}: {html}");
        }
        assert!(html.contains("edr"), "{html}");
    }

    #[test]
    fn a_config_source_offers_only_the_test() {
        let mut v = view("edr");
        v.managed_by_config = true;
        let html = list_page(&[v], &HashMap::new(), &viewer(true)).into_string();
        assert!(html.contains("Send test event") && html.contains("config"), "{html}");
        assert!(!html.contains("Rotate secret") && !html.contains(">Delete<"), "{html}");
    }

    #[test]
    fn a_new_install_says_how_to_add_the_first_source() {
        let html = list_page(&[], &HashMap::new(), &viewer(true)).into_string();
        assert!(html.contains("No sources yet") && html.contains(r#"href="/console/sources/new""#) && html.contains(CLI_ADD), "{html}");
        let html = list_page(&[], &HashMap::new(), &viewer(false)).into_string();
        assert!(html.contains(CLI_ADD) && !html.contains("/console/sources/new"), "{html}");
    }

    #[test]
    fn the_form_keeps_values_and_lists_problems() {
        let values = NewSource { source: "bad name".into(), verification: "basic".into(), ..Default::default() };
        let html = new_page(&viewer(true), &values, &[FieldError::new("source", "must be lowercase")]).into_string();
        assert!(html.contains(r#"value="bad name""#), "{html}");
        assert!(html.contains(r#"<option value="basic" selected>basic</option>"#), "{html}");
        assert!(html.contains("<code>source</code>: must be lowercase"), "{html}");
    }
}
