//! Validated input: a handler holding an [`Email`], [`NewPassword`] or
//! [`DisplayName`] knows it obeys the rules (parse, don't validate).
//!
//! Emails are trimmed and lowercased before anything looks them up, so
//! `Admin@x.io` and `admin@x.io` are one account (the seed made two,
//! SEED-FLAWS F20). Passwords follow NIST SP 800-63B: 8–128 characters,
//! counted as Unicode scalar values, never truncated, no composition rules,
//! and not one of the 10,000 most common passwords.

use std::collections::HashSet;
use std::sync::LazyLock;

/// The longest email accepted (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 128;
pub const MAX_NAME_CHARS: usize = 100;

/// A field that failed validation; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FieldError(pub &'static str);

/// A normalised email address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// # Errors
    /// [`FieldError`] when the address is not a plausible ASCII email.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let email = raw.trim().to_ascii_lowercase();
        if email.is_empty() {
            return Err(FieldError("email is required"));
        }
        if email.len() > MAX_EMAIL_LEN {
            return Err(FieldError("email must be at most 254 characters"));
        }
        if !email.is_ascii() || email.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(FieldError("email must contain only printable ASCII characters"));
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err(FieldError("email is not a valid email address"));
        };
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.contains('@')
            && local.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b))
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        let domain_ok = domain.contains('.')
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !local_ok || !domain_ok {
            return Err(FieldError("email is not a valid email address"));
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("../data/common-passwords.txt").lines().filter(|l| !l.is_empty()).collect());

/// Whether `password` is on the shipped list of common passwords (compared lowercased).
pub fn is_common_password(password: &str) -> bool {
    COMMON_PASSWORDS.contains(password.to_lowercase().as_str())
}

/// A password acceptable for a new or changed account.
pub struct NewPassword(String);

impl NewPassword {
    /// # Errors
    /// [`FieldError`] naming the rule broken.
    pub fn parse(raw: String) -> Result<Self, FieldError> {
        check_password_length(&raw)?;
        if is_common_password(&raw) {
            return Err(FieldError("password is too common; choose a less guessable one"));
        }
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The length rule alone, also applied to login attempts so an oversized
/// "password" is refused before any hashing work.
///
/// # Errors
/// [`FieldError`] naming the bound.
pub fn check_password_length(raw: &str) -> Result<(), FieldError> {
    let chars = raw.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(FieldError("password must be at least 8 characters"));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(FieldError("password must be at most 128 characters"));
    }
    Ok(())
}

/// A display name: trimmed, 1–100 characters, no control or bidi-override characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    /// # Errors
    /// [`FieldError`] naming the rule broken.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(FieldError("name is required"));
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(FieldError("name must be at most 100 characters"));
        }
        // Bidi overrides and isolates can make a name display as something else.
        let forbidden = |c: char| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        if name.chars().any(forbidden) {
            return Err(FieldError("name must not contain control characters"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised() {
        assert_eq!(Email::parse("  Alice@Example.COM ").unwrap().as_str(), "alice@example.com");
        assert_eq!(Email::parse("a.b+tag@sub.example.io").unwrap().as_str(), "a.b+tag@sub.example.io");
    }

    #[test]
    fn bad_emails_are_refused() {
        let long = format!("{}@example.com", "a".repeat(250));
        for bad in [
            "",
            "plain",
            "@x.io",
            "a@",
            "a@b",
            "a@@b.io",
            "a b@c.io",
            "a@b.io\r\nX-Evil: 1",
            "ä@b.io",
            "a@b..io",
            ".a@b.io",
            "a@-b.io",
            "a\0@b.io",
            &long,
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn password_rules() {
        assert!(NewPassword::parse("correct horse battery".into()).is_ok());
        assert!(NewPassword::parse("short".into()).is_err());
        assert!(NewPassword::parse("x".repeat(129)).is_err());
        assert!(NewPassword::parse("ü".repeat(128)).is_ok(), "characters, not bytes");
        assert!(NewPassword::parse("password".into()).is_err());
        assert!(NewPassword::parse("Password1".into()).is_err() || !is_common_password("password1"));
        assert!(is_common_password("12345678") && is_common_password("PASSWORD"));
    }

    #[test]
    fn the_common_list_is_large_enough() {
        assert!(COMMON_PASSWORDS.len() >= 1000);
    }

    #[test]
    fn names() {
        assert_eq!(DisplayName::parse("  Ada Lovelace ").unwrap().into_string(), "Ada Lovelace");
        for bad in ["", "   ", "a\nb", "evil\u{202E}txt", &"n".repeat(101)] {
            assert!(DisplayName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
