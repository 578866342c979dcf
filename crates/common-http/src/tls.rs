//! TLS with rustls (aws-lc-rs, the one crypto provider of the tree): the
//! server side every service uses when it serves HTTPS ([`ServerTls`], given
//! to [`crate::serve::Listener::tls`]), and the trust roots and client
//! configuration of every client of `https://` peers: the gateway's
//! upstreams and [`crate::client::internal_client`]
//! ([`public_roots`], [`load_ca_bundle`], [`client_config`]).
//!
//! # Certificate rotation
//!
//! The server's certificate chain and key are read from PEM files, and read
//! again when either file changes, so a renewed certificate (certbot,
//! cert-manager) is served without a restart. Rather than a watcher task,
//! the handshake that finds the last look older than
//! [`PemFiles::recheck_interval`] (10 s by default) reads the two files and
//! compares them with what was loaded, and reloads when they differ: a read
//! of two small files at most once per interval, done by one handshake while
//! the others go on with the certificate in hand. Contents rather than
//! modification times, so a copy that keeps the old time (`cp -p`) or lands
//! within the file system's time resolution is still seen. A pair
//! that does not load (a half-written file, a key that does not match the
//! certificate, as between writing the two files) is logged and the
//! previous certificate kept; it is tried again at the next look, so the
//! rotation completes once both files are in place.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, TryLockError};
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why TLS could not be set up; says which file is at fault, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate chain file (`TLS_CERT`).
    #[error("{path}: {reason}")]
    Certificate { path: String, reason: String },
    /// The private key file (`TLS_KEY`), including a key that does not
    /// match the certificate.
    #[error("{path}: {reason}")]
    Key { path: String, reason: String },
    /// A bundle of trusted CA certificates (`UPSTREAM_CA`).
    #[error("{path}: {reason}")]
    CaBundle { path: String, reason: String },
    /// rustls refused the configuration itself (not expected with the
    /// default protocol versions).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The PEM files a server's certificate comes from.
#[derive(Debug, Clone)]
pub struct PemFiles {
    /// The certificate chain, leaf first (a `fullchain.pem`).
    pub cert: PathBuf,
    /// The private key of the leaf (PKCS#8, PKCS#1 or SEC1 PEM).
    pub key: PathBuf,
    /// How often the files are looked at for a change (see the module docs).
    pub recheck_interval: Duration,
}

impl PemFiles {
    /// The default interval between looks at the files for a change.
    pub const DEFAULT_RECHECK_INTERVAL: Duration = Duration::from_secs(10);

    /// `cert` and `key`, looked at every [`Self::DEFAULT_RECHECK_INTERVAL`].
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self { cert: cert.into(), key: key.into(), recheck_interval: Self::DEFAULT_RECHECK_INTERVAL }
    }
}

/// A server's TLS configuration: TLS 1.2 and 1.3, ALPN `http/1.1` (the
/// only protocol [`crate::serve`] speaks), the certificate from
/// [`PemFiles`], reloaded when they change. Cheap to clone: every service of
/// a process may share one.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the certificate chain and key, checking that they belong together.
    ///
    /// # Errors
    /// [`TlsError`] naming the file that cannot be read or used.
    pub fn load(files: PemFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cert_error = |reason: String| TlsError::Certificate { path: files.cert.display().to_string(), reason };
        let key_error = |reason: String| TlsError::Key { path: files.key.display().to_string(), reason };
        let loaded = Pem { cert: read(&files.cert).map_err(cert_error)?, key: read(&files.key).map_err(key_error)? };
        let key = certified_key(&files, &loaded, &provider)?;
        let resolver = ReloadingCert {
            current: RwLock::new(Arc::new(key)),
            look: Mutex::new(Look { at: Instant::now(), loaded }),
            files,
            provider: Arc::clone(&provider),
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { config: Arc::new(config) })
    }

    /// The acceptor that performs the server side of handshakes.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
    }
}

/// The contents of the two files.
#[derive(PartialEq, Eq)]
struct Pem {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// The last look at the files.
struct Look {
    at: Instant,
    /// What the certificate served now was loaded from.
    loaded: Pem,
}

/// Hands every handshake the current certificate, reloading it when the
/// files change (see the module docs).
struct ReloadingCert {
    files: PemFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    look: Mutex<Look>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert").field("files", &self.files).finish_non_exhaustive()
    }
}

impl ReloadingCert {
    fn reload_if_changed(&self) {
        let mut look = match self.look.try_lock() {
            Ok(look) => look,
            // Another handshake is looking: go on with the certificate in hand.
            Err(TryLockError::WouldBlock) => return,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        };
        let now = Instant::now();
        if now.duration_since(look.at) < self.files.recheck_interval {
            return;
        }
        look.at = now;
        let read_both = read(&self.files.cert).and_then(|cert| Ok(Pem { cert, key: read(&self.files.key)? }));
        let pem = match read_both {
            Ok(pem) if pem == look.loaded => return,
            Ok(pem) => pem,
            Err(reason) => {
                tracing::warn!(%reason, "a TLS certificate file cannot be read; still serving the previous certificate");
                return;
            }
        };
        match certified_key(&self.files, &pem, &self.provider) {
            Ok(key) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
                look.loaded = pem;
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            // `look.loaded` is left as it was, so the next look tries again.
            Err(e) => tracing::warn!(
                error = %e,
                "the TLS certificate files changed but do not load; still serving the previous certificate"
            ),
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.reload_if_changed();
        Some(Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner)))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        _ => format!("cannot read it: {e}"),
    })
}

/// Every certificate of a PEM file's contents, in order.
fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a valid PEM file: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in it (expected PEM `BEGIN CERTIFICATE` blocks)".to_owned());
    }
    Ok(certs)
}

/// The certificate chain and key of `pem` (read from `files`), checked to belong together.
fn certified_key(files: &PemFiles, pem: &Pem, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError::Certificate { path: files.cert.display().to_string(), reason };
    let key_error = |reason: String| TlsError::Key { path: files.key.display().to_string(), reason };
    let chain = parse_certificates(&pem.cert).map_err(cert_error)?;
    let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            key_error("no private key in it (expected a PEM PKCS#8, PKCS#1 or SEC1 private key)".to_owned())
        }
        e => key_error(format!("not a valid PEM file: {e}")),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            key_error(format!("the key does not match the certificate in {}", files.cert.display()))
        }
        e => key_error(format!("unusable private key: {e}")),
    })
}

/// The public web PKI's roots (Mozilla's list, compiled in by webpki-roots):
/// what an `https://` upstream is checked against unless `UPSTREAM_CA` is set.
pub fn public_roots() -> RootCertStore {
    RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }
}

/// The CA certificates of a PEM bundle, as trust roots.
///
/// # Errors
/// [`TlsError::CaBundle`] when the file is unreadable, holds no certificate,
/// or holds one that is not a usable CA certificate.
pub fn load_ca_bundle(path: &Path) -> Result<RootCertStore, TlsError> {
    let error = |reason: String| TlsError::CaBundle { path: path.display().to_string(), reason };
    let mut roots = RootCertStore::empty();
    for (n, cert) in read(path).and_then(|pem| parse_certificates(&pem)).map_err(error)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| error(format!("certificate {} is not usable: {e}", n + 1)))?;
    }
    Ok(roots)
}

/// A TLS client trusting `roots` (server names verified), TLS 1.2 and 1.3.
/// ALPN is left unset: HTTP/1.1 is what a server assumes without it, and
/// hyper-rustls refuses a configuration that already has protocols.
///
/// # Errors
/// [`TlsError::Config`] if rustls refuses the protocol versions.
pub fn client_config(roots: Arc<RootCertStore>) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
