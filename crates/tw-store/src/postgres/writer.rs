//! The group-commit writer: one task per process takes every pending intake write off its
//! channel (incidents, queued events, delivery records), commits them in one transaction with a
//! few multi-row statements, and only then answers each caller.
//!
//! Refused-request counts come this way too (each in a transaction of its own after the batch):
//! they add to aggregate delivery rows and to the sources' error counts, rows the batches lock as
//! well, so written beside the writer they could deadlock with it. Console session writes
//! (sign-in, a use about once a minute, sign-out, pruning) also wait for their turn after the
//! batch, each in its own transaction: they are rare, and every write of a process is in one line.
//!
//! When a batch fails for a reason other than the database being unavailable, its writes are
//! tried again one by one, so one bad write fails only itself (what SQLite's savepoints do).

use super::console_sessions::{self, SessionWrite};
use super::{deliveries, ingest};
use crate::model::{Delivery, IngestOutcome, IngestRequest, NewQueuedEvent, RefusedCount};
use crate::{CommitObserver, StoreError};
use deadpool_postgres::Pool;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// How many writes one transaction takes at most.
pub const MAX_BATCH: usize = 1024;
/// How many payload bytes one transaction takes at most: a batch is sent as a few statements
/// whose parameters hold every payload, so its size must be bounded whatever the senders send
/// (1,024 bodies of 1 MiB would otherwise make one 1 GiB message). A single larger write still
/// goes, alone.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// How many writes may wait for the writer before callers wait to enqueue.
pub const CHANNEL_CAPACITY: usize = 16 * 1024;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Op {
    Ingest(IngestRequest, Reply<IngestOutcome>),
    Enqueue(NewQueuedEvent, Reply<String>),
    Delivery(Delivery, Option<Vec<u8>>),
    Refusals(Vec<RefusedCount>, Reply<()>),
    /// A console session opened, used, closed or pruned: rare and small, run after the batch.
    Session(SessionWrite, Reply<u64>),
    /// Answered once every write queued before it has been committed or failed.
    Flush(oneshot::Sender<()>),
}

impl Op {
    /// The payload bytes this write sends.
    fn bytes(&self) -> usize {
        match self {
            Op::Ingest(r, _) => r.raw.len(),
            Op::Enqueue(e, _) => e.raw.len(),
            Op::Delivery(_, body) => body.as_ref().map_or(0, Vec::len),
            Op::Refusals(..) | Op::Session(..) | Op::Flush(_) => 0,
        }
    }
}

/// A handle to the writer task.
#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Op>,
}

impl Writer {
    pub fn spawn(pool: Pool, observer: Option<Arc<dyn CommitObserver>>) -> Writer {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        tokio::spawn(run(pool, rx, observer));
        Writer { tx }
    }

    pub async fn ingest(&self, req: IngestRequest) -> Result<IngestOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Op::Ingest(req, reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    pub async fn enqueue(&self, event: NewQueuedEvent) -> Result<String, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Op::Enqueue(event, reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Waits until every write queued before this call is committed (or has failed).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Op::Flush(reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)
    }

    /// Adds refused-request counts to their aggregate rows and sources, in the writer's turn.
    pub async fn refusals(&self, counts: Vec<RefusedCount>) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Op::Refusals(counts, reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Changes console sessions, in the writer's turn; returns the rows changed.
    pub async fn session(&self, write: SessionWrite) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Op::Session(write, reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues a delivery record without waiting; dropped when the writer is saturated.
    pub fn record(&self, d: Delivery, mut body: Option<Vec<u8>>) {
        // Only this much is kept: the rest need not wait in the channel.
        if let Some(b) = &mut body {
            b.truncate(crate::DELIVERY_BODY_LIMIT);
        }
        let _ = self.tx.try_send(Op::Delivery(d, body));
    }
}

async fn run(pool: Pool, mut rx: mpsc::Receiver<Op>, observer: Option<Arc<dyn CommitObserver>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        let mut bytes = first.bytes();
        batch.push(first);
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(op) => {
                    bytes += op.bytes();
                    batch.push(op);
                }
                Err(_) => break,
            }
        }
        let size = batch.len();
        let started = std::time::Instant::now();
        let unavailable = commit(&pool, std::mem::take(&mut batch)).await;
        let elapsed = started.elapsed();
        tracing::trace!(target: "store", batch = size, elapsed_us = elapsed.as_micros() as u64, "committed");
        if let Some(o) = &observer {
            match unavailable {
                // Every batch here holds inserts (claims do not go through this writer).
                None => o.committed(size, elapsed, true),
                Some(cause) => o.unavailable(&cause),
            }
        }
    }
}

/// The writes of one batch, split by kind.
#[derive(Default)]
struct Batch {
    ingests: Vec<(IngestRequest, Reply<IngestOutcome>)>,
    enqueues: Vec<(NewQueuedEvent, Reply<String>)>,
    deliveries: Vec<(Delivery, Option<Vec<u8>>)>,
}

/// Commits a batch and answers its callers; returns the cause when the database could not write.
async fn commit(pool: &Pool, ops: Vec<Op>) -> Option<String> {
    let mut b = Batch::default();
    let mut flushes = Vec::new();
    let mut refusals = Vec::new();
    let mut sessions = Vec::new();
    for op in ops {
        match op {
            Op::Ingest(r, reply) => b.ingests.push((r, reply)),
            Op::Enqueue(e, reply) => b.enqueues.push((e, reply)),
            Op::Delivery(d, body) => b.deliveries.push((d, body)),
            Op::Refusals(counts, reply) => refusals.push((counts, reply)),
            Op::Session(write, reply) => sessions.push((write, reply)),
            Op::Flush(reply) => flushes.push(reply),
        }
    }
    let unavailable = commit_writes(pool, b).await;
    // After the batch, so the aggregate rows it creates are there to add to.
    for (counts, reply) in refusals {
        let _ = reply.send(deliveries::record_refusals_now(pool, &counts).await);
    }
    for (write, reply) in sessions {
        let _ = reply.send(console_sessions::write_now(pool, &write).await);
    }
    for reply in flushes {
        let _ = reply.send(());
    }
    unavailable
}

async fn commit_writes(pool: &Pool, b: Batch) -> Option<String> {
    let Batch { ingests, enqueues, mut deliveries } = b;
    // The records of accepted deliveries go beside the batch, in a transaction of their own on a
    // second connection: they touch no row the batch does (only `deliveries` rows, which no ingest
    // writes), so they need no turn under the ingest lock, and PostgreSQL writes them in another
    // backend while the batch holds it. In one transaction with the batch they were about a third
    // of the work done under the lock, which serializes every instance's batches. A record of a
    // refused delivery adds to its source's error count, a `sources` row the batch updates too:
    // those stay in the batch's transaction (one transaction locks its rows in one order; two
    // could deadlock).
    let apart: Vec<(Delivery, Option<Vec<u8>>)> = if ingests.is_empty() && enqueues.is_empty() {
        std::mem::take(&mut deliveries)
    } else {
        let (accepted, refused) = deliveries.into_iter().partition(|(d, _)| (200..300).contains(&d.status));
        deliveries = refused;
        accepted
    };
    let (down, records_down) = tokio::join!(commit_intake(pool, ingests, enqueues, deliveries), commit_records(pool, apart));
    down.or(records_down)
}

/// Commits delivery records alone; returns the cause when the database could not write. Records
/// that fail are logged and dropped: nobody waits for them.
async fn commit_records(pool: &Pool, records: Vec<(Delivery, Option<Vec<u8>>)>) -> Option<String> {
    if records.is_empty() {
        return None;
    }
    let records: Vec<&(Delivery, Option<Vec<u8>>)> = records.iter().collect();
    let mut result = run_batch(pool, &[], &[], &records).await;
    if matches!(result, Err(StoreError::Conflict(_))) {
        result = run_batch(pool, &[], &[], &records).await;
    }
    let e = result.err()?;
    tracing::warn!(target: "store", error = %e.chain(), records = records.len(), "delivery records dropped");
    e.is_unavailable().then(|| e.chain())
}

/// Commits the intake's writes (with the delivery records that must go with them) and answers
/// their callers; returns the cause when the database could not write.
async fn commit_intake(
    pool: &Pool,
    ingests: Vec<(IngestRequest, Reply<IngestOutcome>)>,
    enqueues: Vec<(NewQueuedEvent, Reply<String>)>,
    deliveries: Vec<(Delivery, Option<Vec<u8>>)>,
) -> Option<String> {
    if ingests.is_empty() && enqueues.is_empty() && deliveries.is_empty() {
        return None;
    }
    let reqs: Vec<&IngestRequest> = ingests.iter().map(|(r, _)| r).collect();
    let events: Vec<&NewQueuedEvent> = enqueues.iter().map(|(e, _)| e).collect();
    let deliveries: Vec<&(Delivery, Option<Vec<u8>>)> = deliveries.iter().collect();
    let mut result = run_batch(pool, &reqs, &events, &deliveries).await;
    if matches!(result, Err(StoreError::Conflict(_))) {
        // A deadlock or serialization failure with another process: the retry usually passes.
        result = run_batch(pool, &reqs, &events, &deliveries).await;
    }
    match result {
        Ok((outcomes, ids)) => {
            for ((_, reply), o) in ingests.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(o));
            }
            for ((_, reply), id) in enqueues.into_iter().zip(ids) {
                let _ = reply.send(Ok(id));
            }
            None
        }
        // Nothing to single out: one write and no delivery records that could be the cause.
        Err(e) if e.is_unavailable() || (reqs.len() + events.len() <= 1 && deliveries.is_empty()) => {
            let message = e.chain();
            tracing::error!(target: "store", error = %message, "batch commit failed");
            for (_, reply) in ingests {
                let _ = reply.send(Err(e.again()));
            }
            for (_, reply) in enqueues {
                let _ = reply.send(Err(e.again()));
            }
            e.is_unavailable().then_some(message)
        }
        Err(e) => {
            tracing::warn!(target: "store", error = %e.chain(), writes = reqs.len() + events.len(), "batch failed; retrying its writes one by one");
            // Once the database is unavailable, the writes still waiting are answered at once
            // (503) rather than each waiting its turn for a connection.
            let mut down: Option<String> = None;
            for (req, reply) in ingests {
                let r = retry_one(&mut down, run_batch(pool, &[&req], &[], &[])).await;
                let _ = reply.send(r.map(|(mut o, _)| o.remove(0)));
            }
            for (event, reply) in enqueues {
                let r = retry_one(&mut down, run_batch(pool, &[], &[&event], &[])).await;
                let _ = reply.send(r.map(|(_, mut ids)| ids.remove(0)));
            }
            if !deliveries.is_empty()
                && let Err(e) = retry_one(&mut down, run_batch(pool, &[], &[], &deliveries)).await
            {
                tracing::warn!(target: "store", error = %e.chain(), records = deliveries.len(), "delivery records dropped");
            }
            down
        }
    }
}

/// Runs `write` (a retry of one write) unless the database is already known to be unavailable;
/// notes it when this one finds it so.
async fn retry_one<T>(down: &mut Option<String>, write: impl std::future::Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    if let Some(why) = down {
        return Err(StoreError::Unavailable(why.clone().into()));
    }
    let r = write.await;
    if let Err(e) = &r
        && e.is_unavailable()
    {
        *down = Some(e.chain());
    }
    r
}

/// One transaction for the whole batch.
async fn run_batch(
    pool: &Pool,
    reqs: &[&IngestRequest],
    events: &[&NewQueuedEvent],
    deliveries: &[&(Delivery, Option<Vec<u8>>)],
) -> Result<(Vec<IngestOutcome>, Vec<String>), StoreError> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    let outcomes = if reqs.is_empty() { Vec::new() } else { ingest::ingest_in(&tx, reqs).await? };
    let ids = if events.is_empty() { Vec::new() } else { ingest::enqueue_in(&tx, events).await? };
    if !deliveries.is_empty() {
        deliveries::record_in(&tx, deliveries).await?;
    }
    tx.commit().await?;
    Ok((outcomes, ids))
}
