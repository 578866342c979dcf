//! The route table: which prefix goes to which upstream, whether it needs an
//! access token, which methods it allows.
//!
//! The default table is the seed's four routes. A TOML file
//! (`GATEHOUSE_CONFIG`) can replace it:
//!
//! ```toml
//! [[route]]
//! prefix = "/api/v1/auth"          # matched on whole segments
//! upstream = "http://auth:8081"
//! public = true                    # no access token needed
//! forward_credentials = true       # Authorization and Cookie go upstream
//! rate_limit_fail_closed = true    # refuse when the shared limiter is down
//! methods = ["GET", "POST", "DELETE"]
//! ```
//!
//! Forwarding removes `strip_prefix` (default `/api/v1`): the seed forgot to,
//! so every proxied call reached `/api/v1/users/…` on a service that routes
//! `/users/…` and got 404 (SEED-FLAWS F18).

use std::sync::Arc;

use axum::http::{HeaderValue, Method, Uri};
use serde::Deserialize;

/// One route.
#[derive(Debug, Clone)]
pub struct Route {
    pub prefix: String,
    /// `scheme://host:port` of the upstream, without a path.
    pub upstream: Uri,
    /// The `Host` header the upstream receives: what the HTTP client would
    /// derive from `upstream` on every request (`host`, plus `:port` unless
    /// it is 80), built once.
    pub host: Option<HeaderValue>,
    pub public: bool,
    pub methods: Vec<Method>,
    /// Removed from the path before forwarding.
    pub strip_prefix: String,
    /// Whether the client's `Authorization` and `Cookie` headers are forwarded
    /// (only the auth service needs them; others get the signed identity).
    pub forward_credentials: bool,
    /// When the shared rate limiter is unreachable: refuse (true) or allow.
    pub rate_limit_fail_closed: bool,
    /// The service name, for logs (shared with each request's access-log line).
    pub name: Arc<str>,
}

/// Why a route table could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RouteError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    route: Vec<RouteEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteEntry {
    prefix: String,
    upstream: String,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    forward_credentials: bool,
    #[serde(default)]
    rate_limit_fail_closed: bool,
    methods: Option<Vec<String>>,
    strip_prefix: Option<String>,
    name: Option<String>,
}

/// The routes, longest prefix first.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
}

/// Upstream base URLs of the default table.
#[derive(Debug, Clone)]
pub struct ServiceUrls {
    pub auth: String,
    pub users: String,
    pub payments: String,
    pub notifications: String,
}

const DEFAULT_METHODS: [Method; 5] = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

/// The `Host` value for `upstream`, as hyper-util's client sets it when a
/// request has none: the port only when it is not the scheme's default.
fn host_header(upstream: &Uri) -> Option<HeaderValue> {
    let host = upstream.host()?;
    let default_port = if upstream.scheme_str() == Some("https") { 443 } else { 80 };
    match upstream.port_u16() {
        Some(port) if port != default_port => HeaderValue::try_from(format!("{host}:{port}")).ok(),
        _ => HeaderValue::from_str(host).ok(),
    }
}

/// An upstream's `http://host:port` or `https://host:port` (the gateway's
/// upstream roots then vouch for its certificate).
fn parse_upstream(url: &str, what: &str) -> Result<Uri, RouteError> {
    let uri: Uri = url.trim_end_matches('/').parse().map_err(|_| RouteError(format!("{what}: not a valid URL")))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.authority().is_none() || !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(RouteError(format!("{what}: expected http(s)://host:port without a path")));
    }
    Ok(uri)
}

impl RouteTable {
    /// The seed's routes: auth public, the three services protected.
    ///
    /// # Errors
    /// [`RouteError`] for a malformed service URL, naming its variable.
    pub fn defaults(urls: &ServiceUrls) -> Result<Self, RouteError> {
        let route = |name: &str, url: &str, var: &str, public: bool| -> Result<Route, RouteError> {
            let upstream = parse_upstream(url, var)?;
            Ok(Route {
                prefix: format!("/api/v1/{name}"),
                host: host_header(&upstream),
                upstream,
                public,
                methods: DEFAULT_METHODS.to_vec(),
                strip_prefix: "/api/v1".to_owned(),
                forward_credentials: public,
                rate_limit_fail_closed: public,
                name: Arc::from(name),
            })
        };
        Ok(Self::new(vec![
            route("auth", &urls.auth, "AUTH_SERVICE_URL", true)?,
            route("users", &urls.users, "USER_SERVICE_URL", false)?,
            route("payments", &urls.payments, "PAYMENT_SERVICE_URL", false)?,
            route("notifications", &urls.notifications, "NOTIFICATION_SERVICE_URL", false)?,
        ]))
    }

    /// A table from the TOML format in the module docs.
    ///
    /// # Errors
    /// [`RouteError`] naming the offending entry.
    pub fn from_toml(text: &str) -> Result<Self, RouteError> {
        let file: RouteFile = toml::from_str(text).map_err(|e| RouteError(format!("route file: {}", e.message())))?;
        let mut routes = Vec::new();
        for (i, e) in file.route.into_iter().enumerate() {
            let what = format!("route {} ({})", i + 1, e.prefix);
            if !e.prefix.starts_with('/') || e.prefix.ends_with('/') || crate::path::canonical_path(&e.prefix).is_err()
            {
                return Err(RouteError(format!("{what}: prefix must be a canonical path without a trailing /")));
            }
            let methods = match e.methods {
                None => DEFAULT_METHODS.to_vec(),
                Some(list) => list
                    .iter()
                    .map(|m| match m.to_ascii_uppercase().as_str() {
                        "TRACE" | "CONNECT" => Err(RouteError(format!("{what}: method {m} is never allowed"))),
                        upper => Method::from_bytes(upper.as_bytes())
                            .map_err(|_| RouteError(format!("{what}: unknown method {m}"))),
                    })
                    .collect::<Result<_, _>>()?,
            };
            let strip_prefix = e.strip_prefix.unwrap_or_else(|| "/api/v1".to_owned());
            if !e.prefix.starts_with(&strip_prefix) {
                return Err(RouteError(format!("{what}: strip_prefix must be a prefix of prefix")));
            }
            let upstream = parse_upstream(&e.upstream, &what)?;
            routes.push(Route {
                name: Arc::from(e.name.as_deref().unwrap_or_else(|| e.prefix.rsplit('/').next().unwrap_or_default())),
                host: host_header(&upstream),
                upstream,
                prefix: e.prefix,
                public: e.public,
                methods,
                strip_prefix,
                forward_credentials: e.forward_credentials,
                rate_limit_fail_closed: e.rate_limit_fail_closed,
            });
        }
        if routes.is_empty() {
            return Err(RouteError("route file: no [[route]] entries".into()));
        }
        Ok(Self::new(routes))
    }

    fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Self { routes }
    }

    /// The route for a canonical path, matched on whole segments, and the
    /// path to forward.
    pub fn find<'p>(&self, path: &'p str) -> Option<(&Route, &'p str)> {
        self.routes.iter().find_map(|r| {
            let rest = path.strip_prefix(r.prefix.as_str())?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            let forwarded = path.strip_prefix(r.strip_prefix.as_str()).unwrap_or(path);
            Some((r, if forwarded.is_empty() { "/" } else { forwarded }))
        })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::defaults(&ServiceUrls {
            auth: "http://127.0.0.1:8081".into(),
            users: "http://127.0.0.1:8082".into(),
            payments: "http://127.0.0.1:8083".into(),
            notifications: "http://127.0.0.1:8084".into(),
        })
        .unwrap()
    }

    #[test]
    fn the_seed_routes_strip_the_api_prefix() {
        let t = table();
        let (r, p) = t.find("/api/v1/users/profile").unwrap();
        assert_eq!((&*r.name, p, r.public), ("users", "/users/profile", false));
        let (r, p) = t.find("/api/v1/auth/login").unwrap();
        assert_eq!((&*r.name, p, r.public, r.forward_credentials), ("auth", "/auth/login", true, true));
        assert_eq!(t.find("/api/v1/payments").unwrap().1, "/payments");
    }

    #[test]
    fn the_host_header_is_the_upstream_authority_without_a_default_port() {
        let t = table();
        let (r, _) = t.find("/api/v1/users/profile").unwrap();
        assert_eq!(r.host, Some(HeaderValue::from_static("127.0.0.1:8082")));
        let t =
            RouteTable::from_toml("[[route]]\nprefix = \"/api/v1/x\"\nupstream = \"http://x.internal:80\"").unwrap();
        assert_eq!(t.routes()[0].host, Some(HeaderValue::from_static("x.internal")));
        for (upstream, host) in [
            ("https://x.internal:443", "x.internal"),
            ("https://x.internal", "x.internal"),
            ("https://x.internal:80", "x.internal:80"),
            ("https://x.internal:8443", "x.internal:8443"),
        ] {
            let t = RouteTable::from_toml(&format!("[[route]]\nprefix = \"/api/v1/x\"\nupstream = \"{upstream}\""))
                .unwrap();
            assert_eq!(t.routes()[0].host, Some(HeaderValue::from_static(host)), "{upstream}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments_only() {
        let t = table();
        assert!(t.find("/api/v1/usersadmin").is_none());
        assert!(t.find("/api/v1/authz/x").is_none());
        assert!(t.find("/api/v2/users/profile").is_none());
        assert!(t.find("/users/profile").is_none());
    }

    #[test]
    fn a_toml_table_replaces_the_defaults() {
        let t = RouteTable::from_toml(
            r#"
            [[route]]
            prefix = "/api/v1/reports"
            upstream = "http://127.0.0.1:9000"
            methods = ["get"]
            "#,
        )
        .unwrap();
        let (r, p) = t.find("/api/v1/reports/2026").unwrap();
        assert_eq!((p, r.public, r.methods.clone()), ("/reports/2026", false, vec![Method::GET]));
        assert!(t.find("/api/v1/users/profile").is_none());
    }

    #[test]
    fn bad_tables_are_refused() {
        for text in [
            "",
            "[[route]]\nprefix = \"/x\"\nupstream = \"ftp://h\"",
            "[[route]]\nprefix = \"/api/v1/x\"\nupstream = \"http://h:1/path\"",
            "[[route]]\nprefix = \"/api/v1/x\"\nupstream = \"http://h:1\"\nmethods = [\"TRACE\"]",
            "[[route]]\nprefix = \"/api/v1/../x\"\nupstream = \"http://h:1\"",
            "[[route]]\nprefix = \"/api/v1/x\"\nupstream = \"http://h:1\"\nbogus = 1",
        ] {
            assert!(RouteTable::from_toml(text).is_err(), "{text}");
        }
        let bad =
            ServiceUrls { auth: "not a url".into(), users: "".into(), payments: "".into(), notifications: "".into() };
        assert!(RouteTable::defaults(&bad).unwrap_err().0.starts_with("AUTH_SERVICE_URL"));
    }
}
