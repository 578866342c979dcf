//! HTTP integration tests of the auth service, each run on SQLite and on
//! PostgreSQL against a service spawned on a loopback port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bad_input;
mod login;
mod metrics;
mod mfa;
mod misc;
mod recovery;
mod refresh;
mod refresh_cookie;
mod register;
mod sessions;
