//! Console sessions as the store keeps them: shared by every instance on the database and kept
//! across restarts.
//!
//! A row holds the SHA-256 of the session id (the id itself lives only in the browser's cookie,
//! so a copy of the database opens no session), the API key it was opened with (its id, and its
//! hash for the key check every request makes), and three times. The console's rules (idle and
//! absolute lifetimes, when a use is written) live in the server; the store applies what it is
//! told: a session is alive while `expires_at` is in the future, and [`SessionLimits`] bound how
//! many rows there can be.

use chrono::{DateTime, Utc};

/// A session to open.
#[derive(Clone, PartialEq, Eq)]
pub struct NewConsoleSession {
    /// SHA-256 of the session id.
    pub id_hash: [u8; 32],
    /// The id of the API key it was opened with.
    pub key_id: String,
    /// The SHA-256 of that key, as `api_keys` keeps it.
    pub key_hash: [u8; 32],
    /// When it was opened (its first use, and "now" for pruning and limits).
    pub created_at: DateTime<Utc>,
    /// When it ends unless used again.
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for NewConsoleSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hashes open nothing, but they have no place in a log line either.
        f.debug_struct("NewConsoleSession")
            .field("key_id", &self.key_id)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A live session.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsoleSessionRecord {
    /// The id of the API key it was opened with.
    pub key_id: String,
    /// The SHA-256 of that key.
    pub key_hash: [u8; 32],
    pub created_at: DateTime<Utc>,
    /// The last use written (uses are written at most about once a minute).
    pub last_seen_at: DateTime<Utc>,
    /// When it ends unless used again.
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for ConsoleSessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSessionRecord")
            .field("key_id", &self.key_id)
            .field("created_at", &self.created_at)
            .field("last_seen_at", &self.last_seen_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// How many sessions the store keeps: opening one past a limit closes the least recently used
/// (by `last_seen_at`) of the key's, or of everyone's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Sessions one API key holds at once.
    pub per_key: u32,
    /// Sessions kept in all, so that no one can fill the database with them.
    pub total: u32,
}

/// A stored SHA-256 read back as the array it was stored from.
pub(crate) fn hash32(v: Vec<u8>) -> Result<[u8; 32], crate::StoreError> {
    v.try_into().map_err(|v: Vec<u8>| crate::StoreError::Corrupt(format!("console session key hash of {} bytes", v.len())))
}
