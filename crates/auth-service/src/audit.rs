//! Security events (ASVS 5.0 §16.3): every login, failure, lockout, refresh,
//! reuse detection, logout and password change is written to the tracing log
//! and to the `audit_event` table, with the user, session, client IP and a
//! sanitised user agent. Never a password, token or hash.
//!
//! A failed audit insert is logged and does not fail the request: the action
//! it describes has already happened.

use uuid::Uuid;

use crate::http::ClientInfo;
use crate::state::AppState;
use crate::store::AuditEvent;

/// The kinds of security event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    UserRegistered,
    LoginSucceeded,
    LoginFailed,
    LoginLocked,
    LoginDisabledAccount,
    PasswordRehashed,
    RefreshSucceeded,
    RefreshGraceReplay,
    RefreshReuseDetected,
    RefreshRefused,
    Logout,
    LogoutAll,
    SessionRevoked,
    PasswordChanged,
    PasswordChangeFailed,
    AccountDeleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserRegistered => "user_registered",
            Self::LoginSucceeded => "login_succeeded",
            Self::LoginFailed => "login_failed",
            Self::LoginLocked => "login_locked",
            Self::LoginDisabledAccount => "login_disabled_account",
            Self::PasswordRehashed => "password_rehashed",
            Self::RefreshSucceeded => "refresh_succeeded",
            Self::RefreshGraceReplay => "refresh_grace_replay",
            Self::RefreshReuseDetected => "refresh_reuse_detected",
            Self::RefreshRefused => "refresh_refused",
            Self::Logout => "logout",
            Self::LogoutAll => "logout_all",
            Self::SessionRevoked => "session_revoked",
            Self::PasswordChanged => "password_changed",
            Self::PasswordChangeFailed => "password_change_failed",
            Self::AccountDeleted => "account_deleted",
        }
    }
}

/// One event about to be recorded.
#[derive(Debug, Clone, Default)]
pub struct Event<'a> {
    pub user_id: Option<Uuid>,
    pub email: Option<&'a str>,
    pub session_id: Option<Uuid>,
    pub detail: Option<String>,
}

/// Logs `event` and writes it to the audit table.
pub async fn record(state: &AppState, kind: EventKind, client: &ClientInfo, event: Event<'_>) {
    let now = state.now();
    tracing::info!(
        target: "gatehouse::audit",
        event = kind.as_str(),
        user_id = event.user_id.map(|u| u.to_string()),
        email = event.email,
        session_id = event.session_id.map(|s| s.to_string()),
        ip = client.ip.as_deref(),
        user_agent = client.user_agent.as_deref(),
        detail = event.detail.as_deref(),
        "security event"
    );
    let row = AuditEvent {
        audit_event_id: Uuid::now_v7(),
        occurred_at: now,
        kind: kind.as_str().to_owned(),
        user_id: event.user_id,
        email: event.email.map(str::to_owned),
        session_id: event.session_id,
        ip: client.ip.clone(),
        user_agent: client.user_agent.clone(),
        detail: event.detail,
    };
    if let Err(e) = state.store.insert_audit_event(&row).await {
        tracing::error!(error = %e, event = kind.as_str(), "could not write the audit event");
    }
}
