//! The in-process replay cache.
//!
//! # Bounded memory
//!
//! A map of request id → expiry. Each entry lives for the TTL the guard asks
//! for (the whole window in which its assertion could still verify) and is
//! removed by a sweep that runs at most once per [`MemoryReplayCache::SWEEP_INTERVAL`],
//! on the request that finds it due; an expired entry that is still present
//! counts as absent. The key is a 64-bit keyed hash (`RandomState`, a random
//! SipHash key per process) of the request id rather than the id itself, so
//! an entry costs a few dozen bytes whatever the id's length. Two ids that
//! collide would make the second one look like a replay (a false 401, with a
//! probability of about `entries / 2^64` per request); they can never let a
//! replay through. The ids are chosen by the gateway and signed, so nobody
//! can aim for a collision.
//!
//! # When it is full: refuse, never evict
//!
//! There is a hard cap on entries. Evicting a live entry to make room would
//! let that request be replayed for the rest of its window, so a full cache
//! refuses *new* request ids instead ([`ReplayError::Full`], which the guard
//! answers with 503 `Service temporarily unavailable`); replays are still
//! recognised and refused with 401. The cap fills only when more than
//! `capacity / window` requests per second arrive (with the default
//! 1,000,000 entries and the 121 s window: about 8,000 requests per second,
//! sustained, on this one process), and it frees itself as entries expire.
//! At roughly 40 bytes an entry, the default cap is about 40 MB at worst;
//! an idle service holds nothing.
//!
//! # Which clock
//!
//! Expiries are measured on the wall clock, the same clock the timestamp
//! check uses. If that clock steps back, entries simply live longer (the
//! assertions they stand for become valid again for the same span, so they
//! must), and a sweep still runs; the cap bounds the memory meanwhile.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use super::{ReplayError, ReplayStore, Seen};

/// A source of the current time in milliseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Request ids accepted in this process, bounded (see the module docs).
pub struct MemoryReplayCache {
    /// Keyed hash of the request id → expiry (Unix ms).
    entries: DashMap<u64, u64>,
    hasher: std::hash::RandomState,
    /// Entries plus reservations in flight; never above `capacity`.
    len: AtomicUsize,
    capacity: usize,
    /// When the next sweep is due (Unix ms).
    next_sweep: AtomicU64,
    clock: Clock,
}

impl MemoryReplayCache {
    /// The default cap: generous, see the module docs.
    pub const DEFAULT_CAPACITY: usize = 1_000_000;
    /// How often expired entries are removed.
    pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

    /// A cache of at most `capacity` entries, on the system clock.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self::with_clock(capacity, Arc::new(system_now_ms))
    }

    /// A cache of at most `capacity` entries on another clock (tests).
    #[must_use]
    pub fn with_clock(capacity: usize, clock: Clock) -> Self {
        Self {
            entries: DashMap::new(),
            hasher: std::hash::RandomState::new(),
            len: AtomicUsize::new(0),
            capacity,
            next_sweep: AtomicU64::new(0),
            clock,
        }
    }

    /// The number of entries held, expired ones not yet swept included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Whether the cache holds no entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cap on entries.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// [`ReplayStore::first_use`], synchronously.
    ///
    /// # Errors
    /// [`ReplayError::Full`] when `request_id` is new and the cache holds
    /// `capacity` live entries.
    pub fn check(&self, request_id: &str, ttl: Duration) -> Result<Seen, ReplayError> {
        let now = (self.clock)();
        self.sweep_if_due(now);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let expiry = now.saturating_add(ttl_ms);
        match self.entries.entry(self.hasher.hash_one(request_id)) {
            Entry::Occupied(mut entry) => {
                if *entry.get() > now {
                    return Ok(Seen::Again);
                }
                // Expired but not swept yet: reuse the slot.
                entry.insert(expiry);
                Ok(Seen::First)
            }
            Entry::Vacant(entry) => {
                if self.len.fetch_add(1, Ordering::AcqRel) >= self.capacity {
                    self.len.fetch_sub(1, Ordering::AcqRel);
                    return Err(ReplayError::Full { capacity: self.capacity });
                }
                entry.insert(expiry);
                Ok(Seen::First)
            }
        }
    }

    /// Removes expired entries if a sweep is due: at most once per
    /// [`Self::SWEEP_INTERVAL`], and also when the clock went back by more
    /// than that since the last one. Must not be called while holding an
    /// entry of the map.
    fn sweep_if_due(&self, now: u64) {
        let interval = u64::try_from(Self::SWEEP_INTERVAL.as_millis()).unwrap_or(1000);
        let due = self.next_sweep.load(Ordering::Acquire);
        let clock_went_back = due > now.saturating_add(2 * interval);
        if now < due && !clock_went_back {
            return;
        }
        // One caller wins the sweep; the others go on.
        if self
            .next_sweep
            .compare_exchange(due, now.saturating_add(interval), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        self.entries.retain(|_, expiry| {
            let live = *expiry > now;
            if !live {
                self.len.fetch_sub(1, Ordering::AcqRel);
            }
            live
        });
    }
}

impl std::fmt::Debug for MemoryReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryReplayCache").field("len", &self.len()).field("capacity", &self.capacity).finish()
    }
}

#[async_trait::async_trait]
impl ReplayStore for MemoryReplayCache {
    async fn first_use(&self, request_id: &str, ttl: Duration) -> Result<Seen, ReplayError> {
        self.check(request_id, ttl)
    }
}

fn system_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Manual(Arc<AtomicU64>);

    impl Manual {
        fn cache(capacity: usize) -> (Self, MemoryReplayCache) {
            let now = Arc::new(AtomicU64::new(1_700_000_000_000));
            let read = Arc::clone(&now);
            (Self(now), MemoryReplayCache::with_clock(capacity, Arc::new(move || read.load(Ordering::SeqCst))))
        }

        fn advance(&self, by: Duration) {
            self.0.fetch_add(u64::try_from(by.as_millis()).unwrap(), Ordering::SeqCst);
        }

        fn back(&self, by: Duration) {
            self.0.fetch_sub(u64::try_from(by.as_millis()).unwrap(), Ordering::SeqCst);
        }
    }

    const TTL: Duration = Duration::from_secs(121);

    #[test]
    fn a_second_use_within_the_window_is_a_replay() {
        let (clock, cache) = Manual::cache(10);
        assert_eq!(cache.check("a", TTL), Ok(Seen::First));
        assert_eq!(cache.check("b", TTL), Ok(Seen::First));
        clock.advance(Duration::from_secs(120));
        assert_eq!(cache.check("a", TTL), Ok(Seen::Again));
        clock.advance(Duration::from_millis(999));
        assert_eq!(cache.check("a", TTL), Ok(Seen::Again));
        // Past the TTL the id is unknown again (its assertion is long stale by then).
        clock.advance(Duration::from_millis(2));
        assert_eq!(cache.check("a", TTL), Ok(Seen::First));
    }

    #[test]
    fn expired_entries_are_dropped() {
        let (clock, cache) = Manual::cache(1000);
        for i in 0..100 {
            assert_eq!(cache.check(&format!("id-{i}"), TTL), Ok(Seen::First));
        }
        assert_eq!(cache.len(), 100);
        clock.advance(Duration::from_secs(60));
        assert_eq!(cache.check("late", TTL), Ok(Seen::First));
        assert_eq!(cache.len(), 101);
        clock.advance(Duration::from_secs(62));
        // This call finds a sweep due: the first 100 are gone, `late` lives on.
        assert_eq!(cache.check("later", TTL), Ok(Seen::First));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.check("late", TTL), Ok(Seen::Again));
        clock.advance(TTL);
        assert_eq!(cache.check("x", TTL), Ok(Seen::First));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_full_cache_refuses_new_ids_and_still_knows_the_old_ones() {
        let (clock, cache) = Manual::cache(3);
        for id in ["a", "b", "c"] {
            assert_eq!(cache.check(id, TTL), Ok(Seen::First));
        }
        for _ in 0..5 {
            assert_eq!(cache.check("d", TTL), Err(ReplayError::Full { capacity: 3 }));
        }
        assert_eq!(cache.len(), 3);
        // Nothing live was evicted: every recorded id is still a replay.
        for id in ["a", "b", "c"] {
            assert_eq!(cache.check(id, TTL), Ok(Seen::Again));
        }
        // Once they expire there is room again.
        clock.advance(TTL + Duration::from_secs(1));
        assert_eq!(cache.check("d", TTL), Ok(Seen::First));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn an_expired_entry_not_yet_swept_does_not_count_as_seen() {
        let (clock, cache) = Manual::cache(1);
        assert_eq!(cache.check("a", Duration::from_millis(500)), Ok(Seen::First));
        clock.advance(Duration::from_millis(600)); // no sweep due yet (interval 1 s)
        assert_eq!(cache.check("a", TTL), Ok(Seen::First));
        assert_eq!(cache.check("a", TTL), Ok(Seen::Again));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_clock_that_steps_back_keeps_entries_and_still_sweeps() {
        let (clock, cache) = Manual::cache(10);
        assert_eq!(cache.check("a", TTL), Ok(Seen::First));
        clock.back(Duration::from_secs(3600));
        // The assertion behind `a` is valid again an hour "earlier"; so is the entry.
        assert_eq!(cache.check("a", TTL), Ok(Seen::Again));
        assert_eq!(cache.check("b", Duration::from_secs(1)), Ok(Seen::First));
        clock.advance(Duration::from_secs(5));
        assert_eq!(cache.check("c", TTL), Ok(Seen::First));
        // `b` was swept although the first sweep was scheduled an hour ahead.
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn concurrent_uses_of_one_id_admit_exactly_one() {
        let cache = Arc::new(MemoryReplayCache::new(100));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let cache = Arc::clone(&cache);
                std::thread::spawn(move || (0..50).filter(|_| cache.check("same", TTL) == Ok(Seen::First)).count())
            })
            .collect();
        let firsts: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(firsts, 1);
    }

    #[test]
    fn the_cap_holds_under_concurrency() {
        let cache = Arc::new(MemoryReplayCache::new(100));
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let cache = Arc::clone(&cache);
                std::thread::spawn(move || {
                    (0..50).filter(|i| cache.check(&format!("{t}-{i}"), TTL) == Ok(Seen::First)).count()
                })
            })
            .collect();
        let firsts: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(firsts, 100);
        assert_eq!(cache.len(), 100);
    }
}
