//! Refresh tokens (`tokens::RefreshKey::parse`): what `/auth/refresh` and
//! `/auth/logout` do with the client's `refresh_token`.
//!
//! Input: the token text (as presented in the JSON body).
//!
//! Invariants:
//! - an accepted token is exactly 75 characters and is the one encoding
//!   `mint` gives for its session and counter (no second spelling of a token,
//!   e.g. through base64 trailing bits, can be accepted: the store
//!   compares counters, but logs and the grace window compare tokens);
//! - another key never accepts it;
//! - any session id and counter (the input's first 24 bytes) mint a token
//!   that parses back to them, under this key only.
#![no_main]

use std::sync::OnceLock;

use gatehouse_fuzz::{CSRF_SECRET, REFRESH_SECRET, secret};
use libfuzzer_sys::fuzz_target;
use tokens::refresh::TOKEN_LEN;
use tokens::{RefreshKey, RefreshToken};

fn keys() -> &'static (RefreshKey, RefreshKey) {
    static K: OnceLock<(RefreshKey, RefreshKey)> = OnceLock::new();
    K.get_or_init(|| (RefreshKey::new(secret(REFRESH_SECRET)), RefreshKey::new(secret(CSRF_SECRET))))
}

fuzz_target!(|data: &[u8]| {
    let (key, other) = keys();
    let token = String::from_utf8_lossy(data);
    if let Ok(parsed) = key.parse(&token) {
        assert_eq!(token.len(), TOKEN_LEN);
        assert_eq!(key.mint(parsed.session_id, parsed.counter), token, "a second spelling of a token was accepted");
        assert!(other.parse(&token).is_err(), "accepted under another key");
    }

    if let (Some(sid), Some(counter)) = (data.get(..16), data.get(16..24)) {
        let session_id = uuid::Uuid::from_slice(sid).expect("16 bytes");
        let counter = u64::from_be_bytes(counter.try_into().expect("8 bytes"));
        let minted = key.mint(session_id, counter);
        assert_eq!(minted.len(), TOKEN_LEN);
        assert_eq!(key.parse(&minted), Ok(RefreshToken { session_id, counter }));
        assert!(other.parse(&minted).is_err());
    }
});
