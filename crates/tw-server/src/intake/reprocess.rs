//! Normalizing a source's stored events again, after its `mapping`, `format` or
//! `severity_mapping` changed (`POST /api/webhooks/{source}/reprocess`, `tw-cli webhook
//! reprocess`): with the intake's own normalization ([`super::service::normalize_raw`]), never a
//! second copy of its rules.
//!
//! Incidents are updated in place (same id and number; status, triage and delivery counts kept);
//! with `dead_letters`, each dead letter that now normalizes goes through the same store request
//! as a live delivery ([`super::service::stored_request`]: dedupe by alert id or request key,
//! auto-triage) and leaves the dead letters in that transaction. Work is paged ([`PAGE`] events
//! per store round trip) and bounded per call ([`LIMIT`] events); a [`Cursor`] says where the
//! next call goes on, so 100k incidents are a hundred calls, never one unbounded request.

use super::service::{normalize_raw, stored_request};
use crate::ApiError;
use crate::api::reprocess::{ReprocessConflict, ReprocessResult};
use crate::state::AppState;
use chrono::{DateTime, Utc};
use tw_core::IncidentNumber;
use tw_store::{DeadLetterResolution, IngestOutcome, PayloadPage, Renormalized, SourceRecord};

/// Events read per store round trip: the payloads in memory at once (fewer for sources whose
/// bodies may be large, see [`page_rows`]).
pub const PAGE: u32 = 200;
/// The most payload bytes one page may hold, at the source's `max_body_bytes` each.
const PAGE_BYTES: u64 = 64 * 1024 * 1024;

/// Events per page for `source`: [`PAGE`], or fewer when [`PAGE`] bodies of the source's largest
/// size would pass [`PAGE_BYTES`] (a source taking 64 MiB bodies reads one at a time).
fn page_rows(source: &SourceRecord) -> u32 {
    let rows = PAGE_BYTES / source.settings.max_body_bytes.max(1);
    u32::try_from(rows).unwrap_or(PAGE).clamp(1, PAGE)
}
/// Events (incidents and dead letters together) one call reads at most.
pub const LIMIT: u32 = 1000;
/// Conflicts listed per call (all are counted).
const MAX_CONFLICTS_LISTED: usize = 100;

/// Where a reprocessing run goes on: after an incident (by number), then after a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    Incidents(Option<IncidentNumber>),
    DeadLetters(Option<String>),
}

impl Cursor {
    /// Reads a cursor this module wrote: `incidents:`, `incidents:INC-2026-0042`,
    /// `dead-letters:` or `dead-letters:<id>`.
    pub fn parse(text: &str) -> Option<Cursor> {
        if let Some(rest) = text.strip_prefix("incidents:") {
            return if rest.is_empty() { Some(Cursor::Incidents(None)) } else { rest.parse().ok().map(|n| Cursor::Incidents(Some(n))) };
        }
        let rest = text.strip_prefix("dead-letters:")?;
        let id_like = rest.len() <= 64 && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        id_like.then(|| Cursor::DeadLetters((!rest.is_empty()).then(|| rest.to_string())))
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cursor::Incidents(n) => write!(f, "incidents:{}", n.map(|n| n.to_string()).unwrap_or_default()),
            Cursor::DeadLetters(id) => write!(f, "dead-letters:{}", id.as_deref().unwrap_or_default()),
        }
    }
}

/// Reprocesses up to `limit` (at most [`LIMIT`]) events of `source` from `cursor` on: its incidents received at or
/// after `since`, then (with `dead_letters`) its dead letters. `next` in the result says where
/// to go on, when there is more.
pub async fn run(
    state: &AppState,
    source: &SourceRecord,
    since: Option<DateTime<Utc>>,
    dead_letters: bool,
    cursor: Cursor,
    limit: u32,
) -> Result<ReprocessResult, ApiError> {
    let limit = limit.clamp(1, LIMIT);
    let mut result = ReprocessResult { source: source.name.to_string(), since, limit, ..Default::default() };
    let mut budget = limit;
    let mut at = Some(cursor);
    while let Some(cursor) = at.take() {
        if budget == 0 {
            result.next = Some(cursor.to_string());
            break;
        }
        let limit = budget.min(page_rows(source));
        let (read, next) = match cursor {
            Cursor::Incidents(after) => {
                let page = PayloadPage { source: source.name.clone(), since, after, limit };
                let payloads = state.store.incident_payloads(&page).await?;
                let last = payloads.last().map(|p| p.number);
                let read = payloads.len() as u32;
                incidents(state, source, payloads, &mut result).await?;
                let next = if read == limit {
                    Some(Cursor::Incidents(last))
                } else if dead_letters {
                    Some(Cursor::DeadLetters(None))
                } else {
                    None
                };
                (read, next)
            }
            Cursor::DeadLetters(after) => {
                let page = PayloadPage { source: source.name.clone(), since, after, limit };
                let letters = state.store.dead_letter_payloads(&page).await?;
                let last = letters.last().map(|l| l.id.clone());
                let read = letters.len() as u32;
                letters_page(state, source, letters, &mut result).await?;
                (read, (read == limit).then_some(Cursor::DeadLetters(last)))
            }
        };
        budget -= read.min(budget);
        at = next;
    }
    Ok(result)
}

/// Normalizes a page of incidents again and updates them in one store write.
async fn incidents(
    state: &AppState,
    source: &SourceRecord,
    payloads: Vec<tw_store::StoredPayload>,
    result: &mut ReprocessResult,
) -> Result<(), ApiError> {
    let counts = &mut result.incidents;
    counts.scanned += payloads.len() as u64;
    let mut numbers = Vec::with_capacity(payloads.len());
    let mut alerts = Vec::with_capacity(payloads.len());
    for p in payloads {
        match normalize_raw(source, &p.raw) {
            Ok(alert) => {
                numbers.push((p.number, alert.external_id.clone()));
                alerts.push((p.id, alert));
            }
            Err(reason) => {
                counts.failed += 1;
                tracing::warn!(target: "webhook", source = %source.name, incident = %p.number, reason, "stored payload no longer normalizes; incident left as it was");
            }
        }
    }
    if alerts.is_empty() {
        return Ok(());
    }
    let outcomes = state.store.renormalize_incidents(&source.name, alerts).await?;
    for ((number, external_id), outcome) in numbers.into_iter().zip(outcomes) {
        match outcome {
            Renormalized::Updated => counts.updated += 1,
            Renormalized::Unchanged => counts.unchanged += 1,
            Renormalized::Conflict { holder } => {
                counts.conflicts += 1;
                if result.conflicting.len() < MAX_CONFLICTS_LISTED {
                    result.conflicting.push(ReprocessConflict {
                        incident_number: number.to_string(),
                        held_by: holder.to_string(),
                        external_id: external_id.unwrap_or_default(),
                    });
                }
            }
            // Deleted since the page was read: nothing to do.
            Renormalized::NotFound => {}
        }
    }
    Ok(())
}

/// Normalizes a page of dead letters again: the ones that now normalize are ingested as live
/// deliveries are, the others keep their new reason, all in one store write.
async fn letters_page(
    state: &AppState,
    source: &SourceRecord,
    letters: Vec<tw_store::DeadLetterPayload>,
    result: &mut ReprocessResult,
) -> Result<(), ApiError> {
    result.dead_letters.scanned += letters.len() as u64;
    let resolved: Vec<_> = letters
        .into_iter()
        .map(|l| {
            let key = l.request_key.unwrap_or_else(|| super::verify::body_request_key(&l.raw));
            (l.id, stored_request(state, source, l.raw, key, l.received_at, l.request_id))
        })
        .collect();
    let severities: Vec<_> = resolved.iter().map(|(_, r)| r.as_ref().ok().map(|req| req.alert.severity)).collect();
    if resolved.is_empty() {
        return Ok(());
    }
    let outcomes = state.store.resolve_dead_letters(resolved).await?;
    let counts = &mut result.dead_letters;
    let mut created = false;
    for (outcome, severity) in outcomes.into_iter().zip(severities) {
        match outcome {
            DeadLetterResolution::Ingested(IngestOutcome::Created(_)) => {
                counts.created += 1;
                created = true;
                if let Some(sev) = severity {
                    state.metrics.count("incidents_created_total", &[("source", source.name.as_str()), ("severity", sev.as_str())], 1);
                }
            }
            DeadLetterResolution::Ingested(IngestOutcome::Duplicate { .. }) => {
                counts.duplicates += 1;
                state.metrics.count("webhook_duplicates_total", &[("source", source.name.as_str())], 1);
            }
            DeadLetterResolution::StillFailing => counts.still_failing += 1,
            // Taken by a concurrent run.
            DeadLetterResolution::Gone => {}
        }
    }
    if created && source.settings.auto_triage {
        state.triage_wakeup.notify_one();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_what_they_write_and_nothing_else() {
        for c in [
            Cursor::Incidents(None),
            Cursor::Incidents(Some(IncidentNumber::new(2026, 42))),
            Cursor::DeadLetters(None),
            Cursor::DeadLetters(Some("dl-0190a3b4c5d6".into())),
        ] {
            assert_eq!(Cursor::parse(&c.to_string()), Some(c.clone()), "{c}");
        }
        for bad in ["", "incidents", "incidents:42", "dead-letters:a b", "other:", "dead-letters:x'--"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
