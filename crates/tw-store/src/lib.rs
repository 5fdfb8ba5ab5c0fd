//! Persistence for the webhook intake.
//!
//! [`Store`] is the one interface the server uses. It is the sum of one trait per concern
//! ([`SourceStore`], [`IngestStore`], [`QueueStore`], ...), and each engine implements each concern
//! in a file of the same name: `sqlite/ingest.rs` and `postgres/ingest.rs` both answer "how is a
//! duplicate detected". [`sqlite::SqliteStore`] is the embedded default; [`postgres::PgStore`]
//! lets several server processes share one PostgreSQL database. [`open`] picks one from a URL.
//!
//! Every intake write goes through a group-commit writer that commits many requests in one
//! transaction and answers each caller only after the commit: a caller that got `Ok` has its data
//! on disk.
//!
//! The rules the engines persist (which triage job may write an incident's triage, what the stored
//! triage looks like, incident status) live in [`model`] and [`triage`], not in SQL.
//!
//! Errors: [`StoreError`] for everything here, engine-neutral; the server maps it to HTTP.

pub mod api_key;
pub mod audit;
pub mod console_session;
pub mod crypto;
pub mod files;
mod listing;
pub mod model;
pub mod postgres;
mod rows;
pub mod sqlite;
pub mod testing;
pub mod triage;

pub use api_key::{ApiKeyRecord, ApiKeySpec, Scope};
pub use audit::{AuditActor, AuditFilter, AuditPage, AuditRecord, NewAuditRecord};
pub use console_session::{ConsoleSessionRecord, NewConsoleSession, SessionLimits};
pub use crypto::MasterKey;
pub use model::*;
pub use triage::{IncidentTriageUpdate, JobTransition, TriageState};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tw_core::{Alert, IncidentNumber, Secret, SourceName};
use uuid::Uuid;

/// True at most once a second per `last` (which keeps the unix second it last said true), for
/// log lines that a failure would repeat once per request.
pub fn once_a_second(last: &std::sync::atomic::AtomicU64) -> bool {
    use std::sync::atomic::Ordering;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let seen = last.load(Ordering::Relaxed);
    now > seen && last.compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// A `tracing` event that a failure would repeat once per request or commit: a warning at most
/// once a second per `last` (an `AtomicU64`, see [`once_a_second`]), at debug level otherwise.
/// The rest is what `tracing::warn!` takes.
#[macro_export]
macro_rules! warn_once_a_second {
    ($last:expr, $($event:tt)+) => {
        if $crate::once_a_second($last) {
            ::tracing::warn!($($event)+)
        } else {
            ::tracing::debug!($($event)+)
        }
    };
}

/// The engine's own error, kept as the cause of a [`StoreError`].
pub type DbError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors from the store. Callers act on the variant; the engine's error is the `source`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("source '{0}' already exists")]
    SourceExists(String),
    #[error("source '{0}' not found")]
    SourceNotFound(String),
    #[error("incident '{0}' not found")]
    IncidentNotFound(String),
    #[error("playbook '{name}' is used by source(s) {}", sources.join(", "))]
    PlaybookInUse { name: String, sources: Vec<String> },
    #[error("a stored secret could not be decrypted (wrong master key?)")]
    Crypto,
    #[error("{0}")]
    Config(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A unique constraint refused the write.
    #[error("a unique constraint refused the write")]
    UniqueViolation(#[source] DbError),
    /// A concurrent change got there first (serialization failure, deadlock); the write may be
    /// retried.
    #[error("a concurrent change conflicted with the write")]
    Conflict(#[source] DbError),
    /// The database cannot be reached or cannot write now (down, pool exhausted, timed out, disk
    /// full). Nothing was written; retry later.
    #[error("the database is unavailable")]
    Unavailable(#[source] DbError),
    /// Any other database failure.
    #[error("database error")]
    Database(#[source] DbError),
    /// The database was migrated by a newer build.
    #[error("the database schema is at version {found}, newer than this build supports ({supported}); upgrade tw-cli")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("the store is shutting down")]
    Closed,
}

impl StoreError {
    /// The message with every cause, for logs: `database unavailable: connection refused`.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }

    /// True when the operation may succeed if retried later (the database is down or busy).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Closed)
    }

    /// This failure again, for another caller of the write that failed (each write of a batch):
    /// still unavailable when it was (a retry may pass), otherwise a database error; the message
    /// keeps every cause.
    pub fn again(&self) -> StoreError {
        let message = self.chain();
        if self.is_unavailable() { StoreError::Unavailable(message.into()) } else { StoreError::Database(message.into()) }
    }
}

/// Told about every batch the writer commits (for metrics and the store's health).
pub trait CommitObserver: Send + Sync + 'static {
    /// A batch of `batch` writes committed; `wrote`: it changed something (a batch of claims that
    /// found no work commits without writing a page, even on a full disk).
    fn committed(&self, batch: usize, elapsed: std::time::Duration, wrote: bool);
    /// A batch could not be committed because the database cannot write now (disk full, I/O
    /// error, down): every write in it was refused with [`StoreError::Unavailable`].
    fn unavailable(&self, _cause: &str) {}
}

/// Sources and their secrets (`sqlite/sources.rs`, `postgres/sources.rs`).
#[async_trait]
pub trait SourceStore: Send + Sync {
    /// Registers a source. [`StoreError::SourceExists`] when the name is taken.
    async fn create_source(&self, new: NewSource) -> Result<SourceRecord, StoreError>;
    /// Creates or replaces a source declared in the config file (marks it managed by config).
    async fn upsert_config_source(&self, new: NewSource) -> Result<SourceRecord, StoreError>;
    /// Hands sources that were managed by the config file but are no longer in it (`keep`) back to
    /// the API; returns their names. Nothing is deleted.
    async fn release_config_sources(&self, keep: &[SourceName]) -> Result<Vec<String>, StoreError>;
    /// One source, with its decrypted secrets.
    async fn get_source(&self, name: &SourceName) -> Result<Option<SourceRecord>, StoreError>;
    /// All sources, by name.
    async fn list_sources(&self) -> Result<Vec<SourceRecord>, StoreError>;
    /// Changes a source's settings.
    async fn update_source(&self, name: &SourceName, patch: SourcePatch) -> Result<SourceRecord, StoreError>;
    /// Removes a source; false when it did not exist.
    async fn delete_source(&self, name: &SourceName) -> Result<bool, StoreError>;
    /// Replaces the secret; the old one keeps verifying until `grace_until`.
    async fn rotate_secret(&self, name: &SourceName, new_secret: Secret, grace_until: DateTime<Utc>) -> Result<SourceRecord, StoreError>;
    /// A number that changes whenever any source is created, changed, rotated or deleted, by any
    /// process: caches compare it to know when to forget what they hold.
    async fn sources_version(&self) -> Result<i64, StoreError>;
}

/// The intake's writes (`*/ingest.rs`): incidents and duplicates, the queue, dead letters.
#[async_trait]
pub trait IngestStore: Send + Sync {
    /// Creates the incident for an alert, or recognises a second delivery of it. Durable on `Ok`.
    async fn ingest(&self, req: IngestRequest) -> Result<IngestOutcome, StoreError>;
    /// Stores a verified raw event for a background worker. Durable on `Ok`; returns the queue id.
    async fn enqueue(&self, event: NewQueuedEvent) -> Result<String, StoreError>;
    /// Keeps an accepted event that could not be normalized, with the reason. Durable on `Ok`.
    async fn dead_letter(&self, letter: NewDeadLetter) -> Result<String, StoreError>;
}

/// The async queue's workers (`*/queue.rs`).
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Claims up to `limit` pending queued events, or ones whose lease ran out (claimed by a
    /// process that died), for `lease_secs`. Events claimed too often are dead-lettered.
    async fn claim_queued(&self, limit: usize, lease_secs: i64) -> Result<Vec<QueuedEvent>, StoreError>;
    /// Finishes a claimed event: creates its incident, or dead-letters it with the reason.
    async fn complete_queued(&self, id: &str, result: Result<IngestRequest, String>) -> Result<QueueEntry, StoreError>;
    /// Gives claimed events back at once (`(id, attempts)` as claimed), for a process that stops
    /// before processing them: each is pending again without a lease, and the claim is not
    /// counted as an attempt. An event re-claimed or finished meanwhile is left alone. Returns how
    /// many were released.
    async fn release_queued(&self, events: &[(String, u32)]) -> Result<usize, StoreError>;
    /// The state of one queued event.
    async fn queue_entry(&self, id: &str) -> Result<Option<QueueEntry>, StoreError>;
    /// How many queued events wait for a worker.
    async fn queue_depth(&self) -> Result<u64, StoreError>;
}

/// Reading incidents and dead letters (`*/incidents.rs`).
#[async_trait]
pub trait IncidentStore: Send + Sync {
    /// One incident by id or number, with its raw payload.
    async fn get_incident(&self, key: &IncidentKey) -> Result<Option<Incident>, StoreError>;
    /// A page of incidents, newest first by number, the total that match (kept in a counts
    /// table, never counted row by row) and where the next page starts.
    async fn list_incidents(&self, filter: &IncidentFilter) -> Result<IncidentPage, StoreError>;
    /// A page of dead letters, newest first, and the total.
    async fn list_dead_letters(&self, source: Option<&SourceName>, page: Page) -> Result<(Vec<DeadLetter>, u64), StoreError>;
    /// Deliveries, incidents and verdicts from `since` to `until` (at most [`ACTIVITY_SPAN`]
    /// before `until`: an earlier `since` is moved up), and the triage backlog now: aggregate
    /// counts, the rows never leave the database.
    async fn activity(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> Result<Activity, StoreError>;
}

/// Normalizing stored events again after a source's mapping or parser changed
/// (`*/reprocess.rs`): pages of payloads in, updates in place out. Every page is read and written
/// on its own, so memory stays bounded by the page, whatever the number of incidents.
#[async_trait]
pub trait ReprocessStore: Send + Sync {
    /// A page of the source's incidents with their payloads, by number, after `page.after`.
    async fn incident_payloads(&self, page: &PayloadPage<IncidentNumber>) -> Result<Vec<StoredPayload>, StoreError>;
    /// Replaces the normalized fields of the source's incidents (title, description, severity,
    /// vendor severity, format, event type and time, alert id, entities) with `alerts`, in one
    /// transaction, one outcome per alert in order. Id, number, status, triage and delivery counts
    /// stay. The dedupe key follows a changed alert id unless another incident of the source
    /// holds the new one ([`Renormalized::Conflict`], left unchanged); an alert without an id
    /// keeps the key the incident had.
    async fn renormalize_incidents(&self, source: &SourceName, alerts: Vec<(Uuid, Alert)>) -> Result<Vec<Renormalized>, StoreError>;
    /// A page of the source's dead letters with their payloads, by id, after `page.after`.
    async fn dead_letter_payloads(&self, page: &PayloadPage<String>) -> Result<Vec<DeadLetterPayload>, StoreError>;
    /// Finishes dead letters normalized again, in one transaction: `Ok` ingests the request as a
    /// live delivery is (dedupe, number, auto-triage job) and removes the dead letter with it, so
    /// it is never lost and never ingested twice; `Err` keeps it with the new reason.
    async fn resolve_dead_letters(
        &self,
        resolved: Vec<(String, Result<IngestRequest, String>)>,
    ) -> Result<Vec<DeadLetterResolution>, StoreError>;
}

/// Triage jobs (`*/triage.rs`); the rules are [`triage::TriageState`]'s.
#[async_trait]
pub trait TriageStore: Send + Sync {
    /// Queues a triage job for an incident (on demand). The incident shows it as pending.
    async fn enqueue_triage(
        &self,
        incident: &IncidentKey,
        playbook: &str,
        variables: serde_json::Map<String, serde_json::Value>,
        max_attempts: u32,
    ) -> Result<TriageJob, StoreError>;
    /// Claims up to `limit` due jobs (pending and due, or running with an expired lease) for
    /// `lease_secs`. Only expired leases are taken over, so a live process keeps its jobs.
    async fn claim_triage_jobs(&self, limit: usize, lease_secs: i64) -> Result<Vec<ClaimedTriageJob>, StoreError>;
    /// Finishes a claimed job. `attempt` is the job's attempt number when claimed: a job that was
    /// meanwhile re-claimed or finished is left alone (false), so every job finishes once.
    async fn complete_triage_job(&self, job_id: &str, attempt: u32, completion: TriageCompletion) -> Result<bool, StoreError>;
    /// Finishes several claimed jobs, each as [`TriageStore::complete_triage_job`] would; one
    /// result per job, in order. An engine may write them together (SQLite: one commit for all,
    /// where one each made the commit, not the playbook, what limited how fast triage drained).
    async fn complete_triage_jobs(&self, jobs: Vec<(String, u32, TriageCompletion)>) -> Vec<Result<bool, StoreError>> {
        let mut out = Vec::with_capacity(jobs.len());
        for (job_id, attempt, completion) in jobs {
            out.push(self.complete_triage_job(&job_id, attempt, completion).await);
        }
        out
    }
    /// Gives claimed jobs back at once (`(job_id, attempt)` as claimed), for a process that stops
    /// before running them: each is pending again, due now, without a lease, and the attempt it
    /// was claimed with is not counted (the run never happened, so stopping an instance never
    /// uses up a job's attempts). A job re-claimed or finished meanwhile is left alone. Returns how
    /// many were released.
    async fn release_triage_jobs(&self, jobs: &[(String, u32)]) -> Result<usize, StoreError>;
    /// One job.
    async fn triage_job(&self, job_id: &str) -> Result<Option<TriageJob>, StoreError>;
    /// Jobs waiting or running.
    async fn triage_depth(&self) -> Result<u64, StoreError>;
}

/// User playbooks (`*/playbooks.rs`).
#[async_trait]
pub trait PlaybookStore: Send + Sync {
    /// Creates or replaces a user playbook; true when it was created.
    async fn put_playbook(&self, name: &str, yaml: &str, origin: &str) -> Result<bool, StoreError>;
    async fn get_playbook(&self, name: &str) -> Result<Option<StoredPlaybook>, StoreError>;
    async fn list_playbooks(&self) -> Result<Vec<StoredPlaybook>, StoreError>;
    /// Deletes a user playbook unless a source names it ([`StoreError::PlaybookInUse`]).
    async fn delete_playbook(&self, name: &str) -> Result<bool, StoreError>;
}

/// API keys (`*/api_keys.rs`).
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// Stores a new API key's hash (no expiry, not audited: tests and tools that make their own).
    async fn create_api_key(&self, name: &str, scope: Scope, hash: [u8; 32], prefix: &str) -> Result<ApiKeyRecord, StoreError> {
        let spec = ApiKeySpec { name: name.to_string(), scope, hash, prefix: prefix.to_string(), expires_at: None };
        self.add_api_key(spec, None).await
    }
    /// Stores a new API key's hash, and `audit` in the same transaction.
    async fn add_api_key(&self, spec: ApiKeySpec, audit: Option<NewAuditRecord>) -> Result<ApiKeyRecord, StoreError>;
    /// The key with this hash, if it exists and is not revoked (an expired one is returned: the
    /// caller says why it is refused).
    async fn find_api_key(&self, hash: [u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// Every key, revoked ones too, oldest first.
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Revokes the key `id` at `at`, writing `audit` in the same transaction; false (and nothing
    /// written) when there is no such key or it was already revoked.
    async fn revoke_api_key(&self, id: &str, at: DateTime<Utc>, audit: Option<NewAuditRecord>) -> Result<bool, StoreError>;
    /// Records when keys were last used (`(id, time)`); a time older than the stored one is ignored.
    async fn record_api_key_use(&self, used: Vec<(String, DateTime<Utc>)>) -> Result<(), StoreError>;
}

/// The audit log of administrative changes (`*/audit.rs`).
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends a record (and prunes the log to [`audit::AUDIT_KEPT`]).
    async fn record_audit(&self, record: NewAuditRecord) -> Result<AuditRecord, StoreError>;
    /// A page of records, newest first.
    async fn list_audit(&self, filter: &AuditFilter) -> Result<AuditPage, StoreError>;
}

/// Delivery records (`*/deliveries.rs`).
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Records a delivery (best effort, not awaited; the body is truncated to
    /// [`DELIVERY_BODY_LIMIT`]) and, when it was refused, counts it in the source's error count,
    /// in the same write. Old records are pruned by [`DeliveryStore::prune_deliveries`].
    fn record_delivery(&self, d: Delivery, body: Option<Vec<u8>>);
    /// The newest `limit` deliveries of a source, newest first.
    async fn list_deliveries(&self, source: &SourceName, filter: DeliveryFilter, limit: u32) -> Result<Vec<Delivery>, StoreError>;
    /// One delivery with its body: the one whose own (server) `request_id` this is, else the newest
    /// of those the sender gave this `X-Request-Id`, a verified one before any unverified one (a
    /// sender without the secret cannot shadow a real delivery by copying its id).
    async fn get_delivery(&self, request_id: &str) -> Result<Option<Delivery>, StoreError>;
    /// The newest `limit` deliveries whose sender gave them this `X-Request-Id`, without bodies.
    async fn deliveries_by_sender_request_id(&self, sender_request_id: &str, limit: u32) -> Result<Vec<Delivery>, StoreError>;
    /// Adds refused requests to their aggregate rows (creating the rows not yet there) and to
    /// their sources' error counts, in one write.
    async fn record_refusals(&self, counts: Vec<RefusedCount>) -> Result<(), StoreError>;
    /// Deletes the delivery records `retention` does not keep as of `now`, in batches of
    /// `retention.batch` rows, each its own transaction; returns how many were deleted.
    async fn prune_deliveries(&self, retention: DeliveryRetention, now: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError>;
}

/// Console sessions (`*/console_sessions.rs`), shared by every instance on the database. Writes go
/// through the engine's writer; reads through the read pool.
#[async_trait]
pub trait ConsoleSessionStore: Send + Sync {
    /// Opens a session, in one write: first deletes the sessions expired at `new.created_at`,
    /// then closes the least recently used of the key's sessions beyond `limits.per_key - 1` and
    /// of everyone's beyond `limits.total - 1`, so that the new one fits. Returns how many live
    /// sessions were closed to make room. Instances opening sessions at once take turns.
    async fn open_console_session(&self, new: NewConsoleSession, limits: SessionLimits) -> Result<u64, StoreError>;
    /// The session whose id hashes to `id_hash`, when it is alive at `now` (`expires_at > now`).
    async fn console_session(&self, id_hash: [u8; 32], now: DateTime<Utc>) -> Result<Option<ConsoleSessionRecord>, StoreError>;
    /// Records a use at `seen_at` that moves the end to `expires_at`; false (nothing written) when
    /// the session is gone, expired at `seen_at`, or already has a later use.
    async fn touch_console_session(&self, id_hash: [u8; 32], seen_at: DateTime<Utc>, expires_at: DateTime<Utc>)
    -> Result<bool, StoreError>;
    /// Ends a session (sign-out, or its key no longer accepted); false when there was none.
    async fn close_console_session(&self, id_hash: [u8; 32]) -> Result<bool, StoreError>;
    /// Deletes the sessions expired at `now`; returns how many. Writes only when there are some.
    async fn prune_console_sessions(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// Schema and health (`*/migrations.rs`).
#[async_trait]
pub trait HealthStore: Send + Sync {
    /// `sqlite` or `postgres`.
    fn engine(&self) -> &'static str;
    /// The schema version the database is at, and the one this build expects.
    async fn schema_version(&self) -> Result<(i64, i64), StoreError>;
    /// A cheap round trip to the database.
    async fn ping(&self) -> Result<(), StoreError>;
    /// A real, tiny committed write (a timestamp in `meta`): proves the database can write again
    /// after a failure such as a full disk, which [`HealthStore::ping`], a read, cannot tell.
    async fn probe_write(&self) -> Result<(), StoreError>;
    /// Waits until every write handed to the store before this call (delivery records and other
    /// fire-and-forget writes included) is committed or has failed: called at shutdown.
    async fn flush(&self) -> Result<(), StoreError>;
}

/// The persistence interface of the intake: every concern. Implementations are cheap to share
/// (`Arc<dyn Store>`). Bring the concern traits into scope with `use tw_store::prelude::*`.
pub trait Store:
    SourceStore
    + IngestStore
    + QueueStore
    + IncidentStore
    + ReprocessStore
    + TriageStore
    + PlaybookStore
    + ApiKeyStore
    + AuditStore
    + DeliveryStore
    + ConsoleSessionStore
    + HealthStore
    + 'static
{
}

impl<T> Store for T where
    T: SourceStore
        + IngestStore
        + QueueStore
        + IncidentStore
        + ReprocessStore
        + TriageStore
        + PlaybookStore
        + ApiKeyStore
        + AuditStore
        + DeliveryStore
        + ConsoleSessionStore
        + HealthStore
        + 'static
{
}

/// The store traits, to call their methods on an `Arc<dyn Store>`.
pub mod prelude {
    pub use crate::{
        ApiKeyStore, AuditStore, ConsoleSessionStore, DeliveryStore, HealthStore, IncidentStore, IngestStore, PlaybookStore, QueueStore,
        ReprocessStore, SourceStore, Store,
    };
}

/// Where the data lives, parsed from `--database-url`.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// The embedded store: one SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (`postgres://user:pass@host:port/db?...`).
    Postgres(String),
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for DatabaseUrl {
    /// The URL with any password replaced, safe for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            DatabaseUrl::Postgres(url) => f.write_str(&postgres::redact_url(url)),
        }
    }
}

impl DatabaseUrl {
    /// `sqlite://PATH` (or `sqlite:PATH`), `postgres://...` or `postgresql://...`.
    pub fn parse(url: &str) -> Result<DatabaseUrl, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(url.to_string()));
        }
        if let Some(path) = sqlite::SqliteStore::path_from_url(url) {
            return Ok(DatabaseUrl::Sqlite(path));
        }
        Err(StoreError::Config(format!(
            "unsupported database URL '{}': expected sqlite://PATH or postgres://USER@HOST:PORT/DB",
            postgres::redact_url(url)
        )))
    }
}

/// Engine settings that are not in the URL.
#[derive(Clone)]
pub struct StoreOptions {
    /// PostgreSQL connections kept by this process.
    pub pool_size: usize,
    /// How long to wait for a PostgreSQL connection before answering "unavailable".
    pub connect_timeout: Duration,
    /// PostgreSQL cancels a statement that runs longer than this.
    pub statement_timeout: Duration,
    /// Told about every committed batch.
    pub observer: Option<Arc<dyn CommitObserver>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { pool_size: 16, connect_timeout: Duration::from_secs(5), statement_timeout: Duration::from_secs(10), observer: None }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// Opens the store at `url`: migrates it to this build's schema (refusing a newer one), checks
/// that `key` is the master key its secrets were encrypted with, and starts its writer.
pub async fn open(url: &DatabaseUrl, key: MasterKey, opts: StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match url {
        DatabaseUrl::Sqlite(path) => {
            let path = path.clone();
            let observer = opts.observer.clone();
            let store = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open_observed(&path, key, observer))
                .await
                .map_err(|_| StoreError::Closed)??;
            Arc::new(store)
        }
        DatabaseUrl::Postgres(conn) => Arc::new(postgres::PgStore::open(conn, key, opts).await?),
    })
}

/// The migrations a database has and the ones this build has, for `tw-cli db status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Versions applied, with when.
    pub applied: Vec<(i64, DateTime<Utc>)>,
    /// The newest version this build knows.
    pub latest: i64,
}

impl MigrationStatus {
    /// The version the database is at (0 for an empty one).
    pub fn current(&self) -> i64 {
        self.applied.iter().map(|a| a.0).max().unwrap_or(0)
    }
}

/// Reads the migration state without changing anything.
pub async fn migration_status(url: &DatabaseUrl, opts: &StoreOptions) -> Result<MigrationStatus, StoreError> {
    match url {
        DatabaseUrl::Sqlite(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || sqlite::migration_status(&path)).await.map_err(|_| StoreError::Closed)?
        }
        DatabaseUrl::Postgres(conn) => postgres::migration_status(conn, opts).await,
    }
}

/// Applies pending migrations; returns the versions applied now.
pub async fn migrate(url: &DatabaseUrl, opts: &StoreOptions) -> Result<Vec<i64>, StoreError> {
    match url {
        DatabaseUrl::Sqlite(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || sqlite::migrate_file(&path)).await.map_err(|_| StoreError::Closed)?
        }
        DatabaseUrl::Postgres(conn) => postgres::migrate_only(conn, opts).await,
    }
}
