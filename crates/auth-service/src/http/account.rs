//! Accounts: registration, the caller's profile, password change.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use common_http::{ApiError, StrictJson};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AuthUser, ClientInfo};
use crate::accounts;
use crate::audit::{self, Event, EventKind};
use crate::domain::{NewPassword, check_password_length};
use crate::state::AppState;
use crate::store::User;
use crate::throttle;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    email: String,
    password: String,
    name: String,
}

/// The public view of a user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub name: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self { id: u.user_id, email: u.email.clone(), name: u.name.clone() }
    }
}

/// `POST /auth/register` → 201, or 409 when the email is taken.
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, description = "The account was created", body = super::openapi::Registered),
        (status = 400, description = "Invalid request body or a field message", body = common_http::openapi::ErrorBody),
        (status = 409, description = "User with this email already exists", body = common_http::openapi::ErrorBody),
    ))]
pub async fn register_user(
    State(state): State<AppState>,
    client: ClientInfo,
    StrictJson(body): StrictJson<RegisterRequest>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let user = accounts::create_account(&state, &client, &body.email, &body.name, body.password).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"message": "User registered successfully", "user": UserView::from(&user)})),
    ))
}

/// `GET /auth/me`: the caller's account.
#[utoipa::path(get, path = "/auth/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's account", body = super::openapi::Me),
        (status = 401, description = "No valid access token", body = common_http::openapi::ErrorBody),
    ))]
pub async fn current_user(caller: AuthUser) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "user": {
            "id": caller.user.user_id,
            "email": caller.user.email,
            "name": caller.user.name,
            "active": caller.user.active,
            "created_at": caller.user.created_at,
            "email_verified": caller.user.email_verified_at.is_some(),
        }
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    current_password: String,
    new_password: String,
}

/// `POST /auth/password`: needs the current password; revokes every other
/// session of the user (the current one stays signed in).
#[utoipa::path(post, path = "/auth/password", tag = "auth", request_body = ChangePasswordRequest, security(("bearer" = [])),
    responses(
        (status = 200, description = "Changed; every other session is revoked", body = super::openapi::SessionsRevoked),
        (status = 400, description = "Invalid request body or new password", body = common_http::openapi::ErrorBody),
        (status = 403, description = "Current password is incorrect", body = common_http::openapi::ErrorBody),
        (status = 429, description = "Too many failed attempts", body = common_http::openapi::ErrorBody),
        (status = 401, description = "No valid access token", body = common_http::openapi::ErrorBody),
    ))]
pub async fn change_password(
    State(state): State<AppState>,
    client: ClientInfo,
    caller: AuthUser,
    StrictJson(body): StrictJson<ChangePasswordRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let email = caller.user.email.as_str();
    // A stolen access token must not become an unthrottled password oracle.
    throttle::ensure_login_allowed(&state, email, &client).await?;
    check_password_length(&body.current_password).map_err(|_| wrong_current_password())?;
    let new_password = NewPassword::parse(body.new_password)?;
    let event = || Event {
        user_id: Some(caller.user.user_id),
        email: Some(email),
        session_id: Some(caller.session_id),
        ..Event::default()
    };
    if !state.hasher.verify(&body.current_password, &caller.user.password_hash).await?.matches {
        throttle::record_login_failure(&state, email).await?;
        audit::record(&state, EventKind::PasswordChangeFailed, &client, event()).await;
        return Err(wrong_current_password());
    }
    let hash = state.hasher.hash(new_password.expose()).await?;
    let revoked_ids = state.store.change_password(caller.user.user_id, &hash, caller.session_id, state.now()).await?;
    state.revocations.publish(&revoked_ids).await;
    let revoked = revoked_ids.len();
    let detail = Some(format!("revoked {revoked} other sessions"));
    audit::record(&state, EventKind::PasswordChanged, &client, Event { detail, ..event() }).await;
    Ok(Json(serde_json::json!({"message": "Password changed successfully", "revoked_sessions": revoked})))
}

fn wrong_current_password() -> ApiError {
    ApiError::forbidden("Current password is incorrect")
}
