//! The Gatehouse notification service: the caller's security notifications.
//!
//! Users read them through the gateway; every route but `/health` and
//! `/ready` sits behind the [`guard`], and the caller is the asserted
//! [`GatewayUser`], so a user only ever sees or changes their own.
//!
//! - `GET /notifications?limit=&cursor=`: unread first, then newest first,
//!   with the unread count and a cursor for the next page;
//! - `POST /notifications/{id}/read`, `POST /notifications/read-all`.
//!
//! The auth service creates them (a new login with its IP and user agent, a
//! password change, a refresh-token reuse, two-factor login turned on or off) with `POST /internal/notifications`,
//! an internal call: the same five guard headers, asserted for
//! [`INTERNAL_CALLER`], which no gateway-forwarded request can carry (the
//! gateway only asserts the auth service's UUIDs). The assertion signs the
//! method, path and query, not the body, so the caller puts the body's
//! SHA-256 in the query ([`BODY_DIGEST_PARAM`]) and this service checks it.
//! Deliveries carry the sender's event id, so a retried delivery stores
//! nothing twice. The service composes the wording itself from the event
//! kind; the sender only states facts.

pub mod openapi;
pub mod store;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common_http::ApiError;
pub use common_http::notification::NotificationKind;
use db::{DatabaseTarget, PoolSettings, StoreError};
use guard::{GatewayUser, GuardConfig, GuardLayer};
use serde::Deserialize;
use serde_json::{Value, json};
use tokens::assertion::{BODY_DIGEST_PARAM, INTERNAL_CALLER, body_digest};
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::store::{Notification, NotificationStore, PageCursor};

/// The page size when the client names none, and the largest it may ask for.
pub const DEFAULT_PAGE: i64 = 20;
pub const MAX_PAGE: i64 = 100;

#[derive(Clone)]
pub struct NotificationServiceConfig {
    pub database: DatabaseTarget,
    pub guard: GuardConfig,
    /// `METRICS_ALLOWED_CIDRS`: who may scrape `/metrics`.
    pub metrics_allowed: Vec<common_http::client_ip::Cidr>,
}

#[derive(Clone)]
pub struct NotificationState {
    metrics: common_http::metrics::Metrics,
    store: Arc<dyn NotificationStore>,
    config: Arc<NotificationServiceConfig>,
}

impl NotificationState {
    pub fn store(&self) -> &dyn NotificationStore {
        self.store.as_ref()
    }
}

/// Connects the store (applying migrations) and builds the state.
///
/// # Errors
/// [`StoreError`] when the database is unreachable.
pub async fn build_state(config: NotificationServiceConfig) -> Result<NotificationState, StoreError> {
    let store = store::connect(config.database.clone(), PoolSettings::default()).await?;
    let metrics = common_http::metrics::MetricsBuilder::new(config.metrics_allowed.clone()).build();
    Ok(NotificationState { store, metrics, config: Arc::new(config) })
}

/// The API's routes with their OpenAPI descriptions: [`app`] serves them
/// and [`openapi()`] documents them, so none is served undocumented. (The
/// internal delivery is the auth service's, never the public API's.)
fn api_routes() -> OpenApiRouter<NotificationState> {
    OpenApiRouter::new().routes(routes!(list_notifications)).routes(routes!(mark_all_read)).routes(routes!(mark_read))
}

/// The service's OpenAPI document: the caller's notifications, with paths
/// as this service sees them (the gateway serves them under `/api/v1`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    let mut document = openapi::NotificationApi::openapi();
    document.merge(api_routes().into_openapi());
    document
}

/// The routes: notifications and the internal delivery behind the guard,
/// health and readiness open.
pub fn app(state: NotificationState) -> Router {
    let metrics = state.metrics.clone();
    let guard = GuardLayer::new(state.config.guard.clone());
    let (api, _) = api_routes().split_for_parts();
    let protected = api
        .route("/internal/notifications", post(deliver))
        .route_layer(guard)
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024));
    let router = Router::new()
        .merge(protected)
        .route("/health", get(|| async { Json(json!({"status": "healthy", "service": "notification-service"})) }))
        .route("/ready", get(ready))
        .with_state(state);
    common_http::serve::with_standard_layers(metrics.instrument(router))
}

async fn ready(State(state): State<NotificationState>) -> Result<impl IntoResponse, ApiError> {
    state.config.guard.readiness("notification-service", state.store.ping().await).await
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn to_json(n: &Notification) -> Value {
    json!({
        "id": n.notification_id,
        "kind": n.kind,
        "title": n.title,
        "body": n.body,
        "ip": n.ip,
        "user_agent": n.user_agent,
        "created_at": n.created_at,
        "read": n.read_at.is_some(),
        "read_at": n.read_at,
    })
}

/// The opaque page cursor: base64url of `unread:created_at:id`.
pub fn encode_cursor(c: &PageCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}:{}", u8::from(c.unread), c.created_at, c.notification_id))
}

/// The inverse of [`encode_cursor`]; `None` for anything it did not make.
pub fn decode_cursor(raw: &str) -> Option<PageCursor> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
    let mut parts = text.splitn(3, ':');
    let unread = match parts.next()? {
        "1" => true,
        "0" => false,
        _ => return None,
    };
    let created_at = parts.next()?.parse().ok()?;
    let notification_id = uuid::Uuid::parse_str(parts.next()?).ok()?.to_string();
    Some(PageCursor { unread, created_at, notification_id })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page, unchanged.
    cursor: Option<String>,
}

/// `GET /notifications`.
#[utoipa::path(get, path = "/notifications", tag = "notifications", params(ListQuery),
    responses(
        (status = 200, description = "A page of the caller's notifications, unread first, then newest first", body = openapi::NotificationPage),
        (status = 400, description = "Invalid limit, cursor or query string", body = common_http::openapi::ErrorBody),
    ))]
async fn list_notifications(
    State(state): State<NotificationState>,
    user: GatewayUser,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) =
        query.map_err(|_| ApiError::bad_request("Invalid query string").with_hint("Use ?limit=&cursor="))?;
    let limit = match query.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| ApiError::bad_request("limit must be an integer from 1 to 100"))?,
    };
    let cursor = match query.cursor.as_deref() {
        None => None,
        Some(raw) => Some(decode_cursor(raw).ok_or_else(|| ApiError::bad_request("Invalid cursor"))?),
    };
    // One more than asked tells whether another page follows.
    let mut rows = state.store.list(&user.id, cursor.as_ref(), limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next_cursor = if more { rows.last().map(|n| encode_cursor(&PageCursor::after(n))) } else { None };
    let unread_count = state.store.unread_count(&user.id).await?;
    Ok(Json(json!({
        "notifications": rows.iter().map(to_json).collect::<Vec<_>>(),
        "unread_count": unread_count,
        "next_cursor": next_cursor,
    })))
}

fn notification_not_found() -> ApiError {
    ApiError::not_found("Notification not found")
}

/// `POST /notifications/{id}/read`: 404 for an id that is not the caller's.
#[utoipa::path(post, path = "/notifications/{id}/read", tag = "notifications",
    params(("id" = String, Path, description = "The notification's id")),
    responses(
        (status = 200, description = "The notification, now read", body = openapi::NotificationResponse),
        (status = 404, description = "No such notification of the caller's", body = common_http::openapi::ErrorBody),
    ))]
async fn mark_read(
    State(state): State<NotificationState>,
    user: GatewayUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = uuid::Uuid::parse_str(&id).map_err(|_| notification_not_found())?.to_string();
    let n = state.store.mark_read(&user.id, &id, now()).await?.ok_or_else(notification_not_found)?;
    Ok(Json(json!({"notification": to_json(&n)})))
}

/// `POST /notifications/read-all`.
#[utoipa::path(post, path = "/notifications/read-all", tag = "notifications",
    responses((status = 200, description = "Every unread notification is now read", body = openapi::AllMarkedRead)))]
async fn mark_all_read(
    State(state): State<NotificationState>,
    user: GatewayUser,
) -> Result<impl IntoResponse, ApiError> {
    let marked = state.store.mark_all_read(&user.id, now()).await?;
    Ok(Json(json!({"message": "All notifications marked as read", "marked": marked})))
}

/// The title users see for a notification of `kind`.
fn title_of(kind: NotificationKind) -> &'static str {
    match kind {
        NotificationKind::NewLogin => "New sign-in to your account",
        NotificationKind::PasswordChanged => "Your password was changed",
        NotificationKind::RefreshTokenReuse => "Suspicious activity on your account",
        NotificationKind::MfaEnabled => "Two-factor sign-in turned on",
        NotificationKind::MfaDisabled => "Two-factor sign-in turned off",
    }
}

/// The text users see for a notification of `kind`, naming where the event
/// came from when the sender knew.
fn text_of(kind: NotificationKind, ip: Option<&str>, user_agent: Option<&str>) -> String {
    let from = match (ip, user_agent) {
        (Some(ip), Some(ua)) => format!(" from {ip} ({ua})"),
        (Some(ip), None) => format!(" from {ip}"),
        (None, Some(ua)) => format!(" ({ua})"),
        (None, None) => String::new(),
    };
    match kind {
        NotificationKind::NewLogin => {
            format!("Someone signed in to your account{from}. If this wasn't you, change your password.")
        }
        NotificationKind::PasswordChanged => {
            format!("Your password was changed{from} and your other sessions were signed out.")
        }
        NotificationKind::RefreshTokenReuse => format!(
            "A sign-in token of yours was used again after it had been replaced{from}, which can mean it \
             was stolen. That session was ended; sign in again and change your password."
        ),
        NotificationKind::MfaEnabled => format!("Two-factor sign-in was turned on for your account{from}."),
        NotificationKind::MfaDisabled => format!(
            "Two-factor sign-in was turned off for your account{from}. If this wasn't you, change your password \
             and turn it back on."
        ),
    }
}

/// What the auth service sends.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// The sender's event id: retries carry the same one.
    pub id: uuid::Uuid,
    pub user_id: String,
    pub kind: NotificationKind,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub occurred_at: i64,
}

fn bounded(value: Option<String>, max: usize) -> Option<String> {
    value.map(|v| v.chars().filter(|c| !c.is_control()).take(max).collect())
}

/// `POST /internal/notifications?body_sha256=<hex>`: 201 when stored, 200
/// when that id was delivered before.
async fn deliver(
    State(state): State<NotificationState>,
    caller: GatewayUser,
    uri: axum::http::Uri,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    if caller.id != INTERNAL_CALLER {
        // A user's request: the internal route does not exist for them.
        return Err(ApiError::not_found("Not found"));
    }
    let signed_digest = uri
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix(BODY_DIGEST_PARAM).and_then(|rest| rest.strip_prefix('=')));
    if signed_digest != Some(body_digest(&body).as_str()) {
        tracing::warn!(request_id = %caller.request_id, "internal delivery refused: body does not match its signed digest");
        return Err(ApiError::unauthorized(guard::INVALID_SIGNATURE));
    }
    let delivery: Delivery = common_http::json::parse_json(&body)?;
    if delivery.user_id.is_empty() || delivery.user_id.len() > 64 {
        return Err(ApiError::bad_request("user_id must be 1 to 64 characters"));
    }
    let ip = bounded(delivery.ip, 64);
    let user_agent = bounded(delivery.user_agent, 256);
    let n = Notification {
        notification_id: delivery.id.to_string(),
        user_id: delivery.user_id,
        kind: delivery.kind.as_str().to_owned(),
        title: title_of(delivery.kind).to_owned(),
        body: text_of(delivery.kind, ip.as_deref(), user_agent.as_deref()),
        ip,
        user_agent,
        created_at: delivery.occurred_at,
        read_at: None,
    };
    let created = state.store.insert(&n).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({"id": n.notification_id, "created": created}))))
}

/// Serves until `shutdown`, then drains and closes the pool.
///
/// # Errors
/// I/O errors from the listener.
pub async fn serve(
    state: NotificationState,
    listener: impl Into<common_http::serve::Listener>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let store = Arc::clone(&state.store);
    let result = common_http::serve::serve(listener, app(state), shutdown).await;
    store.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        let c =
            PageCursor { unread: true, created_at: 1_700_000_000, notification_id: uuid::Uuid::new_v4().to_string() };
        assert_eq!(decode_cursor(&encode_cursor(&c)), Some(c));
        for junk in ["", "x", "MTox", &URL_SAFE_NO_PAD.encode("2:1:abc"), &URL_SAFE_NO_PAD.encode("1:x:abc")] {
            assert_eq!(decode_cursor(junk), None, "{junk}");
        }
    }

    #[test]
    fn wording_names_where_the_event_came_from() {
        let text = text_of(NotificationKind::NewLogin, Some("203.0.113.9"), Some("curl/8"));
        assert!(text.contains("203.0.113.9") && text.contains("curl/8"), "{text}");
        assert!(!text_of(NotificationKind::PasswordChanged, None, None).contains("from"));
    }
}
