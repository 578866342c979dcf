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
use common_http::tls::{PemFiles, ServerTls, TlsError};
use gateway::GatewayConfig;
use gateway::keys::{KeySourceConfig, VerifyingKeysHolder};
use gateway::rate_limit::Quota;
use gateway::revocation::RevocationConfig;
use gateway::routes::{RouteTable, ServiceUrls};
use rustls::RootCertStore;
use tokens::keyring::KeyRing;
use tokens::sealed::{SealingKey, SealingKeyError, SealingKeys};
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

/// Lowers the Argon2id cost to almost nothing, so load and scale-out tests
/// measure everything but password hashing. Refused in production.
pub const TEST_ONLY_WEAK_HASHING: &str = "GATEHOUSE_TEST_ONLY_WEAK_PASSWORD_HASHING";

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
    /// `PAYMENTS_PORT`, the payment service's port in `up`.
    pub payments_port: u16,
    /// `NOTIFICATIONS_PORT`, the notification service's port in `up`.
    pub notifications_port: u16,
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
            payments_port: parse_or(&vars, "PAYMENTS_PORT", 8083)?,
            notifications_port: parse_or(&vars, "NOTIFICATIONS_PORT", 8084)?,
            drain_timeout_secs: parse_or(&vars, "SHUTDOWN_DRAIN_TIMEOUT", 30)?,
            vars,
        })
    }

    fn get(&self, key: &str) -> Option<String> {
        self.vars.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()).map(str::to_owned)
    }

    /// A variable's value, trimmed; `None` when unset or blank.
    pub fn get_var(&self, key: &str) -> Option<String> {
        self.get(key)
    }

    /// `TLS_CERT` and `TLS_KEY`: the PEM certificate chain (leaf first) and
    /// private key the service of a single-service command serves HTTPS
    /// with (in `up`, the gateway: the services behind it stay on loopback
    /// HTTP); both or neither. The files are re-read when they change, so a
    /// renewed certificate needs no restart. `None`: plain HTTP, as behind a
    /// load balancer that terminates TLS.
    ///
    /// # Errors
    /// One of the two set without the other, or a file that cannot be used.
    pub fn server_tls(&self) -> Result<Option<ServerTls>, ConfigError> {
        let (cert, key) = match (self.get("TLS_CERT"), self.get("TLS_KEY")) {
            (None, None) => return Ok(None),
            (Some(_), None) => {
                return Err(err(
                    "TLS_KEY is not set; set TLS_KEY to the PEM private key of TLS_CERT (or unset TLS_CERT to serve plain HTTP)",
                ));
            }
            (None, Some(_)) => {
                return Err(err(
                    "TLS_CERT is not set; set TLS_CERT to the PEM certificate chain of TLS_KEY (or unset TLS_KEY to serve plain HTTP)",
                ));
            }
            (Some(cert), Some(key)) => (cert, key),
        };
        ServerTls::load(PemFiles::new(cert, key)).map(Some).map_err(|e| match e {
            TlsError::Certificate { path, reason } => err(format!("TLS_CERT ({path}): {reason}")),
            TlsError::Key { path, reason } => err(format!("TLS_KEY ({path}): {reason}")),
            e => err(format!("TLS_CERT and TLS_KEY: {e}")),
        })
    }

    /// Whether the auth service's cookies carry `Secure`: everywhere but in
    /// development, and in development too when TLS is configured (browsers
    /// then reach the stack over HTTPS). So `gatehouse up` (development
    /// unless `ENVIRONMENT` says otherwise) keeps working in a browser on
    /// plain `http://localhost`, where some browsers (Safari) drop `Secure`
    /// cookies.
    fn secure_cookies(&self) -> bool {
        match self.environment {
            Environment::Development => self.get("TLS_CERT").is_some(),
            Environment::Production => true,
        }
    }

    /// Whom every `https://` peer's certificate must chain to: the gateway's
    /// upstreams, JWKS and revocation feed, the user service's auth service,
    /// the auth service's notification service, `gatehouse healthcheck`'s
    /// URL. The CA certificates of the `UPSTREAM_CA` PEM bundle when set,
    /// instead of the public web PKI's roots (a private CA's certificate then
    /// cannot be stood in for by one a public CA issued; a deployment that
    /// needs both puts both in the bundle).
    ///
    /// # Errors
    /// [`ConfigError`] naming `UPSTREAM_CA` when the bundle does not load.
    pub fn upstream_roots(&self) -> Result<Arc<RootCertStore>, ConfigError> {
        let Some(path) = self.get("UPSTREAM_CA") else {
            return Ok(Arc::new(common_http::tls::public_roots()));
        };
        common_http::tls::load_ca_bundle(Path::new(&path)).map(Arc::new).map_err(|e| match e {
            TlsError::CaBundle { path, reason } => err(format!("UPSTREAM_CA ({path}): {reason}")),
            e => err(format!("UPSTREAM_CA: {e}")),
        })
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

    /// The keys TOTP seeds are sealed with: `MFA_ENCRYPTION_KEY` (32 bytes,
    /// as 64 hex characters or base64, e.g. `openssl rand -base64 32`) under
    /// the id `MFA_ENCRYPTION_KEY_ID` (default `k1`), which every ciphertext
    /// records. To rotate, move the old key to `MFA_ENCRYPTION_KEY_PREVIOUS`
    /// with its id in `MFA_ENCRYPTION_KEY_PREVIOUS_ID`: it then only decrypts,
    /// and each seed is re-encrypted under the new key at its next use.
    /// Generated under `DATA_DIR/secrets` where secrets may be generated.
    fn mfa_encryption_keys(&self) -> Result<SealingKeys, ConfigError> {
        const VAR: &str = "MFA_ENCRYPTION_KEY";
        const HOW: &str = "32 random bytes as base64 or hex (e.g. `openssl rand -base64 32`)";
        let current_id = self.get("MFA_ENCRYPTION_KEY_ID").unwrap_or_else(|| "k1".to_owned());
        let current = match self.get(VAR) {
            Some(value) => SealingKey::from_encoded(&current_id, value.as_bytes()),
            None if self.may_generate_keys() => {
                SealingKey::from_encoded(&current_id, self.secret(VAR, "mfa_encryption_key")?.expose())
            }
            None => return Err(err(format!("{VAR} is not set; set {VAR} to {HOW}"))),
        }
        .map_err(|e| match e {
            SealingKeyError::InvalidId => err(format!("MFA_ENCRYPTION_KEY_ID: {e}")),
            _ => err(format!("{VAR} {e}")),
        })?;
        let mut previous = Vec::new();
        if let Some(value) = self.get("MFA_ENCRYPTION_KEY_PREVIOUS") {
            let id = self.get("MFA_ENCRYPTION_KEY_PREVIOUS_ID").ok_or_else(|| {
                err("MFA_ENCRYPTION_KEY_PREVIOUS_ID is not set; set it to the id the previous key was used under")
            })?;
            previous.push(SealingKey::from_encoded(&id, value.as_bytes()).map_err(|e| match e {
                SealingKeyError::InvalidId => err(format!("MFA_ENCRYPTION_KEY_PREVIOUS_ID: {e}")),
                _ => err(format!("MFA_ENCRYPTION_KEY_PREVIOUS {e}")),
            })?);
        }
        SealingKeys::new(current, previous)
            .map_err(|e| err(format!("MFA_ENCRYPTION_KEY_PREVIOUS_ID: {e}; the previous key needs an id of its own")))
    }

    /// `METRICS_ALLOWED_CIDRS`: who may scrape `/metrics` (loopback by default).
    ///
    /// # Errors
    /// A malformed CIDR.
    pub fn metrics_allowed(&self) -> Result<Vec<Cidr>, ConfigError> {
        match self.get("METRICS_ALLOWED_CIDRS") {
            None => Ok(common_http::metrics::loopback_only()),
            Some(list) => list
                .split(',')
                .filter(|c| !c.trim().is_empty())
                .map(|c| c.trim().parse::<Cidr>().map_err(|e| err(format!("METRICS_ALLOWED_CIDRS: {e}"))))
                .collect(),
        }
    }

    /// `KEYS_DIR`: where the signing-key ring lives (`gatehouse keys …`).
    pub fn keys_dir(&self) -> PathBuf {
        self.get("KEYS_DIR").map_or_else(|| self.data_dir.join("keys"), PathBuf::from)
    }

    /// The configured signing key's file: `JWT_PRIVATE_KEY_FILE`, or the one
    /// generated under `DATA_DIR` when generation is allowed.
    pub fn configured_key_file(&self) -> Option<PathBuf> {
        let algorithm = self.jwt_algorithm().ok()?;
        match self.get("JWT_PRIVATE_KEY_FILE") {
            Some(path) => Some(PathBuf::from(path)),
            None if self.may_generate_keys() && algorithm.is_asymmetric() => {
                Some(self.data_dir.join("keys").join(algorithm.key_file_name()))
            }
            None => None,
        }
    }

    /// The key ring, when `KEYS_DIR` holds one (RS256/EdDSA only).
    ///
    /// # Errors
    /// A ring that exists but cannot be read.
    pub fn key_ring(&self) -> Result<Option<KeyRing>, ConfigError> {
        if !self.jwt_algorithm()?.is_asymmetric() {
            return Ok(None);
        }
        KeyRing::open(&self.keys_dir()).map_err(|e| err(format!("KEYS_DIR: {e}")))
    }

    /// `KEY_RELOAD_INTERVAL` (seconds): how often the auth service re-reads the key ring.
    pub fn key_reload_interval(&self) -> Result<Duration, ConfigError> {
        let secs: u64 = parse_or(&self.vars, "KEY_RELOAD_INTERVAL", 10)?;
        if secs == 0 {
            return Err(err("KEY_RELOAD_INTERVAL must be at least 1 (seconds)"));
        }
        Ok(Duration::from_secs(secs))
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
        let ring = self.key_ring()?;
        let (signing_key, previous_keys) = match &ring {
            Some(ring) => {
                let loaded = ring.load().map_err(|e| err(format!("KEYS_DIR: {e}")))?;
                (Arc::new(loaded.active), loaded.others.into_iter().map(Arc::new).collect())
            }
            None => (Arc::new(self.signing_key()?), Vec::new()),
        };
        let refresh_key = RefreshKey::new(self.secret("REFRESH_TOKEN_SECRET", "refresh_token_secret")?);
        let csrf_key = CsrfKey::new(self.secret("CSRF_SECRET", "csrf_secret")?);
        let mfa_keys = self.mfa_encryption_keys()?;
        let mut c = AuthConfig::new(self.database.clone(), signing_key, refresh_key, csrf_key);
        c.previous_keys = previous_keys;
        c.mfa_keys = Some(mfa_keys);
        // Followed even before a ring exists: `gatehouse keys` may start one
        // from the key in use while the service runs.
        if self.jwt_algorithm()?.is_asymmetric() {
            c.key_ring = Some((self.keys_dir(), self.key_reload_interval()?));
        }
        c.secure_cookies = self.secure_cookies();
        if let Some(origins) = self.cors_allowed_origins()? {
            c.allowed_origins = origins;
        }
        c.internal_secrets = internal_secrets;
        c.trusted_proxies = self.trusted_proxies(true)?;
        c.redis =
            self.redis_url().map(|url| (url, self.get("REDIS_KEY_PREFIX").unwrap_or_else(|| "gatehouse".to_owned())));
        let notifications = self.service_urls().notifications;
        c.notification_url =
            Some(notifications.parse().map_err(|_| err("NOTIFICATION_SERVICE_URL is not a valid URL"))?);
        c.upstream_roots = self.upstream_roots()?;
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
        c.metrics_allowed = self.metrics_allowed()?;
        if parse_or(vars, TEST_ONLY_WEAK_HASHING, false)? {
            if self.environment == Environment::Production {
                return Err(err(format!("{TEST_ONLY_WEAK_HASHING} is for load tests only; unset it in production")));
            }
            tracing::warn!("{TEST_ONLY_WEAK_HASHING} is set: passwords are hashed with a trivial Argon2id cost");
            c.hash_params = auth_service::password::HashParams { memory_kib: 64, iterations: 1, parallelism: 1 };
        }
        c.mail = self.mail_settings()?;
        c.require_email_verification = parse_or(vars, "REQUIRE_EMAIL_VERIFICATION", false)
            .map_err(|_| err("REQUIRE_EMAIL_VERIFICATION must be `true` or `false`"))?;
        if c.require_email_verification && c.mail.is_none() {
            return Err(err(
                "REQUIRE_EMAIL_VERIFICATION needs mail: set SMTP_URL, MAIL_FROM and PUBLIC_URL, or unset it",
            ));
        }
        Ok(c)
    }

    /// Mail for password reset and email verification: SMTP when `SMTP_URL`
    /// is set (then `MAIL_FROM` is required, and `PUBLIC_URL` too in
    /// production, since links must reach the users); in development without
    /// it, `.eml` files under `DATA_DIR/mail`; in production without it,
    /// none (logged at start: reset and verification links are not sent).
    fn mail_settings(&self) -> Result<Option<auth_service::mail_queue::MailSettings>, ConfigError> {
        use auth_service::mailer::{FileMailer, Mailer, SmtpMailer, parse_mailbox};
        let development = self.environment == Environment::Development || self.mode == Mode::Up;
        let (mailer, default_from): (Arc<dyn Mailer>, Option<&str>) = match self.get("SMTP_URL") {
            Some(url) => (Arc::new(SmtpMailer::from_url(&url).map_err(|e| err(format!("SMTP_URL is {e}")))?), None),
            None if development => {
                (Arc::new(FileMailer::new(self.data_dir.join("mail"))), Some("Gatehouse <gatehouse@localhost>"))
            }
            None => {
                tracing::warn!("SMTP_URL is not set: password-reset and verification mails are not sent");
                return Ok(None);
            }
        };
        let from = match (self.get("MAIL_FROM"), default_from) {
            (Some(v), _) => v,
            (None, Some(d)) => d.to_owned(),
            (None, None) => {
                return Err(err(
                    "MAIL_FROM is required with SMTP_URL; set it to the sender, e.g. `Gatehouse <no-reply@example.com>`",
                ));
            }
        };
        let from = parse_mailbox(&from).map_err(|e| err(format!("MAIL_FROM: {e}")))?;
        let public_url = match self.get("PUBLIC_URL") {
            Some(url) => url,
            None if development => format!("http://localhost:{}", self.gateway_port),
            None => {
                return Err(err(
                    "PUBLIC_URL is required with SMTP_URL in production: the https:// address users reach the gateway at (mailed links point there)",
                ));
            }
        };
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) || public_url.contains(['?', '#'])
        {
            return Err(err("PUBLIC_URL must be an http:// or https:// URL without query or fragment"));
        }
        let mut mail = auth_service::mail_queue::MailSettings::new(mailer, from, &public_url);
        let vars = &self.vars;
        mail.max_per_address_per_hour =
            bounded(vars, "MAIL_MAX_PER_ADDRESS_PER_HOUR", mail.max_per_address_per_hour, 1, 1000)?;
        mail.max_attempts = bounded(vars, "MAIL_MAX_ATTEMPTS", mail.max_attempts, 1, 50)?;
        mail.retry_base_secs = bounded(vars, "MAIL_RETRY_BASE", mail.retry_base_secs, 1, 3600)?;
        Ok(Some(mail))
    }

    /// `CORS_ALLOWED_ORIGINS`, when set: the gateway's CORS list, and the
    /// origins whose pages may use the auth service's refresh cookie.
    fn cors_allowed_origins(&self) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(origins) = self.get("CORS_ALLOWED_ORIGINS") else {
            return Ok(None);
        };
        let origins: Vec<String> = origins.split(',').map(|o| o.trim().to_owned()).filter(|o| !o.is_empty()).collect();
        if origins.iter().any(|o| o == "*") {
            return Err(err("CORS_ALLOWED_ORIGINS must list origins; `*` is not allowed with credentials"));
        }
        Ok(Some(origins))
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
        let urls = self.service_urls();
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
        if let Some(origins) = self.cors_allowed_origins()? {
            c.cors_origins = origins;
        }
        c.trusted_proxies = self.trusted_proxies(false)?;
        c.metrics_allowed = self.metrics_allowed()?;
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
        let jwks_refresh: u64 = parse_or(vars, "JWKS_REFRESH_INTERVAL", 60)?;
        if jwks_refresh == 0 {
            return Err(err("JWKS_REFRESH_INTERVAL must be at least 1 (seconds)"));
        }
        c.jwks_refresh_interval = Duration::from_secs(jwks_refresh);
        c.upstream_roots = self.upstream_roots()?;
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

    /// Where each service is: its `*_SERVICE_URL`, by default the service on
    /// this host at its `up` port.
    fn service_urls(&self) -> ServiceUrls {
        let url = |var: &str, port: u16| self.get(var).unwrap_or_else(|| format!("http://127.0.0.1:{port}"));
        ServiceUrls {
            auth: url("AUTH_SERVICE_URL", self.auth_port),
            users: url("USER_SERVICE_URL", self.users_port),
            payments: url("PAYMENT_SERVICE_URL", self.payments_port),
            notifications: url("NOTIFICATION_SERVICE_URL", self.notifications_port),
        }
    }

    /// The guard of a downstream service: the gateway secrets, and a replay
    /// cache in Redis (keys under `<prefix>:<service>`) when configured.
    async fn guard_config(&self, service: &str) -> Result<guard::GuardConfig, ConfigError> {
        let secrets = self.gateway_secrets(true)?;
        let replay = match self.redis_url() {
            Some(url) => {
                let prefix = self.get("REDIS_KEY_PREFIX").unwrap_or_else(|| "gatehouse".to_owned());
                guard::ReplayCache::redis(&url, &format!("{prefix}:{service}"))
                    .await
                    .map_err(|e| err(format!("REDIS_URL: {e}")))?
            }
            None => guard::ReplayCache::memory(),
        };
        Ok(guard::GuardConfig::new(secrets, replay))
    }

    /// The user service's configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable to set.
    pub async fn user_service_config(&self) -> Result<user_service::UserServiceConfig, ConfigError> {
        let guard = self.guard_config("users").await?;
        let auth = self.service_urls().auth;
        Ok(user_service::UserServiceConfig {
            database: self.database.clone(),
            internal_secrets: guard.secrets.clone(),
            guard,
            metrics_allowed: self.metrics_allowed()?,
            auth_url: auth.parse().map_err(|_| err("AUTH_SERVICE_URL is not a valid URL"))?,
            upstream_roots: self.upstream_roots()?,
        })
    }

    /// The payment service's configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable to set.
    pub async fn payment_service_config(&self) -> Result<payment_service::PaymentServiceConfig, ConfigError> {
        Ok(payment_service::PaymentServiceConfig {
            database: self.database.clone(),
            guard: self.guard_config("payments").await?,
            metrics_allowed: self.metrics_allowed()?,
        })
    }

    /// The notification service's configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable to set.
    pub async fn notification_service_config(
        &self,
    ) -> Result<notification_service::NotificationServiceConfig, ConfigError> {
        Ok(notification_service::NotificationServiceConfig {
            database: self.database.clone(),
            guard: self.guard_config("notifications").await?,
            metrics_allowed: self.metrics_allowed()?,
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
    fn mail_is_smtp_when_configured_files_in_development_and_checked_in_production() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let prod = [
            ("DATA_DIR", d),
            ("JWT_ALGORITHM", "HS256"),
            ("JWT_SECRET", STRONG),
            ("CSRF_SECRET", STRONG),
            ("REFRESH_TOKEN_SECRET", STRONG),
            ("MFA_ENCRYPTION_KEY", MFA_KEY),
        ];
        let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
            prod.iter().copied().chain(extra.iter().copied()).collect()
        };
        // Production without SMTP_URL: no mail, and verification cannot be required.
        let none = Settings::from_vars(vars(&prod), Mode::Single).unwrap().auth_config().unwrap();
        assert!(none.mail.is_none());
        let e = auth_error(&with(&[("REQUIRE_EMAIL_VERIFICATION", "true")]), Mode::Single);
        assert!(e.contains("REQUIRE_EMAIL_VERIFICATION needs mail"), "{e}");
        // SMTP needs MAIL_FROM and, in production, PUBLIC_URL; credentials never echo.
        let e = auth_error(&with(&[("SMTP_URL", "smtp://u:hunter2@mail.example.com:587?tls=required")]), Mode::Single);
        assert!(e.starts_with("MAIL_FROM is required") && !e.contains("hunter2"), "{e}");
        let smtp = [
            ("SMTP_URL", "smtp://u:hunter2@mail.example.com:587?tls=required"),
            ("MAIL_FROM", "Gatehouse <no-reply@example.com>"),
        ];
        let e = auth_error(&with(&smtp), Mode::Single);
        assert!(e.starts_with("PUBLIC_URL is required"), "{e}");
        let e = auth_error(&with(&[("SMTP_URL", "http://u:hunter2@mail.example.com")]), Mode::Single);
        assert!(e.starts_with("SMTP_URL is not a valid") && !e.contains("hunter2"), "{e}");
        let e = auth_error(
            &with(&[smtp[0], smtp[1], ("PUBLIC_URL", "https://auth.example.com"), ("MAIL_FROM", "nobody")]),
            Mode::Single,
        );
        assert!(e.starts_with("MAIL_FROM:"), "{e}");
        let ok = with(&[
            smtp[0],
            smtp[1],
            ("PUBLIC_URL", "https://auth.example.com/"),
            ("REQUIRE_EMAIL_VERIFICATION", "true"),
        ]);
        let c = Settings::from_vars(vars(&ok), Mode::Single).unwrap().auth_config().unwrap();
        let mail = c.mail.unwrap();
        assert!(c.require_email_verification);
        assert_eq!(mail.public_url, "https://auth.example.com");
        assert!(!format!("{:?}", mail.mailer).contains("hunter2"));
        // Development without SMTP_URL: files under DATA_DIR/mail, links to the local gateway.
        let c = Settings::from_vars(vars(&[("DATA_DIR", d)]), Mode::Up).unwrap().auth_config().unwrap();
        let mail = c.mail.unwrap();
        assert_eq!(mail.public_url, "http://localhost:8080");
        assert!(format!("{:?}", mail.mailer).contains("mail"), "{:?}", mail.mailer);
    }

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

    /// 32 bytes in base64, as `openssl rand -base64 32` prints them.
    const MFA_KEY: &str = "3q2+7wABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGho=";

    #[test]
    fn the_mfa_encryption_key_is_required_in_production_generated_in_development_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let base = [("DATA_DIR", d), ("JWT_ALGORITHM", "HS256"), ("JWT_SECRET", STRONG)];
        let base = [&base[..], &[("CSRF_SECRET", STRONG), ("REFRESH_TOKEN_SECRET", STRONG)]].concat();
        let e = auth_error(&base, Mode::Single);
        assert!(e.starts_with("MFA_ENCRYPTION_KEY is not set") && e.contains("openssl rand -base64 32"), "{e}");
        let short = "c2hvcnQga2V5IG9mIDQ4IGJ5dGVzIGlzIHRvbyBsb25nIGZvciBhZXMgMjU2IGtleQ==";
        let e = auth_error(&[&base[..], &[("MFA_ENCRYPTION_KEY", short)]].concat(), Mode::Single);
        assert!(e.starts_with("MFA_ENCRYPTION_KEY must be 32 bytes") && !e.contains(short), "{e}");
        let with_key = [&base[..], &[("MFA_ENCRYPTION_KEY", MFA_KEY)]].concat();
        let keys = Settings::from_vars(vars(&with_key), Mode::Single).unwrap().auth_config().unwrap().mfa_keys.unwrap();
        assert_eq!(keys.current_id(), "k1");
        // Rotation: the previous key needs its own id.
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let rotating =
            [&with_key[..], &[("MFA_ENCRYPTION_KEY_ID", "k2"), ("MFA_ENCRYPTION_KEY_PREVIOUS", hex)]].concat();
        let e = auth_error(&rotating, Mode::Single);
        assert!(e.starts_with("MFA_ENCRYPTION_KEY_PREVIOUS_ID is not set"), "{e}");
        let e = auth_error(&[&rotating[..], &[("MFA_ENCRYPTION_KEY_PREVIOUS_ID", "k2")]].concat(), Mode::Single);
        assert!(e.starts_with("MFA_ENCRYPTION_KEY_PREVIOUS_ID") && e.contains("k2"), "{e}");
        let ok = [&rotating[..], &[("MFA_ENCRYPTION_KEY_PREVIOUS_ID", "k1")]].concat();
        let keys = Settings::from_vars(vars(&ok), Mode::Single).unwrap().auth_config().unwrap().mfa_keys.unwrap();
        assert_eq!(keys.current_id(), "k2");
        // Development: generated once under DATA_DIR/secrets, then reused.
        let dev = [&base[..], &[("ENVIRONMENT", "development")]].concat();
        let first = Settings::from_vars(vars(&dev), Mode::Single).unwrap().auth_config().unwrap().mfa_keys.unwrap();
        let path = dir.path().join("secrets/mfa_encryption_key");
        assert!(path.exists());
        let sealed = first.seal(b"seed", b"ctx").unwrap();
        let again = Settings::from_vars(vars(&dev), Mode::Single).unwrap().auth_config().unwrap().mfa_keys.unwrap();
        assert!(again.open(&sealed, b"ctx").is_ok(), "the generated key is reused");
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
            ("MFA_ENCRYPTION_KEY", MFA_KEY),
            ("DATABASE_URL", "postgres://gatehouse@db/gatehouse"),
            ("ACCESS_TOKEN_TTL", "600"),
        ];
        let settings = Settings::from_vars(vars(&pairs), Mode::Single).unwrap();
        let c = settings.auth_config().unwrap();
        assert!(c.secure_cookies);
        assert_eq!(c.access_token_ttl_secs, 600);
        assert_eq!(settings.listen_addr(8081).to_string(), "0.0.0.0:8081");
        assert_eq!(c.hash_params, auth_service::password::HashParams::OWASP);
        // The load-test shortcut is refused in production, taken in development.
        let weak: Vec<_> = pairs.iter().copied().chain([(TEST_ONLY_WEAK_HASHING, "true")]).collect();
        let e = Settings::from_vars(vars(&weak), Mode::Single).unwrap().auth_config().err().unwrap().to_string();
        assert!(e.contains(TEST_ONLY_WEAK_HASHING) && e.contains("production"), "{e}");
        let dev: Vec<_> = weak.iter().copied().chain([("ENVIRONMENT", "development")]).collect();
        let c = Settings::from_vars(vars(&dev), Mode::Single).unwrap().auth_config().unwrap();
        assert!(c.hash_params.memory_kib < auth_service::password::HashParams::OWASP.memory_kib);
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
    fn cookies_are_secure_outside_development_and_in_development_over_https() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let ca = testkit::tls::TestCa::new("config CA");
        let files = ca.issue_localhost();
        let (cert, key) = (files.cert.to_str().unwrap(), files.key.to_str().unwrap());
        let prod = [
            ("DATA_DIR", d),
            ("JWT_ALGORITHM", "HS256"),
            ("JWT_SECRET", STRONG),
            ("CSRF_SECRET", STRONG),
            ("REFRESH_TOKEN_SECRET", STRONG),
            ("MFA_ENCRYPTION_KEY", MFA_KEY),
        ];
        let secure = |pairs: &[(&str, &str)], mode| {
            Settings::from_vars(vars(pairs), mode).unwrap().auth_config().unwrap().secure_cookies
        };
        let tls = [("TLS_CERT", cert), ("TLS_KEY", key)];
        for (case, pairs, mode, expected) in [
            ("production", prod.to_vec(), Mode::Single, true),
            ("production in up", [&prod[..], &[("ENVIRONMENT", "production")]].concat(), Mode::Up, true),
            ("development", vec![("DATA_DIR", d), ("ENVIRONMENT", "development")], Mode::Single, false),
            ("up (development)", vec![("DATA_DIR", d)], Mode::Up, false),
            ("up over https", [&[("DATA_DIR", d)][..], &tls].concat(), Mode::Up, true),
            (
                "development over https",
                [&[("DATA_DIR", d), ("ENVIRONMENT", "development")][..], &tls].concat(),
                Mode::Single,
                true,
            ),
        ] {
            assert_eq!(secure(&pairs, mode), expected, "{case}");
        }
    }

    #[test]
    fn tls_needs_both_files_and_names_the_one_at_fault() {
        let ca = testkit::tls::TestCa::new("config CA");
        let files = ca.issue_localhost();
        let other = ca.issue_localhost();
        let (cert, key) = (files.cert.to_str().unwrap(), files.key.to_str().unwrap());
        let tls_error = |pairs: &[(&str, &str)]| {
            Settings::from_vars(vars(pairs), Mode::Single).unwrap().server_tls().err().map(|e| e.0)
        };
        assert!(Settings::from_vars(vars(&[]), Mode::Single).unwrap().server_tls().unwrap().is_none());
        assert!(
            Settings::from_vars(vars(&[("TLS_CERT", cert), ("TLS_KEY", key)]), Mode::Single)
                .unwrap()
                .server_tls()
                .unwrap()
                .is_some()
        );
        for (pairs, starts) in [
            (vec![("TLS_CERT", cert)], "TLS_KEY is not set"),
            (vec![("TLS_KEY", key)], "TLS_CERT is not set"),
            (
                vec![("TLS_CERT", "/nonexistent/cert.pem"), ("TLS_KEY", key)],
                "TLS_CERT (/nonexistent/cert.pem): no such file",
            ),
            (vec![("TLS_CERT", key), ("TLS_KEY", key)], "TLS_CERT ("),
            (vec![("TLS_CERT", cert), ("TLS_KEY", cert)], "TLS_KEY ("),
            (vec![("TLS_CERT", cert), ("TLS_KEY", other.key.to_str().unwrap())], "TLS_KEY ("),
        ] {
            let e = tls_error(&pairs).unwrap_or_else(|| panic!("{pairs:?} must be refused"));
            assert!(e.starts_with(starts) && !e.contains('\n'), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn upstream_ca_replaces_the_public_roots_of_the_gateway() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let ca = testkit::tls::TestCa::new("config CA");
        let gateway = |pairs: &[(&str, &str)]| Settings::from_vars(vars(pairs), Mode::Up).unwrap().gateway_config();
        let public = gateway(&[("DATA_DIR", d)]).unwrap();
        assert_eq!(public.upstream_roots.len(), common_http::tls::public_roots().len());
        let private = gateway(&[("DATA_DIR", d), ("UPSTREAM_CA", ca.ca_file().to_str().unwrap())]).unwrap();
        assert_eq!(private.upstream_roots.len(), 1);
        let e = gateway(&[("DATA_DIR", d), ("UPSTREAM_CA", "/nonexistent/ca.pem")]).unwrap_err().0;
        assert_eq!(e, "UPSTREAM_CA (/nonexistent/ca.pem): no such file");
        let e = gateway(&[("DATA_DIR", d), ("AUTH_SERVICE_URL", "https://auth.internal:8443")]).unwrap();
        assert_eq!(e.routes.find("/api/v1/auth/login").unwrap().0.upstream, "https://auth.internal:8443");
    }

    #[tokio::test]
    async fn upstream_ca_is_also_the_trust_of_the_user_and_auth_services_internal_clients() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let ca = testkit::tls::TestCa::new("config CA");
        let settings = |pairs: &[(&str, &str)]| Settings::from_vars(vars(pairs), Mode::Up).unwrap();
        let public = settings(&[("DATA_DIR", d)]);
        let private = settings(&[("DATA_DIR", d), ("UPSTREAM_CA", ca.ca_file().to_str().unwrap())]);
        let public_len = common_http::tls::public_roots().len();
        assert_eq!(public.auth_config().unwrap().upstream_roots.len(), public_len);
        assert_eq!(public.user_service_config().await.unwrap().upstream_roots.len(), public_len);
        assert_eq!(private.auth_config().unwrap().upstream_roots.len(), 1);
        assert_eq!(private.user_service_config().await.unwrap().upstream_roots.len(), 1);
        let broken = settings(&[("DATA_DIR", d), ("UPSTREAM_CA", "/nonexistent/ca.pem")]);
        assert_eq!(broken.auth_config().unwrap_err().0, "UPSTREAM_CA (/nonexistent/ca.pem): no such file");
        let e = broken.user_service_config().await.err().unwrap().0;
        assert_eq!(e, "UPSTREAM_CA (/nonexistent/ca.pem): no such file");
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
