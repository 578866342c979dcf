//! Login, refresh, logout and verify: the token lifecycle.
//!
//! Refresh rotation (RFC 9700 §4.14.2): every refresh advances the session's
//! counter by one compare-and-swap and returns a token for the new counter.
//! A token whose counter is behind the session's was already used:
//! - within `REFRESH_TOKEN_REUSE_INTERVAL` seconds of the rotation, and only
//!   for the token just rotated, the current pair is returned again, so two
//!   tabs refreshing at once converge instead of logging the user out;
//! - otherwise the whole session is revoked (reuse detection), for good.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common_http::{ApiError, StrictJson};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::account::UserView;
use super::cookies::{clear_csrf_cookie, set_csrf_cookie};
use super::{AuthUser, ClientInfo};
use crate::audit::{self, Event, EventKind};
use crate::domain::{Email, MAX_PASSWORD_CHARS};
use crate::state::AppState;
use crate::store::{NewSession, Session};
use crate::throttle;
use common_http::cookies::{CSRF_COOKIE, cookie_value};

const INVALID_CREDENTIALS: &str = "Invalid credentials";
const INVALID_REFRESH: &str = "Invalid or expired refresh token";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: String,
}

/// The three tokens every login and refresh hands out.
#[derive(Serialize)]
struct TokenPair {
    access_token: String,
    refresh_token: String,
    csrf_token: String,
    token_type: &'static str,
    expires_in: i64,
}

fn issue_tokens(
    state: &AppState,
    user_id: Uuid,
    email: &str,
    session_id: Uuid,
    counter: i64,
) -> Result<TokenPair, ApiError> {
    let sid = session_id.to_string();
    let (access_token, _) =
        state.issuer.issue(&user_id.to_string(), email, &sid, state.now()).map_err(|e| ApiError::internal(&e))?;
    let refresh_token = state.config.refresh_key.mint(session_id, u64::try_from(counter).unwrap_or_default());
    let csrf_token = state.config.csrf_key.mint(&sid).map_err(|e| ApiError::internal(&e))?;
    Ok(TokenPair { access_token, refresh_token, csrf_token, token_type: "Bearer", expires_in: state.issuer.ttl_secs() })
}

/// A JSON body with the CSRF cookie set (or cleared when `csrf` is `None`).
fn with_csrf_cookie(state: &AppState, status: StatusCode, body: serde_json::Value, csrf: Option<&str>) -> Response {
    let secure = state.config.secure_cookies;
    let cookie = match csrf {
        Some(token) => set_csrf_cookie(token, secure),
        None => clear_csrf_cookie(secure),
    };
    let mut response = (status, Json(body)).into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

fn merge(message: &str, pair: &TokenPair, extra: Option<(&str, serde_json::Value)>) -> serde_json::Value {
    let mut body = serde_json::to_value(pair).unwrap_or_default();
    body["message"] = message.into();
    if let Some((k, v)) = extra {
        body[k] = v;
    }
    body
}

/// `POST /auth/login`.
pub async fn login_user(
    State(state): State<AppState>,
    client: ClientInfo,
    StrictJson(body): StrictJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let email = Email::parse(&body.email)?;
    if body.password.is_empty() {
        return Err(ApiError::bad_request("password is required"));
    }
    if body.password.chars().count() > MAX_PASSWORD_CHARS {
        return Err(ApiError::bad_request("password must be at most 128 characters"));
    }
    let email = email.as_str();
    throttle::ensure_login_allowed(&state, email, &client).await?;

    let user = state.store.find_user_by_email(email).await?;
    // Known or unknown, the same hashing work is done and the same answer given.
    let verified = match &user {
        Some(u) => Some(state.hasher.verify(&body.password, &u.password_hash).await?),
        None => {
            state.hasher.verify_dummy(&body.password).await?;
            None
        }
    };
    let (user, verified) = match (user, verified) {
        (Some(user), Some(v)) if v.matches => (user, v),
        (user, _) => {
            throttle::record_login_failure(&state, email).await?;
            let event = Event { user_id: user.map(|u| u.user_id), email: Some(email), ..Event::default() };
            audit::record(&state, EventKind::LoginFailed, &client, event).await;
            return Err(ApiError::unauthorized(INVALID_CREDENTIALS));
        }
    };
    // Only a caller who knows the password learns that the account is disabled.
    if !user.active {
        let event = Event { user_id: Some(user.user_id), email: Some(email), ..Event::default() };
        audit::record(&state, EventKind::LoginDisabledAccount, &client, event).await;
        return Err(ApiError::forbidden("Account is disabled"));
    }
    throttle::clear_login_failures(&state, email).await?;
    if verified.needs_rehash {
        upgrade_password_hash(&state, &client, user.user_id, email, &body.password).await;
    }

    let now = state.now();
    let session = state
        .store
        .create_session(&NewSession {
            session_id: Uuid::now_v7(),
            user_id: user.user_id,
            now,
            expires_at: now + state.config.session_lifetime_secs,
            user_agent: client.user_agent.clone(),
            ip: client.ip.clone(),
        })
        .await?;
    let pair = issue_tokens(&state, user.user_id, &user.email, session.session_id, session.refresh_counter)?;
    let event = Event {
        user_id: Some(user.user_id),
        email: Some(email),
        session_id: Some(session.session_id),
        ..Event::default()
    };
    audit::record(&state, EventKind::LoginSucceeded, &client, event).await;
    let body = merge("Login successful", &pair, Some(("user", serde_json::json!(UserView::from(&user)))));
    Ok(with_csrf_cookie(&state, StatusCode::OK, body, Some(&pair.csrf_token)))
}

/// Rehashes a legacy (bcrypt or weaker Argon2) hash after a successful login.
/// A failure only delays the upgrade to the next login.
async fn upgrade_password_hash(state: &AppState, client: &ClientInfo, user_id: Uuid, email: &str, password: &str) {
    let result = match state.hasher.hash(password).await {
        Ok(hash) => state.store.set_password_hash(user_id, &hash, state.now()).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(()) => {
            let event = Event { user_id: Some(user_id), email: Some(email), ..Event::default() };
            audit::record(state, EventKind::PasswordRehashed, client, event).await;
        }
        Err(e) => tracing::warn!(error = %e, "password rehash failed; will retry at next login"),
    }
}

/// `POST /auth/refresh`.
pub async fn refresh_tokens(
    State(state): State<AppState>,
    client: ClientInfo,
    StrictJson(body): StrictJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    let refused = |why: &'static str| {
        tracing::info!(reason = why, "refresh refused");
        ApiError::unauthorized(INVALID_REFRESH)
    };
    let presented = state.config.refresh_key.parse(&body.refresh_token).map_err(|_| refused("invalid_token"))?;
    let presented_counter = i64::try_from(presented.counter).map_err(|_| refused("invalid_token"))?;
    let now = state.now();
    let session = state.store.find_session(presented.session_id).await?.ok_or_else(|| refused("unknown_session"))?;
    if !session.is_active(now) {
        return Err(refused("session_inactive"));
    }
    let Some(user) = state.store.find_user(session.user_id).await?.filter(|u| u.active) else {
        state.store.revoke_session(session.session_id, "user_inactive", now).await?;
        return Err(refused("user_inactive"));
    };
    let event = || Event {
        user_id: Some(user.user_id),
        email: Some(&user.email),
        session_id: Some(session.session_id),
        ..Event::default()
    };

    let current = if presented_counter == session.refresh_counter {
        if now >= session.last_rotated_at + state.config.refresh_token_ttl_secs {
            return Err(refused("refresh_token_expired"));
        }
        match state.store.advance_refresh_counter(session.session_id, presented_counter, now).await? {
            Some(counter) => {
                audit::record(&state, EventKind::RefreshSucceeded, &client, event()).await;
                let pair = issue_tokens(&state, user.user_id, &user.email, session.session_id, counter)?;
                return Ok(refreshed(&state, &pair));
            }
            // Another refresh of the same token won the race: judge this one as a reuse.
            None => state.store.find_session(session.session_id).await?.ok_or_else(|| refused("unknown_session"))?,
        }
    } else {
        session.clone()
    };
    if presented_counter > current.refresh_counter || !current.is_active(now) {
        return Err(refused("invalid_token"));
    }
    if within_grace(&state, &current, presented_counter, now) {
        audit::record(&state, EventKind::RefreshGraceReplay, &client, event()).await;
        let pair = issue_tokens(&state, user.user_id, &user.email, current.session_id, current.refresh_counter)?;
        return Ok(refreshed(&state, &pair));
    }
    state.store.revoke_session(current.session_id, "refresh_token_reuse", now).await?;
    let detail = Some(format!("token {presented_counter} presented, session at {}", current.refresh_counter));
    audit::record(&state, EventKind::RefreshReuseDetected, &client, Event { detail, ..event() }).await;
    Err(refused("reuse_detected"))
}

/// The token rotated last, presented again within the grace window.
fn within_grace(state: &AppState, session: &Session, presented: i64, now: i64) -> bool {
    let interval = state.config.refresh_reuse_interval_secs;
    interval > 0 && presented + 1 == session.refresh_counter && now - session.last_rotated_at < interval
}

fn refreshed(state: &AppState, pair: &TokenPair) -> Response {
    with_csrf_cookie(state, StatusCode::OK, merge("Token refreshed successfully", pair, None), Some(&pair.csrf_token))
}

/// `POST /auth/logout`: ends the session of the presented refresh token (any
/// authentic token of the session will do) and clears the CSRF cookie. The
/// answer is the same whether or not the token was valid.
pub async fn logout_session(
    State(state): State<AppState>,
    client: ClientInfo,
    StrictJson(body): StrictJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    if let Ok(presented) = state.config.refresh_key.parse(&body.refresh_token)
        && let Some(session) = state.store.find_session(presented.session_id).await?
        && state.store.revoke_session(session.session_id, "logout", state.now()).await?
    {
        let event = Event { user_id: Some(session.user_id), session_id: Some(session.session_id), ..Event::default() };
        audit::record(&state, EventKind::Logout, &client, event).await;
    }
    Ok(with_csrf_cookie(&state, StatusCode::OK, serde_json::json!({"message": "Logged out successfully"}), None))
}

/// `GET /auth/verify`: the access token is valid (an [`AuthUser`]); reports
/// whether the request also carries a CSRF header that matches its cookie and
/// is bound to the token's session.
pub async fn verify_token(
    State(state): State<AppState>,
    caller: AuthUser,
    headers: HeaderMap,
) -> Json<serde_json::Value> {
    let header_token = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
    let cookie_token = cookie_value(&headers, CSRF_COOKIE);
    let csrf_valid = match (header_token, cookie_token.as_deref()) {
        (Some(h), Some(c)) => {
            tokens::csrf::tokens_equal(h, c) && state.config.csrf_key.verify(&caller.session_id.to_string(), h)
        }
        _ => false,
    };
    Json(serde_json::json!({"valid": true, "csrf_valid": csrf_valid, "user": UserView::from(&caller.user)}))
}

/// Clears the CSRF cookie on a response (used by logout-all).
pub(super) fn clearing_csrf_cookie(state: &AppState, body: serde_json::Value) -> Response {
    with_csrf_cookie(state, StatusCode::OK, body, None)
}
