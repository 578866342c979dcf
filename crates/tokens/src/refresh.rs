//! Opaque refresh tokens that nothing needs to store.
//!
//! A refresh token is `base64url(session_id ‖ counter ‖ tag)` where
//! `tag = HMAC(k_s, counter)` and `k_s = HMAC(server_secret, session_id)`:
//! the per-session key is derived, not stored (the design of Supabase Auth's
//! 2025 refresh tokens). The session row keeps only the counter of the
//! current token, so a database dump yields no usable token, and the current
//! token can be recomputed, which is what lets racing browser tabs converge on
//! the same pair inside the reuse grace window.
//!
//! Rotation is the store's job: it advances the counter with one
//! compare-and-swap; a token whose counter is behind the session's is a reused
//! (stolen or replayed) token.

use hmac::Mac;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::keys::b64url;
use crate::mac::hmac_sha256;
use crate::secret::Secret;

const RAW_LEN: usize = 16 + 8 + 32;
/// Length of an encoded token: 56 bytes in unpadded base64url.
pub const TOKEN_LEN: usize = 75;

/// The decoded, authenticated content of a refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshToken {
    pub session_id: Uuid,
    pub counter: u64,
}

/// The server secret refresh tokens are derived from (`REFRESH_TOKEN_SECRET`).
#[derive(Clone, Debug)]
pub struct RefreshKey(Secret);

/// The token is not one this server minted (wrong shape or tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid refresh token")]
pub struct InvalidRefreshToken;

impl RefreshKey {
    pub fn new(secret: Secret) -> Self {
        Self(secret)
    }

    fn tag(&self, session_id: Uuid, counter: u64) -> [u8; 32] {
        let session_key = hmac_sha256(self.0.expose(), &[b"gatehouse refresh session key v1\0", session_id.as_bytes()])
            .finalize()
            .into_bytes();
        hmac_sha256(&session_key, &[b"gatehouse refresh token v1\0", &counter.to_be_bytes()])
            .finalize()
            .into_bytes()
            .into()
    }

    /// The token for `counter` in `session_id`.
    pub fn mint(&self, session_id: Uuid, counter: u64) -> String {
        let mut raw = [0u8; RAW_LEN];
        raw[..16].copy_from_slice(session_id.as_bytes());
        raw[16..24].copy_from_slice(&counter.to_be_bytes());
        raw[24..].copy_from_slice(&self.tag(session_id, counter));
        b64url(&raw)
    }

    /// Authenticates a presented token and returns its session and counter.
    ///
    /// # Errors
    /// [`InvalidRefreshToken`] for anything this server did not mint.
    pub fn parse(&self, token: &str) -> Result<RefreshToken, InvalidRefreshToken> {
        use base64::Engine as _;
        if token.len() != TOKEN_LEN {
            return Err(InvalidRefreshToken);
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| InvalidRefreshToken)?;
        if raw.len() != RAW_LEN {
            return Err(InvalidRefreshToken);
        }
        let session_id = Uuid::from_slice(&raw[..16]).map_err(|_| InvalidRefreshToken)?;
        let mut counter_bytes = [0u8; 8];
        counter_bytes.copy_from_slice(&raw[16..24]);
        let counter = u64::from_be_bytes(counter_bytes);
        let expected = self.tag(session_id, counter);
        if bool::from(expected.ct_eq(&raw[24..])) {
            Ok(RefreshToken { session_id, counter })
        } else {
            Err(InvalidRefreshToken)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(c: char) -> RefreshKey {
        RefreshKey::new(Secret::parse(&c.to_string().repeat(40)).unwrap())
    }

    #[test]
    fn minted_tokens_parse_back() {
        let k = key('a');
        let sid = Uuid::now_v7();
        let t = k.mint(sid, 7);
        assert_eq!(t.len(), TOKEN_LEN);
        assert_eq!(k.parse(&t), Ok(RefreshToken { session_id: sid, counter: 7 }));
    }

    #[test]
    fn tokens_from_another_secret_or_tampered_are_refused() {
        let sid = Uuid::now_v7();
        let t = key('a').mint(sid, 1);
        assert_eq!(key('b').parse(&t), Err(InvalidRefreshToken));
        // Bump the counter without knowing the key: the tag no longer matches.
        let forged = key('b').mint(sid, 2);
        assert_eq!(key('a').parse(&forged), Err(InvalidRefreshToken));
        let mut chars: Vec<char> = t.chars().collect();
        chars[30] = if chars[30] == 'A' { 'B' } else { 'A' };
        assert_eq!(key('a').parse(&chars.into_iter().collect::<String>()), Err(InvalidRefreshToken));
    }

    #[test]
    fn counters_give_distinct_tokens() {
        let k = key('a');
        let sid = Uuid::now_v7();
        assert_ne!(k.mint(sid, 1), k.mint(sid, 2));
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics_and_never_parses(s in ".{0,200}") {
            prop_assert!(key('a').parse(&s).is_err());
        }
    }
}
