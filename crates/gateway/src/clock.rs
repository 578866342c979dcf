//! The kernel's coarse clocks, for what the hot path times to a second or a
//! few milliseconds.
//!
//! A proxied request used to read the precise clock a dozen times; on this
//! project's benchmark machines each read costs ~20 ns (the vDSO reads the
//! TSC and scales it), about 2 % of the gateway's CPU per request. Most of
//! those reads do not need nanoseconds: whether a pooled connection has been
//! idle for four seconds, whether a cached token is past its `exp`, the
//! identity assertion's timestamp (whole seconds), whether the revocation
//! view is more than a few seconds stale, and the rate limiter's clock
//! (whose quotas are per minute). `CLOCK_MONOTONIC_COARSE` and
//! `CLOCK_REALTIME_COARSE` are the time of the last timer tick (a few ms
//! behind at most; 4 ms at the usual `HZ=250`), read in ~3 ns.
//!
//! What measures latency (the metrics' histograms, the upstream timeout,
//! the header read timeout) keeps the precise clock.

use std::time::Duration;

/// A point on the coarse monotonic clock: never goes backwards, advances a
/// timer tick at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CoarseInstant(Duration);

impl CoarseInstant {
    /// Now, to the last timer tick.
    #[must_use]
    pub fn now() -> Self {
        Self(coarse_monotonic())
    }

    /// Time from `earlier` to `self`; zero if `earlier` is later.
    #[must_use]
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// `self` moved back by `by`, if the clock reaches that far back (tests
    /// age pooled connections with it).
    #[must_use]
    pub fn checked_sub(self, by: Duration) -> Option<Self> {
        self.0.checked_sub(by).map(Self)
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn coarse_monotonic() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

/// Unix time in whole seconds, to the last timer tick (0 if the clock reads
/// before 1970).
#[cfg(any(target_os = "linux", target_os = "android"))]
#[must_use]
pub fn unix_seconds() -> i64 {
    rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse).tv_sec.max(0)
}

/// Elsewhere, the precise clocks: the same answers, at their cost.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn coarse_monotonic() -> Duration {
    static ORIGIN: std::sync::LazyLock<std::time::Instant> = std::sync::LazyLock::new(std::time::Instant::now);
    ORIGIN.elapsed()
}

/// Unix time in whole seconds (0 if the clock reads before 1970).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[must_use]
pub fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clocks_agree_with_the_precise_ones_to_a_tick() {
        // A tick is at most 10 ms (HZ=100); allow for a slow machine too.
        let slack = Duration::from_millis(50);
        let precise_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let coarse_unix = u64::try_from(unix_seconds()).unwrap();
        assert!(precise_unix.abs_diff(coarse_unix) <= 1, "{precise_unix} vs {coarse_unix}");

        let start = CoarseInstant::now();
        let precise_start = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(120));
        let coarse = CoarseInstant::now().saturating_duration_since(start);
        let precise = precise_start.elapsed();
        assert!(coarse.abs_diff(precise) <= slack, "coarse {coarse:?} vs precise {precise:?}");
    }

    #[test]
    fn the_coarse_monotonic_clock_never_goes_back() {
        let mut last = CoarseInstant::now();
        for _ in 0..100_000 {
            let now = CoarseInstant::now();
            assert!(now >= last);
            last = now;
        }
        assert_eq!(last.saturating_duration_since(CoarseInstant::now()), Duration::ZERO);
        assert_eq!(last.checked_sub(last.0), Some(CoarseInstant(Duration::ZERO)));
        assert_eq!(last.checked_sub(last.0 + Duration::from_nanos(1)), None);
    }
}
