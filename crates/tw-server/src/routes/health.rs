//! `GET /api/health`: liveness, always cheap.

use axum::Json;
use serde_json::{Value, json};

pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// `GET /metrics`: Prometheus text exposition. Queue depths are read at scrape time.
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
