//! The JSON error envelope (API.md: `{"error": "...", "hint"?: "..."}`).
//!
//! Handlers return `Result<_, ApiError>`; domain errors convert into it in one
//! `From` impl per service. Internal failures are logged where they are turned
//! into an `ApiError` and answered with a fixed message, so no SQL, library
//! text or secret reaches a client (SEED-FLAWS F16).

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error response: status, message, optional hint and headers.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    error: Cow<'static, str>,
    hint: Option<Cow<'static, str>>,
    retry_after: Option<u64>,
    bearer_challenge: bool,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<Cow<'static, str>>) -> Self {
        Self { status, error: error.into(), hint: None, retry_after: None, bearer_challenge: false }
    }

    pub fn with_hint(mut self, hint: impl Into<Cow<'static, str>>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds `Retry-After` (seconds) for 429 and 503 answers.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    pub fn bad_request(error: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error)
    }

    /// 401 with `WWW-Authenticate: Bearer` (RFC 6750 §3).
    pub fn unauthorized(error: impl Into<Cow<'static, str>>) -> Self {
        Self { bearer_challenge: true, ..Self::new(StatusCode::UNAUTHORIZED, error) }
    }

    pub fn forbidden(error: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, error)
    }

    pub fn not_found(error: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error)
    }

    pub fn conflict(error: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, error)
    }

    /// 500 with a fixed body. `cause` is logged here, with the request's span,
    /// and never sent.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = cause.to_string();
        let mut source = cause.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        tracing::error!(error.cause_chain = %chain, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
    }

    /// 503 for a dependency that is down or overloaded; `what` is logged.
    pub fn unavailable(what: &str) -> Self {
        tracing::warn!(dependency = what, "service unavailable");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "Service temporarily unavailable").with_retry_after(1)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.error
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.error)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(Body { error: &self.error, hint: self.hint.as_deref() })).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.bearer_challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Store failures: an unreachable database is a 503 (retry), a unique
/// violation the caller did not handle a 409, anything else our bug (500,
/// logged, never shown).
impl From<db::StoreError> for ApiError {
    fn from(e: db::StoreError) -> Self {
        match e {
            db::StoreError::Unavailable(_) => ApiError::unavailable("database"),
            db::StoreError::Conflict => ApiError::conflict("Conflict"),
            other => ApiError::internal(&other),
        }
    }
}

/// The JSON 404 for paths no route matches.
pub async fn route_not_found(uri: axum::http::Uri) -> ApiError {
    // Only the path, truncated: the query may carry tokens, and an echoed
    // path must not become a reflection vector of unbounded size.
    let path: String = uri.path().chars().take(200).collect();
    ApiError::not_found("Route not found").with_hint(format!("No route for path {path}"))
}

/// The JSON 405 for a known path with a method it does not allow.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}

/// Turns a panic in a handler into the fixed JSON 500 (the panic itself is
/// logged by the panic hook); used with `tower_http::catch_panic`.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(e: ApiError) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let r = e.into_response();
        let (parts, body) = r.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn errors_render_the_envelope() {
        let (status, headers, body) = body_of(ApiError::unauthorized("Invalid credentials")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, serde_json::json!({"error": "Invalid credentials"}));
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        let (_, headers, body) =
            body_of(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "x").with_hint("y").with_retry_after(30)).await;
        assert_eq!(body, serde_json::json!({"error": "x", "hint": "y"}));
        assert_eq!(headers[header::RETRY_AFTER], "30");
    }

    #[test]
    fn store_errors_map_to_statuses() {
        assert_eq!(ApiError::from(db::StoreError::Unavailable(sqlx::Error::PoolTimedOut)).status(), 503);
        assert_eq!(ApiError::from(db::StoreError::Conflict).status(), 409);
        assert_eq!(ApiError::from(db::StoreError::Database(sqlx::Error::RowNotFound)).status(), 500);
    }

    #[tokio::test]
    async fn internal_errors_do_not_leak_their_cause() {
        let cause = std::io::Error::other("connection to 10.0.0.5:5432 refused; password=hunter2");
        let (status, _, body) = body_of(ApiError::internal(&cause)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!body.to_string().contains("hunter2"));
        assert!(!body.to_string().contains("5432"));
    }
}
