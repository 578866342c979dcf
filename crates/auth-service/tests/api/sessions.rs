use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{Backend, DEFAULT_PASSWORD, TestApp, backend_tests, spawn_default_auth, unique_email};

fn token(body: &Value, field: &str) -> String {
    body[field].as_str().unwrap_or_else(|| panic!("no {field} in {body}")).to_owned()
}

async fn second_login(app: &TestApp, email: &str) -> Value {
    let r = app.login(email, DEFAULT_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

async fn logout_ends_the_session_and_clears_the_cookie(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let login = app.signed_in_user(&unique_email("out")).await;
    let response = app.post_json("/auth/logout", &json!({"refresh_token": token(&login, "refresh_token")})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("csrf_token=;") && cookie.contains("Max-Age=0"), "{cookie}");
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"message": "Logged out successfully"}));
    assert_eq!(app.refresh(&token(&login, "refresh_token")).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.get_authed("/auth/verify", &token(&login, "access_token")).await.status(), StatusCode::UNAUTHORIZED);
    // Logging out again, or with junk, answers the same.
    for rt in [token(&login, "refresh_token"), "junk".to_owned()] {
        assert_eq!(app.post_json("/auth/logout", &json!({"refresh_token": rt})).await.status(), StatusCode::OK);
    }
}

async fn logout_all_ends_every_session_of_the_user(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let email = unique_email("all");
    let a = app.signed_in_user(&email).await;
    let b = second_login(&app, &email).await;
    let bystander = app.signed_in_user(&unique_email("bystander")).await;
    let response =
        app.client.post(app.url("/auth/logout-all")).bearer_auth(token(&a, "access_token")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["revoked_sessions"], 2);
    for s in [&a, &b] {
        assert_eq!(app.refresh(&token(s, "refresh_token")).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.get_authed("/auth/me", &token(s, "access_token")).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.refresh(&token(&bystander, "refresh_token")).await.status(), StatusCode::OK);
}

async fn changing_the_password_revokes_the_other_sessions(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let email = unique_email("pw");
    let here = app.signed_in_user(&email).await;
    let elsewhere = second_login(&app, &email).await;
    let change = |current: &str, new: &str| {
        app.client
            .post(app.url("/auth/password"))
            .bearer_auth(token(&here, "access_token"))
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
    };
    let wrong = change("not my password", "a brand new passphrase").await.unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let weak = change(DEFAULT_PASSWORD, "password").await.unwrap();
    assert_eq!(weak.status(), StatusCode::BAD_REQUEST);
    let ok = change(DEFAULT_PASSWORD, "a brand new passphrase").await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.json::<Value>().await.unwrap()["revoked_sessions"], 1);
    // This session lives on; the other is gone; the old password no longer works.
    assert_eq!(app.refresh(&token(&here, "refresh_token")).await.status(), StatusCode::OK);
    assert_eq!(app.refresh(&token(&elsewhere, "refresh_token")).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.login(&email, DEFAULT_PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.login(&email, "a brand new passphrase").await.status(), StatusCode::OK);
}

async fn sessions_are_listed_and_revoked_one_by_one(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let email = unique_email("list");
    let a = app.signed_in_user(&email).await;
    let b = second_login(&app, &email).await;
    let list: Value = app.get_authed("/auth/sessions", &token(&a, "access_token")).await.json().await.unwrap();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    let b_sid = app.state.keys().verifier.verify(&token(&b, "access_token")).unwrap().sid;
    // Another user cannot revoke it, and learns nothing (404 as for an unknown id).
    let mallory = app.signed_in_user(&unique_email("mallory")).await;
    for id in [b_sid.as_str(), "00000000-0000-0000-0000-000000000000", "not-a-uuid"] {
        let r = app
            .client
            .delete(app.url(&format!("/auth/sessions/{id}")))
            .bearer_auth(token(&mallory, "access_token"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{id}");
    }
    assert_eq!(app.refresh(&token(&b, "refresh_token")).await.status(), StatusCode::OK);
    let r = app
        .client
        .delete(app.url(&format!("/auth/sessions/{b_sid}")))
        .bearer_auth(token(&a, "access_token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let list: Value = app.get_authed("/auth/sessions", &token(&a, "access_token")).await.json().await.unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
}

async fn me_and_verify_describe_the_caller(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let email = unique_email("me");
    let login = app.signed_in_user(&email).await;
    let at = token(&login, "access_token");
    let me: Value = app.get_authed("/auth/me", &at).await.json().await.unwrap();
    assert_eq!(me["user"]["email"], email);
    assert_eq!(me["user"]["id"], login["user"]["id"]);
    // Without the CSRF pair, the token is valid but csrf_valid is false.
    let plain: Value = app.get_authed("/auth/verify", &at).await.json().await.unwrap();
    assert_eq!(plain["valid"], true);
    assert_eq!(plain["csrf_valid"], false);
    assert_eq!(plain["user"]["email"], email);
    let csrf = token(&login, "csrf_token");
    let with = |header: &str, cookie: &str| {
        app.client
            .get(app.url("/auth/verify"))
            .bearer_auth(&at)
            .header("X-CSRF-Token", header)
            .header("Cookie", format!("csrf_token={cookie}"))
            .send()
    };
    let good: Value = with(&csrf, &csrf).await.unwrap().json().await.unwrap();
    assert_eq!(good["csrf_valid"], true);
    let mismatch: Value = with(&csrf, "other").await.unwrap().json().await.unwrap();
    assert_eq!(mismatch["csrf_valid"], false);
    // A CSRF token of another session, even with a matching cookie, is not valid here.
    let other = app.signed_in_user(&unique_email("other")).await;
    let foreign = token(&other, "csrf_token");
    let cross: Value = with(&foreign, &foreign).await.unwrap().json().await.unwrap();
    assert_eq!(cross["csrf_valid"], false);
}

async fn authenticated_routes_refuse_missing_malformed_and_foreign_tokens(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let login = app.signed_in_user(&unique_email("authz")).await;
    let missing = app.client.get(app.url("/auth/verify")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(missing.json::<Value>().await.unwrap()["error"], "Authorization header missing");
    for header in ["Basic abc", "Bearer", "Token abc", "Bearer a b"] {
        let r = app.client.get(app.url("/auth/verify")).header("Authorization", header).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{header}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"],
            "Invalid authorization header format. Expected: Bearer <token>",
            "{header}"
        );
    }
    // A refresh token is not an access token (SEED-FLAWS F2), nor is a CSRF token or garbage.
    for bad in [token(&login, "refresh_token"), token(&login, "csrf_token"), "a.b.c".to_owned()] {
        let r = app.get_authed("/auth/verify", &bad).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "Invalid or expired token");
    }
}

backend_tests!(
    logout_ends_the_session_and_clears_the_cookie,
    logout_all_ends_every_session_of_the_user,
    changing_the_password_revokes_the_other_sessions,
    sessions_are_listed_and_revoked_one_by_one,
    me_and_verify_describe_the_caller,
    authenticated_routes_refuse_missing_malformed_and_foreign_tokens,
);
