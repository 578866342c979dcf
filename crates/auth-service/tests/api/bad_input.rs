//! Hostile and malformed input: always a 4xx JSON error, never a 500, a
//! panic or a half-written row.

use reqwest::StatusCode;
use serde_json::Value;
use testkit::{Backend, DEFAULT_PASSWORD, TestApp, backend_tests, spawn_default_auth, unique_email};

async fn send_raw(app: &TestApp, path: &str, content_type: Option<&str>, body: Vec<u8>) -> (StatusCode, Value) {
    let mut request = app.client.post(app.url(path)).body(body);
    if let Some(ct) = content_type {
        request = request.header("Content-Type", ct);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or_else(|e| panic!("{path}: non-JSON error body ({e})"));
    (status, body)
}

async fn malformed_bodies_get_a_json_4xx_and_write_nothing(backend: Backend) {
    let (app, db) = spawn_default_auth(backend).await;
    let email = unique_email("bad");
    let valid = format!(r#"{{"email":"{email}","password":"{DEFAULT_PASSWORD}","name":"N"}}"#);
    let json = Some("application/json");
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, StatusCode, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "form body",
            Some("application/x-www-form-urlencoded"),
            b"email=a&password=b".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
        ),
        (
            "text body",
            Some("text/plain"),
            valid.clone().into_bytes(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
        ),
        (
            "no content type",
            None,
            valid.clone().into_bytes(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
        ),
        (
            "multipart",
            Some("multipart/form-data; boundary=x"),
            b"--x--".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
        ),
        ("empty", json, vec![], StatusCode::BAD_REQUEST, "Invalid request body"),
        ("truncated", json, br#"{"email":"#.to_vec(), StatusCode::BAD_REQUEST, "Invalid request body"),
        ("not an object", json, b"[1,2,3]".to_vec(), StatusCode::BAD_REQUEST, "Invalid request body"),
        ("null", json, b"null".to_vec(), StatusCode::BAD_REQUEST, "Invalid request body"),
        (
            "unknown field",
            json,
            valid.replace(r#""name":"N""#, r#""name":"N","admin":true"#).into_bytes(),
            StatusCode::BAD_REQUEST,
            "Invalid request body",
        ),
        (
            "duplicate field",
            json,
            valid.replace(r#""name":"N""#, r#""name":"N","name":"M""#).into_bytes(),
            StatusCode::BAD_REQUEST,
            "Invalid request body",
        ),
        (
            "wrong type",
            json,
            valid.replace(r#""name":"N""#, r#""name":42"#).into_bytes(),
            StatusCode::BAD_REQUEST,
            "Invalid request body",
        ),
        (
            "missing field",
            json,
            valid.replace(r#","name":"N""#, "").into_bytes(),
            StatusCode::BAD_REQUEST,
            "Invalid request body",
        ),
        (
            "invalid utf-8",
            json,
            [b"{\"email\":\"".as_slice(), &[0xff, 0xfe], b"\"}"].concat(),
            StatusCode::BAD_REQUEST,
            "Invalid request body",
        ),
        (
            "deep nesting",
            json,
            format!("{}{}", "[".repeat(5_000), "]".repeat(5_000)).into_bytes(),
            StatusCode::BAD_REQUEST,
            "Invalid request body",
        ),
        ("trailing garbage", json, format!("{valid} x").into_bytes(), StatusCode::BAD_REQUEST, "Invalid request body"),
        (
            "NUL in name",
            json,
            valid.replace(r#""name":"N""#, r#""name":"a\u0000b""#).into_bytes(),
            StatusCode::BAD_REQUEST,
            "name must not contain control characters",
        ),
        (
            "bidi override in name",
            json,
            valid.replace(r#""name":"N""#, "\"name\":\"a\u{202E}b\"").into_bytes(),
            StatusCode::BAD_REQUEST,
            "name must not contain control characters",
        ),
        (
            "lone surrogate",
            json,
            valid.replace(r#""name":"N""#, r#""name":"\udc00""#).into_bytes(),
            StatusCode::BAD_REQUEST,
            "Invalid request body",
        ),
        (
            "oversized",
            json,
            format!(r#"{{"email":"{email}","password":"{DEFAULT_PASSWORD}","name":"{}"}}"#, "n".repeat(17 * 1024))
                .into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large",
        ),
    ];
    for (case, ct, body, status, error) in cases {
        let (got, body) = send_raw(&app, "/auth/register", ct, body).await;
        assert_eq!(got, status, "{case}: {body}");
        assert_eq!(body["error"], error, "{case}: {body}");
    }
    // Nothing was written.
    assert!(app.state.store.find_user_by_email(&email).await.unwrap().is_none());
    assert!(!db.dump_text().await.contains(&email));
    // And the valid body still registers.
    let (status, _) = send_raw(&app, "/auth/register", json, valid.into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED);
}

async fn a_hint_names_the_field_without_echoing_its_value(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let (status, body) = send_raw(
        &app,
        "/auth/login",
        Some("application/json"),
        br#"{"email":"a@b.io","password":31415926535}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let hint = body["hint"].as_str().unwrap();
    assert!(hint.contains("password") && !hint.contains("31415926535"), "{hint}");
    let (_, body) = send_raw(
        &app,
        "/auth/login",
        Some("application/json"),
        br#"{"email":"a@b.io","password":"x","role":"admin"}"#.to_vec(),
    )
    .await;
    assert!(body["hint"].as_str().unwrap().contains("unknown field `role`"), "{body}");
}

async fn a_chunked_oversized_body_is_refused(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let status = testkit::status_for_streamed_body(|| {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..40).map(|_| Ok(vec![b' '; 1024])).collect();
        let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
        app.client.post(app.url("/auth/login")).header("Content-Type", "application/json").body(body).send()
    })
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

async fn every_endpoint_survives_hostile_values(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let hostile = [
        "",
        " ",
        "\u{0}",
        "'; drop table user_account; --",
        "a@b.io' or '1'='1",
        "\u{202E}moc.elpmaxe@a",
        "🦀@🦀.io",
        "%00",
        "../../etc/passwd",
        "$2a$10$abcdefghijklmnopqrstuv",
        "eyJhbGciOiJub25lIn0.e30.",
    ];
    let long = "A".repeat(5000);
    for value in hostile.iter().copied().chain([long.as_str()]) {
        for (path, body) in [
            ("/auth/register", serde_json::json!({"email": value, "password": value, "name": value})),
            ("/auth/login", serde_json::json!({"email": value, "password": value})),
            ("/auth/refresh", serde_json::json!({"refresh_token": value})),
            ("/auth/logout", serde_json::json!({"refresh_token": value})),
        ] {
            let response = app.post_json(path, &body).await;
            let status = response.status();
            assert!(status.is_client_error() || status.is_success(), "{path} {value:?}: {status}");
            let body: Value = response.json().await.unwrap();
            if status.is_client_error() {
                assert!(body["error"].is_string(), "{path} {value:?}: {body}");
            }
        }
        let r = app.client.get(app.url("/auth/verify")).header("Authorization", format!("Bearer {value}")).send().await;
        if let Ok(r) = r {
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{value:?}");
        }
    }
    // The tables survived.
    assert_eq!(app.signed_in_user(&unique_email("after")).await["message"], "Login successful");
}

async fn hostile_headers_are_handled(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    // An injected request id is replaced; a well-formed one is kept.
    let r = app.client.get(app.url("/health")).header("X-Request-ID", "abc def<script>").send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let r = app.client.get(app.url("/health")).header("X-Request-ID", "trace-123").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-123");
    // Non-UTF-8 and huge Authorization headers.
    let raw = reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap();
    let r = app.client.get(app.url("/auth/me")).header("Authorization", raw).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app
        .client
        .get(app.url("/auth/me"))
        .header("Authorization", format!("Bearer {}", "a".repeat(8000)))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    // A hostile User-Agent is stored sanitised.
    let email = unique_email("ua");
    app.register(&email, DEFAULT_PASSWORD).await;
    let r = app
        .client
        .post(app.url("/auth/login"))
        .header("User-Agent", reqwest::header::HeaderValue::from_bytes(b"evil\tagent\xc3\xa9").unwrap())
        .json(&serde_json::json!({"email": email, "password": DEFAULT_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let user = app.state.store.find_user_by_email(&email).await.unwrap().unwrap();
    let sessions = app.state.store.list_active_sessions(user.user_id, 0).await.unwrap();
    assert_eq!(sessions[0].user_agent.as_deref(), Some("evil?agent??"));
}

backend_tests!(
    malformed_bodies_get_a_json_4xx_and_write_nothing,
    a_hint_names_the_field_without_echoing_its_value,
    a_chunked_oversized_body_is_refused,
    every_endpoint_survives_hostile_values,
    hostile_headers_are_handled,
);
