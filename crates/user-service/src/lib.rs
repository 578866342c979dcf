//! The Gatehouse user service: the caller's profile, and deleting the account.
//!
//! Every route but `/health` and `/ready` sits behind the [`guard`]: no
//! valid gateway assertion, no handler (the seed accepted any request without
//! a signature header and returned a hard-coded "John Doe"). The caller is
//! the asserted [`GatewayUser`]; there is no way to name another user, so a
//! user can only ever read or change their own profile. A new profile takes
//! the name given at sign-up, asked of the auth service (an internal call,
//! signed as for deletion below; empty if it cannot answer, and settable).
//!
//! Deleting the account asks the auth service, over an internal call it
//! authenticates (an assertion signed with `GATEWAY_SECRET`), to delete the
//! user and revoke every session; only then is the profile soft-deleted. If
//! the auth service cannot be reached, nothing changes and the caller gets
//! 503, so an account is never half deleted. The auth service may be at an
//! `https://` URL: the call then goes over TLS, the certificate checked
//! against `UPSTREAM_CA` (or the public roots), as the gateway's are.

pub mod openapi;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use common_http::client::InternalClient;
use common_http::{ApiError, StrictJson};
use db::{DatabaseTarget, PoolSettings, StoreError};
use guard::{GatewayUser, GuardConfig, GuardLayer};
use serde::Deserialize;
use tokens::Secret;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::store::ProfileStore;

pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_BIO_CHARS: usize = 1000;

#[derive(Clone)]
pub struct UserServiceConfig {
    pub database: DatabaseTarget,
    pub guard: GuardConfig,
    /// `METRICS_ALLOWED_CIDRS`: who may scrape `/metrics`.
    pub metrics_allowed: Vec<common_http::client_ip::Cidr>,
    /// The auth service, for account deletion (`AUTH_SERVICE_URL`),
    /// `http://` or `https://`.
    pub auth_url: Uri,
    /// Whom an `https://` auth service's certificate must chain to
    /// (`UPSTREAM_CA`, else the public web PKI).
    pub upstream_roots: Arc<rustls::RootCertStore>,
    /// What internal calls are signed with (`GATEWAY_SECRET`, first one used).
    pub internal_secrets: Vec<Secret>,
}

#[derive(Clone)]
pub struct UserState {
    metrics: common_http::metrics::Metrics,
    store: Arc<dyn ProfileStore>,
    config: Arc<UserServiceConfig>,
    client: InternalClient,
}

impl UserState {
    pub fn store(&self) -> &dyn ProfileStore {
        self.store.as_ref()
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("TLS client of the auth service: {0}")]
    Tls(#[from] common_http::tls::TlsError),
}

/// Connects the store (applying migrations) and builds the state.
///
/// # Errors
/// [`StartError`] when the database is unreachable.
pub async fn build_state(config: UserServiceConfig) -> Result<UserState, StartError> {
    let client = common_http::client::internal_client(Duration::from_secs(2), Arc::clone(&config.upstream_roots))?;
    let store = store::connect(config.database.clone(), PoolSettings::default()).await?;
    let metrics = common_http::metrics::MetricsBuilder::new(config.metrics_allowed.clone()).build();
    Ok(UserState { store, metrics, config: Arc::new(config), client })
}

/// The API's routes with their OpenAPI descriptions: [`app`] serves them
/// and [`openapi()`] documents them, so none is served undocumented.
fn api_routes() -> OpenApiRouter<UserState> {
    OpenApiRouter::new().routes(routes!(get_profile, update_profile)).routes(routes!(delete_account))
}

/// The service's OpenAPI document: every route behind the guard, with its
/// paths as this service sees them (the gateway serves them under `/api/v1`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    let mut document = openapi::UserApi::openapi();
    document.merge(api_routes().into_openapi());
    document
}

/// The routes: the profile behind the guard, health and readiness open.
pub fn app(state: UserState) -> Router {
    let metrics = state.metrics.clone();
    let guard = GuardLayer::new(state.config.guard.clone());
    let (protected, _) = api_routes().split_for_parts();
    let protected = protected.route_layer(guard).layer(axum::extract::DefaultBodyLimit::max(16 * 1024));
    let router = Router::new()
        .merge(protected)
        .route("/health", get(|| async { Json(serde_json::json!({"status": "healthy", "service": "user-service"})) }))
        .route("/ready", get(ready))
        .with_state(state);
    common_http::serve::with_standard_layers(metrics.instrument(router))
}

async fn ready(State(state): State<UserState>) -> Result<impl IntoResponse, ApiError> {
    state.config.guard.readiness("user-service", state.store.ping().await).await
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn profile_gone() -> ApiError {
    ApiError::not_found("Profile not found").with_hint("The account was deleted")
}

/// The caller's profile, created on first use from the asserted identity
/// and the name given at sign-up (asked of the auth service once, when the
/// profile is created); 404 once the account is deleted.
async fn profile_of(state: &UserState, user: &GatewayUser) -> Result<store::Profile, ApiError> {
    if let Some(profile) = state.store.get(&user.id).await? {
        return Ok(profile);
    }
    let name = name_from_auth_service(state, &user.id).await.unwrap_or_default();
    state.store.get_or_create(&user.id, &user.email, &name, now()).await?.ok_or_else(profile_gone)
}

/// `GET /users/profile`: created on first use from the asserted identity.
#[utoipa::path(get, path = "/users/profile", tag = "users",
    responses((status = 200, description = "The caller's profile", body = openapi::ProfileResponse)))]
async fn get_profile(State(state): State<UserState>, user: GatewayUser) -> Result<impl IntoResponse, ApiError> {
    let profile = profile_of(&state, &user).await?;
    Ok(Json(serde_json::json!({"user": profile})))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateProfile {
    /// At most 100 characters, trimmed; no control characters.
    #[schema(nullable = false, max_length = 100)]
    name: Option<String>,
    /// At most 1,000 characters; line breaks and tabs allowed.
    #[schema(nullable = false, max_length = 1000)]
    bio: Option<String>,
}

fn check_text(value: &str, field: &'static str, max: usize, multiline: bool) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::bad_request(match field {
            "name" => "name must be at most 100 characters",
            _ => "bio must be at most 1000 characters",
        }));
    }
    let allowed_control = |c: char| multiline && (c == '\n' || c == '\t');
    let bidi = |c: char| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if value.chars().any(|c| (c.is_control() && !allowed_control(c)) || bidi(c)) {
        return Err(ApiError::bad_request(match field {
            "name" => "name must not contain control characters",
            _ => "bio must not contain control characters",
        }));
    }
    Ok(())
}

/// `PUT /users/profile` with `{name?, bio?}`; the seed's response body.
#[utoipa::path(put, path = "/users/profile", tag = "users", request_body = UpdateProfile,
    responses(
        (status = 200, description = "The profile was updated", body = openapi::ProfileUpdated),
        (status = 400, description = "A field is too long or has control characters", body = common_http::openapi::ErrorBody),
    ))]
async fn update_profile(
    State(state): State<UserState>,
    user: GatewayUser,
    StrictJson(body): StrictJson<UpdateProfile>,
) -> Result<impl IntoResponse, ApiError> {
    let name = body.name.as_deref().map(str::trim);
    let bio = body.bio.as_deref();
    if let Some(n) = name {
        check_text(n, "name", MAX_NAME_CHARS, false)?;
    }
    if let Some(b) = bio {
        check_text(b, "bio", MAX_BIO_CHARS, true)?;
    }
    // Make sure the row exists (first use may be a PUT).
    profile_of(&state, &user).await?;
    let profile = state.store.update(&user.id, name, bio, now()).await?.ok_or_else(profile_gone)?;
    Ok(Json(serde_json::json!({
        "message": "Profile updated successfully",
        "user_id": user.id,
        "updated": {"name": profile.name, "bio": profile.bio},
    })))
}

/// `DELETE /users/account`.
#[utoipa::path(delete, path = "/users/account", tag = "users",
    responses(
        (status = 200, description = "The account is deleted and every session ended", body = openapi::AccountDeleted),
        (status = 503, description = "The auth service could not be reached; nothing was deleted", body = common_http::openapi::ErrorBody),
    ))]
async fn delete_account(State(state): State<UserState>, user: GatewayUser) -> Result<impl IntoResponse, ApiError> {
    delete_at_auth_service(&state, &user.id).await?;
    state.store.soft_delete(&user.id, now()).await?;
    tracing::info!(user_id = %user.id, "account deleted");
    Ok(Json(serde_json::json!({"message": "Account deleted successfully", "user_id": user.id})))
}

async fn delete_at_auth_service(state: &UserState, user_id: &str) -> Result<(), ApiError> {
    let response = call_auth_service(state, http::Method::POST, &format!("/internal/users/{user_id}/delete")).await;
    match response {
        Ok(r) if r.status().is_success() || r.status() == StatusCode::NOT_FOUND => Ok(()),
        Ok(r) => {
            tracing::error!(status = r.status().as_u16(), "auth service refused the account deletion");
            Err(ApiError::unavailable("auth service"))
        }
        Err(AuthCallError::Request(_)) => Err(ApiError::bad_request("Invalid user id")),
        Err(AuthCallError::Unreachable(e)) => {
            tracing::error!(error = %e, "auth service unreachable for account deletion");
            Err(ApiError::unavailable("auth service"))
        }
    }
}

/// The name the user gave at sign-up, from the auth service; `None` (logged)
/// when it cannot say, so a profile is still created, with an empty name the
/// user can set.
async fn name_from_auth_service(state: &UserState, user_id: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct UserSummary {
        name: String,
    }
    let response = match call_auth_service(state, http::Method::GET, &format!("/internal/users/{user_id}")).await {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            tracing::warn!(status = r.status().as_u16(), "auth service did not return the user's name");
            return None;
        }
        Err(AuthCallError::Request(e) | AuthCallError::Unreachable(e)) => {
            tracing::warn!(error = %e, "could not ask the auth service for the user's name");
            return None;
        }
    };
    let body = http_body_util::Limited::new(response.into_body(), 64 * 1024);
    let parsed = tokio::time::timeout(AUTH_CALL_TIMEOUT, http_body_util::BodyExt::collect(body))
        .await
        .map_err(|_| "timed out".to_owned())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .and_then(|b| serde_json::from_slice::<UserSummary>(&b.to_bytes()).map_err(|e| e.to_string()));
    match parsed {
        Ok(summary) => Some(summary.name),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable user summary from the auth service");
            None
        }
    }
}

/// How long a call to the auth service may take.
const AUTH_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call to the auth service got no response.
enum AuthCallError {
    /// No request could be made of the path (a user id that makes no URI).
    Request(String),
    /// Sent, but no answer: unreachable, refused, or timed out.
    Unreachable(String),
}

/// `method path` on the auth service, signed as an internal call.
async fn call_auth_service(
    state: &UserState,
    method: http::Method,
    path: &str,
) -> Result<http::Response<hyper::body::Incoming>, AuthCallError> {
    let config = &state.config;
    let request =
        common_http::client::internal_request(&config.auth_url, &method, path, &config.internal_secrets, now())
            .body(Body::empty())
            .map_err(|e| AuthCallError::Request(e.to_string()))?;
    match tokio::time::timeout(AUTH_CALL_TIMEOUT, state.client.request(request)).await {
        Ok(response) => response.map_err(|e| AuthCallError::Unreachable(e.to_string())),
        Err(_) => Err(AuthCallError::Unreachable("timed out".to_owned())),
    }
}

/// Serves until `shutdown`, then drains and closes the pool.
///
/// # Errors
/// I/O errors from the listener.
pub async fn serve(
    state: UserState,
    listener: impl Into<common_http::serve::Listener>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let store = Arc::clone(&state.store);
    let result = common_http::serve::serve(listener, app(state), shutdown).await;
    store.close().await;
    result
}
