//! The gateway's `GET /metrics` after a known sequence of requests, over
//! real HTTP in front of the real auth service (for its JWKS and revocation
//! feed) and a recording upstream; and who may scrape.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{
    Backend, RecordingUpstream, TestApp, TestDatabase, TestGateway, spawn_default_auth, spawn_gateway,
    test_gateway_config, unique_email,
};
use tokens::AccessTokenIssuer;

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

struct Stack {
    auth: TestApp,
    upstream: RecordingUpstream,
    gateway: TestGateway,
    _db: TestDatabase,
}

/// The auth service, a recording upstream, and a gateway routing `extra`
/// routes (TOML) besides `/api/v1/users` to the recording upstream.
async fn stack(extra: &str, adjust: impl FnOnce(&mut gateway::GatewayConfig)) -> Stack {
    let (auth, db) = spawn_default_auth(Backend::Sqlite).await;
    let upstream = RecordingUpstream::spawn().await;
    let mut config = test_gateway_config(&auth, &upstream.base_url);
    let table = format!("[[route]]\nprefix = \"/api/v1/users\"\nupstream = \"{}\"\n{extra}", upstream.base_url);
    config.routes = gateway::routes::RouteTable::from_toml(&table).unwrap();
    adjust(&mut config);
    let gateway = spawn_gateway(config).await;
    Stack { auth, upstream, gateway, _db: db }
}

impl Stack {
    async fn scrape(&self) -> String {
        let r = self.gateway.client.get(self.gateway.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        r.text().await.unwrap()
    }

    /// An access token of the auth service's key for a user that does not
    /// exist, issued `age` seconds ago with a 15-minute lifetime.
    fn token(&self, age: i64) -> String {
        let config = &self.auth.state.config;
        let issuer = AccessTokenIssuer::new(Arc::clone(&config.signing_key), &config.issuer, &config.audience, 900);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        issuer.issue("usr_metrics", "metrics@example.com", "ses_metrics", now - age).unwrap().0
    }
}

/// `token` with its first signature character changed: parses, fails the check.
fn bad_signature(token: &str) -> String {
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    format!("{signed}.{first}{}", &signature[1..])
}

#[tokio::test]
async fn metrics_count_a_known_sequence_of_requests() {
    // Arrange: public routes to an upstream nobody listens on and to one that
    // reads the request and hangs up, and a per-user budget of two requests
    // (refilled once a minute, so not during the test).
    let hangup = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hangup_url = format!("http://{}", hangup.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = hangup.accept().await {
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await;
        }
    });
    let routes = format!(
        "[[route]]\nprefix = \"/api/v1/dead\"\nupstream = \"http://127.0.0.1:1\"\npublic = true\n\
         [[route]]\nprefix = \"/api/v1/hangup\"\nupstream = \"{hangup_url}\"\npublic = true\n"
    );
    let st = stack(&routes, |c| c.user_quota = gateway::rate_limit::Quota { per_minute: 1, burst: 2 }).await;
    let login = st.auth.signed_in_user(&unique_email("metrics")).await;
    let token = login["access_token"].as_str().unwrap().to_owned();
    let gw = &st.gateway;
    let profile = || gw.client.get(gw.url("/api/v1/users/profile"));

    // Act
    let statuses = [
        profile().bearer_auth(&token).send().await.unwrap().status(),
        profile().bearer_auth(st.token(3600)).send().await.unwrap().status(),
        profile().bearer_auth(bad_signature(&token)).send().await.unwrap().status(),
        profile().send().await.unwrap().status(),
        gw.client.get(gw.url("/api/v1/nothing/here")).send().await.unwrap().status(),
        gw.client
            .put(gw.url("/api/v1/users/profile"))
            .bearer_auth(&token)
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .status(),
        profile().bearer_auth(&token).send().await.unwrap().status(),
        profile().bearer_auth(&token).send().await.unwrap().status(),
        gw.client.get(gw.url("/api/v1/dead/anything")).send().await.unwrap().status(),
        gw.client.get(gw.url("/api/v1/hangup/anything")).send().await.unwrap().status(),
        gw.client.get(gw.url("/health")).send().await.unwrap().status(),
        gw.client
            .request(reqwest::Method::OPTIONS, gw.url("/api/v1/users/profile"))
            .header("Origin", "http://localhost:3000")
            .header("Access-Control-Request-Method", "GET")
            .send()
            .await
            .unwrap()
            .status(),
        // With an `Origin` the request takes the routed stack, not the direct path.
        profile().bearer_auth(&token).header("Origin", "http://localhost:3000").send().await.unwrap().status(),
    ];
    let text = st.scrape().await;
    let again = st.scrape().await;

    // Assert
    let s = StatusCode::as_u16;
    assert_eq!(
        statuses.map(|c| s(&c)),
        [200, 401, 401, 401, 404, 403, 200, 429, 502, 502, 200, 200, 429],
        "the sequence went as planned"
    );
    assert_eq!(st.upstream.count(), 2, "only the two 200s reached the upstream");
    let upstream = &st.upstream.base_url;
    let expect = [
        (r#"gatehouse_http_requests_total{route="users",method="GET",status="200"}"#.to_owned(), 2.0),
        (r#"gatehouse_http_requests_total{route="users",method="GET",status="401"}"#.to_owned(), 3.0),
        (r#"gatehouse_http_requests_total{route="users",method="PUT",status="403"}"#.to_owned(), 1.0),
        (r#"gatehouse_http_requests_total{route="users",method="GET",status="429"}"#.to_owned(), 2.0),
        (r#"gatehouse_http_requests_total{route="unmatched",method="GET",status="404"}"#.to_owned(), 1.0),
        (r#"gatehouse_http_requests_total{route="dead",method="GET",status="502"}"#.to_owned(), 1.0),
        (r#"gatehouse_http_requests_total{route="/health",method="GET",status="200"}"#.to_owned(), 1.0),
        (r#"gatehouse_http_requests_total{route="preflight",method="OPTIONS",status="200"}"#.to_owned(), 1.0),
        (r#"gatehouse_http_request_duration_seconds_count{route="users"}"#.to_owned(), 8.0),
        (r#"gatehouse_http_request_duration_seconds_count{route="dead"}"#.to_owned(), 1.0),
        (format!(r#"gatehouse_gateway_upstream_response_duration_seconds_count{{upstream="{upstream}"}}"#), 2.0),
        (format!(r#"gatehouse_gateway_upstream_errors_total{{upstream="{upstream}",kind="connect"}}"#), 0.0),
        (r#"gatehouse_gateway_upstream_errors_total{upstream="http://127.0.0.1:1",kind="connect"}"#.to_owned(), 1.0),
        (r#"gatehouse_gateway_upstream_errors_total{upstream="http://127.0.0.1:1",kind="timeout"}"#.to_owned(), 0.0),
        (
            r#"gatehouse_gateway_upstream_response_duration_seconds_count{upstream="http://127.0.0.1:1"}"#.to_owned(),
            0.0,
        ),
        (format!(r#"gatehouse_gateway_upstream_errors_total{{upstream="{hangup_url}",kind="other"}}"#), 1.0),
        (format!(r#"gatehouse_gateway_upstream_errors_total{{upstream="{hangup_url}",kind="connect"}}"#), 0.0),
        (r#"gatehouse_http_requests_total{route="hangup",method="GET",status="502"}"#.to_owned(), 1.0),
        // Every routed request passes the per-IP limit first: all but the 404,
        // `/health` and the preflight.
        (r#"gatehouse_gateway_rate_limit_decisions_total{class="ip",outcome="allowed"}"#.to_owned(), 10.0),
        (r#"gatehouse_gateway_rate_limit_decisions_total{class="user",outcome="allowed"}"#.to_owned(), 2.0),
        (r#"gatehouse_gateway_rate_limit_decisions_total{class="user",outcome="limited"}"#.to_owned(), 2.0),
        (r#"gatehouse_gateway_rate_limit_decisions_total{class="auth_ip",outcome="allowed"}"#.to_owned(), 0.0),
        (r#"gatehouse_gateway_rate_limit_decisions_total{class="ip",outcome="error_fail_open"}"#.to_owned(), 0.0),
        (r#"gatehouse_gateway_token_failures_total{reason="expired"}"#.to_owned(), 1.0),
        (r#"gatehouse_gateway_token_failures_total{reason="bad_signature"}"#.to_owned(), 1.0),
        (r#"gatehouse_gateway_token_failures_total{reason="missing"}"#.to_owned(), 1.0),
        (r#"gatehouse_gateway_token_failures_total{reason="revoked"}"#.to_owned(), 0.0),
        (r#"gatehouse_gateway_token_failures_total{reason="unknown_kid"}"#.to_owned(), 0.0),
        // The first valid request, the expired and the forged token missed;
        // the valid token's later requests hit.
        (r#"gatehouse_gateway_token_cache_lookups_total{result="miss"}"#.to_owned(), 3.0),
        (r#"gatehouse_gateway_token_cache_lookups_total{result="hit"}"#.to_owned(), 4.0),
        (r#"gatehouse_gateway_csrf_failures_total{reason="missing_header"}"#.to_owned(), 1.0),
        (r#"gatehouse_gateway_csrf_failures_total{reason="mismatch"}"#.to_owned(), 0.0),
        // The fetch at start; nothing asked for another within the test.
        (r#"gatehouse_gateway_jwks_refreshes_total{outcome="ok"}"#.to_owned(), 1.0),
        (r#"gatehouse_gateway_jwks_refreshes_total{outcome="error"}"#.to_owned(), 0.0),
    ];
    for (series, value) in &expect {
        assert_eq!(sample(&text, series), Some(*value), "{series} in\n{text}");
    }
    assert!(sample(&text, "gatehouse_gateway_jwks_keys").is_some_and(|n| n >= 1.0), "{text}");
    assert!(!text.contains("route=\"/metrics\""), "scrapes are not counted: {text}");
    assert_eq!(sample(&again, r#"gatehouse_http_requests_total{route="users",method="GET",status="200"}"#), Some(2.0));
    assert!(!text.contains(&token) && !text.contains("usr_metrics"), "no credentials or user data in metrics");
}

/// The gateway's own 404 for a path no route serves.
fn assert_not_found(status: StatusCode, body: &str, what: &str) {
    assert_eq!(status, StatusCode::NOT_FOUND, "{what}: {body}");
    let body: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: not JSON: {body}"));
    assert_eq!(body, json!({"error": "Route not found", "path": "/metrics"}), "{what}");
}

#[tokio::test]
async fn metrics_are_refused_outside_the_allowed_networks_and_never_proxied() {
    // Arrange: a route table that claims `/metrics` for the recording
    // upstream, and a gateway that allows scrapes only from 10.0.0.0/8.
    let claim = |url: &str| {
        format!("[[route]]\nprefix = \"/metrics\"\nstrip_prefix = \"\"\nupstream = \"{url}\"\npublic = true\n")
    };
    let upstream = RecordingUpstream::spawn().await;
    let st = stack(&claim(&upstream.base_url), |c| c.metrics_allowed = vec!["10.0.0.0/8".parse().unwrap()]).await;
    let gw = &st.gateway;

    // Act
    let attempts = [
        ("GET", gw.client.get(gw.url("/metrics"))),
        ("POST", gw.client.post(gw.url("/metrics"))),
        ("GET with Origin", gw.client.get(gw.url("/metrics")).header("Origin", "http://localhost:3000")),
        ("GET claiming a 10/8 client", gw.client.get(gw.url("/metrics")).header("X-Forwarded-For", "10.1.2.3")),
    ];

    // Assert
    for (what, request) in attempts {
        let r = request.send().await.unwrap();
        let status = r.status();
        assert_not_found(status, &r.text().await.unwrap(), what);
    }
    assert_eq!(upstream.count() + st.upstream.count(), 0, "/metrics is never proxied");
    // The route still serves what is under its prefix.
    let r = gw.client.get(gw.url("/metrics/anything")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(upstream.last().uri, "/metrics/anything");
}

#[tokio::test]
async fn a_trusted_proxy_may_scrape_only_for_an_allowed_client() {
    // Arrange: loopback may scrape, and loopback is a trusted proxy, so a
    // request from it is judged by the client it forwards for too.
    let st = stack("", |c| c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let gw = &st.gateway;

    // Act
    let forwarded = gw.client.get(gw.url("/metrics")).header("X-Forwarded-For", "203.0.113.7").send().await.unwrap();
    let status = forwarded.status();
    let body = forwarded.text().await.unwrap();
    let own = st.scrape().await;

    // Assert
    assert_not_found(status, &body, "forwarded for an outside client");
    assert!(own.contains("gatehouse_http_requests_total"), "{own}");
    assert_eq!(
        sample(&own, r#"gatehouse_http_requests_total{route="unmatched",method="GET",status="404"}"#),
        Some(1.0),
        "a refused scrape counts as the 404 it looks like: {own}"
    );
}
