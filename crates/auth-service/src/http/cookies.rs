//! The `csrf_token` cookie (API.md): `HttpOnly; SameSite=Strict; Path=/`,
//! plus `Secure` outside development. The same token is in the JSON body; the
//! gateway checks that the `X-CSRF-Token` header equals the cookie.

use axum::http::HeaderValue;
use common_http::cookies::CSRF_COOKIE;
use cookie::{Cookie, SameSite};

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
}
