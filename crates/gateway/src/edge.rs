//! The gateway as one service: what every request goes through, outermost
//! first, and a direct path to the proxy for the common case.
//!
//! Every request, in this order:
//!
//! 1. a new request id ([`crate::request_id`]), echoed in the response;
//! 2. panics turned into the JSON 500 (`common_http::error::panic_response`);
//! 3. CORS (preflights answered here, never forwarded; allowed origins get
//!    `Access-Control-Allow-Origin`);
//! 4. `X-Content-Type-Options: nosniff` on the response;
//! 5. `/health`, `/ready`, `/metrics`, the API docs ([`crate::docs`]), the demo page
//!    ([`crate::demo`]), or the proxy ([`crate::phases`]);
//!
//! and then the one access-log line, the request's metrics
//! ([`crate::metrics`]), and, on a request that arrived over
//! TLS (the gateway serving HTTPS itself), [`HSTS`].
//!
//! # Why not an axum `Router` with layers
//!
//! That is how this started, and it is still what serves `/health`, `/ready`,
//! CORS preflights and requests that carry an `Origin`: the `routed` stack.
//! But on the proxy's hot path it cost more than the gateway's own checks
//! (profiled in `benches/stack.rs`: about 1.5 µs per request, of the ~9 µs
//! the gateway then added to a proxied GET): each `Router::layer` call wraps
//! the stack in another boxed service that is cloned for every request, so
//! each request cloned the CORS configuration (its header lists) and
//! allocated a box per layer, and tower-http's CORS layer rebuilds its
//! constant headers (`Vary`, `Access-Control-Expose-Headers`…) into a fresh
//! map on every request, even one without an `Origin`. The routed stack now
//! takes its layers in one `Router::layer` call, boxed once.
//!
//! So [`Gateway`] dispatches itself. A request that is not `OPTIONS`, has no
//! `Origin` header and is not for one of the router's own routes (`/health`,
//! `/ready`, `/metrics`…; what every API client but a browser on another
//! origin sends) goes straight to
//! [`phases::proxy`](crate::phases::proxy), inside the same panic guard, and
//! its response gets exactly the headers the layers would have added: the
//! CORS headers are what tower-http's layer itself answers for such a
//! request, captured once at start-up (`origin_less_cors_headers`), so the
//! two paths cannot drift apart; anything else takes the routed stack. The
//! `tests/gateway.rs` suite runs through both, and a unit test below holds
//! the headers of the two paths equal.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, Request};
use axum::response::Response;
use tower::{Layer as _, Service, ServiceBuilder, ServiceExt as _};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::CorsLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::GatewayState;
use crate::metrics::MethodClass;
use crate::request_id::{self, AccessStart, GatewayRequestId};

/// `Strict-Transport-Security` on every response the gateway sends over
/// HTTPS (never over plain HTTP: RFC 6797 §7.2 forbids it there, and
/// browsers ignore it): browsers then reach this host, and its subdomains,
/// only over HTTPS for two years, the max-age the HSTS preload list asks
/// for. No `preload`: joining that list is the operator's decision, and
/// hard to undo.
pub const HSTS: HeaderValue = HeaderValue::from_static("max-age=63072000; includeSubDomains");

/// The gateway, ready to serve (`common_http::serve::serve_service`) or to
/// call in process (`tower::ServiceExt::oneshot`). Cheap to clone.
#[derive(Clone)]
pub struct Gateway(Arc<Edge>);

struct Edge {
    state: GatewayState,
    /// `/health`, `/ready`, and the proxy as fallback, under the standard
    /// layers: for every request the direct path does not take.
    routed: Router,
    /// What the CORS layer adds to a response to a request without `Origin`
    /// that is not a preflight; `None` sends every request the routed way.
    cors_headers: Option<Vec<(HeaderName, HeaderValue)>>,
}

impl Gateway {
    /// The gateway over `state`; `routed` is its fallback stack and `cors`
    /// the CORS policy both paths apply.
    pub(crate) fn new(state: GatewayState, routed: Router, cors: &CorsLayer) -> Self {
        Self(Arc::new(Edge { state, routed, cors_headers: origin_less_cors_headers(cors) }))
    }
}

/// The standard layers around `router`, outermost first: the metrics label
/// of the router's own routes, panics → JSON 500, CORS, `nosniff`. One
/// `Router::layer` call, so the stack is boxed once.
pub(crate) fn routed(router: Router, cors: CorsLayer) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(axum::middleware::from_fn(crate::metrics::label_local_route))
            .layer(CatchPanicLayer::custom(common_http::error::panic_response))
            .layer(cors)
            .layer(SetResponseHeaderLayer::overriding(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            )),
    )
}

impl<B> Service<Request<B>> for Gateway
where
    B: HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both paths are always ready: the proxy is a function and the routed
        // stack a `Router` (ready by definition), called with `oneshot`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let edge = Arc::clone(&self.0);
        pin_in_place(move || async move { Ok(edge.handle(request.map(Body::new)).await) })
    }
}

/// `Box::pin(make())`, with the box allocated before the future is made.
///
/// The request's future is a few kilobytes (every phase's state, nested),
/// of which making it initialises only the captures. `Box::pin(future)`
/// makes it on the stack and then copies all of it into the new box, one
/// large copy per request; made after the allocation, it is written into
/// the box directly (only the captures are copied).
fn pin_in_place<F: Future + Send + 'static>(
    make: impl FnOnce() -> F,
) -> Pin<Box<dyn Future<Output = F::Output> + Send>> {
    let slot = Box::<F>::new_uninit();
    let future: Pin<Box<F>> = Box::into_pin(Box::write(slot, make()));
    future
}

impl Edge {
    async fn handle(&self, request: Request<Body>) -> Response {
        let started = std::time::Instant::now();
        let method = MethodClass::of(request.method());
        let id = GatewayRequestId::mint();
        let https = request.extensions().get::<common_http::serve::ServedOverTls>().is_some();
        let access = AccessStart::begin(&request, &self.state.config().trusted_proxies);
        let direct = self.cors_headers.as_deref().filter(|_| takes_direct_path(&request));
        let metrics = self.state.metrics();
        let mut response = match direct {
            Some(cors_headers) => {
                let (response, route) = self.proxy_directly(request, id.clone(), cors_headers).await;
                metrics.count_proxied(route.as_ref(), method, response.status(), started);
                response
            }
            // A `Router` is always ready, and its errors are `Infallible`.
            // Its proxy fallback finds the id in the request's extensions.
            None => match self.routed.clone().oneshot(request_id::assign(request, id.clone())).await {
                Ok(response) => {
                    metrics.count_routed(&response, method, started);
                    response
                }
                Err(never) => match never {},
            },
        };
        if let Some(access) = access {
            access.finish(&id, &response);
        }
        request_id::echo(&mut response, id);
        if https {
            response.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, HSTS);
        }
        response
    }

    /// The proxy with what the routed stack's layers would add, in their
    /// order; and the name of the route that took the request.
    async fn proxy_directly(
        &self,
        request: Request<Body>,
        id: GatewayRequestId,
        cors_headers: &[(HeaderName, HeaderValue)],
    ) -> (Response, Option<Arc<str>>) {
        // The panic guard of `CatchPanicLayer`, without its re-boxing of the
        // body: each poll runs under `catch_unwind`; after a panic the future
        // is only dropped, never polled again.
        let mut proxy = std::pin::pin!(crate::phases::proxy(&self.state, request, id));
        let guarded = std::future::poll_fn(|cx| {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| proxy.as_mut().poll(cx))) {
                Ok(Poll::Ready(response)) => Poll::Ready(Ok(response)),
                Ok(Poll::Pending) => Poll::Pending,
                Err(panic) => Poll::Ready(Err(panic)),
            }
        });
        let (mut response, route) = match guarded.await {
            Ok(proxied) => proxied,
            // In the routed stack a panic's 500 passes no layer inside the
            // panic guard, so it gets neither `nosniff` nor CORS headers; nor here.
            Err(panic) => return (common_http::error::panic_response(panic), None),
        };
        add_layer_headers(response.headers_mut(), cors_headers);
        (response, route)
    }
}

/// What the routed stack's `nosniff` and CORS layers add, in their order.
fn add_layer_headers(headers: &mut HeaderMap, cors_headers: &[(HeaderName, HeaderValue)]) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // As tower-http's CORS layer applies them: `Vary` appended to any the
    // response has, the others replacing theirs.
    for (name, value) in cors_headers {
        if name == header::VARY {
            headers.append(name, value.clone());
        } else {
            headers.insert(name, value.clone());
        }
    }
}

/// Whether `request` may skip the routed stack: not a preflight or any other
/// `OPTIONS` (tower-http answers every `OPTIONS` itself), no `Origin` (so
/// CORS adds only its constant headers), and not a route of the router.
fn takes_direct_path(request: &Request<Body>) -> bool {
    request.method() != Method::OPTIONS
        && !request.headers().contains_key(header::ORIGIN)
        && !matches!(request.uri().path(), "/health" | "/ready" | "/metrics")
        && !crate::docs::is_docs_path(request.uri().path())
        && !crate::demo::is_page_path(request.uri().path())
}

/// The headers `cors` adds to the response to a request without `Origin`
/// that is not `OPTIONS`, found by running the layer once on such a request.
/// Those do not depend on the request, so they are the same for all. `None`
/// if the layer did not answer at once (it always does for a fixed origin
/// list): then no request takes the direct path.
fn origin_less_cors_headers(cors: &CorsLayer) -> Option<Vec<(HeaderName, HeaderValue)>> {
    let mut probe = cors
        .clone()
        .layer(tower::service_fn(|_: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::empty())) }));
    let request = Request::get("/").body(Body::empty()).ok()?;
    let mut future = std::pin::pin!(probe.call(request));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let Poll::Ready(Ok(response)) = future.as_mut().poll(&mut cx) else {
        return None;
    };
    Some(response.headers().iter().map(|(name, value)| (name.clone(), value.clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream-like response that already has a `Vary` and a CORS header
    /// of its own, for the layers to merge with.
    fn inner_response() -> Response {
        let mut response = Response::new(Body::empty());
        response.headers_mut().insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("false"));
        response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("other"));
        response
    }

    #[tokio::test]
    async fn the_direct_path_adds_exactly_what_the_layers_add_to_a_request_without_origin() {
        // Arrange
        let cors = crate::cors_layer(&["http://localhost:3000".to_owned()]);
        let router = Router::new().fallback(|| async { inner_response() });
        let request = Request::get("/api/v1/users/profile").body(Body::empty()).unwrap();
        assert!(takes_direct_path(&request));

        // Act
        let via_layers = routed(router, cors.clone()).oneshot(request).await.unwrap();
        let mut direct = inner_response();
        add_layer_headers(direct.headers_mut(), &origin_less_cors_headers(&cors).unwrap());

        // Assert (the router adds `Content-Length` for a body of known size
        // itself; on the direct path the server (`common_http::serve`) writes the same header)
        let mut via_layers = via_layers.headers().clone();
        assert_eq!(via_layers.remove(header::CONTENT_LENGTH), Some(HeaderValue::from_static("0")));
        assert_eq!(direct.headers(), &via_layers);
        assert!(direct.headers().contains_key(header::ACCESS_CONTROL_EXPOSE_HEADERS), "{:?}", direct.headers());
    }

    #[test]
    fn preflights_origins_and_the_router_s_own_routes_take_the_routed_path() {
        let request = |method: Method, path: &str, origin: Option<&str>| {
            let mut request = Request::builder().method(method).uri(path);
            if let Some(origin) = origin {
                request = request.header(header::ORIGIN, origin);
            }
            request.body(Body::empty()).unwrap()
        };
        let cases = [
            (Method::GET, "/api/v1/users/profile", None, true),
            (Method::POST, "/api/v1/auth/login", None, true),
            (Method::OPTIONS, "/api/v1/users/profile", None, false),
            (Method::OPTIONS, "/api/v1/users/profile", Some("http://localhost:3000"), false),
            (Method::GET, "/api/v1/users/profile", Some("http://localhost:3000"), false),
            (Method::GET, "/api/v1/users/profile", Some("https://evil.example"), false),
            (Method::GET, "/health", None, false),
            (Method::GET, "/ready", None, false),
            (Method::GET, "/metrics", None, false),
            (Method::GET, "/openapi.json", None, false),
            (Method::GET, "/docs/", None, false),
            (Method::GET, "/", None, false),
            (Method::GET, "/assets/app.js", None, false),
            (Method::GET, "/reset-password", None, false),
            (Method::HEAD, "/verify-email", None, false),
            (Method::GET, "/reset-password/x", None, true),
        ];
        for (method, path, origin, direct) in cases {
            assert_eq!(takes_direct_path(&request(method.clone(), path, origin)), direct, "{method} {path} {origin:?}");
        }
    }
}
