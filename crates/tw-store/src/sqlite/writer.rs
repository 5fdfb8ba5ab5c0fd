//! The group-commit writer: one thread owns the only write connection, takes every pending write
//! off its channel, runs them in one transaction (so that one failing write does not undo the
//! others, a failure runs the batch again with a savepoint per write), commits, and answers each
//! caller once the commit is on disk.
//!
//! Durable before answered, without the writer waiting for the disk: the connection commits with
//! `synchronous=NORMAL` (WAL frames written, not synced), and a second thread ([`sync_loop`])
//! `fdatasync`s the WAL file after each commit before it answers that batch's callers, while the
//! writer already runs the next batch. One sync covers every batch committed before it started.
//! A 2xx therefore means what it meant with `synchronous=FULL` (the commit's WAL frames are on
//! disk); only the writer's thread no longer waits in `fsync`. Checkpoints run on a thread of
//! their own (`checkpoint.rs`) and keep SQLite's own syncs (the WAL before it is copied, the
//! database after).
//!
//! Cheap per write: the intake's writes are *replayable* (they can run again after a rollback), so
//! consecutive replayable writes share one savepoint; only when one of them fails is the group
//! rolled back and replayed write by write, each in its own savepoint, so that only the failing
//! one is lost. One-shot writes always get their own savepoint. Savepoint statements are prepared
//! once (parsing `SAVEPOINT` text for every write cost about a tenth of the intake's CPU), and the
//! per-source counters every delivery moves are summed in memory and written once per batch
//! ([`Tallies`]).

use super::checkpoint::Checkpoints;
use crate::{CommitObserver, StoreError};
use rusqlite::{Connection, TransactionBehavior};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

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

/// One write in a batch.
trait Job: Send {
    /// Runs the write in the batch's transaction; true when it succeeded.
    fn run(&mut self, conn: &Connection, counters: &mut Tallies) -> bool;
    /// Whether [`Job::run`] may be called again after its writes were rolled back.
    fn replayable(&self) -> bool;
    /// Tells the job it could not run (or that its writes were rolled back) and why.
    fn fail(&mut self, failure: &Failure);
    /// Answers the caller once the batch is over, with the commit's result.
    fn finish(self: Box<Self>, commit: Result<(), Failure>);
}

/// A write with its caller's answer (or none, for [`Writer::fire`]).
struct Call<T, F> {
    f: Option<F>,
    replayable: bool,
    result: Option<Result<T, StoreError>>,
    reply: Option<oneshot::Sender<Result<T, StoreError>>>,
}

/// How a [`Call`] runs its closure: once (`FnOnce`) or again and again (`FnMut`).
trait Runner<T>: Send {
    fn call(f: &mut Option<Self>, conn: &Connection, counters: &mut Tallies) -> Result<T, StoreError>
    where
        Self: Sized;
}

/// A one-shot closure.
struct Once<F>(F);
/// A replayable closure.
struct Replay<F>(F);

impl<T, F: FnOnce(&Connection, &mut Tallies) -> Result<T, StoreError> + Send> Runner<T> for Once<F> {
    fn call(f: &mut Option<Self>, conn: &Connection, counters: &mut Tallies) -> Result<T, StoreError> {
        match f.take() {
            Some(Once(f)) => f(conn, counters),
            None => Err(StoreError::Database("a one-shot write was run twice".into())),
        }
    }
}

impl<T, F: FnMut(&Connection, &mut Tallies) -> Result<T, StoreError> + Send> Runner<T> for Replay<F> {
    fn call(f: &mut Option<Self>, conn: &Connection, counters: &mut Tallies) -> Result<T, StoreError> {
        match f {
            Some(Replay(f)) => f(conn, counters),
            None => Err(StoreError::Database("write missing".into())),
        }
    }
}

impl<T: Send, F: Runner<T>> Job for Call<T, F> {
    fn run(&mut self, conn: &Connection, counters: &mut Tallies) -> bool {
        let result = F::call(&mut self.f, conn, counters);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn replayable(&self) -> bool {
        self.replayable
    }

    fn fail(&mut self, failure: &Failure) {
        self.result = Some(Err(failure.clone().into_error()));
    }

    fn finish(self: Box<Self>, commit: Result<(), Failure>) {
        let result = match (self.result, commit) {
            (Some(Ok(v)), Ok(())) => Ok(v),
            // This write was fine; the batch could not be committed: try again later (503).
            (Some(Ok(_)), Err(e)) => Err(StoreError::Unavailable(e.message.into())),
            (Some(Err(e)), _) => Err(e),
            (None, _) => Err(StoreError::Database("write never ran".into())),
        };
        match self.reply {
            Some(reply) => {
                let _ = reply.send(result);
            }
            None => {
                if let Err(e) = result {
                    // While the disk is full every delivery's record fails: one line a second is
                    // enough (the outage itself is logged once by the server's store health).
                    crate::warn_once_a_second!(&BACKGROUND_FAILURE_LOGGED, target: "store", error = %e.chain(), "background write failed");
                }
            }
        }
    }
}

/// When a failed background write was last logged (unix seconds).
static BACKGROUND_FAILURE_LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What writes add to the batch's running totals, written once at the end of the batch instead
/// of by every write: the sources' counters (`delivery_count`, `error_count`, `last_delivery_at`),
/// and the highest incident number used per year (`incident_counters`, which the intake reads but
/// no longer updates per incident: that one-row upsert, journaled for every statement, cost more
/// than the incident's own insert). A write that is rolled back adds nothing.
#[derive(Debug, Default)]
pub(crate) struct Tallies {
    by_source: HashMap<String, SourceDelta>,
    /// Year -> the highest incident number handed out in this batch.
    last_seq: HashMap<i32, i64>,
    /// (source, severity) -> incidents created (as `open`), for `incident_counts`.
    created: HashMap<(String, &'static str), i64>,
}

#[derive(Debug, Default)]
struct SourceDelta {
    deliveries: i64,
    errors: i64,
    /// The latest delivery's time, as stored (fixed-width RFC 3339, so text order is time order).
    last_delivery_at: Option<String>,
}

impl Tallies {
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

    /// Records that incident number `seq` of `year` was used.
    pub(crate) fn incident_number(&mut self, year: i32, seq: i64) {
        let last = self.last_seq.entry(year).or_insert(seq);
        *last = (*last).max(seq);
    }

    /// The highest incident number of `year` used by the writes counted here, if any. Numbers
    /// only grow within a transaction, so it is the highest of the transaction so far.
    pub(crate) fn last_number(&self, year: i32) -> Option<i64> {
        self.last_seq.get(&year).copied()
    }

    /// Records that an incident of `source` was created, `open`, with `severity`.
    pub(crate) fn incident_created(&mut self, source: &str, severity: &'static str) {
        *self.created.entry((source.to_string(), severity)).or_default() += 1;
    }

    fn is_empty(&self) -> bool {
        self.by_source.is_empty() && self.last_seq.is_empty() && self.created.is_empty()
    }

    fn clear(&mut self) {
        self.by_source.clear();
        self.last_seq.clear();
        self.created.clear();
    }

    fn entry(&mut self, source: &str) -> &mut SourceDelta {
        if !self.by_source.contains_key(source) {
            self.by_source.insert(source.to_string(), SourceDelta::default());
        }
        self.by_source.get_mut(source).expect("just inserted")
    }

    fn absorb(&mut self, other: &mut Tallies) {
        for (year, seq) in other.last_seq.drain() {
            self.incident_number(year, seq);
        }
        for (key, n) in other.created.drain() {
            *self.created.entry(key).or_default() += n;
        }
        for (name, d) in other.by_source.drain() {
            let mine = self.entry(&name);
            mine.deliveries += d.deliveries;
            mine.errors += d.errors;
            if let Some(at) = d.last_delivery_at
                && mine.last_delivery_at.as_ref().is_none_or(|l| *l < at)
            {
                mine.last_delivery_at = Some(at);
            }
        }
    }

    /// Writes the sums; the caller's transaction commits them with the batch.
    fn flush(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        if !self.by_source.is_empty() {
            self.flush_sources(conn)?;
        }
        if !self.created.is_empty() {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO incident_counts (source, status, severity, n) VALUES (?1, 'open', ?2, ?3) \
                 ON CONFLICT (source, status, severity) DO UPDATE SET n = n + excluded.n",
            )?;
            for ((source, severity), n) in self.created.drain() {
                stmt.execute(rusqlite::params![source, severity, n])?;
            }
        }
        if self.last_seq.is_empty() {
            return Ok(());
        }
        let mut stmt = conn.prepare_cached(
            "INSERT INTO incident_counters (year, last_seq) VALUES (?1, ?2) \
             ON CONFLICT (year) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq)",
        )?;
        for (year, seq) in self.last_seq.drain() {
            stmt.execute(rusqlite::params![year, seq])?;
        }
        Ok(())
    }

    fn flush_sources(&mut self, conn: &Connection) -> rusqlite::Result<()> {
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
    tx: mpsc::Sender<Box<dyn Job>>,
}

/// Makes what was committed durable: called by the sync thread after one or more commits, before
/// their callers are answered.
pub(crate) type SyncFn = Box<dyn FnMut() -> std::io::Result<()> + Send>;

impl Writer {
    /// Starts the writer thread on `conn` (a file database in WAL mode), and its sync thread on
    /// the connection's WAL file.
    pub fn spawn(conn: Connection, observer: Option<Arc<dyn CommitObserver>>) -> std::io::Result<Writer> {
        let db = conn
            .path()
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from)
            .ok_or_else(|| std::io::Error::other("the writer needs a database file"))?;
        Writer::spawn_with_sync(conn, observer, wal_sync(db))
    }

    /// Like [`Writer::spawn`], with `sync` making each commit durable.
    pub(crate) fn spawn_with_sync(conn: Connection, observer: Option<Arc<dyn CommitObserver>>, sync: SyncFn) -> std::io::Result<Writer> {
        // The sync thread syncs each commit before it is answered (see the module's doc).
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(std::io::Error::other)?;
        // A database in a file checkpoints beside the writer (see `checkpoint.rs`).
        let checkpoints = match conn.path().filter(|p| !p.is_empty()) {
            Some(db) => Some(Checkpoints::start(&conn, Path::new(db))?),
            None => None,
        };
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (synced_tx, synced_rx) = std::sync::mpsc::channel();
        let sync_observer = observer.clone();
        std::thread::Builder::new().name("tw-store-sync".into()).spawn(move || sync_loop(synced_rx, sync, sync_observer))?;
        std::thread::Builder::new().name("tw-store-writer".into()).spawn(move || run(conn, rx, synced_tx, observer, checkpoints))?;
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
        F: FnOnce(&Connection, &mut Tallies) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(Once(f), false).await
    }

    /// Like [`Writer::write_counted`], for a write that may run again after a rollback (it takes
    /// its inputs by reference): it can then share a savepoint with its neighbours. The intake's
    /// writes are of this kind.
    pub async fn write_replayable<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&Connection, &mut Tallies) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(Replay(f), true).await
    }

    async fn submit<T: Send + 'static, R: Runner<T> + 'static>(&self, f: R, replayable: bool) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Call { f: Some(f), replayable, result: None, reply: Some(reply) });
        self.tx.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues a replayable `f` without waiting for it (statistics); dropped when the writer is
    /// saturated; a failure is logged.
    pub fn fire<F>(&self, f: F)
    where
        F: FnMut(&Connection, &mut Tallies) -> Result<(), StoreError> + Send + 'static,
    {
        let job: Box<dyn Job> = Box::new(Call { f: Some(Replay(f)), replayable: true, result: None, reply: None });
        let _ = self.tx.try_send(job);
    }
}

/// A committed (or failed) batch on its way to its callers through the sync thread.
struct Committed {
    result: Result<(), Failure>,
    done: Vec<Done>,
    /// The commit wrote pages: it must be synced before anyone hears of it.
    wrote: bool,
}

fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    synced: std::sync::mpsc::Sender<Committed>,
    observer: Option<Arc<dyn CommitObserver>>,
    checkpoints: Option<Checkpoints>,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        gather(&mut rx, &mut batch);
        let size = batch.len();
        let started = std::time::Instant::now();
        let changes_before = conn.total_changes();
        let completions = commit_batch(&mut conn, &mut batch);
        let wrote = conn.total_changes() != changes_before;
        let elapsed = started.elapsed();
        tracing::trace!(target: "store", batch = size, elapsed_us = elapsed.as_micros() as u64, "committed");
        let (result, done) = completions;
        if let Some(o) = &observer {
            match &result {
                Ok(()) => o.committed(size, elapsed, wrote),
                Err(e) if e.unavailable => o.unavailable(&e.message),
                Err(_) => {}
            }
        }
        let wrote = wrote && result.is_ok();
        if let Err(std::sync::mpsc::SendError(lost)) = synced.send(Committed { result, done, wrote }) {
            // The sync thread is gone: nobody can be told that their write is on disk.
            let failure = Failure { unavailable: true, message: "the store's sync thread stopped".into() };
            answer(lost.done, &Err(failure));
        }
        // After the batch went to the sync thread: a checkpoint here keeps none of its callers
        // waiting.
        if let Some(c) = checkpoints.as_ref().filter(|_| wrote) {
            c.committed(&conn);
        }
    }
}

/// Times the writer lets the request threads go first before it commits ([`gather`]), and for how
/// long at most.
const GATHER_YIELDS: usize = 8;
const GATHER_FOR: std::time::Duration = std::time::Duration::from_millis(2);

/// Takes the writes waiting behind `batch`'s first one. Before each take the writer yields its
/// CPU once, so that request handlers ready to run on the same core reach their write first
/// instead of waiting behind this commit; it stops as soon as a yield brought nothing new (the
/// handlers had nothing left to do, or run on another core), after [`GATHER_YIELDS`] yields or
/// [`GATHER_FOR`], or at [`MAX_BATCH`]. Woken by the first write of a burst, the writer used to
/// commit it nearly alone while the rest were still being parsed: on one core under 64
/// connections, batches of ~9 deliveries, each commit rewriting the same last pages of every
/// index. Gathered, batches hold ~40 and a delivery costs a fifth less CPU.
fn gather(rx: &mut mpsc::Receiver<Box<dyn Job>>, batch: &mut Vec<Box<dyn Job>>) {
    let started = std::time::Instant::now();
    for yielded in 0..=GATHER_YIELDS {
        let before = batch.len();
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let last = yielded == GATHER_YIELDS || batch.len() >= MAX_BATCH || started.elapsed() >= GATHER_FOR;
        if last || (yielded > 0 && batch.len() == before) {
            return;
        }
        std::thread::yield_now();
    }
}

/// Answers the callers of a batch with its result, or, for a write that was rolled back on its
/// own, with that write's failure.
fn answer(done: Vec<Done>, result: &Result<(), Failure>) {
    for (job, own) in done {
        job.finish(match own {
            Some(e) => Err(e),
            None => result.clone(),
        });
    }
}

/// The sync thread: takes every commit waiting, makes them durable with one `sync` when any of
/// them wrote, then answers their callers in commit order. A failed sync fails those writes as
/// unavailable (503: the sender tries again, and finds its incident if the write did survive),
/// and `observer` hears of it as of a commit that failed.
fn sync_loop(rx: std::sync::mpsc::Receiver<Committed>, mut sync: SyncFn, observer: Option<Arc<dyn CommitObserver>>) {
    let mut pending = Vec::new();
    while let Ok(first) = rx.recv() {
        pending.push(first);
        while let Ok(more) = rx.try_recv() {
            pending.push(more);
        }
        let synced = if pending.iter().any(|c| c.wrote) {
            sync().map_err(|e| {
                tracing::error!(target: "store", error = %e, "syncing the WAL failed; the writes waiting for it are refused");
                let message = format!("cannot sync the database's log: {e}");
                if let Some(o) = &observer {
                    o.unavailable(&message);
                }
                Failure { unavailable: true, message }
            })
        } else {
            Ok(())
        };
        for c in pending.drain(..) {
            let result = match (&synced, c.wrote) {
                (Err(e), true) => Err(e.clone()),
                _ => c.result,
            };
            answer(c.done, &result);
        }
    }
}

/// The WAL file SQLite keeps beside the database at `db`.
pub(super) fn wal_path(db: &std::path::Path) -> std::path::PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::path::PathBuf::from(wal)
}

/// Syncs the file the commits of the database at `db` are written to (`fdatasync`, as SQLite
/// itself does on Linux): [`sync_target`], opened at the first sync and kept. A stat of the WAL
/// before every sync, to see whether the path named another file, looked for a change that cannot
/// happen: the writer's connection stays open, and SQLite deletes a WAL only when the last
/// connection to it closes (a WAL replaced by hand would not be the file SQLite writes either).
fn wal_sync(db: std::path::PathBuf) -> SyncFn {
    let mut file: Option<std::fs::File> = None;
    Box::new(move || {
        if file.is_none() {
            file = Some(sync_target(&db)?);
        }
        file.as_ref().map_or(Ok(()), std::fs::File::sync_data)
    })
}

/// The file a commit of the database at `db` is written to: its WAL, which SQLite creates with the
/// first write, or, without one (a database that could not enter WAL mode), the database file.
/// Either is kept open by [`wal_sync`]: closing any descriptor of the database file would drop
/// every POSIX lock this process holds on it, SQLite's included.
fn sync_target(db: &std::path::Path) -> std::io::Result<std::fs::File> {
    match std::fs::File::open(wal_path(db)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::File::open(db),
        other => other,
    }
}

/// A job that ran, with its own failure when it was rolled back alone.
type Done = (Box<dyn Job>, Option<Failure>);

/// Runs a batch in one transaction. Each job comes back with its own failure, if it had one that
/// the batch's result does not tell.
fn commit_batch(conn: &mut Connection, batch: &mut Vec<Box<dyn Job>>) -> (Result<(), Failure>, Vec<Done>) {
    if batch.len() > 1
        && batch.iter().all(|job| job.replayable())
        && let Some(committed) = commit_whole(conn, batch)
    {
        return committed;
    }
    let mut done: Vec<Done> = Vec::with_capacity(batch.len());
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            // Answer every caller with the error; nothing was written.
            let failure = Failure::of(&e);
            for mut job in batch.drain(..) {
                job.fail(&failure);
                done.push((job, None));
            }
            return (Err(failure), done);
        }
    };
    let mut b =
        Batch { tx: &tx, counters: Tallies::default(), group: Vec::new(), group_counters: Tallies::default(), undo_failed: None, done };
    for job in batch.drain(..) {
        b.run(job);
    }
    if !b.broken() {
        b.close_group();
    }
    let broken = b.tx.is_autocommit();
    let Batch { mut counters, mut undo_failed, group, mut done, .. } = b;
    // A group left open by a broken batch: its writes are lost with the batch.
    done.extend(group.into_iter().map(|job| (job, None)));
    if broken && undo_failed.is_none() {
        undo_failed = Some(Failure { unavailable: true, message: "the database ended the batch's transaction".into() });
    }
    // Part of the batch: incident numbers must be recorded with the incidents that use them.
    if undo_failed.is_none()
        && !counters.is_empty()
        && let Err(e) = counters.flush(&tx)
    {
        tracing::error!(target: "store", error = %e, "batch totals not written; the batch is rolled back");
        undo_failed = Some(Failure::of(&e));
    }
    let result = match undo_failed {
        // Dropping the transaction rolls everything back: no caller is told of a write that a
        // failed write's leftovers could share the commit with.
        Some(failure) => {
            drop(tx);
            Err(failure)
        }
        None => commit(tx),
    };
    (result, done)
}

/// Commits a batch's transaction; a failure is logged here, once for either path.
fn commit(tx: rusqlite::Transaction<'_>) -> Result<(), Failure> {
    tx.commit().map_err(|e| {
        let failure = Failure::of(&e);
        tracing::error!(target: "store", error = %failure.message, "batch commit failed");
        failure
    })
}

/// The usual batch, all replayable writes that all succeed, without a savepoint: a savepoint over
/// a whole batch copied every page it touched into its journal, which spilled to a temporary file
/// past 64 KiB (about a tenth of the intake's CPU). `None` when a write failed, or the batch
/// could not be written: nothing of it stays, and the caller runs it again with savepoints, where
/// a failing write is lost alone.
fn commit_whole(conn: &mut Connection, batch: &mut Vec<Box<dyn Job>>) -> Option<(Result<(), Failure>, Vec<Done>)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).ok()?;
    let mut counters = Tallies::default();
    for job in batch.iter_mut() {
        // SQLite may end the transaction itself (as on a full disk): then no write may run outside
        // it, and the savepoint path tells the callers.
        if !job.run(&tx, &mut counters) || tx.is_autocommit() {
            return None;
        }
    }
    if counters.flush(&tx).is_err() {
        return None;
    }
    Some((commit(tx), batch.drain(..).map(|job| (job, None)).collect()))
}

/// One batch's transaction while its jobs run.
struct Batch<'a> {
    tx: &'a Connection,
    /// What the jobs kept so far added to the source counters.
    counters: Tallies,
    /// Replayable jobs run since the group's savepoint, all successful so far.
    group: Vec<Box<dyn Job>>,
    group_counters: Tallies,
    /// Set when a failed write could not be undone: then the whole batch is rolled back.
    undo_failed: Option<Failure>,
    done: Vec<Done>,
}

impl Batch<'_> {
    /// True once the batch cannot be trusted: a write could not be undone, or SQLite ended the
    /// transaction itself (as it may on a full disk or an I/O error). No further write runs then:
    /// outside the transaction each would commit on its own while its caller is told it failed.
    fn broken(&self) -> bool {
        self.undo_failed.is_some() || self.tx.is_autocommit()
    }

    /// Answers a job that was not run because the batch is broken: try again later (503).
    fn refuse(&mut self, mut job: Box<dyn Job>) {
        let message = self.undo_failed.as_ref().map_or("the database ended the batch's transaction", |f| f.message.as_str());
        let failure = Failure { unavailable: true, message: format!("not written, the batch failed: {message}") };
        job.fail(&failure);
        self.done.push((job, None));
    }

    /// Runs a job, replayable ones in the open group (opening one if needed), one-shot ones in a
    /// savepoint of their own.
    fn run(&mut self, job: Box<dyn Job>) {
        if self.broken() {
            self.refuse(job);
        } else if job.replayable() {
            self.grouped(job);
        } else {
            self.close_group();
            self.alone(job);
        }
    }

    /// Runs a replayable job in the open group. When it fails, the group is rolled back (the
    /// failing write's partial changes with it) and the writes before it are replayed one by
    /// one, so only the failing write is lost.
    fn grouped(&mut self, mut job: Box<dyn Job>) {
        if self.group.is_empty()
            && let Err(e) = savepoint(self.tx, "SAVEPOINT tw_group")
        {
            job.fail(&Failure::of(&e));
            self.done.push((job, None));
            return;
        }
        if job.run(self.tx, &mut self.group_counters) {
            self.group.push(job);
            return;
        }
        // The failing write keeps its own error; it is not run again.
        self.done.push((job, None));
        self.group_counters.clear();
        if let Err(e) = savepoint(self.tx, "ROLLBACK TO tw_group") {
            tracing::error!(target: "store", error = %e, "group rollback failed; the batch is rolled back");
            self.undo_failed = self.undo_failed.take().or(Some(Failure::of(&e)));
        }
        let members: Vec<Box<dyn Job>> = self.group.drain(..).collect();
        for job in members {
            if self.broken() {
                self.refuse(job);
            } else {
                self.alone(job);
            }
        }
        if !self.broken()
            && let Err(e) = savepoint(self.tx, "RELEASE tw_group")
        {
            self.undo_failed = Some(Failure::of(&e));
        }
    }

    /// Ends the open group: its writes stay, its counters count.
    fn close_group(&mut self) {
        if self.group.is_empty() {
            return;
        }
        let own = match savepoint(self.tx, "RELEASE tw_group") {
            Ok(()) => {
                self.counters.absorb(&mut self.group_counters);
                None
            }
            Err(e) => {
                tracing::error!(target: "store", error = %e, "savepoint release failed; those writes are rolled back");
                self.undo_failed = self.undo_failed.take().or(Some(Failure::of(&e)));
                Some(Failure::of(&e))
            }
        };
        self.group_counters.clear();
        for job in self.group.drain(..) {
            self.done.push((job, own.clone()));
        }
    }

    /// Runs a job in its own savepoint.
    fn alone(&mut self, mut job: Box<dyn Job>) {
        if let Err(e) = savepoint(self.tx, "SAVEPOINT tw_write") {
            job.fail(&Failure::of(&e));
            self.done.push((job, None));
            return;
        }
        let mut own_counters = Tallies::default();
        let mut own = None;
        if job.run(self.tx, &mut own_counters) {
            match savepoint(self.tx, "RELEASE tw_write") {
                Ok(()) => self.counters.absorb(&mut own_counters),
                Err(e) => {
                    tracing::error!(target: "store", error = %e, "savepoint release failed; that write is rolled back");
                    own = Some(Failure::of(&e));
                    self.undo();
                }
            }
        } else {
            self.undo();
        }
        self.done.push((job, own));
    }

    fn undo(&mut self) {
        if let Err(e) = rollback_savepoint(self.tx) {
            self.undo_failed = self.undo_failed.take().or(Some(e));
        }
    }
}

/// Runs one of the savepoint statements, prepared once per connection.
fn savepoint(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs `part` of a write in a savepoint of its own (inside the write's transaction): when it fails,
/// what it wrote is undone and the rest of the write stands. `Err` only when the savepoint itself
/// could not be taken, undone or left; the part's own result comes inside `Ok`.
pub(crate) fn in_savepoint<T>(
    conn: &Connection,
    part: impl FnOnce() -> Result<T, StoreError>,
) -> Result<Result<T, StoreError>, StoreError> {
    savepoint(conn, "SAVEPOINT tw_part")?;
    let result = part();
    if result.is_err() {
        savepoint(conn, "ROLLBACK TO tw_part")?;
    }
    savepoint(conn, "RELEASE tw_part")?;
    Ok(result)
}

/// Undoes the current write's savepoint and leaves it.
fn rollback_savepoint(conn: &Connection) -> Result<(), Failure> {
    savepoint(conn, "ROLLBACK TO tw_write").and_then(|()| savepoint(conn, "RELEASE tw_write")).map_err(|e| {
        tracing::error!(target: "store", error = %e, "savepoint rollback failed; the batch is rolled back");
        Failure::of(&e)
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A writer on a fresh WAL file in a temporary directory, with `schema`.
    pub(in crate::sqlite) fn writer_with(schema: &str) -> (tempfile::TempDir, Writer, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL").unwrap();
        conn.execute_batch(schema).unwrap();
        (dir, Writer::spawn(conn, None).unwrap(), path)
    }

    /// A writer with a table whose `UNIQUE` column lets a write fail on purpose.
    fn writer() -> (tempfile::TempDir, Writer, std::path::PathBuf) {
        writer_with(
            "CREATE TABLE t (x INTEGER UNIQUE, note TEXT); \
             CREATE TABLE sources (name TEXT PRIMARY KEY, delivery_count INTEGER NOT NULL DEFAULT 0, \
             error_count INTEGER NOT NULL DEFAULT 0, last_delivery_at TEXT); INSERT INTO sources (name) VALUES ('s');",
        )
    }

    fn rows(path: &std::path::Path, sql: &str) -> Vec<(i64, String)> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    }

    /// Holds the writer inside a one-shot write, once it is running, until the returned sender is
    /// used or dropped: everything submitted meanwhile lands in the next batch together.
    async fn hold(w: &Writer) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (gate, wait) = std::sync::mpsc::channel::<()>();
        let (entered, running) = oneshot::channel::<()>();
        let w = w.clone();
        let held = tokio::spawn(async move {
            w.write(move |_| {
                let _ = entered.send(());
                let _ = wait.recv();
                Ok(())
            })
            .await
            .unwrap()
        });
        running.await.unwrap();
        (gate, held)
    }

    /// Two writes inserting a row, a counter and a second row: a failure in the middle must undo
    /// that write's first row and counter, and nothing of its neighbours.
    fn insert(x: i64, note: &'static str) -> impl FnMut(&Connection, &mut Tallies) -> Result<i64, StoreError> + Send + 'static {
        move |conn, counters| {
            conn.execute("INSERT INTO t (x, note) VALUES (?1, ?2)", rusqlite::params![1000 + x, note])?;
            counters.delivery("s", format!("2026-01-01T00:00:{x:02}Z"));
            conn.execute("INSERT INTO t (x, note) VALUES (?1, ?2)", rusqlite::params![x, note])?;
            Ok(x)
        }
    }

    #[test]
    fn a_failing_part_of_a_write_is_undone_alone() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER UNIQUE, note TEXT)").unwrap();
        let tx = conn.transaction().unwrap();
        let insert = |x: i64, note: &str| tx.execute("INSERT INTO t (x, note) VALUES (?1, ?2)", rusqlite::params![x, note]);
        let kept = in_savepoint(&tx, || Ok(insert(1, "first")?)).unwrap();
        assert_eq!(kept.unwrap(), 1);
        // Writes a row, then fails: the row goes with it.
        let failed = in_savepoint(&tx, || {
            insert(2, "undone")?;
            Ok(insert(1, "duplicate")?)
        })
        .unwrap();
        assert!(failed.is_err());
        assert_eq!(in_savepoint(&tx, || Ok(insert(3, "third")?)).unwrap().unwrap(), 1);
        tx.commit().unwrap();
        let notes: Vec<String> =
            conn.prepare("SELECT note FROM t ORDER BY x").unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        assert_eq!(notes, ["first", "third"]);
    }

    #[test]
    fn gathering_takes_what_waits_up_to_a_batch_and_no_more() {
        let job = || -> Box<dyn Job> {
            Box::new(Call { f: Some(Once(|_: &Connection, _: &mut Tallies| Ok(()))), replayable: false, result: None, reply: None })
        };
        let (tx, mut rx) = mpsc::channel(CHANNEL_CAPACITY);
        for _ in 0..MAX_BATCH + 5 {
            tx.try_send(job()).unwrap();
        }
        let mut batch = vec![job()];
        gather(&mut rx, &mut batch);
        assert_eq!(batch.len(), MAX_BATCH, "a batch stops at its cap");
        batch.clear();
        batch.push(job());
        gather(&mut rx, &mut batch);
        assert_eq!(batch.len(), 1 + 6, "the rest, in the next batch");
        assert!(rx.try_recv().is_err());
        // Nothing waiting, nothing coming: the writer goes on with its one write.
        batch.truncate(1);
        gather(&mut rx, &mut batch);
        assert_eq!(batch.len(), 1);
    }

    #[tokio::test]
    async fn a_failing_write_in_a_group_loses_only_itself() {
        let (_dir, w, path) = writer();
        let (gate, held) = hold(&w).await;
        let mut calls = Vec::new();
        for (x, note) in [(1, "a"), (2, "b"), (1, "dup"), (3, "c")] {
            let w = w.clone();
            calls.push(tokio::spawn(async move { w.write_replayable(insert(x, note)).await }));
        }
        // A one-shot write between replayable ones closes the group before it.
        let w2 = w.clone();
        let once = tokio::spawn(async move {
            w2.write_counted(|conn, counters| {
                counters.error("s");
                conn.execute("INSERT INTO t (x, note) VALUES (50, 'once')", [])?;
                Ok(())
            })
            .await
        });
        for x in [4, 5] {
            let w = w.clone();
            calls.push(tokio::spawn(async move { w.write_replayable(insert(x, "late")).await }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        gate.send(()).unwrap();
        held.await.unwrap();
        let results: Vec<_> = futures_join(calls).await;
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1, "{results:?}");
        assert!(matches!(results[2], Err(StoreError::UniqueViolation(_))), "{:?}", results[2]);
        once.await.unwrap().unwrap();
        let kept = rows(&path, "SELECT x, note FROM t WHERE x < 1000 ORDER BY x");
        let expect: Vec<(i64, String)> =
            [(1, "a"), (2, "b"), (3, "c"), (4, "late"), (5, "late"), (50, "once")].iter().map(|(x, n)| (*x, n.to_string())).collect();
        assert_eq!(kept, expect);
        // The failed write's first insert was undone with it.
        assert_eq!(rows(&path, "SELECT x, note FROM t WHERE x >= 1000 AND note = 'dup'"), vec![]);
        let counts = rows(&path, "SELECT delivery_count, last_delivery_at || '/' || error_count FROM sources");
        assert_eq!(counts, vec![(5, "2026-01-01T00:00:05Z/1".to_string())]);
    }

    #[tokio::test]
    async fn fired_writes_are_kept_and_a_failing_one_is_dropped_alone() {
        let (_dir, w, path) = writer();
        let (gate, held) = hold(&w).await;
        for (x, note) in [(7, "f"), (7, "f-dup"), (8, "g")] {
            let mut f = insert(x, note);
            w.fire(move |conn, counters| f(conn, counters).map(|_| ()));
        }
        // A write after them answers only once their batch is committed.
        let w2 = w.clone();
        let after = tokio::spawn(async move { w2.write_replayable(insert(9, "h")).await });
        gate.send(()).unwrap();
        held.await.unwrap();
        assert_eq!(after.await.unwrap().unwrap(), 9);
        let kept = rows(&path, "SELECT x, note FROM t WHERE x < 1000 ORDER BY x");
        assert_eq!(kept, vec![(7, "f".into()), (8, "g".into()), (9, "h".into())]);
    }

    /// When the transaction ends under the batch (SQLite does that itself on some I/O errors and
    /// a full disk), no later write may run: outside the transaction each would commit alone
    /// while its caller hears that it failed.
    #[tokio::test]
    async fn a_batch_whose_transaction_ended_runs_nothing_more() {
        let (_dir, w, path) = writer();
        let (gate, held) = hold(&w).await;
        let w1 = w.clone();
        let before = tokio::spawn(async move { w1.write_replayable(insert(1, "before")).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let w2 = w.clone();
        let ender = tokio::spawn(async move {
            w2.write(|conn| {
                conn.execute_batch("ROLLBACK")?;
                Err::<(), _>(StoreError::Unavailable("disk I/O error".into()))
            })
            .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let w3 = w.clone();
        let after = tokio::spawn(async move { w3.write_replayable(insert(3, "after")).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        gate.send(()).unwrap();
        held.await.unwrap();
        let before = before.await.unwrap();
        assert!(matches!(before, Err(StoreError::Unavailable(_))), "{before:?}");
        assert!(ender.await.unwrap().is_err());
        let after = after.await.unwrap();
        assert!(matches!(after, Err(StoreError::Unavailable(_))), "{after:?}");
        assert_eq!(rows(&path, "SELECT x, note FROM t"), vec![]);
        // The writer goes on with the next batch.
        assert_eq!(w.write_replayable(insert(4, "next")).await.unwrap(), 4);
        assert_eq!(rows(&path, "SELECT x, note FROM t WHERE x < 1000"), vec![(4, "next".to_string())]);
    }

    /// The usual batch, replayable writes only, takes no savepoint; when one of them fails, the
    /// batch runs again with savepoints and loses only that one, its counters with it.
    #[tokio::test]
    async fn a_replayable_batch_commits_whole_or_again_write_by_write() {
        let (_dir, w, path) = writer();
        for round in [[(1, "a"), (2, "b"), (3, "c")], [(4, "d"), (2, "dup"), (5, "e")]] {
            let (gate, held) = hold(&w).await;
            let mut calls = Vec::new();
            for (x, note) in round {
                let w = w.clone();
                calls.push(tokio::spawn(async move { w.write_replayable(insert(x, note)).await }));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            gate.send(()).unwrap();
            held.await.unwrap();
            let results = futures_join(calls).await;
            let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
            if round[1].1 == "dup" {
                assert!(matches!(failed[..], [Err(StoreError::UniqueViolation(_))]), "{results:?}");
            } else {
                assert!(failed.is_empty(), "{results:?}");
            }
        }
        let kept = rows(&path, "SELECT x, note FROM t WHERE x < 1000 ORDER BY x");
        let expect: Vec<(i64, String)> =
            [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")].iter().map(|(x, n)| (*x, n.to_string())).collect();
        assert_eq!(kept, expect);
        assert_eq!(rows(&path, "SELECT x, note FROM t WHERE x >= 1000 AND note = 'dup'"), vec![]);
        let counts = rows(&path, "SELECT delivery_count, last_delivery_at || '/' || error_count FROM sources");
        assert_eq!(counts, vec![(5, "2026-01-01T00:00:05Z/0".to_string())]);
    }

    /// A writer whose syncs wait for the test: each sync takes one message from the returned
    /// sender (an `Err` one fails that sync), and the syncs done so far are counted.
    fn writer_with_gated_sync()
    -> (tempfile::TempDir, Writer, std::path::PathBuf, std::sync::mpsc::Sender<std::io::Result<()>>, Arc<std::sync::atomic::AtomicUsize>)
    {
        let (dir, _, path) = writer();
        let conn = Connection::open(&path).unwrap();
        let (gate, wait) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let wait = std::sync::Mutex::new(wait);
        let syncs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = syncs.clone();
        let sync: SyncFn = Box::new(move || {
            let r = wait.lock().unwrap().recv().unwrap_or(Ok(()));
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            r
        });
        (dir, Writer::spawn_with_sync(conn, None, sync).unwrap(), path, gate, syncs)
    }

    /// Nobody hears of a commit before it is synced; the commit itself is already in the file.
    #[tokio::test]
    async fn a_write_is_answered_only_once_its_commit_is_synced() {
        let (_dir, w, path, gate, syncs) = writer_with_gated_sync();
        let w1 = w.clone();
        let mut first = tokio::spawn(async move { w1.write_replayable(insert(1, "a")).await });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(tokio::time::timeout(std::time::Duration::from_millis(1), &mut first).await.is_err(), "answered before the sync");
        assert_eq!(rows(&path, "SELECT x, note FROM t WHERE x < 1000"), vec![(1, "a".to_string())]);
        // Committed while the first sync waits: one later sync covers them together.
        let mut later = Vec::new();
        for x in [2, 3] {
            let w = w.clone();
            later.push(tokio::spawn(async move { w.write_replayable(insert(x, "b")).await }));
        }
        while rows(&path, "SELECT x, note FROM t WHERE x < 1000").len() < 3 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        gate.send(Ok(())).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        gate.send(Ok(())).unwrap();
        assert_eq!(futures_join(later).await.into_iter().map(Result::unwrap).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(syncs.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    /// When the sync fails, its writes are refused as unavailable (the sender tries again).
    #[tokio::test]
    async fn a_failed_sync_refuses_its_writes() {
        let (_dir, w, _path, gate, _) = writer_with_gated_sync();
        gate.send(Err(std::io::Error::other("EIO"))).unwrap();
        let r = w.write_replayable(insert(1, "a")).await;
        assert!(matches!(&r, Err(StoreError::Unavailable(e)) if e.to_string().contains("EIO")), "{r:?}");
        gate.send(Ok(())).unwrap();
        assert_eq!(w.write_replayable(insert(2, "b")).await.unwrap(), 2);
    }

    /// The real sync syncs the file SQLite wrote the commit to: the WAL, or the database file of a
    /// database without one.
    #[tokio::test]
    async fn the_wal_sync_syncs_the_file_sqlite_writes() {
        use std::os::unix::fs::MetadataExt;
        let (_dir, w, path) = writer();
        assert_eq!(w.write_replayable(insert(1, "a")).await.unwrap(), 1);
        let wal = wal_path(&path);
        assert!(std::fs::metadata(&wal).unwrap().len() > 0, "{wal:?}");
        let inode = |p: &std::path::Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(sync_target(&path).unwrap().metadata().unwrap().ino(), inode(&wal));
        let mut sync = wal_sync(path.clone());
        sync().unwrap();
        sync().unwrap();
        // A database in rollback-journal mode has no WAL: its own file is synced.
        let plain = path.with_file_name("plain.db");
        Connection::open(&plain).unwrap().execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        assert_eq!(sync_target(&plain).unwrap().metadata().unwrap().ino(), inode(&plain));
    }

    async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
