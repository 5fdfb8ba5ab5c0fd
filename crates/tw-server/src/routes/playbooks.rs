//! Playbooks: `GET/POST /api/playbooks`, `GET/PUT/DELETE /api/playbooks/:name`,
//! `POST /api/playbooks/validate`, `POST /api/playbooks/:name/test`.
//!
//! Bodies that create or replace a playbook are its YAML text (any Content-Type), or JSON
//! `{"yaml": "..."}`.

use crate::ApiError;
use crate::api::ErrorBody;
use crate::api::FieldError;
use crate::api::playbooks::{
    BrokenPlaybook, PlaybookList, PlaybookListEntry, PlaybookOrigin, PlaybookTestRequest, PlaybookTestResult, PlaybookValidation,
    PlaybookView, PlaybookYaml,
};
use crate::audit::{Admin, playbook_snapshot};
use crate::auth::ReadAccess;
use crate::state::AppState;
use crate::triage::{RunError, run_playbook};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use tw_core::triage::{Playbook, PlaybookError, TriageIncident, builtin_yaml, parse_playbook};
use tw_core::{Format, SourceName};

/// The largest body `POST /api/playbooks/:name/test` reads: a default-sized alert (1 MiB) and
/// 64 KiB more for `variables` and the rest.
pub const MAX_TEST_BODY_BYTES: usize = 1024 * 1024 + 64 * 1024;

/// Names that are API paths under `/api/playbooks/`.
const RESERVED: &[&str] = &["validate"];

fn yaml_of(body: &[u8]) -> Result<String, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::InvalidPayload("Playbook must be UTF-8 YAML text".into()))?;
    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text)
        && let Some(Value::String(y)) = m.get("yaml")
    {
        return Ok(y.clone());
    }
    if text.trim().is_empty() {
        return Err(ApiError::InvalidPayload("Request body must be a playbook's YAML".into()));
    }
    Ok(text.to_string())
}

fn invalid(errors: &[PlaybookError]) -> ApiError {
    ApiError::fields(
        errors
            .iter()
            .map(|e| {
                let field = match &e.step {
                    Some(s) => format!("steps.{s}.{}", e.field),
                    None => e.field.clone(),
                };
                let message = match e.line {
                    Some(l) => format!("{} (line {l})", e.message),
                    None => e.message.clone(),
                };
                FieldError::new(field, message)
            })
            .collect(),
    )
}

fn parse_checked(yaml: &str) -> Result<Playbook, ApiError> {
    let playbook = parse_playbook(yaml).map_err(|e| invalid(&e))?;
    if RESERVED.contains(&playbook.name.as_str()) {
        return Err(ApiError::field("name", format!("'{}' is reserved", playbook.name)));
    }
    Ok(playbook)
}

async fn used_by(state: &AppState, name: &str) -> Result<Vec<String>, ApiError> {
    Ok(state
        .store
        .list_sources()
        .await?
        .into_iter()
        .filter(|s| s.settings.playbook.as_deref() == Some(name))
        .map(|s| s.name.to_string())
        .collect())
}

/// Every playbook, built-in first.
#[utoipa::path(
    get,
    path = "/api/playbooks",
    tag = "playbooks",
    operation_id = "list_playbooks",
    summary = "Every playbook, built-in first",
    security(("api_key" = ["read"])),
    responses(
        (status = 200, description = "The playbooks", body = PlaybookList),
    )
)]
pub async fn list(State(state): State<AppState>, _auth: ReadAccess) -> Result<Json<PlaybookList>, ApiError> {
    list_playbooks(&state).await.map(Json)
}

/// Every playbook, built-in first, with the sources that use each (a stored one that no longer
/// parses as such): what `GET /api/playbooks` and the console's playbook list show.
pub async fn list_playbooks(state: &AppState) -> Result<PlaybookList, ApiError> {
    let sources = state.store.list_sources().await?;
    let users = |name: &str| -> Vec<String> {
        sources.iter().filter(|s| s.settings.playbook.as_deref() == Some(name)).map(|s| s.name.to_string()).collect()
    };
    let mut out = Vec::new();
    for name in tw_core::triage::builtin_names() {
        if let Some(r) = state.playbooks.get(name).await? {
            out.push(PlaybookListEntry::Playbook(PlaybookView::new(r.playbook.playbook(), PlaybookOrigin::Builtin, None, users(name))));
        }
    }
    for stored in state.store.list_playbooks().await? {
        match parse_playbook(&stored.yaml) {
            Ok(p) => out.push(PlaybookListEntry::Playbook(PlaybookView::new(
                &p,
                PlaybookOrigin::of_stored(&stored.origin),
                None,
                users(&stored.name),
            ))),
            Err(_) => out.push(PlaybookListEntry::Broken(BrokenPlaybook {
                origin: PlaybookOrigin::of_stored(&stored.origin),
                name: stored.name,
                builtin: false,
                error: "no longer parses".into(),
            })),
        }
    }
    Ok(PlaybookList { data: out })
}

/// One playbook with its YAML.
#[utoipa::path(
    get,
    path = "/api/playbooks/{name}",
    tag = "playbooks",
    operation_id = "get_playbook",
    summary = "One playbook with its YAML",
    security(("api_key" = ["read"])),
    params(("name" = String, Path, description = "The playbook name")),
    responses(
        (status = 200, description = "The playbook", body = PlaybookView),
        (status = 404, description = "`not_found`: no such playbook", body = ErrorBody),
    )
)]
pub async fn get(State(state): State<AppState>, _auth: ReadAccess, Path(name): Path<String>) -> Result<Json<PlaybookView>, ApiError> {
    get_playbook(&state, &name).await.map(Json)
}

/// One playbook with its YAML: what `GET /api/playbooks/{name}` and the console's playbook page
/// show.
pub async fn get_playbook(state: &AppState, name: &str) -> Result<PlaybookView, ApiError> {
    let not_found = || ApiError::NotFound(format!("Playbook '{}' not found", name.chars().take(80).collect::<String>()));
    let resolved = state.playbooks.get(name).await?.ok_or_else(not_found)?;
    let used = used_by(state, name).await?;
    if resolved.builtin {
        return Ok(PlaybookView::new(resolved.playbook.playbook(), PlaybookOrigin::Builtin, builtin_yaml(name), used));
    }
    let stored = state.store.get_playbook(name).await?.ok_or_else(not_found)?;
    Ok(PlaybookView::new(resolved.playbook.playbook(), PlaybookOrigin::of_stored(&stored.origin), Some(&stored.yaml), used))
}

/// Adds a user playbook (409 when the name exists).
#[utoipa::path(
    post,
    path = "/api/playbooks",
    tag = "playbooks",
    operation_id = "create_playbook",
    summary = "Add a playbook",
    security(("api_key" = ["admin"])),
    request_body(
        description = "The playbook's YAML text (any Content-Type), or JSON `{\"yaml\": \"...\"}`",
        content((String = "application/yaml"), (PlaybookYaml = "application/json"))
    ),
    responses(
        (status = 201, description = "Added", body = PlaybookView),
        (status = 400, description = "`invalid_payload`: the body is empty or not UTF-8", body = ErrorBody),
        (status = 409, description = "`playbook_exists` | `builtin_playbook`: the name is taken", body = ErrorBody),
        (status = 422, description = "`validation_error`: the playbook is invalid (every problem in `details`)", body = ErrorBody),
    )
)]
pub async fn create(State(state): State<AppState>, who: Admin, body: Bytes) -> Result<(StatusCode, Json<PlaybookView>), ApiError> {
    let yaml = yaml_of(&body)?;
    let playbook = parse_checked(&yaml)?;
    if state.playbooks.is_builtin(&playbook.name) {
        return Err(ApiError::BuiltinPlaybook(playbook.name));
    }
    if state.store.get_playbook(&playbook.name).await?.is_some() {
        return Err(ApiError::PlaybookExists(playbook.name));
    }
    state.store.put_playbook(&playbook.name, &yaml, "api").await?;
    state.playbooks.invalidate(&playbook.name);
    tracing::info!(target: "api", playbook = %playbook.name, "playbook added");
    who.record(&state, "playbook.create", &playbook.name, None, Some(playbook_snapshot(&yaml, "api"))).await;
    Ok((StatusCode::CREATED, Json(PlaybookView::new(&playbook, PlaybookOrigin::Api, Some(&yaml), Vec::new()))))
}

/// Creates or replaces a user playbook; the YAML's name must match the path.
#[utoipa::path(
    put,
    path = "/api/playbooks/{name}",
    tag = "playbooks",
    operation_id = "replace_playbook",
    summary = "Create or replace a playbook",
    security(("api_key" = ["admin"])),
    params(("name" = String, Path, description = "The playbook name")),
    request_body(
        description = "The playbook's YAML text (any Content-Type), or JSON `{\"yaml\": \"...\"}`",
        content((String = "application/yaml"), (PlaybookYaml = "application/json"))
    ),
    responses(
        (status = 200, description = "Replaced", body = PlaybookView),
        (status = 201, description = "Created", body = PlaybookView),
        (status = 400, description = "`invalid_payload`: the body is empty or not UTF-8", body = ErrorBody),
        (status = 409, description = "`builtin_playbook`: built-in playbooks cannot be changed", body = ErrorBody),
        (status = 422, description = "`validation_error`: the playbook is invalid, or its name is not the one in the path", body = ErrorBody),
    )
)]
pub async fn replace(
    State(state): State<AppState>,
    who: Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<PlaybookView>), ApiError> {
    if state.playbooks.is_builtin(&name) {
        return Err(ApiError::BuiltinPlaybook(name));
    }
    let yaml = yaml_of(&body)?;
    let playbook = parse_checked(&yaml)?;
    if playbook.name != name {
        return Err(ApiError::field("name", format!("is '{}' but the URL names '{name}'", playbook.name)));
    }
    let before = state.store.get_playbook(&name).await?.map(|p| playbook_snapshot(&p.yaml, &p.origin));
    let created = state.store.put_playbook(&name, &yaml, "api").await?;
    state.playbooks.invalidate(&name);
    tracing::info!(target: "api", playbook = %name, created, "playbook stored");
    who.record(&state, "playbook.put", &name, before, Some(playbook_snapshot(&yaml, "api"))).await;
    let used = used_by(&state, &name).await?;
    Ok((
        if created { StatusCode::CREATED } else { StatusCode::OK },
        Json(PlaybookView::new(&playbook, PlaybookOrigin::Api, Some(&yaml), used)),
    ))
}

/// Deletes a user playbook unless a source uses it.
#[utoipa::path(
    delete,
    path = "/api/playbooks/{name}",
    tag = "playbooks",
    operation_id = "delete_playbook",
    summary = "Delete a playbook",
    security(("api_key" = ["admin"])),
    params(("name" = String, Path, description = "The playbook name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no such playbook", body = ErrorBody),
        (status = 409, description = "`builtin_playbook` | `playbook_in_use`: built in, or a source uses it", body = ErrorBody),
    )
)]
pub async fn remove(State(state): State<AppState>, who: Admin, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    if state.playbooks.is_builtin(&name) {
        return Err(ApiError::BuiltinPlaybook(name));
    }
    let before = state.store.get_playbook(&name).await?.map(|p| playbook_snapshot(&p.yaml, &p.origin));
    if !state.store.delete_playbook(&name).await? {
        return Err(ApiError::NotFound(format!("Playbook '{}' not found", name.chars().take(80).collect::<String>())));
    }
    state.playbooks.invalidate(&name);
    tracing::info!(target: "api", playbook = %name, "playbook deleted");
    who.record(&state, "playbook.delete", &name, before, None).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Validates a playbook without storing it: 200 when valid, 422 with every error otherwise.
#[utoipa::path(
    post,
    path = "/api/playbooks/validate",
    tag = "playbooks",
    operation_id = "validate_playbook",
    summary = "Validate a playbook without storing it",
    security(("api_key" = ["read"])),
    request_body(
        description = "The playbook's YAML text (any Content-Type), or JSON `{\"yaml\": \"...\"}`",
        content((String = "application/yaml"), (PlaybookYaml = "application/json"))
    ),
    responses(
        (status = 200, description = "Valid", body = PlaybookValidation),
        (status = 400, description = "`invalid_payload`: the body is empty or not UTF-8", body = ErrorBody),
        (status = 422, description = "`validation_error`: the playbook is invalid (every problem in `details`)", body = ErrorBody),
    )
)]
pub async fn validate(_auth: ReadAccess, body: Bytes) -> Result<Json<PlaybookValidation>, ApiError> {
    validate_playbook(&body).map(Json)
}

/// Checks a playbook (its YAML text, or JSON `{"yaml": "..."}`) without storing it: what
/// `POST /api/playbooks/validate` and the console's "Validate" do. An invalid one is a
/// validation error with every problem (`steps.<step>.<field>`, with its line when known).
pub fn validate_playbook(body: &[u8]) -> Result<PlaybookValidation, ApiError> {
    let playbook = parse_checked(&yaml_of(body)?)?;
    Ok(PlaybookValidation { valid: true, steps: playbook.steps.len() as u64, name: playbook.name })
}

/// Runs a playbook on a payload without storing anything:
/// `{"payload": {...}, "format"?: "crowdstrike", "variables"?: {...}}`.
#[utoipa::path(
    post,
    path = "/api/playbooks/{name}/test",
    tag = "playbooks",
    operation_id = "test_playbook",
    summary = "Run a playbook on a payload without storing anything",
    security(("api_key" = ["read"])),
    params(("name" = String, Path, description = "The playbook name")),
    request_body = PlaybookTestRequest,
    responses(
        (status = 200, description = "The normalized alert and the triage outcome", body = PlaybookTestResult),
        (status = 400, description = "`invalid_payload`: the body is not a JSON object", body = ErrorBody),
        (status = 404, description = "`not_found`: no such playbook", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 1,114,112 bytes (1 MiB of payload and 64 KiB more)", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad `payload`, `format`, `variables` or `source`, or the run failed (e.g. its result would exceed 8 MiB)", body = ErrorBody),
        (status = 429, description = "`rate_limited`: this API key ran too many tests (default 10 at once, then 2 a second; `tw-cli serve --playbook-test-burst/--playbook-test-per-minute`), or its address failed authentication too often; `Retry-After` says when to come back", body = ErrorBody, headers(("Retry-After" = u64, description = "Whole seconds to wait (at least 1)"))),
    )
)]
pub async fn test(
    State(state): State<AppState>,
    // Counted per API key before the body is read: one test can cost a whole playbook run.
    _auth: crate::auth::PlaybookTestAccess,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<PlaybookTestResult>, ApiError> {
    // The payload a source takes by default, plus room for `variables`: the response is bounded
    // by this and the engine's result cap.
    if body.len() > MAX_TEST_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge(MAX_TEST_BODY_BYTES as u64));
    }
    let body: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(Value::Object(m)) => m,
        _ => return Err(ApiError::InvalidPayload("Request body must be a JSON object with a 'payload'".into())),
    };
    test_playbook(&state, name, &body).await.map(Json)
}

/// Runs playbook `name` on `body`'s `payload` (with its `format`, `variables` and `source`)
/// without storing anything: what `POST /api/playbooks/{name}/test` and the console's "Test" do.
/// The caller has taken the key's playbook-test budget ([`crate::limits::take_playbook_test`])
/// and bounded the body to [`MAX_TEST_BODY_BYTES`].
pub async fn test_playbook(state: &AppState, name: String, body: &Map<String, Value>) -> Result<PlaybookTestResult, ApiError> {
    let payload = body.get("payload").ok_or_else(|| ApiError::field("payload", "is required"))?;
    let format = match body.get("format") {
        None | Some(Value::Null) => None,
        Some(Value::String(f)) if f == "auto" => None,
        Some(Value::String(f)) => Some(f.parse::<Format>().map_err(|e| ApiError::field("format", e))?),
        Some(_) => return Err(ApiError::field("format", "must be a format name")),
    };
    let variables: BTreeMap<String, Value> = match body.get("variables") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => m.clone().into_iter().collect(),
        Some(_) => return Err(ApiError::field("variables", "must be an object")),
    };
    let alert = tw_core::normalize(payload, format, &BTreeMap::new()).map_err(|e| ApiError::field("payload", e.to_string()))?;
    let source = match body.get("source") {
        None | Some(Value::Null) => "playbook-test".to_string(),
        Some(Value::String(s)) => SourceName::parse(s).map_err(|e| ApiError::field("source", e.to_string()))?.to_string(),
        Some(_) => return Err(ApiError::field("source", "must be a source name")),
    };
    let incident = TriageIncident {
        id: None,
        incident_number: None,
        title: alert.title.clone(),
        description: alert.description.clone(),
        severity: alert.severity,
        source,
        format: alert.format,
        event_type: alert.event_type.clone(),
        external_id: alert.external_id.clone(),
        entities: alert.entities.clone(),
        raw: payload.clone(),
    };
    match run_playbook(state, &name, move || incident, variables, false, |outcome| serde_json::to_value(outcome).unwrap_or_default()).await
    {
        Ok(triage) => Ok(PlaybookTestResult { playbook: name, alert, triage }),
        Err(RunError::Permanent(m)) => Err(ApiError::NotFound(m)),
        Err(RunError::Busy) => Err(ApiError::Unavailable),
        Err(RunError::Transient(m) | RunError::Failed(m)) => Err(ApiError::field("playbook", m)),
    }
}
