//! The public API's description: its OpenAPI document at `/openapi.json` and
//! Swagger UI at `/docs`, when the configuration carries a document
//! ([`GatewayConfig::openapi`](crate::GatewayConfig::openapi)).
//!
//! The gateway does not know the services behind it (nothing here depends on
//! a service crate), so it does not write the document: the `gatehouse`
//! binary composes it from each service's own description and the route
//! table, and hands it over as JSON. The gateway only serves it.
//!
//! Swagger UI's files are compiled into the binary (`utoipa-swagger-ui`'s
//! `vendored` feature): the page loads nothing from another host, at build
//! time or in the browser, and its validator badge (which would call
//! `validator.swagger.io`) is off.
//!
//! These are the routed stack's routes ([`crate::edge`]): never the proxy's,
//! and a route table whose prefixes would cover them is refused at start
//! ([`collides_with`]), so neither can shadow the other.

use axum::Router;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::routes::RouteTable;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";
/// Where Swagger UI is served (the page at `/docs/`, its files below it).
pub const DOCS_PATH: &str = "/docs";

/// Whether `path` is one of the documentation routes.
pub fn is_docs_path(path: &str) -> bool {
    path == OPENAPI_PATH || path.strip_prefix(DOCS_PATH).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The documentation path a route of `routes` would take over, if any.
pub fn collides_with(routes: &RouteTable) -> Option<&'static str> {
    [OPENAPI_PATH, DOCS_PATH, "/docs/index.html"].into_iter().find(|path| routes.find(path).is_some())
}

/// `/openapi.json` serving `document`, and Swagger UI on it under `/docs`.
pub(crate) fn router<S: Clone + Send + Sync + 'static>(document: serde_json::Value) -> Router<S> {
    let config = Config::new([OPENAPI_PATH]).validator_url("none").persist_authorization(false);
    SwaggerUi::new(DOCS_PATH).external_url_unchecked(OPENAPI_PATH, document).config(config).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documentation_paths_are_documentation_paths() {
        for path in ["/openapi.json", "/docs", "/docs/", "/docs/swagger-ui.css"] {
            assert!(is_docs_path(path), "{path}");
        }
        for path in ["/", "/openapi.jsonx", "/docsx", "/api/v1/docs", "/health"] {
            assert!(!is_docs_path(path), "{path}");
        }
    }

    #[test]
    fn a_route_over_a_documentation_path_is_found() {
        let table = |prefix: &str| {
            RouteTable::from_toml(&format!(
                "[[route]]\nprefix = \"{prefix}\"\nupstream = \"http://h:1\"\nstrip_prefix = \"\""
            ))
            .unwrap()
        };
        assert_eq!(collides_with(&table("/docs")), Some("/docs"));
        assert_eq!(collides_with(&table("/openapi.json")), Some("/openapi.json"));
        assert_eq!(collides_with(&table("/api/v1/users")), None);
    }
}
