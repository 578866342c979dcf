//! Calls from other Gatehouse services, never from clients.
//!
//! `GET /internal/revocations?since=<unix seconds>` lists the sessions
//! revoked since then, so a gateway without Redis refuses their access
//! tokens within seconds instead of at expiry (SEED-FLAWS F9). The caller
//! authenticates the way the gateway authenticates to every service: an
//! identity assertion (API.md's wire format) signed with `GATEWAY_SECRET`,
//! here for the fixed identity [`INTERNAL_CALLER`].

use axum::Json;
use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use common_http::ApiError;
use serde::Deserialize;
use tokens::assertion::Assertion;

use crate::state::AppState;

/// The user id an internal caller signs as.
pub const INTERNAL_CALLER: &str = "gatehouse-internal";

/// The most entries one feed page returns.
pub const FEED_PAGE: i64 = 1000;

#[derive(Deserialize)]
pub struct FeedQuery {
    since: i64,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks the internal caller's assertion over this exact request.
fn authenticate_internal(state: &AppState, parts: &Parts) -> Result<(), ApiError> {
    let refused = || ApiError::unauthorized("Invalid internal credentials");
    if state.config.internal_secrets.is_empty() {
        return Err(ApiError::not_found("Route not found"));
    }
    let h = &parts.headers;
    let (Some(ts), Some(signature), Some(request_id)) =
        (header(h, "x-gateway-timestamp"), header(h, "x-gateway-signature"), header(h, "x-request-id"))
    else {
        return Err(refused());
    };
    let timestamp: i64 = ts.parse().map_err(|_| refused())?;
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or_default();
    let assertion = Assertion {
        timestamp,
        method: parts.method.as_str(),
        path_and_query,
        request_id,
        user_id: INTERNAL_CALLER,
        email: "",
    };
    assertion.verify(signature, &state.config.internal_secrets, state.now()).map_err(|e| {
        tracing::warn!(reason = %e, "internal call refused");
        refused()
    })
}

/// `GET /internal/revocations?since=…`.
pub async fn revocation_feed(
    State(state): State<AppState>,
    parts: Parts,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authenticate_internal(&state, &parts)?;
    let Ok(Query(query)) = query else {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "since must be a unix timestamp"));
    };
    let now = state.now();
    let revoked = state.store.revoked_sessions_since(query.since.max(0), FEED_PAGE).await?;
    let complete = i64::try_from(revoked.len()).unwrap_or(i64::MAX) < FEED_PAGE;
    let entries: Vec<_> =
        revoked.iter().map(|r| serde_json::json!({"session_id": r.session_id, "revoked_at": r.revoked_at})).collect();
    Ok(Json(serde_json::json!({"revoked": entries, "now": now, "complete": complete})))
}
