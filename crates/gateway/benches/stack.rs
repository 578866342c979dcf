//! Cost of the whole gateway stack per request, in process: request id,
//! CORS, routing, the IP and user rate limits (in-memory), the access token
//! (EdDSA and RS256, static keys, no revocation feed), the signed identity
//! assertion, and the pooled proxy to a tiny axum upstream on loopback, the
//! response body read to the end.
//!
//! The gateway caches verified tokens (`keys.rs`), so each algorithm gets:
//! - `GET 200, token cached`: one token sent again and again, the steady
//!   state of one client (and what `bench/gateway.sh` drives with wrk);
//! - `GET 200, token not cached`: every request a token the gateway has not
//!   seen (bearer parse, full signature check, cache insert), as for the
//!   first request of each new token;
//! - `GET 401, bad signature`: the signature is checked and fails, nothing
//!   is proxied.
//!
//! and, as the floor, `upstream direct`: the same GET sent straight to the
//! upstream over the gateway's own upstream pool (`upstream.rs`, what the
//! proxy sends through), so `200 − upstream direct` is roughly what the
//! gateway adds; and, for comparison, over hyper-util's pooled client (what
//! the proxy used before, and still what fetches the JWKS).
//!
//! Everything runs on one current-thread tokio runtime driven by
//! `block_on`, on the bench's own thread, without cross-thread wake-ups. The
//! time reported is that thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`:
//! system calls and the loopback's in-line network processing included),
//! not wall time: the machine is shared with builds and tests, and CPU time
//! barely moves when another process competes for the cores, where wall time
//! doubles. Off Unix it falls back to wall time and says so. Figures only; `bench/gateway.sh`
//! measures the release binary under wrk.
// A benchmark: a failed setup should stop it loudly, as in tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use criterion::{Criterion, criterion_group, criterion_main};
use gateway::edge::Gateway;
use gateway::keys::{KeySourceConfig, VerifyingKeysHolder};
use gateway::rate_limit::Quota;
use gateway::routes::{RouteTable, ServiceUrls};
use gateway::{GatewayConfig, GatewayState};
use tokens::{AccessTokenIssuer, Algorithm, CsrfKey, Secret, SigningKey, VerifyingKeys};
use tokio::runtime::Runtime;
use tower::ServiceExt as _;

/// The upstream's fixed body (the same 106 bytes as `bench/peers.sh`).
const UPSTREAM_BODY: &str =
    r#"{"user_id":"usr_7f3a9c2e","name":"Bench User","email":"bench.user@example.com","plan":"pro","active":true}"#;
const PATH: &str = "/api/v1/users/profile";

/// The calling thread's CPU time so far (`CLOCK_THREAD_CPUTIME_ID`), or
/// `None` off Unix (then the benches use wall time).
fn thread_cpu_time() -> Option<Duration> {
    #[cfg(unix)]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Some(Duration::new(u64::try_from(t.tv_sec).ok()?, u32::try_from(t.tv_nsec).ok()?))
    }
    #[cfg(not(unix))]
    None
}

/// Runs `run` once per prepared input and returns the CPU time (else wall
/// time) of the whole loop; preparing the inputs is not counted.
fn timed<I>(inputs: Vec<I>, mut run: impl FnMut(I)) -> Duration {
    let (cpu, wall) = (thread_cpu_time(), Instant::now());
    for input in inputs {
        run(input);
    }
    match (cpu, thread_cpu_time()) {
        (Some(start), Some(end)) => end.saturating_sub(start),
        _ => wall.elapsed(),
    }
}

/// A tiny upstream on `127.0.0.1:0`, spawned on `rt`; returns its base URL.
fn spawn_upstream(rt: &Runtime) -> String {
    rt.block_on(async {
        let app = Router::new().route(
            "/users/profile",
            axum::routing::get(|| async { ([(header::CONTENT_TYPE, "application/json")], UPSTREAM_BODY) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    })
}

/// A gateway state whose protected routes go to `upstream`, verifying with `key` only.
fn gateway_state(rt: &Runtime, upstream: &str, key: &SigningKey) -> GatewayState {
    let urls = ServiceUrls {
        auth: upstream.to_owned(),
        users: upstream.to_owned(),
        payments: upstream.to_owned(),
        notifications: upstream.to_owned(),
    };
    let mut config = GatewayConfig::new(
        RouteTable::defaults(&urls).unwrap(),
        KeySourceConfig::Static(VerifyingKeysHolder(VerifyingKeys::new([key.verifying_key()]))),
        CsrfKey::new(Secret::generate().unwrap()),
        vec![Secret::generate().unwrap()],
    );
    // Millions of requests from one IP and one user: never the limiter's answer.
    let huge = Quota { per_minute: 100_000_000, burst: 1_000_000 };
    config.ip_quota = huge;
    config.auth_ip_quota = huge;
    config.user_quota = huge;
    config.redis_url = None;
    config.revocation = None;
    rt.block_on(gateway::build_state(config)).unwrap()
}

/// `GET /api/v1/users/profile` with the token, as the server would hand it to the router.
fn request(token: &str) -> Request<Body> {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(PATH)
        .header(header::HOST, "127.0.0.1:18080")
        .header(header::USER_AGENT, "criterion")
        .header(header::ACCEPT, "*/*")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    // What `into_make_service_with_connect_info` adds; the proxy handler extracts it.
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 50_000))));
    request
}

/// One request through the gateway; the response body is read to the end.
async fn send(app: Gateway, request: Request<Body>, expect: StatusCode) -> bytes::Bytes {
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), expect);
    axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap()
}

/// The token with one signature character changed (the first one, so real
/// signature bits change, not base64 padding): parses, then fails the check.
fn bad_signature(token: &str) -> String {
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    format!("{signed}.{first}{}", &signature[1..])
}

/// Requests whose token the gateway has not verified yet. Signing RS256 costs
/// about a millisecond, too slow to do per iteration, so a pool of tokens is
/// signed once and a fresh gateway state (an empty cache) is built, untimed,
/// each time the pool has been used up; each new state is warmed with another
/// token first (upstream connection open, rate-limit keys present), so only
/// the token cache misses.
struct UncachedRequests<'a> {
    rt: &'a Runtime,
    upstream: &'a str,
    key: &'a SigningKey,
    tokens: Vec<String>,
    warm_token: String,
    app: Option<Gateway>,
    next: usize,
}

impl UncachedRequests<'_> {
    const POOL: usize = 256;

    fn next(&mut self) -> (Gateway, Request<Body>) {
        if self.next.is_multiple_of(Self::POOL) || self.app.is_none() {
            let app = gateway::app(gateway_state(self.rt, self.upstream, self.key));
            self.rt.block_on(send(app.clone(), request(&self.warm_token), StatusCode::OK));
            self.app = Some(app);
        }
        let token = &self.tokens[self.next % Self::POOL];
        self.next += 1;
        (self.app.clone().unwrap(), request(token))
    }
}

fn stack(c: &mut Criterion) {
    if thread_cpu_time().is_none() {
        eprintln!("note: no thread CPU clock here; reporting wall time, not CPU time");
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let upstream = spawn_upstream(&rt);
    let now =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()).unwrap();

    let mut group = c.benchmark_group("gateway stack");
    for alg in [Algorithm::EdDsa, Algorithm::Rs256] {
        let key = Arc::new(SigningKey::from_pem(alg, SigningKey::generate_pem(alg).unwrap().as_bytes()).unwrap());
        let state = gateway_state(&rt, &upstream, &key);
        let app = gateway::app(state);
        let issuer = AccessTokenIssuer::new(Arc::clone(&key), "gatehouse", "gatehouse", 900);
        let issue = || issuer.issue("user-4242", "bench.user@example.com", "session-1", now).unwrap().0;
        let token = issue();
        let forged = bad_signature(&token);

        // Correctness first: 200 with the upstream's body, 401 for the forged token.
        let body = rt.block_on(send(app.clone(), request(&token), StatusCode::OK));
        assert_eq!(body, UPSTREAM_BODY.as_bytes());
        rt.block_on(send(app.clone(), request(&forged), StatusCode::UNAUTHORIZED));

        group.bench_function(format!("{} GET 200, token cached", alg.as_str()), |b| {
            b.iter_custom(|iters| {
                let requests = (0..iters).map(|_| request(&token)).collect();
                timed(requests, |req| {
                    black_box(rt.block_on(send(app.clone(), req, StatusCode::OK)));
                })
            })
        });
        let mut uncached = UncachedRequests {
            rt: &rt,
            upstream: &upstream,
            key: &key,
            tokens: (0..UncachedRequests::POOL).map(|_| issue()).collect(),
            warm_token: issue(),
            app: None,
            next: 0,
        };
        group.bench_function(format!("{} GET 200, token not cached", alg.as_str()), |b| {
            b.iter_custom(|iters| {
                let requests = (0..iters).map(|_| uncached.next()).collect();
                timed(requests, |(app, req)| {
                    black_box(rt.block_on(send(app, req, StatusCode::OK)));
                })
            })
        });
        group.bench_function(format!("{} GET 401, bad signature", alg.as_str()), |b| {
            b.iter_custom(|iters| {
                let requests = (0..iters).map(|_| request(&forged)).collect();
                timed(requests, |req| {
                    black_box(rt.block_on(send(app.clone(), req, StatusCode::UNAUTHORIZED)));
                })
            })
        });
    }

    // The floor: the same GET straight to the upstream over the gateway's own clients.
    let key = SigningKey::hs256(&Secret::generate().unwrap()).unwrap();
    let state = gateway_state(&rt, &upstream, &key);
    let target: axum::http::Uri = upstream.parse().unwrap();
    let pool = Arc::clone(state.upstream(&target).unwrap());
    let host = target.authority().unwrap().as_str().to_owned();
    group.bench_function("upstream direct (gateway's upstream pool)", |b| {
        b.iter_custom(|iters| {
            let requests = (0..iters)
                .map(|_| {
                    Request::get("/users/profile").header(header::HOST, host.as_str()).body(Body::empty()).unwrap()
                })
                .collect();
            timed(requests, |req| {
                black_box(rt.block_on(async {
                    let response = pool.send(req).await.unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                    axum::body::to_bytes(Body::new(response.into_body()), 1 << 20).await.unwrap()
                }));
            })
        })
    });
    let client = state.client().clone();
    let url = format!("{upstream}/users/profile");
    group.bench_function("upstream direct (hyper-util pooled client)", |b| {
        b.iter_custom(|iters| {
            let requests = (0..iters).map(|_| Request::get(url.as_str()).body(Body::empty()).unwrap()).collect();
            timed(requests, |req| {
                black_box(rt.block_on(async {
                    let response = client.request(req).await.unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                    axum::body::to_bytes(Body::new(response.into_body()), 1 << 20).await.unwrap()
                }));
            })
        })
    });
    group.finish();
}

criterion_group!(benches, stack);
criterion_main!(benches);
