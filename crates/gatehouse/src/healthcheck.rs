//! `gatehouse healthcheck`: the container's health probe.
//!
//! The image has no shell and no curl, so the binary probes itself: one
//! HTTP/1.1 `GET` to `--url`, by default `/ready` on `127.0.0.1:$PORT`
//! (`PORT` defaulting to 8080, the gateway's; the bind address instead of
//! loopback when `BIND_ADDRESS` names one), over `https://` when `TLS_CERT`
//! is set (the service serves HTTPS then), else `http://`; with 2 seconds
//! for everything (connect, handshake, send, status line). A 2xx exits 0
//! with one line on stdout; anything else (another status, a refused
//! connection, a certificate not trusted, no answer in time) exits 1 with
//! one line on stderr. `/ready` rather than `/health`: a service is healthy
//! for its dependants once it can serve (database, Redis, keys, the
//! gateway's revocation view), not merely alive.
//!
//! # Which certificates the probe trusts
//!
//! The service's certificate names its public or internal host
//! (`api.example.com`, `auth.internal`), rarely the loopback address the
//! probe dials, so checking names alone would fail every healthy service.
//! The probe instead accepts exactly two kinds of certificate, and never
//! skips verification:
//!
//! - the service's own: the leaf of `TLS_CERT`, byte for byte, whatever
//!   names it carries. The server must still prove it holds the matching
//!   private key in the handshake, so only the process serving `TLS_KEY`
//!   passes. Right after the files are replaced, until the service reloads
//!   them (within 10 s), the probe may fail once; the next probe passes;
//! - any certificate that chains to `UPSTREAM_CA` (else the public web PKI's
//!   roots) and names the URL's host, as every other Gatehouse client
//!   checks it: for a `--url` naming another host.
//!
//! Only `http://` and `https://host:port/path` URLs; no proxy, no redirect.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::config::Settings;

/// How long the whole probe may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// The status line must arrive within this many bytes.
const MAX_STATUS_LINE: usize = 8 * 1024;

#[derive(clap::Args)]
pub struct HealthcheckArgs {
    /// What to GET (http:// or https://host:port/path); default /ready on 127.0.0.1:$PORT (PORT defaulting to 8080), over https when TLS_CERT is set
    #[arg(long)]
    url: Option<String>,
}

/// Probes the URL and reports one line: `Ok` on a 2xx, otherwise an error
/// naming the URL and what went wrong.
///
/// # Errors
/// Anything but a 2xx answer within [`TIMEOUT`].
pub async fn run(settings: &Settings, args: HealthcheckArgs) -> anyhow::Result<()> {
    let own_cert = settings.get_var("TLS_CERT");
    let url = match args.url {
        Some(url) => url,
        None => default_url(settings.bind_address, settings.port.unwrap_or(8080), own_cert.is_some()),
    };
    let target = Target::parse(&url).with_context(|| format!("healthcheck: bad --url {url}"))?;
    let tls = if target.tls {
        let own = match own_cert {
            Some(path) => Some(
                CertificateDer::from_pem_file(Path::new(&path))
                    .map_err(|e| anyhow!("healthcheck: TLS_CERT ({path}): {e}"))?,
            ),
            None => None,
        };
        let roots = settings.upstream_roots().context("healthcheck")?;
        Some(tls_connector(own, roots)?)
    } else {
        None
    };
    let status = tokio::time::timeout(TIMEOUT, get(&target, tls.as_ref()))
        .await
        .map_err(|_| anyhow!("unhealthy: {target} did not answer within {}s", TIMEOUT.as_secs()))?
        .with_context(|| format!("unhealthy: {target}"))?;
    if !(200..300).contains(&status) {
        bail!("unhealthy: {target} answered {status}");
    }
    println!("gatehouse: healthy: {target} answered {status}");
    Ok(())
}

/// `/ready` on this host: loopback when the service binds every address,
/// else the address it binds; `https` when the service serves TLS.
fn default_url(bind: IpAddr, port: u16, tls: bool) -> String {
    let host = match bind {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    let scheme = if tls { "https" } else { "http" };
    match host {
        IpAddr::V4(a) => format!("{scheme}://{a}:{port}/ready"),
        IpAddr::V6(a) => format!("{scheme}://[{a}]:{port}/ready"),
    }
}

/// A parsed `http[s]://host[:port][/path]`.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// `https`.
    tls: bool,
    /// The host as written, without IPv6 brackets (for connecting).
    host: String,
    port: u16,
    /// `host:port` as written (for the `Host` header).
    authority: String,
    /// Path and query, at least `/`.
    path: String,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => bail!("only http:// and https://host:port/path URLs"),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if authority.is_empty() || authority.contains('@') {
            bail!("expected http://host:port/path");
        }
        if path.chars().any(|c| c.is_ascii_control() || c == ' ' || c == '#') {
            bail!("the path may not contain spaces, control characters or a fragment");
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(|| anyhow!("unclosed [ in the host"))?;
            host.parse::<Ipv6Addr>().map_err(|_| anyhow!("`{host}` is not an IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| anyhow!("expected :port after ]"))?),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host.contains([':', '[', ']']) && !authority.starts_with('[') {
            bail!("expected http://host:port/path (an IPv6 host goes in brackets)");
        }
        let port = match port {
            None if tls => 443,
            None => 80,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| anyhow!("`{p}` is not a port"))?,
        };
        Ok(Self { tls, host: host.to_owned(), port, authority: authority.to_owned(), path })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority, self.path)
    }
}

/// A TLS client trusting `own` (the service's own certificate, by identity)
/// and whatever chains to `roots` for the URL's host (see the module docs).
fn tls_connector(
    own: Option<CertificateDer<'static>>,
    roots: Arc<rustls::RootCertStore>,
) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
        .build()
        .context("healthcheck: the trusted roots")?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(OwnOrRoots { own, roots }))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Accepts the service's own certificate, or one `roots` accepts. The
/// handshake's signature is always checked against the presented
/// certificate's key, so holding a copy of a public certificate is not enough.
#[derive(Debug)]
struct OwnOrRoots {
    own: Option<CertificateDer<'static>>,
    roots: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for OwnOrRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.own.as_ref().is_some_and(|own| own.as_ref() == end_entity.as_ref()) {
            return Ok(ServerCertVerified::assertion());
        }
        self.roots.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.roots.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.roots.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.roots.supported_verify_schemes()
    }
}

/// One `GET`, over TLS when `tls` is given; the status code of the answer.
async fn get(target: &Target, tls: Option<&tokio_rustls::TlsConnector>) -> anyhow::Result<u16> {
    let stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
    match tls {
        Some(tls) => {
            let name = ServerName::try_from(target.host.clone())
                .map_err(|_| anyhow!("`{}` is not a TLS server name", target.host))?;
            exchange(target, tls.connect(name, stream).await?).await
        }
        None => exchange(target, stream).await,
    }
}

/// Sends the request on `stream` and reads the status line.
async fn exchange(target: &Target, mut stream: impl AsyncRead + AsyncWrite + Unpin) -> anyhow::Result<u16> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: gatehouse-healthcheck\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            return parse_status_line(&buf[..end]);
        }
        if buf.len() > MAX_STATUS_LINE {
            bail!("the status line is too long");
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the connection closed before a status line");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status_line(line: &[u8]) -> anyhow::Result<u16> {
    let line = std::str::from_utf8(line).map_err(|_| anyhow!("not an HTTP answer"))?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        bail!("not an HTTP/1.x answer");
    }
    code.parse::<u16>().map_err(|_| anyhow!("not an HTTP/1.x answer"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn target(host: &str, port: u16, authority: &str, path: &str) -> Target {
        Target { tls: false, host: host.into(), port, authority: authority.into(), path: path.into() }
    }

    #[test]
    fn parses_loopback_style_urls() {
        assert_eq!(
            Target::parse("http://127.0.0.1:8081/ready").unwrap(),
            target("127.0.0.1", 8081, "127.0.0.1:8081", "/ready")
        );
        assert_eq!(Target::parse("http://localhost").unwrap(), target("localhost", 80, "localhost", "/"));
        assert_eq!(Target::parse("http://[::1]:9/x?y=1").unwrap(), target("::1", 9, "[::1]:9", "/x?y=1"));
        assert_eq!(Target::parse("http://auth:8081?a").unwrap(), target("auth", 8081, "auth:8081", "/?a"));
        assert_eq!(Target::parse("http://[::1]:9/ready").unwrap().to_string(), "http://[::1]:9/ready");
        let https = Target { tls: true, ..target("auth.internal", 443, "auth.internal", "/ready") };
        assert_eq!(Target::parse("https://auth.internal/ready").unwrap(), https);
        assert_eq!(https.to_string(), "https://auth.internal/ready");
    }

    #[test]
    fn refuses_what_it_cannot_probe() {
        for bad in [
            "ftp://127.0.0.1/ready",
            "127.0.0.1:8080",
            "http://",
            "http://user@host/",
            "http://host:0/",
            "http://host:99999/",
            "http://host:port/",
            "http://::1:80/",
            "http://[::1/",
            "http://[nothost]:80/",
            "http://host/a b",
            "http://host/a\r\nX: y",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_url_is_loopback_unless_a_bind_address_is_named_and_https_with_a_certificate() {
        assert_eq!(default_url("0.0.0.0".parse().unwrap(), 8080, false), "http://127.0.0.1:8080/ready");
        assert_eq!(default_url("::".parse().unwrap(), 8081, false), "http://[::1]:8081/ready");
        assert_eq!(default_url("10.1.2.3".parse().unwrap(), 8082, false), "http://10.1.2.3:8082/ready");
        assert_eq!(default_url("0.0.0.0".parse().unwrap(), 8443, true), "https://127.0.0.1:8443/ready");
    }

    #[test]
    fn reads_the_status_code() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK").unwrap(), 200);
        assert_eq!(parse_status_line(b"HTTP/1.0 503").unwrap(), 503);
        assert!(parse_status_line(b"SSH-2.0-OpenSSH").is_err());
        assert!(parse_status_line(b"HTTP/1.1 2000 OK").is_err());
    }
}
