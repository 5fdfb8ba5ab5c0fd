//! Deliveries: `GET /api/webhooks/:source/events` (recent deliveries of a source) and
//! `GET /api/deliveries/:request_id` (one, with its body).

use crate::ApiError;
use crate::auth::ReadAccess;
use crate::routes::schemas;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use tw_core::SourceName;
use tw_store::DeliveryFilter;

#[derive(Debug, Deserialize)]
pub struct EventsParams {
    status: Option<String>,
    tail: Option<String>,
}

/// The newest deliveries of a source, newest first: `?status=failed|ok&tail=N`.
#[utoipa::path(
    get,
    path = "/api/webhooks/{source}/events",
    tag = "sources",
    operation_id = "list_source_events",
    summary = "Recent deliveries of a source",
    security(("api_key" = ["read"])),
    params(("source" = String, Path, description = "The source name"), schemas::EventParams),
    responses(
        (status = 200, description = "The deliveries, newest first", body = schemas::DeliveryList),
        (status = 404, description = "`unknown_source`: no such source", body = schemas::ErrorBody),
        (status = 422, description = "`validation_error`: a bad `status` or `tail`", body = schemas::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    _auth: ReadAccess,
    Path(source): Path<String>,
    Query(p): Query<EventsParams>,
) -> Result<Json<Value>, ApiError> {
    let name = SourceName::parse(&source).map_err(|_| ApiError::UnknownSource(source.chars().take(64).collect()))?;
    state.store.get_source(&name).await?.ok_or_else(|| ApiError::UnknownSource(name.to_string()))?;
    let filter = match p.status.as_deref() {
        None | Some("") | Some("all") => DeliveryFilter::All,
        Some("ok") => DeliveryFilter::Ok,
        Some("failed") => DeliveryFilter::Failed,
        Some(_) => return Err(ApiError::field("status", "must be ok, failed or all")),
    };
    let tail = match p.tail.as_deref().filter(|t| !t.is_empty()) {
        None => 50,
        Some(t) => t
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::field("tail", "must be a whole number from 1 to 1000"))?,
    };
    let items = state.store.list_deliveries(&name, filter, tail).await?;
    Ok(Json(json!({"data": items})))
}

/// One delivery by its request id (the `X-Request-Id` of its response), with the payload.
#[utoipa::path(
    get,
    path = "/api/deliveries/{request_id}",
    tag = "sources",
    operation_id = "get_delivery",
    summary = "One delivery with its payload",
    security(("api_key" = ["read"])),
    params(("request_id" = String, Path, description = "The X-Request-Id of the delivery's response")),
    responses(
        (status = 200, description = "The delivery", body = schemas::Delivery),
        (status = 404, description = "`not_found`: no delivery with that request id", body = schemas::ErrorBody),
    )
)]
pub async fn get(State(state): State<AppState>, _auth: ReadAccess, Path(request_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let d =
        state.store.get_delivery(&request_id).await?.ok_or_else(|| {
            ApiError::NotFound(format!("No delivery with request id '{}'", request_id.chars().take(128).collect::<String>()))
        })?;
    Ok(Json(serde_json::to_value(d).unwrap_or_default()))
}
