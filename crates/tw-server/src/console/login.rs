//! Sign-in with an API key, and sign-out.
//!
//! The sign-in form has a CSRF token of its own before any session exists: a random value in a
//! short-lived cookie and in the form, which must match (a page elsewhere cannot sign a browser
//! in to a key of its choosing).

use super::session::{ABSOLUTE, COOKIE, LOGIN_COOKIE, cookie, random_token, set_cookie, token_matches};
use super::views::{Nav, csrf_field, layout};
use super::{Console, Form, PageError, redirect};
use crate::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

/// How long the sign-in form stays usable.
const LOGIN_FORM_TTL: chrono::Duration = chrono::Duration::hours(1);

fn page(token: &str, problem: Option<&str>) -> Markup {
    layout(
        "Sign in",
        Nav::None,
        None,
        html! {
            div.login.panel {
                h1 { "Sign in" }
                @if let Some(p) = problem {
                    div.notice.error role="alert" { (p) }
                }
                form.stack method="post" action="/console/login" {
                    (csrf_field(token))
                    label {
                        "API key"
                        input type="password" name="api_key" autocomplete="off" required autofocus spellcheck="false";
                        span.hint { "A read key sees everything; an admin key can also change things. Create one with "
                            code { "tw-cli api-key create --name you --scope read" } "." }
                    }
                    div { button.primary type="submit" { "Sign in" } }
                }
            }
        },
    )
}

/// The form, with a fresh sign-in token in its cookie.
fn form_response(status: StatusCode, problem: Option<&str>, secure: bool) -> Result<Response, PageError> {
    let token = random_token()?;
    let mut resp = (status, page(&token, problem)).into_response();
    let c = set_cookie(LOGIN_COOKIE, &token, LOGIN_FORM_TTL, secure);
    resp.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&c).map_err(|_| ApiError::Internal("cookie".into()))?);
    Ok(resp)
}

/// `GET /console/login`.
pub async fn form(State(state): State<AppState>, parts: Parts) -> Result<Response, PageError> {
    form_response(StatusCode::OK, None, crate::client::over_tls(&parts, &state.trusted_proxies))
}

/// `POST /console/login`: checks the key as the API does (a wrong one spends the address's
/// failure budget; over it, 429), then opens a session.
pub async fn sign_in(State(state): State<AppState>, parts: Parts, body: Bytes) -> Result<Response, PageError> {
    let secure = crate::client::over_tls(&parts, &state.trusted_proxies);
    let form = Form::parse(&body);
    if !token_matches(form.text("csrf"), cookie(&parts.headers, LOGIN_COOKIE).unwrap_or_default()) {
        tracing::warn!(target: "auth", "console sign-in refused: the form's token is missing or does not match its cookie");
        return Err(PageError::csrf());
    }
    let client = crate::client::ClientIp::of(&parts, &state.trusted_proxies).0;
    let api_key = form.text("api_key");
    let token = if api_key.is_empty() { Err(ApiError::Unauthorized("Enter an API key")) } else { Ok(api_key) };
    let key = match crate::auth::authenticate_key(&state, client, &parts.method, parts.uri.path(), token, !api_key.is_empty()).await {
        Ok(key) => key,
        Err(ApiError::Unauthorized(reason)) => return form_response(StatusCode::UNAUTHORIZED, Some(reason), secure),
        Err(e) => return Err(e.into()),
    };
    let hash = crate::auth::key_hash(api_key)?;
    let id = state.console_sessions.open(&key, hash, state.clock.now()).await?;
    tracing::info!(target: "auth", key = %key.prefix, key_name = %key.name, client_ip = %client, "console sign-in");
    Ok(redirect("/console", &[set_cookie(COOKIE, &id, ABSOLUTE, secure), set_cookie(LOGIN_COOKIE, "", chrono::Duration::zero(), secure)]))
}

/// `POST /console/logout`: ends the session (its cookie no longer opens anything).
pub async fn sign_out(State(state): State<AppState>, console: Console, body: Bytes) -> Result<Response, PageError> {
    console.form(&body)?;
    state.console_sessions.close(&console.session_id).await.map_err(|e| console.error(e))?;
    tracing::info!(target: "auth", key = %console.key.prefix, "console sign-out");
    Ok(redirect("/console/login", &[set_cookie(COOKIE, "", chrono::Duration::zero(), console.tls)]))
}
