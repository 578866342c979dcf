//! TOTP two-factor login over real HTTP. Codes come from an RFC 6238
//! implementation written here with `hmac` and `sha1`, independent of the
//! totp-rs crate the service uses, and checked against the RFC's own test
//! vectors first.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth_service::mfa::OpenedTotp;
use auth_service::store::SealedTotpSecret;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha1::Sha1;
use testkit::{
    Backend, DEFAULT_PASSWORD, TestApp, backend_tests, spawn_auth, spawn_auth_with, spawn_default_auth,
    test_auth_config, unique_email,
};
use tokens::sealed::{SealingKey, SealingKeys};
use uuid::Uuid;

// --- an independent RFC 6238 implementation ----------------------------------

/// HOTP (RFC 4226 §5.3): HMAC-SHA-1 of the counter, dynamic truncation.
fn hotp(secret: &[u8], counter: u64, digits: u32) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).unwrap();
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = usize::from(hash[hash.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([hash[offset] & 0x7f, hash[offset + 1], hash[offset + 2], hash[offset + 3]]);
    format!("{:0width$}", binary % 10u32.pow(digits), width = digits as usize)
}

/// TOTP (RFC 6238 §4): HOTP of the number of 30-second steps since the epoch.
fn totp(secret: &[u8], unix_time: u64, digits: u32) -> String {
    hotp(secret, unix_time / 30, digits)
}

/// RFC 4648 base32, upper case, no padding.
fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u32, Vec::new());
    for c in text.trim_end_matches('=').bytes() {
        let index = ALPHABET.iter().position(|&a| a == c).unwrap_or_else(|| panic!("not base32: {c}"));
        value = (value << 5) | u32::try_from(index).unwrap();
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((value >> bits) & 0xff).unwrap());
        }
    }
    out
}

#[test]
fn the_independent_totp_matches_the_rfc_6238_test_vectors() {
    // RFC 6238 Appendix B, SHA-1 rows: the ASCII seed "12345678901234567890", 8 digits.
    let seed = b"12345678901234567890";
    for (time, code) in [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ] {
        assert_eq!(totp(seed, time, 8), code, "T = {time}");
    }
    // RFC 4226 Appendix D: HOTP, 6 digits.
    let expected = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"];
    for (counter, code) in expected.iter().enumerate() {
        assert_eq!(hotp(seed, counter as u64, 6), *code);
    }
    assert_eq!(base32_decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"), seed);
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The user's authenticator app: it knows the seed and which step it last
/// gave a code for, so each code it hands out is one the service has not
/// accepted yet (the service takes each step once, and only newer ones).
struct Authenticator {
    seed: Vec<u8>,
    last_step: u64,
}

impl Authenticator {
    fn new(secret_base32: &str) -> Self {
        Self { seed: base32_decode(secret_base32), last_step: 0 }
    }

    /// A fresh code: for the oldest step the service still accepts (one step
    /// back) that is newer than the last code given, waiting for the clock
    /// when the three accepted steps are spent. Never in the last two seconds
    /// of a step, so the service's clock agrees on which steps are accepted.
    async fn next_code(&mut self) -> String {
        loop {
            let now = unix_now();
            let current = now / 30;
            if now % 30 < 28 {
                let step = (self.last_step + 1).max(current - 1);
                if step <= current + 1 {
                    self.last_step = step;
                    return hotp(&self.seed, step, 6);
                }
            }
            let next_boundary = (current + 1) * 30;
            tokio::time::sleep(Duration::from_secs(next_boundary - now) + Duration::from_millis(100)).await;
        }
    }

    /// The code given last (to try a replay).
    fn last_code(&self) -> String {
        hotp(&self.seed, self.last_step, 6)
    }

    /// A six-digit code that is valid for none of the steps the service accepts now.
    fn wrong_code(&self) -> String {
        let now = unix_now();
        let valid: Vec<String> = (0..4).map(|i| totp(&self.seed, now + i * 30 - 30, 6)).collect();
        (0..).map(|n| format!("{n:06}")).find(|c| !valid.contains(c)).unwrap()
    }
}

// --- helpers -------------------------------------------------------------------

async fn post_authed(app: &TestApp, path: &str, access_token: &str, body: &Value) -> reqwest::Response {
    app.client.post(app.url(path)).bearer_auth(access_token).json(body).send().await.unwrap()
}

fn field(body: &Value, name: &str) -> String {
    body[name].as_str().unwrap_or_else(|| panic!("no {name} in {body}")).to_owned()
}

/// A user with TOTP enabled, as the user's client sees it.
struct Enrolled {
    email: String,
    user_id: Uuid,
    /// The access token of the session that enabled TOTP (still valid).
    access_token: String,
    secret: String,
    app: Authenticator,
    recovery_codes: Vec<String>,
}

/// Registers, logs in, sets up TOTP and confirms it with a code.
async fn enrolled_user(app: &TestApp, prefix: &str) -> Enrolled {
    let email = unique_email(prefix);
    let login = app.signed_in_user(&email).await;
    let access_token = field(&login, "access_token");
    let setup = post_authed(app, "/auth/mfa/totp/setup", &access_token, &json!({})).await;
    assert_eq!(setup.status(), StatusCode::OK);
    let setup: Value = setup.json().await.unwrap();
    let secret = field(&setup, "secret");
    let mut authenticator = Authenticator::new(&secret);
    let code = authenticator.next_code().await;
    let confirmed = post_authed(app, "/auth/mfa/totp/confirm", &access_token, &json!({"code": code})).await;
    assert_eq!(confirmed.status(), StatusCode::OK);
    let confirmed: Value = confirmed.json().await.unwrap();
    let recovery_codes: Vec<String> =
        confirmed["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    Enrolled {
        user_id: Uuid::parse_str(login["user"]["id"].as_str().unwrap()).unwrap(),
        email,
        access_token,
        secret,
        app: authenticator,
        recovery_codes,
    }
}

/// Logs in with the password; asserts the second factor is asked for; returns the mfa_token.
async fn password_step(app: &TestApp, email: &str) -> String {
    let response = app.login(email, DEFAULT_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("set-cookie").is_none(), "no cookie before the second factor");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["mfa_required"], true, "{body}");
    assert_eq!(body["message"], "Second factor required");
    for absent in ["access_token", "refresh_token", "csrf_token", "user"] {
        assert!(body.get(absent).is_none(), "{absent} before the second factor: {body}");
    }
    field(&body, "mfa_token")
}

async fn verify(app: &TestApp, mfa_token: &str, code: &str) -> reqwest::Response {
    app.post_json("/auth/mfa/verify", &json!({"mfa_token": mfa_token, "code": code})).await
}

async fn error_of(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (status, body["error"].as_str().unwrap_or_default().to_owned())
}

async fn audit_kinds(app: &TestApp, user_id: Uuid) -> Vec<String> {
    app.state.store.list_audit_events(Some(user_id), 200).await.unwrap().into_iter().map(|e| e.kind).collect()
}

async fn totp_enabled(app: &TestApp, user_id: Uuid) -> bool {
    app.state.store.find_totp(user_id).await.unwrap().is_some_and(|t| t.is_enabled())
}

// --- tests ---------------------------------------------------------------------

async fn setup_confirm_logout_and_log_in_with_a_second_factor(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let email = unique_email("mfa");
    let login = app.signed_in_user(&email).await;
    let access = field(&login, "access_token");
    let setup = post_authed(&app, "/auth/mfa/totp/setup", &access, &json!({})).await;
    assert_eq!(setup.status(), StatusCode::OK);
    assert_eq!(setup.headers()["cache-control"], "no-store");
    let setup: Value = setup.json().await.unwrap();
    let secret = field(&setup, "secret");
    assert_eq!(base32_decode(&secret).len(), 20, "160-bit seed");
    let uri = field(&setup, "otpauth_uri");
    let account = email.replace('@', "%40");
    assert_eq!(uri, format!("otpauth://totp/Gatehouse:{account}?secret={secret}&issuer=Gatehouse"));
    let svg = field(&setup, "qr_svg");
    assert!(svg.contains("<svg") && svg.ends_with("</svg>"), "{svg}");
    assert_eq!((setup["digits"].as_u64(), setup["period"].as_u64()), (Some(6), Some(30)));
    // Pending until confirmed: the password alone still logs in.
    let user_id = Uuid::parse_str(login["user"]["id"].as_str().unwrap()).unwrap();
    assert!(!totp_enabled(&app, user_id).await);

    let mut phone = Authenticator::new(&secret);
    let code = phone.next_code().await;
    let confirmed = post_authed(&app, "/auth/mfa/totp/confirm", &access, &json!({"code": code})).await;
    assert_eq!(confirmed.status(), StatusCode::OK);
    let confirmed: Value = confirmed.json().await.unwrap();
    assert_eq!(confirmed["message"], "Two-factor authentication enabled");
    let codes: Vec<&str> =
        confirmed["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(codes.len(), 10);
    assert_eq!(codes.iter().collect::<std::collections::HashSet<_>>().len(), 10);
    for c in &codes {
        assert!(c.len() == 19 && c.split('-').all(|g| g.len() == 4), "{c}");
    }

    let logout = app.post_json("/auth/logout", &json!({"refresh_token": field(&login, "refresh_token")})).await;
    assert_eq!(logout.status(), StatusCode::OK);
    let mfa_token = password_step(&app, &email).await;
    let done = verify(&app, &mfa_token, &phone.next_code().await).await;
    assert_eq!(done.status(), StatusCode::OK);
    let cookie = done.headers()["set-cookie"].to_str().unwrap().to_owned();
    let body: Value = done.json().await.unwrap();
    // The usual login body.
    assert_eq!(body["message"], "Login successful");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["user"]["email"], email.as_str());
    assert!(cookie.starts_with(&format!("csrf_token={}", field(&body, "csrf_token"))), "{cookie}");
    let me = app.get_authed("/auth/me", &field(&body, "access_token")).await;
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(app.refresh(&field(&body, "refresh_token")).await.status(), StatusCode::OK);
    let kinds = audit_kinds(&app, user_id).await;
    for kind in ["mfa_setup_started", "mfa_enabled", "mfa_challenge_issued", "mfa_verify_succeeded", "login_succeeded"]
    {
        assert!(kinds.contains(&kind.to_owned()), "{kind} not in {kinds:?}");
    }
    // The audit details never hold a code or the seed.
    for event in app.state.store.list_audit_events(Some(user_id), 200).await.unwrap() {
        let detail = event.detail.unwrap_or_default();
        assert!(!detail.contains(&secret) && !detail.contains(&phone.last_code()), "{detail}");
    }
}

async fn a_totp_code_is_accepted_once(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let mut user = enrolled_user(&app, "replay").await;
    let confirming_code = user.app.last_code();
    let code = user.app.next_code().await;
    assert_eq!(verify(&app, &password_step(&app, &user.email).await, &code).await.status(), StatusCode::OK);
    // The same code again (same step), and the older confirming code: refused.
    for replayed in [code, confirming_code] {
        let (status, error) = error_of(verify(&app, &password_step(&app, &user.email).await, &replayed).await).await;
        assert_eq!((status, error.as_str()), (StatusCode::UNAUTHORIZED, "Invalid code"));
    }
    // Two logins racing with one new code: one wins.
    let (a, b) = (password_step(&app, &user.email).await, password_step(&app, &user.email).await);
    let code = user.app.next_code().await;
    let (ra, rb) = tokio::join!(verify(&app, &a, &code), verify(&app, &b, &code));
    let mut statuses = [ra.status(), rb.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::UNAUTHORIZED]);
    let kinds = audit_kinds(&app, user.user_id).await;
    assert!(kinds.contains(&"mfa_verify_failed".to_owned()), "{kinds:?}");
}

async fn wrong_codes_count_toward_the_account_lockout(backend: Backend) {
    let (app, _db) = spawn_auth_with(backend, |c| {
        c.login_max_failures = 3;
        c.login_failure_window_secs = 600;
    })
    .await;
    let mut user = enrolled_user(&app, "lockout").await;
    let mfa_token = password_step(&app, &user.email).await;
    for _ in 0..3 {
        let (status, error) = error_of(verify(&app, &mfa_token, &user.app.wrong_code()).await).await;
        assert_eq!((status, error.as_str()), (StatusCode::UNAUTHORIZED, "Invalid code"));
    }
    // Locked: the right code and the right password both get 429 now.
    let locked = verify(&app, &mfa_token, &user.app.next_code().await).await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(locked.headers().contains_key("retry-after"));
    assert_eq!(app.login(&user.email, DEFAULT_PASSWORD).await.status(), StatusCode::TOO_MANY_REQUESTS);
    let kinds = audit_kinds(&app, user.user_id).await;
    assert_eq!(kinds.iter().filter(|k| *k == "mfa_verify_failed").count(), 3, "{kinds:?}");
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for series in [r#"gatehouse_auth_logins_total{outcome="mfa_required"} 1"#, r#"{outcome="invalid_code"} 3"#] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
}

/// Logging in again with the password does not reset the count, or the
/// password would buy unlimited guesses.
async fn a_correct_password_does_not_reset_the_count_of_wrong_codes(backend: Backend) {
    let (app, _db) = spawn_auth_with(backend, |c| c.login_max_failures = 4).await;
    let user = enrolled_user(&app, "noreset").await;
    for _ in 0..4 {
        let mfa_token = password_step(&app, &user.email).await;
        assert_eq!(verify(&app, &mfa_token, &user.app.wrong_code()).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.login(&user.email, DEFAULT_PASSWORD).await.status(), StatusCode::TOO_MANY_REQUESTS);
}

async fn an_mfa_token_allows_five_codes_and_one_success(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let mut user = enrolled_user(&app, "attempts").await;
    let mfa_token = password_step(&app, &user.email).await;
    for _ in 0..5 {
        let (status, error) = error_of(verify(&app, &mfa_token, &user.app.wrong_code()).await).await;
        assert_eq!((status, error.as_str()), (StatusCode::UNAUTHORIZED, "Invalid code"));
    }
    let code = user.app.next_code().await;
    let (status, error) = error_of(verify(&app, &mfa_token, &code).await).await;
    assert_eq!((status, error.as_str()), (StatusCode::UNAUTHORIZED, "Invalid or expired MFA token"));
    // A dead token spent nothing: the same code completes a new login.
    let fresh = password_step(&app, &user.email).await;
    assert_eq!(verify(&app, &fresh, &code).await.status(), StatusCode::OK);
    // Single use: the token that succeeded is spent, even for a valid recovery code.
    let (status, error) = error_of(verify(&app, &fresh, &user.recovery_codes[0]).await).await;
    assert_eq!((status, error.as_str()), (StatusCode::UNAUTHORIZED, "Invalid or expired MFA token"));
    assert_eq!(app.state.store.count_unused_recovery_codes(user.user_id).await.unwrap(), 10, "nothing spent");
    // A token that was never issued.
    let (status, _) = error_of(verify(&app, "bm90LWEtdG9rZW4", &user.recovery_codes[0]).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn an_mfa_token_expires(backend: Backend) {
    let (app, _db) = spawn_auth_with(backend, |c| c.mfa_challenge_ttl_secs = 1).await;
    let mut user = enrolled_user(&app, "expiry").await;
    let mfa_token = password_step(&app, &user.email).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, error) = error_of(verify(&app, &mfa_token, &user.app.next_code().await).await).await;
    assert_eq!((status, error.as_str()), (StatusCode::UNAUTHORIZED, "Invalid or expired MFA token"));
}

async fn a_recovery_code_works_once(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let user = enrolled_user(&app, "recovery").await;
    // Typed sloppily: upper case, spaces for dashes.
    let typed = user.recovery_codes[3].to_uppercase().replace('-', " ");
    let done = verify(&app, &password_step(&app, &user.email).await, &typed).await;
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(done.json::<Value>().await.unwrap()["message"], "Login successful");
    let (status, error) =
        error_of(verify(&app, &password_step(&app, &user.email).await, &user.recovery_codes[3]).await).await;
    assert_eq!((status, error.as_str()), (StatusCode::UNAUTHORIZED, "Invalid code"), "a second use");
    let done = verify(&app, &password_step(&app, &user.email).await, &user.recovery_codes[7]).await;
    assert_eq!(done.status(), StatusCode::OK, "another code still works");
    let events = app.state.store.list_audit_events(Some(user.user_id), 200).await.unwrap();
    let used: Vec<_> = events.iter().filter(|e| e.kind == "mfa_recovery_code_used").collect();
    assert_eq!(used.len(), 2);
    assert_eq!(used[0].detail.as_deref(), Some("8 recovery codes left"));
}

async fn disabling_needs_the_password_and_a_code(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let mut user = enrolled_user(&app, "disable").await;
    let disable = |password: &str, code: &str| json!({"password": password, "code": code});
    let access = user.access_token.clone();
    let code = user.app.next_code().await;
    let (status, error) =
        error_of(post_authed(&app, "/auth/mfa/totp/disable", &access, &disable("wrong password!", &code)).await).await;
    assert_eq!((status, error.as_str()), (StatusCode::FORBIDDEN, "Password is incorrect"));
    let wrong = user.app.wrong_code();
    let (status, error) =
        error_of(post_authed(&app, "/auth/mfa/totp/disable", &access, &disable(DEFAULT_PASSWORD, &wrong)).await).await;
    assert_eq!((status, error.as_str()), (StatusCode::FORBIDDEN, "Invalid code"));
    let no_code = post_authed(&app, "/auth/mfa/totp/disable", &access, &json!({"password": DEFAULT_PASSWORD})).await;
    assert_eq!(no_code.status(), StatusCode::BAD_REQUEST);
    let unauthenticated = app.post_json("/auth/mfa/totp/disable", &disable(DEFAULT_PASSWORD, &code)).await;
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    assert!(totp_enabled(&app, user.user_id).await, "still on");
    password_step(&app, &user.email).await;

    let done = post_authed(&app, "/auth/mfa/totp/disable", &access, &disable(DEFAULT_PASSWORD, &code)).await;
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(done.json::<Value>().await.unwrap()["message"], "Two-factor authentication disabled");
    assert!(!totp_enabled(&app, user.user_id).await);
    assert_eq!(app.state.store.count_unused_recovery_codes(user.user_id).await.unwrap(), 0);
    // The password alone logs in again, with the usual body.
    let login = app.login(&user.email, DEFAULT_PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    let login: Value = login.json().await.unwrap();
    assert!(login.get("mfa_required").is_none() && login["access_token"].is_string(), "{login}");
    let again = post_authed(&app, "/auth/mfa/totp/disable", &access, &disable(DEFAULT_PASSWORD, &code)).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let kinds = audit_kinds(&app, user.user_id).await;
    assert!(kinds.contains(&"mfa_disabled".to_owned()) && kinds.contains(&"mfa_disable_failed".to_owned()));
}

async fn a_database_dump_holds_neither_the_seed_nor_a_recovery_code(backend: Backend) {
    let (app, db) = spawn_default_auth(backend).await;
    let user = enrolled_user(&app, "dump").await;
    let mfa_token = password_step(&app, &user.email).await;
    let dump = db.dump_text().await;
    assert!(dump.contains("mfa_enabled") && dump.contains("test-k1"), "the dump reads the MFA tables");
    assert!(!dump.contains(&user.secret) && !dump.contains(&user.secret.to_lowercase()), "the base32 seed");
    let seed = base32_decode(&user.secret);
    assert!(!dump.contains(&String::from_utf8_lossy(&seed).into_owned()), "the raw seed");
    assert!(!dump.contains(&hex::encode(&seed)), "the seed in hex");
    for code in &user.recovery_codes {
        assert!(!dump.contains(code.as_str()) && !dump.contains(&code.replace('-', "")), "recovery code {code}");
    }
    assert!(!dump.contains(&mfa_token), "the mfa_token");
}

async fn a_seed_copied_to_another_users_row_does_not_open(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let mut alice = enrolled_user(&app, "alice").await;
    let bob = app.signed_in_user(&unique_email("bob")).await;
    let bob_id = Uuid::parse_str(bob["user"]["id"].as_str().unwrap()).unwrap();
    let bob_access = field(&bob, "access_token");
    assert_eq!(post_authed(&app, "/auth/mfa/totp/setup", &bob_access, &json!({})).await.status(), StatusCode::OK);
    // Someone with write access to the database copies Alice's ciphertext into Bob's row.
    let row = app.state.store.find_totp(alice.user_id).await.unwrap().unwrap();
    let copied = SealedTotpSecret { user_id: bob_id, key_id: row.key_id, nonce: row.nonce, ciphertext: row.ciphertext };
    assert!(app.state.store.begin_totp_setup(&copied, 0).await.unwrap());
    let bob_row = app.state.store.find_totp(bob_id).await.unwrap().unwrap();
    let keys = app.state.config.mfa_keys.as_ref().unwrap();
    assert!(OpenedTotp::open(keys, &bob_row).is_err(), "bound to Alice's user id");
    // Alice's codes do not enable anything for Bob; the service reports an internal error, not a success.
    let code = alice.app.next_code().await;
    let (status, error) =
        error_of(post_authed(&app, "/auth/mfa/totp/confirm", &bob_access, &json!({"code": code})).await).await;
    assert_eq!((status, error.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "Internal server error"));
    assert!(!totp_enabled(&app, bob_id).await);
    // Alice's own row still opens.
    let alice_row = app.state.store.find_totp(alice.user_id).await.unwrap().unwrap();
    assert!(OpenedTotp::open(keys, &alice_row).is_ok());
}

async fn setup_needs_a_bearer_token_and_confirm_the_right_code(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    for bearer in [None, Some("garbage"), Some("eyJhbGciOiJub25lIn0.e30.")] {
        let mut request = app.client.post(app.url("/auth/mfa/totp/setup")).json(&json!({}));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{bearer:?}");
        assert!(response.json::<Value>().await.unwrap()["error"].is_string());
    }
    let email = unique_email("confirm");
    let login = app.signed_in_user(&email).await;
    let access = field(&login, "access_token");
    let user_id = Uuid::parse_str(login["user"]["id"].as_str().unwrap()).unwrap();
    let (status, error) =
        error_of(post_authed(&app, "/auth/mfa/totp/confirm", &access, &json!({"code": "123456"})).await).await;
    assert_eq!((status, error.as_str()), (StatusCode::CONFLICT, "No two-factor setup in progress"));
    let setup: Value = post_authed(&app, "/auth/mfa/totp/setup", &access, &json!({})).await.json().await.unwrap();
    let first_secret = field(&setup, "secret");
    let mut phone = Authenticator::new(&first_secret);
    let (status, error) =
        error_of(post_authed(&app, "/auth/mfa/totp/confirm", &access, &json!({"code": phone.wrong_code()})).await)
            .await;
    assert_eq!((status, error.as_str()), (StatusCode::BAD_REQUEST, "Invalid code"));
    let recovery_shaped = json!({"code": "abcd-efgh-ijkm-npqr"});
    let (status, _) = error_of(post_authed(&app, "/auth/mfa/totp/confirm", &access, &recovery_shaped).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!totp_enabled(&app, user_id).await, "MFA stays off");
    let login = app.login(&email, DEFAULT_PASSWORD).await.json::<Value>().await.unwrap();
    assert!(login["access_token"].is_string(), "the password alone still logs in: {login}");
    // A second setup replaces the pending seed: the first one's codes no longer confirm.
    let second: Value = post_authed(&app, "/auth/mfa/totp/setup", &access, &json!({})).await.json().await.unwrap();
    assert_ne!(field(&second, "secret"), first_secret);
    let stale = phone.next_code().await;
    let (status, _) =
        error_of(post_authed(&app, "/auth/mfa/totp/confirm", &access, &json!({"code": stale})).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut phone = Authenticator::new(&field(&second, "secret"));
    let code = phone.next_code().await;
    assert_eq!(
        post_authed(&app, "/auth/mfa/totp/confirm", &access, &json!({"code": code})).await.status(),
        StatusCode::OK
    );
    // Once on, neither setup nor confirm may replace it.
    let (status, _) = error_of(post_authed(&app, "/auth/mfa/totp/setup", &access, &json!({})).await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let code = phone.next_code().await;
    let (status, _) =
        error_of(post_authed(&app, "/auth/mfa/totp/confirm", &access, &json!({"code": code})).await).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

async fn malformed_mfa_requests_get_a_json_4xx(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let user = enrolled_user(&app, "malformed").await;
    let access = user.access_token.as_str();
    let mfa_token = password_step(&app, &user.email).await;
    let cases: Vec<(&str, Value)> = vec![
        ("/auth/mfa/verify", json!({})),
        ("/auth/mfa/verify", json!({"mfa_token": mfa_token})),
        ("/auth/mfa/verify", json!({"mfa_token": mfa_token, "code": 123456})),
        ("/auth/mfa/verify", json!({"mfa_token": mfa_token, "code": "12345"})),
        ("/auth/mfa/verify", json!({"mfa_token": mfa_token, "code": ""})),
        ("/auth/mfa/verify", json!({"mfa_token": mfa_token, "code": "12345x"})),
        ("/auth/mfa/verify", json!({"mfa_token": mfa_token, "code": "x".repeat(5000)})),
        ("/auth/mfa/verify", json!({"mfa_token": mfa_token, "code": "123456", "remember": true})),
        ("/auth/mfa/verify", json!({"mfa_token": null, "code": "123456"})),
        ("/auth/mfa/totp/confirm", json!({})),
        ("/auth/mfa/totp/confirm", json!({"code": ["123456"]})),
        ("/auth/mfa/totp/disable", json!({"password": DEFAULT_PASSWORD})),
        ("/auth/mfa/totp/disable", json!({"password": DEFAULT_PASSWORD, "code": "not a code"})),
        ("/auth/mfa/totp/disable", json!({"password": "", "code": "123456"})),
    ];
    for (path, body) in cases {
        let response = post_authed(&app, path, access, &body).await;
        let status = response.status();
        let json: Value = response.json().await.unwrap_or_else(|e| panic!("{path} {body}: non-JSON ({e})"));
        assert!(status.is_client_error(), "{path} {body}: {status} {json}");
        assert!(json["error"].is_string(), "{path} {body}: {json}");
    }
    for path in ["/auth/mfa/verify", "/auth/mfa/totp/confirm", "/auth/mfa/totp/disable"] {
        for (content_type, raw) in
            [("application/json", "{\"code\":"), ("text/plain", "code=123456"), ("application/json", "")]
        {
            let response = app
                .client
                .post(app.url(path))
                .bearer_auth(access)
                .header("Content-Type", content_type)
                .body(raw)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_client_error(), "{path} {raw:?}: {}", response.status());
            assert!(response.json::<Value>().await.unwrap()["error"].is_string());
        }
    }
    // The token survived the malformed codes (they are not attempts).
    let claimed = app.state.store.claim_mfa_attempt(&auth_service::mfa::mfa_token_hash(&mfa_token), 0, 100).await;
    assert_eq!(claimed.unwrap().map(|c| c.attempts), Some(1));
    // Hostile values.
    for value in ["", "'; drop table user_mfa_totp; --", "\u{0}", &"A".repeat(5000), "../../etc/passwd"] {
        let response = verify(&app, value, value).await;
        assert!(response.status().is_client_error(), "{value:?}: {}", response.status());
        assert!(response.json::<Value>().await.unwrap()["error"].is_string());
    }
    assert!(totp_enabled(&app, user.user_id).await, "the tables survived");
}

/// Keys rotate: with the old key as MFA_ENCRYPTION_KEY_PREVIOUS a seed still
/// opens and is re-sealed under the new key at its next use, after which the
/// old key can go.
async fn seeds_follow_a_key_rotation(backend: Backend) {
    let key = |id: &str, byte: u8| SealingKey::from_encoded(id, hex::encode([byte; 32]).as_bytes()).unwrap();
    let db = testkit::TestDatabase::new(backend).await;
    let with_keys = |keys: SealingKeys| {
        let mut config = test_auth_config(db.target.clone());
        config.mfa_keys = Some(keys);
        config
    };
    let first = spawn_auth(with_keys(SealingKeys::new(key("k1", 1), vec![]).unwrap())).await;
    let mut user = enrolled_user(&first, "rotation").await;
    assert_eq!(first.state.store.find_totp(user.user_id).await.unwrap().unwrap().key_id, "k1");
    first.stop().await;

    let rotating = spawn_auth(with_keys(SealingKeys::new(key("k2", 2), vec![key("k1", 1)]).unwrap())).await;
    let done = verify(&rotating, &password_step(&rotating, &user.email).await, &user.app.next_code().await).await;
    assert_eq!(done.status(), StatusCode::OK);
    let row = rotating.state.store.find_totp(user.user_id).await.unwrap().unwrap();
    assert_eq!((row.key_id.as_str(), row.is_enabled()), ("k2", true), "re-sealed under the new key");
    rotating.stop().await;

    let rotated = spawn_auth(with_keys(SealingKeys::new(key("k2", 2), vec![]).unwrap())).await;
    let done = verify(&rotated, &password_step(&rotated, &user.email).await, &user.app.next_code().await).await;
    assert_eq!(done.status(), StatusCode::OK, "the old key is no longer needed");
    rotated.stop().await;
}

/// Through the gateway `/api/v1/auth/*` is public: the bearer token reaches
/// the auth service, which checks it itself, and the two-step login works.
async fn the_second_factor_works_through_the_gateway(backend: Backend) {
    let (app, _db) = spawn_default_auth(backend).await;
    let upstream = testkit::RecordingUpstream::spawn().await;
    let gateway = testkit::spawn_gateway(testkit::test_gateway_config(&app, &upstream.base_url)).await;
    let post = |path: &str, bearer: Option<&str>, body: Value| {
        let mut request = gateway.client.post(gateway.url(&format!("/api/v1{path}"))).json(&body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let email = unique_email("gw");
    let registered = post("/auth/register", None, json!({"email": email, "password": DEFAULT_PASSWORD, "name": "G"}));
    assert_eq!(registered.await.unwrap().status(), StatusCode::CREATED);
    let login: Value = post("/auth/login", None, json!({"email": email, "password": DEFAULT_PASSWORD}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = field(&login, "access_token");
    assert_eq!(post("/auth/mfa/totp/setup", None, json!({})).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let setup: Value = post("/auth/mfa/totp/setup", Some(&access), json!({})).await.unwrap().json().await.unwrap();
    let mut phone = Authenticator::new(&field(&setup, "secret"));
    let code = phone.next_code().await;
    let confirmed = post("/auth/mfa/totp/confirm", Some(&access), json!({"code": code})).await.unwrap();
    assert_eq!(confirmed.status(), StatusCode::OK);
    let challenge: Value = post("/auth/login", None, json!({"email": email, "password": DEFAULT_PASSWORD}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(challenge["mfa_required"], true, "{challenge}");
    let code = phone.next_code().await;
    let done = post("/auth/mfa/verify", None, json!({"mfa_token": field(&challenge, "mfa_token"), "code": code}));
    let done = done.await.unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert!(done.json::<Value>().await.unwrap()["access_token"].is_string());
}

backend_tests!(
    the_second_factor_works_through_the_gateway,
    setup_confirm_logout_and_log_in_with_a_second_factor,
    a_totp_code_is_accepted_once,
    wrong_codes_count_toward_the_account_lockout,
    a_correct_password_does_not_reset_the_count_of_wrong_codes,
    an_mfa_token_allows_five_codes_and_one_success,
    an_mfa_token_expires,
    a_recovery_code_works_once,
    disabling_needs_the_password_and_a_code,
    a_database_dump_holds_neither_the_seed_nor_a_recovery_code,
    a_seed_copied_to_another_users_row_does_not_open,
    setup_needs_a_bearer_token_and_confirm_the_right_code,
    malformed_mfa_requests_get_a_json_4xx,
    seeds_follow_a_key_rotation,
);
