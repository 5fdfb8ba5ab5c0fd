//! Normalizing stored events again: pages of payloads, incidents updated in place, dead letters
//! ingested or kept with their new reason.

use super::ingest::ingest_in;
use super::{SqliteStore, parse_ts, ts};
use crate::StoreError;
use crate::model::*;
use crate::rows::corrupt;
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tw_core::{Alert, IncidentNumber, SourceName};
use uuid::Uuid;

/// Updates one incident in the caller's transaction (see [`crate::ReprocessStore::renormalize_incidents`]).
fn renormalize_in(conn: &Connection, source: &str, id: &Uuid, a: &Alert) -> Result<Renormalized, StoreError> {
    let id = id.to_string();
    let current: Option<String> = conn
        .prepare_cached("SELECT dedupe_key FROM incidents WHERE id = ?1 AND source = ?2")?
        .query_row(params![id, source], |r| r.get(0))
        .optional()?;
    let Some(current) = current else { return Ok(Renormalized::NotFound) };
    let key = alert_dedupe_key(a).unwrap_or_else(|| current.clone());
    if key != current {
        let holder: Option<(i32, i64)> = conn
            .prepare_cached("SELECT year, seq FROM incidents WHERE source = ?1 AND dedupe_key = ?2")?
            .query_row(params![source, key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((year, seq)) = holder {
            return Ok(Renormalized::Conflict { holder: IncidentNumber::new(year, seq) });
        }
    }
    let entities = serde_json::to_string(&a.entities).map_err(corrupt("entities"))?;
    // Only a row that differs is written: a second run reports every incident unchanged.
    let changed = conn
        .prepare_cached(
            "UPDATE incidents SET format = ?2, title = ?3, description = ?4, severity = ?5, vendor_severity = ?6, \
             event_type = ?7, event_time = ?8, external_id = ?9, entities = ?10, dedupe_key = ?11 \
             WHERE id = ?1 AND NOT (format IS ?2 AND title IS ?3 AND description IS ?4 AND severity IS ?5 \
             AND vendor_severity IS ?6 AND event_type IS ?7 AND event_time IS ?8 AND external_id IS ?9 \
             AND entities IS ?10 AND dedupe_key IS ?11)",
        )?
        .execute(params![
            id,
            a.format.as_str(),
            a.title,
            a.description,
            a.severity.as_str(),
            a.vendor_severity,
            a.event_type,
            a.event_time.map(ts),
            a.external_id,
            entities,
            key,
        ])?;
    Ok(if changed > 0 { Renormalized::Updated } else { Renormalized::Unchanged })
}

/// Finishes one dead letter in the caller's transaction (see [`crate::ReprocessStore::resolve_dead_letters`]).
fn resolve_in(
    conn: &Connection,
    counters: &mut super::writer::Tallies,
    id: &str,
    result: &Result<IngestRequest, String>,
) -> Result<DeadLetterResolution, StoreError> {
    match result {
        Ok(req) => {
            // Removed in the incident's transaction: both happen, or neither.
            let removed =
                conn.prepare_cached("DELETE FROM dead_letters WHERE id = ?1 AND source = ?2")?.execute(params![id, req.source.as_str()])?;
            if removed == 0 {
                return Ok(DeadLetterResolution::Gone);
            }
            Ok(DeadLetterResolution::Ingested(ingest_in(conn, counters, req)?))
        }
        Err(reason) => {
            let kept = conn.prepare_cached("UPDATE dead_letters SET reason = ?2 WHERE id = ?1")?.execute(params![id, reason])?;
            Ok(if kept == 0 { DeadLetterResolution::Gone } else { DeadLetterResolution::StillFailing })
        }
    }
}

/// A page of a source's incidents with their payloads, after the cursor `(?2, ?3)`. The cursor is
/// one row-value comparison so that each page starts where the last one ended on the
/// `(source, year, seq, ...)` index; written as `year > ?2 OR (year = ?2 AND seq > ?3)` it
/// only bounded the year, and every page read the year's incidents up to its cursor again.
const INCIDENT_PAYLOADS_PAGE: &str = concat!(
    "SELECT i.id, i.year, i.seq, i.received_at, p.raw_payload FROM incidents i \
     JOIN incident_payloads p ON p.number = ",
    super::payload_key_sql!("i"),
    " WHERE i.source = ?1 AND (i.year, i.seq) > (?2, ?3) AND (?4 IS NULL OR i.received_at >= ?4) \
     ORDER BY i.year, i.seq LIMIT +?5"
);

/// A page of a source's dead letters after the id `?2` (none: from the first; every id is longer
/// than ''), on the `(source, id)` index: `?2 IS NULL OR id > ?2` kept SQLite from seeking, and
/// every page read the source's dead letters from the first.
const DEAD_LETTER_PAYLOADS_PAGE: &str = "SELECT id, received_at, request_id, request_key, raw_payload FROM dead_letters \
     WHERE source = ?1 AND id > COALESCE(?2, '') AND (?3 IS NULL OR received_at >= ?3) ORDER BY id LIMIT +?4";

#[async_trait]
impl crate::ReprocessStore for SqliteStore {
    async fn incident_payloads(&self, page: &PayloadPage<IncidentNumber>) -> Result<Vec<StoredPayload>, StoreError> {
        let page = page.clone();
        self.read(move |conn, _| {
            let (year, seq) = page.after.map_or((i32::MIN, i64::MIN), |n| (n.year, n.seq));
            let mut stmt = conn.prepare_cached(INCIDENT_PAYLOADS_PAGE)?;
            let mut rows = stmt.query(params![page.source.as_str(), year, seq, page.since.map(ts), page.limit])?;
            let mut out = Vec::with_capacity(page.limit as usize);
            while let Some(r) = rows.next()? {
                let id: String = r.get(0)?;
                out.push(StoredPayload {
                    id: Uuid::parse_str(&id).map_err(corrupt("incident id"))?,
                    number: IncidentNumber::new(r.get(1)?, r.get(2)?),
                    received_at: parse_ts(&r.get::<_, String>(3)?)?,
                    raw: r.get(4)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn renormalize_incidents(&self, source: &SourceName, alerts: Vec<(Uuid, Alert)>) -> Result<Vec<Renormalized>, StoreError> {
        let source = source.to_string();
        self.writer.write(move |conn| alerts.iter().map(|(id, a)| renormalize_in(conn, &source, id, a)).collect()).await
    }

    async fn dead_letter_payloads(&self, page: &PayloadPage<String>) -> Result<Vec<DeadLetterPayload>, StoreError> {
        let page = page.clone();
        self.read(move |conn, _| {
            let mut stmt = conn.prepare_cached(DEAD_LETTER_PAYLOADS_PAGE)?;
            let mut rows = stmt.query(params![page.source.as_str(), page.after, page.since.map(ts), page.limit])?;
            let mut out = Vec::with_capacity(page.limit as usize);
            while let Some(r) = rows.next()? {
                out.push(DeadLetterPayload {
                    id: r.get(0)?,
                    received_at: parse_ts(&r.get::<_, String>(1)?)?,
                    request_id: r.get(2)?,
                    request_key: r.get(3)?,
                    raw: r.get(4)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn resolve_dead_letters(
        &self,
        resolved: Vec<(String, Result<IngestRequest, String>)>,
    ) -> Result<Vec<DeadLetterResolution>, StoreError> {
        self.writer
            .write_counted(move |conn, counters| resolved.iter().map(|(id, result)| resolve_in(conn, counters, id, result)).collect())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::plans::{migrated, plan};
    use super::*;

    /// Each page of a reprocess starts at its cursor on an index: a run over a source's incidents
    /// or dead letters reads each once, not again up to its cursor on every page.
    #[test]
    fn reprocess_pages_seek_to_their_cursor() {
        let conn = migrated();
        let incidents = plan(&conn, INCIDENT_PAYLOADS_PAGE, params!["edr", 2026, 17, None::<String>, 200]);
        assert!(incidents.contains("SEARCH i USING INDEX incidents_by_source (source=? AND (year,seq)>(?,?))"), "{incidents}");
        assert!(!incidents.contains("SCAN"), "{incidents}");
        let letters = plan(&conn, DEAD_LETTER_PAYLOADS_PAGE, params!["edr", None::<String>, None::<String>, 200]);
        assert!(letters.contains("SEARCH dead_letters USING INDEX dead_letters_by_source (source=? AND id>?)"), "{letters}");
        assert!(!letters.contains("SCAN"), "{letters}");
    }
}
