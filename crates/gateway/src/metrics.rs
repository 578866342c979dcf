//! The gateway's Prometheus metrics, served at `GET /metrics`.
//!
//! The registry, the request counter and latency histogram every service
//! has, and the rule that only peers in `METRICS_ALLOWED_CIDRS` may scrape
//! are `common_http::metrics`'s. The gateway labels requests by the route
//! table entry that took them (its name: `users`, `auth`…, or `unmatched`),
//! by the path of its own endpoints (`/health`, `/ready`), or `preflight`
//! for a CORS preflight answered at the edge; methods are folded into a
//! fixed set of classes (`GET` … `OPTIONS`, `other`), since a client may send
//! any method token and labels must stay bounded. `/metrics` itself is not
//! counted, except a refused scrape, which is an `unmatched` 404 as it looks
//! from outside. Beside those:
//!
//! - `gatehouse_gateway_upstream_response_duration_seconds{upstream}`: time
//!   to the upstream's response head; `…_upstream_errors_total{upstream,kind}`
//!   with `kind` `connect` (502: refused, unreachable, handshake failed),
//!   `timeout` (504) or `other` (502: the connection failed after the request
//!   was sent). `upstream` is the route's `scheme://host:port`.
//! - `…_rate_limit_decisions_total{class,outcome}`: per limit class (`ip`,
//!   `auth_ip`, `user`), `allowed`, `limited`, or the limiter failing and the
//!   route's policy deciding (`error_fail_open`, `error_fail_closed`).
//! - `…_token_failures_total{reason}`: why an access token was refused on a
//!   protected route (`missing`, `malformed_header`, the verifier's reason
//!   such as `expired` or `bad_signature`, `revoked`, `revocation_stale`), and
//!   `…_token_cache_lookups_total{result}` (`hit`, `miss`).
//! - `…_csrf_failures_total{reason}`.
//! - `…_jwks_refreshes_total{outcome}` (`ok`, `error`) and the gauge
//!   `…_jwks_keys`: how many keys the gateway verifies with now.
//!
//! # Cost on the hot path
//!
//! The proxy's per-request budget is a few microseconds, so counting must
//! not build labels or allocate. Every series a request can touch is a
//! handle created once: at start-up for routes, upstreams, limit classes and
//! reasons (so they are scraped as 0 before anything happened), and for a
//! request counter the first time its route, method class and status occur
//! (then kept in a slot indexed by method class and status). Counting is then
//! an atomic add, a latency one histogram observation. A route is found by
//! comparing its name's `Arc` by address with the table's, a handful of
//! pointer comparisons.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use common_http::client_ip::client_ip;
use common_http::metrics::{Metrics, MetricsBuilder, latency_histogram};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokens::VerifyError;

use crate::GatewayState;
use crate::config::GatewayConfig;
use crate::keys::KeySource;
use crate::routes::Route;

/// The method label of a request: its method if one of the seven an API
/// client uses, else `other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodClass {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Other,
}

const METHOD_CLASSES: usize = 8;

impl MethodClass {
    /// The class of `method`.
    pub fn of(method: &Method) -> Self {
        match *method {
            Method::GET => Self::Get,
            Method::HEAD => Self::Head,
            Method::POST => Self::Post,
            Method::PUT => Self::Put,
            Method::PATCH => Self::Patch,
            Method::DELETE => Self::Delete,
            Method::OPTIONS => Self::Options,
            _ => Self::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
            Self::Options => "OPTIONS",
            Self::Other => "other",
        }
    }
}

/// Statuses 100 to 599 have a slot; any other (hyper allows up to 999) is
/// counted through the family each time.
const STATUS_SLOTS: usize = 500;

/// The request series of one route label.
struct RouteSeries {
    /// The route table entry this series is for, compared by address.
    name: Option<Arc<str>>,
    label: String,
    latency: Histogram,
    /// By method class, then by status − 100; each table and counter made on
    /// first use.
    requests: [OnceLock<Box<[OnceLock<Counter>]>>; METHOD_CLASSES],
    /// Index of the route's upstream in [`GatewayMetrics::upstreams`].
    upstream: Option<usize>,
}

impl RouteSeries {
    fn new(http: &Metrics, label: &str, name: Option<Arc<str>>, upstream: Option<usize>) -> Self {
        Self {
            name,
            label: label.to_owned(),
            latency: http.route_latency(label),
            requests: std::array::from_fn(|_| OnceLock::new()),
            upstream,
        }
    }

    fn count(&self, http: &Metrics, method: MethodClass, status: StatusCode, started: Instant) {
        self.latency.observe(started.elapsed().as_secs_f64());
        let code = status.as_u16();
        let slot = usize::from(code).checked_sub(100).filter(|i| *i < STATUS_SLOTS);
        let by_status = self.requests.get(method as usize).zip(slot).map(|(table, slot)| {
            let table = table.get_or_init(|| (0..STATUS_SLOTS).map(|_| OnceLock::new()).collect());
            (table, slot)
        });
        match by_status.and_then(|(table, slot)| table.get(slot)) {
            Some(counter) => counter.get_or_init(|| http.request_counter(&self.label, method.as_str(), code)).inc(),
            None => http.request_counter(&self.label, method.as_str(), code).inc(),
        };
    }
}

/// Why an upstream gave no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// No connection: refused, unreachable, DNS or handshake failure (502).
    Connect,
    /// No response head within the response timeout (504).
    Timeout,
    /// The connection failed after it was made, or the response could not
    /// be framed safely (502).
    Other,
}

impl UpstreamErrorKind {
    const ALL: [Self; 3] = [Self::Connect, Self::Timeout, Self::Other];

    fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Other => "other",
        }
    }

    /// The kind of an error from an upstream pool's `send`.
    pub fn of(error: &crate::upstream::UpstreamError) -> Self {
        match error {
            crate::upstream::UpstreamError::Connect(_) => Self::Connect,
            crate::upstream::UpstreamError::Timeout => Self::Timeout,
            _ => Self::Other,
        }
    }
}

/// One upstream's series.
pub struct UpstreamSeries {
    latency: Histogram,
    errors: [Counter; 3],
}

impl UpstreamSeries {
    /// A response head arrived, `started` being when the request was handed to the pool.
    pub fn responded(&self, started: Instant) {
        self.latency.observe(started.elapsed().as_secs_f64());
    }

    /// No response.
    pub fn failed(&self, kind: UpstreamErrorKind) {
        if let Some(counter) = self.errors.get(kind as usize) {
            counter.inc();
        }
    }
}

/// How a rate-limit check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitOutcome {
    Allowed,
    Limited,
    /// The limiter could not answer; the route lets requests through.
    ErrorFailOpen,
    /// The limiter could not answer; the route refuses requests (503).
    ErrorFailClosed,
}

impl RateLimitOutcome {
    const ALL: [Self; 4] = [Self::Allowed, Self::Limited, Self::ErrorFailOpen, Self::ErrorFailClosed];

    fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Limited => "limited",
            Self::ErrorFailOpen => "error_fail_open",
            Self::ErrorFailClosed => "error_fail_closed",
        }
    }
}

/// The limit classes `phases::enforce` uses; anything else counts as `other`.
const RATE_LIMIT_CLASSES: [&str; 4] = ["ip", "auth_ip", "user", "other"];

fn rate_limit_class(class: &str) -> usize {
    match class {
        "ip" => 0,
        "auth_ip" => 1,
        "user" => 2,
        _ => 3,
    }
}

/// Why a protected route refused a request's access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenFailure {
    /// No `Authorization` header.
    Missing,
    /// Not a `Bearer` credential.
    MalformedHeader,
    /// The token did not verify.
    Invalid(VerifyError),
    /// Its session was revoked.
    Revoked,
    /// The revocation view is stale and the gateway fails closed (503).
    RevocationStale,
}

/// Every [`VerifyError`], in the order of [`verify_error_index`].
const VERIFY_ERRORS: [VerifyError; 11] = [
    VerifyError::Malformed,
    VerifyError::WrongType,
    VerifyError::MissingKid,
    VerifyError::UnknownKid,
    VerifyError::WrongAlgorithm,
    VerifyError::BadSignature,
    VerifyError::Expired,
    VerifyError::NotYetValid,
    VerifyError::WrongIssuer,
    VerifyError::WrongAudience,
    VerifyError::MissingClaim,
];

/// Exhaustive, so a new reason in `tokens` does not compile until it has a series.
fn verify_error_index(e: VerifyError) -> usize {
    match e {
        VerifyError::Malformed => 0,
        VerifyError::WrongType => 1,
        VerifyError::MissingKid => 2,
        VerifyError::UnknownKid => 3,
        VerifyError::WrongAlgorithm => 4,
        VerifyError::BadSignature => 5,
        VerifyError::Expired => 6,
        VerifyError::NotYetValid => 7,
        VerifyError::WrongIssuer => 8,
        VerifyError::WrongAudience => 9,
        VerifyError::MissingClaim => 10,
    }
}

const TOKEN_FAILURE_SLOTS: usize = 4 + VERIFY_ERRORS.len();

impl TokenFailure {
    fn index(self) -> usize {
        match self {
            Self::Missing => 0,
            Self::MalformedHeader => 1,
            Self::Revoked => 2,
            Self::RevocationStale => 3,
            Self::Invalid(e) => 4 + verify_error_index(e),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::MalformedHeader => "malformed_header",
            Self::Revoked => "revoked",
            Self::RevocationStale => "revocation_stale",
            Self::Invalid(e) => e.reason(),
        }
    }

    fn all() -> impl Iterator<Item = Self> {
        [Self::Missing, Self::MalformedHeader, Self::Revoked, Self::RevocationStale]
            .into_iter()
            .chain(VERIFY_ERRORS.into_iter().map(Self::Invalid))
    }
}

/// Why a state-changing request failed the CSRF checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsrfFailure {
    /// `Sec-Fetch-Site: cross-site`.
    CrossSite,
    /// An `Origin` outside the allowed origins.
    Origin,
    MissingHeader,
    MissingCookie,
    /// Header and cookie differ.
    Mismatch,
    /// The pair matches but was not issued for this session.
    WrongSession,
}

impl CsrfFailure {
    const ALL: [Self; 6] =
        [Self::CrossSite, Self::Origin, Self::MissingHeader, Self::MissingCookie, Self::Mismatch, Self::WrongSession];

    fn as_str(self) -> &'static str {
        match self {
            Self::CrossSite => "cross_site",
            Self::Origin => "origin",
            Self::MissingHeader => "missing_header",
            Self::MissingCookie => "missing_cookie",
            Self::Mismatch => "mismatch",
            Self::WrongSession => "wrong_session",
        }
    }
}

/// The counters [`KeySource`] moves. Cheap to clone.
#[derive(Clone, Debug)]
pub struct KeyMetrics {
    cache_hits: Counter,
    cache_misses: Counter,
    refreshes_ok: Counter,
    refreshes_error: Counter,
}

impl KeyMetrics {
    /// A token found in the verified-token cache.
    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    /// A token not in the cache (verified, or refused, now).
    pub fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    /// A JWKS fetch that installed keys (`true`) or failed or had none.
    pub fn refreshed(&self, ok: bool) {
        if ok {
            self.refreshes_ok.inc()
        } else {
            self.refreshes_error.inc()
        };
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    upstream: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLimitLabels {
    class: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

fn counter_family<S>(registry: &mut Registry, name: &str, help: &str) -> Family<S, Counter>
where
    S: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<S, Counter>::default();
    registry.register(name, help, family.clone());
    family
}

/// The metrics registered before the key source exists (it takes
/// [`KeyMetrics`]); [`MetricsSetup::build`] finishes them.
pub struct MetricsSetup {
    builder: MetricsBuilder,
    keys: KeyMetrics,
    key_count: Gauge,
    upstream_latency: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    rate_limits: [[Counter; 4]; 4],
    token_failures: [Counter; TOKEN_FAILURE_SLOTS],
    csrf_failures: [Counter; 6],
}

impl MetricsSetup {
    /// Registers the gateway's metrics; scrapes are allowed from `config.metrics_allowed`.
    pub fn new(config: &GatewayConfig) -> Self {
        let mut builder = MetricsBuilder::new(config.metrics_allowed.clone());
        let registry = builder.registry().sub_registry_with_prefix("gateway");
        let upstream_latency =
            Family::<UpstreamLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "upstream_response_duration",
            "Time to the upstream's response head, by upstream",
            Unit::Seconds,
            upstream_latency.clone(),
        );
        let upstream_errors = counter_family::<UpstreamErrorLabels>(
            registry,
            "upstream_errors",
            "Proxied requests the upstream gave no response to, by upstream and kind",
        );
        let limits = counter_family::<RateLimitLabels>(
            registry,
            "rate_limit_decisions",
            "Rate-limit checks by limit class and outcome",
        );
        let rate_limits = std::array::from_fn(|class| {
            std::array::from_fn(|outcome| {
                limits.get_or_create_owned(&RateLimitLabels {
                    class: RATE_LIMIT_CLASSES.get(class).copied().unwrap_or("other"),
                    outcome: RateLimitOutcome::ALL.get(outcome).map_or("other", |o| o.as_str()),
                })
            })
        });
        let failures = counter_family::<ReasonLabels>(
            registry,
            "token_failures",
            "Access tokens refused on protected routes, by reason",
        );
        let labels: Vec<&'static str> = TokenFailure::all().map(TokenFailure::label).collect();
        let token_failures = std::array::from_fn(|i| {
            failures.get_or_create_owned(&ReasonLabels { reason: labels.get(i).copied().unwrap_or("other") })
        });
        let csrf = counter_family::<ReasonLabels>(
            registry,
            "csrf_failures",
            "State-changing requests refused by the CSRF checks, by reason",
        );
        let csrf_failures = std::array::from_fn(|i| {
            csrf.get_or_create_owned(&ReasonLabels { reason: CsrfFailure::ALL.get(i).map_or("other", |f| f.as_str()) })
        });
        let cache = counter_family::<ResultLabels>(
            registry,
            "token_cache_lookups",
            "Lookups of the verified-token cache, by result",
        );
        let refreshes = counter_family::<OutcomeLabels>(registry, "jwks_refreshes", "JWKS fetches made, by outcome");
        let keys = KeyMetrics {
            cache_hits: cache.get_or_create_owned(&ResultLabels { result: "hit" }),
            cache_misses: cache.get_or_create_owned(&ResultLabels { result: "miss" }),
            refreshes_ok: refreshes.get_or_create_owned(&OutcomeLabels { outcome: "ok" }),
            refreshes_error: refreshes.get_or_create_owned(&OutcomeLabels { outcome: "error" }),
        };
        let key_count = Gauge::default();
        registry.register("jwks_keys", "Keys access tokens are verified with", key_count.clone());
        Self { builder, keys, key_count, upstream_latency, upstream_errors, rate_limits, token_failures, csrf_failures }
    }

    /// What the key source counts.
    pub fn key_metrics(&self) -> KeyMetrics {
        self.keys.clone()
    }

    /// The metrics of a gateway over `config` verifying with `keys`.
    pub fn build(mut self, config: &GatewayConfig, keys: &KeySource) -> GatewayMetrics {
        let (gauge, source) = (self.key_count, keys.clone());
        self.builder.on_scrape(move || {
            gauge.set(i64::try_from(source.key_count()).unwrap_or(i64::MAX));
        });
        let http = self.builder.build();
        let mut upstream_targets: Vec<&axum::http::Uri> = Vec::new();
        let mut upstreams = Vec::new();
        let mut routes = Vec::new();
        for route in config.routes.routes() {
            let index = match upstream_targets.iter().position(|t| **t == route.upstream) {
                Some(index) => index,
                None => {
                    let label = upstream_label(&route.upstream);
                    upstreams.push(UpstreamSeries {
                        latency: self.upstream_latency.get_or_create_owned(&UpstreamLabels { upstream: label.clone() }),
                        errors: UpstreamErrorKind::ALL.map(|kind| {
                            self.upstream_errors.get_or_create_owned(&UpstreamErrorLabels {
                                upstream: label.clone(),
                                kind: kind.as_str(),
                            })
                        }),
                    });
                    upstream_targets.push(&route.upstream);
                    upstreams.len() - 1
                }
            };
            routes.push(RouteSeries::new(&http, &route.name, Some(Arc::clone(&route.name)), Some(index)));
        }
        GatewayMetrics {
            unmatched: RouteSeries::new(&http, "unmatched", None, None),
            preflight: RouteSeries::new(&http, "preflight", None, None),
            http,
            routes,
            upstreams,
            rate_limits: self.rate_limits,
            token_failures: self.token_failures,
            csrf_failures: self.csrf_failures,
        }
    }
}

/// `scheme://host:port`, as configured.
fn upstream_label(target: &axum::http::Uri) -> String {
    match (target.scheme_str(), target.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => target.to_string(),
    }
}

/// The gateway's metrics (module docs).
pub struct GatewayMetrics {
    http: Metrics,
    /// One per route table entry, in table order.
    routes: Vec<RouteSeries>,
    unmatched: RouteSeries,
    preflight: RouteSeries,
    upstreams: Vec<UpstreamSeries>,
    /// By limit class, then outcome.
    rate_limits: [[Counter; 4]; 4],
    token_failures: [Counter; TOKEN_FAILURE_SLOTS],
    csrf_failures: [Counter; 6],
}

impl std::fmt::Debug for GatewayMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayMetrics").finish_non_exhaustive()
    }
}

/// How the edge counts a response of the routed stack, left in its extensions.
#[derive(Clone, Debug)]
pub(crate) enum Counted {
    /// By the route the proxy phases chose (`None`: no route matched).
    Proxied(Option<Arc<str>>),
    /// One of the gateway's own endpoints, by its path.
    Local(Arc<str>),
    /// Not counted (a scrape).
    Not,
}

impl GatewayMetrics {
    fn series(&self, route: Option<&Arc<str>>) -> &RouteSeries {
        route
            .and_then(|name| self.routes.iter().find(|s| s.name.as_ref().is_some_and(|n| Arc::ptr_eq(n, name))))
            .unwrap_or(&self.unmatched)
    }

    /// Counts a request the proxy phases answered; `route` is the name of the
    /// route table entry that took it (`None`: none matched).
    pub fn count_proxied(&self, route: Option<&Arc<str>>, method: MethodClass, status: StatusCode, started: Instant) {
        self.series(route).count(&self.http, method, status, started);
    }

    /// Counts a request the routed stack answered, by what it left in the
    /// response (`Counted`); a response without that was a CORS preflight
    /// answered at the edge (or a panic's 500: `unmatched`).
    pub fn count_routed(&self, response: &Response, method: MethodClass, started: Instant) {
        let status = response.status();
        match response.extensions().get::<Counted>() {
            Some(Counted::Proxied(route)) => self.count_proxied(route.as_ref(), method, status, started),
            Some(Counted::Local(path)) => self.http.observe(path, method.as_str(), status.as_u16(), started),
            Some(Counted::Not) => {}
            None if method == MethodClass::Options => self.preflight.count(&self.http, method, status, started),
            None => self.unmatched.count(&self.http, method, status, started),
        }
    }

    /// The series of `route`'s upstream.
    pub fn upstream(&self, route: &Route) -> Option<&UpstreamSeries> {
        self.series(Some(&route.name)).upstream.and_then(|i| self.upstreams.get(i))
    }

    /// Counts a rate-limit check of limit `class`.
    pub fn rate_limit(&self, class: &str, outcome: RateLimitOutcome) {
        if let Some(counter) = self.rate_limits.get(rate_limit_class(class)).and_then(|c| c.get(outcome as usize)) {
            counter.inc();
        }
    }

    /// Counts a refused access token.
    pub fn token_failure(&self, failure: TokenFailure) {
        if let Some(counter) = self.token_failures.get(failure.index()) {
            counter.inc();
        }
    }

    /// Counts a CSRF refusal.
    pub fn csrf_failure(&self, failure: CsrfFailure) {
        if let Some(counter) = self.csrf_failures.get(failure as usize) {
            counter.inc();
        }
    }
}

/// `GET /metrics`: the registry, to peers in the allowed networks only.
///
/// A request that came through a trusted proxy must be allowed twice: the
/// proxy (the TCP peer) and the client it forwarded for. Otherwise a load
/// balancer inside the allowed networks would publish the metrics to the
/// internet. Anyone else gets the gateway's own 404, indistinguishable from
/// a path no route serves, whatever the method. Never proxied: the edge
/// sends `/metrics` to the router, ahead of the route table.
pub(crate) async fn scrape(State(state): State<GatewayState>, request: Request) -> Response {
    let metrics = state.metrics();
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| peer.ip());
    let allowed = peer.is_some_and(|peer| {
        let client = client_ip(peer, request.headers(), &state.config().trusted_proxies);
        metrics.http.allows(peer) && metrics.http.allows(client)
    });
    let (mut response, counted) = if allowed {
        (metrics.http.scrape(peer), Counted::Not)
    } else {
        (crate::phases::route_not_found(request.uri().path()), Counted::Proxied(None))
    };
    response.extensions_mut().insert(counted);
    response
}

/// Labels a response of one of the router's own routes with its path, for
/// [`GatewayMetrics::count_routed`]; applied to every route of the routed
/// stack (the proxy fallback and `/metrics` label theirs themselves).
pub(crate) async fn label_local_route(request: Request, next: Next) -> Response {
    let path = request.extensions().get::<MatchedPath>().map(|p| Arc::<str>::from(p.as_str()));
    let mut response = next.run(request).await;
    if let Some(path) = path
        && response.extensions().get::<Counted>().is_none()
    {
        response.extensions_mut().insert(Counted::Local(path));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_failure_has_its_own_series() {
        let all: Vec<TokenFailure> = TokenFailure::all().collect();
        assert_eq!(all.len(), TOKEN_FAILURE_SLOTS);
        for (i, failure) in all.iter().enumerate() {
            assert_eq!(failure.index(), i, "{failure:?}");
        }
        let labels: std::collections::HashSet<_> = all.iter().map(|f| f.label()).collect();
        assert_eq!(labels.len(), all.len(), "labels are distinct");
    }

    #[test]
    fn methods_fold_into_bounded_classes() {
        let cases = [
            (Method::GET, "GET"),
            (Method::DELETE, "DELETE"),
            (Method::OPTIONS, "OPTIONS"),
            (Method::from_bytes(b"PROPFIND").unwrap(), "other"),
            (Method::from_bytes(b"X-ANYTHING").unwrap(), "other"),
        ];
        for (method, label) in cases {
            assert_eq!(MethodClass::of(&method).as_str(), label, "{method}");
        }
    }

    #[test]
    fn connector_failures_are_connect_errors_and_the_rest_other() {
        use crate::upstream::UpstreamError;
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(UpstreamErrorKind::of(&UpstreamError::Connect(refused.into())), UpstreamErrorKind::Connect);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(UpstreamErrorKind::of(&UpstreamError::Io(reset)), UpstreamErrorKind::Other);
        assert_eq!(UpstreamErrorKind::of(&UpstreamError::Closed), UpstreamErrorKind::Other);
    }
}
