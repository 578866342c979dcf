//! The caller's sessions: list, revoke one, revoke all.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::Response;
use common_http::ApiError;
use uuid::Uuid;

use super::tokens_api::clearing_token_cookies;
use super::{AuthUser, ClientInfo};
use crate::audit::{self, Event, EventKind};
use crate::state::AppState;

/// `GET /auth/sessions`: the caller's active sessions, newest first.
#[utoipa::path(get, path = "/auth/sessions", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's active sessions", body = super::openapi::SessionList),
        (status = 401, description = "No valid access token", body = common_http::openapi::ErrorBody),
    ))]
pub async fn list_sessions(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<Json<serde_json::Value>, ApiError> {
    let sessions = state.store.list_active_sessions(caller.user.user_id, state.now()).await?;
    let sessions: Vec<_> = sessions
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.session_id,
                "created_at": s.created_at,
                "last_used_at": s.last_rotated_at,
                "expires_at": s.expires_at,
                "user_agent": s.user_agent,
                "ip": s.ip,
                "current": s.session_id == caller.session_id,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({"sessions": sessions})))
}

/// `DELETE /auth/sessions/{id}`: revokes one of the caller's sessions. Another
/// user's session id gets the same 404 as an unknown one.
#[utoipa::path(delete, path = "/auth/sessions/{id}", tag = "auth", params(("id" = String, Path, description = "A session id from GET /auth/sessions")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The session is revoked", body = super::openapi::SessionRevoked),
        (status = 404, description = "Session not found", body = common_http::openapi::ErrorBody),
        (status = 401, description = "No valid access token", body = common_http::openapi::ErrorBody),
    ))]
pub async fn revoke_session(
    State(state): State<AppState>,
    client: ClientInfo,
    caller: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let not_found = || ApiError::not_found("Session not found");
    let session_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let session = state.store.find_session(session_id).await?.filter(|s| s.user_id == caller.user.user_id);
    let Some(session) = session.filter(|s| s.is_active(state.now())) else {
        return Err(not_found());
    };
    if state.store.revoke_session(session.session_id, "revoked_by_user", state.now()).await? {
        state.revocations.publish(&[session.session_id]).await;
    }
    let event = Event { user_id: Some(caller.user.user_id), session_id: Some(session.session_id), ..Event::default() };
    audit::record(&state, EventKind::SessionRevoked, &client, event).await;
    Ok(Json(serde_json::json!({"message": "Session revoked", "session_id": session.session_id})))
}

/// `POST /auth/logout-all`: revokes every session of the caller, this one too.
#[utoipa::path(post, path = "/auth/logout-all", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "Every session of the caller is revoked, this one too", body = super::openapi::SessionsRevoked),
        (status = 401, description = "No valid access token", body = common_http::openapi::ErrorBody),
    ))]
pub async fn logout_all_sessions(
    State(state): State<AppState>,
    client: ClientInfo,
    caller: AuthUser,
) -> Result<Response, ApiError> {
    let revoked_ids = state.store.revoke_user_sessions(caller.user.user_id, None, "logout_all", state.now()).await?;
    state.revocations.publish(&revoked_ids).await;
    let revoked = revoked_ids.len();
    let event = Event {
        user_id: Some(caller.user.user_id),
        session_id: Some(caller.session_id),
        detail: Some(format!("revoked {revoked} sessions")),
        ..Event::default()
    };
    audit::record(&state, EventKind::LogoutAll, &client, event).await;
    let body = serde_json::json!({"message": "Logged out from all sessions", "revoked_sessions": revoked});
    Ok(clearing_token_cookies(&state, body))
}
