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

/// Checks the key, and logs a refusal under the `auth` component (never the key itself).
async fn authenticate(parts: &Parts, state: &AppState) -> Result<ApiKeyRecord, ApiError> {
    let result = check_key(parts, state).await;
    if let Err(e @ ApiError::Unauthorized(_)) = &result {
        tracing::warn!(target: "auth", method = %parts.method, path = %parts.uri.path(), reason = %e, "API key refused");
    }
    result
}

async fn check_key(parts: &Parts, state: &AppState) -> Result<ApiKeyRecord, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized("Missing API key: send Authorization: Bearer tw_..."))?;
    let value = header.to_str().map_err(|_| ApiError::Unauthorized("Invalid API key"))?.trim();
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or(ApiError::Unauthorized("Authorization must be 'Bearer tw_...'"))?;
    if !token.starts_with(tw_store::api_key::PREFIX) || token.len() > 256 {
        return Err(ApiError::Unauthorized("Invalid API key"));
    }
    state.store.find_api_key(tw_store::api_key::hash(token)).await?.ok_or(ApiError::Unauthorized("Invalid API key"))
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
        if key.scope != Scope::Admin {
            tracing::warn!(target: "auth", method = %parts.method, path = %parts.uri.path(), key = %key.prefix, key_name = %key.name, "admin scope required");
            return Err(ApiError::Forbidden);
        }
        Ok(AdminAccess(key))
    }
}
