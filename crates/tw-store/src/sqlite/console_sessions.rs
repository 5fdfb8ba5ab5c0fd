//! Console sessions: the SHA-256 of each session id, its API key and its times.

use super::{SqliteStore, parse_ts, ts};
use crate::StoreError;
use crate::console_session::{ConsoleSessionRecord, NewConsoleSession, SessionLimits, hash32};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

#[async_trait]
impl crate::ConsoleSessionStore for SqliteStore {
    async fn open_console_session(&self, new: NewConsoleSession, limits: SessionLimits) -> Result<u64, StoreError> {
        self.writer
            .write(move |conn| {
                let now = ts(new.created_at);
                conn.prepare_cached("DELETE FROM console_sessions WHERE expires_at <= ?1")?.execute([&now])?;
                // Keep the key's `per_key - 1` most recently used, and everyone's `total - 1`: the
                // new session is the last one that fits.
                let mut closed = conn
                    .prepare_cached(
                        "DELETE FROM console_sessions WHERE id_hash IN (SELECT id_hash FROM console_sessions WHERE key_id = ?1 \
                         ORDER BY last_seen_at DESC, id_hash LIMIT -1 OFFSET +?2)",
                    )?
                    .execute(params![new.key_id, i64::from(limits.per_key.max(1)) - 1])?;
                closed += conn
                    .prepare_cached(
                        "DELETE FROM console_sessions WHERE id_hash IN (SELECT id_hash FROM console_sessions \
                         ORDER BY last_seen_at DESC, id_hash LIMIT -1 OFFSET +?1)",
                    )?
                    .execute([i64::from(limits.total.max(1)) - 1])?;
                conn.prepare_cached(
                    "INSERT INTO console_sessions (id_hash, key_id, key_hash, created_at, last_seen_at, expires_at) \
                     VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                )?
                .execute(params![&new.id_hash[..], new.key_id, &new.key_hash[..], now, ts(new.expires_at)])?;
                Ok(closed as u64)
            })
            .await
    }

    async fn console_session(&self, id_hash: [u8; 32], now: DateTime<Utc>) -> Result<Option<ConsoleSessionRecord>, StoreError> {
        self.read(move |conn, _| {
            let row = conn
                .prepare_cached(
                    "SELECT key_id, key_hash, created_at, last_seen_at, expires_at FROM console_sessions \
                     WHERE id_hash = ?1 AND expires_at > ?2",
                )?
                .query_row(params![&id_hash[..], ts(now)], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .optional()?;
            let Some((key_id, key_hash, created_at, last_seen_at, expires_at)) = row else { return Ok(None) };
            Ok(Some(ConsoleSessionRecord {
                key_id,
                key_hash: hash32(key_hash)?,
                created_at: parse_ts(&created_at)?,
                last_seen_at: parse_ts(&last_seen_at)?,
                expires_at: parse_ts(&expires_at)?,
            }))
        })
        .await
    }

    async fn touch_console_session(
        &self,
        id_hash: [u8; 32],
        seen_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.writer
            .write(move |conn| {
                let n = conn
                    .prepare_cached(
                        "UPDATE console_sessions SET last_seen_at = ?2, expires_at = ?3 \
                         WHERE id_hash = ?1 AND last_seen_at < ?2 AND expires_at > ?2",
                    )?
                    .execute(params![&id_hash[..], ts(seen_at), ts(expires_at)])?;
                Ok(n > 0)
            })
            .await
    }

    async fn close_console_session(&self, id_hash: [u8; 32]) -> Result<bool, StoreError> {
        self.writer
            .write(move |conn| Ok(conn.prepare_cached("DELETE FROM console_sessions WHERE id_hash = ?1")?.execute([&id_hash[..]])? > 0))
            .await
    }

    async fn prune_console_sessions(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let now = ts(now);
        // Looked for on a read connection first: the pruning loop asks often, and a write
        // transaction that finds nothing would still take the writer's turn.
        let at = now.clone();
        let any = self
            .read(move |conn, _| {
                Ok(conn
                    .prepare_cached("SELECT EXISTS(SELECT 1 FROM console_sessions WHERE expires_at <= ?1)")?
                    .query_row([&at], |r| r.get::<_, bool>(0))?)
            })
            .await?;
        if !any {
            return Ok(0);
        }
        self.writer
            .write(move |conn| Ok(conn.prepare_cached("DELETE FROM console_sessions WHERE expires_at <= ?1")?.execute([&now])? as u64))
            .await
    }
}
