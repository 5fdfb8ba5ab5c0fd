//! Console sessions: who is signed in, kept in this process's memory.
//!
//! Signing in with an API key makes a session: a random id (256 bits) goes to the browser in a
//! cookie, and the server keeps, under the id's SHA-256, the hash of the key (never the key), a
//! CSRF token and two times. Every request looks the key up again through the API's own check
//! ([`crate::auth::accepted_key`]), so a revoked or expired key ends its sessions at their next
//! request. A session ends after [`IDLE`] without a request (each request moves that on) and
//! after [`ABSOLUTE`] whatever happens; at most [`MAX_SESSIONS`] are kept, the least recently
//! used going first. Sessions are per process: behind a load balancer, pin console users to one
//! instance (or sign in again when moved); a restart signs everyone out.

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::minutes(30);
/// A session ends this long after sign-in, however busy.
pub const ABSOLUTE: Duration = Duration::hours(12);
/// Sessions kept at most; signing in beyond it ends the least recently used one.
pub const MAX_SESSIONS: usize = 10_000;

/// The session cookie's name.
pub const COOKIE: &str = "tw_console";
/// The cookie that carries the sign-in form's CSRF token before there is a session.
pub const LOGIN_COOKIE: &str = "tw_console_login";

/// The most sessions one API key holds at once.
pub const PER_KEY: usize = 20;

/// A session as the server keeps it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The SHA-256 of the API key it was opened with, as the store keeps keys.
    pub key_hash: [u8; 32],
    /// The token every form of this session carries.
    pub csrf: String,
    pub created: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

impl Session {
    /// Whether the session is still alive at `now`.
    pub fn alive(&self, now: DateTime<Utc>) -> bool {
        now < self.last_seen + IDLE && now < self.created + ABSOLUTE
    }
}

/// Every session of this process, at most `cap`.
pub struct Sessions {
    table: Mutex<HashMap<[u8; 32], Session>>,
    cap: usize,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(MAX_SESSIONS)
    }
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

fn id_hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    pub fn new(cap: usize) -> Sessions {
        Sessions { table: Mutex::new(HashMap::new()), cap: cap.max(1) }
    }

    /// Opens a session for the key whose hash is `key_hash`; returns its id (for the cookie). One
    /// key holds at most [`PER_KEY`] sessions (its least recently used one is closed), so a key
    /// signing in again and again cannot push everyone else's sessions out of the table.
    pub fn open(&self, key_hash: [u8; 32], now: DateTime<Utc>) -> Result<String, crate::ApiError> {
        let id = random_token()?;
        let session = Session { key_hash, csrf: random_token()?, created: now, last_seen: now };
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if t.len() >= self.cap {
            t.retain(|_, s| s.alive(now));
        }
        while t.values().filter(|s| s.key_hash == key_hash).count() >= PER_KEY {
            let Some(oldest) = t.iter().filter(|(_, s)| s.key_hash == key_hash).min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k) else { break };
            t.remove(&oldest);
        }
        while t.len() >= self.cap {
            let Some(oldest) = t.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k) else { break };
            t.remove(&oldest);
        }
        t.insert(id_hash(&id), session);
        Ok(id)
    }

    /// The live session of `id`, its idle time moved on to `now`; a dead one is forgotten.
    pub fn touch(&self, id: &str, now: DateTime<Utc>) -> Option<Session> {
        let key = id_hash(id);
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let alive = t.get(&key)?.alive(now);
        if !alive {
            t.remove(&key);
            return None;
        }
        let s = t.get_mut(&key)?;
        s.last_seen = s.last_seen.max(now);
        Some(s.clone())
    }

    /// The live session of `id` at `now`, without counting this as a use (a live stream looks,
    /// and must not keep an unattended session alive).
    pub fn peek(&self, id: &str, now: DateTime<Utc>) -> Option<Session> {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).get(&id_hash(id)).filter(|s| s.alive(now)).cloned()
    }

    /// Ends the session of `id` (sign-out, or its key no longer accepted).
    pub fn close(&self, id: &str) {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).remove(&id_hash(id));
    }

    /// How many sessions are kept.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    #[test]
    fn a_session_slides_with_use_and_ends_idle_or_at_its_cap() {
        let sessions = Sessions::new(10);
        let id = sessions.open([1; 32], at(0)).unwrap();
        assert_eq!(id.len(), 64);
        assert!(sessions.touch(&id, at(29 * 60)).is_some(), "used within the idle time");
        assert!(sessions.touch(&id, at(58 * 60)).is_some(), "the idle time slid with the last use");
        assert!(sessions.touch(&id, at(58 * 60 + 30 * 60)).is_none(), "30 minutes idle ends it");
        assert!(sessions.is_empty(), "a dead session is forgotten");

        let id = sessions.open([1; 32], at(0)).unwrap();
        let mut t = 0;
        while t < ABSOLUTE.num_seconds() - 600 {
            t += 600;
            assert!(sessions.touch(&id, at(t)).is_some());
        }
        assert!(sessions.touch(&id, at(ABSOLUTE.num_seconds())).is_none(), "busy or not, the absolute cap ends it");
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_least_recently_used() {
        let sessions = Sessions::new(3);
        let a = sessions.open([1; 32], at(0)).unwrap();
        let b = sessions.open([2; 32], at(1)).unwrap();
        let c = sessions.open([3; 32], at(2)).unwrap();
        sessions.touch(&a, at(3));
        let d = sessions.open([4; 32], at(4)).unwrap();
        assert_eq!(sessions.len(), 3);
        assert!(sessions.touch(&b, at(5)).is_none(), "b was the least recently used");
        for id in [&a, &c, &d] {
            assert!(sessions.touch(id, at(5)).is_some());
        }
    }

    #[test]
    fn one_key_signing_in_again_and_again_closes_only_its_own_oldest_sessions() {
        let sessions = Sessions::new(1000);
        let other = sessions.open([9; 32], at(0)).unwrap();
        let first = sessions.open([1; 32], at(1)).unwrap();
        for i in 0..(PER_KEY as i64 * 3) {
            sessions.open([1; 32], at(2 + i)).unwrap();
        }
        assert_eq!(sessions.len(), PER_KEY + 1);
        assert!(sessions.touch(&first, at(500)).is_none(), "the key's oldest session was closed");
        assert!(sessions.touch(&other, at(500)).is_some(), "another key's session stays");
    }

    #[test]
    fn closing_ends_a_session_and_ids_are_unguessable_strangers() {
        let sessions = Sessions::new(10);
        let id = sessions.open([1; 32], at(0)).unwrap();
        assert!(sessions.touch("0".repeat(64).as_str(), at(1)).is_none());
        sessions.close(&id);
        assert!(sessions.touch(&id, at(1)).is_none());
        assert_ne!(random_token().unwrap(), random_token().unwrap());
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
