//! The harness for tests of the real `gatehouse` binary: free ports, a
//! child process killed on drop, readiness polling, SIGTERM and exit.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `n` distinct free loopback ports: each is held until all are picked, so
/// the kernel cannot hand the same one out twice (as `free_port` called `n`
/// times can).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// Registers `email` (with testkit's password) at `register_at` and logs it
/// in at `login_at` — each the root of an auth API (`http://host:port` of an
/// auth process, or a gateway's `…/api/v1`), possibly two instances; the
/// login body.
pub async fn sign_up_and_in(
    client: &reqwest::Client,
    register_at: &str,
    login_at: &str,
    email: &str,
) -> serde_json::Value {
    let password = testkit::DEFAULT_PASSWORD;
    let body = serde_json::json!({"email": email, "password": password, "name": "Tester"});
    let r = client.post(format!("{register_at}/auth/register")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED, "register {email} at {register_at}");
    let body = serde_json::json!({"email": email, "password": password});
    let r = client.post(format!("{login_at}/auth/login")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK, "log {email} in at {login_at}");
    r.json().await.unwrap()
}

/// A child process killed on drop, so a failing test leaves nothing running.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn gatehouse(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

pub async fn wait_ready(base: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/ready")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base} did not become ready");
}

pub fn sigterm(child: &Child) {
    signal(child, "TERM");
}

pub fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not exit in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Free ports for every service of `gatehouse up`, so tests run side by side.
pub struct StackPorts {
    pub gateway: u16,
    pub auth: u16,
    pub users: u16,
    pub payments: u16,
    pub notifications: u16,
}

impl StackPorts {
    pub fn new() -> Self {
        // Distinct: a service that cannot bind would leave its port to another.
        let [gateway, auth, users, payments, notifications] = free_ports(5)[..] else {
            unreachable!("free_ports(5) gives five ports")
        };
        Self { gateway, auth, users, payments, notifications }
    }

    /// The `*_PORT` variables of `up`.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("GATEWAY_PORT", self.gateway.to_string()),
            ("AUTH_PORT", self.auth.to_string()),
            ("USERS_PORT", self.users.to_string()),
            ("PAYMENTS_PORT", self.payments.to_string()),
            ("NOTIFICATIONS_PORT", self.notifications.to_string()),
        ]
    }

    pub fn url(port: u16) -> String {
        format!("http://127.0.0.1:{port}")
    }
}

/// A private `redis-server` on a free loopback port (nothing on disk), so a
/// test may stop it without disturbing other tests.
pub fn private_redis() -> (Running, u16) {
    let port = free_port();
    (redis_on(port), port)
}

/// `redis-server` on `port` (to bring a stopped one back where it was).
pub fn redis_on(port: u16) -> Running {
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/test installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Running(child)
}

/// Sends `signal` (e.g. `STOP`, `CONT`, `TERM`) to `child`.
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// One HAProxy backend: a name, the port it listens on, the servers' ports.
pub struct Balanced<'a> {
    pub name: &'a str,
    pub listen: u16,
    pub servers: &'a [u16],
}

/// HAProxy (`haproxy` from Debian, installed by scripts/test) balancing each
/// of `backends` round robin, health-checking `GET /ready` every 200 ms and
/// retrying a failed connection on another server, the way a deployment
/// puts it in front of several gateways or auth instances.
pub fn haproxy(dir: &std::path::Path, backends: &[Balanced<'_>]) -> Running {
    let mut cfg = String::from(
        "global\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  \
         timeout server 30s\n  option forwardfor\n  retries 3\n  option redispatch\n  \
         retry-on conn-failure empty-response response-timeout\n",
    );
    for b in backends {
        cfg.push_str(&format!(
            "frontend {0}_in\n  bind 127.0.0.1:{1}\n  default_backend {0}\nbackend {0}\n  balance roundrobin\n  \
             option httpchk GET /ready\n  default-server inter 200ms fall 1 rise 2\n",
            b.name, b.listen
        ));
        for (i, port) in b.servers.iter().enumerate() {
            cfg.push_str(&format!("  server {}{i} 127.0.0.1:{port} check\n", b.name));
        }
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
    let child = Command::new("haproxy")
        .args(["-db", "-f", path.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        // Its server up/down warnings are expected; kept for a failure's message.
        .stderr(log)
        .spawn()
        .expect("haproxy is installed (scripts/test installs it)");
    let mut child = Running(child);
    for b in backends {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", b.listen)).is_err() {
            let exited = child.0.try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default();
                panic!("haproxy did not start ({exited:?}):\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    child
}

/// SIGKILL: the process dies with whatever it had in flight.
pub fn kill_hard(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
pub mod cluster;

/// A private PostgreSQL server (`initdb` + `postgres` from Debian's
/// `/usr/lib/postgresql/<version>/bin`, the highest version installed) on a
/// free loopback port with its data in a temp dir, so a test may stop and
/// start it without touching the machine's cluster that every other test
/// shares. PostgreSQL refuses to run as root, so as root the data dir is
/// handed to the `postgres` user (which Debian's `postgresql` package
/// creates) and the server runs as that user.
pub struct PrivatePostgres {
    server: Option<Running>,
    pub port: u16,
    bin: std::path::PathBuf,
    data: std::path::PathBuf,
    // Dropped last: the server is gone before its files are.
    _dir: tempfile::TempDir,
}

impl PrivatePostgres {
    pub fn start() -> Self {
        let bin = postgres_bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if let Some((uid, gid)) = postgres_user_if_root() {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let out = as_postgres_user(Command::new(bin.join("initdb")))
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut pg = Self { server: None, port: free_port(), bin, data, _dir: dir };
        pg.start_again();
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) on the same port and data, and waits until
    /// it accepts connections.
    pub fn start_again(&mut self) {
        assert!(self.server.is_none(), "already running");
        let log = std::fs::File::options().create(true).append(true).open(self.log_path()).unwrap();
        let child = as_postgres_user(Command::new(self.bin.join("postgres")))
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "shared_buffers=16MB"])
            // The socket next to the data, not in /var/run/postgresql.
            .args(["-c", &format!("unix_socket_directories={}", self.data.display())])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = Running(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .unwrap();
            if ready.success() {
                break;
            }
            let exited = server.0.try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                panic!("postgres did not start ({exited:?}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.server = Some(server);
    }

    /// Fast shutdown (SIGINT): open transactions are rolled back, clients are
    /// disconnected, the server exits; waits until it has.
    pub fn stop_fast(&mut self) {
        let mut server = self.server.take().expect("running");
        signal(&server.0, "INT");
        let status = wait_exit(&mut server.0, Duration::from_secs(30));
        assert!(status.success(), "postgres exited with {status:?}:\n{}", self.log());
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.data.with_file_name("postgres.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for PrivatePostgres {
    /// A fast shutdown rather than `Running`'s SIGKILL, so the server's
    /// children and shared memory go with it.
    fn drop(&mut self) {
        if let Some(server) = &mut self.server {
            signal(&server.0, "INT");
            let deadline = Instant::now() + Duration::from_secs(10);
            while server.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn postgres_bin_dir() -> std::path::PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries are installed under /usr/lib/postgresql (scripts/test installs them)");
    versions
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .max()
        .map(|v| std::path::PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")))
        .expect("a version directory under /usr/lib/postgresql")
}

/// The `postgres` user's uid and gid when this process runs as root (the
/// owner of `/proc/self` is the effective uid), else `None`: run as is.
fn postgres_user_if_root() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt as _;
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let entry = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("a `postgres` user (Debian's postgresql package makes one)");
    let fields: Vec<&str> = entry.split(':').collect();
    Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
}

fn as_postgres_user(mut cmd: Command) -> Command {
    use std::os::unix::process::CommandExt as _;
    if let Some((uid, gid)) = postgres_user_if_root() {
        cmd.uid(uid).gid(gid).env("HOME", "/tmp");
    }
    cmd
}

/// A Redis Cluster of three primaries, each with `replicas_per_primary`
/// replicas, on free loopback ports (`redis-server --cluster-enabled yes`,
/// each node in its own directory under `dir`, joined by `redis-cli
/// --cluster create`), ready once every node reports `cluster_state:ok` and
/// every replica's link to its primary is up (a replica that has not synced
/// cannot take over). Returns the nodes and their ports.
pub fn private_redis_cluster(dir: &std::path::Path, replicas_per_primary: usize) -> (Vec<Running>, Vec<u16>) {
    let count = 3 * (1 + replicas_per_primary);
    // Client and cluster-bus ports, all distinct.
    let mut ports = free_ports(2 * count);
    let bus_ports = ports.split_off(count);
    let mut nodes = Vec::new();
    for (port, bus_port) in ports.iter().zip(&bus_ports) {
        let node_dir = dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&node_dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            // The cluster bus on a free port of its own (the default, port + 10000, may be taken or past 65535).
            .args(["--cluster-enabled", "yes", "--cluster-port", &bus_port.to_string()])
            .args(["--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"])
            // As the README advises: while a primary fails over, the other
            // primaries keep answering for their own slots (with Redis'
            // default, `yes`, every node refuses every command meanwhile).
            .args(["--cluster-require-full-coverage", "no"])
            .arg("--dir")
            .arg(&node_dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        nodes.push(Running(child));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (port, node) in ports.iter().zip(&mut nodes) {
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
            // A port taken meanwhile by another test makes the node exit at once.
            if let Ok(Some(status)) = node.0.try_wait() {
                panic!("redis-server on port {port} exited: {status}");
            }
            assert!(Instant::now() < deadline, "redis-server on port {port} did not start within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let members: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&members)
        .args(["--cluster-replicas", &replicas_per_primary.to_string(), "--cluster-yes"])
        .output()
        .expect("redis-cli is installed (scripts/test installs it)");
    assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
    let deadline = Instant::now() + Duration::from_secs(20);
    for port in &ports {
        loop {
            let info = Command::new("redis-cli").args(["-p", &port.to_string(), "cluster", "info"]).output().unwrap();
            let replication =
                Command::new("redis-cli").args(["-p", &port.to_string(), "info", "replication"]).output().unwrap();
            let replication = String::from_utf8_lossy(&replication.stdout);
            let synced = !replication.contains("role:slave") || replication.contains("master_link_status:up");
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") && synced {
                break;
            }
            assert!(Instant::now() < deadline, "the Redis Cluster did not converge");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    (nodes, ports)
}
