//! The public API's OpenAPI document, against the real stack: `gatehouse up`
//! as a process, every call plain HTTP to the gateway.
//!
//! - The document is OpenAPI 3.1 and holds every operation the gateway
//!   serves: each service's routes (from the service's own router-built
//!   document, not a list written here) under each route of the default
//!   table, and the gateway's probes. Every documented operation answers
//!   through the gateway with a real login: never 404 or 405, never 5xx.
//! - `/docs` is Swagger UI, its files served by the gateway itself.
//! - Schemathesis (the PyPI fuzzer `scripts/test` installs) generates
//!   requests from the document, with a real login, and finds no 5xx and no
//!   response outside the document.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use gateway::routes::{RouteTable, ServiceUrls};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Running, StackPorts, gatehouse, wait_ready};
use testkit::{DEFAULT_PASSWORD, unique_email};

struct Stack {
    _child: Running,
    ports: StackPorts,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// `gatehouse up` on SQLite in an empty directory, with limits generous
/// enough for a fuzzer sending hundreds of requests from one IP and user.
async fn start() -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let ports = StackPorts::new();
    let mut env = ports.env();
    for (var, value) in [
        ("RATE_LIMIT_PER_MINUTE", "100000"),
        ("RATE_LIMIT_BURST", "10000"),
        ("AUTH_RATE_LIMIT_PER_MINUTE", "100000"),
        ("AUTH_RATE_LIMIT_BURST", "10000"),
        ("USER_RATE_LIMIT_PER_MINUTE", "100000"),
        ("USER_RATE_LIMIT_BURST", "10000"),
    ] {
        env.push((var, value.to_owned()));
    }
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let child = Running(gatehouse(&["up"], &refs, dir.path()).spawn().unwrap());
    for port in [ports.auth, ports.users, ports.payments, ports.notifications, ports.gateway] {
        wait_ready(&StackPorts::url(port)).await;
    }
    Stack { _child: child, ports, client: reqwest::Client::new(), _dir: dir }
}

impl Stack {
    fn gw(&self, path: &str) -> String {
        format!("{}{path}", StackPorts::url(self.ports.gateway))
    }

    async fn document(&self) -> Value {
        let r = self.client.get(self.gw("/openapi.json")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    /// A new account, logged in: the login body (tokens, CSRF token, user).
    async fn new_login(&self) -> (String, Value) {
        let email = unique_email("openapi");
        let body = json!({"email": email, "password": DEFAULT_PASSWORD, "name": "Open Api"});
        let r = self.client.post(self.gw("/api/v1/auth/register")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        (email.clone(), self.login(&email).await)
    }

    async fn login(&self, email: &str) -> Value {
        let body = json!({"email": email, "password": DEFAULT_PASSWORD});
        let r = self.client.post(self.gw("/api/v1/auth/login")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    /// A request as a logged-in client sends it: bearer token and CSRF pair.
    fn authed(&self, method: Method, path: &str, login: &Value) -> reqwest::RequestBuilder {
        let csrf = login["csrf_token"].as_str().unwrap();
        self.client
            .request(method, self.gw(path))
            .bearer_auth(login["access_token"].as_str().unwrap())
            .header("X-CSRF-Token", csrf)
            .header("Cookie", format!("csrf_token={csrf}"))
    }

    async fn authed_json(&self, method: Method, path: &str, login: &Value) -> Value {
        let r = self.authed(method, path, login).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// An id the operation at `path` can act on, owned by the caller of
    /// `login`: a payment, a notification (the login's own, delivered in the
    /// background) or another session.
    async fn resource_id(&self, path: &str, email: &str, login: &Value) -> String {
        if path.starts_with("/api/v1/payments/") {
            let r = self
                .authed(Method::POST, "/api/v1/payments", login)
                .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                .json(&json!({"amount": 1999, "currency": "EUR", "description": "openapi"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            return r.json::<Value>().await.unwrap()["payment"]["id"].as_str().unwrap().to_owned();
        }
        if path.starts_with("/api/v1/notifications/") {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let page = self.authed_json(Method::GET, "/api/v1/notifications", login).await;
                if let Some(id) = page["notifications"][0]["id"].as_str() {
                    return id.to_owned();
                }
                assert!(Instant::now() < deadline, "the login notification never arrived");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if path.starts_with("/api/v1/auth/sessions/") {
            self.login(email).await;
            let sessions = self.authed_json(Method::GET, "/api/v1/auth/sessions", login).await;
            let other = sessions["sessions"].as_array().unwrap().iter().find(|s| s["current"] == false);
            return other.unwrap()["id"].as_str().unwrap().to_owned();
        }
        panic!("no resource for {path}: teach resource_id about it");
    }
}

/// The operations of a document: `(METHOD, path)`.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            operations.insert((method.to_uppercase(), path.clone()));
        }
    }
    operations
}

/// What the gateway serves, from the code: each route of the default table
/// times the routes of the service behind it (as the service's own document,
/// which its router is built from, lists them), plus the gateway's probes.
fn served_operations() -> BTreeSet<(String, String)> {
    let services = [
        ("auth", serde_json::to_value(auth_service::http::openapi()).unwrap()),
        ("users", serde_json::to_value(user_service::openapi()).unwrap()),
        ("payments", serde_json::to_value(payment_service::openapi()).unwrap()),
        ("notifications", serde_json::to_value(notification_service::openapi()).unwrap()),
    ];
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let table =
        RouteTable::defaults(&ServiceUrls { auth: url(1), users: url(2), payments: url(3), notifications: url(4) })
            .unwrap();
    let mut served =
        BTreeSet::from([("GET".to_owned(), "/health".to_owned()), ("GET".to_owned(), "/ready".to_owned())]);
    for route in table.routes() {
        let (_, document) = services.iter().find(|(name, _)| *name == &*route.name).unwrap();
        for (method, path) in operations(document) {
            // The route forwards `<strip_prefix><path>` to `<path>`: that is
            // where the gateway serves the service's route.
            let public = format!("{}{path}", route.strip_prefix);
            let (found, forwarded) = table.find(&public).unwrap();
            assert_eq!((&*found.name, forwarded), (&*route.name, path.as_str()), "{public}");
            served.insert((method, public));
        }
    }
    served
}

/// A body the operation accepts, where one is needed to get past validation.
fn body_for(method: &str, path: &str, email: &str, login: &Value) -> Value {
    match (method, path) {
        ("POST", "/api/v1/auth/register") => {
            json!({"email": unique_email("openapi"), "password": DEFAULT_PASSWORD, "name": "Other"})
        }
        ("POST", "/api/v1/auth/login") => json!({"email": email, "password": DEFAULT_PASSWORD}),
        ("POST", "/api/v1/auth/refresh" | "/api/v1/auth/logout") => json!({"refresh_token": login["refresh_token"]}),
        ("POST", "/api/v1/auth/password") => {
            json!({"current_password": DEFAULT_PASSWORD, "new_password": "another horse battery staple"})
        }
        ("PUT", "/api/v1/users/profile") => json!({"name": "Renamed", "bio": "Documented"}),
        ("POST", "/api/v1/payments") => json!({"amount": 1999, "currency": "EUR", "description": "openapi"}),
        _ => json!({}),
    }
}

#[tokio::test]
async fn the_document_lists_every_route_the_gateway_serves_and_each_answers() {
    // Arrange
    let st = start().await;

    // Act
    let document = st.document().await;

    // Assert: OpenAPI 3.1, and exactly the operations the gateway serves
    assert_eq!(document["openapi"], "3.1.0");
    let documented = operations(&document);
    let served = served_operations();
    let missing: Vec<_> = served.difference(&documented).collect();
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(extra.is_empty(), "documented but not served: {extra:?}");
    assert!(documented.len() >= 20, "{documented:?}");
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(
        (&schemes["csrf_header"]["in"], &schemes["csrf_header"]["name"]),
        (&json!("header"), &json!("X-CSRF-Token"))
    );
    assert_eq!(
        (&schemes["csrf_cookie"]["in"], &schemes["csrf_cookie"]["name"]),
        (&json!("cookie"), &json!("csrf_token"))
    );

    // Assert: every documented operation answers through the gateway, each
    // with a fresh account (some end the session or the account)
    for (method, path) in &documented {
        let (email, login) = st.new_login().await;
        let concrete = match path.find("{id}") {
            Some(_) => path.replace("{id}", &st.resource_id(path, &email, &login).await),
            None => path.clone(),
        };
        let mut request = st.authed(Method::from_bytes(method.as_bytes()).unwrap(), &concrete, &login);
        if document["paths"][path][method.to_lowercase()].get("requestBody").is_some() {
            request = request.json(&body_for(method, path, &email, &login));
        }
        if path == "/api/v1/payments" && method == "POST" {
            request = request.header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
        }
        let r = request.send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(
            status.is_success()
                || (status.is_client_error()
                    && status != StatusCode::NOT_FOUND
                    && status != StatusCode::METHOD_NOT_ALLOWED),
            "{method} {path} ({concrete}) answered {status}: {body}"
        );
    }
}

#[tokio::test]
async fn swagger_ui_is_served_with_its_files_from_the_gateway_itself() {
    // Arrange
    let st = start().await;

    // Act
    let page = st.client.get(st.gw("/docs/")).send().await.unwrap();

    // Assert: the page, and every file it loads, from this gateway
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"), "{html}");
    let assets: Vec<&str> = html.split(['"', '\'']).filter(|s| s.ends_with(".js") || s.ends_with(".css")).collect();
    assert!(assets.len() >= 3, "{assets:?}");
    for asset in assets {
        let url = st.gw(&format!("/docs/{}", asset.trim_start_matches("./")));
        let r = st.client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{url}");
    }
    let init = st.client.get(st.gw("/docs/swagger-initializer.js")).send().await.unwrap().text().await.unwrap();
    assert!(init.contains("\"/openapi.json\""), "{init}");
    assert!(init.contains("\"validatorUrl\": \"none\""), "the validator badge would call validator.swagger.io: {init}");
    let redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = redirect.get(st.gw("/docs")).send().await.unwrap();
    assert_eq!((r.status(), r.headers()["location"].to_str().unwrap()), (StatusCode::SEE_OTHER, "/docs/"));
}

/// The Python interpreter of `scripts/test`'s tool virtualenv.
fn test_python() -> std::path::PathBuf {
    match std::env::var_os("GATEHOUSE_TEST_PYTHON") {
        Some(python) => python.into(),
        None => panic!(
            "GATEHOUSE_TEST_PYTHON is not set: run this test through scripts/test, which installs Schemathesis \
             in target/test-tools/python and sets it"
        ),
    }
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_response_outside_the_document() {
    // Arrange: the stack and a real login for every generated request
    let python = test_python();
    let st = start().await;
    let (_, login) = st.new_login().await;
    let token = login["access_token"].as_str().unwrap();
    let csrf = login["csrf_token"].as_str().unwrap();
    let report = tempfile::tempdir().unwrap();

    // Act: bounded (a few examples per operation, a time budget), seeded
    let st_bin = python.with_file_name("st");
    let output = tokio::process::Command::new(&st_bin)
        .arg("run")
        .arg(st.gw("/openapi.json"))
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", &format!("X-CSRF-Token: {csrf}")])
        .args(["-H", &format!("Cookie: csrf_token={csrf}")])
        // Both end the session (or the account) the rest of the run uses;
        // the end-to-end suite covers them.
        .args(["--exclude-path", "/api/v1/users/account", "--exclude-path", "/api/v1/auth/logout-all"])
        // One worker: CPython 3.11's `ast` is not thread-safe ("AST constructor
        // recursion depth mismatch" inside hypothesis, seen twice with two).
        .args(["--max-examples", "15", "--max-time", "40", "--seed", "20260101", "--workers", "1"])
        .args(["--phases", "examples,coverage,fuzzing", "--generation-database", "none"])
        .args(["--request-timeout", "10", "--no-color", "--warnings", "off"])
        .arg("--report-dir")
        .arg(report.path().join("report"))
        // Its example cache goes to the working directory, not the source tree.
        .current_dir(report.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .await
        .unwrap_or_else(|e| panic!("{} could not run: {e} (run scripts/test)", st_bin.display()));

    // Assert
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "schemathesis failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("passed"), "{stdout}");
}
