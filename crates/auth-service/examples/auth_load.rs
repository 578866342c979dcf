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
}
