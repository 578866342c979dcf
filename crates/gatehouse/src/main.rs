//! `gatehouse`: one binary for every Gatehouse service.
//!
//! `gatehouse up` runs the whole stack in one process with the embedded
//! defaults; `gatehouse auth` runs the auth service alone; `gatehouse migrate`
//! applies the database migrations and exits. Configuration comes from the
//! environment (and `.env`), see [`config`].

mod config;
mod telemetry;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
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
    /// Run every service in one process (auth on :8081), SQLite under DATA_DIR
    Up,
    /// Run the auth service alone (PORT, default 8081)
    Auth,
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
            let addr = settings.listen_addr(8081);
            run_services(&settings, addr).await
        }
        Command::Up => {
            let addr = SocketAddr::new(settings.bind_address, settings.auth_port);
            run_services(&settings, addr).await
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

/// Starts the services, then waits for SIGTERM/SIGINT and drains them.
async fn run_services(settings: &Settings, auth_addr: SocketAddr) -> anyhow::Result<()> {
    // Validate everything before creating anything on disk.
    let auth_config = settings.auth_config().context("configuration error")?;
    settings.ensure_data_dir().context("configuration error")?;
    let state = auth_service::build_state(auth_config)
        .await
        .context("could not open the auth database (check DATABASE_URL)")?;
    let listener = TcpListener::bind(auth_addr).await.with_context(|| format!("cannot listen on {auth_addr}"))?;
    tracing::info!(
        service = "auth-service",
        addr = %listener.local_addr().unwrap_or(auth_addr),
        backend = ?state.store.backend(),
        algorithm = state.config.signing_key.algorithm().as_str(),
        kid = state.config.signing_key.kid(),
        "listening"
    );

    let shutdown = CancellationToken::new();
    let mut auth = tokio::spawn(auth_service::serve(state, listener, shutdown.clone()));
    tokio::select! {
        () = common_http::serve::shutdown_signal() => {
            tracing::info!("shutdown requested; draining requests in flight");
        }
        result = &mut auth => {
            // A service ending on its own is a failure: report it by name.
            return Err(anyhow::anyhow!("auth-service stopped unexpectedly: {result:?}"));
        }
    }
    shutdown.cancel();
    let drain = Duration::from_secs(settings.drain_timeout_secs);
    match tokio::time::timeout(drain, auth).await {
        Ok(Ok(Ok(()))) => {
            tracing::info!("stopped");
            Ok(())
        }
        Ok(Ok(Err(e))) => Err(e).context("auth-service failed while draining"),
        Ok(Err(e)) => Err(e).context("auth-service task failed"),
        Err(_) => Err(anyhow::anyhow!("requests still in flight after {}s; exiting", drain.as_secs())),
    }
}
