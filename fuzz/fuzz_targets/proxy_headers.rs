//! The gateway's request-field filter (`gateway::proxy::ForwardFilter`): the
//! fields of a client's request it forwards upstream. (Responses: see the
//! `upstream_response` target.)
//!
//! Input: a first byte (odd: the route forwards credentials), then header
//! lines `name: value`, separated by `\n` (lines that are not a valid header
//! name and value are skipped).
//!
//! Invariant: `ForwardFilter` forwards exactly the fields that are not
//! hop-by-hop (RFC 9110 §7.6.1) or named in any `Connection` value, minus
//! `Host`, the request id fields (the gateway sets its own), `x-user-*`,
//! `x-gateway-*`, `x-forwarded-*`, `forwarded`, `x-real-ip`, and
//! `Authorization`/`Cookie` unless the route forwards credentials.
#![no_main]

use gatehouse_fuzz::HOP_BY_HOP;
use gateway::proxy::ForwardFilter;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use libfuzzer_sys::fuzz_target;

fn spoofable(n: &str) -> bool {
    n.starts_with("x-user-")
        || n.starts_with("x-gateway-")
        || n.starts_with("x-forwarded-")
        || n == "forwarded"
        || n == "x-real-ip"
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let forward_credentials = flags & 1 == 1;
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(line[colon + 1..].trim_ascii()))
        else {
            continue;
        };
        headers.append(name, value);
    }
    let before = headers;
    let named: Vec<HeaderName> = before
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();

    let filter = ForwardFilter::new(&before, forward_credentials);
    for name in before.keys() {
        let n = name.as_str();
        let credential = n == "authorization" || n == "cookie";
        let dropped = HOP_BY_HOP.contains(&n)
            || named.contains(name)
            || spoofable(n)
            || n == "host"
            || n == "x-request-id"
            || n == "x-client-request-id"
            || (credential && !forward_credentials);
        assert_eq!(filter.forwards(name), !dropped, "{n} (credentials forwarded: {forward_credentials})");
    }
});
