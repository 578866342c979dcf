//! The Redis backend: the same GCRA as one Lua script per decision.
//!
//! # Why a script
//!
//! A decision is a read-modify-write of one TAT. Run as a single script it
//! is atomic on the server (Redis runs scripts one at a time), so any number
//! of gateway processes share one exact budget per key, with one round trip.
//! The script is sent by SHA (`EVALSHA`); `redis::Script` loads it again by
//! itself after a `NOSCRIPT` (a restarted or flushed server), and
//! [`RedisLimiter::connect`] preloads it.
//!
//! # Keys
//!
//! `<prefix>:rl:{<class>:<key>}`. The braces are a Redis Cluster hash tag:
//! everything a decision touches hashes to one slot, as scripts require in a
//! cluster (`REDIS_URL` may list a cluster's seed nodes: `redis_conn`), so a
//! decision stays one atomic script on one node there too.
//! The prefix may not contain a brace (it would move the tag); a `:` or `%`
//! in a class is percent-escaped so that `(class, key)` maps to exactly one
//! Redis key. Each write sets `PX` to the time until the state has fully
//! decayed, the moment it becomes equivalent to a missing key, so Redis
//! forgets idle clients by itself and its memory is bounded by the clients
//! active in the last `τ`.
//!
//! # Whose clock
//!
//! The script reads the Redis server's clock (`TIME`, to the microsecond),
//! never the gateway's: two gateways whose clocks disagree still make the
//! same decision, and a gateway's clock jump cannot refill a bucket.
//! (`redis.replicate_commands()` is called where it exists, so the
//! non-deterministic `TIME` is safe under pre-5.0 script replication too.)
//!
//! # When Redis is down
//!
//! The gateway must be able to start, and keep serving, while Redis is
//! unreachable, and recover by itself when it is back. So:
//!
//! - [`RedisLimiter::connect`] only fails for a URL that does not parse or a
//!   bad prefix. The connection is made lazily; `connect` tries it once (and
//!   loads the script) and only logs a warning if Redis does not answer.
//! - Each decision has a deadline of [`RedisLimiter::OPERATION_TIMEOUT`]
//!   (1.5 s) on top of the connection manager's own
//!   [`RedisLimiter::CONNECT_TIMEOUT`] and [`RedisLimiter::RESPONSE_TIMEOUT`]
//!   (1 s each), so a dead or black-holed Redis costs a request at most
//!   about 1.5 s and yields [`LimiterError::Unavailable`], never a hang. The
//!   caller then fails open or closed as the route says.
//! - The connection (`redis_conn`) reconnects on the next request after an I/O
//!   error, so the first request after Redis returns is decided by Redis
//!   again. No state is cached in the gateway meanwhile: while Redis is down
//!   there is no shared limit, which is exactly why the caller decides.

use std::time::Duration;

use ::redis::Script;
use redis_conn::{RedisConnection, Settings};

use super::{Decision, Gcra, LimiterError, Quota, RateLimiter, zero_quota_decision};

/// The GCRA step of [`Gcra::step`], in Lua. `KEYS[1]`: the state key;
/// `ARGV[1]`: `T` in µs; `ARGV[2]`: `τ` in µs. Returns `{admitted (0|1),
/// now (µs), effective TAT (µs)}`; the caller derives the [`Decision`] from
/// them with the same Rust code as the in-process backend. Integers stay
/// below 2^53, so Lua's doubles are exact; the TAT is written with `%.0f`
/// because Lua's default number formatting keeps only 14 digits.
const GCRA_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now <= tolerance then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
  return {1, now, tat}
end
return {0, now, tat}
";

/// GCRA in Redis, shared by every gateway pointed at the same server and
/// prefix. Cheap to share: one multiplexed connection for all requests.
pub struct RedisLimiter {
    conn: RedisConnection,
    prefix: Box<str>,
    script: Script,
}

impl RedisLimiter {
    /// Time allowed to open a TCP (and TLS) connection to Redis.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Time allowed for one Redis reply.
    pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
    /// Deadline of a whole decision or ping, reconnection and script reload included.
    pub const OPERATION_TIMEOUT: Duration = Duration::from_millis(1500);

    /// A limiter on `url` (`redis://`, `rediss://`, `unix://`, or a Redis
    /// Cluster's seed nodes separated by commas), its keys under `prefix`.
    /// Does not require Redis to be up (see the module docs).
    ///
    /// # Errors
    /// [`LimiterError::Config`] when the URL does not parse or the prefix
    /// contains `{` or `}`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, LimiterError> {
        let conn = RedisConnection::open(url, Self::SETTINGS).map_err(|e| LimiterError::Config(e.to_string()))?;
        let limiter = Self::new(conn, prefix)?;
        match limiter.load_script().await {
            Ok(()) => tracing::debug!("rate limiter: Redis answers, script loaded"),
            Err(e) => tracing::warn!(
                error = %e,
                "rate limiter: Redis does not answer yet; limits fail open or closed per route until it does"
            ),
        }
        Ok(limiter)
    }

    /// A limiter over an existing connection (open it with
    /// [`RedisLimiter::SETTINGS`] to get the timeouts), its keys under
    /// `prefix`.
    ///
    /// # Errors
    /// [`LimiterError::Config`] when the prefix contains `{` or `}`.
    pub fn new(conn: RedisConnection, prefix: &str) -> Result<Self, LimiterError> {
        if prefix.contains(['{', '}']) {
            return Err(LimiterError::Config("the rate-limit key prefix may not contain `{` or `}`".to_owned()));
        }
        Ok(Self { conn, prefix: prefix.into(), script: Script::new(GCRA_SCRIPT) })
    }

    /// The connection settings used by [`RedisLimiter::connect`]:
    /// [`RedisLimiter::CONNECT_TIMEOUT`], [`RedisLimiter::RESPONSE_TIMEOUT`],
    /// and one quick retry per connection attempt (a request never waits out
    /// a long back-off; the next request tries again).
    pub const SETTINGS: Settings =
        Settings { connect_timeout: Self::CONNECT_TIMEOUT, response_timeout: Self::RESPONSE_TIMEOUT, retries: 1 };

    /// The Redis key holding the state of `(class, key)`.
    fn state_key(&self, class: &str, key: &str) -> String {
        let prefix = &self.prefix;
        if class.contains([':', '%']) {
            let class = class.replace('%', "%25").replace(':', "%3A");
            format!("{prefix}:rl:{{{class}:{key}}}")
        } else {
            format!("{prefix}:rl:{{{class}:{key}}}")
        }
    }

    async fn load_script(&self) -> Result<(), LimiterError> {
        let mut conn = self.conn.clone();
        deadline(self.script.prepare_invoke().load_async(&mut conn)).await.map(drop)
    }
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, class: &str, key: &str, quota: Quota) -> Result<Decision, LimiterError> {
        let Some(gcra) = Gcra::new(quota) else {
            return Ok(zero_quota_decision(quota));
        };
        let state_key = self.state_key(class, key);
        let mut invocation = self.script.key(&state_key);
        invocation.arg(gcra.interval).arg(gcra.tolerance);
        let mut conn = self.conn.clone();
        let (admitted, now, tat): (i64, i64, i64) = deadline(invocation.invoke_async(&mut conn)).await?;
        let (Ok(now), Ok(tat)) = (u64::try_from(now), u64::try_from(tat)) else {
            return Err(LimiterError::Unavailable("unexpected reply from the rate-limit script".to_owned()));
        };
        if tat < now || !matches!(admitted, 0 | 1) {
            return Err(LimiterError::Unavailable("unexpected reply from the rate-limit script".to_owned()));
        }
        Ok(gcra.decision(admitted == 1, now, tat))
    }

    async fn ping(&self) -> Result<(), LimiterError> {
        let mut conn = self.conn.clone();
        let pong: String = deadline(::redis::cmd("PING").query_async(&mut conn)).await?;
        if pong == "PONG" { Ok(()) } else { Err(LimiterError::Unavailable("unexpected reply to PING".to_owned())) }
    }
}

/// Runs one Redis operation under [`RedisLimiter::OPERATION_TIMEOUT`].
async fn deadline<T>(op: impl Future<Output = ::redis::RedisResult<T>>) -> Result<T, LimiterError> {
    match tokio::time::timeout(RedisLimiter::OPERATION_TIMEOUT, op).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(LimiterError::Unavailable(e.to_string())),
        Err(_) => Err(LimiterError::Unavailable(format!("no answer within {:?}", RedisLimiter::OPERATION_TIMEOUT))),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use ::redis::AsyncCommands;

    use super::*;
    use crate::rate_limit::{ManualClock, MemoryLimiter};

    fn redis_url() -> String {
        std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
    }

    /// A prefix no other test or run shares.
    fn unique_prefix() -> String {
        format!("gh-test:{}", uuid::Uuid::new_v4().simple())
    }

    async fn limiter(prefix: &str) -> RedisLimiter {
        let l = RedisLimiter::connect(&redis_url(), prefix).await.unwrap();
        l.ping().await.expect("Redis must run at TEST_REDIS_URL for these tests");
        l
    }

    async fn raw() -> ::redis::aio::MultiplexedConnection {
        ::redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }

    #[tokio::test]
    async fn two_gateways_share_one_budget_exactly() {
        let prefix = unique_prefix();
        let (a, b) = (limiter(&prefix).await, limiter(&prefix).await);
        let q = Quota { per_minute: 6, burst: 5 };
        let mut allowed = 0;
        for i in 0..10 {
            let l = if i % 2 == 0 { &a } else { &b };
            allowed += u32::from(l.check("ip", "198.51.100.7", q).await.unwrap().is_allowed());
        }
        assert_eq!(allowed, 5);
        // Another key is untouched.
        assert!(b.check("ip", "198.51.100.8", q).await.unwrap().is_allowed());
    }

    #[tokio::test]
    async fn concurrent_decisions_are_atomic() {
        let prefix = unique_prefix();
        let (a, b) = (limiter(&prefix).await, limiter(&prefix).await);
        let q = Quota { per_minute: 1, burst: 20 };
        let calls = (0..100).map(|i| {
            let l = if i % 2 == 0 { &a } else { &b };
            l.check("user", "u1", q)
        });
        let results = futures::future::join_all(calls).await;
        let allowed = results.into_iter().filter(|r| r.as_ref().unwrap().is_allowed()).count();
        assert_eq!(allowed, 20);
    }

    #[tokio::test]
    async fn state_is_hash_tagged_and_expires_when_decayed() {
        let prefix = unique_prefix();
        let l = limiter(&prefix).await;
        let q = Quota { per_minute: 60, burst: 5 };
        for _ in 0..3 {
            assert!(l.check("auth_ip", "2001:db8::/64", q).await.unwrap().is_allowed());
        }
        let mut conn = raw().await;
        let key = format!("{prefix}:rl:{{auth_ip:2001:db8::/64}}");
        let ttl: i64 = conn.pttl(&key).await.unwrap();
        // Three requests of T = 1 s: fully decayed in 3 s.
        assert!((2000..=3000).contains(&ttl), "{ttl}");
        // A limited request writes nothing.
        let q1 = Quota { per_minute: 60, burst: 1 };
        assert!(!l.check("auth_ip", "2001:db8::/64", q1).await.unwrap().is_allowed());
        let tat_before: String = conn.get(&key).await.unwrap();
        assert!(!l.check("auth_ip", "2001:db8::/64", q1).await.unwrap().is_allowed());
        let tat_after: String = conn.get(&key).await.unwrap();
        assert_eq!(tat_before, tat_after);
        assert!(tat_after.bytes().all(|b| b.is_ascii_digit()), "{tat_after}");
        let _: () = conn.del(&key).await.unwrap();
    }

    #[tokio::test]
    async fn a_class_with_a_colon_cannot_collide() {
        let prefix = unique_prefix();
        let l = limiter(&prefix).await;
        let q = Quota { per_minute: 1, burst: 1 };
        assert!(l.check("a:b", "c", q).await.unwrap().is_allowed());
        assert!(l.check("a", "b:c", q).await.unwrap().is_allowed());
        assert!(!l.check("a", "b:c", q).await.unwrap().is_allowed());
    }

    #[tokio::test]
    async fn reloads_the_script_after_a_flush() {
        let prefix = unique_prefix();
        let l = limiter(&prefix).await;
        let q = Quota { per_minute: 60, burst: 2 };
        assert!(l.check("ip", "x", q).await.unwrap().is_allowed());
        // SCRIPT FLUSH empties the server's script cache, like a restart: EVALSHA gets NOSCRIPT.
        let mut conn = raw().await;
        let _: () = ::redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
        assert!(l.check("ip", "x", q).await.unwrap().is_allowed());
        assert!(!l.check("ip", "x", q).await.unwrap().is_allowed());
    }

    #[tokio::test]
    async fn agrees_with_the_memory_backend() {
        let prefix = unique_prefix();
        let redis = limiter(&prefix).await;
        for q in
            [Quota { per_minute: 6, burst: 5 }, Quota { per_minute: 1, burst: 1 }, Quota { per_minute: 20, burst: 7 }]
        {
            let memory = MemoryLimiter::with_clock(100, ManualClock::new());
            let key = format!("k{}-{}", q.per_minute, q.burst);
            for i in 0..(q.burst + 3) {
                let m = memory.decide("ip", &key, q);
                let r = redis.check("ip", &key, q).await.unwrap();
                assert_eq!(m.is_allowed(), r.is_allowed(), "{q:?} call {i}");
                assert_eq!(m.limit(), r.limit());
                assert_eq!(m.remaining(), r.remaining(), "{q:?} call {i}");
                // Redis' clock moved on by a few ms since the first call; ours did not.
                let near = |a: Duration, b: Duration| a.abs_diff(b) < Duration::from_millis(500);
                assert!(near(m.reset_after(), r.reset_after()), "{m:?} {r:?}");
                if let (Some(a), Some(b)) = (m.retry_after(), r.retry_after()) {
                    assert!(near(a, b), "{m:?} {r:?}");
                }
            }
        }
    }

    #[tokio::test]
    async fn zero_quota_needs_no_redis() {
        let l = RedisLimiter::connect("redis://127.0.0.1:1", &unique_prefix()).await.unwrap();
        let d = l.check("ip", "a", Quota { per_minute: 0, burst: 10 }).await.unwrap();
        assert!(!d.is_allowed());
    }

    #[tokio::test]
    async fn a_dead_redis_is_an_error_quickly_not_a_hang() {
        let started = Instant::now();
        // Nothing listens on port 1: start anyway (the gateway must boot while Redis is down).
        let l = RedisLimiter::connect("redis://127.0.0.1:1", &unique_prefix()).await.unwrap();
        for _ in 0..3 {
            let t = Instant::now();
            let r = l.check("ip", "a", Quota { per_minute: 60, burst: 5 }).await;
            assert!(matches!(r, Err(LimiterError::Unavailable(_))), "{r:?}");
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        }
        assert!(matches!(l.ping().await, Err(LimiterError::Unavailable(_))));
        assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_black_holed_redis_times_out() {
        // Accepts connections, never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let l = RedisLimiter::connect(&format!("redis://127.0.0.1:{port}"), &unique_prefix()).await.unwrap();
        let t = Instant::now();
        let r = l.check("ip", "a", Quota { per_minute: 60, burst: 5 }).await;
        assert!(matches!(r, Err(LimiterError::Unavailable(_))), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        hold.abort();
    }

    #[tokio::test]
    async fn bad_configuration_is_refused() {
        assert!(matches!(RedisLimiter::connect("http://nope", "gh").await, Err(LimiterError::Config(_))));
        assert!(matches!(RedisLimiter::connect(&redis_url(), "g{h}").await, Err(LimiterError::Config(_))));
    }

    /// Starts with Redis unreachable, then "brings it back" by forwarding a
    /// port to the real one: the same limiter recovers without a restart.
    #[tokio::test]
    async fn recovers_when_redis_comes_back() {
        let Some((target, url_for)) = split_tcp_url(&redis_url()) else {
            eprintln!("skipped: TEST_REDIS_URL is not a plain redis://host:port URL");
            return;
        };
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let l = RedisLimiter::connect(&url_for(port), &unique_prefix()).await.unwrap();
        let q = Quota { per_minute: 60, burst: 5 };
        assert!(matches!(l.check("ip", "a", q).await, Err(LimiterError::Unavailable(_))));

        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let forward = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        // The failed attempt triggered a reconnect; the next requests get through.
        let deadline = Instant::now() + Duration::from_secs(5);
        let decision = loop {
            match l.check("ip", "a", q).await {
                Ok(d) => break d,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("not yet: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("did not recover: {e}"),
            }
        };
        assert!(decision.is_allowed());
        forward.abort();
    }

    /// `redis://[auth@]host[:port][/db]` → (`host:port`, a function giving the
    /// same URL on 127.0.0.1 at another port).
    #[allow(clippy::type_complexity)]
    fn split_tcp_url(url: &str) -> Option<(String, Box<dyn Fn(u16) -> String>)> {
        let rest = url.strip_prefix("redis://")?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (format!("{auth}@"), rest),
            None => (String::new(), rest),
        };
        let (host_port, path) = match rest.split_once('/') {
            Some((h, p)) => (h, format!("/{p}")),
            None => (rest, String::new()),
        };
        let target = if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:6379") };
        Some((target, Box::new(move |port| format!("redis://{auth}127.0.0.1:{port}{path}"))))
    }
}
