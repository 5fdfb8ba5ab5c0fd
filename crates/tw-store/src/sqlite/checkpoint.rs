//! Checkpoints beside the writer: copying the WAL's frames into the database file, and syncing
//! it, is done by a thread of its own on a connection of its own, while the writer goes on
//! committing. Run by SQLite in the writer's thread (its automatic checkpoint every 1,000 frames,
//! inside the `COMMIT`), the copy and the sync held up every caller of that batch and every write
//! waiting behind it: under 64 connections the p99 was about 10 ms with them and 6-8 ms without
//! any (`scripts/intake-cost.sh cpu`, BENCHMARKS.md).
//!
//! A passive checkpoint never blocks the writer, but it cannot start the WAL over either: SQLite
//! writes from the WAL's beginning again only when the writer begins a transaction with every
//! frame already copied, and under steady load the writer has committed again by the time the
//! checkpointer is done. So the writer bounds the WAL itself: once it holds
//! [`WAL_LIMIT_FRAMES`], the writer copies what is left (the frames committed since the
//! checkpointer's last pass began) in its own thread, after its batch was handed to the sync
//! thread, and its next transaction starts the WAL over. Every write waits while it does, so it
//! does so only when little is left ([`WRITER_COPIES_AT_MOST`] frames) and the checkpointer is
//! not copying; otherwise it wakes the checkpointer and goes on committing, each pass leaving less
//! (it copies faster than the intake fills the WAL), and waits for it only at
//! [`WAL_HARD_LIMIT_FRAMES`]. Copying a whole pass's worth itself took the writer about 19 ms
//! when the pages were scattered (new alerts with random ids in a store of a million incidents,
//! each one a page of the dedupe index: BENCHMARKS.md), and every delivery of the next batch
//! waited for it.
//!
//! Durability does not change: a checkpoint syncs the WAL before it copies anything (so it never
//! puts into the database a commit that is not on disk in the WAL) and the database file after.

use rusqlite::{Connection, ffi};
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, TryLockError};

/// Frames in the WAL not yet copied that wake the checkpointer (SQLite's own default is 1,000).
/// Each pass ends with a sync of the database file, which the WAL's sync of the next commit
/// waits behind on the same disk: when the pages are scattered (new alerts with random ids in a
/// store of a million incidents) a pass of 1,000 frames put the p99 at 21-23 ms, one of 250 at
/// 13-15 (BENCHMARKS.md), for about 5% more bytes written.
pub(super) const CHECKPOINT_FRAMES: i64 = 250;
/// Frames in the WAL from which the writer has it start over, checkpointing the last frames in
/// its own thread (about 16 MiB of 4 KiB pages).
pub(super) const WAL_LIMIT_FRAMES: i64 = 4000;
/// Frames in the WAL at which the writer waits for the checkpointer and copies whatever is left
/// itself, however much (about 32 MiB): the bound of the WAL's size.
pub(super) const WAL_HARD_LIMIT_FRAMES: i64 = 2 * WAL_LIMIT_FRAMES;
/// Between the two limits, the most frames the writer copies itself: about two batches of new
/// incidents whose pages are scattered over the database, a few milliseconds.
pub(super) const WRITER_COPIES_AT_MOST: i64 = 256;

/// The writer's side of the checkpointer thread.
pub(super) struct Checkpoints {
    wake: SyncSender<()>,
    /// Held by whoever checkpoints. Between its limits the writer only tries it (the checkpointer
    /// copying, it goes on); at the hard limit it waits for the checkpointer's pass to end rather
    /// than find SQLite's checkpoint lock taken and let the WAL grow on.
    copying: Arc<Mutex<()>>,
    /// The WAL's frames when the checkpointer was last woken.
    woken_at: Cell<i64>,
    /// The frames of the WAL copied into the database, as the checkpointer's last pass left them
    /// (0 once the WAL starts over), or the writer's own checkpoint.
    backfilled: Arc<AtomicI64>,
    /// Set once the checkpointer thread is found gone: the writer then copies everything itself
    /// from [`WAL_LIMIT_FRAMES`].
    gone: Cell<bool>,
}

impl Checkpoints {
    /// Replaces the automatic checkpoints of `writer` (the write connection) by a count of the
    /// WAL's frames, and starts the checkpointer on a connection of its own to the database file
    /// `db`. The thread ends when the returned value is dropped.
    pub(super) fn start(writer: &Connection, db: &Path) -> std::io::Result<Checkpoints> {
        let conn = Connection::open(db).map_err(std::io::Error::other)?;
        // A checkpoint syncs the WAL before it copies and the database after (NORMAL and FULL
        // alike; OFF would not).
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(std::io::Error::other)?;
        count_frames(writer);
        // One wake-up pending at most: the checkpointer copies everything there is when it runs.
        let (wake, woken) = std::sync::mpsc::sync_channel(1);
        let checkpoints = Checkpoints::waking(wake);
        let (copying, backfilled) = (checkpoints.copying.clone(), checkpoints.backfilled.clone());
        std::thread::Builder::new().name("tw-store-checkpoint".into()).spawn(move || run(conn, woken, &copying, &backfilled))?;
        Ok(checkpoints)
    }

    /// The writer's side, waking the checkpointer through `wake`, before anything was copied.
    fn waking(wake: SyncSender<()>) -> Checkpoints {
        Checkpoints { wake, copying: Arc::default(), woken_at: Cell::new(0), backfilled: Arc::default(), gone: Cell::new(false) }
    }

    /// Called by the writer's thread after a commit that wrote: wakes the checkpointer each time
    /// the WAL has grown by [`CHECKPOINT_FRAMES`], and from [`WAL_LIMIT_FRAMES`] checkpoints here
    /// when little is left to copy (see the module's note).
    pub(super) fn committed(&self, writer: &Connection) {
        let frames = WAL_FRAMES.with(Cell::get);
        if frames < self.woken_at.get() {
            // The WAL started over.
            self.woken_at.set(0);
            self.backfilled.store(0, Ordering::Relaxed);
        }
        if frames >= WAL_LIMIT_FRAMES {
            let hard = frames >= WAL_HARD_LIMIT_FRAMES || self.gone.get();
            let _copying = match self.copying.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                // The checkpointer is copying: after the next commit it will have left less.
                Err(TryLockError::WouldBlock) if !hard => return,
                Err(TryLockError::WouldBlock) => self.copying.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
            };
            // A count from before the WAL started over can exceed the frames: then none is known.
            let backfilled = self.backfilled.load(Ordering::Relaxed);
            let left = if backfilled <= frames { frames - backfilled } else { frames };
            if !hard && left > WRITER_COPIES_AT_MOST && self.wake(frames) {
                return;
            }
            match copy(writer) {
                Ok((busy, log, copied)) => {
                    note_pass(&self.backfilled, busy, copied);
                    tracing::debug!(target: "store", busy, log, copied, left, "WAL at its limit: checkpointed by the writer")
                }
                Err(e) => failed(&e),
            }
        } else if frames - self.woken_at.get() >= CHECKPOINT_FRAMES {
            self.wake(frames);
        }
    }

    /// Wakes the checkpointer (a wake-up already pending does as well), at `frames`; false when
    /// the checkpointer thread is gone.
    fn wake(&self, frames: i64) -> bool {
        self.woken_at.set(frames);
        match self.wake.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => true,
            Err(TrySendError::Disconnected(())) => {
                if !self.gone.replace(true) {
                    tracing::warn!(target: "store", "the checkpoint thread stopped: the writer checkpoints alone");
                }
                false
            }
        }
    }
}

/// Notes in `backfilled` the frames a checkpoint left copied, unless it did nothing (another was
/// running) or the connection had not yet opened the WAL (-1).
fn note_pass(backfilled: &AtomicI64, busy: i64, copied: i64) {
    if busy == 0 && copied >= 0 {
        backfilled.store(copied, Ordering::Relaxed);
    }
}

thread_local! {
    /// The frames in the WAL after the last commit of a connection [`count_frames`] watches, on
    /// the thread that committed: the writer's.
    static WAL_FRAMES: Cell<i64> = const { Cell::new(0) };
}

/// Has every commit of `conn` note the WAL's frames in [`WAL_FRAMES`], instead of checkpointing
/// (SQLite's automatic checkpoint is this same hook). Asking after each commit instead (`PRAGMA
/// wal_checkpoint(NOOP)`) prepared the pragma again each time: about 10,000 instructions a
/// commit.
fn count_frames(conn: &Connection) {
    unsafe extern "C" fn note(_: *mut c_void, _: *mut ffi::sqlite3, _: *const c_char, frames: c_int) -> c_int {
        WAL_FRAMES.with(|f| f.set(frames.into()));
        ffi::SQLITE_OK
    }
    // SAFETY: the handle is `conn`'s, open while `conn` is borrowed; the hook keeps no pointer
    // (its argument is null) and only touches a thread-local.
    unsafe { ffi::sqlite3_wal_hook(conn.handle(), Some(note), std::ptr::null_mut()) };
}

/// A passive checkpoint of the main database of `conn` (every frame no reader still needs is
/// copied, without waiting for anyone): whether another checkpoint was running (1: nothing was
/// done), the frames in the WAL, and the frames of it copied into the database.
fn copy(conn: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    let (mut log, mut copied) = (0, 0);
    // SAFETY: the handle is `conn`'s, open while `conn` is borrowed, and used by this thread only
    // meanwhile; the name is a NUL-terminated literal; the two out-pointers are live locals.
    let rc =
        unsafe { ffi::sqlite3_wal_checkpoint_v2(conn.handle(), c"main".as_ptr(), ffi::SQLITE_CHECKPOINT_PASSIVE, &mut log, &mut copied) };
    // Extended result codes are on (rusqlite): any kind of busy is busy.
    match rc & 0xff {
        ffi::SQLITE_OK => Ok((0, log.into(), copied.into())),
        ffi::SQLITE_BUSY => Ok((1, log.into(), copied.into())),
        _ => Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None)),
    }
}

/// Logs a failed checkpoint, at most once a second as a warning (with a full disk, every commit
/// would fail it).
fn failed(e: &rusqlite::Error) {
    crate::warn_once_a_second!(&FAILURE_LOGGED, target: "store", error = %e, "checkpointing the WAL failed");
}

/// When a failed checkpoint was last logged (unix seconds).
static FAILURE_LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The checkpointer thread: a passive checkpoint each time the writer wakes it; the frames
/// copied by the end of it go to `backfilled`.
fn run(conn: Connection, woken: Receiver<()>, copying: &Mutex<()>, backfilled: &AtomicI64) {
    while woken.recv().is_ok() {
        let _copying = copying.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match copy(&conn) {
            Ok((busy, log, copied)) => {
                note_pass(backfilled, busy, copied);
                tracing::trace!(target: "store", busy, log, copied, "checkpointed")
            }
            Err(e) => failed(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::writer::Writer;

    /// A writer on a fresh WAL file with a table of blobs (a row of 6,000 bytes: 1.5 pages).
    fn writer() -> (tempfile::TempDir, Writer, std::path::PathBuf) {
        crate::sqlite::writer::tests::writer_with("CREATE TABLE t (b BLOB NOT NULL)")
    }

    /// Commits `rows` rows of 6,000 bytes in one write.
    async fn fill(w: &Writer, rows: usize) {
        w.write(move |conn| {
            let mut stmt = conn.prepare_cached("INSERT INTO t (b) VALUES (zeroblob(6000))")?;
            for _ in 0..rows {
                stmt.execute([])?;
            }
            Ok(())
        })
        .await
        .unwrap();
    }

    /// (frames in the WAL, frames copied), as `conn` sees them.
    fn wal_of(conn: &Connection) -> (i64, i64) {
        conn.query_row("PRAGMA wal_checkpoint(NOOP)", [], |r| Ok((r.get(1)?, r.get(2)?))).unwrap()
    }

    /// [`wal_of`], read on a connection of the test's own.
    fn wal(path: &Path) -> (i64, i64) {
        wal_of(&Connection::open(path).unwrap())
    }

    /// The rows of `t`, read on a connection of the test's own.
    fn rows_in(path: &Path) -> i64 {
        Connection::open(path).unwrap().query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap()
    }

    /// Commits `rows` rows of 6,000 bytes on `conn` itself (not through a writer).
    fn add_rows(conn: &Connection, rows: i64) {
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) INSERT INTO t (b) SELECT zeroblob(6000) FROM n",
            [rows],
        )
        .unwrap();
    }

    /// Past CHECKPOINT_FRAMES (and below the writer's limit, where only the checkpointer copies),
    /// the frames reach the database file without the writer's doing.
    #[tokio::test]
    async fn the_checkpointer_copies_the_wal_once_it_has_enough_frames() {
        let (_dir, w, path) = writer();
        fill(&w, 100).await;
        assert_eq!(wal(&path).1, 0, "nothing copied below {CHECKPOINT_FRAMES} frames");
        // 1.5 frames a row: past CHECKPOINT_FRAMES, far below WAL_LIMIT_FRAMES.
        fill(&w, 600).await;
        let (log, _) = wal(&path);
        assert!((CHECKPOINT_FRAMES..WAL_LIMIT_FRAMES).contains(&log), "{log} frames");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while wal(&path).1 == 0 {
            assert!(std::time::Instant::now() < deadline, "the checkpointer never copied the WAL");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(rows_in(&path), 700);
    }

    /// Under writes that never pause, the WAL starts over instead of growing: the file never
    /// holds more than the writer's hard limit of frames and a batch (four writers of 50 rows
    /// each, about 300 frames).
    #[tokio::test]
    async fn the_wal_stays_bounded_under_steady_writes() {
        let (_dir, w, path) = writer();
        // About three limits' worth of frames (a row takes 1.5 frames).
        let writes = 3 * WAL_LIMIT_FRAMES / 75;
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                tokio::spawn(async move {
                    for _ in 0..writes / 4 {
                        fill(&w, 50).await;
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let frame = 24 + 4096;
        let size = std::fs::metadata(crate::sqlite::writer::wal_path(&path)).unwrap().len() as i64;
        let batch = 4 * 50 * 2;
        assert!(size <= 32 + (WAL_HARD_LIMIT_FRAMES + batch) * frame, "the WAL grew to {size} bytes");
        assert_eq!(rows_in(&path), writes / 4 * 4 * 50);
    }

    /// `start` replaces SQLite's automatic checkpoint on the writer's connection by the frame
    /// count: past 1,000 frames committed on it (and no `committed` call to wake anyone), nothing
    /// is copied, and the count is the WAL's.
    #[test]
    fn start_turns_the_writers_automatic_checkpoint_into_a_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (b BLOB NOT NULL)").unwrap();
        let _c = Checkpoints::start(&conn, &path).unwrap();
        for _ in 0..10 {
            add_rows(&conn, 100);
        }
        let (log, copied) = wal_of(&conn);
        assert!(log > CHECKPOINT_FRAMES, "{log} frames");
        assert_eq!(copied, 0, "SQLite's automatic checkpoint still runs on the writer's connection");
        assert_eq!(WAL_FRAMES.with(Cell::get), log);
    }

    /// What the writer does after a commit, by the WAL's size and what the checkpointer has
    /// copied: nothing, wake the checkpointer, or checkpoint itself (when little is left, or at
    /// the hard limit whatever is left).
    #[test]
    fn the_writer_checkpoints_itself_only_when_little_is_left_or_at_its_hard_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (b BLOB NOT NULL)").unwrap();
        count_frames(&conn);
        // A checkpointer that never runs: the test reads its wake-ups and makes its passes.
        let (wake, woken) = std::sync::mpsc::sync_channel(1);
        let c = Checkpoints::waking(wake);
        let add = |rows: i64| add_rows(&conn, rows);
        let wal = || wal_of(&conn);
        add(10);
        c.committed(&conn);
        assert!(woken.try_recv().is_err(), "woken below {CHECKPOINT_FRAMES} frames");
        add(CHECKPOINT_FRAMES * 2 / 3);
        c.committed(&conn);
        assert!(woken.try_recv().is_ok(), "not woken past {CHECKPOINT_FRAMES} frames");
        assert_eq!(wal().1, 0, "the writer copied frames below its limit");
        // Woken once per CHECKPOINT_FRAMES, not at every commit past them.
        add(10);
        c.committed(&conn);
        assert!(woken.try_recv().is_err(), "woken again 10 rows later");
        // At the limit with every frame left to copy: the checkpointer is woken, the writer
        // copies nothing.
        add(WAL_LIMIT_FRAMES * 2 / 3);
        c.committed(&conn);
        let (log, copied) = wal();
        assert!((WAL_LIMIT_FRAMES..WAL_HARD_LIMIT_FRAMES).contains(&log), "{log} frames");
        assert_eq!(copied, 0, "the writer copied {log} frames itself");
        assert!(woken.try_recv().is_ok(), "the checkpointer was not woken at the limit");
        // While the checkpointer copies, the writer neither waits for it (this would deadlock)
        // nor copies.
        {
            let _copying = c.copying.lock().unwrap();
            add(10);
            c.committed(&conn);
            assert_eq!(wal().1, 0);
        }
        // The checkpointer's pass, with a commit during it (the pass copies what was committed
        // when it began: a reader's snapshot stands for that here): little is left, the writer
        // copies it, and its next transaction starts the WAL over.
        let reader = Connection::open(&path).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        reader.query_row("SELECT COUNT(*) FROM t", [], |_| Ok(())).unwrap();
        add(10);
        let checkpointer = Connection::open(&path).unwrap();
        // (A connection that has read nothing yet does not know the database is in WAL mode.)
        checkpointer.query_row("SELECT COUNT(*) FROM t", [], |_| Ok(())).unwrap();
        let (_, log_at_pass, passed) = copy(&checkpointer).unwrap();
        reader.execute_batch("COMMIT").unwrap();
        assert!(passed > 0 && passed < log_at_pass, "the pass copied {passed} of {log_at_pass} frames");
        c.backfilled.store(passed, Ordering::Relaxed);
        c.committed(&conn);
        let (log, copied) = wal();
        assert!(log - passed <= WRITER_COPIES_AT_MOST, "{} frames after the pass", log - passed);
        assert_eq!(copied, log, "the writer did not copy the last frames");
        add(1);
        assert!(wal().0 < 10);
        c.committed(&conn);
        assert_eq!(c.backfilled.load(Ordering::Relaxed), 0, "the last pass's count outlived the WAL");
        // At the hard limit the writer copies everything itself, however much is left.
        add(WAL_HARD_LIMIT_FRAMES * 2 / 3 + 10);
        c.committed(&conn);
        let (log, copied) = wal();
        assert!(log >= WAL_HARD_LIMIT_FRAMES, "{log} frames");
        assert_eq!(copied, log, "the writer did not checkpoint at its hard limit");
        // The next transaction starts the WAL over, and counts from there.
        add(1);
        assert!(wal().0 < 10);
        c.committed(&conn);
        while woken.try_recv().is_ok() {}
        add(CHECKPOINT_FRAMES * 2 / 3);
        c.committed(&conn);
        assert!(woken.try_recv().is_ok(), "not woken past {CHECKPOINT_FRAMES} frames of the new WAL");
    }

    /// The checkpointer thread's pass leaves its count of copied frames where the writer reads it.
    #[tokio::test]
    async fn the_checkpointers_pass_tells_the_writer_what_it_copied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (b BLOB NOT NULL)").unwrap();
        let c = Checkpoints::start(&conn, &path).unwrap();
        add_rows(&conn, CHECKPOINT_FRAMES);
        c.committed(&conn);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while c.backfilled.load(Ordering::Relaxed) == 0 {
            assert!(std::time::Instant::now() < deadline, "the checkpointer never reported a pass");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let (log, copied) = wal_of(&conn);
        assert!(copied > CHECKPOINT_FRAMES, "{copied} of {log} frames copied");
        assert_eq!(c.backfilled.load(Ordering::Relaxed), copied);
    }

    /// With the checkpointer thread gone, the writer copies everything itself from its limit, as
    /// if at the hard limit, instead of waking no one up to twice the frames.
    #[test]
    fn without_its_checkpointer_the_writer_copies_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("g.db")).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (b BLOB NOT NULL)").unwrap();
        count_frames(&conn);
        let (wake, woken) = std::sync::mpsc::sync_channel(1);
        drop(woken);
        let c = Checkpoints::waking(wake);
        add_rows(&conn, WAL_LIMIT_FRAMES * 2 / 3 + 10);
        c.committed(&conn);
        let (log, copied) = wal_of(&conn);
        assert!((WAL_LIMIT_FRAMES..WAL_HARD_LIMIT_FRAMES).contains(&log), "{log} frames");
        assert_eq!(copied, log, "the writer left {log} frames to a checkpointer that is gone");
        assert!(c.gone.get());
    }
}
