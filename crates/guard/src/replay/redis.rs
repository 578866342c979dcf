//! The Redis replay cache, shared by every replica of a service.
//!
//! One command per request: `SET <prefix>:seen:{<request_id>} 1 NX PX <ttl ms>`.
//! `NX` makes the check and the write one atomic step on the server, so of
//! any number of replicas (and concurrent requests) exactly one sees the id
//! first; `PX` lets Redis forget the id once its assertion can no longer
//! verify, so Redis holds only the ids of the last window. The braces are a
//! Redis Cluster hash tag (the key's slot depends on the id only). The
//! prefix may not contain a brace; the guard only passes request ids of
//! `[A-Za-z0-9._:-]`, 1–128 characters.
//!
//! # When Redis is down: fail closed
//!
//! Like the gateway's rate limiter, the connection is lazy (the service
//! starts while Redis is down and recovers by itself when it is back) and
//! every operation has a deadline of [`RedisReplayCache::OPERATION_TIMEOUT`]
//! on top of the connection manager's connect and response timeouts. A
//! Redis that cannot answer yields [`ReplayError::Unavailable`], which the
//! guard answers with 503 `Service temporarily unavailable` and logs: without
//! the shared record a replay could not be told apart, so the request is
//! refused rather than served.

use std::time::Duration;

use redis_conn::{RedisConnection, Settings};

use super::{ReplayError, ReplayStore, Seen};

/// Accepted request ids in Redis. Cheap to share: one multiplexed connection.
pub struct RedisReplayCache {
    conn: RedisConnection,
    prefix: Box<str>,
}

impl RedisReplayCache {
    /// Time allowed to open a TCP (and TLS) connection to Redis.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Time allowed for one Redis reply.
    pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
    /// Deadline of a whole check or ping, reconnection included.
    pub const OPERATION_TIMEOUT: Duration = Duration::from_millis(1500);

    /// A cache on `url` (`redis://`, `rediss://`, `unix://`, or a Redis
    /// Cluster's seed nodes separated by commas: `redis_conn`), its keys
    /// under `prefix`. Does not require Redis to be up: it tries once and
    /// only logs a warning if Redis does not answer.
    ///
    /// # Errors
    /// [`ReplayError::Config`] when the URL does not parse or the prefix
    /// contains `{` or `}`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, ReplayError> {
        let conn = RedisConnection::open(url, Self::SETTINGS).map_err(|e| ReplayError::Config(e.to_string()))?;
        let cache = Self::new(conn, prefix)?;
        match cache.ping().await {
            Ok(()) => tracing::debug!("replay cache: Redis answers"),
            Err(e) => tracing::warn!(
                error = %e,
                "replay cache: Redis does not answer yet; guarded requests get 503 until it does"
            ),
        }
        Ok(cache)
    }

    /// A cache over an existing connection (open it with
    /// [`RedisReplayCache::SETTINGS`] to get the timeouts).
    ///
    /// # Errors
    /// [`ReplayError::Config`] when the prefix contains `{` or `}`.
    pub fn new(conn: RedisConnection, prefix: &str) -> Result<Self, ReplayError> {
        if prefix.contains(['{', '}']) {
            return Err(ReplayError::Config("the replay key prefix may not contain `{` or `}`".to_owned()));
        }
        Ok(Self { conn, prefix: prefix.into() })
    }

    /// Connection settings: [`Self::CONNECT_TIMEOUT`],
    /// [`Self::RESPONSE_TIMEOUT`] and one quick retry per attempt.
    pub const SETTINGS: Settings =
        Settings { connect_timeout: Self::CONNECT_TIMEOUT, response_timeout: Self::RESPONSE_TIMEOUT, retries: 1 };

    /// The Redis key recording `request_id`.
    #[must_use]
    pub fn key(&self, request_id: &str) -> String {
        format!("{}:seen:{{{request_id}}}", self.prefix)
    }
}

impl std::fmt::Debug for RedisReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReplayCache").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl ReplayStore for RedisReplayCache {
    async fn first_use(&self, request_id: &str, ttl: Duration) -> Result<Seen, ReplayError> {
        if !common_http::request_id::is_valid_request_id(request_id) {
            return Err(ReplayError::Config("a request id outside [A-Za-z0-9._:-]{1,128} cannot be keyed".to_owned()));
        }
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.conn.clone();
        let mut set = ::redis::cmd("SET");
        set.arg(self.key(request_id)).arg(1).arg("NX").arg("PX").arg(ttl_ms);
        // `OK` when written, nil when the key exists.
        let reply: Option<String> = deadline(set.query_async(&mut conn)).await?;
        Ok(if reply.is_some() { Seen::First } else { Seen::Again })
    }

    async fn ping(&self) -> Result<(), ReplayError> {
        let mut conn = self.conn.clone();
        let pong: String = deadline(::redis::cmd("PING").query_async(&mut conn)).await?;
        if pong == "PONG" { Ok(()) } else { Err(ReplayError::Unavailable("unexpected reply to PING".to_owned())) }
    }
}

/// Runs one Redis operation under [`RedisReplayCache::OPERATION_TIMEOUT`].
async fn deadline<T>(op: impl Future<Output = ::redis::RedisResult<T>>) -> Result<T, ReplayError> {
    match tokio::time::timeout(RedisReplayCache::OPERATION_TIMEOUT, op).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(ReplayError::Unavailable(e.to_string())),
        Err(_) => Err(ReplayError::Unavailable(format!("no answer within {:?}", RedisReplayCache::OPERATION_TIMEOUT))),
    }
}
