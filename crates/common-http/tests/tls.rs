//! `common_http::serve` over TLS, on real TCP with certificates made here:
//! HTTPS to a client trusting the test CA, plain HTTP and stalled handshakes
//! turned away without disturbing anyone else, shutdown not held up by a
//! handshake, the certificate reloaded when its files change, and PEM
//! problems reported per file.
//!
//! The certificates are made with rcgen directly rather than through
//! `testkit::tls`: testkit depends on every service, which this crate's
//! tests should not have to build.
// Tests: a failed step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use common_http::serve::{Listener, ServeOptions, ServedOverTls, serve_with_options};
use common_http::tls::{PemFiles, ServerTls, TlsError};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// Far more than any bound below should need.
const PATIENCE: Duration = Duration::from_secs(15);

/// A CA of its own, and the files of one server certificate it signed.
struct TestPki {
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl TestPki {
    fn new() -> Self {
        Self::named("serve test CA")
    }

    fn named(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { ca, dir: tempfile::tempdir().unwrap() }
    }

    /// Writes a certificate for `localhost` and 127.0.0.1 (and its key) as
    /// `<name>.pem` and `<name>.key`; returns the paths and the certificate.
    fn issue(&self, name: &str) -> (PathBuf, PathBuf, CertificateDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) =
            (self.dir.path().join(format!("{name}.pem")), self.dir.path().join(format!("{name}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path, cert.der().clone())
    }

    fn connector(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let config = common_http::tls::client_config(Arc::new(roots)).unwrap();
        let mut config = rustls::ClientConfig::clone(&config);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

/// `/peer` answers with the peer address and whether the request came over TLS.
fn app() -> Router {
    Router::new().route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>, tls: Option<axum::Extension<ServedOverTls>>| async move {
            format!("{peer} tls={}", tls.is_some())
        }),
    )
}

async fn start(tls: ServerTls) -> Server {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let options = ServeOptions { tls_handshake_timeout: HANDSHAKE_TIMEOUT, ..ServeOptions::default() };
    let task = tokio::spawn(serve_with_options(Listener::tls(tcp, tls), app(), shutdown.clone(), options));
    Server { addr, shutdown, task }
}

/// Sends one `GET /peer` on `stream`, reads the response to EOF (`Connection: close`).
async fn get_peer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> String {
    stream.write_all(b"GET /peer HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response)).await.expect("response in time").unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// An HTTPS `GET /peer`: the response, and the certificate the server presented.
async fn https_get(pki: &TestPki, addr: SocketAddr) -> (String, CertificateDer<'static>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(PATIENCE, pki.connector().connect(name, tcp)).await.expect("handshake").unwrap();
    let (_, session) = tls.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]), "only HTTP/1.1 is offered");
    let presented = session.peer_certificates().unwrap()[0].clone().into_owned();
    (get_peer(tls).await, presented)
}

/// Waits until the server closes `stream` (EOF or reset), discarding what it sends.
async fn closed_by_server(mut stream: TcpStream) -> Instant {
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Instant::now(),
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn a_client_trusting_the_ca_is_served_over_https_and_the_handler_knows_it() {
    // Arrange
    let pki = TestPki::new();
    let (cert, key, issued) = pki.issue("server");
    let server = start(ServerTls::load(PemFiles::new(cert, key)).unwrap()).await;

    // Act
    let (response, presented) = https_get(&pki, server.addr).await;

    // Assert
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("tls=true"), "the request carries ServedOverTls: {response}");
    assert!(response.contains("127.0.0.1:"), "the handler saw the client's address: {response}");
    assert_eq!(presented, issued);
    server.shutdown.cancel();
    tokio::time::timeout(PATIENCE, server.task).await.expect("server stops").unwrap().unwrap();
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_fails_the_handshake() {
    // Arrange
    let pki = TestPki::new();
    let (cert, key, _) = pki.issue("server");
    let server = start(ServerTls::load(PemFiles::new(cert, key)).unwrap()).await;
    let stranger = TestPki::named("another CA");

    // Act
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let result = stranger.connector().connect(ServerName::try_from("localhost").unwrap(), tcp).await;

    // Assert
    let Err(error) = result else { panic!("the handshake succeeded") };
    let error = error.to_string();
    assert!(error.contains("UnknownIssuer"), "{error}");
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_response_and_the_server_keeps_serving() {
    // Arrange
    let pki = TestPki::new();
    let (cert, key, _) = pki.issue("server");
    let server = start(ServerTls::load(PemFiles::new(cert, key)).unwrap()).await;

    // Act: a plain-HTTP request, read until the server hangs up.
    let plain = get_peer(TcpStream::connect(server.addr).await.unwrap()).await;

    // Assert: no HTTP response (at most a TLS alert), then HTTPS still works.
    assert!(!plain.contains("HTTP/1.1"), "{plain:?}");
    let (response, _) = https_get(&pki, server.addr).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn a_stalled_handshake_is_closed_after_the_timeout_while_others_are_served() {
    // Arrange: one client connects and never sends a ClientHello, another
    // sends half of one.
    let pki = TestPki::new();
    let (cert, key, _) = pki.issue("server");
    let server = start(ServerTls::load(PemFiles::new(cert, key)).unwrap()).await;
    let started = Instant::now();
    let silent = tokio::spawn(closed_by_server(TcpStream::connect(server.addr).await.unwrap()));
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    // A TLS handshake record header announcing 512 bytes, then 3 of them.
    partial.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01]).await.unwrap();
    let partial = tokio::spawn(closed_by_server(partial));

    // Act: a normal client meanwhile.
    let (response, _) = https_get(&pki, server.addr).await;
    let served_at = started.elapsed();
    let silent_closed = tokio::time::timeout(PATIENCE, silent).await.expect("silent client closed").unwrap();
    let partial_closed = tokio::time::timeout(PATIENCE, partial).await.expect("partial client closed").unwrap();

    // Assert
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    for closed in [silent_closed, partial_closed] {
        let held = closed.duration_since(started);
        assert!(served_at < held, "the normal client was served ({served_at:?}) while the stalled one waited");
        assert!(held >= HANDSHAKE_TIMEOUT, "not closed before the handshake timeout: {held:?}");
    }
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_a_handshake_in_progress() {
    // Arrange: a handshake timeout far longer than the test's patience.
    let pki = TestPki::new();
    let (cert, key, _) = pki.issue("server");
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let options = ServeOptions { tls_handshake_timeout: Duration::from_secs(600), ..ServeOptions::default() };
    let tls = ServerTls::load(PemFiles::new(cert, key)).unwrap();
    let task = tokio::spawn(serve_with_options(Listener::tls(tcp, tls), app(), shutdown.clone(), options));
    let stalled = TcpStream::connect(addr).await.unwrap();
    // The connection is accepted (its task started) before shutdown begins.
    let (response, _) = https_get(&pki, addr).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // Act
    shutdown.cancel();

    // Assert
    tokio::time::timeout(PATIENCE, task).await.expect("serve returns despite the stalled handshake").unwrap().unwrap();
    let closed = tokio::time::timeout(PATIENCE, closed_by_server(stalled)).await;
    assert!(closed.is_ok(), "the stalled connection was closed");
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    // Arrange
    let pki = TestPki::new();
    let (cert, key, first) = pki.issue("server");
    let files = PemFiles { recheck_interval: Duration::from_millis(100), ..PemFiles::new(&cert, &key) };
    let server = start(ServerTls::load(files).unwrap()).await;
    assert_eq!(https_get(&pki, server.addr).await.1, first);

    // Act 1: a key that does not match the certificate (as when only one of
    // the two files has been replaced yet).
    let (_, other_key, _) = pki.issue("other");
    std::fs::copy(&other_key, &key).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Assert 1: the previous pair is still served.
    let (response, presented) = https_get(&pki, server.addr).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(presented, first);

    // Act 2: the renewal completes.
    let (renewed_cert, renewed_key, renewed) = pki.issue("renewed");
    std::fs::copy(&renewed_key, &key).unwrap();
    std::fs::copy(&renewed_cert, &cert).unwrap();

    // Assert 2: new handshakes get the renewed certificate.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (response, presented) = https_get(&pki, server.addr).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        if presented == renewed {
            break;
        }
        assert!(Instant::now() < deadline, "the renewed certificate was never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn load_error(cert: &Path, key: &Path) -> TlsError {
    ServerTls::load(PemFiles::new(cert, key)).unwrap_err()
}

#[test]
fn unusable_pem_files_are_reported_per_file_without_their_contents() {
    let pki = TestPki::new();
    let (cert, key, _) = pki.issue("server");
    let (_, other_key, _) = pki.issue("other");
    let missing = pki.dir.path().join("missing.pem");
    let garbage = pki.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file at all").unwrap();

    let e = load_error(&missing, &key);
    assert!(matches!(&e, TlsError::Certificate { reason, .. } if reason == "no such file"), "{e}");
    let e = load_error(&garbage, &key);
    assert!(matches!(&e, TlsError::Certificate { reason, .. } if reason.starts_with("no certificate")), "{e}");
    let e = load_error(&key, &key);
    assert!(matches!(&e, TlsError::Certificate { .. }), "a key is not a certificate: {e}");
    let e = load_error(&cert, &missing);
    assert!(matches!(&e, TlsError::Key { reason, .. } if reason == "no such file"), "{e}");
    let e = load_error(&cert, &cert);
    assert!(matches!(&e, TlsError::Key { reason, .. } if reason.starts_with("no private key")), "{e}");
    let e = load_error(&cert, &other_key);
    assert!(matches!(&e, TlsError::Key { reason, .. } if reason.contains("does not match")), "{e}");
    let key_pem = std::fs::read_to_string(&other_key).unwrap();
    let body = key_pem.lines().nth(1).unwrap();
    assert!(!e.to_string().contains(body), "the key is never echoed");
}

#[test]
fn a_ca_bundle_must_hold_certificates() {
    let pki = TestPki::new();
    let (cert, key, _) = pki.issue("server");
    let bundle = pki.dir.path().join("bundle.pem");
    std::fs::write(&bundle, format!("{}{}", pki.ca.pem(), std::fs::read_to_string(&cert).unwrap())).unwrap();
    assert_eq!(common_http::tls::load_ca_bundle(&bundle).unwrap().len(), 2);
    let e = common_http::tls::load_ca_bundle(&key).unwrap_err();
    assert!(matches!(&e, TlsError::CaBundle { reason, .. } if reason.starts_with("no certificate")), "{e}");
}

/// The internal client of service-to-service calls: `https://` to a peer
/// whose certificate chains to the roots it was given; refused (no request
/// sent) when the certificate chains to another CA or only the public roots
/// are trusted; and still plain `http://`.
#[tokio::test]
async fn the_internal_client_speaks_https_to_trusted_peers_only_and_plain_http() {
    // Arrange
    let pki = TestPki::new();
    let (cert, key, _) = pki.issue("server");
    let server = start(ServerTls::load(PemFiles::new(&cert, &key)).unwrap()).await;
    let plain_tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain_tcp.local_addr().unwrap();
    let plain = tokio::spawn(common_http::serve::serve(plain_tcp, app(), server.shutdown.clone()));
    let roots = |pki: &TestPki| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.der().clone()).unwrap();
        Arc::new(roots)
    };
    let get = |roots: Arc<rustls::RootCertStore>, url: String| async move {
        let client = common_http::client::internal_client(Duration::from_secs(2), roots).unwrap();
        let request = http::Request::get(url).body(axum::body::Body::empty()).unwrap();
        let response = tokio::time::timeout(PATIENCE, client.request(request)).await.expect("an answer in time")?;
        let body = axum::body::to_bytes(axum::body::Body::new(response.into_body()), usize::MAX).await.unwrap();
        Ok::<_, hyper_util::client::legacy::Error>(String::from_utf8(body.to_vec()).unwrap())
    };
    let https_url = format!("https://localhost:{}/peer", server.addr.port());

    // Act / Assert
    let body = get(roots(&pki), https_url.clone()).await.unwrap();
    assert!(body.ends_with("tls=true"), "{body}");
    let body = get(roots(&pki), format!("http://{plain_addr}/peer")).await.unwrap();
    assert!(body.ends_with("tls=false"), "{body}");
    for (case, trusted) in [
        ("another CA", roots(&TestPki::named("another CA"))),
        ("the public roots", Arc::new(common_http::tls::public_roots())),
    ] {
        let e = get(trusted, https_url.clone()).await.unwrap_err();
        let chain = format!("{e:?}");
        assert!(e.is_connect() && chain.contains("UnknownIssuer"), "{case}: {chain}");
    }

    server.shutdown.cancel();
    server.task.await.unwrap().unwrap();
    plain.await.unwrap().unwrap();
}
