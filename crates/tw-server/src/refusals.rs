//! Refused requests cost bounded storage. A request refused before its signature verified is
//! anyone's to send, as many as they like: of each source's refusals with one error code, only
//! the first [`SAMPLES_PER_MINUTE`] of a minute are stored in full; the rest of that minute are
//! counted into one aggregate delivery row (created with the first of them, so it sits where the
//! run began in the listing), counted in memory and added to the row every second by
//! [`crate::workers::deliveries::flush_every_second`]. A flood therefore writes at most
//! `SAMPLES_PER_MINUTE + 1` rows per source, code and minute, and one database write per second
//! whatever its rate.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Mutex;
use tw_core::SourceName;
use tw_store::RefusedCount;

/// Refusals of one source and code stored in full per minute.
pub const SAMPLES_PER_MINUTE: u32 = 5;
/// (source, code) pairs tracked at once. Sources are registered by an admin and codes are a
/// fixed set, so this is never reached in practice; past it, refusals of new pairs are counted in
/// the metrics only, so memory stays bounded whatever happens.
pub const MAX_TRACKED: usize = 16_384;

/// What to do with one refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Store it in full, as any delivery.
    Record,
    /// Store it as a new aggregate row (`refused_count` 1), which the next ones are added to.
    StartAggregate,
    /// Counted into the current aggregate row; nothing stored now.
    Counted,
    /// Too many pairs tracked: not stored at all (metrics only).
    Dropped,
}

/// The minute of one (source, code) pair that is being sampled.
#[derive(Debug)]
struct Window {
    /// Unix minute.
    minute: i64,
    stored: u32,
    /// The request id of this minute's aggregate row, once there is one.
    aggregate: Option<String>,
}

#[derive(Debug, Default)]
struct Tracked {
    windows: HashMap<(SourceName, &'static str), Window>,
    /// Counts not yet added to their rows, by the row's request id.
    pending: HashMap<String, RefusedCount>,
}

/// The sampler: in memory, one per process.
#[derive(Debug, Default)]
pub struct RefusalSampler {
    tracked: Mutex<Tracked>,
    /// Source -> the unix second whose accepted delivery kept its headers.
    headers_kept: Mutex<HashMap<SourceName, i64>>,
}

impl RefusalSampler {
    pub fn new() -> RefusalSampler {
        RefusalSampler::default()
    }

    /// Whether an accepted delivery to `source` at `at` keeps its request headers in its record:
    /// the first of each second per source does. Every refused delivery's record keeps them (that
    /// is where they tell why); an accepted one's cost the intake about a tenth of its throughput
    /// when every record kept them, so a busy source keeps one a second, and a source being set
    /// up, sending a few, keeps all.
    pub fn keep_accepted_headers(&self, source: &SourceName, at: DateTime<Utc>) -> bool {
        let second = at.timestamp();
        let mut kept = self.headers_kept.lock().unwrap_or_else(|p| p.into_inner());
        let full = kept.len() >= MAX_TRACKED;
        match kept.get_mut(source) {
            Some(last) if *last == second => false,
            Some(last) => {
                *last = second;
                true
            }
            None if full => false,
            None => {
                kept.insert(source.clone(), second);
                true
            }
        }
    }

    /// Decides the fate of a request to `source` refused with `status` and `code` at `at`, whose
    /// own request id is `request_id`.
    pub fn admit(&self, source: &SourceName, code: &'static str, status: u16, at: DateTime<Utc>, request_id: &str) -> Admission {
        let minute = at.timestamp().div_euclid(60);
        let mut t = self.tracked.lock().unwrap_or_else(|p| p.into_inner());
        let key = (source.clone(), code);
        if !t.windows.contains_key(&key) && t.windows.len() >= MAX_TRACKED {
            return Admission::Dropped;
        }
        let w = t.windows.entry(key).or_insert(Window { minute, stored: 0, aggregate: None });
        if w.minute != minute {
            *w = Window { minute, stored: 0, aggregate: None };
        }
        if w.stored < SAMPLES_PER_MINUTE {
            w.stored += 1;
            return Admission::Record;
        }
        match w.aggregate.clone() {
            None => {
                w.aggregate = Some(request_id.to_string());
                Admission::StartAggregate
            }
            Some(row) => {
                let c = t.pending.entry(row.clone()).or_insert_with(|| RefusedCount {
                    request_id: row,
                    source: source.clone(),
                    status,
                    code: code.to_string(),
                    first_at: at,
                    last_at: at,
                    count: 0,
                });
                c.count += 1;
                c.first_at = c.first_at.min(at);
                c.last_at = c.last_at.max(at);
                Admission::Counted
            }
        }
    }

    /// The counts not yet written (emptied), and forgets the windows of minutes before `now`'s
    /// previous one: a window only matters while its minute lasts.
    pub fn take(&self, now: DateTime<Utc>) -> Vec<RefusedCount> {
        let minute = now.timestamp().div_euclid(60);
        let mut t = self.tracked.lock().unwrap_or_else(|p| p.into_inner());
        t.windows.retain(|_, w| w.minute >= minute - 1);
        t.pending.drain().map(|(_, c)| c).collect()
    }

    /// Puts counts back after a write failed, so they are tried again with the next flush.
    /// Bounded: at most one entry per aggregate row, and rows are made at most once a minute
    /// per tracked pair.
    pub fn restore(&self, counts: Vec<RefusedCount>) {
        let mut t = self.tracked.lock().unwrap_or_else(|p| p.into_inner());
        for c in counts {
            let room = t.pending.len() < 2 * MAX_TRACKED;
            match t.pending.get_mut(&c.request_id) {
                Some(p) => {
                    p.count += c.count;
                    p.first_at = p.first_at.min(c.first_at);
                    p.last_at = p.last_at.max(c.last_at);
                }
                None if room => {
                    t.pending.insert(c.request_id.clone(), c);
                }
                None => {}
            }
        }
    }
}

/// The longest pause between pruning passes once they find nothing to do.
pub const PRUNE_MAX_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// The pause before the next pruning pass: `base` after a pass that deleted rows (there may be
/// more soon), else twice the last pause, up to [`PRUNE_MAX_EVERY`] or 32 times `base`, whichever
/// is less (never below `base`). A pass reads each source's retention edge (an index walk of its
/// keep) even when nothing is over, so an idle server backs off.
pub fn next_prune_pause(base: std::time::Duration, last: std::time::Duration, deleted: u64) -> std::time::Duration {
    if deleted > 0 {
        return base;
    }
    let cap = PRUNE_MAX_EVERY.min(base.saturating_mul(32)).max(base);
    last.saturating_mul(2).clamp(base, cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(min: u32, sec: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 10, min, sec).unwrap()
    }

    #[test]
    fn accepted_deliveries_keep_headers_once_a_second_per_source() {
        let s = RefusalSampler::new();
        let (mail, edr) = (SourceName::parse("mail").unwrap(), SourceName::parse("edr").unwrap());
        let kept: Vec<bool> = (0..5).map(|_| s.keep_accepted_headers(&mail, at(1, 7))).collect();
        assert_eq!(kept, [true, false, false, false, false]);
        assert!(s.keep_accepted_headers(&edr, at(1, 7)), "each source its own");
        assert!(s.keep_accepted_headers(&mail, at(1, 8)) && !s.keep_accepted_headers(&mail, at(1, 8)));
    }

    #[test]
    fn a_minute_stores_a_few_then_counts_the_rest_into_one_row() {
        let s = RefusalSampler::new();
        let src = SourceName::parse("mail").unwrap();
        let mut seen = Vec::new();
        for i in 0..100 {
            seen.push(s.admit(&src, "invalid_signature", 401, at(2, (i % 60) as u32), &format!("req_{i}")));
        }
        assert!(seen[..5].iter().all(|a| *a == Admission::Record), "{seen:?}");
        assert_eq!(seen[5], Admission::StartAggregate);
        assert!(seen[6..].iter().all(|a| *a == Admission::Counted));
        let counts = s.take(at(2, 59));
        assert_eq!(counts.len(), 1);
        assert_eq!((counts[0].request_id.as_str(), counts[0].count), ("req_5", 94));
        assert_eq!((counts[0].first_at, counts[0].last_at), (at(2, 0), at(2, 59)));
        assert!(s.take(at(2, 59)).is_empty(), "taken once");
        // Another code has its own samples; the next minute starts over exactly at its edge.
        assert_eq!(s.admit(&src, "timestamp_expired", 401, at(2, 59), "req_x"), Admission::Record);
        assert_eq!(s.admit(&src, "invalid_signature", 401, at(2, 59), "req_y"), Admission::Counted);
        assert_eq!(s.admit(&src, "invalid_signature", 401, at(3, 0), "req_z"), Admission::Record);
    }

    #[test]
    fn failed_writes_are_kept_and_old_windows_forgotten() {
        let s = RefusalSampler::new();
        let src = SourceName::parse("mail").unwrap();
        for i in 0..10 {
            s.admit(&src, "missing_signature", 401, at(1, 0), &format!("r{i}"));
        }
        let counts = s.take(at(1, 30));
        assert_eq!(counts[0].count, 4);
        s.restore(counts);
        s.admit(&src, "missing_signature", 401, at(1, 40), "r10");
        let again = s.take(at(5, 0));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].count, 5, "restored counts add to the new ones");
        assert!(s.tracked.lock().unwrap().windows.is_empty(), "minutes long past are forgotten");
    }

    #[test]
    fn pruning_backs_off_while_idle_and_resets_after_deleting() {
        let secs = std::time::Duration::from_secs;
        let base = secs(10);
        let mut pause = base;
        let mut seen = Vec::new();
        for _ in 0..8 {
            pause = next_prune_pause(base, pause, 0);
            seen.push(pause.as_secs());
        }
        assert_eq!(seen, [20, 40, 80, 160, 300, 300, 300, 300]);
        assert_eq!(next_prune_pause(base, pause, 1), base, "rows deleted: back to the base interval");
        // A short base backs off to 32 times itself; a base above the cap stays as it is.
        let ms = std::time::Duration::from_millis;
        assert_eq!(next_prune_pause(ms(100), ms(3000), 0), ms(3200));
        assert_eq!(next_prune_pause(ms(100), ms(3200), 0), ms(3200));
        assert_eq!(next_prune_pause(secs(600), secs(600), 0), secs(600));
    }

    #[test]
    fn tracked_pairs_are_bounded() {
        let s = RefusalSampler::new();
        for i in 0..MAX_TRACKED {
            let src = SourceName::parse(&format!("s{i}")).unwrap();
            assert_eq!(s.admit(&src, "invalid_signature", 401, at(0, 0), "r"), Admission::Record);
        }
        let extra = SourceName::parse("one-more").unwrap();
        assert_eq!(s.admit(&extra, "invalid_signature", 401, at(0, 0), "r"), Admission::Dropped);
    }
}
