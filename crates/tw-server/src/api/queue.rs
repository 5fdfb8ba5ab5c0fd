//! Queued events and dead letters: `GET /api/webhooks/queue/{queue_id}`, `GET /api/dead-letters`.

use super::PageMeta;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tw_store::QueueStatus;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A queued event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueEntry {
    pub queue_id: String,
    pub status: QueueStatus,
    pub source: String,
    pub received_at: DateTime<Utc>,
    pub attempts: u32,
    /// When processed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processed_at: Option<DateTime<Utc>>,
}

impl From<tw_store::QueueEntry> for QueueEntry {
    fn from(e: tw_store::QueueEntry) -> Self {
        QueueEntry {
            queue_id: e.queue_id,
            status: e.status,
            source: e.source.to_string(),
            received_at: e.received_at,
            attempts: e.attempts,
            incident_id: e.incident_id,
            incident_number: e.incident_number.map(|n| n.to_string()),
            duplicate: e.duplicate,
            error: e.error,
            processed_at: e.processed_at,
        }
    }
}

/// An accepted event that could not be normalized.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeadLetter {
    pub id: String,
    pub source: String,
    pub reason: String,
    pub received_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<String>,
    /// The body as received (lossy UTF-8).
    pub raw_payload: String,
}

impl From<tw_store::DeadLetter> for DeadLetter {
    fn from(d: tw_store::DeadLetter) -> Self {
        DeadLetter {
            id: d.id,
            source: d.source.to_string(),
            reason: d.reason,
            received_at: d.received_at,
            request_id: d.request_id,
            queue_id: d.queue_id,
            raw_payload: d.raw_payload,
        }
    }
}

/// `GET /api/dead-letters`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterList {
    pub data: Vec<DeadLetter>,
    pub meta: PageMeta,
}

/// Filter of `GET /api/dead-letters`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterParams {
    /// A source name.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub source: Option<String>,
    /// Documented apart ([`super::PageParams`] beside this in the operation).
    #[serde(flatten)]
    #[param(ignore)]
    pub page: super::PageParams,
}
