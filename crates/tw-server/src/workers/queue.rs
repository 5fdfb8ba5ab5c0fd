//! Queue workers: turn queued raw events into incidents (or dead letters), in the background,
//! normalized as the intake normalizes ([`crate::intake::queued_request`]).

use crate::state::AppState;
use std::time::Duration;

const BATCH: usize = 64;
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Runs one worker until the server stops. At a stop, the event being processed is finished and
/// the rest of the claimed batch is given back at once (another instance takes it without
/// waiting for the lease).
pub async fn run(state: AppState) {
    let mut stopping = state.stopping.clone();
    loop {
        if *stopping.borrow() {
            return;
        }
        crate::state::Heartbeats::beat(&state.heartbeats.queue);
        match state.store.claim_queued(BATCH, state.claim_lease_secs).await {
            Ok(events) if !events.is_empty() => {
                let mut events = events.into_iter();
                while let Some(event) = events.next() {
                    if *stopping.borrow() {
                        release(&state, std::iter::once(event).chain(events).collect()).await;
                        return;
                    }
                    process(&state, event).await;
                }
            }
            Ok(_) => {
                tokio::select! {
                    _ = tokio::time::timeout(IDLE_POLL, state.queue_wakeup.notified()) => {}
                    _ = stopping.changed() => {}
                }
            }
            Err(e) => {
                tracing::error!(target: "store", error = %e, "claiming queued events failed");
                tokio::time::sleep(IDLE_POLL).await;
            }
        }
    }
}

/// Gives claimed, unprocessed events back to the queue.
async fn release(state: &AppState, events: Vec<tw_store::QueuedEvent>) {
    let claims: Vec<(String, u32)> = events.into_iter().map(|e| (e.id, e.attempts)).collect();
    match state.store.release_queued(&claims).await {
        Ok(released) => tracing::info!(target: "webhook", released, "server stopping; claimed queued events released for another instance"),
        Err(e) => {
            tracing::warn!(target: "store", error = %e.chain(), claimed = claims.len(), "claimed queued events not released; another instance takes them when their lease ends")
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
        Ok(Some(source)) => crate::intake::queued_request(state, &source, event).inspect(|req| severity = Some(req.alert.severity)),
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
