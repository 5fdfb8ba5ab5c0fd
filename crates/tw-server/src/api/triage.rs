//! Triage jobs: `POST /api/incidents/{id}/triage`, `GET /api/triage/jobs/{id}`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tw_store::TriageJobStatus;
use utoipa::ToSchema;
use uuid::Uuid;

/// `POST /api/incidents/{id}/triage` (an empty body is allowed).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriageRequest {
    /// Default: the playbook of the incident's source.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub playbook: Option<String>,
    /// Overrides of the playbook's variables (at most 64 KiB of JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Map<String, Value>>,
}

/// 202 of `POST /api/incidents/{id}/triage`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TriageQueued {
    pub job_id: String,
    pub status: TriageJobStatus,
    pub incident_id: Uuid,
    pub incident_number: String,
    pub playbook: String,
}

/// A triage job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TriageJob {
    pub job_id: String,
    pub incident_id: Uuid,
    pub playbook: String,
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
    pub status: TriageJobStatus,
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_after: DateTime<Utc>,
    #[schema(required = true)]
    pub error: Option<String>,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub completed_at: Option<DateTime<Utc>>,
}

impl From<tw_store::TriageJob> for TriageJob {
    fn from(j: tw_store::TriageJob) -> Self {
        TriageJob {
            job_id: j.job_id,
            incident_id: j.incident_id,
            playbook: j.playbook,
            variables: j.variables,
            status: j.status,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            run_after: j.run_after,
            error: j.error,
            requested_by: j.requested_by,
            created_at: j.created_at,
            started_at: j.started_at,
            completed_at: j.completed_at,
        }
    }
}
