//! `POST /api/incidents/:id/triage` (run a playbook on demand) and `GET /api/triage/jobs/:id`.

use crate::ApiError;
use crate::api::ErrorBody;
use crate::api::triage::{TriageJob, TriageQueued, TriageRequest};
use crate::auth::{AdminAccess, ReadAccess};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value};
use tw_store::{IncidentKey, StoreError};

/// The most JSON `variables` of one triage request may take.
pub const MAX_VARIABLES_BYTES: usize = 64 * 1024;

/// Queues a triage of one incident with `{"playbook"?, "variables"?}` (default: the playbook of
/// the incident's source).
#[utoipa::path(
    post,
    path = "/api/incidents/{id}/triage",
    tag = "triage",
    operation_id = "run_triage",
    summary = "Queue a triage of one incident",
    security(("api_key" = ["admin"])),
    params(("id" = String, Path, description = "The incident's uuid or number (INC-2026-0001)")),
    request_body(content = TriageRequest, description = "Optional; an empty body runs the playbook of the incident's source."),
    responses(
        (status = 202, description = "The triage job was queued", body = TriageQueued),
        (status = 400, description = "`invalid_payload`: the body is not a JSON object", body = ErrorBody),
        (status = 404, description = "`not_found`: no such incident", body = ErrorBody),
        (status = 422, description = "`validation_error`: an unknown field or playbook, no playbook to run, or `variables` over 64 KiB of JSON", body = ErrorBody),
    )
)]
pub async fn run(
    State(state): State<AppState>,
    _auth: AdminAccess,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<TriageQueued>), ApiError> {
    let body: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice(&body) {
            Ok(Value::Object(m)) => m,
            _ => return Err(ApiError::InvalidPayload("Request body must be a JSON object".into())),
        }
    };
    let queued = queue_triage(&state, &id, &body).await?;
    Ok((StatusCode::ACCEPTED, Json(queued)))
}

/// Queues a triage of incident `id` (uuid or INC number) with `body`'s `playbook` and `variables`
/// (default: the playbook of the incident's source), by the API's rules: what
/// `POST /api/incidents/{id}/triage` and the console's "Re-run triage" do. The caller checks the
/// admin scope.
pub async fn queue_triage(state: &AppState, id: &str, body: &Map<String, Value>) -> Result<TriageQueued, ApiError> {
    for k in body.keys() {
        if k != "playbook" && k != "variables" {
            return Err(ApiError::field(k, format!("unknown field '{k}'")));
        }
    }
    let key: IncidentKey =
        id.parse().map_err(|_| ApiError::NotFound(format!("Incident '{}' not found", id.chars().take(80).collect::<String>())))?;
    let incident = state.store.get_incident(&key).await?.ok_or_else(|| ApiError::NotFound(format!("Incident '{id}' not found")))?;
    let playbook = match body.get("playbook") {
        Some(Value::String(p)) => p.clone(),
        Some(_) => return Err(ApiError::field("playbook", "must be a playbook name")),
        None => {
            incident.playbook.clone().ok_or_else(|| ApiError::field("playbook", "is required: the incident's source has no playbook"))?
        }
    };
    if state.playbooks.get(&playbook).await?.is_none() {
        let known = state.playbooks.names().await?.join(", ");
        return Err(ApiError::field("playbook", format!("unknown playbook '{playbook}' (known: {known})")));
    }
    let variables = match body.get("variables") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(ApiError::field("variables", "must be an object")),
    };
    // Stored with the job and copied into every run's context.
    let size = serde_json::to_vec(&variables).map_or(usize::MAX, |v| v.len());
    if size > MAX_VARIABLES_BYTES {
        return Err(ApiError::field("variables", format!("is {size} bytes of JSON; at most {MAX_VARIABLES_BYTES}")));
    }
    let job =
        state.store.enqueue_triage(&IncidentKey::Id(incident.id), &playbook, variables, state.triage.max_attempts).await.map_err(|e| {
            match e {
                StoreError::IncidentNotFound(_) => ApiError::NotFound(format!("Incident '{id}' not found")),
                other => other.into(),
            }
        })?;
    state.triage_wakeup.notify_one();
    tracing::info!(target: "triage", job_id = %job.job_id, incident = %incident.incident_number, playbook = %playbook, "triage requested");
    Ok(TriageQueued {
        job_id: job.job_id,
        status: job.status,
        incident_id: incident.id,
        incident_number: incident.incident_number.to_string(),
        playbook,
    })
}

/// One triage job's state.
#[utoipa::path(
    get,
    path = "/api/triage/jobs/{id}",
    tag = "triage",
    operation_id = "get_triage_job",
    summary = "One triage job",
    security(("api_key" = ["read"])),
    params(("id" = String, Path, description = "The `job_id`")),
    responses(
        (status = 200, description = "The job", body = TriageJob),
        (status = 404, description = "`not_found`: no such job", body = ErrorBody),
    )
)]
pub async fn job(State(state): State<AppState>, _auth: ReadAccess, Path(id): Path<String>) -> Result<Json<TriageJob>, ApiError> {
    let job = state
        .store
        .triage_job(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Triage job '{}' not found", id.chars().take(80).collect::<String>())))?;
    Ok(Json(job.into()))
}
