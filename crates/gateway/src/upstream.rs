//! Keep-alive HTTP/1.1 connections to one upstream, for the proxy.
//!
//! Each proxied request borrows one connection, writes its head (and body)
//! with [`crate::http1`], reads the response head, and hands the caller a
//! response whose body reads straight from that connection. There is no
//! connection task and no channel: the I/O happens in the gateway's own
//! request task, so a proxied request costs no cross-task wake-up.
//! (hyper-util's pooled client, `proxy::HttpClient`, is still what the
//! gateway's own calls use: the JWKS, the revocation feed.)
//!
//! - Idle connections wait on a stack (the most recently used is reused
//!   first, so the set of busy connections stays small and warm); at most
//!   [`MAX_IDLE`] of them. One idle longer than [`IDLE_TIMEOUT`] is never
//!   reused, and is closed when the pool is next touched or swept
//!   ([`UpstreamPool::close_expired`], every [`SWEEP_INTERVAL`] while the
//!   gateway serves), so a quiet gateway does not hold connections open.
//! - A connection goes back to the pool when its response body has been
//!   read to the end, if the response allows it (HTTP/1.1 without
//!   `Connection: close`, a body with a known end) and the upstream sent
//!   nothing after it.
//! - At checkout, a pooled connection is probed with a read that must not
//!   be ready: one that is (the upstream closed it, or sent bytes nobody
//!   asked for) is dropped and the next one tried.
//! - The keep-alive race (the upstream closes a connection just as a request
//!   goes out on it) shows as a connection that fails before any byte of a
//!   response: a request without a body and with an idempotent method
//!   (RFC 9110 §9.2.2) is then sent again on another connection, as RFC 9112
//!   §9.3.1 allows; any other request gets the error (502).
//! - A body not read to the end (client gone, upstream error, timeout)
//!   leaves its connection mid-message; it is closed, never pooled.
//! - A request body is written before the response is read. An upstream
//!   that answers early (a 413 before the body is in) and closes makes the
//!   write fail: the client gets a 502, not the upstream's answer. The
//!   gateway caps bodies itself before they reach an upstream, so this only
//!   matters for an upstream with a lower cap than the gateway's.
//!
//! Requests are sent in origin form (`GET /path?query HTTP/1.1`) with the
//! `Host` the proxy set; the connector enforces the connect timeout and sets
//! `TCP_NODELAY`. Plain `http://` connections write through
//! [`common_http::write_batching`], as the server side does: requests to an
//! upstream leave in bursts, so it is woken once per burst.
//!
//! A request's response timeout is a deadline for its exchange (writing the
//! request, reading the response head), kept by a timer that belongs to the
//! connection: each exchange moves it later, which tokio does with one
//! atomic store, where a timer per request (`tokio::time::timeout`) is a
//! timer-wheel insert and removal under the driver's lock on every request.
//! Between exchanges the timer stays armed for the last deadline; a pooled
//! connection is closed after [`IDLE_TIMEOUT`], before a usual response
//! timeout runs out, and one that does run out only wakes the task of the
//! request that last used it, once, for nothing.
//!
//! An `https://` upstream gets TLS on each new connection (rustls, the
//! server name from the target's host, the certificate checked against the
//! gateway's upstream roots), with the connect timeout again for the
//! handshake; only connecting differs, so a pooled connection costs the
//! same per request either way.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, Request, Response, Uri};
use bytes::{Bytes, BytesMut};
use common_http::write_batching::BatchedWrites;
use hyper::body::{Body as _, Frame, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::clock::CoarseInstant;
use crate::http1::{self, BodyFraming, ChunkedDecoder, Decoded, ProtocolError, RequestFraming, ResponseHead};

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
/// Read buffer space made available before each read.
const READ_SPACE: usize = 16 * 1024;
/// Request body bytes gathered before they are written.
const WRITE_BATCH: usize = 64 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection: refused, unreachable, DNS or TLS handshake failure.
    #[error("connecting to the upstream failed")]
    Connect(#[source] BoxError),
    /// No response head by the request's deadline.
    #[error("the upstream did not answer in time")]
    Timeout,
    /// The client's body failed on its way through (including the gateway's cap).
    #[error("reading the request body failed")]
    RequestBody(#[source] BoxError),
    #[error("the request body did not match its Content-Length")]
    RequestBodyLength,
    #[error("the upstream connection failed")]
    Io(#[from] io::Error),
    #[error("the upstream closed the connection before the response was complete")]
    Closed,
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// What the stream of a connection can be: plain TCP or TLS.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

struct Idle {
    connection: Connection,
    since: CoarseInstant,
}

/// One upstream connection and the bytes read from it not yet used.
struct Connection {
    stream: Box<dyn Stream>,
    read_buf: BytesMut,
    /// The deadline of its exchanges (see the module docs); made by the
    /// first exchange that has one.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How an exchange on a connection failed.
enum ExchangeError {
    /// Before any byte of a response arrived: a pooled connection that the
    /// upstream had closed looks like this.
    NoResponse(UpstreamError),
    /// Anything else.
    Failed(UpstreamError),
}

impl From<ExchangeError> for UpstreamError {
    fn from(e: ExchangeError) -> Self {
        match e {
            ExchangeError::NoResponse(e) | ExchangeError::Failed(e) => e,
        }
    }
}

/// A request body on its way out, and how it is framed.
struct OutgoingBody<'a> {
    body: &'a mut Body,
    framing: RequestFraming,
}

impl Connection {
    fn new(stream: impl Stream + 'static) -> Self {
        Self { stream: Box::new(stream), read_buf: BytesMut::new(), timer: None }
    }

    /// Whether an idle connection can take a request: nothing may be ready
    /// to read on it (not the end of the stream, not stray bytes).
    fn is_reusable(&mut self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        Pin::new(&mut self.stream).poll_read(&mut cx, &mut probe).is_pending()
    }

    /// Reads more bytes into the buffer; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read_buf.capacity() - self.read_buf.len() < READ_SPACE / 4 {
            self.read_buf.reserve(READ_SPACE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read_buf)
    }

    /// [`exchange`](Self::exchange), failing with [`UpstreamError::Timeout`]
    /// at `deadline` (if there is one) on the connection's own timer.
    async fn exchange_by(
        &mut self,
        deadline: Option<Instant>,
        head: &[u8],
        body: Option<OutgoingBody<'_>>,
        method: &Method,
    ) -> Result<ResponseHead, ExchangeError> {
        let Some(deadline) = deadline else {
            return self.exchange(head, body, method).await;
        };
        let mut timer = match self.timer.take() {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        let answered = {
            let mut exchange = std::pin::pin!(self.exchange(head, body, method));
            std::future::poll_fn(|cx| match exchange.as_mut().poll(cx) {
                Poll::Ready(answered) => Poll::Ready(Some(answered)),
                Poll::Pending => timer.as_mut().poll(cx).map(|()| None),
            })
            .await
        };
        self.timer = Some(timer);
        answered.unwrap_or(Err(ExchangeError::Failed(UpstreamError::Timeout)))
    }

    /// Writes the request (`head`, then `body` if there is one) and reads
    /// the response head.
    async fn exchange(
        &mut self,
        head: &[u8],
        body: Option<OutgoingBody<'_>>,
        method: &Method,
    ) -> Result<ResponseHead, ExchangeError> {
        match body {
            None => self.write(head).await.map_err(|e| ExchangeError::NoResponse(e.into()))?,
            Some(body) => self.write_with_body(head, body).await.map_err(ExchangeError::Failed)?,
        }
        let mut received = false;
        loop {
            if !self.read_buf.is_empty() {
                received = true;
                if let Some(head) = http1::parse_response_head(&mut self.read_buf, method)
                    .map_err(|e| ExchangeError::Failed(e.into()))?
                {
                    return Ok(head);
                }
            }
            let read = std::future::poll_fn(|cx| self.poll_fill(cx)).await;
            let error = match read {
                Ok(0) => UpstreamError::Closed,
                Ok(_) => continue,
                Err(e) => e.into(),
            };
            return Err(if received { ExchangeError::Failed(error) } else { ExchangeError::NoResponse(error) });
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Writes `head` and the body, gathering what is ready into one write.
    async fn write_with_body(&mut self, head: &[u8], outgoing: OutgoingBody<'_>) -> Result<(), UpstreamError> {
        let OutgoingBody { body, framing } = outgoing;
        let mut out = Vec::with_capacity(head.len() + 4096);
        out.extend_from_slice(head);
        let mut sent: u64 = 0;
        loop {
            // What the body has ready now is sent with what came before;
            // before waiting for more, what is gathered goes out.
            let frame = match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    if !out.is_empty() {
                        self.write(&out).await?;
                        out.clear();
                    }
                    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
                }
            };
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| UpstreamError::RequestBody(e.into()))?;
            // Trailers are hop-by-hop for the gateway: not forwarded.
            let Ok(data) = frame.into_data() else { continue };
            if data.is_empty() {
                continue;
            }
            sent += data.len() as u64;
            match framing {
                RequestFraming::Chunked => http1::encode_chunk(&mut out, &data),
                RequestFraming::Length(n) if sent <= n => out.extend_from_slice(&data),
                RequestFraming::Length(_) | RequestFraming::Empty { .. } => {
                    return Err(UpstreamError::RequestBodyLength);
                }
            }
            if out.len() >= WRITE_BATCH {
                self.write(&out).await?;
                out.clear();
            }
        }
        match framing {
            RequestFraming::Chunked => out.extend_from_slice(http1::LAST_CHUNK),
            RequestFraming::Length(n) if sent != n => return Err(UpstreamError::RequestBodyLength),
            RequestFraming::Length(_) | RequestFraming::Empty { .. } => {}
        }
        self.write(&out).await?;
        Ok(())
    }
}

/// How `body` goes out, from what the server side knows of it.
fn request_framing(headers: &axum::http::HeaderMap, body: &Body) -> RequestFraming {
    if body.is_end_stream() {
        return RequestFraming::Empty { declared_zero: headers.contains_key(header::CONTENT_LENGTH) };
    }
    match body.size_hint().exact() {
        Some(n) => RequestFraming::Length(n),
        None => RequestFraming::Chunked,
    }
}

/// RFC 9110 §9.2.2: repeating the request has the effect of sending it once.
fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// A request as the gateway forwards it: the client's method and fields,
/// and the gateway's changes, which are applied as the head is encoded.
pub struct Forwarded<'a, K> {
    pub method: &'a Method,
    /// The origin form, `/path?query`: no spaces or control characters.
    pub target: &'a str,
    /// `Host`; the upstream's authority if `None`.
    pub host: Option<&'a HeaderValue>,
    /// The client's fields: each is sent if `keep` says so, in order; any
    /// `Host` and framing field among them never is (the head's own are
    /// written from `host` and the body).
    pub headers: &'a HeaderMap,
    pub keep: K,
    /// The gateway's own fields, sent after the client's.
    pub added: &'a [(HeaderName, HeaderValue)],
}

/// The connections to one upstream (`scheme://host:port`).
pub struct UpstreamPool {
    /// What the connector dials.
    target: Uri,
    /// `Host` for a request that has none: the target's authority.
    default_host: HeaderValue,
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
    /// A target without a host, or an `https` target whose host cannot be a
    /// TLS server name.
    pub fn new(target: Uri, connect_timeout: Duration, tls: &Arc<rustls::ClientConfig>) -> Result<Arc<Self>, BoxError> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let default_host = target
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .ok_or_else(|| format!("{target}: no host"))?;
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
        Ok(Arc::new(Self { target, default_host, connector, tls, idle: Mutex::new(VecDeque::new()) }))
    }

    /// The upstream this pool dials.
    pub fn target(&self) -> &Uri {
        &self.target
    }

    /// Idle connections now (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        self.lock().len()
    }

    /// Sends `request` as it is (origin-form URI; without a `Host`, the
    /// upstream's authority is sent), with no deadline, and returns the
    /// response head; the body streams from the connection, which returns to
    /// the pool once the body has been read.
    ///
    /// # Errors
    /// As [`UpstreamPool::forward`].
    pub async fn send(self: &Arc<Self>, request: Request<Body>) -> Result<Response<UpstreamBody>, UpstreamError> {
        self.send_within(request, None).await
    }

    /// [`send`](Self::send), with a deadline `timeout` from now
    /// ([`forward`](Self::forward)'s `deadline`).
    ///
    /// # Errors
    /// As [`UpstreamPool::forward`].
    pub async fn send_within(
        self: &Arc<Self>,
        request: Request<Body>,
        timeout: Option<Duration>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let (parts, body) = request.into_parts();
        let forwarded = Forwarded {
            method: &parts.method,
            target: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            host: parts.headers.get(header::HOST),
            headers: &parts.headers,
            keep: |_: &HeaderName| true,
            added: &[],
        };
        self.forward(forwarded, body, timeout.map(|timeout| Instant::now() + timeout)).await
    }

    /// Sends a request made of a client's request and the gateway's changes
    /// to it ([`Forwarded`]), encoded straight into the request head: the
    /// client's header map is never edited. Returns the response head; the
    /// body streams from the connection, which returns to the pool once the
    /// body has been read. With a `deadline`, no response head by then
    /// (connecting, writing the request, waiting) is
    /// [`UpstreamError::Timeout`].
    ///
    /// # Errors
    /// The connect, write or read error, the timeout, or a response that
    /// cannot be framed safely; the request may have reached the upstream
    /// unless connecting failed.
    pub fn forward<K: Fn(&HeaderName) -> bool>(
        self: &Arc<Self>,
        request: Forwarded<'_, K>,
        body: Body,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + Send + '_ {
        let Forwarded { method, target, host, headers, keep, added } = request;
        let framing = request_framing(headers, &body);
        let mut head = Vec::with_capacity(1024);
        let fields = headers.iter().filter(|(name, _)| keep(name)).chain(added.iter().map(|(n, v)| (n, v)));
        http1::encode_request_head(&mut head, method, target, host.unwrap_or(&self.default_host), fields, framing);
        self.send_head(method.clone(), head, framing, body, deadline)
    }

    async fn send_head(
        self: &Arc<Self>,
        method: Method,
        head: Vec<u8>,
        framing: RequestFraming,
        mut body: Body,
        deadline: Option<Instant>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let has_body = !matches!(framing, RequestFraming::Empty { .. });
        let replayable = !has_body && is_idempotent(&method);
        for _ in 0..MAX_REUSE_ATTEMPTS {
            let Some(mut connection) = self.checkout() else {
                break;
            };
            match connection
                .exchange_by(deadline, &head, has_body.then_some(OutgoingBody { body: &mut body, framing }), &method)
                .await
            {
                Ok(response) => return Ok(self.lease(response, connection)),
                // The keep-alive race: safe to send again.
                Err(ExchangeError::NoResponse(_)) if replayable => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Boxed: connecting (a TCP connect, maybe a TLS handshake) is the
        // rare path, and its future is large; inline, every forward's future
        // would be sized for it and copied at that size on each request.
        let connecting = Box::pin(self.connect());
        let mut connection = match deadline {
            Some(deadline) => {
                tokio::time::timeout_at(deadline, connecting).await.map_err(|_| UpstreamError::Timeout)??
            }
            None => connecting.await?,
        };
        let outgoing = has_body.then_some(OutgoingBody { body: &mut body, framing });
        let response = connection.exchange_by(deadline, &head, outgoing, &method).await?;
        Ok(self.lease(response, connection))
    }

    fn lease(self: &Arc<Self>, head: ResponseHead, connection: Connection) -> Response<UpstreamBody> {
        let state = match head.framing {
            BodyFraming::Empty => BodyState::Length(0),
            BodyFraming::Length(n) => BodyState::Length(n),
            BodyFraming::Chunked => BodyState::Chunked(ChunkedDecoder::default()),
            BodyFraming::UntilClose => BodyState::UntilClose,
        };
        let lease = Lease { connection, pool: Arc::clone(self), keep_alive: head.keep_alive };
        let mut body = UpstreamBody { state, lease: Some(lease) };
        if body.is_end_stream() {
            body.finish();
        }
        head.response.map(|()| body)
    }

    async fn connect(&self) -> Result<Connection, UpstreamError> {
        let io =
            self.connector.clone().oneshot(self.target.clone()).await.map_err(|e| UpstreamError::Connect(e.into()))?;
        let Some(tls) = &self.tls else {
            return Ok(Connection::new(BatchedWrites::new(io.into_inner())));
        };
        let handshake = tls.connector.connect(tls.server_name.clone(), io.into_inner());
        let stream = tokio::time::timeout(tls.handshake_timeout, handshake)
            .await
            .map_err(|_| UpstreamError::Connect(format!("{}: TLS handshake timed out", self.target).into()))?
            .map_err(|e| UpstreamError::Connect(e.into()))?;
        Ok(Connection::new(stream))
    }

    /// The most recently used idle connection that is neither closed nor
    /// idle for too long.
    fn checkout(&self) -> Option<Connection> {
        loop {
            let mut connection = {
                let mut idle = self.lock();
                expire(&mut idle, CoarseInstant::now());
                idle.pop_back()?.connection
            };
            if connection.is_reusable() {
                return Some(connection);
            }
        }
    }

    fn checkin(&self, connection: Connection) {
        let now = CoarseInstant::now();
        let mut idle = self.lock();
        expire(&mut idle, now);
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { connection, since: now });
        }
    }

    /// Closes the idle connections past [`IDLE_TIMEOUT`].
    pub fn close_expired(&self) {
        expire(&mut self.lock(), CoarseInstant::now());
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        // A list of connections is consistent after any panic: keep going.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Drops the idle connections past [`IDLE_TIMEOUT`] (closing them). The
/// front of the queue is the longest idle, so only the front is looked at.
fn expire(idle: &mut VecDeque<Idle>, now: CoarseInstant) {
    while idle.front().is_some_and(|e| now.saturating_duration_since(e.since) > IDLE_TIMEOUT) {
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
    /// Whether the response lets the connection carry another request.
    keep_alive: bool,
}

/// Where an upstream response body is.
enum BodyState {
    /// This many bytes left (0: the end).
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the upstream closes the connection.
    UntilClose,
    /// Read to the end, or failed.
    Done,
}

/// An upstream response body, read from its connection as it is polled; the
/// connection goes back to the pool once the body has been read to the end,
/// and is closed otherwise.
pub struct UpstreamBody {
    state: BodyState,
    /// `None` once the body has ended or failed.
    lease: Option<Lease>,
}

impl UpstreamBody {
    /// The body has been read whole: the connection goes back to the pool
    /// if the response allows it and nothing follows it on the connection.
    fn finish(&mut self) {
        self.state = BodyState::Done;
        if let Some(Lease { connection, pool, keep_alive }) = self.lease.take()
            && keep_alive
            && connection.read_buf.is_empty()
        {
            pool.checkin(connection);
        }
    }

    /// The body broke: the connection is mid-message and is closed.
    fn fail(&mut self, error: impl Into<UpstreamError>) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        self.state = BodyState::Done;
        self.lease = None;
        Poll::Ready(Some(Err(error.into())))
    }

    /// The next piece of the body from what has been read, in the chunked
    /// decoder's terms whatever the framing: `NeedMore` if more must be read first.
    fn take_buffered(&mut self) -> Result<Decoded, ProtocolError> {
        let Some(lease) = &mut self.lease else { return Ok(Decoded::Done) };
        let buf = &mut lease.connection.read_buf;
        Ok(match &mut self.state {
            BodyState::Done | BodyState::Length(0) => Decoded::Done,
            BodyState::Length(_) | BodyState::UntilClose if buf.is_empty() => Decoded::NeedMore,
            BodyState::Length(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= n as u64;
                Decoded::Data(buf.split_to(n).freeze())
            }
            BodyState::UntilClose => Decoded::Data(buf.split().freeze()),
            BodyState::Chunked(decoder) => decoder.decode(buf)?,
        })
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = &mut *self;
        loop {
            if this.lease.is_none() {
                return Poll::Ready(None);
            }
            match this.take_buffered() {
                Ok(Decoded::Data(data)) => {
                    if this.is_end_stream() {
                        // The last bytes: the connection is free before the
                        // caller even looks at them.
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::Done) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Err(e) => return this.fail(e),
                Ok(Decoded::NeedMore) => {}
            }
            let Some(lease) = &mut this.lease else { return Poll::Ready(None) };
            match ready!(lease.connection.poll_fill(cx)) {
                Ok(0) if matches!(this.state, BodyState::UntilClose) => {
                    // The close is the end; such a response is never
                    // keep-alive, so `finish` closes the connection.
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(UpstreamError::Closed),
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done | BodyState::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Length(n) => SizeHint::with_exact(n),
            BodyState::Done => SizeHint::with_exact(0),
            BodyState::Chunked(_) | BodyState::UntilClose => SizeHint::default(),
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

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    /// What the scripted upstream does with a request.
    #[derive(Clone, Copy)]
    enum Reply {
        /// Answer and keep the connection for the next request.
        Send(&'static [u8]),
        /// Answer, then close the connection without having said so.
        SendThenClose(&'static [u8]),
        /// Close the connection without answering.
        Close,
        /// Keep the connection open and never answer.
        Hang,
    }

    /// A raw HTTP/1.1 upstream on loopback.
    struct TestUpstream {
        target: Uri,
        /// Connections accepted.
        accepted: Arc<AtomicUsize>,
        /// Every request received, head and body as sent.
        requests: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    /// An upstream that answers the `n`th request of each connection (from
    /// 0) with `script(n)`.
    async fn scripted(script: fn(usize) -> Reply) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target: Uri = format!("http://{}", listener.local_addr().unwrap()).parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (counter, log) = (Arc::clone(&accepted), Arc::clone(&requests));
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for n in 0.. {
                        let Some(request) = read_request(&mut stream, &mut buf).await else { return };
                        log.lock().unwrap().push(request);
                        let (bytes, close) = match script(n) {
                            Reply::Send(bytes) => (bytes, false),
                            Reply::SendThenClose(bytes) => (bytes, true),
                            Reply::Close => return,
                            Reply::Hang => std::future::pending().await,
                        };
                        if stream.write_all(bytes).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        TestUpstream { target, accepted, requests }
    }

    /// One request off `stream` (head, then a `Content-Length` or chunked
    /// body); `None` once the client has closed.
    async fn read_request(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        let mut chunk = [0u8; 4096];
        let complete = |buf: &[u8]| {
            let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            if head.contains("transfer-encoding: chunked") {
                let end = buf[head_end..].windows(5).position(|w| w == b"0\r\n\r\n")?;
                return Some(head_end + end + 5);
            }
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            (buf.len() >= head_end + length).then_some(head_end + length)
        };
        loop {
            if let Some(end) = complete(buf) {
                return Some(buf.drain(..end).collect());
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// How the plain test upstream ends each response.
    #[derive(Clone, Copy)]
    enum Upstream {
        /// Keep-alive: serve requests on a connection until the client closes it.
        KeepAlive,
        /// Close the connection after each response, without saying so
        /// (no `Connection: close`): the keep-alive race, every time.
        CloseSilently,
    }

    /// An upstream answering `ok` to every request; counts accepted connections.
    async fn upstream(kind: Upstream) -> (Uri, Arc<AtomicUsize>) {
        let up = match kind {
            Upstream::KeepAlive => scripted(|_| Reply::Send(OK)).await,
            Upstream::CloseSilently => scripted(|_| Reply::SendThenClose(OK)).await,
        };
        (up.target, up.accepted)
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

    fn pool_for(up: &TestUpstream) -> Arc<UpstreamPool> {
        UpstreamPool::new(up.target.clone(), Duration::from_secs(2), &tls()).unwrap()
    }

    #[tokio::test]
    async fn a_chunked_response_is_decoded_and_its_connection_reused() {
        // Arrange
        let up = scripted(|_| {
            Reply::Send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n")
        })
        .await;
        let pool = pool_for(&up);

        // Act / Assert
        for _ in 0..3 {
            assert_eq!(read_body(pool.send(get("/x")).await.unwrap()).await, "hello world");
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_body_that_ends_at_the_close_is_read_whole_and_its_connection_not_reused() {
        // Arrange
        let up = scripted(|_| Reply::SendThenClose(b"HTTP/1.1 200 OK\r\n\r\nuntil the close")).await;
        let pool = pool_for(&up);

        // Act / Assert
        for _ in 0..2 {
            assert_eq!(read_body(pool.send(get("/x")).await.unwrap()).await, "until the close");
            assert_eq!(pool.idle_count(), 0);
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_response_that_says_close_or_leaves_bytes_behind_does_not_return_its_connection() {
        // The upstream keeps every connection open; the responses say otherwise.
        let scripts: [fn(usize) -> Reply; 3] = [
            |_| Reply::Send(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"),
            |_| Reply::Send(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"),
            |_| {
                Reply::Send(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nextra",
                )
            },
        ];
        for (case, script) in scripts.into_iter().enumerate() {
            // Arrange
            let up = scripted(script).await;
            let pool = pool_for(&up);

            // Act
            for _ in 0..2 {
                assert_eq!(read_body(pool.send(get("/x")).await.unwrap()).await, "ok");
            }

            // Assert
            assert_eq!(up.accepted.load(Ordering::SeqCst), 2, "case {case}");
        }
    }

    #[tokio::test]
    async fn a_head_response_has_no_body_whatever_its_length_says() {
        // Arrange: the answer to HEAD, then to GET, on one connection.
        let up =
            scripted(|n| Reply::Send(if n == 0 { b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n" } else { OK })).await;
        let pool = pool_for(&up);
        let head = Request::head("/x").header("host", "upstream").body(Body::empty()).unwrap();

        // Act
        let response = pool.send(head).await.unwrap();
        assert_eq!(response.headers()["content-length"], "50");
        assert_eq!(read_body(response).await, "");
        let after = read_body(pool.send(get("/x")).await.unwrap()).await;

        // Assert
        assert_eq!(after, "ok");
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn request_bodies_go_out_with_their_length_or_chunked() {
        // Arrange
        let up = scripted(|_| Reply::Send(OK)).await;
        let pool = pool_for(&up);
        let post = |body| Request::post("/in").header("host", "upstream").body(body).unwrap();
        let pieces = ["hello", " world"].map(|p| Ok::<_, std::io::Error>(Bytes::from(p)));

        // Act
        assert_eq!(read_body(pool.send(post(Body::from("hello"))).await.unwrap()).await, "ok");
        assert_eq!(
            read_body(pool.send(post(Body::from_stream(futures::stream::iter(pieces)))).await.unwrap()).await,
            "ok"
        );
        let empty = Request::post("/in").header("content-length", "0").body(Body::empty()).unwrap();
        assert_eq!(read_body(pool.send(empty).await.unwrap()).await, "ok");

        // Assert
        let requests: Vec<String> =
            up.requests.lock().unwrap().iter().map(|r| String::from_utf8_lossy(r).into_owned()).collect();
        assert_eq!(requests[0], "POST /in HTTP/1.1\r\nhost: upstream\r\ncontent-length: 5\r\n\r\nhello");
        assert_eq!(
            requests[1],
            "POST /in HTTP/1.1\r\nhost: upstream\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        );
        let default_host = format!("host: {}", up.target.authority().unwrap());
        assert_eq!(requests[2], format!("POST /in HTTP/1.1\r\n{default_host}\r\ncontent-length: 0\r\n\r\n"));
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_request_lost_to_the_keep_alive_race_is_sent_again_only_when_that_is_safe() {
        // Arrange: each connection answers its first request and drops the
        // second unanswered, as an upstream closing an idle connection just
        // as a request arrives does.
        let up = scripted(|n| if n == 0 { Reply::Send(OK) } else { Reply::Close }).await;
        let pool = pool_for(&up);
        assert_eq!(read_body(pool.send(get("/first")).await.unwrap()).await, "ok");

        // Act / Assert: a GET without a body goes out again on a new connection…
        assert_eq!(read_body(pool.send(get("/again")).await.unwrap()).await, "ok");
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        // …a POST does not: it may have been acted on.
        let post = Request::post("/pay").header("host", "upstream").body(Body::from("{}")).unwrap();
        assert!(matches!(pool.send(post).await, Err(UpstreamError::Closed | UpstreamError::Io(_))));
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn responses_that_cannot_be_framed_safely_are_errors() {
        // Arrange
        let up = scripted(|_| {
            Reply::Send(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n")
        })
        .await;
        let pool = pool_for(&up);

        // Act
        let result = pool.send(get("/x")).await;

        // Assert
        assert!(matches!(result, Err(UpstreamError::Protocol(ProtocolError::AmbiguousLength))));
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_and_its_connection_closed() {
        // Arrange
        let up = scripted(|_| Reply::SendThenClose(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort")).await;
        let pool = pool_for(&up);

        // Act
        let result = pool.send(get("/x")).await.unwrap().into_body().collect().await;

        // Assert
        assert!(matches!(result, Err(UpstreamError::Closed)));
        assert_eq!(pool.idle_count(), 0);
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
    async fn no_response_head_by_the_deadline_is_a_timeout_on_new_and_reused_connections() {
        // Arrange: an upstream that answers two requests per connection, then
        // goes silent; the pool's connection keeps its timer between exchanges.
        let up = scripted(|n| if n < 2 { Reply::Send(OK) } else { Reply::Hang }).await;
        let pool = pool_for(&up);
        let timeout = Some(Duration::from_millis(300));

        // Act / Assert: answers within the deadline, on the same connection…
        for _ in 0..2 {
            assert_eq!(read_body(pool.send_within(get("/x"), timeout).await.unwrap()).await, "ok");
        }
        // …then a request that gets no answer times out, at its deadline…
        let started = std::time::Instant::now();
        assert!(matches!(pool.send_within(get("/x"), timeout).await, Err(UpstreamError::Timeout)));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 0, "a connection mid-exchange is never pooled");
        // …and a new connection answers again, within a deadline of its own.
        assert_eq!(read_body(pool.send_within(get("/x"), timeout).await.unwrap()).await, "ok");
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
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
