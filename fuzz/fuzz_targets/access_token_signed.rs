//! The claim and header rules of `AccessTokenVerifier::verify`, reached with
//! correctly signed tokens: the fuzzer writes the header and claims JSON, the
//! target signs them with one of the verifier's own keys (HS256 or EdDSA), so
//! what is tested is everything after the signature check: `typ`, `kid`,
//! `alg` binding, `iss`, `aud`, `exp`, `nbf`, required claims, claim types.
//!
//! Input: one selector byte (bit 0: 0 = HS256 key, 1 = EdDSA key), then
//! `header JSON \0 claims JSON`.
//!
//! Invariants when the token is accepted:
//! - the header's `alg` is the signing key's and `kid` names it; `typ` is
//!   at+jwt (case-insensitive, optionally `application/`);
//! - the claims JSON is an object whose `iss`, `aud`, `sub`, `exp`, `nbf`
//!   are exactly what the verifier returned, with our `iss` and `aud`, and
//!   `exp`/`nbf` within the leeway of now.
#![no_main]

use std::sync::OnceLock;

use gatehouse_fuzz::{
    AUD, HS256_SECRET, ISS, LEEWAY_SECS, b64url, ed25519_pem, eddsa_key, fields, hs256_key, unix_now, verifier,
};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn encoding_keys() -> &'static [(EncodingKey, Algorithm, String); 2] {
    static KEYS: OnceLock<[(EncodingKey, Algorithm, String); 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            (
                EncodingKey::from_secret(HS256_SECRET.as_bytes()).expect("HS256 key"),
                Algorithm::HS256,
                hs256_key().kid().to_owned(),
            ),
            (
                EncodingKey::from_ed_pem(ed25519_pem().as_bytes()).expect("Ed25519 key"),
                Algorithm::EdDSA,
                eddsa_key().kid().to_owned(),
            ),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let [header_json, claims_json] = fields::<2>(rest);
    let (encoding, alg, kid) = &encoding_keys()[usize::from(selector & 1)];
    let signing_input = format!("{}.{}", b64url(header_json), b64url(claims_json));
    let signature = jsonwebtoken::crypto::sign(signing_input.as_bytes(), encoding, *alg).expect("signing works");
    let token = format!("{signing_input}.{signature}");

    let Ok(claims) = verifier().verify(&token) else {
        return;
    };

    let header: Value = serde_json::from_slice(header_json).expect("an accepted header is JSON");
    let alg_name = serde_json::to_value(alg).expect("alg serialises");
    assert_eq!(header.get("alg"), Some(&alg_name), "accepted an alg other than the key's: {header}");
    assert_eq!(header.get("kid").and_then(Value::as_str), Some(kid.as_str()), "kid must name the signing key");
    let typ = header.get("typ").and_then(Value::as_str).unwrap_or_default();
    assert!(
        typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt"),
        "accepted typ {typ:?}"
    );

    let body: Value = serde_json::from_slice(claims_json).expect("accepted claims are JSON");
    assert!(body.is_object(), "accepted claims that are not an object: {body}");
    assert_eq!(body.get("iss").and_then(Value::as_str), Some(ISS), "{body}");
    assert_eq!(body.get("aud").and_then(Value::as_str), Some(AUD), "{body}");
    assert_eq!(claims.iss, ISS);
    assert_eq!(claims.aud, AUD);
    assert_eq!(body.get("sub").and_then(Value::as_str), Some(claims.sub.as_str()), "{body}");
    assert_eq!(body.get("exp").and_then(Value::as_i64), Some(claims.exp), "{body}");
    assert_eq!(body.get("nbf").and_then(Value::as_i64), Some(claims.nbf), "{body}");
    let now = unix_now();
    let leeway = LEEWAY_SECS as i64;
    assert!(claims.exp >= now - leeway - 1, "accepted an expired token: exp {} now {now}", claims.exp);
    assert!(claims.nbf <= now + leeway + 1, "accepted a token not yet valid: nbf {} now {now}", claims.nbf);
});
