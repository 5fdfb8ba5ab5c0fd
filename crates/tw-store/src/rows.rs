//! Rows as both engines read them, before decoding: one decoder per record, whichever engine
//! read it.

use crate::model::{
    Incident, IncidentStatus, QueueEntry, QueueStatus, RateLimit, SourceRecord, SourceSettings, TriageJob, TriageJobStatus,
};
use crate::{MasterKey, StoreError};
use chrono::{DateTime, Utc};
use tw_core::formats::Mapping;
use tw_core::{Format, IncidentNumber, Severity, SourceMode, SourceName, Verification};
use uuid::Uuid;

/// The `sources` columns, in the order [`SourceRow`] is read.
pub(crate) const SOURCE_COLUMNS: &str = "name, secret_enc, previous_secret_enc, previous_secret_expires_at, enabled, auto_triage, \
    playbook, format, mode, severity_mapping, timestamp_tolerance_secs, max_body_bytes, managed_by_config, created_at, \
    updated_at, secret_rotated_at, last_delivery_at, delivery_count, error_count, rate_limit_per_second, rate_limit_burst, verification, allowed_ips, mapping";

/// A `sources` row with its secrets still encrypted.
pub(crate) struct SourceRow {
    pub name: String,
    pub secret_enc: Vec<u8>,
    pub previous_secret_enc: Option<Vec<u8>>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub enabled: bool,
    pub auto_triage: bool,
    pub playbook: Option<String>,
    pub format: Option<String>,
    pub mode: String,
    pub severity_mapping: String,
    pub timestamp_tolerance_secs: i64,
    pub max_body_bytes: i64,
    pub managed_by_config: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub secret_rotated_at: Option<DateTime<Utc>>,
    pub last_delivery_at: Option<DateTime<Utc>>,
    pub delivery_count: i64,
    pub error_count: i64,
    /// Both set, or both NULL (no limit).
    pub rate_limit_per_second: Option<f64>,
    pub rate_limit_burst: Option<i64>,
    /// The scheme as its JSON object.
    pub verification: String,
    /// A JSON array of CIDR ranges; NULL: any address.
    pub allowed_ips: Option<String>,
    /// The mapping as its JSON object; NULL: none.
    pub mapping: Option<String>,
}

pub(crate) fn corrupt<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

impl SourceRow {
    /// Decrypts the secrets (bound to the source's name) and parses the settings.
    pub fn decode(self, key: &MasterKey) -> Result<SourceRecord, StoreError> {
        let name = SourceName::parse(&self.name).map_err(corrupt("source name"))?;
        let secret = key.decrypt(name.as_str(), &self.secret_enc)?;
        let previous_secret = match (self.previous_secret_enc, self.previous_secret_expires_at) {
            (Some(blob), Some(until)) => Some((key.decrypt(name.as_str(), &blob)?, until)),
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
            rate_limit: match (self.rate_limit_per_second, self.rate_limit_burst) {
                (Some(per_second), Some(burst)) => Some(
                    u32::try_from(burst)
                        .map_err(|e| e.to_string())
                        .and_then(|burst| RateLimit::new(per_second, burst).map_err(|e| format!("{}: {e}", e.field())))
                        .map_err(corrupt("rate_limit"))?,
                ),
                _ => None,
            },
            verification: serde_json::from_str::<serde_json::Value>(&self.verification)
                .map_err(|e| e.to_string())
                .and_then(|v| Verification::parse(&v).map_err(|e| format!("{}: {}", e.field, e.message)))
                .map_err(corrupt("verification"))?,
            allowed_ips: match &self.allowed_ips {
                None => Vec::new(),
                Some(text) => serde_json::from_str::<Vec<String>>(text)
                    .map_err(|e| e.to_string())
                    .and_then(|v| v.iter().map(|n| n.parse::<ipnet::IpNet>().map_err(|e| e.to_string())).collect())
                    .map_err(corrupt("allowed_ips"))?,
            },
            mapping: self.mapping.as_deref().map(serde_json::from_str::<Mapping>).transpose().map_err(corrupt("mapping"))?,
        };
        Ok(SourceRecord {
            secret_fingerprint: key.fingerprint(&secret),
            name,
            secret,
            previous_secret,
            settings,
            managed_by_config: self.managed_by_config,
            created_at: self.created_at,
            updated_at: self.updated_at,
            secret_rotated_at: self.secret_rotated_at,
            last_delivery_at: self.last_delivery_at,
            delivery_count: count(self.delivery_count),
            error_count: count(self.error_count),
        })
    }
}

/// The `sources` columns that hold [`SourceSettings`], in the order of [`SettingsValues`].
pub(crate) const SETTINGS_COLUMNS: &str = "enabled, auto_triage, playbook, format, mode, severity_mapping, timestamp_tolerance_secs, \
    max_body_bytes, rate_limit_per_second, rate_limit_burst, verification, allowed_ips, mapping";

/// `?1, ?2, ...` (or `$1, ...`) for the settings columns and `extra` values after them: the
/// statements that write settings hold no count of their columns.
pub(crate) fn settings_placeholders(mark: char, extra: usize) -> Vec<String> {
    (1..=SettingsValues::COUNT + extra).map(|i| format!("{mark}{i}")).collect()
}

/// [`SourceSettings`] as the values of [`SETTINGS_COLUMNS`], for inserts and updates alike.
pub(crate) struct SettingsValues {
    pub enabled: bool,
    pub auto_triage: bool,
    pub playbook: Option<String>,
    pub format: Option<&'static str>,
    pub mode: &'static str,
    pub severity_mapping: String,
    pub timestamp_tolerance_secs: i64,
    pub max_body_bytes: i64,
    pub rate_limit_per_second: Option<f64>,
    pub rate_limit_burst: Option<i64>,
    pub verification: String,
    pub allowed_ips: Option<String>,
    pub mapping: Option<String>,
}

impl SettingsValues {
    /// How many columns [`SETTINGS_COLUMNS`] names.
    pub const COUNT: usize = 13;
}

impl From<&SourceSettings> for SettingsValues {
    fn from(s: &SourceSettings) -> Self {
        SettingsValues {
            enabled: s.enabled,
            auto_triage: s.auto_triage,
            playbook: s.playbook.clone(),
            format: s.format.map(Format::as_str),
            mode: s.mode.as_str(),
            severity_mapping: serde_json::to_string(&s.severity_mapping).unwrap_or_else(|_| "{}".into()),
            timestamp_tolerance_secs: s.timestamp_tolerance_secs,
            max_body_bytes: i64::try_from(s.max_body_bytes).unwrap_or(i64::MAX),
            rate_limit_per_second: s.rate_limit.map(|r| r.per_second()),
            rate_limit_burst: s.rate_limit.map(|r| i64::from(r.burst())),
            verification: s.verification.to_value().to_string(),
            allowed_ips: (!s.allowed_ips.is_empty())
                .then(|| serde_json::to_string(&s.allowed_ips.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap_or_default()),
            mapping: s.mapping.as_ref().and_then(|m| serde_json::to_string(m).ok()),
        }
    }
}

/// The `incidents` columns [`IncidentRow`] is read from, in order (then each engine's `INCIDENT_RAW`
/// when asked).
pub(crate) const INCIDENT_COLUMNS: &str = "id, year, seq, source, format, title, description, severity, vendor_severity, status, \
    event_type, event_time, received_at, external_id, entities, delivery_count, last_delivery_at, auto_triage, playbook, request_id, triage";

/// An `incidents` row before its text columns are parsed.
pub(crate) struct IncidentRow {
    pub id: Uuid,
    pub year: i32,
    pub seq: i64,
    pub source: String,
    pub format: String,
    pub title: String,
    pub description: Option<String>,
    pub severity: String,
    pub vendor_severity: Option<String>,
    pub status: String,
    pub event_type: Option<String>,
    pub event_time: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    pub external_id: Option<String>,
    pub entities: String,
    pub delivery_count: i64,
    pub last_delivery_at: DateTime<Utc>,
    pub auto_triage: bool,
    pub playbook: Option<String>,
    pub request_id: Option<String>,
    pub triage: Option<String>,
    pub raw: Option<Vec<u8>>,
}

impl IncidentRow {
    pub fn decode(self) -> Result<Incident, StoreError> {
        Ok(Incident {
            id: self.id,
            incident_number: IncidentNumber::new(self.year, self.seq),
            source: SourceName::parse(&self.source).map_err(corrupt("source"))?,
            format: self.format.parse().map_err(corrupt("format"))?,
            title: self.title,
            description: self.description,
            severity: self.severity.parse::<Severity>().map_err(corrupt("severity"))?,
            vendor_severity: self.vendor_severity,
            status: self.status.parse::<IncidentStatus>().map_err(corrupt("status"))?,
            event_type: self.event_type,
            event_time: self.event_time,
            received_at: self.received_at,
            external_id: self.external_id,
            entities: serde_json::from_str(&self.entities).map_err(corrupt("entities"))?,
            delivery_count: count(self.delivery_count),
            last_delivery_at: self.last_delivery_at,
            auto_triage: self.auto_triage,
            playbook: self.playbook,
            request_id: self.request_id,
            triage: self.triage.map(|t| serde_json::from_str(&t)).transpose().map_err(corrupt("triage"))?,
            raw: self.raw,
        })
    }
}

/// The `triage_jobs` columns [`JobRow`] is read from, in order.
pub(crate) const JOB_COLUMNS: &str = "id, incident_id, playbook, variables, status, attempts, max_attempts, run_after, error, requested_by, \
    created_at, started_at, completed_at";

/// A `triage_jobs` row before its text columns are parsed.
pub(crate) struct JobRow {
    pub id: String,
    pub incident_id: Uuid,
    pub playbook: String,
    pub variables: String,
    pub status: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_after: DateTime<Utc>,
    pub error: Option<String>,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl JobRow {
    pub fn decode(self) -> Result<TriageJob, StoreError> {
        Ok(TriageJob {
            job_id: self.id,
            incident_id: self.incident_id,
            playbook: self.playbook,
            variables: serde_json::from_str(&self.variables).map_err(corrupt("variables"))?,
            status: TriageJobStatus::parse(&self.status).ok_or_else(|| StoreError::Corrupt(format!("job status '{}'", self.status)))?,
            attempts: attempts(self.attempts),
            max_attempts: attempts(self.max_attempts),
            run_after: self.run_after,
            error: self.error,
            requested_by: self.requested_by,
            created_at: self.created_at,
            started_at: self.started_at,
            completed_at: self.completed_at,
        })
    }
}

/// The `queue` columns [`QueueRow`] is read from, in order.
pub(crate) const QUEUE_COLUMNS: &str =
    "id, status, source, received_at, attempts, incident_id, incident_number, duplicate, error, processed_at";

/// A `queue` row (without its payload) before its text columns are parsed.
pub(crate) struct QueueRow {
    pub id: String,
    pub status: String,
    pub source: String,
    pub received_at: DateTime<Utc>,
    pub attempts: i64,
    pub incident_id: Option<Uuid>,
    pub incident_number: Option<String>,
    pub duplicate: Option<bool>,
    pub error: Option<String>,
    pub processed_at: Option<DateTime<Utc>>,
}

impl QueueRow {
    pub fn decode(self) -> Result<QueueEntry, StoreError> {
        Ok(QueueEntry {
            queue_id: self.id,
            // `processing` is still pending to whoever asks: a worker holds it for now.
            status: match self.status.as_str() {
                "processed" => QueueStatus::Processed,
                "failed" => QueueStatus::Failed,
                _ => QueueStatus::Pending,
            },
            source: SourceName::parse(&self.source).map_err(corrupt("source"))?,
            received_at: self.received_at,
            attempts: attempts(self.attempts),
            incident_id: self.incident_id,
            incident_number: incident_number(self.incident_number.as_deref())?,
            duplicate: self.duplicate,
            error: self.error,
            processed_at: self.processed_at,
        })
    }
}

/// The `deliveries` columns both engines read a delivery from, in order, with `body` standing in
/// for the stored body: `"body"` for one delivery's detail, a typed NULL for listings (which
/// show no body: up to 1,000 rows of 64 KiB each need not be read).
pub(crate) fn delivery_columns(body: &str) -> String {
    // The headers with the body, for one delivery; not for listings.
    let headers = if body == "body" { "headers" } else { "CAST(NULL AS TEXT)" };
    format!(
        "request_id, source, received_at, status, code, incident_id, incident_number, queue_id, duplicate, body_len, latency_ms, {body}, verified, \
         sender_request_id, refused_count, last_received_at, {headers}"
    )
}

/// The classes of delivery records the retention counts apart, each with its keep: verified
/// deliveries, and refused requests' records (aggregate rows included).
pub(crate) fn retention_keeps(r: &crate::model::DeliveryRetention) -> [(bool, i64); 2] {
    let keep = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    [(true, keep(r.keep_per_source)), (false, keep(r.keep_refused_per_source))]
}

/// A `LIMIT` or `OFFSET` count bound as `placeholder` (`?n` for SQLite, `$n` for PostgreSQL).
/// SQLite's is written `+?n`: SQLite reads the value bound to a bare `LIMIT ?n` (or
/// `OFFSET ?n`) when it plans the statement, and then marks the statement to be compiled again
/// whenever that parameter is bound, so a cached statement was compiled again on every run (the
/// triage claim: about 240,000 instructions each time, on the writer). `+?n` is the same number,
/// which the planner does not look into. Every SQLite statement of this crate with a bound count
/// writes it so.
pub(crate) fn bound_count(placeholder: String) -> String {
    if placeholder.starts_with('?') { format!("+{placeholder}") } else { placeholder }
}

/// Parameters source, verified, keep: the newest id of that source and class beyond the `keep`
/// newest of the class; one walk of `keep` entries of `deliveries_by_source_verified` (covering,
/// so no table row is read), whatever the other class holds. `p` is the engine's placeholder
/// sign (`?` or `$`).
pub(crate) fn retention_edge_sql(p: char) -> String {
    format!(
        "SELECT id FROM deliveries WHERE source = {p}1 AND verified = {p}2 ORDER BY id DESC LIMIT 1 OFFSET {}",
        bound_count(format!("{p}3"))
    )
}

/// Parameters source, verified, edge, limit: deletes the oldest `limit` rows of that source and
/// class at or below `edge`.
pub(crate) fn retention_delete_sql(p: char) -> String {
    format!(
        "DELETE FROM deliveries WHERE id IN \
         (SELECT id FROM deliveries WHERE source = {p}1 AND verified = {p}2 AND id <= {p}3 ORDER BY id LIMIT {})",
        bound_count(format!("{p}4"))
    )
}

/// Parameters source, limit: a source's newest `limit` records with `cond` (`AND ...` or empty),
/// `columns` of them. The newest `limit` of each class are found in
/// `deliveries_by_source_verified` and merged, so no index on `(source, id)` is needed: that
/// index cost the intake one more b-tree write per delivery. Each
/// class is ordered by the index's whole key (the same order, the first two being fixed), so
/// that PostgreSQL walks that index rather than the primary key with a filter.
pub(crate) fn newest_deliveries_sql(p: char, columns: &str, cond: &str) -> String {
    let limit = bound_count(format!("{p}2"));
    let class = |verified: &str| {
        format!(
            "SELECT id FROM (SELECT id FROM deliveries WHERE source = {p}1 AND verified = {verified} {cond} ORDER BY source DESC, verified DESC, id DESC LIMIT {limit}) AS c_{verified}"
        )
    };
    format!("SELECT {columns} FROM deliveries WHERE id IN ({} UNION ALL {}) ORDER BY id DESC LIMIT {limit}", class("TRUE"), class("FALSE"))
}

/// Parameters source, cutoff, limit, verified: deletes of that source and class those of its
/// `limit` oldest rows received before `cutoff`: a bounded number looked at, since received times
/// follow ids closely enough that what is left waits for the next round. Ordered by the index's
/// whole key, as in [`newest_deliveries_sql`].
pub(crate) fn retention_age_sql(p: char) -> String {
    format!(
        "DELETE FROM deliveries WHERE id IN (SELECT id FROM \
         (SELECT id, received_at FROM deliveries WHERE source = {p}1 AND verified = {p}4 ORDER BY source, verified, id LIMIT {}) AS oldest \
         WHERE received_at < {p}2)",
        bound_count(format!("{p}3"))
    )
}

/// A new record id: the kind (`job`, `queue`, `dl`) and a time-ordered UUID, as both engines
/// store them.
pub(crate) fn new_id(kind: &str) -> String {
    format!("{kind}-{}", Uuid::now_v7().simple())
}

/// A stored count (never negative).
pub(crate) fn count(n: i64) -> u64 {
    n.max(0) as u64
}

/// A stored attempt counter.
pub(crate) fn attempts(n: i64) -> u32 {
    n.clamp(0, i64::from(u32::MAX)) as u32
}

/// A stored `INC-YYYY-NNNN`.
pub(crate) fn incident_number(s: Option<&str>) -> Result<Option<IncidentNumber>, StoreError> {
    s.map(str::parse).transpose().map_err(corrupt("incident number"))
}
