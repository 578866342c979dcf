//! The demo page at `/` over real HTTP: served by the gateway itself with
//! its own policy and revalidation, never proxied; the same page at the paths
//! of the mailed password-reset and verification links, and a route table
//! that would cover one of its paths refused at start; the gateway's own page
//! may change state whatever host name it was reached by, a foreign page
//! may not; and the refresh cookie works through the gateway for the
//! gateway's own page only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gateway::StartError;
use gateway::routes::RouteTable;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::{
    Backend, RecordingUpstream, TestApp, TestDatabase, TestGateway, spawn_default_auth, spawn_gateway,
    test_gateway_config, unique_email,
};

struct Stack {
    _auth: TestApp,
    gateway: TestGateway,
    upstream: RecordingUpstream,
    _db: TestDatabase,
}

async fn stack() -> Stack {
    let (auth, db) = spawn_default_auth(Backend::Sqlite).await;
    let upstream = RecordingUpstream::spawn().await;
    let gateway = spawn_gateway(test_gateway_config(&auth, &upstream.base_url)).await;
    Stack { _auth: auth, gateway, upstream, _db: db }
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).unwrap_or_else(|| panic!("no {name}")).to_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_a_strict_policy_and_revalidation_and_never_proxied() {
    // Arrange
    let st = stack().await;
    let client = &st.gateway.client;

    // Act
    let page = client.get(st.gateway.url("/")).send().await.unwrap();

    // Assert
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let csp = header(&page, "content-security-policy");
    for directive in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(directive), "{csp} lacks {directive}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(header(&page, "x-frame-options"), "DENY");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    assert_eq!(header(&page, "cache-control"), "no-cache");
    let page_etag = header(&page, "etag");
    assert!(page.text().await.unwrap().contains(r#"<script src="/assets/app.js" defer></script>"#));

    for (path, content_type) in
        [("/assets/app.js", "text/javascript; charset=utf-8"), ("/assets/app.css", "text/css; charset=utf-8")]
    {
        let asset = client.get(st.gateway.url(path)).send().await.unwrap();
        assert_eq!(asset.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&asset, "content-type"), content_type, "{path}");
        let etag = header(&asset, "etag");
        assert_ne!(etag, page_etag);
        assert!(!asset.bytes().await.unwrap().is_empty(), "{path}");
        // Revalidation: the same entity tag gets a 304 without a body.
        let again = client.get(st.gateway.url(path)).header("If-None-Match", &etag).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(header(&again, "etag"), etag);
        assert!(again.bytes().await.unwrap().is_empty());
        let stale = client.get(st.gateway.url(path)).header("If-None-Match", "\"old\"").send().await.unwrap();
        assert_eq!(stale.status(), StatusCode::OK, "{path}");
    }
    // The token-handling script keeps tokens out of web storage.
    let script = client.get(st.gateway.url("/assets/app.js")).send().await.unwrap().text().await.unwrap();
    assert!(!script.contains("localStorage") && !script.contains("sessionStorage"));

    let head = client.head(st.gateway.url("/")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let post = client.post(st.gateway.url("/")).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.json::<Value>().await.unwrap()["error"], "Method not allowed");
    let unknown = client.get(st.gateway.url("/assets/other.js")).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(unknown.json::<Value>().await.unwrap()["error"], "Route not found");
    assert_eq!(st.upstream.count(), 0, "no page request reached an upstream");
}

#[tokio::test]
async fn the_mailed_link_paths_serve_the_page_itself_with_its_policy_and_nothing_else() {
    // Arrange
    let st = stack().await;
    let client = &st.gateway.client;
    let root = client.get(st.gateway.url("/")).send().await.unwrap();
    let root_etag = header(&root, "etag");
    let root_csp = header(&root, "content-security-policy");
    let root_body = root.text().await.unwrap();

    for path in ["/reset-password", "/verify-email"] {
        // Act
        let page = client.get(st.gateway.url(path)).send().await.unwrap();

        // Assert: the very document of `/`, with the document's headers.
        assert_eq!(page.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8", "{path}");
        assert_eq!(header(&page, "content-security-policy"), root_csp, "{path}");
        assert_eq!(header(&page, "x-frame-options"), "DENY", "{path}");
        assert_eq!(header(&page, "referrer-policy"), "no-referrer", "{path}");
        assert_eq!(header(&page, "cross-origin-opener-policy"), "same-origin", "{path}");
        assert_eq!(header(&page, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(&page, "cache-control"), "no-cache", "{path}");
        assert_eq!(header(&page, "etag"), root_etag, "{path}");
        assert_eq!(page.text().await.unwrap(), root_body, "{path}");

        let again = client.get(st.gateway.url(path)).header("If-None-Match", &root_etag).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        let head = client.head(st.gateway.url(path)).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&head, "etag"), root_etag, "{path}");
        assert!(head.bytes().await.unwrap().is_empty(), "{path}");
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            let refused = client.request(method.clone(), st.gateway.url(path)).send().await.unwrap();
            assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(refused.json::<Value>().await.unwrap()["error"], "Method not allowed", "{method} {path}");
        }
    }
    // Only those exact paths are the page.
    for path in ["/reset-password/x", "/verify-email/", "/verify-emails", "/reset-password.html"] {
        let unknown = client.get(st.gateway.url(path)).send().await.unwrap();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(unknown.json::<Value>().await.unwrap()["error"], "Route not found", "{path}");
    }
    assert_eq!(st.upstream.count(), 0, "no page request reached an upstream");
}

#[tokio::test]
async fn a_route_table_covering_a_page_path_is_refused_at_start() {
    // Arrange
    let (auth, _db) = spawn_default_auth(Backend::Sqlite).await;
    let cases = [
        ("/reset-password", "/reset-password"),
        ("/verify-email", "/verify-email"),
        ("/assets", "/assets/app.js"),
        ("/assets/app.css", "/assets/app.css"),
    ];
    for (prefix, covered) in cases {
        let mut config = test_gateway_config(&auth, "http://127.0.0.1:9");
        config.routes = RouteTable::from_toml(&format!(
            "[[route]]\nprefix = \"{prefix}\"\nstrip_prefix = \"\"\nupstream = \"http://127.0.0.1:9\"\npublic = true\n"
        ))
        .unwrap();

        // Act
        let started = gateway::build_state(config).await;

        // Assert
        let Err(error) = started else { panic!("a route over {covered} was accepted") };
        assert!(matches!(error, StartError::PageShadowed(path) if path == covered), "{prefix}: {error}");
        assert_eq!(error.to_string(), format!("the route table covers {covered}, where the demo page is served"));
    }
}

#[tokio::test]
async fn the_gateway_s_own_page_may_change_state_from_any_host_name_and_a_foreign_page_may_not() {
    // Arrange: an origin that is not in CORS_ALLOWED_ORIGINS (the gateway
    // reached as 127.0.0.1 rather than localhost).
    let st = stack().await;
    let login = st.gateway.sign_up_and_in(&unique_email("page"), None).await;
    let own_origin = st.gateway.base_url.clone();
    let put = |headers: &[(&str, &str)]| {
        let mut request = st.gateway.authed(Method::PUT, "/api/v1/users/profile", &login).json(&json!({"name": "A"}));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };

    // Act + Assert
    let same_origin = put(&[("Origin", &own_origin), ("Sec-Fetch-Site", "same-origin")]).await.unwrap();
    assert_eq!(same_origin.status(), StatusCode::OK);
    let cases = [
        ("the same origin without Fetch Metadata", vec![("Origin", own_origin.as_str())]),
        ("another port of the same host", vec![("Origin", "http://127.0.0.1:1"), ("Sec-Fetch-Site", "same-site")]),
        ("a foreign site", vec![("Origin", "https://evil.example"), ("Sec-Fetch-Site", "cross-site")]),
    ];
    for (case, headers) in cases {
        let refused = put(&headers).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{case}");
    }
    assert_eq!(st.upstream.count(), 1, "only the same-origin request was forwarded");
}

#[tokio::test]
async fn the_refresh_cookie_works_through_the_gateway_for_its_own_page_only() {
    // Arrange
    let st = stack().await;
    let email = unique_email("cookie");
    st.gateway.sign_up_and_in(&email, None).await;
    let login = st
        .gateway
        .client
        .post(st.gateway.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": testkit::DEFAULT_PASSWORD}))
        .send()
        .await
        .unwrap();
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("refresh_token="))
        .expect("the refresh cookie passes the gateway");
    assert!(cookie.contains("Path=/api/v1/auth") && cookie.contains("HttpOnly"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let refresh = |headers: &[(&str, &str)]| {
        let mut request =
            st.gateway.client.post(st.gateway.url("/api/v1/auth/refresh")).json(&json!({})).header("Cookie", &pair);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };

    // Act + Assert: a cross-site page riding the cookie is refused first…
    let attack = refresh(&[("Origin", "http://127.0.0.1:1"), ("Sec-Fetch-Site", "same-site")]).await.unwrap();
    assert_eq!(attack.status(), StatusCode::FORBIDDEN);
    // …and the gateway's own page then refreshes with the untouched cookie.
    let own = refresh(&[("Origin", &st.gateway.base_url), ("Sec-Fetch-Site", "same-origin")]).await.unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    let body: Value = own.json().await.unwrap();
    assert!(body["access_token"].is_string() && body.get("refresh_token").is_none(), "{body}");
}
