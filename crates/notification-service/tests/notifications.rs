//! The notification service behind the real gateway, fed by the real auth
//! service, on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::{
    Backend, DEFAULT_PASSWORD, TestApp, TestDatabase, TestGateway, TestNotifications, backend_tests, spawn_auth,
    spawn_gateway, spawn_notifications, spawn_notifications_on, test_auth_config, test_gateway_config, unique_email,
};
use tokens::assertion::{Assertion, BODY_DIGEST_PARAM, INTERNAL_CALLER, INTERNAL_EMAIL, body_digest};

struct Stack {
    auth: TestApp,
    gateway: TestGateway,
    notifications: TestNotifications,
    _db: TestDatabase,
}

/// Auth, notifications and the gateway on one database, as `up` runs them.
async fn stack(backend: Backend) -> Stack {
    let db = TestDatabase::new(backend).await;
    let mut config = test_auth_config(db.target.clone());
    let notifications = spawn_notifications(&config.internal_secrets, &db).await;
    config.notification_url = Some(notifications.base_url.parse().unwrap());
    let auth = spawn_auth(config).await;
    let gateway = spawn_gateway(test_gateway_config(&auth, &notifications.base_url)).await;
    Stack { auth, gateway, notifications, _db: db }
}

impl Stack {
    async fn register(&self) -> String {
        let email = unique_email("n");
        let r = self
            .gateway
            .client
            .post(self.gateway.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": DEFAULT_PASSWORD, "name": "Ada"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        email
    }

    async fn login(&self, email: &str, user_agent: &str) -> Value {
        self.gateway.log_in(email, Some(user_agent)).await
    }

    fn authed(&self, method: Method, path: &str, login: &Value) -> reqwest::RequestBuilder {
        self.gateway.authed(method, path, login)
    }

    async fn list(&self, login: &Value, query: &str) -> Value {
        let r = self.authed(Method::GET, &format!("/api/v1/notifications{query}"), login).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    /// Waits (up to 10 s) until the caller has `n` notifications.
    async fn wait_for(&self, login: &Value, n: usize) -> Value {
        for _ in 0..100 {
            let page = self.list(login, "?limit=100").await;
            if page["notifications"].as_array().unwrap().len() >= n {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{n} notifications never arrived");
    }
}

async fn a_login_notifies_the_user_with_where_it_came_from(backend: Backend) {
    let st = stack(backend).await;
    let email = st.register().await;
    let first = st.login(&email, "first-browser/1.0").await;
    let page = st.wait_for(&first, 1).await;
    let n = &page["notifications"][0];
    assert_eq!(n["kind"], "new_login");
    assert_eq!(n["title"], "New sign-in to your account");
    assert_eq!(n["user_agent"], "first-browser/1.0");
    assert_eq!(n["ip"], "127.0.0.1");
    assert!(n["body"].as_str().unwrap().contains("first-browser/1.0"));
    assert_eq!(n["read"], false);
    assert_eq!(page["unread_count"], 1);
    // Another user's notifications are theirs alone.
    let other_email = st.register().await;
    let other = st.login(&other_email, "other/2").await;
    let theirs = st.wait_for(&other, 1).await;
    assert_eq!(theirs["notifications"].as_array().unwrap().len(), 1);
    assert_eq!(theirs["notifications"][0]["user_agent"], "other/2");
    let id = n["id"].as_str().unwrap();
    let r = st.authed(Method::POST, &format!("/api/v1/notifications/{id}/read"), &other).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "nobody marks another user's notification");
}

async fn unread_come_first_and_reading_marks_them(backend: Backend) {
    let st = stack(backend).await;
    let email = st.register().await;
    let mut last = Value::Null;
    for i in 0..5 {
        last = st.login(&email, &format!("agent/{i}")).await;
    }
    let page = st.wait_for(&last, 5).await;
    assert_eq!(page["unread_count"], 5);
    let ids: Vec<String> =
        page["notifications"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().to_owned()).collect();
    // Mark the oldest read: it goes last, the others stay unread and first.
    let oldest = ids.last().unwrap();
    let r = st.authed(Method::POST, &format!("/api/v1/notifications/{oldest}/read"), &last).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["notification"]["read"], true);
    let read_at = body["notification"]["read_at"].clone();
    // Reading again keeps the first read time.
    let again: Value = st
        .authed(Method::POST, &format!("/api/v1/notifications/{oldest}/read"), &last)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["notification"]["read_at"], read_at);
    let page = st.list(&last, "").await;
    assert_eq!(page["unread_count"], 4);
    let order: Vec<bool> = page["notifications"].as_array().unwrap().iter().map(|n| n["read"] == true).collect();
    assert_eq!(order, vec![false, false, false, false, true]);
    // Pages of two walk the same order with no repeats.
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let page = st.list(&last, &query).await;
        seen.extend(page["notifications"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("?limit=2&cursor={c}"),
            None => break,
        }
    }
    let listed: Vec<String> =
        page["notifications"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(seen, listed);
    let r = st.authed(Method::POST, "/api/v1/notifications/read-all", &last).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["marked"], 4);
    assert_eq!(st.list(&last, "").await["unread_count"], 0);
}

async fn a_password_change_notifies(backend: Backend) {
    let st = stack(backend).await;
    let email = st.register().await;
    st.login(&email, "ua").await;
    let second = st.login(&email, "ua2").await;
    let r = st
        .auth
        .client
        .post(st.auth.url("/auth/password"))
        .bearer_auth(second["access_token"].as_str().unwrap())
        .json(&json!({"current_password": DEFAULT_PASSWORD, "new_password": "another horse battery staple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let fresh = {
        let r = st
            .gateway
            .client
            .post(st.gateway.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": "another horse battery staple"}))
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()
    };
    let page = st.wait_for(&fresh, 4).await;
    let kinds: Vec<&str> =
        page["notifications"].as_array().unwrap().iter().map(|n| n["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"password_changed"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "new_login").count(), 3, "{kinds:?}");
}

async fn refresh_token_reuse_notifies(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let mut config = test_auth_config(db.target.clone());
    config.refresh_reuse_interval_secs = 0;
    let notifications = spawn_notifications(&config.internal_secrets, &db).await;
    config.notification_url = Some(notifications.base_url.parse().unwrap());
    let auth = spawn_auth(config).await;
    let gateway = spawn_gateway(test_gateway_config(&auth, &notifications.base_url)).await;
    let st = Stack { auth, gateway, notifications, _db: db };
    let email = st.register().await;
    let login = st.login(&email, "ua").await;
    let spent = login["refresh_token"].as_str().unwrap();
    assert_eq!(st.auth.refresh(spent).await.status(), StatusCode::OK);
    assert_eq!(st.auth.refresh(spent).await.status(), StatusCode::UNAUTHORIZED);
    let reader = st.login(&email, "reader").await;
    let page = st.wait_for(&reader, 3).await;
    let reuse = page["notifications"].as_array().unwrap().iter().find(|n| n["kind"] == "refresh_token_reuse");
    assert!(reuse.is_some(), "{page}");
    assert_eq!(reuse.unwrap()["title"], "Suspicious activity on your account");
}

/// A notification service that is down never fails a login, and the
/// notification arrives once it is back.
async fn deliveries_are_retried_while_the_service_is_down(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let mut config = test_auth_config(db.target.clone());
    // An address nobody listens on yet.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    config.notification_url = Some(format!("http://{addr}").parse().unwrap());
    let secrets = config.internal_secrets.clone();
    let auth = spawn_auth(config).await;
    let email = unique_email("down");
    let started = std::time::Instant::now();
    let login = auth.signed_in_user(&email).await;
    assert!(started.elapsed() < Duration::from_secs(5), "the login did not wait for the notification service");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let notifications = spawn_notifications_on(listener, &secrets, &db).await;
    let gateway = spawn_gateway(test_gateway_config(&auth, &notifications.base_url)).await;
    let st = Stack { auth, gateway, notifications, _db: db };
    let page = st.wait_for(&login, 1).await;
    assert_eq!(page["notifications"][0]["kind"], "new_login");
}

/// Signs an internal delivery the way the auth service does.
fn signed_delivery(
    client: &reqwest::Client,
    base: &str,
    secret: &tokens::Secret,
    body: &str,
    digest_of: &str,
    user: (&str, &str),
) -> reqwest::RequestBuilder {
    let path = format!("/internal/notifications?{BODY_DIGEST_PARAM}={}", body_digest(digest_of.as_bytes()));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let rid = uuid::Uuid::new_v4().to_string();
    let a = Assertion {
        timestamp: now,
        method: "POST",
        path_and_query: &path,
        request_id: &rid,
        user_id: user.0,
        email: user.1,
    };
    client
        .post(format!("{base}{path}"))
        .header("Content-Type", "application/json")
        .header("X-User-ID", user.0)
        .header("X-User-Email", user.1)
        .header("X-Request-ID", rid.clone())
        .header("X-Gateway-Timestamp", now.to_string())
        .header("X-Gateway-Signature", a.sign(std::slice::from_ref(secret)))
        .body(body.to_owned())
}

async fn only_signed_internal_calls_create_notifications(backend: Backend) {
    let st = stack(backend).await;
    let email = st.register().await;
    let login = st.login(&email, "ua").await;
    st.wait_for(&login, 1).await;
    let user_id = login["user"]["id"].as_str().unwrap();
    let base = &st.notifications.base_url;
    let c = reqwest::Client::new();
    let secret = &st.auth.state.config.internal_secrets[0];
    let id = uuid::Uuid::new_v4();
    let body =
        json!({"id": id, "user_id": user_id, "kind": "password_changed", "ip": null, "user_agent": null, "occurred_at": 1})
            .to_string();
    let internal = (INTERNAL_CALLER, INTERNAL_EMAIL);
    // Unsigned.
    let r = c.post(format!("{base}/internal/notifications")).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Signed, but the body is not the one whose digest was signed.
    let forged = body.replace("password_changed", "new_login");
    let r = signed_delivery(&c, base, secret, &forged, &body, internal).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Signed for a user rather than the internal caller: no such route for users.
    let r = signed_delivery(&c, base, secret, &body, &body, (user_id, "x@example.com")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Signed with an unknown secret.
    let r =
        signed_delivery(&c, base, &tokens::Secret::generate().unwrap(), &body, &body, internal).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Properly signed: created once, a retry of the same id stores nothing new.
    let r = signed_delivery(&c, base, secret, &body, &body, internal).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = signed_delivery(&c, base, secret, &body, &body, internal).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["created"], false);
    // Two-factor changes are notified too.
    let mfa = json!({"id": uuid::Uuid::new_v4(), "user_id": user_id, "kind": "mfa_disabled", "ip": "203.0.113.5",
        "user_agent": null, "occurred_at": 2})
    .to_string();
    let r = signed_delivery(&c, base, secret, &mfa, &mfa, internal).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // Malformed and mistyped bodies: 400, nothing stored.
    for bad in ["{", r#"{"id": 5}"#, &body.replace("password_changed", "payday")] {
        let r = signed_delivery(&c, base, secret, bad, bad, internal).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let page = st.list(&login, "").await;
    assert_eq!(page["notifications"].as_array().unwrap().len(), 3, "{page}");
    let mfa = page["notifications"].as_array().unwrap().iter().find(|n| n["kind"] == "mfa_disabled").unwrap();
    assert_eq!(mfa["title"], "Two-factor sign-in turned off");
    assert!(mfa["body"].as_str().unwrap().contains("203.0.113.5"));
    // Through the gateway the internal route cannot be reached.
    let r = st.authed(Method::POST, "/api/v1/notifications/../internal/notifications", &login).send().await.unwrap();
    assert_ne!(r.status(), StatusCode::CREATED);
}

async fn bad_queries_get_clear_errors(backend: Backend) {
    let st = stack(backend).await;
    let email = st.register().await;
    let login = st.login(&email, "ua").await;
    for (query, message) in [
        ("?limit=0", "limit must be an integer from 1 to 100"),
        ("?limit=101", "limit must be an integer from 1 to 100"),
        ("?limit=ten", "limit must be an integer from 1 to 100"),
        ("?cursor=bm9wZQ", "Invalid cursor"),
        ("?cursor=%FF", "Invalid cursor"),
        ("?page=2", "Invalid query string"),
    ] {
        let r = st.authed(Method::GET, &format!("/api/v1/notifications{query}"), &login).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], message, "{query}");
    }
    let r = st.authed(Method::POST, "/api/v1/notifications/not-a-uuid/read", &login).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = st.gateway.client.get(st.gateway.url("/api/v1/notifications")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let c = reqwest::Client::new();
    let r = c.get(format!("{}/notifications", st.notifications.base_url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "User context missing. Request must come through API Gateway."
    );
    let health: Value =
        c.get(format!("{}/health", st.notifications.base_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health, json!({"status": "healthy", "service": "notification-service"}));
}

backend_tests!(
    a_login_notifies_the_user_with_where_it_came_from,
    unread_come_first_and_reading_marks_them,
    a_password_change_notifies,
    refresh_token_reuse_notifies,
    deliveries_are_retried_while_the_service_is_down,
    only_signed_internal_calls_create_notifications,
    bad_queries_get_clear_errors,
);
