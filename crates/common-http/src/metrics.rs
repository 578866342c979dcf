//! Prometheus metrics: one registry per service, `GET /metrics` on each.
//!
//! `gatehouse up` runs every service in one process and each must answer
//! its own `/metrics`, so there is no global recorder: a service builds a
//! [`MetricsBuilder`], registers its own metrics next to the HTTP ones every
//! service has, and serves the [`Metrics`] it builds. Gauges that mirror
//! state elsewhere (a pool's size, a queue's depth) are read when scraped,
//! through [`MetricsBuilder::on_scrape`], not polled.
//!
//! Every request is counted by route (the route *pattern*, e.g.
//! `/payments/{id}`, so ids never become label values), method and status,
//! with its latency in a histogram by route. `/metrics` answers only peers
//! in the allowed networks (loopback by default): metrics describe the
//! system, not something to publish to the internet.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ApiError;
use crate::client_ip::Cidr;

/// Latency buckets from 0.25 ms to ~8 s, doubling.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// Collects a service's metrics before it serves.
pub struct MetricsBuilder {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    hooks: Vec<Box<dyn Fn() + Send + Sync>>,
    allowed: Vec<Cidr>,
}

impl MetricsBuilder {
    /// Metric names start with `gatehouse_`; `/metrics` answers peers in `allowed`.
    pub fn new(allowed: Vec<Cidr>) -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route, method and status", requests.clone());
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time to the response head, by route",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );
        Self { registry, requests, latency, hooks: Vec::new(), allowed }
    }

    /// For the service's own metrics.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Runs `hook` before each scrape (to set gauges from live state).
    pub fn on_scrape(&mut self, hook: impl Fn() + Send + Sync + 'static) {
        self.hooks.push(Box::new(hook));
    }

    pub fn build(self) -> Metrics {
        Metrics(Arc::new(Inner {
            registry: self.registry,
            requests: self.requests,
            latency: self.latency,
            hooks: self.hooks,
            allowed: self.allowed,
        }))
    }
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    hooks: Vec<Box<dyn Fn() + Send + Sync>>,
    allowed: Vec<Cidr>,
}

/// A service's metrics, cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The networks allowed to scrape by default: loopback.
pub fn loopback_only() -> Vec<Cidr> {
    ["127.0.0.0/8", "::1/128"].iter().filter_map(|c| c.parse().ok()).collect()
}

impl Metrics {
    /// Counts one request: its route pattern (or `unmatched`), method and status.
    pub fn observe(&self, route: &str, method: &str, status: u16, started: Instant) {
        let route = route.to_owned();
        self.0.requests.get_or_create(&RequestLabels { route: route.clone(), method: method.to_owned(), status }).inc();
        self.0.latency.get_or_create(&RouteLabels { route }).observe(started.elapsed().as_secs_f64());
    }

    /// The request counter of one route, method and status, for a caller
    /// that keeps it rather than naming it on every request (the gateway).
    pub fn request_counter(&self, route: &str, method: &str, status: u16) -> Counter {
        self.0.requests.get_or_create_owned(&RequestLabels {
            route: route.to_owned(),
            method: method.to_owned(),
            status,
        })
    }

    /// The latency histogram of one route, for a caller that keeps it.
    pub fn route_latency(&self, route: &str) -> Histogram {
        self.0.latency.get_or_create_owned(&RouteLabels { route: route.to_owned() })
    }

    /// Whether `ip` is in the networks allowed to scrape.
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        self.0.allowed.iter().any(|c| c.contains(ip))
    }

    /// The registry in Prometheus text format (after the scrape hooks ran).
    pub fn render(&self) -> String {
        for hook in &self.0.hooks {
            hook();
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }

    /// Wraps `router`: every request counted, and `GET /metrics` served.
    pub fn instrument(&self, router: Router) -> Router {
        let scrape = self.clone();
        router
            .route(
                "/metrics",
                axum::routing::get(move |request: Request| {
                    let peer = request.extensions().get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
                    let metrics = scrape.clone();
                    async move { metrics.scrape(peer) }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(self.clone(), count_request))
    }

    /// `GET /metrics` for `peer`: the registry, or a 404 outside the allowed networks.
    pub fn scrape(&self, peer: Option<std::net::IpAddr>) -> Response {
        let allowed = peer.is_some_and(|ip| self.allows(ip));
        if !allowed {
            return ApiError::not_found("Route not found").into_response();
        }
        ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], self.render())
            .into_response()
    }
}

async fn count_request(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    if route != "/metrics" {
        metrics.observe(&route, method.as_str(), status.as_u16(), started);
    }
    response
}
