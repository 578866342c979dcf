//! `common_http::serve` over real TCP: the header read timeout (slow loris),
//! the peer address for handlers, and graceful shutdown.
//!
//! Timing bounds are generous on purpose (CI machines are busy): a timer
//! never fires early, so lower bounds are exact; upper bounds leave seconds
//! of slack.
// Tests: a failed step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use common_http::serve::{ServeOptions, serve_with_options};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(1);
/// Far more than any bound below should need.
const PATIENCE: Duration = Duration::from_secs(15);

struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(app: Router) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let options = ServeOptions { header_read_timeout: TIMEOUT, ..ServeOptions::default() };
    let task = tokio::spawn(serve_with_options(listener, app, shutdown.clone(), options));
    Server { addr, shutdown, task }
}

/// A router whose `/peer` answers with the peer address the server saw.
fn peer_app() -> Router {
    Router::new().route("/peer", get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }))
}

/// Reads one whole response with a `Content-Length` (what axum sends for a
/// string body), or until EOF; returns the text.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok());
            if length.is_some_and(|n| body.len() >= n) {
                return text;
            }
        }
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await.expect("response in time").unwrap();
        if n == 0 {
            return String::from_utf8_lossy(&buf).into_owned();
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One `GET path` on a fresh connection; the response text.
async fn get_once(addr: SocketAddr, path: &str) -> (String, SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    (read_response(&mut stream).await, local)
}

/// Waits until the server closes `stream` (EOF or reset), discarding
/// anything it sends first; how long that took.
async fn closed_by_server(mut stream: tokio::net::tcp::OwnedReadHalf) -> Instant {
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Instant::now(),
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_disconnected_while_another_client_is_served() {
    // Arrange
    let server = start(peer_app()).await;
    let slow = TcpStream::connect(server.addr).await.unwrap();
    let (read_half, mut write_half) = slow.into_split();
    let started = Instant::now();
    write_half.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let closed = tokio::spawn(closed_by_server(read_half));
    let trickle = tokio::spawn(async move {
        // One byte of a never-ending header every 500 ms, until the server hangs up.
        for byte in b"X-Slow: ".iter().chain(std::iter::repeat(&b'a')) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if write_half.write_all(&[*byte]).await.is_err() {
                return;
            }
        }
    });

    // Act: a normal client on another connection, while the slow one trickles.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (response, local) = get_once(server.addr, "/peer").await;
    let served_at = started.elapsed();
    let closed_at = tokio::time::timeout(PATIENCE, closed).await.expect("slow client disconnected").unwrap();

    // Assert
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(&local.to_string()), "the handler saw the client's address: {response}");
    let held = closed_at.duration_since(started);
    assert!(served_at < held, "the normal client was served ({served_at:?}) while the slow one was connected");
    assert!(held >= TIMEOUT, "not closed before the timeout: {held:?}");
    assert!(held < TIMEOUT + Duration::from_secs(5), "closed within about the timeout: {held:?}");
    trickle.abort();
    server.shutdown.cancel();
    tokio::time::timeout(PATIENCE, server.task).await.expect("server stops").unwrap().unwrap();
}

#[tokio::test]
async fn a_connection_that_never_sends_anything_is_closed_after_the_timeout() {
    // Arrange
    let server = start(peer_app()).await;
    let started = Instant::now();
    let (read_half, _write_half) = TcpStream::connect(server.addr).await.unwrap().into_split();

    // Act
    let closed_at = tokio::time::timeout(PATIENCE, closed_by_server(read_half)).await.expect("closed");

    // Assert
    let held = closed_at.duration_since(started);
    assert!(held >= TIMEOUT && held < TIMEOUT + Duration::from_secs(5), "{held:?}");
}

#[tokio::test]
async fn a_keep_alive_connection_serves_several_requests_then_idles_out() {
    // Arrange
    let server = start(peer_app()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();

    // Act: two requests on one connection, then silence.
    let mut responses = Vec::new();
    for _ in 0..2 {
        stream.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        responses.push(read_response(&mut stream).await);
    }
    let idle_since = Instant::now();
    let (read_half, _write_half) = stream.into_split();
    let closed_at = tokio::time::timeout(PATIENCE, closed_by_server(read_half)).await.expect("idle connection closed");

    // Assert
    for response in &responses {
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    let idle = closed_at.duration_since(idle_since);
    assert!(idle >= TIMEOUT && idle < TIMEOUT + Duration::from_secs(5), "{idle:?}");
}

#[tokio::test]
async fn graceful_shutdown_stops_accepting_and_lets_an_in_flight_request_finish() {
    // Arrange: a handler that tells the test it started, then waits to be released.
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let app = {
        let (entered, release) = (Arc::clone(&entered), Arc::clone(&release));
        Router::new().route(
            "/slow",
            get(move || {
                let (entered, release) = (Arc::clone(&entered), Arc::clone(&release));
                async move {
                    entered.notify_one();
                    release.notified().await;
                    "finished"
                }
            }),
        )
    };
    let server = start(app).await;
    let addr = server.addr;
    let (response_tx, response_rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = response_tx.send(get_once(addr, "/slow").await.0);
    });
    tokio::time::timeout(PATIENCE, entered.notified()).await.expect("handler started");
    // An idle keep-alive connection must not hold the shutdown up.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /slow-missing HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let _ = read_response(&mut idle).await;

    // Act
    server.shutdown.cancel();

    // Assert: new connections are refused while the request is still running…
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!server.task.is_finished(), "serve returned with a request in flight");
    // …which then completes, and only then does serve return.
    release.notify_one();
    let response = tokio::time::timeout(PATIENCE, response_rx).await.expect("response").unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("finished"), "{response}");
    tokio::time::timeout(PATIENCE, server.task).await.expect("serve returns after draining").unwrap().unwrap();
}
