//! The gateway's identity assertion (`tokens::assertion::Assertion::verify`),
//! with every field, the `X-Gateway-Signature` header and the clock chosen by
//! the fuzzer. The auth service's internal endpoints parse the timestamp
//! with `str::parse::<i64>` straight from `X-Gateway-Timestamp`, so any i64
//! reaches `verify` from the network.
//!
//! Input: `timestamp \0 now \0 method \0 path_and_query \0 request_id \0
//! user_id \0 email \0 signature header` (timestamp and now in decimal).
//!
//! Invariants:
//! - a fuzzed header is accepted only within ±60 s of now (computed without
//!   overflow) and only if it carries the real MAC under a secret we hold;
//! - what `sign` produces verifies (with either of the two secrets it was
//!   made with) exactly when the timestamp is fresh, and is refused under
//!   another secret and for an assertion differing in any field;
//! - a stale timestamp is always `Stale`, whatever the header;
//! - the signed message is unambiguous: when no field contains `\n`, it
//!   splits back into exactly the signed fields.
#![no_main]

use std::sync::OnceLock;

use gatehouse_fuzz::{CSRF_SECRET, GATEWAY_SECRET, GATEWAY_SECRET_OLD, secret, str_fields};
use libfuzzer_sys::fuzz_target;
use tokens::Secret;
use tokens::assertion::{Assertion, AssertionError, MAX_SKEW_SECS};

fn secrets() -> &'static (Vec<Secret>, Vec<Secret>) {
    static S: OnceLock<(Vec<Secret>, Vec<Secret>)> = OnceLock::new();
    S.get_or_init(|| (vec![secret(GATEWAY_SECRET), secret(GATEWAY_SECRET_OLD)], vec![secret(CSRF_SECRET)]))
}

fuzz_target!(|data: &[u8]| {
    let [ts, now, method, path_and_query, request_id, user_id, email, header] = str_fields::<8>(data);
    let (Ok(timestamp), Ok(now)) = (ts.parse::<i64>(), now.parse::<i64>()) else {
        return;
    };
    let (held, other) = secrets();
    let a = Assertion {
        timestamp,
        method: &method,
        path_and_query: &path_and_query,
        request_id: &request_id,
        user_id: &user_id,
        email: &email,
    };
    let fresh = (i128::from(now) - i128::from(timestamp)).abs() <= i128::from(MAX_SKEW_SECS);

    // The fuzzed header.
    let result = a.verify(&header, held, now);
    if !fresh {
        assert_eq!(result, Err(AssertionError::Stale), "ts {timestamp} now {now}");
    }
    if result.is_ok() {
        assert!(fresh, "accepted a stale assertion: ts {timestamp} now {now}");
        let lower = header.to_ascii_lowercase();
        assert!(
            held.iter().any(|s| lower.contains(&a.sign(std::slice::from_ref(s))[3..])),
            "accepted a header without the real MAC: {header:?}"
        );
    }
    assert!(a.verify(&header, &[], now).is_err(), "no secret, no acceptance");

    // Sign, then verify.
    let signed = a.sign(held);
    for s in held {
        let r = a.verify(&signed, std::slice::from_ref(s), now);
        if fresh {
            assert_eq!(r, Ok(()), "a signed assertion was refused");
        } else {
            assert_eq!(r, Err(AssertionError::Stale));
        }
    }
    if fresh {
        assert_eq!(a.verify(&signed, other, now), Err(AssertionError::BadSignature));
        let changed = [
            Assertion { method: &format!("{method}X"), ..a },
            Assertion { path_and_query: &format!("{path_and_query}/"), ..a },
            Assertion { request_id: &format!("{request_id}1"), ..a },
            Assertion { user_id: &format!("{user_id}1"), ..a },
            Assertion { email: &format!("{email}.x"), ..a },
        ];
        for c in changed {
            assert_eq!(c.verify(&signed, held, now), Err(AssertionError::BadSignature), "{c:?}");
        }
        if let Some(ts2) = timestamp.checked_add(1)
            && (i128::from(now) - i128::from(ts2)).abs() <= i128::from(MAX_SKEW_SECS)
        {
            let moved = Assertion { timestamp: ts2, ..a };
            assert_eq!(moved.verify(&signed, held, now), Err(AssertionError::BadSignature));
        }
    }

    // The signed message splits back into its fields.
    let fields = [method.as_str(), &path_and_query, &request_id, &user_id, &email];
    if fields.iter().all(|f| !f.contains('\n')) {
        let message = a.message();
        let parts: Vec<&str> = message.split('\n').collect();
        let timestamp_text = timestamp.to_string();
        let want = ["v1", timestamp_text.as_str(), fields[0], fields[1], fields[2], fields[3], fields[4]];
        assert_eq!(parts, want);
    }
});
