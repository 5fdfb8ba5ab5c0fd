//! Console sessions: the SHA-256 of each session id, its API key and its times. Writes go through
//! the writer task ([`SessionWrite`]), each in a transaction of its own after the writer's batch.

use super::{PgStore, execute, query_one, query_opt};
use crate::StoreError;
use crate::console_session::{ConsoleSessionRecord, NewConsoleSession, SessionLimits, hash32};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

/// The advisory lock that makes instances opening sessions at once take turns ("tw-sess"), so
/// two sign-ins cannot both find room under a limit.
const OPEN_LOCK: i64 = 0x0074_772d_7365_7373;

/// A change to the sessions, handed to the writer.
pub(super) enum SessionWrite {
    Open(NewConsoleSession, SessionLimits),
    Touch { id_hash: [u8; 32], seen_at: DateTime<Utc>, expires_at: DateTime<Utc> },
    Close([u8; 32]),
    Prune(DateTime<Utc>),
}

/// Runs one session write in its own transaction; returns the rows it closed, touched or deleted.
pub(super) async fn write_now(pool: &Pool, w: &SessionWrite) -> Result<u64, StoreError> {
    let mut c = pool.get().await?;
    match w {
        SessionWrite::Open(new, limits) => {
            let tx = c.transaction().await?;
            query_one(&tx, "SELECT pg_advisory_xact_lock($1)::text", &[&OPEN_LOCK]).await?;
            execute(&tx, "DELETE FROM console_sessions WHERE expires_at <= $1", &[&new.created_at]).await?;
            // Keep the key's `per_key - 1` most recently used, and everyone's `total - 1`: the new
            // session is the last one that fits.
            let mut closed = execute(
                &tx,
                "DELETE FROM console_sessions WHERE id_hash IN (SELECT id_hash FROM console_sessions WHERE key_id = $1 \
                 ORDER BY last_seen_at DESC, id_hash OFFSET $2)",
                &[&new.key_id, &(i64::from(limits.per_key.max(1)) - 1)],
            )
            .await?;
            closed += execute(
                &tx,
                "DELETE FROM console_sessions WHERE id_hash IN (SELECT id_hash FROM console_sessions \
                 ORDER BY last_seen_at DESC, id_hash OFFSET $1)",
                &[&(i64::from(limits.total.max(1)) - 1)],
            )
            .await?;
            execute(
                &tx,
                "INSERT INTO console_sessions (id_hash, key_id, key_hash, created_at, last_seen_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $4, $5)",
                &[&&new.id_hash[..], &new.key_id, &&new.key_hash[..], &new.created_at, &new.expires_at],
            )
            .await?;
            tx.commit().await?;
            Ok(closed)
        }
        SessionWrite::Touch { id_hash, seen_at, expires_at } => {
            execute(
                &c,
                "UPDATE console_sessions SET last_seen_at = $2, expires_at = $3 \
                 WHERE id_hash = $1 AND last_seen_at < $2 AND expires_at > $2",
                &[&&id_hash[..], seen_at, expires_at],
            )
            .await
        }
        SessionWrite::Close(id_hash) => execute(&c, "DELETE FROM console_sessions WHERE id_hash = $1", &[&&id_hash[..]]).await,
        SessionWrite::Prune(now) => execute(&c, "DELETE FROM console_sessions WHERE expires_at <= $1", &[now]).await,
    }
}

#[async_trait]
impl crate::ConsoleSessionStore for PgStore {
    async fn open_console_session(&self, new: NewConsoleSession, limits: SessionLimits) -> Result<u64, StoreError> {
        self.writer.session(SessionWrite::Open(new, limits)).await
    }

    async fn console_session(&self, id_hash: [u8; 32], now: DateTime<Utc>) -> Result<Option<ConsoleSessionRecord>, StoreError> {
        let c = self.client().await?;
        let row = query_opt(
            &c,
            "SELECT key_id, key_hash, created_at, last_seen_at, expires_at FROM console_sessions WHERE id_hash = $1 AND expires_at > $2",
            &[&&id_hash[..], &now],
        )
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(ConsoleSessionRecord {
            key_id: r.get(0),
            key_hash: hash32(r.get(1))?,
            created_at: r.get(2),
            last_seen_at: r.get(3),
            expires_at: r.get(4),
        }))
    }

    async fn touch_console_session(
        &self,
        id_hash: [u8; 32],
        seen_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(self.writer.session(SessionWrite::Touch { id_hash, seen_at, expires_at }).await? > 0)
    }

    async fn close_console_session(&self, id_hash: [u8; 32]) -> Result<bool, StoreError> {
        Ok(self.writer.session(SessionWrite::Close(id_hash)).await? > 0)
    }

    async fn prune_console_sessions(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        // Looked for first: the pruning loop asks often, and the writer's turn is for real work.
        let any: bool = {
            let c = self.client().await?;
            query_one(&c, "SELECT EXISTS(SELECT 1 FROM console_sessions WHERE expires_at <= $1)", &[&now]).await?.get(0)
        };
        if !any {
            return Ok(0);
        }
        self.writer.session(SessionWrite::Prune(now)).await
    }
}
