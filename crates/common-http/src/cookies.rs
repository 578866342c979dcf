//! Reading cookies from request headers, for the one cookie Gatehouse uses
//! (`csrf_token`): the auth service checks it in `/auth/verify`, the
//! gateway on every state-changing request.

use axum::http::{HeaderMap, header};
use cookie::Cookie;

/// The CSRF cookie's name (API.md).
pub const CSRF_COOKIE: &str = "csrf_token";

/// The value of cookie `name` among all `Cookie` headers, if present.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| Cookie::split_parse(v.to_owned()))
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; csrf_token=xyz; b=2".parse().unwrap());
        assert_eq!(cookie_value(&h, CSRF_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie_value(&h, "missing"), None);
        let mut two = HeaderMap::new();
        two.append(header::COOKIE, "a=1".parse().unwrap());
        two.append(header::COOKIE, "csrf_token=second".parse().unwrap());
        assert_eq!(cookie_value(&two, CSRF_COOKIE).as_deref(), Some("second"));
    }
}
