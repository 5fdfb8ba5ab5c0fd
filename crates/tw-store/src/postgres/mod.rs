//! The PostgreSQL store: several `tw-cli serve` processes on one database behave as one system.
//!
//! - Intake writes (incidents, duplicates, queued events, delivery records) go through one
//!   group-commit [`writer::Writer`] per process: one transaction and a handful of multi-row
//!   statements per batch, never one transaction per request.
//! - Incident numbers come from a counter row per year, allocated for a whole batch in the batch's
//!   transaction; batches of all processes are serialized by a transaction-scoped advisory lock,
//!   so numbers are unique and gap-free across processes and duplicates are decided by the
//!   `(source, dedupe_key)` unique index, never by a read-then-write race.
//! - Workers claim queued events and triage jobs with `FOR UPDATE SKIP LOCKED` and a lease; only
//!   expired leases are taken over.
//! - Durability: a 2xx is sent after `COMMIT` returned with `synchronous_commit` at the server's
//!   setting (on by default: the commit is flushed to the WAL on disk). Do not turn it off.
//!
//! One file per concern, as in `sqlite/`.

mod api_keys;
mod audit;
mod console_sessions;
mod deliveries;
mod incidents;
mod ingest;
mod migrations;
mod playbooks;
mod queue;
mod reprocess;
mod sources;
mod triage;
mod writer;

use crate::{MasterKey, StoreError, StoreOptions};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::sync::Arc;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{NoTls, Row};

pub use migrations::{latest, migrate_only, migration_status};

/// The PostgreSQL store. Cheap to share behind an `Arc`.
pub struct PgStore {
    pool: Pool,
    key: Arc<MasterKey>,
    writer: writer::Writer,
}

impl PgStore {
    /// Connects, migrates the schema (refusing a newer one), checks the master key against the
    /// database's and starts the writer.
    pub async fn open(url: &str, key: MasterKey, opts: StoreOptions) -> Result<PgStore, StoreError> {
        let pool = pool(url, &opts)?;
        migrations::migrate(&pool).await?;
        migrations::check_key(&pool, &key).await?;
        let writer = writer::Writer::spawn(pool.clone(), opts.observer.clone());
        Ok(PgStore { pool, key: Arc::new(key), writer })
    }

    /// A pooled connection, or [`StoreError::Unavailable`] when none can be had in time.
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        Ok(self.pool.get().await?)
    }
}

/// A pool for `url` with the options' size and timeouts.
fn pool(url: &str, opts: &StoreOptions) -> Result<Pool, StoreError> {
    let mut cfg: tokio_postgres::Config =
        url.parse().map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL '{}': {e}", redact_url(url))))?;
    cfg.connect_timeout(opts.connect_timeout);
    if cfg.get_application_name().is_none() {
        cfg.application_name("tw-cli");
    }
    // The statement timeout and durability travel with the connection, after any options the URL
    // sets: a 2xx is sent after a COMMIT flushed to PostgreSQL's WAL, whatever the server's
    // default for synchronous_commit. A session that stalls inside a transaction (a process
    // frozen or cut off while it holds the intake lock) is ended by the server after twice the
    // statement timeout, and TCP keepalives notice a vanished peer within about a minute, so the
    // other instances are not held for the kernel's two hours.
    let ms = opts.statement_timeout.as_millis().max(1);
    let timeout = format!("-c statement_timeout={ms} -c idle_in_transaction_session_timeout={} -c synchronous_commit=on", ms * 2);
    cfg.keepalives(true);
    cfg.keepalives_idle(std::time::Duration::from_secs(30));
    cfg.keepalives_interval(std::time::Duration::from_secs(10));
    cfg.keepalives_retries(3);
    let options = match cfg.get_options() {
        Some(o) if !o.is_empty() => format!("{o} {timeout}"),
        _ => timeout,
    };
    cfg.options(&options);
    let manager = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(opts.pool_size.max(2))
        .wait_timeout(Some(opts.connect_timeout))
        .create_timeout(Some(opts.connect_timeout))
        .recycle_timeout(Some(opts.connect_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Config(format!("cannot build the PostgreSQL pool: {e}")))
}

/// A plain connection to `url`, its driver task spawned: for administration (creating and
/// dropping the databases of tests and benchmarks), not for the store, which has its pool.
pub async fn connect_admin(url: &str, timeout: std::time::Duration) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut cfg: tokio_postgres::Config = url.parse()?;
    cfg.connect_timeout(timeout);
    let (client, conn) = cfg.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Creates the database `name` (letters, digits and `_` only: it is not quoted).
pub async fn create_database(client: &tokio_postgres::Client, name: &str) -> Result<(), tokio_postgres::Error> {
    debug_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name}");
    client.batch_execute(&format!("CREATE DATABASE {name}")).await
}

/// Drops the database `name` if it exists, closing the connections left to it.
pub async fn drop_database(client: &tokio_postgres::Client, name: &str) -> Result<(), tokio_postgres::Error> {
    debug_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name}");
    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await
}

/// `url` with its database name replaced by `db` (query parameters kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// `url` with its password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    // postgres://user:password@host/... : the password sits between the first ':' after the
    // scheme and the last '@' before the path.
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let mut out = url.to_string();
    if let Some(at) = authority.rfind('@')
        && let Some(colon) = authority[..at].find(':')
    {
        out.replace_range(scheme_end + colon + 1..scheme_end + at, "***");
    }
    // A password may also come as a query parameter.
    if let Some(q) = out.find("password=") {
        let end = out[q..].find('&').map_or(out.len(), |e| q + e);
        out.replace_range(q + "password=".len()..end, "***");
    }
    out
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        let code = e.code().cloned();
        match code {
            Some(c) if c == SqlState::UNIQUE_VIOLATION => StoreError::UniqueViolation(Box::new(e)),
            Some(c) if c == SqlState::T_R_SERIALIZATION_FAILURE || c == SqlState::T_R_DEADLOCK_DETECTED => {
                StoreError::Conflict(Box::new(e))
            }
            Some(c) if is_unavailable_code(&c) => StoreError::Unavailable(Box::new(e)),
            Some(_) => StoreError::Database(Box::new(e)),
            // No SQL state: the connection broke or could not be made.
            None => StoreError::Unavailable(Box::new(e)),
        }
    }
}

/// SQL states that mean "the server cannot do it now", not "this request is wrong".
fn is_unavailable_code(c: &SqlState) -> bool {
    let class = &c.code()[..2];
    // 08: connection exception; 53: insufficient resources (disk full, too many connections);
    // 57: operator intervention (shutdown, statement timeout); 58: system error (I/O).
    matches!(class, "08" | "53" | "57" | "58") || *c == SqlState::READ_ONLY_SQL_TRANSACTION
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(Box::new(other)),
        }
    }
}

/// PostgreSQL text cannot hold NUL characters; a sender's text may. They become U+FFFD, so one
/// odd alert cannot fail the batch it shares with others.
fn pg_text(s: &str) -> String {
    if s.contains('\0') { s.replace('\0', "\u{FFFD}") } else { s.to_string() }
}

fn pg_opt_text(s: &Option<String>) -> Option<String> {
    s.as_deref().map(pg_text)
}

/// Runs a statement through the connection's statement cache.
async fn query(c: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query(&st, params).await?)
}

async fn query_opt(c: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, StoreError> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&st, params).await?)
}

async fn query_one(c: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, StoreError> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query_one(&st, params).await?)
}

async fn execute(c: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.execute(&st, params).await?)
}

/// Runs a statement as the unnamed statement, in one round trip: planned for these parameters
/// every time, never from the connection's statement cache. For statements whose plan must
/// follow the table's size or the parameters: a cached generic plan, made while a table was
/// empty or had no statistics (a new database; autovacuum off), can read the whole table on
/// every call once it has grown (the intake's dedupe lookup did: 2.7x slower within 20 s).
async fn query_planned<C: tokio_postgres::GenericClient + Sync>(
    c: &C,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<Vec<Row>, StoreError> {
    Ok(c.query_typed(sql, params).await?)
}

/// Runs statements in the order given, sent together (pipelined) so that they cost one round
/// trip instead of one each; all must succeed. They run on the server one after another as
/// sent, so a later one may rely on an earlier one (a foreign key, a lock order). Every
/// statement is prepared first, one by one: were a preparation still pending when the others
/// were sent, their order would be that of the answers' wake-ups.
async fn execute_pipelined(c: &impl GenericClient, writes: &[(&str, &[&(dyn ToSql + Sync)])]) -> Result<Vec<u64>, StoreError> {
    let mut statements = Vec::with_capacity(writes.len());
    for (sql, _) in writes {
        statements.push(c.prepare_cached(sql).await?);
    }
    // `try_join_all` polls its futures in order, and each sends its statement on its first poll.
    let runs = statements.iter().zip(writes).map(|(st, (_, params))| c.execute(st, params));
    Ok(futures_util::future::try_join_all(runs).await?)
}

/// For the engine's own tests that read plans.
#[cfg(test)]
pub(crate) mod plans {
    /// A new database at the latest schema and a connection to it; `None` when no PostgreSQL
    /// answers (see [`crate::testing::TestDatabase::create`]).
    pub async fn migrated() -> Option<(crate::testing::TestDatabase, tokio_postgres::Client)> {
        let db = crate::testing::TestDatabase::create().await?;
        super::migrations::migrate_only(&db.url, &crate::StoreOptions::default()).await.unwrap();
        let c = crate::testing::connect(&db.url).await.unwrap();
        Some((db, c))
    }

    /// The lines of an `EXPLAIN`, as one text.
    pub fn text(rows: &[tokio_postgres::Row]) -> String {
        rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact_url("postgres://tw:s3cret@db:5432/tw"), "postgres://tw:***@db:5432/tw");
        assert_eq!(redact_url("postgres://tw@db/tw"), "postgres://tw@db/tw");
        assert_eq!(
            redact_url("postgresql://u:p%40ss@h/d?password=x&sslmode=disable"),
            "postgresql://u:***@h/d?password=***&sslmode=disable"
        );
        assert_eq!(redact_url("postgres://h/d?password=abc"), "postgres://h/d?password=***");
    }

    #[test]
    fn nul_characters_are_replaced() {
        assert_eq!(pg_text("a\0b"), "a\u{FFFD}b");
        assert_eq!(pg_text("plain"), "plain");
    }
}
