//! The writer's WAL frames handed to the kernel one commit at a time, not two writes per frame.
//!
//! SQLite appends a commit to the WAL as one `pwrite` of each frame's 24-byte header and another
//! of its page: about 120 system calls for the writer's batch of ~45 deliveries (60 frames), each
//! of them also updating the file's times and touching two pages of the page cache, since frames
//! (4,120 bytes) do not line up with pages. `perf` put those writes at about 10% of the server's
//! CPU under load. This VFS, registered once as [`VFS_NAME`] and used by the writer's connection
//! only, is SQLite's own `unix` VFS with one change: the WAL file's writes that append to the one
//! before are gathered in memory and written as one, when the commit is complete.
//!
//! **What a commit finds on disk does not change.** The gathered bytes are written before SQLite
//! learns that the write of the commit's last frame is done, and so before it publishes the commit
//! to other connections (the wal-index, updated after its frames are written) and before the
//! writer's sync thread makes it durable (it syncs after the commit returns). Precisely:
//! - the commit's last frame is known by its header (bytes 4-7: the database's size in pages,
//!   not 0 only in a commit frame, as the WAL format documents). Appended behind earlier frames,
//!   that header is gathered with them and the page after it ends the gathering: one write.
//!   A commit header that does not follow the gathered bytes (a commit of a single frame, or
//!   SQLite rewriting the checksums of frames already written) is written at once, and so is the
//!   page after it;
//! - any other call on the WAL file (a read, a sync, its size, a truncation, a file control, the
//!   close) and any write that does not append to what is gathered writes what is gathered
//!   first, so SQLite never reads back a frame it wrote, and writes land in their order;
//! - a write that is neither a frame header nor a whole page (SQLite splits writes at a sync
//!   point only with `synchronous=FULL` on a device without power-safe overwrite) is written at
//!   once, after what is gathered.
//!
//! If writing what is gathered fails, the call that needed it fails with SQLite's error and the
//! bytes stay gathered, so nothing is dropped silently: a commit whose frames could not be written
//! fails as it would have on its own `pwrite`. The database file, the journal and the shared memory
//! are the `unix` VFS's own files, untouched.
//!
//! Checked by `a_commit_is_whole_on_disk_when_it_returns` below: after every commit of many
//! shapes (one frame, spills, pages written twice in one transaction, the WAL started over), a
//! copy of the files as they are on disk opens with every committed row.

use rusqlite::ffi;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

/// The name the writer's connection opens its database with.
pub(super) const VFS_NAME: &CStr = c"tw-wal-writes";

/// Gathered bytes written even mid-transaction past this size (a large transaction's spills).
const GATHER_LIMIT: usize = 1 << 20;
/// The most the unix VFS writes in one call: it masks a write's length to 17 bits (its
/// `seekAndWriteFd`; SQLite's own writes are at most a 64 KiB page), so what is gathered goes
/// to it in pieces of this size.
const UNIX_WRITE_MAX: usize = 0x1ffff;
/// A WAL frame's header, and the WAL file's header.
const FRAME_HEADER: usize = 24;
const WAL_HEADER: i64 = 32;

/// Registers the VFS (once; later calls return the first result).
pub(super) fn register() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: `sqlite3_vfs_find` returns a pointer to a VFS SQLite keeps for the life of
            // the process; ours copies it and is leaked, so it lives as long.
            unsafe {
                let unix = ffi::sqlite3_vfs_find(std::ptr::null());
                if unix.is_null() {
                    return Err("SQLite has no default VFS".into());
                }
                let mut vfs = *unix;
                vfs.pNext = std::ptr::null_mut();
                vfs.zName = VFS_NAME.as_ptr();
                vfs.szOsFile = c_int::try_from(WalFile::real_offset()).map_err(|e| e.to_string())? + (*unix).szOsFile;
                vfs.xOpen = Some(open);
                // Every other method is the unix VFS's own; of them only `xOpen` reads the VFS it
                // is given (its `pAppData`, copied as is), and ours passes the unix VFS itself.
                vfs.pAppData = unix.cast();
                let vfs = Box::into_raw(Box::new(vfs));
                match ffi::sqlite3_vfs_register(vfs, 0) {
                    ffi::SQLITE_OK => Ok(()),
                    rc => Err(format!("cannot register the {} VFS: SQLite error {rc}", VFS_NAME.to_string_lossy())),
                }
            }
        })
        .clone()
}

/// The unix VFS, kept in our VFS's `pAppData`.
unsafe fn unix(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    unsafe { (*vfs).pAppData.cast() }
}

/// A WAL file opened through this VFS: the unix VFS's file object follows this struct in the
/// memory SQLite allocated (`szOsFile` bytes).
#[repr(C)]
struct WalFile {
    /// Must come first: SQLite reads `pMethods` from it.
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    gathered: Vec<u8>,
    /// The file offset of `gathered[0]`.
    at: i64,
    /// The last write was a commit frame's header: its page ends the gathering.
    commit_page_next: bool,
    /// That header was written at once, so its page is too.
    commit_written: bool,
}

impl WalFile {
    fn real_offset() -> usize {
        std::mem::size_of::<WalFile>().next_multiple_of(16)
    }

    /// Writes what is gathered, in as few calls of the unix VFS as it takes. On an error the
    /// bytes stay gathered (the ones written too: writing them again is harmless).
    unsafe fn flush(&mut self) -> c_int {
        let mut at = self.at;
        for piece in self.gathered.chunks(UNIX_WRITE_MAX) {
            // At most UNIX_WRITE_MAX, which fits.
            let rc = unsafe { real_write(self.real, piece.as_ptr().cast(), piece.len() as c_int, at) };
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            at += piece.len() as i64;
        }
        self.gathered.clear();
        ffi::SQLITE_OK
    }

    unsafe fn write(&mut self, data: &[u8], offset: i64) -> c_int {
        let Ok(len) = c_int::try_from(data.len()) else { return ffi::SQLITE_IOERR_WRITE };
        let appends = !self.gathered.is_empty() && offset == self.at + self.gathered.len() as i64;
        if !appends {
            let rc = unsafe { self.flush() };
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        let header = data.len() == FRAME_HEADER && offset >= WAL_HEADER;
        let commit_header = header && data[4..8] != [0, 0, 0, 0];
        let page = data.len() >= 512 && data.len() <= 65536 && data.len().is_power_of_two();
        let commit_page = std::mem::take(&mut self.commit_page_next) && page;
        let commit_written = std::mem::take(&mut self.commit_written);
        if (commit_header && !appends)
            || (commit_page && commit_written)
            || !(header || page || (offset == 0 && data.len() == WAL_HEADER as usize))
        {
            // Written at once (see the module's doc); nothing is gathered at this point.
            self.commit_page_next = commit_header;
            self.commit_written = commit_header;
            return unsafe { real_write(self.real, data.as_ptr().cast(), len, offset) };
        }
        if self.gathered.is_empty() {
            self.at = offset;
        }
        self.gathered.extend_from_slice(data);
        self.commit_page_next = commit_header;
        if commit_page || self.gathered.len() >= GATHER_LIMIT {
            return unsafe { self.flush() };
        }
        ffi::SQLITE_OK
    }
}

unsafe fn real_write(real: *mut ffi::sqlite3_file, data: *const c_void, len: c_int, offset: i64) -> c_int {
    #[cfg(test)]
    tests::WRITES.with(|w| w.set(w.get() + 1));
    unsafe {
        match (*(*real).pMethods).xWrite {
            Some(write) => write(real, data, len, offset),
            None => ffi::SQLITE_IOERR_WRITE,
        }
    }
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    unsafe {
        let unix = unix(vfs);
        let Some(unix_open) = (*unix).xOpen else { return ffi::SQLITE_CANTOPEN };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            // Any other file is the unix VFS's own object, in the same memory.
            return unix_open(unix, name, file, flags, out_flags);
        }
        let real = file.cast::<u8>().add(WalFile::real_offset()).cast::<ffi::sqlite3_file>();
        let rc = unix_open(unix, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // SQLite closes nothing whose `pMethods` is null.
            (*file).pMethods = std::ptr::null();
            return rc;
        }
        file.cast::<WalFile>().write(WalFile {
            base: ffi::sqlite3_file { pMethods: &WAL_METHODS },
            real,
            gathered: Vec::new(),
            at: 0,
            commit_page_next: false,
            commit_written: false,
        });
        ffi::SQLITE_OK
    }
}

unsafe fn wal<'a>(file: *mut ffi::sqlite3_file) -> &'a mut WalFile {
    unsafe { &mut *file.cast::<WalFile>() }
}

/// Calls the unix VFS's method `$method` on the real file; with `flush`, after writing what is
/// gathered.
macro_rules! delegate {
    (flush $file:ident, $method:ident ( $($arg:expr),* ), $missing:expr) => {{
        let rc = unsafe { wal($file).flush() };
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        delegate!($file, $method($($arg),*), $missing)
    }};
    ($file:ident, $method:ident ( $($arg:expr),* ), $missing:expr) => {{
        let real = unsafe { wal($file).real };
        match unsafe { (*(*real).pMethods).$method } {
            Some(m) => unsafe { m(real $(, $arg)*) },
            None => $missing,
        }
    }};
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let flushed = unsafe { wal(file).flush() };
    let closed = delegate!(file, xClose(), ffi::SQLITE_OK);
    // SAFETY: written by `open`, dropped once: SQLite calls `xClose` once per opened file.
    unsafe { std::ptr::drop_in_place(file.cast::<WalFile>()) };
    if flushed != ffi::SQLITE_OK { flushed } else { closed }
}

unsafe extern "C" fn read(file: *mut ffi::sqlite3_file, buf: *mut c_void, amount: c_int, offset: i64) -> c_int {
    delegate!(flush file, xRead(buf, amount, offset), ffi::SQLITE_IOERR_READ)
}

unsafe extern "C" fn write(file: *mut ffi::sqlite3_file, buf: *const c_void, amount: c_int, offset: i64) -> c_int {
    let Ok(len) = usize::try_from(amount) else { return ffi::SQLITE_IOERR_WRITE };
    // SAFETY: SQLite passes `amount` readable bytes at `buf`.
    let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    unsafe { wal(file).write(data, offset) }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    delegate!(flush file, xTruncate(size), ffi::SQLITE_IOERR_TRUNCATE)
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    delegate!(flush file, xSync(flags), ffi::SQLITE_IOERR_FSYNC)
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    delegate!(flush file, xFileSize(size), ffi::SQLITE_IOERR_FSTAT)
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    delegate!(file, xLock(level), ffi::SQLITE_OK)
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    delegate!(file, xUnlock(level), ffi::SQLITE_OK)
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    delegate!(file, xCheckReservedLock(out), ffi::SQLITE_OK)
}

unsafe extern "C" fn file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    delegate!(flush file, xFileControl(op, arg), ffi::SQLITE_NOTFOUND)
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    delegate!(file, xSectorSize(), 4096)
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    delegate!(file, xDeviceCharacteristics(), 0)
}

unsafe extern "C" fn shm_map(file: *mut ffi::sqlite3_file, page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int {
    delegate!(file, xShmMap(page, size, extend, out), ffi::SQLITE_IOERR_SHMMAP)
}

unsafe extern "C" fn shm_lock(file: *mut ffi::sqlite3_file, offset: c_int, n: c_int, flags: c_int) -> c_int {
    delegate!(file, xShmLock(offset, n, flags), ffi::SQLITE_IOERR_SHMLOCK)
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    delegate!(file, xShmBarrier(), ())
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    delegate!(file, xShmUnmap(delete), ffi::SQLITE_OK)
}

unsafe extern "C" fn fetch(file: *mut ffi::sqlite3_file, offset: i64, amount: c_int, out: *mut *mut c_void) -> c_int {
    // SQLite maps only the database file; a WAL file answers "not mapped", as the unix VFS would
    // for a file it did not map, after what is gathered is written.
    delegate!(flush file, xFetch(offset, amount, out), {
        unsafe { *out = std::ptr::null_mut() };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn unfetch(file: *mut ffi::sqlite3_file, offset: i64, page: *mut c_void) -> c_int {
    delegate!(file, xUnfetch(offset, page), ffi::SQLITE_OK)
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags, params};
    use std::cell::Cell;
    use std::path::Path;

    thread_local! {
        /// The unix VFS's writes made from this thread through ours.
        pub(super) static WRITES: Cell<usize> = const { Cell::new(0) };
    }

    fn writes() -> usize {
        WRITES.with(Cell::get)
    }

    fn open(path: &Path) -> Connection {
        register().unwrap();
        let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), VFS_NAME).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT UNIQUE, v BLOB); CREATE TABLE one (id INTEGER PRIMARY KEY, n INTEGER); INSERT INTO one VALUES (1, 0);",
        )
        .unwrap();
        conn
    }

    /// What a crash right now would leave: the database and its WAL as they are on disk (the
    /// page cache, which `fdatasync` would write), opened by the plain unix VFS elsewhere.
    fn on_disk(path: &Path, scratch: &Path) -> (i64, i64, i64) {
        let copy = scratch.join("copy.db");
        let _ = std::fs::remove_file(scratch.join("copy.db-wal"));
        let _ = std::fs::remove_file(scratch.join("copy.db-shm"));
        std::fs::copy(path, &copy).unwrap();
        std::fs::copy(super::super::writer::wal_path(path), scratch.join("copy.db-wal")).unwrap();
        let c = Connection::open_with_flags(&copy, OpenFlags::SQLITE_OPEN_READ_WRITE).unwrap();
        let rows: (i64, i64) =
            c.query_row("SELECT COUNT(*), COALESCE(SUM(length(v)), 0) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        let n: i64 = c.query_row("SELECT n FROM one", [], |r| r.get(0)).unwrap();
        let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok");
        (rows.0, rows.1, n)
    }

    #[test]
    fn a_commit_is_whole_on_disk_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let mut conn = open(&path);
        // A small page cache, so that large transactions spill frames before their commit and
        // write some pages twice (SQLite then rewrites the checksums of frames already written).
        conn.pragma_update(None, "cache_size", 8).unwrap();
        // A second connection, as the server's readers and checkpointer: it must see each commit.
        let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let (mut rows, mut bytes, mut n) = (0i64, 0i64, 0i64);
        let mut key = 0;
        for round in 0..40 {
            let tx = conn.transaction().unwrap();
            let shape = round % 5;
            match shape {
                // One frame: a row updated in place.
                0 => {
                    tx.execute("UPDATE one SET n = n + 1", []).unwrap();
                    n += 1;
                }
                // A batch of small rows, as the writer's.
                1 => {
                    for _ in 0..45 {
                        key += 1;
                        tx.execute("INSERT INTO t (k, v) VALUES (?1, zeroblob(700))", params![format!("k{key}")]).unwrap();
                        rows += 1;
                        bytes += 700;
                    }
                }
                // Far more than the cache holds, spilled, and rewritten in the same transaction.
                2 | 3 => {
                    for _ in 0..300 {
                        key += 1;
                        tx.execute("INSERT INTO t (k, v) VALUES (?1, randomblob(900))", params![format!("k{key}")]).unwrap();
                        rows += 1;
                        bytes += 900;
                    }
                    let grown: i64 = tx.query_row("SELECT COUNT(*) FROM t WHERE id % 7 = 0", [], |r| r.get(0)).unwrap();
                    tx.execute("UPDATE t SET v = randomblob(length(v) + 1) WHERE id % 7 = 0", []).unwrap();
                    bytes += grown;
                    tx.execute("UPDATE one SET n = n + 1", []).unwrap();
                    n += 1;
                }
                // A deletion, then the WAL started over.
                _ => {
                    let (gone, gone_bytes): (i64, i64) = tx
                        .query_row("SELECT COUNT(*), COALESCE(SUM(length(v)), 0) FROM t WHERE id % 11 = 0", [], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                        .unwrap();
                    tx.execute("DELETE FROM t WHERE id % 11 = 0", []).unwrap();
                    rows -= gone;
                    bytes -= gone_bytes;
                }
            }
            tx.commit().unwrap();
            assert_eq!(on_disk(&path, scratch.path()), (rows, bytes, n), "round {round} (shape {shape})");
            let seen: (i64, i64) =
                reader.query_row("SELECT (SELECT COUNT(*) FROM t), (SELECT n FROM one)", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
            assert_eq!(seen, (rows, n), "round {round}");
            if shape == 4 {
                conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())).unwrap();
            }
        }
        drop(reader);
        drop(conn);
        let c = Connection::open(&path).unwrap();
        assert_eq!(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0)).unwrap(), rows);
    }

    #[test]
    fn a_batch_of_frames_is_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = open(&path);
        let frames = |c: &Connection| -> i64 { c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1)).unwrap() };
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        let before_frames = frames(&conn);
        let before = writes();
        conn.execute_batch("BEGIN").unwrap();
        for i in 0..200 {
            conn.execute("INSERT INTO t (k, v) VALUES (?1, zeroblob(700))", params![format!("batch{i}")]).unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        let written = writes() - before;
        let new_frames = frames(&conn) - before_frames;
        // Two writes per frame without this VFS; here one for the whole commit, plus the WAL's
        // header (the WAL started over) and its sync's flush.
        assert!(new_frames >= 30, "{new_frames} frames");
        assert!(written <= 3, "{written} writes for {new_frames} frames");
    }
}
