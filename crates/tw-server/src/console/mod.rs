//! The operator console: server-rendered HTML at `/console`, served by the same process as the
//! API.
//!
//! - Pages are maud templates ([`views`]); the one stylesheet and the one script are embedded and
//!   served under content-hashed names ([`assets`]). Every response carries a strict
//!   Content-Security-Policy (no inline script or style), `X-Frame-Options: DENY` and
//!   `Referrer-Policy: no-referrer`; pages are `Cache-Control: no-store` (they may hold a secret).
//! - Sign-in takes an API key through the API's own check ([`crate::auth::authenticate_key`]:
//!   the same failure budget and `auth` log lines) and opens a server-side session
//!   ([`session`]); each request checks the key again, so revoking it ends its sessions.
//! - Every POST carries the session's CSRF token (403 without it), and a change needs an admin
//!   key by the API's rule ([`crate::auth::require_admin`]); a read key's pages show no control
//!   it cannot use.
//! - Pages call the service functions the API handlers call (`routes::sources::create_source`,
//!   `routes::incidents::list_incidents`, `routes::triage::queue_triage`,
//!   `routes::playbooks::validate_playbook`, ...), never a copy of their rules.
//!
//! The console's routes are HTML for people, deliberately not in the OpenAPI document; they are
//! registered here and merged into the server's router by [`crate::routes::router`].

pub mod assets;
mod charts;
mod deliveries;
mod incidents;
mod login;
mod overview;
pub(crate) mod pages;
mod playbooks;
pub mod session;
mod source_settings;
mod sources;
mod triage;
pub mod views;

use crate::ApiError;
use crate::audit::Admin;
use crate::client::ClientIp;
use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use session::{COOKIE, cookie, set_cookie};
use tw_store::{ApiKeyRecord, Scope};
use views::Viewer;

/// The Content-Security-Policy of every console response: our own files only, no inline script
/// or style, no framing, forms post only to us.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// The largest form body a console page posts (sign-in, a source, a re-run): anyone may post to
/// the sign-in form, so it is small.
const FORM_BYTES: usize = 16 * 1024;
/// The playbook forms carry an edited YAML or a pasted payload: the API's test body, as a form
/// may encode it (up to three bytes per byte), and the rest of the form.
const PLAYBOOK_FORM_BYTES: usize = 3 * crate::routes::playbooks::MAX_TEST_BODY_BYTES + 64 * 1024;

/// Every console route. Not described in the OpenAPI document (HTML for people, not API).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(overview::overview))
        .route("/console/", get(|| async { redirect("/console", &[]) }))
        .route("/console/login", get(login::form).post(login::sign_in))
        .route("/console/logout", post(login::sign_out))
        .route("/console/sources", get(sources::list).post(sources::create))
        .route("/console/sources/new", get(sources::new_form))
        .route("/console/sources/{name}/test", post(sources::test))
        .route("/console/sources/{name}/enabled", post(sources::set_enabled))
        .route("/console/sources/{name}/rotate", post(sources::rotate))
        .route("/console/sources/{name}/settings", get(source_settings::form).post(source_settings::save))
        .route("/console/sources/{name}/delete", get(sources::confirm_delete).post(sources::delete))
        .route("/console/deliveries", get(deliveries::list))
        .route("/console/deliveries/stream", get(deliveries::stream))
        .route("/console/deliveries/{request_id}", get(deliveries::detail))
        .route("/console/sources/{name}/reprocess-dead-letters", post(deliveries::reprocess))
        .route("/console/incidents", get(incidents::list))
        .route("/console/incidents/{id}", get(incidents::detail))
        .route("/console/incidents/{id}/triage", post(incidents::rerun))
        .route("/console/playbooks", get(playbooks::list))
        .route("/console/playbooks/{name}", get(playbooks::show))
        .route("/console/playbooks/{name}/validate", post(playbooks::validate).layer(DefaultBodyLimit::max(PLAYBOOK_FORM_BYTES)))
        .route("/console/playbooks/{name}/test", post(playbooks::test).layer(DefaultBodyLimit::max(PLAYBOOK_FORM_BYTES)))
        .route("/console/assets/{file}", get(assets::serve))
        .route("/console/{*rest}", any(pages::not_found))
        .layer(DefaultBodyLimit::max(FORM_BYTES))
        .layer(axum::middleware::map_response(security_headers))
}

/// The headers every console response carries (assets keep their own `Cache-Control`).
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// A page that could not be shown: its status, and what to tell the person (the API's own
/// message for the same error).
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
    retry_after: Option<u64>,
    /// Boxed: a page error is a `Result`'s error on every console handler's path, and small keeps
    /// their `Ok` cheap.
    viewer: Option<Box<Viewer>>,
}

impl PageError {
    pub fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> PageError {
        PageError { status, title, message: message.into(), retry_after: None, viewer: None }
    }

    /// Shown inside the signed-in frame of `viewer`.
    pub fn for_viewer(mut self, viewer: &Viewer) -> PageError {
        self.viewer = Some(Box::new(viewer.clone()));
        self
    }

    /// A form without the right CSRF token.
    pub fn csrf() -> PageError {
        PageError::new(
            StatusCode::FORBIDDEN,
            "Refused",
            "The form's security token is missing or out of date: reload the page and try again.",
        )
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        let status = e.status();
        let title = match status {
            StatusCode::UNAUTHORIZED => "Not signed in",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::CONFLICT => "Conflict",
            StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
            StatusCode::SERVICE_UNAVAILABLE => "Unavailable",
            s if s.is_server_error() => "Server error",
            _ => "Refused",
        };
        let retry_after = match &e {
            ApiError::RateLimited(l) => Some(l.retry_after_secs),
            ApiError::Unavailable => crate::error::RETRY_AFTER_SECS.parse().ok(),
            _ => None,
        };
        PageError { status, title, message: e.to_string(), retry_after, viewer: None }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = views::message_page(self.title, &self.message, self.viewer.as_deref());
        let mut resp = (self.status, page).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// A `303 See Other` to `to`, with cookies to set.
pub fn redirect(to: &str, cookies: &[String]) -> Response {
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// The fields of a submitted form (`application/x-www-form-urlencoded`).
#[derive(Debug, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// Reads a form body; an unreadable one reads as empty (and so fails its CSRF check).
    pub fn parse(body: &[u8]) -> Form {
        Form(serde_urlencoded::from_bytes(body).unwrap_or_default())
    }

    /// The first value of field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The trimmed value of `name`, `""` when absent.
    pub fn text(&self, name: &str) -> &str {
        self.get(name).map(str::trim).unwrap_or_default()
    }
}

/// A signed-in request: the session's key (checked again for this request) and what pages and
/// change handlers need about the caller.
pub struct Console {
    pub key: ApiKeyRecord,
    pub viewer: Viewer,
    session_id: String,
    client: ClientIp,
    request_id: String,
    method: Method,
    path: String,
    tls: bool,
    host: Option<String>,
}

impl Console {
    /// The submitted form, when it carries this session's CSRF token; 403 otherwise (logged under
    /// `auth`).
    pub fn form(&self, body: &[u8]) -> Result<Form, PageError> {
        let form = Form::parse(body);
        if session::token_matches(form.text("csrf"), &self.viewer.csrf) {
            Ok(form)
        } else {
            tracing::warn!(target: "auth", method = %self.method, path = %self.path, key = %self.key.prefix, "console form refused: CSRF token missing or wrong");
            Err(PageError::csrf().for_viewer(&self.viewer))
        }
    }

    /// The caller as a change's author, when its key may change things (the API's scope rule);
    /// 403 otherwise.
    pub fn admin(&self) -> Result<Admin, PageError> {
        crate::auth::require_admin(&self.key, &self.method, &self.path).map_err(|e| self.error(e))?;
        Ok(Admin { key: self.key.clone(), ip: self.client, request_id: self.request_id.clone() })
    }

    /// `error` as a page in this viewer's frame.
    pub fn error(&self, error: impl Into<PageError>) -> PageError {
        error.into().for_viewer(&self.viewer)
    }

    /// How senders reach this server, as the browser did: `https://tw.example.com`.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host.as_deref().unwrap_or("<this server>"))
    }
}

/// The `Host` the browser asked for, when it looks like a host (and port).
fn host_of(parts: &Parts) -> Option<String> {
    let host = parts.headers.get(header::HOST)?.to_str().ok()?;
    let ok = !host.is_empty() && host.len() <= 255 && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b));
    ok.then(|| host.to_string())
}

/// To the sign-in page, forgetting the session cookie.
fn to_sign_in(secure: bool) -> Response {
    redirect("/console/login", &[set_cookie(COOKIE, "", chrono::Duration::zero(), secure)])
}

impl FromRequestParts<AppState> for Console {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let tls = crate::client::over_tls(parts, &state.trusted_proxies);
        let now = state.clock.now();
        let Some(id) = cookie(&parts.headers, COOKIE).filter(|id| !id.is_empty()) else { return Err(redirect("/console/login", &[])) };
        let session = match state.console_sessions.touch(id, now).await {
            Ok(Some(session)) => session,
            Ok(None) => return Err(to_sign_in(tls)),
            Err(e) => return Err(PageError::from(e).into_response()),
        };
        let key = match crate::auth::accepted_key(state, session.key_hash, now).await {
            Ok(key) => key,
            Err(ApiError::Unauthorized(reason)) => {
                // Its row goes now rather than at its expiry; should that fail, the key check
                // refuses the session again at each request until it is pruned.
                if let Err(e) = state.console_sessions.close(id).await {
                    tracing::warn!(target: "store", error = ?e, "a refused key's console session was not deleted");
                }
                tracing::info!(target: "auth", reason, "console session ended: its API key is no longer accepted");
                return Err(to_sign_in(tls));
            }
            Err(e) => return Err(PageError::from(e).into_response()),
        };
        state.key_usage.used(&state.store, &key.id, now);
        let viewer =
            Viewer { key_name: key.name.clone(), key_prefix: key.prefix.clone(), admin: key.scope == Scope::Admin, csrf: session.csrf };
        Ok(Console {
            viewer,
            session_id: id.to_string(),
            client: ClientIp::of(parts, &state.trusted_proxies),
            request_id: crate::request_ids::RequestIds::of(&parts.headers).echoed().to_string(),
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            tls,
            host: host_of(parts),
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_read_by_field() {
        let f = Form::parse(b"csrf=abc&source=+mail+&x=1&x=2");
        assert_eq!(f.get("csrf"), Some("abc"));
        assert_eq!(f.text("source"), "mail");
        assert_eq!(f.get("x"), Some("1"));
        assert_eq!(f.text("missing"), "");
        assert!(Form::parse(b"%FF%FE=\xff").get("csrf").is_none());
    }

    #[test]
    fn a_page_error_keeps_the_api_message_and_status() {
        let e = PageError::from(ApiError::Forbidden);
        assert_eq!((e.status, e.title), (StatusCode::FORBIDDEN, "Not allowed"));
        assert_eq!(e.message, ApiError::Forbidden.to_string());
        let resp = PageError::from(ApiError::Unavailable).into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], crate::error::RETRY_AFTER_SECS);
    }
}
