//! The ids a request is known by. Here rather than in the routes because the audit log's
//! [`crate::audit::Admin`] records them too.

use axum::http::HeaderMap;

/// A request's ids: the server's own, unique, which a stored delivery is known by, and the
/// sender's `X-Request-Id` when it sent a sane one (its word: any sender may copy any id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIds {
    /// `req_<uuid v7>`.
    pub own: String,
    pub sender: Option<String>,
}

impl RequestIds {
    /// A new own id, and the sender's from `headers`.
    pub fn of(headers: &HeaderMap) -> RequestIds {
        let sender = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_string);
        RequestIds { own: format!("req_{}", uuid::Uuid::now_v7().simple()), sender }
    }

    /// What the response's `X-Request-Id` carries: the sender's own id echoed, else the server's.
    pub fn echoed(&self) -> &str {
        self.sender.as_deref().unwrap_or(&self.own)
    }
}
