//! Serving a router until shutdown.
//!
//! Every service is served the same way, whether alone (`gatehouse auth`) or
//! beside the others (`gatehouse up`): the standard layers wrap the router,
//! the listener is given by the caller (tests bind port 0), and a
//! [`CancellationToken`] shared by all services stops them together. On
//! cancellation the server stops accepting, lets requests in flight finish,
//! then returns so the caller can close its pool.
//!
//! # Why not `axum::serve`
//!
//! `axum::serve` reads request headers without a deadline: a client sending
//! its headers a byte at a time (slow loris) holds a connection and a task
//! for as long as it likes, and enough of them exhaust the file descriptors.
//! Here each connection is served by this crate's own HTTP/1.1 connection
//! code (`serve/connection.rs`, which says why not hyper's server) with a
//! header read timeout ([`ServeOptions::header_read_timeout`]). That clock
//! starts whenever it waits for a request head, so it bounds three things: a
//! new connection that sends nothing, a request head that trickles in, and a
//! keep-alive connection idling between requests. It also bounds how long a
//! half-sent request head can hold up graceful shutdown.
//!
//! HTTP/1.1 only, with keep-alive. Prior-knowledge HTTP/2 (h2c), which
//! `axum::serve` also accepted, is not served: hyper's HTTP/2 server has no
//! header read deadline (neither for the connection preface and header
//! frames nor for an idle connection), so it would reopen the hole this
//! module closes. For the same reason a TLS listener offers only
//! `http/1.1` in ALPN, so browsers speak HTTP/1.1 to it; a load balancer in
//! front can still speak HTTP/2 to them. Protocol upgrades (WebSocket) are
//! not served either; no route uses them.
//!
//! # HTTPS
//!
//! A [`Listener`] made with [`Listener::tls`] serves HTTPS (see
//! [`crate::tls`] for the certificate and its rotation). Each connection's
//! TLS handshake runs in the connection's own task, never in the accept
//! loop, and must finish within [`ServeOptions::tls_handshake_timeout`]: a
//! client that connects and never completes it (or speaks plain HTTP, which
//! fails it at once) is closed without holding up anyone else; the header
//! read timeout then applies as over plain TCP. Every request that arrived
//! over TLS carries the [`ServedOverTls`] extension, so a service can tell
//! (the gateway sets HSTS and `X-Forwarded-Proto: https` from it).
//!
//! What axum's server did and this one keeps: handlers can extract
//! `ConnectInfo<SocketAddr>` (the peer address is put in every request's
//! extensions, as `into_make_service_with_connect_info` does), and an accept
//! error that is about the listener rather than one connection (`EMFILE`,
//! `ENFILE`, `ENOBUFS`…) is logged and retried after a short pause instead
//! of ending the server. Accepted sockets get `TCP_NODELAY`: responses are
//! written whole, so Nagle's algorithm would only add latency. Plain TCP
//! connections write through [`crate::write_batching`], so a busy server's
//! responses leave in bursts (one peer wake-up per burst, not per response).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use http::Request;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::{method_not_allowed, panic_response, route_not_found};
use crate::request_id::assign_request_id;
use crate::tls::ServerTls;
use crate::write_batching::BatchedWrites;

mod connection;

pub use connection::{BodyError, DRAIN_LIMIT, MAX_FIELDS, MAX_HEAD, ParsedHead, RequestBody, parse_request_head};
use connection::{Peer, serve_connection};

/// Where a service accepts connections: a bound TCP listener, serving plain
/// HTTP, or HTTPS with a [`ServerTls`]. A bare [`TcpListener`] converts into
/// a plain one.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    tls: Option<ServerTls>,
}

impl Listener {
    /// Plain HTTP on `tcp`.
    pub fn plain(tcp: TcpListener) -> Self {
        Self { tcp, tls: None }
    }

    /// HTTPS on `tcp`.
    pub fn tls(tcp: TcpListener, tls: ServerTls) -> Self {
        Self { tcp, tls: Some(tls) }
    }

    /// Whether connections are served over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The bound address.
    ///
    /// # Errors
    /// As [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Self {
        Self::plain(tcp)
    }
}

/// In the extensions of every request that arrived over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedOverTls;

/// Adds what every service has: JSON 404 and 405, panics turned into a JSON
/// 500, and the request-id span (outermost, so it covers everything else).
pub fn with_standard_layers(router: Router) -> Router {
    router
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn(assign_request_id))
}

/// How connections are served. `ServeOptions::default()` is what [`serve`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// How long a client may take to send a complete request head, counted
    /// from when the server starts waiting for it: after accepting the
    /// connection, and again after each response on a keep-alive
    /// connection. When it runs out the connection is closed. Default 10 s,
    /// ample for any real client; hyper's default (30 s) leaves an
    /// attacker three times as long per connection.
    pub header_read_timeout: Duration,
    /// How long to pause before accepting again after an accept error that
    /// concerns the listener (such as running out of file descriptors), so
    /// the server does not spin while the condition lasts. Default 1 s.
    pub accept_retry_delay: Duration,
    /// How long a client of a TLS listener may take to complete the TLS
    /// handshake, counted from accepting the connection; when it runs out
    /// the connection is closed. Default 10 s, like the header read timeout.
    pub tls_handshake_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            accept_retry_delay: Duration::from_secs(1),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` with [`ServeOptions::default`] until
/// `shutdown` is cancelled, then drains.
///
/// # Errors
/// None today (accept errors are retried); the `Result` is kept so callers
/// need not change if serving can fail again.
pub async fn serve(listener: impl Into<Listener>, app: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    serve_with_options(listener, app, shutdown, ServeOptions::default()).await
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then stops
/// accepting, lets every request in flight finish (idle keep-alive
/// connections are closed at once) and returns once all connections are
/// closed.
///
/// # Errors
/// See [`serve`].
pub async fn serve_with_options(
    listener: impl Into<Listener>,
    app: Router,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> std::io::Result<()> {
    serve_service(listener, app, shutdown, options).await
}

/// [`serve_with_options`] for any service that takes what an axum
/// [`Router`] takes: a service that does its own dispatch (the gateway's hot
/// path) is served without a router in front of it. The service is cloned
/// per request, so its clone should be cheap (an `Arc`).
///
/// # Errors
/// See [`serve`].
pub async fn serve_service<S>(
    listener: impl Into<Listener>,
    app: S,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> std::io::Result<()>
where
    S: Service<Request<RequestBody>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let Listener { tcp: listener, tls } = listener.into();
    let acceptor = tls.as_ref().map(ServerTls::acceptor);
    // Every connection's task, so shutdown can wait for them all.
    let connections = TaskTracker::new();
    let timeout = options.header_read_timeout;
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            // The peer gave up between SYN and accept: nothing to do.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, "accept failed; retrying shortly");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(options.accept_retry_delay) => continue,
                }
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let (app, shutdown) = (app.clone(), shutdown.clone());
        let Some(acceptor) = &acceptor else {
            // Tracked from the moment it is accepted, so a shutdown that
            // starts now still waits for this connection's request.
            let peer = Peer { addr, tls: false };
            connections.spawn(serve_connection(BatchedWrites::new(stream), app, peer, timeout, shutdown));
            continue;
        };
        let handshake = acceptor.accept(stream);
        let handshake_timeout = options.tls_handshake_timeout;
        connections.spawn(async move {
            // Given up on shutdown, so a handshake in progress never delays it.
            let stream = tokio::select! {
                () = shutdown.cancelled() => return,
                handshake = tokio::time::timeout(handshake_timeout, handshake) => match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, peer = %addr, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %addr, "TLS handshake timed out");
                        return;
                    }
                },
            };
            serve_connection(stream, app, Peer { addr, tls: true }, timeout, shutdown).await;
        });
    }
    // Stop accepting before waiting: queued and new connections are refused.
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Accept errors about one connection, not the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
