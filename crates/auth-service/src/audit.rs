//! Security events (ASVS 5.0 §16.3): every login, failure, lockout, refresh,
//! reuse detection, logout, password change and two-factor event (enabled,
//! disabled, verified, failed, recovery code used) is written to the tracing
//! log and to the `audit_event` table, with the user, session, client IP and
//! a sanitised user agent. Never a password, token, code, seed or hash.
//! Logins, password changes and reuse detections also notify the user
//! ([`crate::notify`]).
//!
//! A failed audit insert is logged and does not fail the request: the action
//! it describes has already happened.

use uuid::Uuid;

use crate::http::ClientInfo;
use crate::notify::{Notice, NotificationKind};
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
    AccountDisabled,
    AccountEnabled,
    MfaSetupStarted,
    MfaEnabled,
    MfaConfirmFailed,
    MfaDisabled,
    MfaDisableFailed,
    MfaChallengeIssued,
    MfaVerifySucceeded,
    MfaVerifyFailed,
    MfaRecoveryCodeUsed,
    PasswordResetRequested,
    PasswordResetFailed,
    PasswordReset,
    EmailVerificationSent,
    EmailVerified,
    EmailVerifyFailed,
    LoginUnverifiedEmail,
    MailThrottled,
    MailGivenUp,
}

impl EventKind {
    /// The notification the user gets for this event, if any.
    pub fn notification(self) -> Option<NotificationKind> {
        match self {
            Self::LoginSucceeded => Some(NotificationKind::NewLogin),
            Self::PasswordChanged | Self::PasswordReset => Some(NotificationKind::PasswordChanged),
            Self::RefreshReuseDetected => Some(NotificationKind::RefreshTokenReuse),
            Self::MfaEnabled => Some(NotificationKind::MfaEnabled),
            Self::MfaDisabled => Some(NotificationKind::MfaDisabled),
            _ => None,
        }
    }

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
            Self::AccountDisabled => "account_disabled",
            Self::AccountEnabled => "account_enabled",
            Self::MfaSetupStarted => "mfa_setup_started",
            Self::MfaEnabled => "mfa_enabled",
            Self::MfaConfirmFailed => "mfa_confirm_failed",
            Self::MfaDisabled => "mfa_disabled",
            Self::MfaDisableFailed => "mfa_disable_failed",
            Self::MfaChallengeIssued => "mfa_challenge_issued",
            Self::MfaVerifySucceeded => "mfa_verify_succeeded",
            Self::MfaVerifyFailed => "mfa_verify_failed",
            Self::MfaRecoveryCodeUsed => "mfa_recovery_code_used",
            Self::PasswordResetRequested => "password_reset_requested",
            Self::PasswordResetFailed => "password_reset_failed",
            Self::PasswordReset => "password_reset",
            Self::EmailVerificationSent => "email_verification_sent",
            Self::EmailVerified => "email_verified",
            Self::EmailVerifyFailed => "email_verify_failed",
            Self::LoginUnverifiedEmail => "login_unverified_email",
            Self::MailThrottled => "mail_throttled",
            Self::MailGivenUp => "mail_given_up",
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
    state.metrics.record(kind);
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
    if let (Some(kind), Some(user_id)) = (kind.notification(), row.user_id) {
        state.notifier.send(Notice {
            id: row.audit_event_id,
            user_id,
            kind,
            ip: row.ip,
            user_agent: row.user_agent,
            occurred_at: now,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_events_users_hear_about() {
        let notified: Vec<_> = [
            EventKind::LoginSucceeded,
            EventKind::LoginFailed,
            EventKind::PasswordChanged,
            EventKind::RefreshReuseDetected,
            EventKind::MfaEnabled,
            EventKind::MfaDisabled,
            EventKind::Logout,
        ]
        .into_iter()
        .filter_map(EventKind::notification)
        .collect();
        assert_eq!(
            notified,
            vec![
                NotificationKind::NewLogin,
                NotificationKind::PasswordChanged,
                NotificationKind::RefreshTokenReuse,
                NotificationKind::MfaEnabled,
                NotificationKind::MfaDisabled,
            ]
        );
    }
}
