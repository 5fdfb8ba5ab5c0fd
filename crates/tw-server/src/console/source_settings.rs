//! A source's settings page (admin): every setting `PATCH /api/webhooks/{source}` accepts, as one
//! form. The form is turned into the API's update body ([`SettingsForm::body`]) and handed to
//! `routes::sources::update_source`, so the API's rules and messages decide, and the change is
//! audited as `source.update` under the signed-in key. The API's field errors come back next to
//! their field, with what the operator typed kept. A source defined in the config file shows its
//! settings and where to change them instead of the form. The page also rotates the secret with a
//! chosen grace period.

use super::sources::{format_label, rotate_form, select};
use super::views::{self, Nav, Viewer, csrf_field, layout};
use super::{Console, Form, PageError, redirect};
use crate::ApiError;
use crate::api::FieldError;
use crate::api::sources::SourceView;
use crate::routes::sources as service;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::{Map, Value, json};
use tw_core::{Format, SourceMode};

/// What the settings form holds, as text: from the stored source, or as submitted (kept when the
/// API refuses it). Field names are the API's, so its errors land next to their field.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SettingsForm {
    pub enabled: bool,
    pub auto_triage: bool,
    pub playbook: String,
    pub format: String,
    pub mode: String,
    pub verification: String,
    pub header: String,
    /// A new secret, replacing the current one at once; empty keeps it. Never shown back.
    pub secret: String,
    /// One `vendor value = severity` per line.
    pub severity_mapping: String,
    /// One address or CIDR range per line (or separated by commas or spaces).
    pub allowed_ips: String,
    pub rate_per_second: String,
    pub rate_burst: String,
    /// The field mapping as JSON; empty for none.
    pub mapping: String,
    pub timestamp_tolerance_secs: String,
    pub max_body_bytes: String,
}

impl SettingsForm {
    /// The stored settings of `v`.
    pub fn of(v: &SourceView) -> SettingsForm {
        SettingsForm {
            enabled: v.enabled,
            auto_triage: v.auto_triage,
            playbook: v.playbook.clone().unwrap_or_default(),
            format: format_label(v).to_string(),
            mode: v.mode.as_str().to_string(),
            verification: v.verification.scheme_name().to_string(),
            header: v.verification.header.as_deref().map(crate::sources::header_display).unwrap_or_default(),
            secret: String::new(),
            severity_mapping: v.severity_mapping.iter().map(|(k, s)| format!("{k} = {s}\n")).collect(),
            allowed_ips: v.allowed_ips.join("\n"),
            rate_per_second: v.rate_limit.map(|r| r.per_second.to_string()).unwrap_or_default(),
            rate_burst: v.rate_limit.map(|r| r.burst.to_string()).unwrap_or_default(),
            mapping: v.mapping.as_ref().and_then(|m| serde_json::to_string_pretty(m).ok()).unwrap_or_default(),
            timestamp_tolerance_secs: v.timestamp_tolerance_secs.to_string(),
            max_body_bytes: v.max_body_bytes.to_string(),
        }
    }

    /// A submitted form. An unticked checkbox is not sent: it reads as `false`.
    pub fn from_form(form: &Form) -> SettingsForm {
        let raw = |k: &str| form.get(k).unwrap_or_default().to_string();
        SettingsForm {
            enabled: form.get("enabled").is_some(),
            auto_triage: form.get("auto_triage").is_some(),
            playbook: form.text("playbook").to_string(),
            format: form.text("format").to_string(),
            mode: form.text("mode").to_string(),
            verification: form.text("verification").to_string(),
            header: form.text("header").to_string(),
            secret: form.text("secret").to_string(),
            severity_mapping: raw("severity_mapping"),
            allowed_ips: raw("allowed_ips"),
            rate_per_second: form.text("rate_per_second").to_string(),
            rate_burst: form.text("rate_burst").to_string(),
            mapping: raw("mapping"),
            timestamp_tolerance_secs: form.text("timestamp_tolerance_secs").to_string(),
            max_body_bytes: form.text("max_body_bytes").to_string(),
        }
    }

    /// The API's update body for the whole form (every setting, so the page saves what it
    /// shows), or the fields whose text could not even be read as the API's JSON (a severity line
    /// without `=`, a mapping that is not JSON). The values themselves are the API's to judge.
    pub fn body(&self) -> Result<Map<String, Value>, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut body = Map::new();
        body.insert("enabled".into(), Value::Bool(self.enabled));
        body.insert("auto_triage".into(), Value::Bool(self.auto_triage));
        body.insert("playbook".into(), if self.playbook.is_empty() { Value::Null } else { Value::String(self.playbook.clone()) });
        body.insert("format".into(), Value::String(self.format.clone()));
        body.insert("mode".into(), Value::String(self.mode.clone()));
        let verification = match self.verification.as_str() {
            "header-token" => json!({"scheme": "header-token", "header": self.header}),
            scheme => Value::String(scheme.to_string()),
        };
        body.insert("verification".into(), verification);
        if !self.secret.is_empty() {
            body.insert("secret".into(), Value::String(self.secret.clone()));
        }
        let mut severities = Map::new();
        for (n, line) in self.severity_mapping.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            match line.rsplit_once('=') {
                Some((vendor, ours)) if !vendor.trim().is_empty() => {
                    severities.insert(vendor.trim().to_string(), Value::String(ours.trim().to_string()));
                }
                _ => errors.push(FieldError::new("severity_mapping", format!("line {}: write `vendor value = severity`", n + 1))),
            }
        }
        body.insert("severity_mapping".into(), Value::Object(severities));
        let ips: Vec<Value> =
            self.allowed_ips.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()).map(|s| json!(s)).collect();
        body.insert("allowed_ips".into(), Value::Array(ips));
        let rate = match (self.rate_per_second.as_str(), self.rate_burst.as_str()) {
            ("", "") => Value::Null,
            (per_second, "") => json!({"per_second": per_second}),
            (per_second, burst) => json!({"per_second": per_second, "burst": burst}),
        };
        body.insert("rate_limit".into(), rate);
        match self.mapping.trim() {
            "" => {
                body.insert("mapping".into(), Value::Null);
            }
            text => match serde_json::from_str::<Value>(text) {
                Ok(v) => {
                    body.insert("mapping".into(), v);
                }
                Err(e) => errors.push(FieldError::new("mapping", format!("is not valid JSON: {e}"))),
            },
        }
        body.insert("timestamp_tolerance_secs".into(), Value::String(self.timestamp_tolerance_secs.clone()));
        body.insert("max_body_bytes".into(), Value::String(self.max_body_bytes.clone()));
        if errors.is_empty() { Ok(body) } else { Err(errors) }
    }
}

/// The setting a field error belongs to: `rate_limit.burst` and `allowed_ips[2]` are
/// `rate_limit` and `allowed_ips`.
fn root(field: &str) -> &str {
    field.split(['.', '[']).next().unwrap_or(field)
}

/// The problems of one setting, shown under its input.
fn field_errors(problems: &[FieldError], name: &str) -> Markup {
    html! {
        @for p in problems.iter().filter(|p| root(&p.field) == name) {
            span.field-error role="alert" { @if p.field != name { code { (p.field) } ": " } (p.message) }
        }
    }
}

/// `aria-invalid` for an input whose setting has a problem.
fn invalid(problems: &[FieldError], name: &str) -> Option<&'static str> {
    problems.iter().any(|p| root(&p.field) == name).then_some("true")
}

/// The settings form, with the API's `problems` next to their field (and listed at the top).
fn settings_form(v: &SourceView, f: &SettingsForm, playbooks: &[String], problems: &[FieldError], viewer: &Viewer) -> Markup {
    let formats: Vec<&str> = std::iter::once("auto").chain(Format::ALL.iter().map(|f| f.as_str())).collect();
    let modes = [SourceMode::Sync.as_str(), SourceMode::Async.as_str()];
    html! {
        form.stack method="post" action=(format!("/console/sources/{}/settings", v.source)) {
            (csrf_field(&viewer.csrf))
            label.check {
                input type="checkbox" name="enabled" value="true" checked[f.enabled];
                " Enabled" span.hint { "A disabled source refuses deliveries with 403 source_disabled." }
                (field_errors(problems, "enabled"))
            }
            fieldset {
                legend { "Triage" }
                label.check {
                    input type="checkbox" name="auto_triage" value="true" checked[f.auto_triage];
                    " Auto-triage" span.hint { "Run the playbook on each new incident." }
                    (field_errors(problems, "auto_triage"))
                }
                label {
                    "Playbook"
                    select name="playbook" id="playbook" aria-invalid=[invalid(problems, "playbook")] {
                        option value="" selected[f.playbook.is_empty()] { "none" }
                        @for p in playbooks { option value=(p) selected[*p == f.playbook] { (p) } }
                        @if !f.playbook.is_empty() && !playbooks.contains(&f.playbook) { option value=(f.playbook) selected { (f.playbook) } }
                    }
                    (field_errors(problems, "playbook"))
                }
            }
            fieldset {
                legend { "Payloads" }
                label {
                    "Format" (select("format", &formats, &f.format))
                    span.hint { "auto detects the vendor per payload." }
                    (field_errors(problems, "format"))
                }
                label {
                    "Mode" (select("mode", &modes, &f.mode))
                    span.hint { "sync: the incident exists before the answer (201); async: answered 202, made by a worker." }
                    (field_errors(problems, "mode"))
                }
                label {
                    "Severity mapping"
                    textarea name="severity_mapping" rows="4" spellcheck="false" aria-invalid=[invalid(problems, "severity_mapping")] placeholder="sev5 = critical" { (f.severity_mapping) }
                    span.hint { "One " code { "vendor value = severity" } " a line (info, low, medium, high, critical); empty: the vendor's words as we read them." }
                    (field_errors(problems, "severity_mapping"))
                }
                label {
                    "Field mapping (JSON)"
                    textarea name="mapping" rows="6" spellcheck="false" aria-invalid=[invalid(problems, "mapping")] placeholder="{\"title\": \"/alert/name\", \"severity\": \"/alert/level\"}" { (f.mapping) }
                    span.hint { "Where the vendor keeps each alert field, as JSON pointers; empty: the format's own reading." }
                    (field_errors(problems, "mapping"))
                }
            }
            fieldset {
                legend { "Verification" }
                label {
                    "Scheme" (select("verification", &tw_core::verification::SCHEMES, &f.verification))
                    (field_errors(problems, "verification"))
                }
                label {
                    "Header name (header-token only)"
                    input type="text" name="header" value=(f.header) placeholder="X-Api-Key" spellcheck="false" autocomplete="off";
                }
                label {
                    "New secret (optional)"
                    input type="password" name="secret" autocomplete="new-password" aria-invalid=[invalid(problems, "secret")];
                    span.hint { "Replaces the current secret at once, without a grace period (rotate below for one). Needed when the new scheme cannot use the current secret." }
                    (field_errors(problems, "secret"))
                }
                label {
                    "Timestamp tolerance (seconds)"
                    input type="text" inputmode="numeric" name="timestamp_tolerance_secs" value=(f.timestamp_tolerance_secs) aria-invalid=[invalid(problems, "timestamp_tolerance_secs")];
                    span.hint { "How old a signed timestamp may be (schemes that sign one)." }
                    (field_errors(problems, "timestamp_tolerance_secs"))
                }
            }
            fieldset {
                legend { "Limits" }
                label {
                    "Allowed IPs"
                    textarea name="allowed_ips" rows="3" spellcheck="false" aria-invalid=[invalid(problems, "allowed_ips")] placeholder="192.0.2.0/24" { (f.allowed_ips) }
                    span.hint { "One address or CIDR range a line; empty: any address." }
                    (field_errors(problems, "allowed_ips"))
                }
                div.pair {
                    label {
                        "Rate limit (per second)"
                        input type="text" inputmode="decimal" name="rate_per_second" value=(f.rate_per_second) aria-invalid=[invalid(problems, "rate_limit")];
                    }
                    label {
                        "Burst"
                        input type="text" inputmode="numeric" name="rate_burst" value=(f.rate_burst);
                    }
                }
                span.hint { "Verified deliveries per second and at once, per server process; both empty: no limit." }
                (field_errors(problems, "rate_limit"))
                label {
                    "Max body (bytes)"
                    input type="text" inputmode="numeric" name="max_body_bytes" value=(f.max_body_bytes) aria-invalid=[invalid(problems, "max_body_bytes")];
                    (field_errors(problems, "max_body_bytes"))
                }
            }
            // Problems about no field on this form (e.g. an unknown field): listed at the top only.
            div.actions { button.primary type="submit" { "Save settings" } a.button href="/console/sources" { "Cancel" } }
        }
    }
}

/// What a config-file source shows instead of the form: its settings, read-only.
fn managed_panel(v: &SourceView) -> Markup {
    html! {
        div.notice role="status" {
            "This source is defined in the config file: change it there and restart (or reload) the server. "
            "The API and the console refuse to change it (" code { "409 managed_by_config" } ")."
        }
        div.panel {
            dl.facts {
                dt { "Enabled" } dd { (v.enabled) }
                dt { "Format" } dd { (format_label(v)) }
                dt { "Mode" } dd { (v.mode.as_str()) }
                dt { "Verification" } dd { (v.verification.label()) }
                dt { "Auto-triage" } dd { (v.auto_triage) @if let Some(p) = &v.playbook { " · " code { (p) } } }
                dt { "Allowed IPs" } dd { @if v.allowed_ips.is_empty() { "any" } @else { (v.allowed_ips.join(", ")) } }
                dt { "Rate limit" } dd { @match v.rate_limit { Some(r) => { (r.per_second) "/s, burst " (r.burst) }, None => "none" } }
                dt { "Timestamp tolerance" } dd { (v.timestamp_tolerance_secs) " s" }
                dt { "Max body" } dd { (v.max_body_bytes) " bytes" }
            }
        }
    }
}

/// The settings page of `v`: the form (kept values and problems after a refused save), or the
/// config file's notice; the rotation form.
pub fn settings_page(v: &SourceView, f: &SettingsForm, playbooks: &[String], problems: &[FieldError], viewer: &Viewer) -> Markup {
    layout(
        "Source settings",
        Nav::Sources,
        Some(viewer),
        html! {
            p { a href="/console/sources" { "← Sources" } }
            h1 { "Settings of " code { (v.source) } }
            @if v.managed_by_config {
                (managed_panel(v))
            } @else {
                @if !problems.is_empty() { (views::problems("The settings were not saved:", problems)) }
                div.panel { (settings_form(v, f, playbooks, problems, viewer)) }
                h2 { "Rotate the secret" }
                div.panel {
                    p { "A new secret is generated and shown once; the current one keeps verifying for the grace period, so the sender can be updated meanwhile." }
                    (rotate_form(&v.source, viewer))
                }
            }
        },
    )
}

async fn view_of(state: &AppState, console: &Console, name: &str) -> Result<(SourceView, Vec<String>), PageError> {
    let name = service::parse_name(name).map_err(|e| console.error(e))?;
    let record = service::load(state, &name).await.map_err(|e| console.error(e))?;
    let playbooks = state.playbooks.names().await.map_err(|e| console.error(ApiError::from(e)))?;
    Ok((SourceView::from(&record), playbooks))
}

/// `GET /console/sources/{name}/settings` (admin).
pub async fn form(State(state): State<AppState>, console: Console, Path(name): Path<String>) -> Result<Markup, PageError> {
    console.admin()?;
    let (view, playbooks) = view_of(&state, &console, &name).await?;
    Ok(settings_page(&view, &SettingsForm::of(&view), &playbooks, &[], &console.viewer))
}

/// `POST /console/sources/{name}/settings` (admin): the API's update with the form's settings;
/// back to the sources list, or the form again (422) with the API's problems by their fields.
pub async fn save(State(state): State<AppState>, console: Console, Path(name): Path<String>, body: Bytes) -> Result<Response, PageError> {
    let form = console.form(&body)?;
    let who = console.admin()?;
    let values = SettingsForm::from_form(&form);
    let source = service::parse_name(&name).map_err(|e| console.error(e))?;
    let refused = match values.body() {
        Ok(body) => match service::update_source(&state, &who, &source, &body).await {
            Ok(_) => return Ok(redirect("/console/sources", &[])),
            Err(ApiError::Validation { details, .. }) => details,
            Err(e) => return Err(console.error(e)),
        },
        Err(problems) => problems,
    };
    let (view, playbooks) = view_of(&state, &console, &name).await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, settings_page(&view, &values, &playbooks, &refused, &console.viewer)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer() -> Viewer {
        Viewer { key_name: "k".into(), key_prefix: "tw_x".into(), admin: true, csrf: "tok".into() }
    }

    fn view() -> SourceView {
        serde_json::from_value(json!({
            "source": "edr", "enabled": true, "auto_triage": false, "playbook": null, "format": "crowdstrike",
            "mode": "sync", "severity_mapping": {"sev5": "critical"}, "timestamp_tolerance_secs": 300, "max_body_bytes": 1048576,
            "rate_limit": {"per_second": 2.5, "burst": 10}, "verification": {"scheme": "header-token", "header": "x-api-key"},
            "allowed_ips": ["192.0.2.0/24", "10.0.0.1/32"], "mapping": null, "managed_by_config": false,
            "secret_fingerprint": "hmac:1a2b3c4d", "secret_rotated_at": null, "previous_secret_expires_at": null,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z", "last_delivery_at": null,
            "delivery_count": 0, "error_count": 0, "webhook_path": "/api/webhooks/edr"
        }))
        .unwrap()
    }

    #[test]
    fn the_stored_settings_become_the_apis_update_body_unchanged() {
        let body = SettingsForm::of(&view()).body().unwrap();
        assert_eq!(
            Value::Object(body),
            json!({
                "enabled": true, "auto_triage": false, "playbook": null, "format": "crowdstrike", "mode": "sync",
                "verification": {"scheme": "header-token", "header": "X-Api-Key"}, "severity_mapping": {"sev5": "critical"},
                "allowed_ips": ["192.0.2.0/24", "10.0.0.1/32"], "rate_limit": {"per_second": "2.5", "burst": "10"},
                "mapping": null, "timestamp_tolerance_secs": "300", "max_body_bytes": "1048576"
            })
        );
    }

    #[test]
    fn unticked_boxes_are_false_and_unreadable_text_is_named() {
        let form = Form::parse(
            b"csrf=t&playbook=&format=auto&mode=async&verification=hmac&secret=s3cret&severity_mapping=oops%0Ahigh%3Dhigh&mapping=%7Bnope",
        );
        let f = SettingsForm::from_form(&form);
        assert!(!f.enabled && !f.auto_triage);
        let problems = f.body().unwrap_err();
        assert_eq!(problems.iter().map(|p| p.field.as_str()).collect::<Vec<_>>(), ["severity_mapping", "mapping"]);
        assert!(problems[0].message.starts_with("line 1:"), "{problems:?}");
        let f = SettingsForm { severity_mapping: "high=high".into(), mapping: String::new(), ..f };
        let body = f.body().unwrap();
        assert_eq!(
            (&body["secret"], &body["rate_limit"], &body["severity_mapping"]),
            (&json!("s3cret"), &Value::Null, &json!({"high": "high"}))
        );
    }

    #[test]
    fn problems_sit_next_to_their_field_and_input_is_kept() {
        let mut f = SettingsForm::of(&view());
        f.allowed_ips = "192.0.2.0/24\nnot-an-ip".into();
        f.secret = "typed-secret".into();
        let problems = [FieldError::new("allowed_ips[1]", "not an address"), FieldError::new("rate_limit.burst", "too big")];
        let html = settings_page(&view(), &f, &["malware_triage".into()], &problems, &viewer()).into_string();
        let ips = html.find(r#"name="allowed_ips""#).unwrap();
        let err = html.find(r#"<span class="field-error" role="alert"><code>allowed_ips[1]</code>: not an address"#).unwrap();
        let rate = html.find(r#"name="rate_per_second""#).unwrap();
        assert!(ips < err && err < rate, "the error is under its input: {html}");
        assert!(html.contains("192.0.2.0/24\nnot-an-ip</textarea>"), "{html}");
        assert!(html.contains("<code>rate_limit.burst</code>: too big"), "{html}");
        assert!(!html.contains("typed-secret"), "a secret is never written back into the page");
        assert!(html.contains(r#"<option value="malware_triage">malware_triage</option>"#), "{html}");
        assert!(html.contains(r#"name="grace_period_secs""#) && html.contains(r#"action="/console/sources/edr/rotate""#), "{html}");
    }

    #[test]
    fn a_config_source_shows_where_to_change_it_instead_of_the_form() {
        let mut v = view();
        v.managed_by_config = true;
        let html = settings_page(&v, &SettingsForm::of(&v), &[], &[], &viewer()).into_string();
        assert!(html.contains("defined in the config file") && html.contains("managed_by_config"), "{html}");
        assert!(!html.contains("<form method=\"post\" action=\"/console/sources/edr"), "{html}");
    }
}
