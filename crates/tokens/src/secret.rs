//! Shared secrets (HS256 key, CSRF key, refresh-token key, gateway key).
//!
//! The seed shipped human-readable passphrases in `.env` and fell back to
//! hard-coded defaults (SEED-FLAWS F3). Here a secret is at least 32 bytes, is
//! never one of the seed's published placeholders, and its `Debug` output is
//! redacted so it cannot reach a log line by accident.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::random::{RandomError, random_bytes};

/// The minimum length of a secret, in bytes (RFC 7518 §3.2 for HS256).
pub const MIN_SECRET_BYTES: usize = 32;

/// Secrets published in the seed design; anybody can forge with them.
pub const KNOWN_PLACEHOLDERS: &[&str] = &[
    "your-super-secret-jwt-key-change-this-in-production",
    "gateway-secret-for-downstream-verification",
    "default-gateway-secret-change-in-production",
];

/// Why a configured secret was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("is shorter than {MIN_SECRET_BYTES} bytes")]
    TooShort,
    #[error("is a published placeholder from the seed design")]
    Placeholder,
}

/// A secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("{0}")]
    Io(String),
    #[error("the secret in {0} {1}")]
    Invalid(String, SecretError),
    #[error("could not generate a secret")]
    Generate,
}

/// Secret key material. Cloning copies the bytes; `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Accepts a configured secret if it is long enough and not a known placeholder.
    ///
    /// # Errors
    /// [`SecretError`] saying which rule the value breaks.
    pub fn parse(value: &str) -> Result<Self, SecretError> {
        let trimmed = value.trim();
        if KNOWN_PLACEHOLDERS.contains(&trimmed) {
            return Err(SecretError::Placeholder);
        }
        if trimmed.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort);
        }
        Ok(Self(trimmed.as_bytes().to_vec()))
    }

    /// A fresh random secret, encoded as 43 URL-safe characters (256 bits), the
    /// form in which development secrets are written under the data dir.
    ///
    /// # Errors
    /// [`RandomError`] if the OS random source fails.
    pub fn generate() -> Result<Self, RandomError> {
        let bytes = random_bytes::<32>()?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes).into_bytes()))
    }

    /// Reads a secret kept in a file (trimmed), generating it first (mode
    /// 0600) when the file is missing and `may_generate` is set: the
    /// development default, so `gatehouse up` needs no setup and no secret is
    /// ever committed.
    ///
    /// # Errors
    /// [`SecretFileError`] naming the path and the problem.
    pub fn load_or_generate(path: &std::path::Path, may_generate: bool) -> Result<Self, SecretFileError> {
        if !path.exists() && may_generate {
            let fresh = Self::generate().map_err(|_| SecretFileError::Generate)?;
            crate::keys::write_private_file(path, fresh.expose()).map_err(|e| SecretFileError::Io(e.to_string()))?;
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| SecretFileError::Io(format!("could not read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| SecretFileError::Invalid(path.display().to_string(), e))
    }

    /// The key bytes, for MAC and signing code only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_from_the_seed_are_refused() {
        for p in KNOWN_PLACEHOLDERS {
            assert_eq!(Secret::parse(p), Err(SecretError::Placeholder), "{p}");
        }
    }

    #[test]
    fn concurrent_generation_agrees_on_one_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway_secret");
        let secrets: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> =
                (0..8).map(|_| s.spawn(|| Secret::load_or_generate(&path, true).unwrap().expose().to_vec())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(secrets.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(Secret::parse(&"a".repeat(31)), Err(SecretError::TooShort));
        assert!(Secret::parse(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn generated_secrets_are_long_and_distinct() -> Result<(), RandomError> {
        let a = Secret::generate()?;
        let b = Secret::generate()?;
        assert!(a.expose().len() >= MIN_SECRET_BYTES);
        assert_ne!(a, b);
        assert!(Secret::parse(std::str::from_utf8(a.expose()).unwrap_or_default()).is_ok());
        Ok(())
    }

    #[test]
    fn secret_files_are_generated_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets").join("csrf");
        assert!(Secret::load_or_generate(&path, false).is_err());
        let a = Secret::load_or_generate(&path, true).unwrap();
        assert_eq!(Secret::load_or_generate(&path, false).unwrap(), a);
    }

    #[test]
    fn debug_output_is_redacted() {
        let s = Secret::parse("this-is-a-very-secret-value-of-40-bytes!").unwrap_or_else(|_| unreachable!());
        assert!(!format!("{s:?}").contains("secret-value"));
    }
}
