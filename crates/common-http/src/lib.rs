//! HTTP plumbing every Gatehouse service shares, so each rule lives once:
//!
//! - [`error::ApiError`]: the one JSON error envelope `{"error", "hint"?}`;
//!   5xx bodies never carry internals, the cause goes to the log;
//! - [`json::StrictJson`]: JSON bodies only (415), size-capped (413), unknown,
//!   duplicate or mistyped fields refused with a useful 400;
//! - [`request_id`]: keep a well-formed incoming `X-Request-ID`, else mint one,
//!   and open one tracing span per request carrying it;
//! - [`serve`]: serve a router until a cancellation token fires, finishing the
//!   requests in flight (graceful shutdown).

pub mod client_ip;
pub mod cookies;
pub mod error;
pub mod json;
pub mod request_id;
pub mod serve;

pub use error::ApiError;
pub use json::StrictJson;
pub use request_id::RequestId;
