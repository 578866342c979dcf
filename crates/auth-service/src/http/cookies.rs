//! The `csrf_token` cookie (API.md): `HttpOnly; SameSite=Strict; Path=/`,
//! plus `Secure` outside development. The same token is in the JSON body; the
//! gateway checks that the `X-CSRF-Token` header equals the cookie.

use axum::http::HeaderValue;
use cookie::{Cookie, SameSite};

pub const CSRF_COOKIE: &str = "csrf_token";

fn build(value: String, secure: bool) -> Cookie<'static> {
    Cookie::build((CSRF_COOKIE, value)).http_only(true).same_site(SameSite::Strict).path("/").secure(secure).build()
}

/// `Set-Cookie` carrying a new CSRF token.
pub fn set_csrf_cookie(token: &str, secure: bool) -> Option<HeaderValue> {
    HeaderValue::from_str(&build(token.to_owned(), secure).to_string()).ok()
}

/// `Set-Cookie` removing the CSRF cookie.
pub fn clear_csrf_cookie(secure: bool) -> Option<HeaderValue> {
    let mut c = build(String::new(), secure);
    c.make_removal();
    HeaderValue::from_str(&c.to_string()).ok()
}

/// The `csrf_token` cookie of a request, if present.
pub fn csrf_cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| Cookie::split_parse(v.to_owned()))
        .filter_map(Result::ok)
        .find(|c| c.name() == CSRF_COOKIE)
        .map(|c| c.value().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_attributes() {
        let v = set_csrf_cookie("abc", true).unwrap();
        let s = v.to_str().unwrap();
        for attr in ["csrf_token=abc", "HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
            assert!(s.contains(attr), "{s} lacks {attr}");
        }
        assert!(!set_csrf_cookie("abc", false).unwrap().to_str().unwrap().contains("Secure"));
        assert!(clear_csrf_cookie(false).unwrap().to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.append(axum::http::header::COOKIE, HeaderValue::from_static("a=1; csrf_token=xyz; b=2"));
        assert_eq!(csrf_cookie(&h).as_deref(), Some("xyz"));
    }
}
