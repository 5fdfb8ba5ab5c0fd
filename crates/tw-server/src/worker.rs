//! Queue workers: turn queued raw events into incidents (or dead letters), in the background.

use crate::routes::intake::normalize;
use crate::state::AppState;
use std::time::Duration;
use tw_store::IngestRequest;

const BATCH: usize = 64;
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Runs one worker until the process ends.
pub async fn run(state: AppState) {
    loop {
        crate::state::Heartbeats::beat(&state.heartbeats.queue);
        match state.store.claim_queued(BATCH, state.claim_lease_secs).await {
            Ok(events) if !events.is_empty() => {
                for event in events {
                    process(&state, event).await;
                }
            }
            Ok(_) => {
                let _ = tokio::time::timeout(IDLE_POLL, state.queue_wakeup.notified()).await;
            }
            Err(e) => {
                tracing::error!(target: "store", error = %e, "claiming queued events failed");
                tokio::time::sleep(IDLE_POLL).await;
            }
        }
    }
}

async fn process(state: &AppState, event: tw_store::QueuedEvent) {
    let id = event.id.clone();
    let mut severity = None;
    let result = match state.sources.get(&event.source).await {
        Err(e) => {
            tracing::error!(target: "store", queue_id = %id, error = %e, "loading the source failed; will retry");
            return;
        }
        Ok(None) => Err(format!("source '{}' is no longer registered", event.source)),
        Ok(Some(source)) => match serde_json::from_slice::<serde_json::Value>(&event.raw) {
            Err(e) => Err(format!("body is not valid JSON: {e}")),
            Ok(value) => normalize(&source, &value).map(|alert| {
                severity = Some(alert.severity);
                IngestRequest {
                    source: event.source.clone(),
                    alert,
                    raw: event.raw,
                    request_key: event.request_key,
                    received_at: event.received_at,
                    request_id: event.request_id,
                    auto_triage: source.settings.auto_triage,
                    playbook: source.settings.playbook.clone(),
                    triage_max_attempts: state.triage.max_attempts,
                }
            }),
        },
    };
    match state.store.complete_queued(&id, result).await {
        Ok(entry) => {
            state.triage_wakeup.notify_one();
            if let (Some(sev), Some(false)) = (severity, entry.duplicate) {
                state.metrics.count("incidents_created_total", &[("source", entry.source.as_str()), ("severity", sev.as_str())], 1);
            }
            if entry.duplicate == Some(true) {
                state.metrics.count("webhook_duplicates_total", &[("source", entry.source.as_str())], 1);
            }
            tracing::info!(
                target: "webhook",
                queue_id = %id,
                source = %entry.source,
                status = ?entry.status,
                incident = %entry.incident_number.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                error = entry.error.as_deref().unwrap_or("-"),
                "queued event processed"
            )
        }
        Err(e) => tracing::error!(target: "store", queue_id = %id, error = %e, "finishing a queued event failed; it will be retried"),
    }
}
