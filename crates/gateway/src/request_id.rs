//! A new request id for every request, and the one access-log line; both
//! applied by the gateway's outermost service ([`crate::edge`]).
//!
//! # The id
//!
//! API.md: the gateway mints `X-Request-ID` itself (a UUID), whatever the
//! client sent, because downstream replay caches refuse a request id seen
//! twice: a client-chosen id would let a client get its own requests
//! refused. A client's well-formed id travels on as `X-Client-Request-ID`.
//!
//! The id is signed into the identity assertion and keys the downstream
//! replay cache, so it must be unique across every gateway instance and
//! restart: it is a random (version 4) UUID, 122 bits from the operating
//! system's CSPRNG, exactly as `uuid::Uuid::new_v4` makes one. Only the
//! syscall is amortised: each thread fetches 4 KiB of randomness at once and
//! hands out 16 bytes per id, so one `getrandom(2)` serves 256 requests
//! instead of one (it was a syscall on every request). Each byte is used for
//! one id only. Ids stay unguessable, so a client learns nothing about other
//! requests (or the gateway's traffic) from its own.
//!
//! # The access log
//!
//! One line per request at `info`, target `gatehouse::access`: request id,
//! method, path without the query (queries can carry tokens), status,
//! latency, client address, and for proxied requests the upstream and the
//! user id ([`AccessLogFields`], left by the proxy handler in the response
//! extensions). Everything it needs is computed only when that line is
//! enabled, so with the access log filtered out a request pays one cached
//! level check. There is no per-request span: creating, entering and
//! closing one on every poll cost more than the line itself; the gateway's
//! other per-request log lines carry `request_id` as a field instead.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request};
use axum::response::Response;
use common_http::client_ip::{Cidr, client_ip};
use common_http::request_id::{CLIENT_REQUEST_ID_HEADER, REQUEST_ID_HEADER, is_valid_request_id};

/// The request id the gateway minted, in the request's extensions: the
/// `X-Request-ID` value, cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRequestId(HeaderValue);

impl GatewayRequestId {
    /// A new random (version 4) UUID.
    pub fn mint() -> Self {
        let uuid = uuid::Builder::from_random_bytes(random_bytes()).into_uuid();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = uuid.hyphenated().encode_lower(&mut text);
        // A hyphenated UUID is always a valid header value.
        Self(HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid")))
    }

    /// The id as the header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

impl std::fmt::Display for GatewayRequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bytes fetched from the OS per `getrandom(2)`; 256 ids.
const POOL_BYTES: usize = 4096;

/// Per-thread randomness not yet handed out.
struct RandomPool {
    bytes: [u8; POOL_BYTES],
    /// `bytes[used..]` has not been handed out.
    used: usize,
}

thread_local! {
    static POOL: RefCell<RandomPool> = const { RefCell::new(RandomPool { bytes: [0; POOL_BYTES], used: POOL_BYTES }) };
}

/// 16 bytes from the OS CSPRNG, through the thread's pool.
fn random_bytes() -> [u8; 16] {
    POOL.with_borrow_mut(|pool| {
        if pool.used + 16 > POOL_BYTES {
            if getrandom::fill(&mut pool.bytes).is_err() {
                // Never seen in practice; `new_v4` asks the OS directly (and
                // panics if the OS has no randomness at all, as before).
                return uuid::Uuid::new_v4().into_bytes();
            }
            pool.used = 0;
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&pool.bytes[pool.used..pool.used + 16]);
        // Handed out once: never reused for another id.
        pool.bytes[pool.used..pool.used + 16].fill(0);
        pool.used += 16;
        out
    })
}

/// What the proxy handler tells the access log, in the response's extensions.
#[derive(Debug, Clone)]
pub struct AccessLogFields {
    /// The route's name (`users`, `auth`…), once routed.
    pub upstream: Option<Arc<str>>,
    /// The authenticated user, on protected routes.
    pub user_id: Option<Arc<str>>,
}

/// Whether the access-log line is enabled (a cached callsite check).
pub fn access_log_enabled() -> bool {
    tracing::enabled!(target: "gatehouse::access", tracing::Level::INFO)
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
const X_CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static(CLIENT_REQUEST_ID_HEADER);

/// `request` with its id in its extensions, for the routed stack (whose
/// proxy fallback finds it there; the direct path hands the id over as an
/// argument instead). The request's own fields are not edited: what goes
/// upstream is decided as the upstream head is encoded
/// ([`is_request_id_field`], [`forwarded_fields`]).
pub fn assign(mut request: Request<Body>, id: GatewayRequestId) -> Request<Body> {
    request.extensions_mut().insert(id);
    request
}

/// Whether `name` is one of the request id fields, which the gateway sets
/// itself on a forwarded request (a client's are never forwarded as sent).
pub fn is_request_id_field(name: &HeaderName) -> bool {
    name == X_REQUEST_ID || name == X_CLIENT_REQUEST_ID
}

/// The request id fields of a forwarded request, appended to `added`:
/// `X-Request-ID` is the gateway's `id`, and a client's well-formed
/// `X-Request-ID` travels on as `X-Client-Request-ID` (replacing any sent
/// under that name).
pub fn forwarded_fields(headers: &HeaderMap, id: &GatewayRequestId, added: &mut Vec<(HeaderName, HeaderValue)>) {
    added.push((X_REQUEST_ID, id.header_value().clone()));
    if let Some(v) = headers.get(&X_REQUEST_ID).filter(|v| v.to_str().is_ok_and(is_valid_request_id)) {
        added.push((X_CLIENT_REQUEST_ID, v.clone()));
    }
}

/// Echoes the request id in the response.
pub fn echo(response: &mut Response, id: GatewayRequestId) {
    response.headers_mut().insert(X_REQUEST_ID, id.0);
}

/// What the access line needs from the request, taken before it moves on;
/// only built when the line is enabled.
pub struct AccessStart {
    started: Instant,
    method: axum::http::Method,
    path: String,
    client_ip: Option<std::net::IpAddr>,
}

impl AccessStart {
    /// `None` when the access log is filtered out.
    pub fn begin(request: &Request<Body>, trusted_proxies: &[Cidr]) -> Option<Self> {
        access_log_enabled().then(|| Self {
            started: Instant::now(),
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            client_ip: request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| client_ip(peer.ip(), request.headers(), trusted_proxies)),
        })
    }

    /// Writes the request's line.
    pub fn finish(self, id: &GatewayRequestId, response: &Response) {
        let fields = response.extensions().get::<AccessLogFields>();
        tracing::info!(
            target: "gatehouse::access",
            request_id = %id,
            method = %self.method,
            path = %self.path,
            status = response.status().as_u16(),
            latency_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            client_ip = self.client_ip.map(tracing::field::display),
            upstream = fields.and_then(|f| f.upstream.as_deref()),
            user_id = fields.and_then(|f| f.user_id.as_deref()),
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_are_distinct_version_4_uuids() {
        let mut seen = std::collections::HashSet::new();
        // More than one pool's worth, so the refill path runs too.
        for _ in 0..1000 {
            let id = GatewayRequestId::mint();
            let uuid = uuid::Uuid::parse_str(id.as_str()).unwrap();
            assert_eq!(uuid.get_version(), Some(uuid::Version::Random), "{id}");
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert!(is_valid_request_id(id.as_str()));
            assert!(seen.insert(id.as_str().to_owned()), "duplicate {id}");
        }
    }

    #[test]
    fn ids_minted_on_different_threads_differ() {
        let ids: Vec<String> = (0..4)
            .map(|_| std::thread::spawn(|| GatewayRequestId::mint().as_str().to_owned()))
            .map(|t| t.join().unwrap())
            .collect();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
    }
}
