//! `gatehouse`: one binary for every Gatehouse service.
//!
//! `gatehouse up` runs the whole stack in one process with the embedded
//! defaults; `gatehouse auth`, `gatehouse gateway`, `gatehouse users`,
//! `gatehouse payments` and `gatehouse notifications` run one service;
//! `gatehouse user …`, `gatehouse audit` and `gatehouse keys …` are the
//! operator's commands; `gatehouse migrate` applies every service's migrations and
//! exits (every service also applies its own at start); `gatehouse healthcheck`
//! probes a running service's `/ready` (the container image's health check, see
//! [`healthcheck`]). Configuration comes from the environment (and `.env`), see
//! [`config`].

mod admin;
mod config;
mod healthcheck;
mod keys;
mod openapi;
mod telemetry;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::future::Future as _;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use common_http::serve::Listener;
use common_http::tls::ServerTls;
use config::{Mode, Settings};

/// mimalloc instead of the C library's allocator: a proxied request
/// allocates and frees a few dozen small blocks (header maps, buffers, the
/// signature), and under callgrind glibc's `malloc`/`free` were about a tenth
/// of the gateway's instructions per request, with `malloc_consolidate`
/// walking its bins. mimalloc's thread-local free lists make that a fraction.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "gatehouse", version, about = "Gatehouse: API gateway, auth service and downstream guard")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in one process (gateway :8080, auth :8081, users :8082, payments :8083, notifications :8084), SQLite under DATA_DIR
    Up,
    /// Run the auth service alone (PORT, default 8081)
    Auth,
    /// Run the API gateway alone (PORT, default 8080)
    Gateway,
    /// Run the user service alone (PORT, default 8082)
    Users,
    /// Run the payment service alone (PORT, default 8083)
    Payments,
    /// Run the notification service alone (PORT, default 8084)
    Notifications,
    /// Apply the database migrations to DATABASE_URL and exit
    Migrate,
    /// Manage accounts in the configured database
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Print the security-event log, newest first
    Audit(admin::AuditArgs),
    /// Manage the signing keys in KEYS_DIR (generate, list, rotate, retire)
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Probe a running service: GET http://127.0.0.1:$PORT/ready (or --url); exit 0 on a 2xx (the container health check)
    Healthcheck(healthcheck::HealthcheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match async_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gatehouse: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, naming what to fix; the causes are already in the message.
            eprintln!("gatehouse: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime: tokio's multi-thread one, whose worker count
/// `TOKIO_WORKER_THREADS` sets (default: one per core), except that one
/// worker asked for gets a current-thread runtime: the same single thread
/// of work, without the multi-thread scheduler's cross-thread wake-up and
/// work-stealing machinery that one worker never uses (about 500 fewer
/// instructions per proxied request in `bench/callgrind.sh`). Blocking work
/// (password hashing) has its own threads either way.
fn async_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    if std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|n| n.trim() == "1") {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Runtime::new()
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    // Every TLS user in the tree (sqlx, later the proxy client) shares one provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mode = if matches!(command, Command::Up) { Mode::Up } else { Mode::Single };
    let settings = Settings::from_vars(config::process_env(), mode).context("configuration error")?;
    // Read once, before any service starts: the HTTPS of the one service a
    // single-service command runs, or of the gateway in `up`.
    let serves = !matches!(
        command,
        Command::Migrate | Command::User(_) | Command::Audit(_) | Command::Keys(_) | Command::Healthcheck(_)
    );
    let tls = if serves { settings.server_tls().context("configuration error")? } else { None };
    let role = match command {
        Command::User(_) | Command::Audit(_) | Command::Keys(_) | Command::Healthcheck(_) => telemetry::Role::Command,
        _ => telemetry::Role::Service,
    };
    telemetry::init(settings.log_format, role);
    match command {
        Command::Migrate => migrate(&settings).await,
        Command::User(command) => admin::run_user(&settings, command).await,
        Command::Audit(args) => admin::run_audit(&settings, args).await,
        Command::Keys(command) => keys::run(&settings, command).await,
        Command::Healthcheck(args) => healthcheck::run(&settings, args).await,
        Command::Auth => {
            let shutdown = CancellationToken::new();
            let auth = start_auth(&settings, settings.listen_addr(8081), tls.as_ref(), &shutdown).await?;
            supervise(vec![auth], shutdown, &settings).await
        }
        Command::Gateway => {
            let shutdown = CancellationToken::new();
            let gateway = start_gateway(&settings, settings.listen_addr(8080), tls.as_ref(), &shutdown).await?;
            supervise(vec![gateway], shutdown, &settings).await
        }
        Command::Users => {
            let shutdown = CancellationToken::new();
            let users = start_users(&settings, settings.listen_addr(8082), tls.as_ref(), &shutdown).await?;
            supervise(vec![users], shutdown, &settings).await
        }
        Command::Payments => {
            let shutdown = CancellationToken::new();
            let payments = start_payments(&settings, settings.listen_addr(8083), tls.as_ref(), &shutdown).await?;
            supervise(vec![payments], shutdown, &settings).await
        }
        Command::Notifications => {
            let shutdown = CancellationToken::new();
            let notifications =
                start_notifications(&settings, settings.listen_addr(8084), tls.as_ref(), &shutdown).await?;
            supervise(vec![notifications], shutdown, &settings).await
        }
        Command::Up => {
            let shutdown = CancellationToken::new();
            let at = |port| SocketAddr::new(settings.bind_address, port);
            // The auth service first: the gateway fetches its JWKS at start.
            // TLS_CERT/TLS_KEY give HTTPS to the gateway, the one port meant
            // for clients. The services behind it stay plain HTTP on this
            // host: they call each other at `http://127.0.0.1:<port>`, where
            // a certificate for the public name would not verify anyway.
            let auth = start_auth(&settings, at(settings.auth_port), None, &shutdown).await?;
            let users = start_users(&settings, at(settings.users_port), None, &shutdown).await?;
            let payments = start_payments(&settings, at(settings.payments_port), None, &shutdown).await?;
            let notifications =
                start_notifications(&settings, at(settings.notifications_port), None, &shutdown).await?;
            let gateway = start_gateway(&settings, at(settings.gateway_port), tls.as_ref(), &shutdown).await?;
            supervise(vec![auth, users, payments, notifications, gateway], shutdown, &settings).await
        }
    }
}

/// Applies every service's migrations to the configured database (each
/// service keeps its own history table there, and also migrates at start).
async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    settings.ensure_data_dir().context("configuration error")?;
    let backend = settings.database.backend();
    let target = || settings.database.clone();
    let failed = || "could not migrate the database (check DATABASE_URL)";
    auth_service::store::connect(target(), Default::default()).await.context(failed())?.close().await;
    user_service::store::connect(target(), Default::default()).await.context(failed())?.close().await;
    payment_service::store::connect(target(), Default::default()).await.context(failed())?.close().await;
    notification_service::store::connect(target(), Default::default()).await.context(failed())?.close().await;
    tracing::info!(?backend, "migrations applied");
    println!("gatehouse: migrations applied ({backend:?})");
    Ok(())
}

/// A running service task.
struct Service {
    name: &'static str,
    task: JoinHandle<std::io::Result<()>>,
}

/// Listens on `addr`: HTTPS with `tls` (`TLS_CERT`/`TLS_KEY`), else plain HTTP.
async fn bind(name: &str, addr: SocketAddr, tls: Option<&ServerTls>) -> anyhow::Result<Listener> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("{name}: cannot listen on {addr}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(service = name, addr = %listener.local_addr().unwrap_or(addr), scheme, "listening");
    Ok(match tls {
        Some(tls) => Listener::tls(listener, tls.clone()),
        None => Listener::plain(listener),
    })
}

async fn start_auth(
    settings: &Settings,
    addr: SocketAddr,
    tls: Option<&ServerTls>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Service> {
    // Validate everything before creating anything on disk.
    let auth_config = settings.auth_config().context("configuration error")?;
    settings.ensure_data_dir().context("configuration error")?;
    let state = auth_service::build_state(auth_config)
        .await
        .context("could not open the auth database (check DATABASE_URL)")?;
    tracing::info!(
        backend = ?state.store.backend(),
        algorithm = state.config.signing_key.algorithm().as_str(),
        kid = state.config.signing_key.kid(),
        "auth-service ready"
    );
    let listener = bind("auth-service", addr, tls).await?;
    Ok(Service { name: "auth-service", task: tokio::spawn(auth_service::serve(state, listener, shutdown.clone())) })
}

async fn start_gateway(
    settings: &Settings,
    addr: SocketAddr,
    tls: Option<&ServerTls>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Service> {
    let mut config = settings.gateway_config().context("configuration error")?;
    config.openapi = Some(openapi::public_document(&config.routes)?);
    let state = gateway::build_state(config).await.context("could not start the gateway")?;
    if !state.keys().is_loaded() {
        tracing::warn!("no signing keys yet (is the auth service up?); /ready fails until the JWKS loads");
    }
    let listener = bind("api-gateway", addr, tls).await?;
    Ok(Service { name: "api-gateway", task: tokio::spawn(gateway::serve(state, listener, shutdown.clone())) })
}

async fn start_users(
    settings: &Settings,
    addr: SocketAddr,
    tls: Option<&ServerTls>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Service> {
    let config = settings.user_service_config().await.context("configuration error")?;
    settings.ensure_data_dir().context("configuration error")?;
    let state = user_service::build_state(config).await.map_err(|e| {
        let hint = match e {
            user_service::StartError::Store(_) => "could not open the user service database (check DATABASE_URL)",
            user_service::StartError::Tls(_) => "could not set up the user service's TLS client (check UPSTREAM_CA)",
        };
        anyhow::Error::new(e).context(hint)
    })?;
    let listener = bind("user-service", addr, tls).await?;
    Ok(Service { name: "user-service", task: tokio::spawn(user_service::serve(state, listener, shutdown.clone())) })
}

async fn start_payments(
    settings: &Settings,
    addr: SocketAddr,
    tls: Option<&ServerTls>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Service> {
    let config = settings.payment_service_config().await.context("configuration error")?;
    settings.ensure_data_dir().context("configuration error")?;
    let state = payment_service::build_state(config)
        .await
        .context("could not open the payment service database (check DATABASE_URL)")?;
    let listener = bind("payment-service", addr, tls).await?;
    Ok(Service {
        name: "payment-service",
        task: tokio::spawn(payment_service::serve(state, listener, shutdown.clone())),
    })
}

async fn start_notifications(
    settings: &Settings,
    addr: SocketAddr,
    tls: Option<&ServerTls>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Service> {
    let config = settings.notification_service_config().await.context("configuration error")?;
    settings.ensure_data_dir().context("configuration error")?;
    let state = notification_service::build_state(config)
        .await
        .context("could not open the notification service database (check DATABASE_URL)")?;
    let listener = bind("notification-service", addr, tls).await?;
    Ok(Service {
        name: "notification-service",
        task: tokio::spawn(notification_service::serve(state, listener, shutdown.clone())),
    })
}

/// Waits for SIGTERM/SIGINT (or a service failing), then drains every service.
async fn supervise(services: Vec<Service>, shutdown: CancellationToken, settings: &Settings) -> anyhow::Result<()> {
    let names: Vec<&'static str> = services.iter().map(|s| s.name).collect();
    let mut tasks: Vec<_> = services.into_iter().map(|s| s.task).collect();
    let failed = tokio::select! {
        () = common_http::serve::shutdown_signal() => {
            tracing::info!("shutdown requested; draining requests in flight");
            None
        }
        (result, index, _) = futures_select_all(&mut tasks) => Some((names[index], result)),
    };
    shutdown.cancel();
    if let Some((name, result)) = failed {
        return Err(anyhow::anyhow!("{name} stopped unexpectedly: {result:?}"));
    }
    let drain = Duration::from_secs(settings.drain_timeout_secs);
    let all = async {
        for (name, task) in names.iter().zip(tasks) {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(anyhow::Error::from(e).context(format!("{name} failed while draining"))),
                Err(e) => return Err(anyhow::Error::from(e).context(format!("{name} task failed"))),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(drain, all).await {
        Ok(result) => {
            tracing::info!("stopped");
            result
        }
        Err(_) => Err(anyhow::anyhow!("requests still in flight after {}s; exiting", drain.as_secs())),
    }
}

/// The first of `tasks` to finish, with its index.
async fn futures_select_all(
    tasks: &mut [JoinHandle<std::io::Result<()>>],
) -> (Result<std::io::Result<()>, tokio::task::JoinError>, usize, ()) {
    std::future::poll_fn(|cx| {
        for (i, task) in tasks.iter_mut().enumerate() {
            if let std::task::Poll::Ready(result) = std::pin::Pin::new(task).poll(cx) {
                return std::task::Poll::Ready((result, i, ()));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use clap::Parser as _;

    use super::{Cli, Command};
    use crate::admin::UserCommand;
    use crate::keys::KeysCommand;

    /// Key ids are base64url thumbprints: about one in 64 starts with `-`,
    /// and `keys retire` must still take it as the id, not as an option.
    #[test]
    fn a_key_id_starting_with_a_hyphen_is_still_a_key_id() {
        for args in
            [&["gatehouse", "keys", "retire", "-0aB_x"][..], &["gatehouse", "keys", "retire", "-0aB_x", "--force"]]
        {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let Command::Keys(KeysCommand::Retire { kid, force }) = cli.command else { panic!("{args:?}: not retire") };
            assert_eq!(kid, "-0aB_x");
            assert_eq!(force, args.len() == 5);
        }
    }

    /// The same for an email that starts with `-` (valid in a local part).
    #[test]
    fn an_email_starting_with_a_hyphen_is_still_an_email() {
        let cli = Cli::try_parse_from(["gatehouse", "user", "show", "-ops@example.com", "--json"]).unwrap();
        let Command::User(UserCommand::Show { email, json }) = cli.command else { panic!("not user show") };
        assert_eq!((email.as_str(), json), ("-ops@example.com", true));
        let cli = Cli::try_parse_from(["gatehouse", "user", "disable", "-ops@example.com"]).unwrap();
        let Command::User(UserCommand::Disable { email }) = cli.command else { panic!("not user disable") };
        assert_eq!(email, "-ops@example.com");
    }
}
