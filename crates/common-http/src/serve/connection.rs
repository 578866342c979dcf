//! One HTTP/1.1 connection, served: request heads parsed with httparse,
//! bodies framed by `Content-Length` or chunked coding, responses written
//! with their framing, keep-alive and pipelining, the header read timeout,
//! and graceful shutdown.
//!
//! # Why not hyper's server
//!
//! Profiled under the gateway's load (`bench/callgrind.sh`), hyper's HTTP/1
//! server was the largest single cost of a proxied request left in user
//! space: its generic role machinery parses into and encodes from its own
//! structures, and its dispatcher drives every connection through a state
//! machine built for everything HTTP/1 can do (upgrades, trailers, body
//! channels, `Expect` negotiated lazily). A connection of these services
//! needs much less: read a head, call the service, write the response, loop.
//! The request's own task does all of it; a request without a body (every
//! `GET`) allocates nothing here but its header map.
//!
//! # What a connection does
//!
//! - It waits at most the header read timeout for each request head, counted
//!   from when it starts waiting (after accepting, and after each response),
//!   then closes without an answer. While it waits with nothing buffered, a
//!   shutdown closes it at once.
//! - A head over [`MAX_HEAD`] bytes or [`MAX_FIELDS`] fields gets a JSON 431;
//!   a malformed one, an invalid `Content-Length`, `Transfer-Encoding` that
//!   does not end in `chunked` (or on HTTP/1.0), or both framing fields (the
//!   smuggling shape of RFC 9112 §6.3), a JSON 400; other transfer codings a
//!   JSON 501. Each such answer closes the connection.
//! - A request body is read by the service through [`RequestBody`], straight
//!   from the connection's buffer. `Expect: 100-continue` is answered before
//!   the service is called. A body the service did not read is drained (up
//!   to [`DRAIN_LIMIT`] bytes) so the connection can be reused, else the
//!   connection is closed.
//! - A response body of known size is sent with `Content-Length`, one of
//!   unknown size chunked (or, to an HTTP/1.0 client, until the close).
//!   `HEAD`, `204` and `304` responses carry no body. `Date` is added.
//! - A connection is kept alive unless the client says `Connection: close`
//!   (or speaks HTTP/1.0 without `keep-alive`), the response says so, a body
//!   could not be framed or drained, or the server is shutting down.
//! - Closing after an answer is a "lingering" close: the write side is shut
//!   down, then what the client still sends is read and dropped for a
//!   moment, so unread request bytes do not turn the close into a reset
//!   that destroys the answer before the client reads it.

use std::convert::Infallible;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::response::{IntoResponse as _, Response};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt as _};

use super::ServedOverTls;
use crate::chunked::{self, ChunkedDecoder, ChunkedError, Decoded};
use crate::error::ApiError;
use crate::http1::{
    Decimal, InvalidContentLength, header_map_sharing, list_items, note_content_length, put_field, span_in,
};

/// The largest request head accepted (request line and fields).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a request head may have.
pub const MAX_FIELDS: usize = 100;
/// The most bytes of a request body the service did not read that are read
/// and dropped to keep the connection; a larger rest closes it.
pub const DRAIN_LIMIT: u64 = 256 * 1024;
/// How long draining an unread body, or a lingering close, may take.
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// Room left in a request's header map for fields a service adds. None:
/// no service adds fields to a request it received (the gateway adds its
/// own as it encodes the upstream request, `gateway::upstream::Forwarded`),
/// so the map is made the size of the fields it holds.
const HEADROOM: usize = 0;
/// How much is read from the socket at a time.
const READ_SIZE: usize = 8 * 1024;
/// A response body frame this large is written on its own rather than
/// copied behind the head.
const COPY_LIMIT: usize = 16 * 1024;

/// What is known about a connection, put into each of its requests.
#[derive(Clone, Copy, Debug)]
pub(super) struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// The reading side of a connection: the socket and what has been read from it.
struct Reader {
    io: Box<dyn AsyncRead + Send + Unpin>,
    buf: BytesMut,
}

impl Reader {
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_SIZE);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

/// Serves the connection `io` until it closes, times out, fails, or
/// `shutdown` ends it between requests.
pub(super) async fn serve_connection<IO, S>(
    io: IO,
    mut service: S,
    peer: Peer,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: Service<Request<RequestBody>, Response = Response, Error = Infallible>,
{
    let (read, mut write) = tokio::io::split(io);
    let mut reader = Reader { io: Box::new(read), buf: BytesMut::with_capacity(READ_SIZE) };
    let mut out = Vec::with_capacity(1024);
    // Made once per connection: the timer is re-armed, the shutdown waiter
    // registered once, instead of both being set up again for every request.
    let mut deadline = pin!(tokio::time::sleep(header_read_timeout));
    let mut shutting_down = pin!(shutdown.cancelled());
    loop {
        let head = match read_head(&mut reader, deadline.as_mut(), header_read_timeout, shutting_down.as_mut()).await {
            HeadRead::Head(head) => head,
            HeadRead::Closed => return,
            HeadRead::Refused(status, message) => {
                let response = ApiError::new(status, message).into_response();
                if write_response(&mut write, &mut out, response, false, Version::HTTP_11, false).await.is_ok() {
                    linger(&mut write, reader).await;
                }
                return;
            }
        };
        let RequestHead { request, framing, keep_alive, expect_continue } = head;
        let head_only = request.method() == Method::HEAD;
        let version = request.version();
        let (body, at) = match framing {
            Framing::Empty => (RequestBody::empty(), ReaderAt::Here(reader)),
            Framing::Length(_) | Framing::Chunked => {
                if expect_continue && write.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
                    return;
                }
                let (tx, rx) = oneshot::channel();
                (RequestBody::streaming(reader, framing, tx), ReaderAt::InBody(rx))
            }
        };
        let mut request = request.map(|()| body);
        request.extensions_mut().insert(ConnectInfo(peer.addr));
        if peer.tls {
            request.extensions_mut().insert(ServedOverTls);
        }
        let Ok(ready) = service.ready().await;
        let Ok(response) = ready.call(request).await;
        let keep_alive = keep_alive && !shutdown.is_cancelled();
        let Ok(keep_alive) = write_response(&mut write, &mut out, response, head_only, version, keep_alive).await
        else {
            return;
        };
        reader = match at {
            ReaderAt::Here(reader) => reader,
            ReaderAt::InBody(rx) => match rx.await {
                Ok(Returned { reader, rest: None }) => reader,
                Ok(Returned { reader, rest: Some(rest) }) if keep_alive => match drain(reader, rest).await {
                    Some(reader) => reader,
                    None => {
                        let _ = write.shutdown().await;
                        return;
                    }
                },
                Ok(Returned { reader, rest: Some(_) }) => {
                    linger(&mut write, reader).await;
                    return;
                }
                // The body failed (the client broke its framing or went
                // away): the connection's byte stream is lost.
                Err(_) => {
                    let _ = write.shutdown().await;
                    return;
                }
            },
        };
        if !keep_alive {
            linger(&mut write, reader).await;
            return;
        }
    }
}

/// Where the connection's reader is while a request is served.
enum ReaderAt {
    /// With the connection: the request has no body.
    Here(Reader),
    /// In the request's body, given back when the body ends or is dropped.
    InBody(oneshot::Receiver<Returned>),
}

/// What waiting for a request head ended with.
// Returned once per request and matched at once: boxing the head would cost
// an allocation per request to save a move.
#[allow(clippy::large_enum_variant)]
enum HeadRead {
    Head(RequestHead),
    /// The client closed, the header read timeout ran out, or shutdown.
    Closed,
    /// Answer this and close.
    Refused(StatusCode, &'static str),
}

async fn read_head(
    reader: &mut Reader,
    mut deadline: Pin<&mut tokio::time::Sleep>,
    timeout: Duration,
    mut shutting_down: Pin<&mut tokio_util::sync::WaitForCancellationFuture<'_>>,
) -> HeadRead {
    let mut armed = false;
    loop {
        if !reader.buf.is_empty() {
            match parse_head(&mut reader.buf) {
                Ok(Some(head)) => return HeadRead::Head(head),
                Ok(None) => {}
                Err(HeadError(status, message)) => return HeadRead::Refused(status, message),
            }
        }
        if !armed {
            deadline.as_mut().reset(tokio::time::Instant::now() + timeout);
            armed = true;
        }
        let idle = reader.buf.is_empty();
        let read = std::future::poll_fn(|cx| {
            if idle && shutting_down.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            reader.poll_fill(cx).map(Some)
        })
        .await;
        match read {
            Some(Ok(n)) if n > 0 => {}
            // EOF, an error, the timeout or shutdown: nothing to answer.
            _ => return HeadRead::Closed,
        }
    }
}

/// How a request body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed request head.
struct RequestHead {
    request: Request<()>,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
}

/// A request head that is refused, with the answer.
#[derive(Debug, PartialEq, Eq)]
struct HeadError(StatusCode, &'static str);

impl HeadError {
    fn bad(message: &'static str) -> Self {
        Self(StatusCode::BAD_REQUEST, message)
    }
}

/// Parses the request head at the front of `buf`, removing it. `Ok(None)`:
/// not complete yet.
fn parse_head(buf: &mut BytesMut) -> Result<Option<RequestHead>, HeadError> {
    let too_large = HeadError(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "Request header fields too large");
    // Uninitialised slots: httparse fills only as many as the head has.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut parsed, buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(too_large),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(too_large),
        Err(_) => return Err(HeadError::bad("Malformed request")),
    };
    if len > MAX_HEAD {
        return Err(too_large);
    }
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::bad("Malformed request method"))?;
    let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let target = span_in(buf, parsed.path.unwrap_or_default().as_bytes());
    let mut framing = FramingFields::default();
    let mut fields = Vec::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name =
            HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| HeadError::bad("Malformed header name"))?;
        framing.note(&name, field.value)?;
        fields.push((name, span_in(buf, field.value)));
    }
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target)).map_err(|_| HeadError::bad("Malformed request target"))?;
    let headers = header_map_sharing(&head, fields, HEADROOM).map_err(|_| HeadError::bad("Malformed header value"))?;
    let body = framing.body(version)?;
    let keep_alive = !framing.close && (version == Version::HTTP_11 || framing.keep_alive);
    let expect_continue = framing.expect_continue && version == Version::HTTP_11;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(RequestHead { request, framing: body, keep_alive, expect_continue }))
}

/// What the server makes of the request head at the front of `buf`, for
/// the fuzz target (`fuzz/fuzz_targets/request_head.rs`): `Ok(None)` while
/// it is incomplete; once complete, the head is removed from `buf` and
/// returned with its body's length (`Some(0)` for none, `None` for chunked);
/// or the status it is refused with.
///
/// # Errors
/// The status (400, 431, 501) the connection answers before closing.
#[doc(hidden)]
pub fn parse_request_head(buf: &mut BytesMut) -> Result<Option<ParsedHead>, StatusCode> {
    let head = parse_head(buf).map_err(|HeadError(status, _)| status)?;
    Ok(head.map(|head| {
        let length = match head.framing {
            Framing::Empty => Some(0),
            Framing::Length(n) => Some(n),
            Framing::Chunked => None,
        };
        (head.request, length)
    }))
}

/// A request head as [`parse_request_head`] returns it: the request, and
/// its body's length (`Some(0)` for none, `None` for chunked).
#[doc(hidden)]
pub type ParsedHead = (Request<()>, Option<u64>);

/// What a request's fields say about its framing and its connection.
#[derive(Default)]
struct FramingFields {
    content_length: Option<u64>,
    /// `Transfer-Encoding` codings seen: whether any, whether the last is
    /// `chunked`, whether any other coding was named.
    transfer_encoding: bool,
    chunked_last: bool,
    other_coding: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl FramingFields {
    fn note(&mut self, name: &HeaderName, value: &[u8]) -> Result<(), HeadError> {
        if name == header::CONTENT_LENGTH {
            note_content_length(&mut self.content_length, value)
                .map_err(|InvalidContentLength| HeadError::bad("Invalid Content-Length"))?;
        } else if name == header::TRANSFER_ENCODING {
            // Present, even empty, it is a claim about the framing that some
            // other reader may honour: without `chunked` last it is refused.
            self.transfer_encoding = true;
            for coding in list_items(value) {
                // A coding after `chunked` (or `chunked` twice) is as bad as
                // one that is not chunked at all.
                self.other_coding |= self.chunked_last;
                self.chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                self.other_coding |= !self.chunked_last;
            }
        } else if name == header::CONNECTION {
            for token in list_items(value) {
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == header::EXPECT {
            self.expect_continue |= value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
        Ok(())
    }

    /// RFC 9112 §6.3, for a request.
    fn body(&self, version: Version) -> Result<Framing, HeadError> {
        if self.transfer_encoding {
            if self.content_length.is_some() {
                return Err(HeadError::bad("Both Content-Length and Transfer-Encoding are set"));
            }
            if version == Version::HTTP_10 {
                return Err(HeadError::bad("Transfer-Encoding is not allowed in HTTP/1.0"));
            }
            if !self.chunked_last {
                return Err(HeadError::bad("Transfer-Encoding must end with chunked"));
            }
            if self.other_coding {
                return Err(HeadError(StatusCode::NOT_IMPLEMENTED, "Transfer coding not supported"));
            }
            return Ok(Framing::Chunked);
        }
        Ok(match self.content_length {
            None | Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
        })
    }
}

/// A request's body, read from the connection as the service asks for it.
/// A request without one (most) holds nothing.
pub struct RequestBody {
    streaming: Option<Streaming>,
}

struct Streaming {
    /// `None` once the body has ended or failed.
    reader: Option<Reader>,
    state: BodyState,
    returned: Option<oneshot::Sender<Returned>>,
}

/// Where a body is.
#[derive(Debug)]
enum BodyState {
    /// This many bytes left.
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// The reader, given back to the connection when the body ends or is
/// dropped; `rest` is what was left unread.
struct Returned {
    reader: Reader,
    rest: Option<BodyState>,
}

/// A request body that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reading the request body: {0}")]
    Io(#[from] io::Error),
    #[error("the client closed the connection before the end of the request body")]
    Incomplete,
    #[error(transparent)]
    Chunked(#[from] ChunkedError),
}

impl RequestBody {
    /// No body.
    pub fn empty() -> Self {
        Self { streaming: None }
    }

    fn streaming(reader: Reader, framing: Framing, returned: oneshot::Sender<Returned>) -> Self {
        let state = match framing {
            Framing::Chunked => BodyState::Chunked(ChunkedDecoder::default()),
            Framing::Length(n) => BodyState::Length(n),
            Framing::Empty => BodyState::Length(0),
        };
        Self { streaming: Some(Streaming { reader: Some(reader), state, returned: Some(returned) }) }
    }
}

impl Streaming {
    /// The next piece of the body from what has been read.
    fn take_buffered(&mut self) -> Result<Decoded, ChunkedError> {
        let Some(reader) = &mut self.reader else { return Ok(Decoded::Done) };
        let buf = &mut reader.buf;
        Ok(match &mut self.state {
            BodyState::Length(0) => Decoded::Done,
            BodyState::Length(_) if buf.is_empty() => Decoded::NeedMore,
            BodyState::Length(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= n as u64;
                Decoded::Data(buf.split_to(n).freeze())
            }
            BodyState::Chunked(decoder) => decoder.decode(buf)?,
        })
    }

    fn is_end(&self) -> bool {
        self.reader.is_none() || matches!(self.state, BodyState::Length(0))
    }

    /// The body has ended: the connection gets its reader back (a body
    /// without a connection to return to, [`drain`]'s, keeps it).
    fn finish(&mut self) {
        if let Some(returned) = self.returned.take()
            && let Some(reader) = self.reader.take()
        {
            let _ = returned.send(Returned { reader, rest: None });
        }
    }

    /// The body failed: the reader is dropped, and the connection closes.
    fn fail(&mut self, e: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.reader = None;
        self.returned = None;
        Poll::Ready(Some(Err(e)))
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            match self.take_buffered() {
                Ok(Decoded::Data(data)) => {
                    if self.is_end() {
                        // The last bytes: the connection can read the next
                        // request before the service even looks at them.
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::Done) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(e) => return self.fail(e.into()),
            }
            let Some(reader) = &mut self.reader else { return Poll::Ready(None) };
            match ready!(reader.poll_fill(cx)) {
                Ok(0) => return self.fail(BodyError::Incomplete),
                Ok(_) => {}
                Err(e) => return self.fail(e.into()),
            }
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        // Dropped unread (a service that answered without the body): the
        // connection decides whether to drain the rest or close.
        if let Some(returned) = self.returned.take()
            && let Some(reader) = self.reader.take()
        {
            let rest = std::mem::replace(&mut self.state, BodyState::Length(0));
            let _ = returned.send(Returned { reader, rest: Some(rest) });
        }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().streaming {
            None => Poll::Ready(None),
            Some(streaming) => streaming.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.streaming.as_ref().is_none_or(Streaming::is_end)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.streaming {
            None => SizeHint::with_exact(0),
            Some(s) if s.reader.is_none() => SizeHint::with_exact(0),
            Some(Streaming { state: BodyState::Length(n), .. }) => SizeHint::with_exact(*n),
            Some(Streaming { state: BodyState::Chunked(_), .. }) => SizeHint::default(),
        }
    }
}

/// Reads and drops what is left of a body the service did not read, within
/// [`DRAIN_LIMIT`] and [`DRAIN_TIME`]; the reader back if the body ended.
async fn drain(reader: Reader, rest: BodyState) -> Option<Reader> {
    if matches!(rest, BodyState::Length(n) if n > DRAIN_LIMIT) {
        return None;
    }
    // No connection to return to: the reader stays in `body` when it ends
    // (and is dropped if it fails).
    let mut body = Streaming { reader: Some(reader), state: rest, returned: None };
    let mut drained = 0u64;
    let ended = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(frame) = std::future::poll_fn(|cx| body.poll_frame(cx)).await {
            drained += frame.ok()?.into_data().map_or(0, |data| data.len() as u64);
            if drained > DRAIN_LIMIT {
                return None;
            }
        }
        Some(())
    })
    .await;
    match ended {
        Ok(Some(())) => body.reader.take(),
        _ => None,
    }
}

/// Closes after an answer without losing it: shuts the write side down,
/// then reads and drops what the client still sends, briefly.
async fn linger<W: AsyncWrite + Unpin>(write: &mut W, mut reader: Reader) {
    if write.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut dropped = 0usize;
        loop {
            reader.buf.clear();
            match reader.io.read_buf(&mut reader.buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => dropped += n,
            }
            if dropped as u64 > DRAIN_LIMIT {
                return;
            }
        }
    })
    .await;
}

/// How a response body is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResponseFraming {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Writes `response` to a request of `version` (a `HEAD` request if
/// `head_only`) and returns whether the connection can carry another request.
async fn write_response<W: AsyncWrite + Unpin>(
    write: &mut W,
    out: &mut Vec<u8>,
    response: Response,
    head_only: bool,
    version: Version,
    keep_alive: bool,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // One pass over the fields: each is written as it comes but the framing
    // ones (ours to write), and what the rest says is noted on the way; no
    // lookups in the map.
    let (mut declared, mut has_connection, mut has_date, mut close) = (None, false, false, false);
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH {
            // The service's own value, read by the one rule; one that is not
            // valid, or disagrees with an earlier one, is not taken.
            let _ = note_content_length(&mut declared, value.as_bytes());
            continue;
        }
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        if name == header::CONNECTION {
            has_connection = true;
            close |= list_items(value.as_bytes()).any(|token| token.eq_ignore_ascii_case(b"close"));
        } else if name == header::DATE {
            has_date = true;
        }
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let mut keep_alive = keep_alive && !close;
    let exact = body.size_hint().exact();
    let (framing, length) = if status.is_informational() || status == StatusCode::NO_CONTENT {
        (ResponseFraming::None, None)
    } else if status == StatusCode::NOT_MODIFIED {
        // The length of what a GET would have sent, if the service said.
        (ResponseFraming::None, declared)
    } else if head_only {
        // Likewise; a body of known size says it too.
        (ResponseFraming::None, declared.or(exact.filter(|n| *n > 0)))
    } else if let Some(n) = exact.or(declared) {
        (ResponseFraming::Length(n), Some(n))
    } else if version == Version::HTTP_10 {
        keep_alive = false;
        (ResponseFraming::UntilClose, None)
    } else {
        put_field(out, b"transfer-encoding", b"chunked");
        (ResponseFraming::Chunked, None)
    };
    if let Some(n) = length {
        put_field(out, b"content-length", Decimal::of_u64(n).as_bytes());
    }
    if !keep_alive && !has_connection {
        put_field(out, b"connection", b"close");
    } else if keep_alive && version == Version::HTTP_10 && !has_connection {
        put_field(out, b"connection", b"keep-alive");
    }
    if !has_date {
        put_field(out, b"date", date_now().as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if framing == ResponseFraming::None {
        write.write_all(out).await?;
        return Ok(keep_alive);
    }
    let mut left = match framing {
        ResponseFraming::Length(n) => n,
        _ => u64::MAX,
    };
    loop {
        // What the body has ready goes out with what is already encoded;
        // before waiting for more, that is written.
        let frame = {
            let mut next = pin!(std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)));
            match std::future::poll_fn(|cx| Poll::Ready(next.as_mut().poll(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    write.write_all(out).await?;
                    out.clear();
                    next.await
                }
            }
        };
        let data = match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers are not sent.
                Err(_) => continue,
            },
            Some(Err(e)) => {
                // Cut short: what was written cannot be taken back, and the
                // client must see that the body is incomplete.
                tracing::debug!(error = %e, "response body failed");
                write.write_all(out).await?;
                return Ok(false);
            }
        };
        if data.is_empty() {
            continue;
        }
        if matches!(framing, ResponseFraming::Length(_)) && data.len() as u64 > left {
            // More than the declared length: never sent, and the connection
            // is closed after what was promised.
            write.write_all(out).await?;
            return Ok(false);
        }
        match framing {
            ResponseFraming::Chunked => chunked::encode_chunk(out, &data),
            _ if data.len() > COPY_LIMIT => {
                write.write_all(out).await?;
                out.clear();
                write.write_all(&data).await?;
            }
            _ => out.extend_from_slice(&data),
        }
        left = left.saturating_sub(data.len() as u64);
    }
    match framing {
        ResponseFraming::Chunked => out.extend_from_slice(chunked::LAST_CHUNK),
        // Fewer bytes than declared: the client waits for the rest until the close.
        ResponseFraming::Length(_) if left > 0 => keep_alive = false,
        ResponseFraming::UntilClose => keep_alive = false,
        _ => {}
    }
    write.write_all(out).await?;
    Ok(keep_alive)
}

/// The `Date` field: the current second, formatted once per second per thread.
fn date_now() -> HeaderValue {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, HeaderValue)> =
            const { std::cell::RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
    }
    let now = std::time::SystemTime::now();
    let second = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            *cached = (second, HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("")));
        }
        cached.1.clone()
    })
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::{any, get};
    use tokio::io::DuplexStream;

    use super::*;

    fn head(raw: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_head(&mut BytesMut::from(raw))
    }

    fn refused(raw: &str) -> HeadError {
        match head(raw) {
            Err(e) => e,
            Ok(h) => panic!("{raw:?} was accepted: {:?}", h.map(|h| h.framing)),
        }
    }

    #[test]
    fn a_head_is_parsed_once_complete_and_what_follows_stays_buffered() {
        let raw = "POST /a/b?c=d HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Two: 1\r\nX-Two: 2\r\n\r\nhello";
        for cut in [1, 10, raw.len() - 6] {
            assert!(head(&raw[..cut]).unwrap().is_none(), "incomplete at {cut}");
        }
        let mut buf = BytesMut::from(raw);
        let parsed = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..], b"hello");
        assert_eq!(parsed.framing, Framing::Length(5));
        assert!(parsed.keep_alive && !parsed.expect_continue);
        let request = parsed.request;
        assert_eq!(
            (request.method(), request.uri().path(), request.uri().query()),
            (&Method::POST, "/a/b", Some("c=d"))
        );
        assert_eq!(request.headers().get_all("x-two").iter().count(), 2);
        assert_eq!(request.version(), Version::HTTP_11);
    }

    #[test]
    fn request_framing_follows_rfc_9112() {
        let framing = |fields: &str| head(&format!("POST / HTTP/1.1\r\n{fields}\r\n")).unwrap().unwrap().framing;
        assert_eq!(framing(""), Framing::Empty);
        assert_eq!(framing("Content-Length: 0\r\n"), Framing::Empty);
        assert_eq!(framing("Content-Length: 12\r\n"), Framing::Length(12));
        assert_eq!(framing("Content-Length: 12, 12\r\nContent-Length: 12\r\n"), Framing::Length(12));
        assert_eq!(framing("Transfer-Encoding: chunked\r\n"), Framing::Chunked);
        assert_eq!(framing("Transfer-Encoding: Chunked\r\n"), Framing::Chunked);
    }

    #[test]
    fn ambiguous_or_unsupported_framing_is_refused_with_a_reason() {
        let bad = |fields: &str| refused(&format!("POST / HTTP/1.1\r\n{fields}\r\n"));
        let both = bad("Content-Length: 2\r\nTransfer-Encoding: chunked\r\n");
        assert_eq!(both, HeadError::bad("Both Content-Length and Transfer-Encoding are set"));
        for fields in
            ["Content-Length: 1, 2\r\n", "Content-Length: 1\r\nContent-Length: 2\r\n", "Content-Length: -1\r\n"]
        {
            assert_eq!(bad(fields), HeadError::bad("Invalid Content-Length"), "{fields}");
        }
        assert_eq!(bad("Content-Length: 99999999999999999999\r\n"), HeadError::bad("Invalid Content-Length"));
        assert_eq!(bad("Transfer-Encoding: gzip\r\n").0, StatusCode::BAD_REQUEST);
        assert_eq!(bad("Transfer-Encoding:\r\n").0, StatusCode::BAD_REQUEST, "found by the request_head fuzz target");
        assert_eq!(bad("Transfer-Encoding: ,\r\n").0, StatusCode::BAD_REQUEST);
        assert_eq!(bad("Transfer-Encoding: chunked, gzip\r\n").0, StatusCode::BAD_REQUEST);
        assert_eq!(bad("Transfer-Encoding: gzip, chunked\r\n").0, StatusCode::NOT_IMPLEMENTED);
        assert_eq!(bad("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n").0, StatusCode::NOT_IMPLEMENTED);
        let old = refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(old, HeadError::bad("Transfer-Encoding is not allowed in HTTP/1.0"));
        for raw in [
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "G@T / HTTP/1.1\r\n\r\n",
            "\x01\r\n\r\n",
        ] {
            assert_eq!(refused(raw).0, StatusCode::BAD_REQUEST, "{raw:?}");
        }
    }

    #[test]
    fn heads_too_large_or_with_too_many_fields_get_431() {
        let long = format!("GET / HTTP/1.1\r\nX-Long: {}", "a".repeat(MAX_HEAD));
        assert_eq!(refused(&long).0, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "even before it is complete");
        let many: String = (0..=MAX_FIELDS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(refused(&format!("GET / HTTP/1.1\r\n{many}\r\n")).0, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn keep_alive_and_expect_follow_the_version_and_fields() {
        let parsed = |raw: &str| head(raw).unwrap().unwrap();
        assert!(parsed("GET / HTTP/1.1\r\n\r\n").keep_alive);
        assert!(!parsed("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n").keep_alive);
        assert!(!parsed("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(parsed("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(parsed("POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n").expect_continue);
        assert!(!parsed("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").expect_continue);
    }

    /// A test app: `/echo` answers with the request body (of unknown size
    /// when `?stream`), `/ignore` answers without reading it, `/` says hi.
    fn app() -> Router {
        async fn echo(request: Request<Body>) -> Response {
            let stream = request.uri().query() == Some("stream");
            match axum::body::to_bytes(request.into_body(), usize::MAX).await {
                Ok(bytes) if stream => {
                    let pieces = vec![bytes.slice(bytes.len() / 2..), bytes.slice(..bytes.len() / 2)];
                    Response::new(Body::new(Pieces(pieces)))
                }
                Ok(bytes) => Response::new(Body::from(bytes)),
                Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
            }
        }
        Router::new()
            .route("/", get(|| async { "hi" }))
            .route("/echo", any(echo))
            .route("/ignore", any(|| async { "ignored" }))
    }

    /// A body of unknown size, in pieces (popped from the end).
    struct Pieces(Vec<Bytes>);

    impl HttpBody for Pieces {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop().map(|piece| Ok(Frame::data(piece))))
        }
    }

    /// The client end of a connection served by [`serve_connection`].
    fn connect() -> (DuplexStream, CancellationToken) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let shutdown = CancellationToken::new();
        let peer = Peer { addr: SocketAddr::from(([127, 0, 0, 1], 9)), tls: false };
        tokio::spawn(serve_connection(server, app(), peer, Duration::from_secs(5), shutdown.clone()));
        (client, shutdown)
    }

    /// Writes `raw`, then reads until the server closes.
    async fn exchange(raw: &[u8]) -> String {
        let (mut client, _shutdown) = connect();
        client.write_all(raw).await.unwrap();
        read_to_close(&mut client).await
    }

    async fn read_to_close(client: &mut DuplexStream) -> String {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut got)).await.unwrap().unwrap();
        String::from_utf8(got).unwrap()
    }

    /// The responses in `text`, as (status line, fields in lower case, body).
    fn responses(mut text: &str) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        while let Some(end) = text.find("\r\n\r\n") {
            let (head, rest) = (&text[..end], &text[end + 4..]);
            let (status, fields) = head.split_once("\r\n").unwrap_or((head, ""));
            let fields = fields.to_ascii_lowercase();
            let length = fields.lines().find_map(|l| l.strip_prefix("content-length: ")).map(|n| n.parse().unwrap());
            let (body, rest) = if let Some(n) = length {
                (rest[..n].to_owned(), &rest[n..])
            } else if fields.contains("transfer-encoding: chunked") {
                let mut decoder = ChunkedDecoder::default();
                let mut buf = BytesMut::from(rest);
                let mut body = Vec::new();
                while let Decoded::Data(data) = decoder.decode(&mut buf).unwrap() {
                    body.extend_from_slice(&data);
                }
                let consumed = rest.len() - buf.len();
                (String::from_utf8(body).unwrap(), &rest[consumed..])
            } else {
                (String::new(), rest)
            };
            out.push((status.to_owned(), fields, body));
            text = rest;
        }
        out
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_on_one_connection() {
        let text = exchange(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        let got = responses(&text);
        assert_eq!(got.len(), 3, "{text}");
        assert_eq!((got[0].0.as_str(), got[0].2.as_str()), ("HTTP/1.1 200 OK", "hi"));
        assert_eq!(got[1].2, "hello");
        assert!(got[0].1.contains("\ndate: ") || got[0].1.starts_with("date: "), "{}", got[0].1);
        assert!(!got[1].1.contains("connection: close"));
        assert!(got[2].1.contains("connection: close"), "{}", got[2].1);
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_and_bodies_of_unknown_size_sent_chunked() {
        let text = exchange(
            b"POST /echo?stream HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\nT: t\r\n\r\n",
        )
        .await;
        let got = responses(&text);
        assert!(got[0].1.contains("transfer-encoding: chunked") && !got[0].1.contains("content-length"), "{text}");
        assert_eq!(got[0].2, "abcdefg");
        // To an HTTP/1.0 client: until the close.
        let text = exchange(b"POST /echo?stream HTTP/1.0\r\nContent-Length: 4\r\n\r\nabcd").await;
        assert!(text.ends_with("\r\n\r\nabcd") && !text.contains("chunked"), "{text}");
    }

    #[tokio::test]
    async fn head_responses_have_no_body_and_http_1_0_keep_alive_is_honoured() {
        let text =
            exchange(b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .await;
        let (first, rest) = text.split_once("\r\n\r\n").unwrap();
        assert!(first.contains("content-length: 2") && first.contains("connection: keep-alive"), "{first}");
        assert!(rest.starts_with("HTTP/1.1 200 OK"), "the HEAD answer has no body: {text}");
        assert_eq!(responses(rest)[0].2, "hi");
    }

    #[tokio::test]
    async fn an_unread_body_is_drained_and_the_connection_reused() {
        let text = exchange(
            b"POST /ignore HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        let got = responses(&text);
        assert_eq!(got.len(), 2, "{text}");
        assert_eq!((got[0].2.as_str(), got[1].2.as_str()), ("ignored", "hi"));
    }

    #[tokio::test]
    async fn an_unread_body_over_the_drain_limit_closes_the_connection_after_the_answer() {
        let (mut client, _shutdown) = connect();
        let head = format!("POST /ignore HTTP/1.1\r\nContent-Length: {}\r\n\r\n", DRAIN_LIMIT + 1);
        client.write_all(head.as_bytes()).await.unwrap();
        client.write_all(&[b'x'; 1024]).await.unwrap();
        let text = read_to_close(&mut client).await;
        let got = responses(&text);
        assert_eq!(got.len(), 1, "{text}");
        assert_eq!(got[0].2, "ignored");
        assert!(got[0].1.contains("connection: close") || !text.is_empty());
    }

    #[tokio::test]
    async fn expect_100_continue_is_answered_before_the_body_is_read() {
        let (mut client, _shutdown) = connect();
        client
            .write_all(b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut interim = [0u8; 25];
        client.read_exact(&mut interim).await.unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        client.write_all(b"ok").await.unwrap();
        let got = responses(&read_to_close(&mut client).await);
        assert_eq!(got[0].2, "ok");
    }

    #[tokio::test]
    async fn a_bad_head_gets_a_json_error_and_the_connection_closes() {
        for (raw, status) in [
            ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\nGET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (
                "POST /echo HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "HTTP/1.1 400 Bad Request",
            ),
            ("POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "HTTP/1.1 501 Not Implemented"),
        ] {
            let text = exchange(raw.as_bytes()).await;
            let got = responses(&text);
            assert_eq!(got.len(), 1, "{text}");
            assert_eq!(got[0].0, status);
            assert!(got[0].1.contains("connection: close"));
            let error: serde_json::Value = serde_json::from_str(&got[0].2).unwrap();
            assert!(error["error"].is_string(), "{error}");
        }
    }

    #[tokio::test]
    async fn a_malformed_chunked_body_fails_the_request_and_closes_the_connection() {
        let text = exchange(
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        )
        .await;
        let got = responses(&text);
        assert_eq!(got.len(), 1, "nothing after the broken body is read as a request: {text}");
        assert_eq!(got[0].0, "HTTP/1.1 400 Bad Request");
    }

    #[tokio::test]
    async fn shutdown_closes_an_idle_connection() {
        let (mut client, shutdown) = connect();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut first = vec![0u8; 512];
        let n = client.read(&mut first).await.unwrap();
        assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200 OK"));
        shutdown.cancel();
        assert_eq!(read_to_close(&mut client).await, "");
    }

    /// The header read timeout counts from the start of each head, however
    /// long the previous request took.
    #[tokio::test(start_paused = true)]
    async fn the_header_timeout_counts_from_each_head_not_from_the_connection() {
        // Arrange: a handler slower than the 5 s timeout.
        let timeout = Duration::from_secs(5);
        let slow = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(12)).await;
                    "slow"
                }),
            )
            .route("/", get(|| async { "hi" }));
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let peer = Peer { addr: SocketAddr::from(([127, 0, 0, 1], 9)), tls: false };
        tokio::spawn(serve_connection(server, slow, peer, timeout, CancellationToken::new()));
        let mut buf = vec![0u8; 1024];

        // Act: the slow request, then another 4 s later (within the timeout), then nothing.
        client.write_all(b"GET /slow HTTP/1.1\r\n\r\n").await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("slow"), "{}", String::from_utf8_lossy(&buf[..n]));
        tokio::time::sleep(Duration::from_secs(4)).await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        let second = String::from_utf8_lossy(&buf[..n]).into_owned();
        let idle_since = tokio::time::Instant::now();
        let closed = client.read(&mut buf).await.unwrap();

        // Assert: served after 16 s on the connection, closed 5 s after it went idle.
        assert!(second.starts_with("HTTP/1.1 200 OK") && second.ends_with("hi"), "{second}");
        assert_eq!(closed, 0);
        let idle = idle_since.elapsed();
        assert!(idle >= timeout && idle < timeout + Duration::from_millis(100), "{idle:?}");
    }
}
