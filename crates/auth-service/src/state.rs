//! The state every handler shares.

use std::sync::Arc;

use jsonwebtoken::jwk::JwkSet;
use tokens::{AccessTokenIssuer, AccessTokenVerifier, VerifyingKeys};

use crate::config::AuthConfig;
use crate::password::{HashError, PasswordHasher};
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<AuthConfig>,
    pub issuer: AccessTokenIssuer,
    pub verifier: AccessTokenVerifier,
    pub hasher: PasswordHasher,
    /// The published JWKS, built once: keys change only with the configuration.
    pub jwks: Arc<JwkSet>,
}

impl AppState {
    /// # Errors
    /// [`HashError`] when the hashing parameters are invalid.
    pub fn new(store: Arc<dyn Store>, config: AuthConfig) -> Result<Self, HashError> {
        let config = Arc::new(config);
        let all_keys: Vec<_> = std::iter::once(&config.signing_key).chain(config.previous_keys.iter()).collect();
        let verifier = AccessTokenVerifier::new(
            VerifyingKeys::new(all_keys.iter().map(|k| k.verifying_key())),
            &config.issuer,
            &config.audience,
            30,
        );
        let jwks = Arc::new(tokens::keys::jwks(all_keys.iter().map(|k| k.as_ref())));
        let issuer = AccessTokenIssuer::new(
            Arc::clone(&config.signing_key),
            &config.issuer,
            &config.audience,
            config.access_token_ttl_secs,
        );
        let hasher = PasswordHasher::new(config.hash_params, config.hash_concurrency, config.hash_queue)?;
        Ok(Self { store, config, issuer, verifier, hasher, jwks })
    }

    /// The current time in unix seconds.
    pub fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}
