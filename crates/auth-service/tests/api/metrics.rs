//! `GET /metrics` after a known sequence of requests.

use reqwest::StatusCode;
use serde_json::json;
use testkit::{Backend, DEFAULT_PASSWORD, backend_tests, spawn_auth_with, unique_email};

/// The value of the sample line starting with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

async fn metrics_count_what_happened(backend: Backend) {
    let (app, _db) = spawn_auth_with(backend, |_| {}).await;
    let email = unique_email("metrics");
    assert_eq!(app.register(&email, DEFAULT_PASSWORD).await.status(), StatusCode::CREATED);
    let first = app.login(&email, DEFAULT_PASSWORD).await;
    let login: serde_json::Value = first.json().await.unwrap();
    assert_eq!(app.login(&email, DEFAULT_PASSWORD).await.status(), StatusCode::OK);
    for _ in 0..3 {
        assert_eq!(app.login(&email, "not the password at all").await.status(), StatusCode::UNAUTHORIZED);
    }
    let spent = login["refresh_token"].as_str().unwrap();
    assert_eq!(app.refresh(spent).await.status(), StatusCode::OK);
    // Within the grace window the spent token gets the current pair again.
    assert_eq!(app.refresh(spent).await.status(), StatusCode::OK);
    let r = app.post_json("/auth/refresh", &json!({"refresh_token": "junk"})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    let expect = [
        (r#"gatehouse_auth_logins_total{outcome="success"}"#, 2.0),
        (r#"gatehouse_auth_logins_total{outcome="invalid_credentials"}"#, 3.0),
        (r#"gatehouse_auth_refreshes_total{outcome="success"}"#, 1.0),
        (r#"gatehouse_auth_refreshes_total{outcome="grace_replay"}"#, 1.0),
        // A malformed token names no session: counted by route and status only.
        (r#"gatehouse_http_requests_total{route="/auth/refresh",method="POST",status="401"}"#, 1.0),
        (r#"gatehouse_http_requests_total{route="/auth/login",method="POST",status="200"}"#, 2.0),
        (r#"gatehouse_http_requests_total{route="/auth/login",method="POST",status="401"}"#, 3.0),
        (r#"gatehouse_http_requests_total{route="/auth/register",method="POST",status="201"}"#, 1.0),
        (r#"gatehouse_http_request_duration_seconds_count{route="/auth/login"}"#, 5.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    assert!(sample(&text, "gatehouse_auth_db_pool_connections").is_some_and(|v| v >= 1.0), "{text}");
    assert!(sample(&text, "gatehouse_auth_password_hash_queue_depth").is_some(), "{text}");
    assert!(!text.contains(&email) && !text.contains(spent), "no user data in metrics");
}

/// Only allowed networks may scrape; everyone else sees no such route.
async fn metrics_are_refused_outside_the_allowed_networks(backend: Backend) {
    let (app, _db) = spawn_auth_with(backend, |c| c.metrics_allowed = vec!["10.0.0.0/8".parse().unwrap()]).await;
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

backend_tests!(metrics_count_what_happened, metrics_are_refused_outside_the_allowed_networks);
