//! Request ids and the per-request span.
//!
//! A well-formed incoming `X-Request-ID` (1–128 characters of `[A-Za-z0-9._:-]`)
//! is kept so a caller can correlate logs; anything else is replaced by a new
//! UUID, so a hostile id cannot inject into log lines. The id is put in the
//! request's extensions ([`RequestId`]), in one tracing span that covers the
//! whole request, and in the response header. One access-log line is written
//! per request: method, path without the query (queries can carry tokens),
//! status and latency.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

/// The header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request id of the current request, in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Whether a client-sent id may be kept.
pub fn is_valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Middleware: keep a valid client id or mint one, open the span, log the
/// request, echo the id.
pub async fn assign_request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    run_with_request_id(req, next, id).await
}

/// The header carrying the client's own request id when the gateway minted another.
pub const CLIENT_REQUEST_ID_HEADER: &str = "x-client-request-id";

/// Middleware for the gateway: always mint a new id (API.md: a client-chosen
/// id would let a client make a downstream replay check refuse its own
/// requests); a valid client id travels on as `X-Client-Request-ID`.
pub async fn mint_request_id(mut req: Request, next: Next) -> Response {
    let client_id = req.headers_mut().remove(REQUEST_ID_HEADER);
    req.headers_mut().remove(CLIENT_REQUEST_ID_HEADER);
    if let Some(v) = client_id.filter(|v| v.to_str().is_ok_and(is_valid_request_id)) {
        req.headers_mut().insert(CLIENT_REQUEST_ID_HEADER, v);
    }
    run_with_request_id(req, next, uuid::Uuid::new_v4().to_string()).await
}

async fn run_with_request_id(mut req: Request, next: Next, id: String) -> Response {
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request completed"
        );
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_validated() {
        assert!(is_valid_request_id("3f1c2a9e-7b7d-4a5e-9a51-0d6f0c0b7c11"));
        assert!(is_valid_request_id("trace:abc.def_1"));
        for bad in ["", "a b", "x\ny", "<script>", "ü", &"a".repeat(129)] {
            assert!(!is_valid_request_id(bad), "{bad:?}");
        }
    }
}
