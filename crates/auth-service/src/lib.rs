//! The Gatehouse auth service: accounts, passwords, sessions and tokens.
//!
//! It registers users, checks passwords (Argon2id on a bounded pool) and,
//! for users who enabled it, a TOTP second factor ([`mfa`]), issues
//! short-lived access tokens signed with the active key, and rotates
//! opaque refresh tokens with reuse detection. Sessions, users, login
//! failures and the audit log live in a [`store::Store`]: PostgreSQL in
//! production, SQLite as the embedded default.
//!
//! `router(state)` is the HTTP API; [`app`] adds the standard layers;
//! [`serve`] runs it until shutdown. The `gatehouse` binary builds the
//! [`config::AuthConfig`] from the environment; tests build it directly.

pub mod accounts;
pub mod audit;
pub mod config;
pub mod domain;
pub mod http;
pub mod keys;
pub mod mail_queue;
pub mod mailer;
pub mod metrics;
pub mod mfa;
pub mod notify;
pub mod password;
pub mod recovery;
pub mod revocations;
pub mod state;
pub mod store;
pub mod throttle;

use axum::Router;
use tokio_util::sync::CancellationToken;

pub use config::AuthConfig;
pub use state::AppState;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Store(#[from] store::StoreError),
    #[error("password hashing: {0}")]
    Hash(#[from] password::HashError),
    #[error("TLS client of the notification service: {0}")]
    Tls(#[from] common_http::tls::TlsError),
}

/// Connects the store (applying migrations) and builds the shared state.
///
/// # Errors
/// [`StartError`] when the database is unreachable or a migration fails.
pub async fn build_state(config: AuthConfig) -> Result<AppState, StartError> {
    let pool = store::PoolSettings { max_connections: config.db_max_connections, ..Default::default() };
    let store = store::connect(config.database.clone(), pool).await?;
    AppState::new(store, config)
}

/// The HTTP API with the standard layers (request ids, JSON 404/405/500).
pub fn app(state: AppState) -> Router {
    let metrics = state.metrics.http.clone();
    common_http::serve::with_standard_layers(metrics.instrument(http::router(state)))
}

/// Serves the API on `listener` until `shutdown` fires, drains the requests
/// in flight, then closes the database pool.
///
/// # Errors
/// I/O errors from the listener.
pub async fn serve(
    state: AppState,
    listener: impl Into<common_http::serve::Listener>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Some((dir, interval)) = state.config.key_ring.clone() {
        tokio::spawn(keys::follow_key_ring(state.clone(), dir, interval, shutdown.clone()));
    }
    let mail_sender = tokio::spawn(mail_queue::run_sender(state.clone(), shutdown.clone()));
    let store = std::sync::Arc::clone(&state.store);
    let result = common_http::serve::serve(listener, app(state), shutdown).await;
    // The sender stops at the shutdown signal; a send in flight gets a few
    // seconds, else its mail stays leased and is sent after the lease.
    match tokio::time::timeout(std::time::Duration::from_secs(5), mail_sender).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => tracing::error!("the mail sender panicked"),
        Err(_) => tracing::warn!("the mail sender was still sending at shutdown; that mail is retried later"),
    }
    store.close().await;
    result
}
