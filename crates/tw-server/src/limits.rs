//! Rate limits: token buckets, kept in this process's memory.
//!
//! Three budgets, each answering `429 rate_limited` with `Retry-After` when spent:
//! - **per source** (`rate_limit: {per_second, burst}` on a source; none by default): verified
//!   deliveries only. Counting before the signature is proven would let anyone spend a real
//!   sender's budget with forged requests; floods of forgeries are the next budget's business.
//! - **per client address, failures only**: failed intake verifications (401), wrong API keys
//!   (401 with an `Authorization` header), and intake bodies too slow (408) or refused for the
//!   body budget (503). An address that spent its budget has every further
//!   intake and API request refused before any HMAC, body read or key lookup, until its bucket
//!   refills. IPv6 addresses count per /64 (one host owns at least that much).
//! - **per API key** for `POST /api/playbooks/:name/test`, whose one request can be expensive.
//!
//! Memory is bounded: a bucket that has refilled completely is the same as no bucket, so such
//! entries are dropped when a table is swept, and a table at its cap evicts its stalest entries.
//! Buckets are per process: behind a load balancer with N instances, the effective limit is N
//! times the configured one. Time comes from the server's clock ([`LimitsState::now`]), so tests
//! move it instead of sleeping; a clock that steps backwards refills nothing and takes nothing back.

use crate::ApiError;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use tw_core::SourceName;
use tw_store::{ApiKeyRecord, RateLimit, SourceRecord};

/// A refill rate and a capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    per_second: f64,
    burst: f64,
}

impl Rate {
    /// `per_minute` tokens a minute, up to `burst`; `None` (no limit) when either is 0.
    pub fn per_minute(per_minute: u32, burst: u32) -> Option<Rate> {
        (per_minute > 0 && burst > 0).then(|| Rate { per_second: f64::from(per_minute) / 60.0, burst: f64::from(burst) })
    }

    fn of_source(limit: &RateLimit) -> Rate {
        Rate { per_second: limit.per_second(), burst: f64::from(limit.burst()) }
    }
}

/// A token bucket: `tokens` as of `updated` (seconds on the server's clock).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: f64,
}

/// Slack for float rounding: a bucket refilled to exactly one token at the second Retry-After
/// named must not come out a hair short.
const EPSILON: f64 = 1e-9;

impl Bucket {
    fn full(rate: Rate, now: f64) -> Bucket {
        Bucket { tokens: rate.burst, updated: now }
    }

    fn refill(&mut self, rate: Rate, now: f64) {
        if now > self.updated {
            self.tokens = (self.tokens + (now - self.updated) * rate.per_second).min(rate.burst);
            self.updated = now;
        }
    }

    /// Whole seconds until a token is back (at least 1), when none is there now.
    fn wait(&self, rate: Rate) -> Option<u64> {
        if self.tokens + EPSILON >= 1.0 {
            return None;
        }
        let secs = ((1.0 - self.tokens) / rate.per_second - EPSILON).ceil();
        Some(if secs.is_finite() { (secs as u64).max(1) } else { u64::MAX })
    }

    fn is_full(&self, rate: Rate, now: f64) -> bool {
        let mut b = *self;
        b.refill(rate, now);
        b.tokens + EPSILON >= rate.burst
    }
}

/// What a table said about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Refused: retry after this many seconds. `first` is true for the first refusal since the
    /// key was last allowed (log once per episode, not once per request).
    Limited {
        retry_after_secs: u64,
        first: bool,
    },
}

struct Slot {
    bucket: Bucket,
    rate: Rate,
    /// Refused since last allowed.
    refusing: bool,
}

struct Table<K> {
    slots: HashMap<K, Slot>,
    /// Sweep refilled slots when the table grows to this many (doubles with the survivors).
    sweep_at: usize,
}

/// Token buckets by key, at most `max_keys` of them.
pub struct Buckets<K> {
    table: Mutex<Table<K>>,
    max_keys: usize,
}

/// The smallest size that triggers a sweep.
const MIN_SWEEP: usize = 64;

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new(max_keys: usize) -> Buckets<K> {
        Buckets { table: Mutex::new(Table { slots: HashMap::new(), sweep_at: MIN_SWEEP }), max_keys: max_keys.max(1) }
    }

    /// Takes a token from `key`'s bucket, made full at `rate` if there is none. A bucket whose
    /// rate changed since it was made starts again full at the new rate (an operator who
    /// raised or lowered a limit gets the new limit at once).
    pub fn take(&self, key: &K, rate: Rate, now: f64) -> Decision {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if !t.slots.contains_key(key) {
            self.make_room(&mut t, now);
        }
        let slot = t.slots.entry(key.clone()).or_insert_with(|| Slot { bucket: Bucket::full(rate, now), rate, refusing: false });
        if slot.rate != rate {
            *slot = Slot { bucket: Bucket::full(rate, now), rate, refusing: false };
        }
        slot.bucket.refill(rate, now);
        match slot.bucket.wait(rate) {
            None => {
                slot.bucket.tokens -= 1.0;
                slot.refusing = false;
                Decision::Allowed
            }
            Some(retry_after_secs) => Decision::Limited { retry_after_secs, first: !std::mem::replace(&mut slot.refusing, true) },
        }
    }

    /// Whether `key` would be allowed, without taking anything: a key without a bucket is.
    pub fn check(&self, key: &K, now: f64) -> Decision {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let Some(slot) = t.slots.get_mut(key) else { return Decision::Allowed };
        slot.bucket.refill(slot.rate, now);
        match slot.bucket.wait(slot.rate) {
            None => {
                slot.refusing = false;
                Decision::Allowed
            }
            Some(retry_after_secs) => Decision::Limited { retry_after_secs, first: !std::mem::replace(&mut slot.refusing, true) },
        }
    }

    /// How many keys have a bucket.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Before a new key is added: drops refilled buckets now and then (amortized: the next
    /// sweep waits until the table has doubled), and at the cap evicts the stalest eighth.
    fn make_room(&self, t: &mut Table<K>, now: f64) {
        if t.slots.len() >= t.sweep_at.min(self.max_keys) {
            t.slots.retain(|_, s| !s.bucket.is_full(s.rate, now));
            t.sweep_at = (t.slots.len() * 2).max(MIN_SWEEP);
        }
        if t.slots.len() >= self.max_keys {
            let evict = (self.max_keys / 8).max(1);
            let mut ages: Vec<(f64, K)> = t.slots.iter().map(|(k, s)| (s.bucket.updated, k.clone())).collect();
            let nth = evict.min(ages.len()) - 1;
            ages.select_nth_unstable_by(nth, |a, b| a.0.total_cmp(&b.0));
            for (_, k) in ages.into_iter().take(evict) {
                t.slots.remove(&k);
            }
        }
    }
}

/// An address as it is counted: IPv4 as is, IPv6 by its /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressKey(IpAddr);

impl AddressKey {
    pub fn of(ip: IpAddr) -> AddressKey {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey(IpAddr::V4(v4)),
                None => AddressKey(IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into())),
            },
            v4 => AddressKey(v4),
        }
    }
}

impl std::fmt::Display for AddressKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
            v4 => write!(f, "{v4}"),
        }
    }
}

/// The budgets a server enforces (`tw-cli serve` flags).
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Failed verifications and wrong API keys an address may make at once.
    pub auth_failure_burst: u32,
    /// How many failures a minute are forgiven (the bucket's refill); 0 disables the limit.
    pub auth_failure_per_minute: u32,
    /// Addresses tracked at most (the stalest are forgotten beyond this).
    pub max_tracked_addresses: usize,
    /// Playbook tests one API key may run at once.
    pub playbook_test_burst: u32,
    /// Playbook tests a minute per API key; 0 disables the limit.
    pub playbook_test_per_minute: u32,
}

/// Far above what a correctly configured sender or a person typing produces, and far below
/// what guessing needs: 30 failures at once, then one a second.
pub const DEFAULT_AUTH_FAILURE_BURST: u32 = 30;
pub const DEFAULT_AUTH_FAILURE_PER_MINUTE: u32 = 60;
/// About 100 bytes each: 65,536 addresses are under 10 MB.
pub const DEFAULT_MAX_TRACKED_ADDRESSES: usize = 65_536;
/// A person testing a playbook, or a script checking a few: 10 at once, then 2 a second.
pub const DEFAULT_PLAYBOOK_TEST_BURST: u32 = 10;
pub const DEFAULT_PLAYBOOK_TEST_PER_MINUTE: u32 = 120;
/// Sources are registered by admins; this only bounds the table should that ever go wrong.
const MAX_TRACKED_SOURCES: usize = 100_000;
/// API keys likewise.
const MAX_TRACKED_KEYS: usize = 100_000;

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            auth_failure_burst: DEFAULT_AUTH_FAILURE_BURST,
            auth_failure_per_minute: DEFAULT_AUTH_FAILURE_PER_MINUTE,
            max_tracked_addresses: DEFAULT_MAX_TRACKED_ADDRESSES,
            playbook_test_burst: DEFAULT_PLAYBOOK_TEST_BURST,
            playbook_test_per_minute: DEFAULT_PLAYBOOK_TEST_PER_MINUTE,
        }
    }
}

/// Every rate-limit table of a server.
pub struct Limits {
    sources: Buckets<SourceName>,
    failures: Buckets<AddressKey>,
    failure_rate: Option<Rate>,
    playbook_tests: Buckets<String>,
    playbook_test_rate: Option<Rate>,
}

impl Limits {
    pub fn new(cfg: &LimitsConfig) -> Limits {
        Limits {
            sources: Buckets::new(MAX_TRACKED_SOURCES),
            failures: Buckets::new(cfg.max_tracked_addresses),
            failure_rate: Rate::per_minute(cfg.auth_failure_per_minute, cfg.auth_failure_burst),
            playbook_tests: Buckets::new(MAX_TRACKED_KEYS),
            playbook_test_rate: Rate::per_minute(cfg.playbook_test_per_minute, cfg.playbook_test_burst),
        }
    }
}

/// Why a request was refused with 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitReason {
    /// The source's own `rate_limit`.
    Source,
    /// The client address spent its budget of failed authentications.
    AuthFailures,
    /// The API key spent its budget of playbook tests.
    PlaybookTest,
    /// Every log stream this process serves at once is taken (each holds a connection).
    LogFollowers,
    /// The console's live delivery streams: every one this process serves, or this session's.
    ConsoleStreams,
}

impl LimitReason {
    /// The `reason` label of `tw_rate_limited_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitReason::Source => "source",
            LimitReason::AuthFailures => "auth_failures",
            LimitReason::PlaybookTest => "playbook_test",
            LimitReason::LogFollowers => "log_followers",
            LimitReason::ConsoleStreams => "console_streams",
        }
    }
}

/// A 429: why, and when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub reason: LimitReason,
    pub retry_after_secs: u64,
}

impl std::fmt::Display for Limited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self.reason {
            LimitReason::Source => "This source is over its rate limit",
            LimitReason::AuthFailures => "Too many failed authentication attempts from this address",
            LimitReason::PlaybookTest => "Too many playbook tests with this API key",
            LimitReason::LogFollowers => "Too many log streams are open; close one",
            LimitReason::ConsoleStreams => "Too many live delivery lists are open; close a tab or refresh instead",
        };
        match self.retry_after_secs {
            1 => write!(f, "{why}; retry after 1 second"),
            n => write!(f, "{why}; retry after {n} seconds"),
        }
    }
}

/// What failed to authenticate, for `tw_auth_failures_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// An intake request that did not verify (401).
    Signature,
    /// A wrong API key (401).
    ApiKey,
    /// An intake request to a source name that is not registered (404): counted so that
    /// source names cannot be enumerated at speed.
    UnknownSource,
    /// An intake body that did not arrive in time (408) or found the body budget spent (503):
    /// counted so that an address holding connections with slow bodies is refused (429) before
    /// its next body is read, instead of holding a slot and budget until each body times out.
    SlowBody,
    /// An intake request from an address outside its source's `allowed_ips` (403).
    Address,
}

impl FailureKind {
    fn as_str(self) -> &'static str {
        match self {
            FailureKind::Signature => "signature",
            FailureKind::ApiKey => "api_key",
            FailureKind::UnknownSource => "unknown_source",
            FailureKind::SlowBody => "slow_body",
            FailureKind::Address => "address",
        }
    }
}

/// The server's time as seconds for the buckets.
fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}

/// What applying a limit needs of the server's state: its tables, its metrics, its clock. A trait
/// the state implements, because the state carries the [`Limits`] and so this module must not
/// import it back.
pub trait LimitsState {
    /// The buckets.
    fn limits(&self) -> &Limits;
    /// Where refusals and failures are counted.
    fn metrics(&self) -> &crate::metrics::Metrics;
    /// The server's time, which the buckets refill by.
    fn now(&self) -> DateTime<Utc>;
}

/// A 429 for `reason`, counted in `tw_rate_limited_total`.
pub fn refused(state: &impl LimitsState, reason: LimitReason, retry_after_secs: u64) -> ApiError {
    state.metrics().count("tw_rate_limited_total", &[("reason", reason.as_str())], 1);
    ApiError::RateLimited(Limited { reason, retry_after_secs })
}

/// Refuses a request from an address that spent its failed-authentication budget, before the
/// request costs anything. Logged under `auth` once per episode.
pub fn refuse_throttled(state: &impl LimitsState, client: IpAddr) -> Result<(), ApiError> {
    if state.limits().failure_rate.is_none() {
        return Ok(());
    }
    let key = AddressKey::of(client);
    match state.limits().failures.check(&key, seconds(state.now())) {
        Decision::Allowed => Ok(()),
        Decision::Limited { retry_after_secs, first } => {
            if first {
                tracing::warn!(target: "auth", client = %key, retry_after_secs,
                    "too many failed authentications from this address; refusing its requests until its budget refills");
            }
            Err(refused(state, LimitReason::AuthFailures, retry_after_secs))
        }
    }
}

/// Counts a failed verification or a wrong API key against the client's address.
pub fn count_failure(state: &impl LimitsState, client: IpAddr, kind: FailureKind) {
    state.metrics().count("tw_auth_failures_total", &[("kind", kind.as_str())], 1);
    if let Some(rate) = state.limits().failure_rate {
        // The answer is the check's business; a failure only spends.
        let _ = state.limits().failures.take(&AddressKey::of(client), rate, seconds(state.now()));
    }
}

/// Spends one of `source`'s deliveries, when it has a `rate_limit`. Called once the signature
/// verified. Logged under `webhook` once per episode.
pub fn take_source(state: &impl LimitsState, source: &SourceRecord) -> Result<(), ApiError> {
    let Some(limit) = &source.settings.rate_limit else { return Ok(()) };
    match state.limits().sources.take(&source.name, Rate::of_source(limit), seconds(state.now())) {
        Decision::Allowed => Ok(()),
        Decision::Limited { retry_after_secs, first } => {
            if first {
                tracing::warn!(target: "webhook", source = %source.name, per_second = limit.per_second(), burst = limit.burst(),
                    retry_after_secs, "source is over its rate limit; refusing its deliveries with 429");
            }
            Err(refused(state, LimitReason::Source, retry_after_secs))
        }
    }
}

/// Spends one of `key`'s playbook tests.
pub fn take_playbook_test(state: &impl LimitsState, key: &ApiKeyRecord) -> Result<(), ApiError> {
    let Some(rate) = state.limits().playbook_test_rate else { return Ok(()) };
    match state.limits().playbook_tests.take(&key.id, rate, seconds(state.now())) {
        Decision::Allowed => Ok(()),
        Decision::Limited { retry_after_secs, first } => {
            if first {
                tracing::warn!(target: "auth", key = %key.prefix, key_name = %key.name, retry_after_secs,
                    "API key over its playbook test budget; refusing its tests with 429");
            }
            Err(refused(state, LimitReason::PlaybookTest, retry_after_secs))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: f64, burst: f64) -> Rate {
        Rate { per_second, burst }
    }

    fn limited(d: Decision) -> u64 {
        match d {
            Decision::Limited { retry_after_secs, .. } => retry_after_secs,
            Decision::Allowed => panic!("allowed"),
        }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let b: Buckets<&str> = Buckets::new(10);
        let r = rate(1.0, 3.0);
        for _ in 0..3 {
            assert_eq!(b.take(&"s", r, 100.0), Decision::Allowed);
        }
        assert_eq!(b.take(&"s", r, 100.0), Decision::Limited { retry_after_secs: 1, first: true });
        assert_eq!(b.take(&"s", r, 100.5), Decision::Limited { retry_after_secs: 1, first: false });
        // Exactly at the second Retry-After named, one token is back; not two.
        assert_eq!(b.take(&"s", r, 101.0), Decision::Allowed);
        assert_eq!(limited(b.take(&"s", r, 101.0)), 1);
        // Idle long enough, the whole burst is back, never more.
        for _ in 0..3 {
            assert_eq!(b.take(&"s", r, 1000.0), Decision::Allowed);
        }
        assert!(matches!(b.take(&"s", r, 1000.0), Decision::Limited { .. }));
    }

    #[test]
    fn retry_after_is_whole_seconds_and_at_least_one() {
        let b: Buckets<&str> = Buckets::new(10);
        let slow = rate(0.1, 1.0);
        assert_eq!(b.take(&"slow", slow, 0.0), Decision::Allowed);
        assert_eq!(limited(b.take(&"slow", slow, 0.0)), 10);
        assert_eq!(limited(b.take(&"slow", slow, 2.5)), 8);
        let fast = rate(100.0, 1.0);
        assert_eq!(b.take(&"fast", fast, 0.0), Decision::Allowed);
        assert_eq!(limited(b.take(&"fast", fast, 0.0)), 1);
    }

    #[test]
    fn a_changed_rate_starts_a_full_bucket() {
        let b: Buckets<&str> = Buckets::new(10);
        assert_eq!(b.take(&"s", rate(1.0, 1.0), 0.0), Decision::Allowed);
        assert!(matches!(b.take(&"s", rate(1.0, 1.0), 0.0), Decision::Limited { .. }));
        assert_eq!(b.take(&"s", rate(1.0, 2.0), 0.0), Decision::Allowed);
        assert_eq!(b.take(&"s", rate(1.0, 2.0), 0.0), Decision::Allowed);
        assert!(matches!(b.take(&"s", rate(1.0, 2.0), 0.0), Decision::Limited { .. }));
    }

    #[test]
    fn a_clock_stepping_back_refills_nothing() {
        let b: Buckets<&str> = Buckets::new(10);
        let r = rate(1.0, 1.0);
        assert_eq!(b.take(&"s", r, 50.0), Decision::Allowed);
        assert!(matches!(b.take(&"s", r, 10.0), Decision::Limited { .. }));
        assert!(matches!(b.take(&"s", r, 50.5), Decision::Limited { .. }));
        assert_eq!(b.take(&"s", r, 51.0), Decision::Allowed);
    }

    #[test]
    fn check_refuses_a_spent_key_without_taking_and_knows_nothing_of_others() {
        let b: Buckets<&str> = Buckets::new(10);
        let r = rate(1.0, 2.0);
        assert_eq!(b.check(&"a", 0.0), Decision::Allowed);
        assert!(b.is_empty(), "a check makes no bucket");
        b.take(&"a", r, 0.0);
        assert_eq!(b.check(&"a", 0.0), Decision::Allowed);
        b.take(&"a", r, 0.0);
        assert_eq!(b.check(&"a", 0.0), Decision::Limited { retry_after_secs: 1, first: true });
        assert_eq!(b.check(&"a", 0.2), Decision::Limited { retry_after_secs: 1, first: false });
        assert_eq!(b.check(&"b", 0.2), Decision::Allowed);
        // Allowed again ends the episode: the next refusal is a first again.
        assert_eq!(b.check(&"a", 1.0), Decision::Allowed);
        b.take(&"a", r, 1.0);
        assert_eq!(b.check(&"a", 1.0), Decision::Limited { retry_after_secs: 1, first: true });
    }

    #[test]
    fn refilled_buckets_are_swept_and_the_cap_evicts_the_stalest() {
        let b: Buckets<u32> = Buckets::new(1000);
        let r = rate(1.0, 5.0);
        // Sweeps at 64 and 128 keys find nothing refilled: the table grows (to twice what a
        // sweep leaves) rather than sweeping at every new key.
        for k in 0..256 {
            b.take(&k, r, 0.0);
        }
        assert_eq!(b.len(), 256);
        // Ten seconds on, every bucket is full again: the next new key sweeps them away.
        b.take(&1000, r, 10.0);
        assert_eq!(b.len(), 1);

        let capped: Buckets<u32> = Buckets::new(16);
        for k in 0..16 {
            // Spent buckets, each a little staler than the next.
            for _ in 0..5 {
                capped.take(&k, r, f64::from(k) * 0.01);
            }
        }
        assert_eq!(capped.len(), 16);
        capped.take(&99, r, 0.5);
        assert!(capped.len() <= 16);
        // The stalest (key 0 and 1: an eighth of 16) went; the freshest stayed, still spent.
        assert_eq!(capped.check(&0, 0.5), Decision::Allowed);
        assert!(matches!(capped.check(&15, 0.5), Decision::Limited { .. }));
        for k in 100..10_000 {
            capped.take(&k, r, 1.0);
            assert!(capped.len() <= 16);
        }
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a = AddressKey::of("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = AddressKey::of("2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap());
        let c = AddressKey::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(AddressKey::of("::ffff:192.0.2.7".parse().unwrap()), AddressKey::of("192.0.2.7".parse().unwrap()));
        assert_eq!(AddressKey::of("192.0.2.7".parse().unwrap()).to_string(), "192.0.2.7");
    }

    #[test]
    fn zero_disables_a_budget() {
        assert_eq!(Rate::per_minute(0, 30), None);
        assert_eq!(Rate::per_minute(60, 0), None);
        assert_eq!(Rate::per_minute(60, 30), Some(rate(1.0, 30.0)));
    }

    #[test]
    fn the_message_names_the_wait() {
        let l = Limited { reason: LimitReason::Source, retry_after_secs: 3 };
        assert_eq!(l.to_string(), "This source is over its rate limit; retry after 3 seconds");
        let l = Limited { reason: LimitReason::AuthFailures, retry_after_secs: 1 };
        assert_eq!(l.to_string(), "Too many failed authentication attempts from this address; retry after 1 second");
    }
}
