//! The auth service's OpenAPI description: the bodies the handlers build
//! (as JSON values, in the seed's shapes), the `bearer` security scheme of
//! the routes that take an access token, and the document's frame. The
//! paths come from the handlers' `#[utoipa::path]` annotations, gathered by
//! the router itself (`api_routes` in [`super`]).

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::account::UserView;

/// The security scheme's name, as the handlers' annotations write it.
pub const BEARER: &str = "bearer";

/// The frame of the service's document; the paths are merged in.
#[derive(OpenApi)]
#[openapi(
    info(title = "Gatehouse auth service", description = "Accounts, logins, tokens, sessions and two-factor sign-in."),
    components(schemas(common_http::openapi::ErrorBody, UserView)),
    modifiers(&BearerScheme),
    tags((name = "auth", description = "Accounts, logins, tokens and sessions"),
         (name = "mfa", description = "Two-factor sign-in (TOTP)"))
)]
pub struct AuthApi;

/// Adds the `bearer` scheme: an access token from login or refresh.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = utoipa::openapi::security::HttpBuilder::from(Http::new(HttpAuthScheme::Bearer))
            .bearer_format("JWT")
            .description(Some("The `access_token` of a login or refresh: `Authorization: Bearer <token>`"))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}

/// `POST /auth/register`.
#[derive(ToSchema)]
pub struct Registered {
    /// `User registered successfully`.
    pub message: String,
    pub user: UserView,
}

/// Tokens from a login, a refresh or a second-factor verification; the
/// `csrf_token` also arrives as the `csrf_token` cookie.
#[derive(serde::Serialize, ToSchema)]
pub struct TokensIssued {
    /// `Login successful` or `Token refreshed successfully`.
    pub message: String,
    pub access_token: String,
    /// Opaque; single use: every refresh rotates it. Absent from a refresh
    /// authenticated by the refresh cookie (the new one is in the cookie).
    #[schema(nullable = false)]
    pub refresh_token: Option<String>,
    /// Send it back as `X-CSRF-Token` on state-changing calls.
    pub csrf_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds the access token lives.
    pub expires_in: i64,
    /// The account (login only).
    #[schema(nullable = false)]
    pub user: Option<UserView>,
}

/// A login of an account with two-factor sign-in on: no tokens yet.
#[derive(serde::Serialize, ToSchema)]
pub struct MfaChallenge {
    /// `Second factor required`.
    pub message: String,
    pub mfa_required: bool,
    /// For `POST /auth/mfa/verify`; single use.
    pub mfa_token: String,
    pub expires_in: i64,
}

/// `POST /auth/login`: tokens, or a second-factor challenge.
#[derive(serde::Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginResult {
    Tokens(TokensIssued),
    Challenge(MfaChallenge),
}

/// A confirmation with nothing more to say.
#[derive(ToSchema)]
pub struct Message {
    pub message: String,
}

/// `GET /auth/verify`.
#[derive(ToSchema)]
pub struct TokenVerified {
    pub valid: bool,
    /// Whether the request also carried a CSRF header equal to its cookie and bound to the session.
    pub csrf_valid: bool,
    pub user: UserView,
}

/// The caller's account (`GET /auth/me`).
#[derive(ToSchema)]
pub struct Account {
    pub id: uuid::Uuid,
    pub email: String,
    pub name: String,
    pub active: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Whether the user followed a verification (or password-reset) link.
    pub email_verified: bool,
}

/// `GET /auth/me`.
#[derive(ToSchema)]
pub struct Me {
    pub user: Account,
}

/// Sessions ended by a password change or a logout everywhere.
#[derive(ToSchema)]
pub struct SessionsRevoked {
    pub message: String,
    pub revoked_sessions: i64,
}

/// One of the caller's active sessions; times in unix seconds.
#[derive(ToSchema)]
pub struct SessionView {
    pub id: uuid::Uuid,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: i64,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// The session of the access token making this call.
    pub current: bool,
}

/// `GET /auth/sessions`.
#[derive(ToSchema)]
pub struct SessionList {
    /// Newest first.
    pub sessions: Vec<SessionView>,
}

/// `DELETE /auth/sessions/{id}`.
#[derive(ToSchema)]
pub struct SessionRevoked {
    /// `Session revoked`.
    pub message: String,
    pub session_id: uuid::Uuid,
}

/// `POST /auth/mfa/totp/setup`: a pending seed, until confirmed.
#[derive(ToSchema)]
pub struct TotpSetup {
    pub message: String,
    /// Base32.
    pub secret: String,
    pub otpauth_uri: String,
    /// The `otpauth_uri` as a QR code (SVG).
    pub qr_svg: String,
    pub algorithm: String,
    pub digits: i64,
    pub period: i64,
}

/// `POST /auth/mfa/totp/confirm`: two-factor sign-in is on.
#[derive(ToSchema)]
pub struct RecoveryCodes {
    pub message: String,
    /// Single-use codes, shown this once.
    pub recovery_codes: Vec<String>,
}
