//! Rate limiting: one GCRA, two backends (in-process and Redis).
//!
//! # The algorithm
//!
//! Both backends run the *generic cell rate algorithm* (GCRA), the
//! token bucket written as a single timestamp per key: the *theoretical
//! arrival time* `TAT`, the moment at which the key's budget would be full
//! again. With emission interval `T = 60 s / per_minute` and tolerance
//! `τ = T · burst`, a request arriving at `now` is judged by:
//!
//! ```text
//! tat     = max(stored TAT, now)          // a missing key is a fresh key
//! new_tat = tat + T
//! allowed ⇔ new_tat − now ≤ τ             // then store new_tat
//! ```
//!
//! The exact semantics, identical in both backends (they share
//! `Gcra`'s integer arithmetic; the Redis script is a line-by-line copy):
//!
//! - A fresh key may send exactly `burst` requests at once; the next one is
//!   limited.
//! - After that the key earns one request every `T`: in the long run
//!   `per_minute` requests per minute, never more than `burst` at once.
//! - `remaining` is how many more requests would be allowed right now;
//!   `reset_after` is the time until the full burst is available again
//!   (the state has fully decayed, and the key may be forgotten);
//!   `retry_after` (limited only) is the time until the next request would
//!   be allowed. The `limit` reported is `burst`, so the `RateLimit-*`
//!   headers describe the bucket: `limit` requests, of which `remaining`
//!   are left, refilled completely in `reset` seconds.
//! - A limited request costs nothing: the state is only written when a
//!   request is allowed.
//! - Time is counted in whole microseconds: `T` is `60 s / per_minute`
//!   rounded *up* to a microsecond (never more generous than configured;
//!   rates above a million per second per key are therefore clamped), and
//!   `τ` is capped at 2^51 µs (about 71 years) so that the Redis script's
//!   Lua numbers (doubles) stay exact.
//! - A quota with `per_minute == 0` or `burst == 0` admits nothing: every
//!   check is [`Decision::Limited`] with a `retry_after` of one minute, and
//!   no state is stored. Configuration should refuse such quotas; the
//!   limiter only makes sure a zero never turns into "unlimited" or a
//!   division by zero.
//!
//! GCRA needs one integer per key and one read-modify-write per decision,
//! which is what makes both bounded memory and an atomic Redis script easy.
//!
//! # Backends
//!
//! - [`MemoryLimiter`]: sharded, in-process, for a single gateway (the
//!   embedded default). Memory is bounded (SEED-FLAWS F13): decayed keys are
//!   swept, and a hard cap on the number of keys evicts the stalest state
//!   first. See its docs.
//! - [`RedisLimiter`]: one Lua script per decision, so several gateways
//!   share exact limits. Keys are hash-tagged (`<prefix>:rl:{<class>:<key>}`)
//!   so a decision touches one Redis Cluster slot, carry a `PX` expiry equal
//!   to the time their state fully decays (Redis memory is bounded too), and
//!   the script reads the *Redis server's* clock (`TIME`), so gateways with
//!   skewed clocks agree. See its docs for how it behaves when Redis is down.
//!
//! # Failure is the caller's decision
//!
//! A backend that cannot answer returns [`LimiterError::Unavailable`]
//! quickly (the Redis backend within about a second and a half) and never
//! guesses: whether to let the request through (fail open) or refuse it
//! (fail closed) is a per-route policy of the caller (`phases::enforce`).
//!
//! # Client keys
//!
//! [`ip_key`] keys IPv4 clients by address and IPv6 clients by their /64,
//! since one IPv6 host usually controls a whole /64 (SEED-FLAWS F13). Which
//! address is the client's is `client_ip`'s business (F14).

mod memory;
mod redis;

use std::net::IpAddr;
use std::time::Duration;

pub use memory::{Clock, ManualClock, MemoryLimiter, MonotonicClock};
pub use redis::RedisLimiter;

/// Header names of the IETF draft (draft-ietf-httpapi-ratelimit-headers),
/// lower-case as HTTP/2 requires and as `http::HeaderName::from_static` expects.
pub const RATELIMIT_LIMIT: &str = "ratelimit-limit";
/// See [`RATELIMIT_LIMIT`].
pub const RATELIMIT_REMAINING: &str = "ratelimit-remaining";
/// See [`RATELIMIT_LIMIT`].
pub const RATELIMIT_RESET: &str = "ratelimit-reset";
/// `Retry-After` (RFC 9110 §10.2.3), in delay-seconds.
pub const RETRY_AFTER: &str = "retry-after";

/// A limit: `per_minute` requests per minute on average, with bursts of up
/// to `burst` requests at once. A fresh key may send `burst` requests
/// immediately, then one every `60 s / per_minute`. See the module docs for
/// the exact semantics, including what a zero means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub per_minute: u32,
    pub burst: u32,
}

impl Quota {
    /// `per_minute` requests per minute with bursts of `burst`.
    #[must_use]
    pub const fn new(per_minute: u32, burst: u32) -> Self {
        Self { per_minute, burst }
    }

    /// The emission interval `T`: one request is earned back every `T`.
    /// `None` for a quota that admits nothing.
    #[must_use]
    pub fn emission_interval(&self) -> Option<Duration> {
        Gcra::new(*self).map(|g| Duration::from_micros(g.interval))
    }
}

/// What a limiter decided for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Let it through. `remaining` more requests would be allowed right now;
    /// the full `limit` (the burst) is available again after `reset_after`.
    Allowed { limit: u32, remaining: u32, reset_after: Duration },
    /// Refuse it (429). The next request would be allowed after
    /// `retry_after`; the full burst after `reset_after`.
    Limited { limit: u32, retry_after: Duration, reset_after: Duration },
}

impl Decision {
    /// Whether the request may go on.
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }

    /// The quota's burst, the `RateLimit-Limit` value.
    #[must_use]
    pub fn limit(&self) -> u32 {
        match *self {
            Self::Allowed { limit, .. } | Self::Limited { limit, .. } => limit,
        }
    }

    /// Requests left right now (0 when limited).
    #[must_use]
    pub fn remaining(&self) -> u32 {
        match *self {
            Self::Allowed { remaining, .. } => remaining,
            Self::Limited { .. } => 0,
        }
    }

    /// Time until the full burst is available again.
    #[must_use]
    pub fn reset_after(&self) -> Duration {
        match *self {
            Self::Allowed { reset_after, .. } | Self::Limited { reset_after, .. } => reset_after,
        }
    }

    /// Time until the next request would be allowed; `None` when allowed.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match *self {
            Self::Allowed { .. } => None,
            Self::Limited { retry_after, .. } => Some(retry_after),
        }
    }

    /// The response headers for this decision: `RateLimit-Limit`,
    /// `RateLimit-Remaining`, `RateLimit-Reset` (seconds, rounded up) and,
    /// when limited, `Retry-After` (seconds, rounded up, so at least 1).
    /// Names are lower-case (see [`RATELIMIT_LIMIT`]); values are plain
    /// decimal integers, always valid header values.
    #[must_use]
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            (RATELIMIT_LIMIT, self.limit().to_string()),
            (RATELIMIT_REMAINING, self.remaining().to_string()),
            (RATELIMIT_RESET, ceil_secs(self.reset_after()).to_string()),
        ];
        if let Some(retry_after) = self.retry_after() {
            headers.push((RETRY_AFTER, ceil_secs(retry_after).to_string()));
        }
        headers
    }
}

/// Whole seconds, rounded up (header values must never promise too early).
#[must_use]
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Why a limiter could not decide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LimiterError {
    /// The backend did not answer in time, could not be reached or answered
    /// with an error. The caller fails open or closed as the route says.
    #[error("rate limiter backend unavailable: {0}")]
    Unavailable(String),
    /// The limiter was set up with something unusable (a Redis URL that does
    /// not parse, a key prefix with a hash-tag brace). Only returned by
    /// constructors.
    #[error("rate limiter misconfigured: {0}")]
    Config(String),
}

/// A keyed rate limiter. Implementations are shared by every request of
/// the gateway (`Arc<dyn RateLimiter>`).
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request of `key` against `quota` and says whether it may go on.
    ///
    /// `class` names the limit family (`"ip"`, `"auth_ip"`, `"user"`) and
    /// `key` the client inside it; the same key in two classes has two
    /// independent budgets.
    ///
    /// # Errors
    /// [`LimiterError::Unavailable`] when the backend cannot answer; the
    /// caller decides whether that fails open or closed.
    async fn check(&self, class: &str, key: &str, quota: Quota) -> Result<Decision, LimiterError>;

    /// The same decision as [`check`](Self::check), when the backend can
    /// give it without waiting: the in-process limiter always can, so the
    /// hot path need not box a future for it. `None` (the default) means
    /// "call `check`"; nothing is counted then.
    fn check_now(&self, class: &str, key: &str, quota: Quota) -> Option<Result<Decision, LimiterError>> {
        let _ = (class, key, quota);
        None
    }

    /// Whether the backend answers now (for a readiness probe). The
    /// in-process limiter always does.
    ///
    /// # Errors
    /// [`LimiterError::Unavailable`] when it does not.
    async fn ping(&self) -> Result<(), LimiterError> {
        Ok(())
    }
}

/// The rate-limit key of a client address: an IPv4 address as itself, an
/// IPv6 address by its /64 prefix (`2001:db8:1:2::/64`), and an
/// IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a dual-stack socket
/// reports for an IPv4 peer) as the IPv4 address.
#[must_use]
pub fn ip_key(ip: IpAddr) -> IpKey {
    match ip {
        IpAddr::V4(v4) => IpKey::V4(ipv4_text(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpKey::V4(ipv4_text(v4)),
            None => {
                let network = std::net::Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX));
                IpKey::V6(format!("{network}/64"))
            }
        },
    }
}

/// What [`ip_key`] returns: an IPv4 key needs no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpKey {
    V4(Ipv4Text),
    V6(String),
}

impl IpKey {
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::V4(text) => text.as_str(),
            Self::V6(text) => text,
        }
    }
}

/// An IPv4 address in dotted decimal, as `Ipv4Addr`'s `Display` writes it,
/// without the formatting machinery or an allocation: the gateway writes
/// the client address twice per request (its rate-limit key and
/// `X-Forwarded-For`), and through `Display` that was a few percent of a
/// proxied GET's instructions.
#[must_use]
pub fn ipv4_text(ip: std::net::Ipv4Addr) -> Ipv4Text {
    let mut text = Ipv4Text { bytes: [0; 15], len: 0 };
    let mut push = |b: u8| {
        text.bytes[usize::from(text.len)] = b;
        text.len += 1;
    };
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            push(b'.');
        }
        if octet >= 100 {
            push(b'0' + octet / 100);
        }
        if octet >= 10 {
            push(b'0' + octet / 10 % 10);
        }
        push(b'0' + octet % 10);
    }
    text
}

/// [`ipv4_text`]'s result: at most 15 bytes (`255.255.255.255`), digits and dots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Text {
    bytes: [u8; 15],
    len: u8,
}

impl Ipv4Text {
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Digits and dots only: always UTF-8.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// Upper bound of `τ` in microseconds, so that `now + τ + T` stays below
/// 2^53 (exact in a Lua double) for the next few centuries of `TIME`.
const MAX_TOLERANCE_MICROS: u64 = 1 << 51;
const MICROS_PER_MINUTE: u64 = 60_000_000;

/// The GCRA of a [`Quota`], in microseconds. Shared by both backends so they
/// cannot drift apart; the Redis script mirrors [`Gcra::admits`] and
/// [`Gcra::next_tat`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// `T`, ≥ 1.
    pub(crate) interval: u64,
    /// `τ = T · burst`, capped at [`MAX_TOLERANCE_MICROS`].
    pub(crate) tolerance: u64,
    burst: u32,
}

impl Gcra {
    /// `None` for a quota that admits nothing.
    pub(crate) fn new(quota: Quota) -> Option<Self> {
        if quota.per_minute == 0 || quota.burst == 0 {
            return None;
        }
        let interval = MICROS_PER_MINUTE.div_ceil(u64::from(quota.per_minute));
        let tolerance = interval.saturating_mul(u64::from(quota.burst)).min(MAX_TOLERANCE_MICROS);
        Some(Self { interval, tolerance, burst: quota.burst })
    }

    /// The TAT a request at `now` starts from: a stored TAT in the past (or
    /// none) is the same as a fresh key.
    pub(crate) fn effective_tat(now: u64, stored: Option<u64>) -> u64 {
        stored.map_or(now, |tat| tat.max(now))
    }

    /// Whether a request at `now` fits, given the effective TAT (≥ `now`).
    pub(crate) fn admits(&self, now: u64, tat: u64) -> bool {
        tat.saturating_add(self.interval).saturating_sub(now) <= self.tolerance
    }

    /// The TAT to store after an allowed request.
    pub(crate) fn next_tat(&self, tat: u64) -> u64 {
        tat.saturating_add(self.interval)
    }

    /// The decision for a request at `now` with effective TAT `tat`
    /// (`tat ≥ now`) that was (or was not) admitted.
    pub(crate) fn decision(&self, admitted: bool, now: u64, tat: u64) -> Decision {
        let limit = self.burst;
        if admitted {
            let used = self.next_tat(tat).saturating_sub(now);
            let remaining = (self.tolerance.saturating_sub(used)) / self.interval;
            Decision::Allowed {
                limit,
                remaining: u32::try_from(remaining).unwrap_or(u32::MAX).min(limit),
                reset_after: Duration::from_micros(used),
            }
        } else {
            let allowed_at = self.next_tat(tat).saturating_sub(self.tolerance);
            Decision::Limited {
                limit,
                retry_after: Duration::from_micros(allowed_at.saturating_sub(now)),
                reset_after: Duration::from_micros(tat.saturating_sub(now)),
            }
        }
    }

    /// The whole step on a stored TAT: the decision and, when allowed, the TAT to store.
    pub(crate) fn step(&self, now: u64, stored: Option<u64>) -> (Decision, Option<u64>) {
        let tat = Self::effective_tat(now, stored);
        let admitted = self.admits(now, tat);
        (self.decision(admitted, now, tat), admitted.then(|| self.next_tat(tat)))
    }
}

/// The answer to a quota that admits nothing (see the module docs).
pub(crate) fn zero_quota_decision(quota: Quota) -> Decision {
    Decision::Limited { limit: quota.burst, retry_after: Duration::from_secs(60), reset_after: Duration::from_secs(60) }
}

#[cfg(test)]
mod tests;
