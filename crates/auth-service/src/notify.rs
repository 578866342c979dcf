//! Security notifications to the notification service: a new login (with
//! its IP and user agent), a password change, a refresh-token reuse, and
//! two-factor login turned on or off.
//!
//! They come from the audit log's events (see [`crate::audit::record`]), so
//! whatever is audited as one of those kinds is also notified. Delivery never
//! holds up the request that caused it: each is a background task that
//! retries with exponential back-off (0.25 s doubling, 8 attempts, about a
//! minute) while the notification service is down or failing, and is
//! dropped with an error log after that. The event's audit id travels as the
//! notification id, so a retry after a lost answer stores nothing twice.
//! At most [`MAX_IN_FLIGHT`] deliveries are pending; beyond that new ones
//! are dropped (logged), so an outage cannot grow memory without bound.
//!
//! The call is an internal call (an assertion for the internal caller signed
//! with `GATEWAY_SECRET`), with the body's SHA-256 in the signed query, over
//! HTTP or, to an `https://` notification service, TLS (the certificate
//! checked against `UPSTREAM_CA` or the public roots).
//! Pending deliveries live in memory: a restart of the auth service during
//! an outage loses them (the audit table still has the events).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use common_http::client::InternalClient;
use common_http::tls::TlsError;
use http::{Method, StatusCode, Uri};
use tokens::Secret;
use tokens::assertion::{BODY_DIGEST_PARAM, body_digest};
use tokio::sync::Semaphore;
use uuid::Uuid;

/// The most deliveries pending at once.
pub const MAX_IN_FLIGHT: usize = 1024;
const ATTEMPTS: u32 = 8;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

pub use common_http::notification::NotificationKind;

/// One notification to deliver.
#[derive(Debug, Clone)]
pub struct Notice {
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: NotificationKind,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub occurred_at: i64,
}

/// Sends notices to the notification service, or nowhere when none is
/// configured. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    target: Option<Arc<Target>>,
}

struct Target {
    base: Uri,
    secrets: Vec<Secret>,
    client: InternalClient,
    in_flight: Arc<Semaphore>,
}

impl Notifier {
    pub fn disabled() -> Self {
        Self { target: None }
    }

    /// Delivers to the notification service at `base` (`http://` or
    /// `https://`, its certificate chaining to `roots`), signing with
    /// `secrets`; disabled when there are no secrets to sign with.
    ///
    /// # Errors
    /// [`TlsError`] if the TLS client cannot be set up.
    pub fn new(base: Uri, secrets: Vec<Secret>, roots: Arc<rustls::RootCertStore>) -> Result<Self, TlsError> {
        if secrets.is_empty() {
            tracing::warn!("GATEWAY_SECRET is not set: security notifications are not sent");
            return Ok(Self::disabled());
        }
        let client = common_http::client::internal_client(Duration::from_secs(1), roots)?;
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        Ok(Self { target: Some(Arc::new(Target { base, secrets, client, in_flight })) })
    }

    /// Queues `notice` for delivery and returns at once.
    pub fn send(&self, notice: Notice) {
        let Some(target) = &self.target else { return };
        let Ok(permit) = Arc::clone(&target.in_flight).try_acquire_owned() else {
            tracing::error!(kind = notice.kind.as_str(), "notification dropped: too many deliveries pending");
            return;
        };
        let target = Arc::clone(target);
        tokio::spawn(async move {
            deliver_with_retries(&target, &notice).await;
            drop(permit);
        });
    }
}

async fn deliver_with_retries(target: &Target, notice: &Notice) {
    let body = serde_json::json!({
        "id": notice.id,
        "user_id": notice.user_id,
        "kind": notice.kind.as_str(),
        "ip": notice.ip,
        "user_agent": notice.user_agent,
        "occurred_at": notice.occurred_at,
    })
    .to_string();
    let path = format!("/internal/notifications?{BODY_DIGEST_PARAM}={}", body_digest(body.as_bytes()));
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        match attempt_delivery(target, &path, &body).await {
            Ok(()) => {
                tracing::debug!(kind = notice.kind.as_str(), attempt, "notification delivered");
                return;
            }
            // A refusal of the content will not change on retry.
            Err(Failure::Refused(status)) => {
                tracing::error!(
                    kind = notice.kind.as_str(),
                    status,
                    "notification refused by the notification service"
                );
                return;
            }
            Err(Failure::Transient(reason)) => {
                tracing::warn!(kind = notice.kind.as_str(), attempt, reason, "notification delivery failed; retrying");
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    tracing::error!(kind = notice.kind.as_str(), notice_id = %notice.id, "notification dropped after {ATTEMPTS} attempts");
}

enum Failure {
    Refused(u16),
    Transient(&'static str),
}

async fn attempt_delivery(target: &Target, path: &str, body: &str) -> Result<(), Failure> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    // Signed afresh per attempt, with a new request id: the receiver refuses a replayed one.
    let request = common_http::client::internal_request(&target.base, &Method::POST, path, &target.secrets, now)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .map_err(|_| Failure::Refused(0))?;
    match tokio::time::timeout(ATTEMPT_TIMEOUT, target.client.request(request)).await {
        Err(_) => Err(Failure::Transient("timeout")),
        Ok(Err(_)) => Err(Failure::Transient("unreachable")),
        Ok(Ok(r)) if r.status().is_success() => Ok(()),
        Ok(Ok(r))
            if r.status().is_server_error()
                || r.status() == StatusCode::TOO_MANY_REQUESTS
                // A clock step or a replay-cache hiccup: signed afresh next time.
                || r.status() == StatusCode::UNAUTHORIZED =>
        {
            Err(Failure::Transient("server error"))
        }
        Ok(Ok(r)) => Err(Failure::Refused(r.status().as_u16())),
    }
}
