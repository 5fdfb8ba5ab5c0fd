//! Delivery records for `tw-cli webhook events`: one row per delivery (written in the writer's
//! batches), aggregate rows for refused requests counted instead of stored, and their retention.

use super::{INCIDENT_RAW, SqliteStore, parse_opt_ts, parse_ts, ts};
use crate::StoreError;
use crate::model::*;
use crate::rows::corrupt;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};
use tw_core::SourceName;
use uuid::Uuid;

/// Sources whose records one pruning round looks at, at most (names ever registered: an
/// attacker cannot add any).
const PRUNE_MAX_SOURCES: i64 = 100_000;

fn delivery_from_row(r: &Row<'_>) -> Result<(Delivery, Option<Vec<u8>>), StoreError> {
    let source: String = r.get(1)?;
    let incident_id: Option<String> = r.get(5)?;
    let number: Option<String> = r.get(6)?;
    let d = Delivery {
        request_id: r.get(0)?,
        sender_request_id: r.get(13)?,
        source: SourceName::parse(&source).map_err(corrupt("source"))?,
        received_at: parse_ts(&r.get::<_, String>(2)?)?,
        status: r.get::<_, i64>(3)?.clamp(0, 999) as u16,
        code: r.get(4)?,
        incident_id: incident_id.as_deref().map(Uuid::parse_str).transpose().map_err(corrupt("incident id"))?,
        incident_number: crate::rows::incident_number(number.as_deref())?,
        queue_id: r.get(7)?,
        duplicate: r.get(8)?,
        body_len: r.get::<_, Option<i64>>(9)?.map(crate::rows::count),
        latency_ms: r.get(10)?,
        verified: r.get(12)?,
        raw_payload: None,
        refused_count: r.get::<_, Option<i64>>(14)?.map(crate::rows::count),
        last_received_at: parse_opt_ts(r.get(15)?)?,
        headers: r.get(16)?,
    };
    Ok((d, r.get(11)?))
}

/// Every row `sql` selects (with `delivery_columns("NULL")`), without bodies.
fn deliveries(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<Delivery>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(delivery_from_row(r)?.0);
    }
    Ok(out)
}

/// The payload to show with one delivery: its own kept body, else its incident's, else its
/// queued event's (the incident's once processed, the dead letter's once failed, the queue's
/// while it waits).
fn payload_of(conn: &Connection, d: &Delivery, body: Option<Vec<u8>>) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(match (body, &d.incident_id, &d.queue_id) {
        (Some(b), _, _) => Some(b),
        // No incident, or an incident without a payload row: no payload either way.
        (None, Some(inc), _) => conn
            .query_row(&format!("SELECT {INCIDENT_RAW} FROM incidents WHERE id = ?1"), [inc.to_string()], |r| {
                r.get::<_, Option<Vec<u8>>>(0)
            })
            .optional()?
            .flatten(),
        (None, None, Some(q)) => conn.query_row(&queued_payload_sql(), [q], |r| r.get(0)).optional()?,
        _ => None,
    })
}

#[async_trait]
impl crate::DeliveryStore for SqliteStore {
    fn record_delivery(&self, d: Delivery, mut body: Option<Vec<u8>>) {
        // Only this much is kept: the rest need not wait in the writer's queue.
        if let Some(b) = &mut body {
            b.truncate(DELIVERY_BODY_LIMIT);
        }
        self.writer.fire(move |conn, counters| {
            // A request id is the server's own UUID: it only meets itself again when this is an
            // aggregate row whose counts were flushed first (`record_refusals`), and then adds to it.
            conn.prepare_cached(
                "INSERT INTO deliveries (request_id, source, received_at, status, code, incident_id, incident_number, queue_id, \
                 duplicate, body, body_len, latency_ms, verified, sender_request_id, refused_count, last_received_at, headers) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
                 ON CONFLICT (request_id) DO UPDATE \
                 SET refused_count = COALESCE(refused_count + excluded.refused_count, refused_count, excluded.refused_count), \
                 received_at = MIN(received_at, excluded.received_at)",
            )?
            .execute(params![
                d.request_id,
                d.source.as_str(),
                ts(d.received_at),
                d.status,
                d.code,
                d.incident_id.map(|i| i.to_string()),
                d.incident_number.map(|n| n.to_string()),
                d.queue_id,
                d.duplicate,
                body,
                d.body_len.map(|n| n as i64),
                d.latency_ms,
                d.verified,
                d.sender_request_id,
                d.refused_count.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
                d.last_received_at.map(ts),
                d.headers,
            ])?;
            if !(200..300).contains(&d.status) {
                counters.error(d.source.as_str());
            }
            Ok(())
        });
    }

    async fn list_deliveries(&self, source: &SourceName, filter: DeliveryFilter, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        let source = source.clone();
        self.read(move |conn, _| {
            let cond = match filter {
                DeliveryFilter::All => "",
                DeliveryFilter::Ok => "AND status BETWEEN 200 AND 299",
                DeliveryFilter::Failed => "AND status NOT BETWEEN 200 AND 299",
            };
            let sql = crate::rows::newest_deliveries_sql('?', &crate::rows::delivery_columns("NULL"), cond);
            deliveries(conn, &sql, params![source.as_str(), limit])
        })
        .await
    }

    async fn get_delivery(&self, request_id: &str) -> Result<Option<Delivery>, StoreError> {
        let id = request_id.to_string();
        self.read(move |conn, _| {
            let cols = crate::rows::delivery_columns("body");
            let own = format!("SELECT {cols} FROM deliveries WHERE request_id = ?1");
            let by_sender = format!("SELECT {cols} FROM deliveries WHERE sender_request_id = ?1 ORDER BY verified DESC, id DESC LIMIT 1");
            for sql in [own, by_sender] {
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut rows = stmt.query([&id])?;
                if let Some(r) = rows.next()? {
                    let (mut d, body) = delivery_from_row(r)?;
                    d.raw_payload = payload_of(conn, &d, body)?.map(|b| String::from_utf8_lossy(&b).into_owned());
                    return Ok(Some(d));
                }
            }
            Ok(None)
        })
        .await
    }

    async fn deliveries_by_sender_request_id(&self, sender_request_id: &str, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        let id = sender_request_id.to_string();
        self.read(move |conn, _| {
            let sql = format!(
                "SELECT {} FROM deliveries WHERE sender_request_id = ?1 ORDER BY id DESC LIMIT +?2",
                crate::rows::delivery_columns("NULL")
            );
            deliveries(conn, &sql, params![id, limit])
        })
        .await
    }

    async fn record_refusals(&self, counts: Vec<RefusedCount>) -> Result<(), StoreError> {
        if counts.is_empty() {
            return Ok(());
        }
        self.writer
            .write(move |conn| {
                let mut row = conn.prepare_cached(
                    "INSERT INTO deliveries (request_id, source, received_at, status, code, duplicate, latency_ms, verified, \
                     refused_count, last_received_at) VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, 0, ?6, ?7) \
                     ON CONFLICT (request_id) DO UPDATE SET refused_count = COALESCE(refused_count, 0) + excluded.refused_count, \
                     last_received_at = CASE WHEN last_received_at IS NULL OR last_received_at < excluded.last_received_at \
                                             THEN excluded.last_received_at ELSE last_received_at END",
                )?;
                let mut errors = conn.prepare_cached("UPDATE sources SET error_count = error_count + ?2 WHERE name = ?1")?;
                for c in &counts {
                    let n = i64::try_from(c.count).unwrap_or(i64::MAX);
                    row.execute(params![c.request_id, c.source.as_str(), ts(c.first_at), c.status, c.code, n, ts(c.last_at)])?;
                    errors.execute(params![c.source.as_str(), n])?;
                }
                Ok(())
            })
            .await
    }

    async fn prune_deliveries(&self, retention: DeliveryRetention, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let keeps = crate::rows::retention_keeps(&retention);
        let cutoff = retention.max_age.and_then(|age| now.checked_sub_signed(age)).map(ts);
        let batch = i64::from(retention.batch.max(1));
        // Each source with records, and per class the newest of its ids beyond the class's keep
        // (read once: rows at or below it stay deletable however many arrive meanwhile).
        let plan: Vec<(String, [Option<i64>; 2])> = self
            .read(move |conn, _| {
                let mut names = conn.prepare_cached(
                    "WITH RECURSIVE s(name) AS (SELECT (SELECT MIN(source) FROM deliveries) \
                     UNION ALL SELECT (SELECT MIN(source) FROM deliveries WHERE source > s.name) FROM s WHERE s.name IS NOT NULL) \
                     SELECT name FROM s WHERE name IS NOT NULL LIMIT +?1",
                )?;
                let names: Vec<String> = names.query_map([PRUNE_MAX_SOURCES], |r| r.get(0))?.collect::<Result<_, _>>()?;
                let mut plan = Vec::with_capacity(names.len());
                for name in names {
                    let mut edges = [None; 2];
                    for (edge, (verified, keep)) in edges.iter_mut().zip(keeps) {
                        *edge = conn
                            .prepare_cached(&crate::rows::retention_edge_sql('?'))?
                            .query_row(params![name, verified, keep], |r| r.get(0))
                            .optional()?;
                    }
                    plan.push((name, edges));
                }
                Ok(plan)
            })
            .await?;
        let mut total = 0;
        for (source, edges) in plan {
            loop {
                let (s, c) = (source.clone(), cutoff.clone());
                let n = self
                    .writer
                    .write(move |conn| {
                        let mut n = 0;
                        for (edge, (verified, _)) in edges.iter().zip(keeps) {
                            if let Some(edge) = edge
                                && n < batch
                            {
                                n += conn.prepare_cached(&crate::rows::retention_delete_sql('?'))?.execute(params![
                                    s,
                                    verified,
                                    edge,
                                    batch - n
                                ])? as i64;
                            }
                        }
                        for (verified, _) in keeps {
                            if let Some(c) = &c
                                && n < batch
                            {
                                n += conn.prepare_cached(&crate::rows::retention_age_sql('?'))?.execute(params![
                                    s,
                                    c,
                                    batch - n,
                                    verified
                                ])? as i64;
                            }
                        }
                        Ok(n)
                    })
                    .await?;
                total += n as u64;
                if n < batch {
                    break;
                }
            }
        }
        Ok(total)
    }
}

/// A queued delivery's payload: its incident's, once it has one; else its dead letter's (found by
/// queue id, on `dead_letters_by_queue`); else the queued event's own.
fn queued_payload_sql() -> String {
    format!(
        "SELECT COALESCE((SELECT {INCIDENT_RAW} FROM incidents WHERE incidents.id = q.incident_id), \
                         (SELECT d.raw_payload FROM dead_letters d WHERE d.queue_id = q.id), q.raw_payload) \
         FROM queue q WHERE q.id = ?1"
    )
}

#[cfg(test)]
mod tests {
    use super::super::plans::{migrated, plan};
    use crate::rows::{delivery_columns, newest_deliveries_sql, retention_age_sql, retention_delete_sql, retention_edge_sql};

    #[test]
    fn retention_walks_each_class_from_the_index_alone() {
        let conn = migrated();
        for verified in [true, false] {
            let edge = plan(&conn, &retention_edge_sql('?'), rusqlite::params!["src", verified, 5]);
            assert_eq!(edge, "SEARCH deliveries USING COVERING INDEX deliveries_by_source_verified (source=? AND verified=?)");
            let delete = plan(&conn, &retention_delete_sql('?'), rusqlite::params!["src", verified, 5, 10]);
            assert!(
                delete.contains("USING COVERING INDEX deliveries_by_source_verified (source=? AND verified=? AND id<?)")
                    && !delete.contains("SCAN deliveries")
                    && !delete.contains("TEMP B-TREE"),
                "{delete}"
            );
            let age = plan(&conn, &retention_age_sql('?'), rusqlite::params!["src", "2026-01-01", 10, verified]);
            assert!(
                age.contains("USING INDEX deliveries_by_source_verified (source=? AND verified=?)") && !age.contains("SCAN deliveries"),
                "{age}"
            );
        }
    }

    /// A source's newest records come from the two classes' ends of the one index, merged: no
    /// scan of the source's records, whatever the filter.
    #[test]
    fn the_newest_records_walk_each_class_from_its_newest() {
        let conn = migrated();
        for cond in ["", "AND status BETWEEN 200 AND 299"] {
            let list = plan(&conn, &newest_deliveries_sql('?', &delivery_columns("NULL"), cond), rusqlite::params!["src", 100]);
            assert_eq!(list.matches("INDEX deliveries_by_source_verified (source=? AND verified=?)").count(), 2, "{list}");
            assert!(!list.contains("SCAN deliveries"), "{list}");
        }
    }

    /// A queued delivery's payload is found without reading every dead letter (and every payload).
    #[test]
    fn a_queued_deliverys_payload_is_found_by_index() {
        let conn = migrated();
        let found = plan(&conn, &super::queued_payload_sql(), ["queue-1"]);
        assert!(found.contains("SEARCH d USING INDEX dead_letters_by_queue (queue_id=?)"), "{found}");
        assert!(!found.contains("SCAN"), "{found}");
    }
}
