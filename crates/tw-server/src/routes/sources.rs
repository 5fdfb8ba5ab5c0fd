//! Source management: `POST/GET /api/webhooks`, `GET/PATCH/DELETE /api/webhooks/:source`,
//! `POST /api/webhooks/:source/rotate-secret`, `POST /api/webhooks/:source/test`,
//! `POST /api/webhooks/:source/reprocess`.
//!
//! Bodies are read as JSON whatever their Content-Type says: the spec's own curl example sends
//! JSON labelled as a form.

use crate::ApiError;
use crate::api::ErrorBody;
use crate::api::FieldError;
use crate::api::reprocess::{ReprocessRequest, ReprocessResult};
use crate::api::sources::{CreateSource, RotateSecret, SourceCheck, SourceList, SourceSettingsInput, SourceTestResult, SourceView};
use crate::audit::{Admin, source_snapshot};
use crate::auth::{AdminAccess, ReadAccess};
use crate::sources::{parse_allowed_ips, parse_mapping, secret_owner};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value};
use tw_core::formats::Mapping;
use tw_core::{Format, Secret, SourceMode, SourceName, Verification};
use tw_store::{NewSource, RateLimit, RateLimitError, SourcePatch, SourceRecord, SourceSettings};

/// The default grace period of a rotated-out secret.
pub const DEFAULT_GRACE_SECS: i64 = 24 * 3600;
const MAX_TOLERANCE_SECS: i64 = 24 * 3600;
const MAX_BODY_LIMIT: u64 = 64 * 1024 * 1024;

fn parse_body(body: &Bytes, allow_empty: bool) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return if allow_empty { Ok(Map::new()) } else { Err(ApiError::InvalidPayload("Request body must be a JSON object".into())) };
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::InvalidPayload("Request body must be a JSON object".into())),
        Err(e) => Err(ApiError::InvalidPayload(format!("Request body is not valid JSON: {e}"))),
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        // JSON has one number type: `300.0` is the whole number 300, as JSON Schema counts it.
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads the settable fields of a create or update body into a patch, collecting every problem.
fn parse_fields(body: &Map<String, Value>, playbooks: &[String], errors: &mut Vec<FieldError>) -> SourcePatch {
    let mut p = SourcePatch::default();
    for (key, v) in body {
        let mut bad = |msg: &str| errors.push(FieldError::new(key.as_str(), msg));
        match key.as_str() {
            "source" => {}
            // Its form for the scheme is checked once the scheme is known (`check_secret_form`).
            "secret" => match v.as_str() {
                Some(s) => match Secret::validate(s) {
                    Ok(()) => p.secret = Some(Secret::new(s)),
                    Err(e) => bad(&e),
                },
                None => bad("must be a string"),
            },
            "verification" => match Verification::parse(v) {
                Ok(scheme) => p.verification = Some(scheme),
                Err(e) => errors.push(FieldError::new(e.field, e.message)),
            },
            "mapping" => match v {
                Value::Null => p.mapping = Some(None),
                _ => match Mapping::parse(v) {
                    Ok(m) => p.mapping = Some(Some(m)),
                    Err(problems) => errors.extend(problems.into_iter().map(|e| FieldError::new(e.field, e.problem.to_string()))),
                },
            },
            "allowed_ips" => match parse_allowed_ips(v) {
                Ok(nets) => p.allowed_ips = Some(nets),
                Err(problems) => errors.extend(problems.into_iter().map(|(f, m)| FieldError::new(f, m))),
            },
            "auto_triage" => match as_bool(v) {
                Some(b) => p.auto_triage = Some(b),
                None => bad("must be true or false"),
            },
            "enabled" => match as_bool(v) {
                Some(b) => p.enabled = Some(b),
                None => bad("must be true or false"),
            },
            "playbook" => match v {
                Value::Null => p.playbook = Some(None),
                Value::String(s) if s.is_empty() => p.playbook = Some(None),
                Value::String(s) if playbooks.iter().any(|k| k == s) => p.playbook = Some(Some(s.clone())),
                Value::String(s) => bad(&format!("unknown playbook '{s}' (known: {})", playbooks.join(", "))),
                _ => bad("must be a playbook name"),
            },
            "format" => match v {
                Value::Null => p.format = Some(None),
                Value::String(s) if s == "auto" => p.format = Some(None),
                Value::String(s) => match s.parse::<Format>() {
                    Ok(f) => p.format = Some(Some(f)),
                    Err(e) => bad(&format!("{e}, or auto")),
                },
                _ => bad("must be a format name"),
            },
            "mode" => match v.as_str().map(str::parse::<SourceMode>) {
                Some(Ok(m)) => p.mode = Some(m),
                Some(Err(e)) => bad(&e),
                None => bad("must be sync or async"),
            },
            "severity_mapping" => match parse_mapping(v) {
                Ok(m) => p.severity_mapping = Some(m),
                Err(e) => bad(&e),
            },
            "timestamp_tolerance_secs" => match as_int(v) {
                Some(n) if (1..=MAX_TOLERANCE_SECS).contains(&n) => p.timestamp_tolerance_secs = Some(n),
                _ => bad(&format!("must be a whole number of seconds from 1 to {MAX_TOLERANCE_SECS}")),
            },
            "max_body_bytes" => match as_int(v) {
                Some(n) if n >= 1 && (n as u64) <= MAX_BODY_LIMIT => p.max_body_bytes = Some(n as u64),
                _ => bad(&format!("must be a whole number of bytes from 1 to {MAX_BODY_LIMIT}")),
            },
            "rate_limit" => match parse_rate_limit(v) {
                Ok(r) => p.rate_limit = Some(r),
                Err(e) => errors.push(e),
            },
            other => bad(&format!("unknown field '{other}'")),
        }
    }
    p
}

/// Reads a `rate_limit` value: `{"per_second": N, "burst"?: N}` sets one (`burst` defaults to one
/// second's worth), `null` removes it. Numbers may be sent as strings, like every setting.
pub fn parse_rate_limit(v: &Value) -> Result<Option<RateLimit>, FieldError> {
    let at = |field: &str, msg: String| FieldError::new(format!("rate_limit.{field}"), msg);
    let obj = match v {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        _ => return Err(FieldError::new("rate_limit", "must be an object {\"per_second\": N, \"burst\": N}, or null for no limit")),
    };
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "per_second" | "burst")) {
        return Err(at(k, format!("unknown field '{k}' (expected per_second and burst)")));
    }
    let per_second = match obj.get("per_second") {
        None => return Err(at("per_second", "is required".into())),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    }
    .ok_or_else(|| at("per_second", RateLimitError::PerSecond.to_string()))?;
    let burst = match obj.get("burst") {
        None => per_second.ceil().clamp(1.0, f64::from(RateLimit::MAX_BURST)) as u32,
        Some(v) => as_int(v).and_then(|n| u32::try_from(n).ok()).ok_or_else(|| at("burst", RateLimitError::Burst.to_string()))?,
    };
    RateLimit::new(per_second, burst).map(Some).map_err(|e| at(e.field(), e.to_string()))
}

/// What a `secret` that another source uses is refused with (which source is not said).
pub const SECRET_IN_USE: &str = "is already used by another source; each source needs its own secret (the signature does not cover the source, so either source would accept the other's deliveries)";

/// Refuses (as a `secret` field error) a secret another source verifies with. Read from the
/// store, not the cache, so a change just made through another instance counts; two instances
/// registering the same secret at the same moment can still both succeed (no lock spans the
/// check and the write).
async fn check_secret_unused(
    state: &AppState,
    secret: &Secret,
    name: Option<&SourceName>,
    errors: &mut Vec<FieldError>,
) -> Result<(), ApiError> {
    let sources = state.store.list_sources().await?;
    if secret_owner(secret, &sources, name, state.clock.now()).is_some() {
        errors.push(FieldError::new("secret", SECRET_IN_USE));
    }
    Ok(())
}

/// Refuses a secret that does not have the form the source's scheme needs: a new `secret` is at
/// fault (as a `secret` field error); otherwise the kept one is, and the change of `verification`
/// must bring a new secret with it.
fn check_secret_form(verification: &Verification, new: Option<&Secret>, kept: Option<&Secret>, errors: &mut Vec<FieldError>) {
    if let Some(secret) = new {
        if let Err(e) = verification.check_secret(secret.expose()) {
            errors.push(FieldError::new("secret", e));
        }
    } else if let Some(secret) = kept
        && let Err(e) = verification.check_secret(secret.expose())
    {
        errors.push(FieldError::new(
            "verification",
            format!("the source's current secret does not fit {}: {e}; send a new `secret` in the same request", verification.scheme()),
        ));
    }
}

fn check_auto_triage(s: &SourceSettings, errors: &mut Vec<FieldError>) {
    if s.auto_triage && s.playbook.is_none() {
        errors.push(FieldError::new("playbook", "is required when auto_triage is true"));
    }
}

/// A source name from a path: one that cannot be a source's is an unknown source (404).
pub(crate) fn parse_name(raw: &str) -> Result<SourceName, ApiError> {
    SourceName::parse(raw).map_err(|_| ApiError::UnknownSource(raw.chars().take(64).collect()))
}

/// The stored source `name` (not the cache), or 404 `unknown_source`.
pub async fn load(state: &AppState, name: &SourceName) -> Result<SourceRecord, ApiError> {
    state.store.get_source(name).await?.ok_or_else(|| ApiError::UnknownSource(name.to_string()))
}

/// `POST /api/webhooks`: registers a source. Without `secret`, a strong one is generated and
/// returned once.
#[utoipa::path(
    post,
    path = "/api/webhooks",
    tag = "sources",
    operation_id = "create_source",
    summary = "Register a source",
    description = "Without `secret`, a strong one is generated and returned once. The body is read as JSON whatever its Content-Type.",
    security(("api_key" = ["admin"])),
    request_body = CreateSource,
    responses(
        (status = 201, description = "Registered; `secret` is included (once) when it was generated", body = SourceView),
        (status = 400, description = "`invalid_payload`: the body is not a JSON object", body = ErrorBody),
        (status = 409, description = "`source_exists`: a source of that name exists", body = ErrorBody),
        (status = 422, description = "`validation_error`: a field is missing or invalid (see `details`)", body = ErrorBody),
    )
)]
pub async fn create(State(state): State<AppState>, who: Admin, body: Bytes) -> Result<(StatusCode, Json<SourceView>), ApiError> {
    let view = create_source(&state, &who, &parse_body(&body, false)?).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Registers the source `body` describes (the fields of [`CreateSource`], as JSON values), with
/// every rule the API states; the API's `create` and the console's form both call it. The view
/// holds the secret when it was generated (shown once).
pub async fn create_source(state: &AppState, who: &Admin, body: &Map<String, Value>) -> Result<SourceView, ApiError> {
    let playbooks = state.playbooks.names().await?;
    let mut errors = Vec::new();
    let name = match body.get("source") {
        Some(Value::String(s)) => SourceName::parse(s).map_err(|e| errors.push(FieldError::new("source", e.to_string()))).ok(),
        Some(_) => {
            errors.push(FieldError::new("source", "must be a string"));
            None
        }
        None => {
            errors.push(FieldError::new("source", "is required"));
            None
        }
    };
    let patch = parse_fields(body, &playbooks, &mut errors);
    let mut settings = SourceSettings::default();
    patch.apply(&mut settings);
    check_auto_triage(&settings, &mut errors);
    check_secret_form(&settings.verification, patch.secret.as_ref(), None, &mut errors);
    // A generated secret is 256 random bits: only a given one can collide.
    if let Some(secret) = &patch.secret {
        check_secret_unused(state, secret, name.as_ref(), &mut errors).await?;
    }
    let Some(name) = name.filter(|_| errors.is_empty()) else { return Err(ApiError::fields(errors)) };
    let generated = patch.secret.is_none();
    let secret = match patch.secret {
        Some(s) => s,
        None => tw_store::crypto::generate_secret(&settings.verification)?,
    };
    let record = state.store.create_source(NewSource { name: name.clone(), secret: secret.clone(), settings }).await?;
    state.sources.invalidate(&name);
    tracing::info!(target: "api", source = %name, "source registered");
    who.record(state, "source.create", name.as_str(), None, Some(source_snapshot(&record))).await;
    let mut view = SourceView::from(&record);
    if generated {
        view.secret = Some(secret.expose().to_string());
    }
    Ok(view)
}

/// `GET /api/webhooks`: every source.
#[utoipa::path(
    get,
    path = "/api/webhooks",
    tag = "sources",
    operation_id = "list_sources",
    summary = "List sources (never their secrets)",
    security(("api_key" = ["read"])),
    responses(
        (status = 200, description = "Every source", body = SourceList),
    )
)]
pub async fn list(State(state): State<AppState>, _auth: ReadAccess) -> Result<Json<SourceList>, ApiError> {
    let sources = state.store.list_sources().await?;
    Ok(Json(SourceList { data: sources.iter().map(SourceView::from).collect() }))
}

/// `GET /api/webhooks/:source`.
#[utoipa::path(
    get,
    path = "/api/webhooks/{source}",
    tag = "sources",
    operation_id = "get_source",
    summary = "One source",
    security(("api_key" = ["read"])),
    params(("source" = String, Path, description = "The source name")),
    responses(
        (status = 200, description = "The source", body = SourceView),
        (status = 404, description = "`unknown_source`: no such source", body = ErrorBody),
    )
)]
pub async fn show(State(state): State<AppState>, _auth: ReadAccess, Path(name): Path<String>) -> Result<Json<SourceView>, ApiError> {
    let name = parse_name(&name)?;
    Ok(Json(SourceView::from(&load(&state, &name).await?)))
}

fn refuse_managed(s: &SourceRecord) -> Result<(), ApiError> {
    if s.managed_by_config { Err(ApiError::ManagedByConfig(s.name.to_string())) } else { Ok(()) }
}

/// `PATCH /api/webhooks/:source`: changes settings (and the secret, without a grace period).
#[utoipa::path(
    patch,
    path = "/api/webhooks/{source}",
    tag = "sources",
    operation_id = "update_source",
    summary = "Change a source's settings",
    security(("api_key" = ["admin"])),
    params(("source" = String, Path, description = "The source name")),
    request_body(content = SourceSettingsInput, description = "Only the fields to change. A new `secret` replaces the old one at once (use rotate-secret for a grace period); `source` may be sent but must be unchanged."),
    responses(
        (status = 200, description = "The updated source", body = SourceView),
        (status = 400, description = "`invalid_payload`: the body is not a JSON object", body = ErrorBody),
        (status = 404, description = "`unknown_source`: no such source", body = ErrorBody),
        (status = 409, description = "`managed_by_config`: the source is defined in the config file", body = ErrorBody),
        (status = 422, description = "`validation_error`: a field is missing or invalid (see `details`)", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    who: Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<SourceView>, ApiError> {
    let name = parse_name(&name)?;
    update_source(&state, &who, &name, &parse_body(&body, false)?).await.map(Json)
}

/// Changes the settings `body` names (the fields of [`SourceSettingsInput`]) of the source
/// `name`; the API's `update` and the console both call it.
pub async fn update_source(state: &AppState, who: &Admin, name: &SourceName, body: &Map<String, Value>) -> Result<SourceView, ApiError> {
    let current = load(state, name).await?;
    refuse_managed(&current)?;
    let mut errors = Vec::new();
    if let Some(v) = body.get("source")
        && v.as_str() != Some(name.as_str())
    {
        errors.push(FieldError::new("source", "cannot be changed; register a new source instead"));
    }
    let playbooks = state.playbooks.names().await?;
    let patch = parse_fields(body, &playbooks, &mut errors);
    let mut merged = current.settings.clone();
    patch.apply(&mut merged);
    check_auto_triage(&merged, &mut errors);
    check_secret_form(&merged.verification, patch.secret.as_ref(), Some(&current.secret), &mut errors);
    if let Some(secret) = &patch.secret {
        check_secret_unused(state, secret, Some(name), &mut errors).await?;
    }
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    let record = state.store.update_source(name, patch).await?;
    state.sources.invalidate(name);
    tracing::info!(target: "api", source = %name, "source updated");
    who.record(state, "source.update", name.as_str(), Some(source_snapshot(&current)), Some(source_snapshot(&record))).await;
    Ok(SourceView::from(&record))
}

/// `DELETE /api/webhooks/:source`.
#[utoipa::path(
    delete,
    path = "/api/webhooks/{source}",
    tag = "sources",
    operation_id = "delete_source",
    summary = "Remove a source",
    security(("api_key" = ["admin"])),
    params(("source" = String, Path, description = "The source name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "`unknown_source`: no such source", body = ErrorBody),
        (status = 409, description = "`managed_by_config`: the source is defined in the config file", body = ErrorBody),
    )
)]
pub async fn remove(State(state): State<AppState>, who: Admin, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    remove_source(&state, &who, &parse_name(&name)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes the source `name`; the API's `remove` and the console both call it.
pub async fn remove_source(state: &AppState, who: &Admin, name: &SourceName) -> Result<(), ApiError> {
    let current = load(state, name).await?;
    refuse_managed(&current)?;
    if !state.store.delete_source(name).await? {
        return Err(ApiError::UnknownSource(name.to_string()));
    }
    state.sources.invalidate(name);
    tracing::info!(target: "api", source = %name, "source removed");
    who.record(state, "source.delete", name.as_str(), Some(source_snapshot(&current)), None).await;
    Ok(())
}

/// `POST /api/webhooks/:source/rotate-secret`: a new secret (given as `secret`, or generated),
/// returned once; the old one keeps verifying for `grace_period_secs` (default 24 h).
#[utoipa::path(
    post,
    path = "/api/webhooks/{source}/rotate-secret",
    tag = "sources",
    operation_id = "rotate_source_secret",
    summary = "Rotate a source's secret",
    security(("api_key" = ["admin"])),
    params(("source" = String, Path, description = "The source name")),
    request_body(content = RotateSecret, description = "Optional: an empty body generates a secret and keeps the old one verifying for 24 h."),
    responses(
        (status = 200, description = "The source with its new `secret` (returned once)", body = SourceView),
        (status = 400, description = "`invalid_payload`: the body is not a JSON object", body = ErrorBody),
        (status = 404, description = "`unknown_source`: no such source", body = ErrorBody),
        (status = 409, description = "`managed_by_config`: the source is defined in the config file", body = ErrorBody),
        (status = 422, description = "`validation_error`: a field is missing or invalid (see `details`)", body = ErrorBody),
    )
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    who: Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<SourceView>, ApiError> {
    let name = parse_name(&name)?;
    rotate_source_secret(&state, &who, &name, &parse_body(&body, true)?).await.map(Json)
}

/// Rotates the secret of the source `name` as `body` asks (the fields of [`RotateSecret`]; empty:
/// a generated secret, 24 h of grace for the old one). The view holds the new secret (shown
/// once). The API's `rotate_secret` and the console both call it.
pub async fn rotate_source_secret(
    state: &AppState,
    who: &Admin,
    name: &SourceName,
    body: &Map<String, Value>,
) -> Result<SourceView, ApiError> {
    let current = load(state, name).await?;
    refuse_managed(&current)?;
    let mut errors = Vec::new();
    let mut secret = None;
    let mut grace = DEFAULT_GRACE_SECS;
    for (k, v) in body {
        match k.as_str() {
            "secret" => match v.as_str().map(|s| Secret::validate(s).map(|_| s)) {
                Some(Ok(s)) => secret = Some(Secret::new(s)),
                Some(Err(e)) => errors.push(FieldError::new("secret", e)),
                None => errors.push(FieldError::new("secret", "must be a string")),
            },
            "grace_period_secs" => match as_int(v) {
                Some(n) if (0..=30 * 86400).contains(&n) => grace = n,
                _ => errors.push(FieldError::new("grace_period_secs", "must be a whole number of seconds from 0 to 2592000")),
            },
            other => errors.push(FieldError::new(other, format!("unknown field '{other}'"))),
        }
    }
    check_secret_form(&current.settings.verification, secret.as_ref(), None, &mut errors);
    if let Some(secret) = &secret {
        check_secret_unused(state, secret, Some(name), &mut errors).await?;
    }
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    let secret = match secret {
        Some(s) => s,
        None => tw_store::crypto::generate_secret(&current.settings.verification)?,
    };
    let until = state.clock.now() + chrono::Duration::seconds(grace);
    let record = state.store.rotate_secret(name, secret.clone(), until).await?;
    state.sources.invalidate(name);
    tracing::info!(target: "api", source = %name, grace_secs = grace, "secret rotated");
    who.record(state, "source.rotate_secret", name.as_str(), Some(source_snapshot(&current)), Some(source_snapshot(&record))).await;
    let mut view = SourceView::from(&record);
    view.secret = Some(secret.expose().to_string());
    Ok(view)
}

/// `POST /api/webhooks/:source/test`: signs a test event with the stored secret and runs it
/// through the intake's own verification and normalization, storing nothing.
#[utoipa::path(
    post,
    path = "/api/webhooks/{source}/test",
    tag = "sources",
    operation_id = "test_source",
    summary = "Server-side signed test delivery (nothing stored)",
    security(("api_key" = ["admin"])),
    params(("source" = String, Path, description = "The source name")),
    responses(
        (status = 200, description = "The checks: registered, enabled, signature, payload; `ok` when all passed", body = SourceTestResult),
        (status = 404, description = "`unknown_source`: no such source", body = ErrorBody),
    )
)]
pub async fn test(State(state): State<AppState>, _auth: AdminAccess, Path(name): Path<String>) -> Result<Json<SourceTestResult>, ApiError> {
    test_source(&state, &parse_name(&name)?).await.map(Json)
}

/// Signs a test event with the stored secret of the source `name` and runs it through the
/// intake's checks, storing nothing; the API's `test` and the console's "send test event" both
/// call it.
pub async fn test_source(state: &AppState, name: &SourceName) -> Result<SourceTestResult, ApiError> {
    let source = load(state, name).await?;
    let now = state.clock.now();
    let body = serde_json::to_vec(&crate::intake::test_event(name, now)).unwrap_or_default();
    let signed = source.settings.verification.sign(
        source.secret.expose(),
        &body,
        now.timestamp(),
        &format!("msg_test_{}", uuid::Uuid::now_v7().simple()),
    );
    let mut headers = axum::http::HeaderMap::new();
    for (n, v) in &signed.headers {
        let name = axum::http::HeaderName::from_bytes(n.as_bytes()).map_err(|_| ApiError::Internal("test headers".into()))?;
        headers.insert(name, axum::http::HeaderValue::from_str(v).map_err(|_| ApiError::Internal("test headers".into()))?);
    }
    headers.insert(axum::http::header::CONTENT_LENGTH, axum::http::HeaderValue::from(body.len()));
    // The real intake path (source cache, body limit, the scheme's check, JSON, normalization); a
    // test event is never stored.
    let rid = format!("test_{}", uuid::Uuid::now_v7().simple());
    let result =
        crate::routes::intake::check(state, name.as_str(), signed.path_token.as_deref(), &headers, axum::body::Body::from(body), &rid)
            .await;
    const STAGES: [&str; 4] = ["registered", "enabled", "signature", "payload"];
    let failed_at = match &result {
        Ok(()) => STAGES.len(),
        Err(e) => match e.code() {
            "unknown_source" => 0,
            "source_disabled" => 1,
            "invalid_payload" => 3,
            _ => 2,
        },
    };
    let passed = [
        format!("source {name} exists"),
        "accepting deliveries".to_string(),
        format!("{} verified with the stored secret, through the intake path", source.settings.verification.scheme()),
        "normalized; a test event is not stored".to_string(),
    ];
    let checks = STAGES
        .iter()
        .enumerate()
        .map(|(i, check)| {
            let outcome = match (i.cmp(&failed_at), &result) {
                (std::cmp::Ordering::Less, _) => Ok(passed[i].clone()),
                (std::cmp::Ordering::Equal, Err(e)) => Err(format!("{}: {e}", e.code())),
                _ => Err("not reached".to_string()),
            };
            SourceCheck { check: check.to_string(), result: outcome.into() }
        })
        .collect();
    Ok(SourceTestResult { ok: result.is_ok(), source: name.to_string(), checks, secret_fingerprint: source.secret_fingerprint })
}

/// `POST /api/webhooks/:source/reprocess`: normalizes the source's stored events again with its
/// current settings (after a `mapping`, `format` or `severity_mapping` change), updating
/// incidents in place and, with `dead_letters`, turning dead letters that now normalize into
/// incidents. Bounded per call; `next` says where to go on.
#[utoipa::path(
    post,
    path = "/api/webhooks/{source}/reprocess",
    tag = "sources",
    operation_id = "reprocess_source",
    summary = "Normalize a source's stored incidents (and dead letters) again",
    description = "Re-normalizes the raw payloads of the source's incidents with its current `mapping`, `format` and \
`severity_mapping`, updating each incident in place: same id and number; status, triage and delivery counts kept. \
Never creates a duplicate: an incident whose new alert id belongs to another incident is left as it was and \
reported in `conflicting`. With `dead_letters`, each dead letter that now normalizes is ingested as a live \
delivery would be (deduped by alert id or request key, auto-triaged) and removed from the dead letters in the \
same transaction; the others keep their new reason. One call reads at most `limit` events: while the answer has \
`next`, call again with `cursor` set to it (and `since` to the answer's `since`).",
    security(("api_key" = ["admin"])),
    params(("source" = String, Path, description = "The source name")),
    request_body(content = ReprocessRequest, description = "Optional: an empty body reprocesses every incident of the source, from the start."),
    responses(
        (status = 200, description = "What this call did, and `next` when there is more", body = ReprocessResult),
        (status = 400, description = "`invalid_payload`: the body is not a JSON object", body = ErrorBody),
        (status = 404, description = "`unknown_source`: no such source", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad `since`, `dead_letters`, `cursor` or `limit`, or an unknown field (see `details`)", body = ErrorBody),
    )
)]
pub async fn reprocess(
    State(state): State<AppState>,
    who: Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<ReprocessResult>, ApiError> {
    use crate::intake::reprocess::{self, Cursor};
    let name = parse_name(&name)?;
    let body = parse_body(&body, true)?;
    // The stored settings, not the cache: a mapping changed a moment ago on another instance applies.
    let source = load(&state, &name).await?;
    let mut errors = Vec::new();
    let (mut since, mut dead_letters, mut cursor, mut limit) = (None, false, Cursor::Incidents(None), reprocess::LIMIT);
    for (k, v) in &body {
        match k.as_str() {
            "since" => match v.as_str().map(|s| crate::routes::audit::parse_since(s, state.clock.now())) {
                Some(Ok(t)) => since = t,
                Some(Err(e)) => errors.push(FieldError::new("since", e)),
                None => errors.push(FieldError::new("since", "must be a string: an RFC 3339 time or a duration like 24h")),
            },
            "dead_letters" => match as_bool(v) {
                Some(b) => dead_letters = b,
                None => errors.push(FieldError::new("dead_letters", "must be true or false")),
            },
            "cursor" => match v.as_str().and_then(Cursor::parse) {
                Some(c) => cursor = c,
                None => errors.push(FieldError::new("cursor", "must be the `next` of a previous answer")),
            },
            "limit" => match as_int(v) {
                Some(n) if (1..=i64::from(reprocess::LIMIT)).contains(&n) => limit = n as u32,
                _ => errors.push(FieldError::new("limit", format!("must be a whole number from 1 to {}", reprocess::LIMIT))),
            },
            other => errors.push(FieldError::new(other, format!("unknown field '{other}'"))),
        }
    }
    if !dead_letters && matches!(cursor, Cursor::DeadLetters(_)) {
        errors.push(FieldError::new("cursor", "goes on through dead letters: send `dead_letters: true` with it"));
    }
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    reprocess_source(&state, &who, &source, since, dead_letters, cursor, limit).await.map(Json)
}

/// Reprocesses one bounded step of `source` (see [`reprocess`]), logs what it did and records it
/// in the audit log as `who`'s: the API's handler and the console's "reprocess dead letters" call it.
pub async fn reprocess_source(
    state: &AppState,
    who: &Admin,
    source: &SourceRecord,
    since: Option<chrono::DateTime<chrono::Utc>>,
    dead_letters: bool,
    cursor: crate::intake::reprocess::Cursor,
    limit: u32,
) -> Result<ReprocessResult, ApiError> {
    let name = &source.name;
    let started = cursor.to_string();
    let result = crate::intake::reprocess::run(state, source, since, dead_letters, cursor, limit).await?;
    let (i, d) = (&result.incidents, &result.dead_letters);
    tracing::info!(
        target: "api", source = %name, from = %started, incidents_updated = i.updated, incidents_unchanged = i.unchanged,
        conflicts = i.conflicts, failed = i.failed, dead_letters_created = d.created, dead_letters_duplicates = d.duplicates,
        still_failing = d.still_failing, more = result.next.is_some(), "source reprocessed"
    );
    // The counts and where the run went on, not the listed conflicts (up to 100 alert ids a call).
    let mut summary = serde_json::to_value(&result).unwrap_or_default();
    if let Some(m) = summary.as_object_mut() {
        m.remove("conflicting");
    }
    let after = serde_json::json!({"request": {"since": result.since, "dead_letters": dead_letters, "cursor": started}, "result": summary});
    who.record(state, "source.reprocess", name.as_str(), None, Some(after)).await;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field names of a documented request type.
    fn documented<T: utoipa::PartialSchema>() -> Vec<String> {
        let schema = serde_json::to_value(T::schema()).unwrap();
        schema["properties"].as_object().expect("an object schema").keys().cloned().collect()
    }

    /// The parser of settings reads every field `SourceSettingsInput` documents (with
    /// `additionalProperties: false` the document promises the rest are refused): a field added
    /// to the type and not to the parser fails here.
    #[test]
    fn the_settings_parser_reads_every_documented_field() {
        let fields = documented::<crate::api::sources::SourceSettingsInput>();
        assert!(fields.len() >= 10, "{fields:?}");
        let unknown = |name: &str| {
            let mut errors = Vec::new();
            let body: Map<String, Value> = [(name.to_string(), Value::Null)].into_iter().collect();
            parse_fields(&body, &[], &mut errors);
            errors.iter().any(|e| e.message.starts_with("unknown field"))
        };
        for f in &fields {
            assert!(!unknown(f), "{f} is documented but the parser refuses it as unknown");
        }
        assert!(unknown("no_such_setting"));
    }
}
