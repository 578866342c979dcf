//! The Gatehouse auth service: accounts, passwords, sessions and tokens.
//!
//! It registers users, checks passwords (Argon2id on a bounded pool),
//! issues short-lived access tokens signed with the active key, and rotates
//! opaque refresh tokens with reuse detection. Sessions, users, login
//! failures and the audit log live in a [`store::Store`]: PostgreSQL in
//! production, SQLite as the embedded default.
//!
//! `router(state)` is the HTTP API; [`app`] adds the standard layers;
//! [`serve`] runs it until shutdown. The `gatehouse` binary builds the
//! [`config::AuthConfig`] from the environment; tests build it directly.

pub mod audit;
pub mod config;
pub mod domain;
pub mod http;
pub mod password;
pub mod state;
pub mod store;
pub mod throttle;

use axum::Router;
use tokio::net::TcpListener;
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
}

/// Connects the store (applying migrations) and builds the shared state.
///
/// # Errors
/// [`StartError`] when the database is unreachable or a migration fails.
pub async fn build_state(config: AuthConfig) -> Result<AppState, StartError> {
    let pool = store::PoolSettings { max_connections: config.db_max_connections, ..Default::default() };
    let store = store::connect(config.database.clone(), pool).await?;
    Ok(AppState::new(store, config)?)
}

/// The HTTP API with the standard layers (request ids, JSON 404/405/500).
pub fn app(state: AppState) -> Router {
    common_http::serve::with_standard_layers(http::router(state))
}

/// Serves the API on `listener` until `shutdown` fires, drains the requests
/// in flight, then closes the database pool.
///
/// # Errors
/// I/O errors from the listener.
pub async fn serve(state: AppState, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    let store = std::sync::Arc::clone(&state.store);
    let result = common_http::serve::serve(listener, app(state), shutdown).await;
    store.close().await;
    result
}
