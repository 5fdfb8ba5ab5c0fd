//! Retained logs: a tracing layer that keeps the most recent records in memory (for
//! `GET /api/logs` and `tw-cli logs`), appends them as JSON lines to a rotating file in the data
//! dir (so a restart keeps them), and broadcasts new ones for `--follow`.
//!
//! Bounded twice: at most `capacity` records in memory, at most `max_bytes` on disk (the current
//! file and one rotated predecessor, each up to half).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer};

/// One log record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogRecord {
    #[serde(serialize_with = "tw_core::timestamps::serialize")]
    pub ts: DateTime<Utc>,
    #[schema(example = "INFO")]
    pub level: String,
    /// The component: webhook, triage, store, api, auth, or a module path.
    pub target: String,
    pub message: String,
    /// Structured fields (never secrets or signatures); omitted when there are none.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schema(required = false, value_type = Object)]
    pub fields: Map<String, Value>,
}

impl LogRecord {
    /// The record as one human line: time, level, component, message, then `key=value` fields.
    /// Control characters are escaped (`\n`, `\u{1b}`, ...): field values can carry text a sender
    /// chose, and must not be able to forge a line.
    pub fn to_line(&self) -> String {
        let mut s = String::with_capacity(160);
        self.write_line(&mut s);
        s
    }

    /// [`LogRecord::to_line`], appended to `out`.
    pub fn write_line(&self, out: &mut String) {
        let fields = self.fields.iter().map(|(k, v)| (k.as_str(), FieldRef::from(v)));
        write_line(out, &self.ts, &self.level, &self.target, &self.message, fields);
    }
}

/// A field's value as a line shows it: text (escaped in the human line, a JSON string in the
/// JSON one) or a number or boolean.
#[derive(Clone, Copy)]
enum FieldRef<'a> {
    Text(&'a str),
    Other(&'a Value),
}

impl<'a> From<&'a Value> for FieldRef<'a> {
    fn from(v: &'a Value) -> Self {
        match v {
            Value::String(t) => FieldRef::Text(t),
            other => FieldRef::Other(other),
        }
    }
}

impl FieldRef<'_> {
    fn to_value(self) -> Value {
        match self {
            FieldRef::Text(t) => Value::String(t.to_string()),
            FieldRef::Other(v) => v.clone(),
        }
    }
}

impl Serialize for FieldRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldRef::Text(t) => s.serialize_str(t),
            FieldRef::Other(v) => v.serialize(s),
        }
    }
}

/// The human line of a record ([`LogRecord::to_line`]), from its parts.
fn write_line<'k, 'v>(
    out: &mut String,
    ts: &DateTime<Utc>,
    level: &str,
    target: &str,
    message: &str,
    fields: impl Iterator<Item = (&'k str, FieldRef<'v>)>,
) {
    use std::fmt::Write as _;
    tw_core::timestamps::push(out, ts, chrono::SecondsFormat::Millis);
    let _ = write!(out, " {:>5} {}: {}", level, escape(target), escape(message));
    for (k, v) in fields {
        out.push(' ');
        out.push_str(&escape(k));
        out.push('=');
        match v {
            FieldRef::Text(t) => out.push_str(&escape(t)),
            FieldRef::Other(other) => {
                let _ = write!(out, "{other}");
            }
        }
    }
}

/// Escapes control characters, leaving everything else as it is.
pub(crate) fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect())
}

/// The components `--filter` recognises by name; any other filter is free text.
pub const COMPONENTS: &[&str] = &["webhook", "triage", "store", "api", "auth"];

/// What to select.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// A component name, or text searched in the message and field values.
    pub filter: Option<String>,
    /// Minimum level: trace, debug, info, warn, error.
    pub min_level: Option<tracing::Level>,
    pub since: Option<DateTime<Utc>>,
    /// Only records whose `source` field is this.
    pub source: Option<String>,
}

fn level_rank(l: &str) -> u8 {
    match l {
        "ERROR" => 5,
        "WARN" => 4,
        "INFO" => 3,
        "DEBUG" => 2,
        _ => 1,
    }
}

impl LogQuery {
    /// True when the record is selected.
    pub fn matches(&self, r: &LogRecord) -> bool {
        if let Some(min) = self.min_level
            && level_rank(&r.level) < level_rank(min.as_str())
        {
            return false;
        }
        if self.since.is_some_and(|t| r.ts < t) {
            return false;
        }
        if let Some(src) = &self.source
            && r.fields.get("source").and_then(Value::as_str) != Some(src.as_str())
        {
            return false;
        }
        match self.filter.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
            None => true,
            Some(f) if COMPONENTS.contains(&f) => r.target == f,
            Some(f) => {
                let f = f.to_lowercase();
                r.message.to_lowercase().contains(&f)
                    || r.target.to_lowercase().contains(&f)
                    || r.fields.values().any(|v| match v {
                        Value::String(s) => s.to_lowercase().contains(&f),
                        other => other.to_string().contains(&f),
                    })
            }
        }
    }
}

/// A record as this process keeps it: its JSON, the log file's line (without the newline). One
/// allocation per record rather than a map of small strings: a full buffer of 20,000 records took
/// about 24 MiB of scattered allocations that way, and the intake's throughput was 10-15% lower
/// with it than with a buffer of 100 records (`scripts/intake-cost.sh cpu 30000` with
/// `SERVE_ARGS="--log-records 100"`, three pairs). Read back into a [`LogRecord`] when asked for.
type Kept = Arc<str>;

/// The kept records, and how many were ever kept: the newest one's number, which the live stream
/// carries with each record.
#[derive(Default)]
struct Ring {
    lines: VecDeque<Kept>,
    kept: u64,
}

/// A new record as the live stream sends it: its number (see [`LogBuffer::tail_numbered`]), and the record.
pub type Numbered = (u64, Arc<LogRecord>);

/// The retained logs of this process.
pub struct LogBuffer {
    records: Mutex<Ring>,
    capacity: usize,
    live: broadcast::Sender<Numbered>,
    disk: Arc<DiskQueue>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Streams of new records (`GET /api/logs?follow=true`) open at once, at most
    /// [`MAX_FOLLOWERS`]: each holds a connection for as long as it lasts.
    followers: Arc<tokio::sync::Semaphore>,
}

/// Log streams one process serves at once.
pub const MAX_FOLLOWERS: usize = 8;

/// Records waiting for the file writer. The writer takes them every [`DISK_FLUSH_EVERY`] rather
/// than being woken for each one: a wake-up per record was a context switch per delivery, about
/// a tenth of the intake's CPU under load.
#[derive(Default)]
struct DiskQueue {
    state: Mutex<DiskState>,
    /// Signalled only on close, so the writer finishes at once.
    closing: std::sync::Condvar,
}

#[derive(Default)]
struct DiskState {
    /// None until [`LogBuffer::persist_to`]: records are then kept in memory only.
    pending: Option<Vec<Kept>>,
    /// Records not written because the writer fell behind by more than the buffer's capacity.
    dropped: u64,
    closed: bool,
}

/// How often the file writer takes the pending records. Pending records beyond the buffer's
/// capacity are dropped (and counted in the file): the disk may be slow, the memory stays bounded,
/// and the pending ones are the records the in-memory buffer holds anyway (shared, not copied).
const DISK_FLUSH_EVERY: Duration = Duration::from_millis(100);

/// The file records are appended to, in `<data_dir>/logs/`.
pub const LOG_FILE: &str = "tw.log";

impl LogBuffer {
    /// An in-memory buffer of `capacity` records.
    pub fn new(capacity: usize) -> Arc<LogBuffer> {
        let (live, _) = broadcast::channel(1024);
        Arc::new(LogBuffer {
            records: Mutex::new(Ring { lines: VecDeque::with_capacity(capacity.min(65536)), kept: 0 }),
            capacity: capacity.max(1),
            live,
            disk: Arc::new(DiskQueue::default()),
            writer: Mutex::new(None),
            followers: Arc::new(tokio::sync::Semaphore::new(MAX_FOLLOWERS)),
        })
    }

    /// Also keeps records in `dir` (at most `max_bytes`), first loading what an earlier run left.
    pub fn persist_to(&self, dir: &Path, max_bytes: u64) -> std::io::Result<()> {
        tw_store::files::create_private_dir(dir)?;
        let current = dir.join(LOG_FILE);
        let previous = dir.join(format!("{LOG_FILE}.1"));
        {
            let mut ring = self.records.lock().unwrap_or_else(|e| e.into_inner());
            for path in [&previous, &current] {
                if let Ok(f) = std::fs::File::open(path) {
                    for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
                        if serde_json::from_str::<LogRecord>(&line).is_ok() {
                            ring.push(line.into(), self.capacity);
                        }
                    }
                }
            }
        }
        tw_store::files::create_private_file(&current)?;
        let file = std::fs::OpenOptions::new().append(true).open(&current)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        {
            let mut st = self.disk.state.lock().unwrap_or_else(|e| e.into_inner());
            st.pending = Some(Vec::new());
            st.closed = false;
        }
        let queue = self.disk.clone();
        let handle = std::thread::Builder::new()
            .name("tw-log-writer".into())
            .spawn(move || write_loop(&queue, file, written, current, previous, max_bytes / 2))?;
        *self.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
    }

    /// Stops keeping records on disk, after writing out every one already pushed.
    pub fn close(&self) {
        self.disk.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.disk.closing.notify_all();
        if let Some(h) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
        self.disk.state.lock().unwrap_or_else(|e| e.into_inner()).pending = None;
    }

    /// Keeps a record.
    pub fn push(&self, r: LogRecord) {
        let json = serde_json::to_string(&r);
        self.keep(json, || r);
    }

    /// Keeps a record as its JSON, `json`; `record` makes the record itself, only when a live
    /// follower needs it. A record that cannot be written as JSON (none can fail: its fields are
    /// strings, numbers and booleans) is not kept.
    fn keep(&self, json: serde_json::Result<String>, record: impl FnOnce() -> LogRecord) {
        let Ok(json) = json else { return };
        let kept: Kept = json.into();
        let number = self.records.lock().unwrap_or_else(|e| e.into_inner()).push(kept.clone(), self.capacity);
        {
            let mut st = self.disk.state.lock().unwrap_or_else(|e| e.into_inner());
            let full = st.pending.as_ref().map(|p| p.len() >= self.capacity);
            match full {
                Some(false) => st.pending.as_mut().expect("checked").push(kept),
                Some(true) => st.dropped += 1,
                None => {}
            }
        }
        if self.live.receiver_count() > 0 {
            let _ = self.live.send((number, Arc::new(record())));
        }
    }

    /// The last `n` records that match, oldest first.
    pub fn tail(&self, q: &LogQuery, n: usize) -> Vec<Arc<LogRecord>> {
        self.tail_numbered(q, n).0
    }

    /// [`LogBuffer::tail`], and the number of the newest record it looked at: a live record with
    /// a number up to that one was in the tail's reach already (a follower subscribes before it
    /// reads the tail, so that nothing logged in between is missed, and skips those). The records
    /// are read back from their JSON outside the buffer's lock, which the intake takes for every
    /// record; reading them all (a filter that matches nothing) costs about a millisecond per
    /// thousand, so callers on the async runtime run this on a blocking thread.
    pub fn tail_numbered(&self, q: &LogQuery, n: usize) -> (Vec<Arc<LogRecord>>, u64) {
        let (kept, newest) = {
            let ring = self.records.lock().unwrap_or_else(|e| e.into_inner());
            (ring.lines.iter().cloned().collect::<Vec<Kept>>(), ring.kept)
        };
        let mut out: Vec<Arc<LogRecord>> = kept
            .iter()
            .rev()
            .filter_map(|line| serde_json::from_str::<LogRecord>(line).ok())
            .filter(|r| q.matches(r))
            .take(n)
            .map(Arc::new)
            .collect();
        out.reverse();
        (out, newest)
    }

    /// A place for one more log stream, held until it is dropped; `None` when all
    /// [`MAX_FOLLOWERS`] are taken.
    pub fn follower(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.followers.clone().try_acquire_owned().ok()
    }

    /// New records as they come, with their numbers.
    pub fn subscribe(&self) -> broadcast::Receiver<Numbered> {
        self.live.subscribe()
    }
}

impl Ring {
    /// Keeps `line`, dropping the oldest beyond `capacity`; returns its number.
    fn push(&mut self, line: Kept, capacity: usize) -> u64 {
        if self.lines.len() == capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
        self.kept += 1;
        self.kept
    }
}

fn write_loop(queue: &DiskQueue, file: std::fs::File, mut written: u64, current: PathBuf, previous: PathBuf, max_file: u64) {
    let mut out = std::io::BufWriter::new(file);
    let mut batch = Vec::new();
    loop {
        let (closed, dropped) = {
            let mut st = queue.state.lock().unwrap_or_else(|e| e.into_inner());
            if !st.closed {
                st = queue.closing.wait_timeout(st, DISK_FLUSH_EVERY).unwrap_or_else(|e| e.into_inner()).0;
            }
            if let Some(p) = st.pending.as_mut() {
                std::mem::swap(p, &mut batch);
            }
            (st.closed, std::mem::take(&mut st.dropped))
        };
        if dropped > 0 {
            let note = LogRecord {
                ts: Utc::now(),
                level: "WARN".into(),
                target: "api".into(),
                message: format!("{dropped} log records were not written to disk: the log file writer fell behind"),
                fields: Map::new(),
            };
            if let Ok(json) = serde_json::to_string(&note) {
                batch.push(json.into());
            }
        }
        for r in batch.drain(..) {
            let len = r.len() as u64 + 1;
            if written + len > max_file.max(4096) {
                let _ = out.flush();
                let _ = std::fs::rename(&current, &previous);
                let reopened = tw_store::files::create_private_file(&current)
                    .and_then(|_| std::fs::OpenOptions::new().write(true).truncate(true).open(&current));
                match reopened {
                    Ok(f) => {
                        out = std::io::BufWriter::new(f);
                        written = 0;
                    }
                    Err(_) => continue,
                }
            }
            if out.write_all(r.as_bytes()).and_then(|()| out.write_all(b"\n")).is_ok() {
                written += len;
            }
        }
        let _ = out.flush();
        // Keep the buffer's capacity bounded after a burst.
        batch.shrink_to(1024);
        if closed {
            break;
        }
    }
}

/// The tracing layer that feeds a [`LogBuffer`] and, when asked, writes the same record to
/// stderr: each event is read into one [`LogRecord`], formatted once for stderr (the line
/// `tw-cli logs` prints, or the JSON object of the log files). A second layer formatting the event
/// again for stderr cost the intake about a tenth of its request handling.
pub struct BufferLayer {
    buffer: Arc<LogBuffer>,
    echo: Option<(BatchedStderr, LineFormat)>,
}

/// How [`BufferLayer`] writes records to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// [`LogRecord::to_line`].
    Text,
    /// One JSON object per line, as in the log files and `GET /api/logs`.
    Json,
}

impl BufferLayer {
    /// Keeps records in `buffer` only.
    pub fn new(buffer: Arc<LogBuffer>) -> BufferLayer {
        BufferLayer { buffer, echo: None }
    }

    /// Also writes every record to `stderr` as `format`.
    pub fn echo_to(self, stderr: BatchedStderr, format: LineFormat) -> BufferLayer {
        BufferLayer { echo: Some((stderr, format)), ..self }
    }
}

/// An event's fields as the layer reads them, without a map: names are tracing's own
/// `&'static str`s, and text values sit side by side in one buffer. Reading an event used to
/// allocate a `String` for each name and each value, in a `BTreeMap`, for a record that was
/// then only serialized (it is kept as its JSON line).
#[derive(Default)]
struct Fields {
    message: String,
    /// The text values, one after the other.
    text: String,
    /// In the order recorded; [`Fields::sorted`] puts them in the map's order.
    fields: Vec<(&'static str, FieldValue)>,
}

enum FieldValue {
    /// A range of [`Fields::text`].
    Text(std::ops::Range<usize>),
    /// A number or a boolean.
    Other(Value),
}

impl Fields {
    /// The fields in name order, as the record's map holds them: one per name, the last recorded.
    fn sorted(&mut self) {
        // Newest first, then a stable sort: the first of each name is the one recorded last.
        self.fields.reverse();
        self.fields.sort_by_key(|(name, _)| *name);
        self.fields.dedup_by_key(|(name, _)| *name);
    }

    fn iter(&self) -> impl Iterator<Item = (&'static str, FieldRef<'_>)> + Clone {
        self.fields.iter().map(|(name, v)| {
            let v = match v {
                FieldValue::Text(r) => FieldRef::Text(&self.text[r.clone()]),
                FieldValue::Other(v) => FieldRef::Other(v),
            };
            (*name, v)
        })
    }

    fn to_map(&self) -> Map<String, Value> {
        self.iter().map(|(k, v)| (k.to_string(), v.to_value())).collect()
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let start = self.text.len();
        let _ = write!(self.text, "{value:?}");
        if field.name() == "message" {
            self.message = self.text.split_off(start);
            return;
        }
        // The value is the text without its quotes (`trim_matches('"')`): a `Debug` string
        // comes quoted.
        let written = &self.text[start..];
        let from = start + written.len() - written.trim_start_matches('"').len();
        let to = from + written.trim_matches('"').len();
        self.fields.push((field.name(), FieldValue::Text(from..to)));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
            return;
        }
        let start = self.text.len();
        self.text.push_str(value);
        self.fields.push((field.name(), FieldValue::Text(start..self.text.len())));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name(), FieldValue::Other(value.into())));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name(), FieldValue::Other(value.into())));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64((value * 1000.0).round() / 1000.0).map_or(Value::Null, Value::Number);
        self.fields.push((field.name(), FieldValue::Other(v)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), FieldValue::Other(value.into())));
    }
}

/// A record as [`LogRecord`] serializes it, from the parts the layer read.
#[derive(Serialize)]
struct RecordRef<'a> {
    #[serde(serialize_with = "tw_core::timestamps::serialize")]
    ts: &'a DateTime<Utc>,
    level: &'a str,
    target: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "FieldsRef::is_empty")]
    fields: FieldsRef<'a>,
}

struct FieldsRef<'a>(&'a Fields);

impl FieldsRef<'_> {
    fn is_empty(&self) -> bool {
        self.0.fields.is_empty()
    }
}

impl Serialize for FieldsRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter())
    }
}

impl<S: tracing::Subscriber> Layer<S> for BufferLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut v = Fields::default();
        event.record(&mut v);
        v.sorted();
        let (ts, level, target) = (Utc::now(), meta.level().as_str(), meta.target());
        let json = serde_json::to_string(&RecordRef { ts: &ts, level, target, message: &v.message, fields: FieldsRef(&v) });
        if let Some((stderr, format)) = &self.echo {
            stderr.line(|out| match format {
                LineFormat::Text => write_line(out, &ts, level, target, &v.message, v.iter()),
                LineFormat::Json => {
                    if let Ok(json) = &json {
                        out.push_str(json);
                    }
                }
            });
        }
        self.buffer.keep(json, || LogRecord {
            ts,
            level: level.to_string(),
            target: target.to_string(),
            message: v.message.clone(),
            fields: v.to_map(),
        });
    }
}

/// Log lines bound for stderr, written by a thread of their own in batches: one `write` per
/// batch instead of one per line on the request's path (a line per delivery cost the intake a
/// syscall each, and a pipe to journald or docker wakes its reader at every write). A line
/// reaches stderr within [`STDERR_BATCH_PAUSE`] or so. Bounded: past [`STDERR_MAX_PENDING`]
/// bytes waiting (stderr not being read), lines are dropped and counted, and the count is written
/// when stderr takes lines again. [`StderrGuard`] writes what is left when the server stops;
/// after that, lines go straight to stderr.
#[derive(Clone)]
pub struct BatchedStderr(Arc<StderrShared>);

/// Bytes of log lines that may wait for stderr.
pub const STDERR_MAX_PENDING: usize = 4 << 20;
/// How long the stderr thread lets lines gather after each write.
pub const STDERR_BATCH_PAUSE: Duration = Duration::from_millis(5);

struct StderrShared {
    state: Mutex<StderrState>,
    wake: std::sync::Condvar,
}

#[derive(Default)]
struct StderrState {
    buf: Vec<u8>,
    dropped: u64,
    closed: bool,
}

/// Stops the stderr thread once everything waiting is written (on drop).
pub struct StderrGuard {
    shared: Arc<StderrShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BatchedStderr {
    /// Starts the thread writing to `out` (stderr in the server).
    pub fn start(out: impl Write + Send + 'static) -> std::io::Result<(BatchedStderr, StderrGuard)> {
        let shared = Arc::new(StderrShared { state: Mutex::new(StderrState::default()), wake: std::sync::Condvar::new() });
        let s = shared.clone();
        let thread = std::thread::Builder::new().name("tw-log-stderr".into()).spawn(move || stderr_loop(&s, out))?;
        Ok((BatchedStderr(shared.clone()), StderrGuard { shared, thread: Some(thread) }))
    }
}

impl StderrShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, StderrState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn stderr_loop(shared: &StderrShared, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        let (dropped, closed) = {
            let mut st = shared.lock();
            while st.buf.is_empty() && st.dropped == 0 && !st.closed {
                st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            std::mem::swap(&mut st.buf, &mut batch);
            (std::mem::take(&mut st.dropped), st.closed)
        };
        let _ = out.write_all(&batch);
        // The dropped lines came after the ones kept.
        if dropped > 0 {
            let _ = writeln!(out, "{dropped} log line(s) dropped: stderr was not taking them");
        }
        let _ = out.flush();
        batch.clear();
        // Bound what a long pause keeps: the next batch grows its own buffer again.
        batch.shrink_to(64 * 1024);
        if closed {
            return;
        }
        std::thread::sleep(STDERR_BATCH_PAUSE);
    }
}

impl Drop for StderrGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl BatchedStderr {
    /// Appends one line, which `write` puts into the text it is given (without its newline).
    pub fn line(&self, write: impl FnOnce(&mut String)) {
        let mut text = String::with_capacity(256);
        write(&mut text);
        text.push('\n');
        self.append(text.as_bytes());
    }

    /// Queues `b` for the thread, or counts it dropped past [`STDERR_MAX_PENDING`]; straight to
    /// stderr once the thread has stopped.
    fn append(&self, b: &[u8]) {
        let mut st = self.0.lock();
        if st.closed {
            drop(st);
            let _ = std::io::stderr().write_all(b);
            return;
        }
        if st.buf.len() + b.len() > STDERR_MAX_PENDING {
            st.dropped += 1;
            return;
        }
        let was_empty = st.buf.is_empty();
        st.buf.extend_from_slice(b);
        drop(st);
        if was_empty {
            self.0.wake.notify_one();
        }
    }
}

impl Write for BatchedStderr {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.append(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn stderr_lines_arrive_in_order_and_the_guard_writes_the_rest() {
        let sink = Sink::default();
        let (w, guard) = BatchedStderr::start(sink.clone()).unwrap();
        let mut writers: Vec<_> = (0..2).map(|_| w.clone()).collect();
        for i in 0..1000 {
            writers[i % 2].write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let expect: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(out, expect);
    }

    #[test]
    fn stderr_lines_past_the_bound_are_dropped_and_counted() {
        // A sink that blocks until released: stderr not being read.
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        struct Stuck(Sink, Mutex<std::sync::mpsc::Receiver<()>>);
        impl Write for Stuck {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let _ = self.1.lock().unwrap().recv();
                self.0.write(b)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let (mut w, guard) = BatchedStderr::start(Stuck(sink.clone(), Mutex::new(blocked))).unwrap();
        w.write_all(b"first\n").unwrap();
        // The thread takes "first" and blocks writing it; then the buffer fills past its bound.
        while !w.0.lock().buf.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let line = vec![b'x'; 1024 * 1024];
        for _ in 0..6 {
            w.write_all(&line).unwrap();
        }
        assert_eq!(w.0.lock().buf.len(), 4 * 1024 * 1024);
        assert_eq!(w.0.lock().dropped, 2);
        drop(release);
        drop(guard);
        let out = sink.0.lock().unwrap().clone();
        let dropped = b"2 log line(s) dropped: stderr was not taking them\n";
        assert!(out.starts_with(b"first\nxxx") && out.ends_with(dropped), "{:?}", String::from_utf8_lossy(&out[out.len() - 60..]));
        assert_eq!(out.len(), b"first\n".len() + 4 * 1024 * 1024 + dropped.len());
    }

    fn rec(target: &str, level: &str, msg: &str, source: Option<&str>) -> LogRecord {
        let mut fields = Map::new();
        if let Some(s) = source {
            fields.insert("source".into(), s.into());
        }
        LogRecord { ts: Utc::now(), level: level.into(), target: target.into(), message: msg.into(), fields }
    }

    #[test]
    fn filters_by_component_text_level_and_source() {
        let b = LogBuffer::new(10);
        b.push(rec("webhook", "INFO", "webhook delivery", Some("mail")));
        b.push(rec("webhook", "INFO", "webhook delivery", Some("edr")));
        b.push(rec("triage", "WARN", "triage job finished", None));
        b.push(rec("store", "ERROR", "commit failed", None));
        let q = |f: &str| LogQuery { filter: Some(f.into()), ..Default::default() };
        assert_eq!(b.tail(&q("webhook"), 100).len(), 2);
        assert_eq!(b.tail(&q("commit"), 100).len(), 1);
        assert_eq!(b.tail(&LogQuery { min_level: Some(tracing::Level::WARN), ..Default::default() }, 100).len(), 2);
        assert_eq!(b.tail(&LogQuery { source: Some("edr".into()), ..Default::default() }, 100).len(), 1);
        assert_eq!(b.tail(&LogQuery::default(), 1)[0].target, "store");
    }

    /// A follower subscribes, then reads the tail: a record logged in between is in both, and
    /// its number tells the follower it was shown; one logged after the tail is not.
    #[test]
    fn the_live_stream_numbers_records_past_the_tail() {
        let b = LogBuffer::new(10);
        b.push(rec("api", "INFO", "before", None));
        let mut rx = b.subscribe();
        b.push(rec("api", "INFO", "between", None));
        let (tail, upto) = b.tail_numbered(&LogQuery::default(), 10);
        b.push(rec("api", "INFO", "after", None));
        assert_eq!(tail.iter().map(|r| r.message.as_str()).collect::<Vec<_>>(), ["before", "between"]);
        let (between, r) = rx.try_recv().unwrap();
        assert!(between <= upto && r.message == "between", "{between} {upto}");
        let (after, r) = rx.try_recv().unwrap();
        assert!(after > upto && r.message == "after", "{after} {upto}");
        // The numbers go on past the buffer's capacity.
        for i in 0..20 {
            b.push(rec("api", "INFO", &format!("m{i}"), None));
        }
        assert_eq!(b.tail_numbered(&LogQuery::default(), 1).1, 23);
    }

    #[test]
    fn memory_is_bounded() {
        let b = LogBuffer::new(3);
        for i in 0..10 {
            b.push(rec("api", "INFO", &format!("m{i}"), None));
        }
        let all = b.tail(&LogQuery::default(), 100);
        assert_eq!(all.iter().map(|r| r.message.as_str()).collect::<Vec<_>>(), ["m7", "m8", "m9"]);
    }

    #[test]
    fn records_survive_a_restart_and_the_files_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let b = LogBuffer::new(1000);
        b.persist_to(dir.path(), 8192).unwrap();
        for i in 0..200 {
            b.push(rec("api", "INFO", &format!("message number {i}"), None));
        }
        b.close();
        let total: u64 = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        assert!(total <= 8192, "{total} bytes on disk");
        let again = LogBuffer::new(1000);
        again.persist_to(dir.path(), 8192).unwrap();
        let kept = again.tail(&LogQuery::default(), 1000);
        assert!(!kept.is_empty());
        assert_eq!(kept.last().unwrap().message, "message number 199");
    }

    #[test]
    fn each_record_reaches_stderr_once_as_the_line_or_the_json_it_is_kept_as() {
        use tracing_subscriber::layer::SubscriberExt;
        for format in [LineFormat::Text, LineFormat::Json] {
            let sink = Sink::default();
            let (stderr, guard) = BatchedStderr::start(sink.clone()).unwrap();
            let buffer = LogBuffer::new(10);
            let subscriber = tracing_subscriber::registry().with(BufferLayer::new(buffer.clone()).echo_to(stderr, format));
            tracing::subscriber::with_default(subscriber, || {
                tracing::info!(target: "webhook", request_id = %"req_1", source = "mail", status = 201u16, latency_ms = 1.5, "webhook delivery");
                tracing::warn!(target: "store", "commit failed\nforged line");
            });
            drop(guard);
            let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
            let kept = buffer.tail(&LogQuery::default(), 10);
            assert_eq!(kept.len(), 2);
            let expected: String = kept
                .iter()
                .map(|r| match format {
                    LineFormat::Text => r.to_line() + "\n",
                    LineFormat::Json => serde_json::to_string(&**r).unwrap() + "\n",
                })
                .collect();
            assert_eq!(out, expected, "{format:?}");
            assert_eq!(out.lines().count(), 2, "{out}");
            assert!(out.contains("request_id=req_1 source=mail status=201") || format == LineFormat::Json, "{out}");
            if format == LineFormat::Json {
                let first: LogRecord = serde_json::from_str(out.lines().next().unwrap()).unwrap();
                assert_eq!(first, *kept[0]);
            }
        }
    }

    /// The layer writes an event's JSON from its fields as read, without the record's map: the
    /// same JSON as the record serialized, field for field, whatever order the fields came in,
    /// and `Debug` values unquoted.
    #[test]
    fn the_json_written_from_an_event_is_its_record_serialized() {
        use tracing_subscriber::layer::SubscriberExt;
        let buffer = LogBuffer::new(10);
        let mut live = buffer.subscribe();
        let subscriber = tracing_subscriber::registry().with(BufferLayer::new(buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "webhook", zeta = 1u64, alpha = "a\"b", mid = ?"quoted", neg = -4i64, ok = true, f = 2.00049, "m {}", 7);
            tracing::warn!(target: "store", "no fields");
        });
        let kept = buffer.records.lock().unwrap().lines.iter().cloned().collect::<Vec<Kept>>();
        let (_, first) = live.try_recv().unwrap();
        let expected = serde_json::json!({"zeta": 1, "alpha": "a\"b", "mid": "quoted", "neg": -4, "ok": true, "f": 2.0});
        assert_eq!(first.message, "m 7");
        assert_eq!(Value::Object(first.fields.clone()), expected);
        assert_eq!(&*kept[0], serde_json::to_string(&*first).unwrap());
        assert!(kept[0].contains(r#""fields":{"alpha":"a\"b","f":2.0,"mid":"quoted","neg":-4,"ok":true,"zeta":1}"#), "{}", kept[0]);
        let (_, second) = live.try_recv().unwrap();
        assert!(second.fields.is_empty());
        assert_eq!(&*kept[1], serde_json::to_string(&*second).unwrap());
        assert!(!kept[1].contains("\"fields\":"), "{}", kept[1]);
    }

    /// Fields read in any order come out in the record map's order, one per name, the last value
    /// recorded for a name given twice (as `Map::insert` keeps).
    #[test]
    fn fields_are_ordered_as_the_map_and_the_last_value_of_a_name_counts() {
        let mut f = Fields::default();
        f.text.push_str("firstsecond");
        f.fields = vec![
            ("zeta", FieldValue::Other(1.into())),
            ("alpha", FieldValue::Text(0..5)),
            ("mid", FieldValue::Other(true.into())),
            ("alpha", FieldValue::Text(5..11)),
        ];
        f.sorted();
        let got: Vec<(&str, Value)> = f.iter().map(|(k, v)| (k, v.to_value())).collect();
        assert_eq!(got, [("alpha", Value::from("second")), ("mid", Value::from(true)), ("zeta", Value::from(1))]);
    }

    #[test]
    fn lines_cannot_be_forged_with_control_characters() {
        let mut r = rec("webhook", "INFO", "webhook delivery", None);
        r.fields.insert("requested_source".into(), "x\n2026-01-01T00:00:00Z ERROR auth: admin key leaked\u{1b}[2J".into());
        let line = r.to_line();
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.contains("\\n2026") && line.contains("\\u{1b}"), "{line}");
    }
}
