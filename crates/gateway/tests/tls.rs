//! The gateway and TLS, over real sockets with certificates the test makes:
//! https upstreams (and the auth service's JWKS and revocation feed over
//! https) trusted through the upstream roots (`UPSTREAM_CA`), untrusted ones
//! refused with a bare 502, and HSTS and `X-Forwarded-Proto: https` exactly
//! when the gateway itself serves HTTPS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use common_http::serve::{Listener, ServedOverTls};
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::tls::{CertFiles, TestCa};
use testkit::{
    Backend, DEFAULT_PASSWORD, RecordingUpstream, TestApp, TestDatabase, spawn_default_auth, test_gateway_config,
    unique_email,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const HSTS: &str = "max-age=63072000; includeSubDomains";

/// Binds `127.0.0.1:0`, over TLS with `tls` when given.
async fn listen(tls: Option<&CertFiles>) -> (Listener, SocketAddr) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = match tls {
        Some(files) => Listener::tls(tcp, files.server_tls()),
        None => Listener::plain(tcp),
    };
    (listener, addr)
}

/// An upstream served over HTTPS with `cert`, answering every request with
/// what it received; the headers of each request are kept.
struct HttpsUpstream {
    url: String,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

async fn https_upstream(cert: &CertFiles, host: &str) -> HttpsUpstream {
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let log = Arc::clone(&seen);
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let log = Arc::clone(&log);
        async move {
            log.lock().unwrap().push(request.headers().clone());
            let tls = request.extensions().get::<ServedOverTls>().is_some();
            axum::Json(json!({"upstream": "https", "tls": tls, "path": request.uri().path()}))
        }
    });
    let (listener, addr) = listen(Some(cert)).await;
    tokio::spawn(common_http::serve::serve(listener, app, CancellationToken::new()));
    HttpsUpstream { url: format!("https://{host}:{}", addr.port()), seen }
}

/// The auth service on a fresh SQLite database, served over HTTPS with
/// `cert` at `https://127.0.0.1:port` (the certificate names the address).
async fn https_auth(ca: &TestCa, cert: &CertFiles) -> (TestApp, TestDatabase) {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let state = auth_service::build_state(testkit::test_auth_config(db.target.clone())).await.unwrap();
    let (listener, addr) = listen(Some(cert)).await;
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(auth_service::serve(state.clone(), listener, shutdown.clone()));
    let app = TestApp { addr, base_url: format!("https://{addr}"), client: ca.client(), state, shutdown, handle };
    (app, db)
}

/// The gateway over `config`, served over HTTPS when `tls` is given; its
/// base URL (`https://localhost:port` or `http://127.0.0.1:port`).
async fn gateway(config: gateway::GatewayConfig, tls: Option<&CertFiles>) -> String {
    let state = gateway::build_state(config).await.unwrap();
    let (listener, addr) = listen(tls).await;
    tokio::spawn(gateway::serve(state, listener, CancellationToken::new()));
    match tls {
        Some(_) => format!("https://localhost:{}", addr.port()),
        None => format!("http://{addr}"),
    }
}

/// Registers and logs in through the gateway at `base`; the login body.
async fn sign_up_and_in(client: &reqwest::Client, base: &str) -> Value {
    let email = unique_email("tls");
    let body = json!({"email": email, "password": DEFAULT_PASSWORD, "name": "T"});
    let r = client.post(format!("{base}/api/v1/auth/register")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body = json!({"email": email, "password": DEFAULT_PASSWORD});
    let r = client.post(format!("{base}/api/v1/auth/login")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test]
async fn the_gateway_reaches_https_services_whose_certificates_chain_to_its_upstream_roots() {
    // Arrange: the auth service (JWKS, revocation feed, login) and the user
    // service's upstream both on HTTPS, with certificates of a private CA.
    let ca = TestCa::new("upstream CA");
    let (auth, _db) = https_auth(&ca, &ca.issue_localhost()).await;
    let upstream = https_upstream(&ca.issue(&["localhost"]), "localhost").await;
    let mut config = test_gateway_config(&auth, &upstream.url);
    config.upstream_roots = ca.roots();

    // Act
    let base = gateway(config, None).await;
    let client = reqwest::Client::new();
    let ready = client.get(format!("{base}/ready")).send().await.unwrap();
    let login = sign_up_and_in(&client, &base).await;
    let profile = client
        .get(format!("{base}/api/v1/users/profile"))
        .bearer_auth(login["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();

    // Assert: keys and revocation feed loaded over https, the request proxied over TLS.
    assert_eq!(ready.status(), StatusCode::OK, "{}", ready.text().await.unwrap());
    assert_eq!(profile.status(), StatusCode::OK);
    assert!(profile.headers().get("strict-transport-security").is_none(), "no HSTS over plain HTTP");
    let body: Value = profile.json().await.unwrap();
    assert_eq!(body, json!({"upstream": "https", "tls": true, "path": "/users/profile"}));
    let seen = upstream.seen.lock().unwrap().last().cloned().unwrap();
    let port = upstream.url.rsplit(':').next().unwrap();
    assert_eq!(seen["host"], format!("localhost:{port}").as_str());
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert!(seen.contains_key("x-gateway-signature"), "the signed identity went along: {seen:?}");
}

#[tokio::test]
async fn an_upstream_the_gateway_does_not_trust_is_a_bare_502() {
    // Arrange: one upstream signed by another CA, one signed by the trusted
    // CA for another name, and a gateway trusting only the first CA; and a
    // gateway with the default (public) roots, which trust neither.
    let ca = TestCa::new("trusted CA");
    let rogue = TestCa::new("rogue CA");
    let (auth, _db) = spawn_default_auth(Backend::Sqlite).await;
    let untrusted = https_upstream(&rogue.issue(&["localhost"]), "localhost").await;
    let misnamed = https_upstream(&ca.issue(&["other.example"]), "localhost").await;
    let trusted = https_upstream(&ca.issue(&["localhost"]), "localhost").await;
    let mut config = test_gateway_config(&auth, &untrusted.url);
    config.routes = gateway::routes::RouteTable::from_toml(&format!(
        "[[route]]\nprefix = \"/api/v1/untrusted\"\nupstream = \"{}\"\npublic = true\n\
         [[route]]\nprefix = \"/api/v1/misnamed\"\nupstream = \"{}\"\npublic = true\n\
         [[route]]\nprefix = \"/api/v1/trusted\"\nupstream = \"{}\"\npublic = true\n",
        untrusted.url, misnamed.url, trusted.url
    ))
    .unwrap();
    let public_roots = gateway(config.clone(), None).await;
    config.upstream_roots = ca.roots();
    let private_roots = gateway(config, None).await;
    let client = reqwest::Client::new();

    for (base, path, expected) in [
        (&private_roots, "/api/v1/trusted/x", StatusCode::OK),
        (&private_roots, "/api/v1/untrusted/x", StatusCode::BAD_GATEWAY),
        (&private_roots, "/api/v1/misnamed/x", StatusCode::BAD_GATEWAY),
        (&public_roots, "/api/v1/trusted/x", StatusCode::BAD_GATEWAY),
    ] {
        // Act
        let r = client.get(format!("{base}{path}")).send().await.unwrap();

        // Assert
        assert_eq!(r.status(), expected, "{base}{path}");
        if expected == StatusCode::BAD_GATEWAY {
            let body = r.text().await.unwrap();
            assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"error": "Service unavailable"}));
        }
    }
    assert!(untrusted.seen.lock().unwrap().is_empty(), "nothing was sent to the untrusted upstream");
    assert!(misnamed.seen.lock().unwrap().is_empty(), "nothing was sent to the misnamed upstream");
}

/// What a gateway at `base` answers, as (what, HSTS header) pairs: its own
/// routes, its 404, a CORS preflight, and a proxied login.
async fn hsts_of_each_kind_of_response(client: &reqwest::Client, base: &str) -> Vec<(&'static str, Option<String>)> {
    let hsts =
        |r: &reqwest::Response| r.headers().get("strict-transport-security").map(|v| v.to_str().unwrap().to_owned());
    let mut seen = Vec::new();
    let r = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    seen.push(("/health", hsts(&r)));
    let r = client.get(format!("{base}/api/v1/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    seen.push(("404", hsts(&r)));
    let r = client
        .request(reqwest::Method::OPTIONS, format!("{base}/api/v1/users/profile"))
        .header("Origin", "http://localhost:3000")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    seen.push(("preflight", hsts(&r)));
    let login = sign_up_and_in(client, base).await;
    let r = client
        .get(format!("{base}/api/v1/users/profile"))
        .bearer_auth(login["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    seen.push(("proxied", hsts(&r)));
    seen
}

#[tokio::test]
async fn hsts_and_forwarded_proto_https_exactly_when_the_gateway_serves_https() {
    // Arrange: the same stack behind a gateway on HTTPS and one on HTTP.
    let ca = TestCa::new("edge CA");
    let (auth, _db) = spawn_default_auth(Backend::Sqlite).await;
    let upstream = RecordingUpstream::spawn().await;
    let https = gateway(test_gateway_config(&auth, &upstream.base_url), Some(&ca.issue_localhost())).await;
    let http = gateway(test_gateway_config(&auth, &upstream.base_url), None).await;

    // Act / Assert: over HTTPS, every kind of response carries HSTS…
    for (what, hsts) in hsts_of_each_kind_of_response(&ca.client(), &https).await {
        assert_eq!(hsts.as_deref(), Some(HSTS), "{what} over HTTPS");
    }
    assert_eq!(upstream.last().headers["x-forwarded-proto"], "https");
    // …and over plain HTTP none does.
    for (what, hsts) in hsts_of_each_kind_of_response(&reqwest::Client::new(), &http).await {
        assert_eq!(hsts, None, "{what} over HTTP");
    }
    assert_eq!(upstream.last().headers["x-forwarded-proto"], "http");
}
