//! The notification service's OpenAPI description: the bodies the handlers
//! build (as JSON values) and the document's frame. The paths come from the
//! handlers' `#[utoipa::path]` annotations, gathered by the router itself
//! (`api_routes` in the crate root).

use utoipa::{OpenApi, ToSchema};

/// The frame of the service's document; the paths are merged in.
#[derive(OpenApi)]
#[openapi(
    info(title = "Gatehouse notification service", description = "The caller's security notifications."),
    components(schemas(common_http::openapi::ErrorBody, NotificationView)),
    tags((name = "notifications", description = "The caller's security notifications"))
)]
pub struct NotificationApi;

/// A notification as clients see it (`to_json` in the crate root).
#[derive(ToSchema)]
#[schema(as = Notification)]
pub struct NotificationView {
    pub id: String,
    /// `new_login`, `password_changed`, `refresh_token_reuse`, `mfa_enabled` or `mfa_disabled`.
    pub kind: String,
    pub title: String,
    pub body: String,
    /// The client address of the event, when known.
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    pub read: bool,
    /// Unix seconds, or `null` while unread.
    pub read_at: Option<i64>,
}

/// `GET /notifications`.
#[derive(ToSchema)]
pub struct NotificationPage {
    pub notifications: Vec<NotificationView>,
    pub unread_count: i64,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /notifications/{id}/read`.
#[derive(ToSchema)]
pub struct NotificationResponse {
    pub notification: NotificationView,
}

/// `POST /notifications/read-all`.
#[derive(ToSchema)]
pub struct AllMarkedRead {
    /// `All notifications marked as read`.
    pub message: String,
    /// How many were unread.
    pub marked: i64,
}
