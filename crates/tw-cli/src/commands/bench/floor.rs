//! The floor: the least any webhook intake must do per delivery, served by the bench itself in a
//! child process (`tw-cli bench --floor-serve`). HTTP, read the body (1 MiB cap), check the
//! signature and timestamp window, parse the JSON, answer 201. No store, no normalization, no
//! logs: the product's throughput over this one says what everything else costs.

use super::load::{self, Load, Target};
use super::payloads::Payloads;
use super::report::RunReport;
use super::servers::{self, Ready, ServerChild};
use super::{Plan, READY_WITHIN, SECRET, SOURCE};
use anyhow::{Context, Result};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use tw_core::Secret;
use tw_core::signature::{DEFAULT_TOLERANCE_SECS, verify_request};

/// The product's default body limit.
const MAX_BODY: usize = 1024 * 1024;

/// The answer, about the size of the product's 201.
const CREATED: &str = r#"{"status":"accepted","incident_id":"00000000-0000-0000-0000-000000000000","incident_number":"INC-0000-0000"}"#;

/// The same load against the floor responder, started as a child like the server.
pub async fn run(plan: &Plan, cpu: Option<usize>, tmp: &Path, payloads: Arc<Payloads>) -> Result<RunReport> {
    let addr = servers::listen_addr(None)?;
    let args: Vec<OsString> =
        ["bench", "--floor-serve", "--listen", &addr.to_string(), "--secret", SECRET].into_iter().map(OsString::from).collect();
    let mut child = ServerChild::spawn("floor responder", &args, addr, &tmp.join("floor.log"), cpu)?;
    child.wait_ready(Ready::Listening, READY_WITHIN).await?;
    let target = Target::new(addr, &addr.to_string(), &format!("/api/webhooks/{SOURCE}"))?;
    let load = Load { target, secret: Arc::new(Secret::new(SECRET)), concurrency: plan.concurrency, amount: plan.amount, payloads };
    let outcome = load::run(load, "floor").await;
    let peak_rss_bytes = child.peak_rss_bytes();
    child.stop().await?;
    Ok(RunReport { outcome, peak_rss_bytes })
}

/// Serves the floor on `listen` until SIGTERM, on the same runtime as `serve`.
pub fn serve(listen: SocketAddr, secret: String) -> Result<ExitCode> {
    crate::runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let app = Router::new().fallback(receive).with_state(Arc::new(Secret::new(secret)));
        axum::serve(listener, app).with_graceful_shutdown(terminated()).await.context("the floor server failed")?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

/// Any request: verified, parsed, answered.
async fn receive(State(secret): State<Arc<Secret>>, headers: HeaderMap, body: Body) -> Response {
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, r#"{"error":{"code":"payload_too_large"}}"#).into_response();
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    let verified =
        verify_request(&[&secret], DEFAULT_TOLERANCE_SECS, now, header("x-webhook-timestamp"), header("x-webhook-signature"), &body);
    if verified.is_err() {
        return (StatusCode::UNAUTHORIZED, r#"{"error":{"code":"invalid_signature"}}"#).into_response();
    }
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) if v.is_object() => (StatusCode::CREATED, [(axum::http::header::CONTENT_TYPE, "application/json")], CREATED).into_response(),
        _ => (StatusCode::BAD_REQUEST, r#"{"error":{"code":"invalid_payload"}}"#).into_response(),
    }
}
