//! Password reset and email verification endpoints (public: the caller has
//! no session, only an email address or a mailed token). The rules are in
//! [`crate::recovery`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use common_http::{ApiError, StrictJson};
use serde::{Deserialize, Serialize};

use super::ClientInfo;
use crate::domain::Email;
use crate::recovery::{self, FORGOT_ACCEPTED, RESEND_ACCEPTED};
use crate::state::AppState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailRequest {
    email: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// The token of the mailed link (the part after `token=`).
    token: String,
    /// The new password (the registration rules).
    password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The token of the mailed link (the part after `token=`).
    token: String,
}

/// An accepted request whose outcome is not told (no account enumeration).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub message: String,
}

/// A password reset.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PasswordResetDone {
    /// `Password has been reset`.
    pub message: String,
    /// Sessions ended: all of the account's.
    pub revoked_sessions: usize,
}

/// A verified email.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Verified {
    /// `Email verified`.
    pub message: String,
}

fn accepted(message: &str) -> (StatusCode, Json<Accepted>) {
    (StatusCode::ACCEPTED, Json(Accepted { message: message.to_owned() }))
}

/// `POST /auth/password/forgot` → 202, the same body for every well-formed email.
#[utoipa::path(post, path = "/auth/password/forgot", tag = "auth", request_body = EmailRequest,
    responses(
        (status = 202, description = "The same answer whether or not the account exists; a link is mailed if it does", body = Accepted),
        (status = 400, description = "Invalid request body or email", body = common_http::openapi::ErrorBody),
    ))]
pub async fn forgot_password(
    State(state): State<AppState>,
    client: ClientInfo,
    StrictJson(body): StrictJson<EmailRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let email = Email::parse(&body.email)?;
    recovery::request_password_reset(&state, &client, &email).await?;
    Ok(accepted(FORGOT_ACCEPTED))
}

/// `POST /auth/password/reset` → 200 with the number of sessions ended.
#[utoipa::path(post, path = "/auth/password/reset", tag = "auth", request_body = ResetRequest,
    responses(
        (status = 200, description = "The password is set; every session of the account is revoked", body = PasswordResetDone),
        (status = 400, description = "Invalid or expired token, or a password rule broken", body = common_http::openapi::ErrorBody),
        (status = 503, description = "The password-hashing pool is full", body = common_http::openapi::ErrorBody),
    ))]
pub async fn reset_password(
    State(state): State<AppState>,
    client: ClientInfo,
    StrictJson(body): StrictJson<ResetRequest>,
) -> Result<Json<PasswordResetDone>, ApiError> {
    let done = recovery::reset_password(&state, &client, &body.token, body.password).await?;
    Ok(Json(PasswordResetDone {
        message: "Password has been reset".to_owned(),
        revoked_sessions: done.revoked_sessions,
    }))
}

/// `POST /auth/email/verify` → 200 once the email is verified.
#[utoipa::path(post, path = "/auth/email/verify", tag = "auth", request_body = VerifyRequest,
    responses(
        (status = 200, description = "The email is verified", body = Verified),
        (status = 400, description = "Invalid or expired token", body = common_http::openapi::ErrorBody),
    ))]
pub async fn verify_email(
    State(state): State<AppState>,
    client: ClientInfo,
    StrictJson(body): StrictJson<VerifyRequest>,
) -> Result<Json<Verified>, ApiError> {
    recovery::verify_email(&state, &client, &body.token).await?;
    Ok(Json(Verified { message: "Email verified".to_owned() }))
}

/// `POST /auth/email/resend` → 202, the same body for every well-formed email.
#[utoipa::path(post, path = "/auth/email/resend", tag = "auth", request_body = EmailRequest,
    responses(
        (status = 202, description = "The same answer whatever the account; a new link is mailed to an unverified one", body = Accepted),
        (status = 400, description = "Invalid request body or email", body = common_http::openapi::ErrorBody),
    ))]
pub async fn resend_verification(
    State(state): State<AppState>,
    client: ClientInfo,
    StrictJson(body): StrictJson<EmailRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let email = Email::parse(&body.email)?;
    recovery::resend_verification(&state, &client, &email).await?;
    Ok(accepted(RESEND_ACCEPTED))
}
