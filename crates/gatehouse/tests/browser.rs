//! The gateway's demo page in a real browser: `gatehouse up` as a process,
//! and `tests/browser/demo.mjs` driving Debian's headless Chromium through
//! playwright-core, both installed by `scripts/test`, which exports
//! `GATEHOUSE_TEST_CHROMIUM` and `GATEHOUSE_TEST_NODE_MODULES`.
//!
//! The script signs up, edits the profile, pays, reloads (still signed in,
//! by the HttpOnly refresh cookie alone), signs out the other sessions,
//! opens an attacker's page on another origin of the same host that tries
//! state-changing requests with the victim's cookies (the session
//! survives), signs out, opens the email-verification link of the sign-up
//! mail, resets the password through "Forgot password?" and the link of that
//! mail (the script reads both mails from the development mailer's `.eml`
//! files under the stack's `DATA_DIR/mail`), signs in with the new password,
//! and signs in again through the two-factor step. Screenshots of each step
//! go to `target/test-artifacts/browser/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{Running, StackPorts, gatehouse, wait_ready};

/// Where the screenshots go: `target/test-artifacts/browser/`.
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("test-artifacts").join("browser")
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test, which installs Chromium and playwright-core")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_works_end_to_end_in_headless_chromium_and_resists_a_cross_site_page() {
    // Arrange: the tools, and `gatehouse up` with limits a quick walk fits in
    // (the defaults allow a burst of 10 per IP; the walk sends ~60 requests).
    let chromium = required_env("GATEHOUSE_TEST_CHROMIUM");
    let node_modules = required_env("GATEHOUSE_TEST_NODE_MODULES");
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let ports = StackPorts::new();
    let mut env = ports.env();
    // The mailed links point at the address the browser reaches the page by.
    env.push(("PUBLIC_URL", StackPorts::url(ports.gateway)));
    env.push(("DATA_DIR", data_dir.display().to_string()));
    for (name, value) in [
        ("RATE_LIMIT_PER_MINUTE", "6000"),
        ("RATE_LIMIT_BURST", "500"),
        ("AUTH_RATE_LIMIT_PER_MINUTE", "6000"),
        ("AUTH_RATE_LIMIT_BURST", "500"),
        ("USER_RATE_LIMIT_PER_MINUTE", "6000"),
        ("USER_RATE_LIMIT_BURST", "500"),
    ] {
        env.push((name, value.to_owned()));
    }
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _stack = Running(gatehouse(&["up"], &refs, dir.path()).spawn().unwrap());
    for port in [ports.auth, ports.users, ports.payments, ports.notifications, ports.gateway] {
        wait_ready(&StackPorts::url(port)).await;
    }
    let artifacts = artifacts_dir();
    let _ = std::fs::remove_dir_all(&artifacts);

    // Act: the page is reached as http://127.0.0.1:PORT, an origin that is
    // not in CORS_ALLOWED_ORIGINS: the gateway's own page needs no entry.
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/demo.mjs");
    let output = Command::new("node")
        .arg(&script)
        .env("GATEWAY_URL", StackPorts::url(ports.gateway))
        .env("ARTIFACTS_DIR", &artifacts)
        .env("MAIL_DIR", data_dir.join("mail"))
        .env("CHROMIUM", &chromium)
        .env("NODE_PATH", &node_modules)
        .output()
        .expect("node is installed (scripts/test installs it)");

    // Assert
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser script failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("browser demo: 19 steps passed"), "{stdout}");
    let shots = std::fs::read_dir(&artifacts)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "png"))
        .count();
    assert_eq!(shots, 19, "one screenshot per step in {}", artifacts.display());
}
