//! When each API key was last used, kept in memory and written to the store at most once a
//! minute per key, off the request path: a busy key costs no database write per request.
//!
//! A key's first use in this process is written at once (so a new key shows as used without
//! waiting); later uses are written by [`KeyUsage::run`]'s tick once a minute has passed since the
//! key's last write. A write that fails is tried again at the next tick. Memory: one entry per key
//! that authenticated, so bounded by the keys an admin created.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tw_store::Store;

/// A key's use is written at most this often (per process).
pub const WRITE_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// How often pending uses are looked at.
const TICK: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The latest use.
    last: DateTime<Utc>,
    /// The use last written (or being written).
    written: DateTime<Utc>,
    /// Writing `written` failed: due again at the next tick.
    failed: bool,
}

/// Last use per key id.
#[derive(Debug, Default)]
pub struct KeyUsage {
    seen: Mutex<HashMap<String, Seen>>,
}

impl KeyUsage {
    pub fn new() -> KeyUsage {
        KeyUsage::default()
    }

    /// Notes that the key `id` was accepted at `now`; the first use in this process is written at
    /// once, in a task of its own.
    pub fn used(self: &Arc<Self>, store: &Arc<dyn Store>, id: &str, now: DateTime<Utc>) {
        let first = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            match seen.get_mut(id) {
                Some(s) => {
                    s.last = s.last.max(now);
                    false
                }
                None => {
                    seen.insert(id.to_string(), Seen { last: now, written: now, failed: false });
                    true
                }
            }
        };
        if first {
            let (this, store, id) = (self.clone(), store.clone(), id.to_string());
            tokio::spawn(async move { this.write(&store, vec![(id, now)]).await });
        }
    }

    /// The uses not yet written whose key was last written at least [`WRITE_EVERY`] before `now`
    /// (all of them when `all`), and those whose write failed, marked as being written.
    fn due(&self, now: DateTime<Utc>, all: bool) -> Vec<(String, DateTime<Utc>)> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (id, s) in seen.iter_mut() {
            if s.failed || (s.last > s.written && (all || now - s.written >= WRITE_EVERY)) {
                s.written = s.last;
                s.failed = false;
                out.push((id.clone(), s.last));
            }
        }
        out
    }

    /// Notes that writing `used` failed: each is due again, unless a newer use is being written.
    fn failed(&self, used: &[(String, DateTime<Utc>)]) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for (id, at) in used {
            if let Some(s) = seen.get_mut(id)
                && s.written == *at
            {
                s.failed = true;
            }
        }
    }

    async fn write(&self, store: &Arc<dyn Store>, used: Vec<(String, DateTime<Utc>)>) {
        if used.is_empty() {
            return;
        }
        if let Err(e) = store.record_api_key_use(used.clone()).await {
            // Only the "last used" column is behind; the next tick tries again.
            tracing::debug!(target: "auth", error = %e.chain(), "recording API key use failed");
            self.failed(&used);
        }
    }

    /// Writes pending uses every tick until `stopping`, then once more.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, mut stopping: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = tick.tick() => self.write(&store, self.due(Utc::now(), false)).await,
                _ = stopping.changed() => break,
            }
        }
        self.flush(&store).await;
    }

    /// Writes every use not written yet (at a stop: also those of requests answered after
    /// [`KeyUsage::run`] made its last pass).
    pub async fn flush(&self, store: &Arc<dyn Store>) {
        self.write(store, self.due(Utc::now(), true)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn note(u: &KeyUsage, id: &str, t: DateTime<Utc>) {
        // What `used` does for a key it has seen, without a store.
        let mut seen = u.seen.lock().unwrap();
        seen.entry(id.to_string()).and_modify(|s| s.last = s.last.max(t)).or_insert(Seen { last: t, written: t, failed: false });
    }

    #[test]
    fn a_busy_key_is_written_at_most_once_a_minute() {
        let u = KeyUsage::new();
        note(&u, "k", at(0));
        for s in 1..60 {
            note(&u, "k", at(s));
            assert!(u.due(at(s), false).is_empty(), "written again after {s}s");
        }
        assert_eq!(u.due(at(60), false), vec![("k".to_string(), at(59))]);
        // Nothing new since: nothing to write.
        assert!(u.due(at(200), false).is_empty());
        note(&u, "k", at(201));
        assert!(u.due(at(100), false).is_empty(), "59 is the last write; 100 is too soon");
        assert_eq!(u.due(at(119), false), vec![("k".to_string(), at(201))]);
    }

    #[test]
    fn a_failed_write_is_tried_again_at_the_next_tick() {
        let u = KeyUsage::new();
        note(&u, "k", at(0));
        // The first use's own write failed: due at once, not a minute later.
        u.failed(&[("k".to_string(), at(0))]);
        assert_eq!(u.due(at(15), false), vec![("k".to_string(), at(0))]);
        assert!(u.due(at(30), false).is_empty(), "written now");
        note(&u, "k", at(61));
        let batch = u.due(at(61), false);
        assert_eq!(batch, vec![("k".to_string(), at(61))]);
        u.failed(&batch);
        assert_eq!(u.due(at(76), false), batch, "the failed write again");
        // A failure reported after a newer use was taken does not repeat the older one.
        note(&u, "k", at(200));
        let newer = u.due(at(200), false);
        u.failed(&batch);
        assert_eq!(newer, vec![("k".to_string(), at(200))]);
        assert!(u.due(at(215), false).is_empty());
    }

    #[test]
    fn stopping_writes_whatever_is_pending() {
        let u = KeyUsage::new();
        note(&u, "a", at(0));
        note(&u, "a", at(5));
        note(&u, "b", at(1));
        assert_eq!(u.due(at(6), true), vec![("a".to_string(), at(5))]);
    }
}
