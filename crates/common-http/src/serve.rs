//! Serving a router until shutdown.
//!
//! Every service is served the same way, whether alone (`gatehouse auth`) or
//! beside the others (`gatehouse up`): the standard layers wrap the router,
//! the listener is given by the caller (tests bind port 0), and a
//! [`CancellationToken`] shared by all services stops them together. On
//! cancellation the server stops accepting, lets requests in flight finish,
//! then returns so the caller can close its pool.

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::{method_not_allowed, panic_response, route_not_found};
use crate::request_id::assign_request_id;

/// Adds what every service has: JSON 404 and 405, panics turned into a JSON
/// 500, and the request-id span (outermost, so it covers everything else).
pub fn with_standard_layers(router: Router) -> Router {
    router
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn(assign_request_id))
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then drains.
///
/// # Errors
/// I/O errors from the listener.
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
