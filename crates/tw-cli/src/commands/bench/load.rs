//! The load generator: `concurrency` keep-alive HTTP/1.1 connections (bare hyper client
//! connections, one per task), each sending its next signed delivery as soon as the previous
//! answer has been read in full.

use super::payloads::Payloads;
use super::progress::Progress;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tw_core::Secret;

/// A request without an answer for this long counts as failed (and its connection is replaced).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed connect, so a dead server is not hammered in a tight loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// Where the deliveries go.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header.
    host: HeaderValue,
    /// The intake path, `/api/webhooks/<source>`.
    path: Uri,
}

impl Target {
    /// Deliveries to `path` at `addr`, announcing `host`.
    pub fn new(addr: SocketAddr, host: &str, path: &str) -> anyhow::Result<Target> {
        let host = HeaderValue::from_str(host).map_err(|_| anyhow::anyhow!("'{host}' is not a valid Host header"))?;
        let path = path.parse().map_err(|e| anyhow::anyhow!("'{path}' is not a valid request path: {e}"))?;
        Ok(Target { addr, host, path })
    }
}

/// How much load.
#[derive(Debug, Clone, Copy)]
pub enum Amount {
    /// This many deliveries in all.
    Requests(u64),
    /// Deliveries until this much time has passed (those in flight then are finished).
    For(Duration),
}

/// One load run's settings.
pub struct Load {
    pub target: Target,
    /// Signs every delivery.
    pub secret: Arc<Secret>,
    /// Connections, each with one request in flight at a time.
    pub concurrency: u32,
    pub amount: Amount,
    pub payloads: Arc<Payloads>,
}

/// What a load run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// Latency of every answered request (any status).
    pub latencies: Histogram,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests without an answer, by cause.
    pub transport_errors: BTreeMap<String, u64>,
    /// TCP connections opened (more than `concurrency` when the server closed some).
    pub connections: u64,
}

impl Outcome {
    /// Requests sent (answered or not).
    pub fn requests(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.transport_errors()
    }

    /// Requests without an answer.
    pub fn transport_errors(&self) -> u64 {
        self.transport_errors.values().sum()
    }

    /// Answers with a 2xx status.
    pub fn ok(&self) -> u64 {
        self.statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum()
    }

    /// Requests that got no 2xx answer.
    pub fn failed(&self) -> u64 {
        self.requests() - self.ok()
    }

    /// Requests per second over the whole run.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.requests() as f64 / secs } else { 0.0 }
    }

    /// The latency at quantile `q` (0 to 1, nearest rank), in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        self.latencies.quantile_us(q) as f64 / 1e3
    }

    /// Statuses and transport errors as one short line: `201: 300, timeout: 2`.
    pub fn status_summary(&self) -> String {
        let mut parts: Vec<String> = self.statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        parts.extend(self.transport_errors.iter().map(|(e, n)| format!("{e}: {n}")));
        if parts.is_empty() { "-".into() } else { parts.join(", ") }
    }
}

/// Counters shared by the connection tasks.
struct Shared {
    load: Load,
    /// The next delivery number to send.
    next: AtomicU64,
    /// Requests finished (answered or failed), for the progress line.
    done: AtomicU64,
    deadline: Option<Instant>,
}

/// Latencies in microseconds, in a log-linear histogram: exact below 1,024 µs, within 0.1%
/// above (1,024 buckets per power of two), the maximum exact. Its memory is bounded by the
/// slowest answer, not by the number of requests (a long `--duration` run keeps a few kB).
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

/// Buckets per power of two.
const SUB: u64 = 1024;
/// Latencies are clamped below this (2^36 µs, about 19 hours).
const MAX_US: u64 = (1 << 36) - 1;

impl Histogram {
    fn index(us: u64) -> usize {
        if us < SUB {
            return us as usize;
        }
        // us >> e falls in [SUB, 2 * SUB).
        let e = u64::from(63 - us.leading_zeros()) - SUB.trailing_zeros() as u64;
        (SUB + e * SUB + ((us >> e) - SUB)) as usize
    }

    /// The smallest latency that falls in bucket `i`.
    fn lower(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let (e, m) = ((i - SUB) / SUB, (i - SUB) % SUB + SUB);
        m << e
    }

    /// Counts one latency.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(MAX_US).min(MAX_US);
        let i = Self::index(us);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The latency at quantile `q` (nearest rank), in microseconds; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == self.total {
            return self.max_us;
        }
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::lower(i);
            }
        }
        self.max_us
    }
}

/// One connection task's tally.
#[derive(Default)]
struct Tally {
    latencies: Histogram,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    connections: u64,
}

/// Runs the load and returns what it measured; `label` names it on the progress line.
pub async fn run(load: Load, label: &'static str) -> Outcome {
    let (concurrency, amount) = (load.concurrency, load.amount);
    let started = Instant::now();
    let deadline = match amount {
        Amount::For(d) => Some(started + d),
        Amount::Requests(_) => None,
    };
    let shared = Arc::new(Shared { load, next: AtomicU64::new(0), done: AtomicU64::new(0), deadline });
    let progress = Progress::start(
        label,
        {
            let shared = shared.clone();
            move || shared.done.load(Ordering::Relaxed)
        },
        move |elapsed, done, rate| {
            let amount = match amount {
                Amount::Requests(total) => format!("{done}/{total} requests"),
                Amount::For(d) => format!("{done} requests, {:.0} s left", d.saturating_sub(elapsed).as_secs_f64()),
            };
            format!("{amount}  {rate:>8.0} req/s")
        },
    );
    let tasks: Vec<_> = (0..concurrency).map(|_| tokio::spawn(connection(shared.clone()))).collect();
    let mut out = Outcome::default();
    for task in tasks {
        // A task cannot panic short of a bug; its tally is then missing, which the totals show.
        let Ok(t) = task.await else { continue };
        out.latencies.merge(&t.latencies);
        for (s, n) in t.statuses {
            *out.statuses.entry(s).or_default() += n;
        }
        for (e, n) in t.errors {
            *out.transport_errors.entry(e).or_default() += n;
        }
        out.connections += t.connections;
    }
    out.elapsed = started.elapsed();
    progress.finish().await;
    out
}

/// One keep-alive connection sending deliveries until the run's amount is reached.
async fn connection(shared: Arc<Shared>) -> Tally {
    let load = &shared.load;
    let mut tally = Tally::default();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    loop {
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        let more = match (load.amount, shared.deadline) {
            (Amount::Requests(total), _) => n < total,
            (Amount::For(_), Some(deadline)) => Instant::now() < deadline,
            (Amount::For(_), None) => false,
        };
        if !more {
            break;
        }
        let request = signed_request(load, n);
        // A server may close an idle keep-alive connection; that is a reconnect, not a failure.
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            match connect(load.target.addr).await {
                Ok(s) => {
                    tally.connections += 1;
                    sender = Some(s);
                }
                Err(e) => {
                    *tally.errors.entry(format!("connect: {}", e.kind())).or_default() += 1;
                    shared.done.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let started = Instant::now();
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange(s, request)).await {
            Ok(Ok(status)) => {
                tally.latencies.record(started.elapsed());
                *tally.statuses.entry(status).or_default() += 1;
            }
            Ok(Err(e)) => {
                *tally.errors.entry(e).or_default() += 1;
                sender = None;
            }
            Err(_) => {
                *tally.errors.entry(format!("timeout ({} s)", REQUEST_TIMEOUT.as_secs())).or_default() += 1;
                sender = None;
            }
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

/// Delivery `n`, signed now.
fn signed_request(load: &Load, n: u64) -> hyper::Request<Full<Bytes>> {
    let body = load.payloads.body(n);
    let ts = chrono::Utc::now().timestamp().to_string();
    let signature = format!("sha256={}", tw_core::signature::sign(&load.secret, &ts, &body));
    let mut req = hyper::Request::new(Full::new(Bytes::from(body)));
    *req.method_mut() = hyper::Method::POST;
    *req.uri_mut() = load.target.path.clone();
    let headers = req.headers_mut();
    headers.insert(HOST, load.target.host.clone());
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Digits and hex only: always valid header values.
    if let (Ok(ts), Ok(sig)) = (HeaderValue::from_str(&ts), HeaderValue::from_str(&signature)) {
        headers.insert(HeaderName::from_static("x-webhook-timestamp"), ts);
        headers.insert(HeaderName::from_static("x-webhook-signature"), sig);
    }
    req
}

/// A new HTTP/1.1 connection; its driver runs as a task of its own until the sender is dropped.
async fn connect(addr: SocketAddr) -> std::io::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    tokio::spawn(async move {
        // Errors surface on the sender as well, where they are counted.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request and reads the whole answer; its status, or why there is none.
async fn exchange(sender: &mut SendRequest<Full<Bytes>>, request: hyper::Request<Full<Bytes>>) -> Result<u16, String> {
    sender.ready().await.map_err(|e| format!("connection: {e}"))?;
    let response = sender.send_request(request).await.map_err(|e| format!("connection: {e}"))?;
    let status = response.status().as_u16();
    response.into_body().collect().await.map_err(|e| format!("reading the answer: {e}"))?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut out = Outcome::default();
        for ms in 1..=1000 {
            out.latencies.record(Duration::from_millis(ms));
        }
        // Within the histogram's 0.1%, never above the true value; the maximum exact.
        for (q, want) in [(0.5, 500.0), (0.99, 990.0), (0.999, 999.0)] {
            let got = out.latency_ms(q);
            assert!(got <= want && got > want * 0.999, "q {q}: {got} ms, want {want}");
        }
        assert_eq!(out.latency_ms(1.0), 1000.0);
        assert_eq!(Outcome::default().latency_ms(0.5), 0.0);
    }

    #[test]
    fn the_histogram_is_exact_below_a_millisecond_and_every_bucket_holds_its_lower_bound() {
        let mut h = Histogram::default();
        for us in [0, 1, 999, 1023] {
            h.record(Duration::from_micros(us));
        }
        assert_eq!((h.quantile_us(0.25), h.quantile_us(0.5), h.quantile_us(0.75), h.quantile_us(1.0)), (0, 1, 999, 1023));
        for us in [1024u64, 1025, 2047, 2048, 4097, 123_456, 9_999_999, MAX_US] {
            let i = Histogram::index(us);
            let lo = Histogram::lower(i);
            assert!(lo <= us && us - lo <= us / 1000, "{us} -> bucket {i} from {lo}");
            assert_eq!(Histogram::index(lo), i, "{us}");
        }
        // A million requests cost no more memory than one at the same latency.
        let mut big = Histogram::default();
        for _ in 0..1_000_000 {
            big.record(Duration::from_millis(7));
        }
        assert!(big.counts.len() < 10_000, "{}", big.counts.len());
    }

    #[test]
    fn failures_count_non_2xx_and_transport_errors() {
        let mut out = Outcome::default();
        out.statuses.insert(201, 7);
        out.statuses.insert(202, 1);
        out.statuses.insert(503, 2);
        out.transport_errors.insert("timeout (30 s)".into(), 1);
        assert_eq!((out.requests(), out.ok(), out.failed()), (11, 8, 3));
        assert_eq!(out.status_summary(), "201: 7, 202: 1, 503: 2, timeout (30 s): 1");
    }
}
