//! The proxy handler, as named phases in a fixed order (pingora's model):
//!
//! 1. [`request_filter`]: framing and method checks, path canonicalisation,
//!    routing, per-IP rate limits, and on protected routes the access
//!    token, CSRF and the per-user limit. It may answer the request itself.
//! 2. [`rewrite_request`]: strip hop-by-hop and spoofable headers, drop
//!    credentials the upstream must not see, add `X-Forwarded-*`, sign the
//!    identity assertion, cap the body.
//! 3. [`send_upstream`]: the pooled client, with a response timeout;
//!    failures are classified by origin (502 unreachable, 504 too slow).
//! 4. [`rewrite_response`]: hop-by-hop and upstream CORS headers out,
//!    security headers in.
//! 5. [`log_request`]: one access-log line (no tokens, no query).
//!
//! They share a [`ProxyCtx`].

// Phases reject with a ready `Response`, as axum handlers do; the large Err
// variant is on the rejection path only.
#![allow(clippy::result_large_err)]

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common_http::ApiError;
use common_http::cookies::{CSRF_COOKIE, cookie_value};
use common_http::request_id::RequestId;
use tokens::assertion::Assertion;
use tokens::{BearerError, parse_bearer};

use crate::GatewayState;
use crate::path::canonical_path;
use crate::proxy::{remove_hop_by_hop, strip_identity_headers};
use crate::rate_limit::{Decision, Quota, ceil_secs, ip_key};
use crate::routes::Route;
use common_http::client_ip::client_ip;

/// What the phases learn about one request.
pub struct ProxyCtx {
    pub request_id: String,
    pub method: Method,
    pub client_ip: IpAddr,
    pub route: Option<String>,
    pub user_id: Option<String>,
    pub started: Instant,
}

/// The caller of a protected route, from a verified access token.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: String,
    pub email: String,
    pub session_id: String,
}

/// Where `request_filter` decided the request goes.
struct Plan<'a> {
    route: &'a Route,
    /// The canonical path minus the stripped prefix, plus the query.
    path_and_query: String,
    identity: Option<Identity>,
    rate_limit: Option<Decision>,
}

/// The fallback handler: every path but `/health` and `/ready`.
pub async fn proxy_request(
    State(state): State<GatewayState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let mut ctx = ProxyCtx {
        request_id,
        method: parts.method.clone(),
        client_ip: client_ip(peer.ip(), &parts.headers, &state.config().trusted_proxies),
        route: None,
        user_id: None,
        started: Instant::now(),
    };
    let response = match request_filter(&state, &mut ctx, &parts).await {
        Err(rejection) => rejection,
        Ok(plan) => match rewrite_request(&state, &ctx, parts, body, &plan) {
            Err(rejection) => rejection,
            Ok(upstream_request) => match send_upstream(&state, &plan, upstream_request).await {
                Err(rejection) => rejection,
                Ok(upstream_response) => rewrite_response(&plan, upstream_response),
            },
        },
    };
    log_request(&ctx, &response);
    response
}

const METHOD_OVERRIDE_HEADERS: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];

/// Phase 1. Answers the request itself when a check fails.
async fn request_filter<'a>(state: &'a GatewayState, ctx: &mut ProxyCtx, parts: &Parts) -> Result<Plan<'a>, Response> {
    let config = state.config();
    if parts.method == Method::TRACE || parts.method == Method::CONNECT {
        return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed").into_response());
    }
    if METHOD_OVERRIDE_HEADERS.iter().any(|h| parts.headers.contains_key(*h)) {
        return Err(ApiError::bad_request("Method override headers are not allowed").into_response());
    }
    // Request smuggling guard (RFC 9112 §6.3): never forward an ambiguous frame.
    if parts.headers.contains_key(header::CONTENT_LENGTH) && parts.headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(ApiError::bad_request("Both Content-Length and Transfer-Encoding are set").into_response());
    }
    let path = canonical_path(parts.uri.path())
        .map_err(|e| ApiError::bad_request("Invalid path").with_hint(e.to_string()).into_response())?;
    let Some((route, forwarded)) = config.routes.find(path) else {
        return Err(route_not_found(path));
    };
    ctx.route = Some(route.name.clone());
    if !route.methods.contains(&parts.method) {
        return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed").into_response());
    }

    let ip = ip_key(ctx.client_ip);
    let fail_closed = route.rate_limit_fail_closed;
    let mut decision = enforce(state, "ip", &ip, config.ip_quota, fail_closed).await?;
    if route.public && matches!(forwarded, "/auth/login" | "/auth/register" | "/auth/refresh") {
        decision = enforce(state, "auth_ip", &ip, config.auth_ip_quota, fail_closed).await?.or(decision);
    }

    let identity = if route.public {
        None
    } else {
        let identity = authenticate(state, &parts.headers).await?;
        ctx.user_id = Some(identity.user_id.clone());
        if !is_safe(&parts.method) {
            check_csrf(state, &parts.headers, &identity)?;
        }
        decision = enforce(state, "user", &identity.user_id, config.user_quota, fail_closed).await?.or(decision);
        Some(identity)
    };
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{forwarded}?{q}"),
        None => forwarded.to_owned(),
    };
    Ok(Plan { route, path_and_query, identity, rate_limit: decision })
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// API.md's 404: `{"error":"Route not found","path":…}` (the path truncated).
fn route_not_found(path: &str) -> Response {
    let path: String = path.chars().take(200).collect();
    (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"error": "Route not found", "path": path}))).into_response()
}

/// Applies one limit. A limiter that cannot answer fails open or closed as the route says.
async fn enforce(
    state: &GatewayState,
    class: &str,
    key: &str,
    quota: Quota,
    fail_closed: bool,
) -> Result<Option<Decision>, Response> {
    match state.limiter().check(class, key, quota).await {
        Ok(d @ Decision::Allowed { .. }) => Ok(Some(d)),
        Ok(d @ Decision::Limited { retry_after, .. }) => {
            tracing::info!(class, "rate limited");
            let mut response = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded")
                .with_hint(format!("Too many requests; retry in {} s", ceil_secs(retry_after).max(1)))
                .into_response();
            add_rate_limit_headers(response.headers_mut(), &d);
            Err(response)
        }
        Err(e) if fail_closed => {
            tracing::error!(class, error = %e, "rate limiter unavailable; failing closed");
            Err(ApiError::unavailable("rate limiter").into_response())
        }
        Err(e) => {
            tracing::warn!(class, error = %e, "rate limiter unavailable; failing open");
            Ok(None)
        }
    }
}

/// `RateLimit-*` (and, when limited, `Retry-After`) headers of a decision.
fn add_rate_limit_headers(headers: &mut axum::http::HeaderMap, decision: &Decision) {
    for (name, value) in decision.headers() {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
}

/// The access token of a protected route, with the seed's messages.
async fn authenticate(state: &GatewayState, headers: &axum::http::HeaderMap) -> Result<Identity, Response> {
    let token = parse_bearer(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())).map_err(|e| {
        let message = match e {
            BearerError::Missing => "Authorization header missing",
            BearerError::Malformed => "Invalid authorization header format. Expected: Bearer <token>",
        };
        ApiError::unauthorized(message).into_response()
    })?;
    let claims = state.keys().verify(token).await.map_err(|reason| {
        tracing::info!(reason = reason.reason(), "access token refused");
        ApiError::unauthorized("Invalid or expired token").into_response()
    })?;
    if let Some(view) = state.revocation() {
        if !view.is_fresh() {
            if view.fail_open() {
                tracing::warn!("revocation view is stale; serving anyway (fail open)");
            } else {
                tracing::error!("revocation view is stale; refusing session tokens (fail closed)");
                return Err(ApiError::unavailable("revocation feed").into_response());
            }
        }
        if view.is_revoked(&claims.sid) {
            tracing::info!(reason = "session_revoked", "access token refused");
            return Err(ApiError::unauthorized("Invalid or expired token").into_response());
        }
    }
    Ok(Identity { user_id: claims.sub, email: claims.email, session_id: claims.sid })
}

/// Signed double submit bound to the session, plus Fetch Metadata and Origin.
fn check_csrf(state: &GatewayState, headers: &axum::http::HeaderMap, identity: &Identity) -> Result<(), Response> {
    let forbidden =
        |error: &'static str, hint: &'static str| ApiError::forbidden(error).with_hint(hint).into_response();
    if headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site")) {
        return Err(forbidden(
            "Cross-site request refused",
            "State-changing requests must come from an allowed origin",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let allowed = origin.to_str().is_ok_and(|o| state.config().cors_origins.iter().any(|a| a == o));
        if !allowed {
            return Err(forbidden("Origin not allowed", "State-changing requests must come from an allowed origin"));
        }
    }
    let Some(header_token) = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()) else {
        return Err(forbidden(
            "CSRF token missing in header",
            "Send the csrf_token from the login response in the X-CSRF-Token header",
        ));
    };
    let Some(cookie_token) = cookie_value(headers, CSRF_COOKIE) else {
        return Err(forbidden(
            "CSRF token missing in cookie",
            "Send the csrf_token cookie set at login with the request",
        ));
    };
    if !tokens::csrf::tokens_equal(header_token, &cookie_token) {
        return Err(forbidden("CSRF token mismatch", "The X-CSRF-Token header must equal the csrf_token cookie"));
    }
    if !state.config().csrf_key.verify(&identity.session_id, header_token) {
        return Err(forbidden("CSRF token mismatch", "The CSRF token does not belong to this session; refresh it"));
    }
    Ok(())
}

/// Phase 2.
fn rewrite_request(
    state: &GatewayState,
    ctx: &ProxyCtx,
    mut parts: Parts,
    body: Body,
    plan: &Plan<'_>,
) -> Result<axum::http::Request<Body>, Response> {
    let config = state.config();
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large").into_response();
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > config.body_limit as u64) {
        return Err(too_large());
    }
    let original_host = parts.headers.get(header::HOST).cloned();
    let headers = &mut parts.headers;
    remove_hop_by_hop(headers);
    strip_identity_headers(headers);
    headers.remove(header::HOST);
    if !plan.route.forward_credentials {
        headers.remove(header::AUTHORIZATION);
        headers.remove(header::COOKIE);
    }
    let set = |headers: &mut axum::http::HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    set(headers, "x-forwarded-for", &ctx.client_ip.to_string());
    set(headers, "x-forwarded-proto", "http");
    if let Some(host) = original_host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    if let Some(identity) = &plan.identity {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or_default());
        let assertion = Assertion {
            timestamp,
            method: parts.method.as_str(),
            path_and_query: &plan.path_and_query,
            request_id: &ctx.request_id,
            user_id: &identity.user_id,
            email: &identity.email,
        };
        let signature = assertion.sign(&config.gateway_secrets);
        set(headers, "x-user-id", &identity.user_id);
        set(headers, "x-user-email", &identity.email);
        set(headers, "x-gateway-timestamp", &timestamp.to_string());
        set(headers, "x-gateway-signature", &signature);
    }
    let upstream = &plan.route.upstream;
    let uri = Uri::builder()
        .scheme(upstream.scheme_str().unwrap_or("http"))
        .authority(upstream.authority().map(|a| a.as_str()).unwrap_or_default())
        .path_and_query(plan.path_and_query.as_str())
        .build()
        .map_err(|_| ApiError::bad_request("Invalid path").into_response())?;
    parts.uri = uri;
    parts.version = axum::http::Version::HTTP_11;
    let body = Body::new(http_body_util::Limited::new(body, config.body_limit));
    Ok(axum::http::Request::from_parts(parts, body))
}

/// Phase 3.
async fn send_upstream(
    state: &GatewayState,
    plan: &Plan<'_>,
    request: axum::http::Request<Body>,
) -> Result<hyper::Response<hyper::body::Incoming>, Response> {
    let timeout = state.config().response_timeout;
    match tokio::time::timeout(timeout, state.client().request(request)).await {
        Err(_) => {
            tracing::warn!(upstream = %plan.route.name, "upstream timed out");
            Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, "Upstream timeout").into_response())
        }
        Ok(Err(e)) if is_body_limit(&e) => {
            Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large").into_response())
        }
        Ok(Err(e)) => {
            tracing::warn!(upstream = %plan.route.name, error = %error_chain(&e), "upstream unavailable");
            Err(ApiError::new(StatusCode::BAD_GATEWAY, "Service unavailable").into_response())
        }
        Ok(Ok(response)) => Ok(response),
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

/// Phase 4.
fn rewrite_response(plan: &Plan<'_>, response: hyper::Response<hyper::body::Incoming>) -> Response {
    let (mut parts, body) = response.into_parts();
    let headers = &mut parts.headers;
    remove_hop_by_hop(headers);
    headers.remove(header::SERVER);
    // CORS is decided here, at the edge, once (SEED-FLAWS F22).
    let upstream_cors: Vec<HeaderName> =
        headers.keys().filter(|n| n.as_str().starts_with("access-control-")).cloned().collect();
    for name in upstream_cors {
        headers.remove(name);
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if plan.route.forward_credentials {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Some(decision) = &plan.rate_limit {
        add_rate_limit_headers(headers, decision);
    }
    Response::from_parts(parts, Body::new(body))
}

/// Phase 5.
fn log_request(ctx: &ProxyCtx, response: &Response) {
    tracing::info!(
        target: "gatehouse::access",
        method = %ctx.method,
        upstream = ctx.route.as_deref().unwrap_or("-"),
        status = response.status().as_u16(),
        latency_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
        client_ip = %ctx.client_ip,
        user_id = ctx.user_id.as_deref().unwrap_or("-"),
        "proxied"
    );
}
