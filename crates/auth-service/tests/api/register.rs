use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{Backend, DEFAULT_PASSWORD, backend_tests, spawn_default_auth, unique_email};

async fn registering_returns_the_user_and_normalises_the_email(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let email = unique_email("Reg");
    let mixed = format!("  {}  ", email.to_uppercase());
    let response = app.register(&mixed, DEFAULT_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "User registered successfully");
    assert_eq!(body["user"]["email"], email.to_lowercase());
    assert_eq!(body["user"]["name"], "Test User");
    assert!(body["user"]["id"].is_string());
    assert!(body["user"].get("password_hash").is_none());
    // The stored hash is Argon2id, never the password.
    let user = app.state.store.find_user_by_email(&email.to_lowercase()).await.unwrap().unwrap();
    assert!(user.password_hash.starts_with("$argon2id$"));
}

async fn registering_an_email_twice_is_a_conflict_whatever_its_case(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let email = unique_email("dup");
    assert_eq!(app.register(&email, DEFAULT_PASSWORD).await.status(), StatusCode::CREATED);
    let response = app.register(&email.to_uppercase(), DEFAULT_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "User with this email already exists");
}

async fn concurrent_registrations_of_one_email_give_one_account(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let email = unique_email("race");
    let attempts = (0..6).map(|_| app.register(&email, DEFAULT_PASSWORD));
    let statuses: Vec<StatusCode> = futures::future::join_all(attempts).await.iter().map(|r| r.status()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT), "{statuses:?}");
}

async fn weak_or_oversized_passwords_are_rejected_with_a_message_naming_the_field(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let cases = [
        ("short1", "password must be at least 8 characters"),
        ("password", "password is too common; choose a less guessable one"),
        ("iloveyou", "password is too common; choose a less guessable one"),
    ];
    for (password, message) in cases {
        let response = app.register(&unique_email("weak"), password).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{password}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], message, "{password}");
    }
    let long = "x".repeat(129);
    let response = app.register(&unique_email("long"), &long).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "password must be at most 128 characters");
    // 128 characters is fine, and nothing is truncated: a 127-character prefix does not log in.
    let exact: String = "abcdefgh".repeat(16);
    let email = unique_email("exact");
    assert_eq!(app.register(&email, &exact).await.status(), StatusCode::CREATED);
    assert_eq!(app.login(&email, &exact[..127]).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.login(&email, &exact).await.status(), StatusCode::OK);
}

async fn invalid_emails_and_names_are_rejected(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let long_email = format!("{}@example.com", "a".repeat(250));
    for email in
        ["not-an-email", "a@b", "a b@example.com", "ünicode@example.com", "x@example.com\r\nBcc: y", &long_email]
    {
        let response =
            app.post_json("/auth/register", &json!({"email": email, "password": DEFAULT_PASSWORD, "name": "N"})).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{email:?}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().starts_with("email"), "{email:?}: {body}");
    }
    for name in ["", "   ", "bad\u{0007}name", &"n".repeat(101)] {
        let response = app
            .post_json(
                "/auth/register",
                &json!({"email": unique_email("n"), "password": DEFAULT_PASSWORD, "name": name}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name:?}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().starts_with("name"), "{name:?}: {body}");
    }
}

backend_tests!(
    registering_returns_the_user_and_normalises_the_email,
    registering_an_email_twice_is_a_conflict_whatever_its_case,
    concurrent_registrations_of_one_email_give_one_account,
    weak_or_oversized_passwords_are_rejected_with_a_message_naming_the_field,
    invalid_emails_and_names_are_rejected,
);
