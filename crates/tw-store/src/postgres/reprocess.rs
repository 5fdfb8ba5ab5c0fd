//! Normalizing stored events again: pages of payloads, incidents updated in place, dead letters
//! ingested or kept with their new reason. Writes hold the intake's advisory lock, so a dedupe
//! key checked free stays free until the commit (no concurrent batch can take it meanwhile).

use super::ingest::{INGEST_LOCK, ingest_in};
use super::{PgStore, execute, pg_opt_text, pg_text, query, query_planned};
use crate::StoreError;
use crate::model::*;
use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::types::Type;
use tw_core::{Alert, IncidentNumber, SourceName};
use uuid::Uuid;

/// Updates one incident in the caller's transaction (see [`crate::ReprocessStore::renormalize_incidents`]).
async fn renormalize_in(tx: &Transaction<'_>, source: &str, id: Uuid, a: &Alert) -> Result<Renormalized, StoreError> {
    // Both lookups planned for their parameters (see `query_planned`): cached generic plans
    // made on an empty table took `incidents_by_source` and filtered the rest row by row,
    // reading every incident of the source for each one renormalized.
    let current =
        query_planned(&**tx, "SELECT dedupe_key FROM incidents WHERE id = $1 AND source = $2", &[(&id, Type::UUID), (&source, Type::TEXT)])
            .await?
            .into_iter()
            .next();
    let Some(current) = current.map(|r| r.get::<_, String>(0)) else { return Ok(Renormalized::NotFound) };
    let key = alert_dedupe_key(a).map(|k| pg_text(&k)).unwrap_or_else(|| current.clone());
    if key != current
        && let Some(r) = query_planned(
            &**tx,
            "SELECT year, seq FROM incidents WHERE source = $1 AND dedupe_key = $2",
            &[(&source, Type::TEXT), (&key, Type::TEXT)],
        )
        .await?
        .into_iter()
        .next()
    {
        return Ok(Renormalized::Conflict { holder: IncidentNumber::new(r.get(0), r.get(1)) });
    }
    let entities = serde_json::to_string(&a.entities).map_err(crate::rows::corrupt("entities"))?;
    // Only a row that differs is written: a second run reports every incident unchanged.
    let changed = execute(
        tx,
        "UPDATE incidents SET format = $2, title = $3, description = $4, severity = $5, vendor_severity = $6, \
         event_type = $7, event_time = $8, external_id = $9, entities = $10, dedupe_key = $11 \
         WHERE id = $1 AND (format, title, description, severity, vendor_severity, event_type, event_time, external_id, entities, dedupe_key) \
         IS DISTINCT FROM ($2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &id,
            &a.format.as_str(),
            &pg_text(&a.title),
            &pg_opt_text(&a.description),
            &a.severity.as_str(),
            &pg_opt_text(&a.vendor_severity),
            &pg_opt_text(&a.event_type),
            &a.event_time,
            &pg_opt_text(&a.external_id),
            &entities,
            &key,
        ],
    )
    .await?;
    Ok(if changed > 0 { Renormalized::Updated } else { Renormalized::Unchanged })
}

#[async_trait]
impl crate::ReprocessStore for PgStore {
    async fn incident_payloads(&self, page: &PayloadPage<IncidentNumber>) -> Result<Vec<StoredPayload>, StoreError> {
        let c = self.client().await?;
        let (year, seq) = page.after.map_or((i32::MIN, i64::MIN), |n| (n.year, n.seq));
        let rows = query(
            &c,
            "SELECT i.id, i.year, i.seq, i.received_at, p.raw_payload FROM incidents i \
             JOIN incident_payloads p ON p.incident_id = i.id \
             WHERE i.source = $1 AND (i.year, i.seq) > ($2, $3) AND ($4::timestamptz IS NULL OR i.received_at >= $4) \
             ORDER BY i.year, i.seq LIMIT $5",
            &[&page.source.as_str(), &year, &seq, &page.since, &i64::from(page.limit)],
        )
        .await?;
        Ok(rows
            .iter()
            .map(|r| StoredPayload { id: r.get(0), number: IncidentNumber::new(r.get(1), r.get(2)), received_at: r.get(3), raw: r.get(4) })
            .collect())
    }

    async fn renormalize_incidents(&self, source: &SourceName, alerts: Vec<(Uuid, Alert)>) -> Result<Vec<Renormalized>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        execute(&tx, "SELECT pg_advisory_xact_lock($1)", &[&INGEST_LOCK]).await?;
        let mut out = Vec::with_capacity(alerts.len());
        for (id, a) in &alerts {
            out.push(renormalize_in(&tx, source.as_str(), *id, a).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn dead_letter_payloads(&self, page: &PayloadPage<String>) -> Result<Vec<DeadLetterPayload>, StoreError> {
        let c = self.client().await?;
        // Planned for these parameters (see `query_planned`): a generic plan cannot drop the
        // `IS NULL` arms, and read every dead letter of the source on every page.
        let rows = query_planned(
            &**c,
            "SELECT id, received_at, request_id, request_key, raw_payload FROM dead_letters \
             WHERE source = $1 AND ($2::text IS NULL OR id > $2) AND ($3::timestamptz IS NULL OR received_at >= $3) ORDER BY id LIMIT $4",
            &[
                (&page.source.as_str(), Type::TEXT),
                (&page.after, Type::TEXT),
                (&page.since, Type::TIMESTAMPTZ),
                (&i64::from(page.limit), Type::INT8),
            ],
        )
        .await?;
        Ok(rows
            .iter()
            .map(|r| DeadLetterPayload { id: r.get(0), received_at: r.get(1), request_id: r.get(2), request_key: r.get(3), raw: r.get(4) })
            .collect())
    }

    async fn resolve_dead_letters(
        &self,
        resolved: Vec<(String, Result<IngestRequest, String>)>,
    ) -> Result<Vec<DeadLetterResolution>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // The intake's lock before any dead letter's row lock, in the order every ingest takes
        // them: two overlapping runs wait for each other instead of deadlocking.
        execute(&tx, "SELECT pg_advisory_xact_lock($1)", &[&INGEST_LOCK]).await?;
        let mut out = Vec::with_capacity(resolved.len());
        for (id, result) in &resolved {
            out.push(match result {
                Ok(req) => {
                    // Removed in the incident's transaction: both happen, or neither.
                    let removed =
                        execute(&tx, "DELETE FROM dead_letters WHERE id = $1 AND source = $2", &[id, &req.source.as_str()]).await?;
                    if removed == 0 {
                        DeadLetterResolution::Gone
                    } else {
                        DeadLetterResolution::Ingested(ingest_in(&tx, &[req]).await?.remove(0))
                    }
                }
                Err(reason) => {
                    let kept = execute(&tx, "UPDATE dead_letters SET reason = $2 WHERE id = $1", &[id, &pg_text(reason)]).await?;
                    if kept == 0 { DeadLetterResolution::Gone } else { DeadLetterResolution::StillFailing }
                }
            });
        }
        tx.commit().await?;
        Ok(out)
    }
}
