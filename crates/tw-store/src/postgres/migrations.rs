//! The schema, versioned: each migration runs once, in its own transaction, recorded in
//! `schema_migrations`, while a session advisory lock keeps instances that start together from
//! migrating at the same time. A database migrated by a newer build is refused. Also the
//! master-key check every instance must pass.

use super::{PgStore, execute, pool, query, query_opt};
use crate::{MasterKey, MigrationStatus, StoreError, StoreOptions};
use async_trait::async_trait;
use deadpool_postgres::Pool;

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
];
/// The advisory lock held while migrating ("tw-migr").
const MIGRATION_LOCK: i64 = 0x0074_772d_6d69_6772;

/// The newest schema version this build knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Applies pending migrations; returns the versions applied now. Refuses a newer database.
pub(super) async fn migrate(pool: &Pool) -> Result<Vec<i64>, StoreError> {
    let mut client = pool.get().await?;
    // Migrations copy and index whole tables, and another instance may hold the lock while it
    // does: the pool's statement timeout (meant for requests) does not apply to this session.
    // The lock first: two `CREATE TABLE IF NOT EXISTS` at once can still collide in PostgreSQL.
    // A connection that failed half-way never goes back to the pool with these settings.
    let locked = client.batch_execute("SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0").await;
    let locked = match locked {
        Ok(()) => client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = locked {
        drop(deadpool_postgres::Object::take(client));
        return Err(e.into());
    }
    let result = match client
        .batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)")
        .await
    {
        Ok(()) => apply_pending(&mut client).await,
        Err(e) => Err(e.into()),
    };
    // Released on every path. If the unlock itself fails, the connection must not go back to the
    // pool still holding the lock: closing it releases the lock.
    let restored = client.batch_execute("RESET statement_timeout; RESET idle_in_transaction_session_timeout").await;
    if client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await.is_err() || restored.is_err() {
        drop(deadpool_postgres::Object::take(client));
    }
    result
}

async fn apply_pending(client: &mut deadpool_postgres::Client) -> Result<Vec<i64>, StoreError> {
    let found: i64 = client.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await?.get(0);
    if found > latest() {
        return Err(StoreError::SchemaTooNew { found, supported: latest() });
    }
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now())", &[version]).await?;
        tx.commit().await?;
        tracing::info!(target: "store", version, "applied PostgreSQL migration");
        applied.push(*version);
    }
    Ok(applied)
}

/// Connects and migrates without starting a store (`tw-cli db migrate`).
pub async fn migrate_only(url: &str, opts: &StoreOptions) -> Result<Vec<i64>, StoreError> {
    migrate(&pool(url, opts)?).await
}

/// The migrations applied to the database at `url`.
pub async fn migration_status(url: &str, opts: &StoreOptions) -> Result<MigrationStatus, StoreError> {
    let pool = pool(url, opts)?;
    let client = pool.get().await?;
    let exists: bool = client.query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[]).await?.get(0);
    let mut applied = Vec::new();
    if exists {
        for r in client.query("SELECT version, applied_at FROM schema_migrations ORDER BY version", &[]).await? {
            applied.push((r.get(0), r.get(1)));
        }
    }
    Ok(MigrationStatus { applied, latest: latest() })
}

/// Refuses a master key other than the one the database's secrets were encrypted with. The first
/// instance to start on an empty database records its key; the others must match it.
pub(super) async fn check_key(pool: &Pool, key: &MasterKey) -> Result<(), StoreError> {
    let client = pool.get().await?;
    let blob = crate::crypto::key_check(key)?;
    execute(&client, "INSERT INTO meta (key, value) VALUES ('key_check', $1) ON CONFLICT (key) DO NOTHING", &[&blob]).await?;
    let row = query_opt(&client, "SELECT value FROM meta WHERE key = 'key_check'", &[]).await?;
    let stored: Vec<u8> = row.map(|r| r.get(0)).ok_or_else(|| StoreError::Corrupt("the key check vanished".into()))?;
    crate::crypto::verify_key_check(key, &stored)
}

#[async_trait]
impl crate::HealthStore for PgStore {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    async fn schema_version(&self) -> Result<(i64, i64), StoreError> {
        let client = self.client().await?;
        let rows = query(&client, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await?;
        Ok((rows.first().map_or(0, |r| r.get(0)), latest()))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.writer.flush().await
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        let now = chrono::Utc::now().to_rfc3339();
        client
            .execute(
                "INSERT INTO meta (key, value) VALUES ('write_probe', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&now.as_bytes()],
            )
            .await?;
        Ok(())
    }
}
