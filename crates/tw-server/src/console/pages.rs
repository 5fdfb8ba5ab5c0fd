//! The pages that are placeholders for now (incidents), and the console's 404.

use super::views::{Nav, layout};
use super::{Console, PageError};
use axum::http::StatusCode;
use maud::{Markup, html};

/// `GET /console/incidents`: not built yet; says where incidents are meanwhile.
pub async fn incidents(console: Console) -> Markup {
    layout(
        "Incidents",
        Nav::Incidents,
        Some(&console.viewer),
        html! {
            h1 { "Incidents" }
            div.panel {
                p { "The incident list is not in the console yet." }
                p { "Meanwhile: " code { "tw-cli incident list" } ", " code { "tw-cli incident get INC-2026-0001" } ", or " code { "GET /api/incidents" } "." }
            }
        },
    )
}

/// Any other path under `/console`.
pub async fn not_found() -> PageError {
    PageError::new(StatusCode::NOT_FOUND, "Not found", "There is no such console page.")
}
