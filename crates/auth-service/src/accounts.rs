//! Account operations shared by the HTTP API and the operator's CLI
//! (`gatehouse user …`), so both validate, revoke, announce and audit the
//! same way: creating an account, disabling and enabling it, deleting it,
//! ending every session of it, and marking its email address verified.
//!
//! Whatever ends sessions also announces them ([`crate::revocations`]), so
//! gateways refuse their access tokens on the next request (Redis) or within
//! the feed's poll interval, whichever path they have.

use uuid::Uuid;

use crate::audit::{self, Event, EventKind};
use crate::domain::{DisplayName, Email, FieldError, NewPassword};
use crate::http::ClientInfo;
use crate::password::HashError;
use crate::state::AppState;
use crate::store::{NewUser, StoreError, User};

/// Why an account could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateAccountError {
    #[error("{0}")]
    Invalid(FieldError),
    #[error("User with this email already exists")]
    EmailTaken,
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<FieldError> for CreateAccountError {
    fn from(e: FieldError) -> Self {
        Self::Invalid(e)
    }
}

/// Validates, hashes and stores a new account, and audits it.
///
/// # Errors
/// [`CreateAccountError`].
pub async fn create_account(
    state: &AppState,
    client: &ClientInfo,
    email: &str,
    name: &str,
    password: String,
) -> Result<User, CreateAccountError> {
    let email = Email::parse(email)?;
    let name = DisplayName::parse(name)?;
    let password = NewPassword::parse(password)?;
    let password_hash = state.hasher.hash(password.expose()).await?;
    let new_user = NewUser {
        user_id: Uuid::now_v7(),
        email: email.into_string(),
        password_hash,
        name: name.into_string(),
        now: state.now(),
    };
    let user = match state.store.create_user(&new_user).await {
        Ok(user) => user,
        Err(StoreError::Conflict) => return Err(CreateAccountError::EmailTaken),
        Err(e) => return Err(e.into()),
    };
    let event = Event { user_id: Some(user.user_id), email: Some(&user.email), ..Event::default() };
    audit::record(state, EventKind::UserRegistered, client, event).await;
    // The account exists either way; a lost verification mail can be asked for again.
    if let Err(e) = crate::recovery::send_verification(state, client, &user).await {
        tracing::error!(error = %e, "could not queue the verification mail");
    }
    Ok(user)
}

/// Ends every session of `user_id` (but `keep`), announces and audits it;
/// the ids ended.
///
/// # Errors
/// [`StoreError`].
pub async fn end_sessions(
    state: &AppState,
    client: &ClientInfo,
    user_id: Uuid,
    keep: Option<Uuid>,
    kind: EventKind,
) -> Result<Vec<Uuid>, StoreError> {
    let ended = state.store.revoke_user_sessions(user_id, keep, kind.as_str(), state.now()).await?;
    state.revocations.publish(&ended).await;
    let event = Event {
        user_id: Some(user_id),
        session_id: keep,
        detail: Some(format!("revoked {} sessions", ended.len())),
        ..Event::default()
    };
    audit::record(state, kind, client, event).await;
    Ok(ended)
}

/// Disables (`active = false`: no login, no refresh, every session ended) or
/// re-enables an account; `None` when there is no such account.
///
/// # Errors
/// [`StoreError`].
pub async fn set_account_active(
    state: &AppState,
    client: &ClientInfo,
    user_id: Uuid,
    active: bool,
) -> Result<Option<Vec<Uuid>>, StoreError> {
    if !state.store.set_user_active(user_id, active, state.now()).await? {
        return Ok(None);
    }
    if active {
        audit::record(state, EventKind::AccountEnabled, client, Event { user_id: Some(user_id), ..Event::default() })
            .await;
        return Ok(Some(Vec::new()));
    }
    end_sessions(state, client, user_id, None, EventKind::AccountDisabled).await.map(Some)
}

/// Marks `user`'s email address verified without the mailed token (the
/// operator vouches for it) and audits it; `false` when there is no such
/// account.
///
/// # Errors
/// [`StoreError`].
pub async fn mark_email_verified(state: &AppState, client: &ClientInfo, user: &User) -> Result<bool, StoreError> {
    if !state.store.mark_email_verified(user.user_id, state.now()).await? {
        return Ok(false);
    }
    let event = Event {
        user_id: Some(user.user_id),
        email: Some(&user.email),
        detail: Some("marked verified by an operator".to_owned()),
        ..Event::default()
    };
    audit::record(state, EventKind::EmailVerified, client, event).await;
    Ok(true)
}

/// Soft-deletes an account (its email can register again) and ends every
/// session; `None` when there is no such account.
///
/// # Errors
/// [`StoreError`].
pub async fn delete_account(
    state: &AppState,
    client: &ClientInfo,
    user_id: Uuid,
) -> Result<Option<Vec<Uuid>>, StoreError> {
    let Some(ended) = state.store.delete_user(user_id, state.now()).await? else {
        return Ok(None);
    };
    state.revocations.publish(&ended).await;
    let event =
        Event { user_id: Some(user_id), detail: Some(format!("revoked {} sessions", ended.len())), ..Event::default() };
    audit::record(state, EventKind::AccountDeleted, client, event).await;
    Ok(Some(ended))
}
