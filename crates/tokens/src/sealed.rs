//! Encryption at rest for secrets a service must read back, such as TOTP
//! seeds: unlike passwords or refresh tokens they cannot be hashed, because
//! verifying a code needs the seed itself.
//!
//! AES-256-GCM with a random 96-bit nonce per encryption (aws-lc-rs's
//! `RandomizedNonceKey`, so no caller can reuse a nonce by mistake). A
//! [`Sealed`] value carries the id of the key that made it, its nonce and the
//! ciphertext with its tag, so keys can rotate: [`SealingKeys`] seals with the
//! current key and opens with the current or any previous one, and the owner
//! re-seals under the current key when [`Opened::stale`] says so.
//!
//! The caller passes a context (for example a purpose and the owning user's
//! id) that is authenticated as associated data: a ciphertext copied into
//! another row, or used for another purpose, does not open. A database dump
//! without the key yields nothing usable. Random nonces are safe for far
//! more than 2^32 seals per key would allow; a key is rotated long before.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_PAD_INDIFFERENT, URL_SAFE_PAD_INDIFFERENT};

use crate::random::{RandomError, random_bytes};

/// The length of a sealing key, in bytes (AES-256).
pub const SEALING_KEY_BYTES: usize = 32;

/// The longest key id accepted; ids are stored beside every ciphertext.
pub const MAX_KEY_ID_LEN: usize = 64;

/// Why a key or key set was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealingKeyError {
    #[error("must be 32 bytes, written as 64 hex characters or in base64 (e.g. `openssl rand -base64 32`)")]
    Encoding,
    #[error("key ids are 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'")]
    InvalidId,
    #[error("two keys have the id {0}")]
    DuplicateId(String),
    #[error("could not generate a key")]
    Generate,
}

/// Encryption failed (the random source or the cipher refused).
#[derive(Debug, thiserror::Error)]
#[error("encryption failed")]
pub struct SealError;

/// Why a [`Sealed`] value did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// No configured key has this id: the key was retired too early, or the
    /// configuration lost it.
    #[error("no configured key has the id {0:?}")]
    UnknownKey(String),
    /// Wrong key, wrong context (moved to another row) or tampered bytes.
    #[error("the ciphertext does not authenticate")]
    Invalid,
}

/// One AES-256-GCM key and its id. `Debug` shows only the id.
pub struct SealingKey {
    id: String,
    key: RandomizedNonceKey,
}

impl SealingKey {
    /// # Errors
    /// [`SealingKeyError::InvalidId`] for an unusable id.
    pub fn new(id: &str, bytes: &[u8; SEALING_KEY_BYTES]) -> Result<Self, SealingKeyError> {
        let valid_id = !id.is_empty()
            && id.len() <= MAX_KEY_ID_LEN
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid_id {
            return Err(SealingKeyError::InvalidId);
        }
        let key = RandomizedNonceKey::new(&AES_256_GCM, bytes).map_err(|_| SealingKeyError::Encoding)?;
        Ok(Self { id: id.to_owned(), key })
    }

    /// A key as an operator configures it: 32 bytes as 64 hex characters, or
    /// base64 (standard or URL-safe alphabet, padding optional: what
    /// `openssl rand -base64 32` prints, or the 43 characters `gatehouse up`
    /// generates under `DATA_DIR/secrets`). Surrounding whitespace is ignored.
    ///
    /// # Errors
    /// [`SealingKeyError`]; the message never contains the value.
    pub fn from_encoded(id: &str, encoded: &[u8]) -> Result<Self, SealingKeyError> {
        let text = std::str::from_utf8(encoded).map_err(|_| SealingKeyError::Encoding)?.trim();
        let bytes = if text.len() == 2 * SEALING_KEY_BYTES && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| SealingKeyError::Encoding)?
        } else {
            STANDARD_PAD_INDIFFERENT
                .decode(text)
                .or_else(|_| URL_SAFE_PAD_INDIFFERENT.decode(text))
                .map_err(|_| SealingKeyError::Encoding)?
        };
        let bytes: [u8; SEALING_KEY_BYTES] = bytes.try_into().map_err(|_| SealingKeyError::Encoding)?;
        Self::new(id, &bytes)
    }

    /// A fresh random key (tests, tools).
    ///
    /// # Errors
    /// [`SealingKeyError`] if the OS random source fails or the id is unusable.
    pub fn generate(id: &str) -> Result<Self, SealingKeyError> {
        let bytes = random_bytes::<SEALING_KEY_BYTES>().map_err(|_: RandomError| SealingKeyError::Generate)?;
        Self::new(id, &bytes)
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// A ciphertext as stored: the key id, the nonce, and the ciphertext
/// followed by its 16-byte tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// A plaintext that opened, and whether it was sealed under a key other than
/// the current one (re-seal it then, to finish a rotation).
pub struct Opened {
    /// The plaintext; the caller wipes it when done (e.g. `zeroize::Zeroizing`).
    pub plaintext: Vec<u8>,
    pub stale: bool,
}

/// The current key, which seals, and previous keys, which only open.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct SealingKeys {
    current: Arc<SealingKey>,
    previous: Arc<[SealingKey]>,
}

impl SealingKeys {
    /// # Errors
    /// [`SealingKeyError::DuplicateId`] when two keys share an id: a
    /// ciphertext must name exactly one key.
    pub fn new(current: SealingKey, previous: Vec<SealingKey>) -> Result<Self, SealingKeyError> {
        let mut ids = vec![current.id.as_str()];
        for key in &previous {
            if ids.contains(&key.id.as_str()) {
                return Err(SealingKeyError::DuplicateId(key.id.clone()));
            }
            ids.push(&key.id);
        }
        Ok(Self { current: Arc::new(current), previous: previous.into() })
    }

    /// The id new ciphertexts carry.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Encrypts `plaintext` under the current key, authenticating `context`.
    ///
    /// # Errors
    /// [`SealError`] if the cipher or the random source fails.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Sealed, SealError> {
        let mut buffer = plaintext.to_vec();
        let nonce =
            self.current.key.seal_in_place_append_tag(Aad::from(context), &mut buffer).map_err(|_| SealError)?;
        Ok(Sealed { key_id: self.current.id.clone(), nonce: nonce.as_ref().to_vec(), ciphertext: buffer })
    }

    /// Decrypts `sealed` with the key it names, if that key is configured and
    /// the ciphertext authenticates under `context`.
    ///
    /// # Errors
    /// [`OpenError`].
    pub fn open(&self, sealed: &Sealed, context: &[u8]) -> Result<Opened, OpenError> {
        let key = std::iter::once(self.current.as_ref())
            .chain(self.previous.iter())
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| OpenError::UnknownKey(sealed.key_id.clone()))?;
        let nonce: [u8; NONCE_LEN] = sealed.nonce.as_slice().try_into().map_err(|_| OpenError::Invalid)?;
        let mut buffer = sealed.ciphertext.clone();
        let len = key
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(context), &mut buffer)
            .map_err(|_| OpenError::Invalid)?
            .len();
        buffer.truncate(len);
        Ok(Opened { plaintext: buffer, stale: key.id != self.current.id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(current: &str, previous: &[&str]) -> SealingKeys {
        SealingKeys::new(
            SealingKey::generate(current).unwrap(),
            previous.iter().map(|id| SealingKey::generate(id).unwrap()).collect(),
        )
        .unwrap()
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_context() {
        let k = keys("k1", &[]);
        let sealed = k.seal(b"seed bytes", b"user-a").unwrap();
        assert_eq!(sealed.key_id, "k1");
        assert_eq!(sealed.nonce.len(), NONCE_LEN);
        assert_eq!(sealed.ciphertext.len(), b"seed bytes".len() + 16);
        assert!(!sealed.ciphertext.windows(10).any(|w| w == b"seed bytes"));
        let opened = k.open(&sealed, b"user-a").unwrap();
        assert_eq!((opened.plaintext.as_slice(), opened.stale), (&b"seed bytes"[..], false));
        assert_eq!(k.open(&sealed, b"user-b").err(), Some(OpenError::Invalid));
    }

    #[test]
    fn nonces_are_fresh_for_every_seal() {
        let k = keys("k1", &[]);
        let (a, b) = (k.seal(b"x", b"c").unwrap(), k.seal(b"x", b"c").unwrap());
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn tampering_and_unknown_keys_are_refused() {
        let k = keys("k1", &[]);
        let sealed = k.seal(b"seed", b"c").unwrap();
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert_eq!(k.open(&flipped, b"c").err(), Some(OpenError::Invalid));
        let mut short_nonce = sealed.clone();
        short_nonce.nonce.pop();
        assert_eq!(k.open(&short_nonce, b"c").err(), Some(OpenError::Invalid));
        let other = keys("k2", &[]);
        assert_eq!(other.open(&sealed, b"c").err(), Some(OpenError::UnknownKey("k1".into())));
        // Same id, different key bytes: the tag does not verify.
        assert_eq!(keys("k1", &[]).open(&sealed, b"c").err(), Some(OpenError::Invalid));
    }

    #[test]
    fn previous_keys_open_and_report_stale() {
        let old = SealingKey::from_encoded("old", &[b'a'; 64]).unwrap();
        let sealed = SealingKeys::new(old, vec![]).unwrap().seal(b"seed", b"c").unwrap();
        let rotated = SealingKeys::new(
            SealingKey::generate("new").unwrap(),
            vec![SealingKey::from_encoded("old", &[b'a'; 64]).unwrap()],
        )
        .unwrap();
        let opened = rotated.open(&sealed, b"c").unwrap();
        assert!(opened.stale);
        assert_eq!(opened.plaintext, b"seed");
        assert_eq!(rotated.seal(b"seed", b"c").unwrap().key_id, "new");
    }

    #[test]
    fn configured_keys_are_hex_or_base64_of_exactly_32_bytes() {
        let raw = [7u8; 32];
        let hex_key = hex::encode(raw);
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xfb; 32]);
        for encoded in [hex_key.as_str(), b64.as_str(), b64.trim_end_matches('='), b64url.as_str(), " \n"] {
            let result = SealingKey::from_encoded("k1", encoded.as_bytes());
            assert_eq!(result.is_ok(), !encoded.trim().is_empty(), "{encoded:?}");
        }
        let sealed = SealingKeys::new(SealingKey::from_encoded("k1", hex_key.as_bytes()).unwrap(), vec![])
            .unwrap()
            .seal(b"s", b"c")
            .unwrap();
        let same = SealingKeys::new(SealingKey::from_encoded("k1", b64.as_bytes()).unwrap(), vec![]).unwrap();
        assert!(same.open(&sealed, b"c").is_ok(), "hex and base64 of the same bytes are the same key");
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 31]);
        let long = base64::engine::general_purpose::STANDARD.encode([1u8; 48]);
        for bad in [short.as_str(), long.as_str(), "not base64 at all!", &hex_key[..62]] {
            assert_eq!(SealingKey::from_encoded("k1", bad.as_bytes()).err(), Some(SealingKeyError::Encoding), "{bad}");
        }
    }

    #[test]
    fn key_ids_are_validated_and_unique() {
        for bad in ["", "has space", "colon:", &"x".repeat(65)] {
            assert_eq!(SealingKey::generate(bad).err(), Some(SealingKeyError::InvalidId), "{bad:?}");
        }
        let dup = SealingKeys::new(SealingKey::generate("k1").unwrap(), vec![SealingKey::generate("k1").unwrap()]);
        assert_eq!(dup.err(), Some(SealingKeyError::DuplicateId("k1".into())));
    }

    #[test]
    fn debug_output_shows_only_the_id() {
        let key = SealingKey::from_encoded("k1", &[b'a'; 64]).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("k1") && !shown.contains("aaaa"), "{shown}");
    }
}
