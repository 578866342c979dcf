//! The downstream guard's header checks, `guard::GuardLayer::verify(&Method,
//! path_and_query, &HeaderMap)`: the five identity headers (missing,
//! duplicated, empty, non-UTF-8, non-canonical timestamp, malformed request
//! id, bad signature) and the replay check. `verify` is async; it runs on a
//! current-thread tokio runtime built once. Each input gets a fresh
//! in-memory replay cache, so inputs do not depend on each other.
//!
//! Input: one selector byte, then `method \0 path_and_query \0 X-User-ID \0
//! X-User-Email \0 X-Request-ID \0 X-Gateway-Timestamp \0
//! X-Gateway-Signature`. An empty field leaves its header out; `\n` inside a
//! field sends the header several times. Selector bit 0 set: the timestamp
//! is replaced by now and the signature by the real one over the fuzzed
//! fields, so the paths after the signature check are reached too.
//!
//! Invariants:
//! - unsigned (bit 0 clear): nothing is accepted unless the fuzzed header
//!   carries the real MAC (it never does by chance);
//! - signed: a request with each header present once, non-empty, UTF-8,
//!   and a well-formed request id is accepted, and the user it yields is
//!   exactly the headers'; the same request again is refused (replay);
//! - every refusal is 401, with one of the two API.md messages.
#![no_main]

use std::sync::OnceLock;

use gatehouse_fuzz::{GATEWAY_SECRET, GATEWAY_SECRET_OLD, fields, secret, unix_now};
use guard::{GuardConfig, GuardLayer, INVALID_SIGNATURE, ReplayCache, USER_CONTEXT_MISSING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use libfuzzer_sys::fuzz_target;
use tokens::Secret;
use tokens::assertion::Assertion;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime"))
}

fn secrets() -> &'static [Secret] {
    static S: OnceLock<Vec<Secret>> = OnceLock::new();
    S.get_or_init(|| vec![secret(GATEWAY_SECRET), secret(GATEWAY_SECRET_OLD)])
}

/// Exactly one UTF-8 value: the shape of header the guard can accept.
fn single<'a>(values: &[&'a [u8]]) -> Option<&'a str> {
    match values {
        [one] => std::str::from_utf8(one).ok(),
        _ => None,
    }
}

const NAMES: [&str; 5] = ["x-user-id", "x-user-email", "x-request-id", "x-gateway-timestamp", "x-gateway-signature"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let signed = selector & 1 == 1;
    let [method, path_and_query, user_id, email, request_id, timestamp, signature] = fields::<7>(rest);
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let path_and_query = String::from_utf8_lossy(path_and_query);
    let mut values: [Vec<&[u8]>; 5] = [user_id, email, request_id, timestamp, signature]
        .map(|f| if f.is_empty() { Vec::new() } else { f.split(|&b| b == b'\n').collect() });

    let now = unix_now();
    let now_text = now.to_string();
    let mut real_signature = String::new();
    let (uid, mail, rid) = (single(&values[0]), single(&values[1]), single(&values[2]));
    if signed && let (Some(uid), Some(mail), Some(rid)) = (uid, mail, rid) {
        let a = Assertion {
            timestamp: now,
            method: method.as_str(),
            path_and_query: &path_and_query,
            request_id: rid,
            user_id: uid,
            email: mail,
        };
        real_signature = a.sign(secrets());
        values[3] = vec![now_text.as_bytes()];
        values[4] = vec![real_signature.as_bytes()];
    }

    let mut headers = HeaderMap::new();
    for (name, vals) in NAMES.iter().zip(&values) {
        for v in vals {
            let Ok(v) = HeaderValue::from_bytes(v) else {
                return;
            };
            headers.append(HeaderName::from_static(name), v);
        }
    }

    let layer = GuardLayer::new(GuardConfig::new(secrets().to_vec(), ReplayCache::memory_with_capacity(16)));
    let first = runtime().block_on(layer.verify(&method, &path_and_query, &headers));
    if let Err(e) = &first {
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED, "{e:?}");
        assert!([USER_CONTEXT_MISSING, INVALID_SIGNATURE].contains(&e.message()), "{e:?}");
    }

    if !real_signature.is_empty() {
        let (uid, mail, rid) = (uid.unwrap_or_default(), mail.unwrap_or_default(), rid.unwrap_or_default());
        let acceptable = !uid.is_empty() && !mail.is_empty() && common_http::request_id::is_valid_request_id(rid);
        if acceptable {
            let user = first.as_ref().unwrap_or_else(|e| panic!("a correctly signed request was refused: {e:?}"));
            assert_eq!((user.id.as_str(), user.email.as_str(), user.request_id.as_str()), (uid, mail, rid));
            let again = runtime().block_on(layer.verify(&method, &path_and_query, &headers));
            let e = again.expect_err("a replayed request was accepted");
            assert_eq!((e.status(), e.message()), (StatusCode::UNAUTHORIZED, INVALID_SIGNATURE));
        }
    } else if first.is_ok() {
        let sig = String::from_utf8_lossy(signature).to_ascii_lowercase();
        panic!("an unsigned request was accepted: signature header {sig:?}");
    }
});
