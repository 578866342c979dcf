//! The auth service's typed configuration.
//!
//! Built by the `gatehouse` binary from the environment (where the
//! production rules are enforced) or directly by tests. Everything here is
//! already valid: keys are loaded, secrets have passed their strength check.

use std::sync::Arc;

use tokens::sealed::SealingKeys;
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
    /// `Path` of the refresh-token cookie: the auth routes as a browser
    /// sees them through the gateway (`/api/v1/auth`), so the cookie is sent
    /// to the auth service only.
    pub refresh_cookie_path: String,
    /// `CORS_ALLOWED_ORIGINS`, exact matches: the origins whose pages may
    /// refresh or log out with the refresh cookie (besides the gateway's
    /// own, which browsers mark `Sec-Fetch-Site: same-origin`).
    pub allowed_origins: Vec<String>,
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
    /// `REDIS_URL` and key prefix: revocations are also announced there.
    pub redis: Option<(String, String)>,
    /// `NOTIFICATION_SERVICE_URL`: where security notifications go (new
    /// login, password change, refresh-token reuse); `None` sends none.
    pub notification_url: Option<http::Uri>,
    /// Whom an `https://` notification service's certificate must chain to
    /// (`UPSTREAM_CA`, else the public web PKI).
    pub upstream_roots: std::sync::Arc<rustls::RootCertStore>,
    /// The key ring (`KEYS_DIR`) to follow, re-read every interval so
    /// rotations apply without a restart (it may not exist yet); `None` for
    /// a fixed key.
    pub key_ring: Option<(std::path::PathBuf, std::time::Duration)>,
    /// `METRICS_ALLOWED_CIDRS`: who may scrape `/metrics` (loopback by default).
    pub metrics_allowed: Vec<common_http::client_ip::Cidr>,
    /// `MFA_ENCRYPTION_KEY` (+ `_ID`, `_PREVIOUS`, `_PREVIOUS_ID`): the keys
    /// TOTP seeds are sealed with. `None` (the default of [`AuthConfig::new`])
    /// refuses TOTP setup and TOTP codes with 503; recovery codes still work.
    pub mfa_keys: Option<SealingKeys>,
    /// The name authenticator apps show beside the account.
    pub totp_issuer: String,
    /// How long an `mfa_token` from a password-verified login stays usable.
    pub mfa_challenge_ttl_secs: i64,
    /// Codes one `mfa_token` may try, right or wrong, before it dies.
    pub mfa_challenge_max_attempts: i64,
    /// Mail for password reset and email verification (`SMTP_URL` or the
    /// development file mailer); `None` sends none ([`crate::mail_queue`]).
    pub mail: Option<crate::mail_queue::MailSettings>,
    /// `REQUIRE_EMAIL_VERIFICATION`: a correct password for an account whose
    /// email is not verified gets 403 instead of tokens.
    pub require_email_verification: bool,
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
            refresh_cookie_path: "/api/v1/auth".to_owned(),
            allowed_origins: vec!["http://localhost:3000".to_owned(), "http://localhost:8080".to_owned()],
            hash_params: HashParams::OWASP,
            hash_concurrency: cores,
            hash_queue: 64 * cores,
            db_max_connections: 16,
            internal_secrets: Vec::new(),
            trusted_proxies: Vec::new(),
            redis: None,
            notification_url: None,
            upstream_roots: std::sync::Arc::new(common_http::tls::public_roots()),
            key_ring: None,
            metrics_allowed: common_http::metrics::loopback_only(),
            mfa_keys: None,
            totp_issuer: "Gatehouse".to_owned(),
            mfa_challenge_ttl_secs: 300,
            mfa_challenge_max_attempts: 5,
            mail: None,
            require_email_verification: false,
        }
    }
}
