//! The gateway over real HTTP, in front of the real auth service and a
//! recording upstream that shows exactly what a service would receive.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{
    Backend, DEFAULT_PASSWORD, RecordingUpstream, TestApp, TestDatabase, TestGateway, spawn_default_auth,
    spawn_gateway, test_gateway_config, unique_email,
};
use tokens::assertion::Assertion;

struct Stack {
    auth: TestApp,
    gateway: TestGateway,
    upstream: RecordingUpstream,
    _db: TestDatabase,
}

async fn stack_with(adjust: impl FnOnce(&mut gateway::GatewayConfig)) -> Stack {
    let (auth, db) = spawn_default_auth(Backend::Sqlite).await;
    let upstream = RecordingUpstream::spawn().await;
    let mut config = test_gateway_config(&auth, &upstream.base_url);
    adjust(&mut config);
    let gateway = spawn_gateway(config).await;
    Stack { auth, gateway, upstream, _db: db }
}

async fn stack() -> Stack {
    stack_with(|_| {}).await
}

impl Stack {
    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.gateway.client.post(self.gateway.url(path)).json(&body).send().await.unwrap()
    }

    /// Registers and logs in through the gateway; returns the login body.
    async fn login(&self) -> Value {
        let email = unique_email("gw");
        let r = self
            .post("/api/v1/auth/register", json!({"email": email, "password": DEFAULT_PASSWORD, "name": "G"}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let r = self.post("/api/v1/auth/login", json!({"email": email, "password": DEFAULT_PASSWORD})).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_else(|| panic!("no {k} in {v}")).to_owned()
}

#[tokio::test]
async fn the_seed_walkthrough_works_through_the_gateway() {
    let st = stack().await;
    let health: Value = st.gateway.client.get(st.gateway.url("/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health, json!({"status": "healthy", "service": "api-gateway"}));
    assert_eq!(st.gateway.client.get(st.gateway.url("/ready")).send().await.unwrap().status(), StatusCode::OK);
    let login = st.login().await;
    let at = s(&login, "access_token");
    let r = st.gateway.client.get(st.gateway.url("/api/v1/auth/verify")).bearer_auth(&at).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(uuid::Uuid::parse_str(r.headers()["x-request-id"].to_str().unwrap()).is_ok());
    let r = st.post("/api/v1/auth/refresh", json!({"refresh_token": login["refresh_token"]})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let refreshed: Value = r.json().await.unwrap();
    let r = st.post("/api/v1/auth/logout", json!({"refresh_token": refreshed["refresh_token"]})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "Logged out successfully");
}

#[tokio::test]
async fn a_protected_request_reaches_the_upstream_with_a_signed_identity_and_no_credentials() {
    let st = stack().await;
    let login = st.login().await;
    let r = st
        .gateway
        .client
        .get(st.gateway.url("/api/v1/users/profile?tab=1"))
        .bearer_auth(s(&login, "access_token"))
        .header("Cookie", format!("csrf_token={}", s(&login, "csrf_token")))
        .header("X-Request-ID", "client-id-42")
        .header("X-Client-Request-ID", "spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("server").is_none(), "no upstream Server header");
    let gateway_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let seen = st.upstream.last();
    assert_eq!(seen.uri, "/users/profile?tab=1", "/api/v1 is stripped");
    let h = |n: &str| seen.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(h("x-user-id").as_deref(), login["user"]["id"].as_str());
    assert_eq!(h("x-user-email").as_deref(), login["user"]["email"].as_str());
    assert_eq!(h("x-request-id"), Some(gateway_id.clone()), "the gateway's id, not the client's");
    assert_eq!(h("x-client-request-id").as_deref(), Some("client-id-42"));
    for name in ["x-request-id", "x-client-request-id"] {
        assert_eq!(seen.headers.get_all(name).iter().count(), 1, "one {name}, the gateway's");
    }
    assert_eq!(h("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(h("x-forwarded-proto").as_deref(), Some("http"));
    assert!(h("authorization").is_none() && h("cookie").is_none(), "credentials stay at the gateway");
    // The assertion verifies under the gateway secret, per API.md.
    let ts: i64 = h("x-gateway-timestamp").unwrap().parse().unwrap();
    let assertion = Assertion {
        timestamp: ts,
        method: "GET",
        path_and_query: "/users/profile?tab=1",
        request_id: &gateway_id,
        user_id: login["user"]["id"].as_str().unwrap(),
        email: login["user"]["email"].as_str().unwrap(),
    };
    let secrets = &st.gateway.state.config().gateway_secrets;
    assert!(assertion.verify(&h("x-gateway-signature").unwrap(), secrets, ts).is_ok());
    // And a verifier written from API.md's text alone, in Python, accepts it.
    let script = r#"
import hmac, hashlib, sys
secret, ts, method, pq, rid, uid, email, header = sys.argv[1:]
m = "v1\n" + ts + "\n" + method + "\n" + pq + "\n" + rid + "\n" + uid + "\n" + email
want = hmac.new(secret.encode(), m.encode(), hashlib.sha256).hexdigest()
sys.exit(0 if any(hmac.compare_digest(v.strip()[3:], want) for v in header.split(",")) else 1)
"#;
    let secret = String::from_utf8(secrets[0].expose().to_vec()).unwrap();
    let status = std::process::Command::new("python3")
        .args(["-c", script, &secret, &ts.to_string(), "GET", "/users/profile?tab=1", &gateway_id])
        .args([assertion.user_id, assertion.email, &h("x-gateway-signature").unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_an_upstream() {
    let st = stack().await;
    let login = st.login().await;
    let spoof = |rb: reqwest::RequestBuilder| {
        rb.header("X-User-ID", "admin")
            .header("X-User-Email", "admin@evil.example")
            .header("X-Gateway-Signature", "v1=00")
            .header("X-Gateway-Timestamp", "1")
            .header("X-Forwarded-For", "6.6.6.6")
            .header("Forwarded", "for=6.6.6.6")
    };
    let r =
        spoof(st.gateway.client.get(st.gateway.url("/api/v1/users/profile")).bearer_auth(s(&login, "access_token")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let seen = st.upstream.last();
    assert_eq!(seen.headers["x-user-id"], login["user"]["id"].as_str().unwrap());
    assert_eq!(seen.headers.get_all("x-user-id").iter().count(), 1);
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert!(seen.headers.get("forwarded").is_none());
    // Without a token nothing is forwarded at all.
    let before = st.upstream.count();
    let r = spoof(st.gateway.client.get(st.gateway.url("/api/v1/users/profile"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(st.upstream.count(), before);
}

#[tokio::test]
async fn spoofed_identity_headers_are_stripped_on_public_routes_too() {
    // Route the public auth prefix to the recording upstream to see what it gets.
    let st = stack().await;
    let upstream = &st.upstream;
    let routes = gateway::routes::RouteTable::from_toml(&format!(
        "[[route]]\nprefix = \"/api/v1/auth\"\nupstream = \"{}\"\npublic = true\nforward_credentials = true\n",
        upstream.base_url
    ))
    .unwrap();
    let mut config = test_gateway_config(&st.auth, &upstream.base_url);
    config.routes = routes;
    let gw = spawn_gateway(config).await;
    let r = gw
        .client
        .post(gw.url("/api/v1/auth/login"))
        .header("X-User-ID", "admin")
        .header("X-Gateway-Signature", "v1=00")
        .header("Authorization", "Bearer abc")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let seen = upstream.last();
    assert!(seen.headers.get("x-user-id").is_none() && seen.headers.get("x-gateway-signature").is_none());
    assert_eq!(seen.headers["authorization"], "Bearer abc", "the auth route keeps credentials");
}

#[tokio::test]
async fn bad_or_missing_tokens_get_the_seed_messages() {
    let st = stack().await;
    let login = st.login().await;
    let get = |auth: Option<String>| {
        let mut rb = st.gateway.client.get(st.gateway.url("/api/v1/users/profile"));
        if let Some(a) = auth {
            rb = rb.header("Authorization", a);
        }
        rb.send()
    };
    let cases = [
        (None, "Authorization header missing"),
        (Some("Basic abc".to_owned()), "Invalid authorization header format. Expected: Bearer <token>"),
        (Some("Bearer".to_owned()), "Invalid authorization header format. Expected: Bearer <token>"),
        (Some("Bearer a.b.c".to_owned()), "Invalid or expired token"),
        (Some(format!("Bearer {}", s(&login, "refresh_token"))), "Invalid or expired token"),
        (Some(format!("Bearer {}", s(&login, "csrf_token"))), "Invalid or expired token"),
    ];
    for (auth, message) in cases {
        let r = get(auth.clone()).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], message, "{auth:?}");
    }
    assert_eq!(st.upstream.count(), 0);
}

#[tokio::test]
async fn state_changing_requests_need_a_session_bound_csrf_pair() {
    let st = stack().await;
    let login = st.login().await;
    let other = st.login().await;
    let (at, csrf) = (s(&login, "access_token"), s(&login, "csrf_token"));
    let put = |header: Option<&str>, cookie: Option<&str>| {
        let mut rb =
            st.gateway.client.put(st.gateway.url("/api/v1/users/profile")).bearer_auth(&at).json(&json!({"name": "N"}));
        if let Some(h) = header {
            rb = rb.header("X-CSRF-Token", h);
        }
        if let Some(c) = cookie {
            rb = rb.header("Cookie", format!("csrf_token={c}"));
        }
        rb.send()
    };
    let foreign = s(&other, "csrf_token");
    let cases = [
        (None, Some(csrf.as_str()), "CSRF token missing in header"),
        (Some(csrf.as_str()), None, "CSRF token missing in cookie"),
        (Some(csrf.as_str()), Some("different"), "CSRF token mismatch"),
        (Some(foreign.as_str()), Some(foreign.as_str()), "CSRF token mismatch"),
    ];
    for (header, cookie, message) in cases {
        let r = put(header, cookie).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{message}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], message);
        assert!(body["hint"].is_string());
    }
    assert_eq!(st.upstream.count(), 0);
    assert_eq!(put(Some(&csrf), Some(&csrf)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(st.upstream.last().method, "PUT");
    // Fetch Metadata and Origin refuse cross-site requests even with the pair.
    let cross = st
        .gateway
        .client
        .delete(st.gateway.url("/api/v1/users/account"))
        .bearer_auth(&at)
        .header("X-CSRF-Token", &csrf)
        .header("Cookie", format!("csrf_token={csrf}"))
        .header("Sec-Fetch-Site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    let evil = st
        .gateway
        .client
        .delete(st.gateway.url("/api/v1/users/account"))
        .bearer_auth(&at)
        .header("X-CSRF-Token", &csrf)
        .header("Cookie", format!("csrf_token={csrf}"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn cors_is_answered_at_the_edge_for_allowed_origins_only() {
    let st = stack().await;
    let preflight = |origin: &str| {
        st.gateway
            .client
            .request(reqwest::Method::OPTIONS, st.gateway.url("/api/v1/users/profile"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "PUT")
            .header("Access-Control-Request-Headers", "x-csrf-token, authorization")
            .send()
    };
    let ok = preflight("http://localhost:3000").await.unwrap();
    assert!(ok.status().is_success());
    assert_eq!(ok.headers()["access-control-allow-origin"], "http://localhost:3000");
    assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
    let allowed = ok.headers()["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    assert!(allowed.contains("x-csrf-token") && allowed.contains("authorization"), "{allowed}");
    assert!(ok.headers().get_all("vary").iter().any(|v| v.to_str().unwrap().to_lowercase().contains("origin")));
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());
    assert_eq!(st.upstream.count(), 0, "preflights are never forwarded");
    // An upstream's own CORS headers are dropped.
    let login = st.login().await;
    let r = st
        .gateway
        .client
        .get(st.gateway.url("/api/v1/users/profile"))
        .bearer_auth(s(&login, "access_token"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

/// Sends raw bytes and returns the status code of the reply.
async fn raw_status(base: &str, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn traversal_encoding_and_framing_tricks_are_refused() {
    let st = stack().await;
    let login = st.login().await;
    let at = s(&login, "access_token");
    for path in [
        "/api/v1/users/../auth/login",
        "/api/v1/users/%2e%2e/auth/login",
        "/api/v1/users%2fprofile",
        "/api/v1/users%5cprofile",
        "/api/v1//users/profile",
        "/api/v1/users/%00",
    ] {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {at}\r\nConnection: close\r\n\r\n");
        let status = raw_status(&st.gateway.base_url, &request).await;
        assert!(status == 400 || status == 404, "{path}: {status}");
    }
    let both = "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n";
    assert_eq!(raw_status(&st.gateway.base_url, both).await, 400);
    let r = st
        .gateway
        .client
        .request(reqwest::Method::TRACE, st.gateway.url("/api/v1/users/profile"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let r = st
        .gateway
        .client
        .post(st.gateway.url("/api/v1/users/profile"))
        .header("X-HTTP-Method-Override", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = st.gateway.client.get(st.gateway.url("/api/v1/nothing/here")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"error": "Route not found", "path": "/api/v1/nothing/here"}));
    assert_eq!(st.upstream.count(), 0, "none of these reached an upstream");
}

#[tokio::test]
async fn request_bodies_are_capped() {
    let st = stack_with(|c| c.body_limit = 1024).await;
    let login = st.login().await;
    let send = |body: reqwest::Body| {
        st.gateway
            .client
            .post(st.gateway.url("/api/v1/payments"))
            .bearer_auth(s(&login, "access_token"))
            .header("X-CSRF-Token", s(&login, "csrf_token"))
            .header("Cookie", format!("csrf_token={}", s(&login, "csrf_token")))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(send(vec![b' '; 2048].into()).await.unwrap().status(), StatusCode::PAYLOAD_TOO_LARGE);
    let streamed = testkit::status_for_streamed_body(|| {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..8).map(|_| Ok(vec![b' '; 512])).collect();
        send(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
    })
    .await;
    assert_eq!(streamed, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(send(b"{}".to_vec().into()).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn an_upstream_down_is_502_and_a_slow_one_504_without_leaking_addresses() {
    let st = stack().await;
    let login = st.login().await;
    let at = s(&login, "access_token");
    let r = st.gateway.client.get(st.gateway.url("/api/v1/users/slow")).bearer_auth(&at).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    let mut config = test_gateway_config(&st.auth, "http://127.0.0.1:1");
    config.connect_timeout = std::time::Duration::from_millis(300);
    let down = spawn_gateway(config).await;
    let r = down.client.get(down.url("/api/v1/users/profile")).bearer_auth(&at).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let body = r.text().await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"error": "Service unavailable"}));
    assert!(!body.contains("127.0.0.1") && !body.contains("refused"));
}

#[tokio::test]
async fn over_the_limit_clients_get_429_with_retry_after() {
    let st = stack_with(|c| c.ip_quota = gateway::rate_limit::Quota { per_minute: 60, burst: 3 }).await;
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let r = st.gateway.client.get(st.gateway.url("/api/v1/users/profile")).send().await.unwrap();
        statuses.push(r.status().as_u16());
        last = Some(r);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2, "{statuses:?}");
    let last = last.unwrap();
    assert!(last.headers().contains_key("retry-after"));
    assert_eq!(last.headers()["ratelimit-remaining"], "0");
    assert_eq!(last.json::<Value>().await.unwrap()["error"], "Rate limit exceeded");
}

/// Polls `f` until it returns true or `within` passes; returns the time it took.
async fn eventually(within: std::time::Duration, mut f: impl AsyncFnMut() -> bool) -> Option<std::time::Duration> {
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        if f().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test]
async fn a_logout_reaches_the_gateway_within_five_seconds() {
    revocations_reach_the_gateway_within_five_seconds(stack().await).await;
}

#[tokio::test]
async fn a_logout_reaches_a_gateway_on_redis_within_five_seconds() {
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let st = stack_with(|c| {
        c.redis_url = Some(redis_url());
        c.redis_prefix = prefix;
    })
    .await;
    revocations_reach_the_gateway_within_five_seconds(st).await;
}

async fn revocations_reach_the_gateway_within_five_seconds(st: Stack) {
    for end in ["logout", "logout-all", "password"] {
        let login = st.login().await;
        let at = s(&login, "access_token");
        let profile = || st.gateway.client.get(st.gateway.url("/api/v1/users/profile")).bearer_auth(&at).send();
        assert_eq!(profile().await.unwrap().status(), StatusCode::OK);
        let r = match end {
            "logout" => st.post("/api/v1/auth/logout", json!({"refresh_token": login["refresh_token"]})).await,
            "logout-all" => {
                st.gateway.client.post(st.gateway.url("/api/v1/auth/logout-all")).bearer_auth(&at).send().await.unwrap()
            }
            _ => {
                // A password change ends the *other* sessions: use a second one.
                let email = login["user"]["email"].as_str().unwrap();
                let other: Value = st
                    .post("/api/v1/auth/login", json!({"email": email, "password": DEFAULT_PASSWORD}))
                    .await
                    .json()
                    .await
                    .unwrap();
                st.gateway
                    .client
                    .post(st.gateway.url("/api/v1/auth/password"))
                    .bearer_auth(s(&other, "access_token"))
                    .json(&json!({"current_password": DEFAULT_PASSWORD, "new_password": "another long passphrase"}))
                    .send()
                    .await
                    .unwrap()
            }
        };
        assert_eq!(r.status(), StatusCode::OK, "{end}");
        let took = eventually(std::time::Duration::from_secs(5), async || {
            profile().await.unwrap().status() == StatusCode::UNAUTHORIZED
        })
        .await;
        assert!(took.is_some(), "{end}: the revoked session's token still works after 5 s");
    }
}

#[tokio::test]
async fn a_gateway_that_cannot_learn_revocations_fails_closed_unless_told_otherwise() {
    let st = stack().await;
    let login = st.login().await;
    let at = s(&login, "access_token");
    for fail_open in [false, true] {
        let mut config = test_gateway_config(&st.auth, &st.upstream.base_url);
        if let Some(r) = config.revocation.as_mut() {
            r.feed_url = "http://127.0.0.1:1/internal/revocations".parse().unwrap();
            r.fail_open = fail_open;
        }
        let gw = spawn_gateway(config).await;
        let r = gw.client.get(gw.url("/api/v1/users/profile")).bearer_auth(&at).send().await.unwrap();
        let ready = gw.client.get(gw.url("/ready")).send().await.unwrap();
        if fail_open {
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(ready.status(), StatusCode::OK);
        } else {
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Two gateways on one Redis share one budget per client: what one allowed,
/// the other counts.
#[tokio::test]
async fn two_gateways_on_one_redis_share_the_rate_limit() {
    let st = stack().await;
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let gateway = |prefix: String| {
        let mut config = test_gateway_config(&st.auth, &st.upstream.base_url);
        config.redis_url = Some(redis_url());
        config.redis_prefix = prefix;
        config.ip_quota = gateway::rate_limit::Quota { per_minute: 60, burst: 6 };
        spawn_gateway(config)
    };
    let (a, b) = (gateway(prefix.clone()).await, gateway(prefix).await);
    let mut allowed = 0;
    for i in 0..12 {
        let gw = if i % 2 == 0 { &a } else { &b };
        // A protected route without a token: 401 means the limit let it through.
        let r = gw.client.get(gw.url("/api/v1/users/profile")).send().await.unwrap();
        if r.status() == StatusCode::UNAUTHORIZED {
            allowed += 1;
        } else {
            assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        }
    }
    assert_eq!(allowed, 6, "the burst is shared, not doubled");
}

/// Redis down: the auth routes fail closed (503), protected routes fail open.
#[tokio::test]
async fn with_redis_down_each_route_takes_its_fail_mode() {
    let st = stack().await;
    let login = st.login().await;
    let mut config = test_gateway_config(&st.auth, &st.upstream.base_url);
    config.redis_url = Some("redis://127.0.0.1:1".to_owned());
    let gw = spawn_gateway(config).await;
    let r = gw
        .client
        .post(gw.url("/api/v1/auth/login"))
        .json(&json!({"email": "a@b.io", "password": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "login fails closed");
    let r = gw.client.get(gw.url("/api/v1/users/profile")).bearer_auth(s(&login, "access_token")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "protected routes fail open");
    assert_eq!(gw.client.get(gw.url("/ready")).send().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// A JWKS endpoint whose key set the test changes, as a key rotation would.
async fn spawn_jwks(set: std::sync::Arc<std::sync::Mutex<jsonwebtoken::jwk::JwkSet>>) -> String {
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let set = set.clone();
            async move { axum::Json(set.lock().unwrap().clone()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/.well-known/jwks.json")
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_without_restart_and_junk_kids_cannot_force_refetches() {
    use std::sync::Arc;
    use tokens::{AccessTokenIssuer, Algorithm, SigningKey};
    let st = stack().await;
    let key = |_: u8| {
        Arc::new(
            SigningKey::from_pem(Algorithm::EdDsa, SigningKey::generate_pem(Algorithm::EdDsa).unwrap().as_bytes())
                .unwrap(),
        )
    };
    let (old, new) = (key(0), key(1));
    let set = Arc::new(std::sync::Mutex::new(tokens::keys::jwks([old.as_ref()])));
    let url = spawn_jwks(Arc::clone(&set)).await;
    let mut config = test_gateway_config(&st.auth, &st.upstream.base_url);
    config.keys = gateway::keys::KeySourceConfig::Jwks {
        url: url.parse().unwrap(),
        min_refetch_interval: std::time::Duration::from_secs(1),
    };
    config.revocation = None;
    let gw = spawn_gateway(config).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let token = |k: &Arc<SigningKey>| {
        AccessTokenIssuer::new(Arc::clone(k), "gatehouse", "gatehouse", 900)
            .issue("u1", "u1@example.com", "s1", now)
            .unwrap()
            .0
    };
    let get = |t: String| gw.client.get(gw.url("/api/v1/users/profile")).bearer_auth(t).send();
    assert_eq!(get(token(&old)).await.unwrap().status(), StatusCode::OK);
    let fetches = gw.state.keys().fetch_count();
    // Not published yet: refused after one refetch (once the start-up fetch is
    // older than the minimum interval).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(get(token(&new)).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(gw.state.keys().fetch_count(), fetches + 1);
    // A burst of tokens with unknown kids cannot make it refetch again within the interval.
    for _ in 0..10 {
        assert_eq!(get(token(&key(2))).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(gw.state.keys().fetch_count(), fetches + 1, "refetches are throttled");
    // The auth service publishes the new key; the gateway picks it up on the next unknown kid.
    *set.lock().unwrap() = tokens::keys::jwks([old.as_ref(), new.as_ref()]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(get(token(&new)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(get(token(&old)).await.unwrap().status(), StatusCode::OK, "the old key stays valid while published");
    // Retiring the old key: once the gateway refetches, its tokens are refused
    // even though they were verified (and cached) before.
    let old_token = token(&old);
    assert_eq!(get(old_token.clone()).await.unwrap().status(), StatusCode::OK);
    *set.lock().unwrap() = tokens::keys::jwks([new.as_ref()]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(get(token(&key(3))).await.unwrap().status(), StatusCode::UNAUTHORIZED, "triggers a refetch");
    assert_eq!(get(old_token).await.unwrap().status(), StatusCode::UNAUTHORIZED, "the cache was dropped with the key");
}

#[tokio::test]
async fn login_register_and_refresh_have_a_tighter_per_ip_limit() {
    let st = stack_with(|c| c.auth_ip_quota = gateway::rate_limit::Quota { per_minute: 60, burst: 2 }).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            st.post("/api/v1/auth/login", json!({"email": "x@example.com", "password": "whatever1"})).await.status(),
        );
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // Other auth routes share that budget; the JWKS and verify routes do not.
    let r = st.post("/api/v1/auth/refresh", json!({"refresh_token": "x"})).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let r = st.gateway.client.get(st.gateway.url("/api/v1/auth/verify")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn mfa_password_reset_and_email_routes_share_the_tighter_per_ip_limit() {
    let st = stack_with(|c| c.auth_ip_quota = gateway::rate_limit::Quota { per_minute: 1, burst: 1 }).await;
    let r = st.post("/api/v1/auth/login", json!({"email": "x@example.com", "password": "whatever1"})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "the one request of the burst");
    // Without the tighter limit each would answer 202, 400 or 401.
    let token = "A".repeat(43);
    for (path, body) in [
        ("/api/v1/auth/mfa/verify", json!({"mfa_token": "x", "code": "123456"})),
        ("/api/v1/auth/password/forgot", json!({"email": "x@example.com"})),
        ("/api/v1/auth/password/reset", json!({"token": token, "password": "a new passphrase"})),
        ("/api/v1/auth/email/verify", json!({"token": token})),
        ("/api/v1/auth/email/resend", json!({"email": "x@example.com"})),
    ] {
        assert_eq!(st.post(path, body).await.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
    }
}

/// With the auth service and the gateway on one Redis, a revocation applies
/// on the very next request, even with the feed out of the picture.
#[tokio::test]
async fn revocations_announced_in_redis_apply_on_the_next_request() {
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let db = TestDatabase::new(Backend::Sqlite).await;
    let mut auth_config = testkit::test_auth_config(db.target.clone());
    auth_config.redis = Some((redis_url(), prefix.clone()));
    let auth = testkit::spawn_auth(auth_config).await;
    let upstream = RecordingUpstream::spawn().await;
    let mut config = test_gateway_config(&auth, &upstream.base_url);
    config.redis_url = Some(redis_url());
    config.redis_prefix = prefix;
    config.revocation = None;
    let gw = spawn_gateway(config).await;
    let login = auth.signed_in_user(&unique_email("redis-rev")).await;
    let at = s(&login, "access_token");
    let profile = || gw.client.get(gw.url("/api/v1/users/profile")).bearer_auth(&at).send();
    assert_eq!(profile().await.unwrap().status(), StatusCode::OK);
    let r = auth.post_json("/auth/logout", &json!({"refresh_token": login["refresh_token"]})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(profile().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}
