//! Schema types for the OpenAPI document (`GET /api/openapi.json`): they describe the JSON the
//! handlers already read and write, field for field, and exist only to be documented.
//!
//! The handlers build most of their bodies with `json!` (or serialize tw-store types, which cannot
//! depend on utoipa); when a handler's body changes, change its schema here. The response-shape
//! test in `tests/api/openapi.rs` checks real responses against these schemas.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Errors

/// Every error response: `{"error": {"code", "message", "details"?}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// A human explanation; never contains internal causes.
    pub message: String,
    /// Only for `validation_error`: one entry per field in error.
    #[schema(required = false)]
    pub details: Vec<crate::error::FieldError>,
}

/// The stable machine-readable error codes (`ApiError::code`). Each operation's error responses
/// say which of them it can answer with.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    UnknownSource,
    SourceDisabled,
    MissingSignature,
    MissingTimestamp,
    TimestampInvalid,
    TimestampExpired,
    InvalidSignature,
    PayloadTooLarge,
    InvalidPayload,
    Unauthorized,
    Forbidden,
    ValidationError,
    SourceExists,
    ManagedByConfig,
    NotFound,
    PlaybookExists,
    BuiltinPlaybook,
    PlaybookInUse,
    InternalError,
    Unavailable,
    RequestTimeout,
    RateLimited,
}

// ---------------------------------------------------------------------------------------------
// Shared enums and blocks

/// Our severities.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

/// A payload format.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Generic,
    Defender,
    Crowdstrike,
    Splunk,
}

/// A source's format setting: a format, or `auto` (detected per payload).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FormatSetting {
    Auto,
    Generic,
    Defender,
    Crowdstrike,
    Splunk,
}

/// `sync`: the incident is committed before the answer (201); `async`: the raw event is queued
/// (202) and a worker makes the incident.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    Sync,
    Async,
}

/// The `meta` block of a paged list.
#[derive(Serialize, ToSchema)]
pub struct PageMeta {
    pub page: u32,
    pub per_page: u32,
    pub total: u64,
    pub total_pages: u64,
}

/// `?page=&per_page=` of a paged list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1-based page number (default 1). The server skips every item before the page, so deep
    /// pages cost more; where a list offers a `cursor`, that is the fast way through it.
    #[param(minimum = 1, maximum = 1000000)]
    pub page: Option<u32>,
    /// Items per page (default 50, at most 200).
    #[param(minimum = 1, maximum = 200)]
    pub per_page: Option<u32>,
}

// ---------------------------------------------------------------------------------------------
// Health

/// `GET /api/health`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
    /// The server's version.
    pub version: String,
}

// ---------------------------------------------------------------------------------------------
// Sources

/// A source as shown by the API: settings and statistics, never the secret itself.
#[derive(Serialize, ToSchema)]
pub struct SourceView {
    #[schema(example = "email-gateway")]
    pub source: String,
    pub enabled: bool,
    pub auto_triage: bool,
    #[schema(required = true)]
    pub playbook: Option<String>,
    pub format: FormatSetting,
    pub mode: SourceMode,
    /// Vendor severity value to our severity.
    pub severity_mapping: BTreeMap<String, Severity>,
    pub timestamp_tolerance_secs: i64,
    pub max_body_bytes: u64,
    /// Verified deliveries allowed (per server process); null: unlimited.
    #[schema(required = true)]
    pub rate_limit: Option<RateLimitSetting>,
    /// Defined in the config file: only changeable there.
    pub managed_by_config: bool,
    #[schema(example = "sha256:1a2b3c4d")]
    pub secret_fingerprint: String,
    #[schema(required = true)]
    pub secret_rotated_at: Option<DateTime<Utc>>,
    /// Until when the previous secret still verifies, after a rotation.
    #[schema(required = true)]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[schema(required = true)]
    pub last_delivery_at: Option<DateTime<Utc>>,
    pub delivery_count: u64,
    pub error_count: u64,
    #[schema(example = "/api/webhooks/email-gateway")]
    pub webhook_path: String,
    /// The secret, returned once: by a create that generated it and by a rotation.
    #[schema(required = false)]
    pub secret: String,
}

/// `GET /api/webhooks`.
#[derive(Serialize, ToSchema)]
pub struct SourceList {
    pub data: Vec<SourceView>,
}

/// The settable fields of a source. Booleans and numbers may also be sent as strings.
#[derive(Serialize, ToSchema)]
pub struct SourceSettingsInput {
    /// At least 16 characters; generated (and returned once) when omitted on create.
    pub secret: Option<String>,
    pub enabled: Option<bool>,
    /// Requires `playbook`.
    pub auto_triage: Option<bool>,
    /// A playbook name; null or "" for none.
    pub playbook: Option<String>,
    pub format: Option<FormatSetting>,
    pub mode: Option<SourceMode>,
    pub severity_mapping: Option<BTreeMap<String, Severity>>,
    #[schema(minimum = 1, maximum = 86400)]
    pub timestamp_tolerance_secs: Option<i64>,
    #[schema(minimum = 1, maximum = 67108864)]
    pub max_body_bytes: Option<u64>,
    /// A token bucket of verified deliveries; null removes the limit (the default: none).
    pub rate_limit: Option<RateLimitSetting>,
}

/// `POST /api/webhooks`: a new source.
#[derive(Serialize, ToSchema)]
pub struct CreateSource {
    /// Lowercase letters, digits, `-` and `_`.
    #[schema(example = "email-gateway")]
    pub source: String,
    #[serde(flatten)]
    pub settings: SourceSettingsInput,
}

/// `POST /api/webhooks/{source}/rotate-secret`.
#[derive(Serialize, ToSchema)]
pub struct RotateSecret {
    /// The new secret; generated when omitted.
    pub secret: Option<String>,
    /// How long the old secret keeps verifying (default 86400).
    #[schema(minimum = 0, maximum = 2592000)]
    pub grace_period_secs: Option<i64>,
}

/// One check of a server-side test delivery.
#[derive(Serialize, ToSchema)]
pub struct SourceCheck {
    #[schema(example = "signature")]
    pub check: String,
    pub ok: bool,
    /// Present when the check passed (except `registered`).
    #[schema(required = false)]
    pub detail: String,
    /// Present when the check failed.
    #[schema(required = false)]
    pub error: String,
}

/// `POST /api/webhooks/{source}/test`.
#[derive(Serialize, ToSchema)]
pub struct SourceTestResult {
    pub ok: bool,
    pub source: String,
    pub checks: Vec<SourceCheck>,
    pub secret_fingerprint: String,
}

// ---------------------------------------------------------------------------------------------
// Intake

/// `accepted`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AcceptedStatus {
    Accepted,
}

/// 201: a new incident was committed.
#[derive(Serialize, ToSchema)]
pub struct IntakeCreated {
    #[schema(inline)]
    pub status: AcceptedStatus,
    pub incident_id: Uuid,
    #[schema(example = "INC-2026-0001")]
    pub incident_number: String,
}

/// 200: a second delivery of a known alert; the existing incident's delivery count went up.
#[derive(Serialize, ToSchema)]
pub struct IntakeDuplicate {
    #[schema(inline)]
    pub status: AcceptedStatus,
    pub incident_id: Uuid,
    pub incident_number: String,
    pub duplicate: bool,
    pub delivery_count: u64,
}

/// `ok`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OkStatus {
    Ok,
}

/// 200: a signed test event (`event_type: tw.webhook.test`): verified and normalized, not stored.
#[derive(Serialize, ToSchema)]
pub struct IntakeTestEvent {
    #[schema(inline)]
    pub status: OkStatus,
    pub test: bool,
    pub source: String,
    pub format: Format,
    pub title: String,
    pub message: String,
}

/// A 200 of the intake.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum IntakeOk {
    Duplicate(IntakeDuplicate),
    Test(IntakeTestEvent),
}

/// `queued`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueuedStatus {
    Queued,
}

/// 202: the raw event is on disk and a worker will make the incident (`GET /api/webhooks/queue/{queue_id}`).
#[derive(Serialize, ToSchema)]
pub struct IntakeQueued {
    #[schema(inline)]
    pub status: QueuedStatus,
    pub queue_id: String,
    pub message: String,
}

/// `dead_lettered`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetteredStatus {
    DeadLettered,
}

/// 202: the verified event could not be normalized and was kept as a dead letter.
#[derive(Serialize, ToSchema)]
pub struct IntakeDeadLettered {
    #[schema(inline)]
    pub status: DeadLetteredStatus,
    pub dead_letter_id: String,
    pub message: String,
}

/// A 202 of the intake.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum IntakeAccepted {
    Queued(IntakeQueued),
    DeadLettered(IntakeDeadLettered),
}

// ---------------------------------------------------------------------------------------------
// Incidents

/// The kinds of entity extracted from alerts.
#[derive(Serialize, ToSchema)]
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

/// An indicator or asset named by an alert.
#[derive(Serialize, ToSchema)]
pub struct Entity {
    pub kind: EntityKind,
    pub value: String,
    /// The part it plays (`sender`, `recipient`, `host`, ...).
    #[schema(required = false)]
    pub role: String,
}

/// An incident's status.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    Open,
    Triaged,
    Closed,
}

/// An incident.
#[derive(Serialize, ToSchema)]
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
    /// The latest triage: the job's state, or the playbook's verdict, score, findings, ...
    #[schema(required = true, value_type = Option<Object>)]
    pub triage: Option<Value>,
}

/// One incident with its payload.
#[derive(Serialize, ToSchema)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub incident: Incident,
    /// The payload as received: its JSON, or a string when it was not JSON.
    #[schema(required = true, value_type = Option<Value>)]
    pub raw_payload: Option<Value>,
}

/// `GET /api/incidents`.
#[derive(Serialize, ToSchema)]
pub struct IncidentList {
    pub data: Vec<Incident>,
    pub meta: IncidentListMeta,
}

/// The `meta` block of `GET /api/incidents`.
#[derive(Serialize, ToSchema)]
pub struct IncidentListMeta {
    /// The page number, when the page was asked for by `page` (or is the first); absent when it
    /// was asked for by `cursor`.
    #[schema(required = false)]
    pub page: u32,
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
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IncidentListParams {
    /// A source name.
    pub source: Option<String>,
    pub severity: Option<Severity>,
    pub status: Option<IncidentStatus>,
    /// The `meta.next_cursor` of the previous page: the page starts right after it. The same cost
    /// at any depth, unlike `page`; cannot be combined with `page`.
    pub cursor: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Queue and dead letters

/// A queued event's state.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum QueueStatus {
    Pending,
    Processed,
    Failed,
}

/// A queued event.
#[derive(Serialize, ToSchema)]
pub struct QueueEntry {
    pub queue_id: String,
    pub status: QueueStatus,
    pub source: String,
    pub received_at: DateTime<Utc>,
    pub attempts: u32,
    /// When processed.
    #[schema(required = false)]
    pub incident_id: Uuid,
    #[schema(required = false)]
    pub incident_number: String,
    #[schema(required = false)]
    pub duplicate: bool,
    /// Why it failed.
    #[schema(required = false)]
    pub error: String,
    #[schema(required = false)]
    pub processed_at: DateTime<Utc>,
}

/// An accepted event that could not be normalized.
#[derive(Serialize, ToSchema)]
pub struct DeadLetter {
    pub id: String,
    pub source: String,
    pub reason: String,
    pub received_at: DateTime<Utc>,
    #[schema(required = false)]
    pub request_id: String,
    #[schema(required = false)]
    pub queue_id: String,
    /// The body as received (lossy UTF-8).
    pub raw_payload: String,
}

/// `GET /api/dead-letters`.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterList {
    pub data: Vec<DeadLetter>,
    pub meta: PageMeta,
}

/// Filter of `GET /api/dead-letters`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterParams {
    /// A source name.
    pub source: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Triage

/// `POST /api/incidents/{id}/triage` (an empty body is allowed).
#[derive(Serialize, ToSchema)]
pub struct TriageRequest {
    /// Default: the playbook of the incident's source.
    pub playbook: Option<String>,
    /// Overrides of the playbook's variables.
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Value>,
}

/// A triage job's state.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TriageJobStatus {
    Pending,
    Running,
    Completed,
    Failed,
}

/// 202 of `POST /api/incidents/{id}/triage`.
#[derive(Serialize, ToSchema)]
pub struct TriageQueued {
    pub job_id: String,
    pub status: TriageJobStatus,
    pub incident_id: Uuid,
    pub incident_number: String,
    pub playbook: String,
}

/// A triage job.
#[derive(Serialize, ToSchema)]
pub struct TriageJob {
    pub job_id: String,
    pub incident_id: Uuid,
    pub playbook: String,
    #[schema(value_type = Object)]
    pub variables: Value,
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

// ---------------------------------------------------------------------------------------------
// Playbooks

/// One step of a playbook.
#[derive(Serialize, ToSchema)]
pub struct PlaybookStep {
    pub name: String,
    pub action: String,
    #[schema(required = true)]
    pub when: Option<String>,
    #[schema(required = true)]
    pub output: Option<String>,
}

/// Where a playbook comes from.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlaybookOrigin {
    /// Compiled in.
    Builtin,
    /// Added through the API or CLI.
    Api,
    /// Loaded from `--playbooks-dir`.
    Dir,
}

/// A playbook.
#[derive(Serialize, ToSchema)]
pub struct PlaybookView {
    pub name: String,
    pub description: String,
    pub version: String,
    pub builtin: bool,
    pub origin: PlaybookOrigin,
    /// Default variables.
    #[schema(value_type = Object)]
    pub variables: Value,
    pub steps: Vec<PlaybookStep>,
    /// Sources that use it.
    pub used_by: Vec<String>,
    /// The YAML text (on a single playbook, not in lists).
    #[schema(required = false)]
    pub yaml: String,
}

/// A stored playbook that no longer parses (in lists only).
#[derive(Serialize, ToSchema)]
pub struct BrokenPlaybook {
    pub name: String,
    pub builtin: bool,
    pub origin: PlaybookOrigin,
    #[schema(example = "no longer parses")]
    pub error: String,
}

/// An entry of the playbook list.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum PlaybookListEntry {
    Playbook(PlaybookView),
    Broken(BrokenPlaybook),
}

/// `GET /api/playbooks`: built-in playbooks first.
#[derive(Serialize, ToSchema)]
pub struct PlaybookList {
    pub data: Vec<PlaybookListEntry>,
}

/// A playbook's YAML wrapped in JSON (the body may also be the YAML text itself).
#[derive(Serialize, ToSchema)]
pub struct PlaybookYaml {
    pub yaml: String,
}

/// `POST /api/playbooks/validate` when the playbook is valid.
#[derive(Serialize, ToSchema)]
pub struct PlaybookValidation {
    pub valid: bool,
    pub name: String,
    /// The number of steps.
    pub steps: u64,
}

/// `POST /api/playbooks/{name}/test`: run a playbook on a payload without storing anything.
#[derive(Serialize, ToSchema)]
pub struct PlaybookTestRequest {
    /// A vendor payload, normalized as the intake would.
    #[schema(value_type = Object)]
    pub payload: Value,
    pub format: Option<FormatSetting>,
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Value>,
    /// The source name the incident appears to come from (default `playbook-test`).
    pub source: Option<String>,
}

/// A normalized alert.
#[derive(Serialize, ToSchema)]
pub struct Alert {
    pub format: Format,
    pub title: String,
    #[schema(required = true)]
    pub description: Option<String>,
    pub severity: Severity,
    #[schema(required = true)]
    pub vendor_severity: Option<String>,
    #[schema(required = true)]
    pub event_time: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub external_id: Option<String>,
    #[schema(required = true)]
    pub event_type: Option<String>,
    pub entities: Vec<Entity>,
}

/// The result of a playbook test.
#[derive(Serialize, ToSchema)]
pub struct PlaybookTestResult {
    pub playbook: String,
    pub alert: Alert,
    /// The outcome: verdict, score, findings, recommended actions, trace.
    #[schema(value_type = Object)]
    pub triage: Value,
}

// ---------------------------------------------------------------------------------------------
// Intel

/// Indicator counts per list.
#[derive(Serialize, ToSchema)]
pub struct IntelCounts {
    #[serde(rename = "bad-domains")]
    pub bad_domains: u64,
    #[serde(rename = "bad-ips")]
    pub bad_ips: u64,
    #[serde(rename = "bad-hashes")]
    pub bad_hashes: u64,
    #[serde(rename = "bad-urls")]
    pub bad_urls: u64,
    #[serde(rename = "protected-domains")]
    pub protected_domains: u64,
    pub assets: u64,
}

/// `GET /api/intel`.
#[derive(Serialize, ToSchema)]
pub struct IntelSummary {
    /// The directory the lists are read from.
    pub dir: String,
    /// The list names `POST /api/intel/{list}` accepts.
    pub lists: Vec<String>,
    pub counts: IntelCounts,
}

/// `POST /api/intel/{list}`.
#[derive(Serialize, ToSchema)]
pub struct IntelAddRequest {
    /// One line each, at most 2048 characters.
    pub indicators: Vec<String>,
}

/// Indicators added to a list.
#[derive(Serialize, ToSchema)]
pub struct IntelAdded {
    pub list: String,
    /// How many were new.
    pub added: u64,
    pub counts: IntelCounts,
}

// ---------------------------------------------------------------------------------------------
// Logs

/// One log record of this server process.
#[derive(Serialize, ToSchema)]
pub struct LogRecord {
    pub ts: DateTime<Utc>,
    #[schema(example = "INFO")]
    pub level: String,
    /// The component: webhook, triage, store, api, auth, or a module path.
    pub target: String,
    pub message: String,
    /// Structured fields (never secrets or signatures); omitted when there are none.
    #[schema(required = false)]
    #[schema(value_type = Object)]
    pub fields: Value,
}

/// `GET /api/logs` without `follow`.
#[derive(Serialize, ToSchema)]
pub struct LogList {
    /// Oldest first.
    pub data: Vec<LogRecord>,
}

/// Filters of `GET /api/logs`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// A component (webhook, triage, store, api, auth) or free text.
    pub filter: Option<String>,
    /// The lowest level: trace, debug, info, warn or error.
    pub level: Option<String>,
    /// Only records newer than this: 30s, 10m, 2h, 1d (at most 366d; more is a 422 naming `since`).
    pub since: Option<String>,
    /// Only records about this source.
    pub source: Option<String>,
    /// How many recent records (default 100, at most 10000).
    #[param(minimum = 0, maximum = 10000)]
    pub tail: Option<u32>,
    /// `true`: answer with server-sent events, the tail then new records as they come.
    pub follow: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// Deliveries and readiness

/// One delivery to a registered source.
#[derive(Serialize, ToSchema)]
pub struct Delivery {
    /// The server's own id of the request (`req_<uuid v7>`, the response's `X-Tw-Request-Id`):
    /// unique among stored deliveries.
    #[schema(example = "req_0193f1c2a4b87c3e9d5a0b1c2d3e4f50")]
    pub request_id: String,
    /// The sender's `X-Request-Id`, when it sent a sane one (echoed in the response's
    /// `X-Request-Id`): the sender's word, not unique.
    pub sender_request_id: Option<String>,
    pub source: String,
    pub received_at: DateTime<Utc>,
    /// The HTTP status it was answered with.
    pub status: u16,
    /// The error code, for a refused delivery.
    pub code: Option<String>,
    pub incident_id: Option<uuid::Uuid>,
    #[schema(example = "INC-2024-0001")]
    pub incident_number: Option<String>,
    pub queue_id: Option<String>,
    pub duplicate: bool,
    pub body_len: Option<u64>,
    pub latency_ms: f64,
    /// True when the signature verified.
    pub verified: bool,
    /// The payload (only when one delivery is asked for): what a refused delivery sent (first
    /// 64 KiB), or the incident's or queued event's raw payload.
    #[schema(required = false)]
    pub raw_payload: Option<String>,
    /// Only on an aggregate row: how many requests to this source, refused with this status and
    /// code before their signature verified (or rate limited), it stands for, from `received_at`
    /// to `last_received_at`. Past 5 a minute per source and code, refused requests are counted
    /// here instead of stored one by one.
    #[schema(required = false)]
    pub refused_count: Option<u64>,
    /// Only on an aggregate row: when its last request arrived.
    #[schema(required = false)]
    pub last_received_at: Option<DateTime<Utc>>,
    /// Only when looked up by a sender's `X-Request-Id`: the own ids of the other deliveries that
    /// carried it, newest first (at most 20).
    #[schema(required = false)]
    pub other_request_ids: Option<Vec<String>>,
}

/// `GET /api/webhooks/{source}/events`.
#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    /// Newest first.
    pub data: Vec<Delivery>,
}

/// Filters of `GET /api/webhooks/{source}/events`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// `ok` (2xx), `failed` (anything else) or `all` (default).
    pub status: Option<String>,
    /// How many of the newest (default 50, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub tail: Option<u32>,
}

/// One readiness check.
#[derive(Serialize, ToSchema)]
pub struct ReadinessCheck {
    pub ok: bool,
    #[schema(required = false)]
    pub detail: Option<String>,
    #[schema(required = false)]
    pub error: Option<String>,
}

/// `GET /api/ready`: every check, and on 503 the failing ones in `error`.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// store, store_writes (the store can commit: false while the disk is full), migrations,
    /// queue_workers, triage_workers.
    pub checks: std::collections::BTreeMap<String, ReadinessCheck>,
    #[schema(required = false)]
    pub error: Option<ErrorDetail>,
}

#[cfg(test)]
mod tests {
    use crate::ApiError;
    use tw_core::signature::VerifyError;

    /// One of each error; the match below stops compiling when a variant is added, so the
    /// `ErrorCode` schema cannot silently miss a code.
    fn every_error() -> Vec<ApiError> {
        let all = vec![
            ApiError::UnknownSource("x".into()),
            ApiError::SourceDisabled("x".into()),
            ApiError::Verify(VerifyError::MissingSignature),
            ApiError::Verify(VerifyError::MissingTimestamp),
            ApiError::Verify(VerifyError::TimestampNotInteger),
            ApiError::Verify(VerifyError::TimestampInFuture(1)),
            ApiError::Verify(VerifyError::TimestampExpired(1)),
            ApiError::Verify(VerifyError::InvalidSignature),
            ApiError::PayloadTooLarge(1),
            ApiError::InvalidPayload("x".into()),
            ApiError::Unauthorized("x"),
            ApiError::Forbidden,
            ApiError::Validation { message: "x".into(), details: vec![] },
            ApiError::SourceExists("x".into()),
            ApiError::ManagedByConfig("x".into()),
            ApiError::NotFound("x".into()),
            ApiError::PlaybookExists("x".into()),
            ApiError::BuiltinPlaybook("x".into()),
            ApiError::PlaybookInUse { name: "x".into(), sources: vec![] },
            ApiError::Internal("x".into()),
            ApiError::Unavailable,
            ApiError::RequestTimeout,
            ApiError::RateLimited(crate::limits::Limited { reason: crate::limits::LimitReason::Source, retry_after_secs: 1 }),
        ];
        for e in &all {
            match e {
                ApiError::UnknownSource(_)
                | ApiError::SourceDisabled(_)
                | ApiError::Verify(
                    VerifyError::MissingSignature
                    | VerifyError::MissingTimestamp
                    | VerifyError::TimestampNotInteger
                    | VerifyError::TimestampInFuture(_)
                    | VerifyError::TimestampExpired(_)
                    | VerifyError::InvalidSignature,
                )
                | ApiError::PayloadTooLarge(_)
                | ApiError::InvalidPayload(_)
                | ApiError::Unauthorized(_)
                | ApiError::Forbidden
                | ApiError::Validation { .. }
                | ApiError::SourceExists(_)
                | ApiError::ManagedByConfig(_)
                | ApiError::NotFound(_)
                | ApiError::PlaybookExists(_)
                | ApiError::BuiltinPlaybook(_)
                | ApiError::PlaybookInUse { .. }
                | ApiError::Internal(_)
                | ApiError::Unavailable
                | ApiError::RequestTimeout
                | ApiError::RateLimited(_) => {}
            }
        }
        all
    }

    #[test]
    fn error_code_schema_lists_exactly_the_api_error_codes() {
        let doc = serde_json::to_value(crate::routes::openapi::document()).unwrap();
        let listed: std::collections::BTreeSet<String> = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("ErrorCode is an enum")
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let actual: std::collections::BTreeSet<String> = every_error().iter().map(|e| e.code().to_string()).collect();
        assert_eq!(listed, actual);
    }
}

// ---------------------------------------------------------------------------------------------
// Audit log and API keys

/// `GET /api/audit` filters.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// An action (`source.create`) or a family of them (`source`: every `source.*`).
    pub action: Option<String>,
    /// A target exactly: a source or playbook name, an API key prefix, an intel list.
    pub target: Option<String>,
    /// Only records at or after this: an RFC 3339 time, or a duration back from now (`12h`, `90d`).
    pub since: Option<String>,
    /// The `meta.next_cursor` of the previous page: the page holds the records older than it.
    pub cursor: Option<String>,
    /// Records per page (default 50, at most 200).
    #[param(minimum = 1, maximum = 200)]
    pub per_page: Option<u32>,
}

/// Who made a change.
#[derive(Serialize, ToSchema)]
pub struct AuditActor {
    /// `api_key`, `cli` (tw-cli on the store directly) or `config_file` (the server at start).
    pub kind: String,
    /// For `api_key`: the key's name.
    #[schema(required = false)]
    pub name: Option<String>,
    /// For `api_key`: the key's prefix (never the key).
    #[schema(required = false)]
    pub key_prefix: Option<String>,
    /// For `cli`: the operating-system user.
    #[schema(required = false)]
    pub user: Option<String>,
    /// For `config_file`: the file.
    #[schema(required = false)]
    pub path: Option<String>,
}

/// One administrative change.
#[derive(Serialize, ToSchema)]
pub struct AuditRecord {
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor: AuditActor,
    /// The client's address (behind trusted proxies, the one they report); null for local changes.
    pub client_ip: Option<String>,
    /// `source.create`, `source.update`, `source.rotate_secret`, `source.delete`, `source.release`,
    /// `api_key.create`, `api_key.revoke`, `playbook.create`, `playbook.put`, `playbook.delete`,
    /// `intel.add`.
    pub action: String,
    pub target: String,
    /// The state before (null for a creation); never a secret, at most its fingerprint.
    pub before: Option<Value>,
    /// The state after (null for a deletion); never a secret, at most its fingerprint.
    pub after: Option<Value>,
    pub request_id: Option<String>,
}

/// Paging of the audit log.
#[derive(Serialize, ToSchema)]
pub struct AuditMeta {
    pub per_page: u32,
    /// Send as `?cursor=` for older records; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/audit`.
#[derive(Serialize, ToSchema)]
pub struct AuditList {
    pub data: Vec<AuditRecord>,
    pub meta: AuditMeta,
}

/// An API key as listed (never the key).
#[derive(Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    /// The key's first characters, safe to show.
    pub prefix: String,
    /// `admin` or `read`.
    pub scope: String,
    /// `active`, `expired` or `revoked`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Written at most once a minute per key and server, so it may lag by that much.
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// `GET /api/keys`.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    pub data: Vec<ApiKeyView>,
}

// ---------------------------------------------------------------------------------------------
// Rate limits

/// A source's rate limit: a token bucket of `burst` verified deliveries, refilled at
/// `per_second`. Over it the intake answers `429 rate_limited` with `Retry-After`. Counted per
/// server process: N instances behind a load balancer allow N times as much.
#[derive(Serialize, ToSchema)]
pub struct RateLimitSetting {
    /// Deliveries added back each second (fractions allowed: 0.5 is one every two seconds).
    #[schema(minimum = 0.001, maximum = 1000000, example = 10)]
    pub per_second: f64,
    /// Deliveries allowed at once after a quiet period.
    #[schema(minimum = 1, maximum = 1000000, example = 50)]
    pub burst: u32,
}
