//! The console's own error pages: its 404, and the HTML answer for a request the HTTP layer
//! refused before any console handler ran (a wrong method, a form body over the limit or not a
//! form, a path that cannot be read), which the API answers in its JSON shape.

use super::PageError;
use axum::http::StatusCode;

/// Any other path under `/console`.
pub async fn not_found() -> PageError {
    PageError::new(StatusCode::NOT_FOUND, "Not found", "There is no such console page.")
}

/// Whether `path` is the console's (its error pages are HTML for people, not the API's JSON).
pub fn owns(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// What a person is told about a request the HTTP layer refused with `status` (`detail`: the
/// layer's own words, shown after ours).
pub fn refused(status: StatusCode, detail: &str) -> PageError {
    let (title, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => ("Not allowed here", "This console address does not take that kind of request."),
        StatusCode::PAYLOAD_TOO_LARGE => ("Too large", "The form sent more than this page accepts: shorten it and send it again."),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("Not a form", "This page takes a form sent by the browser."),
        StatusCode::NOT_FOUND => ("Not found", "There is no such console page."),
        s if s.is_server_error() => ("Server error", "The server could not answer; try again."),
        _ => ("Bad request", "The browser sent a request this page cannot read: go back, reload the page and try again."),
    };
    let detail = detail.trim();
    let message = if detail.is_empty() { message.to_string() } else { format!("{message} ({detail})") };
    PageError::new(status, title, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    #[test]
    fn console_paths_are_told_from_the_apis() {
        assert!(owns("/console") && owns("/console/sources/edr/settings"));
        assert!(!owns("/consoles") && !owns("/api/console") && !owns("/"));
    }

    #[tokio::test]
    async fn a_refusal_is_an_html_page_with_its_status_and_the_detail_escaped() {
        let resp = refused(StatusCode::PAYLOAD_TOO_LARGE, "length limit <exceeded>").into_response();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let html = String::from_utf8_lossy(&body);
        assert!(html.contains("Too large") && html.contains("length limit &lt;exceeded&gt;"), "{html}");
    }
}
