//! The OpenAPI side of [`ApiError`](crate::ApiError): the schema of its
//! body, so every service documents its failures with the one envelope.
//!
//! Each service describes its routes (`#[utoipa::path]`) and exposes its own
//! document; the `gatehouse` binary composes the public one. The schema is
//! named `Error` in every service, so the composed document holds it once.

use utoipa::ToSchema;

/// Every error: `{"error": …, "hint"?: …}` (API.md). Some errors carry more
/// fields (a 404 from the gateway adds `path`).
#[derive(ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong, e.g. `Invalid credentials`.
    pub error: String,
    /// What to do about it, when there is something to say.
    #[schema(nullable = false)]
    pub hint: Option<String>,
}
