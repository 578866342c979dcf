//! The container deployment — `Dockerfile`, `docker-compose.yml`,
//! `.env.example`, `.dockerignore` — checked without a Docker engine, and
//! `gatehouse healthcheck`, which the image uses as its health check.
//!
//! What can be checked without Docker is checked against the real binary:
//! every compose `command` and health check is a subcommand it accepts;
//! every variable is one it reads; the placeholders of `.env.example` are
//! refused, by Compose or by the binary; and the compose environment of each
//! service, interpolated the way Compose does it (paths and host names
//! mapped to this machine), brings up a stack that passes its own health
//! checks in `depends_on` order and serves a login through the gateway.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use testkit::{TestDatabase, postgres_base_url, unique_email};
use yaml_rust2::{Yaml, YamlLoader};

use support::{BIN, Running, StackPorts, free_port, gatehouse, sign_up_and_in, wait_ready};

/// The image every gatehouse service of the compose file runs.
const IMAGE: &str = "gatehouse:local";

/// Variables the compose file or `.env.example` may name although
/// `crates/gatehouse/src/config.rs` does not read them.
const NOT_IN_CONFIG: &[&str] = &[
    // tracing-subscriber's EnvFilter reads it (telemetry.rs).
    "RUST_LOG",
    // The postgres image's; Compose puts it into DATABASE_URL.
    "POSTGRES_PASSWORD",
];

/// `.env.example` settings that are not secrets (kept as they are).
const NOT_SECRET: &[&str] = &["JWT_ALGORITHM"];

/// The placeholder gatehouse must refuse.
const PLACEHOLDER: &str = "CHANGE_ME";

// --- the files ----------------------------------------------------------------

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn read(file: &str) -> String {
    std::fs::read_to_string(root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn compose() -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML");
    assert_eq!(docs.len(), 1, "one YAML document");
    docs.remove(0)
}

/// The `(name, definition)` of each compose service, in file order.
fn services(compose: &Yaml) -> Vec<(String, Yaml)> {
    entries(&compose["services"])
}

fn gatehouse_services(compose: &Yaml) -> Vec<(String, Yaml)> {
    services(compose).into_iter().filter(|(_, s)| s["image"].as_str() == Some(IMAGE)).collect()
}

fn service(compose: &Yaml, name: &str) -> Yaml {
    services(compose).into_iter().find(|(n, _)| n == name).map(|(_, s)| s).unwrap_or_else(|| panic!("no {name}"))
}

/// The entries of a mapping with string keys (none when `y` is not one).
fn entries(y: &Yaml) -> Vec<(String, Yaml)> {
    y.as_hash()
        .map(|h| h.iter().map(|(k, v)| (k.as_str().expect("string keys").to_owned(), v.clone())).collect())
        .unwrap_or_default()
}

/// A sequence of strings (none when `y` is absent).
fn strings(y: &Yaml) -> Vec<String> {
    if y.is_badvalue() {
        return Vec::new();
    }
    y.as_vec()
        .unwrap_or_else(|| panic!("expected a list, got {y:?}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("expected a string, got {v:?}")).to_owned())
        .collect()
}

/// A scalar as Compose reads it.
fn scalar(y: &Yaml) -> String {
    match y {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Null => String::new(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// A service's `environment:` (a mapping), uninterpolated.
fn environment(svc: &Yaml) -> Vec<(String, String)> {
    assert!(svc["environment"].is_hash() || svc["environment"].is_badvalue(), "environment: as a mapping");
    entries(&svc["environment"]).into_iter().map(|(k, v)| (k, scalar(&v))).collect()
}

fn env_value(svc: &Yaml, var: &str) -> Option<String> {
    environment(svc).into_iter().find(|(k, _)| k == var).map(|(_, v)| v)
}

/// A service's networks, in either of Compose's two forms.
fn networks(svc: &Yaml) -> Vec<String> {
    match &svc["networks"] {
        Yaml::Array(_) => strings(&svc["networks"]),
        y => entries(y).into_iter().map(|(k, _)| k).collect(),
    }
}

/// `.env.example`: each assignment, and the names of the commented-out ones.
fn env_example() -> (Vec<(String, String)>, Vec<String>) {
    let is_name = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_uppercase())
            && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    };
    let (mut set, mut commented) = (Vec::new(), Vec::new());
    for line in read(".env.example").lines().map(str::trim) {
        if let Some(comment) = line.strip_prefix('#') {
            if let Some((name, _)) = comment.trim().split_once('=')
                && is_name(name)
            {
                commented.push(name.to_owned());
            }
        } else if let Some((name, value)) = line.split_once('=') {
            assert!(is_name(name), ".env.example: `{line}`");
            let value = value.trim();
            assert!(!value.contains(" #"), ".env.example: put comments on their own line: `{line}`");
            set.push((name.to_owned(), value.trim_matches(|c| c == '"' || c == '\'').to_owned()));
        } else {
            assert!(line.is_empty(), ".env.example: `{line}` is neither a comment nor an assignment");
        }
    }
    (set, commented)
}

/// Whether the gatehouse binary reads `name` (config.rs quotes each name it reads).
fn read_by_gatehouse(name: &str) -> bool {
    NOT_IN_CONFIG.contains(&name) || read("crates/gatehouse/src/config.rs").contains(&format!("\"{name}\""))
}

// --- Compose's interpolation ---------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `${X}` or `$X`: empty when unset.
    Plain,
    /// `${X:-d}` (`colon`) or `${X-d}`.
    Default { colon: bool },
    /// `${X:?e}` (`colon`: also refused when empty) or `${X?e}`.
    Required { colon: bool },
}

#[derive(Debug)]
enum Piece {
    Text(String),
    Var { name: String, kind: Kind, arg: String },
}

/// Splits `text` the way Compose reads it: `$$` is a `$`; `${NAME…}` and `$NAME` are variables.
fn pieces(text: &str) -> Vec<Piece> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        literal.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(after) = after.strip_prefix('$') {
            literal.push('$');
            rest = after;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').unwrap_or_else(|| panic!("unclosed ${{ in `{text}`"));
            let inner = &body[..end];
            let name_end = inner.find(|c: char| !is_name_char(c)).unwrap_or(inner.len());
            let (name, op) = inner.split_at(name_end);
            assert!(!name.is_empty(), "empty variable name in `{text}`");
            let (kind, arg) = if op.is_empty() {
                (Kind::Plain, "")
            } else if let Some(a) = op.strip_prefix(":-") {
                (Kind::Default { colon: true }, a)
            } else if let Some(a) = op.strip_prefix('-') {
                (Kind::Default { colon: false }, a)
            } else if let Some(a) = op.strip_prefix(":?") {
                (Kind::Required { colon: true }, a)
            } else if let Some(a) = op.strip_prefix('?') {
                (Kind::Required { colon: false }, a)
            } else {
                panic!("unsupported interpolation `${{{inner}}}` in `{text}`")
            };
            out.push(Piece::Text(std::mem::take(&mut literal)));
            out.push(Piece::Var { name: name.to_owned(), kind, arg: arg.to_owned() });
            rest = &body[end + 1..];
        } else if after.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            let end = after.find(|c: char| !is_name_char(c)).unwrap_or(after.len());
            out.push(Piece::Text(std::mem::take(&mut literal)));
            out.push(Piece::Var { name: after[..end].to_owned(), kind: Kind::Plain, arg: String::new() });
            rest = &after[end..];
        } else {
            literal.push('$');
            rest = after;
        }
    }
    literal.push_str(rest);
    out.push(Piece::Text(literal));
    out
}

/// Every variable `text` refers to.
fn references(text: &str) -> Vec<(String, Kind)> {
    pieces(text)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Var { name, kind, .. } => Some((name, kind)),
            Piece::Text(_) => None,
        })
        .collect()
}

/// `text` with its variables replaced from `vars` (a `.env`), or the error Compose would stop with.
fn interpolate(text: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    for piece in pieces(text) {
        match piece {
            Piece::Text(t) => out.push_str(&t),
            Piece::Var { name, kind, arg } => {
                let value = vars.get(&name);
                let empty = value.is_none_or(String::is_empty);
                match kind {
                    Kind::Plain => out.push_str(value.map_or("", String::as_str)),
                    Kind::Default { colon } if value.is_none() || (colon && empty) => out.push_str(&arg),
                    Kind::Required { colon } if value.is_none() || (colon && empty) => {
                        return Err(format!("required variable {name} is missing a value: {arg}"));
                    }
                    _ => out.push_str(value.map_or("", String::as_str)),
                }
            }
        }
    }
    Ok(out)
}

// --- the Dockerfile -------------------------------------------------------------

struct Stage {
    from: String,
    name: Option<String>,
    /// `(INSTRUCTION, arguments)`, continuation lines joined, comments dropped.
    instructions: Vec<(String, String)>,
}

impl Stage {
    fn all(&self, instruction: &str) -> Vec<&str> {
        self.instructions.iter().filter(|(i, _)| i == instruction).map(|(_, a)| a.as_str()).collect()
    }

    fn one(&self, instruction: &str) -> &str {
        let all = self.all(instruction);
        assert_eq!(all.len(), 1, "one {instruction} in the stage FROM {}", self.from);
        all[0]
    }

    /// `ENV K=V …` of this stage.
    fn env(&self) -> Vec<(String, String)> {
        self.all("ENV")
            .iter()
            .flat_map(|a| a.split_whitespace())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("ENV {kv}: use ENV K=V"));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }
}

fn dockerfile() -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(current.is_empty(), "the Dockerfile ends in a continuation");
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (instruction, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let (instruction, args) = (instruction.to_ascii_uppercase(), args.trim().to_owned());
        if instruction == "FROM" {
            let words: Vec<&str> = args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                [_] => None,
                _ => panic!("FROM {args}"),
            };
            stages.push(Stage { from: words[0].to_owned(), name, instructions: Vec::new() });
        } else {
            let stage = stages.last_mut().unwrap_or_else(|| panic!("{instruction} before FROM"));
            stage.instructions.push((instruction, args));
        }
    }
    stages
}

/// An exec-form argument list (`["a", "b"]`); panics on the shell form.
fn exec_form(args: &str) -> Vec<String> {
    let parsed: Vec<String> = serde_json::from_str(args.trim())
        .unwrap_or_else(|e| panic!("`{args}` is not exec form (a JSON array of strings): {e}"));
    assert!(!parsed.is_empty(), "empty exec form");
    parsed
}

/// The runtime stage's `ENTRYPOINT`: where the binary is.
fn image_binary(runtime: &Stage) -> String {
    let entrypoint = exec_form(runtime.one("ENTRYPOINT"));
    assert_eq!(entrypoint.len(), 1, "ENTRYPOINT is the binary alone: {entrypoint:?}");
    entrypoint[0].clone()
}

fn workspace_rust_version() -> String {
    let manifest = read("Cargo.toml");
    let line = manifest.lines().find(|l| l.trim_start().starts_with("rust-version")).expect("rust-version");
    line.split('"').nth(1).expect("rust-version = \"…\"").to_owned()
}

// --- running the binary ---------------------------------------------------------

/// `gatehouse ARGS --help` succeeds: ARGS is a real (sub)command.
fn assert_is_a_subcommand(args: &[String], what: &str) {
    let out = Command::new(BIN).args(args).arg("--help").env_clear().output().unwrap();
    assert!(
        out.status.success(),
        "{what}: `gatehouse {}` is not a command of the binary: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits for `child` to exit (killing it after `within`, which fails the test).
fn exit_within(mut child: Child, within: Duration, what: &str) -> Output {
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what} still running after {within:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Values for every `.env.example` variable that gatehouse and Compose accept.
fn strong_values() -> HashMap<String, String> {
    let (set, _) = env_example();
    set.into_iter()
        .map(|(name, value)| {
            let strong = if NOT_SECRET.contains(&name.as_str()) {
                value
            } else if name == "MFA_ENCRYPTION_KEY" {
                // 32 bytes, hex.
                "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".to_owned()
            } else if name.ends_with("_PASSWORD") {
                // What `openssl rand -hex 32` prints.
                format!("{:0>64}", format!("{:x}", name.len() * 0x9e37_79b9))
            } else {
                format!("{name}-test-only-0123456789abcdef0123456789abcdef")
            };
            (name, strong)
        })
        .collect()
}

/// The deployment on this machine: the user's `./secrets` (with the key
/// `.env.example` says how to make) and a directory per named volume, and the
/// container paths they stand for.
struct Local {
    dir: tempfile::TempDir,
    /// (path in the container, path here), longest container path first.
    paths: Vec<(String, PathBuf)>,
}

impl Local {
    fn new(compose: &Yaml, runtime: &Stage) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        // The image's own directories (DATA_DIR=/var/lib/gatehouse).
        for (_, value) in runtime.env() {
            if value.starts_with('/') {
                let here = dir.path().join("image").join(value.trim_start_matches('/'));
                std::fs::create_dir_all(&here).unwrap();
                paths.push((value, here));
            }
        }
        for (name, svc) in gatehouse_services(compose) {
            for volume in strings(&svc["volumes"]) {
                let parts: Vec<&str> = volume.split(':').collect();
                let (source, target) = match parts.as_slice() {
                    [s, t] | [s, t, "ro" | "rw"] => (*s, *t),
                    _ => panic!("{name}: volume `{volume}`: use source:target[:ro]"),
                };
                let here = match source.strip_prefix("./") {
                    Some(relative) => dir.path().join("project").join(relative),
                    None => {
                        let volumes: Vec<String> = entries(&compose["volumes"]).into_iter().map(|(k, _)| k).collect();
                        assert!(volumes.contains(&source.to_owned()), "{name}: volume {source} is not declared");
                        dir.path().join("volumes").join(source)
                    }
                };
                std::fs::create_dir_all(&here).unwrap();
                paths.push((target.to_owned(), here));
            }
        }
        paths.sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        paths.dedup_by(|a, b| a.0 == b.0);
        let local = Self { dir, paths };
        local.make_signing_key();
        local
    }

    fn project(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    /// Runs `.env.example`'s `openssl genpkey … -out secrets/…` for the
    /// configured algorithm in the project directory, as the user would (or,
    /// without openssl, writes an equivalent PKCS#8 key there).
    fn make_signing_key(&self) {
        let algorithm = strong_values()["JWT_ALGORITHM"].clone();
        let example = read(".env.example");
        let line = example
            .lines()
            .find(|l| l.trim_start_matches(['#', ' ']).starts_with(&format!("{algorithm}:")))
            .unwrap_or_else(|| panic!(".env.example says how to make a {algorithm} key"));
        let command = line.split_once(':').unwrap().1.trim();
        let words: Vec<&str> = command.split_whitespace().collect();
        assert_eq!(&words[..2], ["openssl", "genpkey"], "{command}");
        let out_at = words.iter().position(|w| *w == "-out").expect("-out FILE");
        let file = self.project().join(words[out_at + 1]);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let ran = Command::new("openssl").args(&words[1..]).current_dir(self.project()).output();
        match ran {
            Ok(out) => assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr)),
            Err(_) => {
                eprintln!("openssl is not installed; writing the {algorithm} key with the tokens crate");
                let algorithm = tokens::Algorithm::parse(&algorithm).unwrap();
                std::fs::write(&file, tokens::SigningKey::generate_pem(algorithm).unwrap()).unwrap();
            }
        }
    }

    /// A container path as the path here.
    fn map_path(&self, value: &str) -> String {
        for (container, here) in &self.paths {
            if value == container {
                return here.display().to_string();
            }
            if let Some(rest) = value.strip_prefix(container.as_str())
                && rest.starts_with('/')
            {
                return format!("{}{rest}", here.display());
            }
        }
        value.to_owned()
    }

    /// The environment of `svc`'s container: the image's `ENV`, then its
    /// interpolated `environment:`, with container paths mapped here.
    fn env(
        &self,
        runtime: &Stage,
        svc: &Yaml,
        vars: &HashMap<String, String>,
    ) -> Result<Vec<(String, String)>, String> {
        let mut env: Vec<(String, String)> = runtime.env();
        for (k, v) in environment(svc) {
            env.retain(|(e, _)| *e != k);
            env.push((k, interpolate(&v, vars)?));
        }
        Ok(env.into_iter().map(|(k, v)| (k.clone(), self.map_path(&v))).collect())
    }
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

// --- the compose file -------------------------------------------------------------

/// The seed's deployment, each part once: PostgreSQL, Redis, and the five
/// services, each a real subcommand of the binary, as are the health checks
/// and the image's default command.
#[test]
fn every_gatehouse_service_runs_a_real_subcommand_of_the_image() {
    let compose = compose();
    let names: BTreeSet<String> = services(&compose).into_iter().map(|(n, _)| n).collect();
    for seed in ["postgres", "redis", "auth", "gateway", "users", "payments", "notifications"] {
        assert!(names.contains(seed), "the seed's {seed} service is missing");
    }
    assert_eq!(service(&compose, "postgres")["image"].as_str(), Some("postgres:16"));
    assert_eq!(service(&compose, "redis")["image"].as_str(), Some("redis:7"));

    let stages = dockerfile();
    let runtime = stages.last().unwrap();
    let binary = image_binary(runtime);
    let mut roles = Vec::new();
    for (name, svc) in gatehouse_services(&compose) {
        let command = strings(&svc["command"]);
        assert!(!command.is_empty(), "{name}: an explicit command");
        assert_ne!(command[0], binary, "{name}: the image's ENTRYPOINT is already the binary");
        assert_is_a_subcommand(&command, &name);
        roles.push(command.join(" "));
        if svc["healthcheck"]["disable"].as_bool() != Some(true) {
            let test = strings(&svc["healthcheck"]["test"]);
            assert!(test.len() >= 3 && test[0] == "CMD", "{name}: exec-form health check (no shell in the image)");
            assert_eq!(test[1], binary, "{name}: the health check runs the image's binary");
            assert_eq!(test[2], "healthcheck", "{name}: `gatehouse healthcheck`");
            assert_is_a_subcommand(&test[2..], &format!("{name}'s health check"));
        }
    }
    for role in ["migrate", "auth", "gateway", "users", "payments", "notifications"] {
        assert_eq!(roles.iter().filter(|r| *r == role).count(), 1, "one `{role}` service: {roles:?}");
    }
    assert_is_a_subcommand(&exec_form(runtime.one("CMD")), "the Dockerfile's CMD");
    // The README's operator example.
    assert_is_a_subcommand(&["user".to_owned(), "list".to_owned()], "docker compose run --rm auth user list");
}

/// Only the gateway publishes a port (on loopback, to its own listener);
/// every service is on the internal network, which has no way out.
#[test]
fn only_the_gateway_is_published_and_everything_else_stays_internal() {
    let compose = compose();
    let declared: Vec<(String, Yaml)> = entries(&compose["networks"]);
    let internal = declared.iter().find(|(n, _)| n == "internal").map(|(_, d)| d.clone()).expect("network internal");
    assert_eq!(internal["internal"].as_bool(), Some(true), "the internal network is `internal: true`");
    for (name, svc) in services(&compose) {
        assert!(svc["network_mode"].is_badvalue(), "{name}: no network_mode");
        assert!(svc["privileged"].as_bool() != Some(true), "{name}: not privileged");
        let nets = networks(&svc);
        assert!(nets.contains(&"internal".to_owned()), "{name} is on the internal network: {nets:?}");
        for net in &nets {
            assert!(declared.iter().any(|(n, _)| n == net), "{name}: network {net} is not declared");
        }
        if name == "gateway" {
            let ports = strings(&svc["ports"]);
            assert_eq!(ports.len(), 1, "gateway: one published port");
            let parts: Vec<&str> = ports[0].split(':').collect();
            assert_eq!(parts.len(), 3, "gateway: `host-ip:host-port:container-port`, got {}", ports[0]);
            assert_eq!(parts[0], "127.0.0.1", "published on the host's loopback only");
            assert_eq!(Some(parts[2].to_owned()), env_value(&svc, "PORT"), "to the gateway's PORT");
            let edge: Vec<&String> = nets.iter().filter(|n| *n != "internal").collect();
            assert_eq!(edge.len(), 1, "the gateway is also on one non-internal network (for its port)");
            let edge_def = declared.iter().find(|(n, _)| n == edge[0]).unwrap();
            assert!(edge_def.1["internal"].as_bool() != Some(true), "{} must not be internal", edge[0]);
        } else {
            assert!(svc["ports"].is_badvalue(), "{name} publishes no port");
            assert_eq!(nets, ["internal"], "{name} is on the internal network only");
        }
    }
    // The auth service believes X-Forwarded-For from the gateway's fixed address, and no one else's.
    let gateway = service(&compose, "gateway");
    let address = gateway["networks"]["internal"]["ipv4_address"].as_str().expect("the gateway's fixed address");
    let subnet = strings(&Yaml::Array(
        internal["ipam"]["config"].as_vec().unwrap().iter().map(|c| c["subnet"].clone()).collect(),
    ));
    let (net, bits) = subnet[0].split_once('/').unwrap();
    assert_eq!(bits, "24");
    let prefix = net.rsplit_once('.').unwrap().0;
    assert!(address.starts_with(&format!("{prefix}.")), "{address} is in {}", subnet[0]);
    assert_eq!(env_value(&service(&compose, "auth"), "TRUSTED_PROXIES"), Some(format!("{address}/32")));
}

/// Unprivileged, read-only, no capabilities, built from this repository.
#[test]
fn gatehouse_containers_are_locked_down_and_built_from_this_repository() {
    let compose = compose();
    let ours = gatehouse_services(&compose);
    assert!(ours.len() >= 6);
    for (name, svc) in &ours {
        let context = match &svc["build"] {
            Yaml::String(s) => s.clone(),
            b => b["context"].as_str().unwrap_or_else(|| panic!("{name}: a build context")).to_owned(),
        };
        let dir = root().join(&context);
        assert!(dir.is_dir(), "{name}: build context {context} exists");
        let dockerfile = svc["build"]["dockerfile"].as_str().unwrap_or("Dockerfile");
        assert!(dir.join(dockerfile).is_file(), "{name}: {context}/{dockerfile} exists");
        assert_eq!(svc["read_only"].as_bool(), Some(true), "{name}: read_only");
        assert_eq!(strings(&svc["cap_drop"]), ["ALL"], "{name}: cap_drop [ALL]");
        assert!(svc["cap_add"].is_badvalue(), "{name}: no cap_add");
        assert!(
            strings(&svc["security_opt"]).contains(&"no-new-privileges:true".to_owned()),
            "{name}: no-new-privileges"
        );
        assert!(svc["user"].is_badvalue(), "{name}: runs as the image's unprivileged user");
        let env = environment(svc);
        for (k, v) in &env {
            assert!(k != "ENVIRONMENT" || v.eq_ignore_ascii_case("production"), "{name}: production only ({k}={v})");
            assert!(!k.starts_with("GATEHOUSE_TEST_ONLY"), "{name}: {k} is for tests");
        }
        for volume in strings(&svc["volumes"]) {
            if volume.starts_with("./") {
                assert!(volume.ends_with(":ro"), "{name}: host directories are mounted read-only: {volume}");
            }
        }
    }
    // Each long-running service listens on a port of its own, and the secrets reach only the auth service.
    let ports: Vec<String> = ours.iter().filter_map(|(_, s)| env_value(s, "PORT")).collect();
    assert_eq!(ports.len(), ours.len() - 1, "every service but migrate sets PORT (its health check reads it)");
    assert_eq!(ports.iter().collect::<BTreeSet<_>>().len(), ports.len(), "distinct ports");
    for (name, svc) in &ours {
        let mounts_secrets = strings(&svc["volumes"]).iter().any(|v| v.starts_with("./secrets"));
        assert_eq!(mounts_secrets, name == "auth", "{name}: only the auth service reads the signing key");
        let has_db = env_value(svc, "DATABASE_URL").is_some();
        assert_eq!(has_db, name != "gateway", "{name}: every service but the gateway uses the database");
    }
}

/// `depends_on` waits for health (or for `migrate` to finish), never for a mere start.
#[test]
fn dependencies_wait_for_health_or_completion() {
    let compose = compose();
    let all = services(&compose);
    for (name, svc) in &all {
        assert!(!svc["depends_on"].is_array(), "{name}: depends_on with conditions, not a list");
        for (dependency, how) in entries(&svc["depends_on"]) {
            let target = all
                .iter()
                .find(|(n, _)| *n == dependency)
                .unwrap_or_else(|| panic!("{name} depends on an unknown {dependency}"));
            match how["condition"].as_str() {
                Some("service_healthy") => {
                    let test = strings(&target.1["healthcheck"]["test"]);
                    assert!(!test.is_empty(), "{name} waits for {dependency}'s health, which has a health check");
                    assert_eq!(test[0], "CMD", "{dependency}: exec-form health check");
                }
                Some("service_completed_successfully") => {
                    assert_eq!(scalar(&target.1["restart"]), "no", "{dependency} is a one-shot");
                }
                other => panic!("{name} → {dependency}: condition {other:?} is not health-based"),
            }
        }
    }
    for (name, svc) in gatehouse_services(&compose) {
        let deps: Vec<String> = entries(&svc["depends_on"]).into_iter().map(|(k, _)| k).collect();
        if env_value(&svc, "DATABASE_URL").is_some() {
            let first = if name == "migrate" { "postgres" } else { "migrate" };
            assert!(deps.contains(&first.to_owned()), "{name} waits for {first}");
        }
        if env_value(&svc, "REDIS_URL").is_some() {
            assert!(deps.contains(&"redis".to_owned()), "{name} waits for redis");
        }
        // A service it calls at start (the gateway: the JWKS) or on requests is up first.
        for (var, value) in environment(&svc) {
            if var.ends_with("_SERVICE_URL") && name == "gateway" {
                let host = value.trim_start_matches("http://").split(':').next().unwrap().to_owned();
                assert!(deps.contains(&host), "gateway waits for {host}");
            }
        }
    }
}

/// Every variable is one gatehouse reads; every required one is in
/// `.env.example`, and `.env.example` holds nothing Compose does not use.
#[test]
fn every_variable_is_one_gatehouse_reads() {
    let text = read("docker-compose.yml");
    let compose = compose();
    let refs = references(&text);
    assert!(!refs.is_empty());
    let (example, commented) = env_example();
    let example_names: Vec<&str> = example.iter().map(|(n, _)| n.as_str()).collect();
    for (name, kind) in &refs {
        assert!(read_by_gatehouse(name), "docker-compose.yml: ${{{name}}} is not a variable gatehouse reads");
        if matches!(kind, Kind::Plain | Kind::Required { .. }) {
            assert!(example_names.contains(&name.as_str()), "${{{name}}} has no default: put it in .env.example");
        }
        assert!(kind != &Kind::Plain, "${{{name}}}: say what happens when it is unset (`:?` or `:-`)");
    }
    for name in example_names.iter().copied().chain(commented.iter().map(String::as_str)) {
        assert!(read_by_gatehouse(name), ".env.example: {name} is not a variable gatehouse reads");
        assert!(refs.iter().any(|(r, _)| r == name), ".env.example: {name} is not used by docker-compose.yml");
    }
    for (name, svc) in gatehouse_services(&compose) {
        for (var, _) in environment(&svc) {
            assert!(read_by_gatehouse(&var), "{name}: {var} is not a variable gatehouse reads");
        }
    }
}

/// The URLs between services point at the right service, port and credentials.
#[test]
fn service_urls_point_at_the_right_service() {
    let compose = compose();
    let vars = strong_values();
    let postgres = service(&compose, "postgres");
    let pg = |k: &str| interpolate(&env_value(&postgres, k).unwrap(), &vars).unwrap();
    let redis_command = strings(&service(&compose, "redis")["command"]);
    let requirepass = redis_command.iter().position(|a| a == "--requirepass").expect("redis has a password");
    let redis_password = interpolate(&redis_command[requirepass + 1], &vars).unwrap();
    for (name, svc) in gatehouse_services(&compose) {
        for (var, raw) in environment(&svc) {
            let value = interpolate(&raw, &vars).unwrap();
            if var == "DATABASE_URL" {
                let expected = format!(
                    "postgres://{}:{}@postgres:5432/{}",
                    pg("POSTGRES_USER"),
                    pg("POSTGRES_PASSWORD"),
                    pg("POSTGRES_DB")
                );
                assert_eq!(value, expected, "{name}: DATABASE_URL");
            } else if var == "REDIS_URL" {
                assert_eq!(value, format!("redis://:{redis_password}@redis:6379"), "{name}: REDIS_URL");
            } else if var.ends_with("_SERVICE_URL") {
                let (host, port) = value.strip_prefix("http://").unwrap().split_once(':').unwrap();
                let target = service(&compose, host);
                assert_eq!(env_value(&target, "PORT").as_deref(), Some(port), "{name}: {var} → {host}'s PORT");
                let expected = strings(&target["command"]).join(" ");
                let role = match var.as_str() {
                    "AUTH_SERVICE_URL" => "auth",
                    "USER_SERVICE_URL" => "users",
                    "PAYMENT_SERVICE_URL" => "payments",
                    "NOTIFICATION_SERVICE_URL" => "notifications",
                    other => panic!("{other}?"),
                };
                assert_eq!(expected, role, "{name}: {var} points at the {role} service");
            }
        }
    }
}

// --- .env.example ----------------------------------------------------------------

/// Nothing in `.env.example` works as a secret: Compose refuses the empty
/// passwords, and every service refuses each `CHANGE_ME` with one line
/// naming the variable.
#[test]
fn env_example_placeholders_are_refused() {
    let compose = compose();
    let stages = dockerfile();
    let runtime = stages.last().unwrap();
    let (example, _) = env_example();
    let example: HashMap<String, String> = example.into_iter().collect();
    let text = read("docker-compose.yml");
    for (name, value) in &example {
        if NOT_SECRET.contains(&name.as_str()) {
            continue;
        }
        assert!(
            value.is_empty() || value == PLACEHOLDER,
            ".env.example: {name} must be empty or {PLACEHOLDER}, never a value that could be used"
        );
        if value.is_empty() {
            for (r, kind) in references(&text) {
                if r == *name {
                    assert_eq!(kind, Kind::Required { colon: true }, "${{{name}:?…}}: Compose refuses it empty");
                }
            }
        }
    }
    assert!(example.values().any(|v| v.is_empty()), "the passwords are left empty");
    assert!(example.values().any(|v| v == PLACEHOLDER));
    // Compose stops on .env.example as it is.
    let err = interpolate(&text, &example).unwrap_err();
    assert!(err.starts_with("required variable") && err.contains("_PASSWORD"), "{err}");

    // Each CHANGE_ME, alone among strong values, stops every service that uses it.
    let local = Local::new(&compose, runtime);
    let strong = strong_values();
    let mut refused = 0;
    for (var, placeholder) in example.iter().filter(|(_, v)| *v == PLACEHOLDER) {
        let mut vars = strong.clone();
        vars.insert(var.clone(), placeholder.clone());
        for (name, svc) in gatehouse_services(&compose) {
            if !environment(&svc).iter().any(|(_, v)| references(v).iter().any(|(r, _)| r == var)) {
                continue;
            }
            let env = local.env(runtime, &svc, &vars).unwrap();
            let child = gatehouse(
                &strings(&svc["command"]).iter().map(String::as_str).collect::<Vec<_>>(),
                &as_refs(&env),
                &local.project(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
            let out = exit_within(child, Duration::from_secs(10), &format!("{name} with {var}={placeholder}"));
            assert!(!out.status.success(), "{name} starts with {var}={placeholder}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(stderr.lines().count(), 1, "{name}: one line: {stderr}");
            assert!(
                stderr.starts_with(&format!("gatehouse: configuration error: {var} ")),
                "{name} with {var}={placeholder}: {stderr}"
            );
            refused += 1;
        }
    }
    assert!(refused >= 4, "every placeholder was tried on its services");

    // And .env.example's values, as they are, in production: refused, naming one of its secrets.
    let mut env: Vec<(&str, &str)> = example.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("ENVIRONMENT", "production"));
    for role in ["auth", "gateway", "users"] {
        let out = gatehouse(&[role], &env, &local.project()).output().unwrap();
        assert!(!out.status.success(), "{role} starts on .env.example");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr.lines().next().unwrap_or_default();
        assert!(
            example
                .iter()
                .any(|(k, v)| v == PLACEHOLDER && line.starts_with(&format!("gatehouse: configuration error: {k} "))),
            "{role}: {stderr}"
        );
    }
    assert!(!local.project().join("data").exists(), "a refused start creates nothing");
}

// --- the Dockerfile ----------------------------------------------------------------

/// Multi-stage: the workspace's Rust builds the binary the way the README
/// says; the runtime stage is distroless, unprivileged, and checks its own
/// health with the binary in exec form.
#[test]
fn the_dockerfile_builds_the_binary_and_runs_it_unprivileged() {
    let stages = dockerfile();
    assert!(stages.len() >= 2, "a build stage and a runtime stage");
    let runtime = stages.last().unwrap();
    let build_name = stages[0].name.clone().expect("the build stage is named");
    let build = &stages[0];
    assert_eq!(build.from, format!("rust:{}-bookworm", workspace_rust_version()), "the workspace's rust-version");
    assert!(
        runtime.from.starts_with("gcr.io/distroless/cc-debian12"),
        "runtime: distroless with glibc, the builder's Debian 12: {}",
        runtime.from
    );
    let run = build.all("RUN").join(" && ");
    let cargo = run.split("&&").map(str::trim).find(|c| c.contains("cargo build")).expect("a cargo build step");
    let cargo = &cargo[cargo.find("cargo build").unwrap()..];
    assert_eq!(cargo, "cargo build --release --locked -p gatehouse");
    assert!(run.contains("--mount=type=cache,") && run.contains("/usr/local/cargo/registry"), "registry cache");

    // The binary built is the one installed, copied into the runtime stage, and run.
    let binary = image_binary(runtime);
    let installed = run
        .split("&&")
        .map(str::trim)
        .find(|c| c.contains("target/release/gatehouse"))
        .expect("the build step installs target/release/gatehouse");
    let staged = installed.split_whitespace().last().unwrap().to_owned();
    let copies = runtime.all("COPY");
    let copy = copies
        .iter()
        .find(|c| c.split_whitespace().last() == Some(binary.as_str()))
        .unwrap_or_else(|| panic!("the runtime stage copies the binary to {binary}"));
    assert!(copy.contains(&format!("--from={build_name} ")), "{copy}");
    assert!(copy.split_whitespace().any(|w| w == staged), "{copy} copies {staged}");

    // Unprivileged, no shell needed.
    let user = runtime.one("USER");
    let uid = user.split(':').next().unwrap();
    assert!(!["root", "0", ""].contains(&uid), "runs as a non-root user, not `{user}`");
    assert!(runtime.all("RUN").is_empty(), "the runtime stage has no shell to RUN anything in");
    let healthcheck = runtime.one("HEALTHCHECK");
    let (options, command) = healthcheck.split_once("CMD ").expect("HEALTHCHECK … CMD [...]");
    assert_eq!(exec_form(command), [binary.clone(), "healthcheck".to_owned()], "exec-form `gatehouse healthcheck`");
    assert!(options.contains("--timeout="), "{options}");
    assert_is_a_subcommand(&exec_form(runtime.one("CMD")), "CMD");

    // The build context never holds secrets or build output.
    let ignore = read(".dockerignore");
    let rules: Vec<&str> = ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert_eq!(rules.first(), Some(&"*"), ".dockerignore starts by ignoring everything");
    for rule in rules.iter().filter_map(|r| r.strip_prefix('!')) {
        for never in [".env", "secrets", "data", "target", ".git"] {
            assert!(!rule.trim_matches('/').starts_with(never), ".dockerignore lets {never} in: !{rule}");
        }
    }
    let manifest = read("Cargo.toml");
    assert!(manifest.contains("members = [\"crates/*\"]"), "the workspace is crates/*, which the context lets in");
    assert!(rules.contains(&"!crates/") && rules.contains(&"!Cargo.lock") && rules.contains(&"!Cargo.toml"));
}

/// The README's "Running with Docker" says what the Dockerfile and the
/// compose file do.
#[test]
fn the_readme_says_how_to_run_it_with_docker() {
    let readme = read("README.md");
    for said in [
        "cargo build --release --locked -p gatehouse",
        "target/release/gatehouse",
        "cp .env.example .env",
        "openssl genpkey -algorithm ed25519 -out secrets/jwt.pem",
        "docker compose up --build",
        "docker compose run --rm auth user list",
        "127.0.0.1:8080",
    ] {
        assert!(readme.contains(said), "README.md does not say `{said}`");
    }
}

// --- the stack, from the compose environment ------------------------------------------

/// Runs every gatehouse service of the compose file as a process, with its
/// compose environment interpolated from strong `.env` values (container
/// paths mapped to a temporary directory, service host names to their
/// loopback ports, PostgreSQL to the test database, Redis to a private
/// password-protected one), in `depends_on` order, waiting for each with its
/// own compose health check; then logs in and calls a service through the
/// gateway. What Docker adds (images, networks) is checked above.
#[tokio::test]
async fn the_compose_environment_brings_up_a_working_stack() {
    let compose = compose();
    let stages = dockerfile();
    let runtime = stages.last().unwrap();
    let local = Local::new(&compose, runtime);
    let vars = strong_values();

    // Redis with the compose file's password.
    let redis_command = strings(&service(&compose, "redis")["command"]);
    let at = redis_command.iter().position(|a| a == "--requirepass").unwrap();
    let password = interpolate(&redis_command[at + 1], &vars).unwrap();
    let redis_port = free_port();
    let _redis = Running(
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &redis_port.to_string(), "--save", "", "--appendonly", "no"])
            .args(["--requirepass", &password])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)"),
    );
    let db = TestDatabase::new(testkit::Backend::Postgres).await;
    let database_url = format!("{}?options=-c%20search_path%3D{}", postgres_base_url(), db.schema.clone().unwrap());

    // Where each compose host:port is on this machine.
    let ours = gatehouse_services(&compose);
    let mut hosts: Vec<(String, String)> = vec![("redis:6379".into(), format!("127.0.0.1:{redis_port}"))];
    let mut ports = HashMap::new();
    for (name, svc) in &ours {
        if let Some(port) = env_value(svc, "PORT") {
            let here = free_port();
            ports.insert(name.clone(), here);
            hosts.push((format!("{name}:{port}"), format!("127.0.0.1:{here}")));
        }
    }
    let env_of = |name: &str, svc: &Yaml| -> Vec<(String, String)> {
        let mut env = local.env(runtime, svc, &vars).unwrap();
        for (k, v) in &mut env {
            if k == "DATABASE_URL" {
                v.clone_from(&database_url);
                continue;
            } else if k == "PORT" {
                *v = ports[name].to_string();
            } else {
                for (from, to) in &hosts {
                    *v = v
                        .replace(&format!("//{from}"), &format!("//{to}"))
                        .replace(&format!("@{from}"), &format!("@{to}"));
                }
            }
            for (other, _) in services(&compose) {
                assert!(
                    !v.contains(&format!("//{other}:")) && !v.contains(&format!("@{other}:")),
                    "{name}: {k} still names {other}: {v}"
                );
            }
        }
        env.push(("BIND_ADDRESS".into(), "127.0.0.1".into()));
        env
    };

    let mut done: BTreeSet<String> = ["postgres".to_owned(), "redis".to_owned()].into();
    let mut running = Vec::new();
    while done.len() < ours.len() + 2 {
        let (name, svc) = ours
            .iter()
            .find(|(n, s)| !done.contains(n) && entries(&s["depends_on"]).iter().all(|(d, _)| done.contains(d)))
            .unwrap_or_else(|| panic!("depends_on has a cycle, or names a missing service; started {done:?}"));
        let env = env_of(name, svc);
        let command = strings(&svc["command"]);
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        let mut cmd = gatehouse(&args, &as_refs(&env), &local.project());
        if svc["healthcheck"]["disable"].as_bool() == Some(true) {
            // A one-shot: the others wait for it to succeed.
            let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
            let out = exit_within(child, Duration::from_secs(60), name);
            assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        } else {
            running.push(Running(cmd.spawn().unwrap()));
            let test = strings(&svc["healthcheck"]["test"]);
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let out = gatehouse(
                    &test[2..].iter().map(String::as_str).collect::<Vec<_>>(),
                    &as_refs(&env),
                    &local.project(),
                )
                .output()
                .unwrap();
                if out.status.success() {
                    break;
                }
                let last = running.last_mut().unwrap();
                if let Some(status) = last.0.try_wait().unwrap() {
                    panic!("{name} exited ({status}) before it was healthy");
                }
                assert!(Instant::now() < deadline, "{name} never healthy: {}", String::from_utf8_lossy(&out.stderr));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        done.insert(name.clone());
    }

    // Through the gateway: register, log in, then the user service and the notification service.
    let gw = format!("http://127.0.0.1:{}/api/v1", ports["gateway"]);
    wait_ready(&format!("http://127.0.0.1:{}", ports["gateway"])).await;
    let client = reqwest::Client::new();
    let email = unique_email("compose");
    let login = sign_up_and_in(&client, &gw, &gw, &email).await;
    let token = login["access_token"].as_str().expect("an access token");
    for path in ["/users/profile", "/payments", "/notifications"] {
        let r = client.get(format!("{gw}{path}")).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path} through the gateway");
    }

    // The operator's commands, as `docker compose run --rm auth …` runs them: with the auth service's environment.
    let auth_env = env_of("auth", &service(&compose, "auth"));
    let operator = |args: &[&str]| {
        let out = gatehouse(args, &as_refs(&auth_env), &local.project()).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(operator(&["user", "list"]).contains(&email));
    // The first `keys` command starts the ring in the `keys` volume from secrets/jwt.pem.
    assert!(operator(&["keys", "list"]).contains("active"));
}

// --- gatehouse healthcheck ------------------------------------------------------------

fn healthcheck(args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = gatehouse(&[&["healthcheck"], args].concat(), env, dir.path()).output().unwrap();
    (out, started.elapsed())
}

/// Against `gatehouse up`: exit 0 with one line, by default on PORT's /ready.
#[tokio::test]
async fn healthcheck_passes_against_a_running_stack() {
    let dir = tempfile::tempdir().unwrap();
    let stack = StackPorts::new();
    let env = stack.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _up = Running(gatehouse(&["up"], &env, dir.path()).spawn().unwrap());
    wait_ready(&StackPorts::url(stack.gateway)).await;

    let port = stack.gateway.to_string();
    let (out, _) = healthcheck(&[], &[("PORT", &port)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout, format!("gatehouse: healthy: http://127.0.0.1:{port}/ready answered 200\n"));

    let url = format!("{}/ready", StackPorts::url(stack.auth));
    let (out, _) = healthcheck(&["--url", &url], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A closed port, a server that never answers, a 503, a bad URL: exit 1
/// with one line, within the 2 s timeout.
#[test]
fn healthcheck_fails_fast_when_the_service_is_not_ready() {
    let expect_failure = |args: &[&str], env: &[(&str, &str)], says: &str| {
        let (out, took) = healthcheck(args, env);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("gatehouse: ") && stderr.contains(says), "{stderr}");
        assert!(out.stdout.is_empty());
        assert!(took < Duration::from_millis(3000), "{args:?} took {took:?}");
        took
    };

    let closed = free_port().to_string();
    let took = expect_failure(&[], &[("PORT", &closed)], &format!("unhealthy: http://127.0.0.1:{closed}/ready"));
    assert!(took < Duration::from_secs(1), "a refused connection fails at once ({took:?})");

    // Accepts the connection (the kernel does) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ready", silent.local_addr().unwrap());
    let took = expect_failure(&["--url", &url], &[], "did not answer within 2s");
    assert!(took >= Duration::from_millis(1900), "waited for the timeout ({took:?})");

    // Answers 503, as /ready does when a dependency is down.
    let unready = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ready", unready.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut conn, _) = unready.accept().unwrap();
        let mut request = [0u8; 1024];
        let n = conn.read(&mut request).unwrap();
        conn.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").unwrap();
        String::from_utf8_lossy(&request[..n]).into_owned()
    });
    expect_failure(&["--url", &url], &[], "answered 503");
    let request = server.join().unwrap();
    assert!(request.starts_with("GET /ready HTTP/1.1\r\n"), "{request}");
    assert!(
        request.contains(&format!("\r\nHost: {}\r\n", url.trim_start_matches("http://").trim_end_matches("/ready")))
    );

    expect_failure(&["--url", "ftp://127.0.0.1/ready"], &[], "only http:// and https://");
}
