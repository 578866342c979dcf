//! The replay cache: which request ids were already accepted.
//!
//! A valid assertion stays valid for the whole ±`max_skew` window, so a
//! captured request could be sent again until its timestamp is too old. The
//! guard therefore records every request id it accepts and refuses a second
//! use while the assertion could still verify. Only verified request ids are
//! recorded (the check runs after the signature check), so a client that
//! holds no secret cannot put anything in the cache.
//!
//! Two stores ship with the crate:
//!
//! - [`MemoryReplayCache`]: one process. Bounded; when full it refuses new
//!   requests (503) rather than forget a live entry, see its docs.
//! - [`RedisReplayCache`]: shared by every replica pointed at the same Redis
//!   and prefix, one atomic `SET … NX PX` per request. When Redis does not
//!   answer the guard fails closed (503).
//!
//! Anything else can implement [`ReplayStore`] and be wrapped with
//! [`ReplayCache::new`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

mod memory;
mod redis;

pub use memory::{Clock, MemoryReplayCache};
pub use redis::RedisReplayCache;

/// Whether a request id was seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First use within the window: it is now recorded.
    First,
    /// Already accepted within the window: a replay.
    Again,
}

/// A replay store could not decide. The guard answers 503 and logs the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The in-process cache holds `capacity` live entries.
    #[error("the replay cache is full ({capacity} live entries)")]
    Full { capacity: usize },
    /// The store (Redis) did not answer in time or answered an error.
    #[error("the replay store is unavailable: {0}")]
    Unavailable(String),
    /// Bad configuration (URL, key prefix) or a request id the store cannot key.
    #[error("replay store configuration: {0}")]
    Config(String),
}

/// A place to record accepted request ids.
#[async_trait::async_trait]
pub trait ReplayStore: fmt::Debug + Send + Sync + 'static {
    /// Records `request_id` for `ttl` unless it is already recorded and
    /// unexpired. Must be atomic: of two concurrent calls with one id, at most
    /// one gets [`Seen::First`].
    ///
    /// # Errors
    /// [`ReplayError`] when the store cannot decide; the caller must then
    /// refuse the request (fail closed).
    async fn first_use(&self, request_id: &str, ttl: Duration) -> Result<Seen, ReplayError>;

    /// Whether the store answers, for a readiness probe.
    ///
    /// # Errors
    /// [`ReplayError::Unavailable`] when it does not.
    async fn ping(&self) -> Result<(), ReplayError> {
        Ok(())
    }
}

/// The replay store a guard uses. Cheap to clone: every clone (and every
/// guard built from one) shares the same store.
#[derive(Clone)]
pub struct ReplayCache(Arc<dyn ReplayStore>);

impl ReplayCache {
    /// Wraps any store.
    pub fn new(store: impl ReplayStore) -> Self {
        Self(Arc::new(store))
    }

    /// An in-process cache holding up to
    /// [`MemoryReplayCache::DEFAULT_CAPACITY`] entries.
    #[must_use]
    pub fn memory() -> Self {
        Self::new(MemoryReplayCache::new(MemoryReplayCache::DEFAULT_CAPACITY))
    }

    /// An in-process cache holding up to `capacity` entries.
    #[must_use]
    pub fn memory_with_capacity(capacity: usize) -> Self {
        Self::new(MemoryReplayCache::new(capacity))
    }

    /// A Redis cache on `url`, keys under `prefix` (see [`RedisReplayCache::connect`]).
    /// Does not need Redis to be up yet.
    ///
    /// # Errors
    /// [`ReplayError::Config`] for a URL that does not parse or a prefix with `{` or `}`.
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, ReplayError> {
        Ok(Self::new(RedisReplayCache::connect(url, prefix).await?))
    }

    /// See [`ReplayStore::first_use`].
    ///
    /// # Errors
    /// See [`ReplayStore::first_use`].
    pub async fn first_use(&self, request_id: &str, ttl: Duration) -> Result<Seen, ReplayError> {
        self.0.first_use(request_id, ttl).await
    }

    /// Whether the store answers; use it in the service's `/ready`.
    ///
    /// # Errors
    /// [`ReplayError::Unavailable`] when it does not.
    pub async fn ping(&self) -> Result<(), ReplayError> {
        self.0.ping().await
    }
}

impl fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReplayCache").field(&self.0).finish()
    }
}

impl From<MemoryReplayCache> for ReplayCache {
    fn from(store: MemoryReplayCache) -> Self {
        Self::new(store)
    }
}

impl From<RedisReplayCache> for ReplayCache {
    fn from(store: RedisReplayCache) -> Self {
        Self::new(store)
    }
}
