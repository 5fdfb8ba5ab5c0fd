//! The HTTP routes, one module per resource.

pub mod audit;
pub mod events;
pub mod health;
pub mod incidents;
pub mod intake;
pub mod intel;
pub mod logs;
pub mod openapi;
pub mod playbooks;
pub mod queue;
pub mod sources;
pub mod triage;

use crate::ApiError;
use crate::state::AppState;
use axum::Router;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The metrics endpoint alone (for `--metrics-listen`). Like [`router`], it is served by
/// `serve::serve`, which adds `nosniff` and answers a panic.
pub fn metrics_router(state: AppState) -> Router {
    let (router, _) = OpenApiRouter::new().routes(routes!(health::metrics)).split_for_parts();
    router.with_state(state)
}

/// Every route of the API, and the console's pages; `/metrics` too unless it is served on its own
/// address. `serve::serve`, which serves it, adds [`nosniff`] to every response and answers a
/// handler's panic with [`panic_response`], around the whole router: as layers here, axum would
/// wrap and clone them for each route and request (4,200 instructions per delivery in
/// callgrind).
pub fn router(state: AppState, with_metrics: bool) -> Router {
    let (router, _) = api_routes(with_metrics).split_for_parts();
    // The console is HTML for people, deliberately outside the OpenAPI document: its own router
    // (crate::console), merged here so it shares the logs, panic handling and nosniff.
    router.merge(crate::console::router()).fallback(not_found).layer(axum::middleware::from_fn(shape_and_log)).with_state(state)
}

/// `X-Content-Type-Options: nosniff` on every response (added last, by `serve::serve`, so panics,
/// framework rejections and the connection's own answers get it too): a browser must not read an
/// error echoing sender text, or a stored payload, as HTML or script.
pub(crate) fn nosniff(headers: &mut axum::http::HeaderMap) {
    headers.insert(axum::http::header::X_CONTENT_TYPE_OPTIONS, axum::http::HeaderValue::from_static("nosniff"));
}

/// Every response in the spec's error shape ([`error_shape`]), and one `api` log line per request
/// outside the intake (which writes its own, richer line): one middleware, not two, since each
/// layer costs every request, the intake's included.
async fn shape_and_log(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let method = req.method().clone();
    // The matched route is shared text (an `Arc`): cloned, not copied.
    let matched = req.extensions().get::<axum::extract::MatchedPath>().cloned();
    let route = matched.as_ref().map(axum::extract::MatchedPath::as_str);
    let console = crate::console::pages::owns(req.uri().path());
    let started = std::time::Instant::now();
    let resp = error_shape(next.run(req).await, console).await;
    let intake = method == axum::http::Method::POST && matches!(route, Some("/api/webhooks/{source}" | "/api/webhooks/{source}/{token}"));
    let quiet = matches!(route, Some("/metrics" | "/api/health" | "/api/ready"));
    if !intake {
        let status = resp.status().as_u16();
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        // The path is logged only when it matched a route (the template); anything else is
        // sender-chosen text.
        let route = route.unwrap_or("-");
        if quiet {
            tracing::debug!(target: "api", %method, route, status, latency_ms, "api request");
        } else {
            tracing::info!(target: "api", %method, route, status, latency_ms, "api request");
        }
    }
    resp
}

/// Gives every error the spec's shape `{"error":{"code","message"}}`: the framework's own
/// rejections (405, a malformed query string or path, a body over axum's limit) answer in plain
/// text otherwise. Headers such as `Allow` are kept. Under `/console` (`console`: the request's
/// path is the console's) the same rejections become the console's HTML error page (same status),
/// and its own HTML error pages stay as they are.
async fn error_shape(resp: axum::response::Response, console: bool) -> axum::response::Response {
    let status = resp.status();
    let shaped = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/event-stream") || v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || shaped {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    if console {
        let page = axum::response::IntoResponse::into_response(crate::console::pages::refused(status, &text));
        let (page_parts, page_body) = page.into_parts();
        // The page's own type; the refusal's other headers (Allow, the console's CSP) kept.
        parts.headers.extend(page_parts.headers);
        return axum::response::Response::from_parts(parts, page_body);
    }
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("Request failed").to_string() } else { text };
    let error = crate::api::ErrorDetail { code: crate::api::error::framework_code(status.as_u16()).to_string(), message, details: None };
    let body = serde_json::to_string(&crate::api::ErrorBody { error }).unwrap_or_default();
    parts.headers.insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    axum::response::Response::from_parts(parts, axum::body::Body::from(body))
}

/// Every route and its OpenAPI description, from one registration each.
///
/// To add a route: annotate the handler with `#[utoipa::path(...)]` (method, path, tag,
/// operation_id, params, request body, every response with its error codes, and
/// `security(("api_key" = ["read"]))` or `["admin"]` when it takes an API key), then register it here with
/// `.routes(routes!(module::handler))`, one `routes!` per path (handlers of the same path
/// together). A plain `.route(...)` would be served without being described; `tests/api/openapi.rs`
/// catches that.
pub(crate) fn api_routes(with_metrics: bool) -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(health::health))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(sources::create, sources::list))
        .routes(routes!(queue::get))
        .routes(routes!(intake::receive, sources::show, sources::update, sources::remove))
        .routes(routes!(sources::rotate_secret))
        .routes(routes!(sources::test))
        .routes(routes!(sources::reprocess))
        .routes(routes!(intake::receive_with_token))
        .routes(routes!(incidents::list))
        .routes(routes!(incidents::get))
        .routes(routes!(incidents::raw))
        .routes(routes!(triage::run))
        .routes(routes!(triage::job))
        .routes(routes!(playbooks::list, playbooks::create))
        .routes(routes!(playbooks::validate))
        .routes(routes!(playbooks::get, playbooks::replace, playbooks::remove))
        .routes(routes!(playbooks::test))
        .routes(routes!(intel::summary))
        .routes(routes!(intel::add))
        .routes(routes!(logs::logs))
        .routes(routes!(audit::list))
        .routes(routes!(audit::keys))
        .routes(routes!(health::ready))
        .routes(routes!(events::list))
        .routes(routes!(events::get))
        .routes(routes!(queue::dead_letters));
    if with_metrics { api.routes(routes!(health::metrics)) } else { api }
}

/// A handler that panicked answers 500 in the usual error shape; the panic itself is logged, never
/// sent (it could carry request data).
pub(crate) fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    tracing::error!(target: "api", error_id = %id, "request handler panicked");
    axum::response::IntoResponse::into_response(ApiError::Internal(id))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("No such endpoint".into())
}

/// A query string read strictly, as the API document describes it: each parameter at most once
/// and never empty (leave it out instead), else `422 validation_error` naming the parameter. A
/// repeated or empty parameter is a client's mistake that a lenient reader would silently
/// resolve one way or another.
pub struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let text = parts.uri.query().unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(text)
            .map_err(|_| ApiError::field("query", "is not a well-formed query string (UTF-8, percent-encoded)"))?;
        let mut seen = std::collections::HashSet::new();
        for (k, v) in &pairs {
            let name: String = k.chars().take(64).collect();
            if !seen.insert(k.as_str()) {
                return Err(ApiError::field(&name, "is given more than once"));
            }
            if v.is_empty() {
                return Err(ApiError::field(&name, "is empty: leave it out instead"));
            }
        }
        serde_urlencoded::from_str(text).map(Query).map_err(|e| ApiError::field("query", e.to_string()))
    }
}
