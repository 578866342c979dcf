use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{Backend, DEFAULT_PASSWORD, backend_tests, spawn_auth_with, spawn_default_auth, unique_email};
use uuid::Uuid;

async fn login_returns_the_seed_body_and_a_csrf_cookie(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let email = unique_email("login");
    app.register(&email, DEFAULT_PASSWORD).await;
    let response = app.login(&email, DEFAULT_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "Login successful");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["user"]["email"], email);
    let csrf = body["csrf_token"].as_str().unwrap();
    assert!(cookie.starts_with(&format!("csrf_token={csrf}")), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    // The access token is an at+jwt carrying the session.
    let claims = app.state.keys().verifier.verify(body["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims.email, email);
    assert!(Uuid::parse_str(&claims.sid).is_ok());
    assert_eq!(claims.exp - claims.iat, 900);
    // Two logins within the same second get distinct tokens (the seed's got a 500).
    let again: Value = app.login(&email, DEFAULT_PASSWORD).await.json().await.unwrap();
    assert_ne!(again["access_token"], body["access_token"]);
    assert_ne!(again["refresh_token"], body["refresh_token"]);
}

async fn a_wrong_password_and_an_unknown_email_get_the_same_answer(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let email = unique_email("known");
    app.register(&email, DEFAULT_PASSWORD).await;
    let wrong = app.login(&email, "wrong password here").await;
    let unknown = app.login(&unique_email("nobody"), "wrong password here").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let (wrong, unknown): (Value, Value) = (wrong.json().await.unwrap(), unknown.json().await.unwrap());
    assert_eq!(wrong, json!({"error": "Invalid credentials"}));
    assert_eq!(wrong, unknown);
}

/// The unknown-email path does the same Argon2id work as the known one
/// (one check against a hash of the configured cost), and a malformed
/// request does none. Counted, not timed, so the test cannot flake.
async fn unknown_emails_cost_the_same_hashing_work(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let email = unique_email("timing");
    app.register(&email, DEFAULT_PASSWORD).await;
    let hasher = &app.state.hasher;
    let work = |e: String| {
        let app = &app;
        async move {
            let before = hasher.verifications();
            assert_eq!(app.login(&e, "not the password").await.status(), StatusCode::UNAUTHORIZED);
            hasher.verifications() - before
        }
    };
    assert_eq!(work(email.clone()).await, 1, "known email");
    assert_eq!(work(unique_email("ghost")).await, 1, "unknown email");
    let before = hasher.verifications();
    let r = app.post_json("/auth/login", &json!({"email": "bad", "password": "x"})).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(hasher.verifications(), before, "no hashing for a malformed request");
}

async fn a_disabled_account_is_reported_only_after_a_correct_password(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let email = unique_email("disabled");
    let body: Value = app.register(&email, DEFAULT_PASSWORD).await.json().await.unwrap();
    let user_id = Uuid::parse_str(body["user"]["id"].as_str().unwrap()).unwrap();
    app.state.store.set_user_active(user_id, false, 0).await.unwrap();
    let wrong = app.login(&email, "not the password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = app.login(&email, DEFAULT_PASSWORD).await;
    assert_eq!(right.status(), StatusCode::FORBIDDEN);
    assert_eq!(right.json::<Value>().await.unwrap()["error"], "Account is disabled");
}

async fn a_bcrypt_hash_from_the_seed_verifies_and_is_upgraded(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let email = unique_email("legacy");
    let body: Value = app.register(&email, DEFAULT_PASSWORD).await.json().await.unwrap();
    let user_id = Uuid::parse_str(body["user"]["id"].as_str().unwrap()).unwrap();
    // The seed stored Go bcrypt hashes ($2a$, cost 12; cost 4 keeps the test fast).
    let legacy = bcrypt::hash("legacy secret 123", 4).unwrap().replacen("$2b$", "$2a$", 1);
    app.state.store.set_password_hash(user_id, &legacy, 0).await.unwrap();
    assert_eq!(app.login(&email, "wrong secret 123").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.login(&email, "legacy secret 123").await.status(), StatusCode::OK);
    let upgraded = app.state.store.find_user(user_id).await.unwrap().unwrap().password_hash;
    assert!(upgraded.starts_with("$argon2id$"), "{upgraded}");
    assert_eq!(app.login(&email, "legacy secret 123").await.status(), StatusCode::OK);
    let events = app.state.store.list_audit_events(Some(user_id), 50).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "password_rehashed"));
}

async fn repeated_failures_lock_the_account_with_retry_after(backend: Backend) {
    let (app, _db) = spawn_auth_with(backend, |c| {
        c.login_max_failures = 3;
        c.login_failure_window_secs = 600;
    })
    .await;
    let email = unique_email("lock");
    app.register(&email, DEFAULT_PASSWORD).await;
    for _ in 0..3 {
        assert_eq!(app.login(&email, "wrong password!").await.status(), StatusCode::UNAUTHORIZED);
    }
    // Locked now: even the right password gets 429, with a back-off.
    let locked = app.login(&email, DEFAULT_PASSWORD).await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = locked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=600).contains(&retry_after), "{retry_after}");
    assert_eq!(locked.json::<Value>().await.unwrap()["error"], "Too many failed login attempts");
    // Unknown emails lock the same way, so a 429 says nothing about existence.
    let ghost = unique_email("ghost");
    for _ in 0..3 {
        assert_eq!(app.login(&ghost, "wrong password!").await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.login(&ghost, "wrong password!").await.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another account is unaffected.
    let other = unique_email("other");
    app.register(&other, DEFAULT_PASSWORD).await;
    assert_eq!(app.login(&other, DEFAULT_PASSWORD).await.status(), StatusCode::OK);
    let kinds: Vec<String> =
        app.state.store.list_audit_events(None, 100).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&"login_locked".to_owned()) && kinds.contains(&"login_failed".to_owned()), "{kinds:?}");
}

async fn the_lockout_ends_when_the_window_passes_and_success_resets_it(backend: Backend) {
    let (app, _db) = spawn_auth_with(backend, |c| {
        c.login_max_failures = 2;
        c.login_failure_window_secs = 2;
    })
    .await;
    let email = unique_email("unlock");
    app.register(&email, DEFAULT_PASSWORD).await;
    app.login(&email, "wrong password!").await;
    app.login(&email, "wrong password!").await;
    assert_eq!(app.login(&email, DEFAULT_PASSWORD).await.status(), StatusCode::TOO_MANY_REQUESTS);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(app.login(&email, DEFAULT_PASSWORD).await.status(), StatusCode::OK);
    // The success cleared the count: one more failure does not lock.
    app.login(&email, "wrong password!").await;
    assert_eq!(app.login(&email, DEFAULT_PASSWORD).await.status(), StatusCode::OK);
}

backend_tests!(
    login_returns_the_seed_body_and_a_csrf_cookie,
    a_wrong_password_and_an_unknown_email_get_the_same_answer,
    unknown_emails_cost_the_same_hashing_work,
    a_disabled_account_is_reported_only_after_a_correct_password,
    a_bcrypt_hash_from_the_seed_verifies_and_is_upgraded,
    repeated_failures_lock_the_account_with_retry_after,
    the_lockout_ends_when_the_window_passes_and_success_resets_it,
);
