//! The gateway's view of revoked sessions.
//!
//! Access tokens live 15 minutes; a logout, logout-all, password change,
//! reuse detection or account deletion must stop them sooner (SEED-FLAWS F9).
//! The gateway polls the auth service's revocation feed
//! (`GET /internal/revocations?since=…`, authenticated with an identity
//! assertion signed by `GATEWAY_SECRET`) every `poll_interval` and refuses
//! any token whose `sid` is in the view. Entries are dropped once every
//! token of that session has expired, so memory stays bounded by the
//! revocations of one access-token lifetime.
//!
//! If the view cannot be refreshed for `max_staleness`, the gateway cannot
//! know about recent revocations. The choice is explicit: by default it
//! fails closed (session tokens get 503, `/ready` fails so a load balancer
//! routes around it); `fail_open` keeps serving with a logged warning.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Uri};
use dashmap::DashMap;
use http_body_util::BodyExt as _;
use serde::Deserialize;
use tokens::Secret;
use tokio_util::sync::CancellationToken;

use crate::clock::unix_seconds;
use crate::proxy::HttpClient;

/// Revocations the auth service announced in Redis (when both share one):
/// checked on every protected request before the feed's view, so a
/// revocation applies on the next request instead of within a poll.
#[derive(Clone)]
pub struct RedisRevocations {
    conn: redis_conn::RedisConnection,
    prefix: String,
}

impl RedisRevocations {
    /// Connects lazily (the gateway starts while Redis is down) to one
    /// server or a Redis Cluster (`redis_conn`); the keys are hash-tagged by
    /// session id, so each check is one single-slot `EXISTS`.
    ///
    /// # Errors
    /// A malformed URL.
    pub fn new(url: &str, prefix: &str) -> Result<Self, String> {
        let settings = redis_conn::Settings {
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_millis(500),
            retries: 0,
        };
        let conn = redis_conn::RedisConnection::open(url, settings).map_err(|e| e.to_string())?;
        Ok(Self { conn, prefix: prefix.to_owned() })
    }

    /// `Some(true)` when announced revoked; `None` when Redis cannot say
    /// (the feed's view then decides).
    pub async fn is_revoked(&self, session_id: &str) -> Option<bool> {
        let mut conn = self.conn.clone();
        let key = tokens::revocation::redis_key(&self.prefix, session_id);
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(key);
        match tokio::time::timeout(Duration::from_millis(750), cmd.query_async::<i64>(&mut conn)).await {
            Ok(Ok(n)) => Some(n > 0),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "redis revocation check failed");
                None
            }
            Err(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RevocationConfig {
    /// `…/internal/revocations` of the auth service.
    pub feed_url: Uri,
    pub poll_interval: Duration,
    pub max_staleness: Duration,
    pub fail_open: bool,
    /// How long after its revocation a session's tokens can still be
    /// unexpired: the access-token lifetime plus leeway.
    pub retain_for: Duration,
}

#[derive(Deserialize)]
struct FeedPage {
    revoked: Vec<FeedEntry>,
    now: i64,
    complete: bool,
}

#[derive(Deserialize)]
struct FeedEntry {
    session_id: String,
    revoked_at: i64,
}

/// Revoked session ids and how fresh that knowledge is.
pub struct RevocationView {
    config: RevocationConfig,
    secrets: Vec<Secret>,
    /// Session id → when its entry may be dropped (unix seconds). Looked
    /// up on every request with a session token, so hashed with foldhash
    /// (randomly seeded per process, as the token cache) rather than SipHash:
    /// only the auth service's feed inserts, so no client picks the keys.
    revoked: DashMap<String, i64, foldhash::fast::RandomState>,
    /// The auth service's clock at the last complete poll; 0 before the first.
    synced_at: AtomicI64,
    /// Local unix time of the last successful poll.
    last_success: AtomicI64,
    cursor: AtomicI64,
}

impl RevocationView {
    pub fn new(config: RevocationConfig, secrets: Vec<Secret>) -> Self {
        let start = unix_seconds() - config.retain_for.as_secs() as i64;
        Self {
            config,
            secrets,
            revoked: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            synced_at: AtomicI64::new(0),
            last_success: AtomicI64::new(0),
            cursor: AtomicI64::new(start),
        }
    }

    pub fn is_revoked(&self, session_id: &str) -> bool {
        self.revoked.contains_key(session_id)
    }

    /// Whether the view was refreshed within `max_staleness`.
    pub fn is_fresh(&self) -> bool {
        let last = self.last_success.load(Ordering::Relaxed);
        last > 0 && unix_seconds() - last <= self.config.max_staleness.as_secs() as i64
    }

    pub fn fail_open(&self) -> bool {
        self.config.fail_open
    }

    pub fn len(&self) -> usize {
        self.revoked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty()
    }

    /// Fetches every page of revocations since the cursor.
    ///
    /// # Errors
    /// A description of what failed; the view keeps what it had.
    pub async fn poll_once(&self, client: &HttpClient) -> Result<(), String> {
        for _ in 0..100 {
            let since = self.cursor.load(Ordering::Relaxed);
            let page = self.fetch(client, since).await?;
            let horizon = self.config.retain_for.as_secs() as i64;
            let mut newest = since;
            for entry in &page.revoked {
                self.revoked.insert(entry.session_id.clone(), entry.revoked_at + horizon);
                newest = newest.max(entry.revoked_at);
            }
            // Revocations within the same second as the cursor are fetched
            // again next time (`>=`): duplicates are harmless, gaps are not.
            self.cursor.store(newest, Ordering::Relaxed);
            if page.complete {
                self.synced_at.store(page.now, Ordering::Relaxed);
                let current = unix_seconds();
                self.last_success.store(current, Ordering::Relaxed);
                self.revoked.retain(|_, drop_after| *drop_after > current);
                return Ok(());
            }
        }
        Err("the revocation feed did not end".into())
    }

    async fn fetch(&self, client: &HttpClient, since: i64) -> Result<FeedPage, String> {
        let base = &self.config.feed_url;
        let path_and_query = format!("{}?since={since}", base.path());
        let request =
            common_http::client::internal_request(base, &Method::GET, &path_and_query, &self.secrets, unix_seconds())
                .body(Body::empty())
                .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(2), client.request(request))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let body = http_body_util::Limited::new(response.into_body(), 4 << 20);
        let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }

    /// Polls until `shutdown`, logging failures (once per outage).
    pub fn spawn_poller(self: &Arc<Self>, client: HttpClient, shutdown: CancellationToken) {
        let view = Arc::clone(self);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                match view.poll_once(&client).await {
                    Ok(()) if failing => {
                        tracing::info!("revocation feed reachable again");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        tracing::warn!(error = %e, "revocation feed unreachable");
                        failing = true;
                    }
                    Err(_) => {}
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(view.config.poll_interval) => {}
                }
            }
        });
    }
}
