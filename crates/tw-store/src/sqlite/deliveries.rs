//! Delivery records for `tw-cli webhook events`.

use super::{SqliteStore, parse_ts, ts};
use crate::StoreError;
use crate::model::*;
use crate::rows::corrupt;
use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};
use tw_core::SourceName;
use uuid::Uuid;

fn delivery_from_row(r: &Row<'_>) -> Result<(Delivery, Option<Vec<u8>>), StoreError> {
    let source: String = r.get(1)?;
    let incident_id: Option<String> = r.get(5)?;
    let number: Option<String> = r.get(6)?;
    let d = Delivery {
        request_id: r.get(0)?,
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
    };
    Ok((d, r.get(11)?))
}

#[async_trait]
impl crate::DeliveryStore for SqliteStore {
    fn record_delivery(&self, d: Delivery, mut body: Option<Vec<u8>>) {
        // Only this much is kept: the rest need not wait in the writer's queue.
        if let Some(b) = &mut body {
            b.truncate(DELIVERY_BODY_LIMIT);
        }
        self.writer.fire(move |conn, counters| {
            conn.prepare_cached(
                "INSERT INTO deliveries (request_id, source, received_at, status, code, incident_id, incident_number, queue_id, \
                 duplicate, body, body_len, latency_ms, verified) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
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
                d.verified
            ])?;
            let id = conn.last_insert_rowid();
            if !(200..300).contains(&d.status) {
                counters.error(d.source.as_str());
            }
            if id % 1000 == 0 {
                conn.execute("DELETE FROM deliveries WHERE id <= ?1", [id - DELIVERIES_KEPT])?;
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
            let sql = format!(
                "SELECT {} FROM deliveries WHERE source = ?1 {cond} ORDER BY id DESC LIMIT ?2",
                crate::rows::delivery_columns("NULL")
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(params![source.as_str(), limit])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(delivery_from_row(r)?.0);
            }
            Ok(out)
        })
        .await
    }

    async fn get_delivery(&self, request_id: &str) -> Result<Option<Delivery>, StoreError> {
        let id = request_id.to_string();
        self.read(move |conn, _| {
            let sql = format!(
                "SELECT {} FROM deliveries WHERE request_id = ?1 ORDER BY verified DESC, id DESC LIMIT 1",
                crate::rows::delivery_columns("body")
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query([&id])?;
            let Some(r) = rows.next()? else { return Ok(None) };
            let (mut d, body) = delivery_from_row(r)?;
            let raw: Option<Vec<u8>> = match (body, &d.incident_id, &d.queue_id) {
                (Some(b), _, _) => Some(b),
                (None, Some(inc), _) => conn
                    .query_row("SELECT raw_payload FROM incident_payloads WHERE incident_id = ?1", [inc.to_string()], |r| r.get(0))
                    .optional()?,
                // A queued delivery: its incident's payload once processed, the dead letter's once
                // failed, the queue's while it waits.
                (None, None, Some(q)) => conn
                    .query_row(
                        "SELECT COALESCE((SELECT p.raw_payload FROM incident_payloads p WHERE p.incident_id = q.incident_id), \
                                         (SELECT d.raw_payload FROM dead_letters d WHERE d.queue_id = q.id), q.raw_payload) \
                         FROM queue q WHERE q.id = ?1",
                        [q],
                        |r| r.get(0),
                    )
                    .optional()?,
                _ => None,
            };
            d.raw_payload = raw.map(|b| String::from_utf8_lossy(&b).into_owned());
            Ok(Some(d))
        })
        .await
    }
}
