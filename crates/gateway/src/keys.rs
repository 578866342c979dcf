//! The keys the gateway verifies access tokens with.
//!
//! HS256: the shared `JWT_SECRET`, fixed. RS256/EdDSA: the auth service's
//! JWKS, fetched at start and kept in memory. A token with an unknown `kid`
//! (a key rotated in) triggers a refetch, at most once per
//! `min_refetch_interval`, so a stream of junk tokens cannot make the gateway
//! hammer the auth service; a failed fetch keeps the keys it had.
//!
//! Verification is on every request's path, and a client sends the same
//! token many times, so verified claims are cached by the token's SHA-256
//! for at most [`CACHE_TTL`] and never past the token's `exp`. The cache is
//! bounded ([`CACHE_MAX_ENTRIES`]; cleared when full) and forgotten whenever
//! the key set changes. Revocation is checked after the cache, on every
//! request.

use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use sha2::{Digest as _, Sha256};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Uri};
use http_body_util::BodyExt as _;
use jsonwebtoken::jwk::JwkSet;
use tokens::{AccessClaims, AccessTokenVerifier, VerifyError, VerifyingKeys};

use crate::proxy::HttpClient;

/// Where keys come from.
#[derive(Debug, Clone)]
pub enum KeySourceConfig {
    /// A fixed key set (HS256 from `JWT_SECRET`, or keys given directly).
    Static(VerifyingKeysHolder),
    /// The auth service's `/.well-known/jwks.json`.
    Jwks { url: Uri, min_refetch_interval: Duration },
}

/// `VerifyingKeys` with a `Debug` that prints only the count.
#[derive(Clone)]
pub struct VerifyingKeysHolder(pub VerifyingKeys);

impl std::fmt::Debug for VerifyingKeysHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKeys({} keys)", self.0.len())
    }
}

/// How long verified claims are reused.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// The most tokens the cache holds.
pub const CACHE_MAX_ENTRIES: usize = 50_000;

struct CachedClaims {
    claims: AccessClaims,
    /// Unix seconds after which the entry is not used.
    valid_until: i64,
}

struct Inner {
    verifier: RwLock<Arc<AccessTokenVerifier>>,
    cache: DashMap<[u8; 32], CachedClaims>,
    jwks_url: Option<Uri>,
    min_refetch_interval: Duration,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    client: HttpClient,
    issuer: String,
    audience: String,
    refetches: std::sync::atomic::AtomicU64,
}

/// The current verifier, refreshed from the JWKS when needed. Cheap to clone.
#[derive(Clone)]
pub struct KeySource(Arc<Inner>);

impl KeySource {
    /// Builds the source; with a JWKS it tries one fetch now (the gateway
    /// still starts if the auth service is not up yet, and is not ready).
    pub async fn new(config: KeySourceConfig, client: HttpClient, issuer: &str, audience: &str) -> Self {
        let (keys, url, interval) = match config {
            KeySourceConfig::Static(keys) => (keys.0, None, Duration::MAX),
            KeySourceConfig::Jwks { url, min_refetch_interval } => {
                (VerifyingKeys::default(), Some(url), min_refetch_interval)
            }
        };
        let source = Self(Arc::new(Inner {
            verifier: RwLock::new(Arc::new(AccessTokenVerifier::new(keys, issuer, audience, 30))),
            cache: DashMap::new(),
            jwks_url: url,
            min_refetch_interval: interval,
            last_fetch: tokio::sync::Mutex::new(None),
            client,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            refetches: std::sync::atomic::AtomicU64::new(0),
        }));
        if source.0.jwks_url.is_some() {
            source.refetch(true).await;
        }
        source
    }

    fn current(&self) -> Arc<AccessTokenVerifier> {
        match self.0.verifier.read() {
            Ok(v) => Arc::clone(&v),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Whether there is at least one key to verify with.
    pub fn is_loaded(&self) -> bool {
        !self.current().keys().is_empty()
    }

    /// How many JWKS fetches were made (for tests and metrics).
    pub fn fetch_count(&self) -> u64 {
        self.0.refetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Verifies an access token; on an unknown `kid` refetches the JWKS (rate
    /// limited) and tries once more.
    ///
    /// # Errors
    /// [`VerifyError`] from the verifier.
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        let now = unix_now();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.0.cache.get(&digest)
            && hit.valid_until > now
        {
            return Ok(hit.claims.clone());
        }
        let claims = match self.current().verify(token) {
            Err(VerifyError::UnknownKid) if self.0.jwks_url.is_some() => {
                if self.refetch(false).await {
                    self.current().verify(token)
                } else {
                    Err(VerifyError::UnknownKid)
                }
            }
            other => other,
        }?;
        if self.0.cache.len() >= CACHE_MAX_ENTRIES {
            self.0.cache.clear();
        }
        let valid_until = claims.exp.min(now + CACHE_TTL.as_secs() as i64);
        self.0.cache.insert(digest, CachedClaims { claims: claims.clone(), valid_until });
        Ok(claims)
    }

    /// Fetches the JWKS unless one was fetched within the minimum interval
    /// (or `force`). Returns whether new keys were installed.
    pub async fn refetch(&self, force: bool) -> bool {
        let Some(url) = self.0.jwks_url.clone() else {
            return false;
        };
        let mut last = self.0.last_fetch.lock().await;
        if !force && last.is_some_and(|t| t.elapsed() < self.0.min_refetch_interval) {
            return false;
        }
        *last = Some(Instant::now());
        self.0.refetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match fetch_jwks(&self.0.client, url).await {
            Ok(keys) if !keys.is_empty() => {
                let verifier = Arc::new(AccessTokenVerifier::new(keys, &self.0.issuer, &self.0.audience, 30));
                match self.0.verifier.write() {
                    Ok(mut v) => *v = verifier,
                    Err(poisoned) => *poisoned.into_inner() = verifier,
                }
                // A key may have been retired: nothing verified under the old set is reused.
                self.0.cache.clear();
                tracing::info!("JWKS refreshed");
                true
            }
            Ok(_) => {
                tracing::warn!("JWKS fetch returned no usable keys; keeping the current keys");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS fetch failed; keeping the current keys");
                false
            }
        }
    }

    /// Refetches periodically so retired keys drop out even without an unknown `kid`.
    pub fn spawn_periodic_refresh(&self, every: Duration, shutdown: tokio_util::sync::CancellationToken) {
        if self.0.jwks_url.is_none() {
            return;
        }
        let source = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(every) => { source.refetch(true).await; }
                }
            }
        });
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

async fn fetch_jwks(client: &HttpClient, url: Uri) -> Result<VerifyingKeys, String> {
    let request = Request::get(url).body(Body::empty()).map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.request(request))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let body = http_body_util::Limited::new(response.into_body(), 256 * 1024);
    let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    let set: JwkSet = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    Ok(VerifyingKeys::from_jwks(&set))
}
