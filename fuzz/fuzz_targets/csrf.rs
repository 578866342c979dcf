//! CSRF tokens (`tokens::csrf`): `CsrfKey::verify` on arbitrary tokens and
//! session ids, and `tokens_equal`, the header-against-cookie comparison.
//!
//! Input: `session A \0 session B \0 token`.
//!
//! Invariants:
//! - a token minted for session A verifies for A, for no other session B,
//!   and under no other key; it has the documented `43 chars . 43 chars` shape;
//! - the fuzzed token verifies for at most one of A and B (when they differ);
//! - an accepted fuzzed token is `value.tag`, each part at most 64
//!   base64url characters;
//! - `tokens_equal` is exactly string equality.
#![no_main]

use std::sync::OnceLock;

use gatehouse_fuzz::{CSRF_SECRET, GATEWAY_SECRET, secret, str_fields};
use libfuzzer_sys::fuzz_target;
use tokens::CsrfKey;
use tokens::csrf::tokens_equal;

fn keys() -> &'static (CsrfKey, CsrfKey) {
    static KEYS: OnceLock<(CsrfKey, CsrfKey)> = OnceLock::new();
    KEYS.get_or_init(|| (CsrfKey::new(secret(CSRF_SECRET)), CsrfKey::new(secret(GATEWAY_SECRET))))
}

fuzz_target!(|data: &[u8]| {
    let [a, b, token] = str_fields::<3>(data);
    let (key, other_key) = keys();

    let ok_a = key.verify(&a, &token);
    let ok_b = key.verify(&b, &token);
    if a != b {
        assert!(!(ok_a && ok_b), "one token verified for two sessions {a:?} and {b:?}: {token:?}");
    }
    if ok_a || ok_b {
        let (value, tag) = token.split_once('.').expect("an accepted token has a dot");
        let b64 = |s: &str| s.len() <= 64 && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
        assert!(b64(value) && b64(tag), "accepted a token outside the base64url shape: {token:?}");
        assert!(!other_key.verify(&a, &token) && !other_key.verify(&b, &token), "verified under another key");
    }

    let minted = key.mint(&a).expect("OS randomness");
    let (value, tag) = minted.split_once('.').expect("minted tokens have a dot");
    assert_eq!((value.len(), tag.len()), (43, 43), "{minted}");
    assert!(key.verify(&a, &minted), "a minted token does not verify for its session");
    if a != b {
        assert!(!key.verify(&b, &minted), "a token minted for {a:?} verified for {b:?}");
    }
    assert!(!other_key.verify(&a, &minted), "a minted token verified under another key");

    assert_eq!(tokens_equal(&token, &a), token == a);
    assert!(tokens_equal(&token, &token.clone()));
    assert_eq!(tokens_equal(&minted, &token), minted == token);
});
