//! Keep-alive HTTP/1.1 connections to one upstream, for the proxy.
//!
//! hyper-util's pooled client (`proxy::HttpClient`, still used for the
//! JWKS and the revocation feed) does more per request than the proxy
//! needs: it builds a connect future even when an idle connection is
//! waiting, keys its pool by scheme and authority on every call, rewrites
//! the URI to origin form, and, for every HTTP/1 response with a body,
//! spawns a task whose only job is to wait until the connection can take
//! another request and then put it back. Profiled, that was the largest
//! share of the proxy's own CPU time after the kernel's.
//!
//! This pool is the minimum the proxy needs, on hyper's connection API:
//!
//! - Idle connections wait on a stack (the most recently used is reused
//!   first, so the set of busy connections stays small and warm); at most
//!   [`MAX_IDLE`] of them. One idle longer than [`IDLE_TIMEOUT`] is never
//!   reused, and is closed when the pool is next touched or swept
//!   ([`UpstreamPool::close_expired`], every [`SWEEP_INTERVAL`] while the
//!   gateway serves), so a quiet gateway does not hold connections open.
//! - A connection has no task of its own: hyper's connection state machine
//!   (the part that reads and writes the socket) is polled by whoever holds
//!   the connection, inside the gateway's own request task: while sending
//!   the request and waiting for the head ([`UpstreamPool::send`]), then
//!   while the response body is read ([`UpstreamBody`]). A spawned
//!   connection task, as hyper's examples have, costs two cross-task
//!   wake-ups and two more task polls per request (the request handed to
//!   it, the response handed back). (Measured only together with the other
//!   changes of the same pass: see the README's Performance section.)
//!   An idle connection is polled by nobody:
//!   the next holder finds out, at checkout, whether the upstream closed it.
//! - A response's connection goes back to the pool when its body has been
//!   read to the end ([`UpstreamBody`]). It may not have finished the
//!   response on its side yet; whoever takes it next waits for it to be
//!   ready (a connection the upstream closed is dropped then).
//! - A request that a pooled connection gives back unsent (the upstream
//!   closed it just as it was picked: the keep-alive race) is sent again,
//!   on another pooled connection or a new one, as hyper-util's client does;
//!   a request that may have been sent is never retried.
//! - A body not read to the end (client gone, upstream error, timeout)
//!   leaves its connection unusable; it is closed, never pooled.
//!
//! Requests are sent in origin form (`GET /path?query HTTP/1.1`) with the
//! `Host` the proxy set; the connector enforces the connect timeout and sets
//! `TCP_NODELAY`. Plain `http://` connections write through
//! [`common_http::write_batching`], as the server side does: requests to an
//! upstream leave in bursts, so it is woken once per burst.
//!
//! An `https://` upstream gets TLS on each new connection (rustls, the
//! server name from the target's host, the certificate checked against the
//! gateway's upstream roots), with the connect timeout again for the
//! handshake; only connecting differs, so a pooled connection costs the
//! same per request either way.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response, Uri};
use bytes::Bytes;
use common_http::write_batching::BatchedWrites;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tower::ServiceExt as _;

/// Idle connections kept per upstream.
pub const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused. It must
/// be shorter than the upstream's own keep-alive timeout, or the upstream may
/// close a connection just as the gateway sends a request on it (a request
/// that may have been written cannot be retried: 502). Gatehouse services
/// close connections idle for `ServeOptions::default().header_read_timeout`
/// (10 s); Node.js servers after 5 s by default. Under load a connection is
/// reused within milliseconds, so this costs only a connect after a lull.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// How often idle connections past [`IDLE_TIMEOUT`] are closed.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Pooled connections tried for one request before a new one is opened.
const MAX_REUSE_ATTEMPTS: usize = 8;

/// Why a request could not be sent or answered.
pub type UpstreamError = Box<dyn std::error::Error + Send + Sync>;

struct Idle {
    connection: Connection,
    since: Instant,
}

/// hyper's state machine for one connection: it writes requests, reads
/// responses and feeds their bodies, whenever it is polled.
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One upstream connection: the handle requests go through and the state
/// machine doing its I/O, polled by the request holding the connection.
struct Connection {
    sender: SendRequest<Body>,
    /// `None` once it has finished: the socket is closed.
    driver: Option<Driver>,
}

impl Connection {
    /// Lets the connection do what I/O it can (registering `cx` for more).
    /// Once it has finished, it is dropped: the socket closes, and a request
    /// still queued on it is handed back unsent.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = &mut self.driver
            && let Poll::Ready(result) = driver.as_mut().poll(cx)
        {
            if let Err(e) = result {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
            self.driver = None;
        }
    }

    fn is_open(&self) -> bool {
        self.driver.is_some() && !self.sender.is_closed()
    }

    /// Waits until the connection can take a request; an error once it has closed.
    async fn ready(&mut self) -> hyper::Result<()> {
        std::future::poll_fn(|cx| {
            self.drive(cx);
            self.sender.poll_ready(cx)
        })
        .await
    }

    /// Sends `request` and waits for the response head, driving the I/O.
    async fn send(&mut self, request: Request<Body>) -> Result<Response<Incoming>, TrySendError<Request<Body>>> {
        let mut response = std::pin::pin!(self.sender.try_send_request(request));
        std::future::poll_fn(|cx| {
            // The I/O first, so a response it reads is ready in this same poll.
            self.drive(cx);
            response.as_mut().poll(cx)
        })
        .await
    }
}

/// The connections to one upstream (`scheme://host:port`).
pub struct UpstreamPool {
    /// What the connector dials.
    target: Uri,
    connector: HttpConnector,
    /// For an `https` target: how each new connection is secured.
    tls: Option<UpstreamTls>,
    /// Most recently returned at the back.
    idle: Mutex<VecDeque<Idle>>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool").field("target", &self.target).finish_non_exhaustive()
    }
}

/// TLS towards an `https` upstream.
struct UpstreamTls {
    connector: tokio_rustls::TlsConnector,
    /// What the certificate must name: the target's host.
    server_name: ServerName<'static>,
    /// For the handshake, as for the TCP connect.
    handshake_timeout: Duration,
}

impl UpstreamPool {
    /// A pool for `target` (an `http://host:port` or `https://host:port`
    /// URI) dialling with `connect_timeout`; `tls` secures connections to an
    /// `https` target.
    ///
    /// # Errors
    /// An `https` target whose host cannot be a TLS server name.
    pub fn new(
        target: Uri,
        connect_timeout: Duration,
        tls: &Arc<rustls::ClientConfig>,
    ) -> Result<Arc<Self>, UpstreamError> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let tls = match target.scheme_str() {
            Some("https") => {
                // The connector checks the scheme; TLS is added on top here.
                connector.enforce_http(false);
                let host = target.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
                let server_name = ServerName::try_from(host.to_owned())
                    .map_err(|e| format!("{target}: not a TLS server name: {e}"))?;
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls));
                Some(UpstreamTls { connector, server_name, handshake_timeout: connect_timeout })
            }
            _ => {
                connector.enforce_http(true);
                None
            }
        };
        Ok(Arc::new(Self { target, connector, tls, idle: Mutex::new(VecDeque::new()) }))
    }

    /// The upstream this pool dials.
    pub fn target(&self) -> &Uri {
        &self.target
    }

    /// Idle connections now (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        self.lock().len()
    }

    /// Sends `request` (origin-form URI, `Host` set) and returns the response
    /// head; the body streams from the connection, which returns to the pool
    /// once the body has been read.
    ///
    /// # Errors
    /// The connect, write or read error; the request may have reached the
    /// upstream unless the connection failed before it was written.
    pub async fn send(self: &Arc<Self>, mut request: Request<Body>) -> Result<Response<UpstreamBody>, UpstreamError> {
        for _ in 0..MAX_REUSE_ATTEMPTS {
            let Some(mut connection) = self.checkout() else {
                break;
            };
            if connection.ready().await.is_err() {
                // Closed since it was returned: try the next one.
                continue;
            }
            match connection.send(request).await {
                Ok(response) => return Ok(self.lease(response, connection)),
                Err(mut error) => match error.take_message() {
                    // Never written: the keep-alive race; safe to send again.
                    Some(unsent) => request = unsent,
                    None => return Err(error.into_error().into()),
                },
            }
        }
        let mut connection = self.connect().await?;
        connection.ready().await?;
        let response = connection.send(request).await.map_err(TrySendError::into_error)?;
        Ok(self.lease(response, connection))
    }

    fn lease(self: &Arc<Self>, response: Response<Incoming>, connection: Connection) -> Response<UpstreamBody> {
        let lease = Lease { connection, pool: Arc::clone(self) };
        response.map(|body| UpstreamBody { body, lease: Some(lease) })
    }

    async fn connect(&self) -> Result<Connection, UpstreamError> {
        let io = self.connector.clone().oneshot(self.target.clone()).await?;
        let Some(tls) = &self.tls else {
            return start_connection(TokioIo::new(BatchedWrites::new(io.into_inner()))).await;
        };
        let handshake = tls.connector.connect(tls.server_name.clone(), io.into_inner());
        let stream = tokio::time::timeout(tls.handshake_timeout, handshake)
            .await
            .map_err(|_| format!("{}: TLS handshake timed out", self.target))??;
        start_connection(TokioIo::new(stream)).await
    }

    /// The most recently used idle connection that is neither known to be
    /// closed nor idle for too long.
    fn checkout(&self) -> Option<Connection> {
        let now = Instant::now();
        let mut idle = self.lock();
        expire(&mut idle, now);
        while let Some(entry) = idle.pop_back() {
            if entry.connection.is_open() {
                return Some(entry.connection);
            }
        }
        None
    }

    fn checkin(&self, connection: Connection) {
        if !connection.is_open() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        expire(&mut idle, now);
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { connection, since: now });
        }
    }

    /// Closes the idle connections past [`IDLE_TIMEOUT`].
    pub fn close_expired(&self) {
        expire(&mut self.lock(), Instant::now());
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        // A list of connections is consistent after any panic: keep going.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The HTTP/1.1 handshake on `io` (no I/O yet): the connection, to be
/// driven by whoever holds it.
async fn start_connection<I>(io: I) -> Result<Connection, UpstreamError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, driver) = hyper::client::conn::http1::handshake(io).await?;
    Ok(Connection { sender, driver: Some(Box::pin(driver)) })
}

/// Drops the idle connections past [`IDLE_TIMEOUT`] (closing them). The
/// front of the queue is the longest idle, so only the front is looked at.
fn expire(idle: &mut VecDeque<Idle>, now: Instant) {
    while idle.front().is_some_and(|e| now.duration_since(e.since) > IDLE_TIMEOUT) {
        idle.pop_front();
    }
}

/// Closes expired idle connections of `pools` every [`SWEEP_INTERVAL`] until `shutdown`.
pub fn spawn_idle_sweeper(pools: Vec<Arc<UpstreamPool>>, shutdown: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(SWEEP_INTERVAL) => {
                    for pool in &pools {
                        pool.close_expired();
                    }
                }
            }
        }
    });
}

/// A connection on loan to one response.
struct Lease {
    connection: Connection,
    pool: Arc<UpstreamPool>,
}

/// An upstream response body; its connection goes back to the pool when
/// the body has been read to the end, and is closed otherwise.
pub struct UpstreamBody {
    body: Incoming,
    lease: Option<Lease>,
}

impl UpstreamBody {
    fn release(&mut self) {
        if let Some(Lease { connection, pool }) = self.lease.take() {
            pool.checkin(connection);
        }
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        // The connection reads the body and hands it over: drive it first.
        if let Some(lease) = &mut this.lease {
            lease.connection.drive(cx);
        }
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            None => this.release(),
            // A broken body leaves a broken connection: never pooled.
            Some(Err(_)) => this.lease = None,
            Some(Ok(_)) if this.body.is_end_stream() => this.release(),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A reader that stops at `is_end_stream` never sees the final `None`.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    /// How the test upstream ends each response.
    #[derive(Clone, Copy)]
    enum Upstream {
        /// Keep-alive: serve requests on a connection until the client closes it.
        KeepAlive,
        /// Close the connection after each response, without saying so
        /// (no `Connection: close`): the keep-alive race, every time.
        CloseSilently,
    }

    /// A raw HTTP/1.1 upstream answering `ok` to every request; counts
    /// accepted connections.
    async fn upstream(kind: Upstream) -> (Uri, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target: Uri = format!("http://{}", listener.local_addr().unwrap()).parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(response).await.is_err() {
                            return;
                        }
                        if matches!(kind, Upstream::CloseSilently) {
                            return;
                        }
                    }
                });
            }
        });
        (target, accepted)
    }

    /// The client configuration of a gateway with the default roots.
    fn tls() -> Arc<rustls::ClientConfig> {
        common_http::tls::client_config(Arc::new(common_http::tls::public_roots())).unwrap()
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).header("host", "upstream").body(Body::empty()).unwrap()
    }

    async fn read_body(response: Response<UpstreamBody>) -> Bytes {
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_response_has_been_read() {
        // Arrange
        let (target, accepted) = upstream(Upstream::KeepAlive).await;
        let pool = UpstreamPool::new(target, Duration::from_secs(2), &tls()).unwrap();

        // Act
        for _ in 0..5 {
            let response = pool.send(get("/x")).await.unwrap();
            assert_eq!(read_body(response).await, "ok");
        }

        // Assert
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn requests_succeed_when_the_upstream_closes_every_connection_it_served() {
        // Arrange
        let (target, accepted) = upstream(Upstream::CloseSilently).await;
        let pool = UpstreamPool::new(target, Duration::from_secs(2), &tls()).unwrap();

        // Act / Assert: each pooled connection is found closed (or gives the
        // request back unsent) and a new one carries the request.
        for i in 0..5 {
            let response = pool.send(get("/x")).await.unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(read_body(response).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_body_not_read_to_the_end_does_not_return_its_connection() {
        // Arrange
        let (target, accepted) = upstream(Upstream::KeepAlive).await;
        let pool = UpstreamPool::new(target, Duration::from_secs(2), &tls()).unwrap();

        // Act
        drop(pool.send(get("/x")).await.unwrap());
        let response = pool.send(get("/x")).await.unwrap();

        // Assert
        assert_eq!(read_body(response).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "the unread connection was not reused");
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_get_connections_of_their_own() {
        // Arrange
        let (target, accepted) = upstream(Upstream::KeepAlive).await;
        let pool = UpstreamPool::new(target, Duration::from_secs(2), &tls()).unwrap();

        // Act: four responses held at once, then read.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(pool.send(get("/x")).await.unwrap());
        }
        for response in held {
            assert_eq!(read_body(response).await, "ok");
        }
        let response = pool.send(get("/x")).await.unwrap();
        assert_eq!(read_body(response).await, "ok");

        // Assert
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
        assert_eq!(pool.idle_count(), 4);
    }

    #[tokio::test]
    async fn a_connection_idle_too_long_is_closed_not_reused() {
        // Arrange: one pooled connection, made to look idle for longer than allowed.
        let (target, accepted) = upstream(Upstream::KeepAlive).await;
        let pool = UpstreamPool::new(target, Duration::from_secs(2), &tls()).unwrap();
        assert_eq!(read_body(pool.send(get("/x")).await.unwrap()).await, "ok");
        let age = |pool: &UpstreamPool| {
            let mut idle = pool.lock();
            let entry = idle.front_mut().unwrap();
            entry.since = entry.since.checked_sub(IDLE_TIMEOUT + Duration::from_secs(1)).unwrap();
        };
        age(&pool);

        // Act / Assert: the sweep closes it…
        pool.close_expired();
        assert_eq!(pool.idle_count(), 0);
        // …and so does a checkout, which then opens a new connection.
        assert_eq!(read_body(pool.send(get("/x")).await.unwrap()).await, "ok");
        age(&pool);
        assert_eq!(read_body(pool.send(get("/x")).await.unwrap()).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn idle_connections_are_dropped_before_gatehouse_services_close_them() {
        assert!(IDLE_TIMEOUT < common_http::serve::ServeOptions::default().header_read_timeout);
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_an_error() {
        // Arrange: a port with nothing listening.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target: Uri = format!("http://{}", listener.local_addr().unwrap()).parse().unwrap();
        drop(listener);
        let pool = UpstreamPool::new(target, Duration::from_secs(2), &tls()).unwrap();

        // Act / Assert
        assert!(pool.send(get("/x")).await.is_err());
        assert_eq!(pool.idle_count(), 0);
    }
}
