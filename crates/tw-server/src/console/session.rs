//! Console sessions: who is signed in, kept in the store so that every instance on the database
//! shares them and a restart keeps them.
//!
//! Signing in with an API key makes a session: a random id (256 bits) goes to the browser in a
//! cookie, and the store keeps, under the id's SHA-256 (never the id), the key's id and hash
//! (never the key) and three times ([`tw_store::ConsoleSessionStore`]). The CSRF token is not
//! stored: it is derived from the id ([`csrf_token`]), so only the cookie's holder can know it.
//! Every request looks the key up again through the API's own check
//! ([`crate::auth::accepted_key`]), so a revoked or expired key ends its sessions at their next
//! request, on every instance. A session ends after [`IDLE`] without a request and after
//! [`ABSOLUTE`] whatever happens. A use is written at most once per [`TOUCH_EVERY`] per session
//! (not on every request), so the idle end may come up to that much before [`IDLE`] after the last
//! request. One key holds at most [`PER_KEY`] sessions and the store at most [`MAX_SESSIONS`]: past
//! either, signing in closes the least recently used one.
//!
//! No in-process cache: a session read is a primary-key lookup that cost what the key check
//! beside it costs (measured in a debug build: about 45 µs on SQLite, 200 µs on PostgreSQL, for
//! both), small next to the page's own reads; a cache would also let a sign-out on one instance
//! go unseen on another for its lifetime.

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tw_store::{ApiKeyRecord, NewConsoleSession, SessionLimits, Store};

/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::minutes(30);
/// A session ends this long after sign-in, however busy.
pub const ABSOLUTE: Duration = Duration::hours(12);
/// A session's use is written at most this often: a busy console costs one write a minute, not
/// one per request.
pub const TOUCH_EVERY: Duration = Duration::minutes(1);
/// Sessions kept at most, all keys together; signing in beyond it closes the least recently used
/// one (rather than refusing the sign-in: every key is also held to [`PER_KEY`], so only many
/// keys together can reach it, and a sign-in that works matters more than an idle session).
pub const MAX_SESSIONS: u32 = 10_000;

/// The session cookie's name.
pub const COOKIE: &str = "tw_console";
/// The cookie that carries the sign-in form's CSRF token before there is a session.
pub const LOGIN_COOKIE: &str = "tw_console_login";

/// The most sessions one API key holds at once.
pub const PER_KEY: u32 = 20;

/// A live session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The SHA-256 of the API key it was opened with, as the store keeps keys.
    pub key_hash: [u8; 32],
    /// The token every form of this session carries.
    pub csrf: String,
    pub created: DateTime<Utc>,
    /// The last use written (at most [`TOUCH_EVERY`] old).
    pub last_seen: DateTime<Utc>,
}

/// The sessions in the store, with this server's limits.
pub struct Sessions {
    store: Arc<dyn Store>,
    limits: SessionLimits,
}

/// 32 random bytes as 64 hex digits.
pub fn random_token() -> Result<String, crate::ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        let id = uuid::Uuid::new_v4().simple().to_string();
        tracing::error!(target: "api", error_id = %id, error = %e, "no randomness for a console session");
        crate::ApiError::Internal(id)
    })?;
    Ok(hex::encode(bytes))
}

/// What the store keeps for a session id.
fn id_hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The CSRF token of the session `id`: a hash of the id under its own label, so it is never
/// stored, cannot be told from what the store keeps, and does not give the id away when a page
/// shows it.
pub fn csrf_token(id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"tw-console-csrf\0");
    h.update(id.as_bytes());
    hex::encode(h.finalize())
}

/// When a session opened at `created` and last used at `seen` ends.
pub fn ends_at(created: DateTime<Utc>, seen: DateTime<Utc>) -> DateTime<Utc> {
    (seen + IDLE).min(created + ABSOLUTE)
}

/// Whether a cookie value can be a session id at all (64 hex digits): anything else is not looked up.
fn well_formed(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Sessions {
    /// The sessions of `store`, at most `total` of them.
    pub fn new(store: Arc<dyn Store>, total: u32) -> Sessions {
        Sessions { store, limits: SessionLimits { per_key: PER_KEY, total: total.max(1) } }
    }

    /// Opens a session for `key` (whose hash is `key_hash`); returns its id, for the cookie. One
    /// key holds at most [`PER_KEY`] sessions (its least recently used one is closed), so a key
    /// signing in again and again cannot push everyone else's sessions out.
    pub async fn open(&self, key: &ApiKeyRecord, key_hash: [u8; 32], now: DateTime<Utc>) -> Result<String, crate::ApiError> {
        let id = random_token()?;
        let new =
            NewConsoleSession { id_hash: id_hash(&id), key_id: key.id.clone(), key_hash, created_at: now, expires_at: ends_at(now, now) };
        let closed = self.store.open_console_session(new, self.limits).await?;
        if closed > 0 {
            tracing::info!(target: "auth", key = %key.prefix, closed, "console sessions closed to make room for a sign-in");
        }
        Ok(id)
    }

    /// The live session of `id`, its idle end moved on to `now` when its last written use is
    /// [`TOUCH_EVERY`] old (a failed write is logged and tried at the next request).
    pub async fn touch(&self, id: &str, now: DateTime<Utc>) -> Result<Option<Session>, crate::ApiError> {
        let Some(mut session) = self.peek(id, now).await? else { return Ok(None) };
        if now - session.last_seen >= TOUCH_EVERY {
            match self.store.touch_console_session(id_hash(id), now, ends_at(session.created, now)).await {
                Ok(_) => session.last_seen = now,
                Err(e) => tracing::warn!(target: "store", error = %e.chain(), "a console session's use was not written"),
            }
        }
        Ok(Some(session))
    }

    /// The live session of `id` at `now`, without counting this as a use (a live stream looks,
    /// and must not keep an unattended session alive).
    pub async fn peek(&self, id: &str, now: DateTime<Utc>) -> Result<Option<Session>, crate::ApiError> {
        if !well_formed(id) {
            return Ok(None);
        }
        let Some(r) = self.store.console_session(id_hash(id), now).await? else { return Ok(None) };
        Ok(Some(Session { key_hash: r.key_hash, csrf: csrf_token(id), created: r.created_at, last_seen: r.last_seen_at }))
    }

    /// Ends the session of `id` (sign-out, or its key no longer accepted), on every instance.
    pub async fn close(&self, id: &str) -> Result<(), crate::ApiError> {
        if well_formed(id) {
            self.store.close_console_session(id_hash(id)).await?;
        }
        Ok(())
    }
}

/// The value of cookie `name` in `headers`' `Cookie` lines.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value for the console: `HttpOnly`, `SameSite=Strict`, `Path=/console`, and
/// `Secure` when the browser reached us over TLS. `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}", max_age.num_seconds().max(0))
}

/// Whether `given` is `expected`, compared in constant time (a CSRF token).
pub fn token_matches(given: &str, expected: &str) -> bool {
    !expected.is_empty() && tw_core::signature::constant_time_eq(given.as_bytes(), expected.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    /// A server's sessions on a real SQLite store in `dir`, and a key of it.
    async fn sessions(dir: &std::path::Path, total: u32) -> (Sessions, Arc<dyn Store>, ApiKeyRecord, [u8; 32]) {
        let key = tw_store::MasterKey::load_or_create(None, dir).unwrap();
        let store: Arc<dyn Store> = Arc::new(tw_store::sqlite::SqliteStore::open(&dir.join("tw.db"), key).unwrap());
        let (record, hash) = new_key(&store, "ops").await;
        (Sessions::new(store.clone(), total), store, record, hash)
    }

    async fn new_key(store: &Arc<dyn Store>, name: &str) -> (ApiKeyRecord, [u8; 32]) {
        let k = tw_store::api_key::generate().unwrap();
        (store.create_api_key(name, tw_store::Scope::Read, k.hash, &k.prefix).await.unwrap(), k.hash)
    }

    #[test]
    fn a_session_ends_idle_or_at_its_cap_whichever_comes_first() {
        assert_eq!(ends_at(at(0), at(0)), at(0) + IDLE);
        assert_eq!(ends_at(at(0), at(600)), at(600) + IDLE);
        assert_eq!(ends_at(at(0), at(0) + ABSOLUTE - Duration::minutes(1)), at(0) + ABSOLUTE);
    }

    #[tokio::test]
    async fn a_session_slides_with_use_and_ends_idle_or_at_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let (sessions, _store, key, hash) = sessions(dir.path(), 10).await;
        let id = sessions.open(&key, hash, at(0)).await.unwrap();
        assert_eq!(id.len(), 64);
        let s = sessions.touch(&id, at(29 * 60)).await.unwrap().expect("used within the idle time");
        assert_eq!((s.key_hash, s.csrf.clone()), (hash, csrf_token(&id)));
        assert!(sessions.touch(&id, at(58 * 60)).await.unwrap().is_some(), "the idle time slid with the last use");
        assert!(sessions.touch(&id, at(58 * 60 + 30 * 60)).await.unwrap().is_none(), "30 minutes idle ends it");

        let id = sessions.open(&key, hash, at(0)).await.unwrap();
        let mut t = 0;
        while t < ABSOLUTE.num_seconds() - 600 {
            t += 600;
            assert!(sessions.touch(&id, at(t)).await.unwrap().is_some());
        }
        assert!(sessions.touch(&id, at(ABSOLUTE.num_seconds())).await.unwrap().is_none(), "busy or not, the absolute cap ends it");
    }

    #[tokio::test]
    async fn uses_are_written_about_once_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let (sessions, store, key, hash) = sessions(dir.path(), 10).await;
        let id = sessions.open(&key, hash, at(0)).await.unwrap();
        let stored = |t| {
            let store = store.clone();
            let h = id_hash(&id);
            async move { store.console_session(h, at(t)).await.unwrap().unwrap().last_seen_at }
        };
        sessions.touch(&id, at(30)).await.unwrap().unwrap();
        assert_eq!(stored(31).await, at(0), "a use within the minute is not written");
        sessions.touch(&id, at(60)).await.unwrap().unwrap();
        assert_eq!(stored(61).await, at(60));
        assert!(sessions.peek(&id, at(200)).await.unwrap().is_some());
        assert_eq!(stored(201).await, at(60), "looking is not a use");
    }

    #[tokio::test]
    async fn one_key_signing_in_again_and_again_closes_only_its_own_oldest_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let (sessions, store, key, hash) = sessions(dir.path(), 1000).await;
        let (other_key, other_hash) = new_key(&store, "other").await;
        let other = sessions.open(&other_key, other_hash, at(0)).await.unwrap();
        let first = sessions.open(&key, hash, at(1)).await.unwrap();
        for i in 0..(i64::from(PER_KEY) * 3) {
            sessions.open(&key, hash, at(2 + i)).await.unwrap();
        }
        assert!(sessions.touch(&first, at(500)).await.unwrap().is_none(), "the key's oldest session was closed");
        assert!(sessions.touch(&other, at(500)).await.unwrap().is_some(), "another key's session stays");
    }

    #[tokio::test]
    async fn closing_ends_a_session_and_ids_are_unguessable_strangers() {
        let dir = tempfile::tempdir().unwrap();
        let (sessions, _store, key, hash) = sessions(dir.path(), 10).await;
        let id = sessions.open(&key, hash, at(0)).await.unwrap();
        assert!(sessions.touch("0".repeat(64).as_str(), at(1)).await.unwrap().is_none());
        assert!(sessions.touch("not a session id", at(1)).await.unwrap().is_none());
        sessions.close(&id).await.unwrap();
        assert!(sessions.touch(&id, at(1)).await.unwrap().is_none());
        assert_ne!(random_token().unwrap(), random_token().unwrap());
        assert_ne!(csrf_token(&id), hex::encode(id_hash(&id)), "the stored hash does not give the CSRF token away");
    }

    #[test]
    fn cookies_are_read_and_written_with_their_attributes() {
        let mut h = axum::http::HeaderMap::new();
        h.append(axum::http::header::COOKIE, "a=1; tw_console=abc".parse().unwrap());
        h.append(axum::http::header::COOKIE, "other=2".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "other"), Some("2"));
        assert_eq!(cookie(&h, "tw"), None);
        let c = set_cookie(COOKIE, "abc", IDLE, false);
        assert_eq!(c, "tw_console=abc; Path=/console; HttpOnly; SameSite=Strict; Max-Age=1800");
        assert!(set_cookie(COOKIE, "", Duration::zero(), true).ends_with("Max-Age=0; Secure"));
    }

    #[test]
    fn csrf_tokens_compare_exactly() {
        let t = random_token().unwrap();
        assert!(token_matches(&t, &t));
        assert!(!token_matches(&t[..63], &t));
        assert!(!token_matches("", ""), "no token is never a match");
    }
}
