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
//! - a write is read by its place in the file, which the WAL format fixes: the WAL's 32-byte
//!   header at offset 0 (which gives the page size), then frames of a 24-byte header and a page.
//!   Only those three kinds of write are gathered, each where the format puts it; anything else
//!   (a write that SQLite splits at a sync point, with `synchronous=FULL` on a device without
//!   power-safe overwrite; any write while the page size is unknown) is written at once, after
//!   what is gathered;
//! - a commit's last frame is known by its header (bytes 4-7: the database's size in pages,
//!   not 0 only in a commit frame). Appended behind earlier frames, that header is gathered with
//!   them and the page after it ends the gathering: one write. A commit header that does not
//!   follow the gathered bytes (a commit of a single frame, or SQLite rewriting the checksums of
//!   frames already written) is written at once, and so is its page;
//! - any other call on the WAL file (a read, a sync, its size, a truncation, a file control, the
//!   close) and any write that does not append to what is gathered writes what is gathered
//!   first, so SQLite never reads back a frame it wrote, and writes land in their order.
//!
//! If writing what is gathered fails during a write, the gathered bytes are dropped and SQLite
//! gets the error: every WAL write is part of writing frames, whose failure rolls the transaction
//! back, so nothing the transaction wrote may reach the file later (a rolled-back commit must not
//! reappear after a crash). If it fails during another call (a read, say), the bytes stay
//! gathered and that call fails: a statement's error there can leave the transaction going, and
//! its frames are still needed. The database file, the journal and the shared memory are the
//! `unix` VFS's own files, untouched. This handle is the only one that writes WAL frames (the
//! writer's connection), which is what makes writing gathered bytes late (at a read or the close)
//! safe: they always lie past the last commit.
//!
//! Checked by the tests below: after every commit of many shapes (one frame, spills, pages written
//! twice in one transaction, rollbacks, the WAL started over, and the same with the padding of
//! `synchronous=FULL` without power-safe overwrite), a copy of the files as they are on disk opens
//! with every committed row.

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
const WAL_HEADER: usize = 32;

/// Registers the VFS (once; later calls return the first result).
pub(super) fn register() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: `sqlite3_vfs_find` returns a pointer to a VFS SQLite keeps for the life of
            // the process; ours copies it and is leaked, so it lives as long.
            unsafe {
                let unix = ffi::sqlite3_vfs_find(c"unix".as_ptr());
                if unix.is_null() {
                    return Err("SQLite has no unix VFS".into());
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
    /// The database's page size, from the WAL's header (written, or read back when needed).
    page: Option<usize>,
    /// Where the page of a gathered commit header goes: that page ends the gathering.
    commit_page_at: Option<i64>,
    /// Where the page of a commit header written at once goes: it is written at once too.
    direct_page_at: Option<i64>,
    /// The end of the furthest write since the WAL's header was last written (for the tests'
    /// counts of rewritten frame headers).
    #[cfg(test)]
    end: i64,
}

/// What a write to the WAL is, by its place and length.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Piece {
    WalHeader,
    FrameHeader { commit: bool },
    Page,
    Other,
}

impl WalFile {
    /// Nothing gathered yet, in front of the unix VFS's `real` file.
    fn new(real: *mut ffi::sqlite3_file) -> WalFile {
        WalFile {
            base: ffi::sqlite3_file { pMethods: &WAL_METHODS },
            real,
            gathered: Vec::new(),
            at: 0,
            page: None,
            commit_page_at: None,
            direct_page_at: None,
            #[cfg(test)]
            end: 0,
        }
    }

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

    /// [`WalFile::flush`] for a write: on an error what is gathered is dropped (see the module's
    /// doc), and so is what was expected of the next write.
    unsafe fn flush_for_write(&mut self) -> c_int {
        let rc = unsafe { self.flush() };
        if rc != ffi::SQLITE_OK {
            self.gathered.clear();
            self.commit_page_at = None;
            self.direct_page_at = None;
        }
        rc
    }

    /// The page size in the WAL's header on disk, if it has a valid one.
    unsafe fn read_page_size(&mut self) -> Option<usize> {
        let mut header = [0u8; WAL_HEADER];
        let read = unsafe { (*(*self.real).pMethods).xRead? };
        let rc = unsafe { read(self.real, header.as_mut_ptr().cast(), WAL_HEADER as c_int, 0) };
        (rc == ffi::SQLITE_OK && matches!(header[..4], [0x37, 0x7f, 0x06, 0x82 | 0x83])).then(|| page_size(&header)).flatten()
    }

    unsafe fn classify(&mut self, data: &[u8], offset: i64) -> Piece {
        if offset == 0 && data.len() == WAL_HEADER {
            return Piece::WalHeader;
        }
        if self.page.is_none() && offset > 0 && self.gathered.is_empty() {
            // A WAL written before this handle (recovered at open) is appended to without its
            // header being written again.
            self.page = unsafe { self.read_page_size() };
        }
        let (Some(page), Ok(offset)) = (self.page, usize::try_from(offset)) else { return Piece::Other };
        let Some(into) = offset.checked_sub(WAL_HEADER).map(|o| o % (page + FRAME_HEADER)) else { return Piece::Other };
        match (data.len(), into) {
            (FRAME_HEADER, 0) => Piece::FrameHeader { commit: data[4..8] != [0, 0, 0, 0] },
            (len, FRAME_HEADER) if len == page => Piece::Page,
            _ => Piece::Other,
        }
    }

    unsafe fn write(&mut self, data: &[u8], offset: i64) -> c_int {
        let Ok(len) = c_int::try_from(data.len()) else { return ffi::SQLITE_IOERR_WRITE };
        let piece = unsafe { self.classify(data, offset) };
        let appends = !self.gathered.is_empty() && offset == self.at + self.gathered.len() as i64;
        let commit_page = std::mem::take(&mut self.commit_page_at) == Some(offset) && piece == Piece::Page;
        let direct_page = std::mem::take(&mut self.direct_page_at) == Some(offset) && piece == Piece::Page;
        #[cfg(test)]
        {
            tests::count(piece, appends || direct_page, offset + data.len() as i64 <= self.end);
            self.end = if piece == Piece::WalHeader { WAL_HEADER as i64 } else { self.end.max(offset + data.len() as i64) };
        }
        let direct_commit = piece == (Piece::FrameHeader { commit: true }) && !appends;
        let mut direct = piece == Piece::Other || direct_page || direct_commit;
        // (Out of memory for the buffer: written at once, in order.)
        direct = direct || self.gathered.try_reserve(data.len()).is_err();
        if !appends || direct {
            let rc = unsafe { self.flush_for_write() };
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        if direct {
            // Written at once (see the module's doc); nothing is gathered at this point.
            if direct_commit {
                self.direct_page_at = Some(offset + FRAME_HEADER as i64);
            }
            return unsafe { real_write(self.real, data.as_ptr().cast(), len, offset) };
        }
        if self.gathered.is_empty() {
            self.at = offset;
        }
        self.gathered.extend_from_slice(data);
        match piece {
            Piece::WalHeader => self.page = page_size(data),
            Piece::FrameHeader { commit: true } => self.commit_page_at = Some(offset + FRAME_HEADER as i64),
            _ => {}
        }
        if commit_page || self.gathered.len() >= GATHER_LIMIT {
            return unsafe { self.flush_for_write() };
        }
        ffi::SQLITE_OK
    }
}

/// The page size in a WAL header (bytes 8-11, big-endian), if it is one SQLite can have.
fn page_size(header: &[u8]) -> Option<usize> {
    let size = u32::from_be_bytes(header.get(8..12)?.try_into().ok()?) as usize;
    (size.is_power_of_two() && (512..=65536).contains(&size)).then_some(size)
}

unsafe fn real_write(real: *mut ffi::sqlite3_file, data: *const c_void, len: c_int, offset: i64) -> c_int {
    #[cfg(test)]
    tests::count_write();
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
        file.cast::<WalFile>().write(WalFile::new(real));
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

    /// What this thread's writes through the VFS were: the unix VFS's writes, then kinds of
    /// writes SQLite made.
    #[derive(Clone, Copy, Default, Debug)]
    pub(super) struct Counts {
        writes: usize,
        /// Frame headers written over ones already written (SQLite rewriting checksums).
        rewritten_headers: usize,
        /// Pages written where they did not follow their header (a page written twice in one
        /// transaction, over its first frame).
        rewritten_pages: usize,
        /// Writes that are neither header nor page where the format puts them (split writes).
        others: usize,
    }

    thread_local! {
        static COUNTS: Cell<Counts> = const { Cell::new(Counts { writes: 0, rewritten_headers: 0, rewritten_pages: 0, others: 0 }) };
    }

    fn update(f: impl FnOnce(&mut Counts)) {
        COUNTS.with(|c| {
            let mut n = c.get();
            f(&mut n);
            c.set(n);
        });
    }

    pub(super) fn count_write() {
        update(|c| c.writes += 1);
    }

    pub(super) fn count(piece: Piece, follows_header: bool, below_end: bool) {
        update(|c| match piece {
            Piece::Page if !follows_header => c.rewritten_pages += 1,
            Piece::FrameHeader { .. } if below_end => c.rewritten_headers += 1,
            Piece::Other => c.others += 1,
            _ => {}
        });
    }

    fn counts() -> Counts {
        COUNTS.with(Cell::get)
    }

    /// The database at `path` through the VFS, in WAL mode with `synchronous`, with two tables.
    fn open(path: &str, synchronous: &str) -> Connection {
        register().unwrap();
        let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), VFS_NAME).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", synchronous).unwrap();
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

    /// Commits of many shapes through `conn` (on the file at `path`), each checked on disk and
    /// through a second connection as soon as it returns.
    fn commit_many_shapes(conn: &mut Connection, path: &Path) {
        let scratch = tempfile::tempdir().unwrap();
        // A small page cache, so that large transactions spill frames before their commit and
        // write some pages twice (SQLite then rewrites the checksums of frames already written).
        conn.pragma_update(None, "cache_size", 8).unwrap();
        // A second connection, as the server's readers and checkpointer: it must see each commit.
        let reader = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let (mut rows, mut bytes, mut n) = (0i64, 0i64, 0i64);
        let mut key = 0;
        let mut insert = |tx: &rusqlite::Transaction<'_>, count: usize, size: i64| {
            for _ in 0..count {
                key += 1;
                tx.execute("INSERT INTO t (k, v) VALUES (?1, randomblob(?2))", params![format!("k{key}"), size]).unwrap();
            }
        };
        for round in 0..48 {
            let tx = conn.transaction().unwrap();
            let shape = round % 6;
            match shape {
                // One frame: a row updated in place.
                0 => {
                    tx.execute("UPDATE one SET n = n + 1", []).unwrap();
                    n += 1;
                }
                // A batch of small rows, as the writer's.
                1 => {
                    insert(&tx, 45, 700);
                    rows += 45;
                    bytes += 45 * 700;
                }
                // Far more than the cache holds, spilled, and rewritten in the same transaction.
                2 | 3 => {
                    insert(&tx, 300, 900);
                    rows += 300;
                    bytes += 300 * 900;
                    let grown: i64 = tx.query_row("SELECT COUNT(*) FROM t WHERE id % 7 = 0", [], |r| r.get(0)).unwrap();
                    tx.execute("UPDATE t SET v = randomblob(length(v) + 1) WHERE id % 7 = 0", []).unwrap();
                    bytes += grown;
                    tx.execute("UPDATE one SET n = n + 1", []).unwrap();
                    n += 1;
                }
                // Spilled work undone, to a savepoint (as the writer's replay does) and whole,
                // then a small commit.
                4 => {
                    tx.execute_batch("SAVEPOINT s").unwrap();
                    insert(&tx, 200, 900);
                    tx.execute_batch("ROLLBACK TO s; RELEASE s").unwrap();
                    insert(&tx, 5, 100);
                    rows += 5;
                    bytes += 500;
                    tx.commit().unwrap();
                    let undone = conn.transaction().unwrap();
                    insert(&undone, 200, 900);
                    undone.rollback().unwrap();
                    assert_eq!(on_disk(path, scratch.path()), (rows, bytes, n), "round {round} (after a rollback)");
                    continue;
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
            assert_eq!(on_disk(path, scratch.path()), (rows, bytes, n), "round {round} (shape {shape})");
            let seen: (i64, i64) =
                reader.query_row("SELECT (SELECT COUNT(*) FROM t), (SELECT n FROM one)", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
            assert_eq!(seen, (rows, n), "round {round}");
            if shape == 5 {
                let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get(0)).unwrap();
                assert_eq!(busy, 0, "the WAL starts over");
            }
        }
        drop(reader);
        let c = Connection::open(path).unwrap();
        assert_eq!(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0)).unwrap(), rows);
    }

    #[test]
    fn a_commit_is_whole_on_disk_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let mut conn = open(path.to_str().unwrap(), "NORMAL");
        let before = counts();
        commit_many_shapes(&mut conn, &path);
        let seen = counts();
        // The shapes reached the paths they are there for.
        assert!(seen.rewritten_pages > before.rewritten_pages, "pages written twice: {seen:?}");
        assert!(seen.rewritten_headers > before.rewritten_headers, "checksums rewritten: {seen:?}");
    }

    /// With `synchronous=FULL` on a device without power-safe overwrite (`psow=0`), SQLite pads
    /// each commit to a sector with copies of its last frame and splits the write that crosses
    /// the sector's end around a sync: those pieces are written at once, and nothing of the
    /// commit is left gathered.
    #[test]
    fn a_padded_commit_is_whole_on_disk_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let mut conn = open(&format!("file:{}?psow=0", path.display()), "FULL");
        let before = counts();
        commit_many_shapes(&mut conn, &path);
        assert!(counts().others > before.others, "writes split at a sync point: {:?}", counts());
    }

    #[test]
    fn a_batch_of_frames_is_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = open(path.to_str().unwrap(), "NORMAL");
        let frames = |c: &Connection| -> i64 { c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1)).unwrap() };
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        let before_frames = frames(&conn);
        let before = counts().writes;
        conn.execute_batch("BEGIN").unwrap();
        for i in 0..200 {
            conn.execute("INSERT INTO t (k, v) VALUES (?1, zeroblob(700))", params![format!("batch{i}")]).unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        let written = counts().writes - before;
        let new_frames = usize::try_from(frames(&conn) - before_frames).unwrap();
        assert!(new_frames >= 30, "{new_frames} frames");
        // Two writes per frame without this VFS. Here: the WAL's header, written when SQLite
        // syncs it (the WAL started over), then the frames in pieces of at most UNIX_WRITE_MAX.
        let pieces = (new_frames * (4096 + FRAME_HEADER)).div_ceil(UNIX_WRITE_MAX);
        assert_eq!(written, 1 + pieces, "{written} writes for {new_frames} frames");
    }

    /// An in-memory file standing for the unix VFS's, to drive [`WalFile::write`] with exact
    /// sequences of writes.
    #[repr(C)]
    struct Memory {
        base: ffi::sqlite3_file,
        bytes: Vec<u8>,
        /// Every write fails (a full disk).
        full: bool,
    }

    unsafe extern "C" fn memory_write(file: *mut ffi::sqlite3_file, buf: *const c_void, amount: c_int, offset: i64) -> c_int {
        let m = unsafe { &mut *file.cast::<Memory>() };
        if m.full {
            return ffi::SQLITE_FULL;
        }
        let (at, n) = (offset as usize, amount as usize);
        if m.bytes.len() < at + n {
            m.bytes.resize(at + n, 0);
        }
        m.bytes[at..at + n].copy_from_slice(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), n) });
        ffi::SQLITE_OK
    }

    static MEMORY_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
        iVersion: 1,
        xWrite: Some(memory_write),
        // SAFETY: every other field is an `Option` of a function pointer, for which all zeros
        // is `None`.
        ..unsafe { std::mem::zeroed() }
    };

    const PAGE: usize = 4096;

    fn frame_at(k: i64) -> i64 {
        WAL_HEADER as i64 + (k - 1) * (PAGE + FRAME_HEADER) as i64
    }

    fn header(commit: bool) -> [u8; FRAME_HEADER] {
        let mut h = [7u8; FRAME_HEADER];
        h[4..8].copy_from_slice(if commit { &[0, 0, 0, 9] } else { &[0, 0, 0, 0] });
        h
    }

    fn wal_file(memory: &mut Memory) -> WalFile {
        WalFile::new(&raw mut memory.base)
    }

    fn wal_header() -> [u8; WAL_HEADER] {
        let mut h = [0u8; WAL_HEADER];
        h[..4].copy_from_slice(&[0x37, 0x7f, 0x06, 0x82]);
        h[8..12].copy_from_slice(&(PAGE as u32).to_be_bytes());
        h
    }

    /// A commit whose frames cannot be written fails, and none of its bytes reach the file
    /// later: SQLite rolls it back and tells its callers so, and a crash after a later write must
    /// not bring it back.
    #[test]
    fn a_commit_that_could_not_be_written_never_reaches_the_file() {
        let mut memory = Memory { base: ffi::sqlite3_file { pMethods: &MEMORY_METHODS }, bytes: Vec::new(), full: false };
        let mut w = wal_file(&mut memory);
        let page = [5u8; PAGE];
        unsafe {
            assert_eq!(w.write(&wal_header(), 0), ffi::SQLITE_OK);
            assert_eq!(w.write(&header(false), frame_at(1)), ffi::SQLITE_OK);
            assert_eq!(w.write(&page, frame_at(1) + 24), ffi::SQLITE_OK);
            assert_eq!(w.write(&header(true), frame_at(2)), ffi::SQLITE_OK);
            (*w.real.cast::<Memory>()).full = true;
            assert_eq!(w.write(&page, frame_at(2) + 24), ffi::SQLITE_FULL);
            (*w.real.cast::<Memory>()).full = false;
            // SQLite rolled back; the next transaction writes one frame from the same place.
            assert_eq!(w.write(&header(true), frame_at(1)), ffi::SQLITE_OK);
            assert_eq!(w.write(&[6u8; PAGE], frame_at(1) + 24), ffi::SQLITE_OK);
            assert_eq!(sync(&raw mut w.base, ffi::SQLITE_SYNC_NORMAL), ffi::SQLITE_IOERR_FSYNC, "no sync in the memory file");
        }
        assert!(w.gathered.is_empty());
        let end = frame_at(2) as usize;
        assert_eq!(memory.bytes.len(), end, "nothing of the failed commit's second frame: {}", memory.bytes.len());
        assert!(memory.bytes[..WAL_HEADER].iter().all(|&b| b == 0), "nor its WAL header");
    }

    /// The write sequence of a commit padded to a sector (`synchronous=FULL`, no power-safe
    /// overwrite): the last frame's copies, one of them split around a sync. No piece is left
    /// gathered once the commit's writes are done, whatever the length of a piece, and the file
    /// holds every byte where it was written.
    #[test]
    fn pieces_are_read_by_their_place_in_the_file() {
        let mut memory = Memory { base: ffi::sqlite3_file { pMethods: &MEMORY_METHODS }, bytes: Vec::new(), full: false };
        let mut w = wal_file(&mut memory);
        let wal_header = wal_header();
        let page = [5u8; PAGE];
        let mut expect = Vec::new();
        let mut put = |w: &mut WalFile, data: &[u8], at: i64| {
            assert_eq!(unsafe { w.write(data, at) }, ffi::SQLITE_OK);
            let at = at as usize;
            if expect.len() < at + data.len() {
                expect.resize(at + data.len(), 0);
            }
            expect[at..at + data.len()].copy_from_slice(data);
        };
        // Read by place: a header only at a frame's start, a page only after its header.
        unsafe {
            put(&mut w, &wal_header, 0);
            assert_eq!(w.page, Some(PAGE));
            assert_eq!(w.classify(&header(false), frame_at(3)), Piece::FrameHeader { commit: false });
            assert_eq!(w.classify(&page, frame_at(3) + 24), Piece::Page);
            assert_eq!(w.classify(&page[..512], frame_at(3) + 24 + 3584), Piece::Other);
            assert_eq!(w.classify(&header(false), frame_at(3) + 24 + 4072), Piece::Other);
            assert_eq!(w.classify(&page, frame_at(3) + 20), Piece::Other);
        }
        // Two frames, the second the commit: gathered with the WAL's header, written as one.
        put(&mut w, &header(false), frame_at(1));
        put(&mut w, &page, frame_at(1) + 24);
        put(&mut w, &header(true), frame_at(2));
        assert!(!w.gathered.is_empty());
        put(&mut w, &page, frame_at(2) + 24);
        assert!(w.gathered.is_empty(), "the commit's page ends the gathering");
        // Its padding: copies of the commit frame, the second split around a sync point at
        // 3,584 bytes into its page (then 512), the third at 4,072 (then 24).
        put(&mut w, &header(true), frame_at(3));
        put(&mut w, &page, frame_at(3) + 24);
        put(&mut w, &header(true), frame_at(4));
        put(&mut w, &page[..3584], frame_at(4) + 24);
        put(&mut w, &page[3584..], frame_at(4) + 24 + 3584);
        assert!(w.gathered.is_empty(), "a split page's tail is written at once");
        put(&mut w, &header(true), frame_at(5));
        put(&mut w, &page[..4072], frame_at(5) + 24);
        put(&mut w, &page[4072..], frame_at(5) + 24 + 4072);
        assert!(w.gathered.is_empty(), "24 bytes inside a page are not a header");
        assert_eq!(memory.bytes, expect);
    }
}
