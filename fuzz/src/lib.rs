//! Fixtures shared by the fuzz targets in `fuzz_targets/`.
//!
//! Keys: every key here exists only for fuzzing and is not secret.
//! - HS256: a fixed secret ([`HS256_SECRET`]);
//! - EdDSA: a fixed Ed25519 seed ([`ED25519_SEED`]), wrapped as the PKCS#8 v1
//!   PEM that `tokens::SigningKey::from_pem` reads;
//! - RS256: only the public half, `fixtures/rs256.jwks.json`, written by
//!   `examples/make_seeds.rs` together with the RS256 seed tokens (the private
//!   half is thrown away), so the RSA verification path is reached with real
//!   tokens without a private key in the repository.
//!
//! Because the keys are fixed, seed tokens signed by `make_seeds` stay valid
//! (they expire in 2125) and the fuzzer starts from tokens that pass every
//! check, then mutates them.
//!
//! Input framing: most targets take several strings; [`fields`] splits the
//! input on NUL bytes, so seeds are plain text files with `\0` separators.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use tokens::keys::{VerifyingKey, VerifyingKeys};
use tokens::{AccessTokenVerifier, Algorithm, Secret, SigningKey};

/// The issuer and audience every verifier here expects (the gateway's defaults).
pub const ISS: &str = "gatehouse";
pub const AUD: &str = "gatehouse-api";

/// The leeway the gateway uses.
pub const LEEWAY_SECS: u64 = 30;

/// Fuzzing-only HS256 secret (≥ 32 bytes, as `tokens::Secret` requires).
pub const HS256_SECRET: &str = "gatehouse-fuzz-hs256-secret-not-used-anywhere-else";
/// Fuzzing-only CSRF, refresh-token and gateway secrets.
pub const CSRF_SECRET: &str = "gatehouse-fuzz-csrf-secret-not-used-anywhere-else";
pub const REFRESH_SECRET: &str = "gatehouse-fuzz-refresh-secret-not-used-anywhere";
pub const GATEWAY_SECRET: &str = "gatehouse-fuzz-gateway-secret-not-used-anywhere";
pub const GATEWAY_SECRET_OLD: &str = "gatehouse-fuzz-previous-gateway-secret-unused";

/// Fuzzing-only Ed25519 private key seed.
pub const ED25519_SEED: [u8; 32] = *b"gatehouse fuzz ed25519 seed 0001";

/// The RS256 public key the verifier trusts (see the module docs).
pub const RS256_JWKS: &str = include_str!("../fixtures/rs256.jwks.json");

/// A token lifetime long enough for committed seed tokens to stay valid: 100 years.
pub const SEED_TTL_SECS: i64 = 100 * 365 * 24 * 3600;

/// A secret from one of the constants above.
pub fn secret(s: &str) -> Secret {
    Secret::parse(s).expect("fixture secrets are valid")
}

/// The fixed HS256 signing key.
pub fn hs256_key() -> &'static Arc<SigningKey> {
    static KEY: OnceLock<Arc<SigningKey>> = OnceLock::new();
    KEY.get_or_init(|| Arc::new(SigningKey::hs256(&secret(HS256_SECRET)).expect("HS256 key")))
}

/// The fixed Ed25519 signing key.
pub fn eddsa_key() -> &'static Arc<SigningKey> {
    static KEY: OnceLock<Arc<SigningKey>> = OnceLock::new();
    KEY.get_or_init(|| Arc::new(SigningKey::from_pem(Algorithm::EdDsa, ed25519_pem().as_bytes()).expect("Ed25519 key")))
}

/// [`ED25519_SEED`] as a PKCS#8 v1 PEM (RFC 8410 §7).
pub fn ed25519_pem() -> String {
    let mut der = hex::decode("302e020100300506032b657004220420").expect("static hex");
    der.extend_from_slice(&ED25519_SEED);
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
}

/// The RS256 verifying key(s) from [`RS256_JWKS`].
pub fn rs256_keys() -> Vec<VerifyingKey> {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(RS256_JWKS).expect("fixtures/rs256.jwks.json");
    set.keys.iter().filter_map(VerifyingKey::from_jwk).collect()
}

/// The verifier the access-token targets fuzz: HS256, EdDSA and RS256 keys,
/// with the gateway's issuer, audience and leeway.
pub fn verifier() -> &'static AccessTokenVerifier {
    static VERIFIER: OnceLock<AccessTokenVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let mut keys = vec![hs256_key().verifying_key(), eddsa_key().verifying_key()];
        keys.extend(rs256_keys());
        assert_eq!(keys.len(), 3, "three fixture keys");
        AccessTokenVerifier::new(VerifyingKeys::new(keys), ISS, AUD, LEEWAY_SECS)
    })
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Splits `data` on NUL bytes into exactly `N` fields (missing ones empty;
/// the last field keeps any further NULs).
pub fn fields<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut out = [&data[..0]; N];
    let mut rest = data;
    for (i, slot) in out.iter_mut().enumerate() {
        if i + 1 == N {
            *slot = rest;
            break;
        }
        match rest.iter().position(|&b| b == 0) {
            Some(p) => {
                *slot = &rest[..p];
                rest = &rest[p + 1..];
            }
            None => {
                *slot = rest;
                rest = &rest[rest.len()..];
            }
        }
    }
    out
}

/// `fields`, each as (lossy) UTF-8.
pub fn str_fields<const N: usize>(data: &[u8]) -> [String; N] {
    fields::<N>(data).map(|f| String::from_utf8_lossy(f).into_owned())
}

/// Base64url without padding, as JOSE uses it.
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The default route table (the seed's four routes).
pub fn default_routes() -> &'static gateway::routes::RouteTable {
    static ROUTES: OnceLock<gateway::routes::RouteTable> = OnceLock::new();
    ROUTES.get_or_init(|| {
        gateway::routes::RouteTable::defaults(&gateway::routes::ServiceUrls {
            auth: "http://127.0.0.1:8081".into(),
            users: "http://127.0.0.1:8082".into(),
            payments: "http://127.0.0.1:8083".into(),
            notifications: "http://127.0.0.1:8084".into(),
        })
        .expect("default routes")
    })
}

/// RFC 9110 §7.6.1's hop-by-hop fields and their pre-standard kin, as the
/// targets' own statement of the rule (not the gateway's list, so a mistake
/// there is caught here).
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];
