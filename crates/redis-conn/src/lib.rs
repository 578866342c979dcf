//! One Redis connection type for every Gatehouse user of Redis: the
//! gateway's rate limiter and revocation check, the auth service's
//! revocation announcements and the guard's replay cache.
//!
//! `REDIS_URL` names either one server (`redis://host:6379`, `rediss://…`,
//! `unix://…`), reached through redis-rs's `ConnectionManager`, or the seed
//! nodes of a Redis Cluster as a comma-separated list of URLs
//! (`redis://10.0.0.1:6379,redis://10.0.0.2:6379`), reached through its
//! async cluster connection, which learns the slot map from the seeds,
//! follows `MOVED`/`ASK` redirections and refreshes the map after a
//! failover. [`RedisConnection`] implements `redis::aio::ConnectionLike`,
//! so commands, pipelines and scripts run on it unchanged either way.
//!
//! # What callers must do for a cluster
//!
//! Every multi-key command, pipeline and script must touch keys of one hash
//! slot. Gatehouse's keys carry a hash tag (`{…}`) around the part that
//! identifies the client, session or request, so each rate-limit decision
//! (one script) and each replay check (one `SET NX`) stays a single atomic
//! operation on one node. A pipeline over several sessions spans slots:
//! [`RedisConnection::is_cluster`] tells a caller to send such writes one
//! by one instead.
//!
//! # Never blocking a start
//!
//! Both kinds connect lazily: opening a connection only checks the URL, so
//! a service starts while Redis is down, and both reconnect by themselves
//! when it is back (the cluster connection from its seed nodes when it has
//! lost every node).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// How a connection waits and retries.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Time allowed to open a TCP (and TLS) connection to a node.
    pub connect_timeout: Duration,
    /// Time allowed for one reply.
    pub response_timeout: Duration,
    /// Reconnection attempts within one command (a request never waits out
    /// a long back-off; the next request tries again).
    pub retries: usize,
}

/// A `REDIS_URL` that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("REDIS_URL is not usable: {0}")]
pub struct ConfigError(String);

/// A connection to one Redis server or to a Redis Cluster. Cheap to clone:
/// clones share the same multiplexed connections.
#[derive(Clone)]
pub enum RedisConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Connects lazily to `url`: one server URL, or a comma-separated list
    /// of a cluster's seed nodes (see the crate docs).
    ///
    /// # Errors
    /// [`ConfigError`] when a URL does not parse; its message never echoes
    /// the URL (it may hold a password).
    pub fn open(url: &str, settings: Settings) -> Result<Self, ConfigError> {
        let nodes: Vec<&str> = url.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
        match nodes.as_slice() {
            [] => Err(ConfigError("it is empty".to_owned())),
            [single] => {
                let client = redis::Client::open(*single).map_err(|e| ConfigError(e.category().to_owned()))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(settings.connect_timeout))
                    .set_response_timeout(Some(settings.response_timeout))
                    .set_number_of_retries(settings.retries)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(200));
                let conn = ConnectionManager::new_lazy_with_config(client, config)
                    .map_err(|e| ConfigError(e.category().to_owned()))?;
                Ok(Self::Single(conn))
            }
            seeds => {
                let client = ClusterClient::builder(seeds.iter().copied())
                    .retries(u32::try_from(settings.retries).unwrap_or(u32::MAX))
                    .min_retry_wait(50)
                    .max_retry_wait(200)
                    .build()
                    .map_err(|e| ConfigError(format!("a cluster seed node: {}", e.category())))?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(settings.connect_timeout)
                    .set_response_timeout(settings.response_timeout);
                Ok(Self::Cluster(client.get_pending_async_connection_with_config(config)))
            }
        }
    }

    /// Whether this is a Redis Cluster, where a pipeline must stay in one slot.
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl From<ConnectionManager> for RedisConnection {
    fn from(conn: ConnectionManager) -> Self {
        Self::Single(conn)
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_cluster() { "RedisConnection::Cluster" } else { "RedisConnection::Single" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: Settings =
        Settings { connect_timeout: Duration::from_secs(1), response_timeout: Duration::from_secs(1), retries: 1 };

    #[tokio::test]
    async fn one_url_is_a_server_and_a_list_is_a_cluster() {
        assert!(!RedisConnection::open("redis://127.0.0.1:6379", SETTINGS).unwrap().is_cluster());
        let seeds = "redis://127.0.0.1:7000, redis://127.0.0.1:7001,redis://127.0.0.1:7002";
        assert!(RedisConnection::open(seeds, SETTINGS).unwrap().is_cluster());
    }

    #[tokio::test]
    async fn unusable_urls_are_refused_without_echoing_them() {
        for url in ["", " , ", "http://user:hunter2@host", "redis://127.0.0.1:7000,mysql://user:hunter2@h"] {
            let err = RedisConnection::open(url, SETTINGS).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}
