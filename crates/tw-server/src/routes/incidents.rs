//! `GET /api/incidents`, `GET /api/incidents/:id` (uuid or INC number), `.../raw`.

use crate::ApiError;
use crate::auth::ReadAccess;
use crate::error::FieldError;
use crate::routes::schemas;
use crate::routes::{PageQuery, page_meta};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tw_core::{Severity, SourceName};
use tw_store::{Incident, IncidentFilter, IncidentKey, IncidentStatus};


#[derive(Debug, Deserialize)]
pub struct ListQuery {
    source: Option<String>,
    severity: Option<String>,
    status: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

/// A page of incidents, newest first, with a `meta` block.
#[utoipa::path(
    get,
    path = "/api/incidents",
    tag = "incidents",
    operation_id = "list_incidents",
    summary = "Incidents, newest first",
    security(("api_key" = ["read"])),
    params(schemas::IncidentListParams, schemas::PageParams),
    responses(
        (status = 200, description = "A page of incidents", body = schemas::IncidentList),
        (status = 422, description = "`validation_error`: a bad filter, `page` or `per_page` (see `details`)", body = schemas::ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>, _auth: ReadAccess, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let mut errors: Vec<FieldError> = Vec::new();
    let page = q.page.parse().unwrap_or_else(|e| {
        errors.extend(e);
        tw_store::Page { page: 1, per_page: 1 }
    });
    let nonempty = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let source =
        nonempty(&q.source).and_then(|s| SourceName::parse(&s).map_err(|e| errors.push(FieldError::new("source", e.to_string()))).ok());
    let severity =
        nonempty(&q.severity).and_then(|s| s.parse::<Severity>().map_err(|e| errors.push(FieldError::new("severity", e.to_string()))).ok());
    let status = nonempty(&q.status)
        .and_then(|s| s.parse::<IncidentStatus>().map_err(|e| errors.push(FieldError::new("status", e))).ok());
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    let (items, total) = state.store.list_incidents(&IncidentFilter { source, severity, status, page }).await?;
    Ok(Json(json!({"data": items, "meta": page_meta(page, total)})))
}

async fn load(state: &AppState, id: &str) -> Result<Incident, ApiError> {
    let key: IncidentKey = id.parse().map_err(|_| {
        ApiError::NotFound(format!("Incident '{}' not found (use its id or INC number)", id.chars().take(80).collect::<String>()))
    })?;
    state.store.get_incident(&key).await?.ok_or_else(|| ApiError::NotFound(format!("Incident '{id}' not found")))
}

/// One incident with its raw payload (as JSON).
#[utoipa::path(
    get,
    path = "/api/incidents/{id}",
    tag = "incidents",
    operation_id = "get_incident",
    summary = "One incident with its raw payload",
    security(("api_key" = ["read"])),
    params(("id" = String, Path, description = "The incident's uuid or number (INC-2026-0001)")),
    responses(
        (status = 200, description = "The incident", body = schemas::IncidentDetail),
        (status = 404, description = "`not_found`: no such incident", body = schemas::ErrorBody),
    )
)]
pub async fn get(State(state): State<AppState>, _auth: ReadAccess, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let incident = load(&state, &id).await?;
    let raw = incident
        .raw
        .as_deref()
        .map(|b| serde_json::from_slice::<Value>(b).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned())));
    let mut v = serde_json::to_value(&incident).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("raw_payload".into(), raw.unwrap_or(Value::Null));
    }
    Ok(Json(v))
}

/// The payload exactly as the sender sent it.
#[utoipa::path(
    get,
    path = "/api/incidents/{id}/raw",
    tag = "incidents",
    operation_id = "get_incident_raw",
    summary = "The payload exactly as received",
    security(("api_key" = ["read"])),
    params(("id" = String, Path, description = "The incident's uuid or number (INC-2026-0001)")),
    responses(
        (status = 200, description = "The body byte for byte", body = Object, content_type = "application/json"),
        (status = 404, description = "`not_found`: no such incident", body = schemas::ErrorBody),
    )
)]
pub async fn raw(State(state): State<AppState>, _auth: ReadAccess, Path(id): Path<String>) -> Result<Response, ApiError> {
    let incident = load(&state, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], incident.raw.unwrap_or_default()).into_response())
}
