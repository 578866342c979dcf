//! The auth service's two cookies.
//!
//! - `csrf_token` (API.md): `HttpOnly; SameSite=Strict; Path=/`. The same
//!   token is in the JSON body; the gateway checks that the `X-CSRF-Token`
//!   header equals the cookie.
//! - `refresh_token`: the refresh token again, for browser clients that
//!   must survive a page reload without ever giving a script the token
//!   (the gateway's demo page). `HttpOnly; SameSite=Strict`, scoped to the
//!   auth routes as the browser sees them through the gateway
//!   (`AuthConfig::refresh_cookie_path`, `/api/v1/auth`), so it travels only
//!   with calls to the auth service, and `Max-Age` the refresh token's own
//!   lifetime. `/auth/refresh` and `/auth/logout` accept it when the body
//!   carries no token, and only from an allowed origin (see `tokens_api`).
//!
//! Both get `Secure` outside development (`AuthConfig::secure_cookies`).

use axum::http::HeaderValue;
use common_http::cookies::CSRF_COOKIE;
use cookie::{Cookie, SameSite};

/// The refresh cookie's name.
pub const REFRESH_COOKIE: &str = "refresh_token";

fn build(name: &'static str, value: String, path: String, secure: bool) -> Cookie<'static> {
    Cookie::build((name, value)).http_only(true).same_site(SameSite::Strict).path(path).secure(secure).build()
}

/// `Set-Cookie` carrying a new CSRF token.
pub fn set_csrf_cookie(token: &str, secure: bool) -> Option<HeaderValue> {
    HeaderValue::from_str(&build(CSRF_COOKIE, token.to_owned(), "/".to_owned(), secure).to_string()).ok()
}

/// `Set-Cookie` removing the CSRF cookie.
pub fn clear_csrf_cookie(secure: bool) -> Option<HeaderValue> {
    let mut c = build(CSRF_COOKIE, String::new(), "/".to_owned(), secure);
    c.make_removal();
    HeaderValue::from_str(&c.to_string()).ok()
}

/// `Set-Cookie` carrying a refresh token, kept by the browser for `max_age_secs`.
pub fn set_refresh_cookie(token: &str, path: &str, max_age_secs: i64, secure: bool) -> Option<HeaderValue> {
    let mut c = build(REFRESH_COOKIE, token.to_owned(), path.to_owned(), secure);
    c.set_max_age(cookie::time::Duration::seconds(max_age_secs));
    HeaderValue::from_str(&c.to_string()).ok()
}

/// `Set-Cookie` removing the refresh cookie (same name and path, or the
/// browser would keep it).
pub fn clear_refresh_cookie(path: &str, secure: bool) -> Option<HeaderValue> {
    let mut c = build(REFRESH_COOKIE, String::new(), path.to_owned(), secure);
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

    #[test]
    fn the_refresh_cookie_is_http_only_strict_and_scoped_to_the_auth_path() {
        let v = set_refresh_cookie("rt", "/api/v1/auth", 604_800, true).unwrap();
        let s = v.to_str().unwrap();
        for attr in ["refresh_token=rt", "HttpOnly", "SameSite=Strict", "Path=/api/v1/auth", "Max-Age=604800", "Secure"]
        {
            assert!(s.contains(attr), "{s} lacks {attr}");
        }
        assert!(!set_refresh_cookie("rt", "/api/v1/auth", 60, false).unwrap().to_str().unwrap().contains("Secure"));
        let cleared = clear_refresh_cookie("/api/v1/auth", false).unwrap();
        let cleared = cleared.to_str().unwrap();
        assert!(cleared.contains("Max-Age=0") && cleared.contains("Path=/api/v1/auth"), "{cleared}");
    }
}
