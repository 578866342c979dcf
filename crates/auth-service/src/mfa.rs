//! TOTP two-factor authentication (RFC 6238): the rules, without HTTP.
//!
//! - **Seeds** are 160 random bits (RFC 4226 §4 recommends 160), used with
//!   HMAC-SHA-1, 6 digits and 30-second steps, a code being accepted one step
//!   early or late (RFC 6238 §5.2): what every authenticator app does by
//!   default. A seed cannot be hashed (codes are computed from it), so it is
//!   sealed with AES-256-GCM ([`tokens::sealed`], `MFA_ENCRYPTION_KEY`) with
//!   a purpose label and the user id as associated data. A database dump
//!   alone yields no second factor, and a ciphertext moved to another user's
//!   row does not open.
//! - **Each code works once.** The step of the last accepted code is stored,
//!   and a step is accepted only by a conditional `update … where
//!   last_used_step < step`: a replayed code, or an older one, is refused,
//!   and of two concurrent requests with one code only one wins.
//! - **Recovery codes**: ten per enrolment, 80 random bits each, written as
//!   `xxxx-xxxx-xxxx-xxxx` from a 32-character alphabet without look-alikes
//!   (no 0/o, 1/l). They are stored as SHA-256 over the user id and the code.
//!   A fast hash is enough here: passwords need Argon2 because people choose
//!   guessable ones, but an offline search of 2^80 random codes is out of
//!   reach. Each is spent by one conditional `update`.
//! - **The login challenge** (`mfa_token`): after a correct password a user
//!   with TOTP gets a random 256-bit token, stored only as its SHA-256, that
//!   expires after `mfa_challenge_ttl_secs`, allows `mfa_challenge_max_attempts`
//!   codes and is spent by the first success. A database row rather than a
//!   signed token, because single use needs state anyway.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use tokens::random::{RandomError, random_bytes};
use tokens::sealed::{OpenError, SealError, Sealed, SealingKeys};
use totp_rs::{Builder, Totp};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::domain::FieldError;
use crate::store::{SealedTotpSecret, TotpEnrolment};

/// Recovery codes issued when TOTP is enabled.
pub const RECOVERY_CODE_COUNT: usize = 10;
/// Characters of a recovery code, without the dashes.
const RECOVERY_CODE_CHARS: usize = 16;
/// 32 symbols (5 bits each): a–z and 2–9 without `l`, `o`, `0`, `1`.
const RECOVERY_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
const TOTP_DIGITS: usize = 6;
/// Associated data of every sealed seed, before the user id: a ciphertext
/// made for another purpose never opens as a TOTP seed.
const SEED_CONTEXT: &[u8] = b"gatehouse/mfa-totp-seed/v1/";

/// Why an MFA operation failed on the server's side (never the user's input).
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    #[error("sealing the TOTP seed failed")]
    Seal(#[from] SealError),
    #[error("the TOTP seed does not open: {0}")]
    Open(#[from] OpenError),
    #[error("TOTP: {0}")]
    Totp(String),
    #[error("QR code: {0}")]
    Qr(String),
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// A code as the user submitted it.
#[derive(Debug)]
pub enum SubmittedCode {
    /// Six digits from the authenticator app.
    Totp(Zeroizing<String>),
    Recovery(RecoveryCode),
}

impl SubmittedCode {
    /// Six digits, or a recovery code (case, spaces and dashes ignored).
    ///
    /// # Errors
    /// [`FieldError`] for anything else; the message never echoes the input.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        const MALFORMED: FieldError = FieldError("code must be a 6-digit code or a recovery code");
        if raw.len() > 64 {
            return Err(MALFORMED);
        }
        let compact: Zeroizing<String> =
            Zeroizing::new(raw.chars().filter(|c| !c.is_whitespace() && *c != '-').collect());
        if compact.is_empty() {
            return Err(FieldError("code is required"));
        }
        if compact.len() == TOTP_DIGITS && compact.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Self::Totp(compact));
        }
        RecoveryCode::parse(&compact).map(Self::Recovery).ok_or(MALFORMED)
    }
}

/// A recovery code, normalised (16 lowercase characters, no dashes).
pub struct RecoveryCode(Zeroizing<String>);

impl RecoveryCode {
    fn parse(compact: &str) -> Option<Self> {
        let lower = Zeroizing::new(compact.to_ascii_lowercase());
        let valid = lower.len() == RECOVERY_CODE_CHARS && lower.bytes().all(|b| RECOVERY_ALPHABET.contains(&b));
        valid.then(|| Self(lower))
    }

    fn generate() -> Result<Self, RandomError> {
        // 256 is a multiple of 32, so masking each random byte is unbiased.
        let random = Zeroizing::new(random_bytes::<RECOVERY_CODE_CHARS>()?);
        let code = random.iter().map(|b| char::from(RECOVERY_ALPHABET[usize::from(b & 31)])).collect();
        Ok(Self(Zeroizing::new(code)))
    }

    /// The form shown to the user: `xxxx-xxxx-xxxx-xxxx`.
    pub fn display(&self) -> String {
        let groups: Vec<&str> = self.0.as_bytes().chunks(4).filter_map(|g| std::str::from_utf8(g).ok()).collect();
        groups.join("-")
    }

    /// What the database keeps: SHA-256 (hex) over the user id and the code,
    /// so equal codes of two users never share a hash.
    pub fn hash(&self, user_id: Uuid) -> String {
        let mut digest = Sha256::new();
        digest.update(b"gatehouse/mfa-recovery-code/v1/");
        digest.update(user_id.as_bytes());
        digest.update(self.0.as_bytes());
        hex::encode(digest.finalize())
    }
}

impl std::fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryCode([redacted])")
    }
}

/// A fresh set of recovery codes.
///
/// # Errors
/// [`RandomError`] if the OS random source fails.
pub fn generate_recovery_codes() -> Result<Vec<RecoveryCode>, RandomError> {
    (0..RECOVERY_CODE_COUNT).map(|_| RecoveryCode::generate()).collect()
}

/// A new TOTP seed: what the user scans, and what the database keeps.
pub struct NewTotp {
    /// The seed in base32, for manual entry.
    pub secret_base32: Zeroizing<String>,
    /// `otpauth://totp/<issuer>:<account>?secret=…&issuer=…`
    pub otpauth_uri: Zeroizing<String>,
    /// The URI as a QR code, an SVG document.
    pub qr_svg: String,
    pub sealed: SealedTotpSecret,
}

fn seed_context(user_id: Uuid) -> Vec<u8> {
    [SEED_CONTEXT, user_id.as_bytes()].concat()
}

fn totp_from_seed(seed: &[u8]) -> Result<Totp, MfaError> {
    Builder::new().with_secret(seed).build().map_err(|e| MfaError::Totp(e.to_string()))
}

/// Generates a seed for `user_id`, seals it, and renders what the user scans.
///
/// # Errors
/// [`MfaError`] if sealing, randomness or rendering fails.
pub fn new_totp(keys: &SealingKeys, user_id: Uuid, account_name: &str, issuer: &str) -> Result<NewTotp, MfaError> {
    // `:` separates issuer and account in the otpauth label.
    let account_name = account_name.replace(':', "_");
    let issuer = issuer.replace(':', "_");
    let seed = Zeroizing::new(random_bytes::<20>()?);
    let totp = Builder::new()
        .with_secret(*seed)
        .with_account_name(account_name)
        .with_issuer(Some(issuer))
        .build()
        .map_err(|e| MfaError::Totp(e.to_string()))?;
    let otpauth_uri = Zeroizing::new(totp.to_url().map_err(|e| MfaError::Totp(e.to_string()))?);
    let qr_svg = qrcode::QrCode::with_error_correction_level(otpauth_uri.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| MfaError::Qr(e.to_string()))?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .build();
    let sealed = keys.seal(seed.as_slice(), &seed_context(user_id))?;
    Ok(NewTotp {
        secret_base32: Zeroizing::new(totp.secret().to_base32()),
        otpauth_uri,
        qr_svg,
        sealed: sealed_row(user_id, sealed),
    })
}

fn sealed_row(user_id: Uuid, sealed: Sealed) -> SealedTotpSecret {
    SealedTotpSecret { user_id, key_id: sealed.key_id, nonce: sealed.nonce, ciphertext: sealed.ciphertext }
}

/// An enrolment's seed, opened.
pub struct OpenedTotp {
    totp: Totp,
    /// Sealed under a previous key: [`OpenedTotp::reseal`] finishes the rotation.
    pub stale: bool,
}

impl OpenedTotp {
    /// Decrypts the seed of `enrolment`.
    ///
    /// # Errors
    /// [`MfaError::Open`] when the key is not configured or the ciphertext
    /// does not authenticate for this user (tampered, or copied from
    /// another user's row).
    pub fn open(keys: &SealingKeys, enrolment: &TotpEnrolment) -> Result<Self, MfaError> {
        let sealed = Sealed {
            key_id: enrolment.key_id.clone(),
            nonce: enrolment.nonce.clone(),
            ciphertext: enrolment.ciphertext.clone(),
        };
        let opened = keys.open(&sealed, &seed_context(enrolment.user_id))?;
        let seed = Zeroizing::new(opened.plaintext);
        Ok(Self { totp: totp_from_seed(&seed)?, stale: opened.stale })
    }

    /// The step `code` belongs to, if it is the code of the step of `now` or
    /// of the step just before or after it.
    pub fn matching_step(&self, code: &str, now: i64) -> Option<i64> {
        let now = u64::try_from(now).ok()?;
        self.totp.check(code, now).and_then(|step| i64::try_from(step).ok())
    }

    /// The seed sealed again, under the current key.
    ///
    /// # Errors
    /// [`MfaError::Seal`].
    pub fn reseal(&self, keys: &SealingKeys, user_id: Uuid) -> Result<SealedTotpSecret, MfaError> {
        Ok(sealed_row(user_id, keys.seal(self.totp.secret().as_bytes(), &seed_context(user_id))?))
    }
}

/// A new `mfa_token` and the hash the database keeps of it.
///
/// # Errors
/// [`RandomError`] if the OS random source fails.
pub fn new_mfa_token() -> Result<(String, String), RandomError> {
    let token = URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
    let hash = mfa_token_hash(&token);
    Ok((token, hash))
}

/// SHA-256 (hex) of an `mfa_token`: 256 random bits need no slow hash.
pub fn mfa_token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use tokens::sealed::SealingKey;

    use super::*;

    fn keys() -> SealingKeys {
        SealingKeys::new(SealingKey::generate("k1").unwrap(), vec![]).unwrap()
    }

    fn enrolment(user_id: Uuid, sealed: &SealedTotpSecret) -> TotpEnrolment {
        TotpEnrolment {
            user_id,
            key_id: sealed.key_id.clone(),
            nonce: sealed.nonce.clone(),
            ciphertext: sealed.ciphertext.clone(),
            confirmed_at: None,
            last_used_step: 0,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn codes_parse_as_totp_or_recovery_codes() {
        assert!(matches!(SubmittedCode::parse("123456"), Ok(SubmittedCode::Totp(c)) if c.as_str() == "123456"));
        assert!(matches!(SubmittedCode::parse(" 123 456 "), Ok(SubmittedCode::Totp(_))));
        let code = RecoveryCode::generate().unwrap();
        let shown = code.display();
        assert_eq!(shown.len(), 19);
        for typed in [shown.clone(), shown.to_uppercase(), shown.replace('-', " "), shown.replace('-', "")] {
            match SubmittedCode::parse(&typed) {
                Ok(SubmittedCode::Recovery(r)) => assert_eq!(r.hash(Uuid::nil()), code.hash(Uuid::nil())),
                other => panic!("{typed}: {other:?}"),
            }
        }
        for bad in ["", "12345", "1234567", "12345a", "abcd-efgh-ijkl-mno0", "abcd-efgh-ijkl", &"1".repeat(100)] {
            assert!(SubmittedCode::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn recovery_codes_are_distinct_and_hashed_per_user() {
        let codes = generate_recovery_codes().unwrap();
        assert_eq!(codes.len(), RECOVERY_CODE_COUNT);
        let shown: std::collections::HashSet<String> = codes.iter().map(RecoveryCode::display).collect();
        assert_eq!(shown.len(), RECOVERY_CODE_COUNT);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_ne!(codes[0].hash(a), codes[0].hash(b));
        assert!(!codes[0].hash(a).contains(codes[0].0.as_str()));
        assert!(!format!("{:?}", codes[0]).contains(codes[0].0.as_str()));
    }

    #[test]
    fn a_new_seed_opens_for_its_user_only() {
        let keys = keys();
        let user = Uuid::now_v7();
        let new = new_totp(&keys, user, "alice@example.com", "Gatehouse").unwrap();
        assert!(new.otpauth_uri.starts_with("otpauth://totp/Gatehouse:alice%40example.com?secret="));
        assert!(new.otpauth_uri.contains(new.secret_base32.as_str()));
        assert!(new.qr_svg.starts_with("<?xml") && new.qr_svg.contains("<svg"));
        assert_eq!(new.secret_base32.len(), 32, "160 bits in base32");
        let opened = OpenedTotp::open(&keys, &enrolment(user, &new.sealed)).unwrap();
        assert!(!opened.stale);
        let code = opened.totp.generate(1_000_000_000).to_string();
        assert_eq!(opened.matching_step(&code, 1_000_000_000), Some(1_000_000_000 / 30));
        assert_eq!(opened.matching_step(&code, 1_000_000_030), Some(1_000_000_000 / 30), "one step late");
        assert_eq!(opened.matching_step(&code, 1_000_000_090), None, "three steps late");
        let other = Uuid::now_v7();
        assert!(matches!(
            OpenedTotp::open(&keys, &enrolment(other, &new.sealed)),
            Err(MfaError::Open(OpenError::Invalid))
        ));
    }

    #[test]
    fn mfa_tokens_are_random_and_hashed() {
        let (a, hash) = new_mfa_token().unwrap();
        let (b, _) = new_mfa_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(mfa_token_hash(&a), hash);
        assert!(!hash.contains(&a));
    }
}
