//! The demo page at `/`: a small browser client of the real API (sign up,
//! sign in with the two-factor step, profile, sessions, payments,
//! notifications, sign out), served by the gateway itself so that it is
//! same-origin with `/api/v1` and needs no CORS at all.
//!
//! Three files under `crates/gateway/static/`, embedded in the binary at
//! compile time (no CDN, no build step): `index.html` at `/`, and
//! `/assets/app.js` and `/assets/app.css`. They are served on the gateway's
//! routed stack, never proxied ([`is_page_path`] keeps them off the direct
//! path, see [`crate::edge`]), and a route table whose prefixes would cover
//! one of them is refused at start ([`collides_with`]), so neither the page
//! nor a route loses paths to the other unnoticed.
//!
//! The same document is also served at the paths of the links the auth
//! service mails ([`LINK_PATHS`]): `PUBLIC_URL/reset-password#token=…` and
//! `PUBLIC_URL/verify-email#token=…`. The page reads the token from the
//! fragment (which the browser never sends, so it reaches no server log and
//! no `Referer`) and posts it to the API itself.
//!
//! Caching: every file has a strong `ETag` (a SHA-256 prefix of its bytes,
//! computed once) and `Cache-Control: no-cache`, so a browser revalidates
//! each use and gets `304 Not Modified` until the binary changes; a new
//! release is never mixed with a cached script.
//!
//! The page gets its own strict Content-Security-Policy: scripts, styles and
//! connections from the gateway's origin only (no inline script, no
//! `eval`), no framing, no forms posting elsewhere. How the page keeps its
//! tokens is described at the top of `static/app.js`.

use std::sync::LazyLock;

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use common_http::ApiError;
use sha2::{Digest as _, Sha256};

use crate::routes::RouteTable;

/// The page's Content-Security-Policy.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// One embedded file, with the headers that do not change.
struct Asset {
    path: &'static str,
    body: &'static [u8],
    content_type: &'static str,
    etag: HeaderValue,
    /// The HTML document gets the page-level policies; scripts and styles do not need them.
    document: bool,
}

impl Asset {
    fn new(path: &'static str, body: &'static [u8], content_type: &'static str, document: bool) -> Self {
        let digest = Sha256::digest(body);
        let etag = format!("\"{}\"", hex::encode(&digest[..16]));
        // A quoted hex string is always a valid header value.
        let etag = HeaderValue::try_from(etag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        Self { path, body, content_type, etag, document }
    }

    fn respond(&self, request_headers: &HeaderMap) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, self.etag.clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers
            .insert(HeaderName::from_static("cross-origin-resource-policy"), HeaderValue::from_static("same-origin"));
        if self.document {
            headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            headers
                .insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
        }
        if matches_etag(request_headers.get(header::IF_NONE_MATCH), &self.etag) {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        (StatusCode::OK, headers, self.body).into_response()
    }
}

static ASSETS: LazyLock<[Asset; 3]> = LazyLock::new(|| {
    [
        Asset::new("/", include_bytes!("../static/index.html"), "text/html; charset=utf-8", true),
        Asset::new("/assets/app.js", include_bytes!("../static/app.js"), "text/javascript; charset=utf-8", false),
        Asset::new("/assets/app.css", include_bytes!("../static/app.css"), "text/css; charset=utf-8", false),
    ]
});

/// The paths of the links in the auth service's mails (password reset,
/// email verification), where the page itself is served as at `/`.
pub const LINK_PATHS: [&str; 2] = ["/reset-password", "/verify-email"];

/// Every routed path and the index in [`ASSETS`] of the file served there.
fn page_routes() -> impl Iterator<Item = (&'static str, usize)> {
    let link_pages = LINK_PATHS.iter().map(|path| (*path, 0));
    ASSETS.iter().enumerate().map(|(index, asset)| (asset.path, index)).chain(link_pages)
}

/// Whether `path` is one of the page's paths (served here, never proxied).
pub fn is_page_path(path: &str) -> bool {
    matches!(path, "/" | "/reset-password" | "/verify-email" | "/assets/app.js" | "/assets/app.css")
}

/// The page path a route of `routes` would take over, if any (the page's
/// routes would win, and the route would silently lose that path).
pub fn collides_with(routes: &RouteTable) -> Option<&'static str> {
    page_routes().map(|(path, _)| path).find(|path| routes.find(path).is_some())
}

/// `If-None-Match` (RFC 9110 §13.1.2): `*`, or a list of entity tags
/// compared weakly (a `W/` prefix is ignored).
fn matches_etag(if_none_match: Option<&HeaderValue>, etag: &HeaderValue) -> bool {
    let (Some(value), Ok(etag)) = (if_none_match.and_then(|v| v.to_str().ok()), etag.to_str()) else {
        return false;
    };
    value.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// The page's routes: `GET` (and `HEAD`) only; any other method is 405.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new();
    for (path, index) in page_routes() {
        let route: MethodRouter<S> = get(move |headers: HeaderMap| async move { ASSETS[index].respond(&headers) })
            .fallback(|| async { ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed") });
        router = router.route(path, route);
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_routed_path_is_a_page_path_and_nothing_else_is() {
        let routed: Vec<&str> = page_routes().map(|(path, _)| path).collect();
        assert_eq!(routed, ["/", "/assets/app.js", "/assets/app.css", "/reset-password", "/verify-email"]);
        for path in routed {
            assert!(is_page_path(path), "{path}");
        }
        for other in [
            "/api/v1/auth/login",
            "/assets/",
            "/assets/other.js",
            "/index.html",
            "/health",
            "/reset-password/",
            "/verify-emails",
        ] {
            assert!(!is_page_path(other), "{other}");
        }
    }

    #[test]
    fn a_route_over_a_page_path_is_found() {
        let table = |prefix: &str| {
            RouteTable::from_toml(&format!(
                "[[route]]\nprefix = \"{prefix}\"\nupstream = \"http://h:1\"\nstrip_prefix = \"\""
            ))
            .unwrap()
        };
        assert_eq!(collides_with(&table("/assets")), Some("/assets/app.js"));
        assert_eq!(collides_with(&table("/reset-password")), Some("/reset-password"));
        assert_eq!(collides_with(&table("/verify-email")), Some("/verify-email"));
        assert_eq!(collides_with(&table("/assets/img")), None);
        assert_eq!(collides_with(&table("/verify")), None);
        assert_eq!(collides_with(&table("/api/v1/users")), None);
    }

    #[test]
    fn if_none_match_compares_entity_tags() {
        let etag = HeaderValue::from_static("\"abc\"");
        let check = |v: &'static str| matches_etag(Some(&HeaderValue::from_static(v)), &etag);
        assert!(check("\"abc\""));
        assert!(check("W/\"abc\""));
        assert!(check("\"x\", \"abc\""));
        assert!(check("*"));
        assert!(!check("\"abcd\""));
        assert!(!check("abc"));
        assert!(!matches_etag(None, &etag));
    }

    #[test]
    fn the_page_loads_nothing_inline_that_its_policy_would_block() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(html.contains(r#"<script src="/assets/app.js" defer></script>"#));
        assert!(!html.contains("<script>") && !html.contains("<style") && !html.contains("style="), "inline code");
        // No event-handler attribute (`onclick=` and the like).
        let handler = html.split(" on").skip(1).any(|rest| {
            rest.split_once('=')
                .is_some_and(|(name, _)| !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase()))
        });
        assert!(!handler, "an inline event handler");
        assert!(!html.contains("http://") && !html.contains("https://"), "nothing from another origin");
    }
}
