//! Gatehouse's security primitives, shared by the auth service, the gateway and
//! the downstream guard.
//!
//! Nothing here knows about HTTP: every function takes bytes, strings and an
//! explicit `now`, so each rule can be unit-tested on its own and the same code
//! decides in every service. The pieces:
//!
//! - [`keys`]: signing keys for access tokens (HS256, RS256, EdDSA), loaded from
//!   PEM or generated, and the public JWKS built from them;
//! - [`access`]: the access-token claims, issuing, and a verifier that binds the
//!   algorithm to the key and checks `typ`, `iss`, `aud`, `exp`, `nbf`;
//! - [`refresh`]: opaque refresh tokens made of a session id, a rotation counter
//!   and an HMAC tag, so nothing secret is stored;
//! - [`csrf`]: signed double-submit tokens bound to a session id;
//! - [`secret`]: shared secrets with the strength rules of production;
//! - [`sealed`]: AEAD encryption at rest, with key ids for rotation.

pub mod access;
pub mod assertion;
pub mod bearer;
pub mod csrf;
pub mod keyring;
pub mod keys;
mod mac;
pub mod random;
pub mod refresh;
pub mod revocation;
pub mod sealed;
pub mod secret;

pub use access::{AccessClaims, AccessTokenIssuer, AccessTokenVerifier, VerifyError};
pub use bearer::{BearerError, parse_bearer};
pub use csrf::CsrfKey;
pub use keys::{Algorithm, KeyError, SigningKey, VerifyingKeys};
pub use refresh::{RefreshKey, RefreshToken};
pub use secret::{Secret, SecretError, SecretFileError};
