//! `GET /api/logs`: recent log records, filtered; `follow=true` streams new ones (server-sent
//! events) after the tail.
//!
//! A stream is bounded: at most [`crate::logs::MAX_FOLLOWERS`] are open at once (past that 429
//! `rate_limited` with `Retry-After`), its key is looked up again every [`RECHECK_EVERY`] (a
//! revoked or expired key ends it), and it lasts [`MAX_LIFETIME`] at most. A stream the server
//! ends says why in a last `end` event whose data is `key_refused`, `max_lifetime` or `stopping`
//! (`tw-cli logs --follow` reconnects after `max_lifetime`). Both spans are measured with the
//! server's clock.

use crate::ApiError;
use crate::api::ErrorBody;
use crate::api::logs::{LogLevel, LogList, LogParams};
use crate::auth::AdminAccess;
use crate::logs::{LogQuery, LogRecord};
use crate::routes::Query;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// How often a log stream's API key is looked up again.
pub const RECHECK_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(30);
/// The longest a log stream lasts; the client reconnects for more.
pub const MAX_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::hours(1);
/// How often (real time) a stream looks at the clock for the two above.
const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// The most records one request returns.
pub const MAX_TAIL: usize = 10_000;
/// When a refused follower is told to come back: streams last minutes to an hour.
const FOLLOWERS_RETRY_AFTER_SECS: u64 = 30;

/// The records, or a stream of them.
#[utoipa::path(
    get,
    path = "/api/logs",
    tag = "health",
    operation_id = "get_logs",
    summary = "Recent log records of this server; `follow=true` streams new ones",
    security(("api_key" = ["admin"])),
    params(LogParams),
    responses(
        (status = 200, description = "The records (JSON), or with `follow=true` server-sent events whose `data` is one record each; at most 8 streams at once per process (429 `rate_limited` past that), each ended after an hour or once its key is revoked or expires, by a last `end` event whose data says why (`max_lifetime`, `key_refused`, `stopping`)", content(
            (LogList = "application/json"),
            (crate::api::logs::LogEvent = "text/event-stream")
        )),
        (status = 404, description = "`not_found`: this server process does not keep logs", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad `level`, `since` or `tail`", body = ErrorBody),
    )
)]
pub async fn logs(
    State(state): State<AppState>,
    _auth: AdminAccess,
    headers: axum::http::HeaderMap,
    Query(p): Query<LogParams>,
) -> Result<Response, ApiError> {
    let buffer = state
        .logs
        .clone()
        .ok_or_else(|| ApiError::NotFound("This server process does not keep logs (run it with `tw-cli serve`)".into()))?;
    let min_level = match p.level.as_deref().filter(|l| !l.is_empty()) {
        None => None,
        Some(l) => Some(LogLevel::parse(l).ok_or_else(|| ApiError::field("level", "must be trace, debug, info, warn or error"))?.into()),
    };
    let since = match p.since.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => crate::api::since(s, state.clock.now())
            .ok_or_else(|| ApiError::field("since", "must be a duration like 30s, 10m, 2h, 1d or 2w"))?,
    };
    let tail = match p.tail.as_deref().filter(|s| !s.is_empty()) {
        None => 100,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| (0..=MAX_TAIL).contains(n))
            .ok_or_else(|| ApiError::field("tail", format!("must be a whole number from 0 to {MAX_TAIL}")))?,
    };
    let follow = match p.follow.as_deref() {
        None | Some("" | "false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::field("follow", "must be true or false")),
    };
    let query = LogQuery { filter: p.filter, min_level, since, source: p.source };
    let permit = match follow {
        true => Some(
            buffer
                .follower()
                .ok_or_else(|| crate::limits::refused(&state, crate::limits::LimitReason::LogFollowers, FOLLOWERS_RETRY_AFTER_SECS))?,
        ),
        false => None,
    };
    // Subscribe before reading the tail, so no record logged in between is missed; the ones that
    // are in both (numbered up to the tail's newest) are skipped. The tail is read back from the
    // kept JSON lines: on a blocking thread, off the runtime the intake runs on.
    let rx = follow.then(|| buffer.subscribe());
    let (records, shown_upto) = {
        let (buffer, query) = (buffer.clone(), query.clone());
        tokio::task::spawn_blocking(move || buffer.tail_numbered(&query, tail)).await.map_err(|_| ApiError::Internal("logs".into()))?
    };
    let (Some(rx), Some(permit)) = (rx, permit) else {
        return Ok(Json(LogList { data: records.iter().map(|r| (**r).clone()).collect() }).into_response());
    };
    let now = state.clock.now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let follow = Follow {
        rx,
        query,
        shown_upto,
        key: crate::auth::KeyRecheck::new(crate::auth::token_hash(&headers)?, now),
        ends_at: now + MAX_LIFETIME,
        tick,
        stopping: state.stopping.clone(),
        state,
        _permit: permit,
    };
    let first = stream::iter(records).map(|r| Event::default().json_data(&*r));
    let live = stream::unfold(Some(follow), |f| async move {
        let mut f = f?;
        Some(match f.next().await {
            Next::Record(r) => (Event::default().json_data(&*r), Some(f)),
            Next::End(why) => (Ok(Event::default().event("end").data(why)), None),
        })
    });
    Ok(Sse::new(first.chain(live)).keep_alive(KeepAlive::default()).into_response())
}

/// One log stream after its tail; holds its place among the [`crate::logs::MAX_FOLLOWERS`].
struct Follow {
    rx: tokio::sync::broadcast::Receiver<crate::logs::Numbered>,
    query: LogQuery,
    /// The number of the newest record the tail looked at: live ones up to it are skipped.
    shown_upto: u64,
    /// The hash of the caller's API key.
    key: crate::auth::KeyRecheck,
    ends_at: chrono::DateTime<chrono::Utc>,
    tick: tokio::time::Interval,
    stopping: tokio::sync::watch::Receiver<bool>,
    state: AppState,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

enum Next {
    Record(Arc<LogRecord>),
    /// The stream ends, for this reason (the `end` event's data).
    End(&'static str),
}

impl Follow {
    async fn next(&mut self) -> Next {
        if *self.stopping.borrow() {
            return Next::End("stopping");
        }
        loop {
            tokio::select! {
                r = self.rx.recv() => match r {
                    Ok((number, _)) if number <= self.shown_upto => continue,
                    Ok((_, r)) if self.query.matches(&r) => return Next::Record(r),
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return Next::End("stopping"),
                },
                // The stream ends when the server stops, so a follower cannot hold a shutdown open.
                r = self.stopping.changed() => {
                    if r.is_err() || *self.stopping.borrow() {
                        return Next::End("stopping");
                    }
                }
                _ = self.tick.tick() => {
                    let now = self.state.clock.now();
                    if now >= self.ends_at {
                        return Next::End("max_lifetime");
                    }
                    if !self.key.still_accepted(&self.state, now, "logs").await {
                        return Next::End("key_refused");
                    }
                }
            }
        }
    }
}
