//! Announcing revoked sessions to Redis, for gateways that share one.
//!
//! Every revocation (logout, logout-all, session delete, password change,
//! refresh-token reuse, account deletion) is in the database, which the
//! gateways' revocation feed reads once a second. When `REDIS_URL` is set,
//! the auth service also writes `<prefix>:revoked:{<session id>}` with a
//! TTL of the access-token lifetime plus leeway, so a gateway on the same
//! Redis refuses the session's tokens on its very next request. A Redis
//! failure is logged and never fails the request: the feed still delivers.
//!
//! On a Redis Cluster (`redis_conn`) each session's key is in its own slot
//! (the hash tag is the session id), so the marks are sent one command at a
//! time rather than as one pipeline.

use std::time::Duration;

use redis_conn::{RedisConnection, Settings};
use uuid::Uuid;

#[derive(Clone)]
pub struct RevocationPublisher {
    redis: Option<(RedisConnection, String)>,
    ttl_secs: u64,
}

impl RevocationPublisher {
    /// No Redis: revocations travel through the feed only.
    pub fn disabled() -> Self {
        Self { redis: None, ttl_secs: 0 }
    }

    /// Publishes to the Redis at `url` (connecting lazily, so the service
    /// starts while Redis is down).
    ///
    /// # Errors
    /// A malformed URL.
    pub fn redis(url: &str, prefix: &str, ttl: Duration) -> Result<Self, String> {
        let settings =
            Settings { connect_timeout: Duration::from_secs(1), response_timeout: Duration::from_secs(1), retries: 1 };
        let conn = RedisConnection::open(url, settings).map_err(|e| e.to_string())?;
        Ok(Self { redis: Some((conn, prefix.to_owned())), ttl_secs: ttl.as_secs().max(1) })
    }

    /// Marks `sessions` revoked in Redis; best effort.
    pub async fn publish(&self, sessions: &[Uuid]) {
        let Some((conn, prefix)) = &self.redis else {
            return;
        };
        if sessions.is_empty() {
            return;
        }
        let keys = sessions.iter().map(|sid| tokens::revocation::redis_key(prefix, &sid.to_string()));
        let write = async {
            let mut conn = conn.clone();
            if conn.is_cluster() {
                for key in keys {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(1u8)
                        .arg("EX")
                        .arg(self.ttl_secs)
                        .query_async::<()>(&mut conn)
                        .await?;
                }
                Ok(())
            } else {
                let mut pipe = redis::pipe();
                for key in keys {
                    pipe.set_ex(key, 1u8, self.ttl_secs).ignore();
                }
                pipe.query_async::<()>(&mut conn).await
            }
        };
        let failure = match tokio::time::timeout(Duration::from_millis(1500), write).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        tracing::warn!(error = %failure, count = sessions.len(), "could not announce revocations to Redis; the feed still will");
    }
}
