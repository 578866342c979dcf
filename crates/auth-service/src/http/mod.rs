//! The auth service's HTTP API (API.md, `/auth/*` without the `/api/v1`
//! prefix the gateway strips).
//!
//! Layering: handlers parse input into domain types, call the store and the
//! token primitives, and turn domain failures into [`ApiError`]s here, in the
//! HTTP layer, with the seed's messages.

mod account;
mod cookies;
mod extract;
pub mod internal;
mod mfa;
pub mod openapi;
mod recovery;
mod sessions;
mod tokens_api;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use common_http::ApiError;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use extract::AuthUser;

use crate::password::HashError;
use crate::state::AppState;

/// Bodies on `/auth/*` are small JSON documents; anything larger is refused (413).
pub const AUTH_BODY_LIMIT: usize = 16 * 1024;

/// The public API's routes (`/auth/*`) with their OpenAPI descriptions:
/// [`router`] serves them and [`openapi()`] documents them, so none is served
/// undocumented. The JWKS, the internal calls and the probes are not part of
/// the API clients call through the gateway.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(account::register_user))
        .routes(routes!(tokens_api::login_user))
        .routes(routes!(tokens_api::refresh_tokens))
        .routes(routes!(tokens_api::logout_session))
        .routes(routes!(tokens_api::verify_token))
        .routes(routes!(account::current_user))
        .routes(routes!(account::change_password))
        .routes(routes!(sessions::list_sessions))
        .routes(routes!(sessions::revoke_session))
        .routes(routes!(sessions::logout_all_sessions))
        .routes(routes!(mfa::verify_mfa))
        .routes(routes!(mfa::setup_totp))
        .routes(routes!(mfa::confirm_totp))
        .routes(routes!(mfa::disable_totp))
        .routes(routes!(recovery::forgot_password))
        .routes(routes!(recovery::reset_password))
        .routes(routes!(recovery::verify_email))
        .routes(routes!(recovery::resend_verification))
}

/// The service's OpenAPI document: `/auth/*` as this service sees it (the
/// gateway serves it under `/api/v1`), with the `bearer` scheme.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    let mut document = openapi::AuthApi::openapi();
    document.merge(api_routes().into_openapi());
    document
}

/// The service's routes, without the standard layers (see [`crate::app`]).
pub fn router(state: AppState) -> Router {
    // Token responses must never be cached (RFC 6749 §5.1).
    let (auth, _) = api_routes().split_for_parts();
    let auth = auth
        .layer(DefaultBodyLimit::max(AUTH_BODY_LIMIT))
        .layer(SetResponseHeaderLayer::overriding(header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .layer(SetResponseHeaderLayer::overriding(header::PRAGMA, HeaderValue::from_static("no-cache")));
    Router::new()
        .merge(auth)
        .route("/.well-known/jwks.json", get(jwks))
        .route("/internal/revocations", get(internal::revocation_feed))
        .route("/internal/users/{id}/delete", post(internal::delete_user))
        .route("/internal/users/{id}", get(internal::user_summary))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .with_state(state)
}

async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"))], axum::Json(state.keys().jwks.clone()))
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "healthy", "service": "auth-service"}))
}

async fn ready(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    match state.store.ping().await {
        Ok(()) => Ok(axum::Json(serde_json::json!({"status": "ready", "service": "auth-service"}))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Database unavailable"))
        }
    }
}

/// Who is calling: the client's address (the TCP peer, or what a trusted
/// proxy says in `X-Forwarded-For`) and a sanitised `User-Agent`, for
/// sessions and the audit log.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let trusted = &state.config.trusted_proxies;
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| common_http::client_ip::client_ip(addr.ip(), &parts.headers, trusted).to_string());
        let user_agent = parts.headers.get(header::USER_AGENT).map(|v| sanitize_user_agent(v.as_bytes()));
        Ok(Self { ip, user_agent })
    }
}

/// At most 256 printable ASCII characters: the raw header went into the
/// seed's logs as-is (log injection, SEED-FLAWS F28).
fn sanitize_user_agent(raw: &[u8]) -> String {
    raw.iter().take(256).map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '?' }).collect()
}

impl From<crate::accounts::CreateAccountError> for ApiError {
    fn from(e: crate::accounts::CreateAccountError) -> Self {
        use crate::accounts::CreateAccountError as E;
        match e {
            E::Invalid(field) => field.into(),
            E::EmailTaken => ApiError::conflict("User with this email already exists"),
            E::Hash(h) => h.into(),
            E::Store(s) => s.into(),
        }
    }
}

impl From<HashError> for ApiError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => ApiError::unavailable("password hashing pool"),
            HashError::Failed(_) => ApiError::internal(&e),
        }
    }
}

impl From<crate::domain::FieldError> for ApiError {
    fn from(e: crate::domain::FieldError) -> Self {
        ApiError::bad_request(e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_are_sanitised() {
        assert_eq!(sanitize_user_agent(b"curl/8.0\r\nX-Injected: 1"), "curl/8.0??X-Injected: 1");
        assert_eq!(sanitize_user_agent(&[b'a'; 1000]).len(), 256);
    }

    #[test]
    fn store_errors_map_to_statuses() {
        assert_eq!(ApiError::from(HashError::Busy).status(), 503);
    }
}
