//! The tower layer: verify the assertion, then call the handler.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::OriginalUri;
use axum::response::{IntoResponse, Response};
use common_http::ApiError;
use http::{HeaderMap, Method, Request, StatusCode};
use tokens::Secret;
use tokens::assertion::{Assertion, AssertionError};
use tower::{Layer, Service};

use crate::replay::Seen;
use crate::{GatewayUser, GuardConfig, INVALID_SIGNATURE, USER_CONTEXT_MISSING};

/// The five headers the gateway sets, in the order they are checked.
const USER_ID: &str = "x-user-id";
const USER_EMAIL: &str = "x-user-email";
const REQUEST_ID: &str = "x-request-id";
const TIMESTAMP: &str = "x-gateway-timestamp";
const SIGNATURE: &str = "x-gateway-signature";

/// A tower [`Layer`] that lets a request through only with a valid,
/// unreplayed gateway assertion, and puts the [`GatewayUser`] in its
/// extensions. See the crate docs for how to apply it.
///
/// Cheap to clone; clones share the configuration and the replay cache.
#[derive(Clone)]
pub struct GuardLayer {
    guard: Arc<Guard>,
}

#[derive(Clone)]
struct Guard {
    secrets: Vec<Secret>,
    max_skew_secs: u64,
    replay_ttl: Duration,
    replay: crate::ReplayCache,
    skip: Vec<String>,
}

/// Why a request was refused; logged, never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    MissingHeader,
    DuplicateHeader,
    MalformedHeader,
    MalformedTimestamp,
    MalformedRequestId,
    StaleTimestamp,
    BadSignature,
    Replay,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::MissingHeader => "missing_header",
            Self::DuplicateHeader => "duplicate_header",
            Self::MalformedHeader => "malformed_header",
            Self::MalformedTimestamp => "malformed_timestamp",
            Self::MalformedRequestId => "malformed_request_id",
            Self::StaleTimestamp => "stale_timestamp",
            Self::BadSignature => "bad_signature",
            Self::Replay => "replay",
        }
    }
}

impl GuardLayer {
    /// A guard for every request it wraps. `config.max_skew` above
    /// [`tokens::assertion::MAX_SKEW_SECS`] (60 s, API.md) is lowered to it; an empty secret
    /// list refuses every request (and is logged as an error).
    #[must_use]
    pub fn new(config: GuardConfig) -> Self {
        let max_skew = config.effective_max_skew();
        if max_skew < config.max_skew {
            tracing::warn!(
                configured_secs = config.max_skew.as_secs(),
                used_secs = max_skew.as_secs(),
                "guard: max_skew above the wire format's 60 s; using 60 s"
            );
        }
        if config.secrets.is_empty() {
            tracing::error!("guard: no gateway secret configured; every guarded request will be refused");
        }
        let replay_ttl = config.replay_ttl();
        Self {
            guard: Arc::new(Guard {
                secrets: config.secrets,
                max_skew_secs: max_skew.as_secs(),
                replay_ttl,
                replay: config.replay,
                skip: Vec::new(),
            }),
        }
    }

    /// Lets requests whose path is exactly one of `paths` through unchecked
    /// (typically `["/health", "/ready"]`). The match is exact, on the path
    /// the service received (before any `Router::nest` stripped a prefix),
    /// without the query; no prefix or pattern matching, so `/health/x` or
    /// `/health/` is still guarded. A skipped request carries no
    /// [`GatewayUser`].
    #[must_use]
    pub fn skip_paths<I, P>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        Arc::make_mut(&mut self.guard).skip.extend(paths.into_iter().map(Into::into));
        self
    }

    /// The replay cache, e.g. to include [`crate::ReplayCache::ping`] in `/ready`.
    #[must_use]
    pub fn replay_cache(&self) -> &crate::ReplayCache {
        &self.guard.replay
    }

    /// The check the layer runs, for callers outside tower: `method` and
    /// `path_and_query` are the request's own (the path as received, with
    /// `?query` when there is one). Records the request id on success.
    ///
    /// # Errors
    /// The response to send: 401 with one of the two API.md messages, or 503
    /// when the replay cache cannot answer. The reason is logged here.
    pub async fn verify(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> Result<GatewayUser, ApiError> {
        let user = self.guard.check(method, path_and_query, headers, unix_now())?;
        self.guard.record(user, method, path_and_query).await
    }
}

impl fmt::Debug for GuardLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardLayer")
            .field("secrets", &self.guard.secrets.len())
            .field("max_skew_secs", &self.guard.max_skew_secs)
            .field("replay_ttl", &self.guard.replay_ttl)
            .field("replay", &self.guard.replay)
            .field("skip", &self.guard.skip)
            .finish()
    }
}

impl Guard {
    fn skips(&self, path: &str) -> bool {
        self.skip.iter().any(|p| p == path)
    }

    /// Everything but the replay check: headers, timestamp, signature.
    fn check(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        now: i64,
    ) -> Result<GatewayUser, ApiError> {
        let refuse = |reason: Reason| Err(refusal(reason, method, path_and_query));
        let mut values = [""; 5];
        for (slot, name) in values.iter_mut().zip([USER_ID, USER_EMAIL, REQUEST_ID, TIMESTAMP, SIGNATURE]) {
            let mut all = headers.get_all(name).iter();
            let Some(value) = all.next() else {
                return refuse(Reason::MissingHeader);
            };
            if all.next().is_some() {
                return refuse(Reason::DuplicateHeader);
            }
            // UTF-8 rather than visible ASCII only: an email may be internationalised.
            let Ok(value) = std::str::from_utf8(value.as_bytes()) else {
                return refuse(Reason::MalformedHeader);
            };
            if value.is_empty() {
                return refuse(Reason::MissingHeader);
            }
            *slot = value;
        }
        let [user_id, email, request_id, timestamp, signature] = values;
        // Only the canonical decimal form, so exactly the signed string verifies.
        let Some(timestamp) = parse_timestamp(timestamp) else {
            return refuse(Reason::MalformedTimestamp);
        };
        if !common_http::request_id::is_valid_request_id(request_id) {
            return refuse(Reason::MalformedRequestId);
        }
        if now.abs_diff(timestamp) > self.max_skew_secs {
            return refuse(Reason::StaleTimestamp);
        }
        let assertion = Assertion { timestamp, method: method.as_str(), path_and_query, request_id, user_id, email };
        match assertion.verify(signature, &self.secrets, now) {
            Ok(()) => {
                Ok(GatewayUser { id: user_id.to_owned(), email: email.to_owned(), request_id: request_id.to_owned() })
            }
            Err(AssertionError::Stale) => refuse(Reason::StaleTimestamp),
            Err(AssertionError::BadSignature) => refuse(Reason::BadSignature),
        }
    }

    /// The replay check, after the signature: only verified ids are recorded.
    async fn record(&self, user: GatewayUser, method: &Method, path_and_query: &str) -> Result<GatewayUser, ApiError> {
        match self.replay.first_use(&user.request_id, self.replay_ttl).await {
            Ok(Seen::First) => Ok(user),
            Ok(Seen::Again) => {
                tracing::warn!(
                    reason = Reason::Replay.as_str(),
                    request_id = %user.request_id,
                    user_id = %user.id,
                    method = %method,
                    path = %log_path(path_and_query),
                    "gateway assertion refused"
                );
                Err(ApiError::new(StatusCode::UNAUTHORIZED, INVALID_SIGNATURE))
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    method = %method,
                    path = %log_path(path_and_query),
                    "replay cache cannot answer; refusing the request (fail closed)"
                );
                Err(ApiError::unavailable("replay cache"))
            }
        }
    }
}

/// Logs the refusal and builds the client's answer: API.md's first message
/// when the assertion is absent, its second when it is there but not valid.
fn refusal(reason: Reason, method: &Method, path_and_query: &str) -> ApiError {
    let path = log_path(path_and_query);
    if reason == Reason::MissingHeader {
        tracing::info!(reason = reason.as_str(), method = %method, path = %path, "gateway assertion refused");
        ApiError::new(StatusCode::UNAUTHORIZED, USER_CONTEXT_MISSING)
    } else {
        tracing::warn!(reason = reason.as_str(), method = %method, path = %path, "gateway assertion refused");
        ApiError::new(StatusCode::UNAUTHORIZED, INVALID_SIGNATURE)
    }
}

/// The path for a log line: no query (it may carry tokens), at most 200 characters.
fn log_path(path_and_query: &str) -> String {
    let path = path_and_query.split_once('?').map_or(path_and_query, |(p, _)| p);
    path.chars().take(200).collect()
}

/// `1700000000`, but not `+1700000000`, `01700000000`, ` 1700000000` or `-5`.
fn parse_timestamp(raw: &str) -> Option<i64> {
    let canonical = !raw.is_empty()
        && raw.len() <= 18
        && raw.bytes().all(|b| b.is_ascii_digit())
        && (raw == "0" || !raw.starts_with('0'));
    if canonical { raw.parse().ok() } else { None }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl<S> Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService { inner, guard: Arc::clone(&self.guard) }
    }
}

/// The service [`GuardLayer`] wraps around a router or handler.
#[derive(Clone)]
pub struct GuardService<S> {
    inner: S,
    guard: Arc<Guard>,
}

impl<S> fmt::Debug for GuardService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardService").finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for GuardService<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The ready service is the one to call; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = Arc::clone(&self.guard);
        // The target as received: inside `Router::nest` the URI has lost its
        // prefix, but the gateway signed the full one.
        let uri = req.extensions().get::<OriginalUri>().map_or_else(|| req.uri().clone(), |o| o.0.clone());
        if guard.skips(uri.path()) {
            return Box::pin(async move { inner.call(req).await.map(IntoResponse::into_response) });
        }
        let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
        // Synchronous part first, so the future holds no borrow of the request.
        let checked = guard.check(req.method(), path_and_query, req.headers(), unix_now());
        let method = req.method().clone();
        Box::pin(async move {
            let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
            let recorded = match checked {
                Ok(user) => guard.record(user, &method, path_and_query).await,
                Err(rejection) => Err(rejection),
            };
            match recorded {
                Ok(user) => {
                    req.extensions_mut().insert(user);
                    inner.call(req).await.map(IntoResponse::into_response)
                }
                Err(rejection) => Ok(rejection.into_response()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_timestamps_parse() {
        assert_eq!(parse_timestamp("1700000000"), Some(1_700_000_000));
        assert_eq!(parse_timestamp("0"), Some(0));
        for bad in [
            "",
            "+1700000000",
            "01700000000",
            " 1700000000",
            "1700000000 ",
            "-5",
            "1e9",
            "١٢٣",
            "9".repeat(19).as_str(),
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn log_paths_drop_the_query_and_are_bounded() {
        assert_eq!(log_path("/users/profile?token=secret"), "/users/profile");
        assert_eq!(log_path(&format!("/{}", "a".repeat(500))).len(), 200);
    }
}
