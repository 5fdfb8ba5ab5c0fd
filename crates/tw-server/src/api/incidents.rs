//! Incidents: `GET /api/incidents`, `GET /api/incidents/{id}`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tw_core::{Entity, Format, Severity};
use tw_store::IncidentStatus;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// An incident.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Incident {
    pub id: Uuid,
    #[schema(example = "INC-2026-0001")]
    pub incident_number: String,
    pub source: String,
    pub format: Format,
    pub title: String,
    #[schema(required = true)]
    pub description: Option<String>,
    pub severity: Severity,
    /// The vendor's own severity value, verbatim.
    #[schema(required = true)]
    pub vendor_severity: Option<String>,
    pub status: IncidentStatus,
    #[schema(required = true)]
    pub event_type: Option<String>,
    #[schema(required = true)]
    pub event_time: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    /// The vendor's id of the alert.
    #[schema(required = true)]
    pub external_id: Option<String>,
    pub entities: Vec<Entity>,
    pub delivery_count: u64,
    pub last_delivery_at: DateTime<Utc>,
    pub auto_triage: bool,
    #[schema(required = true)]
    pub playbook: Option<String>,
    #[schema(required = true)]
    pub request_id: Option<String>,
    /// The latest triage: the job's state, or the playbook's verdict, score, findings, ... A completed
    /// run's step trace is in the incident's own view (`GET /api/incidents/{id}`), not in listings.
    #[schema(required = true, value_type = Option<Object>)]
    pub triage: Option<Value>,
}

impl From<tw_store::Incident> for Incident {
    fn from(i: tw_store::Incident) -> Self {
        Incident {
            id: i.id,
            incident_number: i.incident_number.to_string(),
            source: i.source.to_string(),
            format: i.format,
            title: i.title,
            description: i.description,
            severity: i.severity,
            vendor_severity: i.vendor_severity,
            status: i.status,
            event_type: i.event_type,
            event_time: i.event_time,
            received_at: i.received_at,
            external_id: i.external_id,
            entities: i.entities,
            delivery_count: i.delivery_count,
            last_delivery_at: i.last_delivery_at,
            auto_triage: i.auto_triage,
            playbook: i.playbook,
            request_id: i.request_id,
            triage: i.triage,
        }
    }
}

/// One incident with its payload.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub incident: Incident,
    /// The payload as received: its JSON, or a string when it was not JSON.
    #[schema(required = true, value_type = Option<Value>)]
    pub raw_payload: Option<Value>,
}

/// `GET /api/incidents`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IncidentList {
    pub data: Vec<Incident>,
    pub meta: IncidentListMeta,
}

/// The `meta` block of `GET /api/incidents`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IncidentListMeta {
    /// The page number, when the page was asked for by `page` (or is the first); absent when it
    /// was asked for by `cursor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    pub per_page: u32,
    /// How many incidents match the filters, in all pages (exact).
    pub total: u64,
    pub total_pages: u64,
    /// Send it back as `?cursor=` (with the same filters) for the next page; `null` on the last
    /// page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Filters of `GET /api/incidents`, and where the page starts.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IncidentListParams {
    /// A source name.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub source: Option<String>,
    #[param(value_type = Option<Severity>, inline)]
    pub severity: Option<String>,
    #[param(value_type = Option<IncidentStatus>, inline)]
    pub status: Option<String>,
    /// The order: `newest` first by number (the default), `oldest` first, or `severity` (most
    /// severe first, newest first within a severity). Every order costs the same per page at any
    /// depth.
    #[param(value_type = Option<String>, pattern = "^(newest|oldest|severity)$", example = "severity")]
    pub sort: Option<String>,
    /// The `meta.next_cursor` of the previous page: the page starts right after it. The same cost
    /// at any depth, unlike `page`; cannot be combined with `page`. A cursor carries its `sort`
    /// (`2026-42` newest first, `oldest-2026-42`, `high-2026-42` by severity): send it with the
    /// same `sort` and filters.
    #[param(pattern = "^(oldest-|critical-|high-|medium-|low-|info-)?[1-9][0-9]{0,3}-[1-9][0-9]{0,17}$")]
    pub cursor: Option<String>,
    /// Documented apart ([`super::PageParams`] beside this in the operation).
    #[serde(flatten)]
    #[param(ignore)]
    pub page: super::PageParams,
}
