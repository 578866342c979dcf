//! The downstream guard: a downstream service accepts a request only when it
//! carries a valid gateway identity assertion, and learns from it who the
//! caller is.
//!
//! # Why
//!
//! In the seed design a downstream service trusted `X-User-ID` and
//! `X-User-Email` and skipped the check when `X-Gateway-Signature` was
//! absent, so anyone who could reach the service's port authenticated as
//! anyone (SEED-FLAWS F1). Where a signature was sent it was
//! `HMAC(secret, "id:email")`: static per user, valid for every method and
//! path, replayable forever, compared with `!=` (F4). This guard fails
//! closed: no valid assertion, no handler. The assertion (API.md, "The
//! gateway's identity assertion") binds the method, path, query, a request
//! id and a timestamp; the MAC is checked in constant time by
//! [`tokens::assertion::Assertion::verify`]; a timestamp more than 60 s away
//! from this clock is refused, and so is a request id already accepted in
//! that window (the [`replay`] cache).
//!
//! # Adding it to a service
//!
//! One line on the router that holds the protected routes, and handlers take
//! a [`GatewayUser`]:
//!
//! ```no_run
//! use axum::{Json, Router, routing::get};
//! use guard::{GatewayUser, GuardConfig, GuardLayer, ReplayCache};
//!
//! async fn profile(user: GatewayUser) -> Json<GatewayUser> {
//!     Json(user)
//! }
//!
//! # fn secrets() -> Vec<tokens::Secret> { Vec::new() }
//! # async fn run() -> Result<(), guard::ReplayError> {
//! // GATEWAY_SECRET first, then GATEWAY_SECRET_PREVIOUS during a rotation.
//! let config = GuardConfig::new(secrets(), ReplayCache::redis("redis://127.0.0.1:6379", "user-service").await?);
//! let app: Router = Router::new()
//!     .route("/users/profile", get(profile))
//!     .layer(GuardLayer::new(config).skip_paths(["/health", "/ready"]))
//!     .route("/health", get(|| async { "ok" }));
//! # Ok(()) }
//! ```
//!
//! `Router::layer` guards the routes added *before* it and the fallback
//! (so an unknown path without an assertion is a 401, not a 404).
//! `Router::route_layer` guards the routes before it and leaves the fallback
//! alone. Leave `/health` and `/ready` unguarded: add them after the layer
//! (as above), build them on a separate router merged in, or name them in
//! [`GuardLayer::skip_paths`] (exact paths only). A replica-local
//! [`ReplayCache::memory`] is enough for a service run as a single process;
//! with several replicas use [`ReplayCache::redis`] so that all of them share
//! one record (otherwise a request could be replayed once per replica).
//! Include [`ReplayCache::ping`] (via [`GuardLayer::replay_cache`]) in
//! `/ready`.
//!
//! The guard verifies the path the service *received*: it reads axum's
//! `OriginalUri` when the layer sits inside `Router::nest`, so nesting is
//! fine, but no middleware outside the guard may rewrite the URI (trailing
//! slash normalisation and the like), or the signature no longer matches.
//!
//! # Answers
//!
//! | situation | status | body |
//! |---|---|---|
//! | one of `X-User-ID`, `X-User-Email`, `X-Request-ID`, `X-Gateway-Timestamp`, `X-Gateway-Signature` absent or empty | 401 | `{"error":"User context missing. Request must come through API Gateway."}` |
//! | a header twice, a malformed timestamp or request id, a timestamp more than 60 s off, no matching signature, or a replayed request id | 401 | `{"error":"Invalid gateway signature. Request may not be authentic."}` |
//! | the replay cache cannot answer (Redis down, or the in-process cache full) | 503 | `{"error":"Service temporarily unavailable"}` with `Retry-After: 1` |
//!
//! The precise reason (`missing_header`, `duplicate_header`,
//! `malformed_timestamp`, `malformed_request_id`, `stale_timestamp`,
//! `bad_signature`, `replay`, or the replay-cache error) is logged with the
//! method and the path (never the query, a header value or a secret); the
//! client gets only the message. The replay check runs last, so only
//! requests with a valid signature are recorded.
//!
//! # Verifying in another language
//!
//! The gateway sets, on every request it forwards to a protected route
//! (after removing any client-sent `X-User-*` / `X-Gateway-*` header):
//!
//! ```text
//! X-User-ID: <user id>
//! X-User-Email: <email>
//! X-Request-ID: <request id, a UUID the gateway minted>
//! X-Gateway-Timestamp: <unix seconds, decimal>
//! X-Gateway-Signature: v1=<hex>[,v1=<hex>]
//!
//! M = "v1\n" + timestamp + "\n" + METHOD + "\n" + path_and_query + "\n"
//!     + request_id + "\n" + user_id + "\n" + email
//! <hex> = lowercase hex of HMAC-SHA256(secret, M)
//! ```
//!
//! - `METHOD` is the request method as received (`GET`, `DELETE`, …);
//!   `path_and_query` is the request target the service received: the path
//!   (the gateway already removed `/api/v1`), plus `?` and the raw query when
//!   there is one, byte for byte, not decoded or re-encoded.
//! - During a secret rotation the header carries one `v1=` entry per active
//!   gateway secret, comma-separated; accept when any entry matches any
//!   secret you hold (`GATEWAY_SECRET`, and `GATEWAY_SECRET_PREVIOUS` while
//!   one is set). Compare in constant time.
//! - Refuse a timestamp more than 60 s before or after your clock.
//! - Refuse a request id you already accepted while it could still verify:
//!   remember each accepted id for 121 s (2 × 60 s, plus 1 s because
//!   timestamps are whole seconds). With several replicas share the record,
//!   e.g. Redis `SET <prefix>:seen:{<request_id>} 1 NX PX 121000`: `OK` means
//!   first use, nil means replay; if Redis does not answer, refuse (503).
//! - Answer 401 with the two messages above (missing headers / anything
//!   else).
//!
//! In Python, standard library only (one process; `seen` is its replay record):
//!
//! ```python
//! import hashlib, hmac, time
//!
//! MISSING = "User context missing. Request must come through API Gateway."
//! INVALID = "Invalid gateway signature. Request may not be authentic."
//!
//! def verify_gateway(headers, method, path_and_query, secrets, seen, now=None):
//!     """headers: dict with lower-case names; secrets: list of bytes;
//!     seen: dict request id -> expiry. Returns (user dict, None) or (None, 401 message)."""
//!     names = ["x-user-id", "x-user-email", "x-request-id", "x-gateway-timestamp", "x-gateway-signature"]
//!     if not all(headers.get(n) for n in names):
//!         return None, MISSING
//!     uid, email, rid, ts, sig = (headers[n] for n in names)
//!     now = int(time.time()) if now is None else now
//!     if not (ts.isascii() and ts.isdigit()) or abs(now - int(ts)) > 60:
//!         return None, INVALID
//!     m = "\n".join(["v1", ts, method, path_and_query, rid, uid, email]).encode()
//!     wanted = [hmac.new(s, m, hashlib.sha256).hexdigest().encode() for s in secrets]
//!     given = [v.strip()[3:].encode() for v in sig.split(",") if v.strip().startswith("v1=")]
//!     if not any(hmac.compare_digest(g, w) for g in given for w in wanted):
//!         return None, INVALID
//!     for old in [k for k, expiry in seen.items() if expiry <= now]:
//!         del seen[old]
//!     if rid in seen:
//!         return None, INVALID  # replay
//!     seen[rid] = now + 121
//!     return {"id": uid, "email": email, "request_id": rid}, None
//! ```
//!
//! (A test in this crate runs exactly this function against requests the
//! gateway's signing code produced.)

use std::time::Duration;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use common_http::ApiError;
use tokens::Secret;
use tokens::assertion::MAX_SKEW_SECS;

mod layer;
pub mod replay;

pub use layer::{GuardLayer, GuardService};
pub use replay::{MemoryReplayCache, RedisReplayCache, ReplayCache, ReplayError, ReplayStore, Seen};

/// API.md's 401 when the assertion headers are absent.
pub const USER_CONTEXT_MISSING: &str = "User context missing. Request must come through API Gateway.";
/// API.md's 401 when the assertion is present but not valid (or replayed).
pub const INVALID_SIGNATURE: &str = "Invalid gateway signature. Request may not be authentic.";

/// What a guard checks against.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// `GATEWAY_SECRET`, then `GATEWAY_SECRET_PREVIOUS` while a rotation is
    /// under way. A request verifies when it is signed with any of them.
    pub secrets: Vec<Secret>,
    /// The largest clock difference accepted: 60 s by default. It can only
    /// tighten the wire format's 60 s; a larger value is lowered to 60 s.
    pub max_skew: Duration,
    /// Where accepted request ids are recorded.
    pub replay: ReplayCache,
}

impl GuardConfig {
    /// `secrets` (current first) and a replay cache, with `max_skew` 60 s.
    #[must_use]
    pub fn new(secrets: Vec<Secret>, replay: ReplayCache) -> Self {
        Self { secrets, max_skew: Duration::from_secs(MAX_SKEW_SECS.unsigned_abs()), replay }
    }

    /// `max_skew` in whole seconds, at most 60 s.
    #[must_use]
    pub fn effective_max_skew(&self) -> Duration {
        Duration::from_secs(self.max_skew.as_secs().min(MAX_SKEW_SECS.unsigned_abs()))
    }

    /// How long an accepted request id is remembered: the whole span in
    /// which its assertion could verify somewhere in the window,
    /// `2 × max_skew`, plus 1 s because timestamps and the clock comparison
    /// are in whole seconds (121 s by default).
    #[must_use]
    pub fn replay_ttl(&self) -> Duration {
        self.effective_max_skew() * 2 + Duration::from_secs(1)
    }
}

impl GuardConfig {
    /// The answer to `GET /ready` of a downstream service called `service`:
    /// 200 when its database (`database`, the result of pinging it) and this
    /// guard's replay cache both answer, 503 naming the one that does not.
    /// Without a replay cache the guard refuses every request, so a service
    /// whose cache is down must not receive traffic.
    ///
    /// # Errors
    /// The 503 to send.
    pub async fn readiness<E>(
        &self,
        service: &'static str,
        database: Result<(), E>,
    ) -> Result<axum::Json<serde_json::Value>, common_http::ApiError> {
        let unavailable = |what| common_http::ApiError::new(http::StatusCode::SERVICE_UNAVAILABLE, what);
        database.map_err(|_| unavailable("Database unavailable"))?;
        self.replay.ping().await.map_err(|_| unavailable("Replay cache unavailable"))?;
        Ok(axum::Json(serde_json::json!({"status": "ready", "service": service})))
    }
}

/// The caller, as asserted by the gateway and verified by [`GuardLayer`].
///
/// An extractor: `async fn profile(user: GatewayUser)`. Without the layer in
/// front (or on a skipped path) it refuses with API.md's 401
/// `User context missing. …`; take `Option<GatewayUser>` where both are fine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GatewayUser {
    /// `X-User-ID`.
    pub id: String,
    /// `X-User-Email`.
    pub email: String,
    /// `X-Request-ID`, the gateway's id of this request (for logs).
    pub request_id: String,
}

impl<S: Send + Sync> FromRequestParts<S> for GatewayUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Self>().cloned().ok_or_else(|| {
            tracing::error!("GatewayUser extracted on a route the guard does not cover");
            ApiError::new(StatusCode::UNAUTHORIZED, USER_CONTEXT_MISSING)
        })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for GatewayUser {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().cloned())
    }
}
