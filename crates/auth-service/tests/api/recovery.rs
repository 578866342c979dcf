//! Password reset and email verification over HTTP, with mail delivered to
//! a real SMTP server on loopback (aiosmtpd, installed by `scripts/test`) or
//! to the development file mailer, and read back to follow the link.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use auth_service::AuthConfig;
use auth_service::mail_queue::MailSettings;
use auth_service::mailer::{FileMailer, Mailer, SmtpMailer, parse_mailbox};
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{Backend, DEFAULT_PASSWORD, TestApp, backend_tests, spawn_auth_with, unique_email};

/// An SMTP server (aiosmtpd) on a loopback port, storing what it receives
/// as a Maildir. Killed on drop.
struct SmtpSink {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

fn python() -> String {
    std::env::var("GATEHOUSE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("GATEHOUSE_TEST_PYTHON is not set: run the tests with scripts/test, which installs aiosmtpd")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl SmtpSink {
    /// A port for a server that is not running yet.
    fn down() -> Self {
        Self { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None }
    }

    async fn start() -> Self {
        let mut sink = Self::down();
        sink.up().await;
        sink
    }

    /// Starts the server on the sink's port and waits until it accepts.
    async fn up(&mut self) {
        let child = std::process::Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{}", self.port)])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(self.dir.path().join("maildir"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("could not start aiosmtpd");
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("aiosmtpd did not start on port {}", self.port);
    }

    fn mailer(&self) -> Arc<dyn Mailer> {
        Arc::new(SmtpMailer::from_url(&format!("smtp://127.0.0.1:{}", self.port)).unwrap())
    }

    fn received(&self) -> PathBuf {
        self.dir.path().join("maildir").join("new")
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Mail settings for tests: quick polling and retries.
fn settings(mailer: Arc<dyn Mailer>) -> MailSettings {
    let mut s =
        MailSettings::new(mailer, parse_mailbox("Gatehouse <no-reply@example.com>").unwrap(), "http://localhost:8080");
    s.poll_interval = Duration::from_millis(200);
    s.retry_base_secs = 1;
    s
}

/// Every message in `dir` addressed to `to`, oldest first.
fn messages_to(dir: &Path, to: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    // Oldest first by Message-ID, `<{mail id}@…>`: mail ids are UUIDv7, so
    // they sort in the order the mails were queued. Neither a file's name
    // nor its mtime does: the queue may send two mails in either order.
    let mut messages: Vec<(String, String)> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            let message = std::fs::read_to_string(e.path()).unwrap();
            let id = message
                .lines()
                .find_map(|l| l.strip_prefix("Message-ID: "))
                .unwrap_or_else(|| panic!("no Message-ID in {}", e.path().display()))
                .to_owned();
            (id, message)
        })
        .collect();
    messages.sort();
    messages
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| m.lines().any(|l| l.eq_ignore_ascii_case(&format!("To: {to}"))))
        .collect()
}

/// Waits (up to 15 s) for the `n`-th message to `to` in `dir` with a link
/// to `page`; the message.
async fn wait_for_link(dir: &Path, to: &str, page: &str, n: usize) -> String {
    let marker = format!("/{page}#token=");
    for _ in 0..300 {
        let messages: Vec<String> = messages_to(dir, to).into_iter().filter(|m| m.contains(&marker)).collect();
        if messages.len() >= n {
            return messages[n - 1].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no message {n} to {to} with a {page} link in {}", dir.display());
}

/// The token of the link in `message`, after checking where the link points.
fn link_token(message: &str, page: &str) -> String {
    let prefix = format!("http://localhost:8080/{page}#token=");
    let line =
        message.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {page} link in {message}"));
    let token = &line[prefix.len()..];
    assert_eq!(token.len(), 43, "{line}");
    token.to_owned()
}

async fn spawn_with_mail(
    backend: Backend,
    mailer: Arc<dyn Mailer>,
    adjust: impl FnOnce(&mut AuthConfig),
) -> (TestApp, testkit::TestDatabase) {
    spawn_auth_with(backend, |c| {
        c.mail = Some(settings(mailer));
        adjust(c);
    })
    .await
}

/// A file mailer writing into a fresh directory.
fn file_mailer() -> (Arc<dyn Mailer>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Arc::new(FileMailer::new(dir.path().join("mail"))), dir)
}

async fn forgot(app: &TestApp, email: &str) -> (StatusCode, Value) {
    let r = app.post_json("/auth/password/forgot", &json!({"email": email})).await;
    (r.status(), r.json().await.unwrap())
}

async fn reset(app: &TestApp, token: &str, password: &str) -> reqwest::Response {
    app.post_json("/auth/password/reset", &json!({"token": token, "password": password})).await
}

async fn wait_until_sent(app: &TestApp, email: &str, n: usize) {
    for _ in 0..300 {
        let rows = app.state.store.list_mails(email).await.unwrap();
        if rows.iter().filter(|r| r.sent_at.is_some()).count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} mails to {email} were not marked sent");
}

async fn a_reset_link_mailed_over_smtp_sets_the_password_and_ends_every_session(backend: Backend) {
    let sink = SmtpSink::start().await;
    let (app, db) = spawn_with_mail(backend, sink.mailer(), |_| {}).await;
    let email = unique_email("reset");
    let here = app.signed_in_user(&email).await;
    let there = app.login(&email, DEFAULT_PASSWORD).await.json::<Value>().await.unwrap();
    let (status, body) = forgot(&app, &email).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body, json!({"message": auth_service::recovery::FORGOT_ACCEPTED}));
    let message = wait_for_link(&sink.received(), &email, "reset-password", 1).await;
    assert!(message.contains("Subject: Reset your password"), "{message}");
    assert!(message.contains("From: Gatehouse <no-reply@example.com>"), "{message}");
    let token = link_token(&message, "reset-password");

    let r = reset(&app, &token, "a brand new passphrase").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"message": "Password has been reset", "revoked_sessions": 2}));
    // Every session is over: refresh tokens and access tokens alike.
    for s in [&here, &there] {
        assert_eq!(app.refresh(s["refresh_token"].as_str().unwrap()).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            app.get_authed("/auth/me", s["access_token"].as_str().unwrap()).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(app.login(&email, DEFAULT_PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
    let login = app.login(&email, "a brand new passphrase").await;
    assert_eq!(login.status(), StatusCode::OK);
    let me: Value = app
        .get_authed("/auth/me", login.json::<Value>().await.unwrap()["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["email_verified"], true, "the link proved the mailbox");
    // The link works once.
    let again = reset(&app, &token, "yet another passphrase").await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(again.json::<Value>().await.unwrap()["error"], "Invalid or expired token");
    // Once sent, the token is nowhere in the database.
    wait_until_sent(&app, &email, 1).await;
    assert!(!db.dump_text().await.contains(&token), "the token is in a database dump");
    let kinds: Vec<String> =
        app.state.store.list_audit_events(None, 50).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&"password_reset".to_owned()), "{kinds:?}");
}

async fn forgot_answers_alike_for_unknown_and_disabled_accounts_and_mails_only_real_ones(backend: Backend) {
    let (mailer, dir) = file_mailer();
    let (app, _db) = spawn_with_mail(backend, mailer, |_| {}).await;
    let known = unique_email("known");
    let disabled = unique_email("disabled");
    let unknown = unique_email("unknown");
    assert_eq!(app.register(&known, DEFAULT_PASSWORD).await.status(), StatusCode::CREATED);
    assert_eq!(app.register(&disabled, DEFAULT_PASSWORD).await.status(), StatusCode::CREATED);
    let id = app.state.store.find_user_by_email(&disabled).await.unwrap().unwrap().user_id;
    app.state.store.set_user_active(id, false, app.state.now()).await.unwrap();

    let answers = [
        forgot(&app, &known).await,
        forgot(&app, &unknown).await,
        forgot(&app, &disabled).await,
        forgot(&app, &known.to_uppercase()).await,
    ];
    for answer in &answers {
        assert_eq!(answer, &answers[0], "the answer tells nothing about the account");
    }
    assert_eq!(answers[0].0, StatusCode::ACCEPTED);
    // Two reset mails to the known address (the second spends the first link); none elsewhere.
    let outbox = |e: String| {
        let app = &app;
        async move {
            app.state.store.list_mails(&e).await.unwrap().into_iter().filter(|m| m.kind == "password_reset").count()
        }
    };
    assert_eq!(outbox(known.clone()).await, 2);
    assert_eq!(outbox(unknown.clone()).await, 0);
    assert_eq!(outbox(disabled.clone()).await, 0);
    let mail_dir = dir.path().join("mail");
    let older = link_token(&wait_for_link(&mail_dir, &known, "reset-password", 1).await, "reset-password");
    let newer = link_token(&wait_for_link(&mail_dir, &known, "reset-password", 2).await, "reset-password");
    assert_eq!(
        reset(&app, &older, "a brand new passphrase").await.status(),
        StatusCode::BAD_REQUEST,
        "replaced by the newer link"
    );
    assert_eq!(reset(&app, &newer, "a brand new passphrase").await.status(), StatusCode::OK);
    // Malformed emails are refused alike, whoever they would belong to.
    let r = app.post_json("/auth/password/forgot", &json!({"email": "not-an-email"})).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

async fn bad_tokens_and_weak_passwords_are_refused_without_spending_the_link(backend: Backend) {
    let (mailer, dir) = file_mailer();
    let (app, _db) = spawn_with_mail(backend, mailer, |_| {}).await;
    let email = unique_email("bad");
    assert_eq!(app.register(&email, DEFAULT_PASSWORD).await.status(), StatusCode::CREATED);
    assert_eq!(forgot(&app, &email).await.0, StatusCode::ACCEPTED);
    let message = wait_for_link(&dir.path().join("mail"), &email, "reset-password", 1).await;
    let token = link_token(&message, "reset-password");
    for junk in ["", "x", &"A".repeat(43), &format!("{token}A"), &token.to_lowercase()] {
        if junk == token {
            continue;
        }
        let r = reset(&app, junk, "a brand new passphrase").await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{junk:?}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "Invalid or expired token");
    }
    let weak = reset(&app, &token, "password").await;
    assert_eq!(weak.status(), StatusCode::BAD_REQUEST);
    assert_ne!(weak.json::<Value>().await.unwrap()["error"], "Invalid or expired token");
    let r = app
        .post_json("/auth/password/reset", &json!({"token": token, "password": "a brand new passphrase", "extra": 1}))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "unknown fields");
    assert_eq!(
        reset(&app, &token, "a brand new passphrase").await.status(),
        StatusCode::OK,
        "still valid after refusals"
    );
}

async fn mails_to_one_address_are_capped_per_hour_silently(backend: Backend) {
    let (mailer, _dir) = file_mailer();
    let (app, _db) = spawn_with_mail(backend, mailer, |c| c.mail.as_mut().unwrap().max_per_address_per_hour = 3).await;
    let email = unique_email("flood");
    assert_eq!(app.register(&email, DEFAULT_PASSWORD).await.status(), StatusCode::CREATED); // mail 1: verification
    for _ in 0..5 {
        assert_eq!(forgot(&app, &email).await.0, StatusCode::ACCEPTED);
    }
    let r = app.post_json("/auth/email/resend", &json!({"email": email})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(app.state.store.list_mails(&email).await.unwrap().len(), 3, "the hourly cap of 3 mails");
    let throttled = app
        .state
        .store
        .list_audit_events(None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "mail_throttled")
        .count();
    assert_eq!(throttled, 4);
}

async fn login_waits_for_a_verified_email_when_required(backend: Backend) {
    let (mailer, dir) = file_mailer();
    let (app, _db) = spawn_with_mail(backend, mailer, |c| c.require_email_verification = true).await;
    let mail_dir = dir.path().join("mail");
    let email = unique_email("verify");
    assert_eq!(app.register(&email, DEFAULT_PASSWORD).await.status(), StatusCode::CREATED);
    let first = link_token(&wait_for_link(&mail_dir, &email, "verify-email", 1).await, "verify-email");

    let refused = app.login(&email, DEFAULT_PASSWORD).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "Email address not verified");
    assert!(body["hint"].as_str().unwrap().contains("/auth/email/resend"));
    assert!(body.get("access_token").is_none());
    // A wrong password learns nothing about verification.
    assert_eq!(app.login(&email, "not the password").await.status(), StatusCode::UNAUTHORIZED);

    // A new link spends the first; unknown emails get the same answer.
    let resend = |e: String| {
        let app = &app;
        async move {
            let r = app.post_json("/auth/email/resend", &json!({"email": e})).await;
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let answer = resend(email.clone()).await;
    assert_eq!(answer.0, StatusCode::ACCEPTED);
    assert_eq!(resend(unique_email("nobody")).await, answer);
    let second = link_token(&wait_for_link(&mail_dir, &email, "verify-email", 2).await, "verify-email");
    let verify = |t: String| {
        let app = &app;
        async move { app.post_json("/auth/email/verify", &json!({"token": t})).await.status() }
    };
    assert_eq!(verify(first).await, StatusCode::BAD_REQUEST, "replaced by the newer link");
    assert_eq!(verify("A".repeat(43)).await, StatusCode::BAD_REQUEST);
    assert_eq!(verify(second.clone()).await, StatusCode::OK);
    assert_eq!(verify(second).await, StatusCode::BAD_REQUEST, "single use");

    let login = app.login(&email, DEFAULT_PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    let at = login.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    let me: Value = app.get_authed("/auth/me", &at).await.json().await.unwrap();
    assert_eq!(me["user"]["email_verified"], true);
    // Verified: no more verification mail on request.
    let sent_before = app.state.store.list_mails(&email).await.unwrap().len();
    assert_eq!(resend(email.clone()).await, answer);
    assert_eq!(app.state.store.list_mails(&email).await.unwrap().len(), sent_before);
}

async fn without_the_requirement_unverified_accounts_log_in(backend: Backend) {
    let (mailer, _dir) = file_mailer();
    let (app, _db) = spawn_with_mail(backend, mailer, |_| {}).await;
    let login = app.signed_in_user(&unique_email("relaxed")).await;
    let me: Value = app.get_authed("/auth/me", login["access_token"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(me["user"]["email_verified"], false);
}

async fn mail_queued_while_smtp_is_down_arrives_when_it_comes_back(backend: Backend) {
    let mut sink = SmtpSink::down();
    let (app, _db) = spawn_with_mail(backend, sink.mailer(), |_| {}).await;
    let email = unique_email("outage");
    assert_eq!(app.register(&email, DEFAULT_PASSWORD).await.status(), StatusCode::CREATED);
    assert_eq!(forgot(&app, &email).await.0, StatusCode::ACCEPTED, "the request does not wait for SMTP");
    // The sender tried and failed, and recorded why.
    let mut failed = false;
    for _ in 0..200 {
        let rows = app.state.store.list_mails(&email).await.unwrap();
        if rows.iter().all(|r| r.attempts >= 1 && r.last_error.is_some() && r.sent_at.is_none()) {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed, "{:?}", app.state.store.list_mails(&email).await.unwrap());

    sink.up().await;
    let token = link_token(&wait_for_link(&sink.received(), &email, "reset-password", 1).await, "reset-password");
    wait_for_link(&sink.received(), &email, "verify-email", 1).await;
    wait_until_sent(&app, &email, 2).await;
    assert!(app.state.store.list_mails(&email).await.unwrap().iter().all(|r| !r.has_body && r.attempts >= 2));
    assert_eq!(reset(&app, &token, "a brand new passphrase").await.status(), StatusCode::OK);
}

async fn mail_is_given_up_and_audited_after_its_attempts(backend: Backend) {
    let sink = SmtpSink::down();
    let (app, _db) = spawn_with_mail(backend, sink.mailer(), |c| c.mail.as_mut().unwrap().max_attempts = 2).await;
    let email = unique_email("never");
    assert_eq!(app.register(&email, DEFAULT_PASSWORD).await.status(), StatusCode::CREATED);
    // The sender marks the mail given up and then audits it (the audit row
    // follows the action it describes), so wait for both.
    for _ in 0..200 {
        let rows = app.state.store.list_mails(&email).await.unwrap();
        let events = app.state.store.list_audit_events(None, 50).await.unwrap();
        let audited = events.iter().any(|e| e.kind == "mail_given_up" && e.email.as_deref() == Some(&email));
        if rows.iter().all(|r| r.failed_at.is_some()) && audited {
            assert_eq!((rows[0].attempts, rows[0].has_body), (2, false));
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "not given up and audited: {:?} {:?}",
        app.state.store.list_mails(&email).await.unwrap(),
        app.state.store.list_audit_events(None, 50).await.unwrap()
    );
}

async fn without_mail_configured_forgot_still_answers_alike(backend: Backend) {
    let (app, _db) = testkit::spawn_default_auth(backend).await;
    let email = unique_email("nomail");
    assert_eq!(app.register(&email, DEFAULT_PASSWORD).await.status(), StatusCode::CREATED);
    assert_eq!(forgot(&app, &email).await, forgot(&app, &unique_email("nobody")).await);
    assert!(app.state.store.list_mails(&email).await.unwrap().is_empty());
}

backend_tests!(
    a_reset_link_mailed_over_smtp_sets_the_password_and_ends_every_session,
    forgot_answers_alike_for_unknown_and_disabled_accounts_and_mails_only_real_ones,
    bad_tokens_and_weak_passwords_are_refused_without_spending_the_link,
    mails_to_one_address_are_capped_per_hour_silently,
    login_waits_for_a_verified_email_when_required,
    without_the_requirement_unverified_accounts_log_in,
    mail_queued_while_smtp_is_down_arrives_when_it_comes_back,
    mail_is_given_up_and_audited_after_its_attempts,
    without_mail_configured_forgot_still_answers_alike,
);
