//! Password reset and email verification by mailed single-use links.
//!
//! - **Tokens** are 256 random bits (base64url, 43 characters), stored only
//!   as SHA-256: a fast hash suffices for a secret that cannot be guessed,
//!   and a database dump yields no working link. A reset link works for 30
//!   minutes, a verification link for 24 hours (it is mailed at registration
//!   and may sit unread for a while); each works once, and a new link of
//!   the same kind spends the older ones. Tokens are never logged.
//! - **Forgot password** answers the same 202 whatever the email: for an
//!   unknown (or disabled) account it does the same lookups and writes an
//!   audit row, and nowhere hashes a password, so the answer and its timing
//!   do not tell whether an account exists. At most
//!   `MAIL_MAX_PER_ADDRESS_PER_HOUR` mails go to one address in an hour;
//!   further requests are silently ignored (audited), so the endpoint cannot
//!   flood someone's mailbox. The gateway also puts these routes in its
//!   tighter per-IP auth rate limit.
//! - **Reset** spends the token, sets the new password, marks the email
//!   verified (the link proved the mailbox), revokes every session of the
//!   account — the refresh tokens die at once, access tokens at the gateway
//!   through the revocation announcement — and clears the failed-login
//!   count, in one transaction. Two-factor login stays on.
//! - **Verification**: registration queues a verification mail; following
//!   the link marks the email verified. With `REQUIRE_EMAIL_VERIFICATION`
//!   a correct password for an unverified account gets 403 until then
//!   ([`crate::http`]'s login). A new link is sent on request, by email
//!   address, under the same no-enumeration and per-address rules.
//!
//! Mail is queued in the database with the token ([`crate::mail_queue`]),
//! never sent from the request.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common_http::ApiError;
use sha2::{Digest, Sha256};
use tokens::random::{RandomError, random_bytes};
use uuid::Uuid;

use crate::audit::{self, Event, EventKind};
use crate::domain::{Email, NewPassword};
use crate::http::ClientInfo;
use crate::mail_queue::{MailSettings, seal_body};
use crate::state::AppState;
use crate::store::recovery::{NewEmailToken, NewMail, TokenPurpose};
use crate::store::{StoreError, User};

/// The body of every forgot-password answer.
pub const FORGOT_ACCEPTED: &str = "If an account exists for this email, a password reset link has been sent to it";
/// The body of every resend-verification answer.
pub const RESEND_ACCEPTED: &str =
    "If this email belongs to an account that is not verified yet, a new verification link has been sent to it";
/// A correct password for an unverified account, with `REQUIRE_EMAIL_VERIFICATION`.
pub const EMAIL_NOT_VERIFIED: &str = "Email address not verified";
/// A token that is malformed, unknown, spent or expired.
pub const INVALID_TOKEN: &str = "Invalid or expired token";

const TOKEN_CHARS: usize = 43;

/// A new link token and the hash the database keeps of it.
///
/// # Errors
/// [`RandomError`] if the OS random source fails.
pub fn new_link_token() -> Result<(String, String), RandomError> {
    let token = URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
    let hash = link_token_hash(&token);
    Ok((token, hash))
}

/// SHA-256 (hex) of a link token.
pub fn link_token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The token's hash if `raw` has the shape of a link token; `None` otherwise.
fn presented_token_hash(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let well_formed =
        raw.len() == TOKEN_CHARS && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| link_token_hash(raw))
}

/// Why a token-carrying mail was not queued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] tokens::sealed::SealError),
}

impl From<IssueError> for ApiError {
    fn from(e: IssueError) -> Self {
        match e {
            IssueError::Store(s) => s.into(),
            IssueError::Random(r) => ApiError::internal(&r),
            IssueError::Seal(e) => ApiError::internal(&e),
        }
    }
}

/// Stores a new token of `purpose` for `user` and queues its mail, in one
/// transaction, then wakes the sender.
async fn issue_link(
    state: &AppState,
    settings: &MailSettings,
    user: &User,
    purpose: TokenPurpose,
) -> Result<(), IssueError> {
    let (token, token_hash) = new_link_token()?;
    let now = state.now();
    let (ttl, subject, body) = match purpose {
        TokenPurpose::PasswordReset => {
            let ttl = settings.reset_token_ttl_secs;
            (ttl, "Reset your password", reset_mail_body(settings, &user.email, &token, ttl))
        }
        TokenPurpose::EmailVerification => {
            let ttl = settings.verification_token_ttl_secs;
            (ttl, "Verify your email address", verification_mail_body(settings, &user.email, &token, ttl))
        }
    };
    let token_row = NewEmailToken {
        email_token_id: Uuid::now_v7(),
        user_id: user.user_id,
        purpose,
        token_hash,
        created_at: now,
        expires_at: now + ttl,
    };
    let mail_id = Uuid::now_v7();
    let mail = NewMail {
        mail_id,
        kind: purpose.as_str().to_owned(),
        recipient: user.email.clone(),
        subject: subject.to_owned(),
        body: seal_body(state.config.mfa_keys.as_ref(), mail_id, &body)?,
        user_id: Some(user.user_id),
        created_at: now,
        expires_at: now + ttl,
    };
    state.store.issue_email_token(&token_row, &mail).await?;
    state.mail_wake.notify_one();
    Ok(())
}

fn minutes(secs: i64) -> String {
    match secs {
        s if s % 3600 == 0 && s >= 3600 => format!("{} hour{}", s / 3600, if s == 3600 { "" } else { "s" }),
        s => format!("{} minutes", (s + 59) / 60),
    }
}

fn reset_mail_body(settings: &MailSettings, email: &str, token: &str, ttl: i64) -> String {
    format!(
        "Hello,\n\n\
         someone, hopefully you, asked to reset the password of the account {email}.\n\n\
         To choose a new password, open this link within {within}:\n\n\
         {url}/reset-password#token={token}\n\n\
         The link works once. Resetting the password signs the account out everywhere.\n\
         If you did not ask for this, ignore this mail: your password stays as it is.\n\n\
         (API clients: POST {{\"token\": \"<the part after token=>\", \"password\": \"<new password>\"}}\n\
         to {url}/api/v1/auth/password/reset.)\n",
        within = minutes(ttl),
        url = settings.public_url,
    )
}

fn verification_mail_body(settings: &MailSettings, email: &str, token: &str, ttl: i64) -> String {
    format!(
        "Hello,\n\n\
         please confirm that {email} is your email address by opening this link within {within}:\n\n\
         {url}/verify-email#token={token}\n\n\
         If you did not create an account, ignore this mail.\n\n\
         (API clients: POST {{\"token\": \"<the part after token=>\"}} to {url}/api/v1/auth/email/verify.)\n",
        within = minutes(ttl),
        url = settings.public_url,
    )
}

/// Whether another mail may go to `email` now (the per-address hourly limit).
async fn under_mail_limit(state: &AppState, settings: &MailSettings, email: &str) -> Result<bool, StoreError> {
    let recent = state.store.count_mails_since(email, state.now() - 3600).await?;
    Ok(recent < settings.max_per_address_per_hour)
}

/// `POST /auth/password/forgot`: queues a reset link for an active account,
/// within the per-address limit; does nothing visible otherwise.
///
/// # Errors
/// A store failure or a broken random source (500/503): the same for every email.
pub async fn request_password_reset(state: &AppState, client: &ClientInfo, email: &Email) -> Result<(), ApiError> {
    let Some(settings) = &state.config.mail else {
        tracing::warn!("password reset requested, but mail is not configured (SMTP_URL): nothing sent");
        return Ok(());
    };
    let email = email.as_str();
    let user = state.store.find_user_by_email(email).await?.filter(|u| u.active);
    // Counted for unknown emails too: the same queries whatever the answer.
    let under_limit = under_mail_limit(state, settings, email).await?;
    let event = |detail: &str| Event {
        user_id: user.as_ref().map(|u| u.user_id),
        email: Some(email),
        detail: Some(detail.to_owned()),
        ..Event::default()
    };
    match &user {
        None => {
            audit::record(state, EventKind::PasswordResetRequested, client, event("no active account: nothing sent"))
                .await;
        }
        Some(_) if !under_limit => {
            audit::record(state, EventKind::MailThrottled, client, event("password reset: hourly limit reached")).await;
        }
        Some(user) => {
            issue_link(state, settings, user, TokenPurpose::PasswordReset).await?;
            audit::record(state, EventKind::PasswordResetRequested, client, event("link queued")).await;
        }
    }
    Ok(())
}

/// `POST /auth/password/reset`: the outcome, for the HTTP layer.
pub struct ResetDone {
    pub revoked_sessions: usize,
}

/// Sets a new password with a reset token and ends every session.
///
/// # Errors
/// 400 with [`INVALID_TOKEN`] or a password-rule message; 503 when the
/// hashing pool is full; store failures.
pub async fn reset_password(
    state: &AppState,
    client: &ClientInfo,
    token: &str,
    password: String,
) -> Result<ResetDone, ApiError> {
    let password = NewPassword::parse(password)?;
    let Some(hash) = presented_token_hash(token) else {
        return Err(refuse_reset(state, client).await);
    };
    // Checked before the (costly) password hash; spent only in the final transaction.
    if state.store.find_email_token(&hash, TokenPurpose::PasswordReset, state.now()).await?.is_none() {
        return Err(refuse_reset(state, client).await);
    }
    let password_hash = state.hasher.hash(password.expose()).await?;
    let Some(done) = state.store.reset_password(&hash, &password_hash, state.now()).await? else {
        // Spent by a concurrent reset, or expired meanwhile.
        return Err(refuse_reset(state, client).await);
    };
    state.revocations.publish(&done.revoked_sessions).await;
    let user = state.store.find_user(done.user_id).await?;
    if let Some(user) = &user {
        state.store.clear_login_failures(&user.email).await?;
    }
    let event = Event {
        user_id: Some(done.user_id),
        email: user.as_ref().map(|u| u.email.as_str()),
        detail: Some(format!("revoked {} sessions", done.revoked_sessions.len())),
        ..Event::default()
    };
    audit::record(state, EventKind::PasswordReset, client, event).await;
    Ok(ResetDone { revoked_sessions: done.revoked_sessions.len() })
}

async fn refuse_reset(state: &AppState, client: &ClientInfo) -> ApiError {
    audit::record(state, EventKind::PasswordResetFailed, client, Event::default()).await;
    ApiError::bad_request(INVALID_TOKEN)
}

/// Queues a verification link for `user` (registration, resend). Does
/// nothing when mail is not configured.
///
/// # Errors
/// [`IssueError`].
pub async fn send_verification(state: &AppState, client: &ClientInfo, user: &User) -> Result<(), IssueError> {
    let Some(settings) = &state.config.mail else { return Ok(()) };
    issue_link(state, settings, user, TokenPurpose::EmailVerification).await?;
    let event = Event { user_id: Some(user.user_id), email: Some(&user.email), ..Event::default() };
    audit::record(state, EventKind::EmailVerificationSent, client, event).await;
    Ok(())
}

/// `POST /auth/email/resend`: a new verification link for an active,
/// unverified account, within the per-address limit; nothing visible otherwise.
///
/// # Errors
/// Store failures, the same for every email.
pub async fn resend_verification(state: &AppState, client: &ClientInfo, email: &Email) -> Result<(), ApiError> {
    let Some(settings) = &state.config.mail else {
        tracing::warn!("verification mail requested, but mail is not configured (SMTP_URL): nothing sent");
        return Ok(());
    };
    let email = email.as_str();
    let user = state.store.find_user_by_email(email).await?.filter(|u| u.active && u.email_verified_at.is_none());
    let under_limit = under_mail_limit(state, settings, email).await?;
    match &user {
        Some(user) if under_limit => send_verification(state, client, user).await?,
        Some(user) => {
            let event = Event {
                user_id: Some(user.user_id),
                email: Some(email),
                detail: Some("verification: hourly limit reached".to_owned()),
                ..Event::default()
            };
            audit::record(state, EventKind::MailThrottled, client, event).await;
        }
        None => {
            // The same kind of write as the other branches, so the timing says nothing.
            let event = Event {
                email: Some(email),
                detail: Some("verification requested: no unverified account, nothing sent".to_owned()),
                ..Event::default()
            };
            audit::record(state, EventKind::EmailVerificationSent, client, event).await;
        }
    }
    Ok(())
}

/// With `REQUIRE_EMAIL_VERIFICATION`, refuses a login (after the password
/// was verified: only its owner learns this) until the email is verified.
///
/// # Errors
/// 403 `Email address not verified`.
pub async fn ensure_email_verified(state: &AppState, client: &ClientInfo, user: &User) -> Result<(), ApiError> {
    if !state.config.require_email_verification || user.email_verified_at.is_some() {
        return Ok(());
    }
    let event = Event { user_id: Some(user.user_id), email: Some(&user.email), ..Event::default() };
    audit::record(state, EventKind::LoginUnverifiedEmail, client, event).await;
    Err(ApiError::forbidden(EMAIL_NOT_VERIFIED).with_hint(
        "Follow the link mailed to you at registration, or ask for a new one with POST /api/v1/auth/email/resend",
    ))
}

/// `POST /auth/email/verify`: spends the token and marks the email verified.
///
/// # Errors
/// 400 with [`INVALID_TOKEN`]; store failures.
pub async fn verify_email(state: &AppState, client: &ClientInfo, token: &str) -> Result<(), ApiError> {
    let verified = match presented_token_hash(token) {
        Some(hash) => state.store.verify_email(&hash, state.now()).await?,
        None => None,
    };
    let Some(user_id) = verified else {
        audit::record(state, EventKind::EmailVerifyFailed, client, Event::default()).await;
        return Err(ApiError::bad_request(INVALID_TOKEN));
    };
    audit::record(state, EventKind::EmailVerified, client, Event { user_id: Some(user_id), ..Event::default() }).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_only_their_hash_is_kept() {
        let (a, hash_a) = new_link_token().unwrap();
        let (b, _) = new_link_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_CHARS);
        assert_eq!(presented_token_hash(&a), Some(hash_a.clone()));
        assert!(!hash_a.contains(&a));
        for bad in ["", "short", &format!("{a}x"), &a.replace(&a[..1], "!")] {
            assert_eq!(presented_token_hash(bad), None, "{bad}");
        }
    }

    #[test]
    fn lifetimes_read_well() {
        assert_eq!(minutes(1800), "30 minutes");
        assert_eq!(minutes(86_400), "24 hours");
        assert_eq!(minutes(3600), "1 hour");
    }
}
