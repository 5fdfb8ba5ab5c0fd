//! What the intake decides about a delivery, in order: the source it names ([`source`]), whether
//! that source accepts deliveries ([`accepting`], before a byte of the body is read), then, with
//! the body, [`receive`]: the signature ([`super::verify`]), the source's own rate limit, the JSON
//! object, a test event (verified and normalized, never stored), the sync path or the queue
//! (async sources, or the sync path saturated), normalization or a dead letter, and the commit.
//! Every verified delivery is committed before it is acknowledged.

use super::verify::{self, Verified};
use crate::ApiError;
use crate::limits::FailureKind;
use crate::state::AppState;
use axum::body::Bytes;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::net::IpAddr;
use std::sync::Arc;
use tw_core::{Alert, Severity, SourceMode, SourceName};
use tw_store::{IncidentRef, IngestOutcome, IngestRequest, NewDeadLetter, NewQueuedEvent, QueuedEvent, SourceRecord};

/// The generic `event_type` of a signed test event: verified and normalized, never stored.
pub const TEST_EVENT_TYPE: &str = "tw.webhook.test";

/// The signed test event `POST /api/webhooks/{source}/test` and `tw-cli webhook test` send.
pub fn test_event(source: &SourceName, now: chrono::DateTime<chrono::Utc>) -> Value {
    serde_json::json!({
        "event_type": TEST_EVENT_TYPE,
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "source": source,
        "data": {"alert_id": format!("test-{}", uuid::Uuid::new_v4()), "severity": "info",
                 "details": {"title": "tw-cli webhook test"}}
    })
}

/// What became of a verified delivery.
#[derive(Debug)]
pub enum Outcome {
    /// A new incident was committed.
    Created { incident: IncidentRef, severity: Severity },
    /// A second delivery of a known alert, counted on its incident.
    Duplicate { incident: IncidentRef, delivery_count: u64 },
    /// The raw event was committed for a queue worker: the source is async, or the sync path was
    /// saturated.
    Queued { queue_id: String },
    /// A verified JSON object that could not be normalized, committed as a dead letter.
    DeadLettered { id: String, reason: String },
    /// A signed test event, normalized to this alert and not stored.
    Test(Alert),
}

/// Why [`receive`] refused a delivery, by how far it got: what is kept of the request depends on
/// it (nothing is stored of a request before its signature is proven).
#[derive(Debug)]
pub enum Refusal {
    /// The signature did not verify.
    Unverified(ApiError),
    /// Verified, but over the source's own `rate_limit`: the sender will send the body again, so
    /// it is not kept.
    OverLimit(ApiError),
    /// Verified, then refused (not a JSON object) or not committed (the store).
    Verified(ApiError),
}

impl Refusal {
    /// Whether the signature had verified.
    pub fn verified(&self) -> bool {
        !matches!(self, Refusal::Unverified(_))
    }

    /// What the sender is answered.
    pub fn into_error(self) -> ApiError {
        match self {
            Refusal::Unverified(e) | Refusal::OverLimit(e) | Refusal::Verified(e) => e,
        }
    }
}

/// The registered source `raw_name` names. `client`: the sender's address, `None` for the
/// server's own test delivery, which no rate limit counts. An unknown name counts as a failed
/// authentication, so source names cannot be enumerated at speed (404 and 401 tell them apart);
/// an address over its budget gets 429 for every name, registered or not.
pub async fn source(state: &AppState, raw_name: &str, client: Option<IpAddr>) -> Result<Arc<SourceRecord>, ApiError> {
    let unknown = || {
        if let Some(client) = client {
            crate::limits::count_failure(state, client, FailureKind::UnknownSource);
        }
        ApiError::UnknownSource(super::truncate(raw_name, 64))
    };
    if let Some(client) = client {
        crate::limits::refuse_throttled(state, client)?;
    }
    let name = SourceName::parse(raw_name).map_err(|_| unknown())?;
    state.sources.get(&name).await?.ok_or_else(unknown)
}

/// The most body `source` takes, when it accepts deliveries at all, from `client` (as for
/// [`source`]): a disabled source, or an address outside the source's `allowed_ips`, is refused
/// before its body is read. A refused address spends its budget of failed verifications.
pub fn accepting(state: &AppState, source: &SourceRecord, client: Option<IpAddr>) -> Result<u64, ApiError> {
    if !source.settings.enabled {
        return Err(ApiError::SourceDisabled(source.name.to_string()));
    }
    if let Some(client) = client
        && !source.settings.allowed_ips.is_empty()
        && !source.settings.allowed_ips.iter().any(|net| net.contains(&client))
    {
        crate::limits::count_failure(state, client, FailureKind::Address);
        return Err(ApiError::AddressNotAllowed(source.name.to_string()));
    }
    Ok(source.settings.max_body_bytes)
}

/// A delivery as the intake route received it.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub headers: &'a HeaderMap,
    /// The path segment after the source's name (`url-token`), when there was one.
    pub url_token: Option<&'a str>,
    pub body: &'a Bytes,
    /// The server's id of the request, stored with what it became.
    pub rid: &'a str,
    /// As for [`source`].
    pub client: Option<IpAddr>,
}

/// Decides and commits a delivery to `source` (see the module's order).
pub async fn receive(state: &AppState, source: &SourceRecord, delivery: Delivery<'_>) -> Result<Outcome, Refusal> {
    let Delivery { headers, url_token, body, rid, client } = delivery;
    let now = state.clock.now();
    let verified = verify::verify(source, headers, url_token, body, now).map_err(|e| {
        if let Some(client) = client {
            crate::limits::count_failure(state, client, FailureKind::Signature);
        }
        Refusal::Unverified(e)
    })?;
    // The source's own limit counts verified deliveries only, so forgeries cannot spend it.
    if client.is_some()
        && let Err(e) = crate::limits::take_source(state, source)
    {
        return Err(Refusal::OverLimit(e));
    }
    commit(state, source, verified, body, rid, now).await.map_err(Refusal::Verified)
}

/// Everything after the checks of a verified delivery: parse, decide its path, store it.
async fn commit(
    state: &AppState,
    source: &SourceRecord,
    verified: Verified<'_>,
    body: &Bytes,
    rid: &str,
    now: DateTime<Utc>,
) -> Result<Outcome, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::InvalidPayload(format!("Body is not valid JSON: {e}")))?;
    if !value.is_object() {
        let kind = tw_core::formats::json_type(&value);
        return Err(ApiError::InvalidPayload(format!("Body must be a JSON object, got {kind}")));
    }
    // A second SHA-256 of the body: computed only where it is kept or decides (the queue, a dead
    // letter, an alert without an id of its own).
    let request_key = || verified.request_key(body);

    if value.get("event_type").and_then(Value::as_str) == Some(TEST_EVENT_TYPE) {
        return normalize(source, &value).map(Outcome::Test).map_err(ApiError::InvalidPayload);
    }

    let sync_permit = match source.settings.mode {
        SourceMode::Async => None,
        SourceMode::Sync => match state.sync_permits.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                tracing::warn!(target: "webhook", source = %source.name, "sync intake saturated; queueing the event");
                None
            }
        },
    };
    let Some(_permit) = sync_permit else {
        let event = NewQueuedEvent {
            source: source.name.clone(),
            raw: body.to_vec(),
            request_key: request_key(),
            received_at: now,
            request_id: Some(rid.to_string()),
        };
        let queue_id = state.store.enqueue(event).await?;
        state.queue_wakeup.notify_one();
        return Ok(Outcome::Queued { queue_id });
    };

    let alert = match normalize(source, &value) {
        Ok(alert) => alert,
        Err(reason) => {
            // The payload was a verified JSON object and still could not be read: keep it.
            let letter = NewDeadLetter {
                source: source.name.clone(),
                raw: body.to_vec(),
                reason: reason.clone(),
                received_at: now,
                request_id: Some(rid.to_string()),
                queue_id: None,
                request_key: Some(request_key()),
            };
            let id = state.store.dead_letter(letter).await?;
            return Ok(Outcome::DeadLettered { id, reason });
        }
    };
    let severity = alert.severity;
    let request_key = if tw_store::keyed_by_request(&alert) { request_key() } else { String::new() };
    let req = ingest_request(state, source, alert, body.to_vec(), request_key, now, Some(rid.to_string()));
    match state.store.ingest(req).await? {
        IngestOutcome::Created(incident) => {
            if source.settings.auto_triage {
                state.triage_wakeup.notify_one();
            }
            Ok(Outcome::Created { incident, severity })
        }
        IngestOutcome::Duplicate { incident, delivery_count } => Ok(Outcome::Duplicate { incident, delivery_count }),
    }
}

/// A queued event as the store's request to create its incident, normalized as a sync delivery
/// is; `Err`: why it cannot be (it is dead-lettered with that reason).
pub fn queued_request(state: &AppState, source: &SourceRecord, event: QueuedEvent) -> Result<IngestRequest, String> {
    stored_request(state, source, event.raw, event.request_key, event.received_at, event.request_id)
}

/// A stored body (queued, or a dead letter) as the store's request to create its incident,
/// normalized as when it arrived; `Err`: why it cannot be.
pub(crate) fn stored_request(
    state: &AppState,
    source: &SourceRecord,
    raw: Vec<u8>,
    request_key: String,
    received_at: DateTime<Utc>,
    request_id: Option<String>,
) -> Result<IngestRequest, String> {
    let alert = normalize_raw(source, &raw)?;
    Ok(ingest_request(state, source, alert, raw, request_key, received_at, request_id))
}

/// The store's request for an alert of `source`: the one definition for the sync path and the
/// queue, so an incident and its auto-triage job are the same whichever path created them.
fn ingest_request(
    state: &AppState,
    source: &SourceRecord,
    alert: Alert,
    raw: Vec<u8>,
    request_key: String,
    received_at: DateTime<Utc>,
    request_id: Option<String>,
) -> IngestRequest {
    IngestRequest {
        source: source.name.clone(),
        alert,
        raw,
        request_key,
        received_at,
        request_id,
        auto_triage: source.settings.auto_triage,
        playbook: source.settings.playbook.clone(),
        triage_max_attempts: state.triage.max_attempts,
    }
}

/// Normalizes a stored body (queued, or kept with an incident or a dead letter) with the source's
/// settings, as the intake normalized it when it arrived.
pub(crate) fn normalize_raw(source: &SourceRecord, raw: &[u8]) -> Result<Alert, String> {
    let value = serde_json::from_slice::<Value>(raw).map_err(|e| format!("body is not valid JSON: {e}"))?;
    normalize(source, &value)
}

/// Normalizes with the source's settings; a panic in a normalizer is contained and reported as a
/// reason, so no payload can take the server down or be lost.
fn normalize(source: &SourceRecord, value: &Value) -> Result<Alert, String> {
    let settings = &source.settings;
    let run = || match &settings.mapping {
        Some(mapping) => tw_core::formats::normalize_mapped(value, mapping, &settings.severity_mapping),
        None => tw_core::normalize(value, settings.format, &settings.severity_mapping),
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(alert)) => Ok(alert),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            tracing::error!(target: "webhook", source = %source.name, "normalizer panicked; event dead-lettered");
            Err("the payload could not be normalized (internal normalizer error)".into())
        }
    }
}
