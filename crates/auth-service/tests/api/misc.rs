use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{Backend, backend_tests, spawn_default_auth, unique_email};

async fn health_ready_and_jwks(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let health: Value = app.client.get(app.url("/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health, json!({"status": "healthy", "service": "auth-service"}));
    let ready = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let jwks: Value = app.client.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], app.state.config.signing_key.kid());
    assert!(keys[0].get("d").is_none(), "no private part");
    // The published key verifies the tokens the service issues.
    let login = app.signed_in_user(&unique_email("jwks")).await;
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
    let verifier =
        tokens::AccessTokenVerifier::new(tokens::VerifyingKeys::from_jwks(&set), "gatehouse", "gatehouse", 0);
    assert!(verifier.verify(login["access_token"].as_str().unwrap()).is_ok());
}

async fn ready_fails_when_the_database_is_gone(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    app.state.store.close().await;
    let ready = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json::<Value>().await.unwrap()["error"], "Database unavailable");
    // Requests needing the database get a 503, not a 500, and no internals.
    let r = app.login("a@example.com", "some password").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = r.text().await.unwrap();
    assert!(!body.to_lowercase().contains("pool") && !body.contains("sqlx"), "{body}");
}

async fn unknown_routes_and_methods_get_json_errors(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let r = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "Route not found");
    let r = app.client.get(app.url("/auth/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "Method not allowed");
    let r = app.client.request(reqwest::Method::TRACE, app.url("/auth/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

async fn security_events_are_audited(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let email = unique_email("audit");
    let login = app.signed_in_user(&email).await;
    app.login(&email, "wrong password!").await;
    app.refresh(login["refresh_token"].as_str().unwrap()).await;
    app.post_json("/auth/logout", &json!({"refresh_token": login["refresh_token"]})).await;
    let events = app.state.store.list_audit_events(None, 100).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    for kind in ["user_registered", "login_succeeded", "login_failed", "refresh_succeeded", "logout"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert!(events.iter().all(|e| e.ip.as_deref() == Some("127.0.0.1")));
}

/// A login flood beyond the hashing pool's queue is shed with 503 and
/// `Retry-After`, and the rest of the service keeps answering meanwhile.
async fn a_login_flood_is_shed_without_starving_other_requests(backend: Backend) {
    let (app, _db) = testkit::spawn_auth_with(backend, |c| {
        c.hash_concurrency = 1;
        c.hash_queue = 2;
        c.login_max_failures = 1000;
    })
    .await;
    let email = unique_email("flood");
    app.register(&email, testkit::DEFAULT_PASSWORD).await;
    let flood: Vec<_> = (0..24)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/auth/login"));
            let email = email.clone();
            tokio::spawn(async move {
                client.post(url).json(&json!({"email": email, "password": "wrong password!"})).send().await.unwrap()
            })
        })
        .collect();
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "answered during the flood");
    let mut shed = 0;
    for r in flood {
        let r = r.await.unwrap();
        match r.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(r.headers().contains_key("retry-after"));
                assert_eq!(r.json::<Value>().await.unwrap()["error"], "Service temporarily unavailable");
                shed += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(shed > 0, "some logins were shed");
}

backend_tests!(
    a_login_flood_is_shed_without_starving_other_requests,
    health_ready_and_jwks,
    ready_fails_when_the_database_is_gone,
    unknown_routes_and_methods_get_json_errors,
    security_events_are_audited,
);

/// `method path` signed as the gateway's internal caller with `secret`.
async fn signed_internal_call(
    app: &testkit::TestApp,
    method: reqwest::Method,
    secret: tokens::Secret,
    path: &str,
) -> reqwest::Response {
    let rid = uuid::Uuid::new_v4().to_string();
    let headers = tokens::assertion::internal_call_headers(method.as_str(), path, &[secret], app.state.now(), &rid);
    let mut request = app.client.request(method, app.url(path));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.send().await.unwrap()
}

/// [`signed_internal_call`] for a `GET`.
async fn signed_internal_get(app: &testkit::TestApp, secret: tokens::Secret, path: &str) -> reqwest::Response {
    signed_internal_call(app, reqwest::Method::GET, secret, path).await
}

/// The revocation feed answers only a caller that signs with the gateway secret.
#[tokio::test]
async fn the_revocation_feed_needs_a_signed_internal_call() {
    let (app, _db) = spawn_default_auth(Backend::Sqlite).await;
    let login = app.signed_in_user(&unique_email("feed")).await;
    app.post_json("/auth/logout", &json!({"refresh_token": login["refresh_token"]})).await;
    let sid = app.state.keys().verifier.verify(login["access_token"].as_str().unwrap()).unwrap().sid;
    let unsigned = app.client.get(app.url("/internal/revocations?since=0")).send().await.unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    let wrong = signed_internal_get(&app, tokens::Secret::generate().unwrap(), "/internal/revocations?since=0").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let secret = app.state.config.internal_secrets[0].clone();
    let ok = signed_internal_get(&app, secret.clone(), "/internal/revocations?since=0").await;
    assert_eq!(ok.status(), StatusCode::OK);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["revoked"][0]["session_id"], sid);
    assert_eq!(body["complete"], true);
    let bad = signed_internal_get(&app, secret, "/internal/revocations?since=yesterday").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

/// The user summary (the sign-up name, for the user service) answers only a
/// signed internal call, and not for an unknown or deleted account.
#[tokio::test]
async fn the_user_summary_needs_a_signed_internal_call() {
    let (app, _db) = spawn_default_auth(Backend::Sqlite).await;
    let email = unique_email("summary");
    let login = app.signed_in_user(&email).await;
    let user_id = login["user"]["id"].as_str().unwrap().to_owned();
    let path = format!("/internal/users/{user_id}");
    let unsigned = app.client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    let wrong = signed_internal_get(&app, tokens::Secret::generate().unwrap(), &path).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let secret = app.state.config.internal_secrets[0].clone();
    let ok = signed_internal_get(&app, secret.clone(), &path).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let body: Value = ok.json().await.unwrap();
    // testkit's `register` signs up as "Test User".
    assert_eq!(body, json!({"user_id": user_id, "email": email, "name": "Test User"}));
    let unknown = signed_internal_get(&app, secret.clone(), &format!("/internal/users/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let garbage = signed_internal_get(&app, secret.clone(), "/internal/users/not-a-uuid").await;
    assert_eq!(garbage.status(), StatusCode::NOT_FOUND);
    // Deleted accounts are not described.
    let delete = format!("/internal/users/{user_id}/delete");
    let deleted = signed_internal_call(&app, reqwest::Method::POST, secret.clone(), &delete).await;
    assert_eq!(deleted.status(), StatusCode::OK);
    let gone = signed_internal_get(&app, secret, &path).await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}
