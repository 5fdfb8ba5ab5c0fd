//! Bearer API-key authentication: `Authorization: Bearer tw_...`, with a scope per route.

use crate::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tw_store::{ApiKeyRecord, Scope};

/// A caller with a valid key of any scope (read routes).
pub struct ReadAccess(pub ApiKeyRecord);

/// A caller with an admin key (routes that change things).
pub struct AdminAccess(pub ApiKeyRecord);

/// Checks the bearer key of an API request (see [`authenticate_key`]).
async fn authenticate(parts: &Parts, state: &AppState) -> Result<ApiKeyRecord, ApiError> {
    let client = crate::client::ClientIp::of(parts, &state.trusted_proxies).0;
    // A request without any `Authorization` header guesses nothing and costs nothing.
    let presented = parts.headers.contains_key(axum::http::header::AUTHORIZATION);
    authenticate_key(state, client, &parts.method, parts.uri.path(), bearer_token(&parts.headers), presented).await
}

/// Checks a key a caller presented (`token`: the key's text, or why none could be read), and logs
/// a refusal under the `auth` component (never the key itself). The API's bearer header and the
/// console's sign-in form both come here, so both spend the same budget and log alike.
///
/// An address that spent its budget of failed authentications is refused (429) before the key is
/// hashed or looked up; a wrong key counts against that budget when `presented` (a caller that
/// sent no key at all guessed nothing).
pub async fn authenticate_key(
    state: &AppState,
    client: std::net::IpAddr,
    method: &axum::http::Method,
    path: &str,
    token: Result<&str, ApiError>,
    presented: bool,
) -> Result<ApiKeyRecord, ApiError> {
    crate::limits::refuse_throttled(state, client)?;
    let result = match token {
        Ok(token) => check_key(state, token).await,
        Err(e) => Err(e),
    };
    if let Err(e @ ApiError::Unauthorized(_)) = &result {
        tracing::warn!(target: "auth", %method, %path, reason = %e, "API key refused");
        if presented {
            crate::limits::count_failure(state, client, crate::limits::FailureKind::ApiKey);
        }
    }
    result
}

/// The bearer token of `headers`' `Authorization`; refused when there is none.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized("Missing API key: send Authorization: Bearer tw_..."))?;
    let value = header.to_str().map_err(|_| ApiError::Unauthorized("Invalid API key"))?.trim();
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or(ApiError::Unauthorized("Authorization must be 'Bearer tw_...'"))
}

/// The hash of the bearer token in `headers`, as the store keeps keys; refused when there is no
/// well-formed token.
pub fn token_hash(headers: &axum::http::HeaderMap) -> Result<[u8; 32], ApiError> {
    key_hash(bearer_token(headers)?)
}

/// The hash of an API key's text, as the store keeps keys; refused when it is not shaped like one.
pub fn key_hash(token: &str) -> Result<[u8; 32], ApiError> {
    if !token.starts_with(tw_store::api_key::PREFIX) || token.len() > 256 {
        return Err(ApiError::Unauthorized("Invalid API key"));
    }
    Ok(tw_store::api_key::hash(token))
}

/// The key whose hash is `hash`, when it is still accepted at `now`: not revoked, not expired.
/// The API key of a long-lived stream (the logs' `follow`, the console's live deliveries), looked
/// up again every [`crate::routes::logs::RECHECK_EVERY`], so a revoked or expired key ends it.
#[derive(Debug, Clone, Copy)]
pub struct KeyRecheck {
    hash: [u8; 32],
    next: chrono::DateTime<chrono::Utc>,
}

impl KeyRecheck {
    pub fn new(hash: [u8; 32], now: chrono::DateTime<chrono::Utc>) -> KeyRecheck {
        KeyRecheck { hash, next: now + crate::routes::logs::RECHECK_EVERY }
    }

    /// False once the key is no longer accepted (logged under `auth`, naming `stream`); when it
    /// is not yet time to look, or the store is failing, true (it is looked up again later).
    pub async fn still_accepted(&mut self, state: &AppState, now: chrono::DateTime<chrono::Utc>, stream: &str) -> bool {
        if now < self.next {
            return true;
        }
        match accepted_key(state, self.hash, now).await {
            Ok(_) => self.next = now + crate::routes::logs::RECHECK_EVERY,
            Err(ApiError::Unauthorized(why)) => {
                tracing::warn!(target: "auth", reason = why, stream, "stream ended: its API key is no longer accepted");
                return false;
            }
            Err(_) => {}
        }
        true
    }
}

pub async fn accepted_key(state: &AppState, hash: [u8; 32], now: chrono::DateTime<chrono::Utc>) -> Result<ApiKeyRecord, ApiError> {
    let key = state.store.find_api_key(hash).await?.ok_or(ApiError::Unauthorized("Invalid API key"))?;
    if key.revoked_at.is_some() {
        return Err(ApiError::Unauthorized("Invalid API key"));
    }
    if key.is_expired(now) {
        return Err(ApiError::Unauthorized("API key expired: create a new one with `tw-cli api-key create`"));
    }
    Ok(key)
}

async fn check_key(state: &AppState, token: &str) -> Result<ApiKeyRecord, ApiError> {
    let hash = key_hash(token)?;
    // Looked up on every request (no cache), so a revocation is honoured at once by every server
    // on the database.
    let now = state.clock.now();
    let key = accepted_key(state, hash, now).await?;
    state.key_usage.used(&state.store, &key.id, now);
    Ok(key)
}

/// The scope rule of every route that changes something: an admin key, else 403 (logged under
/// `auth`). The API's [`AdminAccess`] and the console's change handlers both apply it.
pub fn require_admin(key: &ApiKeyRecord, method: &axum::http::Method, path: &str) -> Result<(), ApiError> {
    if key.scope != Scope::Admin {
        tracing::warn!(target: "auth", %method, %path, key = %key.prefix, key_name = %key.name, "admin scope required");
        return Err(ApiError::Forbidden);
    }
    Ok(())
}

impl FromRequestParts<AppState> for ReadAccess {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).await.map(ReadAccess)
    }
}

impl FromRequestParts<AppState> for AdminAccess {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = authenticate(parts, state).await?;
        require_admin(&key, &parts.method, parts.uri.path())?;
        Ok(AdminAccess(key))
    }
}

/// A read key within its playbook-test budget: authenticated, then counted, before the body is
/// read or the playbook runs.
pub struct PlaybookTestAccess(pub ApiKeyRecord);

impl FromRequestParts<AppState> for PlaybookTestAccess {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let ReadAccess(key) = ReadAccess::from_request_parts(parts, state).await?;
        crate::limits::take_playbook_test(state, &key)?;
        Ok(PlaybookTestAccess(key))
    }
}
