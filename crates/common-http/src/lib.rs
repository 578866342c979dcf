//! HTTP plumbing every Gatehouse service shares, so each rule lives once:
//!
//! - [`error::ApiError`]: the one JSON error envelope `{"error", "hint"?}`;
//!   5xx bodies never carry internals, the cause goes to the log;
//! - [`json::StrictJson`]: JSON bodies only (415), size-capped (413), unknown,
//!   duplicate or mistyped fields refused with a useful 400;
//! - [`request_id`]: keep a well-formed incoming `X-Request-ID`, else mint one,
//!   and open one tracing span per request carrying it;
//! - [`metrics`]: per-service Prometheus registries, request counts and
//!   latencies by route, `GET /metrics` for allowed networks;
//! - [`openapi`]: the OpenAPI schema of the error envelope, for every
//!   service's API description;
//! - [`serve`]: serve a router until a cancellation token fires, finishing the
//!   requests in flight (graceful shutdown), over plain HTTP or HTTPS;
//! - [`tls`]: the server certificate (reloaded when its files change) and
//!   the trust roots of TLS clients;
//! - [`client`]: the pooled `http://`/`https://` client of calls between
//!   Gatehouse processes;
//! - [`notification`]: the kinds of security notification, shared by the
//!   auth service that sends them and the notification service.

pub mod chunked;
pub mod client;
pub mod client_ip;
pub mod cookies;
pub mod error;
pub mod http1;
pub mod json;
pub mod metrics;
pub mod notification;
pub mod openapi;
pub mod request_id;
pub mod serve;
pub mod tls;
pub mod write_batching;

pub use error::ApiError;
pub use json::StrictJson;
pub use request_id::RequestId;
