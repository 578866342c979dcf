//! The Gatehouse API gateway: the front door of ARCHITECTURE.md.
//!
//! Every request gets a fresh request id, CORS is answered here, then the
//! proxy phases ([`phases`]) route it, rate-limit it, check its access token
//! and CSRF token on protected routes, sign the identity assertion and
//! stream it to the upstream over a pooled client.

/// Client addresses and trusted proxies live in `common-http`, shared with the auth service.
pub use common_http::client_ip;
pub mod config;
pub mod keys;
pub mod path;
pub mod phases;
pub mod proxy;
pub mod rate_limit;
pub mod revocation;
pub mod routes;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use common_http::ApiError;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

pub use config::GatewayConfig;

use crate::keys::KeySource;
use crate::proxy::{HttpClient, http_client};
use crate::rate_limit::{MemoryLimiter, RateLimiter, RedisLimiter};
use crate::revocation::RevocationView;

struct Inner {
    config: GatewayConfig,
    client: HttpClient,
    keys: KeySource,
    limiter: Arc<dyn RateLimiter>,
    revocation: Option<Arc<RevocationView>>,
}

/// The gateway's shared state; cheap to clone.
#[derive(Clone)]
pub struct GatewayState(Arc<Inner>);

impl GatewayState {
    pub fn config(&self) -> &GatewayConfig {
        &self.0.config
    }

    pub fn client(&self) -> &HttpClient {
        &self.0.client
    }

    pub fn keys(&self) -> &KeySource {
        &self.0.keys
    }

    pub fn limiter(&self) -> &dyn RateLimiter {
        self.0.limiter.as_ref()
    }

    pub fn revocation(&self) -> Option<&RevocationView> {
        self.0.revocation.as_deref()
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("rate limiter: {0}")]
    Limiter(#[from] rate_limit::LimiterError),
}

/// Builds the state: the upstream client, the keys (fetching the JWKS once)
/// and the rate limiter (Redis when configured).
///
/// # Errors
/// [`StartError`] when the limiter cannot be set up.
pub async fn build_state(config: GatewayConfig) -> Result<GatewayState, StartError> {
    let client = http_client(config.connect_timeout);
    let keys = KeySource::new(config.keys.clone(), client.clone(), &config.issuer, &config.audience).await;
    let limiter: Arc<dyn RateLimiter> = match &config.redis_url {
        Some(url) => Arc::new(RedisLimiter::connect(url, &config.redis_prefix).await?),
        None => Arc::new(MemoryLimiter::new(config.limiter_max_keys)),
    };
    let revocation = match &config.revocation {
        Some(rc) => {
            let view = Arc::new(RevocationView::new(rc.clone(), config.gateway_secrets.clone()));
            if let Err(e) = view.poll_once(&client).await {
                tracing::warn!(error = %e, "revocation feed not reachable yet");
            }
            Some(view)
        }
        None => None,
    };
    Ok(GatewayState(Arc::new(Inner { config, client, keys, limiter, revocation })))
}

/// The gateway's router with its layers, outermost first: request id (a new
/// one for every request), panic → JSON 500, CORS (preflights answered here,
/// never forwarded), then `/health`, `/ready` and the proxy.
pub fn app(state: GatewayState) -> Router {
    let cors = cors_layer(&state.config().cors_origins);
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .fallback(phases::proxy_request)
        .with_state(state)
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(cors)
        .layer(CatchPanicLayer::custom(common_http::error::panic_response))
        .layer(axum::middleware::from_fn(common_http::request_id::mint_request_id))
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-csrf-token"),
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "healthy", "service": "api-gateway"}))
}

async fn ready(State(state): State<GatewayState>) -> Result<impl IntoResponse, ApiError> {
    if !state.keys().is_loaded() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Signing keys not loaded"));
    }
    if let Err(e) = state.limiter().ping().await {
        tracing::warn!(error = %e, "readiness: rate limiter unavailable");
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Rate limiter unavailable"));
    }
    if state.revocation().is_some_and(|v| !v.is_fresh() && !v.fail_open()) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Revocation view is stale"));
    }
    Ok(axum::Json(serde_json::json!({"status": "ready", "service": "api-gateway"})))
}

/// Serves the gateway until `shutdown`, then drains.
///
/// # Errors
/// I/O errors from the listener.
pub async fn serve(state: GatewayState, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    state.keys().spawn_periodic_refresh(std::time::Duration::from_secs(300), shutdown.clone());
    if let Some(view) = &state.0.revocation {
        view.spawn_poller(state.client().clone(), shutdown.clone());
    }
    common_http::serve::serve(listener, app(state), shutdown).await
}
