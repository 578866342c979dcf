//! Calls from other Gatehouse services, never from clients.
//!
//! `GET /internal/revocations?since=<unix seconds>` lists the sessions
//! revoked since then, so a gateway without Redis refuses their access
//! tokens within seconds instead of at expiry (SEED-FLAWS F9). The caller
//! authenticates the way the gateway authenticates to every service: an
//! identity assertion (API.md's wire format) signed with `GATEWAY_SECRET`,
//! here for the fixed identity [`INTERNAL_CALLER`].
//!
//! The user service calls `POST /internal/users/{id}/delete` to delete an
//! account and `GET /internal/users/{id}` for the name given at sign-up.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use common_http::ApiError;
use serde::Deserialize;
use tokens::assertion::Assertion;

use crate::state::AppState;

pub use tokens::assertion::{INTERNAL_CALLER, INTERNAL_EMAIL};

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
        // Distinct from a 404 so a caller never mistakes "disabled" for "already done".
        return Err(ApiError::unavailable("internal endpoints (GATEWAY_SECRET is not set)"));
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
        email: INTERNAL_EMAIL,
    };
    assertion.verify(signature, &state.config.internal_secrets, state.now()).map_err(|e| {
        tracing::warn!(reason = %e, "internal call refused");
        refused()
    })
}

fn user_not_found() -> ApiError {
    ApiError::not_found("User not found")
}

/// An authenticated internal call about user `id`: its id, or 404 for an id
/// that cannot be one.
fn internal_call_about_user(state: &AppState, parts: &Parts, id: &str) -> Result<uuid::Uuid, ApiError> {
    authenticate_internal(state, parts)?;
    uuid::Uuid::parse_str(id).map_err(|_| user_not_found())
}

/// `POST /internal/users/{id}/delete`: the user service's account deletion.
/// Soft-deletes the account (login then answers `Invalid credentials`, the
/// email can register again) and revokes every session, so refresh fails at
/// once and the gateway refuses the access tokens within its poll interval.
pub async fn delete_user(
    State(state): State<AppState>,
    parts: Parts,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user_id = internal_call_about_user(&state, &parts, &id)?;
    let client = crate::http::ClientInfo::default();
    let revoked = crate::accounts::delete_account(&state, &client, user_id).await?.ok_or_else(user_not_found)?.len();
    Ok(Json(serde_json::json!({"message": "User deleted", "user_id": user_id, "revoked_sessions": revoked})))
}

/// `GET /internal/users/{id}`: who the user is, for the user service, which
/// creates a profile on first use and fills its name from the one given at
/// sign-up (the gateway's identity headers carry only the id and email).
/// A deleted or unknown account is 404.
pub async fn user_summary(
    State(state): State<AppState>,
    parts: Parts,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user_id = internal_call_about_user(&state, &parts, &id)?;
    let user = state.store.find_user(user_id).await?.ok_or_else(user_not_found)?;
    Ok(Json(serde_json::json!({"user_id": user.user_id, "email": user.email, "name": user.name})))
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
