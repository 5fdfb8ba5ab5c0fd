//! Delivery records for `tw-cli webhook events`: one row per delivery (written in the writer's
//! batches), aggregate rows for refused requests counted instead of stored, and their retention.

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

/// Sources whose records one pruning round looks at, at most (names ever registered: an
/// attacker cannot add any).
const PRUNE_MAX_SOURCES: i64 = 100_000;

fn delivery_from_row(r: &Row) -> Result<(Delivery, Option<Vec<u8>>), StoreError> {
    let source: String = r.get(1);
    let number: Option<String> = r.get(6);
    let d = Delivery {
        request_id: r.get(0),
        sender_request_id: r.get(13),
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
        refused_count: r.get::<_, Option<i64>>(14).map(count),
        last_received_at: r.get(15),
        headers: r.get(16),
    };
    Ok((d, r.get(11)))
}

/// Stores a batch's delivery records and counts the refused ones on their sources.
pub(super) async fn record_in(tx: &impl GenericClient, ds: &[&(Delivery, Option<Vec<u8>>)]) -> Result<(), StoreError> {
    // One statement cannot upsert a row twice: the first record of an id in the batch stands,
    // as it would had they come in different batches.
    let mut seen = std::collections::HashSet::with_capacity(ds.len());
    let ds: Vec<&(Delivery, Option<Vec<u8>>)> = ds.iter().copied().filter(|(d, _)| seen.insert(d.request_id.as_str())).collect();
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
    let senders: Vec<Option<String>> = ds.iter().map(|(d, _)| pg_opt_text(&d.sender_request_id)).collect();
    let refused: Vec<Option<i64>> = ds.iter().map(|(d, _)| d.refused_count.map(|n| i64::try_from(n).unwrap_or(i64::MAX))).collect();
    let last: Vec<Option<DateTime<Utc>>> = ds.iter().map(|(d, _)| d.last_received_at).collect();
    let headers: Vec<Option<String>> = ds.iter().map(|(d, _)| pg_opt_text(&d.headers)).collect();
    // The sources' error counts before the delivery rows: every writer locks `sources` rows
    // before `deliveries` rows (`record_refusals_now` too), so two cannot deadlock over them.
    let mut errors: BTreeMap<&str, i64> = BTreeMap::new();
    for (d, _) in ds.iter().filter(|(d, _)| !(200..300).contains(&d.status)) {
        *errors.entry(d.source.as_str()).or_default() += 1;
    }
    if !errors.is_empty() {
        let names: Vec<&str> = errors.keys().copied().collect();
        let ns: Vec<i64> = errors.values().copied().collect();
        execute(
            tx,
            "UPDATE sources s SET error_count = s.error_count + d.n FROM unnest($1::text[], $2::int8[]) AS d(name, n) WHERE s.name = d.name",
            &[&names, &ns],
        )
        .await?;
    }
    // A request id is the server's own UUID: it only meets itself again when this is an
    // aggregate row whose counts were flushed first (`record_refusals`), and then adds to it.
    execute(
        tx,
        "INSERT INTO deliveries (request_id, source, received_at, status, code, incident_id, incident_number, queue_id, duplicate, \
         body, body_len, latency_ms, verified, sender_request_id, refused_count, last_received_at, headers) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int4[], $5::text[], $6::uuid[], $7::text[], $8::text[], \
         $9::bool[], $10::bytea[], $11::int8[], $12::float8[], $13::bool[], $14::text[], $15::int8[], $16::timestamptz[], $17::text[]) \
         ON CONFLICT (request_id) DO UPDATE \
         SET refused_count = COALESCE(deliveries.refused_count + excluded.refused_count, deliveries.refused_count, excluded.refused_count), \
         received_at = LEAST(deliveries.received_at, excluded.received_at)",
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
            &senders,
            &refused,
            &last,
            &headers,
        ],
    )
    .await?;
    Ok(())
}

/// Adds refused-request counts to their aggregate rows (created when missing) and to their
/// sources' error counts, in one transaction. Only the writer task calls it (`Writer::refusals`),
/// between its batches: the batches lock the same rows.
pub(super) async fn record_refusals_now(pool: &deadpool_postgres::Pool, counts: &[RefusedCount]) -> Result<(), StoreError> {
    if counts.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = counts.iter().map(|c| c.request_id.as_str()).collect();
    let sources: Vec<&str> = counts.iter().map(|c| c.source.as_str()).collect();
    let firsts: Vec<DateTime<Utc>> = counts.iter().map(|c| c.first_at).collect();
    let statuses: Vec<i32> = counts.iter().map(|c| i32::from(c.status)).collect();
    let codes: Vec<&str> = counts.iter().map(|c| c.code.as_str()).collect();
    let ns: Vec<i64> = counts.iter().map(|c| i64::try_from(c.count).unwrap_or(i64::MAX)).collect();
    let lasts: Vec<DateTime<Utc>> = counts.iter().map(|c| c.last_at).collect();
    let mut by_source: BTreeMap<&str, i64> = BTreeMap::new();
    for (s, n) in sources.iter().zip(&ns) {
        *by_source.entry(s).or_default() += n;
    }
    let names: Vec<&str> = by_source.keys().copied().collect();
    let errors: Vec<i64> = by_source.values().copied().collect();
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    // `sources` first, then `deliveries`, the order the writer's batches lock them in: another
    // process's writer may be adding to the same rows.
    execute(
        &tx,
        "UPDATE sources s SET error_count = s.error_count + d.n FROM unnest($1::text[], $2::int8[]) AS d(name, n) WHERE s.name = d.name",
        &[&names, &errors],
    )
    .await?;
    execute(
        &tx,
        "INSERT INTO deliveries (request_id, source, received_at, status, code, duplicate, latency_ms, verified, refused_count, \
         last_received_at) \
         SELECT id, source, first_at, status, code, FALSE, 0, FALSE, n, last_at \
         FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int4[], $5::text[], $6::int8[], $7::timestamptz[]) \
         AS r(id, source, first_at, status, code, n, last_at) \
         ON CONFLICT (request_id) DO UPDATE SET refused_count = COALESCE(deliveries.refused_count, 0) + excluded.refused_count, \
         last_received_at = GREATEST(deliveries.last_received_at, excluded.last_received_at)",
        &[&ids, &sources, &firsts, &statuses, &codes, &ns, &lasts],
    )
    .await?;
    tx.commit().await?;
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
        let sql = crate::rows::newest_deliveries_sql('$', &crate::rows::delivery_columns("NULL::bytea"), cond);
        let c = self.client().await?;
        query(&c, &sql, &[&source.as_str(), &i64::from(limit)]).await?.iter().map(|r| delivery_from_row(r).map(|d| d.0)).collect()
    }

    async fn get_delivery(&self, request_id: &str) -> Result<Option<Delivery>, StoreError> {
        let c = self.client().await?;
        let cols = crate::rows::delivery_columns("body");
        let own = format!("SELECT {cols} FROM deliveries WHERE request_id = $1");
        let by_sender = format!("SELECT {cols} FROM deliveries WHERE sender_request_id = $1 ORDER BY verified DESC, id DESC LIMIT 1");
        let mut found = None;
        for sql in [own, by_sender] {
            if let Some(row) = query_opt(&c, &sql, &[&request_id]).await? {
                found = Some(row);
                break;
            }
        }
        let Some(row) = found else { return Ok(None) };
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

    async fn deliveries_by_sender_request_id(&self, sender_request_id: &str, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {} FROM deliveries WHERE sender_request_id = $1 ORDER BY id DESC LIMIT $2",
            crate::rows::delivery_columns("NULL::bytea")
        );
        let c = self.client().await?;
        query(&c, &sql, &[&sender_request_id, &i64::from(limit)]).await?.iter().map(|r| delivery_from_row(r).map(|d| d.0)).collect()
    }

    async fn record_refusals(&self, counts: Vec<RefusedCount>) -> Result<(), StoreError> {
        if counts.is_empty() {
            return Ok(());
        }
        self.writer.refusals(counts).await
    }

    async fn prune_deliveries(&self, retention: DeliveryRetention, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let keeps = crate::rows::retention_keeps(&retention);
        let cutoff = retention.max_age.and_then(|age| now.checked_sub_signed(age));
        let batch = i64::from(retention.batch.max(1));
        let c = self.client().await?;
        let names: Vec<String> = query(
            &c,
            "WITH RECURSIVE s(name) AS (SELECT (SELECT MIN(source) FROM deliveries) \
             UNION ALL SELECT (SELECT MIN(source) FROM deliveries WHERE source > s.name) FROM s WHERE s.name IS NOT NULL) \
             SELECT name FROM s WHERE name IS NOT NULL LIMIT $1",
            &[&PRUNE_MAX_SOURCES],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
        let mut total = 0;
        for name in names {
            // Per class, the newest of the source's ids beyond the class's keep, read once: rows
            // at or below it stay deletable however many arrive meanwhile.
            let mut edges = [None; 2];
            for (edge, (verified, keep)) in edges.iter_mut().zip(keeps) {
                *edge = query_opt(&c, &crate::rows::retention_edge_sql('$'), &[&name, &verified, &keep]).await?.map(|r| r.get::<_, i64>(0));
            }
            loop {
                // Each statement its own transaction, a bounded number of rows each.
                let mut n = 0;
                for (edge, (verified, _)) in edges.iter().zip(keeps) {
                    if let Some(edge) = edge
                        && n < batch
                    {
                        n += execute(&c, &crate::rows::retention_delete_sql('$'), &[&name, &verified, edge, &(batch - n)]).await? as i64;
                    }
                }
                for (verified, _) in keeps {
                    if let Some(cutoff) = cutoff
                        && n < batch
                    {
                        n += execute(&c, &crate::rows::retention_age_sql('$'), &[&name, &cutoff, &(batch - n), &verified]).await? as i64;
                    }
                }
                total += n as u64;
                if n < batch {
                    break;
                }
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use crate::rows::{delivery_columns, newest_deliveries_sql, retention_age_sql, retention_delete_sql, retention_edge_sql};

    /// The plan of `sql`.
    async fn plan(c: &tokio_postgres::Client, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> String {
        crate::postgres::plans::text(&c.query(&format!("EXPLAIN {sql}"), params).await.unwrap())
    }

    #[tokio::test]
    async fn retention_walks_each_class_from_the_index_alone() {
        let Some((_db, c)) = crate::postgres::plans::migrated().await else { return };
        // Ten sources' records, one in seven refused, and the statistics the planner goes by.
        c.batch_execute(
            "INSERT INTO deliveries (request_id, source, received_at, status, latency_ms, verified) \
             SELECT 'req_' || g, 'src' || g % 10, now(), 201, 0, g % 7 <> 0 FROM generate_series(1, 50000) AS g",
        )
        .await
        .unwrap();
        c.batch_execute("VACUUM ANALYZE deliveries").await.unwrap();
        for verified in [true, false] {
            let edge = plan(&c, &retention_edge_sql('$'), &[&"src3", &verified, &5i64]).await;
            assert!(edge.contains("Index Only Scan Backward using deliveries_by_source_verified"), "{edge}");
            let delete = plan(&c, &retention_delete_sql('$'), &[&"src3", &verified, &5i64, &10i64]).await;
            assert!(delete.contains("Index Only Scan using deliveries_by_source_verified") && !delete.contains("Sort"), "{delete}");
            let cutoff = chrono::Utc::now();
            let age = plan(&c, &retention_age_sql('$'), &[&"src3", &cutoff, &10i64, &verified]).await;
            assert!(age.contains("using deliveries_by_source_verified") && !age.contains("Seq Scan on deliveries"), "{age}");
        }
        // A source's newest records: each class from its end of the index, merged.
        for cond in ["", "AND status BETWEEN 200 AND 299"] {
            let list = plan(&c, &newest_deliveries_sql('$', &delivery_columns("NULL::bytea"), cond), &[&"src3", &100i64]).await;
            assert_eq!(list.matches("Scan Backward using deliveries_by_source_verified").count(), 2, "{list}");
            assert!(!list.contains("Seq Scan on deliveries"), "{list}");
        }
    }
}
