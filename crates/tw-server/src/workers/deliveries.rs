//! Background writers of delivery records: refusals counted in memory
//! ([`crate::refusals::RefusalSampler`]) written once a second, and old records (and expired
//! console sessions) pruned by the retention. Here rather than in `refusals.rs`: the state carries the sampler, so `refusals.rs`
//! must not import the state back.

use crate::state::AppState;

/// Writes the counted refusals once a second (and once more when the server stops).
pub async fn flush_every_second(state: AppState) {
    let mut stopping = state.stopping.clone();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = stopping.changed() => true,
        };
        flush(&state).await;
        if last || *stopping.borrow() {
            return;
        }
    }
}

/// Writes the counted refusals now.
pub async fn flush(state: &AppState) {
    let counts = state.refusals.take(state.clock.now());
    if counts.is_empty() {
        return;
    }
    if let Err(e) = state.store.record_refusals(counts.clone()).await {
        tracing::warn!(target: "store", error = %e.chain(), rows = counts.len(), "refused-request counts not written; retrying");
        state.refusals.restore(counts);
    }
}

/// Prunes delivery records by `retention`, and expired console sessions, from the start, then after each pause
/// ([`crate::refusals::next_prune_pause`] from `every`), until the server stops.
pub async fn prune_periodically(state: AppState, retention: tw_store::DeliveryRetention, every: std::time::Duration) {
    let mut stopping = state.stopping.clone();
    let base = every.max(std::time::Duration::from_millis(10));
    let mut pause = base;
    loop {
        let deleted = match state.store.prune_deliveries(retention, state.clock.now()).await {
            Ok(0) => 0,
            Ok(n) => {
                state.metrics.count("deliveries_pruned_total", &[], n);
                tracing::debug!(target: "store", deleted = n, "delivery records pruned");
                n
            }
            Err(e) => {
                tracing::warn!(target: "store", error = %e.chain(), "pruning delivery records failed");
                0
            }
        };
        // Expired console sessions go with the same upkeep (a look on a read connection, and a
        // write only when some expired). They count as rows deleted for the pause, as deliveries do.
        let sessions = match state.store.prune_console_sessions(state.clock.now()).await {
            Ok(n) => {
                if n > 0 {
                    tracing::debug!(target: "store", deleted = n, "expired console sessions pruned");
                }
                n
            }
            Err(e) => {
                tracing::warn!(target: "store", error = %e.chain(), "pruning console sessions failed");
                0
            }
        };
        pause = crate::refusals::next_prune_pause(base, pause, deleted + sessions);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopping.changed() => return,
        }
    }
}
