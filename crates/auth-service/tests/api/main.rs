//! HTTP integration tests of the auth service, each run on SQLite and on
//! PostgreSQL against a service spawned on a loopback port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bad_input;
mod login;
mod misc;
mod refresh;
mod register;
mod sessions;
