//! The answers of `POST /api/webhooks/{source}`.

use serde::{Deserialize, Serialize};
use tw_core::Format;
use utoipa::ToSchema;
use uuid::Uuid;

/// `accepted`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AcceptedStatus {
    Accepted,
}

/// 201: a new incident was committed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IntakeCreated {
    #[schema(inline)]
    pub status: AcceptedStatus,
    pub incident_id: Uuid,
    #[schema(example = "INC-2026-0001")]
    pub incident_number: String,
}

/// 200: a second delivery of a known alert; the existing incident's delivery count went up.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IntakeDuplicate {
    #[schema(inline)]
    pub status: AcceptedStatus,
    pub incident_id: Uuid,
    pub incident_number: String,
    pub duplicate: bool,
    pub delivery_count: u64,
}

/// `ok`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OkStatus {
    Ok,
}

/// 200: a signed test event (`event_type: tw.webhook.test`): verified and normalized, not stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum IntakeOk {
    Duplicate(IntakeDuplicate),
    Test(IntakeTestEvent),
}

/// `queued`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueuedStatus {
    Queued,
}

/// 202: the raw event is on disk and a worker will make the incident (`GET /api/webhooks/queue/{queue_id}`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IntakeQueued {
    #[schema(inline)]
    pub status: QueuedStatus,
    pub queue_id: String,
    pub message: String,
}

/// `dead_lettered`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetteredStatus {
    DeadLettered,
}

/// 202: the verified event could not be normalized and was kept as a dead letter.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IntakeDeadLettered {
    #[schema(inline)]
    pub status: DeadLetteredStatus,
    pub dead_letter_id: String,
    pub message: String,
}

/// A 202 of the intake.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum IntakeAccepted {
    Queued(IntakeQueued),
    DeadLettered(IntakeDeadLettered),
}

/// Any success answer of the intake (for clients: `tw-cli webhook test`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntakeAnswer {
    Created(IntakeCreated),
    Ok(IntakeOk),
    Accepted(IntakeAccepted),
}
