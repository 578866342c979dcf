//! The auth service's metrics, beside the HTTP ones every service has:
//! logins by outcome, refreshes by outcome, reuse detections, lockouts,
//! the password-hashing queue and the database pool.
//!
//! Outcomes are counted where they are audited ([`crate::audit::record`]),
//! so the audit log and the metrics cannot disagree.

use std::sync::Arc;

use common_http::client_ip::Cidr;
use common_http::metrics::{Metrics, MetricsBuilder};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::audit::EventKind;
use crate::password::PasswordHasher;
use crate::store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// The counters the audit hook moves.
#[derive(Clone)]
pub struct AuthMetrics {
    pub http: Metrics,
    logins: Family<Outcome, Counter>,
    refreshes: Family<Outcome, Counter>,
    reuse_detections: Counter,
    lockouts: Counter,
}

impl AuthMetrics {
    pub fn new(allowed: Vec<Cidr>, hasher: &PasswordHasher, store: &Arc<dyn Store>) -> Self {
        let mut builder = MetricsBuilder::new(allowed);
        let registry = builder.registry().sub_registry_with_prefix("auth");
        let logins = Family::<Outcome, Counter>::default();
        registry.register("logins", "Login attempts by outcome", logins.clone());
        let refreshes = Family::<Outcome, Counter>::default();
        registry.register("refreshes", "Refresh attempts by outcome", refreshes.clone());
        let reuse_detections = Counter::default();
        registry.register("refresh_reuse_detections", "Spent refresh tokens presented again", reuse_detections.clone());
        let lockouts = Counter::default();
        registry.register("lockouts", "Logins refused by the per-account lockout", lockouts.clone());
        let queue = Gauge::<i64>::default();
        registry.register("password_hash_queue_depth", "Password hashes waiting for the pool", queue.clone());
        let (open, idle) = (Gauge::<i64>::default(), Gauge::<i64>::default());
        registry.register("db_pool_connections", "Open database connections", open.clone());
        registry.register("db_pool_idle_connections", "Idle database connections", idle.clone());
        let (hasher, store) = (hasher.clone(), Arc::clone(store));
        builder.on_scrape(move || {
            queue.set(i64::try_from(hasher.queue_depth()).unwrap_or(i64::MAX));
            let stats = store.pool_stats();
            open.set(i64::from(stats.open));
            idle.set(i64::try_from(stats.idle).unwrap_or(i64::MAX));
        });
        Self { http: builder.build(), logins, refreshes, reuse_detections, lockouts }
    }

    /// Counts an audited event.
    pub fn record(&self, kind: EventKind) {
        let login = |outcome| {
            self.logins.get_or_create(&Outcome { outcome }).inc();
        };
        let refresh = |outcome| {
            self.refreshes.get_or_create(&Outcome { outcome }).inc();
        };
        match kind {
            EventKind::LoginSucceeded => login("success"),
            EventKind::LoginFailed => login("invalid_credentials"),
            EventKind::LoginDisabledAccount => login("disabled"),
            // A login with two-factor on: the password step, then the code.
            EventKind::MfaChallengeIssued => login("mfa_required"),
            EventKind::MfaVerifyFailed => login("invalid_code"),
            EventKind::LoginLocked => {
                login("locked");
                self.lockouts.inc();
            }
            EventKind::RefreshSucceeded => refresh("success"),
            EventKind::RefreshGraceReplay => refresh("grace_replay"),
            EventKind::RefreshRefused => refresh("refused"),
            EventKind::RefreshReuseDetected => {
                refresh("reuse_detected");
                self.reuse_detections.inc();
            }
            _ => {}
        }
    }
}
