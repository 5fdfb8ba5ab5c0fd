//! `GET /api/health`: liveness, always cheap.

use crate::routes::schemas;
use axum::Json;
use serde_json::{Value, json};

#[utoipa::path(
    get,
    path = "/api/health",
    tag = "health",
    operation_id = "health",
    summary = "Liveness (always cheap, no API key)",
    responses(
        (status = 200, description = "The server is up", body = schemas::Health),
    )
)]
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// `GET /metrics`: Prometheus text exposition. Queue depths are read at scrape time.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    operation_id = "metrics",
    summary = "Prometheus metrics (no API key)",
    description = "Served on the API address unless the server runs with `--metrics-listen`, which serves it there instead.",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
    )
)]
pub async fn metrics(axum::extract::State(state): axum::extract::State<crate::AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let m = &state.metrics;
    if let Ok(n) = state.store.queue_depth().await {
        m.gauge("webhook_queue_depth", &[("kind", "events")], n as f64);
    }
    if let Ok(n) = state.store.triage_depth().await {
        m.gauge("webhook_queue_depth", &[("kind", "triage")], n as f64);
    }
    m.upkeep();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], m.render()).into_response()
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
        (status = 200, description = "Ready", body = crate::routes::schemas::Readiness),
        (status = 503, description = "`not_ready`: a check failed; `checks` says which", body = crate::routes::schemas::Readiness),
    )
)]
pub async fn ready(axum::extract::State(state): axum::extract::State<crate::AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut checks = serde_json::Map::new();
    let mut failing = Vec::new();
    let mut check = |name: &str, result: Result<String, String>| {
        match result {
            Ok(d) => checks.insert(name.into(), json!({"ok": true, "detail": d})),
            Err(e) => {
                failing.push(format!("{name}: {e}"));
                checks.insert(name.into(), json!({"ok": false, "error": e}))
            }
        };
    };
    check("store", state.store.ping().await.map(|_| "reachable".into()).map_err(|e| e.to_string()));
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
        Json(json!({"status": "ready", "checks": checks})).into_response()
    } else {
        let body = json!({"status": "not_ready", "checks": checks, "error": {"code": "not_ready", "message": failing.join("; ")}});
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}
