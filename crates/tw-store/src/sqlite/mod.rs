//! The embedded store: one SQLite file in WAL mode. Writes go through the group-commit
//! [`writer::Writer`]; reads use a small pool of read-only connections on blocking threads.

mod writer;

use crate::api_key::{ApiKeyRecord, Scope};
use crate::model::*;
use crate::{MasterKey, Store, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tw_core::{Format, IncidentNumber, Secret, Severity, SourceMode, SourceName};
use uuid::Uuid;
pub use writer::Writer;

const MIGRATIONS: &[(i64, &str)] =
    &[(1, include_str!("schema_v1.sql")), (2, include_str!("schema_v2.sql")), (3, include_str!("schema_v3.sql"))];
const KEY_CHECK_AAD: &str = "tw-key-check";
const KEY_CHECK_TEXT: &str = "tw master key check";
/// Read connections kept open for reuse.
const READ_POOL_SIZE: usize = 8;

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
        Ok(c)
    }

    fn give_back(&self, c: Connection) {
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
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::create_private_dir(dir).map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
        }
        // Created private before SQLite opens it: its -wal and -shm files take the same mode.
        crate::files::create_private_file(path).map_err(|e| StoreError::Config(format!("cannot create {}: {e}", path.display())))?;
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk when it returns, so an acknowledged event survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        check_key(&conn, &key)?;
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

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")?;
    for (version, sql) in MIGRATIONS {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let done: bool = tx.query_row("SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE version = ?1)", [version], |r| r.get(0))?;
        if !done {
            tx.execute_batch(sql)?;
            tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)", params![version, ts(Utc::now())])?;
        }
        tx.commit()?;
    }
    Ok(())
}

fn check_key(conn: &Connection, key: &MasterKey) -> Result<(), StoreError> {
    let stored: Option<Vec<u8>> = conn.query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| r.get(0)).optional()?;
    match stored {
        Some(blob) => match key.decrypt(KEY_CHECK_AAD, &blob) {
            Ok(s) if s.expose() == KEY_CHECK_TEXT => Ok(()),
            _ => Err(StoreError::Config(
                "the master key does not match this database: set TW_MASTER_KEY to the key it was created with, or restore the data dir's master.key".into(),
            )),
        },
        None => {
            let blob = key.encrypt(KEY_CHECK_AAD, &Secret::new(KEY_CHECK_TEXT))?;
            conn.execute("INSERT INTO meta (key, value) VALUES ('key_check', ?1)", [blob])?;
            Ok(())
        }
    }
}

/// Timestamps are stored as fixed-width RFC 3339 UTC text, so text order is time order.
fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|e| StoreError::Corrupt(format!("timestamp '{s}': {e}")))
}

fn parse_opt_ts(s: Option<String>) -> Result<Option<DateTime<Utc>>, StoreError> {
    s.as_deref().map(parse_ts).transpose()
}

fn corrupt<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

// ---------------------------------------------------------------- sources

const SOURCE_COLUMNS: &str = "name, secret_enc, previous_secret_enc, previous_secret_expires_at, enabled, auto_triage, \
    playbook, format, mode, severity_mapping, timestamp_tolerance_secs, max_body_bytes, managed_by_config, created_at, \
    updated_at, secret_rotated_at, last_delivery_at, delivery_count, error_count";

struct SourceRow {
    name: String,
    secret_enc: Vec<u8>,
    previous_secret_enc: Option<Vec<u8>>,
    previous_secret_expires_at: Option<String>,
    enabled: bool,
    auto_triage: bool,
    playbook: Option<String>,
    format: Option<String>,
    mode: String,
    severity_mapping: String,
    timestamp_tolerance_secs: i64,
    max_body_bytes: i64,
    managed_by_config: bool,
    created_at: String,
    updated_at: String,
    secret_rotated_at: Option<String>,
    last_delivery_at: Option<String>,
    delivery_count: i64,
    error_count: i64,
}

impl SourceRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<SourceRow> {
        Ok(SourceRow {
            name: r.get(0)?,
            secret_enc: r.get(1)?,
            previous_secret_enc: r.get(2)?,
            previous_secret_expires_at: r.get(3)?,
            enabled: r.get(4)?,
            auto_triage: r.get(5)?,
            playbook: r.get(6)?,
            format: r.get(7)?,
            mode: r.get(8)?,
            severity_mapping: r.get(9)?,
            timestamp_tolerance_secs: r.get(10)?,
            max_body_bytes: r.get(11)?,
            managed_by_config: r.get(12)?,
            created_at: r.get(13)?,
            updated_at: r.get(14)?,
            secret_rotated_at: r.get(15)?,
            last_delivery_at: r.get(16)?,
            delivery_count: r.get(17)?,
            error_count: r.get(18)?,
        })
    }

    fn decode(self, key: &MasterKey) -> Result<SourceRecord, StoreError> {
        let name = SourceName::parse(&self.name).map_err(corrupt("source name"))?;
        let secret = key.decrypt(name.as_str(), &self.secret_enc)?;
        let previous_secret = match (self.previous_secret_enc, self.previous_secret_expires_at) {
            (Some(blob), Some(until)) => Some((key.decrypt(name.as_str(), &blob)?, parse_ts(&until)?)),
            _ => None,
        };
        let settings = SourceSettings {
            enabled: self.enabled,
            auto_triage: self.auto_triage,
            playbook: self.playbook,
            format: self.format.as_deref().map(str::parse::<Format>).transpose().map_err(corrupt("format"))?,
            mode: self.mode.parse::<SourceMode>().map_err(corrupt("mode"))?,
            severity_mapping: serde_json::from_str(&self.severity_mapping).map_err(corrupt("severity_mapping"))?,
            timestamp_tolerance_secs: self.timestamp_tolerance_secs,
            max_body_bytes: self.max_body_bytes.max(0) as u64,
        };
        Ok(SourceRecord {
            secret_fingerprint: key.fingerprint(&secret),
            name,
            secret,
            previous_secret,
            settings,
            managed_by_config: self.managed_by_config,
            created_at: parse_ts(&self.created_at)?,
            updated_at: parse_ts(&self.updated_at)?,
            secret_rotated_at: parse_opt_ts(self.secret_rotated_at)?,
            last_delivery_at: parse_opt_ts(self.last_delivery_at)?,
            delivery_count: self.delivery_count.max(0) as u64,
            error_count: self.error_count.max(0) as u64,
        })
    }
}

fn load_source(conn: &Connection, key: &MasterKey, name: &str) -> Result<Option<SourceRecord>, StoreError> {
    let sql = format!("SELECT {SOURCE_COLUMNS} FROM sources WHERE name = ?1");
    let row = conn.query_row(&sql, [name], SourceRow::from_row).optional()?;
    row.map(|r| r.decode(key)).transpose()
}

fn mapping_json(s: &SourceSettings) -> String {
    serde_json::to_string(&s.severity_mapping).unwrap_or_else(|_| "{}".into())
}

fn write_settings(conn: &Connection, name: &str, s: &SourceSettings, now: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE sources SET enabled = ?2, auto_triage = ?3, playbook = ?4, format = ?5, mode = ?6, severity_mapping = ?7, \
         timestamp_tolerance_secs = ?8, max_body_bytes = ?9, updated_at = ?10 WHERE name = ?1",
        params![
            name,
            s.enabled,
            s.auto_triage,
            s.playbook,
            s.format.map(Format::as_str),
            s.mode.as_str(),
            mapping_json(s),
            s.timestamp_tolerance_secs,
            s.max_body_bytes as i64,
            now
        ],
    )?;
    Ok(())
}

fn insert_source(conn: &Connection, key: &MasterKey, new: &NewSource, managed: bool, now: &str) -> Result<(), StoreError> {
    let enc = key.encrypt(new.name.as_str(), &new.secret)?;
    let s = &new.settings;
    conn.execute(
        "INSERT INTO sources (name, secret_enc, enabled, auto_triage, playbook, format, mode, severity_mapping, \
         timestamp_tolerance_secs, max_body_bytes, managed_by_config, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)",
        params![
            new.name.as_str(),
            enc,
            s.enabled,
            s.auto_triage,
            s.playbook,
            s.format.map(Format::as_str),
            s.mode.as_str(),
            mapping_json(s),
            s.timestamp_tolerance_secs,
            s.max_body_bytes as i64,
            managed,
            now
        ],
    )?;
    Ok(())
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

// ---------------------------------------------------------------- incidents

const INCIDENT_COLUMNS: &str = "id, year, seq, source, format, title, description, severity, vendor_severity, status, \
    event_type, event_time, received_at, external_id, entities, delivery_count, last_delivery_at, auto_triage, playbook, request_id, triage";

fn incident_from_row(r: &Row<'_>, with_raw: bool) -> Result<Incident, StoreError> {
    let id: String = r.get(0)?;
    let source: String = r.get(3)?;
    let format: String = r.get(4)?;
    let severity: String = r.get(7)?;
    let entities: String = r.get(14)?;
    Ok(Incident {
        id: Uuid::parse_str(&id).map_err(corrupt("incident id"))?,
        incident_number: IncidentNumber::new(r.get(1)?, r.get(2)?),
        source: SourceName::parse(&source).map_err(corrupt("source"))?,
        format: format.parse().map_err(corrupt("format"))?,
        title: r.get(5)?,
        description: r.get(6)?,
        severity: severity.parse::<Severity>().map_err(corrupt("severity"))?,
        vendor_severity: r.get(8)?,
        status: r.get(9)?,
        event_type: r.get(10)?,
        event_time: parse_opt_ts(r.get(11)?)?,
        received_at: parse_ts(&r.get::<_, String>(12)?)?,
        external_id: r.get(13)?,
        entities: serde_json::from_str(&entities).map_err(corrupt("entities"))?,
        delivery_count: r.get::<_, i64>(15)?.max(0) as u64,
        last_delivery_at: parse_ts(&r.get::<_, String>(16)?)?,
        auto_triage: r.get(17)?,
        playbook: r.get(18)?,
        request_id: r.get(19)?,
        triage: r.get::<_, Option<String>>(20)?.map(|t| serde_json::from_str(&t)).transpose().map_err(corrupt("triage"))?,
        raw: if with_raw { Some(r.get(21)?) } else { None },
    })
}

/// Creates the incident or counts the delivery on the existing one, in the caller's transaction.
fn ingest_in(conn: &Connection, req: &IngestRequest) -> Result<IngestOutcome, StoreError> {
    let dedupe_key = req.dedupe_key();
    let now = ts(req.received_at);
    let existing: Option<(String, i32, i64, i64)> = conn
        .query_row(
            "UPDATE incidents SET delivery_count = delivery_count + 1, last_delivery_at = ?3 \
             WHERE source = ?1 AND dedupe_key = ?2 RETURNING id, year, seq, delivery_count",
            params![req.source.as_str(), dedupe_key, now],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    bump_source_delivery(conn, req.source.as_str(), &now)?;
    if let Some((id, year, seq, count)) = existing {
        let incident = IncidentRef { id: Uuid::parse_str(&id).map_err(corrupt("incident id"))?, number: IncidentNumber::new(year, seq) };
        return Ok(IngestOutcome::Duplicate { incident, delivery_count: count.max(0) as u64 });
    }
    let year = chrono::Datelike::year(&req.received_at);
    let seq: i64 = conn.query_row(
        "INSERT INTO incident_counters (year, last_seq) VALUES (?1, 1) \
         ON CONFLICT (year) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq",
        [year],
        |r| r.get(0),
    )?;
    let id = Uuid::now_v7();
    let a = &req.alert;
    let entities = serde_json::to_string(&a.entities).map_err(corrupt("entities"))?;
    conn.execute(
        "INSERT INTO incidents (id, year, seq, source, format, title, description, severity, vendor_severity, event_type, \
         event_time, received_at, external_id, dedupe_key, entities, raw_payload, last_delivery_at, auto_triage, playbook, request_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?12, ?17, ?18, ?19)",
        params![
            id.to_string(),
            year,
            seq,
            req.source.as_str(),
            a.format.as_str(),
            a.title,
            a.description,
            a.severity.as_str(),
            a.vendor_severity,
            a.event_type,
            a.event_time.map(ts),
            now,
            a.external_id,
            dedupe_key,
            entities,
            req.raw,
            req.auto_triage,
            req.playbook,
            req.request_id,
        ],
    )?;
    if let (true, Some(playbook)) = (req.auto_triage, &req.playbook) {
        // Same transaction: no incident from an auto-triage source without its job.
        insert_triage_job(conn, id, playbook, &serde_json::Map::new(), req.triage_max_attempts, "auto", req.received_at)?;
    }
    Ok(IngestOutcome::Created(IncidentRef { id, number: IncidentNumber::new(year, seq) }))
}

fn bump_source_delivery(conn: &Connection, source: &str, now: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE sources SET delivery_count = delivery_count + 1, \
         last_delivery_at = CASE WHEN last_delivery_at IS NULL OR last_delivery_at < ?2 THEN ?2 ELSE last_delivery_at END \
         WHERE name = ?1",
        params![source, now],
    )?;
    Ok(())
}

fn insert_dead_letter(conn: &Connection, l: &NewDeadLetter) -> Result<String, StoreError> {
    let id = format!("dl-{}", Uuid::now_v7().simple());
    conn.execute(
        "INSERT INTO dead_letters (id, source, reason, raw_payload, received_at, request_id, queue_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![id, l.source.as_str(), l.reason, l.raw, ts(l.received_at), l.request_id, l.queue_id],
    )?;
    Ok(id)
}

// ---------------------------------------------------------------- triage

const JOB_COLUMNS: &str = "id, incident_id, playbook, variables, status, attempts, max_attempts, run_after, error, requested_by, \
    created_at, started_at, completed_at";

fn job_from_row(r: &Row<'_>) -> Result<TriageJob, StoreError> {
    let incident_id: String = r.get(1)?;
    let variables: String = r.get(3)?;
    let status: String = r.get(4)?;
    Ok(TriageJob {
        job_id: r.get(0)?,
        incident_id: Uuid::parse_str(&incident_id).map_err(corrupt("incident id"))?,
        playbook: r.get(2)?,
        variables: serde_json::from_str(&variables).map_err(corrupt("variables"))?,
        status: TriageJobStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("job status '{status}'")))?,
        attempts: r.get::<_, i64>(5)?.clamp(0, u32::MAX as i64) as u32,
        max_attempts: r.get::<_, i64>(6)?.clamp(0, u32::MAX as i64) as u32,
        run_after: parse_ts(&r.get::<_, String>(7)?)?,
        error: r.get(8)?,
        requested_by: r.get(9)?,
        created_at: parse_ts(&r.get::<_, String>(10)?)?,
        started_at: parse_opt_ts(r.get(11)?)?,
        completed_at: parse_opt_ts(r.get(12)?)?,
    })
}

fn load_job(conn: &Connection, id: &str) -> Result<Option<TriageJob>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM triage_jobs WHERE id = ?1"))?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(r) => job_from_row(r).map(Some),
        None => Ok(None),
    }
}

fn load_incident(conn: &Connection, id: &str) -> Result<Option<Incident>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {INCIDENT_COLUMNS}, raw_payload FROM incidents WHERE id = ?1"))?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(r) => incident_from_row(r, true).map(Some),
        None => Ok(None),
    }
}

/// Writes a job's state on its incident, unless a newer job of that incident exists: an old run
/// finishing late must not overwrite a newer triage. True when written.
fn set_job_triage(conn: &Connection, incident_id: &str, job_id: &str, triage: &serde_json::Value) -> Result<bool, StoreError> {
    let latest: Option<String> =
        conn.prepare_cached("SELECT MAX(id) FROM triage_jobs WHERE incident_id = ?1")?.query_row([incident_id], |r| r.get(0))?;
    if latest.as_deref() != Some(job_id) {
        return Ok(false);
    }
    set_incident_triage(conn, incident_id, triage)?;
    Ok(true)
}

fn set_incident_triage(conn: &Connection, incident_id: &str, triage: &serde_json::Value) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE incidents SET triage = ?2 WHERE id = ?1")?.execute(params![incident_id, triage.to_string()])?;
    Ok(())
}

fn insert_triage_job(
    conn: &Connection,
    incident_id: Uuid,
    playbook: &str,
    variables: &serde_json::Map<String, serde_json::Value>,
    max_attempts: u32,
    requested_by: &str,
    now: DateTime<Utc>,
) -> Result<TriageJob, StoreError> {
    let id = format!("job-{}", Uuid::now_v7().simple());
    let vars = serde_json::Value::Object(variables.clone()).to_string();
    conn.prepare_cached(
        "INSERT INTO triage_jobs (id, incident_id, playbook, variables, status, max_attempts, run_after, requested_by, created_at) \
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?6)",
    )?
    .execute(params![id, incident_id.to_string(), playbook, vars, max_attempts.max(1), ts(now), requested_by])?;
    set_incident_triage(conn, &incident_id.to_string(), &serde_json::json!({"status": "pending", "job_id": id, "playbook": playbook}))?;
    load_job(conn, &id)?.ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished")))
}

// ---------------------------------------------------------------- deliveries

const DELIVERY_COLUMNS: &str = "request_id, source, received_at, status, code, incident_id, incident_number, queue_id, duplicate, body_len, latency_ms, body, verified";

fn delivery_from_row(r: &Row<'_>) -> Result<(Delivery, Option<Vec<u8>>), StoreError> {
    let source: String = r.get(1)?;
    let incident_id: Option<String> = r.get(5)?;
    let number: Option<String> = r.get(6)?;
    let d = Delivery {
        request_id: r.get(0)?,
        source: SourceName::parse(&source).map_err(corrupt("source"))?,
        received_at: parse_ts(&r.get::<_, String>(2)?)?,
        status: r.get::<_, i64>(3)?.clamp(0, 999) as u16,
        code: r.get(4)?,
        incident_id: incident_id.as_deref().map(Uuid::parse_str).transpose().map_err(corrupt("incident id"))?,
        incident_number: number.as_deref().map(str::parse).transpose().map_err(corrupt("incident number"))?,
        queue_id: r.get(7)?,
        duplicate: r.get(8)?,
        body_len: r.get::<_, Option<i64>>(9)?.map(|n| n.max(0) as u64),
        latency_ms: r.get(10)?,
        verified: r.get(12)?,
        raw_payload: None,
    };
    Ok((d, r.get(11)?))
}

// ---------------------------------------------------------------- queue

/// How many times a queued event is claimed before it is dead-lettered as poison.
pub const MAX_QUEUE_ATTEMPTS: i64 = 5;

/// Dead-letters a queued event (with its request id) and marks it failed, in one transaction.
fn fail_queued(conn: &Connection, id: &str, reason: &str, now: &str) -> Result<(), StoreError> {
    let (source, raw, received_at, request_id): (String, Vec<u8>, String, Option<String>) =
        conn.query_row("SELECT source, raw_payload, received_at, request_id FROM queue WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
    let letter = NewDeadLetter {
        source: SourceName::parse(&source).map_err(corrupt("source"))?,
        raw,
        reason: reason.to_string(),
        received_at: parse_ts(&received_at)?,
        request_id,
        queue_id: Some(id.to_string()),
    };
    insert_dead_letter(conn, &letter)?;
    conn.execute(
        // The payload now lives in the dead letter: the queue's copy goes.
        "UPDATE queue SET status = 'failed', error = ?2, processed_at = ?3, lease_until = NULL, raw_payload = x'' WHERE id = ?1",
        params![id, reason, now],
    )?;
    Ok(())
}

const QUEUE_COLUMNS: &str = "id, status, source, received_at, attempts, incident_id, incident_number, duplicate, error, processed_at";

fn queue_entry_from_row(r: &Row<'_>) -> Result<QueueEntry, StoreError> {
    let status: String = r.get(1)?;
    let source: String = r.get(2)?;
    let incident_id: Option<String> = r.get(5)?;
    let number: Option<String> = r.get(6)?;
    Ok(QueueEntry {
        queue_id: r.get(0)?,
        status: match status.as_str() {
            "processed" => QueueStatus::Processed,
            "failed" => QueueStatus::Failed,
            _ => QueueStatus::Pending,
        },
        source: SourceName::parse(&source).map_err(corrupt("source"))?,
        received_at: parse_ts(&r.get::<_, String>(3)?)?,
        attempts: r.get::<_, i64>(4)?.clamp(0, u32::MAX as i64) as u32,
        incident_id: incident_id.as_deref().map(Uuid::parse_str).transpose().map_err(corrupt("incident id"))?,
        incident_number: number.as_deref().map(str::parse).transpose().map_err(corrupt("incident number"))?,
        duplicate: r.get(7)?,
        error: r.get(8)?,
        processed_at: parse_opt_ts(r.get(9)?)?,
    })
}

fn load_queue_entry(conn: &Connection, id: &str) -> Result<Option<QueueEntry>, StoreError> {
    let sql = format!("SELECT {QUEUE_COLUMNS} FROM queue WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(r) => queue_entry_from_row(r).map(Some),
        None => Ok(None),
    }
}

// ---------------------------------------------------------------- trait

#[async_trait]
impl Store for SqliteStore {
    async fn create_source(&self, new: NewSource) -> Result<SourceRecord, StoreError> {
        let key = self.key.clone();
        self.writer
            .write(move |conn| {
                let now = ts(Utc::now());
                match insert_source(conn, &key, &new, false, &now) {
                    Err(StoreError::Database(e)) if is_unique_violation(&e) => {
                        return Err(StoreError::SourceExists(new.name.to_string()));
                    }
                    other => other?,
                }
                load_source(conn, &key, new.name.as_str())?.ok_or_else(|| StoreError::SourceNotFound(new.name.to_string()))
            })
            .await
    }

    async fn upsert_config_source(&self, new: NewSource) -> Result<SourceRecord, StoreError> {
        let key = self.key.clone();
        self.writer
            .write(move |conn| {
                let now = ts(Utc::now());
                let name = new.name.as_str();
                match load_source(conn, &key, name)? {
                    None => insert_source(conn, &key, &new, true, &now)?,
                    Some(old) => {
                        write_settings(conn, name, &new.settings, &now)?;
                        conn.execute("UPDATE sources SET managed_by_config = 1 WHERE name = ?1", [name])?;
                        if old.secret != new.secret {
                            // The config file changed the secret: the old one keeps its grace.
                            let enc = key.encrypt(name, &new.secret)?;
                            let old_enc = key.encrypt(name, &old.secret)?;
                            let until = Utc::now() + chrono::Duration::hours(24);
                            conn.execute(
                                "UPDATE sources SET secret_enc = ?2, previous_secret_enc = ?3, previous_secret_expires_at = ?4, \
                                 secret_rotated_at = ?5 WHERE name = ?1",
                                params![name, enc, old_enc, ts(until), now],
                            )?;
                        }
                    }
                }
                load_source(conn, &key, name)?.ok_or_else(|| StoreError::SourceNotFound(name.to_string()))
            })
            .await
    }

    async fn release_config_sources(&self, keep: &[SourceName]) -> Result<Vec<String>, StoreError> {
        let keep = serde_json::to_string(&keep.iter().map(SourceName::as_str).collect::<Vec<_>>()).map_err(corrupt("names"))?;
        self.writer
            .write(move |conn| {
                let names = conn
                    .prepare(
                        "UPDATE sources SET managed_by_config = 0 WHERE managed_by_config = 1 \
                         AND name NOT IN (SELECT value FROM json_each(?1)) RETURNING name",
                    )?
                    .query_map([keep], |r| r.get(0))?
                    .collect::<Result<Vec<String>, _>>()?;
                Ok(names)
            })
            .await
    }

    async fn get_source(&self, name: &SourceName) -> Result<Option<SourceRecord>, StoreError> {
        let name = name.clone();
        self.read(move |conn, key| load_source(conn, key, name.as_str())).await
    }

    async fn list_sources(&self) -> Result<Vec<SourceRecord>, StoreError> {
        self.read(move |conn, key| {
            let sql = format!("SELECT {SOURCE_COLUMNS} FROM sources ORDER BY name");
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map([], SourceRow::from_row)?;
            rows.map(|r| r.map_err(StoreError::from).and_then(|r| r.decode(key))).collect()
        })
        .await
    }

    async fn update_source(&self, name: &SourceName, patch: SourcePatch) -> Result<SourceRecord, StoreError> {
        let key = self.key.clone();
        let name = name.clone();
        self.writer
            .write(move |conn| {
                let now = ts(Utc::now());
                let mut current = load_source(conn, &key, name.as_str())?.ok_or_else(|| StoreError::SourceNotFound(name.to_string()))?;
                patch.apply(&mut current.settings);
                write_settings(conn, name.as_str(), &current.settings, &now)?;
                if let Some(secret) = &patch.secret {
                    let enc = key.encrypt(name.as_str(), secret)?;
                    conn.execute(
                        "UPDATE sources SET secret_enc = ?2, previous_secret_enc = NULL, previous_secret_expires_at = NULL, \
                         secret_rotated_at = ?3 WHERE name = ?1",
                        params![name.as_str(), enc, now],
                    )?;
                }
                load_source(conn, &key, name.as_str())?.ok_or_else(|| StoreError::SourceNotFound(name.to_string()))
            })
            .await
    }

    async fn delete_source(&self, name: &SourceName) -> Result<bool, StoreError> {
        let name = name.clone();
        self.writer.write(move |conn| Ok(conn.execute("DELETE FROM sources WHERE name = ?1", [name.as_str()])? > 0)).await
    }

    async fn rotate_secret(&self, name: &SourceName, new_secret: Secret, grace_until: DateTime<Utc>) -> Result<SourceRecord, StoreError> {
        let key = self.key.clone();
        let name = name.clone();
        self.writer
            .write(move |conn| {
                let n = name.as_str();
                let current = load_source(conn, &key, n)?.ok_or_else(|| StoreError::SourceNotFound(n.to_string()))?;
                let now = Utc::now();
                conn.execute(
                    "UPDATE sources SET secret_enc = ?2, previous_secret_enc = ?3, previous_secret_expires_at = ?4, \
                     secret_rotated_at = ?5, updated_at = ?5 WHERE name = ?1",
                    params![n, key.encrypt(n, &new_secret)?, key.encrypt(n, &current.secret)?, ts(grace_until), ts(now)],
                )?;
                load_source(conn, &key, n)?.ok_or_else(|| StoreError::SourceNotFound(n.to_string()))
            })
            .await
    }

    async fn ingest(&self, req: IngestRequest) -> Result<IngestOutcome, StoreError> {
        self.writer.write(move |conn| ingest_in(conn, &req)).await
    }

    async fn enqueue(&self, e: NewQueuedEvent) -> Result<String, StoreError> {
        self.writer
            .write(move |conn| {
                let id = format!("queue-{}", Uuid::now_v7().simple());
                let now = ts(e.received_at);
                conn.prepare_cached(
                    "INSERT INTO queue (id, source, raw_payload, request_key, received_at, request_id, status) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending')",
                )?
                .execute(params![id, e.source.as_str(), e.raw, e.request_key, now, e.request_id])?;
                Ok(id)
            })
            .await
    }

    async fn dead_letter(&self, letter: NewDeadLetter) -> Result<String, StoreError> {
        self.writer.write(move |conn| insert_dead_letter(conn, &letter)).await
    }

    async fn claim_queued(&self, limit: usize, lease_secs: i64) -> Result<Vec<QueuedEvent>, StoreError> {
        self.writer
            .write(move |conn| {
                let now = Utc::now();
                let mut stmt = conn.prepare_cached(
                    "UPDATE queue SET status = 'processing', attempts = attempts + 1, lease_until = ?1 \
                     WHERE id IN (SELECT id FROM queue WHERE status = 'pending' \
                                  OR (status = 'processing' AND lease_until < ?2) ORDER BY received_at LIMIT ?3) \
                     RETURNING id, source, raw_payload, request_key, received_at, request_id, attempts",
                )?;
                let rows = stmt.query_map(params![ts(now + chrono::Duration::seconds(lease_secs)), ts(now), limit as i64], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, i64>(6)?,
                    ))
                })?;
                let mut out = Vec::new();
                let mut poisoned = Vec::new();
                for row in rows {
                    let (id, source, raw, request_key, received_at, request_id, attempts) = row?;
                    if attempts > MAX_QUEUE_ATTEMPTS {
                        // Claimed this often without finishing: it crashes or stalls its worker.
                        poisoned.push((id, attempts));
                        continue;
                    }
                    out.push(QueuedEvent {
                        id,
                        source: SourceName::parse(&source).map_err(corrupt("source"))?,
                        raw,
                        request_key,
                        received_at: parse_ts(&received_at)?,
                        request_id,
                        attempts: attempts.clamp(0, u32::MAX as i64) as u32,
                    });
                }
                drop(stmt);
                for (id, attempts) in poisoned {
                    let reason = format!("gave up after {} attempts: the event never finished processing", attempts - 1);
                    fail_queued(conn, &id, &reason, &ts(now))?;
                }
                out.sort_by(|a, b| a.received_at.cmp(&b.received_at));
                Ok(out)
            })
            .await
    }

    async fn complete_queued(&self, id: &str, result: Result<IngestRequest, String>) -> Result<QueueEntry, StoreError> {
        let id = id.to_string();
        self.writer
            .write(move |conn| {
                let entry = load_queue_entry(conn, &id)?.ok_or_else(|| StoreError::Corrupt(format!("queue entry {id} vanished")))?;
                if entry.status != QueueStatus::Pending {
                    // Already finished by another worker after a lease ran out: finishing twice
                    // must not count the delivery twice.
                    return Ok(entry);
                }
                let now = ts(Utc::now());
                match result {
                    Ok(req) => {
                        let outcome = ingest_in(conn, &req)?;
                        // ingest_in counted a delivery on the source; enqueue did not, so this is the one count.
                        let inc = outcome.incident();
                        conn.execute(
                            // The payload now lives on the incident: the queue's copy goes.
                            "UPDATE queue SET status = 'processed', incident_id = ?2, incident_number = ?3, duplicate = ?4, \
                             processed_at = ?5, lease_until = NULL, raw_payload = x'' WHERE id = ?1",
                            params![
                                id,
                                inc.id.to_string(),
                                inc.number.to_string(),
                                matches!(outcome, IngestOutcome::Duplicate { .. }),
                                now
                            ],
                        )?;
                    }
                    Err(reason) => {
                        fail_queued(conn, &id, &reason, &now)?;
                    }
                }
                load_queue_entry(conn, &id)?.ok_or_else(|| StoreError::Corrupt(format!("queue entry {id} vanished")))
            })
            .await
    }

    async fn queue_entry(&self, id: &str) -> Result<Option<QueueEntry>, StoreError> {
        let id = id.to_string();
        self.read(move |conn, _| load_queue_entry(conn, &id)).await
    }

    async fn queue_depth(&self) -> Result<u64, StoreError> {
        self.read(|conn, _| {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM queue WHERE status IN ('pending', 'processing')", [], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    async fn get_incident(&self, key: &IncidentKey) -> Result<Option<Incident>, StoreError> {
        let key = key.clone();
        self.read(move |conn, _| {
            let (cond, a, b): (&str, String, i64) = match &key {
                IncidentKey::Id(id) => ("id = ?1 AND ?2 = 0", id.to_string(), 0),
                IncidentKey::Number(n) => ("year = ?1 AND seq = ?2", n.year.to_string(), n.seq),
            };
            let sql = format!("SELECT {INCIDENT_COLUMNS}, raw_payload FROM incidents WHERE {cond}");
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(params![a, b])?;
            match rows.next()? {
                Some(r) => incident_from_row(r, true).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn list_incidents(&self, f: &IncidentFilter) -> Result<(Vec<Incident>, u64), StoreError> {
        let f = f.clone();
        self.read(move |conn, _| {
            let cond = "(?1 IS NULL OR source = ?1) AND (?2 IS NULL OR severity = ?2) AND (?3 IS NULL OR status = ?3)";
            let args = params![f.source.as_ref().map(SourceName::as_str), f.severity.map(Severity::as_str), f.status];
            let total: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM incidents WHERE {cond}"), args, |r| r.get(0))?;
            let sql = format!(
                "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE {cond} ORDER BY received_at DESC, year DESC, seq DESC LIMIT ?4 OFFSET ?5"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(params![
                f.source.as_ref().map(SourceName::as_str),
                f.severity.map(Severity::as_str),
                f.status,
                f.page.per_page,
                f.page.offset() as i64
            ])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(incident_from_row(r, false)?);
            }
            Ok((out, total.max(0) as u64))
        })
        .await
    }

    async fn list_dead_letters(&self, source: Option<&SourceName>, page: Page) -> Result<(Vec<DeadLetter>, u64), StoreError> {
        let source = source.cloned();
        self.read(move |conn, _| {
            let s = source.as_ref().map(SourceName::as_str);
            let total: i64 = conn.query_row("SELECT COUNT(*) FROM dead_letters WHERE (?1 IS NULL OR source = ?1)", [s], |r| r.get(0))?;
            let mut stmt = conn.prepare_cached(
                "SELECT id, source, reason, received_at, request_id, queue_id, raw_payload FROM dead_letters \
                 WHERE (?1 IS NULL OR source = ?1) ORDER BY received_at DESC, id DESC LIMIT ?2 OFFSET ?3",
            )?;
            let mut rows = stmt.query(params![s, page.per_page, page.offset() as i64])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let source: String = r.get(1)?;
                let raw: Vec<u8> = r.get(6)?;
                out.push(DeadLetter {
                    id: r.get(0)?,
                    source: SourceName::parse(&source).map_err(corrupt("source"))?,
                    reason: r.get(2)?,
                    received_at: parse_ts(&r.get::<_, String>(3)?)?,
                    request_id: r.get(4)?,
                    queue_id: r.get(5)?,
                    raw_payload: String::from_utf8_lossy(&raw).into_owned(),
                });
            }
            Ok((out, total.max(0) as u64))
        })
        .await
    }

    async fn enqueue_triage(
        &self,
        incident: &IncidentKey,
        playbook: &str,
        variables: serde_json::Map<String, serde_json::Value>,
        max_attempts: u32,
    ) -> Result<TriageJob, StoreError> {
        let key = incident.clone();
        let playbook = playbook.to_string();
        self.writer
            .write(move |conn| {
                let id: Option<String> = match &key {
                    IncidentKey::Id(id) => {
                        conn.query_row("SELECT id FROM incidents WHERE id = ?1", [id.to_string()], |r| r.get(0)).optional()?
                    }
                    IncidentKey::Number(n) => conn
                        .query_row("SELECT id FROM incidents WHERE year = ?1 AND seq = ?2", params![n.year, n.seq], |r| r.get(0))
                        .optional()?,
                };
                let id = id.ok_or_else(|| StoreError::IncidentNotFound(format!("{key:?}")))?;
                let uuid = Uuid::parse_str(&id).map_err(corrupt("incident id"))?;
                insert_triage_job(conn, uuid, &playbook, &variables, max_attempts, "api", Utc::now())
            })
            .await
    }

    async fn claim_triage_jobs(&self, limit: usize, lease_secs: i64) -> Result<Vec<ClaimedTriageJob>, StoreError> {
        self.writer
            .write(move |conn| {
                let now = Utc::now();
                let ids: Vec<String> = conn
                    .prepare_cached(
                        "UPDATE triage_jobs SET status = 'running', attempts = attempts + 1, lease_until = ?1, \
                         started_at = COALESCE(started_at, ?2) \
                         WHERE id IN (SELECT id FROM triage_jobs WHERE (status = 'pending' AND run_after <= ?2) \
                                      OR (status = 'running' AND lease_until < ?2) ORDER BY run_after, id LIMIT ?3) \
                         RETURNING id",
                    )?
                    .query_map(params![ts(now + chrono::Duration::seconds(lease_secs)), ts(now), limit as i64], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    let job = load_job(conn, &id)?.ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished")))?;
                    let incident_id = job.incident_id.to_string();
                    if job.attempts > job.max_attempts {
                        // Claimed again after its last attempt was lost (a crash): give up on it.
                        let error = format!("abandoned after {} attempts (the worker stopped mid-run)", job.max_attempts);
                        conn.execute(
                            "UPDATE triage_jobs SET status = 'failed', error = ?2, completed_at = ?3, lease_until = NULL WHERE id = ?1",
                            params![id, error, ts(now)],
                        )?;
                        set_job_triage(conn, &incident_id, &id, &serde_json::json!({"status": "failed", "job_id": id, "playbook": job.playbook, "error": error, "attempts": job.max_attempts}))?;
                        continue;
                    }
                    let Some(incident) = load_incident(conn, &incident_id)? else { continue };
                    set_job_triage(
                        conn,
                        &incident_id,
                        &id,
                        &serde_json::json!({"status": "running", "job_id": id, "playbook": job.playbook, "attempts": job.attempts, "started_at": job.started_at}),
                    )?;
                    out.push(ClaimedTriageJob { job, incident });
                }
                Ok(out)
            })
            .await
    }

    async fn complete_triage_job(&self, job_id: &str, attempt: u32, completion: TriageCompletion) -> Result<bool, StoreError> {
        let job_id = job_id.to_string();
        self.writer
            .write(move |conn| {
                let Some(job) = load_job(conn, &job_id)? else { return Ok(false) };
                if job.status != TriageJobStatus::Running || job.attempts != attempt {
                    return Ok(false);
                }
                let now = Utc::now();
                let incident_id = job.incident_id.to_string();
                match completion {
                    TriageCompletion::Done(outcome) => {
                        conn.execute(
                            "UPDATE triage_jobs SET status = 'completed', error = NULL, completed_at = ?2, lease_until = NULL WHERE id = ?1",
                            params![job_id, ts(now)],
                        )?;
                        let mut triage = serde_json::to_value(&outcome).map_err(corrupt("triage outcome"))?;
                        if let Some(obj) = triage.as_object_mut() {
                            obj.insert("status".into(), "completed".into());
                            obj.insert("job_id".into(), job_id.clone().into());
                            obj.insert("attempts".into(), job.attempts.into());
                            obj.insert("started_at".into(), serde_json::to_value(job.started_at).unwrap_or_default());
                            obj.insert("completed_at".into(), serde_json::to_value(now).unwrap_or_default());
                        }
                        // Only the incident's latest job decides its triage, status and severity.
                        if set_job_triage(conn, &incident_id, &job_id, &triage)? {
                            conn.execute("UPDATE incidents SET status = 'triaged' WHERE id = ?1 AND status = 'open'", [&incident_id])?;
                            if let Some(sev) = outcome.severity {
                                conn.execute("UPDATE incidents SET severity = ?2 WHERE id = ?1", params![incident_id, sev.as_str()])?;
                            }
                        }
                    }
                    TriageCompletion::Failed { error, retry_at } => match retry_at.filter(|_| job.attempts < job.max_attempts) {
                        Some(at) => {
                            conn.execute(
                                "UPDATE triage_jobs SET status = 'pending', error = ?2, run_after = ?3, lease_until = NULL WHERE id = ?1",
                                params![job_id, error, ts(at)],
                            )?;
                            set_job_triage(
                                conn,
                                &incident_id,
                                &job_id,
                                &serde_json::json!({"status": "pending", "job_id": job_id, "playbook": job.playbook, "attempts": job.attempts, "last_error": error, "retry_at": at}),
                            )?;
                        }
                        None => {
                            conn.execute(
                                "UPDATE triage_jobs SET status = 'failed', error = ?2, completed_at = ?3, lease_until = NULL WHERE id = ?1",
                                params![job_id, error, ts(now)],
                            )?;
                            set_job_triage(
                                conn,
                                &incident_id,
                                &job_id,
                                &serde_json::json!({"status": "failed", "job_id": job_id, "playbook": job.playbook, "attempts": job.attempts, "error": error, "started_at": job.started_at, "completed_at": now}),
                            )?;
                        }
                    },
                }
                Ok(true)
            })
            .await
    }

    async fn triage_job(&self, job_id: &str) -> Result<Option<TriageJob>, StoreError> {
        let id = job_id.to_string();
        self.read(move |conn, _| load_job(conn, &id)).await
    }

    async fn triage_depth(&self) -> Result<u64, StoreError> {
        self.read(|conn, _| {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM triage_jobs WHERE status IN ('pending', 'running')", [], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    async fn recover_abandoned_work(&self) -> Result<(u64, u64), StoreError> {
        self.writer
            .write(|conn| {
                let q = conn.execute("UPDATE queue SET status = 'pending', lease_until = NULL WHERE status = 'processing'", [])?;
                let j = conn.execute(
                    "UPDATE triage_jobs SET lease_until = ?1 WHERE status = 'running'",
                    [ts(Utc::now() - chrono::Duration::seconds(1))],
                )?;
                Ok((q as u64, j as u64))
            })
            .await
    }

    async fn put_playbook(&self, name: &str, yaml: &str, origin: &str) -> Result<bool, StoreError> {
        let (name, yaml, origin) = (name.to_string(), yaml.to_string(), origin.to_string());
        self.writer
            .write(move |conn| {
                let now = ts(Utc::now());
                let existed: bool = conn.query_row("SELECT EXISTS(SELECT 1 FROM playbooks WHERE name = ?1)", [&name], |r| r.get(0))?;
                conn.execute(
                    "INSERT INTO playbooks (name, yaml, origin, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4) \
                     ON CONFLICT (name) DO UPDATE SET yaml = excluded.yaml, origin = excluded.origin, updated_at = excluded.updated_at",
                    params![name, yaml, origin, now],
                )?;
                Ok(!existed)
            })
            .await
    }

    async fn get_playbook(&self, name: &str) -> Result<Option<StoredPlaybook>, StoreError> {
        let name = name.to_string();
        self.read(move |conn, _| {
            let row = conn
                .query_row("SELECT name, yaml, origin, created_at, updated_at FROM playbooks WHERE name = ?1", [&name], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .optional()?;
            row.map(|(name, yaml, origin, c, u)| {
                Ok(StoredPlaybook { name, yaml, origin, created_at: parse_ts(&c)?, updated_at: parse_ts(&u)? })
            })
            .transpose()
        })
        .await
    }

    async fn list_playbooks(&self) -> Result<Vec<StoredPlaybook>, StoreError> {
        self.read(|conn, _| {
            let mut stmt = conn.prepare("SELECT name, yaml, origin, created_at, updated_at FROM playbooks ORDER BY name")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get::<_, String>(4)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (name, yaml, origin, c, u) = row?;
                out.push(StoredPlaybook { name, yaml, origin, created_at: parse_ts(&c)?, updated_at: parse_ts(&u)? });
            }
            Ok(out)
        })
        .await
    }

    async fn delete_playbook(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.writer
            .write(move |conn| {
                let users: Vec<String> = conn
                    .prepare("SELECT name FROM sources WHERE playbook = ?1 ORDER BY name")?
                    .query_map([&name], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                if !users.is_empty() {
                    return Err(StoreError::PlaybookInUse { name, sources: users });
                }
                Ok(conn.execute("DELETE FROM playbooks WHERE name = ?1", [&name])? > 0)
            })
            .await
    }

    async fn create_api_key(&self, name: &str, scope: Scope, hash: [u8; 32], prefix: &str) -> Result<ApiKeyRecord, StoreError> {
        let record = ApiKeyRecord {
            id: Uuid::now_v7().to_string(),
            name: name.to_string(),
            prefix: prefix.to_string(),
            scope,
            created_at: Utc::now(),
        };
        let r = record.clone();
        self.writer
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO api_keys (id, name, prefix, hash, scope, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![r.id, r.name, r.prefix, &hash[..], r.scope.as_str(), ts(r.created_at)],
                )?;
                Ok(())
            })
            .await?;
        Ok(record)
    }

    async fn find_api_key(&self, hash: [u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.read(move |conn, _| {
            let row = conn
                .query_row("SELECT id, name, prefix, scope, created_at FROM api_keys WHERE hash = ?1 AND revoked = 0", [&hash[..]], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .optional()?;
            row.map(|(id, name, prefix, scope, created_at)| {
                Ok(ApiKeyRecord { id, name, prefix, scope: scope.parse().map_err(corrupt("scope"))?, created_at: parse_ts(&created_at)? })
            })
            .transpose()
        })
        .await
    }

    fn record_delivery(&self, d: Delivery, body: Option<Vec<u8>>) {
        self.writer.fire(move |conn| {
            let body = body.map(|mut b| {
                b.truncate(DELIVERY_BODY_LIMIT);
                b
            });
            conn.prepare_cached(
                "INSERT INTO deliveries (request_id, source, received_at, status, code, incident_id, incident_number, queue_id, \
                 duplicate, body, body_len, latency_ms, verified) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                d.request_id,
                d.source.as_str(),
                ts(d.received_at),
                d.status,
                d.code,
                d.incident_id.map(|i| i.to_string()),
                d.incident_number.map(|n| n.to_string()),
                d.queue_id,
                d.duplicate,
                body,
                d.body_len.map(|n| n as i64),
                d.latency_ms,
                d.verified
            ])?;
            let id = conn.last_insert_rowid();
            if !(200..300).contains(&d.status) {
                conn.prepare_cached("UPDATE sources SET error_count = error_count + 1 WHERE name = ?1")?.execute([d.source.as_str()])?;
            }
            if id % 1000 == 0 {
                conn.execute("DELETE FROM deliveries WHERE id <= ?1", [id - DELIVERIES_KEPT])?;
            }
            Ok(())
        });
    }

    async fn list_deliveries(&self, source: &SourceName, filter: DeliveryFilter, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        let source = source.clone();
        self.read(move |conn, _| {
            let cond = match filter {
                DeliveryFilter::All => "",
                DeliveryFilter::Ok => "AND status BETWEEN 200 AND 299",
                DeliveryFilter::Failed => "AND status NOT BETWEEN 200 AND 299",
            };
            let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE source = ?1 {cond} ORDER BY id DESC LIMIT ?2");
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(params![source.as_str(), limit])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(delivery_from_row(r)?.0);
            }
            Ok(out)
        })
        .await
    }

    async fn get_delivery(&self, request_id: &str) -> Result<Option<Delivery>, StoreError> {
        let id = request_id.to_string();
        self.read(move |conn, _| {
            let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE request_id = ?1 ORDER BY verified DESC, id DESC LIMIT 1");
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query([&id])?;
            let Some(r) = rows.next()? else { return Ok(None) };
            let (mut d, body) = delivery_from_row(r)?;
            let raw: Option<Vec<u8>> = match (body, &d.incident_id, &d.queue_id) {
                (Some(b), _, _) => Some(b),
                (None, Some(inc), _) => {
                    conn.query_row("SELECT raw_payload FROM incidents WHERE id = ?1", [inc.to_string()], |r| r.get(0)).optional()?
                }
                // A queued delivery: its incident's payload once processed, the dead letter's once
                // failed, the queue's while it waits.
                (None, None, Some(q)) => conn
                    .query_row(
                        "SELECT COALESCE((SELECT i.raw_payload FROM incidents i WHERE i.id = q.incident_id), \
                                         (SELECT d.raw_payload FROM dead_letters d WHERE d.queue_id = q.id), q.raw_payload) \
                         FROM queue q WHERE q.id = ?1",
                        [q],
                        |r| r.get(0),
                    )
                    .optional()?,
                _ => None,
            };
            d.raw_payload = raw.map(|b| String::from_utf8_lossy(&b).into_owned());
            Ok(Some(d))
        })
        .await
    }

    async fn schema_version(&self) -> Result<(i64, i64), StoreError> {
        let expected = MIGRATIONS.last().map_or(0, |m| m.0);
        self.read(move |conn, _| {
            let v: i64 = conn.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))?;
            Ok((v, expected))
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn, _| Ok(conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map(|_| ())?)).await
    }
}
