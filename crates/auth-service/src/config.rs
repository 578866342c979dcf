//! The auth service's typed configuration.
//!
//! Built by the `gatehouse` binary from the environment (where the
//! production rules are enforced) or directly by tests. Everything here is
//! already valid: keys are loaded, secrets have passed their strength check.

use std::sync::Arc;

use tokens::{CsrfKey, RefreshKey, Secret, SigningKey};

use crate::password::HashParams;
use crate::store::DatabaseTarget;

/// Thirty days: the absolute lifetime of a session, however often it is refreshed.
pub const SESSION_ABSOLUTE_LIFETIME_SECS: i64 = 30 * 24 * 3600;

#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub database: DatabaseTarget,
    /// The key new access tokens are signed with.
    pub signing_key: Arc<SigningKey>,
    /// Keys still published in the JWKS and accepted, besides the signing key.
    pub previous_keys: Vec<Arc<SigningKey>>,
    pub refresh_key: RefreshKey,
    pub csrf_key: CsrfKey,
    pub issuer: String,
    pub audience: String,
    pub access_token_ttl_secs: i64,
    /// How long a refresh token stays usable without being rotated.
    pub refresh_token_ttl_secs: i64,
    /// Grace window after a rotation in which the previous token returns the
    /// current pair instead of revoking the session (concurrent tabs); 0 disables it.
    pub refresh_reuse_interval_secs: i64,
    pub session_lifetime_secs: i64,
    pub login_max_failures: i64,
    pub login_failure_window_secs: i64,
    /// `false` in development: cookies then drop `Secure` so plain-HTTP localhost works.
    pub secure_cookies: bool,
    pub hash_params: HashParams,
    /// Hashes allowed at once; defaults to the number of cores.
    pub hash_concurrency: usize,
    /// Hashes allowed to wait for a slot before the service answers 503.
    pub hash_queue: usize,
    pub db_max_connections: u32,
    /// `GATEWAY_SECRET` (and `GATEWAY_SECRET_PREVIOUS`): what internal callers
    /// such as the gateway's revocation poller sign with. Empty disables
    /// the internal endpoints.
    pub internal_secrets: Vec<Secret>,
    /// `TRUSTED_PROXIES`: peers (the gateway) whose `X-Forwarded-For` names
    /// the client recorded in sessions and the audit log.
    pub trusted_proxies: Vec<common_http::client_ip::Cidr>,
}

impl AuthConfig {
    /// A configuration with the documented defaults for everything but the
    /// database and keys.
    pub fn new(
        database: DatabaseTarget,
        signing_key: Arc<SigningKey>,
        refresh_key: RefreshKey,
        csrf_key: CsrfKey,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            database,
            signing_key,
            previous_keys: Vec::new(),
            refresh_key,
            csrf_key,
            issuer: "gatehouse".to_owned(),
            audience: "gatehouse".to_owned(),
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 604_800,
            refresh_reuse_interval_secs: 10,
            session_lifetime_secs: SESSION_ABSOLUTE_LIFETIME_SECS,
            login_max_failures: 10,
            login_failure_window_secs: 900,
            secure_cookies: true,
            hash_params: HashParams::OWASP,
            hash_concurrency: cores,
            hash_queue: 64 * cores,
            db_max_connections: 16,
            internal_secrets: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}
