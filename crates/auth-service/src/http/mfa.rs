//! Two-factor endpoints: TOTP setup, confirmation and removal for a signed-in
//! user (bearer token, like `/auth/me`), and the second step of a login.
//!
//! The rules (sealed seeds, single-use steps and recovery codes, the login
//! challenge) are in [`crate::mfa`]. Here: every wrong code at login or at
//! removal counts toward the account's failed-login lockout
//! ([`crate::throttle`]), so the password alone never buys unlimited guesses
//! at six digits; a wrong code at confirmation does not, since whoever
//! confirms was just shown the seed.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common_http::{ApiError, StrictJson};
use serde::Deserialize;
use tokens::sealed::SealingKeys;
use uuid::Uuid;

use super::tokens_api::complete_login;
use super::{AuthUser, ClientInfo};
use crate::audit::{self, Event, EventKind};
use crate::domain::check_password_length;
use crate::mfa::{self, MfaError, OpenedTotp, SubmittedCode};
use crate::state::AppState;
use crate::store::{MfaChallenge, TotpEnrolment, User};
use crate::throttle;

const INVALID_CODE: &str = "Invalid code";
const INVALID_MFA_TOKEN: &str = "Invalid or expired MFA token";

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    code: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableRequest {
    password: String,
    code: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    mfa_token: String,
    code: String,
}

/// The sealing keys, or 503 when this deployment has none.
fn sealing_keys(state: &AppState) -> Result<&SealingKeys, ApiError> {
    state.config.mfa_keys.as_ref().ok_or_else(|| {
        tracing::error!("TOTP needs MFA_ENCRYPTION_KEY, which is not configured");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Two-factor authentication is not available")
    })
}

impl From<MfaError> for ApiError {
    fn from(e: MfaError) -> Self {
        ApiError::internal(&e)
    }
}

/// `POST /auth/mfa/totp/setup`: a new seed, pending until confirmed. A
/// second setup before confirming replaces the first; with TOTP already on
/// it is refused (409), so a working factor is never silently replaced.
#[utoipa::path(post, path = "/auth/mfa/totp/setup", tag = "mfa", security(("bearer" = [])),
    responses(
        (status = 200, description = "A new TOTP seed, pending until confirmed", body = super::openapi::TotpSetup),
        (status = 409, description = "Two-factor authentication is already enabled", body = common_http::openapi::ErrorBody),
        (status = 503, description = "Two-factor authentication is not available", body = common_http::openapi::ErrorBody),
        (status = 401, description = "No valid access token", body = common_http::openapi::ErrorBody),
    ))]
pub async fn setup_totp(
    State(state): State<AppState>,
    client: ClientInfo,
    caller: AuthUser,
) -> Result<Json<serde_json::Value>, ApiError> {
    let keys = sealing_keys(&state)?;
    let user = &caller.user;
    if state.store.find_totp(user.user_id).await?.is_some_and(|t| t.is_enabled()) {
        return Err(already_enabled());
    }
    let new = mfa::new_totp(keys, user.user_id, &user.email, &state.config.totp_issuer)?;
    if !state.store.begin_totp_setup(&new.sealed, state.now()).await? {
        return Err(already_enabled());
    }
    audit::record(&state, EventKind::MfaSetupStarted, &client, caller_event(&caller)).await;
    Ok(Json(serde_json::json!({
        "message": "Scan the QR code with an authenticator app, then confirm with a code",
        "secret": new.secret_base32.as_str(),
        "otpauth_uri": new.otpauth_uri.as_str(),
        "qr_svg": new.qr_svg,
        "algorithm": "SHA1",
        "digits": 6,
        "period": 30,
    })))
}

/// `POST /auth/mfa/totp/confirm`: a current code from the pending seed turns
/// TOTP on and returns the recovery codes, shown this once.
#[utoipa::path(post, path = "/auth/mfa/totp/confirm", tag = "mfa", request_body = ConfirmRequest, security(("bearer" = [])),
    responses(
        (status = 200, description = "Two-factor sign-in is on", body = super::openapi::RecoveryCodes),
        (status = 400, description = "Invalid code or request body", body = common_http::openapi::ErrorBody),
        (status = 409, description = "Nothing to confirm, or already enabled", body = common_http::openapi::ErrorBody),
        (status = 503, description = "Two-factor authentication is not available", body = common_http::openapi::ErrorBody),
        (status = 401, description = "No valid access token", body = common_http::openapi::ErrorBody),
    ))]
pub async fn confirm_totp(
    State(state): State<AppState>,
    client: ClientInfo,
    caller: AuthUser,
    StrictJson(body): StrictJson<ConfirmRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let SubmittedCode::Totp(code) = SubmittedCode::parse(&body.code)? else {
        return Err(ApiError::bad_request("code must be the 6-digit code from the authenticator app"));
    };
    let user_id = caller.user.user_id;
    let enrolment = match state.store.find_totp(user_id).await? {
        None => {
            return Err(
                ApiError::conflict("No two-factor setup in progress").with_hint("Start with POST /auth/mfa/totp/setup")
            );
        }
        Some(e) if e.is_enabled() => return Err(already_enabled()),
        Some(e) => e,
    };
    let opened = OpenedTotp::open(sealing_keys(&state)?, &enrolment)?;
    let now = state.now();
    let codes = mfa::generate_recovery_codes().map_err(|e| ApiError::internal(&e))?;
    let hashes: Vec<String> = codes.iter().map(|c| c.hash(user_id)).collect();
    // A step at or before the last one used (a replay) loses like a wrong code.
    let confirmed = match opened.matching_step(&code, now) {
        Some(step) => state.store.confirm_totp(user_id, step, &hashes, now).await?,
        None => false,
    };
    if !confirmed {
        audit::record(&state, EventKind::MfaConfirmFailed, &client, caller_event(&caller)).await;
        return Err(ApiError::bad_request(INVALID_CODE)
            .with_hint("Enter the current 6-digit code from the authenticator app; two-factor stays off"));
    }
    reseal_if_stale(&state, &opened, &enrolment).await;
    audit::record(&state, EventKind::MfaEnabled, &client, caller_event(&caller)).await;
    let shown: Vec<String> = codes.iter().map(mfa::RecoveryCode::display).collect();
    Ok(Json(serde_json::json!({
        "message": "Two-factor authentication enabled",
        "recovery_codes": shown,
    })))
}

/// `POST /auth/mfa/totp/disable`: needs the password and a current code (or
/// a recovery code). Removes the seed and every recovery code.
#[utoipa::path(post, path = "/auth/mfa/totp/disable", tag = "mfa", request_body = DisableRequest, security(("bearer" = [])),
    responses(
        (status = 200, description = "Two-factor sign-in is off", body = super::openapi::Message),
        (status = 400, description = "Invalid request body or code", body = common_http::openapi::ErrorBody),
        (status = 403, description = "Password is incorrect, or invalid code", body = common_http::openapi::ErrorBody),
        (status = 409, description = "Two-factor authentication is not enabled", body = common_http::openapi::ErrorBody),
        (status = 429, description = "Too many failed attempts", body = common_http::openapi::ErrorBody),
        (status = 401, description = "No valid access token", body = common_http::openapi::ErrorBody),
    ))]
pub async fn disable_totp(
    State(state): State<AppState>,
    client: ClientInfo,
    caller: AuthUser,
    StrictJson(body): StrictJson<DisableRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = &caller.user;
    throttle::ensure_login_allowed(&state, &user.email, &client).await?;
    check_password_length(&body.password).map_err(|_| wrong_password())?;
    let code = SubmittedCode::parse(&body.code)?;
    let Some(enrolment) = state.store.find_totp(user.user_id).await?.filter(TotpEnrolment::is_enabled) else {
        return Err(ApiError::conflict("Two-factor authentication is not enabled"));
    };
    let failed = |why: &'static str| Event { detail: Some(why.to_owned()), ..caller_event(&caller) };
    if !state.hasher.verify(&body.password, &user.password_hash).await?.matches {
        throttle::record_login_failure(&state, &user.email).await?;
        audit::record(&state, EventKind::MfaDisableFailed, &client, failed("wrong password")).await;
        return Err(wrong_password());
    }
    if let Checked::Refused(why) = check_code(&state, &enrolment, &code).await? {
        throttle::record_login_failure(&state, &user.email).await?;
        audit::record(&state, EventKind::MfaDisableFailed, &client, failed(why)).await;
        return Err(ApiError::forbidden(INVALID_CODE));
    }
    state.store.delete_totp(user.user_id).await?;
    audit::record(&state, EventKind::MfaDisabled, &client, caller_event(&caller)).await;
    Ok(Json(serde_json::json!({"message": "Two-factor authentication disabled"})))
}

/// The login answer for a user with TOTP on, once the password is verified:
/// an `mfa_token` for [`verify_mfa`], and no session, token or cookie yet.
pub(super) async fn start_challenge(state: &AppState, client: &ClientInfo, user: &User) -> Result<Response, ApiError> {
    let (token, token_hash) = mfa::new_mfa_token().map_err(|e| ApiError::internal(&e))?;
    let now = state.now();
    let ttl = state.config.mfa_challenge_ttl_secs;
    let challenge = MfaChallenge {
        mfa_challenge_id: Uuid::now_v7(),
        user_id: user.user_id,
        token_hash,
        created_at: now,
        expires_at: now + ttl,
        used_at: None,
        attempts: 0,
    };
    state.store.create_mfa_challenge(&challenge, now).await?;
    let event = Event { user_id: Some(user.user_id), email: Some(&user.email), ..Event::default() };
    audit::record(state, EventKind::MfaChallengeIssued, client, event).await;
    let body = serde_json::json!({
        "message": "Second factor required",
        "mfa_required": true,
        "mfa_token": token,
        "expires_in": ttl,
    });
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// `POST /auth/mfa/verify`: the `mfa_token` of a password-verified login and
/// a TOTP or recovery code complete the login, with the usual login body.
#[utoipa::path(post, path = "/auth/mfa/verify", tag = "mfa", request_body = VerifyRequest,
    responses(
        (status = 200, description = "The usual login body and cookies", body = super::openapi::TokensIssued),
        (status = 400, description = "Invalid request body or code", body = common_http::openapi::ErrorBody),
        (status = 401, description = "Invalid code, or invalid or expired MFA token", body = common_http::openapi::ErrorBody),
        (status = 429, description = "Too many failed attempts", body = common_http::openapi::ErrorBody),
    ))]
pub async fn verify_mfa(
    State(state): State<AppState>,
    client: ClientInfo,
    StrictJson(body): StrictJson<VerifyRequest>,
) -> Result<Response, ApiError> {
    let code = SubmittedCode::parse(&body.code)?;
    let invalid_token = || ApiError::unauthorized(INVALID_MFA_TOKEN);
    if body.mfa_token.is_empty() || body.mfa_token.len() > 128 {
        return Err(invalid_token());
    }
    let now = state.now();
    let max_attempts = state.config.mfa_challenge_max_attempts;
    let challenge = state
        .store
        .claim_mfa_attempt(&mfa::mfa_token_hash(&body.mfa_token), now, max_attempts)
        .await?
        .ok_or_else(invalid_token)?;
    let Some(user) = state.store.find_user(challenge.user_id).await?.filter(|u| u.active) else {
        return Err(invalid_token());
    };
    throttle::ensure_login_allowed(&state, &user.email, &client).await?;
    // Two-factor was turned off after the password step: start again.
    let Some(enrolment) = state.store.find_totp(user.user_id).await?.filter(TotpEnrolment::is_enabled) else {
        return Err(invalid_token());
    };
    let event = |detail: Option<String>| Event {
        user_id: Some(user.user_id),
        email: Some(&user.email),
        detail,
        ..Event::default()
    };
    let factor = match check_code(&state, &enrolment, &code).await? {
        Checked::Accepted(factor) => factor,
        Checked::Refused(why) => {
            throttle::record_login_failure(&state, &user.email).await?;
            let left = max_attempts - challenge.attempts;
            let detail = format!("{why}; {left} attempts left on this mfa_token");
            audit::record(&state, EventKind::MfaVerifyFailed, &client, event(Some(detail))).await;
            return Err(ApiError::unauthorized(INVALID_CODE));
        }
    };
    // A concurrent request with another valid code may have spent it first.
    // The code checked above stays spent then: the mfa_token is one client's,
    // and refusing the race is safer than undoing a single-use mark.
    if !state.store.spend_mfa_challenge(challenge.mfa_challenge_id, now).await? {
        return Err(invalid_token());
    }
    throttle::clear_login_failures(&state, &user.email).await?;
    audit::record(&state, EventKind::MfaVerifySucceeded, &client, event(Some(factor.as_str().to_owned()))).await;
    if factor == Factor::RecoveryCode {
        let left = state.store.count_unused_recovery_codes(user.user_id).await?;
        let detail = Some(format!("{left} recovery codes left"));
        audit::record(&state, EventKind::MfaRecoveryCodeUsed, &client, event(detail)).await;
    }
    complete_login(&state, &client, &user).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Factor {
    Totp,
    RecoveryCode,
}

impl Factor {
    fn as_str(self) -> &'static str {
        match self {
            Self::Totp => "totp",
            Self::RecoveryCode => "recovery_code",
        }
    }
}

/// A code checked against an enabled enrolment; a refusal says why, for the
/// audit log only (the client always hears "Invalid code").
enum Checked {
    Accepted(Factor),
    Refused(&'static str),
}

/// Checks and spends `code`: a TOTP step is accepted once, a recovery code once.
async fn check_code(state: &AppState, enrolment: &TotpEnrolment, code: &SubmittedCode) -> Result<Checked, ApiError> {
    let now = state.now();
    let user_id = enrolment.user_id;
    match code {
        SubmittedCode::Totp(digits) => {
            let opened = OpenedTotp::open(sealing_keys(state)?, enrolment)?;
            let Some(step) = opened.matching_step(digits, now) else {
                return Ok(Checked::Refused("wrong totp code"));
            };
            if !state.store.use_totp_step(user_id, step, now).await? {
                return Ok(Checked::Refused("totp code already used"));
            }
            reseal_if_stale(state, &opened, enrolment).await;
            Ok(Checked::Accepted(Factor::Totp))
        }
        SubmittedCode::Recovery(recovery) => {
            Ok(if state.store.use_recovery_code(user_id, &recovery.hash(user_id), now).await? {
                Checked::Accepted(Factor::RecoveryCode)
            } else {
                Checked::Refused("unknown or used recovery code")
            })
        }
    }
}

/// Re-seals a seed opened with a previous key under the current one, which
/// finishes the rotation for this user. A failure only postpones it.
async fn reseal_if_stale(state: &AppState, opened: &OpenedTotp, enrolment: &TotpEnrolment) {
    let Some(keys) = state.config.mfa_keys.as_ref().filter(|_| opened.stale) else {
        return;
    };
    let result = match opened.reseal(keys, enrolment.user_id) {
        Ok(sealed) => {
            state.store.reseal_totp_secret(&enrolment.nonce, &sealed, state.now()).await.map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(_) => tracing::info!(user_id = %enrolment.user_id, key_id = keys.current_id(), "TOTP seed re-sealed"),
        Err(e) => tracing::warn!(error = %e, "TOTP seed re-seal failed; will retry at next use"),
    }
}

fn caller_event(caller: &AuthUser) -> Event<'_> {
    Event {
        user_id: Some(caller.user.user_id),
        email: Some(&caller.user.email),
        session_id: Some(caller.session_id),
        ..Event::default()
    }
}

fn already_enabled() -> ApiError {
    ApiError::conflict("Two-factor authentication is already enabled")
        .with_hint("Disable it first (POST /auth/mfa/totp/disable) to enrol a new authenticator")
}

fn wrong_password() -> ApiError {
    ApiError::forbidden("Password is incorrect")
}
