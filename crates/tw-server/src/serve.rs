//! The server's own accept loop: what a connection may cost, whoever opened it.
//!
//! `axum::serve` had no header, body or idle timeouts and no connection cap: 20,000 idle TCP
//! connections (the file limit) starved deliveries and `/api/health`, and 300 connections that each
//! declared a 1 MiB body and stalled held 338 MB. Here every connection is served by hyper under a
//! watchdog, and every request body by a wrapper:
//!
//! - **Header timeout**: a connection gets `header_timeout` from its accept (and from the first byte
//!   of each later request) to send complete headers; a slowloris client is closed.
//! - **Idle timeout**: a keep-alive connection with no request for `idle_timeout` is closed.
//! - **Body timeout**: a request body must arrive whole within `body_timeout` of its headers; a
//!   sender that stalls (or drips) is answered `408 request_timeout` and the connection closed.
//! - **Connection cap**: at `max_connections`, an accepted connection waits for a slot and the
//!   connection idle the longest (no request being handled: idle keep-alive, or headers not yet
//!   complete; ranked by its last activity) is closed to make one. Connections with a request in a
//!   handler are never closed for room; they end on their own or by the body timeout. Accepting
//!   stops while every slot is busy (new clients wait in the kernel's backlog).
//! - **Per-client cap**: since busy connections are never closed for room, one address sending
//!   slow bodies on every slot would keep everyone else waiting. A TCP peer (an IPv6 /64) may hold
//!   `max_connections_per_client` connections; one more is closed at accept. Trusted proxies are
//!   exempt: their connections carry many clients.
//! - **Body budget**: request body bytes buffered at once, across all connections, are bounded by
//!   `max_buffered_body_bytes`. Each frame costs its bytes plus [`FRAME_OVERHEAD`], so a body sent
//!   in one-byte chunks pays for its frames too. A frame that does not fit is refused: the request
//!   is answered `503 unavailable` with `Retry-After` and the connection closed, so nothing beyond
//!   the budget is read; a body that could not fit even in an empty budget is answered
//!   `413 payload_too_large` instead, since retrying would never help. Per-connection read buffers
//!   are bounded too ([`MAX_BUF`]).
//!
//! Shutdown (the server's `stopping` turning true): the listener closes, idle connections close,
//! requests in flight are answered, and connections still open after the grace period are dropped.

use crate::ApiError;
use crate::client::TrustedProxies;
use crate::limits::AddressKey;
use crate::metrics::Metrics;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, header};
use futures_util::FutureExt;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

/// The most a connection buffers of what it reads (headers, body frames not yet taken by a
/// handler). hyper's default (about 400 KB) times a thousand connections was most of the memory
/// of a connection storm; headers of any sender we serve fit in far less.
pub const MAX_BUF: usize = 32 * 1024;

/// File descriptors kept for everything but client connections: the database (SQLite's files, or
/// the PostgreSQL pool), the log files, the listeners, intel files.
const FD_HEADROOM: u64 = 256;

/// How often a full server looks again for an idle connection to close when every one was busy.
const AT_CAP_RETRY: Duration = Duration::from_millis(100);

/// The default connection cap when the process may open more than twice as many files.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// What a body frame costs the budget beyond its bytes. Each frame is a buffer handle (and pins
/// the read buffer it was cut from) until it is consumed: a 1 MiB body sent as one-byte chunks is
/// a million frames, tens of megabytes held for one megabyte of data counted.
pub const FRAME_OVERHEAD: usize = 128;

/// What one connection and all of them together may hold and how long they may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From accept (or a later request's first byte) to complete headers.
    pub header_timeout: Duration,
    /// From a request's headers to the end of its body.
    pub body_timeout: Duration,
    /// A keep-alive connection without a request.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections one client address (a TCP peer that is not a trusted proxy; an IPv6 /64) may
    /// hold at once; `None`: [`ConnectionLimits::per_client_cap`]'s default.
    pub max_connections_per_client: Option<usize>,
    /// Request body bytes held at once across all connections.
    pub max_buffered_body_bytes: usize,
}

/// The defaults, named once for the library and `tw-cli serve`'s flags.
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_BODY_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
pub const DEFAULT_MAX_BUFFERED_BODY_BYTES: u64 = 64 * 1024 * 1024;

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(DEFAULT_HEADER_TIMEOUT_SECS),
            body_timeout: Duration::from_secs(DEFAULT_BODY_TIMEOUT_SECS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            max_connections: default_max_connections(),
            max_connections_per_client: None,
            max_buffered_body_bytes: DEFAULT_MAX_BUFFERED_BODY_BYTES as usize,
        }
    }
}

/// The process's open-file limit (soft), when it can be read.
pub fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct we own; nothing else is touched.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        if rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY {
            // rlim_t is u64 on Linux, not on every unix.
            #[allow(clippy::unnecessary_cast)]
            return Some(lim.rlim_cur as u64);
        }
        None
    }
    #[cfg(not(unix))]
    None
}

/// [`DEFAULT_MAX_CONNECTIONS`], or half the open-file limit when that is lower (a 1024-file
/// process gets 512), so the database and log files always find a descriptor.
pub fn default_max_connections() -> usize {
    match open_file_limit() {
        Some(n) => (n / 2).clamp(16, DEFAULT_MAX_CONNECTIONS as u64) as usize,
        None => DEFAULT_MAX_CONNECTIONS,
    }
}

impl ConnectionLimits {
    /// Connections one client address may hold: as set, or an eighth of the cap (at least 8), so
    /// one address keeps at most that share of the slots busy and well-behaved senders, which
    /// use a few connections each, never meet it.
    pub fn per_client_cap(&self) -> usize {
        self.max_connections_per_client.unwrap_or((self.max_connections / 8).max(8)).max(1)
    }

    /// Warnings about limits that work against each other: a cap that leaves too few
    /// descriptors for everything else, a budget that cannot hold two bodies of the default size.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(limit) = open_file_limit()
            && self.max_connections as u64 + FD_HEADROOM > limit
        {
            out.push(format!(
                "max connections {} leaves fewer than {FD_HEADROOM} of the process's {limit} file descriptors for the database and logs; \
                 lower --max-connections or raise the limit (ulimit -n)",
                self.max_connections
            ));
        }
        let body = tw_store::DEFAULT_MAX_BODY_BYTES;
        if (self.max_buffered_body_bytes as u64) < 2 * body {
            out.push(format!(
                "max buffered body bytes {} is less than twice the default max_body_bytes of a source ({body}): bodies arriving together \
                 are refused 503 while one is read, and a body larger than the whole budget is refused 413; raise --max-buffered-body-bytes",
                self.max_buffered_body_bytes
            ));
        }
        out
    }
}

/// Why a request body could not be read: the handler sees it as a body error, the client gets
/// the matching answer ([`BodyWatch::answer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the server is holding as many request bodies as it may; retry later")]
    BudgetExhausted,
    /// The body (declared, or its frames with their overhead) exceeds the whole budget: it would
    /// never fit, however long the client waited.
    #[error("the request body is larger than the server can hold at once")]
    TooLarge,
    #[error("the request body was not received in time")]
    TimedOut,
}

impl BodyError {
    /// The error a request whose body was cut short is refused with; `limit`: the limit a body
    /// too large exceeded. The connection layer's answer and the intake's own error (and so its
    /// delivery record and error metrics) take their status and code from here, so they agree.
    pub fn api_error(self, limit: u64) -> ApiError {
        match self {
            // Too many bodies held at once: retry later.
            BodyError::BudgetExhausted => ApiError::Unavailable,
            BodyError::TooLarge => ApiError::PayloadTooLarge(limit),
            // The sender stopped sending (or sent a broken chunked body): the client is answered
            // 408 and the connection closed.
            BodyError::TimedOut => ApiError::RequestTimeout,
        }
    }

    /// The [`BodyError`] somewhere in an error's chain (body errors reach handlers wrapped).
    pub fn find(e: &(dyn std::error::Error + 'static)) -> Option<BodyError> {
        let mut cur = Some(e);
        while let Some(e) = cur {
            if let Some(b) = e.downcast_ref::<BodyError>() {
                return Some(*b);
            }
            cur = e.source();
        }
        None
    }
}

/// Milliseconds on the server's clock; `NONE` for "not set".
type Millis = u64;
const NONE: Millis = u64::MAX;

/// One open connection, as the watchdog and the connection cap see it.
struct Conn {
    /// Requests of this connection in a handler or being answered.
    busy: AtomicUsize,
    /// When it last had no request (accept, or its last response done).
    idle_since: AtomicU64,
    /// When the bytes of the next request began to arrive (`NONE`: none yet).
    head_since: AtomicU64,
    /// Pokes the watchdog when the phase changes to one whose deadline comes before its next
    /// look ([`Conn::changed`]).
    changed: Notify,
    /// When the watchdog looks next, whatever happens meanwhile.
    wake_at: AtomicU64,
    /// What the connection was told: [`OPEN`], [`EVICT`] (room for another, withdrawn if a
    /// request reached a handler meanwhile) or [`KILL`] (the end of the grace period).
    closing: AtomicU8,
    close: Notify,
    /// Set when a body was refused unread: the socket is drained a moment before it is closed.
    linger: AtomicBool,
}

/// What a connection is doing, for its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request is in a handler or being answered: only the body timeout applies.
    Busy,
    /// Waiting for the next request since then.
    Idle(Millis),
    /// Headers arriving since then.
    Head(Millis),
}

/// Values of [`Conn::closing`].
const OPEN: u8 = 0;
const EVICT: u8 = 1;
const KILL: u8 = 2;

/// Why the server closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    HeaderTimeout,
    IdleTimeout,
    /// Closed to make room at the connection cap.
    Evicted,
    /// Closed at accept: its address already held its share of the connections.
    PerClientCap,
    /// Still open at the end of the grace period.
    GraceEnded,
}

impl Closed {
    fn label(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Evicted => "evicted",
            Closed::PerClientCap => "per_client_cap",
            Closed::GraceEnded => "grace_ended",
        }
    }
}

/// The deadline of a phase, and what passing it means.
fn deadline(phase: Phase, limits: &ConnectionLimits) -> Option<(Millis, Closed)> {
    match phase {
        Phase::Busy => None,
        Phase::Idle(since) => Some((since.saturating_add(millis(limits.idle_timeout)), Closed::IdleTimeout)),
        Phase::Head(since) => Some((since.saturating_add(millis(limits.header_timeout)), Closed::HeaderTimeout)),
    }
}

/// A timeout in [`Millis`].
fn millis(d: Duration) -> Millis {
    d.as_millis().min(u128::from(u32::MAX)) as u64
}

impl Conn {
    fn new(now: Millis) -> Conn {
        Conn {
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            // A client connects to send a request: the header timeout runs from the accept.
            head_since: AtomicU64::new(now),
            changed: Notify::new(),
            wake_at: AtomicU64::new(NONE),
            closing: AtomicU8::new(OPEN),
            close: Notify::new(),
            linger: AtomicBool::new(false),
        }
    }

    /// After a change of phase: wakes the watchdog only when the new phase's deadline comes
    /// before the watchdog's next look. Every request changes phase three times (its first bytes,
    /// its handler, its answer); waking the connection's task for each polled the connection and
    /// re-armed its timer twice more per request than the request itself did. A later deadline, or
    /// none (a request in its handler), is found when the watchdog looks as planned. The phase is
    /// stored before `wake_at` is read here, and the watchdog stores `wake_at` before it reads the
    /// phase again: one of the two sees the other's write.
    fn changed(&self, limits: &ConnectionLimits) {
        if let Some((at, _)) = deadline(self.phase(), limits)
            && at < self.wake_at.load(Ordering::SeqCst)
        {
            self.changed.notify_one();
        }
    }

    fn phase(&self) -> Phase {
        if self.busy.load(Ordering::SeqCst) > 0 {
            return Phase::Busy;
        }
        match self.head_since.load(Ordering::SeqCst) {
            NONE => Phase::Idle(self.idle_since.load(Ordering::SeqCst)),
            since => Phase::Head(since),
        }
    }

    /// When it last showed life, for the order of eviction: the start of the request whose
    /// headers are arriving, or the end of its last response. A keep-alive sender that has just
    /// begun a request thus outranks a connection that has been silent since its accept. `None`
    /// while a request is in a handler (never evicted).
    fn last_active(&self) -> Option<Millis> {
        match self.phase() {
            Phase::Busy => None,
            Phase::Idle(since) => Some(since),
            Phase::Head(since) => Some(since.max(self.idle_since.load(Ordering::SeqCst))),
        }
    }

    /// Tells the watchdog to close the connection: `EVICT` or `KILL`.
    fn shut(&self, how: u8) {
        self.closing.fetch_max(how, Ordering::SeqCst);
        self.close.notify_one();
    }

    /// Why the connection closes now that it was told to, or `None` when it stays: an eviction
    /// decided while it looked idle is withdrawn if a request reached a handler since, rather
    /// than cut that request off mid-way. The end of the grace period closes it regardless.
    fn close_now(&self) -> Option<Closed> {
        match self.closing.load(Ordering::SeqCst) {
            KILL => Some(Closed::GraceEnded),
            EVICT if self.phase() == Phase::Busy => {
                // A kill arriving in between wins.
                match self.closing.compare_exchange(EVICT, OPEN, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => None,
                    Err(_) => Some(Closed::GraceEnded),
                }
            }
            EVICT => Some(Closed::Evicted),
            _ => None,
        }
    }
}

/// The connection to close for room: the one whose last activity is the oldest, among those not
/// busy and not already closing.
fn eviction_candidate<'a>(conns: impl Iterator<Item = &'a Arc<Conn>>) -> Option<&'a Arc<Conn>> {
    conns
        .filter(|c| c.closing.load(Ordering::SeqCst) == OPEN)
        .filter_map(|c| Some((c.last_active()?, c)))
        .min_by_key(|(since, _)| *since)
        .map(|(_, c)| c)
}

/// What every connection shares.
struct Shared {
    limits: ConnectionLimits,
    epoch: Instant,
    slots: Arc<Semaphore>,
    budget: Arc<Semaphore>,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
    /// When the cap was last reported in the log (once a minute at most: a storm would flood it).
    warned_at: AtomicU64,
    /// Peers whose connections carry many clients, so are not held to the per-client cap.
    trusted: Arc<TrustedProxies>,
    /// Open connections (and sockets still lingering) per client address under the per-client cap.
    clients: Mutex<HashMap<AddressKey, usize>>,
    /// Pokes the accept loop when an eviction it waits for was withdrawn.
    reprieved: Notify,
    /// When the per-client cap was last reported in the log.
    per_client_warned_at: AtomicU64,
}

/// One connection's place under its address's per-client cap, given back when its socket closes.
struct ClientShare {
    shared: Arc<Shared>,
    key: AddressKey,
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let mut clients = self.shared.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = clients.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                clients.remove(&self.key);
            }
        }
    }
}

/// What an open socket holds until it is closed (lingering included): its slot under the
/// connection cap, and its place under its address's cap.
struct Held {
    _slot: OwnedSemaphorePermit,
    _client: Option<ClientShare>,
}

impl Shared {
    fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as u64
    }

    fn at(&self, ms: Millis) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Tells the connection idle the longest (no request in a handler) to close; false when there
    /// is none.
    fn evict_oldest_idle(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        match eviction_candidate(open.values()) {
            Some(c) => {
                c.shut(EVICT);
                true
            }
            None => false,
        }
    }

    /// A place under the per-client cap for a connection from `peer`: `Ok(None)` for a trusted
    /// proxy, `Err` with the address when it holds its share already.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Option<ClientShare>, AddressKey> {
        if self.trusted.contains(peer) {
            return Ok(None);
        }
        let key = AddressKey::of(peer);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let n = clients.entry(key).or_insert(0);
        if *n >= self.limits.per_client_cap() {
            return Err(key);
        }
        *n += 1;
        Ok(Some(ClientShare { shared: self.clone(), key }))
    }

    /// True at most once a minute per `last` (a storm would flood the log otherwise).
    fn once_a_minute(&self, last: &AtomicU64) -> bool {
        let now = self.now();
        let was = last.load(Ordering::SeqCst);
        if was != NONE && now.saturating_sub(was) < 60_000 {
            return false;
        }
        last.compare_exchange(was, now, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    /// Says in the log, once a minute at most, that an address met the per-client cap.
    fn warn_per_client_cap(&self, client: AddressKey) {
        if self.once_a_minute(&self.per_client_warned_at) {
            let max_connections_per_client = self.limits.per_client_cap();
            tracing::warn!(target: "api", %client, max_connections_per_client,
                "a client address holds as many connections as it may; its further connections are closed at accept (said once a minute at most)");
        }
    }

    /// Says in the log, once a minute at most, that the cap is reached.
    fn warn_at_cap(&self, evicted: bool) {
        if !self.once_a_minute(&self.warned_at) {
            return;
        }
        let max_connections = self.limits.max_connections;
        if evicted {
            tracing::warn!(target: "api", max_connections, "connection cap reached; closing the connections idle the longest to make room");
        } else {
            tracing::warn!(target: "api", max_connections, "connection cap reached and every connection is busy; new connections wait");
        }
    }

    fn close_all(&self) {
        for c in self.open.lock().unwrap_or_else(|p| p.into_inner()).values() {
            c.shut(KILL);
        }
    }
}

/// Serves `router` on `listener` under `limits` until `stopping` turns true, then drains: idle
/// connections close, requests in flight are answered, and whatever is still open after `grace`
/// is dropped. Returns when every connection is gone. `name` labels its gauges (`api`, `metrics`);
/// connections from `trusted` proxies are not held to the per-client cap.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    trusted: Arc<TrustedProxies>,
    metrics: Arc<Metrics>,
    stopping: watch::Receiver<bool>,
    grace: Duration,
) {
    let limits = ConnectionLimits {
        max_connections: limits.max_connections.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)),
        max_buffered_body_bytes: limits.max_buffered_body_bytes.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)),
        ..limits
    };
    let shared = Arc::new(Shared {
        limits,
        epoch: Instant::now(),
        slots: Arc::new(Semaphore::new(limits.max_connections)),
        budget: Arc::new(Semaphore::new(limits.max_buffered_body_bytes)),
        open: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        metrics,
        warned_at: AtomicU64::new(NONE),
        trusted,
        clients: Mutex::new(HashMap::new()),
        reprieved: Notify::new(),
        per_client_warned_at: AtomicU64::new(NONE),
    });
    tokio::spawn(report(name, shared.clone(), stopping.clone()));
    let stop = stopped(stopping.clone());
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset before accept: wait a
                    // moment rather than spin.
                    tracing::warn!(target: "api", error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        // Before a slot is sought: an address over its share must not make others' connections
        // be evicted for room.
        let client = match shared.admit(peer.ip()) {
            Ok(client) => client,
            Err(key) => {
                drop(stream);
                shared.metrics.count("http_connections_closed_total", &[("reason", Closed::PerClientCap.label())], 1);
                shared.warn_per_client_cap(key);
                continue;
            }
        };
        let slot = loop {
            if let Ok(slot) = shared.slots.clone().try_acquire_owned() {
                break Some(slot);
            }
            let evicted = shared.evict_oldest_idle();
            shared.warn_at_cap(evicted);
            // Until a slot frees: the evicted connection closing, or, when every one was busy
            // (or the eviction was withdrawn), one of them ending or turning idle (looked for
            // again shortly).
            tokio::select! {
                slot = shared.slots.clone().acquire_owned() => break slot.ok(),
                _ = shared.reprieved.notified() => {}
                _ = tokio::time::sleep(AT_CAP_RETRY), if !evicted => {}
                _ = &mut stop => break None,
            }
        };
        let Some(slot) = slot else { break };
        let _ = stream.set_nodelay(true);
        let held = Held { _slot: slot, _client: client };
        tokio::spawn(connection(shared.clone(), router.clone(), stream, peer, held, stopping.clone()));
    }
    drop(listener);
    let all = limits.max_connections as u32;
    if tokio::time::timeout(grace, shared.slots.acquire_many(all)).await.is_err() {
        let open = shared.open.lock().unwrap_or_else(|p| p.into_inner()).len();
        tracing::warn!(target: "api", grace_secs = grace.as_secs(), open, "connections still open after the grace period; closing them");
        shared.close_all();
        let _ = shared.slots.acquire_many(all).await;
    }
}

/// Sets the gauges of open connections and buffered body bytes once a second, until the stop.
async fn report(name: &'static str, shared: Arc<Shared>, stopping: watch::Receiver<bool>) {
    let stop = stopped(stopping);
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        let open = shared.open.lock().unwrap_or_else(|p| p.into_inner()).len();
        let buffered = shared.limits.max_buffered_body_bytes.saturating_sub(shared.budget.available_permits());
        shared.metrics.gauge("http_connections_open", &[("listener", name)], open as f64);
        shared.metrics.gauge("http_buffered_body_bytes", &[("listener", name)], buffered as f64);
    }
}

/// Completes once `stopping` is true; never when its sender is dropped without stopping (a
/// dropped server handle keeps serving, as it always did).
async fn stopped(mut stopping: watch::Receiver<bool>) {
    loop {
        if *stopping.borrow_and_update() {
            return;
        }
        if stopping.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Serves one connection under its watchdog.
async fn connection(shared: Arc<Shared>, router: Router, stream: TcpStream, peer: SocketAddr, held: Held, stopping: watch::Receiver<bool>) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let conn = Arc::new(Conn::new(shared.now()));
    shared.open.lock().unwrap_or_else(|p| p.into_inner()).insert(id, conn.clone());
    let io = hyper_util::rt::TokioIo::new(Watched { inner: Some(stream), held: Some(held), conn: conn.clone(), shared: shared.clone() });
    let service = ConnService { router, peer, conn: conn.clone(), shared: shared.clone() };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.max_buf_size(MAX_BUF);
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    let stop = stopped(stopping);
    tokio::pin!(stop);
    let mut draining = false;
    let closed = loop {
        let due = deadline(conn.phase(), &shared.limits);
        let wake = match due {
            Some((at, _)) => at,
            // Busy: looked at again after the shorter of the two timeouts, which no deadline of a
            // later phase can come before (a phase that tightens it notifies, see `Conn::changed`).
            None => shared.now().saturating_add(millis(shared.limits.header_timeout.min(shared.limits.idle_timeout)).max(1)),
        };
        conn.wake_at.store(wake, Ordering::SeqCst);
        if deadline(conn.phase(), &shared.limits) != due {
            // The phase changed meanwhile, and may not have seen the new `wake_at`.
            continue;
        }
        let wake = shared.at(wake);
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(target: "api", error = %e, "connection ended with an error");
                }
                break None;
            }
            _ = conn.changed.notified() => {}
            _ = conn.close.notified() => match conn.close_now() {
                Some(why) => break Some(why),
                None => shared.reprieved.notify_one(),
            },
            _ = &mut stop, if !draining => {
                draining = true;
                served.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(wake) => {
                if let Some((at, why)) = deadline(conn.phase(), &shared.limits)
                    && shared.now() >= at
                {
                    break Some(why);
                }
            }
        }
    };
    shared.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    // Evictions are counted once carried out (one may be withdrawn); the end of the grace period
    // is not one.
    if let Some(why @ (Closed::HeaderTimeout | Closed::IdleTimeout | Closed::Evicted)) = closed {
        shared.metrics.count("http_connections_closed_total", &[("reason", why.label())], 1);
        tracing::debug!(target: "api", %peer, reason = why.label(), "connection closed");
    }
}

/// The TCP stream, noting when a request's first bytes arrive on an idle connection. It holds the
/// connection's slot and client share, so a socket still lingering counts against both caps.
struct Watched {
    /// Always `Some` until dropped.
    inner: Option<TcpStream>,
    held: Option<Held>,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
}

impl Watched {
    fn stream(&mut self) -> std::io::Result<&mut TcpStream> {
        self.inner.as_mut().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }
}

/// How long and how much a socket whose request body was refused unread is drained before it is
/// closed: closed with unread bytes, the kernel resets it, and the client may lose the answer
/// (503, 408) before it reads it. What is drained is discarded, never held.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 * 1024 * 1024;

impl Drop for Watched {
    fn drop(&mut self) {
        let (Some(mut stream), held) = (self.inner.take(), self.held.take()) else { return };
        if !self.conn.linger.load(Ordering::SeqCst) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        rt.spawn(async move {
            use tokio::io::AsyncReadExt;
            let _held = held;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
            let mut buf = [0u8; 8192];
            let mut left = LINGER_BYTES;
            let drain = async {
                while left > 0 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => left = left.saturating_sub(n),
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER, drain).await;
        });
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = match self.stream() {
            Ok(s) => Pin::new(s).poll_read(cx, buf),
            Err(e) => return Poll::Ready(Err(e)),
        };
        if buf.filled().len() > before
            && self.conn.busy.load(Ordering::SeqCst) == 0
            && self.conn.head_since.compare_exchange(NONE, self.shared.now(), Ordering::SeqCst, Ordering::SeqCst).is_ok()
        {
            self.conn.changed(&self.shared.limits);
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// Marks a connection busy from a request's headers until its response is written.
struct BusyGuard {
    conn: Arc<Conn>,
    shared: Arc<Shared>,
}

impl BusyGuard {
    fn enter(conn: &Arc<Conn>, shared: &Arc<Shared>) -> BusyGuard {
        conn.busy.fetch_add(1, Ordering::SeqCst);
        conn.head_since.store(NONE, Ordering::SeqCst);
        // No deadline while busy: nothing for the watchdog to do sooner.
        BusyGuard { conn: conn.clone(), shared: shared.clone() }
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.conn.idle_since.store(self.shared.now(), Ordering::SeqCst);
        self.conn.busy.fetch_sub(1, Ordering::SeqCst);
        self.conn.changed(&self.shared.limits);
    }
}

/// The router, called for each request of one connection.
#[derive(Clone)]
struct ConnService {
    router: Router,
    peer: SocketAddr,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Answer>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let busy = BusyGuard::enter(&self.conn, &self.shared);
        let watch = Arc::new(BodyWatch::default());
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        let total = self.shared.limits.max_buffered_body_bytes;
        let body = Budgeted {
            inner: body,
            budget: self.shared.budget.clone(),
            total,
            started: false,
            watch: watch.clone(),
            deadline: Instant::now() + self.shared.limits.body_timeout,
            timer: None,
        };
        let req = Request::from_parts(parts, axum::body::Body::new(body));
        let mut router = self.router.clone();
        let metrics = self.shared.metrics.clone();
        let peer = self.peer;
        let conn = self.conn.clone();
        Box::pin(async move {
            // A panic in the router or a handler answers 500 in the error shape, and the
            // connection goes on (as tower-http's `CatchPanicLayer` would, once per request here
            // rather than once per route, see `routes::router`).
            let called = std::panic::catch_unwind(AssertUnwindSafe(|| tower_service::Service::call(&mut router, req)));
            let resp = match called {
                Ok(future) => match AssertUnwindSafe(future).catch_unwind().await {
                    Ok(Ok(resp)) => resp,
                    Ok(Err(never)) => match never {},
                    Err(panic) => crate::routes::panic_response(panic),
                },
                Err(panic) => crate::routes::panic_response(panic),
            };
            let mut resp = watch.answer(resp, &metrics, peer, total);
            crate::routes::nosniff(resp.headers_mut());
            if watch.failed.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                conn.linger.store(true, Ordering::SeqCst);
            }
            drop(watch);
            Ok(resp.map(|body| Answer { inner: body, _busy: busy }))
        })
    }
}

/// A response body that keeps its connection busy until it is written.
struct Answer {
    inner: axum::body::Body,
    _busy: BusyGuard,
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What became of one request's body: the budget it holds until the request is answered, and
/// why it was cut short.
#[derive(Default)]
struct BodyWatch {
    held: Mutex<Option<OwnedSemaphorePermit>>,
    failed: Mutex<Option<BodyError>>,
}

impl BodyWatch {
    /// Takes `n` bytes of the budget (of `total` in all) for this request. `TooLarge` when the
    /// request would then hold more than the whole budget, `BudgetExhausted` when the bytes are
    /// held by others now.
    fn reserve(&self, budget: &Arc<Semaphore>, total: usize, n: usize) -> Result<(), BodyError> {
        if n == 0 {
            return Ok(());
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let mine = held.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
        if mine.saturating_add(n) > total {
            return Err(BodyError::TooLarge);
        }
        let n = u32::try_from(n).map_err(|_| BodyError::TooLarge)?;
        let permit = budget.clone().try_acquire_many_owned(n).map_err(|_| BodyError::BudgetExhausted)?;
        match held.as_mut() {
            Some(h) => OwnedSemaphorePermit::merge(h, permit),
            None => *held = Some(permit),
        }
        Ok(())
    }

    fn fail(&self, why: BodyError) {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(why);
    }

    /// The handler's response, or, when the body was cut short, the answer to that: whatever the
    /// handler made of a body that stopped (a 400, a 413), the client is told why. The headers the
    /// router set are kept; the connection is closed, since the rest of the body was never read.
    /// `total`: the whole body budget, which a body too large exceeded.
    fn answer(&self, resp: Response<axum::body::Body>, metrics: &Metrics, peer: SocketAddr, total: usize) -> Response<axum::body::Body> {
        let Some(why) = *self.failed.lock().unwrap_or_else(|p| p.into_inner()) else { return resp };
        let refused = why.api_error(total as u64);
        let (status, code) = (refused.status(), refused.code());
        metrics.count("http_request_bodies_refused_total", &[("reason", code)], 1);
        tracing::warn!(target: "api", %peer, status = status.as_u16(), code, "request body refused: {why}");
        let (mut parts, _) = resp.into_parts();
        parts.status = status;
        let message = match why {
            BodyError::BudgetExhausted => "The server is receiving too many request bodies at once; retry later",
            BodyError::TooLarge => {
                "The request body is larger than the server can hold at once (very small chunks count extra); send less, in larger chunks"
            }
            BodyError::TimedOut => "The request body was not received in time",
        };
        let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
        parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        if why == BodyError::BudgetExhausted {
            parts.headers.insert(header::RETRY_AFTER, HeaderValue::from_static(crate::error::RETRY_AFTER_SECS));
        }
        Response::from_parts(parts, axum::body::Body::from(body))
    }
}

/// A request body that takes each frame's cost from the budget and must end by its deadline.
struct Budgeted {
    inner: Incoming,
    budget: Arc<Semaphore>,
    /// The whole budget: a body declaring more is refused before a byte of it is read.
    total: usize,
    /// Whether the declared length was checked (at the first poll, so a handler that never reads
    /// the body is not refused for it).
    started: bool,
    watch: Arc<BodyWatch>,
    deadline: Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl HttpBody for Budgeted {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if !this.started {
            this.started = true;
            // Retrying (the 503's advice) would never help such a body: refused at once, and
            // before a `100 Continue` invites it.
            if this.inner.size_hint().lower() > this.total as u64 {
                this.watch.fail(BodyError::TooLarge);
                return Poll::Ready(Some(Err(Box::new(BodyError::TooLarge))));
            }
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // A sender dripping bytes keeps the body going; the deadline holds regardless.
                if Instant::now() >= this.deadline {
                    this.watch.fail(BodyError::TimedOut);
                    return Poll::Ready(Some(Err(Box::new(BodyError::TimedOut))));
                }
                let cost = frame.data_ref().map_or(0, Bytes::len) + FRAME_OVERHEAD;
                if let Err(why) = this.watch.reserve(&this.budget, this.total, cost) {
                    this.watch.fail(why);
                    return Poll::Ready(Some(Err(Box::new(why))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.watch.fail(BodyError::TimedOut);
                    return Poll::Ready(Some(Err(Box::new(BodyError::TimedOut))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(2),
            body_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(5),
            max_connections: 4,
            max_connections_per_client: None,
            max_buffered_body_bytes: 100,
        }
    }

    #[test]
    fn each_phase_has_its_deadline() {
        let l = limits();
        assert_eq!(deadline(Phase::Busy, &l), None);
        assert_eq!(deadline(Phase::Idle(1_000), &l), Some((6_000, Closed::IdleTimeout)));
        assert_eq!(deadline(Phase::Head(1_000), &l), Some((3_000, Closed::HeaderTimeout)));
    }

    #[test]
    fn a_fresh_connection_owes_its_headers_and_a_finished_one_idles() {
        let c = Conn::new(500);
        assert_eq!(c.phase(), Phase::Head(500), "the header timeout runs from the accept");
        c.busy.store(1, Ordering::SeqCst);
        c.head_since.store(NONE, Ordering::SeqCst);
        assert_eq!(c.phase(), Phase::Busy);
        c.idle_since.store(900, Ordering::SeqCst);
        c.busy.store(0, Ordering::SeqCst);
        assert_eq!(c.phase(), Phase::Idle(900));
    }

    #[test]
    fn the_budget_is_held_until_the_request_ends() {
        let budget = Arc::new(Semaphore::new(100));
        let a = BodyWatch::default();
        assert_eq!(a.reserve(&budget, 100, 60), Ok(()));
        assert_eq!(a.reserve(&budget, 100, 30), Ok(()));
        let b = BodyWatch::default();
        assert_eq!(b.reserve(&budget, 100, 20), Err(BodyError::BudgetExhausted), "90 of 100 are held");
        assert_eq!(b.reserve(&budget, 100, 10), Ok(()));
        drop(a);
        assert_eq!(budget.available_permits(), 90);
    }

    #[test]
    fn a_body_that_could_never_fit_is_too_large_not_a_retry_later() {
        let budget = Arc::new(Semaphore::new(100));
        let a = BodyWatch::default();
        assert_eq!(a.reserve(&budget, 100, 80), Ok(()));
        // 80 + 30 exceeds the whole budget: waiting for others would not make it fit.
        assert_eq!(a.reserve(&budget, 100, 30), Err(BodyError::TooLarge));
        assert_eq!(BodyWatch::default().reserve(&budget, 100, 101), Err(BodyError::TooLarge));
    }

    #[test]
    fn the_per_client_cap_defaults_to_an_eighth_of_the_slots_and_at_least_eight() {
        let mut l = limits();
        assert_eq!(l.per_client_cap(), 8);
        l.max_connections = 1024;
        assert_eq!(l.per_client_cap(), 128);
        l.max_connections_per_client = Some(3);
        assert_eq!(l.per_client_cap(), 3);
    }

    #[test]
    fn a_small_budget_is_warned_about() {
        let mut l = limits();
        l.max_connections = 1;
        l.max_buffered_body_bytes = 1024 * 1024;
        assert!(l.warnings().iter().any(|w| w.contains("--max-buffered-body-bytes")), "{:?}", l.warnings());
        l.max_buffered_body_bytes = 64 * 1024 * 1024;
        assert!(!l.warnings().iter().any(|w| w.contains("--max-buffered-body-bytes")), "{:?}", l.warnings());
    }

    #[test]
    fn eviction_ranks_by_last_activity_and_spares_busy_connections() {
        // A keep-alive sender, idle since 100, began a request at 5,000; a silent connection was
        // accepted at 1,000. The silent one goes first.
        let sender = Arc::new(Conn::new(0));
        sender.idle_since.store(100, Ordering::SeqCst);
        sender.head_since.store(5_000, Ordering::SeqCst);
        let silent = Arc::new(Conn::new(1_000));
        let busy = Arc::new(Conn::new(0));
        busy.busy.store(1, Ordering::SeqCst);
        let all = [sender.clone(), silent.clone(), busy.clone()];
        assert!(Arc::ptr_eq(eviction_candidate(all.iter()).unwrap(), &silent));
        // Once it is told to go, the next is the sender; the busy one never.
        silent.shut(EVICT);
        assert!(Arc::ptr_eq(eviction_candidate(all.iter()).unwrap(), &sender));
        sender.shut(EVICT);
        assert!(eviction_candidate(all.iter()).is_none());
    }

    #[test]
    fn an_eviction_is_withdrawn_when_a_request_reached_a_handler_meanwhile() {
        let c = Conn::new(0);
        c.shut(EVICT);
        c.busy.store(1, Ordering::SeqCst);
        assert_eq!(c.close_now(), None, "a request in a handler is not cut off");
        assert_eq!(c.closing.load(Ordering::SeqCst), OPEN, "it may be chosen again once idle");
        c.busy.store(0, Ordering::SeqCst);
        c.shut(EVICT);
        assert_eq!(c.close_now(), Some(Closed::Evicted));
        // The end of the grace period closes a busy one too.
        let k = Conn::new(0);
        k.busy.store(1, Ordering::SeqCst);
        k.shut(EVICT);
        k.shut(KILL);
        assert_eq!(k.close_now(), Some(Closed::GraceEnded));
    }

    #[test]
    fn body_errors_are_found_through_wrappers() {
        let wrapped = axum::Error::new(BodyError::TimedOut);
        assert_eq!(BodyError::find(&wrapped), Some(BodyError::TimedOut));
        let other = std::io::Error::other("reset");
        assert_eq!(BodyError::find(&other), None);
    }

    /// The whole router is guarded, not each route: a handler's panic is a 500 in the error shape
    /// with `nosniff`, every other answer has `nosniff` too, and the server serves on.
    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_server_serves_on() {
        async fn handler(uri: axum::http::Uri) -> &'static str {
            if uri.path() == "/boom" {
                panic!("a handler's bug");
            }
            "fine"
        }
        // (A fallback, not `.route`: the server registers routes only through `routes::api_routes`.)
        let router = Router::new().fallback(handler);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop, stopping) = watch::channel(false);
        let metrics = Arc::new(Metrics::new());
        let trusted = Arc::new(TrustedProxies::new(Vec::new()));
        tokio::spawn(serve("test", listener, router, limits(), trusted, metrics, stopping, Duration::from_secs(1)));
        // One connection for both requests.
        let http = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
        let boom = http.get(format!("http://{addr}/boom")).send().await.unwrap();
        assert_eq!(boom.status(), 500);
        assert_eq!(boom.headers().get("x-content-type-options").unwrap(), "nosniff");
        let body: serde_json::Value = boom.json().await.unwrap();
        assert_eq!(body["error"]["code"], "internal_error", "{body}");
        assert!(!body.to_string().contains("a handler's bug"), "the panic's text is not sent: {body}");
        let fine = http.get(format!("http://{addr}/fine")).send().await.unwrap();
        assert_eq!(fine.status(), 200);
        assert_eq!(fine.headers().get("x-content-type-options").unwrap(), "nosniff");
        assert_eq!(fine.text().await.unwrap(), "fine");
    }
}
