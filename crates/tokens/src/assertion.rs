//! The gateway's identity assertion (API.md, "wire format"): how a
//! downstream service knows a request came through the gateway and for whom.
//!
//! ```text
//! X-Gateway-Signature: v1=<lowercase hex of HMAC-SHA256(GATEWAY_SECRET, M)>[,v1=<hex>…]
//! M = "v1\n" + timestamp + "\n" + METHOD + "\n" + path_and_query
//!     + "\n" + request_id + "\n" + user_id + "\n" + email
//! ```
//!
//! The seed signed only `id:email` (SEED-FLAWS F4): a static value that
//! replayed forever against any route. Binding the method, path, query,
//! request id and a timestamp makes an assertion good for one request within
//! ±60 s; the verifier's replay cache (in the guard) refuses a second use of
//! the request id. During a key rotation the gateway signs with every active
//! secret and the verifier accepts any one that matches a secret it holds.

use hmac::Mac;

use crate::mac::hmac_sha256;
use crate::secret::Secret;

/// The largest clock difference a verifier tolerates.
pub const MAX_SKEW_SECS: i64 = 60;

/// The user id a Gatehouse service signs as when it calls another one
/// (the gateway's revocation poll, the user service's account deletion, the
/// auth service's notifications). User ids the gateway asserts are the auth
/// service's UUIDs, so no client can ever be asserted as this caller.
pub const INTERNAL_CALLER: &str = "gatehouse-internal";

/// The email signed with [`INTERNAL_CALLER`] (a reserved `.invalid` domain),
/// so an internal call carries the same five headers as a gateway-forwarded
/// request and any service's guard verifies it.
pub const INTERNAL_EMAIL: &str = "internal@gatehouse.invalid";

/// The headers of an internal call: `X-User-ID` and `X-User-Email` naming
/// [`INTERNAL_CALLER`], `X-Request-ID` (fresh), `X-Gateway-Timestamp` and
/// `X-Gateway-Signature` over this method and path.
pub fn internal_call_headers(
    method: &str,
    path_and_query: &str,
    secrets: &[Secret],
    now: i64,
    request_id: &str,
) -> [(&'static str, String); 5] {
    let assertion = Assertion {
        timestamp: now,
        method,
        path_and_query,
        request_id,
        user_id: INTERNAL_CALLER,
        email: INTERNAL_EMAIL,
    };
    [
        ("x-user-id", INTERNAL_CALLER.to_owned()),
        ("x-user-email", INTERNAL_EMAIL.to_owned()),
        ("x-request-id", request_id.to_owned()),
        ("x-gateway-timestamp", now.to_string()),
        ("x-gateway-signature", assertion.sign(secrets)),
    ]
}

/// What an assertion covers.
#[derive(Debug, Clone, Copy)]
pub struct Assertion<'a> {
    pub timestamp: i64,
    pub method: &'a str,
    /// The path the downstream receives, with `?query` when there is one.
    pub path_and_query: &'a str,
    pub request_id: &'a str,
    pub user_id: &'a str,
    pub email: &'a str,
}

impl Assertion<'_> {
    /// The signed message `M`.
    pub fn message(&self) -> String {
        format!(
            "v1\n{}\n{}\n{}\n{}\n{}\n{}",
            self.timestamp, self.method, self.path_and_query, self.request_id, self.user_id, self.email
        )
    }

    /// The `X-Gateway-Signature` value: one `v1=` entry per secret.
    pub fn sign(&self, secrets: &[Secret]) -> String {
        let message = self.message();
        secrets
            .iter()
            .map(|s| {
                format!("v1={}", hex::encode(hmac_sha256(s.expose(), &[message.as_bytes()]).finalize().into_bytes()))
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Checks a signature header against the secrets this verifier holds and
    /// the timestamp against `now`. Comparison is constant-time.
    ///
    /// # Errors
    /// [`AssertionError`] naming the failed rule (for logs; clients get one message).
    pub fn verify(&self, header: &str, secrets: &[Secret], now: i64) -> Result<(), AssertionError> {
        // `abs_diff`, not `(now - timestamp).abs()`: the timestamp comes from a
        // header (the auth service's internal endpoints parse any i64), and the
        // subtraction overflows for one far enough from `now` (a panic with
        // overflow checks; without them, `timestamp == now + i64::MIN` wrapped
        // to `i64::MIN`, whose `abs()` is negative, and passed as fresh).
        if now.abs_diff(self.timestamp) > MAX_SKEW_SECS.unsigned_abs() {
            return Err(AssertionError::Stale);
        }
        let message = self.message();
        let candidates =
            header.split(',').filter_map(|v| v.trim().strip_prefix("v1=")).filter_map(|h| hex::decode(h).ok());
        for candidate in candidates.take(4) {
            for secret in secrets {
                if hmac_sha256(secret.expose(), &[message.as_bytes()]).verify_slice(&candidate).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(AssertionError::BadSignature)
    }
}

/// Why an assertion was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("timestamp outside the allowed window")]
    Stale,
    #[error("no signature matches")]
    BadSignature,
}

/// The query parameter an internal call with a body adds to its path, so the
/// signature, which covers the path and query, also covers the body.
pub const BODY_DIGEST_PARAM: &str = "body_sha256";

/// Lowercase hex SHA-256 of an internal call's body (see [`BODY_DIGEST_PARAM`]).
pub fn body_digest(body: &[u8]) -> String {
    use sha2::Digest as _;
    let digest: [u8; 32] = sha2::Sha256::digest(body).into();
    hex::encode(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(c: char) -> Secret {
        Secret::parse(&c.to_string().repeat(40)).unwrap()
    }

    fn assertion(ts: i64) -> Assertion<'static> {
        Assertion {
            timestamp: ts,
            method: "PUT",
            path_and_query: "/users/profile?x=1",
            request_id: "3f1c2a9e-7b7d-4a5e-9a51-0d6f0c0b7c11",
            user_id: "u1",
            email: "a@example.com",
        }
    }

    #[test]
    fn signed_assertions_verify_under_any_held_secret() {
        let header = assertion(1000).sign(&[secret('a'), secret('b')]);
        assert_eq!(header.matches("v1=").count(), 2);
        assert!(assertion(1000).verify(&header, &[secret('b')], 1000).is_ok());
        assert!(assertion(1000).verify(&header, &[secret('a')], 1030).is_ok());
        assert_eq!(assertion(1000).verify(&header, &[secret('c')], 1000), Err(AssertionError::BadSignature));
    }

    #[test]
    fn any_change_or_a_stale_timestamp_is_refused() {
        let header = assertion(1000).sign(&[secret('a')]);
        let keys = [secret('a')];
        let mut other = assertion(1000);
        other.method = "DELETE";
        assert!(other.verify(&header, &keys, 1000).is_err());
        let mut other = assertion(1000);
        other.path_and_query = "/users/profile?x=2";
        assert!(other.verify(&header, &keys, 1000).is_err());
        let mut other = assertion(1000);
        other.user_id = "u2";
        assert!(other.verify(&header, &keys, 1000).is_err());
        assert_eq!(assertion(1000).verify(&header, &keys, 1061), Err(AssertionError::Stale));
        assert_eq!(assertion(1000).verify(&header, &keys, 939), Err(AssertionError::Stale));
        for junk in ["", "v1=", "v1=zz", "v2=00", &"v1=00,".repeat(100)] {
            assert!(assertion(1000).verify(junk, &keys, 1000).is_err(), "{junk}");
        }
    }

    /// Found by `fuzz/` (target `assertion`): `-9223372036854775808` as the
    /// timestamp made the freshness check overflow.
    #[test]
    fn extreme_timestamps_are_stale_without_overflow() {
        let keys = [secret('a')];
        for (ts, now) in [
            (i64::MIN, 9),
            (i64::MIN, 1_700_000_000),
            (i64::MAX, -1),
            (i64::MAX, i64::MIN),
            (i64::MIN, i64::MAX),
            // Wrapped, `now - ts` was `i64::MIN`, whose `abs()` is negative: it passed.
            (1_700_000_000_i64.wrapping_add(i64::MIN), 1_700_000_000),
        ] {
            let a = assertion(ts);
            assert_eq!(a.verify(&a.sign(&keys), &keys, now), Err(AssertionError::Stale), "ts {ts} now {now}");
        }
        assert!(assertion(i64::MAX).verify(&assertion(i64::MAX).sign(&keys), &keys, i64::MAX - 60).is_ok());
        assert!(assertion(i64::MIN).verify(&assertion(i64::MIN).sign(&keys), &keys, i64::MIN + 60).is_ok());
    }

    /// A verifier written from API.md's text alone, in Python's standard
    /// library, accepts what we sign.
    #[test]
    fn a_python_verifier_written_from_the_spec_accepts_the_signature() {
        let a = assertion(1_700_000_000);
        let header = a.sign(&[secret('k')]);
        let script = r#"
import hmac, hashlib, sys
secret, ts, method, pq, rid, uid, email, header = sys.argv[1:]
m = "v1\n" + ts + "\n" + method + "\n" + pq + "\n" + rid + "\n" + uid + "\n" + email
want = hmac.new(secret.encode(), m.encode(), hashlib.sha256).hexdigest()
ok = any(hmac.compare_digest(v.strip()[3:], want) for v in header.split(",") if v.strip().startswith("v1="))
sys.exit(0 if ok else 1)
"#;
        let status = std::process::Command::new("python3")
            .args(["-c", script, &"k".repeat(40), &a.timestamp.to_string(), a.method, a.path_and_query])
            .args([a.request_id, a.user_id, a.email, &header])
            .status();
        match status {
            Ok(s) => assert!(s.success(), "the Python verifier refused {header}"),
            Err(e) => panic!("python3 is needed for this test: {e}"),
        }
    }
}
