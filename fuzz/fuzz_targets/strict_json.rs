//! Strict JSON bodies (`common_http::json::parse_json`), into a struct shaped
//! like the services' DTOs (`deny_unknown_fields`; strings, an optional
//! string, an optional integer, an optional list).
//!
//! Input: the request body.
//!
//! Invariants:
//! - accepted only if the body is one JSON object (nothing after it, not an
//!   array, string or number), whose fields are exactly the struct's;
//! - every refusal is a 400 whose JSON body is `Invalid request body` with
//!   a hint of at most ~100 characters;
//! - the hint never echoes a value: a `password` of any type (a mistyped
//!   secret) does not appear in the error, whatever the body.
#![no_main]

use std::sync::OnceLock;

use axum::response::IntoResponse as _;
use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Body {
    email: String,
    password: String,
    name: Option<String>,
    amount: Option<i64>,
    tags: Option<Vec<String>>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("tokio runtime"))
}

const FIELDS: [&str; 5] = ["email", "password", "name", "amount", "tags"];

fuzz_target!(|data: &[u8]| {
    match common_http::json::parse_json::<Body>(data) {
        Ok(body) => {
            let value: Value = serde_json::from_slice(data).expect("an accepted body is JSON");
            let object = value.as_object().expect("an accepted body is an object");
            assert!(object.keys().all(|k| FIELDS.contains(&k.as_str())), "{object:?}");
            assert_eq!(object.get("email").and_then(Value::as_str), Some(body.email.as_str()));
            assert_eq!(object.get("password").and_then(Value::as_str), Some(body.password.as_str()));
        }
        Err(e) => {
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            assert_eq!(e.message(), "Invalid request body");
            // What the client gets.
            let response = e.into_response();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
            let bytes = runtime()
                .block_on(axum::body::to_bytes(response.into_body(), 64 * 1024))
                .expect("an error body is small");
            let sent: Value = serde_json::from_slice(&bytes).expect("the error body is JSON");
            assert_eq!(sent["error"], "Invalid request body");
            let hint = sent["hint"].as_str().expect("every refusal has a hint");
            // At most 100 characters, or a field path of at most 64 in a sentence.
            assert!(hint.chars().count() <= 110, "hint too long: {hint:?}");
            // A mistyped secret is never echoed. Only values that are not
            // also a key (keys may be named in the hint) and long enough
            // not to occur in the fixed wording by chance.
            if let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(data)
                && let Some(password) = object.get("password")
            {
                let text = match password {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let is_key = |t: &str| object.keys().any(|k| k.contains(t));
                if text.chars().count() >= 8 && text.chars().any(|c| c.is_ascii_digit()) && !is_key(&text) {
                    assert!(!hint.contains(&text), "the password value {text:?} is echoed: {hint:?}");
                }
            }
        }
    }
});
