//! The reverse proxy's header rewriting both ways, and the gateway's
//! general-purpose HTTP client ([`HttpClient`]: the JWKS, the revocation
//! feed). Proxied requests go through the leaner per-upstream pools of
//! [`crate::upstream`].
//!
//! Bodies stream in both directions; nothing is buffered whole. A request
//! body is capped (`Content-Length` checked up front, chunked bodies counted
//! as they stream). Hop-by-hop headers (RFC 9110 §7.6.1), including those
//! the `Connection` header names, are kept out in both directions: from a
//! request by [`ForwardFilter`], from a response as its head is parsed
//! ([`crate::http1`]).

use axum::http::header::{self, HeaderMap, HeaderName};
use common_http::http1::list_items;

/// The shared client for the gateway's own calls (not the proxy's): the
/// internal client of [`common_http::client`], built by [`crate::build_state`]
/// from the connect timeout and the upstream roots, so `https://` JWKS and
/// revocation feeds are checked against the same roots as the upstreams.
pub type HttpClient = common_http::client::InternalClient;

/// Whether `name` is one of RFC 9110 §7.6.1's hop-by-hop headers, or their
/// pre-standard kin. A `match` on the name (which the compiler turns into a
/// switch on its length, then one comparison) rather than a comparison with
/// each listed name: it runs for every field of every message.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-authenticate"
    )
}

/// Which of a client's request fields the gateway forwards (see
/// [`ForwardFilter::forwards`]). Applied as the upstream request head is
/// encoded ([`crate::upstream::Forwarded`]), so the request's header map is
/// never edited: on the hot path that was a removal per dropped field and a
/// hash per check.
#[derive(Debug)]
pub struct ForwardFilter {
    forward_credentials: bool,
    /// Every field the client's `Connection` header names (usually none).
    connection_named: Vec<HeaderName>,
}

impl ForwardFilter {
    /// The filter for a request with `headers`, to a route that forwards
    /// `Authorization` and `Cookie` or not.
    pub fn new(headers: &HeaderMap, forward_credentials: bool) -> Self {
        let connection_named = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| list_items(v.as_bytes()))
            .filter_map(|name| HeaderName::from_bytes(name).ok())
            .collect();
        Self { forward_credentials, connection_named }
    }

    /// Whether the field `name` is forwarded: not if it is hop-by-hop (RFC
    /// 9110 §7.6.1) or named by `Connection`; not `Host` (the route's, or
    /// the upstream's authority, is sent instead); not any field a client
    /// could use to claim an identity or a forwarding path (`X-User-*`,
    /// `X-Gateway-*`, `X-Forwarded-*`, `Forwarded`, `X-Real-IP`: SEED-FLAWS
    /// F15), which the gateway sets itself; not the request id fields
    /// (`X-Request-ID`, `X-Client-Request-ID`: the gateway's own, see
    /// [`crate::request_id`]); and `Authorization` and `Cookie` only to a
    /// route that forwards credentials.
    pub fn forwards(&self, name: &HeaderName) -> bool {
        !is_hop_by_hop(name)
            && !is_spoofable(name)
            && name != header::HOST
            && !crate::request_id::is_request_id_field(name)
            && (self.forward_credentials || (name != header::AUTHORIZATION && name != header::COOKIE))
            && !self.connection_named.contains(name)
    }
}

/// Whether a client could claim an identity or a forwarding path with `name`.
pub fn is_spoofable(name: &HeaderName) -> bool {
    let n = name.as_str();
    // Every such name starts with `x` or `f`: the common fields are passed
    // over after one byte comparison.
    match n.as_bytes().first() {
        Some(b'x') => {
            n.starts_with("x-user-") || n.starts_with("x-gateway-") || n.starts_with("x-forwarded-") || n == "x-real-ip"
        }
        Some(b'f') => n == "forwarded",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_are_recognised() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "proxy-authenticate",
        ] {
            assert!(is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["content-type", "content-length", "trailers", "tea", "connections", "x-connection"] {
            assert!(!is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
    }

    #[test]
    fn forwarded_fields_exclude_hop_by_hop_spoofable_host_and_maybe_credentials() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret-hop".parse().unwrap());
        for name in [
            "x-secret-hop",
            "te",
            "upgrade",
            "host",
            "x-user-id",
            "X-User-Email",
            "x-gateway-signature",
            "x-gateway-timestamp",
            "x-forwarded-for",
            "forwarded",
            "x-real-ip",
            "authorization",
            "cookie",
            "accept",
            "x-request-id",
            "x-client-request-id",
            "xylophone",
            "f",
        ] {
            h.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), "v".parse().unwrap());
        }
        let forwarded = |credentials: bool| {
            let filter = ForwardFilter::new(&h, credentials);
            h.keys().filter(|n| filter.forwards(n)).map(HeaderName::as_str).collect::<Vec<_>>()
        };
        assert_eq!(forwarded(false), ["accept", "xylophone", "f"]);
        assert_eq!(forwarded(true), ["authorization", "cookie", "accept", "xylophone", "f"]);
    }
}
