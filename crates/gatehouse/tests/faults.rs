//! Faults on one instance, with the real binary: an upstream paused
//! (`kill -STOP`) or killed under load, Redis stopped and restarted,
//! PostgreSQL restarted under registrations, and SIGTERM under load. Each
//! fault is injected into processes this test started (a private Redis, a
//! private PostgreSQL server, its own services), never the machine's shared
//! servers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::cluster::{Cluster, Shape, assert_every_account_logs_in, cluster, env_refs, futures_join};
use support::{PrivatePostgres, Running, free_port, gatehouse, kill_hard, redis_on, signal, wait_exit, wait_ready};
use testkit::DEFAULT_PASSWORD;

/// Sends `n` concurrent profile GETs to gateway 0 and returns each status
/// with how long it took.
async fn burst(c: &Cluster, login: &Value, n: usize) -> Vec<(StatusCode, Duration)> {
    let tasks = (0..n).map(|_| {
        let (client, url) = (c.client.clone(), c.via_gateway(0, "/api/v1/users/profile"));
        let token = login["access_token"].as_str().unwrap().to_owned();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = client.get(url).bearer_auth(token).send().await.unwrap();
            (r.status(), started.elapsed())
        })
    });
    futures_join(tasks.collect()).await.into_iter().map(|r| r.unwrap()).collect()
}

/// Established TCP connections to `port` on loopback, from /proc/net/tcp.
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!("0100007F:{port:04X}");
    // Columns: sl local_address rem_address st …; st 01 is ESTABLISHED.
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(2) == Some(&remote.as_str()) && cols.get(3) == Some(&"01")
        })
        .count()
}

async fn wait_for_status(c: &Cluster, login: &Value, want: StatusCode) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while burst(c, login, 1).await[0].0 != want {
        assert!(Instant::now() < deadline, "the gateway never answered {want} again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A paused upstream costs each request the response timeout (504), the
/// gateway does not pile up connections to it, and it recovers on SIGCONT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_upstream_answers_504_within_the_timeout_and_recovers() {
    let c = cluster(Shape { upstream_timeout_ms: 1000, ..Shape::default() }).await;
    let login = c.sign_in().await;
    assert!(burst(&c, &login, 4).await.iter().all(|(s, _)| *s == StatusCode::OK));
    signal(&c.users.0, "STOP");
    let mut most_connections = 0;
    for _ in 0..3 {
        let answers = burst(&c, &login, 16).await;
        for (status, took) in &answers {
            assert_eq!(*status, StatusCode::GATEWAY_TIMEOUT);
            // 1 s timeout; generous slack for a loaded 2-core CI machine.
            assert!(*took < Duration::from_secs(5), "took {took:?} with a 1 s upstream timeout");
        }
        most_connections = most_connections.max(established_to(c.users_port));
    }
    // Timed-out requests give their connection up: three waves of 16 do not
    // leave 48 connections open to the paused upstream.
    assert!(most_connections <= 16 + 4, "{most_connections} connections held to a paused upstream");
    signal(&c.users.0, "CONT");
    wait_for_status(&c, &login, StatusCode::OK).await;
}

/// A dead upstream answers 502 at once, with no address or library text,
/// and the gateway uses it again as soon as it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_upstream_answers_502_at_once_and_recovers() {
    let mut c = cluster(Shape::default()).await;
    let login = c.sign_in().await;
    kill_hard(&mut c.users.0);
    for (status, took) in burst(&c, &login, 16).await {
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }
    let r =
        c.client.get(c.via_gateway(0, "/api/v1/users/profile")).bearer_auth(login["access_token"].as_str().unwrap());
    let body = r.send().await.unwrap().text().await.unwrap();
    assert_eq!(body, r#"{"error":"Service unavailable"}"#);
    c.users = Running(gatehouse(&["users"], &env_refs(&c.users_env), c.dir.path()).spawn().unwrap());
    wait_ready(&format!("http://127.0.0.1:{}", c.users_port)).await;
    wait_for_status(&c, &login, StatusCode::OK).await;
}

/// Redis down: login and refresh fail closed (503), other routes fail open,
/// `/ready` reports it; all of it recovers when Redis is back, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted_applies_each_fail_mode_then_recovers() {
    let mut c = cluster(Shape::default()).await;
    let login = c.sign_in().await;
    let email = login["user"]["email"].as_str().unwrap().to_owned();
    let (client, url) = (c.client.clone(), c.via_gateway(0, "/api/v1/auth/login"));
    let log_in = || client.post(&url).json(&json!({"email": email, "password": DEFAULT_PASSWORD})).send();
    kill_hard(&mut c.redis[0].0);
    assert_eq!(log_in().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE, "login fails closed");
    assert_eq!(burst(&c, &login, 1).await[0].0, StatusCode::OK, "protected routes fail open");
    let ready = c.client.get(c.via_gateway(0, "/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    c.redis[0] = redis_on(c.redis_ports[0]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while log_in().await.unwrap().status() != StatusCode::OK {
        assert!(Instant::now() < deadline, "login did not recover with Redis back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_ready(&c.via_gateway(0, "")).await;
}

/// SIGTERM under load: every request the gateway accepted and forwarded is
/// answered, new connections are refused, and the process exits 0 well
/// within its drain timeout.
///
/// The proof is counted at the upstream, not guessed at the client: the
/// user service's `/metrics` says how many profile requests it answered
/// during the test, and each of them must have reached the client as a 200.
/// (A client cannot tell a request cut off in flight from one sent on a
/// keep-alive connection the server was closing — the HTTP/1.1 race RFC 9112
/// §9.3.1 lets clients retry — but the upstream's count can.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_completes_every_request_in_flight() {
    let mut c = cluster(Shape::default()).await;
    let login = c.sign_in().await;
    let token = login["access_token"].as_str().unwrap().to_owned();
    let answered_upstream = || async {
        let text = c.client.get(format!("http://127.0.0.1:{}/metrics", c.users_port)).send().await.unwrap();
        let text = text.text().await.unwrap();
        let series = r#"gatehouse_http_requests_total{route="/users/profile",method="GET",status="200"} "#;
        text.lines().find_map(|l| l.strip_prefix(series)).map_or(0, |v| v.trim().parse::<usize>().unwrap())
    };
    let before = answered_upstream().await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (client, url, token) = (c.client.clone(), c.via_gateway(0, "/api/v1/users/profile"), token.clone());
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.get(&url).bearer_auth(&token).send().await {
                        Ok(r) if r.status() == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(r) => panic!("the gateway answered {} while shutting down", r.status()),
                        // Refused, or a keep-alive connection closed before the request was read.
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let served_before = ok.load(Ordering::Relaxed);
    signal(&c.gateways[0].0, "TERM");
    let status = wait_exit(&mut c.gateways[0].0, Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    for worker in futures_join(workers).await {
        worker.unwrap();
    }
    assert!(status.success(), "{status:?}");
    assert!(served_before > 50, "the load ran ({served_before})");
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let forwarded = answered_upstream().await - before;
    eprintln!("{ok} answered to the client, {forwarded} forwarded and answered upstream, {failed} not accepted");
    assert_eq!(forwarded, ok, "requests the gateway forwarded were cut off before their answer reached the client");
}

/// What the registration load saw: the emails acknowledged (201), how many
/// clean 503s, and anything else (which fails the test).
#[derive(Default)]
struct RegistrationLoad {
    acknowledged: Vec<String>,
    unavailable: usize,
    unexpected: Vec<String>,
    slowest: Duration,
}

/// PostgreSQL restarted under a registration load: while it is down `/ready`
/// says so and registrations fail with a clean JSON 503 (no 500, no hang);
/// once it is back the same auth process serves again, and every
/// registration it acknowledged can log in.
///
/// The server is a private one on its own port (`support::PrivatePostgres`),
/// so the fast shutdown hits only this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_registrations_loses_nothing_acknowledged() {
    let mut pg = PrivatePostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = [
        ("ENVIRONMENT", "development".to_owned()),
        ("DATA_DIR", dir.path().join("data").display().to_string()),
        ("DATABASE_URL", pg.url()),
        ("PORT", port.to_string()),
        ("GATEHOUSE_TEST_ONLY_WEAK_PASSWORD_HASHING", "true".to_owned()),
        // Nobody listens there: notifications retry in the background, harmlessly.
        ("NOTIFICATION_SERVICE_URL", format!("http://127.0.0.1:{}", free_port())),
        ("RUST_LOG", "error".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _auth = Running(gatehouse(&["auth"], &env, dir.path()).spawn().unwrap());
    wait_ready(&base).await;

    // A hang shows up as a transport error, which the test counts as unexpected.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let restarted = Arc::new(AtomicBool::new(false));
    let acknowledged_after_restart = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (client.clone(), format!("{base}/auth/register"));
            let (stop, restarted, after) = (stop.clone(), restarted.clone(), acknowledged_after_restart.clone());
            tokio::spawn(async move {
                let mut load = RegistrationLoad::default();
                while !stop.load(Ordering::Relaxed) {
                    let email = testkit::unique_email("pg-restart");
                    let body = json!({"email": email, "password": DEFAULT_PASSWORD, "name": "P"});
                    let started = Instant::now();
                    let answer = client.post(&url).json(&body).send().await;
                    load.slowest = load.slowest.max(started.elapsed());
                    let answer = match answer {
                        Ok(r) => (r.status(), r.text().await.unwrap_or_default()),
                        Err(e) => {
                            load.unexpected.push(format!("transport error: {e}"));
                            continue;
                        }
                    };
                    match answer {
                        (StatusCode::CREATED, _) => {
                            if restarted.load(Ordering::Relaxed) {
                                after.fetch_add(1, Ordering::Relaxed);
                            }
                            load.acknowledged.push(email);
                        }
                        (StatusCode::SERVICE_UNAVAILABLE, body)
                            if serde_json::from_str::<Value>(&body).is_ok_and(|v| v["error"].is_string()) =>
                        {
                            load.unavailable += 1;
                            // Don't spin on a dead database.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        (status, body) => load.unexpected.push(format!("{status}: {body}")),
                    }
                }
                load
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(800)).await;
    pg.stop_fast();
    // Down for a few seconds: `/ready` reports it the whole time.
    let down_until = Instant::now() + Duration::from_secs(3);
    let mut readiness_checks = 0;
    while Instant::now() < down_until {
        let r = client.get(format!("{base}/ready")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "/ready while PostgreSQL is down");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
        readiness_checks += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(readiness_checks > 0);
    pg.start_again();
    restarted.store(true, Ordering::Relaxed);
    // The same process recovers: ready again, and registering again.
    wait_ready(&base).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while acknowledged_after_restart.load(Ordering::Relaxed) < 20 {
        assert!(Instant::now() < deadline, "registrations did not recover after PostgreSQL came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);

    let mut total = RegistrationLoad::default();
    for load in futures_join(workers).await {
        let load = load.unwrap();
        total.acknowledged.extend(load.acknowledged);
        total.unavailable += load.unavailable;
        total.unexpected.extend(load.unexpected);
        total.slowest = total.slowest.max(load.slowest);
    }
    eprintln!(
        "{} registrations acknowledged, {} answered 503 while PostgreSQL was down; slowest answer {:?}",
        total.acknowledged.len(),
        total.unavailable,
        total.slowest
    );
    assert!(total.unexpected.is_empty(), "answers other than 201 or a JSON 503: {:?}", total.unexpected);
    assert!(total.unavailable > 0, "the outage was seen by the load");

    assert_every_account_logs_in(&client, &format!("{base}/auth/login"), &total.acknowledged).await;
}

/// What a slow client saw: when the server closed on it, how many bytes of
/// its request head it had sent by then, and anything the server answered.
struct Dribbled {
    closed_after: Duration,
    sent: usize,
    answer: String,
}

/// Sends a request head one byte a second until the server closes the
/// connection (EOF, reset, or a failed write).
async fn dribble_request_head(port: u16) -> Dribbled {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: one-byte-a-second\r\n\r\n";
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut answer, mut chunk) = (Vec::new(), [0u8; 1024]);
    for (sent, byte) in head.iter().enumerate() {
        if stream.write_all(&[*byte]).await.is_err() {
            return Dribbled { closed_after: started.elapsed(), sent, answer: String::new() };
        }
        let wait = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                read = stream.read(&mut chunk) => match read {
                    Ok(0) | Err(_) => {
                        let answer = String::from_utf8_lossy(&answer).into_owned();
                        return Dribbled { closed_after: started.elapsed(), sent: sent + 1, answer };
                    }
                    Ok(n) => answer.extend_from_slice(&chunk[..n]),
                },
                () = &mut wait => break,
            }
        }
    }
    panic!("the server waited {:?} for a request head sent a byte a second", started.elapsed());
}

/// Slow loris: clients sending their request head a byte a second are cut
/// off by the header read timeout (`ServeOptions::default()`, 10 s), with
/// nothing or a 408, while the gateway keeps answering everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dribbling_its_headers_is_closed_by_the_header_timeout() {
    let timeout = common_http::serve::ServeOptions::default().header_read_timeout;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env = [
        ("ENVIRONMENT", "development".to_owned()),
        ("DATA_DIR", dir.path().join("data").display().to_string()),
        ("PORT", port.to_string()),
        // The gateway alone: `/health` needs no upstream.
        ("AUTH_SERVICE_URL", format!("http://127.0.0.1:{}", free_port())),
        ("RUST_LOG", "error".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _gateway = Running(gatehouse(&["gateway"], &env, dir.path()).spawn().unwrap());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let health = format!("http://127.0.0.1:{port}/health");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.get(&health).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "the gateway did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let slow: Vec<_> = (0..16).map(|_| tokio::spawn(dribble_request_head(port))).collect();
    // Everyone else is served while the slow clients hold their connections.
    let mut served = 0;
    while !slow.iter().all(tokio::task::JoinHandle::is_finished) {
        let r = client.get(&health).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut latest = Duration::ZERO;
    for dribbled in futures_join(slow).await {
        let Dribbled { closed_after, sent, answer } = dribbled.unwrap();
        latest = latest.max(closed_after);
        assert!(sent < 20, "{sent} bytes sent before the close");
        // A timer never fires early: the connection was open at least the timeout.
        assert!(closed_after >= timeout, "closed after {closed_after:?}, before the {timeout:?} timeout");
        // Generous slack for a busy CI machine; the head needed ~70 s at this pace.
        assert!(closed_after < timeout + Duration::from_secs(10), "closed only after {closed_after:?}");
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    }
    eprintln!("16 slow clients closed, the last after {latest:?}; {served} other requests served meanwhile");
    assert!(served >= 50, "other clients were served meanwhile ({served} requests)");
}
