//! Access-token signing keys and the JWKS.
//!
//! The verifier takes the algorithm from the key it holds for the token's
//! `kid`, never from the token (RFC 8725 §3.1): an RS256 key only ever verifies
//! RS256, so `alg: none` and HS256-signed-with-the-RSA-public-key tokens fail.
//! HS256 keys are symmetric and never appear in the JWKS (publishing them would
//! publish the secret).
//!
//! Key ids for RS256 and EdDSA are RFC 7638 JWK thumbprints, so the same PEM
//! always gets the same `kid` in every process that loads it.

use std::collections::HashMap;
use std::path::Path;

use aws_lc_rs::encoding::AsDer;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::Mac;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{DecodingKey, EncodingKey};

use crate::mac::hmac_sha256;
use crate::secret::Secret;

/// The signing algorithms Gatehouse accepts (`JWT_ALGORITHM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Hs256,
    Rs256,
    EdDsa,
}

impl Algorithm {
    /// Parses the `JWT_ALGORITHM` spelling (`HS256`, `RS256`, `EdDSA`; case-insensitive).
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_uppercase().as_str() {
            "HS256" => Some(Self::Hs256),
            "RS256" => Some(Self::Rs256),
            "EDDSA" | "ED25519" => Some(Self::EdDsa),
            _ => None,
        }
    }

    /// The JOSE name of the algorithm.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// Whether keys of this algorithm are asymmetric (and so published in the JWKS).
    pub fn is_asymmetric(self) -> bool {
        !matches!(self, Self::Hs256)
    }

    pub(crate) fn jose(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Hs256 => jsonwebtoken::Algorithm::HS256,
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }

    /// The file name a generated development key of this algorithm is kept under.
    pub fn key_file_name(self) -> &'static str {
        match self {
            Self::Hs256 => "jwt-hs256.secret",
            Self::Rs256 => "jwt-rs256.pem",
            Self::EdDsa => "jwt-eddsa.pem",
        }
    }
}

/// Why a key could not be loaded, generated or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the key is not a valid {0} private key in PEM (PKCS#8) form")]
    InvalidPem(&'static str),
    #[error("key generation failed")]
    Generation,
    #[error("could not read or write the key file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not derive the public key: {0}")]
    Public(String),
}

/// A private key that signs access tokens, with its `kid` and algorithm.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The public JWK (asymmetric keys only).
    public_jwk: Option<Jwk>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// An HS256 key from a shared secret. Its `kid` is derived from the secret
    /// by a one-way MAC, so every process holding the secret agrees on it.
    ///
    /// # Errors
    /// [`KeyError::InvalidPem`] is never returned; an empty secret gives `Public`.
    pub fn hs256(secret: &Secret) -> Result<Self, KeyError> {
        let encoding = EncodingKey::from_secret(secret.expose()).map_err(|e| KeyError::Public(e.to_string()))?;
        let decoding = DecodingKey::from_secret(secret.expose()).map_err(|e| KeyError::Public(e.to_string()))?;
        let mac = hmac_sha256(secret.expose(), &[b"gatehouse hs256 key id"]);
        let kid = format!("hs-{}", hex::encode(&mac.finalize().into_bytes()[..8]));
        Ok(Self { kid, algorithm: Algorithm::Hs256, encoding, decoding, public_jwk: None })
    }

    /// An RS256 or EdDSA key from a PKCS#8 PEM private key.
    ///
    /// # Errors
    /// [`KeyError::InvalidPem`] when the PEM is not a key of that algorithm.
    pub fn from_pem(algorithm: Algorithm, pem: &[u8]) -> Result<Self, KeyError> {
        let encoding = match algorithm {
            Algorithm::Rs256 => EncodingKey::from_rsa_pem(pem).map_err(|_| KeyError::InvalidPem("RSA"))?,
            Algorithm::EdDsa => EncodingKey::from_ed_pem(pem).map_err(|_| KeyError::InvalidPem("Ed25519"))?,
            Algorithm::Hs256 => return Err(KeyError::InvalidPem("HS256 (use a secret, not a PEM)")),
        };
        let mut jwk =
            Jwk::from_encoding_key(&encoding, algorithm.jose()).map_err(|e| KeyError::Public(e.to_string()))?;
        let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(|e| KeyError::Public(e.to_string()))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| KeyError::Public(e.to_string()))?;
        Ok(Self { kid, algorithm, encoding, decoding, public_jwk: Some(jwk) })
    }

    /// Generates a new private key of an asymmetric algorithm, as PKCS#8 PEM.
    ///
    /// # Errors
    /// [`KeyError::Generation`] if the crypto library fails, or for HS256.
    pub fn generate_pem(algorithm: Algorithm) -> Result<String, KeyError> {
        let der: Vec<u8> = match algorithm {
            Algorithm::Rs256 => {
                let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(|_| KeyError::Generation)?;
                let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> = pair.as_der().map_err(|_| KeyError::Generation)?;
                der.as_ref().to_vec()
            }
            Algorithm::EdDsa => {
                // PKCS#8 v1: jsonwebtoken cannot export a v2 Ed25519 key as a JWK.
                let pair = aws_lc_rs::signature::Ed25519KeyPair::generate().map_err(|_| KeyError::Generation)?;
                let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> = pair.as_der().map_err(|_| KeyError::Generation)?;
                der.as_ref().to_vec()
            }
            Algorithm::Hs256 => return Err(KeyError::Generation),
        };
        Ok(pem_encode("PRIVATE KEY", &der))
    }

    /// Loads the key at `path`, generating and writing it first (mode 0600)
    /// when the file does not exist and `may_generate` is set.
    ///
    /// # Errors
    /// I/O errors naming the path, or an invalid key.
    pub fn load_or_generate(algorithm: Algorithm, path: &Path, may_generate: bool) -> Result<Self, KeyError> {
        if !path.exists() && may_generate {
            let pem = Self::generate_pem(algorithm)?;
            write_private_file(path, pem.as_bytes())?;
        }
        let pem = std::fs::read(path).map_err(|source| KeyError::Io { path: path.display().to_string(), source })?;
        Self::from_pem(algorithm, &pem)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }

    /// The public half, for a [`VerifyingKeys`] set.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey { kid: self.kid.clone(), algorithm: self.algorithm, decoding: self.decoding.clone() }
    }

    /// The public JWK, `None` for HS256.
    pub fn public_jwk(&self) -> Option<&Jwk> {
        self.public_jwk.as_ref()
    }
}

/// A key that verifies tokens of exactly one algorithm.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    algorithm: Algorithm,
    decoding: DecodingKey,
}

impl VerifyingKey {
    /// A verifying key from a JWK as published in a JWKS. Only RSA and Ed25519
    /// signature keys with a `kid` are accepted; anything else is skipped by
    /// [`VerifyingKeys::from_jwks`].
    pub fn from_jwk(jwk: &Jwk) -> Option<Self> {
        use jsonwebtoken::jwk::AlgorithmParameters;
        let kid = jwk.common.key_id.clone()?;
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::Rs256,
            AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDsa,
            _ => return None,
        };
        let decoding = DecodingKey::from_jwk(jwk).ok()?;
        Some(Self { kid, algorithm, decoding })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

/// The keys a verifier trusts, by `kid`.
#[derive(Clone, Default)]
pub struct VerifyingKeys {
    by_kid: HashMap<String, VerifyingKey>,
}

impl VerifyingKeys {
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        Self { by_kid: keys.into_iter().map(|k| (k.kid.clone(), k)).collect() }
    }

    /// The usable signature keys of a JWKS document.
    pub fn from_jwks(set: &JwkSet) -> Self {
        Self::new(set.keys.iter().filter_map(VerifyingKey::from_jwk))
    }

    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.by_kid.get(kid)
    }

    pub fn len(&self) -> usize {
        self.by_kid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty()
    }
}

/// The JWKS document publishing the public halves of `keys` (HS256 keys are skipped).
pub fn jwks<'a>(keys: impl IntoIterator<Item = &'a SigningKey>) -> JwkSet {
    JwkSet { keys: keys.into_iter().filter_map(|k| k.public_jwk().cloned()).collect() }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes a file only its owner can read (keys and secrets under the data
/// dir), unless it already exists.
///
/// Several processes may start at once on one data dir (`gatehouse up` beside
/// a `gatehouse migrate`, replicas sharing a volume) and each may try to
/// generate the same missing key. So the file appears whole or not at all:
/// the contents go to a private temporary file first, which is then linked
/// to `path` — an atomic step that fails if `path` exists. The loser of a race
/// keeps the winner's file (callers read `path` back afterwards), and no
/// reader can ever see a half-written key.
///
/// # Errors
/// [`KeyError::Io`] naming the path.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    use std::io::Write as _;
    let io = |source| KeyError::Io { path: path.display().to_string(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    // The temporary name is ours alone: remove it whatever happened.
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(io(source)),
    }
}

/// Base64url without padding, as JOSE uses it.
pub(crate) fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_generation_agrees_on_one_complete_key() {
        // Many processes starting at once on one data dir: every one gets the
        // same key, and none sees a missing or half-written file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("jwt.pem");
        let kids: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| SigningKey::load_or_generate(Algorithm::EdDsa, &path, true).unwrap().kid().to_owned())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(kids.windows(2).all(|w| w[0] == w[1]), "{kids:?}");
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("jwt.pem")], "temporary files were left behind");
    }

    #[test]
    fn generated_keys_load_and_publish_only_public_parts() {
        for alg in [Algorithm::Rs256, Algorithm::EdDsa] {
            let pem = SigningKey::generate_pem(alg).unwrap();
            let key = SigningKey::from_pem(alg, pem.as_bytes()).unwrap();
            let set = jwks([&key]);
            let json = serde_json::to_string(&set).unwrap();
            assert_eq!(set.keys.len(), 1, "{alg:?}");
            assert!(json.contains(key.kid()), "{alg:?}: kid published");
            assert!(!json.contains("\"d\""), "{alg:?}: private exponent must not be published");
            // The same PEM gives the same kid.
            assert_eq!(SigningKey::from_pem(alg, pem.as_bytes()).unwrap().kid(), key.kid());
            assert_eq!(VerifyingKeys::from_jwks(&set).len(), 1);
        }
    }

    #[test]
    fn hs256_keys_are_never_published() {
        let key = SigningKey::hs256(&Secret::parse(&"k".repeat(40)).unwrap()).unwrap();
        assert!(jwks([&key]).keys.is_empty());
    }

    #[test]
    fn a_pem_of_the_wrong_algorithm_is_refused() {
        let pem = SigningKey::generate_pem(Algorithm::EdDsa).unwrap();
        assert!(SigningKey::from_pem(Algorithm::Rs256, pem.as_bytes()).is_err());
    }

    #[test]
    fn load_or_generate_persists_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join(Algorithm::EdDsa.key_file_name());
        assert!(SigningKey::load_or_generate(Algorithm::EdDsa, &path, false).is_err());
        let first = SigningKey::load_or_generate(Algorithm::EdDsa, &path, true).unwrap();
        let again = SigningKey::load_or_generate(Algorithm::EdDsa, &path, true).unwrap();
        assert_eq!(first.kid(), again.kid());
    }
}
