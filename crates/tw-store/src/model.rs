//! The records the store reads and writes.

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::BTreeMap;
use tw_core::formats::Mapping;
use tw_core::{Alert, Entity, Format, IncidentNumber, Secret, Severity, SourceMode, SourceName, Verification};
use uuid::Uuid;

/// Everything needed to register a source.
#[derive(Debug, Clone)]
pub struct NewSource {
    pub name: SourceName,
    pub secret: Secret,
    pub settings: SourceSettings,
}

/// A source's settings (everything but its name and secrets).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSettings {
    pub enabled: bool,
    pub auto_triage: bool,
    pub playbook: Option<String>,
    /// `None`: detect the format of each payload.
    pub format: Option<Format>,
    pub mode: SourceMode,
    /// Vendor severity value -> ours.
    pub severity_mapping: BTreeMap<String, Severity>,
    pub timestamp_tolerance_secs: i64,
    pub max_body_bytes: u64,
    /// Verified deliveries this source may make (a token bucket per process); `None`: unlimited.
    pub rate_limit: Option<RateLimit>,
    /// How deliveries prove they come from the source.
    pub verification: Verification,
    /// Client addresses allowed to deliver (CIDR ranges); empty: any.
    pub allowed_ips: Vec<IpNet>,
    /// Where the vendor keeps each alert field; `None`: the format's own reading.
    pub mapping: Option<Mapping>,
}

impl Default for SourceSettings {
    fn default() -> Self {
        SourceSettings {
            enabled: true,
            auto_triage: false,
            playbook: None,
            format: None,
            mode: SourceMode::Sync,
            severity_mapping: BTreeMap::new(),
            timestamp_tolerance_secs: tw_core::signature::DEFAULT_TOLERANCE_SECS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            rate_limit: None,
            verification: Verification::Hmac,
            allowed_ips: Vec::new(),
            mapping: None,
        }
    }
}

/// A source's rate limit: a token bucket holding up to `burst` deliveries, refilled at
/// `per_second`. Built only through [`RateLimit::new`], so a stored or configured limit is always
/// one the intake can enforce (positive, finite, bounded).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RateLimit {
    per_second: f64,
    burst: u32,
}

impl RateLimit {
    /// The fastest refill accepted: beyond it a limit would never bind before the intake's own
    /// throughput does.
    pub const MAX_PER_SECOND: f64 = 1_000_000.0;
    /// The slowest refill accepted (one delivery per 1,000 s): a slower one is a disabled source.
    pub const MIN_PER_SECOND: f64 = 0.001;
    /// The largest burst accepted.
    pub const MAX_BURST: u32 = 1_000_000;

    /// A limit of `per_second` deliveries refilled each second, up to `burst` at once; the error
    /// says which of the two is out of range and what the range is.
    pub fn new(per_second: f64, burst: u32) -> Result<RateLimit, RateLimitError> {
        if !(per_second.is_finite() && (Self::MIN_PER_SECOND..=Self::MAX_PER_SECOND).contains(&per_second)) {
            return Err(RateLimitError::PerSecond);
        }
        if !(1..=Self::MAX_BURST).contains(&burst) {
            return Err(RateLimitError::Burst);
        }
        Ok(RateLimit { per_second, burst })
    }

    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }
}

/// Which part of a [`RateLimit`] is out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError {
    #[error("must be a number from 0.001 to 1000000")]
    PerSecond,
    #[error("must be a whole number from 1 to 1000000")]
    Burst,
}

impl RateLimitError {
    /// The field at fault: `per_second` or `burst`.
    pub fn field(&self) -> &'static str {
        match self {
            RateLimitError::PerSecond => "per_second",
            RateLimitError::Burst => "burst",
        }
    }
}

/// The default body limit: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;

/// A partial update of [`SourceSettings`]: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct SourcePatch {
    pub enabled: Option<bool>,
    pub auto_triage: Option<bool>,
    pub playbook: Option<Option<String>>,
    pub format: Option<Option<Format>>,
    pub mode: Option<SourceMode>,
    pub severity_mapping: Option<BTreeMap<String, Severity>>,
    pub timestamp_tolerance_secs: Option<i64>,
    pub max_body_bytes: Option<u64>,
    /// `Some(None)` removes the limit.
    pub rate_limit: Option<Option<RateLimit>>,
    pub verification: Option<Verification>,
    pub allowed_ips: Option<Vec<IpNet>>,
    /// `Some(None)` removes the mapping.
    pub mapping: Option<Option<Mapping>>,
    pub secret: Option<Secret>,
}

impl SourcePatch {
    /// Applies the patch to settings.
    pub fn apply(&self, s: &mut SourceSettings) {
        if let Some(v) = self.enabled {
            s.enabled = v
        }
        if let Some(v) = self.auto_triage {
            s.auto_triage = v
        }
        if let Some(v) = &self.playbook {
            s.playbook = v.clone()
        }
        if let Some(v) = self.format {
            s.format = v
        }
        if let Some(v) = self.mode {
            s.mode = v
        }
        if let Some(v) = &self.severity_mapping {
            s.severity_mapping = v.clone()
        }
        if let Some(v) = self.timestamp_tolerance_secs {
            s.timestamp_tolerance_secs = v
        }
        if let Some(v) = self.max_body_bytes {
            s.max_body_bytes = v
        }
        if let Some(v) = self.rate_limit {
            s.rate_limit = v
        }
        if let Some(v) = &self.verification {
            s.verification = v.clone()
        }
        if let Some(v) = &self.allowed_ips {
            s.allowed_ips = v.clone()
        }
        if let Some(v) = &self.mapping {
            s.mapping = v.clone()
        }
    }
}

/// A stored source with its decrypted secrets and delivery statistics.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    pub name: SourceName,
    pub secret: Secret,
    /// A keyed fingerprint of `secret` (see [`crate::MasterKey::fingerprint`]).
    pub secret_fingerprint: String,
    /// The secret before the last rotation and until when it still verifies.
    pub previous_secret: Option<(Secret, DateTime<Utc>)>,
    pub settings: SourceSettings,
    pub managed_by_config: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub secret_rotated_at: Option<DateTime<Utc>>,
    pub last_delivery_at: Option<DateTime<Utc>>,
    pub delivery_count: u64,
    pub error_count: u64,
}

impl SourceRecord {
    /// The secrets that verify a request at `now`: the current one, and the previous one during
    /// its grace period.
    pub fn verifying_secrets(&self, now: DateTime<Utc>) -> Vec<&Secret> {
        let mut v = vec![&self.secret];
        if let Some((old, until)) = &self.previous_secret
            && now < *until
        {
            v.push(old);
        }
        v
    }
}

/// A normalized alert on its way to becoming an incident.
#[derive(Debug, Clone)]
pub struct IngestRequest {
    pub source: SourceName,
    pub alert: Alert,
    /// The request body exactly as received.
    pub raw: Vec<u8>,
    /// SHA-256 of `"<timestamp>.<body>"`: recognises the exact same signed request sent again.
    /// Only an alert without an id of its own reads it ([`IngestRequest::dedupe_key`],
    /// [`keyed_by_request`]); the intake leaves it empty for the others.
    pub request_key: String,
    pub received_at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub auto_triage: bool,
    pub playbook: Option<String>,
    /// Attempts for the auto-triage job, when one is created.
    pub triage_max_attempts: u32,
}

impl IngestRequest {
    /// What makes two deliveries the same alert: the vendor's alert id when the payload has one,
    /// else the exact signed request.
    pub fn dedupe_key(&self) -> String {
        alert_dedupe_key(&self.alert).unwrap_or_else(|| format!("req:{}", self.request_key))
    }
}

/// A minimal request for the engines' own tests: a generic alert of `source`, with `alert_id` as
/// its id when given, received at 2024-01-15 10:00 UTC.
#[cfg(test)]
pub(crate) fn test_request(source: &str, alert_id: Option<&str>, request_key: &str) -> IngestRequest {
    use chrono::TimeZone;
    IngestRequest {
        source: SourceName::parse(source).unwrap(),
        alert: Alert {
            format: Format::Generic,
            title: "t".into(),
            description: None,
            severity: Severity::High,
            vendor_severity: None,
            event_time: None,
            external_id: alert_id.map(str::to_string),
            event_type: None,
            entities: vec![],
        },
        raw: b"{}".to_vec(),
        request_key: request_key.into(),
        received_at: Utc.with_ymd_and_hms(2024, 1, 15, 10, 0, 0).unwrap(),
        request_id: None,
        auto_triage: false,
        playbook: None,
        triage_max_attempts: 3,
    }
}

/// The dedupe key an alert's own id gives it (`id:<external_id>`); `None` when it has no id, and
/// the request decides ([`IngestRequest::dedupe_key`]).
pub fn alert_dedupe_key(alert: &Alert) -> Option<String> {
    alert.external_id.as_ref().map(|id| format!("id:{id}"))
}

/// Whether the request decides `alert`'s dedupe key (it has no id of its own: exactly when
/// [`alert_dedupe_key`] is `None`), so that the request's key must be computed
/// ([`IngestRequest::request_key`]). Asks without building the key.
pub fn keyed_by_request(alert: &Alert) -> bool {
    alert.external_id.is_none()
}

/// A created or recognised incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IncidentRef {
    pub id: Uuid,
    pub number: IncidentNumber,
}

/// What [`crate::Store::ingest`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    Created(IncidentRef),
    /// Already known: the delivery was counted on the existing incident.
    Duplicate {
        incident: IncidentRef,
        delivery_count: u64,
    },
}

impl IngestOutcome {
    pub fn incident(&self) -> IncidentRef {
        match self {
            IngestOutcome::Created(r) | IngestOutcome::Duplicate { incident: r, .. } => *r,
        }
    }
}

/// A verified raw event for the async path.
#[derive(Debug, Clone)]
pub struct NewQueuedEvent {
    pub source: SourceName,
    pub raw: Vec<u8>,
    pub request_key: String,
    pub received_at: DateTime<Utc>,
    pub request_id: Option<String>,
}

/// How many times a queued event is claimed before it is dead-lettered as poison.
pub const MAX_QUEUE_ATTEMPTS: i64 = 5;

/// Why a queued event being claimed for the `attempts`-th time is given up instead, if it is:
/// claimed this often without finishing, it crashes or stalls its worker.
pub fn queue_poison_reason(attempts: i64) -> Option<String> {
    (attempts > MAX_QUEUE_ATTEMPTS).then(|| format!("gave up after {} attempts: the event never finished processing", attempts - 1))
}

/// A claimed queued event.
#[derive(Debug, Clone)]
pub struct QueuedEvent {
    pub id: String,
    pub source: SourceName,
    pub raw: Vec<u8>,
    pub request_key: String,
    pub received_at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub attempts: u32,
}

/// The state of a queued event.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueStatus {
    Pending,
    Processed,
    Failed,
}

/// One queued event as the API shows it.
#[derive(Debug, Clone)]
pub struct QueueEntry {
    pub queue_id: String,
    pub status: QueueStatus,
    pub source: SourceName,
    pub received_at: DateTime<Utc>,
    pub attempts: u32,
    pub incident_id: Option<Uuid>,
    pub incident_number: Option<IncidentNumber>,
    pub duplicate: Option<bool>,
    pub error: Option<String>,
    pub processed_at: Option<DateTime<Utc>>,
}

/// An accepted event that could not be normalized.
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    pub source: SourceName,
    pub raw: Vec<u8>,
    pub reason: String,
    pub received_at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub queue_id: Option<String>,
    /// The verified request's key ([`IngestRequest::request_key`]), so that a dead letter that
    /// normalizes later dedupes exactly as its delivery would have.
    pub request_key: Option<String>,
}

/// A stored dead letter.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: String,
    pub source: SourceName,
    pub reason: String,
    pub received_at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub queue_id: Option<String>,
    /// The body as received (lossy UTF-8).
    pub raw_payload: String,
}

/// An incident as stored.
#[derive(Debug, Clone)]
pub struct Incident {
    pub id: Uuid,
    pub incident_number: IncidentNumber,
    pub source: SourceName,
    pub format: Format,
    pub title: String,
    pub description: Option<String>,
    pub severity: Severity,
    pub vendor_severity: Option<String>,
    pub status: IncidentStatus,
    pub event_type: Option<String>,
    pub event_time: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    pub external_id: Option<String>,
    pub entities: Vec<Entity>,
    pub delivery_count: u64,
    pub last_delivery_at: DateTime<Utc>,
    pub auto_triage: bool,
    pub playbook: Option<String>,
    pub request_id: Option<String>,
    /// The latest triage (job state, or the playbook's verdict, score, findings, ...).
    pub triage: Option<serde_json::Value>,
    /// The body exactly as received; only filled by `get_incident`.
    pub raw: Option<Vec<u8>>,
}

/// Where an incident stands in the analysts' workflow.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    /// New; not triaged yet.
    Open,
    /// A playbook has judged it.
    Triaged,
    /// An analyst closed it.
    Closed,
}

impl IncidentStatus {
    /// Every status, in workflow order.
    pub const ALL: [IncidentStatus; 3] = [IncidentStatus::Open, IncidentStatus::Triaged, IncidentStatus::Closed];

    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Triaged => "triaged",
            IncidentStatus::Closed => "closed",
        }
    }
}

impl std::str::FromStr for IncidentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IncidentStatus::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("must be one of {}", IncidentStatus::ALL.map(IncidentStatus::as_str).join(", ")))
    }
}

/// How an incident is named in a request: its uuid or its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncidentKey {
    Id(Uuid),
    Number(IncidentNumber),
}

impl std::str::FromStr for IncidentKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(id) = Uuid::parse_str(s) {
            return Ok(IncidentKey::Id(id));
        }
        s.parse::<IncidentNumber>().map(IncidentKey::Number).map_err(|e| e.to_string())
    }
}

/// A page request: 1-based page number and page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: u32,
    pub per_page: u32,
}

impl Page {
    pub fn offset(&self) -> u64 {
        u64::from(self.page.saturating_sub(1)) * u64::from(self.per_page)
    }
}

/// Which incidents to list, in which order, and which page of them.
#[derive(Debug, Clone)]
pub struct IncidentFilter {
    pub source: Option<SourceName>,
    pub severity: Option<Severity>,
    pub status: Option<IncidentStatus>,
    /// Incidents per page.
    pub per_page: u32,
    /// Where the page starts.
    pub start: PageStart,
    /// The order of the listing.
    pub order: IncidentOrder,
}

/// The orders an incident listing can come in: only those an existing index delivers for every
/// filter, so that a page reads about `per_page` index entries wherever it starts. (Each index on
/// incidents costs the intake a write per incident, so no order gets an index of its own.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IncidentOrder {
    /// Newest first by number: `(year, seq)` backwards, or a filter's `(column, year, seq)`.
    #[default]
    Newest,
    /// Oldest first by number: the same indexes forwards.
    Oldest,
    /// Most severe first, newest first within a severity: one walk of the
    /// `(severity, year, seq)` index per severity, from critical down to info.
    Severity,
}

impl IncidentOrder {
    /// Every order, as the API names them.
    pub const ALL: [IncidentOrder; 3] = [IncidentOrder::Newest, IncidentOrder::Oldest, IncidentOrder::Severity];

    /// The order's name in the API (`newest`, `oldest`, `severity`).
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentOrder::Newest => "newest",
            IncidentOrder::Oldest => "oldest",
            IncidentOrder::Severity => "severity",
        }
    }
}

impl std::str::FromStr for IncidentOrder {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IncidentOrder::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("must be one of {}", IncidentOrder::ALL.map(IncidentOrder::as_str).join(", ")))
    }
}

/// Where a page of incidents starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStart {
    /// After skipping this many matching incidents: the database walks past every one of them,
    /// so a deep page costs in proportion to its depth. `Offset(0)` is the first page.
    Offset(u64),
    /// Right after this incident in the listing's order (older than it newest first, newer than
    /// it oldest first): an index seek, the same cost at any depth. In severity order, the
    /// incident is taken to be of the most severe level (use [`PageStart::AfterSeverity`]).
    After(IncidentNumber),
    /// Severity order: right after this incident of this severity (the severity it had when it
    /// was listed, so a severity changed since does not move the position).
    AfterSeverity(Severity, IncidentNumber),
}

/// A page of incidents, in the listing's order.
#[derive(Debug, Clone)]
pub struct IncidentPage {
    pub items: Vec<Incident>,
    /// How many incidents match the filter, in all pages.
    pub total: u64,
    /// Where the next page starts ([`PageStart::After`], or with the last item's severity
    /// [`PageStart::AfterSeverity`]): the last item's number, when more incidents follow it;
    /// `None` on the last page.
    pub next: Option<IncidentNumber>,
}

/// How many times a triage job is tried before it is marked failed.
pub const DEFAULT_TRIAGE_MAX_ATTEMPTS: u32 = 3;

/// A triage job's state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriageJobStatus {
    Pending,
    Running,
    Completed,
    Failed,
}

impl TriageJobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TriageJobStatus::Pending => "pending",
            TriageJobStatus::Running => "running",
            TriageJobStatus::Completed => "completed",
            TriageJobStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<TriageJobStatus> {
        [TriageJobStatus::Pending, TriageJobStatus::Running, TriageJobStatus::Completed, TriageJobStatus::Failed]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A triage job.
#[derive(Debug, Clone)]
pub struct TriageJob {
    pub job_id: String,
    pub incident_id: Uuid,
    pub playbook: String,
    pub variables: serde_json::Map<String, serde_json::Value>,
    pub status: TriageJobStatus,
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_after: DateTime<Utc>,
    pub error: Option<String>,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// A job handed to a worker, with its incident.
#[derive(Debug, Clone)]
pub struct ClaimedTriageJob {
    pub job: TriageJob,
    pub incident: Incident,
}

/// How a worker finished a job.
#[derive(Debug, Clone)]
pub enum TriageCompletion {
    /// The playbook ran: its outcome goes on the incident, and its step trace (taken out of the
    /// outcome as JSON text by [`TriageCompletion::done`]) in `triage_traces`, apart.
    Done { outcome: Box<tw_core::triage::TriageOutcome>, trace: String },
    /// It failed; try again at the given time (when attempts remain) or mark it failed.
    Failed { error: String, retry_at: Option<DateTime<Utc>> },
}

impl TriageCompletion {
    /// A completed run. Its step trace (most of a run's result: each step's inputs and outputs,
    /// about 3.8 KiB for the phishing playbook) is rendered here to the JSON text both engines
    /// store apart from the incident: call this where the playbook ran (the triage workers do, on
    /// the low-priority playbook threads), not on the store's writer, which every delivery waits
    /// for (rendered there, it was about a fifth of the writer's work for a triage job).
    pub fn done(mut outcome: tw_core::triage::TriageOutcome) -> TriageCompletion {
        // Plain values: serializing them cannot fail.
        let trace = serde_json::to_string(&std::mem::take(&mut outcome.trace)).unwrap_or_else(|_| "[]".into());
        TriageCompletion::Done { outcome: Box::new(outcome), trace }
    }
}

/// A user playbook as stored.
#[derive(Debug, Clone, Serialize)]
pub struct StoredPlaybook {
    pub name: String,
    pub yaml: String,
    /// `api` (added through the API/CLI) or `dir` (loaded from --playbooks-dir).
    pub origin: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How much of a refused delivery's body is kept.
pub const DELIVERY_BODY_LIMIT: usize = 64 * 1024;
/// Verified delivery records kept per source by default (`--deliveries-keep`); older ones are pruned.
pub const DEFAULT_DELIVERIES_KEEP: u64 = 50_000;
/// Days a delivery record is kept by default (`--deliveries-max-age-days`).
pub const DEFAULT_DELIVERIES_MAX_AGE_DAYS: u32 = 30;
/// Refused requests' records kept per source by default: apart from the verified ones, and fewer,
/// since anyone can send refused requests (a few samples and one aggregate row per code and
/// minute, so about 54 rows a minute at most; 5,000 are the last hour and a half of a flood).
pub const DEFAULT_DELIVERIES_KEEP_REFUSED: u64 = 5_000;

/// One delivery to a registered source, as `tw-cli webhook events` shows it; or, when
/// `refused_count` is set, a run of refused requests counted into one row instead of one row each.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The server's own id (`req_<uuid v7>`): unique among the stored deliveries.
    pub request_id: String,
    /// The sender's `X-Request-Id`, when it sent a sane one: its word, not unique.
    pub sender_request_id: Option<String>,
    pub source: SourceName,
    pub received_at: DateTime<Utc>,
    pub status: u16,
    pub code: Option<String>,
    pub incident_id: Option<Uuid>,
    pub incident_number: Option<IncidentNumber>,
    pub queue_id: Option<String>,
    pub duplicate: bool,
    pub body_len: Option<u64>,
    pub latency_ms: f64,
    /// True when the signature verified (an unverified delivery's request id is the sender's word).
    pub verified: bool,
    /// The body: as kept for a refused delivery, or the incident's or queued event's raw payload.
    /// Only filled when one delivery is asked for.
    pub raw_payload: Option<String>,
    /// An aggregate row: how many requests, refused before their signature verified with this
    /// row's source, status and code from `received_at` to `last_received_at`, it stands for
    /// (none of them stored one by one).
    pub refused_count: Option<u64>,
    /// An aggregate row: when the last request it counts arrived.
    pub last_received_at: Option<DateTime<Utc>>,
    /// The request's headers as kept (`name: value` lines, credentials redacted, see the
    /// server's intake), none on an aggregate row. Only filled when one delivery is asked for.
    pub headers: Option<String>,
}

/// Refused requests to add to an aggregate row ([`Delivery::refused_count`]), identified by its
/// `request_id`: the row is created when it is not there yet.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedCount {
    pub request_id: String,
    pub source: SourceName,
    pub status: u16,
    pub code: String,
    /// When the first request of the row arrived.
    pub first_at: DateTime<Utc>,
    /// When the last request counted here arrived.
    pub last_at: DateTime<Utc>,
    /// Requests to add.
    pub count: u64,
}

/// How long delivery records are kept: of each source the newest `keep_per_source` verified
/// deliveries and, counted apart, the newest `keep_refused_per_source` refused ones (so a sender
/// without the secret cannot push real deliveries out), none older than `max_age`. Incidents,
/// queued events and dead letters are never touched by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryRetention {
    /// Verified deliveries kept per source.
    pub keep_per_source: u64,
    /// Refused requests' records (not verified, aggregate rows included) kept per source.
    pub keep_refused_per_source: u64,
    /// `None`: no age limit.
    pub max_age: Option<chrono::Duration>,
    /// Rows deleted per statement (each its own transaction, so intake writes interleave).
    pub batch: u32,
}

impl Default for DeliveryRetention {
    fn default() -> Self {
        DeliveryRetention {
            keep_per_source: DEFAULT_DELIVERIES_KEEP,
            keep_refused_per_source: DEFAULT_DELIVERIES_KEEP_REFUSED,
            max_age: Some(chrono::Duration::days(i64::from(DEFAULT_DELIVERIES_MAX_AGE_DAYS))),
            batch: 1000,
        }
    }
}

/// Which deliveries to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryFilter {
    All,
    /// 2xx.
    Ok,
    /// Everything else.
    Failed,
}

/// An incident's stored payload, read to normalize it again (`tw-cli webhook reprocess`).
#[derive(Debug, Clone)]
pub struct StoredPayload {
    pub id: Uuid,
    pub number: IncidentNumber,
    pub received_at: DateTime<Utc>,
    /// The body exactly as received.
    pub raw: Vec<u8>,
}

/// Which payloads a reprocessing page reads: a source's, received at or after `since`, after a
/// position (an incident number, or a dead letter id), at most `limit` of them, in that order.
#[derive(Debug, Clone)]
pub struct PayloadPage<K> {
    pub source: SourceName,
    pub since: Option<DateTime<Utc>>,
    /// Where the previous page ended; `None`: from the start.
    pub after: Option<K>,
    pub limit: u32,
}

/// What normalizing a stored incident again did to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renormalized {
    /// Its normalized fields (and dedupe key, when the alert id changed) were updated in place.
    Updated,
    /// The new normalization is what was stored.
    Unchanged,
    /// Its new alert id is another incident's (`holder`): it was left as it was, so that no two
    /// incidents of a source share a dedupe key.
    Conflict { holder: IncidentNumber },
    /// No such incident of the source (deleted meanwhile).
    NotFound,
}

/// A dead letter's stored payload, read to normalize it again.
#[derive(Debug, Clone)]
pub struct DeadLetterPayload {
    pub id: String,
    pub received_at: DateTime<Utc>,
    pub request_id: Option<String>,
    /// `None` for dead letters stored before request keys were kept with them.
    pub request_key: Option<String>,
    pub raw: Vec<u8>,
}

/// What became of a dead letter normalized again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterResolution {
    /// It became an incident, or was counted on the incident of the same alert
    /// ([`IngestOutcome::Duplicate`]); the dead letter was removed in the same transaction.
    Ingested(IngestOutcome),
    /// It still does not normalize; its reason was replaced by the new one.
    StillFailing,
    /// It was no longer there (another run took it).
    Gone,
}

/// The longest span [`crate::IncidentStore::activity`] counts: a day.
pub const ACTIVITY_SPAN: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// The least id an incident received at or after `since` can have, so that the day's counts read
/// the incidents through their id's index instead of the whole table (a million incidents over a
/// year: 362 ms -> 0.6 ms on SQLite). An incident's id is a UUIDv7 taken when the store inserts
/// it, on the clock that stamped its receipt an instant before (and ids have been v7 since the
/// first release), so no incident received since `since` has a smaller one. The bound is also at
/// most a span before the real clock: a server clock set ahead of it (tests) hides nothing
/// inserted in the last day.
pub(crate) fn first_incident_id_since(since: DateTime<Utc>) -> Uuid {
    let bound = since.min(Utc::now() - ACTIVITY_SPAN);
    Uuid::from_u128(u128::from(bound.timestamp_millis().max(0) as u64) << 80)
}

/// What happened in a span of at most [`ACTIVITY_SPAN`], counted by the database (the console's
/// overview). Every list is in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activity {
    /// Deliveries per source and hour, by source then hour; an aggregate row of refused requests
    /// counts as the requests it stands for, in the hour of its first.
    pub deliveries: Vec<HourlyDeliveries>,
    /// Incidents received in the span, per severity (`critical`, ...), by name.
    pub incidents_by_severity: Vec<(String, u64)>,
    /// Those incidents' triage verdicts (`malicious`, ...), by name; untriaged ones not counted.
    pub verdicts: Vec<(String, u64)>,
    /// Triage jobs waiting now (not only those of the span).
    pub triage_pending: u64,
    /// Triage jobs running now.
    pub triage_running: u64,
}

/// The deliveries of one source in one hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourlyDeliveries {
    pub source: String,
    /// The hour's start (UTC).
    pub hour: DateTime<Utc>,
    /// Answered 2xx.
    pub ok: u64,
    /// Answered otherwise.
    pub failed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The intake computes the request's key exactly for the alerts whose dedupe key it decides.
    #[test]
    fn the_request_keys_exactly_the_alerts_without_an_id() {
        for id in [Some("a-17"), Some(""), None] {
            let req = test_request("siem", id, "k");
            assert_eq!(keyed_by_request(&req.alert), alert_dedupe_key(&req.alert).is_none(), "{id:?}");
            let expected = id.map_or("req:k".to_string(), |id| format!("id:{id}"));
            assert_eq!(req.dedupe_key(), expected);
        }
    }
}
