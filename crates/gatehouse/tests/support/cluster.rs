//! A Gatehouse deployment on loopback: `gatehouse auth` instances,
//! `gatehouse users`, `gatehouse gateway` instances, HAProxy in front of the
//! gateways and of the auth instances, one PostgreSQL schema and a private
//! Redis (one server, or a three-node Redis Cluster) — built from the real
//! binary by the scale-out and fault suites.

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{Backend, TestDatabase, postgres_base_url, unique_email};
use tokens::{Algorithm, SigningKey};

use super::{Balanced, Running, free_ports, gatehouse, haproxy, private_redis, private_redis_cluster, wait_ready};

/// Knobs a test turns on the cluster.
#[derive(Clone, Copy)]
pub struct Shape {
    /// `REFRESH_TOKEN_REUSE_INTERVAL` of the auth instances.
    pub reuse_interval: u32,
    /// `RATE_LIMIT_PER_MINUTE` / `RATE_LIMIT_BURST` of the gateways.
    pub per_minute: u32,
    pub burst: u32,
    /// `REVOCATION_FAIL_OPEN` of the third gateway (the others fail closed).
    pub third_gateway_fails_open: bool,
    /// `UPSTREAM_TIMEOUT_MS` of the gateways.
    pub upstream_timeout_ms: u32,
    /// A three-node Redis Cluster as the shared store instead of one server.
    pub redis_cluster: bool,
    /// With `redis_cluster`: one replica per primary (six nodes), so a
    /// primary can fail over.
    pub redis_replicas: bool,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            reuse_interval: 10,
            per_minute: 60_000,
            burst: 5_000,
            third_gateway_fails_open: false,
            upstream_timeout_ms: 30_000,
            redis_cluster: false,
            redis_replicas: false,
        }
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub db: TestDatabase,
    /// The Redis server, or the nodes of the Redis Cluster (primaries first,
    /// then their replicas), in the order of `redis_ports`.
    pub redis: Vec<Running>,
    pub redis_ports: Vec<u16>,
    pub auths: Vec<Running>,
    pub gateways: Vec<Running>,
    pub users: Running,
    pub users_port: u16,
    /// How `users` was started, to start it again.
    pub users_env: Vec<(String, String)>,
    pub haproxy: Running,
    pub gateway_ports: Vec<u16>,
    pub gateway_lb: u16,
    pub auth_lb: u16,
    pub client: reqwest::Client,
}

pub fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

pub async fn cluster(shape: Shape) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::new(Backend::Postgres).await;
    let schema = db.schema.clone().unwrap();
    let (redis, redis_ports) = if shape.redis_cluster {
        private_redis_cluster(dir.path(), usize::from(shape.redis_replicas))
    } else {
        let (redis, port) = private_redis();
        (vec![redis], vec![port])
    };
    let key = dir.path().join("jwt-eddsa.pem");
    std::fs::write(&key, SigningKey::generate_pem(Algorithm::EdDsa).unwrap()).unwrap();
    // 48 random bytes, as `openssl rand -hex 48` would give an operator.
    let secret = |_: &str| hex_of(tokens::Secret::generate().unwrap().expose());
    // Distinct ports: with one `free_port` call each, two could come out the
    // same, and a gateway that cannot bind leaves its port to, say, the
    // users service, which then answers the gateway's traffic.
    let ports = free_ports(9);
    let (auth_ports, gateway_ports) = ([ports[0], ports[1]], [ports[2], ports[3], ports[4]]);
    let (users_port, auth_lb, gateway_lb, nobody_port) = (ports[5], ports[6], ports[7], ports[8]);
    let common: Vec<(String, String)> = [
        ("ENVIRONMENT", "development".to_owned()),
        ("DATA_DIR", dir.path().join("data").display().to_string()),
        ("DATABASE_URL", format!("{}?options=-c%20search_path%3D{schema}", postgres_base_url())),
        ("JWT_ALGORITHM", "EdDSA".to_owned()),
        ("JWT_PRIVATE_KEY_FILE", key.display().to_string()),
        ("CSRF_SECRET", secret("csrf")),
        ("REFRESH_TOKEN_SECRET", secret("refresh")),
        // 32 random bytes as hex; set, so two auth processes never race to generate it.
        ("MFA_ENCRYPTION_KEY", secret("mfa")[..64].to_owned()),
        ("GATEWAY_SECRET", secret("gateway")),
        ("AUTH_SERVICE_URL", format!("http://127.0.0.1:{auth_lb}")),
        ("USER_SERVICE_URL", format!("http://127.0.0.1:{users_port}")),
        // Nobody listens there: deliveries retry in the background, harmlessly.
        ("NOTIFICATION_SERVICE_URL", format!("http://127.0.0.1:{nobody_port}")),
        ("GATEHOUSE_TEST_ONLY_WEAK_PASSWORD_HASHING", "true".to_owned()),
        ("RUST_LOG", "error".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    // A Redis Cluster is named by its seed nodes, comma-separated.
    let redis_url = redis_ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let with = |extra: &[(&str, String)]| {
        let mut env = common.clone();
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    };
    // `migrate` once, so the instances don't race to create the tables.
    let status = gatehouse(&["migrate"], &env_refs(&common), dir.path()).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let mut auths = Vec::new();
    for port in auth_ports {
        let env = with(&[
            ("PORT", port.to_string()),
            ("REDIS_URL", redis_url.clone()),
            ("REFRESH_TOKEN_REUSE_INTERVAL", shape.reuse_interval.to_string()),
            ("LOGIN_MAX_FAILURES", "1000".to_owned()),
        ]);
        auths.push(Running(gatehouse(&["auth"], &env_refs(&env), dir.path()).spawn().unwrap()));
    }
    // The users service keeps its replay cache in memory: it is one instance.
    let users_env = with(&[("PORT", users_port.to_string())]);
    let mut users = Running(gatehouse(&["users"], &env_refs(&users_env), dir.path()).spawn().unwrap());
    for port in auth_ports.iter().chain([&users_port]) {
        wait_ready(&format!("http://127.0.0.1:{port}")).await;
    }
    let lb = haproxy(
        dir.path(),
        &[
            Balanced { name: "auth", listen: auth_lb, servers: &auth_ports },
            Balanced { name: "gateway", listen: gateway_lb, servers: &gateway_ports },
        ],
    );
    let mut gateways = Vec::new();
    for (i, port) in gateway_ports.iter().enumerate() {
        let fail_open = i == 2 && shape.third_gateway_fails_open;
        let env = with(&[
            ("PORT", port.to_string()),
            ("REDIS_URL", redis_url.clone()),
            // HAProxy (and the test, naming its simulated clients) is on loopback.
            ("TRUSTED_PROXIES", "127.0.0.1/32".to_owned()),
            ("RATE_LIMIT_PER_MINUTE", shape.per_minute.to_string()),
            ("RATE_LIMIT_BURST", shape.burst.to_string()),
            ("AUTH_RATE_LIMIT_PER_MINUTE", "60000".to_owned()),
            ("AUTH_RATE_LIMIT_BURST", "5000".to_owned()),
            ("USER_RATE_LIMIT_PER_MINUTE", "60000".to_owned()),
            ("USER_RATE_LIMIT_BURST", "5000".to_owned()),
            ("REVOCATION_POLL_INTERVAL_MS", "250".to_owned()),
            ("REVOCATION_MAX_STALENESS", "2".to_owned()),
            ("REVOCATION_FAIL_OPEN", fail_open.to_string()),
            ("UPSTREAM_TIMEOUT_MS", shape.upstream_timeout_ms.to_string()),
            ("SHUTDOWN_DRAIN_TIMEOUT", "10".to_owned()),
        ]);
        gateways.push(Running(gatehouse(&["gateway"], &env_refs(&env), dir.path()).spawn().unwrap()));
    }
    for port in &gateway_ports {
        wait_ready(&format!("http://127.0.0.1:{port}")).await;
    }
    wait_ready(&format!("http://127.0.0.1:{gateway_lb}")).await;
    // Ready answers could come from another test's process on a port one of
    // ours failed to bind: every process started must still be running.
    for process in auths.iter_mut().chain(&mut gateways).chain([&mut users]) {
        if let Ok(Some(status)) = process.0.try_wait() {
            panic!("a cluster process exited at startup ({status}): its port was probably taken");
        }
    }
    Cluster {
        dir,
        db,
        redis,
        redis_ports,
        auths,
        gateways,
        users,
        users_port,
        users_env,
        haproxy: lb,
        gateway_ports: gateway_ports.to_vec(),
        gateway_lb,
        auth_lb,
        client: reqwest::Client::new(),
    }
}

impl Cluster {
    pub fn via_lb(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.gateway_lb)
    }

    pub fn via_gateway(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.gateway_ports[i])
    }

    pub async fn sign_in(&self) -> Value {
        let api = self.via_lb("/api/v1");
        super::sign_up_and_in(&self.client, &api, &api, &unique_email("scale")).await
    }

    pub async fn profile_status(&self, gateway: usize, login: &Value) -> StatusCode {
        self.client
            .get(self.via_gateway(gateway, "/api/v1/users/profile"))
            .bearer_auth(login["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status()
    }
}

/// Every account in `emails` (registered with testkit's password) logs in
/// at `login_url`: what "no acknowledged registration was lost" means.
/// Eight clients in parallel, so a few hundred accounts take seconds.
pub async fn assert_every_account_logs_in(client: &reqwest::Client, login_url: &str, emails: &[String]) {
    let checks: Vec<_> = emails
        .chunks(emails.len().div_ceil(8))
        .map(|emails| {
            let (client, url, emails) = (client.clone(), login_url.to_owned(), emails.to_vec());
            tokio::spawn(async move {
                for email in emails {
                    let body = json!({"email": email, "password": testkit::DEFAULT_PASSWORD});
                    let r = client.post(&url).json(&body).send().await;
                    assert_eq!(r.unwrap().status(), StatusCode::OK, "{email} was acknowledged but cannot log in");
                }
            })
        })
        .collect();
    for check in futures_join(checks).await {
        check.unwrap();
    }
}

pub async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await);
    }
    out
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
