//! `Cookie` headers (`common_http::cookies::cookie_value`): how the gateway
//! and the auth service find the `csrf_token` cookie among all the cookies of
//! all the request's `Cookie` headers.
//!
//! Input: `cookie name \0 Cookie header values`, the values separated by
//! `\n` (one `Cookie` header each). Both `csrf_token` and the fuzzed name are
//! looked up.
//!
//! Invariants:
//! - the result is exactly what RFC 6265 §5.4's simple reading gives
//!   (a reference implementation below: split every header on `;`, first
//!   `name=value` pair whose trimmed name matches, value trimmed), so a
//!   cookie cannot be smuggled past the lookup or shadowed differently
//!   than a browser or another server would;
//! - a found value contains no `;` and no surrounding whitespace, and
//!   occurs in one of the headers.
#![no_main]

use common_http::cookies::{CSRF_COOKIE, cookie_value};
use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;

/// The reference reading of the headers.
fn reference(headers: &HeaderMap, name: &str) -> Option<String> {
    if name.is_empty() || name != name.trim() {
        return None;
    }
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for pair in text.split(';') {
            let Some((n, v)) = pair.split_once('=') else {
                continue;
            };
            if n.trim() == name {
                return Some(v.trim().to_owned());
            }
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let [name, values] = gatehouse_fuzz::fields::<2>(data);
    let name = String::from_utf8_lossy(name);
    let mut headers = HeaderMap::new();
    for v in values.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(v) {
            headers.append(header::COOKIE, v);
        }
    }
    for wanted in [CSRF_COOKIE, &name] {
        let found = cookie_value(&headers, wanted);
        assert_eq!(found, reference(&headers, wanted), "cookie {wanted:?} in {headers:?}");
        if let Some(v) = found {
            assert!(!v.contains(';'));
            assert_eq!(v, v.trim());
            assert!(headers.get_all(header::COOKIE).iter().any(|h| h.to_str().is_ok_and(|h| h.contains(&v))));
        }
    }
});
