//! `GET /api/health`: liveness, always cheap.

use crate::api::Check;
use crate::api::health::{Health, HealthStatus, NotReady, NotReadyCode, Readiness, ReadinessStatus};
use axum::Json;

#[utoipa::path(
    get,
    path = "/api/health",
    tag = "health",
    operation_id = "health",
    summary = "Liveness (always cheap, no API key)",
    responses(
        (status = 200, description = "The server is up", body = Health),
    )
)]
pub async fn health() -> Json<Health> {
    Json(Health { status: HealthStatus::Ok, version: env!("CARGO_PKG_VERSION").to_string() })
}

/// `GET /metrics`: Prometheus text exposition. Queue depths are read at scrape time; series of
/// sources that are no longer registered are left out.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    operation_id = "metrics",
    summary = "Prometheus metrics (no API key; a bearer token when the server has one)",
    description = "Served on the API address unless the server runs with `--metrics-listen`, which serves it there instead. With `--metrics-token-file` or `TW_METRICS_TOKEN`, it asks for `Authorization: Bearer <token>` (Prometheus: `authorization: {credentials_file: ...}`). Series of deleted sources are not shown.",
    params(("Authorization" = Option<String>, Header, description = "`Bearer <metrics token>`, when the server is given one")),
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 401, description = "`unauthorized`: the server has a metrics token and the request did not send it", body = crate::api::ErrorBody),
    )
)]
pub async fn metrics(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Some(token) = &state.metrics_token
        && !crate::metrics::bearer_matches(&headers, token)
    {
        tracing::warn!(target: "auth", "metrics token refused");
        let mut resp = crate::ApiError::Unauthorized("Missing or wrong metrics token: send Authorization: Bearer <token>").into_response();
        resp.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        return resp;
    }
    let m = &state.metrics;
    if let Ok(n) = state.store.queue_depth().await {
        m.gauge("webhook_queue_depth", &[("kind", "events")], n as f64);
    }
    if let Ok(n) = state.store.triage_depth().await {
        m.gauge("webhook_queue_depth", &[("kind", "triage")], n as f64);
    }
    m.upkeep();
    let text = match state.sources.names().await {
        Ok(live) => {
            let live: std::collections::HashSet<&str> = live.iter().map(|n| n.as_str()).collect();
            crate::metrics::drop_sources(&m.render(), &|s| live.contains(s))
        }
        // Without the list every source series is left out rather than a deleted one shown.
        Err(e) => {
            tracing::warn!(target: "store", error = %e.chain(), "cannot list sources for /metrics; source series left out");
            crate::metrics::drop_sources(&m.render(), &|_| false)
        }
    };
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// A worker that has not gone round its loop for this long counts as stalled.
const STALLED_AFTER_SECS: i64 = 30;

/// `GET /api/ready`: the store answers, its schema is current, and the workers run. 503 with the
/// failing part otherwise.
#[utoipa::path(
    get,
    path = "/api/ready",
    tag = "health",
    operation_id = "ready",
    summary = "Readiness: store reachable, schema current, workers alive",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "`not_ready`: a check failed; `checks` says which", body = Readiness),
    )
)]
pub async fn ready(axum::extract::State(state): axum::extract::State<crate::AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut checks = std::collections::BTreeMap::new();
    let mut failing = Vec::new();
    let mut check = |name: &str, result: Result<String, String>| {
        if let Err(e) = &result {
            failing.push(format!("{name}: {e}"));
        }
        checks.insert(name.to_string(), Check::from(result));
    };
    check("store", state.store.ping().await.map(|_| "reachable".into()).map_err(|e| e.to_string()));
    // Reads can work while writes fail (a full disk): what the writers and the background probe
    // last saw (a readiness request never waits on a write to a sick database).
    check(
        "store_writes",
        match state.store_health.failure() {
            None => Ok("writing".into()),
            Some(f) => Err(format!("cannot write since {}: {}", f.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), f.cause)),
        },
    );
    check(
        "migrations",
        match state.store.schema_version().await {
            Ok((have, want)) if have == want => Ok(format!("schema version {have}")),
            Ok((have, want)) => Err(format!("schema version {have}, this build needs {want}")),
            Err(e) => Err(e.to_string()),
        },
    );
    let now = chrono::Utc::now().timestamp();
    let hb = &state.heartbeats;
    for (name, count, slot) in [("queue_workers", hb.queue_workers, &hb.queue), ("triage_workers", hb.triage_workers, &hb.triage)] {
        let last = slot.load(std::sync::atomic::Ordering::Relaxed);
        let result = if count == 0 {
            Ok("none in this process".to_string())
        } else if now - last <= STALLED_AFTER_SECS {
            Ok(format!("{count} running"))
        } else {
            Err(format!("no worker alive for {}s", now - last))
        };
        check(name, result);
    }
    if failing.is_empty() {
        Json(Readiness { status: ReadinessStatus::Ready, checks, error: None }).into_response()
    } else {
        let error = NotReady { code: NotReadyCode::NotReady, message: failing.join("; ") };
        let body = Readiness { status: ReadinessStatus::NotReady, checks, error: Some(error) };
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}
