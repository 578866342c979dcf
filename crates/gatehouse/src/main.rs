//! `gatehouse`: one binary for every Gatehouse service.
//!
//! `gatehouse up` runs the whole stack in one process with the embedded
//! defaults; `gatehouse auth`, `gatehouse gateway` and `gatehouse users` run
//! one service; `gatehouse migrate` applies the auth service's migrations and
//! exits (every service also applies its own at start). Configuration comes from the
//! environment (and `.env`), see [`config`].

mod config;
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

use config::{Mode, Settings};

#[derive(Parser)]
#[command(name = "gatehouse", version, about = "Gatehouse: API gateway, auth service and downstream guard")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in one process (gateway :8080, auth :8081, users :8082), SQLite under DATA_DIR
    Up,
    /// Run the auth service alone (PORT, default 8081)
    Auth,
    /// Run the API gateway alone (PORT, default 8080)
    Gateway,
    /// Run the user service alone (PORT, default 8082)
    Users,
    /// Apply the database migrations to DATABASE_URL and exit
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
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

async fn run(command: Command) -> anyhow::Result<()> {
    // Every TLS user in the tree (sqlx, later the proxy client) shares one provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mode = if matches!(command, Command::Up) { Mode::Up } else { Mode::Single };
    let settings = Settings::from_vars(config::process_env(), mode).context("configuration error")?;
    telemetry::init(settings.log_format);
    match command {
        Command::Migrate => migrate(&settings).await,
        Command::Auth => {
            let shutdown = CancellationToken::new();
            let auth = start_auth(&settings, settings.listen_addr(8081), &shutdown).await?;
            supervise(vec![auth], shutdown, &settings).await
        }
        Command::Gateway => {
            let shutdown = CancellationToken::new();
            let gateway = start_gateway(&settings, settings.listen_addr(8080), &shutdown).await?;
            supervise(vec![gateway], shutdown, &settings).await
        }
        Command::Users => {
            let shutdown = CancellationToken::new();
            let users = start_users(&settings, settings.listen_addr(8082), &shutdown).await?;
            supervise(vec![users], shutdown, &settings).await
        }
        Command::Up => {
            let shutdown = CancellationToken::new();
            let at = |port| SocketAddr::new(settings.bind_address, port);
            // The auth service first: the gateway fetches its JWKS at start.
            let auth = start_auth(&settings, at(settings.auth_port), &shutdown).await?;
            let users = start_users(&settings, at(settings.users_port), &shutdown).await?;
            let gateway = start_gateway(&settings, at(settings.gateway_port), &shutdown).await?;
            supervise(vec![auth, users, gateway], shutdown, &settings).await
        }
    }
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    settings.ensure_data_dir().context("configuration error")?;
    let backend = settings.database.backend();
    let store = auth_service::store::connect(settings.database.clone(), Default::default())
        .await
        .context("could not migrate the database (check DATABASE_URL)")?;
    store.close().await;
    tracing::info!(?backend, "migrations applied");
    println!("gatehouse: migrations applied ({backend:?})");
    Ok(())
}

/// A running service task.
struct Service {
    name: &'static str,
    task: JoinHandle<std::io::Result<()>>,
}

async fn bind(name: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("{name}: cannot listen on {addr}"))?;
    tracing::info!(service = name, addr = %listener.local_addr().unwrap_or(addr), "listening");
    Ok(listener)
}

async fn start_auth(settings: &Settings, addr: SocketAddr, shutdown: &CancellationToken) -> anyhow::Result<Service> {
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
    let listener = bind("auth-service", addr).await?;
    Ok(Service { name: "auth-service", task: tokio::spawn(auth_service::serve(state, listener, shutdown.clone())) })
}

async fn start_gateway(settings: &Settings, addr: SocketAddr, shutdown: &CancellationToken) -> anyhow::Result<Service> {
    let config = settings.gateway_config().context("configuration error")?;
    let state = gateway::build_state(config).await.context("could not start the gateway")?;
    if !state.keys().is_loaded() {
        tracing::warn!("no signing keys yet (is the auth service up?); /ready fails until the JWKS loads");
    }
    let listener = bind("api-gateway", addr).await?;
    Ok(Service { name: "api-gateway", task: tokio::spawn(gateway::serve(state, listener, shutdown.clone())) })
}

async fn start_users(settings: &Settings, addr: SocketAddr, shutdown: &CancellationToken) -> anyhow::Result<Service> {
    let config = settings.user_service_config().await.context("configuration error")?;
    settings.ensure_data_dir().context("configuration error")?;
    let state = user_service::build_state(config)
        .await
        .context("could not open the user service database (check DATABASE_URL)")?;
    let listener = bind("user-service", addr).await?;
    Ok(Service { name: "user-service", task: tokio::spawn(user_service::serve(state, listener, shutdown.clone())) })
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
