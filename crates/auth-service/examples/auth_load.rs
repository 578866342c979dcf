//! Load driver for a running auth service: login latency and refresh throughput.
//!
//! ```text
//! cargo run --release -p auth-service --example auth_load -- \
//!     --base http://127.0.0.1:8081 --logins 40 --clients 16 --seconds 10
//! ```
//!
//! 1. Logs one user in `--logins` times, one after another, and prints the
//!    median and p90 latency (the Argon2id verify dominates).
//! 2. Gives each of `--clients` concurrent clients its own session and has it
//!    refresh in a loop for `--seconds`, each presenting the token it was just
//!    given (a real rotation chain), and prints refreshes per second.
//! 3. Login flood: `--clients` clients log in as fast as they can for
//!    `--seconds` while a probe sends an authenticated `GET /auth/me` every
//!    10 ms; prints logins per second and the probe's p50/p99 before and
//!    during the flood. Hashing runs on a bounded pool, so the probe's p99
//!    should stay near its idle value; logins beyond the queue get 503.
//!
//! Used by `bench/auth.sh`; prints figures, asserts nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

#[tokio::main]
async fn main() {
    let base = arg("--base", "http://127.0.0.1:8081");
    assert!(base.starts_with("http://127.") || base.starts_with("http://localhost"), "loopback targets only");
    let logins: usize = arg("--logins", "40").parse().unwrap();
    let clients: usize = arg("--clients", "16").parse().unwrap();
    let seconds: u64 = arg("--seconds", "10").parse().unwrap();
    let client = reqwest::Client::new();
    let email = format!("load-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "load test passphrase 42";
    let r = client
        .post(format!("{base}/auth/register"))
        .json(&json!({"email": email, "password": password, "name": "Load"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "register: {}", r.text().await.unwrap_or_default());

    let login =
        || client.post(format!("{base}/auth/login")).json(&json!({"email": email, "password": password})).send();
    let mut latencies = Vec::with_capacity(logins);
    for _ in 0..logins {
        let started = Instant::now();
        let r = login().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "login latency (sequential, n={logins}): median {:.1} ms, p90 {:.1} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.9).as_secs_f64() * 1e3
    );

    let mut tokens = Vec::with_capacity(clients);
    for _ in 0..clients {
        let body: Value = login().await.unwrap().json().await.unwrap();
        tokens.push(body["refresh_token"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers: Vec<_> = tokens
        .into_iter()
        .map(|mut token| {
            let client = client.clone();
            let base = base.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                while Instant::now() < deadline {
                    let r =
                        client.post(format!("{base}/auth/refresh")).json(&json!({"refresh_token": token})).send().await;
                    match r {
                        Ok(r) if r.status() == 200 => {
                            let body: Value = r.json().await.unwrap();
                            token = body["refresh_token"].as_str().unwrap().to_owned();
                            ok += 1;
                        }
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for w in workers {
        let (o, f) = w.await.unwrap();
        ok += o;
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "refresh: {clients} clients for {elapsed:.1} s: {:.0} refreshes/s ({ok} ok, {failed} failed)",
        ok as f64 / elapsed
    );

    login_flood(&client, &base, &email, password, clients, seconds).await;
}

/// Probes `GET /auth/me` every 10 ms for `for_how_long`; the sorted latencies.
async fn probe_me(client: &reqwest::Client, base: &str, access: &str, for_how_long: Duration) -> Vec<Duration> {
    let deadline = Instant::now() + for_how_long;
    let mut latencies = Vec::new();
    while Instant::now() < deadline {
        let started = Instant::now();
        let r = client.get(format!("{base}/auth/me")).bearer_auth(access).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    latencies.sort();
    latencies
}

async fn login_flood(client: &reqwest::Client, base: &str, email: &str, password: &str, clients: usize, seconds: u64) {
    let body: Value = client
        .post(format!("{base}/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = body["access_token"].as_str().unwrap().to_owned();
    let idle = probe_me(client, base, &access, Duration::from_secs(2)).await;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let flooders: Vec<_> = (0..clients)
        .map(|_| {
            let (client, base) = (client.clone(), base.to_owned());
            let body = json!({"email": email, "password": password});
            tokio::spawn(async move {
                let (mut ok, mut shed) = (0u64, 0u64);
                while Instant::now() < deadline {
                    match client.post(format!("{base}/auth/login")).json(&body).send().await {
                        Ok(r) if r.status() == 200 => ok += 1,
                        _ => shed += 1,
                    }
                }
                (ok, shed)
            })
        })
        .collect();
    let during = probe_me(client, base, &access, Duration::from_secs(seconds)).await;
    let (mut ok, mut shed) = (0, 0);
    for f in flooders {
        let (o, s) = f.await.unwrap();
        ok += o;
        shed += s;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "login flood: {clients} clients for {elapsed:.1} s: {:.1} logins/s ({ok} ok, {shed} refused or failed)",
        ok as f64 / elapsed
    );
    println!(
        "GET /auth/me during the flood: p50 {:.2} ms, p99 {:.2} ms (idle: p50 {:.2} ms, p99 {:.2} ms)",
        ms(percentile(&during, 0.5)),
        ms(percentile(&during, 0.99)),
        ms(percentile(&idle, 0.5)),
        ms(percentile(&idle, 0.99))
    );
}
