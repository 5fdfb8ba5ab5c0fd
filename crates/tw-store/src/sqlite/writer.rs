//! The group-commit writer: one thread owns the only write connection, takes every pending write
//! off its channel, runs them in one transaction (each in its own savepoint, so one failing write
//! does not undo the others), commits, and only then answers each caller.
//!
//! Cheap per write: the savepoint statements are prepared once and cached (parsing `SAVEPOINT`
//! text for every write cost about a tenth of the intake's CPU), and the per-source counters that
//! every delivery moves are summed in memory and written once per batch ([`SourceCounters`]).

use crate::{CommitObserver, StoreError};
use rusqlite::{Connection, TransactionBehavior};
use std::collections::HashMap;

/// Why a write or its batch failed, kept so that every caller of the batch can be told.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// The database could not write (busy, disk full, I/O): try again later.
    unavailable: bool,
    message: String,
}

impl Failure {
    fn of(e: &rusqlite::Error) -> Failure {
        Failure { unavailable: super::is_unavailable(e), message: e.to_string() }
    }

    fn into_error(self) -> StoreError {
        if self.unavailable { StoreError::Unavailable(self.message.into()) } else { StoreError::Database(self.message.into()) }
    }
}
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Called once the batch's commit has finished, with its result.
type Completion = Box<dyn FnOnce(Result<(), Failure>) + Send>;
/// One write: runs inside the batch transaction (or is told why it cannot run); says whether it
/// succeeded and how to answer once the commit is done.
type Job = Box<dyn FnOnce(Result<(&Connection, &mut SourceCounters), &Failure>) -> (bool, Completion) + Send>;

/// What deliveries add to their source's counters (`delivery_count`, `error_count`,
/// `last_delivery_at`), summed over a batch and written with it: one `UPDATE` per source and
/// batch instead of one or two per delivery. A write that is rolled back adds nothing.
#[derive(Debug, Default)]
pub(crate) struct SourceCounters {
    by_source: HashMap<String, SourceDelta>,
}

#[derive(Debug, Default)]
struct SourceDelta {
    deliveries: i64,
    errors: i64,
    /// The latest delivery's time, as stored (fixed-width RFC 3339, so text order is time order).
    last_delivery_at: Option<String>,
}

impl SourceCounters {
    /// Counts one delivery accepted for `source` at `at`.
    pub(crate) fn delivery(&mut self, source: &str, at: String) {
        let d = self.entry(source);
        d.deliveries += 1;
        if d.last_delivery_at.as_ref().is_none_or(|l| *l < at) {
            d.last_delivery_at = Some(at);
        }
    }

    /// Counts one refused delivery for `source`.
    pub(crate) fn error(&mut self, source: &str) {
        self.entry(source).errors += 1;
    }

    fn entry(&mut self, source: &str) -> &mut SourceDelta {
        if !self.by_source.contains_key(source) {
            self.by_source.insert(source.to_string(), SourceDelta::default());
        }
        self.by_source.get_mut(source).expect("just inserted")
    }

    fn absorb(&mut self, other: &mut SourceCounters) {
        for (name, d) in other.by_source.drain() {
            let mine = self.entry(&name);
            mine.deliveries += d.deliveries;
            mine.errors += d.errors;
            if let Some(at) = d.last_delivery_at {
                if mine.last_delivery_at.as_ref().is_none_or(|l| *l < at) {
                    mine.last_delivery_at = Some(at);
                }
            }
        }
    }

    /// Writes the sums; the caller's transaction commits them with the batch.
    fn flush(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(
            "UPDATE sources SET delivery_count = delivery_count + ?2, error_count = error_count + ?3, \
             last_delivery_at = CASE WHEN ?4 IS NOT NULL AND (last_delivery_at IS NULL OR last_delivery_at < ?4) THEN ?4 ELSE last_delivery_at END \
             WHERE name = ?1",
        )?;
        for (name, d) in self.by_source.drain() {
            stmt.execute(rusqlite::params![name, d.deliveries, d.errors, d.last_delivery_at])?;
        }
        Ok(())
    }
}

/// How many writes one transaction takes at most.
pub const MAX_BATCH: usize = 1024;
/// How many writes may wait for the writer before callers wait to enqueue.
pub const CHANNEL_CAPACITY: usize = 16 * 1024;

/// A handle to the writer thread. Cloning shares the same writer.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub fn spawn(conn: Connection, observer: Option<Arc<dyn CommitObserver>>) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        std::thread::Builder::new().name("tw-store-writer".into()).spawn(move || run(conn, rx, observer))?;
        Ok(Writer { tx })
    }

    /// Runs `f` in the next batch and returns its result once the batch is committed.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_counted(move |conn, _| f(conn)).await
    }

    /// Like [`Writer::write`], for a write that also moves its source's counters.
    pub async fn write_counted<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut SourceCounters) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Ok((conn, counters)) => f(conn, counters),
                Err(failure) => Err(failure.clone().into_error()),
            };
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |commit| {
                let _ = reply.send(match commit {
                    Ok(()) => result,
                    Err(e) => Err(e.into_error()),
                });
            });
            (ok, completion)
        });
        self.tx.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues `f` without waiting for it (statistics); dropped when the writer is saturated.
    pub fn fire<F>(&self, f: F)
    where
        F: FnOnce(&Connection, &mut SourceCounters) -> Result<(), StoreError> + Send + 'static,
    {
        let job: Job = Box::new(move |conn| {
            let ok = match conn.map_err(|f| f.clone().into_error()).and_then(|(conn, counters)| f(conn, counters)) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(target: "store", error = %e.chain(), "background write failed");
                    false
                }
            };
            (ok, Box::new(|_| {}))
        });
        let _ = self.tx.try_send(job);
    }
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Job>, observer: Option<Arc<dyn CommitObserver>>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let size = batch.len();
        let started = std::time::Instant::now();
        let completions = commit_batch(&mut conn, &mut batch);
        let elapsed = started.elapsed();
        tracing::trace!(target: "store", batch = size, elapsed_us = elapsed.as_micros() as u64, "committed");
        if let Some(o) = &observer {
            o.committed(size, elapsed);
        }
        let (result, completions) = completions;
        for (c, own) in completions {
            // A write whose own savepoint failed was rolled back: its caller hears that, whatever
            // the batch did.
            c(match own {
                Some(e) => Err(e),
                None => result.clone(),
            });
        }
    }
}

/// Runs a batch in one transaction. Each completion comes with its own failure, if it had one
/// that the batch's result does not tell.
fn commit_batch(conn: &mut Connection, batch: &mut Vec<Job>) -> (Result<(), Failure>, Vec<(Completion, Option<Failure>)>) {
    let mut completions = Vec::with_capacity(batch.len());
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            // Answer every caller with the error; nothing was written.
            let failure = Failure::of(&e);
            for job in batch.drain(..) {
                completions.push((fail_job(job, &failure), None));
            }
            return (Err(failure), completions);
        }
    };
    let mut counters = SourceCounters::default();
    let mut own_counters = SourceCounters::default();
    // Set when a failed write could not be undone: then the whole batch is rolled back.
    let mut undo_failed: Option<Failure> = None;
    for job in batch.drain(..) {
        if let Err(e) = savepoint(&tx, "SAVEPOINT tw_write") {
            completions.push((fail_job(job, &Failure::of(&e)), None));
            continue;
        }
        let (ok, completion) = job(Ok((&tx, &mut own_counters)));
        let mut own = None;
        if ok {
            match savepoint(&tx, "RELEASE tw_write") {
                Ok(()) => counters.absorb(&mut own_counters),
                Err(e) => {
                    tracing::error!(target: "store", error = %e, "savepoint release failed; that write is rolled back");
                    own = Some(Failure::of(&e));
                    undo_failed = undo_failed.or(rollback_savepoint(&tx).err());
                }
            }
        } else {
            undo_failed = undo_failed.or(rollback_savepoint(&tx).err());
        }
        own_counters.by_source.clear();
        completions.push((completion, own));
    }
    // The counters are statistics: failing to move them must not undo the batch's writes.
    if !counters.by_source.is_empty() {
        let flushed = savepoint(&tx, "SAVEPOINT tw_counters").and_then(|()| counters.flush(&tx));
        match flushed.and_then(|()| savepoint(&tx, "RELEASE tw_counters")) {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(target: "store", error = %e, "source counters not updated for this batch");
                let _ = savepoint(&tx, "ROLLBACK TO tw_counters").and_then(|()| savepoint(&tx, "RELEASE tw_counters"));
            }
        }
    }
    let result = match undo_failed {
        // Dropping the transaction rolls everything back: no caller was told of a write that a
        // failed write's leftovers could share the commit with.
        Some(failure) => {
            drop(tx);
            Err(failure)
        }
        None => tx.commit().map_err(|e| Failure::of(&e)),
    };
    if let Err(e) = &result {
        tracing::error!(target: "store", error = %e.message, "batch commit failed");
    }
    (result, completions)
}

/// Runs one of the savepoint statements, prepared once per connection.
fn savepoint(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Undoes the current write's savepoint and leaves it.
fn rollback_savepoint(conn: &Connection) -> Result<(), Failure> {
    savepoint(conn, "ROLLBACK TO tw_write").and_then(|()| savepoint(conn, "RELEASE tw_write")).map_err(|e| {
        tracing::error!(target: "store", error = %e, "savepoint rollback failed; the batch is rolled back");
        Failure::of(&e)
    })
}

/// A job that could not run: it is told why, and answers its caller with that.
fn fail_job(job: Job, failure: &Failure) -> Completion {
    job(Err(failure)).1
}
