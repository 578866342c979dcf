//! The in-process backend: GCRA state in N mutex-guarded shards.
//!
//! # Bounded memory (SEED-FLAWS F13)
//!
//! The seed kept one limiter per IP forever. Here a key costs one `u64` (its
//! TAT) plus its name, and three mechanisms keep the map small:
//!
//! 1. **Decayed state is dropped.** Once a key's TAT is in the past its state
//!    is indistinguishable from a fresh key, so forgetting it changes no
//!    decision. Each shard sweeps out such keys when a request lands on it
//!    and its last sweep is [`MemoryLimiter::SWEEP_INTERVAL`] (10 s) old, and
//!    again whenever it is full; [`MemoryLimiter::sweep`] does all shards on
//!    demand.
//! 2. **A hard cap.** `MemoryLimiter::new(max_keys)` splits `max_keys` over
//!    the shards (their caps add up to exactly `max_keys`), and a shard never
//!    holds more than its share, so the map never grows past the cap, even
//!    under churn from millions of addresses.
//! 3. **Stalest first at the cap.** When a new key arrives at a full shard
//!    that has nothing decayed, the shard evicts the 1/16 of its keys with
//!    the smallest TAT (at least one): the keys closest to fully decayed,
//!    i.e. those whose eviction forgives the least. An evicted client simply
//!    starts again with a fresh burst. That makes the limiter more lenient
//!    under a flood of distinct keys, never less available: refusing new
//!    keys at the cap would let a flood lock out every newcomer. Evicting in
//!    batches keeps the cost of a full shard amortised O(1) per new key.
//!
//! Because the cap is per shard, eviction may start in a shard that hashing
//! filled slightly faster than the others, before the whole map holds
//! `max_keys`; the shards get at least a few hundred keys each so this
//! stays a rounding matter.
//!
//! # Hot path
//!
//! A check hashes `(class, key)` once to pick a shard, locks that shard
//! only, and looks the pair up without building a `String` (the map's key
//! type borrows as a `dyn` pair of `&str`). An existing key costs no
//! allocation; a new one costs its two names. Both hashes are foldhash with
//! random seeds (so clients cannot aim at one shard or one bucket without
//! seeing hashes), as the gateway's token cache uses: SipHash, std's
//! default, was about 3.5% of a proxied request's instructions for the two
//! checks (IP and user) each request makes.
//!
//! # Time
//!
//! The limiter reads a [`Clock`]: [`MonotonicClock`] (the coarse monotonic clock) in
//! production, so wall-clock jumps change nothing, and [`ManualClock`] in
//! tests, which only moves when told to.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{Decision, Gcra, LimiterError, Quota, RateLimiter, zero_quota_decision};
use crate::clock::CoarseInstant;

/// How often a shard that receives requests drops its decayed keys.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// At most this many shards.
const MAX_SHARDS: usize = 64;
/// Fewer shards rather than shards smaller than this.
const MIN_KEYS_PER_SHARD: usize = 256;
/// A full shard evicts this fraction of its keys at once (at least one).
const EVICT_FRACTION: usize = 16;

/// A monotonic time source for [`MemoryLimiter`].
pub trait Clock: Send + Sync + 'static {
    /// Time elapsed since an origin fixed for the clock's lifetime. Must never
    /// go backwards.
    fn now(&self) -> Duration;
}

/// The production clock: the kernel's coarse monotonic clock
/// ([`CoarseInstant`]), immune to wall-clock changes. It moves a timer tick
/// (a few ms) at a time; every request reads it, and at a quota's scale
/// (per minute) a tick is well below what one request earns back, so a
/// client gains at most a tick's worth of quota over any window.
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    origin: CoarseInstant,
}

impl MonotonicClock {
    #[must_use]
    pub fn new() -> Self {
        Self { origin: CoarseInstant::now() }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        CoarseInstant::now().saturating_duration_since(self.origin)
    }
}

/// A clock that moves only when told to, for deterministic tests. Clones
/// share the same time, so a test keeps one handle and gives the limiter
/// another.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock at time zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by` (microsecond resolution).
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(micros(by), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::SeqCst))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// In-process GCRA limiter with a hard cap on the number of keys. See the
/// module docs of [`super`] for the algorithm and of this file for memory.
pub struct MemoryLimiter<C: Clock = MonotonicClock> {
    clock: C,
    shard_hasher: foldhash::fast::RandomState,
    shards: Box<[Shard]>,
    max_keys: usize,
}

struct Shard {
    state: Mutex<ShardState>,
    /// This shard's share of `max_keys`.
    cap: usize,
}

struct ShardState {
    /// `(class, key)` → TAT in microseconds of the limiter's clock.
    map: HashMap<StateKey, u64, foldhash::fast::RandomState>,
    /// When (limiter clock, µs) this shard next drops its decayed keys.
    next_sweep: u64,
}

impl MemoryLimiter<MonotonicClock> {
    /// A limiter holding at most `max_keys` keys (at least 1) over all classes.
    #[must_use]
    pub fn new(max_keys: usize) -> Self {
        Self::with_clock(max_keys, MonotonicClock::new())
    }
}

impl<C: Clock> MemoryLimiter<C> {
    /// How often a shard that receives requests drops its decayed keys.
    pub const SWEEP_INTERVAL: Duration = SWEEP_INTERVAL;

    /// [`MemoryLimiter::new`] reading time from `clock`.
    #[must_use]
    pub fn with_clock(max_keys: usize, clock: C) -> Self {
        let max_keys = max_keys.max(1);
        let count = (max_keys / MIN_KEYS_PER_SHARD).clamp(1, MAX_SHARDS);
        let (base, extra) = (max_keys / count, max_keys % count);
        let shards = (0..count)
            .map(|i| Shard {
                state: Mutex::new(ShardState {
                    map: HashMap::with_hasher(foldhash::fast::RandomState::default()),
                    next_sweep: 0,
                }),
                cap: base + usize::from(i < extra),
            })
            .collect();
        Self { clock, shard_hasher: foldhash::fast::RandomState::default(), shards, max_keys }
    }

    /// The cap on the number of keys.
    #[must_use]
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Keys currently held (decayed ones included until swept). Locks each
    /// shard in turn, so it is a snapshot, not for the hot path.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(&s.state).map.len()).sum()
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every fully decayed key now, in all shards. Optional: shards also
    /// sweep themselves as requests arrive; a caller may run this from a
    /// periodic task to return memory after a burst of traffic stops.
    pub fn sweep(&self) {
        let now = micros(self.clock.now());
        for shard in &*self.shards {
            lock(&shard.state).sweep(now);
        }
    }

    /// The synchronous decision behind [`RateLimiter::check`]: counts one
    /// request of `(class, key)` against `quota`.
    pub fn decide(&self, class: &str, key: &str, quota: Quota) -> Decision {
        let Some(gcra) = Gcra::new(quota) else {
            return zero_quota_decision(quota);
        };
        let lookup: &dyn KeyPair = &(class, key);
        let shard = self.shard(lookup);
        let now = micros(self.clock.now());
        let mut state = lock(&shard.state);
        if now >= state.next_sweep {
            state.sweep(now);
        }
        if let Some(tat) = state.map.get_mut(lookup) {
            let (decision, next) = gcra.step(now, Some(*tat));
            if let Some(next) = next {
                *tat = next;
            }
            return decision;
        }
        let (decision, next) = gcra.step(now, None);
        if let Some(next) = next {
            state.make_room(now, shard.cap);
            state.map.insert(StateKey::new(class, key), next);
        }
        decision
    }

    fn shard(&self, lookup: &dyn KeyPair) -> &Shard {
        let count = self.shards.len() as u64;
        let index = usize::try_from(self.shard_hasher.hash_one(lookup) % count).unwrap_or(0);
        &self.shards[index]
    }
}

impl<C: Clock> std::fmt::Debug for MemoryLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLimiter")
            .field("max_keys", &self.max_keys)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl<C: Clock> RateLimiter for MemoryLimiter<C> {
    async fn check(&self, class: &str, key: &str, quota: Quota) -> Result<Decision, LimiterError> {
        Ok(self.decide(class, key, quota))
    }

    fn check_now(&self, class: &str, key: &str, quota: Quota) -> Option<Result<Decision, LimiterError>> {
        Some(Ok(self.decide(class, key, quota)))
    }
}

impl ShardState {
    /// Drops the keys whose state has fully decayed (TAT not after `now`).
    fn sweep(&mut self, now: u64) {
        self.map.retain(|_, tat| *tat > now);
        // Give memory back after a spike, but do not churn the allocation.
        if self.map.capacity() > 64 && self.map.len() < self.map.capacity() / 4 {
            self.map.shrink_to(self.map.len() * 2);
        }
        self.next_sweep = now.saturating_add(micros(SWEEP_INTERVAL));
    }

    /// Makes room for one more key under `cap`: decayed keys first, then the
    /// stalest live ones.
    fn make_room(&mut self, now: u64, cap: usize) {
        if self.map.len() < cap {
            return;
        }
        self.sweep(now);
        if self.map.len() < cap {
            return;
        }
        let evict = (cap / EVICT_FRACTION).max(1).max(self.map.len() + 1 - cap);
        self.evict_stalest(evict);
    }

    /// Removes exactly `count` keys (or all), those with the smallest TAT.
    fn evict_stalest(&mut self, count: usize) {
        let mut tats: Vec<u64> = self.map.values().copied().collect();
        let count = count.min(tats.len());
        if count == 0 {
            return;
        }
        let (below, threshold, _) = tats.select_nth_unstable(count - 1);
        let threshold = *threshold;
        let mut ties = count - below.iter().filter(|t| **t < threshold).count();
        self.map.retain(|_, tat| {
            if *tat < threshold {
                false
            } else if *tat == threshold && ties > 0 {
                ties -= 1;
                false
            } else {
                true
            }
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A shard is a map of integers, consistent after any panic: keep going.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A `(class, key)` pair, owned or borrowed, so the map can be searched with
/// two `&str` without allocating.
trait KeyPair {
    fn parts(&self) -> (&str, &str);
}

impl KeyPair for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl Hash for dyn KeyPair + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (class, key) = self.parts();
        class.hash(state);
        key.hash(state);
    }
}

impl PartialEq for dyn KeyPair + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyPair + '_ {}

/// The map's owned key. Its `Hash` and `Eq` are those of `dyn KeyPair`, as
/// `Borrow` requires.
struct StateKey {
    class: Box<str>,
    key: Box<str>,
}

impl StateKey {
    fn new(class: &str, key: &str) -> Self {
        Self { class: class.into(), key: key.into() }
    }
}

impl KeyPair for StateKey {
    fn parts(&self) -> (&str, &str) {
        (&self.class, &self.key)
    }
}

impl<'a> Borrow<dyn KeyPair + 'a> for StateKey {
    fn borrow(&self) -> &(dyn KeyPair + 'a) {
        self
    }
}

impl Hash for StateKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn KeyPair).hash(state);
    }
}

impl PartialEq for StateKey {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for StateKey {}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Quota = Quota { per_minute: 60, burst: 5 };

    fn limiter(max_keys: usize) -> (MemoryLimiter<ManualClock>, ManualClock) {
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(1000));
        (MemoryLimiter::with_clock(max_keys, clock.clone()), clock)
    }

    #[test]
    fn fresh_key_gets_exactly_burst_then_waits_one_interval() {
        let (l, clock) = limiter(1000);
        for i in 0..5 {
            let d = l.decide("ip", "a", Q);
            assert_eq!(
                d,
                Decision::Allowed { limit: 5, remaining: 4 - i, reset_after: Duration::from_secs(u64::from(i) + 1) }
            );
        }
        let d = l.decide("ip", "a", Q);
        assert_eq!(
            d,
            Decision::Limited { limit: 5, retry_after: Duration::from_secs(1), reset_after: Duration::from_secs(5) }
        );
        // A limited request costs nothing: asking again changes nothing.
        assert_eq!(l.decide("ip", "a", Q), d);

        clock.advance(Duration::from_millis(400));
        let d = l.decide("ip", "a", Q);
        assert_eq!(d.retry_after(), Some(Duration::from_millis(600)));

        clock.advance(Duration::from_millis(600));
        assert_eq!(
            l.decide("ip", "a", Q),
            Decision::Allowed { limit: 5, remaining: 0, reset_after: Duration::from_secs(5) }
        );
        assert!(!l.decide("ip", "a", Q).is_allowed());
    }

    #[test]
    fn long_run_rate_is_per_minute() {
        let (l, clock) = limiter(1000);
        let q = Quota { per_minute: 100, burst: 10 };
        let mut allowed = 0;
        // 10 minutes, one attempt every 100 ms (600/min offered).
        for _ in 0..6000 {
            allowed += u32::from(l.decide("ip", "a", q).is_allowed());
            clock.advance(Duration::from_millis(100));
        }
        // 10 at once, then 100/min for 10 minutes (the last interval may be pending).
        assert!((1009..=1010).contains(&allowed), "{allowed}");
    }

    #[test]
    fn keys_and_classes_are_independent() {
        let (l, _clock) = limiter(1000);
        let q = Quota { per_minute: 60, burst: 2 };
        for (class, key) in [("ip", "a"), ("ip", "b"), ("user", "a"), ("auth_ip", "a")] {
            assert!(l.decide(class, key, q).is_allowed());
            assert!(l.decide(class, key, q).is_allowed());
            assert!(!l.decide(class, key, q).is_allowed(), "{class}/{key}");
        }
        // A pair split differently is a different key.
        assert!(l.decide("ip:a", "b", q).is_allowed());
        assert!(l.decide("ip", "a:b", q).is_allowed());
        assert_eq!(l.len(), 6);
    }

    #[test]
    fn zero_quota_admits_nothing_and_stores_nothing() {
        let (l, _clock) = limiter(10);
        for q in [Quota { per_minute: 0, burst: 5 }, Quota { per_minute: 5, burst: 0 }] {
            let d = l.decide("ip", "a", q);
            assert!(!d.is_allowed());
            assert_eq!(d.retry_after(), Some(Duration::from_secs(60)));
        }
        assert!(l.is_empty());
    }

    #[test]
    fn cap_holds_under_100k_distinct_keys() {
        let cap = 1000;
        let (l, clock) = limiter(cap);
        let mut max_seen = 0;
        for i in 0..100_000u32 {
            assert!(l.decide("ip", &i.to_string(), Q).is_allowed());
            if i % 100 == 0 {
                clock.advance(Duration::from_millis(1));
            }
            let len = l.len();
            assert!(len <= cap, "{len} keys after {i}");
            max_seen = max_seen.max(len);
        }
        // The cap is used, not just respected.
        assert!(max_seen > cap * 9 / 10, "{max_seen}");
    }

    #[test]
    fn eviction_at_the_cap_takes_the_stalest() {
        let (l, clock) = limiter(100); // one shard
        let q = Quota { per_minute: 1, burst: 10 }; // decays after 10 minutes
        // Key "busy" has used its whole burst: TAT 10 min ahead.
        for _ in 0..10 {
            assert!(l.decide("ip", "busy", q).is_allowed());
        }
        // 150 one-shot keys, created later than "busy" but each one TAT 1 min ahead.
        for i in 0..150 {
            clock.advance(Duration::from_millis(10));
            l.decide("ip", &format!("k{i}"), q);
            assert!(l.len() <= 100);
        }
        // "busy" was never evicted: still limited.
        assert!(!l.decide("ip", "busy", q).is_allowed());
    }

    #[test]
    fn decayed_keys_are_evicted() {
        let (l, clock) = limiter(100_000);
        for i in 0..5000 {
            l.decide("ip", &i.to_string(), Q);
        }
        assert_eq!(l.len(), 5000);
        // One request decays after one interval (1 s).
        clock.advance(Duration::from_secs(1));
        l.sweep();
        assert!(l.is_empty());

        // Opportunistically, too: after SWEEP_INTERVAL, traffic sweeps the shards it lands on.
        for i in 0..5000 {
            l.decide("ip", &i.to_string(), Q);
        }
        clock.advance(SWEEP_INTERVAL);
        for i in 0..2000 {
            l.decide("user", &i.to_string(), Q);
        }
        assert_eq!(l.len(), 2000);
    }

    #[test]
    fn tiny_and_zero_caps_still_work() {
        let (l, _clock) = limiter(0);
        assert_eq!(l.max_keys(), 1);
        assert!(l.decide("ip", "a", Q).is_allowed());
        assert!(l.decide("ip", "b", Q).is_allowed());
        assert_eq!(l.len(), 1);
    }

    #[tokio::test]
    async fn concurrent_checks_share_one_budget() {
        let l = Arc::new(MemoryLimiter::with_clock(1000, ManualClock::new()));
        let q = Quota { per_minute: 60, burst: 50 };
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move {
                    let mut n = 0;
                    for _ in 0..100 {
                        n += u32::from(l.check("ip", "shared", q).await.unwrap().is_allowed());
                    }
                    n
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        assert_eq!(total, 50);
    }
}
