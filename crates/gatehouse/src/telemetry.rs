//! Logging: `tracing` with `RUST_LOG` filtering (default `info`, quieter
//! for sqlx), as text or, with `LOG_FORMAT=json`, one JSON object per line.
//!
//! Services log to stdout. The operator's commands (`gatehouse user …`,
//! `gatehouse audit`) print their answer on stdout, so their logs go to
//! stderr and default to warnings only. Colours only on a terminal, so a
//! log file or collector never gets escape codes.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Who the process is: a service or an operator's one-shot command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Service,
    Command,
}

/// Installs the global subscriber once, at start.
pub fn init(format: LogFormat, role: Role) {
    let default = if role == Role::Command { "warn,sqlx=warn" } else { "info,sqlx=warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    // try_init: a second call (tests) must not panic.
    let _ = match (format, role) {
        (LogFormat::Json, Role::Service) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Json, Role::Command) => builder.json().flatten_event(true).with_writer(std::io::stderr).try_init(),
        (LogFormat::Text, Role::Service) => builder.with_ansi(std::io::stdout().is_terminal()).try_init(),
        (LogFormat::Text, Role::Command) => {
            builder.with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).try_init()
        }
    };
}
