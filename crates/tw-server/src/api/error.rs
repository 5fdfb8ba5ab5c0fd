//! The error body every failing request gets: `{"error": {"code", "message", "details"?}}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One field's problem in a `validation_error`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// Every error response: `{"error": {"code", "message", "details"?}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// One of [`ErrorCode`]'s values ([`crate::ApiError::code`]).
    #[schema(value_type = ErrorCode)]
    pub code: String,
    /// A human explanation; never contains internal causes.
    pub message: String,
    /// Only for `validation_error`: one entry per field in error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<FieldError>>,
}

/// The stable machine-readable error codes (`ApiError::code`). Each operation's error responses
/// say which of them it can answer with.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    UnknownSource,
    SourceDisabled,
    MissingSignature,
    MissingTimestamp,
    TimestampInvalid,
    TimestampExpired,
    InvalidSignature,
    /// The source's `allowed_ips` does not hold the client's address.
    IpNotAllowed,
    PayloadTooLarge,
    InvalidPayload,
    Unauthorized,
    Forbidden,
    ValidationError,
    SourceExists,
    ManagedByConfig,
    NotFound,
    PlaybookExists,
    BuiltinPlaybook,
    PlaybookInUse,
    InternalError,
    Unavailable,
    RequestTimeout,
    RateLimited,
    /// From the HTTP layer, before any handler: a path that cannot be read.
    BadRequest,
    /// From the HTTP layer: a known path with another method (`Allow` lists the methods).
    MethodNotAllowed,
    /// From the HTTP layer.
    NotAcceptable,
    /// From the HTTP layer.
    UnsupportedMediaType,
}

/// The code of an error answered by the HTTP layer itself (a framework rejection, a 405), by its
/// status; every one is an [`ErrorCode`].
pub fn framework_code(status: u16) -> &'static str {
    match status {
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        408 => "request_timeout",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "validation_error",
        500..=599 => "internal_error",
        _ => "bad_request",
    }
}

#[cfg(test)]
mod tests {
    use crate::ApiError;
    use tw_core::signature::VerifyError;

    /// One of each error; the match below stops compiling when a variant is added, so the
    /// `ErrorCode` schema cannot silently miss a code.
    fn every_error() -> Vec<ApiError> {
        let all = vec![
            ApiError::UnknownSource("x".into()),
            ApiError::SourceDisabled("x".into()),
            ApiError::Verify(VerifyError::MissingSignature),
            ApiError::Verify(VerifyError::MissingTimestamp),
            ApiError::Verify(VerifyError::TimestampNotInteger),
            ApiError::Verify(VerifyError::TimestampInFuture(1)),
            ApiError::Verify(VerifyError::TimestampExpired(1)),
            ApiError::Verify(VerifyError::InvalidSignature),
            ApiError::PayloadTooLarge(1),
            ApiError::InvalidPayload("x".into()),
            ApiError::Unauthorized("x"),
            ApiError::Forbidden,
            ApiError::Validation { message: "x".into(), details: vec![] },
            ApiError::SourceExists("x".into()),
            ApiError::ManagedByConfig("x".into()),
            ApiError::NotFound("x".into()),
            ApiError::PlaybookExists("x".into()),
            ApiError::BuiltinPlaybook("x".into()),
            ApiError::PlaybookInUse { name: "x".into(), sources: vec![] },
            ApiError::Internal("x".into()),
            ApiError::Unavailable,
            ApiError::RequestTimeout,
            ApiError::AddressNotAllowed("x".into()),
            ApiError::Unverified { code: "invalid_signature", message: "x".into() },
            ApiError::RateLimited(crate::limits::Limited { reason: crate::limits::LimitReason::Source, retry_after_secs: 1 }),
        ];
        for e in &all {
            match e {
                ApiError::UnknownSource(_)
                | ApiError::SourceDisabled(_)
                | ApiError::Verify(
                    VerifyError::MissingSignature
                    | VerifyError::MissingTimestamp
                    | VerifyError::TimestampNotInteger
                    | VerifyError::TimestampInFuture(_)
                    | VerifyError::TimestampExpired(_)
                    | VerifyError::InvalidSignature,
                )
                | ApiError::PayloadTooLarge(_)
                | ApiError::InvalidPayload(_)
                | ApiError::Unauthorized(_)
                | ApiError::Forbidden
                | ApiError::Validation { .. }
                | ApiError::SourceExists(_)
                | ApiError::ManagedByConfig(_)
                | ApiError::NotFound(_)
                | ApiError::PlaybookExists(_)
                | ApiError::BuiltinPlaybook(_)
                | ApiError::PlaybookInUse { .. }
                | ApiError::Internal(_)
                | ApiError::Unavailable
                | ApiError::RequestTimeout
                | ApiError::AddressNotAllowed(_)
                | ApiError::Unverified { .. }
                | ApiError::RateLimited(_) => {}
            }
        }
        all
    }

    #[test]
    fn error_code_schema_lists_exactly_the_api_error_codes() {
        let schema = serde_json::to_value(<super::ErrorCode as utoipa::PartialSchema>::schema()).unwrap();
        let listed: std::collections::BTreeSet<String> =
            schema["enum"].as_array().expect("ErrorCode is an enum").iter().map(|v| v.as_str().unwrap().to_string()).collect();
        let actual: std::collections::BTreeSet<String> = every_error().iter().map(|e| e.code().to_string()).collect();
        // The HTTP layer's own answers, every status it could give.
        let actual: std::collections::BTreeSet<String> =
            actual.into_iter().chain((400..=599).map(|s| super::framework_code(s).to_string())).collect();
        assert_eq!(listed, actual);
    }
}
