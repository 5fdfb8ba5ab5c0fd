//! `POST /api/webhooks/{source}/reprocess`: normalize a source's stored events again.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What to normalize again. Every field is optional: an empty body reprocesses every incident of
/// the source, from the start.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReprocessRequest {
    /// Only events received at or after this: an RFC 3339 time (`2026-01-31T00:00:00Z`) or a
    /// duration back from now (`30m`, `24h`, `90d`, `2w`). Default: all.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(
        nullable = false,
        example = "24h",
        pattern = "^([0-9]{1,9}[smhdw]|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$"
    )]
    pub since: Option<String>,
    /// Also normalize the source's dead letters again: each that now normalizes becomes an
    /// incident (deduped like a live delivery) and leaves the dead letters. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dead_letters: bool,
    /// Where to go on: the `next` of the previous answer (send the same `dead_letters`, and its
    /// `since`). Default: from the start.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub cursor: Option<String>,
    /// The most events this call reads (default and maximum 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// What one call did. A call does a bounded amount of work (`limit` events); while `next` is
/// present, call again with it as `cursor` (and the returned `since`) to go on.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ReprocessResult {
    pub source: String,
    /// The lower bound applied, resolved to a time (send it back with `cursor`); `null`: none.
    #[schema(required = true)]
    pub since: Option<DateTime<Utc>>,
    pub incidents: IncidentCounts,
    pub dead_letters: DeadLetterCounts,
    /// Incidents whose new alert id is already another incident's (at most 100 per call).
    pub conflicting: Vec<ReprocessConflict>,
    /// The most events one call reads (incidents and dead letters together).
    pub limit: u32,
    /// Present when there is more to do: send it as `cursor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Incidents normalized again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IncidentCounts {
    /// Read and normalized again.
    pub scanned: u64,
    /// Changed in place (same id and number; status, triage and delivery counts kept).
    pub updated: u64,
    /// Already as the source's settings normalize them.
    pub unchanged: u64,
    /// Left as they were: their new alert id belongs to another incident (see `conflicting`).
    pub conflicts: u64,
    /// Left as they were: their payload no longer normalizes with the source's settings.
    pub failed: u64,
}

/// Dead letters normalized again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterCounts {
    pub scanned: u64,
    /// Became new incidents (and left the dead letters).
    pub created: u64,
    /// Were the alert of an existing incident: counted on it as a delivery (and left the dead
    /// letters).
    pub duplicates: u64,
    /// Still do not normalize: kept, with the new reason.
    pub still_failing: u64,
}

/// An incident left alone because its new alert id is another's.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReprocessConflict {
    /// The incident reprocessed (`INC-2026-0042`).
    pub incident_number: String,
    /// The incident that holds the alert id it would now have.
    pub held_by: String,
    /// That alert id.
    pub external_id: String,
}
