//! Delivery records for `tw-cli webhook events`: written in the writer's batches, pruned to the
//! newest [`DELIVERIES_KEPT`].

use super::{PgStore, execute, pg_opt_text, pg_text, query, query_opt};
use crate::StoreError;
use crate::model::*;
use crate::rows::{count, incident_number};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use std::collections::BTreeMap;
use tokio_postgres::Row;
use tw_core::SourceName;
use uuid::Uuid;

fn delivery_from_row(r: &Row) -> Result<(Delivery, Option<Vec<u8>>), StoreError> {
    let source: String = r.get(1);
    let number: Option<String> = r.get(6);
    let d = Delivery {
        request_id: r.get(0),
        source: SourceName::parse(&source).map_err(crate::rows::corrupt("source"))?,
        received_at: r.get(2),
        status: r.get::<_, i32>(3).clamp(0, 999) as u16,
        code: r.get(4),
        incident_id: r.get(5),
        incident_number: incident_number(number.as_deref())?,
        queue_id: r.get(7),
        duplicate: r.get(8),
        body_len: r.get::<_, Option<i64>>(9).map(count),
        latency_ms: r.get(10),
        verified: r.get(12),
        raw_payload: None,
    };
    Ok((d, r.get(11)))
}

/// Stores a batch's delivery records and counts the refused ones on their sources.
pub(super) async fn record_in(tx: &impl GenericClient, ds: &[&(Delivery, Option<Vec<u8>>)]) -> Result<(), StoreError> {
    let request_ids: Vec<String> = ds.iter().map(|(d, _)| pg_text(&d.request_id)).collect();
    let sources: Vec<&str> = ds.iter().map(|(d, _)| d.source.as_str()).collect();
    let received: Vec<DateTime<Utc>> = ds.iter().map(|(d, _)| d.received_at).collect();
    let statuses: Vec<i32> = ds.iter().map(|(d, _)| i32::from(d.status)).collect();
    let codes: Vec<Option<String>> = ds.iter().map(|(d, _)| pg_opt_text(&d.code)).collect();
    let incident_ids: Vec<Option<Uuid>> = ds.iter().map(|(d, _)| d.incident_id).collect();
    let numbers: Vec<Option<String>> = ds.iter().map(|(d, _)| d.incident_number.map(|n| n.to_string())).collect();
    let queue_ids: Vec<Option<String>> = ds.iter().map(|(d, _)| d.queue_id.clone()).collect();
    let duplicates: Vec<bool> = ds.iter().map(|(d, _)| d.duplicate).collect();
    // Truncated to DELIVERY_BODY_LIMIT when queued (`Writer::record`).
    let bodies: Vec<Option<&[u8]>> = ds.iter().map(|(_, b)| b.as_deref()).collect();
    let body_lens: Vec<Option<i64>> = ds.iter().map(|(d, _)| d.body_len.map(|n| n as i64)).collect();
    let latencies: Vec<f64> = ds.iter().map(|(d, _)| d.latency_ms).collect();
    let verified: Vec<bool> = ds.iter().map(|(d, _)| d.verified).collect();
    let rows = query(
        tx,
        "INSERT INTO deliveries (request_id, source, received_at, status, code, incident_id, incident_number, queue_id, duplicate, \
         body, body_len, latency_ms, verified) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int4[], $5::text[], $6::uuid[], $7::text[], $8::text[], \
         $9::bool[], $10::bytea[], $11::int8[], $12::float8[], $13::bool[]) RETURNING id",
        &[
            &request_ids,
            &sources,
            &received,
            &statuses,
            &codes,
            &incident_ids,
            &numbers,
            &queue_ids,
            &duplicates,
            &bodies,
            &body_lens,
            &latencies,
            &verified,
        ],
    )
    .await?;
    let mut refused: BTreeMap<&str, i64> = BTreeMap::new();
    for (d, _) in ds.iter().filter(|(d, _)| !(200..300).contains(&d.status)) {
        *refused.entry(d.source.as_str()).or_default() += 1;
    }
    if !refused.is_empty() {
        let names: Vec<&str> = refused.keys().copied().collect();
        let ns: Vec<i64> = refused.values().copied().collect();
        execute(
            tx,
            "UPDATE sources s SET error_count = s.error_count + d.n FROM unnest($1::text[], $2::int8[]) AS d(name, n) WHERE s.name = d.name",
            &[&names, &ns],
        )
        .await?;
    }
    // Prune now and then: when the batch crossed a multiple of 1,000 ids.
    let max: i64 = rows.iter().map(|r| r.get::<_, i64>(0)).max().unwrap_or(0);
    let min: i64 = rows.iter().map(|r| r.get::<_, i64>(0)).min().unwrap_or(0);
    if max / 1000 != (min - 1) / 1000 {
        execute(tx, "DELETE FROM deliveries WHERE id <= $1", &[&(max - DELIVERIES_KEPT)]).await?;
    }
    Ok(())
}

#[async_trait]
impl crate::DeliveryStore for PgStore {
    fn record_delivery(&self, d: Delivery, body: Option<Vec<u8>>) {
        self.writer.record(d, body);
    }

    async fn list_deliveries(&self, source: &SourceName, filter: DeliveryFilter, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        let cond = match filter {
            DeliveryFilter::All => "",
            DeliveryFilter::Ok => "AND status BETWEEN 200 AND 299",
            DeliveryFilter::Failed => "AND status NOT BETWEEN 200 AND 299",
        };
        let sql = format!(
            "SELECT {} FROM deliveries WHERE source = $1 {cond} ORDER BY id DESC LIMIT $2",
            crate::rows::delivery_columns("NULL::bytea")
        );
        let c = self.client().await?;
        query(&c, &sql, &[&source.as_str(), &i64::from(limit)]).await?.iter().map(|r| delivery_from_row(r).map(|d| d.0)).collect()
    }

    async fn get_delivery(&self, request_id: &str) -> Result<Option<Delivery>, StoreError> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT {} FROM deliveries WHERE request_id = $1 ORDER BY verified DESC, id DESC LIMIT 1",
            crate::rows::delivery_columns("body")
        );
        let Some(row) = query_opt(&c, &sql, &[&request_id]).await? else { return Ok(None) };
        let (mut d, body) = delivery_from_row(&row)?;
        let raw: Option<Vec<u8>> = match (body, &d.incident_id, &d.queue_id) {
            (Some(b), _, _) => Some(b),
            (None, Some(inc), _) => {
                query_opt(&c, "SELECT raw_payload FROM incident_payloads WHERE incident_id = $1", &[inc]).await?.map(|r| r.get(0))
            }
            // A queued delivery: its incident's payload once processed, the dead letter's once
            // failed, the queue's while it waits.
            (None, None, Some(q)) => query_opt(
                &c,
                "SELECT COALESCE((SELECT p.raw_payload FROM incident_payloads p WHERE p.incident_id = q.incident_id), \
                                 (SELECT d.raw_payload FROM dead_letters d WHERE d.queue_id = q.id), q.raw_payload) \
                 FROM queue q WHERE q.id = $1",
                &[q],
            )
            .await?
            .map(|r| r.get(0)),
            _ => None,
        };
        d.raw_payload = raw.map(|b| String::from_utf8_lossy(&b).into_owned());
        Ok(Some(d))
    }
}
