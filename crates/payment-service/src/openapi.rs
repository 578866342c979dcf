//! The payment service's OpenAPI description: the response envelopes the
//! handlers build around [`Payment`] and the document's frame. The paths
//! come from the handlers' `#[utoipa::path]` annotations, gathered by the
//! router itself (`api_routes` in the crate root).

use utoipa::{OpenApi, ToSchema};

use crate::store::{Payment, PaymentStatus};

/// The frame of the service's document; the paths are merged in.
#[derive(OpenApi)]
#[openapi(
    info(title = "Gatehouse payment service", description = "The caller's payments: idempotent creation, listing, refunds."),
    components(schemas(common_http::openapi::ErrorBody, Payment, PaymentStatus)),
    tags((name = "payments", description = "The caller's payments"))
)]
pub struct PaymentApi;

/// `{"payment": …}`: creation, replay, lookup and refund.
#[derive(ToSchema)]
pub struct PaymentResponse {
    pub payment: Payment,
}

/// `GET /payments`.
#[derive(ToSchema)]
pub struct PaymentPage {
    /// Newest first.
    pub payments: Vec<Payment>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}
