//! CSRF tokens: signed double submit bound to the session (OWASP CSRF cheat
//! sheet, "signed double-submit cookie").
//!
//! `token = base64url(value) "." base64url(HMAC(key, sid ‖ value))`. The same
//! token is set as the `csrf_token` cookie and returned in the JSON body; the
//! gateway requires the `X-CSRF-Token` header to equal the cookie and the MAC
//! to be valid for the `sid` of the access token presented with it, so a token
//! planted by cookie injection or taken from another session is useless
//! (SEED-FLAWS F12). Comparisons are constant-time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;
use subtle::ConstantTimeEq;

use crate::keys::b64url;
use crate::mac::{HmacSha256, hmac_sha256};
use crate::random::{RandomError, random_bytes};
use crate::secret::Secret;

/// The key CSRF tokens are signed with (`CSRF_SECRET`), shared by the auth
/// service (which mints) and the gateway (which verifies).
#[derive(Clone, Debug)]
pub struct CsrfKey(Secret);

impl CsrfKey {
    pub fn new(secret: Secret) -> Self {
        Self(secret)
    }

    fn mac(&self, session_id: &str, value: &[u8]) -> HmacSha256 {
        hmac_sha256(self.0.expose(), &[b"gatehouse csrf v1\0", session_id.as_bytes(), b"\0", value])
    }

    /// A new token for `session_id`.
    ///
    /// # Errors
    /// [`RandomError`] if the OS random source fails.
    pub fn mint(&self, session_id: &str) -> Result<String, RandomError> {
        let value = random_bytes::<32>()?;
        let tag = self.mac(session_id, &value).finalize().into_bytes();
        Ok(format!("{}.{}", b64url(&value), b64url(&tag)))
    }

    /// Whether `token` was minted by this key for `session_id`.
    pub fn verify(&self, session_id: &str, token: &str) -> bool {
        let Some((value, tag)) = token.split_once('.') else {
            return false;
        };
        if value.len() > 64 || tag.len() > 64 {
            return false;
        }
        let (Ok(value), Ok(tag)) = (URL_SAFE_NO_PAD.decode(value), URL_SAFE_NO_PAD.decode(tag)) else {
            return false;
        };
        self.mac(session_id, &value).verify_slice(&tag).is_ok()
    }
}

/// Constant-time equality of two presented tokens (header against cookie).
pub fn tokens_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: char) -> CsrfKey {
        CsrfKey::new(Secret::parse(&c.to_string().repeat(40)).unwrap())
    }

    #[test]
    fn a_token_verifies_for_its_session_only() {
        let k = key('a');
        let t = k.mint("session-1").unwrap();
        assert!(k.verify("session-1", &t));
        assert!(!k.verify("session-2", &t), "bound to the session");
        assert!(!key('b').verify("session-1", &t), "bound to the key");
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let k = key('a');
        for t in ["", ".", "abc", "a.b", "%%%.%%%", &"A".repeat(500)] {
            assert!(!k.verify("s", t), "{t:?}");
        }
    }

    #[test]
    fn equality_is_exact() {
        assert!(tokens_equal("abc", "abc"));
        assert!(!tokens_equal("abc", "abd"));
        assert!(!tokens_equal("abc", "abcd"));
    }
}
