//! The proxy handler, as named phases in a fixed order (pingora's model):
//!
//! 1. [`request_filter`]: framing and method checks, path canonicalisation,
//!    routing, per-IP rate limits, and on protected routes the access
//!    token, CSRF and the per-user limit. It may answer the request itself.
//! 2. [`rewrite_request`]: decide which of the client's fields are
//!    forwarded (no hop-by-hop or spoofable ones, no credentials the
//!    upstream must not see: [`crate::proxy::ForwardFilter`]), add
//!    `X-Forwarded-*`, sign the identity assertion, cap the body. The
//!    changes are applied as the upstream head is encoded; the client's
//!    header map is not edited.
//! 3. [`send_upstream`]: the route's upstream pool ([`crate::upstream`]),
//!    with a response timeout; failures are classified by origin (502
//!    unreachable, 504 too slow).
//! 4. [`rewrite_response`]: `Cache-Control` and the rate-limit fields in
//!    (hop-by-hop, `Server` and upstream CORS fields are left out as the
//!    upstream head is parsed, [`crate::http1`]).
//!
//! They share a [`ProxyCtx`]. The access-log line is written by the
//! gateway's outermost service ([`crate::edge`], [`crate::request_id`]) from
//! what the handler leaves in the response's extensions, so every request,
//! proxied or not, gets exactly one.
//!
//! # Cost
//!
//! This is the hot path of the gateway, so the phases avoid per-request work
//! that buys nothing: header names are constants rather than strings parsed
//! on every call; values that are the same for every request of a token
//! (`X-User-ID`, `X-User-Email`) are built once, when the token is verified
//! and cached ([`crate::keys`]); new header values take ownership of their
//! buffer instead of copying it; the forwarded request's fields are filtered
//! and added while its head is encoded, not removed from and inserted into
//! a header map (a hash and a probe each); a request body whose length the server already bounds
//! (a `Content-Length` within the cap, or no body) is forwarded as is, and
//! only a body of unknown length is wrapped in the counting limiter.

// Phases reject with a ready `Response`, as axum handlers do; the large Err
// variant is on the rejection path only.
#![allow(clippy::result_large_err)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::{Body, HttpBody as _};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use common_http::ApiError;
use common_http::cookies::{CSRF_COOKIE, cookie_value};
use tokens::BearerError;
use tokens::assertion::Assertion;

use crate::GatewayState;
use crate::keys::{AuthorizationError, VerifiedToken};
use crate::metrics::{Counted, CsrfFailure, RateLimitOutcome, TokenFailure, UpstreamErrorKind};
use crate::path::canonical_path;
use crate::proxy::ForwardFilter;
use crate::rate_limit::{Decision, Quota, ceil_secs, ip_key};
use crate::request_id::{AccessLogFields, GatewayRequestId, access_log_enabled};
use crate::routes::Route;
use crate::upstream::{Forwarded, UpstreamBody, UpstreamError};
use common_http::client_ip::client_ip;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
const X_USER_EMAIL: HeaderName = HeaderName::from_static("x-user-email");
const X_GATEWAY_TIMESTAMP: HeaderName = HeaderName::from_static("x-gateway-timestamp");
const X_GATEWAY_SIGNATURE: HeaderName = HeaderName::from_static("x-gateway-signature");
const X_CSRF_TOKEN: HeaderName = HeaderName::from_static("x-csrf-token");
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static(crate::rate_limit::RATELIMIT_LIMIT);
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static(crate::rate_limit::RATELIMIT_REMAINING);
const RATELIMIT_RESET: HeaderName = HeaderName::from_static(crate::rate_limit::RATELIMIT_RESET);

/// What the phases learn about one request.
pub struct ProxyCtx {
    pub request_id: GatewayRequestId,
    pub client_ip: IpAddr,
    /// The route's name, once routed.
    pub route: Option<Arc<str>>,
    /// The authenticated user, on protected routes.
    pub user_id: Option<Arc<str>>,
}

/// Where `request_filter` decided the request goes.
struct Plan<'a> {
    route: &'a Route,
    /// The canonical path minus the stripped prefix, plus the query; moved
    /// into the upstream request once signed.
    path_and_query: String,
    /// The verified access token, on protected routes.
    identity: Option<Arc<VerifiedToken>>,
    rate_limit: Option<Decision>,
}

/// The proxy as the routed stack's fallback handler (the way preflights and
/// requests with an `Origin` take, see [`crate::edge`]).
pub async fn proxy_request(State(state): State<GatewayState>, request: Request) -> Response {
    // The edge always sets it; minting keeps the handler total.
    let request_id = request.extensions().get::<GatewayRequestId>().cloned().unwrap_or_else(GatewayRequestId::mint);
    let (mut response, route) = proxy(&state, request, request_id).await;
    response.extensions_mut().insert(Counted::Proxied(route));
    response
}

/// The proxy: every path the gateway does not serve itself, through the
/// phases. Also returns the name of the route that took the request, for
/// the metrics. `request_id` is the one the edge minted for the request.
pub async fn proxy(
    state: &GatewayState,
    request: Request,
    request_id: GatewayRequestId,
) -> (Response, Option<Arc<str>>) {
    let (parts, body) = request.into_parts();
    let Some(&ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
        // The server always provides it (as axum's `ConnectInfo` extractor
        // requires, which answers 500 too): without it there is no client
        // address to rate-limit.
        tracing::error!("request without the peer address; serve the gateway with ConnectInfo");
        return (ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error").into_response(), None);
    };
    let mut ctx = ProxyCtx {
        request_id,
        client_ip: client_ip(peer.ip(), &parts.headers, &state.config().trusted_proxies),
        route: None,
        user_id: None,
    };
    let mut response = match request_filter(state, &mut ctx, &parts).await {
        Err(rejection) => rejection,
        Ok(mut plan) => match rewrite_request(state, &ctx, parts, body, &mut plan) {
            Err(rejection) => rejection,
            Ok(upstream_request) => match send_upstream(state, &ctx, &plan, upstream_request).await {
                Err(rejection) => rejection,
                Ok(upstream_response) => rewrite_response(&plan, upstream_response),
            },
        },
    };
    if access_log_enabled() {
        response.extensions_mut().insert(AccessLogFields { upstream: ctx.route.clone(), user_id: ctx.user_id });
    }
    (response, ctx.route)
}

/// Phase 1. Answers the request itself when a check fails.
async fn request_filter<'a>(state: &'a GatewayState, ctx: &mut ProxyCtx, parts: &Parts) -> Result<Plan<'a>, Response> {
    let config = state.config();
    if parts.method == Method::TRACE || parts.method == Method::CONNECT {
        return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed").into_response());
    }
    // One pass over the names present (a handful), not a lookup per name.
    let (mut content_length, mut transfer_encoding) = (false, false);
    for name in parts.headers.keys() {
        match name.as_str() {
            "x-http-method-override" | "x-http-method" | "x-method-override" => {
                return Err(ApiError::bad_request("Method override headers are not allowed").into_response());
            }
            "content-length" => content_length = true,
            "transfer-encoding" => transfer_encoding = true,
            _ => {}
        }
    }
    // Request smuggling guard (RFC 9112 §6.3): never forward an ambiguous frame.
    if content_length && transfer_encoding {
        return Err(ApiError::bad_request("Both Content-Length and Transfer-Encoding are set").into_response());
    }
    let path = canonical_path(parts.uri.path())
        .map_err(|e| ApiError::bad_request("Invalid path").with_hint(e.to_string()).into_response())?;
    let Some((route, forwarded)) = config.routes.find(path) else {
        return Err(route_not_found(path));
    };
    ctx.route = Some(Arc::clone(&route.name));
    if !route.methods.contains(&parts.method) {
        return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed").into_response());
    }

    let key = ip_key(ctx.client_ip);
    let ip = key.as_str();
    let fail_closed = route.rate_limit_fail_closed;
    let mut decision = enforce(state, ctx, "ip", ip, config.ip_quota, fail_closed).await?;
    if route.public && is_credential_path(forwarded) {
        decision = enforce(state, ctx, "auth_ip", ip, config.auth_ip_quota, fail_closed).await?.or(decision);
    }

    let identity = if route.public {
        None
    } else {
        let identity = authenticate(state, ctx, &parts.headers).await?;
        ctx.user_id = Some(Arc::clone(&identity.user_id));
        if !is_safe(&parts.method) {
            check_csrf(state, &parts.headers, &identity.claims.sid)?;
        }
        decision =
            enforce(state, ctx, "user", &identity.claims.sub, config.user_quota, fail_closed).await?.or(decision);
        Some(identity)
    };
    let path_and_query = match parts.uri.query() {
        Some(q) => {
            let mut pq = String::with_capacity(forwarded.len() + 1 + q.len());
            pq.push_str(forwarded);
            pq.push('?');
            pq.push_str(q);
            pq
        }
        None => forwarded.to_owned(),
    };
    Ok(Plan { route, path_and_query, identity, rate_limit: decision })
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// API.md's 404: `{"error":"Route not found","path":…}` (the path truncated).
pub(crate) fn route_not_found(path: &str) -> Response {
    let path: String = path.chars().take(200).collect();
    (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"error": "Route not found", "path": path}))).into_response()
}

/// Applies one limit. A limiter that cannot answer fails open or closed as the route says.
async fn enforce(
    state: &GatewayState,
    ctx: &ProxyCtx,
    class: &str,
    key: &str,
    quota: Quota,
    fail_closed: bool,
) -> Result<Option<Decision>, Response> {
    let limiter = state.limiter();
    let result = match limiter.check_now(class, key, quota) {
        Some(result) => result,
        None => limiter.check(class, key, quota).await,
    };
    let metrics = state.metrics();
    match result {
        Ok(d @ Decision::Allowed { .. }) => {
            metrics.rate_limit(class, RateLimitOutcome::Allowed);
            Ok(Some(d))
        }
        Ok(d @ Decision::Limited { retry_after, .. }) => {
            metrics.rate_limit(class, RateLimitOutcome::Limited);
            tracing::info!(request_id = %ctx.request_id, class, "rate limited");
            let mut response = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded")
                .with_hint(format!("Too many requests; retry in {} s", ceil_secs(retry_after).max(1)))
                .into_response();
            add_rate_limit_headers(response.headers_mut(), &d);
            Err(response)
        }
        Err(e) if fail_closed => {
            metrics.rate_limit(class, RateLimitOutcome::ErrorFailClosed);
            tracing::error!(request_id = %ctx.request_id, class, error = %e, "rate limiter unavailable; failing closed");
            Err(ApiError::unavailable("rate limiter").into_response())
        }
        Err(e) => {
            metrics.rate_limit(class, RateLimitOutcome::ErrorFailOpen);
            tracing::warn!(request_id = %ctx.request_id, class, error = %e, "rate limiter unavailable; failing open");
            Ok(None)
        }
    }
}

/// `RateLimit-*` (and, when limited, `Retry-After`) headers of a decision:
/// the values of [`Decision::headers`], formatted straight into header values.
fn add_rate_limit_headers(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert(RATELIMIT_LIMIT, number_value(decision.limit().into()));
    headers.insert(RATELIMIT_REMAINING, number_value(decision.remaining().into()));
    headers.insert(RATELIMIT_RESET, number_value(ceil_secs(decision.reset_after())));
    if let Some(retry_after) = decision.retry_after() {
        headers.insert(header::RETRY_AFTER, number_value(ceil_secs(retry_after)));
    }
}

/// Numbers below this have a ready header value ([`number_value`]).
const SMALL_NUMBERS: u64 = 1024;

/// How many larger numbers each thread keeps ready ([`number_value`]).
const RECENT_LARGE: usize = 3;

/// `n` as a header value. The rate-limit headers of every proxied response
/// are numbers (a limit, what is left of it, seconds to a reset), and so is
/// the identity assertion's timestamp; `HeaderValue::from(u64)` allocates
/// each one, so values below [`SMALL_NUMBERS`] are made once, as static
/// strings (leaked on purpose: 1024 short strings, once per process), and
/// cloned for free; the [`RECENT_LARGE`] larger values last used on a
/// thread are kept for its next requests, so the timestamp (the same for a
/// second) and a large limit (the same on every response of a quota) are
/// hits even when the remaining quota, large too, changes every request:
/// the least recently used value is the one replaced.
fn number_value(n: u64) -> HeaderValue {
    static READY: std::sync::LazyLock<Vec<HeaderValue>> = std::sync::LazyLock::new(|| {
        (0..SMALL_NUMBERS).map(|n| HeaderValue::from_static(String::leak(n.to_string()))).collect()
    });
    /// Each slot: the number, its value, and when it was last used (a
    /// per-thread count of lookups).
    type Recent = [(u64, HeaderValue, u64); RECENT_LARGE];
    thread_local! {
        static RECENT: std::cell::RefCell<(Recent, u64)> = const {
            std::cell::RefCell::new(([const { (0, HeaderValue::from_static("0"), 0) }; RECENT_LARGE], 0))
        };
    }
    if let Some(ready) = usize::try_from(n).ok().and_then(|i| READY.get(i)) {
        return ready.clone();
    }
    RECENT.with(|recent| {
        let (slots, clock) = &mut *recent.borrow_mut();
        *clock += 1;
        let slot = match slots.iter().position(|slot| slot.0 == n) {
            Some(hit) => &mut slots[hit],
            None => {
                let oldest = (0..RECENT_LARGE).min_by_key(|&i| slots[i].2).unwrap_or_default();
                slots[oldest] = (n, HeaderValue::from(n), 0);
                &mut slots[oldest]
            }
        };
        slot.2 = *clock;
        slot.1.clone()
    })
}

/// The access token of a protected route, with the seed's messages.
async fn authenticate(
    state: &GatewayState,
    ctx: &ProxyCtx,
    headers: &HeaderMap,
) -> Result<Arc<VerifiedToken>, Response> {
    let metrics = state.metrics();
    let refused = || ApiError::unauthorized("Invalid or expired token").into_response();
    let token = state.keys().verify_authorization(headers.get(header::AUTHORIZATION)).await.map_err(|e| match e {
        AuthorizationError::Bearer(BearerError::Missing) => {
            metrics.token_failure(TokenFailure::Missing);
            ApiError::unauthorized("Authorization header missing").into_response()
        }
        AuthorizationError::Bearer(BearerError::Malformed) => {
            metrics.token_failure(TokenFailure::MalformedHeader);
            ApiError::unauthorized("Invalid authorization header format. Expected: Bearer <token>").into_response()
        }
        AuthorizationError::Token(reason) => {
            metrics.token_failure(TokenFailure::Invalid(reason));
            tracing::info!(request_id = %ctx.request_id, reason = reason.reason(), "access token refused");
            refused()
        }
    })?;
    let sid = &token.claims.sid;
    if let Some(redis) = state.redis_revocations()
        && redis.is_revoked(sid).await == Some(true)
    {
        tracing::info!(request_id = %ctx.request_id, reason = "session_revoked", source = "redis", "access token refused");
        metrics.token_failure(TokenFailure::Revoked);
        return Err(refused());
    }
    if let Some(view) = state.revocation() {
        if !view.is_fresh() {
            if view.fail_open() {
                tracing::warn!(request_id = %ctx.request_id, "revocation view is stale; serving anyway (fail open)");
            } else {
                tracing::error!(
                    request_id = %ctx.request_id,
                    "revocation view is stale; refusing session tokens (fail closed)"
                );
                metrics.token_failure(TokenFailure::RevocationStale);
                return Err(ApiError::unavailable("revocation feed").into_response());
            }
        }
        if view.is_revoked(sid) {
            tracing::info!(request_id = %ctx.request_id, reason = "session_revoked", "access token refused");
            metrics.token_failure(TokenFailure::Revoked);
            return Err(refused());
        }
    }
    Ok(token)
}

/// Signed double submit bound to the session, plus Fetch Metadata and Origin.
fn check_csrf(state: &GatewayState, headers: &HeaderMap, session_id: &str) -> Result<(), Response> {
    let forbidden = |reason: CsrfFailure, error: &'static str, hint: &'static str| {
        state.metrics().csrf_failure(reason);
        ApiError::forbidden(error).with_hint(hint).into_response()
    };
    if headers.get(SEC_FETCH_SITE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site")) {
        return Err(forbidden(
            CsrfFailure::CrossSite,
            "Cross-site request refused",
            "State-changing requests must come from an allowed origin",
        ));
    }
    // A page the gateway served itself (the demo page at `/`) is allowed
    // whatever host name it was reached by: the browser says so with
    // `Sec-Fetch-Site: same-origin`, which no page's script can set.
    let same_origin = headers.get(SEC_FETCH_SITE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"same-origin"));
    if let Some(origin) = headers.get(header::ORIGIN)
        && !same_origin
    {
        let allowed = origin.to_str().is_ok_and(|o| state.config().cors_origins.iter().any(|a| a == o));
        if !allowed {
            return Err(forbidden(
                CsrfFailure::Origin,
                "Origin not allowed",
                "State-changing requests must come from an allowed origin",
            ));
        }
    }
    let Some(header_token) = headers.get(X_CSRF_TOKEN).and_then(|v| v.to_str().ok()) else {
        return Err(forbidden(
            CsrfFailure::MissingHeader,
            "CSRF token missing in header",
            "Send the csrf_token from the login response in the X-CSRF-Token header",
        ));
    };
    let Some(cookie_token) = cookie_value(headers, CSRF_COOKIE) else {
        return Err(forbidden(
            CsrfFailure::MissingCookie,
            "CSRF token missing in cookie",
            "Send the csrf_token cookie set at login with the request",
        ));
    };
    if !tokens::csrf::tokens_equal(header_token, &cookie_token) {
        return Err(forbidden(
            CsrfFailure::Mismatch,
            "CSRF token mismatch",
            "The X-CSRF-Token header must equal the csrf_token cookie",
        ));
    }
    if !state.config().csrf_key.verify(session_id, header_token) {
        return Err(forbidden(
            CsrfFailure::WrongSession,
            "CSRF token mismatch",
            "The CSRF token does not belong to this session; refresh it",
        ));
    }
    Ok(())
}

/// What phase 2 makes of a request: the client's request as it arrived
/// (its header map untouched) and what the gateway changes, applied as the
/// upstream head is encoded ([`crate::upstream::Forwarded`]).
struct UpstreamRequest {
    parts: Parts,
    /// The origin form, `/path?query`, as signed.
    target: String,
    /// The route's `Host`, or `None` for the upstream's authority.
    host: Option<HeaderValue>,
    /// Which of the client's fields are forwarded.
    filter: ForwardFilter,
    /// The gateway's own fields: the request id, `X-Forwarded-*`, and the
    /// signed identity.
    added: Vec<(HeaderName, HeaderValue)>,
    body: Body,
}

/// Phase 2.
fn rewrite_request(
    state: &GatewayState,
    ctx: &ProxyCtx,
    parts: Parts,
    body: Body,
    plan: &mut Plan<'_>,
) -> Result<UpstreamRequest, Response> {
    let config = state.config();
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large").into_response();
    let headers = &parts.headers;
    // A declared `Content-Length` over the cap is refused before any of the
    // body is read. The server framed the body by that length (and refused
    // lengths that are invalid or disagree), so it is the body's size hint:
    // not parsed again here.
    if body.size_hint().lower() > config.body_limit as u64 {
        return Err(too_large());
    }
    // The origin form goes into the request line as is: the server parsed it
    // as a URI and the path passed `canonical_path`, but the line must not
    // be splittable whatever those allow.
    if plan.path_and_query.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(ApiError::bad_request("Invalid path").into_response());
    }
    let filter = ForwardFilter::new(headers, plan.route.forward_credentials);
    let mut added = Vec::with_capacity(10);
    crate::request_id::forwarded_fields(headers, &ctx.request_id, &mut added);
    let forwarded_for = match ctx.client_ip {
        IpAddr::V4(v4) => HeaderValue::from_str(crate::rate_limit::ipv4_text(v4).as_str()),
        IpAddr::V6(v6) => HeaderValue::try_from(v6.to_string()),
    };
    if let Ok(v) = forwarded_for {
        added.push((X_FORWARDED_FOR, v));
    }
    let proto = if parts.extensions.get::<common_http::serve::ServedOverTls>().is_some() { "https" } else { "http" };
    added.push((X_FORWARDED_PROTO, HeaderValue::from_static(proto)));
    if let Some(host) = headers.get(header::HOST) {
        added.push((X_FORWARDED_HOST, host.clone()));
    }
    if let Some(identity) = &plan.identity {
        // Whole seconds, so the coarse clock's tick is precision enough.
        let timestamp = crate::clock::unix_seconds();
        let assertion = Assertion {
            timestamp,
            method: parts.method.as_str(),
            path_and_query: &plan.path_and_query,
            request_id: ctx.request_id.as_str(),
            user_id: &identity.claims.sub,
            email: &identity.claims.email,
        };
        let signature = state.signer().sign(&assertion);
        if let Some(v) = &identity.user_id_header {
            added.push((X_USER_ID, v.clone()));
        }
        if let Some(v) = &identity.email_header {
            added.push((X_USER_EMAIL, v.clone()));
        }
        // Never negative (a clock before 1970 reads as 0).
        added.push((X_GATEWAY_TIMESTAMP, number_value(timestamp.unsigned_abs())));
        if let Ok(v) = HeaderValue::try_from(signature) {
            added.push((X_GATEWAY_SIGNATURE, v));
        }
    }
    // The server never yields more body than a declared Content-Length (checked
    // above), and a request without one or Transfer-Encoding has no body; only
    // a chunked body needs counting on its way through.
    let bounded = body.size_hint().upper().is_some_and(|n| n <= config.body_limit as u64);
    let body = if bounded { body } else { Body::new(http_body_util::Limited::new(body, config.body_limit)) };
    let target = std::mem::take(&mut plan.path_and_query);
    Ok(UpstreamRequest { parts, target, host: plan.route.host.clone(), filter, added, body })
}

/// Phase 3.
async fn send_upstream(
    state: &GatewayState,
    ctx: &ProxyCtx,
    plan: &Plan<'_>,
    request: UpstreamRequest,
) -> Result<hyper::Response<UpstreamBody>, Response> {
    let timeout = state.config().response_timeout;
    let Some(pool) = state.route_pool(plan.route) else {
        // Every route's upstream gets a pool when the state is built.
        tracing::error!(request_id = %ctx.request_id, upstream = %plan.route.name, "no connection pool for the route");
        return Err(ApiError::new(StatusCode::BAD_GATEWAY, "Service unavailable").into_response());
    };
    let series = state.metrics().upstream(plan.route);
    let count_failure = |kind| {
        if let Some(series) = series {
            series.failed(kind);
        }
    };
    // One clock read for both the upstream latency and the deadline. (On a
    // paused tokio clock, in tests, the latency then reads as 0.)
    let started = tokio::time::Instant::now();
    let UpstreamRequest { parts, target, host, filter, added, body } = request;
    let forwarded = Forwarded {
        method: &parts.method,
        target: &target,
        host: host.as_ref(),
        headers: &parts.headers,
        keep: |name: &HeaderName| filter.forwards(name),
        added: &added,
    };
    match pool.forward(forwarded, body, Some(started + timeout)).await {
        Err(UpstreamError::Timeout) => {
            count_failure(UpstreamErrorKind::Timeout);
            tracing::warn!(request_id = %ctx.request_id, upstream = %plan.route.name, "upstream timed out");
            Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, "Upstream timeout").into_response())
        }
        Err(e) if is_body_limit(&e) => {
            Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large").into_response())
        }
        Err(e) => {
            count_failure(UpstreamErrorKind::of(&e));
            tracing::warn!(
                request_id = %ctx.request_id,
                upstream = %plan.route.name,
                error = %error_chain(&e),
                "upstream unavailable"
            );
            Err(ApiError::new(StatusCode::BAD_GATEWAY, "Service unavailable").into_response())
        }
        Ok(response) => {
            if let Some(series) = series {
                series.responded(started.into_std());
            }
            Ok(response)
        }
    }
}

fn is_body_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = err.source();
    }
    false
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Phase 4. What an upstream may not say was left out as its head was
/// parsed (hop-by-hop fields, `Server`, its own CORS fields: see
/// [`crate::http1`]); `nosniff` and the CORS fields are the edge's to add
/// ([`crate::edge`]), on every response. Here: `Cache-Control: no-store` on
/// routes that carry credentials, and the rate-limit fields.
fn rewrite_response(plan: &Plan<'_>, response: hyper::Response<UpstreamBody>) -> Response {
    let (mut parts, body) = response.into_parts();
    let headers = &mut parts.headers;
    if plan.route.forward_credentials {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Some(decision) = &plan.rate_limit {
        add_rate_limit_headers(headers, decision);
    }
    Response::from_parts(parts, Body::new(body))
}

/// The public auth routes that take a password, a code or a mailed token, or
/// send mail: each gets the tighter per-IP `auth_ip` limit on top of the
/// general one, so guessing and mailbox flooding are slow from one address.
pub fn is_credential_path(forwarded: &str) -> bool {
    matches!(
        forwarded,
        "/auth/login"
            | "/auth/register"
            | "/auth/refresh"
            | "/auth/mfa/verify"
            | "/auth/password/forgot"
            | "/auth/password/reset"
            | "/auth/email/verify"
            | "/auth/email/resend"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_values_read_as_the_number_ready_or_not() {
        // Hits, misses and replacements of the recent slots: a timestamp, a
        // limit and a falling remaining quota, interleaved as requests make them.
        let mut repeats = vec![SMALL_NUMBERS, SMALL_NUMBERS, 999_998, 999_999, 999_998, 1_795_918_505, 1_795_918_505];
        for remaining in (999_000..999_010).rev() {
            repeats.extend([1_795_918_505, 1_000_000, remaining]);
        }
        for n in [0, 1, 59, SMALL_NUMBERS - 1].into_iter().chain(repeats).chain([u64::MAX]) {
            assert_eq!(number_value(n), HeaderValue::from(n), "{n}");
        }
    }
}
