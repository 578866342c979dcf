use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use testkit::{
    Backend, DEFAULT_PASSWORD, TestDatabase, backend_tests, spawn_auth, spawn_auth_with, spawn_default_auth,
    test_auth_config, unique_email,
};
use uuid::Uuid;

fn token(body: &Value, field: &str) -> String {
    body[field].as_str().unwrap_or_else(|| panic!("no {field} in {body}")).to_owned()
}

async fn refresh_rotates_the_refresh_token(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let login = app.signed_in_user(&unique_email("rot")).await;
    let first = token(&login, "refresh_token");
    let response = app.refresh(&first).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(response.headers()["set-cookie"].to_str().unwrap().starts_with("csrf_token="));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "Token refreshed successfully");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let second = token(&body, "refresh_token");
    assert_ne!(first, second);
    // The new access token is for the same session.
    let a = app.state.keys().verifier.verify(&token(&login, "access_token")).unwrap();
    let b = app.state.keys().verifier.verify(&token(&body, "access_token")).unwrap();
    assert_eq!(a.sid, b.sid);
    // The new refresh token works in turn.
    assert_eq!(app.refresh(&second).await.status(), StatusCode::OK);
}

async fn a_reused_refresh_token_revokes_the_whole_session(backend: Backend) {
    let (app, _db) = spawn_auth_with(backend, |c| c.refresh_reuse_interval_secs = 0).await;
    let login = app.signed_in_user(&unique_email("reuse")).await;
    let stolen = token(&login, "refresh_token");
    let legit: Value = app.refresh(&stolen).await.json().await.unwrap();
    // The attacker replays the rotated token.
    let replay = app.refresh(&stolen).await;
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(replay.json::<Value>().await.unwrap()["error"], "Invalid or expired refresh token");
    // The legitimate holder's newer token is now dead too, and so is the access token.
    assert_eq!(app.refresh(&token(&legit, "refresh_token")).await.status(), StatusCode::UNAUTHORIZED);
    let verify = app.get_authed("/auth/verify", &token(&legit, "access_token")).await;
    assert_eq!(verify.status(), StatusCode::UNAUTHORIZED);
    let sid = Uuid::parse_str(&app.state.keys().verifier.verify(&token(&legit, "access_token")).unwrap().sid).unwrap();
    let session = app.state.store.find_session(sid).await.unwrap().unwrap();
    assert_eq!(session.revoked_reason.as_deref(), Some("refresh_token_reuse"));
    let kinds: Vec<String> =
        app.state.store.list_audit_events(None, 50).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&"refresh_reuse_detected".to_owned()), "{kinds:?}");
}

async fn a_reuse_within_the_grace_window_returns_the_current_pair(backend: Backend) {
    let (app, _db) = spawn_auth_with(backend, |c| c.refresh_reuse_interval_secs = 10).await;
    let login = app.signed_in_user(&unique_email("grace")).await;
    let old = token(&login, "refresh_token");
    let first: Value = app.refresh(&old).await.json().await.unwrap();
    // A second tab presents the same token a moment later.
    let second = app.refresh(&old).await;
    assert_eq!(second.status(), StatusCode::OK);
    let second: Value = second.json().await.unwrap();
    assert_eq!(token(&first, "refresh_token"), token(&second, "refresh_token"), "both tabs converge on one token");
    // The session is intact: the current token rotates on.
    assert_eq!(app.refresh(&token(&second, "refresh_token")).await.status(), StatusCode::OK);
    // But a token two rotations old is a reuse even inside the window.
    assert_eq!(app.refresh(&old).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.refresh(&token(&second, "refresh_token")).await.status(), StatusCode::UNAUTHORIZED);
}

async fn a_reuse_after_the_grace_window_revokes_the_session(backend: Backend) {
    let (app, _db) = spawn_auth_with(backend, |c| c.refresh_reuse_interval_secs = 1).await;
    let login = app.signed_in_user(&unique_email("late")).await;
    let old = token(&login, "refresh_token");
    let current: Value = app.refresh(&old).await.json().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(app.refresh(&old).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.refresh(&token(&current, "refresh_token")).await.status(), StatusCode::UNAUTHORIZED);
}

/// Twenty clients race with the same token and no grace window: at most one wins.
async fn twenty_parallel_refreshes_of_one_token_give_at_most_one_success(backend: Backend) {
    let (app, _db) = spawn_auth_with(backend, |c| c.refresh_reuse_interval_secs = 0).await;
    let login = app.signed_in_user(&unique_email("race")).await;
    let rt = token(&login, "refresh_token");
    let results = futures::future::join_all((0..20).map(|_| app.refresh(&rt))).await;
    let ok = results.iter().filter(|r| r.status() == StatusCode::OK).count();
    assert!(ok <= 1, "{ok} refreshes succeeded");
    assert!(results.iter().all(|r| r.status() == StatusCode::OK || r.status() == StatusCode::UNAUTHORIZED));
}

/// The same race over two auth instances with their own pools on one database,
/// as two processes behind a load balancer would run it.
async fn parallel_refreshes_across_two_instances_give_at_most_one_success(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let mut config = test_auth_config(db.target.clone());
    config.refresh_reuse_interval_secs = 0;
    let a = spawn_auth(config.clone()).await;
    let b = spawn_auth(config).await;
    let login = a.signed_in_user(&unique_email("two")).await;
    let rt = token(&login, "refresh_token");
    let calls = (0..20).map(|i| if i % 2 == 0 { a.refresh(&rt) } else { b.refresh(&rt) });
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.status() == StatusCode::OK).count();
    assert!(ok <= 1, "{ok} refreshes succeeded");
}

async fn a_disabled_user_cannot_refresh(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let login = app.signed_in_user(&unique_email("off")).await;
    let user_id = Uuid::parse_str(login["user"]["id"].as_str().unwrap()).unwrap();
    app.state.store.set_user_active(user_id, false, 0).await.unwrap();
    assert_eq!(app.refresh(&token(&login, "refresh_token")).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.get_authed("/auth/me", &token(&login, "access_token")).await.status(), StatusCode::UNAUTHORIZED);
}

async fn forged_expired_and_garbage_refresh_tokens_are_refused(backend: Backend) {
    let (app, _db) = spawn_auth_with(backend, |c| c.refresh_token_ttl_secs = 1).await;
    let login = app.signed_in_user(&unique_email("forge")).await;
    let rt = token(&login, "refresh_token");
    // A token minted with another secret for the real session.
    let sid = Uuid::parse_str(&app.state.keys().verifier.verify(&token(&login, "access_token")).unwrap().sid).unwrap();
    let other = tokens::RefreshKey::new(tokens::Secret::generate().unwrap());
    for forged in [other.mint(sid, 0), other.mint(sid, 1), "".into(), "x".repeat(75), token(&login, "access_token")] {
        assert_eq!(app.refresh(&forged).await.status(), StatusCode::UNAUTHORIZED, "{forged}");
    }
    // Idle past REFRESH_TOKEN_TTL: refused.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(app.refresh(&rt).await.status(), StatusCode::UNAUTHORIZED);
}

async fn a_session_past_its_absolute_lifetime_cannot_refresh(backend: Backend) {
    let (app, _db) = spawn_auth_with(backend, |c| c.session_lifetime_secs = 1).await;
    let login = app.signed_in_user(&unique_email("abs")).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(app.refresh(&token(&login, "refresh_token")).await.status(), StatusCode::UNAUTHORIZED);
}

/// A database dump reveals no usable token: refresh tokens are never stored,
/// and neither are access or CSRF tokens.
async fn tokens_are_not_in_the_database(backend: Backend) {
    let (app, db) = spawn_default_auth(backend).await;
    let login = app.signed_in_user(&unique_email("dump")).await;
    let refreshed: Value = app.refresh(&token(&login, "refresh_token")).await.json().await.unwrap();
    let dump = db.dump_text().await;
    assert!(dump.contains("login_succeeded"), "the dump reads the tables");
    for body in [&login, &refreshed] {
        for field in ["refresh_token", "access_token", "csrf_token"] {
            assert!(!dump.contains(&token(body, field)), "{field} found in the database");
        }
    }
    assert!(!dump.contains(DEFAULT_PASSWORD));
}

backend_tests!(
    refresh_rotates_the_refresh_token,
    a_reused_refresh_token_revokes_the_whole_session,
    a_reuse_within_the_grace_window_returns_the_current_pair,
    a_reuse_after_the_grace_window_revokes_the_session,
    twenty_parallel_refreshes_of_one_token_give_at_most_one_success,
    parallel_refreshes_across_two_instances_give_at_most_one_success,
    a_disabled_user_cannot_refresh,
    forged_expired_and_garbage_refresh_tokens_are_refused,
    a_session_past_its_absolute_lifetime_cannot_refresh,
    tokens_are_not_in_the_database,
);
