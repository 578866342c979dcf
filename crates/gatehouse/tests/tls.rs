//! The real `gatehouse` binary with `TLS_CERT` and `TLS_KEY`: certificates
//! made by the test, the process started as an operator would start it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::tls::TestCa;
use testkit::{DEFAULT_PASSWORD, unique_email};

mod support;

use support::{Running, StackPorts, gatehouse, sigterm, wait_exit, wait_ready};

/// Polls `GET {base}/ready` with `client` until it answers 2xx; that response.
async fn ready_over(client: &reqwest::Client, base: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/ready")).send().await
            && r.status().is_success()
        {
            return r;
        }
        assert!(Instant::now() < deadline, "{base} did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `gatehouse up` with a certificate: the gateway serves HTTPS with HSTS and
/// `Secure` cookies, refuses plain HTTP on its port, and the services behind
/// it keep plain HTTP on loopback.
#[tokio::test]
async fn up_with_a_certificate_serves_the_gateway_over_https() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("binary test CA");
    let files = ca.issue_localhost();
    let stack = StackPorts::new();
    let mut env: Vec<(&str, String)> = stack.env();
    env.push(("TLS_CERT", files.cert.display().to_string()));
    env.push(("TLS_KEY", files.key.display().to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut child = Running(gatehouse(&["up"], &env, dir.path()).spawn().unwrap());
    let gw = format!("https://localhost:{}", stack.gateway);
    let client = ca.client();

    // Act / Assert: ready over HTTPS, with HSTS.
    let ready = ready_over(&client, &gw).await;
    assert_eq!(ready.headers()["strict-transport-security"], "max-age=63072000; includeSubDomains");
    // The auth service behind it: plain HTTP on loopback, no HSTS.
    let auth = StackPorts::url(stack.auth);
    wait_ready(&auth).await;
    let r = reqwest::get(format!("{auth}/health")).await.unwrap();
    assert!(r.headers().get("strict-transport-security").is_none());
    // Plain HTTP to the gateway's port gets no HTTP answer; HTTPS still works.
    let plain = reqwest::get(format!("http://127.0.0.1:{}/health", stack.gateway)).await;
    assert!(plain.is_err(), "{plain:?}");
    // Through the gateway: register, log in (cookies `Secure`: the browser is on HTTPS), a proxied call.
    let email = unique_email("tls");
    let body = json!({"email": email, "password": DEFAULT_PASSWORD, "name": "T"});
    let r = client.post(format!("{gw}/api/v1/auth/register")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let body = json!({"email": email, "password": DEFAULT_PASSWORD});
    let r = client.post(format!("{gw}/api/v1/auth/login")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cookies: Vec<&str> = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert!(!cookies.is_empty() && cookies.iter().all(|c| c.contains("; Secure")), "{cookies:?}");
    let login: Value = r.json().await.unwrap();
    let r = client
        .get(format!("{gw}/api/v1/users/profile"))
        .bearer_auth(login["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=63072000; includeSubDomains");

    sigterm(&child.0);
    assert!(wait_exit(&mut child.0, Duration::from_secs(15)).success());
}

/// A single service serves HTTPS with the pair; half a pair, or a file that
/// is not what it should be, stops the process with one line naming the variable.
#[tokio::test]
async fn a_single_service_serves_https_and_a_bad_pair_is_one_line_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("binary test CA");
    let files = ca.issue_localhost();
    let (cert, key) = (files.cert.to_str().unwrap(), files.key.to_str().unwrap());
    let base = [("ENVIRONMENT", "development"), ("PORT", "0")];
    for (pair, var) in [
        (vec![("TLS_CERT", cert)], "TLS_KEY"),
        (vec![("TLS_KEY", key)], "TLS_CERT"),
        (vec![("TLS_CERT", key), ("TLS_KEY", key)], "TLS_CERT"),
        (vec![("TLS_CERT", cert), ("TLS_KEY", "/nonexistent/key.pem")], "TLS_KEY"),
    ] {
        let env = [&base[..], &pair].concat();
        let out = gatehouse(&["notifications"], &env, dir.path()).output().unwrap();
        assert!(!out.status.success(), "{env:?} must not start");
        let stderr = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains(var), "{env:?}: {stderr}");
        assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
    }

    let port = support::free_port().to_string();
    let env = [("ENVIRONMENT", "development"), ("PORT", port.as_str()), ("TLS_CERT", cert), ("TLS_KEY", key)];
    let mut child = Running(gatehouse(&["notifications"], &env, dir.path()).spawn().unwrap());
    let ready = ready_over(&ca.client(), &format!("https://127.0.0.1:{port}")).await;
    assert_eq!(ready.status(), 200);
    sigterm(&child.0);
    assert!(wait_exit(&mut child.0, Duration::from_secs(15)).success());
}

/// A request as a browser client sends it after login: bearer token, CSRF
/// header and cookie.
fn authed(client: &reqwest::Client, method: reqwest::Method, url: String, login: &Value) -> reqwest::RequestBuilder {
    let csrf = login["csrf_token"].as_str().unwrap();
    client
        .request(method, url)
        .bearer_auth(login["access_token"].as_str().unwrap())
        .header("X-CSRF-Token", csrf)
        .header("Cookie", format!("csrf_token={csrf}"))
}

/// TLS everywhere: the auth, user and notification services and the gateway
/// each a process serving HTTPS, every `*_SERVICE_URL` an `https://` URL and
/// `UPSTREAM_CA` the test CA. The service-to-service calls go over TLS: the
/// login notification (auth service → notification service) arrives, and
/// account deletion (user service → auth service) deletes the account.
#[tokio::test]
async fn services_call_each_other_over_https_trusting_upstream_ca() {
    // Arrange: one certificate for `localhost`, every service on its own port.
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("internal CA");
    let files = ca.issue(&["localhost"]);
    let [auth, users, notifications, gateway] = support::free_ports(4)[..] else {
        unreachable!("free_ports(4) gives four ports")
    };
    let https = |port: u16| format!("https://localhost:{port}");
    let common: Vec<(&str, String)> = vec![
        ("ENVIRONMENT", "development".to_owned()),
        ("DATA_DIR", dir.path().join("data").display().to_string()),
        ("TLS_CERT", files.cert.display().to_string()),
        ("TLS_KEY", files.key.display().to_string()),
        ("UPSTREAM_CA", ca.ca_file().display().to_string()),
        ("AUTH_SERVICE_URL", https(auth)),
        ("USER_SERVICE_URL", https(users)),
        ("NOTIFICATION_SERVICE_URL", https(notifications)),
        ("GATEHOUSE_TEST_ONLY_WEAK_PASSWORD_HASHING", "true".to_owned()),
    ];
    let start = |command: &str, port: u16| {
        let mut env: Vec<(&str, String)> = common.clone();
        env.push(("PORT", port.to_string()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Running(gatehouse(&[command], &env, dir.path()).spawn().unwrap())
    };
    let env: Vec<(&str, &str)> = common.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let migrated = gatehouse(&["migrate"], &env, dir.path()).output().unwrap();
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    let client = ca.client();
    // The auth service first: it generates the keys and secrets the others read.
    let _auth = start("auth", auth);
    ready_over(&client, &https(auth)).await;
    let _users = start("users", users);
    let _notifications = start("notifications", notifications);
    let _gateway = start("gateway", gateway);
    for port in [users, notifications, gateway] {
        ready_over(&client, &https(port)).await;
    }
    let gw = |path: &str| format!("{}{path}", https(gateway));

    // Act: register and log in through the gateway.
    let email = unique_email("tls-internal");
    let body = json!({"email": email, "password": DEFAULT_PASSWORD, "name": "T"});
    let r = client.post(gw("/api/v1/auth/register")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let credentials = json!({"email": email, "password": DEFAULT_PASSWORD});
    let r = client.post(gw("/api/v1/auth/login")).json(&credentials).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let login: Value = r.json().await.unwrap();

    // Assert: the login notification reached the notification service over HTTPS.
    let deadline = Instant::now() + Duration::from_secs(15);
    let kinds = loop {
        let r = authed(&client, reqwest::Method::GET, gw("/api/v1/notifications"), &login).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.unwrap();
        let kinds: Vec<String> =
            page["notifications"].as_array().unwrap().iter().map(|n| n["kind"].as_str().unwrap().to_owned()).collect();
        if !kinds.is_empty() || Instant::now() > deadline {
            break kinds;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(kinds, ["new_login"]);

    // Act / Assert: deleting the account goes through the auth service over HTTPS.
    let r = authed(&client, reqwest::Method::DELETE, gw("/api/v1/users/account"), &login).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = client.post(gw("/api/v1/auth/login")).json(&credentials).send().await.unwrap();
    assert_eq!(r.status(), 401, "the deleted account cannot log in");
}

/// `gatehouse healthcheck` with the environment of a service that serves
/// HTTPS, and with `--url https://…`.
fn healthcheck(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    gatehouse(&[&["healthcheck"], args].concat(), env, dir.path()).output().unwrap()
}

/// The probe of a service serving HTTPS: by default over TLS to loopback,
/// accepting the service's own certificate (`TLS_CERT`) although it names
/// another host; with `--url`, a certificate chaining to `UPSTREAM_CA` for
/// the URL's host. Any other certificate (another CA, another host, a
/// certificate that is not the service's) fails: exit 1, one line.
#[tokio::test]
async fn healthcheck_probes_https_trusting_the_services_own_certificate_or_upstream_ca() {
    // Arrange: a service whose certificate names `auth.internal` and `localhost`, not 127.0.0.1.
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("healthcheck CA");
    let files = ca.issue(&["auth.internal", "localhost"]);
    let (cert, key) = (files.cert.to_str().unwrap(), files.key.to_str().unwrap());
    let port = support::free_port().to_string();
    let serving = [("ENVIRONMENT", "development"), ("PORT", port.as_str()), ("TLS_CERT", cert), ("TLS_KEY", key)];
    let _service = Running(gatehouse(&["notifications"], &serving, dir.path()).spawn().unwrap());
    ready_over(&ca.client(), &format!("https://localhost:{port}")).await;
    let ca_file = ca.ca_file();
    let upstream_ca = ("UPSTREAM_CA", ca_file.to_str().unwrap());

    // Act / Assert: the container's own probe, with the service's environment.
    let out = healthcheck(&[], &serving);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("gatehouse: healthy: https://127.0.0.1:{port}/ready answered 200\n")
    );
    // A URL whose host the certificate names, under UPSTREAM_CA.
    let localhost = format!("https://localhost:{port}/ready");
    let out = healthcheck(&["--url", &localhost], &[upstream_ca]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let other_ca = TestCa::new("another CA");
    let stranger = other_ca.issue(&["localhost"]);
    let sibling = ca.issue(&["localhost"]);
    let loopback = format!("https://127.0.0.1:{port}/ready");
    for (case, args, env, says) in [
        ("public roots only", vec!["--url", localhost.as_str()], vec![], "invalid peer certificate"),
        (
            "UPSTREAM_CA of another CA",
            vec!["--url", localhost.as_str()],
            vec![("UPSTREAM_CA", other_ca.ca_file().to_str().unwrap().to_owned())],
            "invalid peer certificate",
        ),
        (
            "a host the certificate does not name",
            vec!["--url", loopback.as_str()],
            vec![("UPSTREAM_CA", ca_file.to_str().unwrap().to_owned())],
            "invalid peer certificate",
        ),
        (
            "TLS_CERT of another CA",
            vec![],
            vec![("PORT", port.clone()), ("TLS_CERT", stranger.cert.to_str().unwrap().to_owned())],
            "invalid peer certificate",
        ),
        (
            "TLS_CERT of the same CA, not the service's",
            vec![],
            vec![("PORT", port.clone()), ("TLS_CERT", sibling.cert.to_str().unwrap().to_owned())],
            "invalid peer certificate",
        ),
        (
            "an unreadable TLS_CERT",
            vec![],
            vec![("PORT", port.clone()), ("TLS_CERT", "/nonexistent/cert.pem".to_owned())],
            "TLS_CERT (/nonexistent/cert.pem)",
        ),
    ] {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = healthcheck(&args, &env);
        assert_eq!(out.status.code(), Some(1), "{case}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{case}: {stderr}");
        assert!(stderr.starts_with("gatehouse: ") && stderr.contains(says), "{case}: {stderr}");
        assert!(out.stdout.is_empty(), "{case}");
    }
}
