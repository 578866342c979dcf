//! Certificates for TLS tests, made by the test: a CA of its own
//! ([`TestCa`]) and server certificates it signs, written as PEM files the
//! way an operator would point `TLS_CERT`, `TLS_KEY` and `UPSTREAM_CA` at
//! them, plus clients that trust only that CA.

use std::path::PathBuf;
use std::sync::Arc;

use common_http::tls::{PemFiles, ServerTls};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// The server TLS of these files.
    pub fn server_tls(&self) -> ServerTls {
        ServerTls::load(PemFiles::new(&self.cert, &self.key)).unwrap()
    }
}

/// A certificate authority for one test; its files live as long as it does.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
    issued: std::sync::atomic::AtomicUsize,
}

impl TestCa {
    /// A new CA named `name` (distinct names keep unrelated CAs apart when a
    /// verifier looks an issuer up by name).
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca = Self { issuer, dir: tempfile::tempdir().unwrap(), issued: Default::default() };
        std::fs::write(ca.ca_file(), ca.issuer.pem()).unwrap();
        ca
    }

    /// The CA certificate's PEM file (what `UPSTREAM_CA` names).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for `names` (DNS names or IP addresses), written
    /// with its key into the CA's directory.
    pub fn issue(&self, names: &[&str]) -> CertFiles {
        let n = self.issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = CertFiles {
            cert: self.dir.path().join(format!("server-{n}.pem")),
            key: self.dir.path().join(format!("server-{n}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    /// A certificate for `localhost` and `127.0.0.1`.
    pub fn issue_localhost(&self) -> CertFiles {
        self.issue(&["localhost", "127.0.0.1"])
    }

    /// Trust roots holding only this CA.
    pub fn roots(&self) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        Arc::new(roots)
    }

    /// An HTTP client trusting only this CA.
    pub fn client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.issuer.pem().as_bytes()).unwrap();
        reqwest::Client::builder().tls_certs_only([ca]).build().unwrap()
    }
}
