//! The console's 404.

use super::PageError;
use axum::http::StatusCode;

/// Any other path under `/console`.
pub async fn not_found() -> PageError {
    PageError::new(StatusCode::NOT_FOUND, "Not found", "There is no such console page.")
}
