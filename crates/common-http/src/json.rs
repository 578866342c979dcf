//! `StrictJson<T>`: the only way a Gatehouse handler reads a request body.
//!
//! The seed accepted form and multipart bodies on login, which made login CSRF
//! possible with a cross-site "simple" request (SEED-FLAWS F12e). Here:
//! a `Content-Type` other than `application/json` is 415; a body over the
//! route's `DefaultBodyLimit` is 413; malformed JSON, unknown, duplicate or
//! mistyped fields, and any top-level value but an object, are 400 `Invalid request body` with a hint naming the
//! field but never echoing its value (a mistyped password must not come back
//! in an error body or a log line).

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body, deserialised strictly (DTOs use `deny_unknown_fields`).
#[derive(Debug, Clone)]
pub struct StrictJson<T>(pub T);

impl<T, S> FromRequest<S> for StrictJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported media type")
                .with_hint("Send the body as JSON with Content-Type: application/json"));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
            }
            _ => ApiError::bad_request("Invalid request body").with_hint("The body could not be read"),
        })?;
        parse_json(&bytes).map(StrictJson)
    }
}

fn is_json(value: Option<&axum::http::HeaderValue>) -> bool {
    let Some(Ok(v)) = value.map(|v| v.to_str()) else {
        return false;
    };
    let mime = v.split(';').next().unwrap_or_default().trim();
    mime.eq_ignore_ascii_case("application/json")
}

/// Deserialises `bytes` as `T` with the error mapping described in the module docs.
///
/// # Errors
/// 400 `Invalid request body` with a hint naming the first problem.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde's derived structs also accept a JSON array of the field values
    // (`["a@b.io","pw"]` would be a login); every Gatehouse body is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::bad_request("Invalid request body").with_hint("the body must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| ApiError::bad_request("Invalid request body").with_hint(describe(&e)))?;
    de.end().map_err(|_| ApiError::bad_request("Invalid request body").with_hint("the body is not valid JSON"))?;
    Ok(value)
}

fn describe(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let inner = e.inner();
    let msg = inner.to_string();
    let path = e.path().to_string();
    let field: String = path.chars().take(64).collect();
    if msg.starts_with("unknown field") || msg.starts_with("duplicate field") || msg.starts_with("missing field") {
        // serde's own wording names the field; cut before any "expected one of" list and position.
        let head = msg.split(", expected").next().unwrap_or(&msg);
        let head = head.split(" at line").next().unwrap_or(head);
        head.chars().take(100).collect()
    } else {
        match inner.classify() {
            serde_json::error::Category::Data if path == "." || path.starts_with('[') => {
                "the body must be a JSON object".to_owned()
            }
            serde_json::error::Category::Data => format!("field `{field}` has the wrong type or value"),
            serde_json::error::Category::Eof => "the JSON body is incomplete".to_owned(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
                "the body is not valid JSON".to_owned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Login {
        email: String,
        password: String,
    }

    fn hint(body: &str) -> String {
        let err = parse_json::<Login>(body.as_bytes()).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(err.message(), "Invalid request body");
        format!("{:?}", err)
    }

    #[test]
    fn bad_bodies_get_a_hint_naming_the_problem() {
        assert!(hint(r#"{"email":"a@b.co","password":"x","admin":true}"#).contains("unknown field `admin`"));
        let dup = hint(r#"{"email":"a@b.co","email":"c@d.co","password":"x"}"#);
        assert!(dup.contains("duplicate field `email`"), "{dup}");
        assert!(hint(r#"{"email":"a@b.co"}"#).contains("missing field `password`"));
        assert!(hint(r#"{"email":"a@b.co","password":12345678}"#).contains("field `password` has the wrong type"));
        assert!(hint(r#"{"email":"#).contains("incomplete"));
        assert!(hint("[1,2]").contains("JSON object"));
        // The field values as an array would deserialise into the struct.
        assert!(hint(r#" ["a@b.co","correct horse"]"#).contains("JSON object"));
        assert!(hint(r#""a string""#).contains("JSON object"));
        assert!(hint(r#"{"email":"a@b.co","password":"x"} trailing"#).contains("not valid JSON"));
    }

    #[test]
    fn a_mistyped_secret_is_not_echoed() {
        assert!(!hint(r#"{"email":"a@b.co","password":98765432}"#).contains("98765432"));
    }

    #[test]
    fn content_types() {
        let v = |s: &'static str| axum::http::HeaderValue::from_static(s);
        assert!(is_json(Some(&v("application/json"))));
        assert!(is_json(Some(&v("Application/JSON; charset=utf-8"))));
        assert!(!is_json(Some(&v("application/x-www-form-urlencoded"))));
        assert!(!is_json(Some(&v("text/plain"))));
        assert!(!is_json(None));
    }
}
