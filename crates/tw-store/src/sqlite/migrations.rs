//! The schema, versioned: each migration runs once, in its own transaction, recorded in
//! `schema_migrations`. A database migrated by a newer build is refused. Also the master-key check.

use super::{SqliteStore, ts};
use crate::{MasterKey, MigrationStatus, StoreError};
use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

/// Every migration, in order. Never edit one that has shipped: add the next.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("schema_v1.sql")),
    (2, include_str!("schema_v2.sql")),
    (3, include_str!("schema_v3.sql")),
    (4, include_str!("schema_v4.sql")),
    (5, include_str!("schema_v5.sql")),
    (6, include_str!("schema_v6.sql")),
    (7, include_str!("schema_v7.sql")),
    (8, include_str!("schema_v8.sql")),
    (9, include_str!("schema_v9.sql")),
    (10, include_str!("schema_v10.sql")),
    (11, include_str!("schema_v11.sql")),
    (12, include_str!("schema_v12.sql")),
    (13, include_str!("schema_v13.sql")),
    (14, include_str!("schema_v14.sql")),
    (15, include_str!("schema_v15.sql")),
    (16, include_str!("schema_v16.sql")),
    (17, include_str!("schema_v17.sql")),
];

/// The newest schema version this build knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Applies pending migrations; returns the versions applied now. Refuses a newer database.
pub(super) fn migrate(conn: &mut Connection) -> Result<Vec<i64>, StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")?;
    let found: i64 = conn.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))?;
    if found > latest() {
        return Err(StoreError::SchemaTooNew { found, supported: latest() });
    }
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let done: bool = tx.query_row("SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE version = ?1)", [version], |r| r.get(0))?;
        if !done {
            tx.execute_batch(sql)?;
            tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)", params![version, ts(Utc::now())])?;
            applied.push(*version);
        }
        tx.commit()?;
    }
    Ok(applied)
}

/// Migrates the database file at `path` without starting a store (`tw-cli db migrate`).
pub fn migrate_file(path: &Path) -> Result<Vec<i64>, StoreError> {
    migrate(&mut super::open_write_connection(path)?)
}

/// The migrations applied to the database at `path` (none when it does not exist yet).
pub fn migration_status(path: &Path) -> Result<MigrationStatus, StoreError> {
    if !path.exists() {
        return Ok(MigrationStatus { applied: Vec::new(), latest: latest() });
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let exists: bool =
        conn.query_row("SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')", [], |r| r.get(0))?;
    let mut applied = Vec::new();
    if exists {
        let mut stmt = conn.prepare("SELECT version, applied_at FROM schema_migrations ORDER BY version")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            applied.push((r.get(0)?, super::parse_ts(&r.get::<_, String>(1)?)?));
        }
    }
    Ok(MigrationStatus { applied, latest: latest() })
}

/// Refuses a master key other than the one the database's secrets were encrypted with.
pub(super) fn check_key(conn: &Connection, key: &MasterKey) -> Result<(), StoreError> {
    let stored: Option<Vec<u8>> = conn.query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| r.get(0)).optional()?;
    match stored {
        Some(blob) => crate::crypto::verify_key_check(key, &blob),
        None => {
            let blob = crate::crypto::key_check(key)?;
            conn.execute("INSERT INTO meta (key, value) VALUES ('key_check', ?1)", [blob])?;
            Ok(())
        }
    }
}

#[async_trait]
impl crate::HealthStore for SqliteStore {
    fn engine(&self) -> &'static str {
        "sqlite"
    }

    async fn schema_version(&self) -> Result<(i64, i64), StoreError> {
        self.read(move |conn, _| {
            let v: i64 = conn.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))?;
            Ok((v, latest()))
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn, _| Ok(conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map(|_| ())?)).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // The writer runs its jobs in order: an empty one returns after everything before it.
        self.writer.write(|_| Ok(())).await
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        // Through the writer, so a success is a batch committed like any delivery's.
        let now = ts(Utc::now());
        self.writer
            .write(move |conn| {
                // 64 KiB: more than the free room SQLite may keep in its WAL and free pages, so a
                // commit needs the disk to have room.
                let mut value = vec![0u8; 64 * 1024];
                value[..now.len()].copy_from_slice(now.as_bytes());
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('write_probe', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [value],
                )?;
                Ok(())
            })
            .await
    }
}
