//! `GET /api/openapi.json`: the OpenAPI 3.1 description of the API.
//!
//! The document is generated from the same registrations that build the router (each handler's
//! `#[utoipa::path]`, registered with `routes!` in `routes::api_routes`), so a route cannot be
//! served without being described. The responses every operation shares (500, and 401/403/429/503
//! on API-key routes) are added here once instead of on every handler. `docs/openapi.json` is a
//! committed copy; `tests/api/openapi.rs` fails when it is out of date.

use crate::api::ErrorBody;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;
use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

/// The name of the API-key security scheme; operations name the key scope they need (`read`
/// accepts any key, `admin` only admin keys) as the requirement's roles.
pub const API_KEY: &str = "api_key";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tw webhook intake",
        description = "Security tools POST signed alerts to `POST /api/webhooks/{source}` (HMAC-SHA256 over \
                       `<timestamp>.<raw body>`, headers `X-Webhook-Signature` and `X-Webhook-Timestamp`); \
                       operators manage sources, incidents, playbooks and intel with an API key \
                       (`Authorization: Bearer tw_...`). Every error body is \
                       `{\"error\":{\"code\",\"message\",\"details\"?}}`; an unknown path answers \
                       `404 not_found` and a known path with another method `405 method_not_allowed`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "intake", description = "Signed webhook deliveries from security tools"),
        (name = "sources", description = "Webhook sources: settings, secrets, tests"),
        (name = "queue", description = "Queued events and dead letters"),
        (name = "incidents", description = "Incidents made from alerts"),
        (name = "triage", description = "On-demand triage jobs"),
        (name = "playbooks", description = "Triage playbooks"),
        (name = "intel", description = "Local threat intelligence lists"),
        (name = "health", description = "Liveness, metrics and this description"),
        (name = "admin", description = "The audit log of administrative changes, and API keys"),
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The document's skeleton (info, tags, shared schemas) that the route registrations extend.
pub(crate) fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The complete OpenAPI document of every route [`super::router`] can serve (with `/metrics`).
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = super::api_routes(true).into_openapi();
    finish(&mut doc);
    doc
}

/// The document as pretty JSON with a final newline: the exact text of `docs/openapi.json`.
pub fn document_json() -> String {
    let mut text = document().to_pretty_json().expect("the OpenAPI document serializes");
    text.push('\n');
    text
}

/// Serves the document; it is built once.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "health",
    operation_id = "get_openapi",
    summary = "This OpenAPI 3.1 document (no API key)",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let body = DOC.get_or_init(document_json).clone();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Adds the security scheme and the responses every operation of a kind shares.
fn finish(doc: &mut utoipa::openapi::OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        API_KEY,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("tw_<key>")
                .description(Some("An API key from `tw-cli api-key create`. Requirements name the scope: `read` (any key) or `admin`."))
                .build(),
        ),
    );
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten() {
            add_shared_responses(op);
        }
    }
}

fn add_shared_responses(op: &mut Operation) {
    let roles: Vec<String> = op
        .security
        .iter()
        .flatten()
        .filter_map(|req| serde_json::to_value(req).ok())
        .filter_map(|v| v.get(API_KEY).cloned())
        .flat_map(|roles| roles.as_array().cloned().unwrap_or_default())
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    let secured = op.security.iter().flatten().any(|req| serde_json::to_value(req).is_ok_and(|v| v.get(API_KEY).is_some()));
    if secured {
        add_error(op, 401, "`unauthorized`: the API key is missing or invalid");
        if roles.iter().any(|r| r == "admin") {
            add_error(op, 403, "`forbidden`: the API key does not have the admin scope");
        }
        add_error(op, 503, "`unavailable`: the store is shutting down or unreachable; retry later");
        add_error(
            op,
            429,
            "`rate_limited`: this client address sent too many wrong API keys or bad signatures; `Retry-After` says when to come back",
        );
    }
    add_error(op, 500, "`internal_error`: an internal failure (the cause is in the server log, under the id in the message)");
}

/// Adds an error response unless the handler documented that status itself.
fn add_error(op: &mut Operation, status: u16, description: &str) {
    let content = ContentBuilder::new().schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody")))).build();
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| RefOr::T(ResponseBuilder::new().description(description).content("application/json", content).build()));
}
