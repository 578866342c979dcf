//! The refresh-token cookie: set at login and refresh, accepted by refresh
//! and logout when the body carries no token, but only from the gateway's
//! own page (`Sec-Fetch-Site: same-origin`) or an allowed `Origin`; a
//! cross-site request riding the cookie is refused and changes nothing.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use testkit::{Backend, TestApp, backend_tests, spawn_default_auth, unique_email};

/// The `Set-Cookie` header for cookie `name`, if the response has one.
fn set_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with(&format!("{name}=")))
}

/// The value a `Set-Cookie` header sets.
fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned()
}

/// Signs a new user in; the login body and the refresh cookie's value.
async fn signed_in(app: &TestApp) -> (Value, String) {
    let email = unique_email("cookie");
    assert_eq!(app.register(&email, testkit::DEFAULT_PASSWORD).await.status(), StatusCode::CREATED);
    let response = app.login(&email, testkit::DEFAULT_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = set_cookie(response.headers(), "refresh_token").expect("login sets the refresh cookie");
    let body: Value = response.json().await.unwrap();
    (body, cookie_value(&cookie))
}

/// `POST path` with body `{}`, the refresh cookie and the given extra headers.
async fn post_with_cookie(app: &TestApp, path: &str, cookie: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request =
        app.client.post(app.url(path)).json(&json!({})).header("Cookie", format!("refresh_token={cookie}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

const SAME_ORIGIN: (&str, &str) = ("Sec-Fetch-Site", "same-origin");

async fn login_sets_an_http_only_strict_refresh_cookie_scoped_to_the_auth_path(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let email = unique_email("cookie");
    app.register(&email, testkit::DEFAULT_PASSWORD).await;
    let response = app.login(&email, testkit::DEFAULT_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    let first = response.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(first.starts_with("csrf_token="), "the CSRF cookie stays first: {first}");
    let cookie = set_cookie(response.headers(), "refresh_token").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/api/v1/auth", "Max-Age=604800"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    assert!(!cookie.contains("Secure"), "development cookies (testkit) are not Secure: {cookie}");
    // API.md's contract: the body still carries the same refresh token.
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["refresh_token"].as_str().unwrap(), cookie_value(&cookie));
}

async fn the_gateway_s_own_page_refreshes_with_the_cookie_alone(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let (login, cookie) = signed_in(&app).await;

    let response = post_with_cookie(&app, "/auth/refresh", &cookie, &[SAME_ORIGIN]).await;

    assert_eq!(response.status(), StatusCode::OK);
    let rotated = cookie_value(&set_cookie(response.headers(), "refresh_token").expect("a rotated cookie"));
    assert_ne!(rotated, cookie);
    assert!(set_cookie(response.headers(), "csrf_token").is_some());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "Token refreshed successfully");
    assert!(body["access_token"].is_string() && body["csrf_token"].is_string(), "{body}");
    assert!(body.get("refresh_token").is_none(), "a cookie refresh never shows a script the token: {body}");
    // Same session, and the rotated cookie works in turn; an allowed Origin
    // (the CORS list) is accepted as well.
    let a = app.state.keys().verifier.verify(login["access_token"].as_str().unwrap()).unwrap();
    let b = app.state.keys().verifier.verify(body["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(a.sid, b.sid);
    let again = post_with_cookie(&app, "/auth/refresh", &rotated, &[("Origin", "http://localhost:3000")]).await;
    assert_eq!(again.status(), StatusCode::OK);
}

async fn a_cross_site_request_riding_the_cookie_is_refused_and_changes_nothing(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let (login, cookie) = signed_in(&app).await;
    let cases: [(&str, &[(&str, &str)]); 5] = [
        ("no Origin, no Fetch Metadata", &[]),
        ("a foreign Origin", &[("Origin", "https://evil.example")]),
        ("another port of the same host", &[("Origin", "http://localhost:9999"), ("Sec-Fetch-Site", "same-site")]),
        ("a cross-site fetch", &[("Origin", "https://evil.example"), ("Sec-Fetch-Site", "cross-site")]),
        (
            "a top-level form post",
            &[("Origin", "null"), ("Sec-Fetch-Site", "cross-site"), ("Sec-Fetch-Mode", "navigate")],
        ),
    ];
    for path in ["/auth/refresh", "/auth/logout"] {
        for (case, headers) in cases {
            let response = post_with_cookie(&app, path, &cookie, headers).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}, {case}");
            assert!(set_cookie(response.headers(), "refresh_token").is_none(), "{path}, {case}: no cookie change");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "Cross-site request refused", "{path}, {case}");
        }
    }
    // Nothing happened to the session: neither rotated nor logged out, so
    // the login's own refresh token is still the current one.
    let refreshed = app.refresh(login["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
}

async fn logout_with_the_cookie_ends_the_session_and_clears_both_cookies(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let (login, cookie) = signed_in(&app).await;

    let response = post_with_cookie(&app, "/auth/logout", &cookie, &[SAME_ORIGIN]).await;

    assert_eq!(response.status(), StatusCode::OK);
    for name in ["csrf_token", "refresh_token"] {
        let cleared = set_cookie(response.headers(), name).unwrap_or_else(|| panic!("{name} not cleared"));
        assert!(cleared.contains("Max-Age=0"), "{cleared}");
    }
    assert!(set_cookie(response.headers(), "refresh_token").unwrap().contains("Path=/api/v1/auth"));
    assert_eq!(app.refresh(login["refresh_token"].as_str().unwrap()).await.status(), StatusCode::UNAUTHORIZED);
    let me = app.get_authed("/auth/me", login["access_token"].as_str().unwrap()).await;
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
}

async fn a_refused_cookie_is_cleared_and_no_token_at_all_is_a_401(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let junk = post_with_cookie(&app, "/auth/refresh", "not-a-token", &[SAME_ORIGIN]).await;
    assert_eq!(junk.status(), StatusCode::UNAUTHORIZED);
    let cleared = set_cookie(junk.headers(), "refresh_token").expect("the dead cookie is cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(junk.json::<Value>().await.unwrap()["error"], "Invalid or expired refresh token");

    let none = app.post_json("/auth/refresh", &json!({})).await;
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    let body: Value = none.json().await.unwrap();
    assert_eq!(body["error"], "Invalid or expired refresh token");
    assert!(body["hint"].as_str().unwrap().contains("refresh_token"), "{body}");
    // Logout answers the same with or without a token.
    assert_eq!(app.post_json("/auth/logout", &json!({})).await.status(), StatusCode::OK);
}

async fn a_token_in_the_body_wins_over_the_cookie_without_an_origin_check(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let (login, _) = signed_in(&app).await;
    // A non-browser client (no Origin) with a stale cookie jar: the body decides.
    let response = app
        .client
        .post(app.url("/auth/refresh"))
        .json(&json!({"refresh_token": login["refresh_token"]}))
        .header("Cookie", "refresh_token=stale")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert!(body["refresh_token"].is_string(), "a body refresh returns the token in the body: {body}");
}

async fn logout_all_clears_the_refresh_cookie(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let (login, _) = signed_in(&app).await;
    let response = app
        .client
        .post(app.url("/auth/logout-all"))
        .bearer_auth(login["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cleared = set_cookie(response.headers(), "refresh_token").expect("cleared");
    assert!(cleared.contains("Max-Age=0") && cleared.contains("Path=/api/v1/auth"), "{cleared}");
}

backend_tests!(
    login_sets_an_http_only_strict_refresh_cookie_scoped_to_the_auth_path,
    the_gateway_s_own_page_refreshes_with_the_cookie_alone,
    a_cross_site_request_riding_the_cookie_is_refused_and_changes_nothing,
    logout_with_the_cookie_ends_the_session_and_clears_both_cookies,
    a_refused_cookie_is_cleared_and_no_token_at_all_is_a_401,
    a_token_in_the_body_wins_over_the_cookie_without_an_origin_check,
    logout_all_clears_the_refresh_cookie,
);
