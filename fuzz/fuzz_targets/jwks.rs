//! JWKS parsing: what the gateway does with the bytes of the auth service's
//! `/.well-known/jwks.json` (`gateway::keys::fetch_jwks`, private: it is
//! `serde_json::from_slice::<JwkSet>` then `tokens::VerifyingKeys::from_jwks`,
//! reproduced here line for line), then a verification with every key it
//! installed, so odd key parameters (tiny or huge RSA moduli, exponents,
//! X25519 points as Ed25519 keys) reach the crypto.
//!
//! Input: `JWKS JSON \0 signature segment` (the signature is put on a token
//! whose header names each installed key's `kid` and algorithm).
//!
//! Invariants:
//! - never more keys than the document has, and only keys with a `kid`;
//! - only RSA (RS256) and OKP (EdDSA) keys are installed: a symmetric `oct`
//!   key in a JWKS must never become a verifying key (anyone could then sign);
//! - the installed key's algorithm matches its JWK's `kty`.
#![no_main]

use gatehouse_fuzz::{AUD, ISS, SEED_TTL_SECS, b64url, fields, unix_now};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use libfuzzer_sys::fuzz_target;
use tokens::{AccessTokenVerifier, Algorithm, VerifyingKeys};

fuzz_target!(|data: &[u8]| {
    let [json, signature] = fields::<2>(data);
    let Ok(set) = serde_json::from_slice::<JwkSet>(json) else {
        return;
    };
    let keys = VerifyingKeys::from_jwks(&set);
    assert!(keys.len() <= set.keys.len());
    if set.keys.iter().all(|k| k.common.key_id.is_none()) {
        assert!(keys.is_empty(), "a key without a kid was installed");
    }

    let verifier = AccessTokenVerifier::new(keys.clone(), ISS, AUD, 30);
    let now = unix_now();
    let claims = serde_json::json!({
        "iss": ISS, "aud": AUD, "sub": "u1", "sid": "s1", "jti": "j1",
        "iat": now, "nbf": now, "exp": now + SEED_TTL_SECS, "email": "a@example.com",
    });
    let body = b64url(claims.to_string().as_bytes());
    let signature = String::from_utf8_lossy(signature);
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.as_deref() else {
            continue;
        };
        let Some(key) = keys.get(kid) else {
            continue;
        };
        assert!(key.algorithm().is_asymmetric(), "a symmetric key was installed from a JWKS");
        assert!(
            set.keys.iter().filter(|j| j.common.key_id.as_deref() == Some(kid)).any(|j| matches!(
                (&j.algorithm, key.algorithm()),
                (AlgorithmParameters::RSA(_), Algorithm::Rs256)
                    | (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDsa)
            )),
            "key {kid} has an algorithm its JWK does not describe"
        );
        let header = serde_json::json!({"alg": key.algorithm().as_str(), "typ": "at+jwt", "kid": kid});
        let token = format!("{}.{body}.{signature}", b64url(header.to_string().as_bytes()));
        // No panic, whatever the key's parameters; the result itself is not
        // constrained (the JWKS came from the fuzzer, so it may hold a key
        // the fuzzer "signed" with).
        let _ = verifier.verify(&token);
    }
});
