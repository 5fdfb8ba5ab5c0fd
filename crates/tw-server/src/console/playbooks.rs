//! Playbooks: the list, one playbook with its YAML, "Validate" an edited copy and "Test" the
//! playbook on a pasted payload. Each calls the function the API's handler calls
//! (`routes::playbooks::list_playbooks`, `get_playbook`, `validate_playbook`, `test_playbook`), and
//! the scopes are the API's: any signed-in key may read, validate and test (a test spends the key's
//! playbook-test budget, as `POST /api/playbooks/{name}/test` does). Nothing here stores anything.

use super::triage::panel;
use super::views::{Nav, Viewer, csrf_field, layout, problems};
use super::{Console, PageError};
use crate::ApiError;
use crate::api::FieldError;
use crate::api::playbooks::{PlaybookListEntry, PlaybookTestResult, PlaybookValidation, PlaybookView};
use crate::routes::playbooks as service;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::{Map, Value};
use tw_core::Format;

/// The list of playbooks, built-in first.
pub fn list_page(entries: &[PlaybookListEntry], viewer: &Viewer) -> Markup {
    layout(
        "Playbooks",
        Nav::Playbooks,
        Some(viewer),
        html! {
            div.toolbar { h1 { "Playbooks" } }
            p.muted { "A playbook is the list of steps a triage runs on an incident. Open one to read its YAML, validate an edited copy or test it on a payload." }
            table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Origin" } th.num scope="col" { "Steps" }
                    th scope="col" { "Used by" } th scope="col" { "Description" }
                } }
                tbody {
                    @for e in entries {
                        @match e {
                            PlaybookListEntry::Playbook(p) => tr {
                                th scope="row" { a href=(format!("/console/playbooks/{}", p.name)) { (p.name) } }
                                td { @if p.builtin { span.badge.on { "built-in" } } @else { span.badge { (origin(p)) } } }
                                td.num { (p.steps.len()) }
                                td { @if p.used_by.is_empty() { span.muted { "no source" } } @else {
                                    @for (n, s) in p.used_by.iter().enumerate() { @if n > 0 { ", " } code { (s) } }
                                } }
                                td { (p.description) }
                            },
                            PlaybookListEntry::Broken(b) => tr {
                                th scope="row" { code { (b.name) } }
                                td { span.badge.off { "broken" } }
                                td.num { "—" }
                                td {}
                                td { span.fail { (b.error) } }
                            },
                        }
                    }
                }
            }
            p.muted { "Add or replace playbooks with " code { "tw-cli playbook add FILE.yaml" } " or " code { "PUT /api/playbooks/{name}" } "." }
        },
    )
}

fn origin(p: &PlaybookView) -> &'static str {
    match p.origin {
        crate::api::playbooks::PlaybookOrigin::Builtin => "built-in",
        crate::api::playbooks::PlaybookOrigin::Api => "added by API",
        crate::api::playbooks::PlaybookOrigin::Dir => "playbooks dir",
    }
}

/// `GET /console/playbooks`.
pub async fn list(State(state): State<AppState>, console: Console) -> Result<Markup, PageError> {
    let list = service::list_playbooks(&state).await.map_err(|e| console.error(e))?;
    Ok(list_page(&list.data, &console.viewer))
}

/// What the playbook page's forms hold, and what the last submission found.
#[derive(Debug, Default)]
pub struct Workbench {
    /// The YAML in the validate form (the playbook's own at first).
    pub yaml: Option<String>,
    pub payload: String,
    pub format: String,
    pub validation: Option<Result<PlaybookValidation, Vec<FieldError>>>,
    pub test: Option<Result<PlaybookTestResult, Vec<FieldError>>>,
}

/// One playbook: its steps and YAML, and the validate and test forms with their results.
pub fn playbook_page(p: &PlaybookView, bench: &Workbench, viewer: &Viewer) -> Markup {
    let base = format!("/console/playbooks/{}", p.name);
    let yaml = bench.yaml.as_deref().or(p.yaml.as_deref()).unwrap_or_default();
    let formats: Vec<&str> = std::iter::once("auto").chain(Format::ALL.iter().map(|f| f.as_str())).collect();
    let chosen = if bench.format.is_empty() { "auto" } else { bench.format.as_str() };
    layout(
        &p.name,
        Nav::Playbooks,
        Some(viewer),
        html! {
            p { a href="/console/playbooks" { "← Playbooks" } }
            h1 { "Playbook " code { (p.name) } }
            div.panel {
                dl.facts {
                    dt { "Origin" } dd { (origin(p)) }
                    dt { "Version" } dd { (p.version) }
                    dt { "Description" } dd { (p.description) }
                    dt { "Used by" } dd { @if p.used_by.is_empty() { span.muted { "no source" } } @else { (p.used_by.join(", ")) } }
                }
            }
            h2 { "Steps (" (p.steps.len()) ")" }
            table {
                thead { tr { th scope="col" { "Step" } th scope="col" { "Action" } th scope="col" { "When" } th scope="col" { "Output" } } }
                tbody { @for s in &p.steps { tr {
                    td { code { (s.name) } } td { (s.action) }
                    td { @if let Some(w) = &s.when { code { (w) } } } td { @if let Some(o) = &s.output { code { (o) } } }
                } } }
            }
            h2 { "YAML" }
            @if let Some(y) = &p.yaml { pre.yaml { code { (y) } } } @else { p.muted { "Not available." } }

            h2 id="validate" { "Validate an edited copy" }
            p.muted { "Checks the YAML by the rules the server applies when a playbook is added. Nothing is stored." }
            @match &bench.validation {
                Some(Ok(v)) => div.notice.ok role="status" { "Valid: playbook " code { (v.name) } " with " (v.steps) " steps. Nothing was stored." },
                Some(Err(details)) => (problems("Not valid:", details)),
                None => {},
            }
            form.stack.wide method="post" action=(format!("{base}/validate")) {
                (csrf_field(&viewer.csrf))
                label {
                    "Playbook YAML"
                    textarea name="yaml" rows="18" spellcheck="false" { (yaml) }
                }
                div.actions { button.primary type="submit" { "Validate" } }
            }

            h2 id="test" { "Test on a payload" }
            p.muted { "Normalizes the pasted alert as the intake would and runs " code { (p.name) } " (as stored) on it. Nothing is stored; tests are rate-limited per API key." }
            @match &bench.test {
                Some(Ok(r)) => {
                    div.notice.ok role="status" {
                        (r.alert.format.as_str()) " alert: " strong { (r.alert.title) } " (severity " (r.alert.severity.as_str()) "). Nothing was stored."
                    }
                    (panel(&r.triage))
                },
                Some(Err(details)) => (problems("The test did not run:", details)),
                None => {},
            }
            form.stack.wide method="post" action=(format!("{base}/test")) {
                (csrf_field(&viewer.csrf))
                label {
                    "Payload (JSON, as a sender would post it)"
                    textarea name="payload" rows="12" spellcheck="false" required { (bench.payload) }
                }
                label {
                    "Format"
                    select name="format" { @for f in &formats { option value=(f) selected[*f == chosen] { (f) } } }
                }
                div.actions { button.primary type="submit" { "Test" } }
            }
        },
    )
}

async fn load(state: &AppState, console: &Console, name: &str) -> Result<PlaybookView, PageError> {
    service::get_playbook(state, name).await.map_err(|e| console.error(e))
}

/// `GET /console/playbooks/{name}`.
pub async fn show(State(state): State<AppState>, console: Console, Path(name): Path<String>) -> Result<Markup, PageError> {
    let p = load(&state, &console, &name).await?;
    Ok(playbook_page(&p, &Workbench::default(), &console.viewer))
}

/// The API's refusal as the form's problem list (a refusal about no field is about `field`).
fn as_problems(e: ApiError, field: &str) -> Result<Vec<FieldError>, ApiError> {
    match e {
        ApiError::Validation { details, .. } => Ok(details),
        ApiError::InvalidPayload(m) => Ok(vec![FieldError::new(field, m)]),
        other => Err(other),
    }
}

fn answered(ok: bool, page: Markup) -> Response {
    let status = if ok { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    (status, page).into_response()
}

/// `POST /console/playbooks/{name}/validate`: `POST /api/playbooks/validate` on the form's YAML.
pub async fn validate(
    State(state): State<AppState>,
    console: Console,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    let form = console.form(&body)?;
    let p = load(&state, &console, &name).await?;
    let yaml = form.get("yaml").unwrap_or_default().to_string();
    let validation = match service::validate_playbook(yaml.as_bytes()) {
        Ok(v) => Ok(v),
        Err(e) => Err(as_problems(e, "yaml").map_err(|e| console.error(e))?),
    };
    let ok = validation.is_ok();
    let bench = Workbench { yaml: Some(yaml), validation: Some(validation), ..Default::default() };
    Ok(answered(ok, playbook_page(&p, &bench, &console.viewer)))
}

/// `POST /console/playbooks/{name}/test`: `POST /api/playbooks/{name}/test` on the pasted payload,
/// within the key's playbook-test budget (429 past it).
pub async fn test(State(state): State<AppState>, console: Console, Path(name): Path<String>, body: Bytes) -> Result<Response, PageError> {
    let form = console.form(&body)?;
    crate::limits::take_playbook_test(&state, &console.key).map_err(|e| console.error(e))?;
    let p = load(&state, &console, &name).await?;
    let payload = form.get("payload").unwrap_or_default().to_string();
    let format = form.text("format").to_string();
    if payload.len() > service::MAX_TEST_BODY_BYTES {
        return Err(console.error(ApiError::PayloadTooLarge(service::MAX_TEST_BODY_BYTES as u64)));
    }
    let test = match serde_json::from_str::<Value>(&payload) {
        Err(e) => Err(vec![FieldError::new("payload", format!("is not JSON: {e}"))]),
        Ok(v) => {
            let mut request = Map::new();
            request.insert("payload".into(), v);
            if !format.is_empty() {
                request.insert("format".into(), Value::String(format.clone()));
            }
            match service::test_playbook(&state, p.name.clone(), &request).await {
                Ok(r) => Ok(r),
                Err(e) => Err(as_problems(e, "payload").map_err(|e| console.error(e))?),
            }
        }
    };
    let ok = test.is_ok();
    let bench = Workbench { payload, format, test: Some(test), ..Default::default() };
    Ok(answered(ok, playbook_page(&p, &bench, &console.viewer)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::playbooks::{BrokenPlaybook, PlaybookOrigin, PlaybookStep};
    use serde_json::json;

    fn viewer() -> Viewer {
        Viewer { key_name: "k".into(), key_prefix: "tw_x".into(), admin: false, csrf: "tok".into() }
    }

    fn view(name: &str, builtin: bool) -> PlaybookView {
        PlaybookView {
            name: name.into(),
            description: "Checks <mail>".into(),
            version: "1.0".into(),
            builtin,
            origin: if builtin { PlaybookOrigin::Builtin } else { PlaybookOrigin::Api },
            variables: json!({}),
            steps: vec![PlaybookStep { name: "look".into(), action: "lookalike".into(), when: Some("a > 1".into()), output: None }],
            used_by: vec!["mail".into()],
            yaml: Some("name: x\nsteps: [\"<script>\"]\n".into()),
        }
    }

    #[test]
    fn the_list_shows_origin_steps_and_broken_ones() {
        let entries = vec![
            PlaybookListEntry::Playbook(view("phishing_triage", true)),
            PlaybookListEntry::Playbook(view("mine", false)),
            PlaybookListEntry::Broken(BrokenPlaybook {
                name: "old".into(),
                builtin: false,
                origin: PlaybookOrigin::Dir,
                error: "no longer parses".into(),
            }),
        ];
        let html = list_page(&entries, &viewer()).into_string();
        for text in [
            r#"href="/console/playbooks/phishing_triage""#,
            "built-in",
            "added by API",
            r#"<td class="num">1</td>"#,
            "no longer parses",
            "Checks &lt;mail&gt;",
        ] {
            assert!(html.contains(text), "{text}: {html}");
        }
    }

    #[test]
    fn the_page_escapes_the_yaml_and_shows_each_problem() {
        let bench = Workbench {
            yaml: Some("name: <edited>".into()),
            validation: Some(Err(vec![FieldError::new("steps.look.action", "unknown action 'nope' (line 4)")])),
            ..Default::default()
        };
        let html = playbook_page(&view("p", true), &bench, &viewer()).into_string();
        assert!(html.contains("[&quot;&lt;script&gt;&quot;]") && !html.contains("<script>\""), "{html}");
        assert!(html.contains("name: &lt;edited&gt;</textarea>"), "the edited copy is kept: {html}");
        assert!(html.contains("<code>steps.look.action</code>: unknown action 'nope' (line 4)"), "{html}");
        assert!(html.contains(r#"action="/console/playbooks/p/validate""#) && html.contains(r#"action="/console/playbooks/p/test""#));
        assert_eq!(html.matches(r#"name="csrf" value="tok""#).count(), 3, "sign-out, validate, test: {html}");
        let ok = Workbench { validation: Some(Ok(PlaybookValidation { valid: true, name: "p".into(), steps: 1 })), ..Default::default() };
        assert!(playbook_page(&view("p", true), &ok, &viewer()).into_string().contains("Valid: playbook"));
    }
}
