//! The HTTP/1.1 wire format the proxy speaks to its upstreams (RFC 9112):
//! request heads out, response heads and bodies in. No I/O here: the
//! connection code of [`crate::upstream`] feeds bytes in and writes bytes
//! out, so each framing rule can be tested on its own.
//!
//! Why not hyper's client: hyper drives a connection as a dispatcher behind
//! a channel (the request goes in as a message, the response comes back
//! through a oneshot, both with their wake-ups), encodes and parses through
//! its generic role machinery, and keeps per-connection state for
//! everything HTTP/1 can do. Profiled under the proxy's load, that was about
//! 15k instructions per request, a fifth of the gateway's user time. A proxy
//! leg needs much less: write one head, read one head, frame one body.
//!
//! What is enforced, because a gateway that misreads where a response ends
//! hands the next client someone else's bytes:
//!
//! - a response head is at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] fields;
//! - `Content-Length` must be digits, and every copy of it the same value;
//! - a response with both `Transfer-Encoding` and `Content-Length` is refused
//!   (RFC 9112 §6.3 calls it a likely smuggling attempt);
//! - a chunked body is decoded by [`common_http::chunked`] (sizes that fit
//!   64 bits, CRLF line ends, bounded extensions and trailers, nothing after
//!   the last chunk read as body);
//! - `HEAD`, `204` and `304` responses have no body whatever their headers say;
//!   interim `1xx` responses are skipped; `101` is refused (the proxy never
//!   asks for an upgrade: `Upgrade` is a hop-by-hop header it removes).
//!
//! Left out of the parsed head, because the gateway never relays them:
//! hop-by-hop fields (RFC 9110 §7.6.1) and those `Connection` names (read
//! for the framing first), `Server` (the upstream's software is nobody's
//! business), and every `Access-Control-*` field (CORS is decided once, at
//! the edge: SEED-FLAWS F22).
//!
//! A body with neither header is read until the upstream closes, and such a
//! connection, like one that says `Connection: close` or speaks HTTP/1.0
//! without `keep-alive`, is never reused.

use std::mem::MaybeUninit;

use crate::proxy::is_hop_by_hop;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{Method, Response, StatusCode, Version};
use bytes::BytesMut;
pub use common_http::chunked::{ChunkedDecoder, ChunkedError, Decoded, LAST_CHUNK, encode_chunk};
use common_http::http1::{Decimal, header_map_sharing, list_items, note_content_length, put_field, span_in};

/// The largest response head accepted (status line and fields).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a response head may have.
pub const MAX_HEADERS: usize = 100;
/// Room left in a parsed response's header map for the fields the gateway
/// adds (`Cache-Control`, up to four rate-limit fields, and at the edge
/// `nosniff`, the CORS fields and the request id), so adding them does not
/// grow and rehash the map more than once.
const RESPONSE_HEADROOM: usize = 8;

/// A response the proxy cannot frame safely.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("the response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("a response with both Transfer-Encoding and Content-Length")]
    AmbiguousLength,
    #[error(transparent)]
    Chunked(#[from] ChunkedError),
    #[error("a 101 Switching Protocols response to a request that asked for no upgrade")]
    UnexpectedUpgrade,
}

/// How a request body is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body. `declared_zero` keeps a client's `Content-Length: 0`.
    Empty { declared_zero: bool },
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`, each piece as it comes.
    Chunked,
}

/// Appends the request head to `out`: the request line with `target` (the
/// origin form, `/path?query`), `Host: host`, each of `fields` but any `Host`
/// or framing field among them (those are ours to write), then the framing.
///
/// Header names and values are `http` types, which cannot hold CR or LF, so
/// nothing here can split the head.
pub fn encode_request_head<'a>(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    host: &HeaderValue,
    fields: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    framing: RequestFraming,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    put_field(out, header::HOST.as_str().as_bytes(), host.as_bytes());
    for (name, value) in fields {
        if name == header::HOST || name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match framing {
        RequestFraming::Empty { declared_zero: false } => {}
        RequestFraming::Empty { declared_zero: true } => put_field(out, b"content-length", b"0"),
        RequestFraming::Length(n) => put_field(out, b"content-length", Decimal::of_u64(n).as_bytes()),
        RequestFraming::Chunked => put_field(out, b"transfer-encoding", b"chunked"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Where a response body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    Empty,
    /// This many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub response: Response<()>,
    pub framing: BodyFraming,
    /// Whether the connection may carry another request once the body is read.
    pub keep_alive: bool,
}

/// Parses the response head at the front of `buf`, removing it (and any
/// interim `1xx` heads before it) from `buf`. `Ok(None)`: the head is not
/// complete yet; read more and call again.
///
/// # Errors
/// A head that is malformed, too large, or frames its body ambiguously.
pub fn parse_response_head(buf: &mut BytesMut, method: &Method) -> Result<Option<ResponseHead>, ProtocolError> {
    loop {
        // Uninitialised slots: httparse fills only as many as the head has.
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len =
            match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, buf, &mut fields) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(ProtocolError::HeadTooLarge),
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => return Err(ProtocolError::HeadTooLarge),
                Err(e) => return Err(ProtocolError::Head(e)),
            };
        if len > MAX_HEAD {
            return Err(ProtocolError::HeadTooLarge);
        }
        let code = parsed.code.unwrap_or_default();
        let status = StatusCode::from_u16(code).map_err(|_| ProtocolError::Head(httparse::Error::Status))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(ProtocolError::UnexpectedUpgrade);
        }
        if status.is_informational() {
            // 100 Continue, 103 Early Hints: nothing to forward; the final
            // response follows.
            let _ = buf.split_to(len);
            continue;
        }
        let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
        // One pass over the fields: the framing ones are read here (no map
        // lookups later), and where each value sits in `buf` is noted, so
        // the values can share the head's buffer instead of being copied.
        let mut framing = FramingFields::default();
        let mut fields = Vec::with_capacity(parsed.headers.len());
        for field in parsed.headers.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| ProtocolError::Head(httparse::Error::HeaderName))?;
            framing.note(&name, field.value)?;
            // Read above for the framing, never relayed (see the module docs).
            if is_hop_by_hop(&name) || is_withheld(&name) {
                continue;
            }
            fields.push((name, span_in(buf, field.value)));
        }
        if !framing.connection_named.is_empty() {
            fields.retain(|(name, _)| !framing.connection_named.contains(name));
        }
        let head = buf.split_to(len).freeze();
        let headers = header_map_sharing(&head, fields, RESPONSE_HEADROOM)
            .map_err(|_| ProtocolError::Head(httparse::Error::HeaderValue))?;
        let body = framing.body(method, status)?;
        let keep_alive = body != BodyFraming::UntilClose && framing.keep_alive(version);
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        return Ok(Some(ResponseHead { response, framing: body, keep_alive }));
    }
}

/// Fields of an upstream response the gateway withholds from its clients
/// (besides hop-by-hop ones): `Server`, and `Access-Control-*`.
fn is_withheld(name: &HeaderName) -> bool {
    name == header::SERVER || name.as_str().starts_with("access-control-")
}

/// What a response's fields say about its framing and its connection.
#[derive(Default)]
struct FramingFields {
    /// Every `Content-Length` value seen (they must agree).
    content_length: Option<u64>,
    /// Whether `Transfer-Encoding` was present, and whether its last coding so far is chunked.
    transfer_encoding: Option<bool>,
    close: bool,
    keep_alive: bool,
    /// The fields `Connection` names besides `close` and `keep-alive`
    /// (hop-by-hop too; usually none).
    connection_named: Vec<HeaderName>,
}

impl FramingFields {
    fn note(&mut self, name: &HeaderName, value: &[u8]) -> Result<(), ProtocolError> {
        if name == header::CONTENT_LENGTH {
            note_content_length(&mut self.content_length, value).map_err(|_| ProtocolError::ContentLength)?;
        } else if name == header::TRANSFER_ENCODING {
            let last = list_items(value).last();
            let chunked_last = match last {
                Some(coding) => coding.eq_ignore_ascii_case(b"chunked"),
                // An empty field does not change the last coding.
                None => self.transfer_encoding.unwrap_or(false),
            };
            self.transfer_encoding = Some(chunked_last);
        } else if name == header::CONNECTION {
            for token in list_items(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                } else if let Ok(named) = HeaderName::from_bytes(token) {
                    self.connection_named.push(named);
                }
            }
        }
        Ok(())
    }

    /// RFC 9112 §6.3, for a response to `method`.
    fn body(&self, method: &Method, status: StatusCode) -> Result<BodyFraming, ProtocolError> {
        if method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Ok(BodyFraming::Empty);
        }
        Ok(match (self.transfer_encoding, self.content_length) {
            (Some(_), Some(_)) => return Err(ProtocolError::AmbiguousLength),
            (Some(true), None) => BodyFraming::Chunked,
            // Chunked not last: only the close marks the end (§6.3 item 4).
            (Some(false), None) | (None, None) => BodyFraming::UntilClose,
            (None, Some(0)) => BodyFraming::Empty,
            (None, Some(n)) => BodyFraming::Length(n),
        })
    }

    fn keep_alive(&self, version: Version) -> bool {
        !self.close && (version == Version::HTTP_11 || self.keep_alive)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;

    use super::*;

    fn head(raw: &str, method: &Method) -> Result<Option<ResponseHead>, ProtocolError> {
        parse_response_head(&mut BytesMut::from(raw), method)
    }

    fn framing(raw: &str) -> Result<BodyFraming, ProtocolError> {
        Ok(head(raw, &Method::GET)?.expect("a complete head").framing)
    }

    #[test]
    fn a_request_head_is_the_request_line_the_fields_and_our_framing() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", HeaderValue::from_static("42"));
        headers.insert(header::HOST, HeaderValue::from_static("ignored"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        let added = [(HeaderName::from_static("x-added"), HeaderValue::from_static("1"))];
        let host = HeaderValue::from_static("users.internal");
        let fields = headers.iter().chain(added.iter().map(|(n, v)| (n, v)));
        let mut out = Vec::new();

        encode_request_head(&mut out, &Method::POST, "/a?b=c", &host, fields, RequestFraming::Length(5));

        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a?b=c HTTP/1.1\r\nhost: users.internal\r\nx-user-id: 42\r\nx-added: 1\r\ncontent-length: 5\r\n\r\n"
        );
    }

    #[test]
    fn chunked_or_empty_framing_is_ours() {
        let default_host = HeaderValue::from_static("127.0.0.1:9000");
        let mut out = Vec::new();
        encode_request_head(&mut out, &Method::PUT, "/", &default_host, &HeaderMap::new(), RequestFraming::Chunked);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "PUT / HTTP/1.1\r\nhost: 127.0.0.1:9000\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let mut out = Vec::new();
        let empty = RequestFraming::Empty { declared_zero: true };
        encode_request_head(&mut out, &Method::POST, "/x", &default_host, &HeaderMap::new(), empty);
        assert!(out.ends_with(b"content-length: 0\r\n\r\n"));
        let mut chunk = Vec::new();
        encode_chunk(&mut chunk, &[b'a'; 26]);
        assert_eq!(chunk, [b"1a\r\n".as_slice(), &[b'a'; 26], b"\r\n"].concat());
    }

    #[test]
    fn a_head_is_parsed_once_complete_and_the_body_bytes_stay_in_the_buffer() {
        let mut buf = BytesMut::from("HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: 1\r\nX-A: 2\r\n\r\nok");
        let partial = &mut BytesMut::from(&buf[..20]);
        assert!(parse_response_head(partial, &Method::GET).unwrap().is_none());

        let head = parse_response_head(&mut buf, &Method::GET).unwrap().unwrap();

        assert_eq!(head.response.status(), StatusCode::CREATED);
        assert_eq!(head.response.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(head.framing, BodyFraming::Length(2));
        assert!(head.keep_alive);
        assert_eq!(&buf[..], b"ok");
    }

    #[test]
    fn interim_responses_are_skipped_and_an_upgrade_is_refused() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        );
        let head = parse_response_head(&mut buf, &Method::POST).unwrap().unwrap();
        assert_eq!(head.response.status(), StatusCode::OK);
        assert!(head.response.headers().get("link").is_none());
        assert!(buf.is_empty());

        let upgrade = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(head_err(upgrade), ProtocolError::UnexpectedUpgrade);
    }

    fn head_err(raw: &str) -> ProtocolError {
        head(raw, &Method::GET).unwrap_err()
    }

    #[test]
    fn the_body_framing_follows_rfc_9112() {
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"), Ok(BodyFraming::Length(10)));
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 10, 10\r\n\r\n"), Ok(BodyFraming::Length(10)));
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), Ok(BodyFraming::Empty));
        assert_eq!(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), Ok(BodyFraming::Chunked));
        assert_eq!(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"), Ok(BodyFraming::Chunked));
        assert_eq!(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), Ok(BodyFraming::UntilClose));
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), Ok(BodyFraming::UntilClose));
        assert_eq!(framing("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"), Ok(BodyFraming::Empty));
        assert_eq!(framing("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"), Ok(BodyFraming::Empty));
        let to_head = head("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", &Method::HEAD).unwrap().unwrap();
        assert_eq!(to_head.framing, BodyFraming::Empty);
        assert_eq!(to_head.response.headers()["content-length"], "10", "kept for the client");
    }

    #[test]
    fn ambiguous_or_malformed_lengths_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
        ] {
            assert_eq!(head_err(raw), ProtocolError::AmbiguousLength, "{raw}");
        }
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 11\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 10, 11\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ] {
            assert_eq!(head_err(raw), ProtocolError::ContentLength, "{raw}");
        }
        assert!(matches!(head_err("HTTP/1.1 2000 OK\r\n\r\n"), ProtocolError::Head(_)));
        assert!(matches!(head_err("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n"), ProtocolError::Head(_)));
        assert!(matches!(head_err("SMTP ready\r\n\r\n"), ProtocolError::Head(_)));
    }

    #[test]
    fn heads_too_large_or_with_too_many_fields_are_refused() {
        let long = format!("HTTP/1.1 200 OK\r\nX-Long: {}", "a".repeat(MAX_HEAD));
        assert_eq!(head_err(&long), ProtocolError::HeadTooLarge, "even before it is complete");
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(head_err(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")), ProtocolError::HeadTooLarge);
    }

    #[test]
    fn hop_by_hop_server_and_cors_fields_are_left_out() {
        let raw = "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nServer: nginx\r\nAccess-Control-Allow-Origin: *\r\nX-Kept: 2\r\nContent-Length: 0\r\n\r\n";
        let head = head(raw, &Method::GET).unwrap().unwrap();
        let names: Vec<&str> = head.response.headers().keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept", "content-length"]);
        assert!(head.keep_alive);
    }

    #[test]
    fn keep_alive_follows_the_version_and_the_connection_field() {
        let keep = |raw: &str| head(raw, &Method::GET).unwrap().unwrap().keep_alive;
        assert!(keep("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep("HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep("HTTP/1.1 200 OK\r\nConnection: foo, close\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(keep("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep("HTTP/1.1 200 OK\r\n\r\n"), "a body that ends at the close");
    }
}
