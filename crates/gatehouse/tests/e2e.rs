//! End to end: the real binary's `gatehouse up`, walked through the gateway
//! the way the seed's curl examples walk it, once on the embedded SQLite
//! defaults and once on PostgreSQL with Redis. Every call is plain HTTP to
//! the gateway's port (the downstream ports only to show they refuse
//! unsigned calls).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Running, StackPorts, gatehouse, sigterm, wait_exit, wait_ready};
use testkit::{Backend, DEFAULT_PASSWORD, TestDatabase, postgres_base_url, unique_email};

struct Stack {
    child: Running,
    ports: StackPorts,
    client: reqwest::Client,
    dir: tempfile::TempDir,
    /// The environment `up` got, for the operator's commands to share.
    env: Vec<(&'static str, String)>,
    _db: Option<TestDatabase>,
}

/// `gatehouse up` in an empty directory: SQLite under `./data`, or the
/// given PostgreSQL schema and the local Redis.
async fn start(backend: Backend) -> Stack {
    start_with(backend, &[]).await
}

/// [`start`] with extra environment variables.
async fn start_with(backend: Backend, extra: &[(&'static str, &str)]) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let ports = StackPorts::new();
    let mut env = ports.env();
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    // The walk sends ~60 requests in about a second from one IP and user; the
    // default limits (per IP 100/min, burst 10; per user 600/min, burst 50)
    // would rightly stop it half way.
    env.push(("RATE_LIMIT_PER_MINUTE", "6000".to_owned()));
    env.push(("RATE_LIMIT_BURST", "500".to_owned()));
    env.push(("AUTH_RATE_LIMIT_PER_MINUTE", "6000".to_owned()));
    env.push(("AUTH_RATE_LIMIT_BURST", "500".to_owned()));
    env.push(("USER_RATE_LIMIT_PER_MINUTE", "6000".to_owned()));
    env.push(("USER_RATE_LIMIT_BURST", "500".to_owned()));
    let db = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            let db = TestDatabase::new(Backend::Postgres).await;
            let schema = db.schema.clone().unwrap();
            env.push(("DATABASE_URL", format!("{}?options=-c%20search_path%3D{schema}", postgres_base_url())));
            env.push(("REDIS_URL", "redis://127.0.0.1:6379".to_owned()));
            env.push(("REDIS_KEY_PREFIX", format!("e2e-{schema}")));
            Some(db)
        }
    };
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let child = Running(gatehouse(&["up"], &refs, dir.path()).spawn().unwrap());
    for port in [ports.auth, ports.users, ports.payments, ports.notifications, ports.gateway] {
        wait_ready(&StackPorts::url(port)).await;
    }
    Stack { child, ports, client: reqwest::Client::new(), dir, env, _db: db }
}

impl Stack {
    fn gw(&self, path: &str) -> String {
        format!("{}{path}", StackPorts::url(self.ports.gateway))
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.gw(path)).json(body).send().await.unwrap()
    }

    /// A request as a browser client sends it after login: bearer token,
    /// CSRF header and cookie.
    fn authed(&self, method: Method, path: &str, login: &Value) -> reqwest::RequestBuilder {
        let csrf = login["csrf_token"].as_str().unwrap();
        self.client
            .request(method, self.gw(path))
            .bearer_auth(login["access_token"].as_str().unwrap())
            .header("X-CSRF-Token", csrf)
            .header("Cookie", format!("csrf_token={csrf}"))
    }

    async fn login(&self, email: &str) -> Value {
        let r = self.post("/api/v1/auth/login", &json!({"email": email, "password": DEFAULT_PASSWORD})).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    /// Polls until `login`'s access token is refused (401) at the gateway.
    async fn refused_within_5s(&self, login: &Value) -> bool {
        for _ in 0..50 {
            let r = self.authed(Method::GET, "/api/v1/users/profile", login).send().await.unwrap();
            if r.status() == StatusCode::UNAUTHORIZED {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Runs `gatehouse <args>` as an operator would beside the running
    /// stack (same directory and database, development environment), with
    /// `stdin` as its input; (exit success, stdout, stderr).
    fn operator(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        use std::io::Write as _;
        let mut env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.push(("ENVIRONMENT", "development"));
        let mut child = gatehouse(args, &env, self.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut err = text(&out.stderr);
        if out.status.code().is_none() {
            // Killed by a signal: say so, or a failure would read as an empty message.
            err.push_str(&format!("[gatehouse {args:?} ended by a signal: {}]", out.status));
        }
        (out.status.success(), text(&out.stdout), err)
    }

    fn stop(mut self) {
        sigterm(&self.child.0);
        let status = wait_exit(&mut self.child.0, Duration::from_secs(20));
        assert!(status.success(), "{status:?}");
    }
}

async fn error_of(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    (status, body["error"].as_str().unwrap_or_default().to_owned())
}

/// `extra`: more environment for `up`.
async fn the_seed_walkthrough(backend: Backend, extra: &[(&'static str, &str)]) {
    let st = start_with(backend, extra).await;
    let email = unique_email("e2e");
    let health: Value = st.client.get(st.gw("/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health, json!({"status": "healthy", "service": "api-gateway"}));

    // Register, and the seed's registration errors.
    let r =
        st.post("/api/v1/auth/register", &json!({"email": email, "password": DEFAULT_PASSWORD, "name": "Alice"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let registered: Value = r.json().await.unwrap();
    assert_eq!(registered["message"], "User registered successfully");
    assert_eq!(registered["user"]["email"], email);
    let r = st.post("/api/v1/auth/register", &json!({"email": email, "password": DEFAULT_PASSWORD, "name": "A"})).await;
    assert_eq!(error_of(r).await, (StatusCode::CONFLICT, "User with this email already exists".to_owned()));
    let r = st.client.post(st.gw("/api/v1/auth/register")).header("Content-Type", "application/json").body("{").send();
    assert_eq!(error_of(r.await.unwrap()).await, (StatusCode::BAD_REQUEST, "Invalid request body".to_owned()));

    // Login, and a wrong password.
    let r = st.post("/api/v1/auth/login", &json!({"email": email, "password": "not the password at all"})).await;
    assert_eq!(error_of(r).await, (StatusCode::UNAUTHORIZED, "Invalid credentials".to_owned()));
    let r = st.post("/api/v1/auth/login", &json!({"email": email, "password": DEFAULT_PASSWORD})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(cookie.starts_with("csrf_token=") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let login: Value = r.json().await.unwrap();
    assert_eq!((login["message"].as_str(), login["token_type"].as_str()), (Some("Login successful"), Some("Bearer")));
    assert_eq!(login["expires_in"], 900);

    // The profile, and the seed's token errors.
    let profile = "/api/v1/users/profile";
    let r = st.client.get(st.gw(profile)).send().await.unwrap();
    assert_eq!(error_of(r).await, (StatusCode::UNAUTHORIZED, "Authorization header missing".to_owned()));
    let r = st.client.get(st.gw(profile)).header("Authorization", "Token abc").send().await.unwrap();
    let expected = "Invalid authorization header format. Expected: Bearer <token>";
    assert_eq!(error_of(r).await, (StatusCode::UNAUTHORIZED, expected.to_owned()));
    let r = st.client.get(st.gw(profile)).bearer_auth("not.a.jwt").send().await.unwrap();
    assert_eq!(error_of(r).await, (StatusCode::UNAUTHORIZED, "Invalid or expired token".to_owned()));
    let r = st.authed(Method::GET, profile, &login).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["user"]["email"], email);

    // Updating it needs the CSRF token in header and cookie, equal.
    let at = login["access_token"].as_str().unwrap();
    let csrf = login["csrf_token"].as_str().unwrap();
    let update = json!({"name": "Alice B.", "bio": "Hi"});
    let put = || st.client.put(st.gw(profile)).bearer_auth(at).json(&update);
    let r = put().header("Cookie", format!("csrf_token={csrf}")).send().await.unwrap();
    assert_eq!(error_of(r).await, (StatusCode::FORBIDDEN, "CSRF token missing in header".to_owned()));
    let r = put().header("X-CSRF-Token", csrf).send().await.unwrap();
    assert_eq!(error_of(r).await, (StatusCode::FORBIDDEN, "CSRF token missing in cookie".to_owned()));
    let r = put().header("X-CSRF-Token", csrf).header("Cookie", "csrf_token=other").send().await.unwrap();
    assert_eq!(error_of(r).await, (StatusCode::FORBIDDEN, "CSRF token mismatch".to_owned()));
    let r = st.authed(Method::PUT, profile, &login).json(&update).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["updated"], update);
    let r: Value = st.authed(Method::GET, profile, &login).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["user"]["bio"], "Hi", "the change persists");

    // Refresh, then verify with the new access token.
    let r = st.post("/api/v1/auth/refresh", &json!({"refresh_token": login["refresh_token"]})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let refreshed: Value = r.json().await.unwrap();
    assert_eq!(refreshed["message"], "Token refreshed successfully");
    let r = st.client.get(st.gw("/api/v1/auth/verify")).bearer_auth(refreshed["access_token"].as_str().unwrap());
    let verified: Value = r.send().await.unwrap().json().await.unwrap();
    assert_eq!((verified["valid"].as_bool(), verified["user"]["email"].as_str()), (Some(true), Some(email.as_str())));

    // A payment with an idempotency key: the retry returns the same payment.
    let pay = || {
        st.authed(Method::POST, "/api/v1/payments", &refreshed)
            .header("Idempotency-Key", "order-1")
            .json(&json!({"amount": 1999, "currency": "EUR", "description": "Order 1"}))
    };
    let r = pay().send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let payment: Value = r.json().await.unwrap();
    assert_eq!(payment["payment"]["status"], "succeeded");
    let again: Value = pay().send().await.unwrap().json().await.unwrap();
    assert_eq!(again["payment"]["id"], payment["payment"]["id"]);
    let id = payment["payment"]["id"].as_str().unwrap();
    let r = st.authed(Method::GET, &format!("/api/v1/payments/{id}"), &refreshed).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["payment"]["amount"], 1999);

    // The login notification arrives.
    let mut kinds = Vec::new();
    for _ in 0..50 {
        let page: Value =
            st.authed(Method::GET, "/api/v1/notifications", &refreshed).send().await.unwrap().json().await.unwrap();
        kinds =
            page["notifications"].as_array().unwrap().iter().map(|n| n["kind"].as_str().unwrap().to_owned()).collect();
        if !kinds.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kinds, vec!["new_login".to_owned()]);

    // Logout: the refresh token is dead at once, the access token within 5 s.
    let r = st.post("/api/v1/auth/logout", &json!({"refresh_token": refreshed["refresh_token"]})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "Logged out successfully");
    let r = st.post("/api/v1/auth/refresh", &json!({"refresh_token": refreshed["refresh_token"]})).await;
    assert_eq!(error_of(r).await, (StatusCode::UNAUTHORIZED, "Invalid or expired refresh token".to_owned()));
    assert!(st.refused_within_5s(&refreshed).await, "the logged-out token is refused within 5 s");

    // Deleting the account ends it everywhere.
    let second = st.login(&email).await;
    let r = st.authed(Method::DELETE, "/api/v1/users/account", &second).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = st.post("/api/v1/auth/login", &json!({"email": email, "password": DEFAULT_PASSWORD})).await;
    assert_eq!(error_of(r).await, (StatusCode::UNAUTHORIZED, "Invalid credentials".to_owned()));
    let r = st.post("/api/v1/auth/refresh", &json!({"refresh_token": second["refresh_token"]})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(st.refused_within_5s(&second).await, "the deleted account's token is refused within 5 s");

    // Unknown routes, and downstream services called without the gateway.
    let r = st.client.get(st.gw("/api/v1/nothing")).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({"error": "Route not found", "path": "/api/v1/nothing"}));
    for (port, path) in [
        (st.ports.users, "/users/profile"),
        (st.ports.payments, "/payments"),
        (st.ports.notifications, "/notifications"),
    ] {
        let r = st.client.get(format!("{}{path}", StackPorts::url(port))).header("X-User-ID", "admin").send();
        let (status, error) = error_of(r.await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(error, "User context missing. Request must come through API Gateway.");
    }
    st.stop();
}

/// The operator's commands against the running stack's database.
async fn the_operator_manages_accounts_and_reads_the_audit_log(backend: Backend) {
    let st = start(backend).await;
    let email = unique_email("ops");
    let r =
        st.post("/api/v1/auth/register", &json!({"email": email, "password": DEFAULT_PASSWORD, "name": "Op"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let login = st.login(&email).await;

    let (ok, out, err) = st.operator(&["user", "list", "--json"], "");
    assert!(ok, "{err}");
    let users: Value = serde_json::from_str(&out).unwrap();
    assert!(users.as_array().unwrap().iter().any(|u| u["email"] == email.as_str()), "{out}");
    let (ok, out, _) = st.operator(&["user", "sessions", &email, "--json"], "");
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().len(), 1);

    // Disabling revokes every session: the access token dies at the gateway too.
    let (ok, out, err) = st.operator(&["user", "disable", &email], "");
    assert!(ok, "{err}");
    assert!(out.contains("revoked 1 sessions"), "{out}");
    assert!(st.refused_within_5s(&login).await, "a disabled user's token is refused within 5 s");
    let r = st.post("/api/v1/auth/login", &json!({"email": email, "password": DEFAULT_PASSWORD})).await;
    assert_eq!(error_of(r).await, (StatusCode::FORBIDDEN, "Account is disabled".to_owned()));
    assert!(st.operator(&["user", "enable", &email], "").0);
    st.login(&email).await;

    // An address the user cannot get mail at, verified by hand.
    let verified = |st: &Stack| {
        let (ok, out, err) = st.operator(&["user", "show", &email, "--json"], "");
        assert!(ok, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()["email_verified"].as_bool().unwrap()
    };
    assert!(!verified(&st));
    let (ok, out, err) = st.operator(&["user", "verify-email", &email], "");
    assert!(ok && out.trim() == format!("verified {email}"), "{out}{err}");
    assert!(verified(&st));
    let (ok, out, _) = st.operator(&["user", "verify-email", &email], "");
    assert!(ok && out.contains("already verified"), "{out}");

    // Creating from the CLI: the password comes on stdin, the usual rules apply.
    let created = unique_email("made");
    let (ok, _, err) = st.operator(&["user", "create", "--email", &created, "--name", "Made"], "password\n");
    assert!(!ok && err.contains("could not create the user"), "a common password is refused: {err}");
    let (ok, out, err) =
        st.operator(&["user", "create", "--email", &created, "--name", "Made"], "made by the operator 9\n");
    assert!(ok && out.starts_with("created"), "{out}{err}");
    let r = st.post("/api/v1/auth/login", &json!({"email": created, "password": "made by the operator 9"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (ok, out, _) = st.operator(&["user", "revoke-sessions", &created], "");
    assert!(ok && out.contains("revoked 1 sessions"), "{out}");
    assert!(st.operator(&["user", "delete", &created], "").0);
    let r = st.post("/api/v1/auth/login", &json!({"email": created, "password": "made by the operator 9"})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The audit log, for one user, as JSON lines.
    let (ok, out, err) = st.operator(&["audit", "--user", &email, "--since", "1h", "--json"], "");
    assert!(ok, "{err}");
    let events: Vec<String> =
        out.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["event"].as_str().unwrap().to_owned()).collect();
    for kind in ["user_registered", "login_succeeded", "account_disabled", "account_enabled", "email_verified"] {
        assert!(events.iter().any(|e| e == kind), "{kind} missing from {events:?}");
    }

    // Clear one-line errors.
    let (ok, _, err) = st.operator(&["user", "show", "nobody@example.com"], "");
    assert!(!ok && err.trim() == "gatehouse: no user with email nobody@example.com", "{err}");
    let (ok, _, err) = st.operator(&["audit", "--since", "yesterday"], "");
    assert!(!ok && err.contains("--since"), "{err}");
    st.stop();
}

/// The `kid` in a JWT's header.
fn kid_of(jwt: &str) -> String {
    use base64::Engine as _;
    let header = jwt.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["kid"].as_str().unwrap().to_owned()
}

/// A signing-key rotation while a client keeps calling a protected route
/// through the gateway (and refreshing its tokens): not one 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_under_traffic_without_a_401() {
    let st = start_with(Backend::Sqlite, &[("KEY_RELOAD_INTERVAL", "1"), ("JWKS_REFRESH_INTERVAL", "1")]).await;
    let email = unique_email("rot");
    let r = st.post("/api/v1/auth/register", &json!({"email": email, "password": DEFAULT_PASSWORD, "name": "R"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let first = st.login(&email).await;
    let first_kid = kid_of(first["access_token"].as_str().unwrap());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (client, profile, refresh) =
            (st.client.clone(), st.gw("/api/v1/users/profile"), st.gw("/api/v1/auth/refresh"));
        let (stop, mut tokens) = (stop.clone(), first.clone());
        tokio::spawn(async move {
            let (mut calls, mut refused, mut kids) = (0, Vec::new(), std::collections::BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..5 {
                    let at = tokens["access_token"].as_str().unwrap();
                    let r = client.get(&profile).bearer_auth(at).send().await.unwrap();
                    calls += 1;
                    if r.status() != StatusCode::OK {
                        refused.push((r.status(), kid_of(at)));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let r = client.post(&refresh).json(&json!({"refresh_token": tokens["refresh_token"]})).send().await;
                tokens = r.unwrap().json().await.unwrap();
                kids.insert(kid_of(tokens["access_token"].as_str().unwrap()));
            }
            (calls, refused, kids)
        })
    };
    let (ok, out, err) = tokio::task::block_in_place(|| st.operator(&["keys", "rotate", "--publish-ahead", "5"], ""));
    assert!(ok, "{out}{err}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (calls, refused, kids) = traffic.await.unwrap();
    assert!(refused.is_empty(), "{} of {calls} calls refused during the rotation: {refused:?}", refused.len());
    assert!(kids.len() == 2 && kids.contains(&first_kid), "tokens were signed by the old then the new key: {kids:?}");

    // Both keys are published until the old one is retired, which waits for its tokens to expire.
    let jwks: Value = st
        .client
        .get(format!("{}/.well-known/jwks.json", StackPorts::url(st.ports.auth)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    let (ok, out, err) = st.operator(&["keys", "retire", &first_kid], "");
    assert!(!ok && err.contains("may still have unexpired tokens"), "succeeded: {ok}\nstdout: {out}\nstderr: {err}");
    let (ok, out, _) = st.operator(&["keys", "list", "--json"], "");
    assert!(ok);
    let states: Value = serde_json::from_str(&out).unwrap();
    let state_of = |kid: &str| states.as_array().unwrap().iter().find(|k| k["kid"] == kid).unwrap()["state"].clone();
    assert_eq!(state_of(&first_kid), "previous");
    let (ok, _, err) = st.operator(&["keys", "retire", &first_kid, "--force"], "");
    assert!(ok, "{err}");
    // Within a reload interval the old key is gone: its tokens no longer verify.
    let me = format!("{}/auth/me", StackPorts::url(st.ports.auth));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while st.client.get(&me).bearer_auth(first["access_token"].as_str().unwrap()).send().await.unwrap().status()
        != StatusCode::UNAUTHORIZED
    {
        assert!(std::time::Instant::now() < deadline, "the retired key still verifies");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    st.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_cli_on_sqlite() {
    the_operator_manages_accounts_and_reads_the_audit_log(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_cli_on_postgres_and_redis() {
    the_operator_manages_accounts_and_reads_the_audit_log(Backend::Postgres).await;
}

/// A wrong database URL is one line naming what to check.
#[test]
fn the_operator_cli_names_a_wrong_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("ENVIRONMENT", "development"), ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nothing")];
    let out = gatehouse(&["user", "list"], &env, dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.starts_with("gatehouse: could not open the database (check DATABASE_URL)"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_walkthrough_on_sqlite() {
    // On one thread (`up` then runs a current-thread runtime); the walk on
    // PostgreSQL runs on the default multi-thread one.
    the_seed_walkthrough(Backend::Sqlite, &[("TOKIO_WORKER_THREADS", "1")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_walkthrough_on_postgres_and_redis() {
    the_seed_walkthrough(Backend::Postgres, &[]).await;
}
