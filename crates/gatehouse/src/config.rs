//! Configuration: environment variables with the seed's names (API.md's
//! table), optionally from a `.env` file, validated once at start.
//!
//! The rule that matters most (SEED-FLAWS F3): in production a missing,
//! short or published-placeholder secret, or a missing key file, stops the
//! process with one line naming the variable to set. Only in development and
//! in `gatehouse up` are missing keys and secrets generated, once, and kept
//! under `DATA_DIR` (which git ignores), so nothing secret is ever committed.
//!
//! Variables are read from a map rather than the process environment, so
//! tests can build any configuration without touching global state.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use std::time::Duration;

use auth_service::AuthConfig;
use auth_service::store::DatabaseTarget;
use common_http::client_ip::Cidr;
use gateway::GatewayConfig;
use gateway::keys::{KeySourceConfig, VerifyingKeysHolder};
use gateway::rate_limit::Quota;
use gateway::revocation::RevocationConfig;
use gateway::routes::{RouteTable, ServiceUrls};
use tokens::{Algorithm, CsrfKey, RefreshKey, Secret, SigningKey, VerifyingKeys};

/// A configuration problem, phrased as what to set.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// `ENVIRONMENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

/// How the process was started: `up` runs the embedded stack and may
/// generate missing keys whatever the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Up,
    Single,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The process's settings, read and validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub environment: Environment,
    pub mode: Mode,
    pub data_dir: PathBuf,
    pub database: DatabaseTarget,
    pub log_format: LogFormat,
    pub bind_address: IpAddr,
    /// `PORT`, for a single service.
    pub port: Option<u16>,
    /// `AUTH_PORT`, the auth service's port in `up`.
    pub auth_port: u16,
    /// `GATEWAY_PORT`, the gateway's port in `up`.
    pub gateway_port: u16,
    /// `USERS_PORT`, the user service's port in `up`.
    pub users_port: u16,
    pub drain_timeout_secs: u64,
    vars: HashMap<String, String>,
}

/// The process environment, after loading `.env` if present.
pub fn process_env() -> HashMap<String, String> {
    // A missing .env is the normal case; a malformed one is reported by dotenvy on the next line's read.
    let _ = dotenvy::dotenv();
    std::env::vars().collect()
}

impl Settings {
    /// # Errors
    /// [`ConfigError`] naming the variable to fix.
    pub fn from_vars(vars: HashMap<String, String>, mode: Mode) -> Result<Self, ConfigError> {
        let get = |k: &str| vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty()).map(str::to_owned);
        let environment = match get("ENVIRONMENT").as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("development" | "dev" | "local") => Environment::Development,
            Some("production" | "prod") => Environment::Production,
            // `up` is the embedded development stack: development unless told otherwise.
            None if mode == Mode::Up => Environment::Development,
            None => Environment::Production,
            Some(_) => return Err(err("ENVIRONMENT must be `development` or `production`")),
        };
        let data_dir = PathBuf::from(get("DATA_DIR").unwrap_or_else(|| "./data".to_owned()));
        let database = match get("DATABASE_URL").or_else(|| get("DB_DSN")) {
            Some(url) => DatabaseTarget::parse(&url).map_err(|e| err(format!("DATABASE_URL (or DB_DSN): {e}")))?,
            None => {
                let path = data_dir.join("gatehouse.db");
                DatabaseTarget::parse(&format!("sqlite://{}", path.display()))
                    .map_err(|e| err(format!("DATA_DIR: {e}")))?
            }
        };
        let log_format = match get("LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(_) => return Err(err("LOG_FORMAT must be `text` or `json`")),
        };
        let default_bind = if mode == Mode::Up { "127.0.0.1" } else { "0.0.0.0" };
        let bind_address = parse_or(&vars, "BIND_ADDRESS", default_bind.parse().map_err(|_| err("BIND_ADDRESS"))?)?;
        Ok(Self {
            environment,
            mode,
            data_dir,
            database,
            log_format,
            bind_address,
            port: parse_opt(&vars, "PORT")?,
            auth_port: parse_or(&vars, "AUTH_PORT", 8081)?,
            gateway_port: parse_or(&vars, "GATEWAY_PORT", 8080)?,
            users_port: parse_or(&vars, "USERS_PORT", 8082)?,
            drain_timeout_secs: parse_or(&vars, "SHUTDOWN_DRAIN_TIMEOUT", 30)?,
            vars,
        })
    }

    fn get(&self, key: &str) -> Option<String> {
        self.vars.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()).map(str::to_owned)
    }

    /// Whether missing keys and secrets may be generated under `DATA_DIR`.
    pub fn may_generate_keys(&self) -> bool {
        self.environment == Environment::Development || self.mode == Mode::Up
    }

    /// The address a single service listens on: `PORT`, else its default.
    pub fn listen_addr(&self, default_port: u16) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.port.unwrap_or(default_port))
    }

    /// A secret from `var`, or from (generated) `DATA_DIR/secrets/<file>` when allowed.
    fn secret(&self, var: &str, file: &str) -> Result<Secret, ConfigError> {
        if let Some(value) = self.get(var) {
            return Secret::parse(&value).map_err(|e| {
                err(format!("{var} {e}; set {var} to at least 32 random bytes (e.g. `openssl rand -base64 48`)"))
            });
        }
        if !self.may_generate_keys() {
            return Err(err(format!(
                "{var} is not set; set {var} to at least 32 random bytes (e.g. `openssl rand -base64 48`)"
            )));
        }
        Secret::load_or_generate(&self.data_dir.join("secrets").join(file), true)
            .map_err(|e| err(format!("{var}: {e} (check DATA_DIR)")))
    }

    /// The access-token signing key: `JWT_ALGORITHM` with `JWT_SECRET` (HS256)
    /// or `JWT_PRIVATE_KEY_FILE` (RS256, EdDSA).
    fn signing_key(&self) -> Result<SigningKey, ConfigError> {
        let algorithm = self.jwt_algorithm()?;
        if algorithm == Algorithm::Hs256 {
            let secret = self.secret("JWT_SECRET", Algorithm::Hs256.key_file_name())?;
            return SigningKey::hs256(&secret).map_err(|e| err(format!("JWT_SECRET: {e}")));
        }
        let (path, generate) = match self.get("JWT_PRIVATE_KEY_FILE") {
            Some(path) => (PathBuf::from(path), false),
            None if self.may_generate_keys() => (self.data_dir.join("keys").join(algorithm.key_file_name()), true),
            None => {
                return Err(err(format!(
                    "JWT_PRIVATE_KEY_FILE is not set; set JWT_PRIVATE_KEY_FILE to a PKCS#8 PEM {} private key file",
                    algorithm.as_str()
                )));
            }
        };
        if !generate && !path.exists() {
            return Err(err(format!("JWT_PRIVATE_KEY_FILE: no such file {}", path.display())));
        }
        SigningKey::load_or_generate(algorithm, &path, generate)
            .map_err(|e| err(format!("JWT_PRIVATE_KEY_FILE ({}): {e}", path.display())))
    }

    /// `GATEWAY_SECRET` then `GATEWAY_SECRET_PREVIOUS`, each refused if short
    /// or a placeholder. Generated in development; in production the
    /// gateway requires it, the auth service only uses it when set (for its
    /// internal endpoints).
    fn gateway_secrets(&self, required: bool) -> Result<Vec<Secret>, ConfigError> {
        let mut secrets = Vec::new();
        if required || self.get("GATEWAY_SECRET").is_some() || self.may_generate_keys() {
            secrets.push(self.secret("GATEWAY_SECRET", "gateway_secret")?);
        }
        if let Some(previous) = self.get("GATEWAY_SECRET_PREVIOUS") {
            secrets.push(Secret::parse(&previous).map_err(|e| {
                err(format!(
                    "GATEWAY_SECRET_PREVIOUS {e}; set GATEWAY_SECRET_PREVIOUS to the previous GATEWAY_SECRET or unset it"
                ))
            })?);
        }
        Ok(secrets)
    }

    /// The auth service's configuration; loads (or, where allowed, generates) its keys.
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable to set.
    pub fn auth_config(&self) -> Result<AuthConfig, ConfigError> {
        let internal_secrets = self.gateway_secrets(false)?;
        let signing_key = Arc::new(self.signing_key()?);
        let refresh_key = RefreshKey::new(self.secret("REFRESH_TOKEN_SECRET", "refresh_token_secret")?);
        let csrf_key = CsrfKey::new(self.secret("CSRF_SECRET", "csrf_secret")?);
        let mut c = AuthConfig::new(self.database.clone(), signing_key, refresh_key, csrf_key);
        c.secure_cookies = self.environment == Environment::Production;
        c.internal_secrets = internal_secrets;
        c.trusted_proxies = self.trusted_proxies(true)?;
        if let Some(v) = self.get("JWT_ISSUER") {
            c.issuer = v;
        }
        if let Some(v) = self.get("JWT_AUDIENCE") {
            c.audience = v;
        }
        let vars = &self.vars;
        c.access_token_ttl_secs = bounded(vars, "ACCESS_TOKEN_TTL", c.access_token_ttl_secs, 60, 3600)?;
        c.refresh_token_ttl_secs = bounded(vars, "REFRESH_TOKEN_TTL", c.refresh_token_ttl_secs, 300, 90 * 86_400)?;
        c.refresh_reuse_interval_secs =
            bounded(vars, "REFRESH_TOKEN_REUSE_INTERVAL", c.refresh_reuse_interval_secs, 0, 60)?;
        c.login_max_failures = bounded(vars, "LOGIN_MAX_FAILURES", c.login_max_failures, 1, 1000)?;
        c.login_failure_window_secs = bounded(vars, "LOGIN_FAILURE_WINDOW", c.login_failure_window_secs, 1, 86_400)?;
        c.db_max_connections = parse_or(vars, "DB_MAX_CONNECTIONS", c.db_max_connections)?;
        Ok(c)
    }

    fn jwt_algorithm(&self) -> Result<Algorithm, ConfigError> {
        let name = self.get("JWT_ALGORITHM").unwrap_or_else(|| "RS256".to_owned());
        Algorithm::parse(&name).ok_or_else(|| err("JWT_ALGORITHM must be one of HS256, RS256, EdDSA"))
    }

    /// The gateway's configuration. In `up`, `AUTH_SERVICE_URL` defaults to
    /// the auth service of the same process.
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable to set.
    pub fn gateway_config(&self) -> Result<GatewayConfig, ConfigError> {
        let local = |port: u16| format!("http://127.0.0.1:{port}");
        let urls = ServiceUrls {
            auth: self.get("AUTH_SERVICE_URL").unwrap_or_else(|| local(self.auth_port)),
            users: self.get("USER_SERVICE_URL").unwrap_or_else(|| local(self.users_port)),
            payments: self.get("PAYMENT_SERVICE_URL").unwrap_or_else(|| local(8083)),
            notifications: self.get("NOTIFICATION_SERVICE_URL").unwrap_or_else(|| local(8084)),
        };
        let routes = match self.get("GATEHOUSE_CONFIG") {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| err(format!("GATEHOUSE_CONFIG: cannot read {path}: {e}")))?;
                RouteTable::from_toml(&text).map_err(|e| err(format!("GATEHOUSE_CONFIG ({path}): {e}")))?
            }
            None => RouteTable::defaults(&urls).map_err(|e| err(e.0))?,
        };
        let keys = if self.jwt_algorithm()? == Algorithm::Hs256 {
            let key = SigningKey::hs256(&self.secret("JWT_SECRET", Algorithm::Hs256.key_file_name())?)
                .map_err(|e| err(format!("JWT_SECRET: {e}")))?;
            KeySourceConfig::Static(VerifyingKeysHolder(VerifyingKeys::new([key.verifying_key()])))
        } else {
            let url = self
                .get("JWKS_URL")
                .unwrap_or_else(|| format!("{}/.well-known/jwks.json", urls.auth.trim_end_matches('/')));
            let url = url.parse().map_err(|_| err("JWKS_URL (or AUTH_SERVICE_URL) is not a valid URL"))?;
            KeySourceConfig::Jwks { url, min_refetch_interval: Duration::from_secs(5) }
        };
        let secrets = self.gateway_secrets(true)?;
        let csrf_key = CsrfKey::new(self.secret("CSRF_SECRET", "csrf_secret")?);
        let mut c = GatewayConfig::new(routes, keys, csrf_key, secrets);
        if let Some(v) = self.get("JWT_ISSUER") {
            c.issuer = v;
        }
        if let Some(v) = self.get("JWT_AUDIENCE") {
            c.audience = v;
        }
        if let Some(origins) = self.get("CORS_ALLOWED_ORIGINS") {
            c.cors_origins = origins.split(',').map(|o| o.trim().to_owned()).filter(|o| !o.is_empty()).collect();
            if c.cors_origins.iter().any(|o| o == "*") {
                return Err(err("CORS_ALLOWED_ORIGINS must list origins; `*` is not allowed with credentials"));
            }
        }
        c.trusted_proxies = self.trusted_proxies(false)?;
        let vars = &self.vars;
        let quota = |per: &str, burst: &str, d: Quota| -> Result<Quota, ConfigError> {
            let per_minute = parse_or(vars, per, d.per_minute)?;
            let burst = parse_or(vars, burst, d.burst)?;
            if per_minute == 0 || burst == 0 {
                return Err(err(format!("{per} and {burst} must be positive")));
            }
            Ok(Quota { per_minute, burst })
        };
        c.ip_quota = quota("RATE_LIMIT_PER_MINUTE", "RATE_LIMIT_BURST", c.ip_quota)?;
        c.auth_ip_quota = quota("AUTH_RATE_LIMIT_PER_MINUTE", "AUTH_RATE_LIMIT_BURST", c.auth_ip_quota)?;
        c.user_quota = quota("USER_RATE_LIMIT_PER_MINUTE", "USER_RATE_LIMIT_BURST", c.user_quota)?;
        c.redis_url = self.redis_url();
        if let Some(prefix) = self.get("REDIS_KEY_PREFIX") {
            c.redis_prefix = prefix;
        }
        c.body_limit = parse_or(vars, "GATEWAY_BODY_LIMIT", c.body_limit)?;
        c.connect_timeout = Duration::from_millis(parse_or(vars, "UPSTREAM_CONNECT_TIMEOUT_MS", 2000)?);
        c.response_timeout = Duration::from_millis(parse_or(vars, "UPSTREAM_TIMEOUT_MS", 30_000)?);
        let feed = format!("{}/internal/revocations", urls.auth.trim_end_matches('/'));
        let access_ttl = parse_or(vars, "ACCESS_TOKEN_TTL", 900u64)?;
        c.revocation = Some(RevocationConfig {
            feed_url: feed.parse().map_err(|_| err("AUTH_SERVICE_URL is not a valid URL"))?,
            poll_interval: Duration::from_millis(parse_or(vars, "REVOCATION_POLL_INTERVAL_MS", 1000)?),
            max_staleness: Duration::from_secs(parse_or(vars, "REVOCATION_MAX_STALENESS", 5)?),
            fail_open: parse_or(vars, "REVOCATION_FAIL_OPEN", false)?,
            retain_for: Duration::from_secs(access_ttl + 60),
        });
        Ok(c)
    }

    /// `TRUSTED_PROXIES`. In `up` the gateway reaches the auth service over
    /// loopback, so loopback is trusted there unless the variable says otherwise.
    /// The gateway, at the edge, never gets that default: a local client must
    /// not pick its own rate-limit bucket.
    fn trusted_proxies(&self, behind_local_gateway: bool) -> Result<Vec<Cidr>, ConfigError> {
        let default = if behind_local_gateway && self.mode == Mode::Up { "127.0.0.1/32,::1/128" } else { "" };
        self.get("TRUSTED_PROXIES")
            .unwrap_or_else(|| default.to_owned())
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.parse::<Cidr>().map_err(|e| err(format!("TRUSTED_PROXIES: {e}"))))
            .collect()
    }

    /// The user service's configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable to set.
    pub async fn user_service_config(&self) -> Result<user_service::UserServiceConfig, ConfigError> {
        let secrets = self.gateway_secrets(true)?;
        let replay = match self.redis_url() {
            Some(url) => {
                let prefix = self.get("REDIS_KEY_PREFIX").unwrap_or_else(|| "gatehouse".to_owned());
                guard::ReplayCache::redis(&url, &format!("{prefix}:users"))
                    .await
                    .map_err(|e| err(format!("REDIS_URL: {e}")))?
            }
            None => guard::ReplayCache::memory(),
        };
        let auth = self.get("AUTH_SERVICE_URL").unwrap_or_else(|| format!("http://127.0.0.1:{}", self.auth_port));
        Ok(user_service::UserServiceConfig {
            database: self.database.clone(),
            guard: guard::GuardConfig::new(secrets.clone(), replay),
            auth_url: auth.parse().map_err(|_| err("AUTH_SERVICE_URL is not a valid URL"))?,
            internal_secrets: secrets,
        })
    }

    /// `REDIS_URL`, or the seed's `REDIS_ADDR` (+ `REDIS_PASSWORD`).
    fn redis_url(&self) -> Option<String> {
        self.get("REDIS_URL").or_else(|| {
            let addr = self.get("REDIS_ADDR")?;
            Some(match self.get("REDIS_PASSWORD") {
                Some(p) => format!("redis://:{p}@{addr}"),
                None => format!("redis://{addr}"),
            })
        })
    }

    /// Creates `DATA_DIR` when the embedded database or generated keys live there.
    ///
    /// # Errors
    /// [`ConfigError`] when it cannot be created.
    pub fn ensure_data_dir(&self) -> Result<(), ConfigError> {
        let uses_dir = matches!(self.database, DatabaseTarget::Sqlite(_)) || self.may_generate_keys();
        if uses_dir && !Path::new(&self.data_dir).exists() {
            std::fs::create_dir_all(&self.data_dir)
                .map_err(|e| err(format!("DATA_DIR: cannot create {}: {e}", self.data_dir.display())))?;
        }
        Ok(())
    }
}

fn parse_opt<T: FromStr>(vars: &HashMap<String, String>, key: &str) -> Result<Option<T>, ConfigError> {
    match vars.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| err(format!("{key} has an invalid value"))),
    }
}

fn parse_or<T: FromStr>(vars: &HashMap<String, String>, key: &str, default: T) -> Result<T, ConfigError> {
    Ok(parse_opt(vars, key)?.unwrap_or(default))
}

fn bounded(vars: &HashMap<String, String>, key: &str, default: i64, min: i64, max: i64) -> Result<i64, ConfigError> {
    let value = parse_or(vars, key, default)?;
    if (min..=max).contains(&value) { Ok(value) } else { Err(err(format!("{key} must be between {min} and {max}"))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn auth_error(pairs: &[(&str, &str)], mode: Mode) -> String {
        let settings = Settings::from_vars(vars(pairs), mode).unwrap();
        settings.auth_config().unwrap_err().0
    }

    const STRONG: &str = "0123456789abcdef0123456789abcdef-strong";

    #[test]
    fn production_refuses_a_missing_or_short_hs256_secret() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let base =
            [("DATA_DIR", d), ("JWT_ALGORITHM", "HS256"), ("CSRF_SECRET", STRONG), ("REFRESH_TOKEN_SECRET", STRONG)];
        let missing = auth_error(&base, Mode::Single);
        assert!(missing.starts_with("JWT_SECRET is not set"), "{missing}");
        let short = auth_error(&[&base[..], &[("JWT_SECRET", "too-short")]].concat(), Mode::Single);
        assert!(short.starts_with("JWT_SECRET is shorter than 32 bytes"), "{short}");
        assert!(!short.contains("too-short"), "the secret is never echoed");
        assert!(!short.contains('\n'), "one line");
    }

    #[test]
    fn production_refuses_the_seeds_placeholder_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        for (var, value) in [
            ("JWT_SECRET", "your-super-secret-jwt-key-change-this-in-production"),
            ("GATEWAY_SECRET", "gateway-secret-for-downstream-verification"),
            ("GATEWAY_SECRET", "default-gateway-secret-change-in-production"),
        ] {
            let pairs = [
                ("DATA_DIR", d),
                ("JWT_ALGORITHM", "HS256"),
                ("JWT_SECRET", STRONG),
                ("CSRF_SECRET", STRONG),
                ("REFRESH_TOKEN_SECRET", STRONG),
                (var, value),
            ];
            let e = auth_error(&pairs, Mode::Single);
            assert!(e.starts_with(var) && e.contains("placeholder"), "{e}");
        }
    }

    #[test]
    fn production_refuses_a_missing_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let base = [("DATA_DIR", d), ("CSRF_SECRET", STRONG), ("REFRESH_TOKEN_SECRET", STRONG)];
        assert!(auth_error(&base, Mode::Single).starts_with("JWT_PRIVATE_KEY_FILE is not set"));
        let e = auth_error(&[&base[..], &[("JWT_PRIVATE_KEY_FILE", "/nonexistent/key.pem")]].concat(), Mode::Single);
        assert!(e.starts_with("JWT_PRIVATE_KEY_FILE: no such file"), "{e}");
        let e = auth_error(&[("DATA_DIR", d), ("JWT_ALGORITHM", "EdDSA")], Mode::Single);
        assert!(e.starts_with("JWT_PRIVATE_KEY_FILE is not set"), "{e}");
    }

    #[test]
    fn production_requires_the_csrf_and_refresh_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let e = auth_error(&[("DATA_DIR", d), ("JWT_ALGORITHM", "HS256"), ("JWT_SECRET", STRONG)], Mode::Single);
        assert!(e.starts_with("REFRESH_TOKEN_SECRET is not set"), "{e}");
    }

    #[test]
    fn up_and_development_generate_keys_once_under_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let first = Settings::from_vars(vars(&[("DATA_DIR", d)]), Mode::Up).unwrap();
        assert_eq!(first.environment, Environment::Development);
        let a = first.auth_config().unwrap();
        assert!(!a.secure_cookies);
        assert!(dir.path().join("keys/jwt-rs256.pem").exists());
        let again =
            Settings::from_vars(vars(&[("DATA_DIR", d), ("ENVIRONMENT", "development")]), Mode::Single).unwrap();
        let b = again.auth_config().unwrap();
        assert_eq!(a.signing_key.kid(), b.signing_key.kid(), "the persisted key is reused");
    }

    #[test]
    fn production_with_every_secret_set_starts() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        std::fs::write(&key, SigningKey::generate_pem(Algorithm::EdDsa).unwrap()).unwrap();
        let pairs = [
            ("JWT_ALGORITHM", "EdDSA"),
            ("JWT_PRIVATE_KEY_FILE", key.to_str().unwrap()),
            ("CSRF_SECRET", STRONG),
            ("REFRESH_TOKEN_SECRET", STRONG),
            ("DATABASE_URL", "postgres://gatehouse@db/gatehouse"),
            ("ACCESS_TOKEN_TTL", "600"),
        ];
        let settings = Settings::from_vars(vars(&pairs), Mode::Single).unwrap();
        let c = settings.auth_config().unwrap();
        assert!(c.secure_cookies);
        assert_eq!(c.access_token_ttl_secs, 600);
        assert_eq!(settings.listen_addr(8081).to_string(), "0.0.0.0:8081");
    }

    #[test]
    fn in_up_the_auth_service_trusts_the_local_gateway_but_the_gateway_trusts_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::from_vars(vars(&[("DATA_DIR", dir.path().to_str().unwrap())]), Mode::Up).unwrap();
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(settings.auth_config().unwrap().trusted_proxies.iter().any(|c| c.contains(loopback)));
        assert!(settings.gateway_config().unwrap().trusted_proxies.is_empty());
        let d = dir.path().to_str().unwrap();
        let bad = Settings::from_vars(vars(&[("DATA_DIR", d), ("TRUSTED_PROXIES", "10.0.0.0/99")]), Mode::Up).unwrap();
        assert!(bad.gateway_config().unwrap_err().0.starts_with("TRUSTED_PROXIES"));
    }

    #[test]
    fn malformed_values_name_their_variable() {
        for (k, v) in [
            ("ENVIRONMENT", "staging"),
            ("PORT", "eighty"),
            ("LOG_FORMAT", "xml"),
            ("DATABASE_URL", "mysql://x"),
            ("BIND_ADDRESS", "nowhere"),
        ] {
            let e = Settings::from_vars(vars(&[(k, v)]), Mode::Single).unwrap_err().0;
            assert!(e.starts_with(k), "{k}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let e = auth_error(&[("DATA_DIR", dir.path().to_str().unwrap()), ("ACCESS_TOKEN_TTL", "99999")], Mode::Up);
        assert!(e.starts_with("ACCESS_TOKEN_TTL"), "{e}");
        let e = Settings::from_vars(vars(&[("DB_DSN", "host=db user=u dbname=x")]), Mode::Single).unwrap();
        assert!(matches!(e.database, DatabaseTarget::Postgres(_)));
    }
}
