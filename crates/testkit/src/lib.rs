//! The one test harness for Gatehouse services.
//!
//! Every test gets its own database: a SQLite file in a fresh temporary
//! directory, or its own schema in the PostgreSQL database that
//! `scripts/test` creates for the run (`TEST_DATABASE_URL`). Services are
//! spawned in-process on port 0 and talked to over real HTTP, so tests never
//! share state and never depend on order or on an externally started server.
//!
//! Storage behaviour is tested on both backends by writing each test as
//! `async fn name(backend: Backend)` and listing it in [`backend_tests!`].
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;

use auth_service::store::DatabaseTarget;
use auth_service::{AppState, AuthConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection as _;
use sqlx::postgres::PgConnectOptions;
use tokens::{Algorithm, CsrfKey, RefreshKey, Secret, SigningKey};
use tokio_util::sync::CancellationToken;

pub use auth_service::store::Backend;

/// Certificates made by the test, for TLS tests.
pub mod tls;

/// Generates one `#[tokio::test]` per backend for each listed
/// `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await
                }
            )*
        }
    };
}

/// The PostgreSQL database of this run: `TEST_DATABASE_URL` (set by
/// `scripts/test`), else a local `gatehouse_test` database created on demand.
pub fn postgres_base_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/gatehouse_test".to_owned())
}

/// A database that lives as long as the test.
pub struct TestDatabase {
    pub target: DatabaseTarget,
    pub backend: Backend,
    /// The SQLite directory (removed on drop).
    pub dir: Option<tempfile::TempDir>,
    /// The PostgreSQL schema of this test.
    pub schema: Option<String>,
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("auth.db").display());
                Self { target: DatabaseTarget::parse(&url).unwrap(), backend, dir: Some(dir), schema: None }
            }
            Backend::Postgres => {
                let base = postgres_base_url();
                let options: PgConnectOptions = base.parse().unwrap();
                ensure_postgres_database(&options).await;
                let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect_with(&options).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!("create schema {schema}"))).execute(&mut conn).await.unwrap();
                let options = options.options([("search_path", schema.as_str())]);
                Self { target: DatabaseTarget::Postgres(options), backend, dir: None, schema: Some(schema) }
            }
        }
    }

    /// Every row of every table, as text: what a database dump would reveal.
    pub async fn dump_text(&self) -> String {
        match (&self.target, &self.dir) {
            (DatabaseTarget::Postgres(options), _) => {
                let mut conn = sqlx::PgConnection::connect_with(options).await.unwrap();
                let tables: Vec<(String,)> = sqlx::query_as(
                    "select table_name::text from information_schema.tables where table_schema = current_schema()",
                )
                .fetch_all(&mut conn)
                .await
                .unwrap();
                let mut out = String::new();
                for (table,) in tables {
                    let rows: Vec<(String,)> =
                        sqlx::query_as(sqlx::AssertSqlSafe(format!("select t::text from \"{table}\" t")))
                            .fetch_all(&mut conn)
                            .await
                            .unwrap();
                    for (row,) in rows {
                        out.push_str(&row);
                        out.push('\n');
                    }
                }
                out
            }
            (DatabaseTarget::Sqlite(_), Some(dir)) => {
                let mut out = String::new();
                for entry in std::fs::read_dir(dir.path()).unwrap() {
                    let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                    out.push_str(&String::from_utf8_lossy(&bytes));
                }
                out
            }
            (DatabaseTarget::Sqlite(_), None) => String::new(),
        }
    }
}

async fn ensure_postgres_database(options: &PgConnectOptions) {
    if sqlx::PgConnection::connect_with(options).await.is_ok() {
        return;
    }
    let db = options.get_database().unwrap_or("gatehouse_test").to_owned();
    let mut admin = sqlx::PgConnection::connect_with(&options.clone().database("postgres")).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is not reachable ({e}); run the tests with scripts/test, which starts it")
    });
    // Two test processes may race to create it; either outcome is fine.
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("create database \"{db}\""))).execute(&mut admin).await;
}

/// A configuration for tests: an EdDSA key (cheap to generate), fresh
/// secrets, development cookies, and the default policies.
pub fn test_auth_config(database: DatabaseTarget) -> AuthConfig {
    let pem = SigningKey::generate_pem(Algorithm::EdDsa).unwrap();
    let key = Arc::new(SigningKey::from_pem(Algorithm::EdDsa, pem.as_bytes()).unwrap());
    let mut config = AuthConfig::new(
        database,
        key,
        RefreshKey::new(Secret::generate().unwrap()),
        CsrfKey::new(Secret::generate().unwrap()),
    );
    config.secure_cookies = false;
    config.db_max_connections = 8;
    config.internal_secrets = vec![Secret::generate().unwrap()];
    config.mfa_keys = Some(test_mfa_keys());
    config
}

/// A running auth service and a client for it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base_url: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).json(body).send().await.unwrap()
    }

    pub async fn register(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json("/auth/register", &json!({"email": email, "password": password, "name": "Test User"})).await
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json("/auth/login", &json!({"email": email, "password": password})).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.post_json("/auth/refresh", &json!({"refresh_token": refresh_token})).await
    }

    /// Registers `email` and logs in; returns the login body.
    pub async fn signed_in_user(&self, email: &str) -> Value {
        assert_eq!(self.register(email, DEFAULT_PASSWORD).await.status(), StatusCode::CREATED);
        let response = self.login(email, DEFAULT_PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// `GET path` with a bearer token.
    pub async fn get_authed(&self, path: &str, access_token: &str) -> reqwest::Response {
        self.client.get(self.url(path)).bearer_auth(access_token).send().await.unwrap()
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

/// A password that passes the rules.
pub const DEFAULT_PASSWORD: &str = "correct horse battery staple";

/// Spawns the auth service on `127.0.0.1:0`.
pub async fn spawn_auth(config: AuthConfig) -> TestApp {
    let state = auth_service::build_state(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(auth_service::serve(state.clone(), listener, shutdown.clone()));
    TestApp {
        addr,
        base_url: format!("http://{addr}"),
        client: reqwest::Client::builder().build().unwrap(),
        state,
        shutdown,
        handle,
    }
}

/// A fresh database of `backend` and the auth service on it, with default settings.
pub async fn spawn_default_auth(backend: Backend) -> (TestApp, TestDatabase) {
    spawn_auth_with(backend, |_| {}).await
}

/// Like [`spawn_default_auth`], after `adjust` has changed the configuration.
pub async fn spawn_auth_with(backend: Backend, adjust: impl FnOnce(&mut AuthConfig)) -> (TestApp, TestDatabase) {
    let db = TestDatabase::new(backend).await;
    let mut config = test_auth_config(db.target.clone());
    adjust(&mut config);
    (spawn_auth(config).await, db)
}

/// A unique email for a test.
pub fn unique_email(prefix: &str) -> String {
    format!("{prefix}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// What the recording upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query as received.
    pub uri: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

/// A small upstream that records every request and answers 200 with a JSON
/// echo. `/…/slow` answers after 3 s; `/…/status/NNN` answers with status NNN.
pub struct RecordingUpstream {
    pub base_url: String,
    pub seen: Arc<std::sync::Mutex<Vec<Recorded>>>,
}

impl RecordingUpstream {
    pub async fn spawn() -> Self {
        use axum::extract::Request;
        let seen: Arc<std::sync::Mutex<Vec<Recorded>>> = Arc::default();
        let log = Arc::clone(&seen);
        let app = axum::Router::new().fallback(move |req: Request| {
            let log = Arc::clone(&log);
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 16 << 20).await.unwrap_or_default().to_vec();
                let uri = parts.uri.to_string();
                let mut headers = reqwest::header::HeaderMap::new();
                for (k, v) in &parts.headers {
                    headers.append(k.clone(), v.clone());
                }
                log.lock().unwrap().push(Recorded {
                    method: parts.method.to_string(),
                    uri: uri.clone(),
                    headers,
                    body,
                });
                if uri.ends_with("/slow") {
                    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                }
                let status = uri
                    .rsplit_once("/status/")
                    .and_then(|(_, code)| code.parse::<u16>().ok())
                    .and_then(|c| axum::http::StatusCode::from_u16(c).ok())
                    .unwrap_or(axum::http::StatusCode::OK);
                let mut response = axum::response::IntoResponse::into_response((
                    status,
                    axum::Json(json!({"upstream": "recording", "uri": uri})),
                ));
                response.headers_mut().insert("server", "nginx/1.0 (leaky)".parse().unwrap());
                response.headers_mut().insert("access-control-allow-origin", "*".parse().unwrap());
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base_url: format!("http://{addr}"), seen }
    }

    pub fn last(&self) -> Recorded {
        self.seen.lock().unwrap().last().cloned().expect("the upstream saw no request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// A gateway configuration for tests: auth routes to `auth_url`, the three
/// protected services to `upstream_url`, keys from the auth service's JWKS,
/// a fresh gateway secret, and generous rate limits.
pub fn test_gateway_config(auth: &TestApp, upstream_url: &str) -> gateway::GatewayConfig {
    use gateway::keys::KeySourceConfig;
    use gateway::rate_limit::Quota;
    use gateway::routes::{RouteTable, ServiceUrls};
    let urls = ServiceUrls {
        auth: auth.base_url.clone(),
        users: upstream_url.to_owned(),
        payments: upstream_url.to_owned(),
        notifications: upstream_url.to_owned(),
    };
    let jwks = format!("{}/.well-known/jwks.json", auth.base_url).parse().unwrap();
    let mut config = gateway::GatewayConfig::new(
        RouteTable::defaults(&urls).unwrap(),
        KeySourceConfig::Jwks { url: jwks, min_refetch_interval: std::time::Duration::from_secs(5) },
        auth.state.config.csrf_key.clone(),
        auth.state.config.internal_secrets.clone(),
    );
    config.revocation = Some(gateway::revocation::RevocationConfig {
        feed_url: format!("{}/internal/revocations", auth.base_url).parse().unwrap(),
        poll_interval: std::time::Duration::from_millis(250),
        max_staleness: std::time::Duration::from_secs(5),
        fail_open: false,
        retain_for: std::time::Duration::from_secs(960),
    });
    config.ip_quota = Quota { per_minute: 60_000, burst: 1000 };
    config.auth_ip_quota = Quota { per_minute: 60_000, burst: 1000 };
    config.user_quota = Quota { per_minute: 60_000, burst: 1000 };
    config.response_timeout = std::time::Duration::from_secs(1);
    config.connect_timeout = std::time::Duration::from_millis(500);
    config
}

/// A running user service.
pub struct TestUsers {
    pub base_url: String,
    pub state: user_service::UserState,
}

/// Spawns the user service on its own database of `backend`, trusting the
/// gateway secrets of `auth` (as the gateway of [`test_gateway_config`] does).
pub async fn spawn_users(auth: &TestApp, db: &TestDatabase) -> TestUsers {
    spawn_users_calling(auth, db, auth.base_url.parse().unwrap()).await
}

/// [`spawn_users`] with its calls to the auth service sent to `auth_url`
/// instead (somewhere that does not answer, say).
pub async fn spawn_users_calling(auth: &TestApp, db: &TestDatabase, auth_url: axum::http::Uri) -> TestUsers {
    let config = user_service::UserServiceConfig {
        database: db.target.clone(),
        guard: guard::GuardConfig::new(auth.state.config.internal_secrets.clone(), guard::ReplayCache::memory()),
        metrics_allowed: common_http::metrics::loopback_only(),
        auth_url,
        upstream_roots: std::sync::Arc::new(common_http::tls::public_roots()),
        internal_secrets: auth.state.config.internal_secrets.clone(),
    };
    let state = user_service::build_state(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(user_service::serve(state.clone(), listener, CancellationToken::new()));
    TestUsers { base_url: format!("http://{addr}"), state }
}

/// A running notification service.
pub struct TestNotifications {
    pub base_url: String,
    pub state: notification_service::NotificationState,
}

/// Spawns the notification service on `db`, trusting the gateway secrets of
/// `auth` (as the gateway of [`test_gateway_config`] does). Point the auth
/// service at it with `AuthConfig::notification_url` to have it notify.
pub async fn spawn_notifications(auth_secrets: &[Secret], db: &TestDatabase) -> TestNotifications {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    spawn_notifications_on(listener, auth_secrets, db).await
}

/// [`spawn_notifications`] on a given listener (to bring the service up on
/// an address the auth service was already told about).
pub async fn spawn_notifications_on(
    listener: tokio::net::TcpListener,
    auth_secrets: &[Secret],
    db: &TestDatabase,
) -> TestNotifications {
    let config = notification_service::NotificationServiceConfig {
        database: db.target.clone(),
        guard: guard::GuardConfig::new(auth_secrets.to_vec(), guard::ReplayCache::memory()),
        metrics_allowed: common_http::metrics::loopback_only(),
    };
    let state = notification_service::build_state(config).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(notification_service::serve(state.clone(), listener, CancellationToken::new()));
    TestNotifications { base_url: format!("http://{addr}"), state }
}

/// A running gateway.
pub struct TestGateway {
    pub base_url: String,
    pub state: gateway::GatewayState,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
}

impl TestGateway {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Registers `email` through the gateway and logs in (with `user_agent`,
    /// when given); the login body.
    pub async fn sign_up_and_in(&self, email: &str, user_agent: Option<&str>) -> Value {
        let r = self
            .client
            .post(self.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": DEFAULT_PASSWORD, "name": "Ada"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        self.log_in(email, user_agent).await
    }

    /// Logs `email` in through the gateway; the login body.
    pub async fn log_in(&self, email: &str, user_agent: Option<&str>) -> Value {
        let mut request = self.client.post(self.url("/api/v1/auth/login"));
        if let Some(ua) = user_agent {
            request = request.header("User-Agent", ua);
        }
        let r = request.json(&json!({"email": email, "password": DEFAULT_PASSWORD})).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    /// A request through the gateway as a browser client sends it after
    /// `login`: the bearer token, and the CSRF token as header and cookie.
    pub fn authed(&self, method: reqwest::Method, path: &str, login: &Value) -> reqwest::RequestBuilder {
        let csrf = login["csrf_token"].as_str().unwrap();
        self.client
            .request(method, self.url(path))
            .bearer_auth(login["access_token"].as_str().unwrap())
            .header("X-CSRF-Token", csrf)
            .header("Cookie", format!("csrf_token={csrf}"))
    }
}

/// Spawns the gateway on `127.0.0.1:0`.
pub async fn spawn_gateway(config: gateway::GatewayConfig) -> TestGateway {
    let state = gateway::build_state(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(gateway::serve(state.clone(), listener, shutdown.clone()));
    TestGateway {
        base_url: format!("http://{addr}"),
        state,
        client: reqwest::Client::builder().build().unwrap(),
        shutdown,
    }
}

/// The status a server answers to an oversized streamed body. A server may
/// answer 413 and close before the client finished sending, which the
/// client can see as a broken pipe instead of the answer: such attempts are
/// retried, any HTTP answer is returned.
pub async fn status_for_streamed_body<F, Fut>(send: F) -> StatusCode
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<reqwest::Response, reqwest::Error>>,
{
    for _ in 0..10 {
        match send().await {
            Ok(response) => return response.status(),
            Err(e) if e.is_request() => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            Err(e) => panic!("unexpected client error: {e}"),
        }
    }
    panic!("every attempt ended in a broken connection, never an HTTP answer")
}

/// A running payment service.
pub struct TestPayments {
    pub base_url: String,
    pub state: payment_service::PaymentState,
}

/// Spawns the payment service on the database of `db`, trusting the gateway
/// secrets of `auth` (as the gateway of [`test_gateway_config`] does).
pub async fn spawn_payments(auth: &TestApp, db: &TestDatabase) -> TestPayments {
    let config = payment_service::PaymentServiceConfig {
        database: db.target.clone(),
        guard: guard::GuardConfig::new(auth.state.config.internal_secrets.clone(), guard::ReplayCache::memory()),
        metrics_allowed: common_http::metrics::loopback_only(),
    };
    let state = payment_service::build_state(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(payment_service::serve(state.clone(), listener, CancellationToken::new()));
    TestPayments { base_url: format!("http://{addr}"), state }
}

/// Fresh MFA sealing keys (one random key, id `test-k1`), as
/// [`test_auth_config`] sets them.
pub fn test_mfa_keys() -> tokens::sealed::SealingKeys {
    let key = tokens::sealed::SealingKey::generate("test-k1").unwrap();
    tokens::sealed::SealingKeys::new(key, Vec::new()).unwrap()
}
