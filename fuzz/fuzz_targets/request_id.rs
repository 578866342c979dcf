//! Request-id validation (`common_http::request_id::is_valid_request_id`): a
//! client's `X-Request-ID` is kept (auth service, downstream services) or
//! passed on as `X-Client-Request-ID` (gateway) only when it passes, and the
//! guard requires it of the signed `X-Request-ID`.
//!
//! Input: the header value's bytes.
//!
//! Invariants for an accepted id:
//! - 1 to 128 characters, all of `[A-Za-z0-9._:-]` (so nothing that could
//!   break a log line or a header);
//! - it can be put back into a response header unchanged (`HeaderValue`);
//! - the same answer whether it is checked as text or as an `http` header.
#![no_main]

use common_http::request_id::is_valid_request_id;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let valid = is_valid_request_id(&text);
    if let Ok(value) = http::HeaderValue::from_bytes(data)
        && let Ok(s) = value.to_str()
    {
        assert_eq!(is_valid_request_id(s), valid);
    }
    if !valid {
        return;
    }
    assert!((1..=128).contains(&text.len()), "{text:?}");
    assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)), "{text:?}");
    let value = http::HeaderValue::from_str(&text).expect("a valid id is a valid header value");
    assert_eq!(value.as_bytes(), text.as_bytes());
    assert!(!text.chars().any(|c| c.is_whitespace() || c.is_control()));
});
