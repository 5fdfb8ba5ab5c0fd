//! The embedded store: one SQLite file in WAL mode. Writes go through the group-commit
//! [`writer::Writer`]; reads use a small pool of read-only connections on blocking threads.
//!
//! Durability: WAL mode, and no write is answered before its commit's WAL frames are synced to
//! disk (the writer commits with `synchronous=NORMAL` and its sync thread `fdatasync`s the WAL
//! before answering, see `writer.rs`), so a 2xx survives power loss. One file per concern, as in
//! `postgres/`.

mod api_keys;
mod audit;
mod checkpoint;
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
mod wal_writes;
mod writer;

use crate::{MasterKey, StoreError};
use chrono::{DateTime, SecondsFormat, Utc};
pub use migrations::{latest, migrate_file, migration_status};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use writer::Writer;

/// Read connections kept open for reuse.
const READ_POOL_SIZE: usize = 8;
/// Prepared statements kept per read connection (rusqlite keeps 16 by default).
const READ_STATEMENT_CACHE: usize = 128;

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    writer: Writer,
    reads: Arc<ReadPool>,
    key: Arc<MasterKey>,
}

struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(c);
        }
        let c = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        // Every filter combination of a listing is a statement of its own: keep them all prepared.
        c.set_prepared_statement_cache_capacity(READ_STATEMENT_CACHE);
        Ok(c)
    }

    fn give_back(&self, c: Connection) {
        // A connection left inside a transaction (a failed COMMIT) would pin an old snapshot.
        if !c.is_autocommit() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < READ_POOL_SIZE {
            idle.push(c);
        }
    }
}

/// The database file inside a data dir.
pub const DB_FILE: &str = "tw.db";

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies migrations, checks that `key`
    /// is the key the database's secrets were encrypted with, and starts the writer.
    pub fn open(path: &Path, key: MasterKey) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_observed(path, key, None)
    }

    /// Like [`SqliteStore::open`], telling `observer` about every committed batch.
    pub fn open_observed(path: &Path, key: MasterKey, observer: Option<Arc<dyn crate::CommitObserver>>) -> Result<SqliteStore, StoreError> {
        let mut conn = open_write_connection(path)?;
        migrations::migrate(&mut conn)?;
        migrations::check_key(&conn, &key)?;
        let writer = Writer::spawn(conn, observer).map_err(|e| StoreError::Config(format!("cannot start writer: {e}")))?;
        Ok(SqliteStore { writer, reads: Arc::new(ReadPool { path: path.to_path_buf(), idle: Mutex::new(Vec::new()) }), key: Arc::new(key) })
    }

    /// Parses `sqlite://PATH` (also `sqlite:PATH`) into a path.
    pub fn path_from_url(url: &str) -> Option<PathBuf> {
        let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
        let rest = rest.split('?').next().unwrap_or(rest);
        (!rest.is_empty()).then(|| PathBuf::from(rest))
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &MasterKey) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.reads.clone();
        let key = self.key.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let result = f(&conn, &key);
            pool.give_back(conn);
            result
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

/// The write connection's page cache, in KiB (it grows to this as pages are read, then stays).
const WRITER_CACHE_KIB: i64 = 16 * 1024;

/// The one write connection to the file at `path` (created private, with its dir, if missing), in
/// WAL mode with `synchronous=FULL` until the writer takes it (see `writer.rs`).
fn open_write_connection(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::files::create_private_dir(dir).map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
    }
    // Created private before SQLite opens it: its -wal and -shm files take the same mode.
    crate::files::create_private_file(path).map_err(|e| StoreError::Config(format!("cannot create {}: {e}", path.display())))?;
    // Through the VFS that writes each commit's WAL frames at once (`wal_writes.rs`).
    wal_writes::register().map_err(StoreError::Config)?;
    let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), wal_writes::VFS_NAME)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk when it returns (the migrations). The writer then commits with
    // NORMAL and syncs each commit on its own thread before answering (`writer.rs`).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // The writer's page cache, 16 MiB instead of SQLite's 2 MiB. A batch whose pages outgrow the
    // cache is spilled into the WAL page by page before its commit and read back: with 256 KiB
    // alerts (64 pages each) every batch did, writing each page to the WAL twice. A larger store
    // also keeps more of the b-trees' upper pages that every insert passes through.
    // A negative size is in KiB.
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    // The writer's steady set of statements (intake, savepoints, tallies, queue and triage) is
    // larger than rusqlite's default cache of 16: evicted ones would be parsed again each batch.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// The key of an incident's row in `incident_payloads`: its number as one integer,
/// `year * 2^32 + seq` (fixed for the incident's life, growing with the number; schema_v15.sql).
/// [`payload_key_sql!`] is the same key in SQL.
fn payload_key(year: i32, seq: i64) -> i64 {
    i64::from(year) * (1 << 32) + seq
}

/// [`payload_key`] of the incident row `$table` (a table name or alias), as SQL text.
macro_rules! payload_key_sql {
    ($table:literal) => {
        concat!($table, ".year * 4294967296 + ", $table, ".seq")
    };
}
use payload_key_sql;

/// The incident's raw payload, selected after `INCIDENT_COLUMNS` from `incidents`: payloads live
/// in a table of their own, so that listings read narrow rows, keyed by [`payload_key`].
const INCIDENT_RAW: &str = concat!("(SELECT p.raw_payload FROM incident_payloads p WHERE p.number = ", payload_key_sql!("incidents"), ")");

/// Timestamps are stored as fixed-width RFC 3339 UTC text, so text order is time order.
fn ts(t: DateTime<Utc>) -> String {
    tw_core::timestamps::format(&t, SecondsFormat::Micros)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|e| StoreError::Corrupt(format!("timestamp '{s}': {e}")))
}

fn parse_opt_ts(s: Option<String>) -> Result<Option<DateTime<Utc>>, StoreError> {
    s.as_deref().map(parse_ts).transpose()
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if is_unique_violation(&e) {
            StoreError::UniqueViolation(Box::new(e))
        } else if is_unavailable(&e) {
            StoreError::Unavailable(Box::new(e))
        } else {
            StoreError::Database(Box::new(e))
        }
    }
}

/// The database cannot write now (locked past the busy timeout, disk full, I/O error): nothing
/// was written, and a later try may succeed.
fn is_unavailable(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure | CannotOpen | ReadOnly | OutOfMemory)
    )
}

/// Query plans, for the tests that check a statement searches an index instead of scanning.
#[cfg(test)]
pub(super) mod plans {
    /// A connection on an empty database with this build's schema. The planner sees no statistics,
    /// as on a server's database (which never runs `ANALYZE`).
    pub fn migrated() -> rusqlite::Connection {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        super::migrations::migrate(&mut conn).unwrap();
        conn
    }

    /// Every plan step of `sql`, as `EXPLAIN QUERY PLAN` words it.
    pub fn plan(conn: &rusqlite::Connection, sql: &str, params: impl rusqlite::Params) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt.query_map(params, |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::types::Value;

    /// SQLite is built as `.cargo/config.toml` says: statement journals stay in memory up to 4 MiB
    /// (SQLite's 64 KiB sent each batch of triage writes to a new file in /var/tmp), and neither
    /// memory statistics nor the shared page cache's global mutex.
    #[test]
    fn sqlite_is_built_with_the_workspace_flags() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut stmt = conn.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        for wanted in ["STMTJRNL_SPILL=4194304", "DEFAULT_MEMSTATUS=0"] {
            assert!(options.iter().any(|o| o == wanted), "{wanted} missing from {options:?}");
        }
        assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
    }

    /// No SQLite statement of the crate binds a bare count (`LIMIT ?n`, `OFFSET ?`): each would be
    /// compiled again on every run ([`crate::rows::bound_count`]). The test below runs a few; this
    /// reads every source the SQLite engine's statements are written in.
    #[test]
    fn no_sqlite_statement_binds_a_bare_count() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join("sqlite")).unwrap().map(|e| e.unwrap().path()).collect();
        files.extend(["listing.rs", "rows.rs"].map(|f| dir.join(f)));
        let mut checked = 0;
        for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "rs" || e == "sql")) {
            let text = std::fs::read_to_string(file).unwrap();
            for (i, line) in text.lines().enumerate() {
                // Only code: this test's own text and the doc comments quote the bare form.
                let code = line.split("//").next().unwrap_or("");
                for keyword in ["LIMIT", "OFFSET"] {
                    let bare = format!("{keyword} ?");
                    assert!(!code.contains(&bare), "{}:{}: a bare bound count: {line}", file.display(), i + 1);
                }
            }
            checked += 1;
        }
        assert!(checked > 10, "only {checked} files read");
    }

    /// A statement with a bound `LIMIT` or `OFFSET` is compiled once ([`crate::rows::bound_count`]):
    /// written `LIMIT ?n`, SQLite compiled the triage and queue claims again on every run.
    #[test]
    fn bound_counts_leave_cached_statements_compiled() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        super::migrations::migrate(&mut conn).unwrap();
        let t = || Value::Text("2026-01-01T00:00:00Z".into());
        let n = |v: i64| Value::Integer(v);
        let cases: Vec<(String, Vec<Value>)> = vec![
            (super::queue::CLAIM_QUEUED.into(), vec![t(), t(), n(8)]),
            (super::triage::CLAIM_JOBS.into(), vec![t(), t(), n(8)]),
            (crate::rows::newest_deliveries_sql('?', "id", ""), vec![Value::Text("s".into()), n(50)]),
            (crate::rows::retention_edge_sql('?'), vec![Value::Text("s".into()), n(1), n(10)]),
        ];
        for (sql, params) in cases {
            for _ in 0..3 {
                let mut stmt = conn.prepare_cached(&sql).unwrap();
                let mut rows = stmt.query(rusqlite::params_from_iter(params.iter())).unwrap();
                while rows.next().unwrap().is_some() {}
            }
            let again = conn.prepare_cached(&sql).unwrap().get_status(rusqlite::StatementStatus::RePrepare);
            assert_eq!(again, 0, "compiled again: {sql}");
        }
    }

    /// A transaction that touches more pages than SQLite's default cache (2 MiB) keeps them until
    /// its commit. With the default, SQLite spilled them into the WAL one by one in the middle of
    /// the batch and read them back: with 256 KiB alerts, 160,000 page writes and 330,000 page
    /// reads more for 3,000 deliveries (`perf record -e raw_syscalls:sys_enter` on the writer).
    #[test]
    fn the_writer_keeps_a_large_batch_in_its_cache_until_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = super::open_write_connection(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (b BLOB NOT NULL)").unwrap();
        let wal = super::writer::wal_path(&path);
        let wal_len = || std::fs::metadata(&wal).map_or(0, |m| m.len());
        let committed = wal_len();
        conn.execute_batch("BEGIN").unwrap();
        // About 6 MiB of pages: three times SQLite's default cache, within the writer's.
        for _ in 0..1500 {
            conn.execute("INSERT INTO t (b) VALUES (zeroblob(4000))", []).unwrap();
        }
        assert_eq!(wal_len(), committed, "pages were spilled into the WAL before the commit");
        conn.execute_batch("COMMIT").unwrap();
        assert!(wal_len() > committed + 1500 * 4096, "the commit wrote its pages: {} bytes", wal_len());
    }
}
