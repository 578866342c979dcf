//! The guard in front of a small axum router, driven in-process with
//! `tower::ServiceExt::oneshot`; requests are signed with the gateway's own
//! signing code (`tokens::assertion::Assertion::sign`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::routing::{delete, get};
use axum::{Json, Router};
use guard::{GatewayUser, GuardConfig, GuardLayer, INVALID_SIGNATURE, ReplayCache, USER_CONTEXT_MISSING};
use serde_json::{Value, json};
use tokens::Secret;
use tokens::assertion::Assertion;
use tower::ServiceExt as _;

fn secret(c: char) -> Secret {
    Secret::parse(&c.to_string().repeat(40)).unwrap()
}

fn now() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn whoami(user: GatewayUser) -> Json<GatewayUser> {
    Json(user)
}

/// The protected routes of a user service, guarded; `/health` and `/ready` are not.
fn app(config: GuardConfig) -> Router {
    Router::new()
        .route("/users/profile", get(whoami).put(whoami).delete(whoami))
        .route("/users/account", delete(whoami))
        .route("/health", get(|| async { Json(json!({"status": "healthy"})) }))
        .route("/ready", get(|| async { "ready" }))
        .layer(GuardLayer::new(config).skip_paths(["/health", "/ready"]))
}

fn memory_config(secrets: Vec<Secret>) -> GuardConfig {
    GuardConfig::new(secrets, ReplayCache::memory())
}

/// A request as the gateway would forward it.
#[derive(Clone)]
struct Signed {
    method: Method,
    path_and_query: String,
    request_id: String,
    timestamp: i64,
    user_id: String,
    email: String,
    signature: String,
}

impl Signed {
    fn new(method: Method, path_and_query: &str, secrets: &[Secret]) -> Self {
        Self::at(method, path_and_query, secrets, now())
    }

    fn at(method: Method, path_and_query: &str, secrets: &[Secret], timestamp: i64) -> Self {
        let request_id = new_id();
        let (user_id, email) = ("7d0f2b3e-user", "alice@example.com");
        let signature =
            Assertion { timestamp, method: method.as_str(), path_and_query, request_id: &request_id, user_id, email }
                .sign(secrets);
        Self {
            method,
            path_and_query: path_and_query.to_owned(),
            request_id,
            timestamp,
            user_id: user_id.to_owned(),
            email: email.to_owned(),
            signature,
        }
    }

    /// The request, sent with `method` to `path_and_query` (normally the signed ones).
    fn send_as(&self, method: Method, path_and_query: &str) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(path_and_query)
            .header("x-user-id", &self.user_id)
            .header("x-user-email", &self.email)
            .header("x-request-id", &self.request_id)
            .header("x-gateway-timestamp", self.timestamp.to_string())
            .header("x-gateway-signature", &self.signature)
            .body(Body::empty())
            .unwrap()
    }

    fn request(&self) -> Request<Body> {
        self.send_as(self.method.clone(), &self.path_and_query)
    }
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, body)
}

fn missing() -> Value {
    json!({"error": USER_CONTEXT_MISSING})
}

fn invalid() -> Value {
    json!({"error": INVALID_SIGNATURE})
}

#[test]
fn the_messages_are_api_md_s() {
    assert_eq!(USER_CONTEXT_MISSING, "User context missing. Request must come through API Gateway.");
    assert_eq!(INVALID_SIGNATURE, "Invalid gateway signature. Request may not be authentic.");
}

#[tokio::test]
async fn a_signed_request_reaches_the_handler_with_its_user() {
    let keys = [secret('a')];
    let app = app(memory_config(keys.to_vec()));
    let signed = Signed::new(Method::GET, "/users/profile", &keys);
    let (status, body) = send(&app, signed.request()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"id": "7d0f2b3e-user", "email": "alice@example.com", "request_id": signed.request_id}));
    // With a query, and with another method.
    for (method, pq) in [(Method::GET, "/users/profile?fields=name,bio&x=%20y"), (Method::PUT, "/users/profile")] {
        let (status, body) = send(&app, Signed::new(method, pq, &keys).request()).await;
        assert_eq!(status, StatusCode::OK, "{pq}: {body}");
    }
}

#[tokio::test]
async fn a_request_without_the_assertion_is_refused_with_the_first_message() {
    let keys = [secret('a')];
    let app = app(memory_config(keys.to_vec()));
    let bare = Request::get("/users/profile").body(Body::empty()).unwrap();
    assert_eq!(send(&app, bare).await, (StatusCode::UNAUTHORIZED, missing()));

    // SEED-FLAWS F1: the seed believed X-User-ID / X-User-Email when no signature came along.
    let spoofed = Request::get("/users/profile")
        .header("x-user-id", "admin")
        .header("x-user-email", "admin@example.com")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, spoofed).await, (StatusCode::UNAUTHORIZED, missing()));

    // Any one header missing, or empty.
    for name in ["x-user-id", "x-user-email", "x-request-id", "x-gateway-timestamp", "x-gateway-signature"] {
        let mut request = Signed::new(Method::GET, "/users/profile", &keys).request();
        request.headers_mut().remove(name);
        assert_eq!(send(&app, request).await, (StatusCode::UNAUTHORIZED, missing()), "without {name}");
        let mut request = Signed::new(Method::GET, "/users/profile", &keys).request();
        request.headers_mut().insert(name, "".parse().unwrap());
        assert_eq!(send(&app, request).await, (StatusCode::UNAUTHORIZED, missing()), "empty {name}");
    }

    // The fallback is guarded too: no probing for routes without an assertion.
    let unknown = Request::get("/admin").body(Body::empty()).unwrap();
    assert_eq!(send(&app, unknown).await, (StatusCode::UNAUTHORIZED, missing()));
}

#[tokio::test]
async fn the_401_bodies_are_exactly_the_envelope() {
    let keys = [secret('a')];
    let app = app(memory_config(keys.to_vec()));
    let response = app.clone().oneshot(Request::get("/users/profile").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["content-type"], "application/json");
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
    assert_eq!(&bytes[..], br#"{"error":"User context missing. Request must come through API Gateway."}"#);

    let forged = Signed::new(Method::GET, "/users/profile", &[secret('z')]);
    let response = app.clone().oneshot(forged.request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
    assert_eq!(&bytes[..], br#"{"error":"Invalid gateway signature. Request may not be authentic."}"#);
}

#[tokio::test]
async fn a_wrong_secret_or_a_tampered_header_is_refused_with_the_second_message() {
    let keys = [secret('a')];
    let app = app(memory_config(keys.to_vec()));
    let forged = Signed::new(Method::GET, "/users/profile", &[secret('z')]);
    assert_eq!(send(&app, forged.request()).await, (StatusCode::UNAUTHORIZED, invalid()));

    for (name, value) in [
        ("x-user-id", "someone-else"),
        ("x-user-email", "mallory@example.com"),
        ("x-request-id", "another-id"),
        ("x-gateway-signature", "v1=00"),
        ("x-gateway-signature", "garbage"),
    ] {
        let mut request = Signed::new(Method::GET, "/users/profile", &keys).request();
        request.headers_mut().insert(name, value.parse().unwrap());
        assert_eq!(send(&app, request).await, (StatusCode::UNAUTHORIZED, invalid()), "{name}: {value}");
    }

    // A non-canonical timestamp (the signature covers the decimal form) and a duplicated header.
    let signed = Signed::new(Method::GET, "/users/profile", &keys);
    let mut request = signed.request();
    request.headers_mut().insert("x-gateway-timestamp", format!("+{}", signed.timestamp).parse().unwrap());
    assert_eq!(send(&app, request).await, (StatusCode::UNAUTHORIZED, invalid()));
    let mut request = Signed::new(Method::GET, "/users/profile", &keys).request();
    request.headers_mut().append("x-user-id", "admin".parse().unwrap());
    assert_eq!(send(&app, request).await, (StatusCode::UNAUTHORIZED, invalid()));
}

#[tokio::test]
async fn during_a_rotation_either_secret_is_accepted() {
    let (new, old, retired) = (secret('n'), secret('o'), secret('r'));
    let app = app(memory_config(vec![new.clone(), old.clone()]));
    // A gateway still on the old secret, one already on the new, one signing with both.
    for keys in [vec![old.clone()], vec![new.clone()], vec![new.clone(), old.clone()], vec![retired.clone(), old]] {
        let (status, body) = send(&app, Signed::new(Method::GET, "/users/profile", &keys).request()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = send(&app, Signed::new(Method::GET, "/users/profile", &[retired]).request()).await;
    assert_eq!((status, body), (StatusCode::UNAUTHORIZED, invalid()));
}

#[tokio::test]
async fn stale_and_future_timestamps_are_refused() {
    let keys = [secret('a')];
    let app = app(memory_config(keys.to_vec()));
    for offset in [-61, 61, -3600, 3600] {
        let signed = Signed::at(Method::GET, "/users/profile", &keys, now() + offset);
        assert_eq!(send(&app, signed.request()).await, (StatusCode::UNAUTHORIZED, invalid()), "{offset}");
    }
    for offset in [-58, 58] {
        let signed = Signed::at(Method::GET, "/users/profile", &keys, now() + offset);
        assert_eq!(send(&app, signed.request()).await.0, StatusCode::OK, "{offset}");
    }
    let signed = Signed::at(Method::GET, "/users/profile", &keys, 0);
    assert_eq!(send(&app, signed.request()).await, (StatusCode::UNAUTHORIZED, invalid()));
}

#[tokio::test]
async fn a_tighter_max_skew_is_honoured() {
    let keys = [secret('a')];
    let mut config = memory_config(keys.to_vec());
    config.max_skew = Duration::from_secs(10);
    assert_eq!(config.replay_ttl(), Duration::from_secs(21));
    let guarded = app(config);
    let signed = Signed::at(Method::GET, "/users/profile", &keys, now() - 30);
    assert_eq!(send(&guarded, signed.request()).await, (StatusCode::UNAUTHORIZED, invalid()));
    // A looser one cannot widen the wire format's 60 s.
    let mut config = memory_config(keys.to_vec());
    config.max_skew = Duration::from_secs(600);
    assert_eq!(config.replay_ttl(), Duration::from_secs(121));
    let guarded = app(config);
    let signed = Signed::at(Method::GET, "/users/profile", &keys, now() - 120);
    assert_eq!(send(&guarded, signed.request()).await, (StatusCode::UNAUTHORIZED, invalid()));
}

#[tokio::test]
async fn a_signature_is_good_for_its_own_method_path_and_query_only() {
    let keys = [secret('a')];
    let app = app(memory_config(keys.to_vec()));
    let cases = [
        (Method::GET, "/users/profile", Method::DELETE, "/users/profile"),
        (Method::DELETE, "/users/profile", Method::DELETE, "/users/account"),
        (Method::GET, "/users/profile?fields=name", Method::GET, "/users/profile?fields=email"),
        (Method::GET, "/users/profile?fields=name", Method::GET, "/users/profile"),
        (Method::GET, "/users/profile", Method::GET, "/users/profile?admin=1"),
    ];
    for (signed_method, signed_path, sent_method, sent_path) in cases {
        let signed = Signed::new(signed_method.clone(), signed_path, &keys);
        let got = send(&app, signed.send_as(sent_method.clone(), sent_path)).await;
        assert_eq!(
            got,
            (StatusCode::UNAUTHORIZED, invalid()),
            "{signed_method} {signed_path} as {sent_method} {sent_path}"
        );
        // Refused attempts record nothing: the genuine request still goes through.
        assert_eq!(send(&app, signed.request()).await.0, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_request_id_is_accepted_once() {
    let keys = [secret('a')];
    let app = app(memory_config(keys.to_vec()));
    let signed = Signed::new(Method::GET, "/users/profile", &keys);
    assert_eq!(send(&app, signed.request()).await.0, StatusCode::OK);
    assert_eq!(send(&app, signed.request()).await, (StatusCode::UNAUTHORIZED, invalid()));
    assert_eq!(send(&app, signed.request()).await, (StatusCode::UNAUTHORIZED, invalid()));
    // The same id on another route, even correctly signed, is a replay as well.
    let mut other = Signed::new(Method::DELETE, "/users/account", &keys);
    other.request_id.clone_from(&signed.request_id);
    other.signature = Assertion {
        timestamp: other.timestamp,
        method: "DELETE",
        path_and_query: "/users/account",
        request_id: &other.request_id,
        user_id: &other.user_id,
        email: &other.email,
    }
    .sign(&keys);
    assert_eq!(send(&app, other.request()).await, (StatusCode::UNAUTHORIZED, invalid()));
    // A fresh id is fine.
    assert_eq!(send(&app, Signed::new(Method::GET, "/users/profile", &keys).request()).await.0, StatusCode::OK);
}

#[tokio::test]
async fn concurrent_copies_of_one_request_get_through_once() {
    let keys = [secret('a')];
    let app = app(memory_config(keys.to_vec()));
    let signed = Signed::new(Method::GET, "/users/profile", &keys);
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let (app, request) = (app.clone(), signed.request());
            tokio::spawn(async move { app.oneshot(request).await.unwrap().status() })
        })
        .collect();
    let mut ok = 0;
    for h in handles {
        ok += usize::from(h.await.unwrap() == StatusCode::OK);
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn a_full_memory_cache_refuses_new_requests_with_503_and_still_refuses_replays() {
    let keys = [secret('a')];
    let app = app(GuardConfig::new(keys.to_vec(), ReplayCache::memory_with_capacity(2)));
    let first = Signed::new(Method::GET, "/users/profile", &keys);
    assert_eq!(send(&app, first.request()).await.0, StatusCode::OK);
    assert_eq!(send(&app, Signed::new(Method::GET, "/users/profile", &keys).request()).await.0, StatusCode::OK);
    let response = app.clone().oneshot(Signed::new(Method::GET, "/users/profile", &keys).request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), json!({"error": "Service temporarily unavailable"}));
    // Nothing was evicted to make room.
    assert_eq!(send(&app, first.request()).await, (StatusCode::UNAUTHORIZED, invalid()));
}

#[tokio::test]
async fn health_and_ready_are_left_to_the_service() {
    let keys = [secret('a')];
    let app = app(memory_config(keys.to_vec()));
    for path in ["/health", "/ready"] {
        let (status, _) = send(&app, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    // Exact paths only.
    for path in ["/health/", "/health/x", "/healthz", "/ready?x=1/../users/profile"] {
        let (status, _) = send(&app, Request::get(path).body(Body::empty()).unwrap()).await;
        if path.starts_with("/ready?") {
            // The path is `/ready`; the query does not change that.
            assert_eq!(status, StatusCode::OK, "{path}");
        } else {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        }
    }
}

#[tokio::test]
async fn route_layer_and_nesting_work_and_the_extractor_needs_the_layer() {
    let keys = [secret('a')];
    // route_layer: the guarded routes, then the unguarded ones.
    let app = Router::new()
        .route("/users/profile", get(whoami))
        .route_layer(GuardLayer::new(memory_config(keys.to_vec())))
        .route("/health", get(|| async { "ok" }));
    assert_eq!(send(&app, Signed::new(Method::GET, "/users/profile", &keys).request()).await.0, StatusCode::OK);
    assert_eq!(send(&app, Request::get("/health").body(Body::empty()).unwrap()).await.0, StatusCode::OK);
    assert_eq!(
        send(&app, Request::get("/users/profile").body(Body::empty()).unwrap()).await,
        (StatusCode::UNAUTHORIZED, missing())
    );

    // Nested: the inner router sees `/profile`, the gateway signed `/users/profile?x=1`.
    let inner = Router::new().route("/profile", get(whoami)).layer(GuardLayer::new(memory_config(keys.to_vec())));
    let app = Router::new().nest("/users", inner);
    assert_eq!(send(&app, Signed::new(Method::GET, "/users/profile?x=1", &keys).request()).await.0, StatusCode::OK);
    let wrong = Signed::new(Method::GET, "/profile?x=1", &keys);
    assert_eq!(
        send(&app, wrong.send_as(Method::GET, "/users/profile?x=1")).await,
        (StatusCode::UNAUTHORIZED, invalid())
    );

    // A handler taking GatewayUser on a route without the layer: refused, not a panic.
    let app = Router::new()
        .route("/users/profile", get(whoami))
        .route("/maybe", get(|user: Option<GatewayUser>| async move { Json(json!({"user": user})) }));
    let signed = Signed::new(Method::GET, "/users/profile", &keys);
    assert_eq!(send(&app, signed.request()).await, (StatusCode::UNAUTHORIZED, missing()));
    let (status, body) = send(&app, Request::get("/maybe").body(Body::empty()).unwrap()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"user": null})));
}

#[tokio::test]
async fn verify_can_be_called_without_tower() {
    let keys = [secret('a')];
    let guard = GuardLayer::new(memory_config(keys.to_vec()));
    let signed = Signed::new(Method::POST, "/payments?x=1", &keys);
    let request = signed.request();
    let user = guard.verify(request.method(), "/payments?x=1", request.headers()).await.unwrap();
    assert_eq!(user.id, "7d0f2b3e-user");
    let again = guard.verify(request.method(), "/payments?x=1", request.headers()).await.unwrap_err();
    assert_eq!((again.status(), again.message()), (StatusCode::UNAUTHORIZED, INVALID_SIGNATURE));
    assert!(guard.replay_cache().ping().await.is_ok());
}

// ---- Redis ----------------------------------------------------------------

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix no other test or run shares.
fn unique_prefix() -> String {
    format!("gh-test:guard:{}", uuid::Uuid::new_v4().simple())
}

async fn redis_cache(prefix: &str) -> ReplayCache {
    let cache = ReplayCache::redis(&redis_url(), prefix).await.unwrap();
    cache.ping().await.expect("Redis must run at TEST_REDIS_URL for these tests");
    cache
}

#[tokio::test]
async fn two_replicas_sharing_redis_accept_a_request_id_once() {
    let keys = [secret('a')];
    let prefix = unique_prefix();
    let a = app(GuardConfig::new(keys.to_vec(), redis_cache(&prefix).await));
    let b = app(GuardConfig::new(keys.to_vec(), redis_cache(&prefix).await));
    let one = Signed::new(Method::GET, "/users/profile", &keys);
    assert_eq!(send(&a, one.request()).await.0, StatusCode::OK);
    assert_eq!(send(&b, one.request()).await, (StatusCode::UNAUTHORIZED, invalid()));
    assert_eq!(send(&a, one.request()).await, (StatusCode::UNAUTHORIZED, invalid()));
    let two = Signed::new(Method::GET, "/users/profile", &keys);
    assert_eq!(send(&b, two.request()).await.0, StatusCode::OK);
    assert_eq!(send(&a, two.request()).await, (StatusCode::UNAUTHORIZED, invalid()));

    // Concurrent copies across both replicas: exactly one gets through.
    let three = Signed::new(Method::PUT, "/users/profile", &keys);
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let (app, request) = (if i % 2 == 0 { a.clone() } else { b.clone() }, three.request());
            tokio::spawn(async move { app.oneshot(request).await.unwrap().status() })
        })
        .collect();
    let mut ok = 0;
    for h in handles {
        ok += usize::from(h.await.unwrap() == StatusCode::OK);
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn redis_keys_are_hash_tagged_and_expire_after_the_window() {
    use redis::AsyncCommands as _;
    let keys = [secret('a')];
    let prefix = unique_prefix();
    let app = app(GuardConfig::new(keys.to_vec(), redis_cache(&prefix).await));
    let signed = Signed::new(Method::GET, "/users/profile", &keys);
    assert_eq!(send(&app, signed.request()).await.0, StatusCode::OK);
    let mut conn = redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}:seen:{{{}}}", signed.request_id);
    let ttl: i64 = conn.pttl(&key).await.unwrap();
    assert!((115_000..=121_000).contains(&ttl), "{ttl}");
    // A refused request writes nothing.
    let forged = Signed::new(Method::GET, "/users/profile", &[secret('z')]);
    assert_eq!(send(&app, forged.request()).await.0, StatusCode::UNAUTHORIZED);
    let exists: bool = conn.exists(format!("{prefix}:seen:{{{}}}", forged.request_id)).await.unwrap();
    assert!(!exists);
    let _: () = conn.del(&key).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_redis_fails_closed_with_503_quickly() {
    let keys = [secret('a')];
    let started = Instant::now();
    // Nothing listens on port 1; the service starts anyway.
    let cache = ReplayCache::redis("redis://127.0.0.1:1", &unique_prefix()).await.unwrap();
    assert!(cache.ping().await.is_err());
    let app = app(GuardConfig::new(keys.to_vec(), cache));
    for _ in 0..3 {
        let t = Instant::now();
        let response = app.clone().oneshot(Signed::new(Method::GET, "/users/profile", &keys).request()).await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&bytes).unwrap(),
            json!({"error": "Service temporarily unavailable"})
        );
    }
    // Requests refused before the replay check do not need Redis at all.
    let (status, body) = send(&app, Request::get("/users/profile").body(Body::empty()).unwrap()).await;
    assert_eq!((status, body), (StatusCode::UNAUTHORIZED, missing()));
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
}

#[tokio::test]
async fn bad_redis_configuration_is_refused() {
    assert!(matches!(ReplayCache::redis("http://nope", "gh").await, Err(guard::ReplayError::Config(_))));
    assert!(matches!(ReplayCache::redis(&redis_url(), "g{h}").await, Err(guard::ReplayError::Config(_))));
}

// ---- The Python verifier from the crate docs ------------------------------

/// The ```python block of the crate docs, as Python source.
fn python_from_docs() -> String {
    let source = include_str!("../src/lib.rs");
    let mut lines = source.lines().skip_while(|l| l.trim() != "//! ```python").skip(1);
    let mut code = String::new();
    for line in lines.by_ref() {
        if line.trim() == "//! ```" {
            return code;
        }
        code.push_str(line.strip_prefix("//!").unwrap().strip_prefix(' ').unwrap_or(""));
        code.push('\n');
    }
    panic!("no closing fence for the python block");
}

/// The documented Python function and this guard give the same answer to
/// the same sequence of requests (in the same order, so replays line up).
#[tokio::test]
async fn the_documented_python_verifier_agrees_with_the_guard() {
    let (current, previous) = (secret('c'), secret('p'));
    let held = vec![current.clone(), previous.clone()];
    let app = app(memory_config(held.clone()));

    let replayed = Signed::new(Method::GET, "/users/profile", std::slice::from_ref(&current));
    let other_method = Signed::new(Method::GET, "/users/profile?fields=name", std::slice::from_ref(&current));
    let mut cases: Vec<(Signed, Method, &str, Option<&str>)> = vec![
        (Signed::new(Method::GET, "/users/profile", &held), Method::GET, "/users/profile", None),
        (replayed.clone(), Method::GET, "/users/profile", None),
        (replayed, Method::GET, "/users/profile", None),
        (other_method, Method::DELETE, "/users/profile?fields=name", None),
        (
            Signed::new(Method::PUT, "/users/profile", std::slice::from_ref(&previous)),
            Method::PUT,
            "/users/profile",
            None,
        ),
        (Signed::new(Method::GET, "/users/profile", &[secret('z')]), Method::GET, "/users/profile", None),
        (Signed::at(Method::GET, "/users/profile", &held, now() - 61), Method::GET, "/users/profile", None),
        (Signed::new(Method::GET, "/users/profile", &held), Method::GET, "/users/account", None),
    ];
    for name in ["x-gateway-signature", "x-user-email"] {
        cases.push((Signed::new(Method::GET, "/users/profile", &held), Method::GET, "/users/profile", Some(name)));
    }

    let mut rust_answers = Vec::new();
    let mut python_cases = Vec::new();
    for (signed, method, path, drop) in &cases {
        let mut request = signed.send_as(method.clone(), path);
        if let Some(name) = drop {
            request.headers_mut().remove(*name);
        }
        let headers: serde_json::Map<String, Value> = request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), Value::String(v.to_str().unwrap().to_owned())))
            .collect();
        python_cases.push(json!({"headers": headers, "method": method.as_str(), "pq": path}));
        let (status, body) = send(&app, request).await;
        rust_answers.push(if status == StatusCode::OK {
            "ok".to_owned()
        } else {
            body["error"].as_str().unwrap().to_owned()
        });
    }
    assert_eq!(
        rust_answers.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "ok",
            "ok",
            INVALID_SIGNATURE, // replay
            INVALID_SIGNATURE, // GET signed, sent as DELETE
            "ok",              // previous secret
            INVALID_SIGNATURE, // unknown secret
            INVALID_SIGNATURE, // stale
            INVALID_SIGNATURE, // other path
            USER_CONTEXT_MISSING,
            USER_CONTEXT_MISSING,
        ]
    );

    let driver = r#"
import json, sys
cases = json.loads(sys.argv[1])
secrets = [s.encode() for s in json.loads(sys.argv[2])]
seen = {}
answers = []
for c in cases:
    user, error = verify_gateway(c["headers"], c["method"], c["pq"], secrets, seen)
    answers.append("ok" if user else error)
print(json.dumps(answers))
"#;
    let script = format!("{}\n{driver}", python_from_docs());
    let secrets: Vec<String> = held.iter().map(|s| String::from_utf8(s.expose().to_vec()).unwrap()).collect();
    let output = std::process::Command::new("python3")
        .args(["-c", &script, &Value::Array(python_cases).to_string(), &json!(secrets).to_string()])
        .output()
        .expect("python3 is needed for this test");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let python_answers: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(python_answers, rust_answers);
}
