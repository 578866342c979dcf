//! The Gatehouse API gateway: the front door of ARCHITECTURE.md.
//!
//! Every request gets a fresh request id, CORS is answered here, then the
//! proxy phases ([`phases`]) route it, rate-limit it, check its access token
//! and CSRF token on protected routes, sign the identity assertion and
//! stream it to the upstream over a pooled keep-alive connection. [`edge`]
//! says how a request is dispatched, and why not through an axum router on
//! the hot path.

/// Client addresses and trusted proxies live in `common-http`, shared with the auth service.
pub use common_http::client_ip;
pub mod clock;
pub mod config;
pub mod demo;
pub mod docs;
pub mod edge;
pub mod http1;
pub mod keys;
pub mod metrics;
pub mod path;
pub mod phases;
pub mod proxy;
pub mod rate_limit;
pub mod request_id;
pub mod revocation;
pub mod routes;
pub mod signer;
pub mod upstream;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use common_http::ApiError;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use config::GatewayConfig;

use crate::keys::KeySource;
use crate::proxy::HttpClient;
use crate::rate_limit::{MemoryLimiter, RateLimiter, RedisLimiter};
use crate::revocation::{RedisRevocations, RevocationView};

struct Inner {
    config: GatewayConfig,
    client: HttpClient,
    keys: KeySource,
    limiter: Arc<dyn RateLimiter>,
    revocation: Option<Arc<RevocationView>>,
    redis_revocations: Option<RedisRevocations>,
    signer: signer::AssertionSigner,
    /// One pool per distinct upstream of the route table.
    upstreams: Vec<Arc<upstream::UpstreamPool>>,
    /// Each route's pool, by the route's name (compared by pointer: a
    /// request's route is one of these, so finding its pool costs no
    /// string or URI comparison).
    route_pools: Vec<(Arc<str>, Arc<upstream::UpstreamPool>)>,
    metrics: metrics::GatewayMetrics,
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

    pub fn redis_revocations(&self) -> Option<&RedisRevocations> {
        self.0.redis_revocations.as_ref()
    }

    /// Signs identity assertions with the gateway secrets.
    pub fn signer(&self) -> &signer::AssertionSigner {
        &self.0.signer
    }

    /// The gateway's Prometheus metrics.
    pub fn metrics(&self) -> &metrics::GatewayMetrics {
        &self.0.metrics
    }

    /// The connection pool of an upstream of the route table.
    pub fn upstream(&self, target: &axum::http::Uri) -> Option<&Arc<upstream::UpstreamPool>> {
        self.0.upstreams.iter().find(|p| p.target() == target)
    }

    /// The connection pool of `route`, a route of this gateway's table.
    pub fn route_pool(&self, route: &routes::Route) -> Option<&Arc<upstream::UpstreamPool>> {
        self.0.route_pools.iter().find(|(name, _)| Arc::ptr_eq(name, &route.name)).map(|(_, pool)| pool)
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("rate limiter: {0}")]
    Limiter(#[from] rate_limit::LimiterError),
    #[error("redis: {0}")]
    Redis(String),
    #[error("upstream TLS: {0}")]
    UpstreamTls(String),
    #[error("the route table covers {0}, where the API documentation is served")]
    DocsShadowed(&'static str),
    #[error("the route table covers {0}, where the demo page is served")]
    PageShadowed(&'static str),
}

/// Builds the state: the upstream client, the keys (fetching the JWKS once)
/// and the rate limiter (Redis when configured).
///
/// # Errors
/// [`StartError`] when the limiter cannot be set up.
pub async fn build_state(config: GatewayConfig) -> Result<GatewayState, StartError> {
    if config.openapi.is_some()
        && let Some(path) = docs::collides_with(&config.routes)
    {
        return Err(StartError::DocsShadowed(path));
    }
    if let Some(path) = demo::collides_with(&config.routes) {
        return Err(StartError::PageShadowed(path));
    }
    let tls = common_http::tls::client_config(Arc::clone(&config.upstream_roots))
        .map_err(|e| StartError::UpstreamTls(e.to_string()))?;
    let client = common_http::client::internal_client(config.connect_timeout, Arc::clone(&config.upstream_roots))
        .map_err(|e| StartError::UpstreamTls(e.to_string()))?;
    let metrics = metrics::MetricsSetup::new(&config);
    let keys =
        KeySource::new(config.keys.clone(), client.clone(), &config.issuer, &config.audience, metrics.key_metrics())
            .await;
    let metrics = metrics.build(&config, &keys);
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
    let redis_revocations = match &config.redis_url {
        Some(url) => Some(RedisRevocations::new(url, &config.redis_prefix).map_err(StartError::Redis)?),
        None => None,
    };
    let signer = signer::AssertionSigner::new(&config.gateway_secrets);
    let mut upstreams: Vec<Arc<upstream::UpstreamPool>> = Vec::new();
    let mut route_pools = Vec::new();
    for route in config.routes.routes() {
        let pool = match upstreams.iter().find(|p| *p.target() == route.upstream) {
            Some(pool) => Arc::clone(pool),
            None => {
                let pool = upstream::UpstreamPool::new(route.upstream.clone(), config.connect_timeout, &tls)
                    .map_err(|e| StartError::UpstreamTls(e.to_string()))?;
                upstreams.push(Arc::clone(&pool));
                pool
            }
        };
        route_pools.push((Arc::clone(&route.name), pool));
    }
    Ok(GatewayState(Arc::new(Inner {
        config,
        client,
        keys,
        limiter,
        revocation,
        redis_revocations,
        signer,
        upstreams,
        route_pools,
        metrics,
    })))
}

/// The gateway: request id and access log, panic → JSON 500, CORS
/// (preflights answered here, never forwarded), `nosniff`, then `/health`,
/// `/ready`, `/metrics` ([`metrics`]) and the proxy. See [`edge`] for how a request is dispatched.
pub fn app(state: GatewayState) -> edge::Gateway {
    let cors = cors_layer(&state.config().cors_origins);
    let router = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", axum::routing::any(metrics::scrape))
        .merge(demo::router())
        .merge(state.config().openapi.clone().map(docs::router).unwrap_or_default())
        .fallback(phases::proxy_request)
        .with_state(state.clone());
    let routed = edge::routed(router, cors.clone());
    edge::Gateway::new(state, routed, &cors)
}

pub(crate) fn cors_layer(origins: &[String]) -> CorsLayer {
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
pub async fn serve(
    state: GatewayState,
    listener: impl Into<common_http::serve::Listener>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    state.keys().spawn_periodic_refresh(state.config().jwks_refresh_interval, shutdown.clone());
    if let Some(view) = &state.0.revocation {
        view.spawn_poller(state.client().clone(), shutdown.clone());
    }
    upstream::spawn_idle_sweeper(state.0.upstreams.clone(), shutdown.clone());
    let options = common_http::serve::ServeOptions::default();
    common_http::serve::serve_service(listener, app(state), shutdown, options).await
}
