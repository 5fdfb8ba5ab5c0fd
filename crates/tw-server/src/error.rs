//! `ApiError`: every error the API answers with, its HTTP status and its stable `code`.
//! Handlers return `Result<_, ApiError>`; internal causes are logged, never sent to the client.

use crate::api::{ErrorBody, ErrorDetail, FieldError};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tw_core::signature::VerifyError;
use tw_store::StoreError;

/// Every error response of the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Webhook source '{0}' is not registered")]
    UnknownSource(String),
    #[error("Webhook source '{0}' is disabled")]
    SourceDisabled(String),
    #[error("{0}")]
    Verify(#[from] VerifyError),
    /// A scheme other than the spec's HMAC refused the delivery: `code` is one of the
    /// verification codes (`missing_signature`, `invalid_signature`, `missing_timestamp`,
    /// `timestamp_invalid`, `timestamp_expired`), `message` says what the scheme expected. Never
    /// carries the secret, a token or a signature.
    #[error("{message}")]
    Unverified { code: &'static str, message: String },
    #[error("Deliveries to source '{0}' are not accepted from this address")]
    AddressNotAllowed(String),
    #[error("Request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(u64),
    #[error("{0}")]
    InvalidPayload(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("This action requires an API key with the admin scope")]
    Forbidden,
    #[error("{message}")]
    Validation { message: String, details: Vec<FieldError> },
    #[error("Webhook source '{0}' already exists")]
    SourceExists(String),
    #[error("Webhook source '{0}' is managed by the config file; change it there and restart")]
    ManagedByConfig(String),
    #[error("{0}")]
    NotFound(String),
    #[error("Playbook '{0}' already exists")]
    PlaybookExists(String),
    #[error("Playbook '{0}' is built in and cannot be changed or deleted")]
    BuiltinPlaybook(String),
    #[error("Playbook '{name}' is used by source(s) {}; change them first", sources.join(", "))]
    PlaybookInUse { name: String, sources: Vec<String> },
    #[error("Internal error; see the server log for request {0}")]
    Internal(String),
    #[error("The server is temporarily unable to store events; retry later")]
    Unavailable,
    /// The request body did not arrive within the body timeout (408; the connection is closed).
    #[error("The request body was not received in time")]
    RequestTimeout,
    /// A rate limit refused the request (429, with `Retry-After`).
    #[error("{0}")]
    RateLimited(crate::limits::Limited),
}

impl ApiError {
    /// The stable machine-readable code in the error body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::UnknownSource(_) => "unknown_source",
            ApiError::SourceDisabled(_) => "source_disabled",
            ApiError::Verify(v) => match v {
                VerifyError::MissingSignature => "missing_signature",
                VerifyError::MissingTimestamp => "missing_timestamp",
                VerifyError::TimestampNotInteger | VerifyError::TimestampInFuture(_) => "timestamp_invalid",
                VerifyError::TimestampExpired(_) => "timestamp_expired",
                VerifyError::InvalidSignature => "invalid_signature",
            },
            ApiError::Unverified { code, .. } => code,
            ApiError::AddressNotAllowed(_) => "ip_not_allowed",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::InvalidPayload(_) => "invalid_payload",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::Validation { .. } => "validation_error",
            ApiError::SourceExists(_) => "source_exists",
            ApiError::ManagedByConfig(_) => "managed_by_config",
            ApiError::NotFound(_) => "not_found",
            ApiError::PlaybookExists(_) => "playbook_exists",
            ApiError::BuiltinPlaybook(_) => "builtin_playbook",
            ApiError::PlaybookInUse { .. } => "playbook_in_use",
            ApiError::Internal(_) => "internal_error",
            ApiError::Unavailable => "unavailable",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::RateLimited(_) => "rate_limited",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownSource(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::SourceDisabled(_) | ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::Verify(_) | ApiError::Unverified { .. } | ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::AddressNotAllowed(_) => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidPayload(_) => StatusCode::BAD_REQUEST,
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::SourceExists(_)
            | ApiError::ManagedByConfig(_)
            | ApiError::PlaybookExists(_)
            | ApiError::BuiltinPlaybook(_)
            | ApiError::PlaybookInUse { .. } => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// A validation error about one field.
    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        let fe = FieldError::new(field, message);
        ApiError::Validation { message: format!("{}: {}", fe.field, fe.message), details: vec![fe] }
    }

    /// A validation error about several fields.
    pub fn fields(details: Vec<FieldError>) -> ApiError {
        let message = details.iter().map(|d| format!("{}: {}", d.field, d.message)).collect::<Vec<_>>().join("; ");
        ApiError::Validation { message, details }
    }

    /// Logs a store failure with its cause and returns the opaque error the client sees.
    pub fn from_store(e: StoreError) -> ApiError {
        match e {
            StoreError::SourceExists(n) => ApiError::SourceExists(n),
            StoreError::SourceNotFound(n) => ApiError::UnknownSource(n),
            StoreError::PlaybookInUse { name, sources } => ApiError::PlaybookInUse { name, sources },
            StoreError::IncidentNotFound(n) => ApiError::NotFound(format!("Incident {n} not found")),
            e if e.is_unavailable() => {
                // While the database is down every request ends here: one line a second says so,
                // the rest go to debug (the outage itself is logged once by `store_health`).
                tw_store::warn_once_a_second!(&UNAVAILABLE_LOGGED, target: "store", error = %e.chain(), "the store is unavailable; answering 503");
                ApiError::Unavailable
            }
            other => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                tracing::error!(target: "store", error_id = %id, error = %other.chain(), "store operation failed");
                ApiError::Internal(id)
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::from_store(e)
    }
}

/// What a 503 tells the sender: try again in this many seconds.
pub const RETRY_AFTER_SECS: &str = "5";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let details = match &self {
            ApiError::Validation { details, .. } => Some(details.clone()),
            _ => None,
        };
        let body = ErrorBody { error: ErrorDetail { code: self.code().to_string(), message: self.to_string(), details } };
        let mut resp = (self.status(), axum::Json(body)).into_response();
        if matches!(self, ApiError::Unavailable) {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static(RETRY_AFTER_SECS));
        }
        if let ApiError::RateLimited(l) = &self {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(l.retry_after_secs));
        }
        resp.extensions_mut().insert(ErrorCode(self.code()));
        resp
    }
}

/// The error code of a response, for the request log line.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// When an unavailable store was last logged at warn level (unix seconds).
static UNAVAILABLE_LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_messages_and_codes() {
        let e = ApiError::UnknownSource("unknown".into());
        assert_eq!((e.code(), e.to_string().as_str()), ("unknown_source", "Webhook source 'unknown' is not registered"));
        let e = ApiError::Verify(VerifyError::InvalidSignature);
        assert_eq!((e.code(), e.status()), ("invalid_signature", StatusCode::UNAUTHORIZED));
        assert_eq!(e.to_string(), "Webhook signature verification failed");
        let e = ApiError::Verify(VerifyError::TimestampExpired(300));
        assert_eq!(e.code(), "timestamp_expired");
        assert_eq!(e.to_string(), "Webhook timestamp is too old (>5 minutes)");
        assert_eq!(ApiError::Verify(VerifyError::TimestampInFuture(300)).code(), "timestamp_invalid");
    }
}
