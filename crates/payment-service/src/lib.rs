//! The Gatehouse payment service: the caller's payments, created
//! idempotently, decided by a simulated processor, listed, and refunded.
//!
//! Every route but `/health` and `/ready` sits behind the [`guard`]: no valid
//! gateway assertion, no handler. The caller is the asserted [`GatewayUser`]
//! and every query is filtered by that user's id, so another user's payment
//! is indistinguishable from one that does not exist (404 `Payment not
//! found`, also for an id that is not a UUID).
//!
//! # Routes
//!
//! | method, path | success | failures |
//! |---|---|---|
//! | `POST /payments` + `Idempotency-Key` | 201 `{"payment":…}`; a replay 200 with `Idempotent-Replayed: true` | 400 field message; 409 key reused with another request |
//! | `GET /payments?limit=&cursor=` | 200 `{"payments":[…],"next_cursor":…}` newest first | 400 `limit must be an integer from 1 to 100`, `Invalid cursor`, `Invalid query string` |
//! | `GET /payments/{id}` | 200 `{"payment":…}` | 404 `Payment not found` |
//! | `POST /payments/{id}/refund` | 200 `{"payment":…}` with status `refunded` | 404; 409 `Payment already refunded`; 409 `Only a succeeded payment can be refunded` |
//!
//! A payment is `{"id", "amount", "currency", "description", "status",
//! "decline_reason", "created_at", "refunded_at"}`: `id` a UUIDv7, `amount`
//! in minor units, `status` one of `succeeded`, `declined`, `refunded`,
//! `decline_reason` `null` or what the [`processor`] said, times in unix
//! seconds (as the auth service's session times) or `null`.
//!
//! # Decisions
//!
//! - **Idempotency** ([`request`], [`store`]): the key is scoped to the
//!   user (two users may use the same key) and kept as long as the payment,
//!   so it is never reusable. The same key with the same canonical request
//!   answers 200 with the payment *as it is now* (it may have been refunded
//!   since) and `Idempotent-Replayed: true`, so a client can tell its retry
//!   from the creation (201) without comparing bodies; with another request
//!   it is 409 `Idempotency key already used with a different request`.
//!   Concurrent requests with one key create one payment.
//! - **The processor is simulated** ([`processor`]) and deterministic:
//!   amounts whose minor units end in `02` are declined with `card_declined`,
//!   in `05` with `insufficient_funds`, every other amount succeeds.
//! - **Declines are recorded**: a declined payment is a payment (status
//!   `declined`, `decline_reason`), answered 201 like a success. A 402 would
//!   make a replay of a declined request look like a failure of the retry.
//! - **Refunds** are full and happen once. A second refund is 409 `Payment
//!   already refunded` rather than a silent success, so a client that
//!   believes it is refunding for the first time learns otherwise; a refund
//!   needs no idempotency key because it cannot happen twice anyway.
//! - **Listing** uses keyset pagination ([`cursor`]): `limit` defaults to 20;
//!   outside 1 to 100 it is refused (400) rather than clamped, so a client
//!   never silently gets fewer rows per page than it asked for.
//! - **Bodies** are JSON only, at most 16 KiB (413), strictly typed
//!   ([`common_http::StrictJson`]); no input gives a 500.

pub mod cursor;
pub mod openapi;
pub mod processor;
pub mod request;
pub mod store;

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use common_http::{ApiError, StrictJson};
use db::{DatabaseTarget, PoolSettings, StoreError};
use guard::{GatewayUser, GuardConfig, GuardLayer};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::cursor::Cursor;
use crate::processor::Decision;
use crate::request::{CreatePayment, IdempotencyKey};
use crate::store::{Created, NewPayment, PaymentStatus, PaymentStore, Refund};

pub const DEFAULT_PAGE_SIZE: i64 = 20;
pub const MAX_PAGE_SIZE: i64 = 100;
/// Set (to `true`) on the answer to a replayed creation.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

#[derive(Clone)]
pub struct PaymentServiceConfig {
    pub database: DatabaseTarget,
    pub guard: GuardConfig,
    /// `METRICS_ALLOWED_CIDRS`: who may scrape `/metrics`.
    pub metrics_allowed: Vec<common_http::client_ip::Cidr>,
}

#[derive(Clone)]
pub struct PaymentState {
    metrics: common_http::metrics::Metrics,
    store: Arc<dyn PaymentStore>,
    config: Arc<PaymentServiceConfig>,
}

impl PaymentState {
    pub fn store(&self) -> &dyn PaymentStore {
        self.store.as_ref()
    }
}

/// Connects the store (applying migrations) and builds the state.
///
/// # Errors
/// [`StoreError`] when the database is unreachable.
pub async fn build_state(config: PaymentServiceConfig) -> Result<PaymentState, StoreError> {
    let store = store::connect(config.database.clone(), PoolSettings::default()).await?;
    let metrics = common_http::metrics::MetricsBuilder::new(config.metrics_allowed.clone()).build();
    Ok(PaymentState { store, metrics, config: Arc::new(config) })
}

/// The API's routes with their OpenAPI descriptions: [`app`] serves them
/// and [`openapi()`] documents them, so none is served undocumented.
fn api_routes() -> OpenApiRouter<PaymentState> {
    OpenApiRouter::new()
        .routes(routes!(create_payment, list_payments))
        .routes(routes!(get_payment))
        .routes(routes!(refund_payment))
}

/// The service's OpenAPI document: every route behind the guard, with its
/// paths as this service sees them (the gateway serves them under `/api/v1`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    let mut document = openapi::PaymentApi::openapi();
    document.merge(api_routes().into_openapi());
    document
}

/// The routes: payments behind the guard, health and readiness open.
pub fn app(state: PaymentState) -> Router {
    let metrics = state.metrics.clone();
    let guard = GuardLayer::new(state.config.guard.clone());
    let (protected, _) = api_routes().split_for_parts();
    let protected = protected.route_layer(guard).layer(axum::extract::DefaultBodyLimit::max(16 * 1024));
    let router = Router::new()
        .merge(protected)
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "healthy", "service": "payment-service"})) }),
        )
        .route("/ready", get(ready))
        .with_state(state);
    common_http::serve::with_standard_layers(metrics.instrument(router))
}

async fn ready(State(state): State<PaymentState>) -> Result<impl IntoResponse, ApiError> {
    state.config.guard.readiness("payment-service", state.store.ping().await).await
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn payment_not_found() -> ApiError {
    ApiError::not_found("Payment not found")
}

/// The canonical form of a payment id from the path; `None` when it cannot
/// name a payment (the caller then gets the same 404 as for an unknown id).
fn payment_id(path: Result<Path<String>, PathRejection>) -> Option<String> {
    let Path(id) = path.ok()?;
    Uuid::try_parse(&id).ok().map(|id| id.hyphenated().to_string())
}

/// `POST /payments`: see the module docs and [`request`].
#[utoipa::path(post, path = "/payments", tag = "payments", request_body = CreatePayment,
    params(("Idempotency-Key" = String, Header, description = "1 to 255 visible ASCII characters; the same key and body again replays the payment")),
    responses(
        (status = 201, description = "The payment, succeeded or declined", body = openapi::PaymentResponse),
        (status = 200, description = "A replay of the same request: the payment as it is now; `Idempotent-Replayed: true`", body = openapi::PaymentResponse),
        (status = 400, description = "A field is invalid, or the key is missing", body = common_http::openapi::ErrorBody),
        (status = 409, description = "The key was used with a different request", body = common_http::openapi::ErrorBody),
    ))]
async fn create_payment(
    State(state): State<PaymentState>,
    user: GatewayUser,
    IdempotencyKey(key): IdempotencyKey,
    StrictJson(body): StrictJson<CreatePayment>,
) -> Result<Response, ApiError> {
    let valid = body.validate()?;
    let request_hash = valid.request_hash();
    let id = Uuid::now_v7();
    // created_at is the second of the id's own timestamp, so ordering by
    // (created_at, id) is ordering by creation (the list relies on it).
    let created_at = id.get_timestamp().and_then(|t| i64::try_from(t.to_unix().0).ok()).unwrap_or_else(now);
    let (status, decline_reason) = match processor::decide(valid.amount) {
        Decision::Succeeded => (PaymentStatus::Succeeded, None),
        Decision::Declined(reason) => (PaymentStatus::Declined, Some(reason.as_str())),
    };
    let payment_id = id.hyphenated().to_string();
    let new = NewPayment {
        payment_id: &payment_id,
        user_id: &user.id,
        idempotency_key: &key,
        request_hash: &request_hash,
        amount: valid.amount,
        currency: valid.currency,
        description: &valid.description,
        status,
        decline_reason,
        created_at,
    };
    match state.store.create(&new).await? {
        Created::New(payment) => {
            tracing::info!(
                payment_id = %payment.payment_id,
                user_id = %user.id,
                status = payment.status.as_str(),
                "payment created"
            );
            Ok((StatusCode::CREATED, Json(serde_json::json!({"payment": payment}))).into_response())
        }
        Created::Existing { payment, request_hash: original } if original == request_hash => {
            tracing::info!(payment_id = %payment.payment_id, user_id = %user.id, "payment creation replayed");
            Ok((
                StatusCode::OK,
                [(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"))],
                Json(serde_json::json!({"payment": payment})),
            )
                .into_response())
        }
        Created::Existing { .. } => Err(ApiError::conflict("Idempotency key already used with a different request")
            .with_hint("Use a new Idempotency-Key for a new payment; reuse a key only to retry the same request")),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListParams {
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page, unchanged.
    cursor: Option<String>,
}

/// `GET /payments`: the caller's payments, newest first, a page at a time.
#[utoipa::path(get, path = "/payments", tag = "payments", params(ListParams),
    responses(
        (status = 200, description = "A page of the caller's payments, newest first", body = openapi::PaymentPage),
        (status = 400, description = "Invalid limit, cursor or query string", body = common_http::openapi::ErrorBody),
    ))]
async fn list_payments(
    State(state): State<PaymentState>,
    user: GatewayUser,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(params) = query.map_err(|_| {
        ApiError::bad_request("Invalid query string")
            .with_hint("The parameters are limit and cursor, each at most once")
    })?;
    let limit = match params.limit.as_deref() {
        None => DEFAULT_PAGE_SIZE,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
            .ok_or_else(|| ApiError::bad_request("limit must be an integer from 1 to 100"))?,
    };
    let after = match params.cursor.as_deref() {
        None => None,
        Some(text) => Some(Cursor::decode(text).map_err(|_| {
            ApiError::bad_request("Invalid cursor").with_hint("Pass the next_cursor of the previous page unchanged")
        })?),
    };
    // One row more than the page: whether it exists says whether there is a next page.
    let mut payments = state.store.list(&user.id, after, limit + 1).await?;
    let has_more = payments.len() as i64 > limit;
    payments.truncate(usize::try_from(limit).unwrap_or(0));
    let next_cursor = match payments.last() {
        Some(last) if has_more => {
            let id = Uuid::try_parse(&last.payment_id).map_err(|e| ApiError::internal(&e))?;
            Some(Cursor { created_at: last.created_at, id }.encode())
        }
        _ => None,
    };
    Ok(Json(serde_json::json!({"payments": payments, "next_cursor": next_cursor})))
}

/// `GET /payments/{id}`.
#[utoipa::path(get, path = "/payments/{id}", tag = "payments",
    params(("id" = String, Path, description = "The payment's id")),
    responses(
        (status = 200, description = "The payment", body = openapi::PaymentResponse),
        (status = 404, description = "No such payment of the caller's", body = common_http::openapi::ErrorBody),
    ))]
async fn get_payment(
    State(state): State<PaymentState>,
    user: GatewayUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = payment_id(path).ok_or_else(payment_not_found)?;
    let payment = state.store.find(&user.id, &id).await?.ok_or_else(payment_not_found)?;
    Ok(Json(serde_json::json!({"payment": payment})))
}

/// `POST /payments/{id}/refund`: a full refund of a `succeeded` payment, once.
#[utoipa::path(post, path = "/payments/{id}/refund", tag = "payments",
    params(("id" = String, Path, description = "The payment's id")),
    responses(
        (status = 200, description = "The payment, now `refunded`", body = openapi::PaymentResponse),
        (status = 404, description = "No such payment of the caller's", body = common_http::openapi::ErrorBody),
        (status = 409, description = "Already refunded, or not a succeeded payment", body = common_http::openapi::ErrorBody),
    ))]
async fn refund_payment(
    State(state): State<PaymentState>,
    user: GatewayUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = payment_id(path).ok_or_else(payment_not_found)?;
    match state.store.refund(&user.id, &id, now()).await? {
        Refund::Refunded(payment) => {
            tracing::info!(payment_id = %payment.payment_id, user_id = %user.id, "payment refunded");
            Ok(Json(serde_json::json!({"payment": payment})))
        }
        Refund::NotRefundable(payment) if payment.status == PaymentStatus::Refunded => {
            Err(ApiError::conflict("Payment already refunded"))
        }
        Refund::NotRefundable(payment) => Err(ApiError::conflict("Only a succeeded payment can be refunded")
            .with_hint(format!("This payment is {}", payment.status.as_str()))),
        Refund::NotFound => Err(payment_not_found()),
    }
}

/// Serves until `shutdown`, then drains and closes the pool.
///
/// # Errors
/// I/O errors from the listener.
pub async fn serve(
    state: PaymentState,
    listener: impl Into<common_http::serve::Listener>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let store = Arc::clone(&state.store);
    let result = common_http::serve::serve(listener, app(state), shutdown).await;
    store.close().await;
    result
}
