//! Counters in this process's memory: one map behind a mutex (counters
//! change a few times per session, not per byte).
//!
//! Memory is bounded: every key costs at most one entry, expired entries are
//! swept out at least once a minute, and at `max_keys` expired entries go
//! first, then window counts, lowest count first (the soonest to expire
//! among equal counts), and marks (bans and known-good logins) only when
//! nothing else is left, the soonest to expire first. A flood of distinct
//! keys (random logins, a botnet's addresses) therefore costs a fixed amount
//! of memory, and forgets its own one-off counts rather than a ban or a
//! high count.
//!
//! Choosing what goes scans the map once (a linear selection, no sort) and
//! frees an eighth of it, so the cost per insert stays constant on average.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::{estimate, position, Answer, Op, Usage};

/// How often expired entries are swept out even when there is room.
const SWEEP_EVERY_MS: u64 = 60_000;

/// One eighth of the map is freed at a time when it is full, so the sort
/// that chooses what goes is paid once per many inserts.
const EVICT_DIVISOR: usize = 8;

pub struct Memory {
    inner: Mutex<Inner>,
    max_keys: usize,
}

struct Inner {
    map: HashMap<String, Entry>,
    last_sweep_ms: u64,
    /// When full, the last time that was logged (once a minute at most).
    warned_full_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
enum Entry {
    Window { window_ms: u64, bucket: u64, current: u64, previous: u64 },
    Mark { until_ms: u64 },
}

impl Entry {
    /// Whether nothing of it is left at `now`.
    fn expired(&self, now_ms: u64) -> bool {
        match *self {
            // Counts of window b still weigh in during window b + 1.
            Entry::Window { window_ms, bucket, .. } => now_ms / window_ms > bucket + 1,
            Entry::Mark { until_ms } => now_ms >= until_ms,
        }
    }

    /// Where it stands in the order of eviction, lowest first: every window
    /// before every mark; windows by their count, then by when they expire;
    /// marks by when they expire. With `marks_first` (marks fill more than
    /// half the store), the other way round: marks are cheap to make by the
    /// thousand from a routed IPv6 prefix, and must not push out every
    /// count of failed logins and rate limits.
    fn rank(&self, now_ms: u64, marks_first: bool) -> (u8, u64, u64) {
        let (window_class, mark_class) = if marks_first { (1, 0) } else { (0, 1) };
        match *self {
            Entry::Window { window_ms, bucket, current, previous } => {
                let (now_bucket, share) = position(now_ms, window_ms);
                // (A clock that stepped back: as if still in that window.)
                let count = if now_bucket <= bucket {
                    estimate(current, previous, share, window_ms)
                } else {
                    estimate(0, current, share, window_ms)
                };
                (window_class, count, bucket.saturating_add(2).saturating_mul(window_ms))
            }
            Entry::Mark { until_ms } => (mark_class, until_ms, 0),
        }
    }
}

impl Memory {
    pub fn new(max_keys: usize) -> Memory {
        Memory {
            inner: Mutex::new(Inner { map: HashMap::new(), last_sweep_ms: 0, warned_full_ms: None }),
            max_keys: max_keys.max(1),
        }
    }

    /// Keys held now (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn run(&self, op: Op<'_>, now_ms: u64) -> Answer {
        let mut inner = self.inner.lock().unwrap();
        if now_ms.saturating_sub(inner.last_sweep_ms) >= SWEEP_EVERY_MS {
            inner.sweep(now_ms);
        }
        match op {
            Op::Hit { key, by, limit, add, window } => {
                let window_ms = (window.as_millis() as u64).max(1);
                let (now_bucket, share) = position(now_ms, window_ms);
                let (current, previous) = match inner.map.get(key) {
                    Some(&Entry::Window { window_ms: w, bucket, current, previous }) if w == window_ms => {
                        // A clock that stepped back stays in the newest window.
                        if bucket >= now_bucket {
                            (current, previous)
                        } else if bucket + 1 == now_bucket {
                            (0, current)
                        } else {
                            (0, 0)
                        }
                    }
                    // New, expired, a mark, or another window: start afresh.
                    _ => (0, 0),
                };
                let count = estimate(current, previous, share, window_ms);
                let allowed = limit.is_none_or(|l| count.saturating_add(by) <= l);
                if !(add && allowed && by > 0) {
                    return Answer::Usage(Usage { allowed, count });
                }
                let entry =
                    Entry::Window { window_ms, bucket: now_bucket, current: current.saturating_add(by), previous };
                self.insert(&mut inner, key, entry, now_ms);
                Answer::Usage(Usage { allowed, count: count.saturating_add(by) })
            }
            Op::Mark { key, ttl } => {
                let entry = Entry::Mark { until_ms: now_ms.saturating_add(ttl.as_millis() as u64) };
                self.insert(&mut inner, key, entry, now_ms);
                Answer::Done
            }
            Op::Marked { key } => Answer::Remaining(match inner.map.get(key) {
                Some(&Entry::Mark { until_ms }) if until_ms > now_ms => Some(Duration::from_millis(until_ms - now_ms)),
                _ => None,
            }),
        }
    }

    fn insert(&self, inner: &mut Inner, key: &str, entry: Entry, now_ms: u64) {
        if let Some(slot) = inner.map.get_mut(key) {
            *slot = entry;
            return;
        }
        if inner.map.len() >= self.max_keys {
            inner.sweep(now_ms);
        }
        if inner.map.len() >= self.max_keys {
            inner.evict(self.max_keys / EVICT_DIVISOR + 1, now_ms);
            if inner.warned_full_ms.is_none_or(|t| now_ms.saturating_sub(t) >= 60_000) {
                inner.warned_full_ms = Some(now_ms);
                tracing::warn!(
                    max_keys = self.max_keys,
                    "counters: memory full; dropped the lowest counts (raise [counters] max_keys if this is not an attack)"
                );
            }
        }
        inner.map.insert(key.to_string(), entry);
    }
}

impl Inner {
    fn sweep(&mut self, now_ms: u64) {
        self.last_sweep_ms = now_ms;
        self.map.retain(|_, e| !e.expired(now_ms));
        // After a flood the table keeps its size unless told otherwise.
        if self.map.capacity() > 1024 && self.map.len() < self.map.capacity() / 4 {
            self.map.shrink_to_fit();
        }
    }

    /// Drops the `n` entries that rank lowest (see [`Entry::rank`]).
    fn evict(&mut self, n: usize, now_ms: u64) {
        let marks = self.map.values().filter(|e| matches!(e, Entry::Mark { .. })).count();
        let marks_first = marks * 2 > self.map.len();
        let mut ranks: Vec<(u8, u64, u64)> = self.map.values().map(|e| e.rank(now_ms, marks_first)).collect();
        let n = n.min(ranks.len());
        if n == 0 {
            return;
        }
        // The n-th lowest rank: everything below it goes, and as many
        // entries equal to it as make up n.
        let (_, &mut cut, _) = ranks.select_nth_unstable(n - 1);
        let below = ranks.iter().filter(|r| **r < cut).count();
        let mut ties = n - below;
        self.map.retain(|_, e| {
            let rank = e.rank(now_ms, marks_first);
            if rank < cut {
                false
            } else if rank == cut && ties > 0 {
                ties -= 1;
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(m: &Memory, key: &str, by: u64, limit: Option<u64>, now: u64) -> Usage {
        let op = Op::Hit { key, by, limit, add: true, window: Duration::from_secs(10) };
        match m.run(op, now) {
            Answer::Usage(u) => u,
            other => panic!("{other:?}"),
        }
    }

    fn marked(m: &Memory, key: &str, now: u64) -> Option<Duration> {
        match m.run(Op::Marked { key }, now) {
            Answer::Remaining(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn counts_slide_out_of_the_window() {
        let m = Memory::new(100);
        // A 10 s window; three hits early in window 1.
        for _ in 0..3 {
            hit(&m, "k", 1, None, 10_000);
        }
        assert_eq!(hit(&m, "k", 1, None, 12_000).count, 4);
        // Halfway through window 2, half of window 1's four still count.
        assert_eq!(hit(&m, "k", 0, None, 25_000).count, 2);
        assert_eq!(hit(&m, "k", 1, None, 25_000).count, 3);
        // Two windows on, nothing is left.
        assert_eq!(hit(&m, "k", 1, None, 40_000).count, 1);
        assert_eq!(hit(&m, "other", 1, None, 40_000).count, 1);
    }

    #[test]
    fn a_refused_take_is_not_counted() {
        let m = Memory::new(100);
        assert!(hit(&m, "k", 2, Some(2), 0).allowed);
        for _ in 0..5 {
            let u = hit(&m, "k", 1, Some(2), 1_000);
            assert_eq!(u, Usage { allowed: false, count: 2 });
        }
        // Once the window has passed the limit frees up again.
        assert!(hit(&m, "k", 1, Some(2), 20_000).allowed);
    }

    #[test]
    fn marks_expire() {
        let m = Memory::new(100);
        m.run(Op::Mark { key: "ban", ttl: Duration::from_secs(2) }, 1_000);
        assert_eq!(marked(&m, "ban", 1_500), Some(Duration::from_millis(1_500)));
        assert_eq!(marked(&m, "ban", 3_000), None);
        assert_eq!(marked(&m, "nothing", 1_000), None);
    }

    #[test]
    fn a_flood_of_keys_stays_within_max_keys_and_keeps_what_matters() {
        let m = Memory::new(1_000);
        m.run(Op::Mark { key: "ban:192.0.2.1", ttl: Duration::from_secs(3600) }, 0);
        for _ in 0..50 {
            hit(&m, "fail:192.0.2.2", 1, None, 0);
        }
        for i in 0..100_000 {
            hit(&m, &format!("login:random{i}"), 1, None, 1 + i / 100);
            assert!(m.len() <= 1_000);
        }
        assert!(marked(&m, "ban:192.0.2.1", 2_000).is_some(), "a ban survives the flood");
        assert_eq!(hit(&m, "fail:192.0.2.2", 0, None, 2_000).count, 50, "a high count survives the flood");
    }

    #[test]
    fn a_ban_outlives_a_flood_of_window_keys_even_among_high_counts() {
        let m = Memory::new(100);
        m.run(Op::Mark { key: "ban:192.0.2.1", ttl: Duration::from_secs(600) }, 0);
        // Most of the map: counts far higher than the flood's. (Room is
        // left for the flood's first keys: were the map full of equal high
        // counts, which of them makes room would be up to the hash order.)
        for i in 0..80 {
            hit(&m, &format!("fail:{i}"), 1_000, None, 0);
        }
        for i in 0..10_000 {
            hit(&m, &format!("login:random{i}"), 1, None, 1);
            assert!(m.len() <= 100);
        }
        assert!(marked(&m, "ban:192.0.2.1", 2).is_some(), "the ban was dropped");
        for i in 0..80 {
            assert_eq!(
                hit(&m, &format!("fail:{i}"), 0, None, 2).count,
                1_000,
                "a high count was dropped before one-off keys"
            );
        }
    }

    #[test]
    fn with_only_marks_left_the_soonest_to_expire_go_first() {
        let m = Memory::new(16);
        // Sixteen marks: ttl 1 h to 16 h, inserted in no particular order.
        for h in [9u64, 3, 16, 1, 12, 5, 7, 14, 2, 10, 8, 15, 4, 11, 6, 13] {
            m.run(Op::Mark { key: &format!("mark{h}"), ttl: Duration::from_secs(h * 3600) }, 0);
        }
        // A new key makes room: 16 / 8 + 1 = 3 entries go.
        hit(&m, "new", 1, None, 0);
        for h in 1..=3u64 {
            assert_eq!(marked(&m, &format!("mark{h}"), 0), None, "mark{h} expires first");
        }
        for h in 4..=16u64 {
            assert!(marked(&m, &format!("mark{h}"), 0).is_some(), "mark{h} was dropped");
        }
    }

    #[test]
    fn a_flood_of_marks_cannot_push_out_every_count() {
        let m = Memory::new(100);
        hit(&m, "fail:login:victim", 9, None, 0);
        // Bans from thousands of addresses: marks fill the store.
        for i in 0..1_000 {
            m.run(Op::Mark { key: &format!("ban:{i}"), ttl: Duration::from_secs(3600 + i) }, 0);
            assert!(m.len() <= 100);
        }
        assert_eq!(hit(&m, "fail:login:victim", 0, None, 1).count, 9, "the count was pushed out by marks");
        // The marks that stay are the latest to expire.
        assert!(marked(&m, "ban:999", 1).is_some());
        assert_eq!(marked(&m, "ban:0", 1), None);
    }

    #[test]
    fn among_equal_counts_the_soonest_to_expire_goes_first() {
        let m = Memory::new(8);
        let long = Duration::from_secs(3600);
        for i in 0..4 {
            hit(&m, &format!("short{i}"), 1, None, 0);
            m.run(Op::Hit { key: &format!("long{i}"), by: 1, limit: None, add: true, window: long }, 0);
        }
        // 8 / 8 + 1 = 2 go: two of the 10 s windows, none of the hour's.
        hit(&m, "new", 1, None, 0);
        let get = |key: &str, window: Duration| match m.run(Op::Hit { key, by: 0, limit: None, add: false, window }, 0)
        {
            Answer::Usage(u) => u.count,
            other => panic!("{other:?}"),
        };
        assert_eq!((0..4).filter(|i| get(&format!("long{i}"), long) == 1).count(), 4);
        assert_eq!((0..4).filter(|i| get(&format!("short{i}"), Duration::from_secs(10)) == 1).count(), 2);
    }

    #[test]
    fn expired_entries_are_swept() {
        let m = Memory::new(1_000);
        for i in 0..500 {
            hit(&m, &format!("k{i}"), 1, None, 0);
        }
        m.run(Op::Mark { key: "short", ttl: Duration::from_secs(1) }, 0);
        assert_eq!(m.len(), 501);
        // A minute later every 10 s window and the mark are gone.
        hit(&m, "fresh", 1, None, 61_000);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn another_window_on_the_same_key_starts_afresh() {
        let m = Memory::new(10);
        hit(&m, "k", 5, None, 0);
        let op = Op::Hit { key: "k", by: 1, limit: None, add: true, window: Duration::from_secs(60) };
        assert_eq!(m.run(op, 0), Answer::Usage(Usage { allowed: true, count: 1 }));
    }
}
