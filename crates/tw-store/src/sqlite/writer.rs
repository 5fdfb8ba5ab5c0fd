//! The group-commit writer: one thread owns the only write connection, takes every pending write
//! off its channel, runs them in one transaction (each in its own savepoint, so one failing write
//! does not undo the others), commits, and only then answers each caller.

use crate::{CommitObserver, StoreError};
use rusqlite::{Connection, TransactionBehavior};

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
type Job = Box<dyn FnOnce(Result<&Connection, &Failure>) -> (bool, Completion) + Send>;

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
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => f(conn),
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
        F: FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
    {
        let job: Job = Box::new(move |conn| {
            let ok = match conn.map_err(|f| f.clone().into_error()).and_then(f) {
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
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
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
    for job in batch.drain(..) {
        match tx.savepoint() {
            Ok(sp) => {
                let (ok, completion) = job(Ok(&sp));
                let mut own = None;
                if ok {
                    if let Err(e) = sp.commit() {
                        tracing::error!(target: "store", error = %e, "savepoint release failed; that write is rolled back");
                        own = Some(Failure::of(&e));
                    }
                } // else: dropping the savepoint rolls this one write back.
                completions.push((completion, own));
            }
            Err(e) => completions.push((fail_job(job, &Failure::of(&e)), None)),
        }
    }
    let result = tx.commit().map_err(|e| Failure::of(&e));
    if let Err(e) = &result {
        tracing::error!(target: "store", error = %e.message, "batch commit failed");
    }
    (result, completions)
}

/// A job that could not run: it is told why, and answers its caller with that.
fn fail_job(job: Job, failure: &Failure) -> Completion {
    job(Err(failure)).1
}
