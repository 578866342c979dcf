//! Not Gatehouse: the floor. The barest HTTP/1.1 keep-alive reverse proxy
//! tokio allows, to measure what proxying alone costs in this runtime, so
//! the gateway's cost can be split into "any tokio proxy pays this" and
//! "ours" (`bench/callgrind.sh --floor` counts it under the same load as the
//! gateway and nginx).
//!
//! ```text
//! cargo run --release -p gateway --example bare_proxy -- 127.0.0.1:29103 127.0.0.1:29101
//! ```
//!
//! One thread (a current-thread runtime, like the gateway with one worker
//! and the peers' single nginx or HAProxy worker). Per request: the head
//! read within a 10 s deadline and parsed by httparse, its fields copied
//! into the upstream head as they are (but `Connection`); a pooled upstream
//! connection; the response head read within 30 s, its fields copied back
//! (but `Connection`), a `Content-Length` body relayed. One timer per
//! connection, reset per request, as the gateway's server does. No header
//! maps, no checks: no framing rules beyond `Content-Length` (a request
//! body, a chunked response or a malformed head closes the connection), no
//! limits, no identity, no logs. Never use it as a proxy; it exists to be
//! counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf as _, BytesMut};
use common_http::http1::{Decimal, put_field};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
const READ_SIZE: usize = 8 * 1024;

/// Idle upstream connections, each with what was read past its last response.
type Pool = Rc<RefCell<Vec<(TcpStream, BytesMut)>>>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (listen, upstream) = match &args[..] {
        [_, listen, upstream] => (listen.clone(), upstream.clone()),
        _ => panic!("usage: bare_proxy LISTEN_ADDR UPSTREAM_ADDR (both 127.x.x.x:port)"),
    };
    assert!(listen.starts_with("127.") && upstream.starts_with("127."), "loopback addresses only");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(&listen).await.unwrap();
        let pool: Pool = Rc::default();
        loop {
            let Ok((client, _)) = listener.accept().await else { continue };
            let _ = client.set_nodelay(true);
            let (pool, upstream) = (Rc::clone(&pool), upstream.clone());
            tokio::task::spawn_local(async move {
                let _ = serve(client, &pool, &upstream).await;
            });
        }
    });
}

/// Serves one client connection until it closes or breaks a rule.
async fn serve(mut client: TcpStream, pool: &Pool, upstream: &str) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let mut out = Vec::with_capacity(4096);
    let mut deadline = pin!(tokio::time::sleep(HEAD_TIMEOUT));
    loop {
        deadline.as_mut().reset(Instant::now() + HEAD_TIMEOUT);
        let head_len = loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut request = httparse::Request::new(&mut fields);
            match request.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    out.clear();
                    out.extend_from_slice(request.method.unwrap_or("GET").as_bytes());
                    out.push(b' ');
                    out.extend_from_slice(request.path.unwrap_or("/").as_bytes());
                    out.extend_from_slice(b" HTTP/1.1\r\n");
                    for field in request.headers.iter() {
                        if field.name.eq_ignore_ascii_case("content-length")
                            || field.name.eq_ignore_ascii_case("transfer-encoding")
                        {
                            return Ok(()); // no request bodies here
                        }
                        if !field.name.eq_ignore_ascii_case("connection") {
                            put_field(&mut out, field.name.as_bytes(), field.value);
                        }
                    }
                    out.extend_from_slice(b"\r\n");
                    break n;
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Ok(()),
            }
            if !fill(&mut client, &mut buf, deadline.as_mut()).await? {
                return Ok(());
            }
        };
        buf.advance(head_len);

        let pooled = pool.borrow_mut().pop();
        let (mut up, mut upbuf) = match pooled {
            Some(connection) => connection,
            None => {
                let stream = TcpStream::connect(upstream).await?;
                stream.set_nodelay(true)?;
                (stream, BytesMut::with_capacity(READ_SIZE))
            }
        };
        up.write_all(&out).await?;
        deadline.as_mut().reset(Instant::now() + UPSTREAM_TIMEOUT);
        let (head_len, body_len) = loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut fields);
            let parsed = response.parse(&upbuf).map_err(std::io::Error::other)?;
            if let httparse::Status::Complete(n) = parsed {
                out.clear();
                out.extend_from_slice(b"HTTP/1.1 ");
                out.extend_from_slice(Decimal::of_u64(u64::from(response.code.unwrap_or(502))).as_bytes());
                out.push(b' ');
                out.extend_from_slice(response.reason.unwrap_or("").as_bytes());
                out.extend_from_slice(b"\r\n");
                let mut length = None;
                for field in response.headers.iter() {
                    if field.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(field.value).ok().and_then(|v| v.trim().parse::<usize>().ok());
                    } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Ok(()); // no chunked responses here
                    }
                    if !field.name.eq_ignore_ascii_case("connection") {
                        put_field(&mut out, field.name.as_bytes(), field.value);
                    }
                }
                out.extend_from_slice(b"\r\n");
                let Some(length) = length else { return Ok(()) };
                break (n, length);
            }
            if !fill(&mut up, &mut upbuf, deadline.as_mut()).await? {
                return Ok(());
            }
        };
        upbuf.advance(head_len);
        while upbuf.len() < body_len {
            if !fill(&mut up, &mut upbuf, deadline.as_mut()).await? {
                return Ok(());
            }
        }
        out.extend_from_slice(&upbuf[..body_len]);
        upbuf.advance(body_len);
        pool.borrow_mut().push((up, upbuf));
        client.write_all(&out).await?;
    }
}

/// Reads more into `buf`; `false` at the end of the stream or the deadline.
async fn fill(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: std::pin::Pin<&mut Sleep>,
) -> std::io::Result<bool> {
    buf.reserve(READ_SIZE);
    tokio::select! {
        read = stream.read_buf(buf) => Ok(read? > 0),
        () = deadline => Ok(false),
    }
}
