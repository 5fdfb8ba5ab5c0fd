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
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("commit failed: {0}")]
    Commit(String),
    #[error("the store is shutting down")]
    Closed,
}

/// The persistence interface of the intake. Implementations are cheap to share (`Arc<dyn Store>`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- sources ----
    /// Registers a source. [`StoreError::SourceExists`] when the name is taken.
    async fn create_source(&self, new: NewSource) -> Result<SourceRecord, StoreError>;
    /// Creates or replaces a source declared in the config file (marks it managed by config).
    async fn upsert_config_source(&self, new: NewSource) -> Result<SourceRecord, StoreError>;
    /// One source, with its decrypted secrets.
    async fn get_source(&self, name: &SourceName) -> Result<Option<SourceRecord>, StoreError>;
    /// All sources, by name.
    async fn list_sources(&self) -> Result<Vec<SourceRecord>, StoreError>;
    /// Changes a source's settings.
    async fn update_source(&self, name: &SourceName, patch: SourcePatch) -> Result<SourceRecord, StoreError>;
    /// Removes a source; false when it did not exist.
    async fn delete_source(&self, name: &SourceName) -> Result<bool, StoreError>;
    /// Replaces the secret; the old one keeps verifying until `grace_until`.
    async fn rotate_secret(
        &self,
        name: &SourceName,
        new_secret: Secret,
        grace_until: DateTime<Utc>,
    ) -> Result<SourceRecord, StoreError>;
    /// Counts a refused request against a source (best effort, not awaited by the caller).
    fn record_source_error(&self, name: &SourceName);

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

    // ---- API keys ----
    /// Stores a new API key's hash.
    async fn create_api_key(&self, name: &str, scope: Scope, hash: [u8; 32], prefix: &str) -> Result<ApiKeyRecord, StoreError>;
    /// The key with this hash, if it exists and is not revoked.
    async fn find_api_key(&self, hash: [u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError>;

    // ---- health ----
    /// A cheap round trip to the database.
    async fn ping(&self) -> Result<(), StoreError>;
}
