//! Scale-out, simulated on one machine: three `gatehouse gateway` processes
//! and two `gatehouse auth` processes (plus `gatehouse users`) on one
//! PostgreSQL and one Redis, with HAProxy balancing the gateways and, behind
//! them, the auth instances — the shape of a real deployment, on loopback.
//!
//! Redis here is a private `redis-server` per test, so a test can stop it
//! (or, for the `…_on_a_redis_cluster` tests, a private three-node Redis
//! Cluster, which `REDIS_URL` names by its seed nodes);
//! PostgreSQL is the run's database, a schema per test. Password hashing is
//! made trivial with the test-only setting, so the loads measure the system
//! and not Argon2id.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::cluster::{Cluster, Shape, assert_every_account_logs_in, cluster, futures_join};
use support::kill_hard;
use testkit::{DEFAULT_PASSWORD, unique_email};

/// The per-IP limit is one budget whichever gateway a request reaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_exact_across_gateways() {
    rate_limits_are_exact(&cluster(Shape { per_minute: 60, burst: 10, ..Shape::default() }).await).await;
}

/// The same on a three-node Redis Cluster: each decision is one script on
/// the node that owns the client's slot, and clients spread over the nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_exact_across_gateways_on_a_redis_cluster() {
    let c = cluster(Shape { per_minute: 60, burst: 10, redis_cluster: true, ..Shape::default() }).await;
    rate_limits_are_exact(&c).await;
    for i in 0..30 {
        let status = limited_get(&c, i, &format!("203.0.113.{i}")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "a new client is not limited");
    }
    let keys_per_node: Vec<usize> =
        c.redis_ports.iter().map(|port| redis_cli(*port, &["dbsize"]).parse().unwrap()).collect();
    eprintln!("rate-limit keys per cluster node: {keys_per_node:?}");
    assert!(keys_per_node.iter().filter(|n| **n > 0).count() >= 2, "keys on one node only: {keys_per_node:?}");
}

/// A primary of a replicated Redis Cluster killed under traffic. Only the
/// clients whose keys live in its slots notice, only while its replica takes
/// over (their decisions fail open on this route, as with Redis down); the
/// gateways then follow the new primary by themselves, and what the failover
/// can have cost a client is one extra burst (its bucket, had it not reached
/// the replica yet). Clients on the other primaries stay exactly limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_failover_costs_a_client_at_most_one_burst() {
    const BURST: usize = 10;
    let mut c = cluster(Shape {
        per_minute: 60,
        burst: BURST as u32,
        redis_cluster: true,
        redis_replicas: true,
        ..Shape::default()
    })
    .await;
    let primaries: Vec<u16> =
        c.redis_ports.iter().copied().filter(|p| redis_cli(*p, &["role"]).starts_with("master")).collect();
    assert_eq!(primaries.len(), 3, "three primaries");
    // Two clients whose buckets live on different primaries: one request
    // each creates the bucket, and each primary lists its own keys.
    let node_of = |ip: &str| {
        let pattern = format!("*:{ip}}}");
        primaries.iter().copied().find(|p| !redis_cli(*p, &["--scan", "--pattern", &pattern]).is_empty())
    };
    let started = Instant::now();
    let mut placed: Vec<(String, u16)> = Vec::new();
    for i in 1..=30 {
        let ip = format!("198.51.100.{i}");
        assert_ne!(limited_get(&c, i, &ip).await, StatusCode::TOO_MANY_REQUESTS);
        let node = node_of(&ip).expect("the bucket is on a primary");
        if placed.iter().all(|(_, n)| *n != node) {
            placed.push((ip, node));
        }
        if placed.len() == 2 {
            break;
        }
    }
    let [(victim, failing_primary), (bystander, _)] = <[(String, u16); 2]>::try_from(placed).unwrap();
    // Both spend their burst.
    for who in [&victim, &bystander] {
        let allowed = allowed_of(&c, who, 2 * BURST).await;
        let ceiling = BURST + started.elapsed().as_secs() as usize;
        assert!(allowed <= ceiling, "{who}: {allowed} allowed of its burst, at most {ceiling}");
        assert_eq!(limited_get(&c, 0, who).await, StatusCode::TOO_MANY_REQUESTS, "{who} is limited");
    }
    // The bystander was limited just now: from here it earns one a second.
    let bystander_limited = Instant::now();
    let replica = c
        .redis_ports
        .iter()
        .copied()
        .find(|p| redis_cli(*p, &["info", "replication"]).contains(&format!("master_port:{failing_primary}")))
        .expect("the primary has a replica");
    let index = c.redis_ports.iter().position(|p| *p == failing_primary).unwrap();
    let killed = Instant::now();
    kill_hard(&mut c.redis[index].0);

    // Until the replica is the primary: the bystander stays limited to its
    // refill (one a second), whatever happens to the victim's slots.
    let (mut victim_allowed, mut bystander_allowed) = (0, 0);
    let mut seen = Vec::new();
    let mut i = 0;
    let promoted = loop {
        assert!(killed.elapsed() < Duration::from_secs(30), "the replica never took over");
        i += 1;
        if limited_get(&c, i, &victim).await != StatusCode::TOO_MANY_REQUESTS {
            victim_allowed += 1;
        }
        let status = limited_get(&c, i, &bystander).await;
        seen.push((killed.elapsed().as_millis(), status.as_u16()));
        if status != StatusCode::TOO_MANY_REQUESTS {
            bystander_allowed += 1;
        }
        let role = redis_cli(replica, &["role"]);
        if role.starts_with("master") && redis_cli(replica, &["cluster", "info"]).contains("cluster_state:ok") {
            break killed.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let refill = |during: Duration| during.as_secs() as usize + 1;
    let bystander_window = bystander_limited.elapsed();
    assert!(
        bystander_allowed <= refill(bystander_window),
        "the bystander got {bystander_allowed} in {bystander_window:?} although its primary did not fail \
         (ms after the kill, status: {seen:?})"
    );
    // The gateways find the new primary by themselves: the victim's
    // decisions are made again (a 429 comes back) ...
    let recovered = Instant::now();
    let mut after = 0;
    let mut j = 0;
    while limited_get(&c, j, &victim).await != StatusCode::TOO_MANY_REQUESTS {
        after += 1;
        j += 1;
        assert!(recovered.elapsed() < Duration::from_secs(15), "the gateways never used the new primary");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... after at most one extra burst plus the refill of the meantime.
    assert!(
        after <= BURST + refill(recovered.elapsed()),
        "{after} allowed after the failover in {:?}",
        recovered.elapsed()
    );
    // And stay exact: another full round is limited to the refill.
    let again = Instant::now();
    let more = allowed_of(&c, &victim, 2 * BURST).await;
    assert!(more <= refill(again.elapsed()), "{more} allowed once limited again");
    eprintln!(
        "failover: replica primary after {promoted:?}; meanwhile the victim got {victim_allowed} allowed \
         (failing open), the bystander {bystander_allowed}; after it the victim got {after} before its first 429"
    );
}

/// One unauthenticated GET of a protected route as client `ip` (named by
/// X-Forwarded-For from the trusted balancer hop) through gateway `i % 3`:
/// 401 when the rate limit lets it through, 429 when it does not.
async fn limited_get(c: &Cluster, i: usize, ip: &str) -> StatusCode {
    let r = c.client.get(c.via_gateway(i % 3, "/api/v1/users/profile")).header("X-Forwarded-For", ip);
    r.send().await.unwrap().status()
}

/// How many of `n` back-to-back requests from `ip` the gateways allowed.
async fn allowed_of(c: &Cluster, ip: &str, n: usize) -> usize {
    let mut allowed = 0;
    for i in 0..n {
        if limited_get(c, i, ip).await != StatusCode::TOO_MANY_REQUESTS {
            allowed += 1;
        }
    }
    allowed
}

/// `redis-cli` against one node, following cluster redirections (`-c`).
fn redis_cli(port: u16, args: &[&str]) -> String {
    let out =
        std::process::Command::new("redis-cli").args(["-c", "-p", &port.to_string()]).args(args).output().unwrap();
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn rate_limits_are_exact(c: &Cluster) {
    let started = Instant::now();
    // One simulated client, spread over the three gateways.
    let allowed = allowed_of(c, "198.51.100.77", 45).await;
    // GCRA: the burst at once, then one per second of elapsed time.
    let ceiling = 10 + started.elapsed().as_secs() as usize + 1;
    assert!((10..=ceiling).contains(&allowed), "allowed {allowed}, at most {ceiling}");
    // Another client has its own budget.
    assert_eq!(limited_get(c, 0, "198.51.100.78").await, StatusCode::UNAUTHORIZED);
}

/// Logout, logout-all and account deletion reach every gateway within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_every_gateway_within_5_seconds() {
    revocations_reach_every_gateway(&cluster(Shape::default()).await).await;
}

/// The same on a three-node Redis Cluster, where the auth service's marks
/// land on the node of each session's slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_every_gateway_on_a_redis_cluster() {
    let c = cluster(Shape { redis_cluster: true, ..Shape::default() }).await;
    let revoked = revocations_reach_every_gateway(&c).await;
    for sid in revoked {
        let key = tokens::revocation::redis_key("gatehouse", &sid);
        assert_eq!(redis_cli(c.redis_ports[0], &["exists", &key]), "1", "{key} is not in the cluster");
    }
}

/// The session id (`sid`) of a login's access token.
fn session_of(login: &Value) -> String {
    use base64::Engine as _;
    let token = login["access_token"].as_str().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sid"].as_str().unwrap().to_owned()
}

/// Revokes three sessions (logout, logout-all, account deletion) and waits
/// until every gateway refuses them; returns their session ids.
async fn revocations_reach_every_gateway(c: &Cluster) -> Vec<String> {
    let (a, b, d) = (c.sign_in().await, c.sign_in().await, c.sign_in().await);
    for login in [&a, &b, &d] {
        for g in 0..3 {
            assert_eq!(c.profile_status(g, login).await, StatusCode::OK);
        }
    }
    let r = c.client.post(c.via_lb("/api/v1/auth/logout")).json(&json!({"refresh_token": a["refresh_token"]}));
    assert_eq!(r.send().await.unwrap().status(), StatusCode::OK);
    let r = c.client.post(c.via_lb("/api/v1/auth/logout-all")).bearer_auth(b["access_token"].as_str().unwrap());
    assert_eq!(r.send().await.unwrap().status(), StatusCode::OK);
    let csrf = d["csrf_token"].as_str().unwrap();
    let r = c
        .client
        .delete(c.via_lb("/api/v1/users/account"))
        .bearer_auth(d["access_token"].as_str().unwrap())
        .header("X-CSRF-Token", csrf)
        .header("Cookie", format!("csrf_token={csrf}"));
    assert_eq!(r.send().await.unwrap().status(), StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(5);
    for login in [&a, &b, &d] {
        for g in 0..3 {
            while c.profile_status(g, login).await != StatusCode::UNAUTHORIZED {
                assert!(Instant::now() < deadline, "gateway {g} still accepts a revoked session after 5 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    [&a, &b, &d].into_iter().map(session_of).collect()
}

/// 20 parallel refreshes of one token, spread over both auth instances:
/// at most one wins, and the session then follows the reuse rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotation_is_atomic_across_auth_instances() {
    let c = cluster(Shape { reuse_interval: 0, ..Shape::default() }).await;
    let login = c.sign_in().await;
    let url = format!("http://127.0.0.1:{}/auth/refresh", c.auth_lb);
    let body = json!({"refresh_token": login["refresh_token"]});
    let attempts = (0..20).map(|_| {
        let (client, url, body) = (c.client.clone(), url.clone(), body.clone());
        tokio::spawn(async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        })
    });
    let results: Vec<(StatusCode, Value)> =
        futures_join(attempts.collect()).await.into_iter().map(|r| r.unwrap()).collect();
    let winners: Vec<&Value> = results.iter().filter(|(s, _)| *s == StatusCode::OK).map(|(_, b)| b).collect();
    assert!(winners.len() <= 1, "{} refreshes of one token succeeded", winners.len());
    assert!(results.iter().all(|(s, _)| *s == StatusCode::OK || *s == StatusCode::UNAUTHORIZED));
    // The losers presented a spent token: reuse, so the whole session is gone.
    if let Some(winner) = winners.first() {
        let r = c.client.post(&url).json(&json!({"refresh_token": winner["refresh_token"]})).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "the session was revoked on reuse");
    }
}

/// Registrations keep flowing through the balancer while one auth instance
/// is killed; every registration that was acknowledged can log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_auth_instance_loses_no_acknowledged_registration() {
    let mut c = cluster(Shape::default()).await;
    let url = format!("http://127.0.0.1:{}/auth/register", c.auth_lb);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (client, url, stop, failures) = (c.client.clone(), url.clone(), stop.clone(), failures.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let email = unique_email("load");
                    let body = json!({"email": email, "password": DEFAULT_PASSWORD, "name": "L"});
                    match client.post(&url).json(&body).send().await {
                        Ok(r) if r.status() == StatusCode::CREATED => acknowledged.push(email),
                        _ => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                acknowledged
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    kill_hard(&mut c.auths[0].0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let acknowledged: Vec<String> = futures_join(workers).await.into_iter().flat_map(|r| r.unwrap()).collect();
    assert!(acknowledged.len() > 20, "the load ran ({} registrations)", acknowledged.len());
    assert_every_account_logs_in(&c.client, &format!("http://127.0.0.1:{}/auth/login", c.auth_lb), &acknowledged).await;
    eprintln!(
        "{} registrations acknowledged, {} failed while an auth instance died",
        acknowledged.len(),
        failures.load(Ordering::Relaxed)
    );
}

/// A gateway killed under load costs at most the requests it had in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_gateway_costs_only_its_in_flight_requests() {
    let mut c = cluster(Shape::default()).await;
    let login = c.sign_in().await;
    let token = login["access_token"].as_str().unwrap().to_owned();
    let url = c.via_lb("/api/v1/users/profile");
    let concurrency = 16;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, ok_after_kill) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let killed = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, token) = (c.client.clone(), url.clone(), token.clone());
            let (stop, ok, failed, ok_after_kill, killed) =
                (stop.clone(), ok.clone(), failed.clone(), ok_after_kill.clone(), killed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.get(&url).bearer_auth(&token).send().await {
                        Ok(r) if r.status() == StatusCode::OK => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if killed.load(Ordering::Relaxed) {
                                ok_after_kill.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    kill_hard(&mut c.gateways[0].0);
    killed.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    futures_join(workers).await;
    let (ok, failed, after) =
        (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed), ok_after_kill.load(Ordering::Relaxed));
    eprintln!("{ok} requests served, {failed} failed, {after} served after the kill");
    assert!(failed <= concurrency, "{failed} requests failed; at most the {concurrency} in flight may");
    assert!(after > 100, "the other gateways kept serving ({after})");
}

/// With Redis down and the revocation feed unreachable, a gateway cannot
/// know about revocations: past the staleness bound it refuses session
/// tokens (fail closed) and its `/ready` fails, unless configured fail-open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_blind_to_revocations_fails_closed_unless_told_otherwise() {
    let mut c = cluster(Shape { third_gateway_fails_open: true, ..Shape::default() }).await;
    let login = c.sign_in().await;
    assert_eq!(c.profile_status(0, &login).await, StatusCode::OK);
    kill_hard(&mut c.redis[0].0);
    for auth in &mut c.auths {
        kill_hard(&mut auth.0);
    }
    // REVOCATION_MAX_STALENESS is 2 s.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let closed =
        c.client.get(c.via_gateway(0, "/api/v1/users/profile")).bearer_auth(login["access_token"].as_str().unwrap());
    assert_eq!(closed.send().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready = c.client.get(c.via_gateway(0, "/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(c.profile_status(2, &login).await, StatusCode::OK, "the fail-open gateway keeps serving");
}
