//! The user service's OpenAPI description: the response bodies the
//! handlers build (as JSON values, in the seed's shapes) and the document's
//! frame. The paths come from the handlers' `#[utoipa::path]` annotations,
//! gathered by the router itself (`api_routes` in the crate root).

use utoipa::{OpenApi, ToSchema};

use crate::store::Profile;

/// The frame of the service's document; the paths are merged in.
#[derive(OpenApi)]
#[openapi(
    info(title = "Gatehouse user service", description = "The caller's profile and account deletion."),
    components(schemas(common_http::openapi::ErrorBody, Profile)),
    tags((name = "users", description = "The caller's profile and account"))
)]
pub struct UserApi;

/// `GET /users/profile`.
#[derive(ToSchema)]
pub struct ProfileResponse {
    pub user: Profile,
}

/// What `PUT /users/profile` changed.
#[derive(ToSchema)]
pub struct UpdatedFields {
    pub name: String,
    pub bio: String,
}

/// `PUT /users/profile`.
#[derive(ToSchema)]
pub struct ProfileUpdated {
    /// `Profile updated successfully`.
    pub message: String,
    pub user_id: String,
    pub updated: UpdatedFields,
}

/// `DELETE /users/account`.
#[derive(ToSchema)]
pub struct AccountDeleted {
    /// `Account deleted successfully`.
    pub message: String,
    pub user_id: String,
}
