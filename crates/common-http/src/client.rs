//! The one HTTP client for calls between Gatehouse processes: the gateway's
//! JWKS and revocation feed, the user service's account deletion at the auth
//! service, the auth service's notifications.
//!
//! Every such call may cross the network to a service serving HTTPS
//! (`TLS_CERT`), so the client speaks `http://` and `https://` alike; an
//! `https://` peer's certificate must chain to the roots it is given (the
//! `UPSTREAM_CA` bundle, else the public web PKI: see
//! [`crate::tls::public_roots`]) and name the URL's host. The TLS setup is
//! [`crate::tls::client_config`]'s, so the gateway's proxy pools and these
//! clients trust exactly the same certificates.
//!
//! HTTP/1.1 only (what [`crate::serve`] speaks), pooled. An idle connection
//! is dropped after [`IDLE_TIMEOUT`], shorter than the keep-alive of the
//! services it calls, so a request is not written onto a connection the peer
//! is closing (the pool timer is what makes that timeout fire at all).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;

use crate::tls::TlsError;

/// A pooled client for `http://` and `https://` URLs.
pub type InternalClient = Client<HttpsConnector<HttpConnector>, Body>;

/// How long an idle connection is kept. Gatehouse services close connections
/// idle for `ServeOptions::default().header_read_timeout` (10 s), Node.js
/// servers after 5 s by default; under load a connection is reused within
/// milliseconds, so this costs only a connect after a lull.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Idle connections kept per host.
pub const MAX_IDLE_PER_HOST: usize = 256;

/// A client whose connects give up after `connect_timeout`, and whose
/// `https://` peers must present a certificate chaining to `roots` for the
/// URL's host (TLS 1.2 or 1.3, rustls with aws-lc-rs). A TLS handshake has
/// no deadline of its own: callers bound each request with a timeout.
///
/// # Errors
/// [`TlsError::Config`] if rustls refuses the protocol versions (not
/// expected with the aws-lc-rs provider).
pub fn internal_client(connect_timeout: Duration, roots: Arc<RootCertStore>) -> Result<InternalClient, TlsError> {
    let tls = crate::tls::client_config(roots)?;
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    // The TLS layer takes `https` URLs; it refuses other schemes itself.
    connector.enforce_http(false);
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(rustls::ClientConfig::clone(&tls))
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
        .build(connector))
}

/// A request for `method path_and_query` on the service at `base` (its scheme
/// and authority), signed as the internal caller with `secrets` and a fresh
/// request id (`tokens::assertion::internal_call_headers`): what one Gatehouse
/// service sends another's `/internal/…` routes. Add any other header and the
/// body; a `base` or path that makes no URI surfaces as the builder's error.
pub fn internal_request(
    base: &http::Uri,
    method: &http::Method,
    path_and_query: &str,
    secrets: &[tokens::Secret],
    now: i64,
) -> http::request::Builder {
    let uri = format!(
        "{}://{}{path_and_query}",
        base.scheme_str().unwrap_or("http"),
        base.authority().map(|a| a.as_str()).unwrap_or_default()
    );
    // Fresh per request: the receiver refuses a replayed one.
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut request = http::Request::builder().method(method.clone()).uri(uri);
    for (name, value) in
        tokens::assertion::internal_call_headers(method.as_str(), path_and_query, secrets, now, &request_id)
    {
        request = request.header(name, value);
    }
    request
}

#[cfg(test)]
mod tests {
    use tokens::assertion::{Assertion, INTERNAL_CALLER, INTERNAL_EMAIL};

    use super::*;

    #[test]
    fn an_internal_request_goes_to_the_base_authority_signed_over_its_method_and_path() {
        let secret = tokens::Secret::generate().unwrap();
        let base: http::Uri = "https://auth.internal:8443/ignored/path".parse().unwrap();
        let request = internal_request(
            &base,
            &http::Method::POST,
            "/internal/users/u1/delete",
            std::slice::from_ref(&secret),
            1_000,
        )
        .body(())
        .unwrap();
        assert_eq!(request.uri(), "https://auth.internal:8443/internal/users/u1/delete");
        assert_eq!(request.method(), http::Method::POST);
        let header = |name: &str| request.headers()[name].to_str().unwrap().to_owned();
        assert_eq!(
            (header("x-user-id"), header("x-user-email")),
            (INTERNAL_CALLER.to_owned(), INTERNAL_EMAIL.to_owned())
        );
        assert_eq!(header("x-gateway-timestamp"), "1000");
        let request_id = header("x-request-id");
        let assertion = Assertion {
            timestamp: 1_000,
            method: "POST",
            path_and_query: "/internal/users/u1/delete",
            request_id: &request_id,
            user_id: INTERNAL_CALLER,
            email: INTERNAL_EMAIL,
        };
        assert!(assertion.verify(&header("x-gateway-signature"), &[secret], 1_000).is_ok());
        // Each request its own id: the receiver refuses a replay.
        let again = internal_request(&base, &http::Method::GET, "/x", &[], 1_000).body(()).unwrap();
        assert_ne!(again.headers()["x-request-id"].to_str().unwrap(), request_id);
    }
}
