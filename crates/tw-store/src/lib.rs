//! Persistence for the webhook intake.
//!
//! [`Store`] is the one interface the server uses; [`sqlite::SqliteStore`] is the embedded
//! implementation. Every write goes through a single writer that commits many requests in one
//! transaction (group commit) and answers each caller only after the commit: a caller that got
//! `Ok` has its data on disk.
//!
//! Errors: [`StoreError`] for everything here; the server maps it to HTTP.

pub mod api_key;
pub mod crypto;
pub mod files;
pub mod model;
pub mod sqlite;

pub use api_key::{ApiKeyRecord, Scope};
pub use crypto::MasterKey;
pub use model::*;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tw_core::{Secret, SourceName};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("source '{0}' already exists")]
    SourceExists(String),
    #[error("source '{0}' not found")]
    SourceNotFound(String),
    #[error("a stored secret could not be decrypted (wrong master key?)")]
    Crypto,
    #[error("{0}")]
    Config(String),
    /// The cause is in the message and not a `source`, so a chain printer shows it once.
    #[error("database error: {0}")]
    Database(rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("playbook '{name}' is used by source(s) {}", sources.join(", "))]
    PlaybookInUse { name: String, sources: Vec<String> },
    #[error("incident '{0}' not found")]
    IncidentNotFound(String),
    #[error("commit failed: {0}")]
    Commit(String),
    #[error("the store is shutting down")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e)
    }
}

/// Told about every committed batch (for metrics).
pub trait CommitObserver: Send + Sync + 'static {
    fn committed(&self, batch: usize, elapsed: std::time::Duration);
}

/// The persistence interface of the intake. Implementations are cheap to share (`Arc<dyn Store>`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- sources ----
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
    // ---- intake ----
    /// Creates the incident for an alert, or recognises a second delivery of it. Durable on `Ok`.
    async fn ingest(&self, req: IngestRequest) -> Result<IngestOutcome, StoreError>;
    /// Stores a verified raw event for a background worker. Durable on `Ok`; returns the queue id.
    async fn enqueue(&self, event: NewQueuedEvent) -> Result<String, StoreError>;
    /// Keeps an accepted event that could not be normalized, with the reason. Durable on `Ok`.
    async fn dead_letter(&self, letter: NewDeadLetter) -> Result<String, StoreError>;

    // ---- queue ----
    /// Claims up to `limit` pending queued events (or ones whose lease ran out) for `lease_secs`.
    async fn claim_queued(&self, limit: usize, lease_secs: i64) -> Result<Vec<QueuedEvent>, StoreError>;
    /// Finishes a claimed event: creates its incident, or dead-letters it with the reason.
    async fn complete_queued(&self, id: &str, result: Result<IngestRequest, String>) -> Result<QueueEntry, StoreError>;
    /// The state of one queued event.
    async fn queue_entry(&self, id: &str) -> Result<Option<QueueEntry>, StoreError>;
    /// How many queued events wait for a worker.
    async fn queue_depth(&self) -> Result<u64, StoreError>;

    // ---- incidents ----
    /// One incident by id or number, with its raw payload.
    async fn get_incident(&self, key: &IncidentKey) -> Result<Option<Incident>, StoreError>;
    /// A page of incidents, newest first, and the total that match.
    async fn list_incidents(&self, filter: &IncidentFilter) -> Result<(Vec<Incident>, u64), StoreError>;
    /// A page of dead letters, newest first, and the total.
    async fn list_dead_letters(&self, source: Option<&SourceName>, page: Page) -> Result<(Vec<DeadLetter>, u64), StoreError>;

    // ---- triage ----
    /// Queues a triage job for an incident (on demand). The incident shows it as pending.
    async fn enqueue_triage(
        &self,
        incident: &IncidentKey,
        playbook: &str,
        variables: serde_json::Map<String, serde_json::Value>,
        max_attempts: u32,
    ) -> Result<TriageJob, StoreError>;
    /// Claims up to `limit` due jobs (pending and due, or running with an expired lease).
    async fn claim_triage_jobs(&self, limit: usize, lease_secs: i64) -> Result<Vec<ClaimedTriageJob>, StoreError>;
    /// Finishes a claimed job. `attempt` is the job's attempt number when claimed: a job that was
    /// meanwhile re-claimed or finished is left alone (false), so every job finishes once.
    async fn complete_triage_job(&self, job_id: &str, attempt: u32, completion: TriageCompletion) -> Result<bool, StoreError>;
    /// One job.
    async fn triage_job(&self, job_id: &str) -> Result<Option<TriageJob>, StoreError>;
    /// Jobs waiting or running.
    async fn triage_depth(&self) -> Result<u64, StoreError>;
    /// Makes work that a crashed process had claimed claimable at once. Only for a process that
    /// is the only worker on its database (the embedded store); leases cover the rest.
    async fn recover_abandoned_work(&self) -> Result<(u64, u64), StoreError>;

    // ---- playbooks ----
    /// Creates or replaces a user playbook; true when it was created.
    async fn put_playbook(&self, name: &str, yaml: &str, origin: &str) -> Result<bool, StoreError>;
    async fn get_playbook(&self, name: &str) -> Result<Option<StoredPlaybook>, StoreError>;
    async fn list_playbooks(&self) -> Result<Vec<StoredPlaybook>, StoreError>;
    /// Deletes a user playbook unless a source names it ([`StoreError::PlaybookInUse`]).
    async fn delete_playbook(&self, name: &str) -> Result<bool, StoreError>;

    // ---- API keys ----
    /// Stores a new API key's hash.
    async fn create_api_key(&self, name: &str, scope: Scope, hash: [u8; 32], prefix: &str) -> Result<ApiKeyRecord, StoreError>;
    /// The key with this hash, if it exists and is not revoked.
    async fn find_api_key(&self, hash: [u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError>;

    // ---- deliveries ----
    /// Records a delivery (best effort, not awaited; the body is truncated to
    /// [`DELIVERY_BODY_LIMIT`]) and, when it was refused, counts it in the source's error count,
    /// in the same write. Old records are pruned.
    fn record_delivery(&self, d: Delivery, body: Option<Vec<u8>>);
    /// The newest `limit` deliveries of a source, newest first.
    async fn list_deliveries(&self, source: &SourceName, filter: DeliveryFilter, limit: u32) -> Result<Vec<Delivery>, StoreError>;
    /// The newest delivery with this request id, with its body.
    async fn get_delivery(&self, request_id: &str) -> Result<Option<Delivery>, StoreError>;

    // ---- health ----
    /// The schema version the database is at, and the one this build expects.
    async fn schema_version(&self) -> Result<(i64, i64), StoreError>;
    /// A cheap round trip to the database.
    async fn ping(&self) -> Result<(), StoreError>;
}
