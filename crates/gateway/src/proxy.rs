//! The reverse proxy's header rewriting both ways, and the gateway's
//! general-purpose HTTP client ([`HttpClient`]: the JWKS, the revocation
//! feed). Proxied requests go through the leaner per-upstream pools of
//! [`crate::upstream`].
//!
//! Bodies stream in both directions; nothing is buffered whole. A request
//! body is capped (`Content-Length` checked up front, chunked bodies counted
//! as they stream). Hop-by-hop headers (RFC 9110 §7.6.1), including those
//! the `Connection` header names, are removed in both directions.

use axum::http::header::{self, HeaderMap, HeaderName};

/// The shared client for the gateway's own calls (not the proxy's): the
/// internal client of [`common_http::client`], built by [`crate::build_state`]
/// from the connect timeout and the upstream roots, so `https://` JWKS and
/// revocation feeds are checked against the same roots as the upstreams.
pub type HttpClient = common_http::client::InternalClient;

/// RFC 9110 §7.6.1's hop-by-hop headers, and their pre-standard kin.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Removes hop-by-hop headers and every header the `Connection` header names.
///
/// One pass over the headers present (a handful) compared with the list,
/// rather than a removal attempt per listed name: most messages have none.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let mut found: Vec<HeaderName> =
        headers.keys().filter(|name| HOP_BY_HOP.iter().any(|h| h == *name)).cloned().collect();
    if found.is_empty() {
        return;
    }
    found.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok()),
    );
    for name in found {
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
