//! `GET /api/webhooks/queue/:queue_id` and `GET /api/dead-letters`.

use crate::ApiError;
use crate::api::queue::{DeadLetter, DeadLetterList, DeadLetterParams, QueueEntry};
use crate::api::{ErrorBody, PageMeta, PageParams};
use crate::auth::ReadAccess;
use crate::routes::Query;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use tw_core::SourceName;

/// The state of one queued event: pending, processed (with its incident) or failed (with why).
#[utoipa::path(
    get,
    path = "/api/webhooks/queue/{queue_id}",
    tag = "queue",
    operation_id = "get_queued_event",
    summary = "State of a queued event",
    security(("api_key" = ["read"])),
    params(("queue_id" = String, Path, description = "The `queue_id` of a 202 queued answer")),
    responses(
        (status = 200, description = "pending, processed (with its incident) or failed (with the reason)", body = QueueEntry),
        (status = 404, description = "`not_found`: no such queued event", body = ErrorBody),
    )
)]
pub async fn get(State(state): State<AppState>, _auth: ReadAccess, Path(id): Path<String>) -> Result<Json<QueueEntry>, ApiError> {
    let entry = state
        .store
        .queue_entry(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Queued event '{}' not found", id.chars().take(80).collect::<String>())))?;
    Ok(Json(entry.into()))
}

/// Accepted events that could not be normalized, newest first, with their reason and payload.
#[utoipa::path(
    get,
    path = "/api/dead-letters",
    tag = "queue",
    operation_id = "list_dead_letters",
    summary = "Accepted events that could not be normalized, newest first",
    security(("api_key" = ["read"])),
    params(DeadLetterParams, PageParams),
    responses(
        (status = 200, description = "A page of dead letters", body = DeadLetterList),
        (status = 422, description = "`validation_error`: a bad `source`, `page` or `per_page`", body = ErrorBody),
    )
)]
pub async fn dead_letters(
    State(state): State<AppState>,
    _auth: ReadAccess,
    Query(q): Query<DeadLetterParams>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let page = q.page.parse().map_err(ApiError::fields)?;
    let source = match q.source.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(SourceName::parse(s).map_err(|e| ApiError::field("source", e.to_string()))?),
        None => None,
    };
    let (items, total) = state.store.list_dead_letters(source.as_ref(), page).await?;
    Ok(Json(DeadLetterList { data: items.into_iter().map(DeadLetter::from).collect(), meta: PageMeta::new(page, total) }))
}
