//! Access tokens: short-lived JWTs (RFC 9068 profile).
//!
//! Header `typ: at+jwt` and `kid`; claims `iss aud sub sid jti iat nbf exp email`.
//! The `typ` and the required claim set are what keep any other kind of token
//! (the seed accepted refresh tokens as access tokens, SEED-FLAWS F2) from
//! passing as an access token (RFC 8725 §3.11). jsonwebtoken checks neither
//! `nbf` nor `typ` by default: both are switched on here.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Header, Validation, decode, decode_header, encode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::keys::{SigningKey, VerifyingKeys};
use crate::random::random_bytes;

/// The `typ` header of every access token.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The most clock skew a verifier tolerates on `exp` and `nbf`.
pub const MAX_LEEWAY_SECS: u64 = 30;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The session (refresh-token family) this token was issued for; revoking
    /// the session revokes its access tokens.
    pub sid: String,
    pub jti: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub email: String,
}

/// Signs access tokens with the active key.
#[derive(Clone, Debug)]
pub struct AccessTokenIssuer {
    key: Arc<SigningKey>,
    issuer: String,
    audience: String,
    ttl_secs: i64,
}

/// Signing failed (a broken key; never caused by a client).
#[derive(Debug, thiserror::Error)]
#[error("could not sign the access token: {0}")]
pub struct IssueError(String);

impl AccessTokenIssuer {
    pub fn new(key: Arc<SigningKey>, issuer: impl Into<String>, audience: impl Into<String>, ttl_secs: i64) -> Self {
        Self { key, issuer: issuer.into(), audience: audience.into(), ttl_secs }
    }

    /// The token lifetime, the `expires_in` of token responses.
    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Issues a token for `user_id` in session `session_id`, valid from `now` (unix seconds).
    ///
    /// # Errors
    /// [`IssueError`] when signing fails.
    pub fn issue(
        &self,
        user_id: &str,
        email: &str,
        session_id: &str,
        now: i64,
    ) -> Result<(String, AccessClaims), IssueError> {
        let jti = Uuid::from_bytes(random_bytes::<16>().map_err(|e| IssueError(e.to_string()))?).simple().to_string();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_owned(),
            sid: session_id.to_owned(),
            jti,
            iat: now,
            nbf: now,
            exp: now + self.ttl_secs,
            email: email.to_owned(),
        };
        let mut header = Header::new(self.key.algorithm().jose());
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(self.key.kid().to_owned());
        let token = encode(&header, &claims, self.key.encoding()).map_err(|e| IssueError(e.to_string()))?;
        Ok((token, claims))
    }
}

/// Why a token was refused. The variants are for logs and metrics; clients get
/// one generic message whatever the reason (SEED-FLAWS F16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed token")]
    Malformed,
    #[error("wrong or missing typ header")]
    WrongType,
    #[error("missing kid header")]
    MissingKid,
    #[error("unknown kid")]
    UnknownKid,
    #[error("algorithm does not match the key")]
    WrongAlgorithm,
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("a required claim is missing")]
    MissingClaim,
}

impl VerifyError {
    /// A short stable label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::WrongType => "wrong_typ",
            Self::MissingKid => "missing_kid",
            Self::UnknownKid => "unknown_kid",
            Self::WrongAlgorithm => "wrong_alg",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_iss",
            Self::WrongAudience => "wrong_aud",
            Self::MissingClaim => "missing_claim",
        }
    }
}

/// Verifies access tokens against a set of trusted keys.
#[derive(Clone)]
pub struct AccessTokenVerifier {
    keys: VerifyingKeys,
    issuer: String,
    audience: String,
    leeway_secs: u64,
}

impl AccessTokenVerifier {
    /// `leeway_secs` is capped at [`MAX_LEEWAY_SECS`].
    pub fn new(keys: VerifyingKeys, issuer: impl Into<String>, audience: impl Into<String>, leeway_secs: u64) -> Self {
        Self { keys, issuer: issuer.into(), audience: audience.into(), leeway_secs: leeway_secs.min(MAX_LEEWAY_SECS) }
    }

    pub fn keys(&self) -> &VerifyingKeys {
        &self.keys
    }

    /// Verifies `token` against the system clock.
    ///
    /// # Errors
    /// [`VerifyError`] naming the first rule the token breaks.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        let header = decode_header(token).map_err(|_| VerifyError::Malformed)?;
        match header.typ.as_deref() {
            Some(t) if t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt") => {}
            _ => return Err(VerifyError::WrongType),
        }
        let kid = header.kid.as_deref().ok_or(VerifyError::MissingKid)?;
        let key = self.keys.get(kid).ok_or(VerifyError::UnknownKid)?;
        // The algorithm comes from the key; the header's `alg` must agree with it.
        let mut validation = Validation::new(key.algorithm().jose());
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        let data = decode::<AccessClaims>(token, key.decoding(), &validation).map_err(map_error)?;
        if !header_and_claims_are_utf8(token) {
            return Err(VerifyError::Malformed);
        }
        Ok(data.claims)
    }
}

/// Whether the header and the claims of `token` (already decoded and
/// verified) are UTF-8, as RFC 7519 §7.2 requires of both. `decode` alone
/// does not ensure it: serde_json checks the strings it keeps, not those
/// it skips, so a member the claims type does not name (or the header type)
/// could hold bytes that are not UTF-8 and still pass. Only a holder of a
/// signing key could make such a token (found by the `access_token_signed`
/// fuzz target), but a token our issuer never makes is refused, not read.
/// Checked after the signature, so unsigned input costs no second decode.
fn header_and_claims_are_utf8(token: &str) -> bool {
    let mut segments = token.split('.');
    let (Some(header), Some(claims)) = (segments.next(), segments.next()) else {
        return false;
    };
    [header, claims]
        .into_iter()
        .all(|segment| URL_SAFE_NO_PAD.decode(segment).is_ok_and(|bytes| std::str::from_utf8(&bytes).is_ok()))
}

fn map_error(e: jsonwebtoken::errors::Error) -> VerifyError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => VerifyError::BadSignature,
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => VerifyError::WrongAlgorithm,
        K::ExpiredSignature => VerifyError::Expired,
        K::ImmatureSignature => VerifyError::NotYetValid,
        K::InvalidIssuer => VerifyError::WrongIssuer,
        K::InvalidAudience => VerifyError::WrongAudience,
        K::MissingRequiredClaim(_) => VerifyError::MissingClaim,
        _ => VerifyError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Algorithm, b64url};
    use crate::secret::Secret;

    const ISS: &str = "gatehouse";
    const AUD: &str = "gatehouse-api";

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn key(alg: Algorithm) -> Arc<SigningKey> {
        Arc::new(match alg {
            Algorithm::Hs256 => SigningKey::hs256(&Secret::parse(&"s".repeat(48)).unwrap()).unwrap(),
            _ => SigningKey::from_pem(alg, SigningKey::generate_pem(alg).unwrap().as_bytes()).unwrap(),
        })
    }

    fn pair(alg: Algorithm) -> (AccessTokenIssuer, AccessTokenVerifier) {
        let k = key(alg);
        let verifier = AccessTokenVerifier::new(VerifyingKeys::new([k.verifying_key()]), ISS, AUD, 30);
        (AccessTokenIssuer::new(k, ISS, AUD, 900), verifier)
    }

    /// Signs arbitrary header and claims JSON with `key`, bypassing the issuer's rules.
    fn forge(key: &SigningKey, header: serde_json::Value, claims: serde_json::Value) -> String {
        let mut h: Header = serde_json::from_value(header).unwrap();
        h.alg = key.algorithm().jose();
        encode(&h, &claims, key.encoding()).unwrap()
    }

    fn claims_json(exp: i64, nbf: i64) -> serde_json::Value {
        serde_json::json!({"iss": ISS, "aud": AUD, "sub": "u1", "sid": "s1", "jti": "j", "iat": nbf, "nbf": nbf, "exp": exp, "email": "a@b.co"})
    }

    #[test]
    fn issued_tokens_verify_for_every_algorithm() {
        for alg in [Algorithm::Hs256, Algorithm::Rs256, Algorithm::EdDsa] {
            let (issuer, verifier) = pair(alg);
            let (token, claims) = issuer.issue("u1", "a@b.co", "s1", now()).unwrap();
            assert_eq!(verifier.verify(&token), Ok(claims), "{alg:?}");
        }
    }

    #[test]
    fn a_signed_token_whose_header_or_claims_are_not_utf8_is_refused() {
        // Invalid UTF-8 (0xAE) in the string of a member neither the header
        // nor the claims type names: serde_json skips it unchecked.
        let (issuer, verifier) = pair(Algorithm::Hs256);
        let kid = issuer.signing_key().kid().to_owned();
        let claims = claims_json(now() + 600, now()).to_string();
        let header = format!(r#"{{"alg":"HS256","typ":"at+jwt","kid":"{kid}"}}"#);
        let not_utf8 = |json: &str| {
            let mut bytes = json.as_bytes().to_vec();
            bytes.splice(1..1, b"\"x\":\"evi\xAEl\",".iter().copied());
            bytes
        };
        let sign = |header: &[u8], claims: &[u8]| {
            let input = format!("{}.{}", b64url(header), b64url(claims));
            let signature = jsonwebtoken::crypto::sign(
                input.as_bytes(),
                issuer.signing_key().encoding(),
                jsonwebtoken::Algorithm::HS256,
            )
            .unwrap();
            format!("{input}.{signature}")
        };
        assert!(verifier.verify(&sign(header.as_bytes(), claims.as_bytes())).is_ok(), "the control token");
        assert_eq!(verifier.verify(&sign(header.as_bytes(), &not_utf8(&claims))), Err(VerifyError::Malformed));
        assert_eq!(verifier.verify(&sign(&not_utf8(&header), claims.as_bytes())), Err(VerifyError::Malformed));
    }

    #[test]
    fn alg_none_is_refused() {
        let (issuer, verifier) = pair(Algorithm::Rs256);
        let kid = issuer.signing_key().kid().to_owned();
        let header = b64url(format!(r#"{{"alg":"none","typ":"at+jwt","kid":"{kid}"}}"#).as_bytes());
        let body = b64url(claims_json(now() + 600, now()).to_string().as_bytes());
        for token in [format!("{header}.{body}."), format!("{header}.{body}")] {
            assert!(verifier.verify(&token).is_err(), "{token}");
        }
    }

    #[test]
    fn hs256_signed_with_the_rsa_public_key_is_refused() {
        let (issuer, verifier) = pair(Algorithm::Rs256);
        let k = issuer.signing_key();
        // The attacker knows the public key (it is in the JWKS) and uses its bytes as an HMAC secret.
        let public = serde_json::to_vec(k.public_jwk().unwrap()).unwrap();
        let hs = jsonwebtoken::EncodingKey::from_secret(&public).unwrap();
        let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        h.kid = Some(k.kid().to_owned());
        let token = encode(&h, &claims_json(now() + 600, now()), &hs).unwrap();
        assert_eq!(verifier.verify(&token), Err(VerifyError::WrongAlgorithm));
    }

    #[test]
    fn a_token_with_an_unknown_or_missing_kid_is_refused() {
        let (issuer, _) = pair(Algorithm::EdDsa);
        let (_, other_verifier) = pair(Algorithm::EdDsa);
        let (token, _) = issuer.issue("u1", "a@b.co", "s1", now()).unwrap();
        assert_eq!(other_verifier.verify(&token), Err(VerifyError::UnknownKid));
        let no_kid = forge(
            issuer.signing_key(),
            serde_json::json!({"alg":"EdDSA","typ":"at+jwt"}),
            claims_json(now() + 60, now()),
        );
        assert_eq!(other_verifier.verify(&no_kid), Err(VerifyError::MissingKid));
    }

    #[test]
    fn expired_tokens_are_refused_beyond_the_leeway() {
        let (issuer, verifier) = pair(Algorithm::Hs256);
        let kid = issuer.signing_key().kid().to_owned();
        let h = serde_json::json!({"alg":"HS256","typ":"at+jwt","kid": kid});
        let t = now();
        let expired = forge(issuer.signing_key(), h.clone(), claims_json(t - 31, t - 900));
        assert_eq!(verifier.verify(&expired), Err(VerifyError::Expired));
        let within_leeway = forge(issuer.signing_key(), h, claims_json(t - 5, t - 900));
        assert!(verifier.verify(&within_leeway).is_ok());
    }

    #[test]
    fn tokens_not_yet_valid_are_refused() {
        let (issuer, verifier) = pair(Algorithm::Hs256);
        let kid = issuer.signing_key().kid().to_owned();
        let t = now();
        let token = forge(
            issuer.signing_key(),
            serde_json::json!({"alg":"HS256","typ":"at+jwt","kid": kid}),
            claims_json(t + 900, t + 120),
        );
        assert_eq!(verifier.verify(&token), Err(VerifyError::NotYetValid));
    }

    #[test]
    fn wrong_issuer_audience_or_type_is_refused() {
        let (issuer, verifier) = pair(Algorithm::EdDsa);
        let k = issuer.signing_key();
        let h = serde_json::json!({"alg":"EdDSA","typ":"at+jwt","kid": k.kid()});
        let t = now();
        let mut c = claims_json(t + 600, t);
        c["iss"] = "evil".into();
        assert_eq!(verifier.verify(&forge(k, h.clone(), c)), Err(VerifyError::WrongIssuer));
        let mut c = claims_json(t + 600, t);
        c["aud"] = "other-api".into();
        assert_eq!(verifier.verify(&forge(k, h.clone(), c)), Err(VerifyError::WrongAudience));
        for typ in [serde_json::json!("JWT"), serde_json::json!("rt+jwt"), serde_json::Value::Null] {
            let mut h2 = h.clone();
            h2["typ"] = typ.clone();
            assert_eq!(verifier.verify(&forge(k, h2, claims_json(t + 600, t))), Err(VerifyError::WrongType), "{typ}");
        }
        let mut no_exp = claims_json(t + 600, t);
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(verifier.verify(&forge(k, h, no_exp)).is_err());
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        for alg in [Algorithm::Hs256, Algorithm::Rs256, Algorithm::EdDsa] {
            let (issuer, verifier) = pair(alg);
            let (token, _) = issuer.issue("u1", "a@b.co", "s1", now()).unwrap();
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            let mut c = claims_json(now() + 600, now());
            c["sub"] = "admin".into();
            parts[1] = b64url(c.to_string().as_bytes());
            assert_eq!(verifier.verify(&parts.join(".")), Err(VerifyError::BadSignature), "{alg:?}");
        }
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let (_, verifier) = pair(Algorithm::Rs256);
        for junk in ["", ".", "..", "a.b.c", "eyJ.eyJ.sig", "\u{0}", &"a".repeat(10_000)] {
            assert!(verifier.verify(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn leeway_is_capped() {
        let (_, v) = pair(Algorithm::Hs256);
        let v = AccessTokenVerifier::new(v.keys().clone(), ISS, AUD, 3600);
        assert_eq!(v.leeway_secs, MAX_LEEWAY_SECS);
    }
}
