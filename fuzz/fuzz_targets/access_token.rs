//! `AccessTokenVerifier::verify` on arbitrary token strings: the gateway's and
//! the auth service's path for every `Authorization: Bearer` token.
//!
//! The verifier trusts three fixed keys (HS256, EdDSA, RS256; see src/lib.rs),
//! so seed tokens minted with them pass every check and the fuzzer mutates
//! real tokens, not only garbage.
//!
//! Invariants, besides "no panic":
//! - verification is deterministic (same input, same result);
//! - an accepted token is three base64url segments whose header has
//!   `typ` at+jwt, a `kid` we hold and the `alg` of that key (never `none`,
//!   never an algorithm the token picked);
//! - its claims have our `iss` and `aud`, and `exp`/`nbf` within the leeway of now.
#![no_main]

use gatehouse_fuzz::{AUD, ISS, LEEWAY_SECS, unix_now, verifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let verifier = verifier();
    let result = verifier.verify(token);
    assert_eq!(result, verifier.verify(token), "verification is deterministic");
    let Ok(claims) = result else {
        return;
    };

    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "accepted a token that is not three segments: {token:?}");
    let header = jsonwebtoken::decode_header(token).expect("an accepted token has a decodable header");
    let typ = header.typ.as_deref().unwrap_or_default();
    assert!(
        typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt"),
        "accepted typ {typ:?}"
    );
    let kid = header.kid.as_deref().expect("an accepted token has a kid");
    let key = verifier.keys().get(kid).expect("an accepted token's kid is one we hold");
    let key_alg: jsonwebtoken::Algorithm = key.algorithm().as_str().parse().expect("our algorithms are JOSE names");
    assert_eq!(header.alg, key_alg, "the token's alg must be its key's");

    assert_eq!(claims.iss, ISS);
    assert_eq!(claims.aud, AUD);
    let now = unix_now();
    let leeway = LEEWAY_SECS as i64;
    // A second of slack: the verifier read the clock slightly earlier.
    assert!(claims.exp >= now - leeway - 1, "accepted an expired token: exp {} now {now}", claims.exp);
    assert!(claims.nbf <= now + leeway + 1, "accepted a token not yet valid: nbf {} now {now}", claims.nbf);
});
