//! The reverse proxy: a pooled keep-alive HTTP/1.1 client and the header
//! rewriting both ways.
//!
//! Bodies stream in both directions; nothing is buffered whole. A request
//! body is capped (`Content-Length` checked up front, chunked bodies counted
//! as they stream). Hop-by-hop headers (RFC 9110 §7.6.1), including those
//! the `Connection` header names, are removed in both directions.

use std::time::Duration;

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// The shared upstream client.
pub type HttpClient = Client<HttpConnector, Body>;

/// A pooled client: idle connections are kept 90 s (the pool timer makes
/// the idle timeout actually fire), connects give up after `connect_timeout`.
pub fn http_client(connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(connector)
}

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Removes hop-by-hop headers and every header the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Removes every header a client could use to claim an identity or a
/// forwarding path: `X-User-*`, `X-Gateway-*`, `X-Forwarded-*`,
/// `Forwarded`, `X-Real-IP` (SEED-FLAWS F15). Done on every route.
pub fn strip_identity_headers(headers: &mut HeaderMap) {
    let spoofable: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            n.starts_with("x-user-")
                || n.starts_with("x-gateway-")
                || n.starts_with("x-forwarded-")
                || n == "forwarded"
                || n == "x-real-ip"
        })
        .cloned()
        .collect();
    for name in spoofable {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret-hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn spoofable_identity_headers_are_stripped() {
        let mut h = HeaderMap::new();
        for name in [
            "x-user-id",
            "X-User-Email",
            "x-gateway-signature",
            "x-gateway-timestamp",
            "x-forwarded-for",
            "forwarded",
            "x-real-ip",
        ] {
            h.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), "spoof".parse().unwrap());
        }
        h.insert("accept", "*/*".parse().unwrap());
        strip_identity_headers(&mut h);
        assert_eq!(h.len(), 1);
    }
}
