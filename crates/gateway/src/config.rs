//! The gateway's typed configuration, built by the `gatehouse` binary from
//! the environment (or by tests directly).

use std::sync::Arc;
use std::time::Duration;

use tokens::{CsrfKey, Secret};

use crate::keys::KeySourceConfig;
use crate::rate_limit::Quota;
use crate::revocation::RevocationConfig;
use crate::routes::RouteTable;
use common_http::client_ip::Cidr;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub routes: RouteTable,
    pub keys: KeySourceConfig,
    pub issuer: String,
    pub audience: String,
    pub csrf_key: CsrfKey,
    /// `GATEWAY_SECRET` first, then `GATEWAY_SECRET_PREVIOUS` while rotating:
    /// the identity assertion is signed with each.
    pub gateway_secrets: Vec<Secret>,
    /// `CORS_ALLOWED_ORIGINS`, exact matches.
    pub cors_origins: Vec<String>,
    pub trusted_proxies: Vec<Cidr>,
    /// Per client IP, every route.
    pub ip_quota: Quota,
    /// Per client IP on the credential routes (`phases::is_credential_path`:
    /// login, register, refresh, MFA verify, password forgot/reset, email
    /// verify/resend), in addition.
    pub auth_ip_quota: Quota,
    /// Per user on protected routes, in addition.
    pub user_quota: Quota,
    /// `REDIS_URL`: shared rate limits; in-process when `None`.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (`REDIS_KEY_PREFIX`), so deployments and
    /// test runs sharing a Redis stay apart.
    pub redis_prefix: String,
    /// Keys the in-process limiter may hold.
    pub limiter_max_keys: usize,
    pub body_limit: usize,
    pub connect_timeout: Duration,
    /// Time allowed for the upstream's response headers.
    pub response_timeout: Duration,
    /// The revocation feed to poll; `None` trusts tokens until they expire.
    pub revocation: Option<RevocationConfig>,
    /// How often the JWKS is refetched even when every `kid` is known
    /// (`JWKS_REFRESH_INTERVAL`), so a key published ahead of a rotation is
    /// known before the first token it signs arrives. Matches the auth
    /// service's `Cache-Control: max-age=60` by default.
    pub jwks_refresh_interval: Duration,
    /// `METRICS_ALLOWED_CIDRS`: who may scrape `/metrics` (loopback by default).
    pub metrics_allowed: Vec<Cidr>,
    /// Whom an `https://` upstream's certificate (and the JWKS and
    /// revocation feed's, over https) must chain to: the public web PKI by
    /// default, exactly the `UPSTREAM_CA` bundle when that is set.
    pub upstream_roots: Arc<rustls::RootCertStore>,
    /// The public API's OpenAPI document, served at `/openapi.json` with
    /// Swagger UI at `/docs` ([`crate::docs`]); `None` serves neither.
    pub openapi: Option<serde_json::Value>,
}

impl GatewayConfig {
    /// The documented defaults around the given routes, keys and secrets.
    pub fn new(routes: RouteTable, keys: KeySourceConfig, csrf_key: CsrfKey, gateway_secrets: Vec<Secret>) -> Self {
        Self {
            routes,
            keys,
            issuer: "gatehouse".to_owned(),
            audience: "gatehouse".to_owned(),
            csrf_key,
            gateway_secrets,
            cors_origins: vec!["http://localhost:3000".to_owned(), "http://localhost:8080".to_owned()],
            trusted_proxies: Vec::new(),
            ip_quota: Quota { per_minute: 100, burst: 10 },
            auth_ip_quota: Quota { per_minute: 20, burst: 5 },
            user_quota: Quota { per_minute: 600, burst: 50 },
            redis_url: None,
            redis_prefix: "gatehouse".to_owned(),
            limiter_max_keys: 100_000,
            body_limit: 1024 * 1024,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(30),
            revocation: None,
            jwks_refresh_interval: Duration::from_secs(60),
            metrics_allowed: common_http::metrics::loopback_only(),
            upstream_roots: Arc::new(common_http::tls::public_roots()),
            openapi: None,
        }
    }
}
