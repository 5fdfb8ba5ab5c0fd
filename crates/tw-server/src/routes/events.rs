//! Deliveries: `GET /api/webhooks/:source/events` (recent deliveries of a source, with aggregate
//! rows standing for refused requests counted rather than stored) and
//! `GET /api/deliveries/:request_id` (one, with its body).

use crate::ApiError;
use crate::api::ErrorBody;
use crate::api::deliveries::{Delivery, DeliveryList, EventParams};
use crate::auth::ReadAccess;
use crate::routes::Query;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use tw_core::SourceName;
use tw_store::DeliveryFilter;

/// The newest deliveries of a source, newest first: `?status=failed|ok&tail=N`. A row with
/// `refused_count` stands for that many refused requests (see [`crate::refusals`]).
#[utoipa::path(
    get,
    path = "/api/webhooks/{source}/events",
    tag = "sources",
    operation_id = "list_source_events",
    summary = "Recent deliveries of a source",
    security(("api_key" = ["read"])),
    params(("source" = String, Path, description = "The source name"), EventParams),
    responses(
        (status = 200, description = "The deliveries, newest first", body = DeliveryList),
        (status = 404, description = "`unknown_source`: no such source", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad `status` or `tail`", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    _auth: ReadAccess,
    Path(source): Path<String>,
    Query(p): Query<EventParams>,
) -> Result<Json<DeliveryList>, ApiError> {
    let name = SourceName::parse(&source).map_err(|_| ApiError::UnknownSource(source.chars().take(64).collect()))?;
    state.store.get_source(&name).await?.ok_or_else(|| ApiError::UnknownSource(name.to_string()))?;
    let filter = parse_status(p.status.as_deref())?;
    let tail = match p.tail.as_deref().filter(|t| !t.is_empty()) {
        None => 50,
        Some(t) => t
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::field("tail", "must be a whole number from 1 to 1000"))?,
    };
    let items = state.store.list_deliveries(&name, filter, tail).await?;
    Ok(Json(DeliveryList { data: items.into_iter().map(Delivery::from).collect() }))
}

/// The `status` filter of a delivery list: `ok`, `failed`, or `all` (also when absent).
pub fn parse_status(status: Option<&str>) -> Result<DeliveryFilter, ApiError> {
    match status {
        None | Some("") | Some("all") => Ok(DeliveryFilter::All),
        Some("ok") => Ok(DeliveryFilter::Ok),
        Some("failed") => Ok(DeliveryFilter::Failed),
        Some(_) => Err(ApiError::field("status", "must be ok, failed or all")),
    }
}

/// How many other deliveries with the same sender's id one lookup names.
const OTHERS_SHOWN: u32 = 20;

/// One delivery with its payload, by the server's own request id (`X-Tw-Request-Id`, unique) or
/// by the sender's `X-Request-Id`. A sender's id may have been sent more than once (by anyone):
/// it finds the newest verified delivery that carried it, else the newest, and
/// `other_request_ids` names the others (newest first, at most 20).
#[utoipa::path(
    get,
    path = "/api/deliveries/{request_id}",
    tag = "sources",
    operation_id = "get_delivery",
    summary = "One delivery with its payload",
    security(("api_key" = ["read"])),
    params(("request_id" = String, Path, description = "The delivery's own id (the response's `X-Tw-Request-Id`), or the sender's `X-Request-Id`")),
    responses(
        (status = 200, description = "The delivery", body = Delivery),
        (status = 404, description = "`not_found`: no delivery with that request id", body = ErrorBody),
    )
)]
pub async fn get(State(state): State<AppState>, _auth: ReadAccess, Path(request_id): Path<String>) -> Result<Json<Delivery>, ApiError> {
    find(&state, &request_id).await.map(Json)
}

/// One delivery with its payload, by its own or its sender's request id (see [`get`]); the
/// console's delivery page shows the same.
pub async fn find(state: &AppState, request_id: &str) -> Result<Delivery, ApiError> {
    let d =
        state.store.get_delivery(request_id).await?.ok_or_else(|| {
            ApiError::NotFound(format!("No delivery with request id '{}'", request_id.chars().take(128).collect::<String>()))
        })?;
    let by_sender = d.request_id != request_id;
    let own = d.request_id.clone();
    let mut v = Delivery::from(d);
    if by_sender {
        let others: Vec<String> = state
            .store
            .deliveries_by_sender_request_id(request_id, OTHERS_SHOWN + 1)
            .await?
            .into_iter()
            .map(|o| o.request_id)
            .filter(|id| *id != own)
            .take(OTHERS_SHOWN as usize)
            .collect();
        v.other_request_ids = Some(others);
    }
    Ok(v)
}
