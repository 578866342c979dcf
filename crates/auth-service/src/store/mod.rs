//! Persistence for the auth service: one [`Store`] trait, two backends.
//!
//! PostgreSQL is the production store; SQLite is the embedded default so
//! `gatehouse up` needs nothing installed. Both run the same SQL (see
//! [`sql`]), which the shared contract test suite executes against each.
//! Queries are checked at run time (`query_as` + `FromRow`), not by the
//! `query!` macros, which would need a live database of each kind to compile.
//!
//! Invariants the store keeps for its callers:
//! - emails are unique among accounts that are not deleted (a unique index,
//!   so two racing registrations give one `Conflict`, never a 500);
//! - [`Store::advance_refresh_counter`] is a single compare-and-swap
//!   statement, so of any number of concurrent refreshes presenting the same
//!   counter at most one succeeds, on one process or many;
//! - a password change and the revocation of the other sessions commit together.

mod sql;

use std::sync::Arc;

use uuid::Uuid;

pub use db::{Backend, DatabaseTarget, PoolSettings, StoreError};
pub use sql::{PgStore, SqliteStore};

/// An account. `Debug` leaves out the password hash.
#[derive(Clone, sqlx::FromRow)]
pub struct User {
    pub user_id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub name: String,
    pub active: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("user_id", &self.user_id)
            .field("email", &self.email)
            .field("name", &self.name)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// A new account to insert.
pub struct NewUser {
    pub user_id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub name: String,
    pub now: i64,
}

/// A session: one refresh-token family.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Session {
    pub session_id: Uuid,
    pub user_id: Uuid,
    /// The counter of the current refresh token.
    pub refresh_counter: i64,
    pub created_at: i64,
    pub last_rotated_at: i64,
    /// The absolute end of the session, whatever the rotations.
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

impl Session {
    /// Not revoked and within its absolute lifetime.
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// One entry of the revocation feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct RevokedSession {
    pub session_id: Uuid,
    pub revoked_at: i64,
}

/// A new session to insert (its counter starts at 0).
pub struct NewSession {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub now: i64,
    pub expires_at: i64,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// A security event for the audit table.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEvent {
    pub audit_event_id: Uuid,
    pub occurred_at: i64,
    pub kind: String,
    pub user_id: Option<Uuid>,
    pub email: Option<String>,
    pub session_id: Option<Uuid>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Option<String>,
}

/// Failed logins for one email inside a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureCount {
    pub count: i64,
    /// The oldest failure in the window, which decides when it unlocks.
    pub oldest: Option<i64>,
}

/// The auth service's persistence. All times are unix seconds.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    /// Applies the embedded migrations.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// One round trip, for `/ready`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Closes the pool, waiting for connections in use to be returned.
    async fn close(&self);

    /// # Errors
    /// [`StoreError::Conflict`] when the email is taken.
    async fn create_user(&self, user: &NewUser) -> Result<User, StoreError>;
    async fn find_user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;
    async fn find_user(&self, user_id: Uuid) -> Result<Option<User>, StoreError>;
    async fn set_password_hash(&self, user_id: Uuid, password_hash: &str, now: i64) -> Result<(), StoreError>;
    /// Deactivates and soft-deletes the user and revokes every session, in
    /// one transaction; returns how many sessions were revoked, or `None`
    /// when there is no such (undeleted) user.
    async fn delete_user(&self, user_id: Uuid, now: i64) -> Result<Option<u64>, StoreError>;
    /// Returns whether the user exists.
    async fn set_user_active(&self, user_id: Uuid, active: bool, now: i64) -> Result<bool, StoreError>;
    /// Sets the new hash and revokes every other active session of the user,
    /// in one transaction; returns how many sessions were revoked.
    async fn change_password(
        &self,
        user_id: Uuid,
        password_hash: &str,
        keep_session: Uuid,
        now: i64,
    ) -> Result<u64, StoreError>;

    async fn create_session(&self, session: &NewSession) -> Result<Session, StoreError>;
    async fn find_session(&self, session_id: Uuid) -> Result<Option<Session>, StoreError>;
    /// Compare-and-swap: moves the session from `expected` to `expected + 1`
    /// if it still is at `expected` and not revoked. Returns the new counter,
    /// or `None` when another rotation won or the session is revoked.
    async fn advance_refresh_counter(
        &self,
        session_id: Uuid,
        expected: i64,
        now: i64,
    ) -> Result<Option<i64>, StoreError>;
    /// Revokes one session; `false` if it was already revoked or does not exist.
    async fn revoke_session(&self, session_id: Uuid, reason: &str, now: i64) -> Result<bool, StoreError>;
    /// Revokes every active session of a user, but `except`; returns how many.
    async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        except: Option<Uuid>,
        reason: &str,
        now: i64,
    ) -> Result<u64, StoreError>;
    /// Sessions revoked at or after `since`, oldest revocation first, at most
    /// `limit`: the revocation feed the gateway polls.
    async fn revoked_sessions_since(&self, since: i64, limit: i64) -> Result<Vec<RevokedSession>, StoreError>;
    /// The user's sessions that are neither revoked nor expired, newest first.
    async fn list_active_sessions(&self, user_id: Uuid, now: i64) -> Result<Vec<Session>, StoreError>;

    /// Records a failed login for `email`, and forgets failures older than `forget_before`.
    async fn record_login_failure(&self, email: &str, now: i64, forget_before: i64) -> Result<(), StoreError>;
    async fn login_failures_since(&self, email: &str, since: i64) -> Result<FailureCount, StoreError>;
    async fn clear_login_failures(&self, email: &str) -> Result<(), StoreError>;

    async fn insert_audit_event(&self, event: &AuditEvent) -> Result<(), StoreError>;
    /// The newest events first, optionally for one user.
    async fn list_audit_events(&self, user_id: Option<Uuid>, limit: i64) -> Result<Vec<AuditEvent>, StoreError>;
}

/// Opens a pool to `target` and applies the migrations.
///
/// # Errors
/// [`StoreError`] when the database is unreachable or a migration fails.
pub async fn connect(target: DatabaseTarget, pool: PoolSettings) -> Result<Arc<dyn Store>, StoreError> {
    let store: Arc<dyn Store> = match target {
        DatabaseTarget::Postgres(options) => Arc::new(PgStore::new(db::open_postgres(options, pool).await?)),
        DatabaseTarget::Sqlite(options) => Arc::new(SqliteStore::new(db::open_sqlite(options, pool).await?)),
    };
    store.migrate().await?;
    Ok(store)
}
