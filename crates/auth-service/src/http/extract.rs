//! `AuthUser`: the caller of an authenticated auth-service route.
//!
//! The bearer token must be a valid access token (same verifier the gateway
//! uses) whose session is still active and whose user is still active, so
//! logout, password change and account disabling take effect here at once.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use common_http::ApiError;
use tokens::{AccessClaims, BearerError, parse_bearer};
use uuid::Uuid;

use crate::state::AppState;
use crate::store::User;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub claims: AccessClaims,
    pub session_id: Uuid,
    pub user: User,
}

pub(crate) const INVALID_TOKEN: &str = "Invalid or expired token";

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token =
            parse_bearer(parts.headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())).map_err(|e| match e {
                BearerError::Missing => ApiError::unauthorized("Authorization header missing"),
                BearerError::Malformed => {
                    ApiError::unauthorized("Invalid authorization header format. Expected: Bearer <token>")
                }
            })?;
        let claims = state.keys().verifier.verify(token).map_err(|reason| {
            tracing::info!(reason = reason.reason(), "access token refused");
            ApiError::unauthorized(INVALID_TOKEN)
        })?;
        let (Ok(session_id), Ok(user_id)) = (Uuid::parse_str(&claims.sid), Uuid::parse_str(&claims.sub)) else {
            return Err(ApiError::unauthorized(INVALID_TOKEN));
        };
        let now = state.now();
        let session = state.store.find_session(session_id).await?;
        if !session.is_some_and(|s| s.is_active(now) && s.user_id == user_id) {
            tracing::info!(reason = "session_inactive", "access token refused");
            return Err(ApiError::unauthorized(INVALID_TOKEN));
        }
        let Some(user) = state.store.find_user(user_id).await?.filter(|u| u.active) else {
            tracing::info!(reason = "user_inactive", "access token refused");
            return Err(ApiError::unauthorized(INVALID_TOKEN));
        };
        Ok(Self { claims, session_id, user })
    }
}
