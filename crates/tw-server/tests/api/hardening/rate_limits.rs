//! Rate limits: a source's own `rate_limit` (429 `rate_limited` with `Retry-After`, verified
//! deliveries only), the budget of failed verifications and wrong API keys per client address
//! (behind a trusted proxy, per `X-Forwarded-For`), and the per-key limit of playbook tests.
//! Before them, 2,000 bad signatures in a row got 2,000 401s and 500 wrong API keys 500 401s.
//!
//! The in-process servers' clocks stand still ([`ManualClock`]): a bucket refills only when a test moves the
//! clock, so no test depends on how fast it runs.
use crate::support::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use tw_server::state::ManualClock;

const SECRET: &str = "rate-limit-secret-0123456789";
/// Another source's (each source needs its own secret).
const OTHER_SECRET: &str = "other-source-secret-0123456789";

/// One answer: status, `Retry-After` when there is one, JSON body.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

impl Answer {
    async fn of(resp: reqwest::Response) -> Answer {
        let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let (status, body) = into_json(resp).await;
        Answer { status, retry_after, body }
    }

    /// A 429 in the spec's error shape with a whole-second Retry-After of at least 1; returns it.
    fn assert_rate_limited(&self) -> u64 {
        assert_eq!(self.status, StatusCode::TOO_MANY_REQUESTS, "{self:?}");
        assert_eq!(self.body["error"]["code"], "rate_limited", "{self:?}");
        assert!(self.body["error"]["message"].as_str().is_some_and(|m| m.contains("retry after")), "{self:?}");
        let secs: u64 = self.retry_after.as_deref().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no Retry-After: {self:?}"));
        assert!(secs >= 1, "{self:?}");
        secs
    }
}

/// Posts `body` signed with `secret` at `ts`, as the client at `from` behind the trusted proxy
/// (127.0.0.1) when `from` is given.
async fn deliver_from(app: &TestApp, from: Option<&str>, source: &str, secret: &str, ts: i64, body: &str) -> Answer {
    let mut req = signed_request(&app.http, &app.base, source, secret, ts, body);
    if let Some(ip) = from {
        req = req.header("x-forwarded-for", ip);
    }
    Answer::of(req.send().await.expect("request")).await
}

/// An API request with `key` ("" for none) from `from` behind the trusted proxy.
async fn api_from(app: &TestApp, from: Option<&str>, key: &str, method: Method, path: &str, body: Option<Value>) -> Answer {
    let mut req = app.http.request(method, app.url(path));
    if !key.is_empty() {
        req = req.bearer_auth(key);
    }
    if let Some(ip) = from {
        req = req.header("x-forwarded-for", ip);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    Answer::of(req.send().await.expect("request")).await
}

fn alert(id: &str) -> String {
    json!({"event_type": "security_alert", "data": {"alert_id": id, "severity": "high"}}).to_string()
}

/// A server whose clock stands still at `t0`, trusting 127.0.0.1 as a proxy, with `tweak`.
async fn app_at(t0: i64, tweak: impl FnOnce(&mut tw_server::ServerConfig)) -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::at(t0));
    let c = clock.clone();
    let app = TestApp::spawn_with(move |cfg| {
        cfg.clock = c;
        cfg.trusted_proxies = tw_server::client::TrustedProxies::new(vec!["127.0.0.1/32".parse().unwrap()]);
        tweak(cfg);
    })
    .await;
    (app, clock)
}

#[tokio::test]
async fn a_source_over_its_rate_limit_gets_429_with_retry_after_until_its_bucket_refills() {
    let t0 = now();
    let (app, clock) = app_at(t0, |_| {}).await;
    let v = app.add_source(json!({"source": "edr", "secret": SECRET, "rate_limit": {"per_second": 1, "burst": 3}})).await;
    assert_eq!(v["rate_limit"], json!({"per_second": 1.0, "burst": 3}), "{v}");

    // Forgeries do not spend the sender's budget: only verified deliveries count.
    for i in 0..10 {
        let a = deliver_from(&app, None, "edr", "forged-secret-0123456789", t0, &alert(&format!("forged-{i}"))).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{a:?}");
    }
    for i in 0..3 {
        let a = deliver_from(&app, None, "edr", SECRET, t0, &alert(&format!("burst-{i}"))).await;
        assert_eq!(a.status, StatusCode::CREATED, "delivery {i}: {a:?}");
    }
    let over = deliver_from(&app, None, "edr", SECRET, t0, &alert("over")).await;
    assert_eq!(over.assert_rate_limited(), 1);
    assert!(over.body["error"]["message"].as_str().unwrap().contains("rate limit"), "{over:?}");
    // Another source is not affected.
    app.add_source(json!({"source": "mail", "secret": OTHER_SECRET})).await;
    assert_eq!(deliver_from(&app, None, "mail", OTHER_SECRET, t0, &alert("other-source")).await.status, StatusCode::CREATED);

    // After the Retry-After, one more (one second's refill), then 429 again.
    clock.set(t0 + 1);
    assert_eq!(deliver_from(&app, None, "edr", SECRET, t0 + 1, &alert("after-wait")).await.status, StatusCode::CREATED);
    deliver_from(&app, None, "edr", SECRET, t0 + 1, &alert("over-again")).await.assert_rate_limited();

    // A changed limit starts a full bucket at once.
    let (s, v) = app.admin(Method::PATCH, "/api/webhooks/edr", Some(json!({"rate_limit": {"per_second": 1, "burst": 5}}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for i in 0..5 {
        let a = deliver_from(&app, None, "edr", SECRET, t0 + 1, &alert(&format!("raised-{i}"))).await;
        assert_eq!(a.status, StatusCode::CREATED, "after raising the burst, delivery {i}: {a:?}");
    }
    deliver_from(&app, None, "edr", SECRET, t0 + 1, &alert("raised-over")).await.assert_rate_limited();
    // No limit again: unlimited, as by default.
    let (s, v) = app.admin(Method::PATCH, "/api/webhooks/edr", Some(json!({"rate_limit": null}))).await;
    assert_eq!((s, &v["rate_limit"]), (StatusCode::OK, &Value::Null), "{v}");
    for i in 0..20 {
        let a = deliver_from(&app, None, "edr", SECRET, t0 + 1, &alert(&format!("unlimited-{i}"))).await;
        assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    }

    assert_eq!(metric(&app, "tw_rate_limited_total", &[("reason", "source")]).await, 3.0);
    assert_eq!(metric(&app, "webhook_errors_total", &[("source", "edr"), ("code", "rate_limited")]).await, 3.0);
    assert_eq!(metric(&app, "tw_auth_failures_total", &[("kind", "signature")]).await, 10.0);
}

#[tokio::test]
async fn bad_rate_limits_are_refused_with_the_field_named() {
    let (app, _clock) = app_at(now(), |_| {}).await;
    for (limit, field) in [
        (json!({"per_second": 0, "burst": 3}), "rate_limit.per_second"),
        (json!({"per_second": -1}), "rate_limit.per_second"),
        (json!({"per_second": "fast"}), "rate_limit.per_second"),
        (json!({"per_second": 1, "burst": 0}), "rate_limit.burst"),
        (json!({"per_second": 1, "burst": 1.5}), "rate_limit.burst"),
        (json!({"burst": 3}), "rate_limit.per_second"),
        (json!({"per_second": 1, "brust": 3}), "rate_limit.brust"),
        (json!(10), "rate_limit"),
    ] {
        let (s, v) = app.admin(Method::POST, "/api/webhooks", Some(json!({"source": "edr", "secret": SECRET, "rate_limit": limit}))).await;
        assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_error")), "{limit}: {v}");
        assert_eq!(v["error"]["details"][0]["field"], field, "{limit}: {v}");
    }
    // `burst` defaults to one second's worth; numbers may come as strings like every setting.
    let v = app.add_source(json!({"source": "edr", "secret": SECRET, "rate_limit": {"per_second": "2.5"}})).await;
    assert_eq!(v["rate_limit"], json!({"per_second": 2.5, "burst": 3}), "{v}");
    let (_, v) = app.admin(Method::GET, "/api/webhooks", None).await;
    assert_eq!(v["data"][0]["rate_limit"], json!({"per_second": 2.5, "burst": 3}), "{v}");
}

#[tokio::test]
async fn forged_signatures_from_one_address_turn_into_429_while_other_addresses_deliver() {
    let t0 = now();
    let (app, clock) = app_at(t0, |cfg| {
        cfg.limits.auth_failure_burst = 5;
        cfg.limits.auth_failure_per_minute = 60;
    })
    .await;
    app.add_source(json!({"source": "edr", "secret": SECRET})).await;
    let attacker = Some("203.0.113.9");
    for i in 0..5 {
        let a = deliver_from(&app, attacker, "edr", "forged-secret-0123456789", t0, &alert(&format!("f-{i}"))).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "forgery {i}: {a:?}");
    }
    // Budget spent: refused before any HMAC, even with a good signature, even to the API.
    for _ in 0..20 {
        let a = deliver_from(&app, attacker, "edr", "forged-secret-0123456789", t0, &alert("f-more")).await;
        assert_eq!(a.assert_rate_limited(), 1);
    }
    deliver_from(&app, attacker, "edr", SECRET, t0, &alert("attacker-signed")).await.assert_rate_limited();
    api_from(&app, attacker, &app.admin_key, Method::GET, "/api/webhooks", None).await.assert_rate_limited();

    // The sender at another address, and the proxy itself, are not affected.
    let a = deliver_from(&app, Some("198.51.100.7"), "edr", SECRET, t0, &alert("real-sender")).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let a = deliver_from(&app, None, "edr", SECRET, t0, &alert("via-proxy-itself")).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    // A client cannot choose its address by prepending to X-Forwarded-For: the proxy appends the
    // real one, which is the one counted.
    let spoofed = deliver_from(&app, Some("198.51.100.7, 203.0.113.9"), "edr", SECRET, t0, &alert("spoof")).await;
    spoofed.assert_rate_limited();

    // One second later, one failure is forgiven: one more 401, then 429 again.
    clock.set(t0 + 1);
    let a = deliver_from(&app, attacker, "edr", "forged-secret-0123456789", t0 + 1, &alert("f-later")).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{a:?}");
    deliver_from(&app, attacker, "edr", "forged-secret-0123456789", t0 + 1, &alert("f-later-2")).await.assert_rate_limited();

    assert_eq!(metric(&app, "tw_auth_failures_total", &[("kind", "signature")]).await, 6.0);
    assert_eq!(metric(&app, "tw_rate_limited_total", &[("reason", "auth_failures")]).await, 24.0);
    // Counted, never labelled by address.
    let text = app.metrics_text().await;
    assert!(!text.contains("203.0.113.9"), "an address became a label:\n{text}");
}

/// 404 `unknown_source` and 401 tell registered names from others, so guessing names costs the
/// same budget as guessing secrets: an enumerating address soon gets 429 for every name, and
/// cannot tell registered from unregistered any more.
#[tokio::test]
async fn guessing_source_names_spends_the_failure_budget() {
    let t0 = now();
    let (app, _clock) = app_at(t0, |cfg| {
        cfg.limits.auth_failure_burst = 5;
        cfg.limits.auth_failure_per_minute = 60;
    })
    .await;
    app.add_source(json!({"source": "edr", "secret": SECRET})).await;
    let scanner = Some("203.0.113.77");
    for i in 0..5 {
        let a = deliver_from(&app, scanner, &format!("guess-{i}"), SECRET, t0, &alert("scan")).await;
        assert_eq!((a.status, a.body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_source")), "{a:?}");
    }
    // Spent: unregistered and registered names answer alike.
    deliver_from(&app, scanner, "guess-next", SECRET, t0, &alert("scan")).await.assert_rate_limited();
    deliver_from(&app, scanner, "edr", "forged-secret-0123456789", t0, &alert("scan")).await.assert_rate_limited();
    // A real sender elsewhere is not affected.
    let a = deliver_from(&app, Some("198.51.100.8"), "edr", SECRET, t0, &alert("real")).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    assert_eq!(metric(&app, "tw_auth_failures_total", &[("kind", "unknown_source")]).await, 5.0);
}

#[tokio::test]
async fn wrong_api_keys_from_one_address_turn_into_429_for_the_api_and_the_intake() {
    let t0 = now();
    let (app, _clock) = app_at(t0, |cfg| {
        cfg.limits.auth_failure_burst = 4;
        cfg.limits.auth_failure_per_minute = 1;
    })
    .await;
    app.add_source(json!({"source": "edr", "secret": SECRET})).await;
    let guesser = Some("192.0.2.50");
    let wrong = "tw_0000000000000000000000000000000000000000000000000000000000000000";
    for _ in 0..4 {
        let a = api_from(&app, guesser, wrong, Method::GET, "/api/webhooks", None).await;
        assert_eq!((a.status, a.body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")), "{a:?}");
    }
    // Spent: the right key from that address is refused too, before it is looked up, and so is
    // the intake; the wait is the refill of one failure (a minute at 1 a minute).
    assert_eq!(api_from(&app, guesser, wrong, Method::GET, "/api/webhooks", None).await.assert_rate_limited(), 60);
    api_from(&app, guesser, &app.admin_key, Method::GET, "/api/webhooks", None).await.assert_rate_limited();
    deliver_from(&app, guesser, "edr", SECRET, t0, &alert("guesser-delivery")).await.assert_rate_limited();
    // Other addresses keep working.
    let a = api_from(&app, Some("192.0.2.51"), &app.admin_key, Method::GET, "/api/webhooks", None).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    // A request without any key guesses nothing and is not counted: always 401, never 429.
    for _ in 0..10 {
        let a = api_from(&app, Some("192.0.2.52"), "", Method::GET, "/api/webhooks", None).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{a:?}");
    }
    assert_eq!(metric(&app, "tw_auth_failures_total", &[("kind", "api_key")]).await, 4.0);
    assert_eq!(metric(&app, "tw_rate_limited_total", &[("reason", "auth_failures")]).await, 3.0);
    // Every series exists from the start (at 0), so an alert on its rate has something to watch.
    let text = app.metrics_text().await;
    for series in [r#"tw_auth_failures_total{kind="signature"} 0"#, r#"tw_rate_limited_total{reason="playbook_test"} 0"#] {
        assert!(text.lines().any(|l| l == series), "{series} missing:\n{text}");
    }
}

#[tokio::test]
async fn the_playbook_test_endpoint_is_limited_per_api_key() {
    let t0 = now();
    let (app, clock) = app_at(t0, |cfg| {
        cfg.limits.playbook_test_burst = 2;
        cfg.limits.playbook_test_per_minute = 60;
    })
    .await;
    let payload: Value = serde_json::from_str(&phish("pb-test")).unwrap();
    let run = |key: String| {
        let body = json!({"payload": payload.clone()});
        let app = &app;
        async move { api_from(app, None, &key, Method::POST, "/api/playbooks/phishing_triage/test", Some(body)).await }
    };
    for _ in 0..2 {
        let a = run(app.read_key.clone()).await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
    }
    let over = run(app.read_key.clone()).await;
    assert_eq!(over.assert_rate_limited(), 1);
    assert!(over.body["error"]["message"].as_str().unwrap().contains("playbook tests"), "{over:?}");
    // Per key: the admin key has its own budget.
    assert_eq!(run(app.admin_key.clone()).await.status, StatusCode::OK);
    clock.set(t0 + 1);
    assert_eq!(run(app.read_key.clone()).await.status, StatusCode::OK);
    run(app.read_key.clone()).await.assert_rate_limited();
    assert_eq!(metric(&app, "tw_rate_limited_total", &[("reason", "playbook_test")]).await, 2.0);
}

#[tokio::test]
async fn the_config_file_declares_a_rate_limit_and_the_intake_enforces_it() {
    let t0 = now();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhook_config.yaml");
    std::fs::write(
        &path,
        format!(
            "sources:\n  edr:\n    secret: \"{SECRET}\"\n    rate_limit: {{per_second: 0.5, burst: 2}}\n  mail:\n    secret: \"{OTHER_SECRET}\"\n"
        ),
    )
    .unwrap();
    let p = path.clone();
    let (app, clock) = app_at(t0, move |cfg| cfg.webhook_config = Some(p)).await;
    let (_, v) = app.admin(Method::GET, "/api/webhooks/edr", None).await;
    assert_eq!(v["rate_limit"], json!({"per_second": 0.5, "burst": 2}), "{v}");
    let (_, v) = app.admin(Method::GET, "/api/webhooks/mail", None).await;
    assert_eq!(v["rate_limit"], Value::Null, "{v}");
    for i in 0..2 {
        assert_eq!(deliver_from(&app, None, "edr", SECRET, t0, &alert(&format!("cfg-{i}"))).await.status, StatusCode::CREATED);
    }
    // Half a delivery a second: the next is two seconds away.
    assert_eq!(deliver_from(&app, None, "edr", SECRET, t0, &alert("cfg-over")).await.assert_rate_limited(), 2);
    clock.set(t0 + 2);
    assert_eq!(deliver_from(&app, None, "edr", SECRET, t0 + 2, &alert("cfg-later")).await.status, StatusCode::CREATED);
}
