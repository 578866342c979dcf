//! The user service behind the real gateway and auth service, on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{
    Backend, DEFAULT_PASSWORD, TestDatabase, TestGateway, backend_tests, spawn_auth, spawn_gateway, spawn_users,
    spawn_users_calling, test_auth_config, test_gateway_config, unique_email,
};

struct Stack {
    auth: testkit::TestApp,
    gateway: TestGateway,
    users_url: String,
    db: TestDatabase,
}

async fn stack(backend: Backend) -> Stack {
    let db = TestDatabase::new(backend).await;
    let auth = spawn_auth(test_auth_config(db.target.clone())).await;
    // One database for both services, as `up` runs them.
    let users = spawn_users(&auth, &db).await;
    let gateway = spawn_gateway(test_gateway_config(&auth, &users.base_url)).await;
    Stack { auth, gateway, users_url: users.base_url, db }
}

impl Stack {
    async fn login(&self) -> (Value, String) {
        let email = unique_email("u");
        (self.gateway.sign_up_and_in(&email, None).await, email)
    }

    fn authed(&self, method: reqwest::Method, path: &str, login: &Value) -> reqwest::RequestBuilder {
        self.gateway.authed(method, path, login)
    }
}

async fn the_profile_is_created_on_first_use_and_updates_persist(backend: Backend) {
    let st = stack(backend).await;
    let (login, email) = st.login().await;
    let r = st.authed(reqwest::Method::GET, "/api/v1/users/profile", &login).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["user"]["email"], email);
    assert_eq!(body["user"]["id"], login["user"]["id"]);
    assert_eq!(body["user"]["bio"], "");
    assert_eq!(body["user"]["name"], "Ada", "the profile starts with the name given at sign-up");
    let r = st
        .authed(reqwest::Method::PUT, "/api/v1/users/profile", &login)
        .json(&json!({"name": "Ada L.", "bio": "Engines"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"message": "Profile updated successfully", "user_id": login["user"]["id"], "updated": {"name": "Ada L.", "bio": "Engines"}})
    );
    // A partial update keeps the other field.
    st.authed(reqwest::Method::PUT, "/api/v1/users/profile", &login)
        .json(&json!({"bio": "Notes"}))
        .send()
        .await
        .unwrap();
    let body: Value =
        st.authed(reqwest::Method::GET, "/api/v1/users/profile", &login).send().await.unwrap().json().await.unwrap();
    assert_eq!((body["user"]["name"].as_str(), body["user"]["bio"].as_str()), (Some("Ada L."), Some("Notes")));
    // Another user sees only their own profile.
    let (other, _) = st.login().await;
    let body: Value =
        st.authed(reqwest::Method::GET, "/api/v1/users/profile", &other).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["user"]["id"], other["user"]["id"]);
    // Created with the name given at sign-up (testkit's `sign_up_and_in` says "Ada").
    assert_eq!(body["user"]["name"], "Ada");
}

async fn invalid_profile_updates_are_refused(backend: Backend) {
    let st = stack(backend).await;
    let (login, _) = st.login().await;
    let cases = [
        (json!({"name": "n".repeat(101)}), "name must be at most 100 characters"),
        (json!({"bio": "b".repeat(1001)}), "bio must be at most 1000 characters"),
        (json!({"name": "a\u{0}b"}), "name must not contain control characters"),
        (json!({"name": "x", "admin": true}), "Invalid request body"),
        (json!({"name": 5}), "Invalid request body"),
    ];
    for (body, message) in cases {
        let r = st.authed(reqwest::Method::PUT, "/api/v1/users/profile", &login).json(&body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], message, "{body}");
    }
    let ok = st
        .authed(reqwest::Method::PUT, "/api/v1/users/profile", &login)
        .json(&json!({"bio": "line one\nline two"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

async fn deleting_the_account_ends_it_everywhere(backend: Backend) {
    let st = stack(backend).await;
    let (login, email) = st.login().await;
    let r = st.authed(reqwest::Method::DELETE, "/api/v1/users/account", &login).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Account deleted successfully", "user_id": login["user"]["id"]})
    );
    let c = &st.gateway.client;
    let r = c
        .post(st.gateway.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": DEFAULT_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "login fails");
    let r = c
        .post(st.gateway.url("/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": login["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "refresh fails");
    let mut refused = false;
    for _ in 0..50 {
        let r = st.authed(reqwest::Method::GET, "/api/v1/users/profile", &login).send().await.unwrap();
        if r.status() == StatusCode::UNAUTHORIZED {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(refused, "the old access token is refused at the gateway within 5 s");
}

/// When the auth service cannot say the sign-up name, the profile is still
/// created (empty name, which the user can set) rather than failing.
async fn a_profile_is_created_even_when_the_auth_service_cannot_name_the_user(backend: Backend) {
    let st = stack(backend).await;
    let (login, email) = st.login().await;
    let user_id = login["user"]["id"].as_str().unwrap();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let users = spawn_users_calling(&st.auth, &st.db, format!("http://{closed}").parse().unwrap()).await;
    // Called the way the gateway calls it: an identity assertion signed with GATEWAY_SECRET.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let request_id = uuid::Uuid::new_v4().to_string();
    let assertion = tokens::assertion::Assertion {
        timestamp: now,
        method: "GET",
        path_and_query: "/users/profile",
        request_id: &request_id,
        user_id,
        email: &email,
    };
    let r = reqwest::Client::new()
        .get(format!("{}/users/profile", users.base_url))
        .header("X-User-ID", user_id)
        .header("X-User-Email", &email)
        .header("X-Request-ID", &request_id)
        .header("X-Gateway-Timestamp", now.to_string())
        .header("X-Gateway-Signature", assertion.sign(&st.auth.state.config.internal_secrets))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!((body["user"]["id"].as_str(), body["user"]["name"].as_str()), (Some(user_id), Some("")));
}

async fn the_service_refuses_anything_the_gateway_did_not_sign(backend: Backend) {
    let st = stack(backend).await;
    let c = reqwest::Client::new();
    let r = c
        .get(format!("{}/users/profile", st.users_url))
        .header("X-User-ID", "admin")
        .header("X-User-Email", "a@b.io")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "User context missing. Request must come through API Gateway."
    );
    let r = c
        .delete(format!("{}/users/account", st.users_url))
        .header("X-User-ID", "admin")
        .header("X-User-Email", "a@b.io")
        .header("X-Request-ID", "r1")
        .header("X-Gateway-Timestamp", "1")
        .header("X-Gateway-Signature", "v1=00")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "Invalid gateway signature. Request may not be authentic.");
    let health: Value = c.get(format!("{}/health", st.users_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health, json!({"status": "healthy", "service": "user-service"}));
    assert_eq!(c.get(format!("{}/ready", st.users_url)).send().await.unwrap().status(), StatusCode::OK);
}

/// `GET /metrics` counts requests by route pattern and status.
async fn metrics_count_requests_by_route_and_status(backend: Backend) {
    let st = stack(backend).await;
    let (login, _) = st.login().await;
    for _ in 0..2 {
        let r = st.authed(reqwest::Method::GET, "/api/v1/users/profile", &login).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let unsigned = reqwest::Client::new().get(format!("{}/users/profile", st.users_url)).send().await.unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    let text = reqwest::get(format!("{}/metrics", st.users_url)).await.unwrap().text().await.unwrap();
    for (series, value) in [
        (r#"gatehouse_http_requests_total{route="/users/profile",method="GET",status="200"} "#, "2"),
        (r#"gatehouse_http_requests_total{route="/users/profile",method="GET",status="401"} "#, "1"),
    ] {
        let line = text.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("{series} in {text}"));
        assert_eq!(line.trim_start_matches(series), value, "{line}");
    }
}

backend_tests!(
    metrics_count_requests_by_route_and_status,
    the_profile_is_created_on_first_use_and_updates_persist,
    invalid_profile_updates_are_refused,
    deleting_the_account_ends_it_everywhere,
    the_service_refuses_anything_the_gateway_did_not_sign,
    a_profile_is_created_even_when_the_auth_service_cannot_name_the_user,
);
