//! Per-account login throttling inside the auth service.
//!
//! The service can be reached without the gateway (SEED-FLAWS F5), so it
//! limits password guessing itself: after `LOGIN_MAX_FAILURES` failed
//! attempts for one email within `LOGIN_FAILURE_WINDOW` seconds, further
//! attempts get 429 with `Retry-After` until the oldest failure leaves the
//! window. Unknown emails are counted the same way, so the answer never tells
//! whether an account exists. Failures live in the database, so several auth
//! processes share the count. A successful login clears them.

use axum::http::StatusCode;
use common_http::ApiError;

use crate::audit::{self, Event, EventKind};
use crate::http::ClientInfo;
use crate::state::AppState;

/// Refuses the attempt with 429 when `email` is locked out.
///
/// # Errors
/// 429 with `Retry-After`, or a store error.
pub async fn ensure_login_allowed(state: &AppState, email: &str, client: &ClientInfo) -> Result<(), ApiError> {
    let now = state.now();
    let window = state.config.login_failure_window_secs;
    let failures = state.store.login_failures_since(email, now - window).await?;
    if failures.count < state.config.login_max_failures {
        return Ok(());
    }
    let retry_after = failures.oldest.map_or(window, |oldest| oldest + window - now).max(1);
    audit::record(state, EventKind::LoginLocked, client, Event { email: Some(email), ..Event::default() }).await;
    Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "Too many failed login attempts")
        .with_hint("Wait before trying again")
        .with_retry_after(u64::try_from(retry_after).unwrap_or(1)))
}

/// Counts one failed attempt for `email`.
///
/// # Errors
/// A store error.
pub async fn record_login_failure(state: &AppState, email: &str) -> Result<(), ApiError> {
    let now = state.now();
    state.store.record_login_failure(email, now, now - state.config.login_failure_window_secs).await?;
    Ok(())
}

/// Forgets the failures of `email` after a successful login.
///
/// # Errors
/// A store error.
pub async fn clear_login_failures(state: &AppState, email: &str) -> Result<(), ApiError> {
    state.store.clear_login_failures(email).await?;
    Ok(())
}
