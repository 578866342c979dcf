//! Cost of the token primitives on the request path: access-token issue and
//! verify per algorithm, CSRF and refresh-token checks. Prints figures only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use tokens::{
    AccessTokenIssuer, AccessTokenVerifier, Algorithm, CsrfKey, RefreshKey, Secret, SigningKey, VerifyingKeys,
};

fn key(alg: Algorithm) -> Arc<SigningKey> {
    Arc::new(match alg {
        Algorithm::Hs256 => SigningKey::hs256(&Secret::generate().unwrap()).unwrap(),
        _ => SigningKey::from_pem(alg, SigningKey::generate_pem(alg).unwrap().as_bytes()).unwrap(),
    })
}

fn access_tokens(c: &mut Criterion) {
    for alg in [Algorithm::Hs256, Algorithm::Rs256, Algorithm::EdDsa] {
        let k = key(alg);
        let issuer = AccessTokenIssuer::new(Arc::clone(&k), "gatehouse", "gatehouse", 900);
        let verifier = AccessTokenVerifier::new(VerifyingKeys::new([k.verifying_key()]), "gatehouse", "gatehouse", 30);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let (token, _) = issuer.issue("user", "user@example.com", "session", now).unwrap();
        c.bench_function(&format!("access token issue {}", alg.as_str()), |b| {
            b.iter(|| issuer.issue("user", "user@example.com", "session", now).unwrap())
        });
        c.bench_function(&format!("access token verify {}", alg.as_str()), |b| {
            b.iter(|| verifier.verify(&token).unwrap())
        });
    }
}

fn session_tokens(c: &mut Criterion) {
    let csrf = CsrfKey::new(Secret::generate().unwrap());
    let token = csrf.mint("session").unwrap();
    c.bench_function("csrf verify", |b| b.iter(|| csrf.verify("session", &token)));
    let refresh = RefreshKey::new(Secret::generate().unwrap());
    let rt = refresh.mint(uuid::Uuid::now_v7(), 42);
    c.bench_function("refresh token parse", |b| b.iter(|| refresh.parse(&rt).unwrap()));
}

criterion_group!(benches, access_tokens, session_tokens);
criterion_main!(benches);
