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
//!   complete) is closed to make one. Connections with a request in a handler are never closed for
//!   room; they end on their own or by the body timeout. Accepting stops while every slot is busy
//!   (new clients wait in the kernel's backlog).
//! - **Body budget**: request body bytes buffered at once, across all connections, are bounded by
//!   `max_buffered_body_bytes`. A body frame that does not fit is refused: the request is answered
//!   `503 unavailable` with `Retry-After` and the connection closed, so nothing beyond the budget
//!   is read. Per-connection read buffers are bounded too ([`MAX_BUF`]).
//!
//! Shutdown (the server's `stopping` turning true): the listener closes, idle connections close,
//! requests in flight are answered, and connections still open after the grace period are dropped.

use crate::metrics::Metrics;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
    /// Request body bytes held at once across all connections.
    pub max_buffered_body_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: default_max_connections(),
            max_buffered_body_bytes: 64 * 1024 * 1024,
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
    /// A warning when the cap leaves too few descriptors for everything else.
    pub fn check(&self) -> Option<String> {
        let limit = open_file_limit()?;
        (self.max_connections as u64 + FD_HEADROOM > limit).then(|| {
            format!(
                "max connections {} leaves fewer than {FD_HEADROOM} of the process's {limit} file descriptors for the database and logs; \
                 lower --max-connections or raise the limit (ulimit -n)",
                self.max_connections
            )
        })
    }
}

/// Why a request body could not be read: the handler sees it as a body error, the client gets
/// the matching answer ([`BodyWatch::answer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the server is holding as many request bodies as it may; retry later")]
    BudgetExhausted,
    #[error("the request body was not received in time")]
    TimedOut,
}

impl BodyError {
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
    /// Pokes the watchdog when the phase changes.
    changed: Notify,
    /// Set when the connection must go now (room for another, or the end of the grace period).
    closing: AtomicBool,
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

/// Why the server closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    HeaderTimeout,
    IdleTimeout,
    /// Closed to make room at the connection cap.
    Evicted,
}

impl Closed {
    fn label(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Evicted => "evicted",
        }
    }
}

/// The deadline of a phase, and what passing it means.
fn deadline(phase: Phase, limits: &ConnectionLimits) -> Option<(Millis, Closed)> {
    let ms = |d: Duration| d.as_millis().min(u128::from(u32::MAX)) as u64;
    match phase {
        Phase::Busy => None,
        Phase::Idle(since) => Some((since.saturating_add(ms(limits.idle_timeout)), Closed::IdleTimeout)),
        Phase::Head(since) => Some((since.saturating_add(ms(limits.header_timeout)), Closed::HeaderTimeout)),
    }
}

impl Conn {
    fn new(now: Millis) -> Conn {
        Conn {
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            // A client connects to send a request: the header timeout runs from the accept.
            head_since: AtomicU64::new(now),
            changed: Notify::new(),
            closing: AtomicBool::new(false),
            close: Notify::new(),
            linger: AtomicBool::new(false),
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

    fn shut(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.close.notify_one();
    }
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
}

impl Shared {
    fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as u64
    }

    fn at(&self, ms: Millis) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Closes the connection idle the longest (no request in a handler); false when there is none.
    fn evict_oldest_idle(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = open
            .values()
            .filter(|c| !c.closing.load(Ordering::SeqCst))
            .filter_map(|c| match c.phase() {
                Phase::Busy => None,
                Phase::Idle(_) | Phase::Head(_) => Some((c.idle_since.load(Ordering::SeqCst), c)),
            })
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, c)) => {
                c.shut();
                true
            }
            None => false,
        }
    }

    /// Says in the log, once a minute at most, that the cap is reached.
    fn warn_at_cap(&self, evicted: bool) {
        let now = self.now();
        let last = self.warned_at.load(Ordering::SeqCst);
        if last != NONE && now.saturating_sub(last) < 60_000 {
            return;
        }
        if self.warned_at.compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst).is_err() {
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
            c.shut();
        }
    }
}

/// Serves `router` on `listener` under `limits` until `stopping` turns true, then drains: idle
/// connections close, requests in flight are answered, and whatever is still open after `grace`
/// is dropped. Returns when every connection is gone. `name` labels its gauges (`api`, `metrics`).
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
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
        let slot = loop {
            if let Ok(slot) = shared.slots.clone().try_acquire_owned() {
                break Some(slot);
            }
            let evicted = shared.evict_oldest_idle();
            if evicted {
                shared.metrics.count("http_connections_closed_total", &[("reason", Closed::Evicted.label())], 1);
            }
            shared.warn_at_cap(evicted);
            // Until a slot frees: the evicted connection closing, or, when every one was busy,
            // one of them ending or turning idle (looked for again shortly).
            tokio::select! {
                slot = shared.slots.clone().acquire_owned() => break slot.ok(),
                _ = tokio::time::sleep(AT_CAP_RETRY), if !evicted => {}
                _ = &mut stop => break None,
            }
        };
        let Some(slot) = slot else { break };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(shared.clone(), router.clone(), stream, peer, slot, stopping.clone()));
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
async fn connection(
    shared: Arc<Shared>,
    router: Router,
    stream: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
    stopping: watch::Receiver<bool>,
) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let conn = Arc::new(Conn::new(shared.now()));
    shared.open.lock().unwrap_or_else(|p| p.into_inner()).insert(id, conn.clone());
    let io = hyper_util::rt::TokioIo::new(Watched { inner: Some(stream), slot: Some(slot), conn: conn.clone(), shared: shared.clone() });
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
            Some((at, _)) => shared.at(at),
            // Busy: looked at again when the phase changes (and now and then regardless).
            None => Instant::now() + shared.limits.header_timeout.min(shared.limits.idle_timeout),
        };
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(target: "api", error = %e, "connection ended with an error");
                }
                break None;
            }
            _ = conn.changed.notified() => {}
            _ = conn.close.notified() => break Some(Closed::Evicted),
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
    // Evictions are counted where they are decided; the end of the grace period is not one.
    if let Some(why @ (Closed::HeaderTimeout | Closed::IdleTimeout)) = closed {
        shared.metrics.count("http_connections_closed_total", &[("reason", why.label())], 1);
        tracing::debug!(target: "api", %peer, reason = why.label(), "connection closed");
    }
}

/// The TCP stream, noting when a request's first bytes arrive on an idle connection. It holds the
/// connection's slot, so a socket still lingering counts against the cap.
struct Watched {
    /// Always `Some` until dropped.
    inner: Option<TcpStream>,
    slot: Option<OwnedSemaphorePermit>,
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
        let (Some(mut stream), slot) = (self.inner.take(), self.slot.take()) else { return };
        if !self.conn.linger.load(Ordering::SeqCst) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        rt.spawn(async move {
            use tokio::io::AsyncReadExt;
            let _slot = slot;
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
            self.conn.changed.notify_one();
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
        conn.changed.notify_one();
        BusyGuard { conn: conn.clone(), shared: shared.clone() }
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.conn.idle_since.store(self.shared.now(), Ordering::SeqCst);
        self.conn.busy.fetch_sub(1, Ordering::SeqCst);
        self.conn.changed.notify_one();
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
        let body = Budgeted {
            inner: body,
            budget: self.shared.budget.clone(),
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
            let resp = match tower_service::Service::call(&mut router, req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            let resp = watch.answer(resp, &metrics, peer);
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
    /// Takes `n` bytes of the budget for this request; false when they are not there.
    fn reserve(&self, budget: &Arc<Semaphore>, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        let Ok(n) = u32::try_from(n) else { return false };
        match budget.clone().try_acquire_many_owned(n) {
            Ok(permit) => {
                let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                match held.as_mut() {
                    Some(h) => OwnedSemaphorePermit::merge(h, permit),
                    None => *held = Some(permit),
                }
                true
            }
            Err(_) => false,
        }
    }

    fn fail(&self, why: BodyError) {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(why);
    }

    /// The handler's response, or, when the body was cut short, the answer to that: whatever the
    /// handler made of a body that stopped (a 400, a 413), the client is told why. The headers the
    /// router set are kept; the connection is closed, since the rest of the body was never read.
    fn answer(&self, resp: Response<axum::body::Body>, metrics: &Metrics, peer: SocketAddr) -> Response<axum::body::Body> {
        let Some(why) = *self.failed.lock().unwrap_or_else(|p| p.into_inner()) else { return resp };
        let (status, code) = match why {
            BodyError::BudgetExhausted => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            BodyError::TimedOut => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
        };
        metrics.count("http_request_bodies_refused_total", &[("reason", code)], 1);
        tracing::warn!(target: "api", %peer, status = status.as_u16(), code, "request body refused: {why}");
        let (mut parts, _) = resp.into_parts();
        parts.status = status;
        let message = match why {
            BodyError::BudgetExhausted => "The server is receiving too many request bodies at once; retry later",
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

/// A request body that takes each frame's bytes from the budget and must end by its deadline.
struct Budgeted {
    inner: Incoming,
    budget: Arc<Semaphore>,
    watch: Arc<BodyWatch>,
    deadline: Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl HttpBody for Budgeted {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // A sender dripping bytes keeps the body going; the deadline holds regardless.
                if Instant::now() >= this.deadline {
                    this.watch.fail(BodyError::TimedOut);
                    return Poll::Ready(Some(Err(Box::new(BodyError::TimedOut))));
                }
                let n = frame.data_ref().map_or(0, Bytes::len);
                if !this.watch.reserve(&this.budget, n) {
                    this.watch.fail(BodyError::BudgetExhausted);
                    return Poll::Ready(Some(Err(Box::new(BodyError::BudgetExhausted))));
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
        assert!(a.reserve(&budget, 60));
        assert!(a.reserve(&budget, 30));
        let b = BodyWatch::default();
        assert!(!b.reserve(&budget, 20), "90 of 100 are held");
        assert!(b.reserve(&budget, 10));
        drop(a);
        assert_eq!(budget.available_permits(), 90);
    }

    #[test]
    fn body_errors_are_found_through_wrappers() {
        let wrapped = axum::Error::new(BodyError::TimedOut);
        assert_eq!(BodyError::find(&wrapped), Some(BodyError::TimedOut));
        let other = std::io::Error::other("reset");
        assert_eq!(BodyError::find(&other), None);
    }
}
