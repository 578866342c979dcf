//! The real `gatehouse` binary, started as a user would start it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::{DEFAULT_PASSWORD, TestDatabase, postgres_base_url, unique_email};

mod support;

use support::{Running, StackPorts, free_ports, gatehouse, sign_up_and_in, sigterm, wait_exit, wait_ready};

/// The README's curl walkthrough, against `gatehouse up` in an empty directory.
#[tokio::test]
async fn up_serves_the_readme_walkthrough_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let stack = StackPorts::new();
    let env = stack.env();
    let ports: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (port, gw_port, users_port) = (stack.auth, stack.gateway, stack.users);
    let mut child = Running(gatehouse(&["up"], &ports, dir.path()).spawn().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    let gw = format!("http://127.0.0.1:{gw_port}");
    wait_ready(&gw).await;
    let client = reqwest::Client::new();
    let email = unique_email("walk");

    let login = sign_up_and_in(&client, &base, &base, &email).await;
    let at = login["access_token"].as_str().unwrap();
    let r = client.get(format!("{base}/auth/verify")).bearer_auth(at).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("{base}/auth/refresh"))
        .json(&json!({"refresh_token": login["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let refreshed: Value = r.json().await.unwrap();
    let r = client
        .post(format!("{base}/auth/logout"))
        .json(&json!({"refresh_token": refreshed["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let jwks: Value = client.get(format!("{base}/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "RSA", "RS256 is the default");

    // The same through the gateway, with /api/v1, on to the user service.
    let r = client
        .post(format!("{gw}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": DEFAULT_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let via_gateway: Value = r.json().await.unwrap();
    let at = via_gateway["access_token"].as_str().unwrap();
    let r = client.get(format!("{gw}/api/v1/users/profile")).send().await.unwrap();
    assert_eq!(r.status(), 401, "gateway checks apply");
    let r = client.get(format!("{gw}/api/v1/users/profile")).bearer_auth(at).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let profile: Value = r.json().await.unwrap();
    assert_eq!(profile["user"]["email"], email);
    let csrf = via_gateway["csrf_token"].as_str().unwrap();
    let r = client
        .put(format!("{gw}/api/v1/users/profile"))
        .bearer_auth(at)
        .header("X-CSRF-Token", csrf)
        .header("Cookie", format!("csrf_token={csrf}"))
        .json(&json!({"name": "Alice B."}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The user service refuses a direct, unsigned call.
    let r = client
        .get(format!("http://127.0.0.1:{users_port}/users/profile"))
        .header("X-User-ID", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(format!("{gw}/api/v1/auth/logout"))
        .json(&json!({"refresh_token": via_gateway["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut refused = false;
    for _ in 0..50 {
        let r = client.get(format!("{gw}/api/v1/users/profile")).bearer_auth(at).send().await.unwrap();
        if r.status() == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the logged-out token is refused at the gateway within 5 s");

    // Generated development keys and the SQLite file live under ./data.
    for path in [
        "data/gatehouse.db",
        "data/keys/jwt-rs256.pem",
        "data/secrets/csrf_secret",
        "data/secrets/refresh_token_secret",
    ] {
        assert!(dir.path().join(path).exists(), "{path}");
    }
    sigterm(&child.0);
    let status = wait_exit(&mut child.0, Duration::from_secs(15));
    assert!(status.success(), "{status:?}");

    // A restart keeps the users and the key: the old access token still verifies.
    let mut again = Running(gatehouse(&["up"], &ports, dir.path()).spawn().unwrap());
    wait_ready(&base).await;
    let r = client
        .post(format!("{base}/auth/login"))
        .json(&json!({"email": email, "password": DEFAULT_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let jwks2: Value = client.get(format!("{base}/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks, jwks2);
    sigterm(&again.0);
    assert!(wait_exit(&mut again.0, Duration::from_secs(15)).success());
}

/// Production refuses to start on a weak or missing secret, with one line
/// naming the variable, and never prints the secret.
#[test]
fn production_refuses_weak_configuration_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("JWT_ALGORITHM", "HS256")], "JWT_SECRET"),
        (
            &[("JWT_ALGORITHM", "HS256"), ("JWT_SECRET", "your-super-secret-jwt-key-change-this-in-production")],
            "JWT_SECRET",
        ),
        (&[("JWT_ALGORITHM", "HS256"), ("JWT_SECRET", "short-secret")], "JWT_SECRET"),
        (&[("JWT_ALGORITHM", "RS256")], "JWT_PRIVATE_KEY_FILE"),
    ];
    for (env, var) in cases {
        let env = [env, &[("ENVIRONMENT", "production"), ("PORT", "0")]].concat();
        let out = gatehouse(&["auth"], &env, dir.path()).stdin(Stdio::null()).output().unwrap();
        assert!(!out.status.success(), "{env:?} must not start");
        let stderr = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains(&format!("set {var}")), "{stderr}");
        assert!(!stderr.contains("your-super-secret") && !stderr.contains("short-secret"), "{stderr}");
    }
    let placeholder = [
        ("ENVIRONMENT", "production"),
        ("JWT_ALGORITHM", "HS256"),
        ("JWT_SECRET", "0123456789abcdef0123456789abcdef0123"),
        ("GATEWAY_SECRET", "default-gateway-secret-change-in-production"),
    ];
    let out = gatehouse(&["auth"], &placeholder, dir.path()).output().unwrap();
    assert!(String::from_utf8(out.stderr).unwrap().contains("set GATEWAY_SECRET"));
    assert!(!dir.path().join("data").exists(), "production generates nothing");
}

/// `migrate` applies the schema to PostgreSQL; two `gatehouse auth`
/// processes on that database then race refreshes of one token, and at most
/// one wins.
#[tokio::test]
async fn two_auth_processes_on_postgres_rotate_refresh_tokens_atomically() {
    let db = TestDatabase::new(testkit::Backend::Postgres).await;
    let schema = db.schema.clone().unwrap();
    let url = format!("{}?options=-c%20search_path%3D{schema}", postgres_base_url());
    let dir = tempfile::tempdir().unwrap();
    let secret = "0123456789abcdef0123456789abcdef-test-only";
    let [p1, p2] = free_ports(2)[..] else { unreachable!("free_ports(2) gives two ports") };
    let (p1, p2) = (p1.to_string(), p2.to_string());
    let env = |port: &str| {
        vec![
            ("ENVIRONMENT", "production"),
            ("DATABASE_URL", url.as_str()),
            ("JWT_ALGORITHM", "HS256"),
            ("JWT_SECRET", secret),
            ("CSRF_SECRET", secret),
            ("REFRESH_TOKEN_SECRET", secret),
            ("MFA_ENCRYPTION_KEY", "3q2+7wABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGho="),
            ("REFRESH_TOKEN_REUSE_INTERVAL", "0"),
            ("PORT", port),
            ("BIND_ADDRESS", "127.0.0.1"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_owned()))
        .collect::<Vec<_>>()
    };
    let as_refs = |v: &Vec<(&'static str, String)>| v.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>();
    let migrate_env = as_refs(&env("0"));
    let migrate_env: Vec<(&str, &str)> = migrate_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = gatehouse(&["migrate"], &migrate_env, dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let spawn = |port: &str| {
        let e = env(port);
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Running(gatehouse(&["auth"], &e, dir.path()).spawn().unwrap())
    };
    let _a = spawn(&p1);
    let _b = spawn(&p2);
    let (a, b) = (format!("http://127.0.0.1:{p1}"), format!("http://127.0.0.1:{p2}"));
    wait_ready(&a).await;
    wait_ready(&b).await;
    let client = reqwest::Client::new();
    let email = unique_email("procs");
    let login = sign_up_and_in(&client, &a, &b, &email).await;
    let rt = login["refresh_token"].as_str().unwrap();
    let calls = (0..20).map(|i| {
        let base = if i % 2 == 0 { &a } else { &b };
        client.post(format!("{base}/auth/refresh")).json(&json!({"refresh_token": rt})).send()
    });
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.as_ref().unwrap().status() == 200).count();
    assert!(ok <= 1, "{ok} refreshes succeeded across two processes");
}
