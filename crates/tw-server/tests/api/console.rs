//! The console over HTTP, as a browser without JavaScript speaks to it: sign-in and its cookie,
//! the security headers, CSRF tokens, what a read key sees and may do, adding a source (the secret
//! and recipe shown once), the other source actions, sign-out, revocation, the assets, the
//! incident list and page with a re-run of triage, and the playbook pages.
//!
//! Browser tests (a real headless Chromium) are not here yet.

use super::*;
use reqwest::header::{HeaderMap, SET_COOKIE};

/// A browser: no redirects followed, cookies kept by hand (only the console's own).
struct Browser<'a> {
    app: &'a TestApp,
    /// The server it speaks to: the app's, or another instance's on the same store.
    base: String,
    http: reqwest::Client,
    session: Option<String>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string()).collect()
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().into_iter().find(|c| c.starts_with(&format!("{name}=")))
    }

    fn location(&self) -> Option<&str> {
        self.headers.get("location").map(|v| v.to_str().unwrap())
    }

    /// The first CSRF field's value.
    fn csrf(&self) -> String {
        between(&self.body, r#"name="csrf" value=""#, "\"").unwrap_or_else(|| panic!("no csrf field: {}", self.body))
    }
}

fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let from = text.find(start)? + start.len();
    Some(text[from..from + text[from..].find(end)?].to_string())
}

fn value_of(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_string()
}

fn form(fields: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(fields).unwrap()
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Browser<'a> {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { app, base: app.base.clone(), http, session: None }
    }

    /// The same browser (its cookie too) speaking to the server at `addr`.
    fn on(&self, addr: std::net::SocketAddr) -> Browser<'a> {
        Browser { app: self.app, base: format!("http://{addr}"), http: self.http.clone(), session: self.session.clone() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder, cookie: Option<String>) -> Page {
        let req = match cookie {
            Some(c) => req.header("cookie", c),
            None => req,
        };
        let resp = req.send().await.unwrap();
        Page { status: resp.status(), headers: resp.headers().clone(), body: resp.text().await.unwrap() }
    }

    async fn get(&self, path: &str) -> Page {
        let cookie = self.session.as_ref().map(|s| format!("tw_console={s}"));
        self.send(self.http.get(self.url(path)), cookie).await
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let cookie = self.session.as_ref().map(|s| format!("tw_console={s}"));
        let req = self.http.post(self.url(path)).header("content-type", "application/x-www-form-urlencoded").body(form(fields));
        self.send(req, cookie).await
    }

    /// Signs in with `key` (the form's token from its cookie, as a browser would); the answer.
    async fn try_sign_in(&mut self, key: &str, extra: &[(&str, &str)]) -> Page {
        let login = self.send(self.http.get(self.url("/console/login")), None).await;
        assert_eq!(login.status, 200, "{}", login.body);
        let token = value_of(&login.cookie("tw_console_login").expect("a sign-in token cookie"));
        assert_eq!(login.csrf(), token);
        let mut req = self
            .http
            .post(self.url("/console/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("csrf", &token), ("api_key", key)]));
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let page = self.send(req, Some(format!("tw_console_login={token}"))).await;
        if let Some(c) = page.cookie("tw_console") {
            self.session = Some(value_of(&c));
        }
        page
    }

    async fn sign_in(app: &'a TestApp, key: &str) -> Browser<'a> {
        let mut b = Browser::new(app);
        let page = b.try_sign_in(key, &[]).await;
        assert_eq!((page.status.as_u16(), page.location()), (303, Some("/console")), "{}", page.body);
        b
    }

    /// The CSRF token of this session (from the sources page).
    async fn csrf(&self) -> String {
        self.get("/console/sources").await.csrf()
    }
}

fn assert_locked_down(page: &Page) {
    let h = &page.headers;
    assert_eq!(
        h["content-security-policy"],
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    );
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-content-type-options"], "nosniff");
    if h.get("content-type").is_some_and(|v| v.to_str().unwrap().starts_with("text/html")) {
        assert_eq!(h["cache-control"], "no-store");
        assert!(!page.body.contains("<style") && !page.body.contains(" style="), "no inline style");
        assert!(page.body.matches("<script").count() == page.body.matches("<script src=\"/console/assets/").count(), "no inline script");
    }
}

#[tokio::test]
async fn an_admin_signs_in_with_a_locked_down_session_cookie() {
    let app = TestApp::spawn().await;
    let mut b = Browser::new(&app);
    let page = b.try_sign_in(&app.admin_key, &[]).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_locked_down(&page);
    let cookie = page.cookie("tw_console").expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.split("; ").any(|a| a == attr), "{attr} missing: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: no Secure ({cookie})");
    let id = value_of(&cookie);
    assert_eq!(id.len(), 64);
    assert!(!cookie.contains(&app.admin_key) && !app.admin_key.contains(&id), "the key is never in the cookie");
    assert!(page.cookie("tw_console_login").is_some_and(|c| c.contains("Max-Age=0")), "the sign-in token is spent");

    let page = b.get("/console").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_locked_down(&page);
    assert!(page.body.contains("Overview") && page.body.contains("Sign out"), "{}", page.body);
    let page = b.get("/console/sources").await;
    assert_eq!(page.status, 200);
    assert_locked_down(&page);
    assert!(page.body.contains("No sources yet") && page.body.contains("tw-cli webhook add"), "{}", page.body);

    // Without a session: to the sign-in page.
    let anonymous = Browser::new(&app);
    let page = anonymous.get("/console/sources").await;
    assert_eq!((page.status.as_u16(), page.location()), (303, Some("/console/login")));
    assert_locked_down(&page);
    let page = anonymous.get("/console/").await;
    assert_eq!((page.status.as_u16(), page.location()), (303, Some("/console")));
    let page = anonymous.get("/console/nope").await;
    assert_eq!(page.status, 404);
    assert_locked_down(&page);
}

/// Behind a trusted proxy that terminated TLS, the cookie is `Secure`; the same header from
/// anyone else changes nothing.
#[tokio::test]
async fn the_cookie_is_secure_when_a_trusted_proxy_says_https() {
    let app = TestApp::spawn_with(|c| {
        c.trusted_proxies =
            tw_server::client::TrustedProxies::new(vec![tw_server::client::TrustedProxies::parse_cidr("127.0.0.1").unwrap()]);
    })
    .await;
    let page = Browser::new(&app).try_sign_in(&app.admin_key, &[("x-forwarded-proto", "https")]).await;
    assert!(page.cookie("tw_console").unwrap().ends_with("; Secure"), "{:?}", page.set_cookies());
    let app = TestApp::spawn().await;
    let page = Browser::new(&app).try_sign_in(&app.admin_key, &[("x-forwarded-proto", "https")]).await;
    assert!(!page.cookie("tw_console").unwrap().contains("Secure"), "{:?}", page.set_cookies());
}

#[tokio::test]
async fn a_wrong_key_is_401_and_spends_the_failure_budget() {
    let app = TestApp::spawn_with(|c| {
        c.limits.auth_failure_burst = 2;
        c.limits.auth_failure_per_minute = 1;
    })
    .await;
    let mut b = Browser::new(&app);
    let page = b.try_sign_in("tw_not_a_real_key_at_all_000000000000", &[]).await;
    assert_eq!(page.status, 401, "{}", page.body);
    assert_locked_down(&page);
    assert!(page.body.contains("Invalid API key") && page.body.contains("name=\"api_key\""), "the form again: {}", page.body);
    assert!(page.cookie("tw_console").is_none());
    let metrics = app.metrics_text().await;
    assert!(metrics.contains(r#"tw_auth_failures_total{kind="api_key"} 1"#), "{metrics}");

    assert_eq!(b.try_sign_in("tw_wrong_again", &[]).await.status, 401);
    let page = b.try_sign_in(&app.admin_key, &[]).await;
    assert_eq!(page.status, 429, "over the budget even the right key waits: {}", page.body);
    assert!(page.headers.contains_key("retry-after"));
    assert!(page.cookie("tw_console").is_none());
}

#[tokio::test]
async fn a_read_key_sees_no_change_controls_and_its_forged_posts_are_refused() {
    let app = TestApp::spawn().await;
    app.add_source(json!({"source": "edr", "secret": "edr-secret-123456"})).await;
    let b = Browser::sign_in(&app, &app.read_key).await;
    let page = b.get("/console/sources").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("edr") && page.body.contains("read"), "{}", page.body);
    for control in ["Add source", "Delete", "Rotate secret", "Send test event", "Disable"] {
        assert!(!page.body.contains(control), "{control} shown to a read key: {}", page.body);
    }
    let csrf = page.csrf(); // the sign-out form's
    for (path, fields) in [
        ("/console/sources/edr/delete", vec![("csrf", csrf.as_str())]),
        ("/console/sources/edr/rotate", vec![("csrf", csrf.as_str())]),
        ("/console/sources/edr/enabled", vec![("csrf", csrf.as_str()), ("enabled", "false")]),
        ("/console/sources/edr/test", vec![("csrf", csrf.as_str())]),
        ("/console/sources/edr/settings", vec![("csrf", csrf.as_str()), ("mode", "async"), ("verification", "hmac")]),
        ("/console/sources", vec![("csrf", csrf.as_str()), ("source", "forged")]),
    ] {
        let page = b.post(path, &fields).await;
        assert_eq!(page.status, 403, "{path}: {}", page.body);
        assert!(page.body.contains("admin scope"), "refused for its scope, not its token: {}", page.body);
        assert_locked_down(&page);
    }
    assert_eq!(b.get("/console/sources/new").await.status, 403);
    assert_eq!(b.get("/console/sources/edr/delete").await.status, 403);
    assert_eq!(b.get("/console/sources/edr/settings").await.status, 403);
    assert!(!page.body.contains("/settings\""), "no settings link for a read key: {}", page.body);
    let (status, v) = app.admin(Method::GET, "/api/webhooks/edr", None).await;
    assert_eq!((status.as_u16(), &v["enabled"], &v["mode"]), (200, &json!(true), &json!("sync")), "nothing changed: {v}");
    let (_, v) = app.admin(Method::GET, "/api/webhooks/forged", None).await;
    assert_eq!(v["error"]["code"], "unknown_source");
}

#[tokio::test]
async fn a_post_without_the_csrf_token_is_refused() {
    let app = TestApp::spawn().await;
    let b = Browser::sign_in(&app, &app.admin_key).await;
    let csrf = b.csrf().await;
    let zeros = "0".repeat(64);
    for fields in [vec![("source", "mail")], vec![("csrf", zeros.as_str()), ("source", "mail")], vec![("csrf", ""), ("source", "mail")]] {
        let page = b.post("/console/sources", &fields).await;
        assert_eq!(page.status, 403, "{fields:?}: {}", page.body);
    }
    assert_eq!(b.post("/console/logout", &[]).await.status, 403);
    app.add_source(json!({"source": "edr", "secret": "edr-secret-123456"})).await;
    let page = b.post("/console/sources/edr/settings", &[("mode", "async"), ("verification", "hmac")]).await;
    assert_eq!(page.status, 403, "settings without the token: {}", page.body);
    assert_eq!(get_ok(&app, "/api/webhooks/edr").await["mode"], "sync");
    assert_eq!(b.get("/console/sources").await.status, 200, "a refused sign-out left the session alone");
    let (_, v) = app.admin(Method::GET, "/api/webhooks", None).await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1), "only edr, added by the API: {v}");
    // The sign-in form's own token is required too.
    let page = Browser::new(&app)
        .send(
            b.http
                .post(app.url("/console/login"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form(&[("api_key", &app.admin_key)])),
            None,
        )
        .await;
    assert_eq!(page.status, 403);
    assert!(page.cookie("tw_console").is_none());
    // With the right token the same POST works.
    let page = b.post("/console/sources", &[("csrf", &csrf), ("source", "mail")]).await;
    assert_eq!(page.status, 201, "{}", page.body);
}

#[tokio::test]
async fn adding_a_source_shows_its_secret_and_recipe_once() {
    let app = TestApp::spawn().await;
    let b = Browser::sign_in(&app, &app.admin_key).await;
    let csrf = b.csrf().await;
    let fields = [
        ("csrf", csrf.as_str()),
        ("source", "kibana"),
        ("verification", "header-token"),
        ("header", "X-Api-Key"),
        ("format", "elastic"),
        ("mode", "sync"),
    ];
    let page = b.post("/console/sources", &fields).await;
    assert_eq!(page.status, 201, "{}", page.body);
    assert_locked_down(&page);
    let url = format!("http://{}/api/webhooks/kibana", app.addr);
    assert!(page.body.contains(&url), "the URL from the Host the browser used: {}", page.body);
    assert!(page.body.contains(r#"<code data-copy="Header name">X-Api-Key</code>"#), "{}", page.body);
    let secret = between(&page.body, r#"<code data-copy="Header value">"#, "<").expect("the secret");
    assert!(secret.len() >= 32, "{secret}");

    // The secret works as the recipe says, and is never shown again.
    let resp =
        app.http.post(&url).header("x-api-key", &secret).header("content-type", "application/json").body(GENERIC).send().await.unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let page = b.get("/console/sources").await;
    assert!(
        page.body.contains("kibana") && page.body.contains("header-token (X-Api-Key)") && page.body.contains("elastic"),
        "{}",
        page.body
    );
    assert!(!page.body.contains(&secret));
    let (_, v) = app.admin(Method::GET, "/api/webhooks/kibana", None).await;
    assert_eq!((&v["format"], &v["delivery_count"]), (&json!("elastic"), &json!(1)), "{v}");
    // The change is in the audit log under the signed-in key.
    let (_, audit) = app.admin(Method::GET, "/api/audit", None).await;
    assert!(audit.to_string().contains("source.create"), "{audit}");

    // The API's rules, the API's messages: the form comes back with the values kept.
    let fields = [("csrf", csrf.as_str()), ("source", "Bad Name!"), ("verification", "basic")];
    let page = b.post("/console/sources", &fields).await;
    assert_eq!(page.status, 422, "{}", page.body);
    assert!(page.body.contains("<code>source</code>: ") && page.body.contains(r#"value="Bad Name!""#), "{}", page.body);
    let page = b.post("/console/sources", &[("csrf", csrf.as_str()), ("source", "kibana")]).await;
    assert_eq!(page.status, 409, "{}", page.body);
    assert!(page.body.contains("already exists"), "{}", page.body);
}

#[tokio::test]
async fn test_disable_rotate_and_delete_a_source() {
    let app = TestApp::spawn().await;
    let b = Browser::sign_in(&app, &app.admin_key).await;
    let csrf = b.csrf().await;
    assert_eq!(b.post("/console/sources", &[("csrf", &csrf), ("source", "mail")]).await.status, 201);

    let page = b.post("/console/sources/mail/test", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Passed") && !page.body.contains("failed"), "{}", page.body);

    let page = b.post("/console/sources/mail/enabled", &[("csrf", &csrf), ("enabled", "false")]).await;
    assert_eq!((page.status.as_u16(), page.location()), (303, Some("/console/sources")), "{}", page.body);
    let list = b.get("/console/sources").await.body;
    assert!(list.contains("disabled") && list.contains(">Enable<"), "{list}");
    let page = b.post("/console/sources/mail/test", &[("csrf", &csrf)]).await;
    assert!(page.body.contains("Failed") && page.body.contains("source_disabled"), "{}", page.body);

    let (_, before) = app.admin(Method::GET, "/api/webhooks/mail", None).await;
    let page = b.post("/console/sources/mail/rotate", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let secret = between(&page.body, r#"<code data-copy="Secret">"#, "<").expect("the new secret");
    assert!(page.body.contains("keeps verifying until"), "{}", page.body);
    let (_, after) = app.admin(Method::GET, "/api/webhooks/mail", None).await;
    assert_ne!(before["secret_fingerprint"], after["secret_fingerprint"]);
    assert!(!b.get("/console/sources").await.body.contains(&secret));

    let page = b.get("/console/sources/mail/delete").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Delete source") && page.body.contains(r#"action="/console/sources/mail/delete""#), "{}", page.body);
    let page = b.post("/console/sources/mail/delete", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let (_, v) = app.admin(Method::GET, "/api/webhooks/mail", None).await;
    assert_eq!(v["error"]["code"], "unknown_source");
    let page = b.post("/console/sources/mail/delete", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, 404, "{}", page.body);
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let app = TestApp::spawn().await;
    let b = Browser::sign_in(&app, &app.admin_key).await;
    let csrf = b.csrf().await;
    let page = b.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!((page.status.as_u16(), page.location()), (303, Some("/console/login")));
    assert!(page.cookie("tw_console").is_some_and(|c| c.contains("Max-Age=0")), "{:?}", page.set_cookies());
    // The old cookie opens nothing any more.
    let page = b.get("/console/sources").await;
    assert_eq!((page.status.as_u16(), page.location()), (303, Some("/console/login")));
    assert_eq!(b.post("/console/sources", &[("csrf", &csrf), ("source", "late")]).await.status, 303);
}

#[tokio::test]
async fn a_revoked_key_ends_its_sessions_at_the_next_request() {
    let app = TestApp::spawn().await;
    let (key, record) = new_key(app.store(), "temp", tw_store::Scope::Admin).await;
    let b = Browser::sign_in(&app, &key).await;
    assert_eq!(b.get("/console/sources").await.status, 200);
    app.store().revoke_api_key(&record.id, chrono::Utc::now(), None).await.unwrap();
    let page = b.get("/console/sources").await;
    assert_eq!((page.status.as_u16(), page.location()), (303, Some("/console/login")));
}

#[tokio::test]
async fn assets_have_hashed_names_and_are_cached_for_a_year() {
    let app = TestApp::spawn().await;
    let login = Browser::new(&app).get("/console/login").await;
    let css = between(&login.body, r#"<link rel="stylesheet" href=""#, "\"").unwrap();
    let js = between(&login.body, r#"<script src=""#, "\"").unwrap();
    assert!(css.starts_with("/console/assets/app.") && css.ends_with(".css"), "{css}");
    for (path, kind) in [(&css, "text/css"), (&js, "text/javascript")] {
        let page = Browser::new(&app).get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(page.headers["content-type"].to_str().unwrap().starts_with(kind));
        assert_eq!(page.headers["cache-control"], "public, max-age=31536000, immutable");
        assert_locked_down(&page);
        assert!(!page.body.is_empty());
    }
    assert!(Browser::new(&app).get(&css).await.body.contains("prefers-color-scheme: dark"));
    let page = Browser::new(&app).get("/console/assets/app.000000000000.css").await;
    assert_eq!(page.status, 404);
    assert_ne!(page.headers["cache-control"], "public, max-age=31536000, immutable");
}

/// Sessions live in the store: a cookie from one instance opens the console on another on the same
/// database; sign-out and a revoked key end the session on every instance.
#[tokio::test]
async fn a_session_is_shared_by_every_instance_on_the_store() {
    let app = TestApp::spawn().await;
    let second = app.second_instance().await;
    let (key, record) = new_key(app.store(), "shared", tw_store::Scope::Admin).await;
    let first = Browser::sign_in(&app, &key).await;
    let other = first.on(second.addr);
    let page = other.get("/console/sources").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.csrf(), first.csrf().await, "one session, one CSRF token, whichever instance draws the page");
    // A change posted to the other instance with the token from the first.
    let page = other.post("/console/sources", &[("csrf", &first.csrf().await), ("source", "shared-src")]).await;
    assert_eq!(page.status, 201, "{}", page.body);
    assert_eq!(get_ok(&app, "/api/webhooks/shared-src").await["source"], "shared-src");

    // Signing out on the other instance ends the session here too.
    let page = other.post("/console/logout", &[("csrf", &other.csrf().await)]).await;
    assert_eq!((page.status.as_u16(), page.location()), (303, Some("/console/login")));
    let page = first.get("/console/sources").await;
    assert_eq!((page.status.as_u16(), page.location()), (303, Some("/console/login")), "signed out everywhere");

    // A key revoked (here, through the first instance's store) ends its sessions on the other.
    let first = Browser::sign_in(&app, &key).await;
    let other = first.on(second.addr);
    assert_eq!(other.get("/console/sources").await.status, 200);
    app.store().revoke_api_key(&record.id, chrono::Utc::now(), None).await.unwrap();
    let page = other.get("/console/sources").await;
    assert_eq!((page.status.as_u16(), page.location()), (303, Some("/console/login")), "the revoked key's session ended");
    assert_eq!(first.get("/console/sources").await.location(), Some("/console/login"));
    second.shutdown().await;
}

/// A restart of the server on the same data dir keeps everyone signed in.
#[tokio::test]
async fn a_session_survives_a_restart() {
    let app = TestApp::spawn().await;
    let (key, _) = new_key(app.store(), "restart", tw_store::Scope::Read).await;
    let session = Browser::sign_in(&app, &key).await.session.clone().expect("a session cookie");
    let app = TestApp::spawn_in(app.stop().await, |_| {}).await;
    let mut b = Browser::new(&app);
    b.session = Some(session);
    let page = b.get("/console/sources").await;
    assert_eq!(page.status, 200, "still signed in after the restart: {}", page.body);
    let page = b.post("/console/logout", &[("csrf", &page.csrf())]).await;
    assert_eq!(page.status, 303);
    assert_eq!(b.get("/console/sources").await.location(), Some("/console/login"));
}

/// A session slides with use and ends after 30 minutes without a request, by the server's clock.
#[tokio::test]
async fn an_idle_session_expires() {
    let clock = std::sync::Arc::new(tw_server::state::ManualClock::at(now()));
    let c = clock.clone();
    let app = TestApp::spawn_with(move |cfg| cfg.clock = c).await;
    let b = Browser::sign_in(&app, &app.admin_key).await;
    for minutes in [20, 40, 60] {
        clock.set(now() + minutes * 60);
        assert_eq!(b.get("/console/sources").await.status, 200, "used every 20 minutes: alive at {minutes}");
    }
    clock.set(now() + 91 * 60);
    let page = b.get("/console/sources").await;
    assert_eq!((page.status.as_u16(), page.location()), (303, Some("/console/login")), "31 minutes idle");
    assert!(page.cookie("tw_console").is_some_and(|c| c.contains("Max-Age=0")));
}

const EDR_SECRET: &str = "edr-secret-123456";

/// A source `edr` with one accepted delivery (an incident) and one refused for its signature;
/// their rows as the API lists them (newest first).
async fn app_with_deliveries() -> (TestApp, Value) {
    let app = TestApp::spawn().await;
    app.add_source(json!({"source": "edr", "secret": EDR_SECRET})).await;
    let (status, v) = app.deliver("edr", EDR_SECRET, &support::generic_with_id("alert-1")).await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = app.deliver("edr", "not-the-secret-999", &support::generic_with_id("alert-2")).await;
    assert_eq!(status, 401, "{v}");
    let rows = poll(&app, "/api/webhooks/edr/events", "two delivery records", |v| v["data"].as_array().is_some_and(|d| d.len() == 2)).await;
    (app, rows["data"].clone())
}

#[tokio::test]
async fn the_deliveries_page_lists_accepted_and_refused_deliveries_without_secrets() {
    let (app, rows) = app_with_deliveries().await;
    let (refused, accepted) = (&rows[0], &rows[1]);
    let (refused_id, accepted_id) = (refused["request_id"].as_str().unwrap(), accepted["request_id"].as_str().unwrap());
    let code = refused["code"].as_str().unwrap();
    let b = Browser::sign_in(&app, &app.admin_key).await;
    let page = b.get("/console/deliveries").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_locked_down(&page);
    assert!(page.body.contains(r#"<a href="/console/deliveries" aria-current="page">Deliveries</a>"#), "{}", page.body);
    for text in [refused_id, accepted_id, code, ">ok<", ">failed<", " 401", " 201"] {
        assert!(page.body.contains(text), "{text}: {}", page.body);
    }
    assert!(page.body.find(refused_id) < page.body.find(accepted_id), "newest first");
    assert!(!page.body.contains(EDR_SECRET) && !page.body.contains("not-the-secret"), "a secret shown: {}", page.body);
    assert!(page.body.contains(r#"data-stream="/console/deliveries/stream?after="#), "{}", page.body);

    // Filters: status, code, source.
    let page = b.get("/console/deliveries?status=failed").await;
    assert!(page.body.contains(refused_id) && !page.body.contains(accepted_id), "{}", page.body);
    let page = b.get("/console/deliveries?status=ok&source=edr").await;
    assert!(!page.body.contains(refused_id) && page.body.contains(accepted_id), "{}", page.body);
    let page = b.get(&format!("/console/deliveries?code={code}")).await;
    assert!(page.body.contains(refused_id) && !page.body.contains(accepted_id), "{}", page.body);
    let page = b.get("/console/deliveries?code=no_such_code").await;
    assert!(page.body.contains("No delivery matches these filters"), "{}", page.body);
    assert_eq!(b.get("/console/deliveries?status=maybe").await.status, 422);
    assert_eq!(b.get("/console/deliveries?source=nope").await.status, 404);

    // The refused one's page: which check failed, never the secret or the signature.
    let page = b.get(&format!("/console/deliveries/{refused_id}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_locked_down(&page);
    assert!(page.body.contains(code) && page.body.contains("not verified"), "{}", page.body);
    assert!(!page.body.contains(EDR_SECRET) && !page.body.contains("not-the-secret") && !page.body.contains("sha256="), "{}", page.body);
    // The accepted one's page links to its incident.
    let number = accepted["incident_number"].as_str().unwrap();
    let page = b.get(&format!("/console/deliveries/{accepted_id}")).await;
    assert!(page.body.contains(&format!(r#"href="/console/incidents/{number}""#)), "{}", page.body);
    assert!(page.body.contains("&quot;alert-1&quot;"), "the payload, escaped: {}", page.body);
    assert_eq!(b.get("/console/deliveries/req_nope").await.status, 404);
}

/// Reads a server-sent-events response until `want` appears (or panics after 15 s).
async fn read_until(resp: &mut reqwest::Response, want: &str) -> String {
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains(want) {
                return;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(15), read).await.is_err() || !text.contains(want) {
        panic!("{want} not streamed: {text}");
    }
    text
}

#[tokio::test]
async fn the_live_stream_needs_a_session_and_sends_new_deliveries() {
    let (app, _) = app_with_deliveries().await;
    let anonymous = Browser::new(&app).get("/console/deliveries/stream").await;
    assert_eq!((anonymous.status.as_u16(), anonymous.location()), (303, Some("/console/login")));

    let b = Browser::sign_in(&app, &app.read_key).await;
    let open = || {
        b.http
            .get(app.url("/console/deliveries/stream?source=edr"))
            .header("cookie", format!("tw_console={}", b.session.as_ref().unwrap()))
            .send()
    };
    let mut resp = open().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let (status, v) = app.deliver("edr", EDR_SECRET, &support::generic_with_id("alert-live")).await;
    assert_eq!(status, 201, "{v}");
    let text = read_until(&mut resp, "</tr>").await;
    assert!(text.contains("event: delivery\ndata: <tr data-id=\"req_"), "{text}");
    assert!(text.contains(r#"<span class="badge on">ok</span> 201"#), "{text}");

    // Two streams per session at once; the third is refused until one closes.
    let second = open().await.unwrap();
    assert_eq!(second.status(), 200);
    let third = open().await.unwrap();
    assert_eq!(third.status(), 429, "{:?}", third.text().await);
    drop(second);
    drop(resp);
}

/// A delivery that arrives after the page was made and before its stream starts is sent once: the
/// stream's first look finds it newer than the page, and its polls must not find it again.
#[tokio::test]
async fn a_delivery_between_the_page_and_its_stream_is_streamed_once() {
    let (app, _) = app_with_deliveries().await;
    let b = Browser::sign_in(&app, &app.read_key).await;
    let page = b.get("/console/deliveries").await;
    let start = page.body.find("/console/deliveries/stream?").expect("the page's stream");
    let stream = page.body[start..].split('"').next().unwrap().replace("&amp;", "&");
    let (status, v) = app.deliver("edr", EDR_SECRET, &support::generic_with_id("alert-between")).await;
    assert_eq!(status, 201, "{v}");
    // The delivery record is written after the answer, in the writer's next batch.
    let mut recorded = false;
    for _ in 0..100 {
        if b.get("/console/deliveries").await.body.matches("<tr data-id=").count() > page.body.matches("<tr data-id=").count() {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(recorded, "the delivery was never recorded");
    let mut resp =
        b.http.get(app.url(&stream)).header("cookie", format!("tw_console={}", b.session.as_ref().unwrap())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // The row at once, then two polls of the stream (one every 2 s) with nothing new.
    let mut text = read_until(&mut resp, "</tr>").await;
    let _ = tokio::time::timeout(Duration::from_millis(4500), async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert_eq!(text.matches("event: delivery").count(), 1, "streamed more than once: {text}");
}

#[tokio::test]
async fn only_an_admin_reprocesses_dead_letters_and_a_forged_post_is_refused() {
    let (app, rows) = app_with_deliveries().await;
    let refused_id = rows[0]["request_id"].as_str().unwrap().to_string();
    let reader = Browser::sign_in(&app, &app.read_key).await;
    let page = reader.get(&format!("/console/deliveries/{refused_id}")).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("reprocess-dead-letters") && !page.body.contains("Reprocess"), "{}", page.body);
    let csrf = page.csrf();
    let page = reader.post("/console/sources/edr/reprocess-dead-letters", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("admin scope"), "refused for its scope, not its token: {}", page.body);
    assert_locked_down(&page);

    let admin = Browser::sign_in(&app, &app.admin_key).await;
    let page = admin.get(&format!("/console/deliveries/{refused_id}")).await;
    assert!(page.body.contains(r#"action="/console/sources/edr/reprocess-dead-letters""#), "{}", page.body);
    assert_eq!(admin.post("/console/sources/edr/reprocess-dead-letters", &[]).await.status, 403, "the CSRF token is required");
    let csrf = page.csrf();
    let page = admin.post("/console/sources/edr/reprocess-dead-letters", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("0 read: 0 became incidents"), "{}", page.body);
    let audit = get_ok(&app, "/api/audit").await;
    assert!(audit.to_string().contains("source.reprocess"), "{audit}");
}

#[tokio::test]
async fn the_overview_draws_the_days_counts_as_svg() {
    let fresh = TestApp::spawn().await;
    let b = Browser::sign_in(&fresh, &fresh.read_key).await;
    let page = b.get("/console").await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("<svg") && page.body.contains("add the first source"), "{}", page.body);

    let (app, _) = app_with_deliveries().await;
    let b = Browser::sign_in(&app, &app.read_key).await;
    let page = b.get("/console").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_locked_down(&page);
    assert!(page.body.contains("<svg"), "{}", page.body);
    for text in ["2 deliveries", "1 errors", "1 incidents", "edr: 2", "Incidents by severity", "Triage backlog now"] {
        assert!(page.body.contains(text), "{text}: {}", page.body);
    }
    assert!(page.body.contains(r#"<a href="/console/deliveries">Deliveries</a>"#), "the nav links to deliveries: {}", page.body);
    // The sources list: this hour's deliveries / errors and the day's line.
    let page = b.get("/console/sources").await;
    assert!(page.body.contains(r#"<td>2 / <span class="fail">1</span> <svg class="spark""#), "{}", page.body);
}

/// Delivers `body` to `source` (registered with `secret`); the incident's number.
async fn delivered(app: &TestApp, source: &str, secret: &str, body: &str) -> String {
    let (status, v) = app.deliver(source, secret, body).await;
    assert_eq!(status, 201, "{v}");
    v["incident_number"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_incident_list_shows_delivered_incidents_filters_and_pages() {
    let app = TestApp::spawn().await;
    let b = Browser::sign_in(&app, &app.read_key).await;
    let page = b.get("/console/incidents").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_locked_down(&page);
    assert!(page.body.contains("No incidents yet") && page.body.contains(r#"href="/console/sources""#), "{}", page.body);
    assert!(page.body.contains(r#"<a href="/console/incidents" aria-current="page">Incidents</a>"#), "{}", page.body);

    app.add_source(json!({"source": "edr", "secret": "edr-secret-123456"})).await;
    app.add_source(json!({"source": "mail", "secret": "mail-secret-123456"})).await;
    let edr = delivered(&app, "edr", "edr-secret-123456", CROWDSTRIKE).await;
    let mail = delivered(&app, "mail", "mail-secret-123456", GENERIC).await;
    let (_, api) = app.admin(Method::GET, &format!("/api/incidents/{mail}"), None).await;
    let severity = api["severity"].as_str().unwrap().to_string();

    let page = b.get("/console/incidents").await;
    assert_eq!(page.status, 200);
    for text in [format!(r#"href="/console/incidents/{edr}""#), format!(r#"href="/console/incidents/{mail}""#), format!("sev-{severity}")] {
        assert!(page.body.contains(&text), "{text}: {}", page.body);
    }
    assert!(page.body.contains("2 incidents") && page.body.contains("<time datetime="), "{}", page.body);

    // The GET form's fields, empty ones included, as a browser sends them.
    let page = b.get("/console/incidents?source=mail&severity=&status=").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&mail) && !page.body.contains(&edr), "{}", page.body);
    assert!(page.body.contains(r#"<option value="mail" selected>mail</option>"#), "{}", page.body);
    let page = b.get(&format!("/console/incidents?source=&severity={severity}&status=closed")).await;
    assert!(page.body.contains("No incidents match") && !page.body.contains(&mail), "{}", page.body);

    // One page at a time by the API's cursor, with the filters kept.
    let (_, first) = app.admin(Method::GET, "/api/incidents?per_page=1", None).await;
    let cursor = first["meta"]["next_cursor"].as_str().unwrap().to_string();
    let page = b.get(&format!("/console/incidents?cursor={cursor}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&edr) && !page.body.contains(&format!("/console/incidents/{mail}")), "{}", page.body);
    assert!(page.body.contains("First page"), "{}", page.body);

    // The API's own objections, on the page.
    let page = b.get("/console/incidents?severity=dire&cursor=nope").await;
    assert_eq!(page.status, 422, "{}", page.body);
    assert!(page.body.contains("<code>severity</code>: ") && page.body.contains("<code>cursor</code>: "), "{}", page.body);
}

#[tokio::test]
async fn the_incident_page_shows_entities_and_the_triage_and_an_admin_reruns_it() {
    let app = super::triage::spawn_triage(|_| {}).await;
    app.add_source(json!({"source": "mail", "secret": "mail-secret-123456", "auto_triage": true, "playbook": "phishing_triage"})).await;
    let number = delivered(&app, "mail", "mail-secret-123456", GENERIC).await;
    let path = format!("/api/incidents/{number}");
    let inc = poll_until(&app, &path, "triage completed", DEADLINE, |v| v["triage"]["status"] == "completed").await;
    let verdict = inc["triage"]["verdict"].as_str().unwrap().to_string();
    let entity = inc["entities"][0]["value"].as_str().unwrap().to_string();

    let admin = Browser::sign_in(&app, &app.admin_key).await;
    let page = admin.get(&format!("/console/incidents/{number}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_locked_down(&page);
    for text in [
        number.as_str(),
        "Suspicious login",
        entity.as_str(),
        "Entities (",
        verdict.as_str(),
        "/ 100",
        "Step trace (",
        "Findings (",
        "Recommended actions (",
        "Raw payload",
        "alert-123",
        "Re-run triage",
    ] {
        assert!(page.body.contains(text), "{text}: {}", page.body);
    }
    let (_, list) = app.admin(Method::GET, "/api/incidents", None).await;
    assert!(b_has_verdict(&admin, &verdict).await, "the list shows the verdict: {list}");

    let job = inc["triage"]["job_id"].clone();
    let csrf = page.csrf();
    let page = admin.post(&format!("/console/incidents/{number}/triage"), &[("csrf", &csrf), ("playbook", "")]).await;
    assert_eq!((page.status.as_u16(), page.location()), (303, Some(format!("/console/incidents/{number}").as_str())), "{}", page.body);
    let again =
        poll_until(&app, &path, "the re-run completed", DEADLINE, |v| v["triage"]["status"] == "completed" && v["triage"]["job_id"] != job)
            .await;
    assert_eq!(again["triage"]["playbook"], "phishing_triage", "{again}");
    let page = admin.post(&format!("/console/incidents/{number}/triage"), &[("csrf", &csrf), ("playbook", "no_such_playbook")]).await;
    assert_eq!(page.status, 422, "{}", page.body);
    assert!(page.body.contains("unknown playbook"), "{}", page.body);
    assert_eq!(admin.get("/console/incidents/INC-1999-0001").await.status, 404);

    // A read key sees the same incident without the button, and its forged POST changes nothing.
    let reader = Browser::sign_in(&app, &app.read_key).await;
    let page = reader.get(&format!("/console/incidents/{number}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&verdict) && page.body.contains(&entity), "{}", page.body);
    assert!(!page.body.contains("Re-run triage") && !page.body.contains("/triage\""), "{}", page.body);
    let csrf = page.csrf();
    let page = reader.post(&format!("/console/incidents/{number}/triage"), &[("csrf", &csrf)]).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("admin scope"), "refused for its scope, not its token: {}", page.body);
    assert_locked_down(&page);
    let (_, after) = app.admin(Method::GET, &path, None).await;
    assert_eq!(after["triage"]["job_id"], again["triage"]["job_id"], "no new job: {after}");
    // And an admin's POST without the token is refused too.
    assert_eq!(admin.post(&format!("/console/incidents/{number}/triage"), &[]).await.status, 403);
}

async fn b_has_verdict(b: &Browser<'_>, verdict: &str) -> bool {
    b.get("/console/incidents").await.body.contains(&format!("<td>{verdict}</td>"))
}

#[tokio::test]
async fn playbooks_are_listed_viewed_validated_and_tested() {
    let app = TestApp::spawn().await;
    let b = Browser::sign_in(&app, &app.read_key).await;
    let page = b.get("/console/playbooks").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_locked_down(&page);
    for text in [r#"href="/console/playbooks/phishing_triage""#, r#"href="/console/playbooks/malware_triage""#, "built-in"] {
        assert!(page.body.contains(text), "{text}: {}", page.body);
    }
    let page = b.get("/console/playbooks/phishing_triage").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let (_, api) = app.admin(Method::GET, "/api/playbooks/phishing_triage", None).await;
    let steps = api["steps"].as_array().unwrap().len();
    assert!(page.body.contains(&format!("Steps ({steps})")) && page.body.contains("<pre class=\"yaml\">"), "{}", page.body);
    assert_eq!(b.get("/console/playbooks/nope").await.status, 404);

    // A read key may validate (the API's scope), with every problem named by step and field.
    let csrf = page.csrf();
    let yaml = api["yaml"].as_str().unwrap().to_string();
    let page = b.post("/console/playbooks/phishing_triage/validate", &[("csrf", &csrf), ("yaml", &yaml)]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Valid: playbook"), "{}", page.body);
    let bad = "name: broken\nversion: '1'\ndescription: x\nsteps:\n  - name: first\n    action: no_such_action\n";
    let (_, api_errors) = app.admin(Method::POST, "/api/playbooks/validate", Some(json!({"yaml": bad}))).await;
    let page = b.post("/console/playbooks/phishing_triage/validate", &[("csrf", &csrf), ("yaml", bad)]).await;
    assert_eq!(page.status, 422, "{}", page.body);
    assert!(page.body.contains("Not valid:"), "{}", page.body);
    let details = api_errors["error"]["details"].as_array().unwrap_or_else(|| panic!("{api_errors}"));
    assert!(details.iter().any(|d| d["field"].as_str().is_some_and(|f| f.starts_with("steps."))), "{api_errors}");
    for d in details {
        let field = d["field"].as_str().unwrap();
        assert!(page.body.contains(&format!("<code>{field}</code>: ")), "{field}: {}", page.body);
    }
    assert!(page.body.contains("no_such_action"), "the edited copy is kept: {}", page.body);
    assert_eq!(b.post("/console/playbooks/phishing_triage/validate", &[("yaml", bad)]).await.status, 403, "CSRF");

    // And test: the alert and the outcome, nothing stored.
    let page = b.post("/console/playbooks/phishing_triage/test", &[("csrf", &csrf), ("payload", GENERIC), ("format", "auto")]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Suspicious login") && page.body.contains("/ 100") && page.body.contains("Step trace ("), "{}", page.body);
    let page = b.post("/console/playbooks/phishing_triage/test", &[("csrf", &csrf), ("payload", "{not json")]).await;
    assert_eq!(page.status, 422, "{}", page.body);
    assert!(page.body.contains("<code>payload</code>: is not JSON"), "{}", page.body);
    let (_, v) = app.admin(Method::GET, "/api/incidents", None).await;
    assert_eq!(v["meta"]["total"], 0, "{v}");
}

/// A playbook test from the console spends the key's test budget, as the API's does.
#[tokio::test]
async fn playbook_tests_are_rate_limited_per_key() {
    let app = TestApp::spawn_with(|c| {
        c.limits.playbook_test_burst = 1;
        c.limits.playbook_test_per_minute = 1;
    })
    .await;
    let b = Browser::sign_in(&app, &app.read_key).await;
    let csrf = b.csrf().await;
    let fields = [("csrf", csrf.as_str()), ("payload", GENERIC)];
    assert_eq!(b.post("/console/playbooks/phishing_triage/test", &fields).await.status, 200);
    let page = b.post("/console/playbooks/phishing_triage/test", &fields).await;
    assert_eq!(page.status, 429, "{}", page.body);
    assert!(page.headers.contains_key("retry-after"));
}

/// Console forms are bounded: anyone may post to the sign-in form, so a large body is refused
/// before it is read, as is an oversized form to any page; the playbook forms take a pasted test
/// payload as large as the API's.
#[tokio::test]
async fn console_form_bodies_are_bounded() {
    let app = TestApp::spawn().await;
    let big = format!("api_key={}", "a".repeat(64 * 1024));
    let resp = app
        .http
        .post(app.url("/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let b = Browser::sign_in(&app, &app.admin_key).await;
    let csrf = b.get("/console/sources/new").await.csrf();
    let page = b.post("/console/sources", &[("csrf", &csrf), ("source", &"a".repeat(64 * 1024))]).await;
    assert_eq!(page.status, 413);
    let payload = format!(r#"{{"event_type":"x","data":{{"details":{{"note":"{}"}}}}}}"#, "b".repeat(100 * 1024));
    let page = b.post("/console/playbooks/phishing_triage/test", &[("csrf", &csrf), ("payload", &payload)]).await;
    assert_eq!(page.status, 200, "a 100 KiB payload is tested: {}", page.body);
}

/// The settings page saves every setting `PATCH /api/webhooks/{source}` takes, through the API's
/// update (so its audit record), and brings the API's field errors back by their field with the
/// input kept and nothing changed.
#[tokio::test]
async fn an_admin_changes_every_setting_of_a_source_on_its_settings_page() {
    let app = TestApp::spawn().await;
    app.add_source(json!({"source": "edr", "secret": "edr-secret-123456"})).await;
    let b = Browser::sign_in(&app, &app.admin_key).await;
    assert!(b.get("/console/sources").await.body.contains(r#"href="/console/sources/edr/settings""#));
    let page = b.get("/console/sources/edr/settings").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_locked_down(&page);
    assert!(page.body.contains(r#"action="/console/sources/edr/settings""#), "{}", page.body);
    assert!(page.body.contains(r#"<option value="malware_triage">malware_triage</option>"#), "the playbooks to pick: {}", page.body);
    let csrf = page.csrf();
    let fields = [
        ("csrf", csrf.as_str()),
        // `enabled` unticked: not sent.
        ("auto_triage", "true"),
        ("playbook", "malware_triage"),
        ("format", "crowdstrike"),
        ("mode", "async"),
        ("verification", "header-token"),
        ("header", "X-Edr-Token"),
        ("secret", ""),
        ("severity_mapping", "sev5 = critical\r\nsev1 = low\r\n"),
        ("allowed_ips", "192.0.2.0/24\r\n10.1.0.0/16"),
        ("rate_per_second", "2.5"),
        ("rate_burst", "10"),
        ("mapping", r#"{"title": "/alert/name"}"#),
        ("timestamp_tolerance_secs", "600"),
        ("max_body_bytes", "4096"),
    ];
    let page = b.post("/console/sources/edr/settings", &fields).await;
    assert_eq!((page.status.as_u16(), page.location()), (303, Some("/console/sources")), "{}", page.body);
    let v = get_ok(&app, "/api/webhooks/edr").await;
    assert_eq!(
        (
            &v["enabled"],
            &v["auto_triage"],
            &v["playbook"],
            &v["format"],
            &v["mode"],
            &v["verification"],
            &v["severity_mapping"],
            &v["allowed_ips"],
            &v["rate_limit"],
            &v["mapping"]["title"],
            &v["timestamp_tolerance_secs"],
            &v["max_body_bytes"]
        ),
        (
            &json!(false),
            &json!(true),
            &json!("malware_triage"),
            &json!("crowdstrike"),
            &json!("async"),
            &json!({"scheme": "header-token", "header": "x-edr-token"}),
            &json!({"sev5": "critical", "sev1": "low"}),
            &json!(["192.0.2.0/24", "10.1.0.0/16"]),
            &json!({"per_second": 2.5, "burst": 10}),
            &json!("/alert/name"),
            &json!(600),
            &json!(4096)
        ),
        "{v}"
    );
    let (_, audit) = app.admin(Method::GET, "/api/audit?action=source.update", None).await;
    let record = &audit["data"][0];
    assert_eq!((&record["target"], &record["after"]["auto_triage"]), (&json!("edr"), &json!(true)), "{audit}");
    // The page shows what is stored now.
    let page = b.get("/console/sources/edr/settings").await;
    assert!(page.body.contains("sev5 = critical") && page.body.contains(r#"value="X-Edr-Token""#), "{}", page.body);

    // The API's objections, each under its field, the input kept, nothing changed.
    let mut bad = fields.to_vec();
    bad.retain(|(k, _)| !matches!(*k, "allowed_ips" | "rate_per_second" | "playbook"));
    bad.extend([("allowed_ips", "192.0.2.0/24\r\nnot-an-ip"), ("rate_per_second", "-1"), ("playbook", "")]);
    let page = b.post("/console/sources/edr/settings", &bad).await;
    assert_eq!(page.status, 422, "{}", page.body);
    assert_locked_down(&page);
    for text in [
        "<code>allowed_ips[1]</code>: ",
        "<code>rate_limit.per_second</code>: ",
        "is required when auto_triage is true",
        "192.0.2.0/24\r\nnot-an-ip</textarea>",
        r#"value="-1""#,
    ] {
        assert!(page.body.contains(text), "{text}: {}", page.body);
    }
    let field_error = page.body.find(r#"<span class="field-error" role="alert"><code>allowed_ips[1]</code>"#).expect("by its field");
    assert!(
        page.body[..field_error].rfind("name=\"allowed_ips\"") > page.body[..field_error].rfind("name=\"mapping\""),
        "under allowed_ips"
    );
    assert_eq!(get_ok(&app, "/api/webhooks/edr").await, v, "nothing changed");
}

#[tokio::test]
async fn a_config_source_shows_it_is_managed_there_and_its_settings_cannot_be_posted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhook_config.yaml");
    std::fs::write(&path, "sources:\n  edr:\n    secret: \"config-secret-123456\"\n").unwrap();
    let app = TestApp::spawn_with(|cfg| cfg.webhook_config = Some(path.clone())).await;
    let b = Browser::sign_in(&app, &app.admin_key).await;
    let page = b.get("/console/sources/edr/settings").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("defined in the config file") && !page.body.contains("Save settings"), "{}", page.body);
    let csrf = page.csrf();
    let page = b.post("/console/sources/edr/settings", &[("csrf", &csrf), ("mode", "async")]).await;
    assert_eq!(page.status, 409, "{}", page.body);
    assert_eq!(get_ok(&app, "/api/webhooks/edr").await["mode"], "sync");
}

/// The rotate form's grace period reaches the API: none ends the old secret at once, 7 days keeps it.
#[tokio::test]
async fn rotation_keeps_the_old_secret_for_the_chosen_grace_period() {
    let app = TestApp::spawn().await;
    app.add_source(json!({"source": "mail", "secret": "mail-secret-123456"})).await;
    let b = Browser::sign_in(&app, &app.admin_key).await;
    let list = b.get("/console/sources").await;
    assert!(list.body.contains(r#"<option value="86400" selected>24 hours</option>"#), "{}", list.body);
    let csrf = list.csrf();
    let page = b.post("/console/sources/mail/rotate", &[("csrf", &csrf), ("grace_period_secs", "0")]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("no longer verifies"), "{}", page.body);
    let (status, _) = app.deliver("mail", "mail-secret-123456", GENERIC).await;
    assert_eq!(status, 401, "no grace: the old secret is refused");
    let secret = between(&page.body, r#"<code data-copy="Secret">"#, "<").expect("the new secret");
    let page = b.post("/console/sources/mail/rotate", &[("csrf", &csrf), ("grace_period_secs", "604800")]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let v = get_ok(&app, "/api/webhooks/mail").await;
    let until = chrono::DateTime::parse_from_rfc3339(v["previous_secret_expires_at"].as_str().unwrap()).unwrap();
    let days = (until.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
    assert!((167..=168).contains(&days), "{v}");
    let (status, _) = app.deliver("mail", &secret, GENERIC).await;
    assert_eq!(status, 201, "the previous secret verifies during its grace");
    let page = b.post("/console/sources/mail/rotate", &[("csrf", &csrf), ("grace_period_secs", "forever")]).await;
    assert_eq!(page.status, 422, "{}", page.body);
    assert!(page.body.contains("grace_period_secs"), "{}", page.body);
}

/// The Number and Severity headers sort the list (links, the filters kept), through the API's
/// `sort`; the next page keeps the order.
#[tokio::test]
async fn the_incident_list_sorts_by_its_column_headers_keeping_the_filters() {
    let app = TestApp::spawn().await;
    app.add_source(json!({"source": "edr", "secret": EDR_SECRET})).await;
    let sev = |id: &str, s: &str| {
        json!({"event_type": "security_alert", "data": {"alert_id": id, "severity": s, "details": {"title": id}}}).to_string()
    };
    let low = delivered(&app, "edr", EDR_SECRET, &sev("a1", "low")).await;
    let critical = delivered(&app, "edr", EDR_SECRET, &sev("a2", "critical")).await;
    let medium = delivered(&app, "edr", EDR_SECRET, &sev("a3", "medium")).await;
    let b = Browser::sign_in(&app, &app.read_key).await;
    let order = |body: &str, numbers: &[&String]| {
        let at: Vec<usize> =
            numbers.iter().map(|n| body.find(&format!(r#"href="/console/incidents/{n}""#)).unwrap_or(usize::MAX)).collect();
        at.windows(2).all(|w| w[0] < w[1] && w[1] != usize::MAX)
    };
    let page = b.get("/console/incidents?source=edr&status=open").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(order(&page.body, &[&medium, &critical, &low]), "newest first: {}", page.body);
    let severity_link = r#"href="/console/incidents?source=edr&amp;status=open&amp;sort=severity""#;
    assert!(page.body.contains(severity_link), "{}", page.body);
    assert!(page.body.contains(r#"href="/console/incidents?source=edr&amp;status=open&amp;sort=oldest""#), "{}", page.body);

    let page = b.get("/console/incidents?source=edr&status=open&sort=severity").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(order(&page.body, &[&critical, &medium, &low]), "most severe first: {}", page.body);
    assert!(
        page.body
            .contains(r#"aria-sort="descending"><a class="sort" href="/console/incidents?source=edr&amp;status=open&amp;sort=severity""#),
        "{}",
        page.body
    );
    let page = b.get("/console/incidents?sort=oldest").await;
    assert!(order(&page.body, &[&low, &critical, &medium]), "oldest first: {}", page.body);

    // The next page goes on in the same order (the API's cursor carries it).
    let (_, first) = app.admin(Method::GET, "/api/incidents?per_page=1&sort=severity", None).await;
    let cursor = first["meta"]["next_cursor"].as_str().unwrap().to_string();
    assert!(cursor.starts_with("critical-"), "{cursor}");
    let page = b.get(&format!("/console/incidents?sort=severity&cursor={cursor}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(order(&page.body, &[&medium, &low]) && !page.body.contains(&format!("/console/incidents/{critical}\"")), "{}", page.body);
    let page = b.get("/console/incidents?sort=sideways").await;
    assert_eq!(page.status, 422, "{}", page.body);
    assert!(page.body.contains("<code>sort</code>: "), "{}", page.body);
}

/// Requests the HTTP layer refuses before a console handler runs answer the console's HTML error
/// page with the right status (and its security headers); the API keeps its JSON shape.
#[tokio::test]
async fn framework_refusals_under_the_console_are_html_pages() {
    let app = TestApp::spawn().await;
    let b = Browser::sign_in(&app, &app.admin_key).await;
    let html = |page: &Page| page.headers["content-type"].to_str().unwrap().starts_with("text/html");

    let page = b.post("/console/incidents", &[("csrf", "x")]).await;
    assert_eq!(page.status, 405, "{}", page.body);
    assert!(html(&page) && page.body.contains("Not allowed here") && page.body.contains("<html"), "{}", page.body);
    assert!(page.headers["allow"].to_str().unwrap().contains("GET"), "Allow kept");
    assert_locked_down(&page);

    let page = b.get("/console/sources/%FF%FE/settings").await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(html(&page) && page.body.contains("Bad request"), "{}", page.body);
    assert_locked_down(&page);

    let big = "a".repeat(64 * 1024);
    let page = b.post("/console/sources", &[("csrf", "x"), ("source", &big)]).await;
    assert_eq!(page.status, 413, "{}", page.body);
    assert!(html(&page) && page.body.contains("Too large"), "{}", page.body);
    assert_locked_down(&page);

    // The API answers the same refusals in its JSON shape.
    let resp = app.http.post(app.url("/api/incidents")).bearer_auth(&app.admin_key).send().await.unwrap();
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let (status, v) = into_json(resp).await;
    assert_error(status, &v, 405, "method_not_allowed");
}

/// A delivery that made an incident shows the incident's normalized alert beside its payload.
#[tokio::test]
async fn the_delivery_page_shows_the_normalized_alert_of_its_incident() {
    let (app, rows) = app_with_deliveries().await;
    let (refused, accepted) = (&rows[0], &rows[1]);
    let number = accepted["incident_number"].as_str().unwrap();
    let (_, incident) = app.admin(Method::GET, &format!("/api/incidents/{number}"), None).await;
    let b = Browser::sign_in(&app, &app.read_key).await;
    let page = b.get(&format!("/console/deliveries/{}", accepted["request_id"].as_str().unwrap())).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let alert = page.body.find("<h2>Normalized alert</h2>").unwrap_or_else(|| panic!("no normalized alert: {}", page.body));
    let shown = &page.body[alert..];
    for text in [
        incident["title"].as_str().unwrap().to_string(),
        format!("sev-{}", incident["severity"].as_str().unwrap()),
        format!("<code>{}</code>", incident["external_id"].as_str().unwrap()),
        format!(r#"href="/console/incidents/{number}""#),
    ] {
        assert!(shown.contains(&text), "{text}: {shown}");
    }
    assert!(page.body.contains("<h2>Payload</h2>") && page.body.contains("alert-1"), "{}", page.body);
    let page = b.get(&format!("/console/deliveries/{}", refused["request_id"].as_str().unwrap())).await;
    assert!(!page.body.contains("Normalized alert"), "a refused delivery made none: {}", page.body);
}
