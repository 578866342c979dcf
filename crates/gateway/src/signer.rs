//! Signing the identity assertion on every forwarded request.
//!
//! The signature is `tokens::assertion`'s, byte for byte (API.md, "wire
//! format"): one `v1=<hex HMAC-SHA256(secret, M)>` per active secret, joined
//! with commas, over the message `Assertion::message` builds. What differs
//! is only the work per request: an HMAC starts by hashing the key, padded,
//! twice (inner and outer), which for the gateway's fixed secrets is the same
//! every time, so it is done once here and each request starts from a copy
//! of that state. That is two of the roughly eight SHA-256 blocks a
//! signature costs, and no key handling on the request path at all. The
//! message is laid out once, in a buffer on the stack, and fed to each key's
//! MAC in one call: a MAC fed in parts does its block bookkeeping once per
//! part (a dozen per message), and per key; only a message too long for the
//! buffer (a very long path or query) is fed in its parts. The tests hold
//! both equal to `tokens`' own signature.

use common_http::http1::Decimal;
use hmac::{KeyInit as _, Mac as _};
use tokens::Secret;
use tokens::assertion::Assertion;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The gateway's signing keys, each with its HMAC key schedule done.
#[derive(Clone)]
pub struct AssertionSigner {
    keys: Vec<HmacSha256>,
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AssertionSigner({} keys)", self.keys.len())
    }
}

impl AssertionSigner {
    /// One key per secret, in order (`GATEWAY_SECRET` first).
    pub fn new(secrets: &[Secret]) -> Self {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
        let keys = secrets.iter().filter_map(|s| HmacSha256::new_from_slice(s.expose()).ok()).collect();
        Self { keys }
    }

    /// The `X-Gateway-Signature` value of `assertion`: what
    /// `Assertion::sign` returns for the same secrets.
    pub fn sign(&self, assertion: &Assertion<'_>) -> String {
        let timestamp = Decimal::of_i64(assertion.timestamp);
        // `Assertion::message()`, part by part (the tests hold the two equal):
        // "v1\n" + timestamp + "\n" + METHOD + "\n" + path_and_query
        //   + "\n" + request_id + "\n" + user_id + "\n" + email
        let parts = [
            b"v1\n".as_slice(),
            timestamp.as_bytes(),
            b"\n",
            assertion.method.as_bytes(),
            b"\n",
            assertion.path_and_query.as_bytes(),
            b"\n",
            assertion.request_id.as_bytes(),
            b"\n",
            assertion.user_id.as_bytes(),
            b"\n",
            assertion.email.as_bytes(),
        ];
        let mut laid_out = [0u8; MESSAGE_BUFFER];
        let message = lay_out(&parts, &mut laid_out);
        let mut out = String::with_capacity(self.keys.len() * 68);
        let mut hex = [0u8; 64];
        for key in &self.keys {
            if !out.is_empty() {
                out.push(',');
            }
            let mut mac = key.clone();
            match message {
                Some(message) => mac.update(message),
                None => parts.iter().for_each(|part| mac.update(part)),
            }
            let tag = mac.finalize().into_bytes();
            out.push_str("v1=");
            if hex::encode_to_slice(tag.as_slice(), &mut hex).is_ok() {
                out.push_str(std::str::from_utf8(&hex).unwrap_or_default());
            }
        }
        out
    }
}

/// Room for the messages of all but unusually long paths or queries: the
/// fixed parts, a UUID request id and user id and an email address take
/// under 150 bytes.
const MESSAGE_BUFFER: usize = 512;

/// `parts` one after another at the front of `buffer`, or `None` if they do
/// not fit.
fn lay_out<'a>(parts: &[&[u8]], buffer: &'a mut [u8]) -> Option<&'a [u8]> {
    let mut len = 0;
    for part in parts {
        buffer.get_mut(len..len + part.len())?.copy_from_slice(part);
        len += part.len();
    }
    Some(&buffer[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_those_of_the_tokens_crate() {
        let secrets: Vec<Secret> = (0..3).map(|_| Secret::generate().unwrap()).collect();
        // The last two: a message that just fits the stack buffer, and one
        // that does not (fed to the MAC in parts).
        let fits = format!("/q?{}", "a".repeat(MESSAGE_BUFFER - 62));
        let too_long = format!("/q?{}", "b".repeat(MESSAGE_BUFFER));
        let cases = [
            ("GET", "/users/profile", "user-1", "a@example.com"),
            ("POST", "/payments?x=1&y=%20", "01a22515-a6da-7788-812c-1601c14204c4", "ü@example.com"),
            ("DELETE", "/", "", ""),
            ("GET", fits.as_str(), "u", "e"),
            ("GET", too_long.as_str(), "u", "e"),
        ];
        let timestamps = [1_795_918_505, 0, -7, 1_795_918_505, 1_795_918_505];
        for ((method, path_and_query, user_id, email), timestamp) in cases.into_iter().zip(timestamps) {
            let assertion = Assertion {
                timestamp,
                method,
                path_and_query,
                request_id: "3f1c2a9e-7b7d-4a5e-9a51-0d6f0c0b7c11",
                user_id,
                email,
            };
            let length = assertion.message().len();
            assert_eq!(length <= MESSAGE_BUFFER, path_and_query != too_long, "{length}");
            for n in 1..=secrets.len() {
                let secrets = &secrets[..n];
                let ours = AssertionSigner::new(secrets).sign(&assertion);
                assert_eq!(ours, assertion.sign(secrets), "{method} {path_and_query}, {n} secrets");
                assert!(assertion.verify(&ours, secrets, assertion.timestamp).is_ok());
            }
        }
    }
}
