//! The keys the gateway verifies access tokens with.
//!
//! HS256: the shared `JWT_SECRET`, fixed. RS256/EdDSA: the auth service's
//! JWKS, fetched at start and kept in memory. A token with an unknown `kid`
//! (a key rotated in) triggers a refetch, at most once per
//! `min_refetch_interval`, so a stream of junk tokens cannot make the gateway
//! hammer the auth service; a failed fetch keeps the keys it had.
//!
//! Verification is on every request's path, and a client sends the same
//! token many times, so verified tokens are cached for at most
//! [`CACHE_TTL`] and never past the token's `exp`. The cache is bounded
//! ([`CACHE_MAX_ENTRIES`]; cleared when full) and forgotten whenever the key
//! set changes. Revocation is checked after the cache, on every request.
//!
//! # The cache key is the whole `Authorization` value
//!
//! A hit must cost next to nothing, since it is every request of a client
//! that already sent its token once. So the cache is keyed by the complete
//! `Authorization` header value, byte for byte, and compared in full on a
//! hit (a hash map compares keys, not just hashes): a hit means exactly
//! these bytes were parsed as a `Bearer` credential and their token verified
//! before, so neither the header parse nor a digest of the ~1 KB token is
//! redone. The hash is foldhash, randomly seeded per process; a collision
//! costs a comparison, never a wrong answer, and only verified tokens are
//! ever inserted, so a client cannot fill the map with keys of its choosing.
//! (This replaced a SHA-256 of the token per request, which was needed only
//! because the digest alone stood for the token.) An entry holds the claims
//! and the `X-User-ID` / `X-User-Email` header values built from them, shared
//! by reference, so a hit allocates nothing.

use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderValue, Request, Uri};
use http_body_util::BodyExt as _;
use jsonwebtoken::jwk::JwkSet;
use tokens::{AccessClaims, AccessTokenVerifier, BearerError, VerifyError, VerifyingKeys, parse_bearer};

use crate::metrics::KeyMetrics;
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

/// A verified access token, as the proxy uses it on every request.
#[derive(Debug)]
pub struct VerifiedToken {
    pub claims: AccessClaims,
    /// `X-User-ID`: the `sub` claim; `None` if it cannot be a header value.
    pub user_id_header: Option<HeaderValue>,
    /// `X-User-Email`: the `email` claim; `None` if it cannot be a header value.
    pub email_header: Option<HeaderValue>,
    /// The `sub` claim again, shared with the access log.
    pub user_id: Arc<str>,
}

impl VerifiedToken {
    fn new(claims: AccessClaims) -> Self {
        Self {
            user_id_header: HeaderValue::from_str(&claims.sub).ok(),
            email_header: HeaderValue::from_str(&claims.email).ok(),
            user_id: Arc::from(claims.sub.as_str()),
            claims,
        }
    }
}

/// Why an `Authorization` header did not yield a verified token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizationError {
    /// No header, or not a well-formed `Bearer` credential.
    #[error(transparent)]
    Bearer(#[from] BearerError),
    /// A `Bearer` token that does not verify.
    #[error(transparent)]
    Token(#[from] VerifyError),
}

struct CachedToken {
    token: Arc<VerifiedToken>,
    /// Unix seconds after which the entry is not used.
    valid_until: i64,
}

struct Inner {
    verifier: RwLock<Arc<AccessTokenVerifier>>,
    /// Keyed by the whole `Authorization` header value (module docs).
    cache: DashMap<Box<[u8]>, CachedToken, foldhash::fast::RandomState>,
    jwks_url: Option<Uri>,
    min_refetch_interval: Duration,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    client: HttpClient,
    issuer: String,
    audience: String,
    refetches: std::sync::atomic::AtomicU64,
    metrics: KeyMetrics,
}

/// The current verifier, refreshed from the JWKS when needed. Cheap to clone.
#[derive(Clone)]
pub struct KeySource(Arc<Inner>);

impl KeySource {
    /// Builds the source; with a JWKS it tries one fetch now (the gateway
    /// still starts if the auth service is not up yet, and is not ready).
    pub async fn new(
        config: KeySourceConfig,
        client: HttpClient,
        issuer: &str,
        audience: &str,
        metrics: KeyMetrics,
    ) -> Self {
        let (keys, url, interval) = match config {
            KeySourceConfig::Static(keys) => (keys.0, None, Duration::MAX),
            KeySourceConfig::Jwks { url, min_refetch_interval } => {
                (VerifyingKeys::default(), Some(url), min_refetch_interval)
            }
        };
        let source = Self(Arc::new(Inner {
            verifier: RwLock::new(Arc::new(AccessTokenVerifier::new(keys, issuer, audience, 30))),
            cache: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            jwks_url: url,
            min_refetch_interval: interval,
            last_fetch: tokio::sync::Mutex::new(None),
            client,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            refetches: std::sync::atomic::AtomicU64::new(0),
            metrics,
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

    /// How many keys tokens are verified with now.
    pub fn key_count(&self) -> usize {
        self.current().keys().len()
    }

    /// How many JWKS fetches were made (for tests and metrics).
    pub fn fetch_count(&self) -> u64 {
        self.0.refetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The verified token of an `Authorization` header: from the cache when
    /// these exact header bytes were verified within [`CACHE_TTL`] (and the
    /// token has not expired), else parsed and verified, and cached.
    ///
    /// # Errors
    /// [`AuthorizationError`]: a missing or malformed header, or a token that
    /// does not verify.
    pub async fn verify_authorization(
        &self,
        header: Option<&HeaderValue>,
    ) -> Result<Arc<VerifiedToken>, AuthorizationError> {
        let header = header.ok_or(BearerError::Missing)?.as_bytes();
        // The coarse clock (a timer tick behind at most): a token is served
        // from the cache at most a few ms past the second its `exp` names.
        let now = crate::clock::unix_seconds();
        if let Some(hit) = self.0.cache.get(header)
            && hit.valid_until > now
        {
            self.0.metrics.cache_hit();
            return Ok(Arc::clone(&hit.token));
        }
        self.0.metrics.cache_miss();
        // Boxed: a miss is rare (once per token and TTL) and its future, which
        // may fetch the JWKS, is large; inline, it would size (and be copied
        // with) every request's future.
        let claims = Box::pin(self.verify(parse_bearer(Some(header))?)).await?;
        if self.0.cache.len() >= CACHE_MAX_ENTRIES {
            self.0.cache.clear();
        }
        let valid_until = claims.exp.min(now + CACHE_TTL.as_secs() as i64);
        let token = Arc::new(VerifiedToken::new(claims));
        self.0.cache.insert(header.into(), CachedToken { token: Arc::clone(&token), valid_until });
        Ok(token)
    }

    /// Verifies an access token, without the cache; on an unknown `kid`
    /// refetches the JWKS (rate limited) and tries once more.
    ///
    /// # Errors
    /// [`VerifyError`] from the verifier.
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        match self.current().verify(token) {
            Err(VerifyError::UnknownKid) if self.0.jwks_url.is_some() => {
                if self.refetch(false).await {
                    self.current().verify(token)
                } else {
                    Err(VerifyError::UnknownKid)
                }
            }
            other => other,
        }
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
                self.0.metrics.refreshed(true);
                tracing::info!("JWKS refreshed");
                true
            }
            Ok(_) => {
                self.0.metrics.refreshed(false);
                tracing::warn!("JWKS fetch returned no usable keys; keeping the current keys");
                false
            }
            Err(e) => {
                self.0.metrics.refreshed(false);
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
