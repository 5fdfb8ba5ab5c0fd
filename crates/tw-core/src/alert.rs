//! The normalized alert: what every vendor payload becomes before it is stored as an incident.

use crate::{Format, Severity};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One security alert in our own terms, whatever vendor sent it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The payload format it was read as.
    pub format: Format,
    /// A human title: Defender subject, CrowdStrike DetectName, Splunk search_name, ...
    pub title: String,
    /// A longer description when the payload has one.
    pub description: Option<String>,
    /// Our severity, after the source's `severity_mapping` and the format's default mapping.
    pub severity: Severity,
    /// The vendor's own severity value, verbatim as text (`"4"`, `"High"`), when it had one.
    pub vendor_severity: Option<String>,
    /// When the vendor says the event happened (UTC), when the payload says so.
    pub event_time: Option<DateTime<Utc>>,
    /// The vendor's id of this alert, used to recognise a second delivery of it.
    pub external_id: Option<String>,
    /// The vendor's own event type or category (`PhishingEmail`, `DetectionSummaryEvent`, ...).
    pub event_type: Option<String>,
    /// Indicators and assets found in the payload, deduplicated, in order of first appearance.
    pub entities: Vec<Entity>,
}

/// An indicator or asset named by an alert.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entity {
    pub kind: EntityKind,
    pub value: String,
    /// Where it was found or what part it plays (`sender`, `recipient`, `host`, `parent_process`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl Entity {
    /// An entity without a role.
    pub fn new(kind: EntityKind, value: impl Into<String>) -> Self {
        Entity { kind, value: value.into(), role: None }
    }

    /// An entity with the part it plays in the alert.
    pub fn with_role(kind: EntityKind, value: impl Into<String>, role: impl Into<String>) -> Self {
        Entity { kind, value: value.into(), role: Some(role.into()) }
    }
}

/// The kinds of entity we extract.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Email,
    Hostname,
    Ip,
    User,
    FileHash,
    Url,
    Domain,
    File,
    Process,
}

impl EntityKind {
    /// The snake_case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Email => "email",
            EntityKind::Hostname => "hostname",
            EntityKind::Ip => "ip",
            EntityKind::User => "user",
            EntityKind::FileHash => "file_hash",
            EntityKind::Url => "url",
            EntityKind::Domain => "domain",
            EntityKind::File => "file",
            EntityKind::Process => "process",
        }
    }
}
