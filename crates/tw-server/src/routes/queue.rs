//! `GET /api/webhooks/queue/:queue_id` and `GET /api/dead-letters`.

use crate::auth::ReadAccess;
use crate::routes::{PageQuery, page_meta};
use crate::state::AppState;
use crate::ApiError;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{Value, json};
use tw_core::SourceName;

/// The state of one queued event: pending, processed (with its incident) or failed (with why).
pub async fn get(State(state): State<AppState>, _auth: ReadAccess, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let entry = state
        .store
        .queue_entry(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Queued event '{}' not found", id.chars().take(80).collect::<String>())))?;
    Ok(Json(serde_json::to_value(entry).unwrap_or_default()))
}

#[derive(Debug, Deserialize)]
pub struct DeadLetterQuery {
    source: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

/// Accepted events that could not be normalized, newest first, with their reason and payload.
pub async fn dead_letters(State(state): State<AppState>, _auth: ReadAccess, Query(q): Query<DeadLetterQuery>) -> Result<Json<Value>, ApiError> {
    let page = q.page.parse().map_err(ApiError::fields)?;
    let source = match q.source.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(SourceName::parse(s).map_err(|e| ApiError::field("source", e.to_string()))?),
        None => None,
    };
    let (items, total) = state.store.list_dead_letters(source.as_ref(), page).await?;
    Ok(Json(json!({"data": items, "meta": page_meta(page, total)})))
}
