//! The overview (a placeholder for its charts for now), and the console's 404.

use super::views::{Nav, layout};
use super::{Console, PageError};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use maud::{Markup, html};

/// `GET /console`: what there is, in numbers, and where to go next.
pub async fn overview(State(state): State<AppState>, console: Console) -> Result<Markup, PageError> {
    let sources = state.store.list_sources().await.map_err(|e| console.error(crate::ApiError::from(e)))?;
    let enabled = sources.iter().filter(|s| s.settings.enabled).count();
    let deliveries: u64 = sources.iter().map(|s| s.delivery_count).sum();
    let errors: u64 = sources.iter().map(|s| s.error_count).sum();
    Ok(layout(
        "Overview",
        Nav::Overview,
        Some(&console.viewer),
        html! {
            h1 { "Overview" }
            div.panel {
                @if sources.is_empty() {
                    p { "No sources yet. " a href="/console/sources" { "Add the first source" } " to start receiving alerts." }
                } @else {
                    p {
                        a href="/console/sources" { (sources.len()) " sources" } " (" (enabled) " enabled): "
                        (deliveries) " deliveries, " (errors) " errors in all."
                    }
                }
                p.muted { "Charts of the last 24 hours (deliveries and errors per source, incidents by severity, verdicts, the triage backlog) are not built yet." }
            }
        },
    ))
}

/// Any other path under `/console`.
pub async fn not_found() -> PageError {
    PageError::new(StatusCode::NOT_FOUND, "Not found", "There is no such console page.")
}
