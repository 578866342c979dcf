//! The public API's OpenAPI 3.1 document: what clients call through the
//! gateway, composed from each service's own description.
//!
//! Every service documents its routes as it serves them (`/auth/login`,
//! `/users/profile`…): the router of each is built from its annotated
//! handlers (`utoipa-axum`), so a route cannot be served undocumented. This
//! module puts them where the gateway serves them: for each route of the
//! table whose name is a service's (the default table's `auth`, `users`,
//! `payments`, `notifications`), each of the service's paths the route
//! forwards to (`strip_prefix` + path lands on this route, for a method the
//! route allows) becomes `strip_prefix` + path. Then it adds what the gateway
//! itself does: its `/health` and `/ready`, the access token and the CSRF
//! pair on protected routes (`bearer`, plus `csrf_header` and `csrf_cookie`
//! on `POST`/`PUT`/`PATCH`/`DELETE`), and the failures any route can get
//! from the gateway (401/403 there, 400, 413, 415, 429, 502, 504), all with the one
//! `{"error": …}` body.
//!
//! The gateway serves the result at `/openapi.json` (and Swagger UI on it at
//! `/docs`); it does not depend on the services, so the document is handed
//! to it as JSON in its configuration. Internal calls (`/internal/*`), the
//! JWKS and the services' probes are not reachable through the gateway and
//! are not in it.

use gateway::routes::RouteTable;
use serde_json::{Map, Value, json};

/// The methods a path item may hold, in the document's order.
const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// Why the services' documents could not be composed (a bug: each service's
/// document is generated from its code).
#[derive(Debug, thiserror::Error)]
#[error("API document: {0}")]
pub struct ComposeError(String);

/// Each service's own document, under the name its route has in the
/// default route table.
pub fn service_documents() -> Result<Vec<(&'static str, Value)>, ComposeError> {
    let documents = [
        ("auth", serde_json::to_value(auth_service::http::openapi())),
        ("users", serde_json::to_value(user_service::openapi())),
        ("payments", serde_json::to_value(payment_service::openapi())),
        ("notifications", serde_json::to_value(notification_service::openapi())),
    ];
    documents
        .into_iter()
        .map(|(name, document)| document.map(|d| (name, d)).map_err(|e| ComposeError(format!("{name}: {e}"))))
        .collect()
}

/// The public document for `routes`, from every service's document.
///
/// # Errors
/// [`ComposeError`] when two services describe a schema or an operation id
/// differently.
pub fn public_document(routes: &RouteTable) -> Result<Value, ComposeError> {
    compose(routes, &service_documents()?)
}

/// The public document for `routes` from the named service documents.
///
/// # Errors
/// See [`public_document`].
pub fn compose(routes: &RouteTable, services: &[(&str, Value)]) -> Result<Value, ComposeError> {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let mut schemes = Map::new();
    let mut tags: Vec<Value> = vec![json!({"name": "gateway", "description": "The gateway's own probes"})];
    let mut operation_ids = std::collections::HashSet::new();
    for route in routes.routes() {
        let Some((_, service)) = services.iter().find(|(name, _)| *name == &*route.name) else {
            continue;
        };
        for (name, schema) in object(&service["components"]["schemas"]) {
            match schemas.get(name) {
                Some(existing) if existing != schema => {
                    return Err(ComposeError(format!("schema {name} differs between services")));
                }
                _ => {
                    schemas.insert(name.clone(), schema.clone());
                }
            }
        }
        for (name, scheme) in object(&service["components"]["securitySchemes"]) {
            schemes.entry(name.clone()).or_insert_with(|| scheme.clone());
        }
        for tag in service["tags"].as_array().into_iter().flatten() {
            if !tags.iter().any(|t| t["name"] == tag["name"]) {
                tags.push(tag.clone());
            }
        }
        for (path, item) in object(&service["paths"]) {
            let public = format!("{}{path}", route.strip_prefix);
            if routes.find(&public).is_none_or(|(r, _)| r.prefix != route.prefix) {
                continue;
            }
            for method in METHODS {
                let Some(operation) = item.get(method) else { continue };
                if !route.methods.iter().any(|m| m.as_str().eq_ignore_ascii_case(method)) {
                    continue;
                }
                let mut operation = operation.clone();
                if let Some(id) = operation["operationId"].as_str()
                    && !operation_ids.insert(id.to_owned())
                {
                    return Err(ComposeError(format!("operation id {id} is used twice")));
                }
                add_gateway_behaviour(&mut operation, method, route.public);
                let entry = paths.entry(public.clone()).or_insert_with(|| json!({}));
                entry[method] = operation;
            }
        }
    }
    if !schemas.contains_key("Error") {
        return Err(ComposeError("no service describes the Error body".into()));
    }
    for (path, summary) in [
        ("/health", "The gateway is running"),
        ("/ready", "The gateway can serve: keys loaded, limiter and revocation view healthy"),
    ] {
        paths.insert(path.to_owned(), gateway_probe(summary, path == "/ready"));
    }
    schemas.insert(
        "Status".into(),
        json!({"type": "object", "required": ["status", "service"],
               "properties": {"status": {"type": "string"}, "service": {"type": "string"}}}),
    );
    schemes.entry("bearer".to_owned()).or_insert_with(|| {
        json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
               "description": "The `access_token` of a login or refresh: `Authorization: Bearer <token>`"})
    });
    schemes.insert(
        "csrf_header".into(),
        json!({"type": "apiKey", "in": "header", "name": "X-CSRF-Token",
               "description": "The `csrf_token` of the login or refresh, on POST/PUT/PATCH/DELETE to a protected route"}),
    );
    schemes.insert(
        "csrf_cookie".into(),
        json!({"type": "apiKey", "in": "cookie", "name": "csrf_token",
               "description": "The cookie the login set (HttpOnly); must equal X-CSRF-Token"}),
    );
    Ok(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Gatehouse API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Everything a client calls through the Gatehouse gateway. Every error is \
                `{\"error\": …, \"hint\"?: …}`. Protected routes need `Authorization: Bearer <access_token>`; \
                their POST/PUT/PATCH/DELETE also need `X-CSRF-Token` equal to the `csrf_token` cookie.",
        },
        "servers": [{"url": "/", "description": "This gateway"}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": schemes},
        "tags": tags,
    }))
}

fn object(value: &Value) -> impl Iterator<Item = (&String, &Value)> {
    value.as_object().into_iter().flatten()
}

fn error_response(description: &str) -> Value {
    json!({"description": description,
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// What the gateway adds to an operation of `method` on a route that is
/// `public` or not: its security and the failures it answers itself.
fn add_gateway_behaviour(operation: &mut Value, method: &str, public: bool) {
    let unsafe_method = method != "get";
    let mut added: Vec<(&str, &str)> = Vec::new();
    if !public {
        operation["security"] = if unsafe_method {
            json!([{"bearer": [], "csrf_header": [], "csrf_cookie": []}])
        } else {
            json!([{"bearer": []}])
        };
        added.push(("401", "Authorization header missing, or an invalid or expired token"));
        if unsafe_method {
            added.push(("403", "CSRF token missing in header or cookie, or mismatched"));
        }
    }
    added.push(("400", "An ambiguous path or a malformed request, refused before any service sees it"));
    if operation.get("requestBody").is_some() {
        added.push(("413", "The body is too large"));
        added.push(("415", "The body is not JSON (Content-Type: application/json)"));
    }
    added.extend([
        ("429", "Rate limit exceeded (see Retry-After)"),
        ("502", "Service unavailable: the upstream could not be reached"),
        ("504", "The upstream did not answer in time"),
    ]);
    let responses = &mut operation["responses"];
    for (status, description) in added {
        if responses.get(status).is_none() {
            responses[status] = error_response(description);
        }
    }
}

/// `GET /health` or `GET /ready` of the gateway itself.
fn gateway_probe(summary: &str, can_fail: bool) -> Value {
    let mut responses = json!({"200": {"description": summary,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}}});
    if can_fail {
        responses["503"] = error_response("Not ready (which dependency, in `error`)");
    }
    responses["429"] = error_response("Rate limit exceeded (see Retry-After)");
    json!({"get": {"tags": ["gateway"], "summary": summary, "responses": responses}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway::routes::ServiceUrls;

    fn default_routes() -> RouteTable {
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        RouteTable::defaults(&ServiceUrls { auth: url(1), users: url(2), payments: url(3), notifications: url(4) })
            .unwrap()
    }

    #[test]
    fn every_service_path_is_served_under_its_gateway_prefix_with_the_gateway_s_security() {
        let document = public_document(&default_routes()).unwrap();
        let paths = document["paths"].as_object().unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        let login = &paths["/api/v1/auth/login"]["post"];
        assert!(login.get("security").is_none(), "login is public: {login}");
        let verify = &paths["/api/v1/auth/verify"]["get"];
        assert_eq!(verify["security"], json!([{"bearer": []}]));
        let put = &paths["/api/v1/users/profile"]["put"];
        assert_eq!(put["security"], json!([{"bearer": [], "csrf_header": [], "csrf_cookie": []}]));
        assert_eq!(
            put["responses"]["403"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
        assert_eq!(paths["/api/v1/payments"]["get"]["security"], json!([{"bearer": []}]));
        assert!(paths.keys().all(|p| p.starts_with("/api/v1/") || p == "/health" || p == "/ready"), "{paths:?}");
        assert!(!paths.keys().any(|p| p.contains("internal") || p.contains("jwks")), "{paths:?}");
    }

    #[test]
    fn a_route_the_table_does_not_have_is_not_documented_and_methods_follow_the_route() {
        let routes = RouteTable::from_toml(
            "[[route]]\nprefix = \"/api/v1/users\"\nupstream = \"http://h:1\"\nmethods = [\"GET\"]",
        )
        .unwrap();
        let document = public_document(&routes).unwrap();
        let paths = document["paths"].as_object().unwrap();
        assert!(paths["/api/v1/users/profile"].get("get").is_some());
        assert!(paths["/api/v1/users/profile"].get("put").is_none(), "PUT is not allowed by the route");
        assert!(paths.get("/api/v1/users/account").is_none(), "DELETE only");
        assert!(!paths.keys().any(|p| p.starts_with("/api/v1/auth")));
    }

    #[test]
    fn two_services_disagreeing_on_a_schema_is_an_error() {
        let mut services = service_documents().unwrap();
        services[1].1["components"]["schemas"]["Error"] = json!({"type": "string"});
        assert!(compose(&default_routes(), &services).is_err());
    }
}
