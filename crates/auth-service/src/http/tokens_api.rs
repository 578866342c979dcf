//! Login, refresh, logout and verify: the token lifecycle.
//!
//! Refresh rotation (RFC 9700 §4.14.2): every refresh advances the session's
//! counter by one compare-and-swap and returns a token for the new counter.
//! A token whose counter is behind the session's was already used:
//! - within `REFRESH_TOKEN_REUSE_INTERVAL` seconds of the rotation, and only
//!   for the token just rotated, the current pair is returned again, so two
//!   tabs refreshing at once converge instead of logging the user out;
//! - otherwise the whole session is revoked (reuse detection), for good.
//!
//! # The refresh cookie
//!
//! Every login and refresh also sets the refresh token as an `HttpOnly`
//! cookie scoped to the auth routes ([`super::cookies`]), and refresh and
//! logout accept it when the body carries no `refresh_token` (`{}`). That
//! lets a browser page survive a reload without any script ever holding the
//! refresh token. Two rules keep it safe:
//!
//! - A cookie is sent by the browser whoever made the page, so a
//!   cookie-authenticated call is refused (403) unless the browser says the
//!   page is the gateway's own (`Sec-Fetch-Site: same-origin`) or its
//!   `Origin` is one of `CORS_ALLOWED_ORIGINS`. `SameSite=Strict` alone is
//!   not enough: pages on another port of the same host are same-site.
//! - A refresh authenticated by the cookie answers without `refresh_token`
//!   in the body (the rotated token travels only in the cookie): a script
//!   injected into the page could make that call, and must not walk away
//!   with a token that outlives the access token. Login still returns it in
//!   the body (API.md's contract); a cookie client simply never reads it.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common_http::{ApiError, StrictJson};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::account::UserView;
use super::cookies::{REFRESH_COOKIE, clear_csrf_cookie, clear_refresh_cookie, set_csrf_cookie, set_refresh_cookie};
use super::{AuthUser, ClientInfo};
use crate::audit::{self, Event, EventKind};
use crate::domain::{Email, MAX_PASSWORD_CHARS};
use crate::state::AppState;
use crate::store::{NewSession, Session, User};
use crate::throttle;
use common_http::cookies::{CSRF_COOKIE, cookie_value};

const INVALID_CREDENTIALS: &str = "Invalid credentials";
const INVALID_REFRESH: &str = "Invalid or expired refresh token";

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// Absent: the refresh cookie is used instead (see the module docs).
    #[serde(default)]
    refresh_token: Option<String>,
}

/// The refresh token a refresh or logout presents, and where it came from.
enum Presented {
    Body(String),
    Cookie(String),
}

impl Presented {
    fn token(&self) -> &str {
        match self {
            Self::Body(t) | Self::Cookie(t) => t,
        }
    }
}

/// The body's refresh token, else the refresh cookie's; `None` when there
/// is neither.
///
/// # Errors
/// 403 for a cookie sent from a page that is neither the gateway's own nor
/// on an allowed origin (a cross-site request riding the victim's cookie).
fn presented_refresh_token(
    state: &AppState,
    headers: &HeaderMap,
    body: RefreshRequest,
) -> Result<Option<Presented>, ApiError> {
    if let Some(token) = body.refresh_token {
        return Ok(Some(Presented::Body(token)));
    }
    let Some(token) = cookie_value(headers, REFRESH_COOKIE) else {
        return Ok(None);
    };
    let same_origin = headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"same-origin"));
    let allowed_origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|origin| state.config.allowed_origins.iter().any(|a| a == origin));
    if !(same_origin || allowed_origin) {
        tracing::info!(reason = "cross_site_cookie", "refresh cookie refused");
        return Err(ApiError::forbidden("Cross-site request refused").with_hint(
            "The refresh_token cookie is accepted only from the gateway's own page or an allowed origin; \
             other clients send {\"refresh_token\": …} in the body",
        ));
    }
    Ok(Some(Presented::Cookie(token)))
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
    let keys = state.keys();
    let (access_token, _) =
        keys.issuer.issue(&user_id.to_string(), email, &sid, state.now()).map_err(|e| ApiError::internal(&e))?;
    let refresh_token = state.config.refresh_key.mint(session_id, u64::try_from(counter).unwrap_or_default());
    let csrf_token = state.config.csrf_key.mint(&sid).map_err(|e| ApiError::internal(&e))?;
    Ok(TokenPair { access_token, refresh_token, csrf_token, token_type: "Bearer", expires_in: keys.issuer.ttl_secs() })
}

/// A JSON body with the CSRF and refresh cookies of `pair` set (or both
/// cleared when `pair` is `None`); the CSRF cookie comes first.
fn with_token_cookies(
    state: &AppState,
    status: StatusCode,
    body: serde_json::Value,
    pair: Option<&TokenPair>,
) -> Response {
    let config = &state.config;
    let (secure, path) = (config.secure_cookies, config.refresh_cookie_path.as_str());
    let cookies = match pair {
        Some(pair) => [
            set_csrf_cookie(&pair.csrf_token, secure),
            set_refresh_cookie(&pair.refresh_token, path, config.refresh_token_ttl_secs, secure),
        ],
        None => [clear_csrf_cookie(secure), clear_refresh_cookie(path, secure)],
    };
    let mut response = (status, Json(body)).into_response();
    for cookie in cookies.into_iter().flatten() {
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
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Tokens and the csrf_token cookie, or a second-factor challenge", body = super::openapi::LoginResult),
        (status = 400, description = "Invalid request body", body = common_http::openapi::ErrorBody),
        (status = 401, description = "Invalid credentials", body = common_http::openapi::ErrorBody),
        (status = 403, description = "Account is disabled; or Email address not verified (with REQUIRE_EMAIL_VERIFICATION)", body = common_http::openapi::ErrorBody),
        (status = 429, description = "Too many failed logins for this account", body = common_http::openapi::ErrorBody),
    ))]
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
    crate::recovery::ensure_email_verified(&state, &client, &user).await?;
    if verified.needs_rehash {
        upgrade_password_hash(&state, &client, user.user_id, email, &body.password).await;
    }
    // With TOTP on, the failure count is cleared only once the second factor
    // passes: clearing it here would let whoever has the password reset the
    // lockout with every login and guess codes without end.
    if state.store.find_totp(user.user_id).await?.is_some_and(|t| t.is_enabled()) {
        return super::mfa::start_challenge(&state, &client, &user).await;
    }
    throttle::clear_login_failures(&state, email).await?;
    complete_login(&state, &client, &user).await
}

/// Opens a session for `user` and answers with the login body and the CSRF
/// cookie: the one way a login ends, with a password alone or after the
/// second factor.
pub(super) async fn complete_login(state: &AppState, client: &ClientInfo, user: &User) -> Result<Response, ApiError> {
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
    let pair = issue_tokens(state, user.user_id, &user.email, session.session_id, session.refresh_counter)?;
    let event = Event {
        user_id: Some(user.user_id),
        email: Some(&user.email),
        session_id: Some(session.session_id),
        ..Event::default()
    };
    audit::record(state, EventKind::LoginSucceeded, client, event).await;
    let body = merge("Login successful", &pair, Some(("user", serde_json::json!(UserView::from(user)))));
    Ok(with_token_cookies(state, StatusCode::OK, body, Some(&pair)))
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

/// `POST /auth/refresh`: the body's `refresh_token`, or the refresh cookie
/// (see the module docs). A refused cookie is cleared, so the browser stops
/// presenting it.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens (the refresh token rotates) and cookies", body = super::openapi::TokensIssued),
        (status = 400, description = "Invalid request body", body = common_http::openapi::ErrorBody),
        (status = 401, description = "Invalid or expired refresh token", body = common_http::openapi::ErrorBody),
        (status = 403, description = "A cookie-authenticated call from a foreign page", body = common_http::openapi::ErrorBody),
    ))]
pub async fn refresh_tokens(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    StrictJson(body): StrictJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    let Some(presented) = presented_refresh_token(&state, &headers, body)? else {
        return Err(ApiError::unauthorized(INVALID_REFRESH)
            .with_hint("Send {\"refresh_token\": …} in the body, or the refresh_token cookie set at login"));
    };
    match (rotate_refresh_token(&state, &client, presented.token()).await, &presented) {
        (Ok(pair), Presented::Body(_)) => {
            let body = merge("Token refreshed successfully", &pair, None);
            Ok(with_token_cookies(&state, StatusCode::OK, body, Some(&pair)))
        }
        (Ok(pair), Presented::Cookie(_)) => {
            let mut body = merge("Token refreshed successfully", &pair, None);
            if let Some(fields) = body.as_object_mut() {
                fields.remove("refresh_token");
            }
            Ok(with_token_cookies(&state, StatusCode::OK, body, Some(&pair)))
        }
        (Err(e), Presented::Cookie(_)) if e.status() == StatusCode::UNAUTHORIZED => {
            let mut response = e.into_response();
            let config = &state.config;
            if let Some(cookie) = clear_refresh_cookie(&config.refresh_cookie_path, config.secure_cookies) {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            Ok(response)
        }
        (Err(e), _) => Err(e),
    }
}

/// Rotation proper: the new pair for a valid `token`, the current pair
/// again within the grace window, else 401 (revoking the session on reuse).
async fn rotate_refresh_token(state: &AppState, client: &ClientInfo, token: &str) -> Result<TokenPair, ApiError> {
    let refused = |why: &'static str| {
        tracing::info!(reason = why, "refresh refused");
        ApiError::unauthorized(INVALID_REFRESH)
    };
    let presented = state.config.refresh_key.parse(token).map_err(|_| refused("invalid_token"))?;
    let presented_counter = i64::try_from(presented.counter).map_err(|_| refused("invalid_token"))?;
    let now = state.now();
    let session = state.store.find_session(presented.session_id).await?.ok_or_else(|| refused("unknown_session"))?;
    if !session.is_active(now) {
        return Err(refused("session_inactive"));
    }
    let Some(user) = state.store.find_user(session.user_id).await?.filter(|u| u.active) else {
        if state.store.revoke_session(session.session_id, "user_inactive", now).await? {
            state.revocations.publish(&[session.session_id]).await;
        }
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
                audit::record(state, EventKind::RefreshSucceeded, client, event()).await;
                return issue_tokens(state, user.user_id, &user.email, session.session_id, counter);
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
    if within_grace(state, &current, presented_counter, now) {
        audit::record(state, EventKind::RefreshGraceReplay, client, event()).await;
        return issue_tokens(state, user.user_id, &user.email, current.session_id, current.refresh_counter);
    }
    if state.store.revoke_session(current.session_id, "refresh_token_reuse", now).await? {
        state.revocations.publish(&[current.session_id]).await;
    }
    let detail = Some(format!("token {presented_counter} presented, session at {}", current.refresh_counter));
    audit::record(state, EventKind::RefreshReuseDetected, client, Event { detail, ..event() }).await;
    Err(refused("reuse_detected"))
}

/// The token rotated last, presented again within the grace window.
fn within_grace(state: &AppState, session: &Session, presented: i64, now: i64) -> bool {
    let interval = state.config.refresh_reuse_interval_secs;
    interval > 0 && presented + 1 == session.refresh_counter && now - session.last_rotated_at < interval
}

/// `POST /auth/logout`: ends the session of the presented refresh token (the
/// body's or the cookie's; any authentic token of the session will do) and
/// clears both cookies. The answer is the same whether or not the token was
/// valid, or present.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "The session is over; the cookies are cleared", body = super::openapi::Message),
        (status = 400, description = "Invalid request body", body = common_http::openapi::ErrorBody),
        (status = 403, description = "A cookie-authenticated call from a foreign page", body = common_http::openapi::ErrorBody),
    ))]
pub async fn logout_session(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    StrictJson(body): StrictJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    let presented = presented_refresh_token(&state, &headers, body)?;
    if let Some(presented) = presented
        && let Ok(presented) = state.config.refresh_key.parse(presented.token())
        && let Some(session) = state.store.find_session(presented.session_id).await?
        && state.store.revoke_session(session.session_id, "logout", state.now()).await?
    {
        state.revocations.publish(&[session.session_id]).await;
        let event = Event { user_id: Some(session.user_id), session_id: Some(session.session_id), ..Event::default() };
        audit::record(&state, EventKind::Logout, &client, event).await;
    }
    Ok(with_token_cookies(&state, StatusCode::OK, serde_json::json!({"message": "Logged out successfully"}), None))
}

/// `GET /auth/verify`: the access token is valid (an [`AuthUser`]); reports
/// whether the request also carries a CSRF header that matches its cookie and
/// is bound to the token's session.
#[utoipa::path(get, path = "/auth/verify", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The access token is valid", body = super::openapi::TokenVerified),
        (status = 401, description = "No valid access token", body = common_http::openapi::ErrorBody),
    ))]
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

/// Clears the CSRF and refresh cookies on a response (used by logout-all).
pub(super) fn clearing_token_cookies(state: &AppState, body: serde_json::Value) -> Response {
    with_token_cookies(state, StatusCode::OK, body, None)
}
