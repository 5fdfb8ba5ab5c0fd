//! Deliveries: `GET /api/webhooks/{source}/events`, `GET /api/deliveries/{request_id}`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// One delivery to a registered source.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// The server's own id of the request (`req_<uuid v7>`, the response's `X-Tw-Request-Id`):
    /// unique among stored deliveries.
    #[schema(example = "req_0193f1c2a4b87c3e9d5a0b1c2d3e4f50")]
    pub request_id: String,
    /// The sender's `X-Request-Id`, when it sent a sane one (echoed in the response's
    /// `X-Request-Id`): the sender's word, not unique.
    #[schema(required = true)]
    pub sender_request_id: Option<String>,
    pub source: String,
    pub received_at: DateTime<Utc>,
    /// The HTTP status it was answered with.
    pub status: u16,
    /// The error code, for a refused delivery.
    #[schema(required = true)]
    pub code: Option<String>,
    #[schema(required = true)]
    pub incident_id: Option<Uuid>,
    #[schema(required = true, example = "INC-2024-0001")]
    pub incident_number: Option<String>,
    #[schema(required = true)]
    pub queue_id: Option<String>,
    pub duplicate: bool,
    #[schema(required = true)]
    pub body_len: Option<u64>,
    pub latency_ms: f64,
    /// True when the signature verified.
    pub verified: bool,
    /// The payload (only when one delivery is asked for): what a refused delivery sent (first
    /// 64 KiB), or the incident's or queued event's raw payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_payload: Option<String>,
    /// Only on an aggregate row: how many requests to this source, refused with this status and
    /// code before their signature verified (or rate limited), it stands for, from `received_at`
    /// to `last_received_at`. Past 5 a minute per source and code, refused requests are counted
    /// here instead of stored one by one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_count: Option<u64>,
    /// Only on an aggregate row: when its last request arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_received_at: Option<DateTime<Utc>>,
    /// The request's headers (only when one delivery is asked for; kept with every refused
    /// delivery and with the first accepted one of each second per source), one `name: value`
    /// line each in the order received: never a credential (`Authorization`, cookies, signature and token
    /// headers, anything named like a key, token, secret or password are `[redacted]`), and of a
    /// request whose signature did not verify only the names (with `Content-Type`,
    /// `Content-Length` and `User-Agent`). At most 4 KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "content-type: application/json\nx-tw-signature: [redacted]\nx-tw-timestamp: 1718031672")]
    pub headers: Option<String>,
    /// Only when looked up by a sender's `X-Request-Id`: the own ids of the other deliveries that
    /// carried it, newest first (at most 20).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_request_ids: Option<Vec<String>>,
}

impl From<tw_store::Delivery> for Delivery {
    fn from(d: tw_store::Delivery) -> Self {
        Delivery {
            request_id: d.request_id,
            sender_request_id: d.sender_request_id,
            source: d.source.to_string(),
            received_at: d.received_at,
            status: d.status,
            code: d.code,
            incident_id: d.incident_id,
            incident_number: d.incident_number.map(|n| n.to_string()),
            queue_id: d.queue_id,
            duplicate: d.duplicate,
            body_len: d.body_len,
            latency_ms: d.latency_ms,
            verified: d.verified,
            raw_payload: d.raw_payload,
            refused_count: d.refused_count,
            last_received_at: d.last_received_at,
            headers: d.headers,
            other_request_ids: None,
        }
    }
}

/// `GET /api/webhooks/{source}/events`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    /// Newest first.
    pub data: Vec<Delivery>,
}

/// Which deliveries a listing shows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatusFilter {
    /// Answered 2xx.
    Ok,
    /// Answered anything else.
    Failed,
    All,
}

/// Filters of `GET /api/webhooks/{source}/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// `ok` (2xx), `failed` (anything else) or `all` (default).
    #[param(value_type = Option<DeliveryStatusFilter>, inline)]
    pub status: Option<String>,
    /// How many of the newest (default 50, at most 1000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub tail: Option<String>,
}
