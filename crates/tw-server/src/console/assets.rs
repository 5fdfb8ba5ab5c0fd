//! The console's static files, compiled into the binary: one stylesheet and one small script of
//! our own. Each is served under a name holding a digest of its content
//! (`/console/assets/app.<hash>.css`), so a browser may keep it for a year: a changed file is a
//! new name, and pages always name the current one.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// One embedded file under its content-hashed name.
pub struct Asset {
    /// `app.<12 hex digits>.css`.
    pub name: String,
    pub content_type: &'static str,
    pub body: &'static str,
}

impl Asset {
    fn new(stem: &str, ext: &str, content_type: &'static str, body: &'static str) -> Asset {
        let digest = Sha256::digest(body.as_bytes());
        Asset { name: format!("{stem}.{}.{ext}", &hex::encode(digest)[..12]), content_type, body }
    }

    /// The path pages link it by.
    pub fn path(&self) -> String {
        format!("/console/assets/{}", self.name)
    }
}

/// The stylesheet (light and dark themes by `prefers-color-scheme`).
pub static CSS: LazyLock<Asset> = LazyLock::new(|| Asset::new("app", "css", "text/css; charset=utf-8", include_str!("assets/app.css")));
/// The script: local times and copy buttons, an enhancement only (every page works without it).
pub static JS: LazyLock<Asset> = LazyLock::new(|| Asset::new("app", "js", "text/javascript; charset=utf-8", include_str!("assets/app.js")));

/// `GET /console/assets/{file}`: an embedded file by its hashed name, cacheable for a year;
/// any other name is 404 (an old hash included: its content is gone).
pub async fn serve(Path(file): Path<String>) -> Response {
    let Some(asset) = [&*CSS, &*JS].into_iter().find(|a| a.name == file) else {
        return (StatusCode::NOT_FOUND, [(header::CACHE_CONTROL, "no-store")], "No such asset").into_response();
    };
    let mut resp = asset.body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_a_digest_of_the_content() {
        assert!(CSS.name.starts_with("app.") && CSS.name.ends_with(".css") && CSS.name.len() == "app..css".len() + 12, "{}", CSS.name);
        assert_ne!(Asset::new("app", "css", "text/css", "a{}").name, Asset::new("app", "css", "text/css", "b{}").name);
        assert_eq!(JS.path(), format!("/console/assets/{}", JS.name));
    }
}
