//! `GET /api/logs`: recent log records, filtered; `follow=true` streams new ones (server-sent
//! events) after the tail.

use crate::ApiError;
use crate::auth::AdminAccess;
use crate::logs::{LogQuery, LogRecord, parse_since};
use crate::routes::schemas;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// The most records one request returns.
pub const MAX_TAIL: usize = 10_000;

#[derive(Debug, Deserialize)]
pub struct LogsParams {
    filter: Option<String>,
    level: Option<String>,
    since: Option<String>,
    source: Option<String>,
    tail: Option<String>,
    follow: Option<String>,
}

/// The records, or a stream of them.
#[utoipa::path(
    get,
    path = "/api/logs",
    tag = "health",
    operation_id = "get_logs",
    summary = "Recent log records of this server; `follow=true` streams new ones",
    security(("api_key" = ["admin"])),
    params(schemas::LogParams),
    responses(
        (status = 200, description = "The records (JSON), or with `follow=true` server-sent events whose `data` is one record each", content(
            (schemas::LogList = "application/json"),
            (schemas::LogRecord = "text/event-stream")
        )),
        (status = 404, description = "`not_found`: this server process does not keep logs", body = schemas::ErrorBody),
        (status = 422, description = "`validation_error`: a bad `level`, `since` or `tail`", body = schemas::ErrorBody),
    )
)]
pub async fn logs(State(state): State<AppState>, _auth: AdminAccess, Query(p): Query<LogsParams>) -> Result<Response, ApiError> {
    let buffer = state
        .logs
        .clone()
        .ok_or_else(|| ApiError::NotFound("This server process does not keep logs (run it with `tw-cli serve`)".into()))?;
    let min_level = match p.level.as_deref().filter(|l| !l.is_empty()) {
        None => None,
        Some(l) => Some(l.parse::<tracing::Level>().map_err(|_| ApiError::field("level", "must be trace, debug, info, warn or error"))?),
    };
    let since = match p.since.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            let bad = || ApiError::field("since", "must be a duration like 30s, 10m, 2h or 1d, at most 366d");
            Some(state.clock.now().checked_sub_signed(parse_since(s).ok_or_else(bad)?).ok_or_else(bad)?)
        }
    };
    let tail = match p.tail.as_deref().filter(|s| !s.is_empty()) {
        None => 100,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| (0..=MAX_TAIL).contains(n))
            .ok_or_else(|| ApiError::field("tail", format!("must be a whole number from 0 to {MAX_TAIL}")))?,
    };
    let follow = matches!(p.follow.as_deref(), Some("true" | "1" | "yes"));
    let query = LogQuery { filter: p.filter, min_level, since, source: p.source };
    // Subscribe before reading the tail, so no record logged in between is missed; the ones that
    // are in both (the same Arcs) are skipped once.
    let rx = follow.then(|| buffer.subscribe());
    let records = buffer.tail(&query, tail);
    let Some(rx) = rx else {
        let data: Vec<&LogRecord> = records.iter().map(|r| &**r).collect();
        return Ok(Json(json!({"data": data})).into_response());
    };
    let shown: Vec<Arc<LogRecord>> = records.clone();
    let first = stream::iter(records);
    let live = stream::unfold((rx, query, shown), |(mut rx, query, mut shown)| async move {
        loop {
            match rx.recv().await {
                Ok(r) if shown.iter().any(|s| Arc::ptr_eq(s, &r)) => continue,
                Ok(r) if query.matches(&r) => {
                    shown.clear();
                    return Some((r, (rx, query, shown)));
                }
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    // The stream ends when the server stops, so a follower cannot hold a shutdown open.
    let mut stopping = state.stopping.clone();
    let stopped = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    let events = first.chain(live).take_until(stopped).map(|r: Arc<LogRecord>| Event::default().json_data(&*r));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}
