//! The async queue: claims with `FOR UPDATE SKIP LOCKED` and a lease (only expired leases are
//! taken over), completion once, poison events dead-lettered.

use super::ingest::{ingest_in, insert_dead_letter};
use super::{PgStore, execute, query, query_one, query_opt};
use crate::StoreError;
use crate::model::*;
use crate::rows::{QUEUE_COLUMNS, QueueRow, corrupt, count};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tw_core::SourceName;

fn queue_entry_from_row(r: &Row) -> Result<QueueEntry, StoreError> {
    QueueRow {
        id: r.get(0),
        status: r.get(1),
        source: r.get(2),
        received_at: r.get(3),
        attempts: r.get(4),
        incident_id: r.get(5),
        incident_number: r.get(6),
        duplicate: r.get(7),
        error: r.get(8),
        processed_at: r.get(9),
    }
    .decode()
}

async fn load_queue_entry(c: &impl GenericClient, id: &str) -> Result<Option<QueueEntry>, StoreError> {
    let sql = format!("SELECT {QUEUE_COLUMNS} FROM queue WHERE id = $1");
    query_opt(c, &sql, &[&id]).await?.map(|r| queue_entry_from_row(&r)).transpose()
}

/// Dead-letters a queued event (with its request id) and marks it failed, in the caller's
/// transaction.
async fn fail_queued(tx: &impl GenericClient, id: &str, reason: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
    let r = query_one(tx, "SELECT source, raw_payload, received_at, request_id, request_key FROM queue WHERE id = $1", &[&id]).await?;
    let source: String = r.get(0);
    let letter = NewDeadLetter {
        source: SourceName::parse(&source).map_err(corrupt("source"))?,
        raw: r.get(1),
        reason: reason.to_string(),
        received_at: r.get(2),
        request_id: r.get(3),
        queue_id: Some(id.to_string()),
        request_key: Some(r.get(4)),
    };
    insert_dead_letter(tx, &letter).await?;
    // The payload now lives in the dead letter: the queue's copy goes.
    execute(
        tx,
        "UPDATE queue SET status = 'failed', error = $2, processed_at = $3, lease_until = NULL, raw_payload = '' WHERE id = $1",
        &[&id, &super::pg_text(reason), &now],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl crate::QueueStore for PgStore {
    async fn release_queued(&self, events: &[(String, u32)]) -> Result<usize, StoreError> {
        let c = self.client().await?;
        let mut released = 0;
        for (id, attempts) in events {
            released += execute(
                &c,
                "UPDATE queue SET status = 'pending', attempts = attempts - 1, lease_until = NULL \
                 WHERE id = $1 AND status = 'processing' AND attempts = $2",
                &[id, &i64::from(*attempts)],
            )
            .await?;
        }
        Ok(released as usize)
    }

    async fn claim_queued(&self, limit: usize, lease_secs: i64) -> Result<Vec<QueuedEvent>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let now = Utc::now();
        let rows = query(
            &tx,
            "UPDATE queue SET status = 'processing', attempts = attempts + 1, lease_until = $1 \
             WHERE id IN (SELECT id FROM queue WHERE status = 'pending' OR (status = 'processing' AND lease_until < $2) \
                          ORDER BY received_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING id, source, raw_payload, request_key, received_at, request_id, attempts",
            &[&(now + chrono::Duration::seconds(lease_secs)), &now, &(limit as i64)],
        )
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.get(0);
            let attempts: i64 = r.get(6);
            if let Some(reason) = queue_poison_reason(attempts) {
                fail_queued(&tx, &id, &reason, now).await?;
                continue;
            }
            let source: String = r.get(1);
            out.push(QueuedEvent {
                id,
                source: SourceName::parse(&source).map_err(corrupt("source"))?,
                raw: r.get(2),
                request_key: r.get(3),
                received_at: r.get(4),
                request_id: r.get(5),
                attempts: crate::rows::attempts(attempts),
            });
        }
        tx.commit().await?;
        out.sort_by_key(|a| a.received_at);
        Ok(out)
    }

    async fn complete_queued(&self, id: &str, result: Result<IngestRequest, String>) -> Result<QueueEntry, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let status: Option<String> = query_opt(&tx, "SELECT status FROM queue WHERE id = $1 FOR UPDATE", &[&id]).await?.map(|r| r.get(0));
        let Some(status) = status else { return Err(StoreError::Corrupt(format!("queue entry {id} vanished"))) };
        if status == "processing" || status == "pending" {
            let now = Utc::now();
            match result {
                Ok(req) => {
                    // ingest_in counts a delivery on the source; enqueue did not, so this is the one count.
                    let outcome = ingest_in(&tx, &[&req]).await?.remove(0);
                    let inc = outcome.incident();
                    // The payload now lives on the incident: the queue's copy goes.
                    execute(
                        &tx,
                        "UPDATE queue SET status = 'processed', incident_id = $2, incident_number = $3, duplicate = $4, \
                         processed_at = $5, lease_until = NULL, raw_payload = '' WHERE id = $1",
                        &[&id, &inc.id, &inc.number.to_string(), &matches!(outcome, IngestOutcome::Duplicate { .. }), &now],
                    )
                    .await?;
                }
                Err(reason) => fail_queued(&tx, id, &reason, now).await?,
            }
        }
        // Otherwise another worker finished it after a lease ran out: finishing twice must not
        // count the delivery twice.
        let entry = load_queue_entry(&tx, id).await?.ok_or_else(|| StoreError::Corrupt(format!("queue entry {id} vanished")))?;
        tx.commit().await?;
        Ok(entry)
    }

    async fn queue_entry(&self, id: &str) -> Result<Option<QueueEntry>, StoreError> {
        let c = self.client().await?;
        load_queue_entry(&c, id).await
    }

    async fn queue_depth(&self) -> Result<u64, StoreError> {
        let c = self.client().await?;
        Ok(count(query_one(&c, "SELECT COUNT(*) FROM queue WHERE status IN ('pending', 'processing')", &[]).await?.get(0)))
    }
}
