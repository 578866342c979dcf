//! The `Authorization` header (`tokens::parse_bearer`), as the gateway and
//! the auth service read it: the header value's bytes.
//!
//! Input: the header value's bytes.
//!
//! Invariants for an accepted header:
//! - it is `<scheme> <token>` with the scheme `bearer` in any case and
//!   exactly one space;
//! - the token is non-empty, has no whitespace or control character, only
//!   RFC 6750 `b64token` characters, and is the end of the header;
//! - a value `http` would refuse as a header is never the reason for
//!   acceptance: any accepted header is also a valid `HeaderValue`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokens::{BearerError, parse_bearer};

fuzz_target!(|data: &[u8]| {
    assert_eq!(parse_bearer(None), Err(BearerError::Missing));
    let result = parse_bearer(Some(data));
    // Through `http`'s header type, as the services get it.
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        assert_eq!(parse_bearer(Some(value.as_bytes())), result);
    }
    let Ok(token) = result else {
        return;
    };
    let header = std::str::from_utf8(data).expect("accepted headers are UTF-8");
    assert!(!token.is_empty());
    assert!(header.ends_with(token));
    let scheme = &header[..header.len() - token.len()];
    assert!(scheme.eq_ignore_ascii_case("bearer "), "scheme {scheme:?}");
    assert!(!token.chars().any(|c| c.is_whitespace() || c.is_control()), "token {token:?}");
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)), "token {token:?}");
    assert!(http::HeaderValue::from_bytes(data).is_ok());
});
