//! The kinds of security notification, as they travel on the internal
//! delivery from the auth service (which decides what is notified) to the
//! notification service (which stores it and words it for the user). One
//! definition for both ends, so a kind added on one side cannot be refused
//! by the other.

use serde::{Deserialize, Serialize};

/// What a notification is about; `snake_case` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    NewLogin,
    PasswordChanged,
    RefreshTokenReuse,
    MfaEnabled,
    MfaDisabled,
}

impl NotificationKind {
    /// The wire name (also what is stored and logged).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewLogin => "new_login",
            Self::PasswordChanged => "password_changed",
            Self::RefreshTokenReuse => "refresh_token_reuse",
            Self::MfaEnabled => "mfa_enabled",
            Self::MfaDisabled => "mfa_disabled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::NotificationKind;

    #[test]
    fn the_wire_name_is_the_serde_name() {
        use NotificationKind::*;
        for kind in [NewLogin, PasswordChanged, RefreshTokenReuse, MfaEnabled, MfaDisabled] {
            assert_eq!(serde_json::to_value(kind).ok(), Some(serde_json::Value::from(kind.as_str())));
        }
    }
}
