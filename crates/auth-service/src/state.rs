//! The state every handler shares.

use std::sync::{Arc, RwLock};

use jsonwebtoken::jwk::JwkSet;
use tokens::{AccessTokenIssuer, AccessTokenVerifier, SigningKey, VerifyingKeys};

use crate::StartError;
use crate::config::AuthConfig;
use crate::metrics::AuthMetrics;
use crate::notify::Notifier;
use crate::password::PasswordHasher;
use crate::revocations::RevocationPublisher;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<AuthConfig>,
    pub hasher: PasswordHasher,
    /// The signing keys in use, swapped whole when the key ring changes.
    keys: Arc<RwLock<Arc<KeyMaterial>>>,
    pub revocations: RevocationPublisher,
    pub notifier: Notifier,
    pub metrics: AuthMetrics,
    /// Wakes the mail sender when a request has queued mail ([`crate::mail_queue`]).
    pub mail_wake: Arc<tokio::sync::Notify>,
}

/// Everything derived from the signing keys: the issuer (active key), the
/// verifier (every published key) and the JWKS document.
pub struct KeyMaterial {
    pub issuer: AccessTokenIssuer,
    pub verifier: AccessTokenVerifier,
    pub jwks: JwkSet,
}

impl KeyMaterial {
    /// `active` signs; `others` (standby and previous keys) are published
    /// and verify, so tokens of a rotated-out key stay valid until expiry.
    pub fn new(config: &AuthConfig, active: Arc<SigningKey>, others: &[Arc<SigningKey>]) -> Self {
        let all: Vec<&SigningKey> = std::iter::once(active.as_ref()).chain(others.iter().map(AsRef::as_ref)).collect();
        let verifier = AccessTokenVerifier::new(
            VerifyingKeys::new(all.iter().map(|k| k.verifying_key())),
            &config.issuer,
            &config.audience,
            30,
        );
        let jwks = tokens::keys::jwks(all.iter().copied());
        let issuer = AccessTokenIssuer::new(active, &config.issuer, &config.audience, config.access_token_ttl_secs);
        Self { issuer, verifier, jwks }
    }
}

impl AppState {
    /// # Errors
    /// [`StartError`] when the hashing parameters are invalid or the
    /// notifications' TLS client cannot be set up.
    pub fn new(store: Arc<dyn Store>, config: AuthConfig) -> Result<Self, StartError> {
        // Tokens of a revoked session stay unexpired for at most their lifetime plus leeway.
        let ttl = std::time::Duration::from_secs(u64::try_from(config.access_token_ttl_secs).unwrap_or(900) + 60);
        let revocations = match &config.redis {
            Some((url, prefix)) => RevocationPublisher::redis(url, prefix, ttl).unwrap_or_else(|e| {
                tracing::error!(error = %e, "revocations will not be announced to Redis");
                RevocationPublisher::disabled()
            }),
            None => RevocationPublisher::disabled(),
        };
        let notifier = match &config.notification_url {
            Some(url) => {
                Notifier::new(url.clone(), config.internal_secrets.clone(), Arc::clone(&config.upstream_roots))?
            }
            None => Notifier::disabled(),
        };
        let config = Arc::new(config);
        let keys = KeyMaterial::new(&config, Arc::clone(&config.signing_key), &config.previous_keys);
        let hasher = PasswordHasher::new(config.hash_params, config.hash_concurrency, config.hash_queue)?;
        let metrics = AuthMetrics::new(config.metrics_allowed.clone(), &hasher, &store);
        Ok(Self {
            store,
            config,
            hasher,
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            revocations,
            notifier,
            metrics,
            mail_wake: Arc::default(),
        })
    }

    /// The signing keys as they are now (cheap: one shared pointer).
    pub fn keys(&self) -> Arc<KeyMaterial> {
        // A poisoned lock only means a reload panicked mid-swap; the Arc it
        // holds is still whole.
        Arc::clone(&self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Replaces the signing keys (a key-ring reload).
    pub fn replace_keys(&self, keys: KeyMaterial) {
        *self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
    }

    /// The current time in unix seconds.
    pub fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}
