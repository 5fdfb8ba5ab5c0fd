//! The server in the test process: the real router, store and workers on a free port.

use super::deliveries::{into_json, post_signed};
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;

/// An in-process server (the real router, store and workers) on 127.0.0.1:0 with its own temp
/// data dir and an admin and a read key: tests that need what only this process offers (a clock
/// they set, the store itself, a second instance on the same store) use it rather than
/// `tw-cli serve`.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    /// An admin API key.
    pub admin_key: String,
    /// A read-only API key.
    pub read_key: String,
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database's URL when the tests run on PostgreSQL.
    pub database_url: Option<String>,
    server: Option<crate::RunningServer>,
}

impl TestApp {
    /// A fresh server with an empty data dir.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// A fresh server whose config `tweak` may adjust (e.g. to set `webhook_config` or its clock).
    pub async fn spawn_with(tweak: impl FnOnce(&mut crate::ServerConfig)) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::spawn_in(dir, tweak).await
    }

    /// A server on an existing data dir (to test restarts). With `TW_TEST_ENGINE=postgres` its
    /// store is a PostgreSQL database of its own, the same one again for the same data dir.
    pub async fn spawn_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut crate::ServerConfig)) -> TestApp {
        let mut cfg = crate::ServerConfig::new(dir.path().to_path_buf());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        if tw_store::testing::engine_is_postgres() {
            cfg.database_url = Some(tw_store::testing::database_for(dir.path()).await);
        }
        tweak(&mut cfg);
        let database_url = cfg.database_url.clone().filter(|u| u.starts_with("postgres"));
        let server = crate::start(cfg).await.expect("server starts");
        let mut keys = Vec::new();
        for scope in [tw_store::Scope::Admin, tw_store::Scope::Read] {
            keys.push(new_key(&server.state.store, "test", scope).await.0);
        }
        let addr = server.addr;
        TestApp {
            addr,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            read_key: keys.pop().unwrap(),
            admin_key: keys.pop().unwrap(),
            dir,
            database_url,
            server: Some(server),
        }
    }

    /// Another server on this one's data dir and database (another instance behind the load
    /// balancer), on a port of its own; it runs until it is dropped or shut down.
    pub async fn second_instance(&self) -> crate::RunningServer {
        let mut cfg = crate::ServerConfig::new(self.dir.path().to_path_buf());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.database_url = self.database_url.clone();
        crate::start(cfg).await.expect("second instance starts")
    }

    /// Stops the server gracefully and hands back its data dir.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        self.dir
    }

    /// The server's store, for what the operator does on it directly rather than over HTTP
    /// (`tw-cli api-key ...`).
    pub fn store(&self) -> &Arc<dyn tw_store::Store> {
        &self.server.as_ref().expect("the server runs").state.store
    }

    /// The running server's shared state (its permits, caches and settings).
    pub fn state(&self) -> &crate::AppState {
        &self.server.as_ref().expect("the server runs").state
    }

    /// The absolute URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with the admin key and a JSON body.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.with_key(&self.admin_key.clone(), method, path, body).await
    }

    /// A request with a given key (or none, with "").
    pub async fn with_key(&self, key: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path));
        if !key.is_empty() {
            req = req.bearer_auth(key);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        into_json(resp).await
    }

    /// Registers a source with the admin key; panics unless 201.
    pub async fn add_source(&self, body: Value) -> Value {
        let (status, v) = self.admin(reqwest::Method::POST, "/api/webhooks", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v
    }

    /// Posts a body signed with `secret` at the current time to the intake.
    pub async fn deliver(&self, source: &str, secret: &str, body: &str) -> (StatusCode, Value) {
        self.deliver_at(source, secret, body, super::now()).await
    }

    /// Posts a body signed with `secret` at timestamp `ts`.
    pub async fn deliver_at(&self, source: &str, secret: &str, body: &str, ts: i64) -> (StatusCode, Value) {
        post_signed(&self.http, &self.base, source, secret, ts, body.to_string()).await
    }

    /// The text of `GET /metrics` (no token).
    pub async fn metrics_text(&self) -> String {
        self.http.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }
}

/// A new API key of `scope` named `name` in `store`, written directly as `tw-cli api-key create`
/// does: its plaintext, and its record.
pub async fn new_key(store: &Arc<dyn tw_store::Store>, name: &str, scope: tw_store::Scope) -> (String, tw_store::ApiKeyRecord) {
    let k = tw_store::api_key::generate().unwrap();
    let record = store.create_api_key(name, scope, k.hash, &k.prefix).await.unwrap();
    (k.plaintext, record)
}
