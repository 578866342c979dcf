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
//! - a password change and the revocation of the other sessions commit together;
//! - a TOTP step, a recovery code and an mfa challenge are each spent by one
//!   conditional `update`, so two concurrent uses can never both succeed.

pub mod recovery;
mod sql;

use std::sync::Arc;

use uuid::Uuid;

pub use db::{Backend, DatabaseTarget, PoolSettings, StoreError};
pub use recovery::RecoveryStore;
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
    /// When the user proved they receive mail at `email`; `None` until then.
    pub email_verified_at: Option<i64>,
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

/// A user's TOTP enrolment. The seed is sealed ([`tokens::sealed`]); `Debug`
/// leaves the ciphertext out.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TotpEnrolment {
    pub user_id: Uuid,
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    /// `None` while the setup awaits its first code.
    pub confirmed_at: Option<i64>,
    /// The newest TOTP step accepted (0: none); only later steps are accepted.
    pub last_used_step: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TotpEnrolment {
    /// Confirmed: logins need a second factor.
    pub fn is_enabled(&self) -> bool {
        self.confirmed_at.is_some()
    }
}

impl std::fmt::Debug for TotpEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpEnrolment")
            .field("user_id", &self.user_id)
            .field("key_id", &self.key_id)
            .field("confirmed_at", &self.confirmed_at)
            .field("last_used_step", &self.last_used_step)
            .finish_non_exhaustive()
    }
}

/// A sealed TOTP seed to store for a user.
#[derive(Debug, Clone)]
pub struct SealedTotpSecret {
    pub user_id: Uuid,
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// A login waiting for its second factor.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MfaChallenge {
    pub mfa_challenge_id: Uuid,
    pub user_id: Uuid,
    /// SHA-256 (hex) of the mfa_token; the token itself is never stored.
    pub token_hash: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    /// Codes tried with it so far, right or wrong.
    pub attempts: i64,
}

/// Connections of a store's pool, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub open: u32,
    pub idle: usize,
}

/// The auth service's persistence. All times are unix seconds. Password
/// reset, email verification and the mail queue are in [`RecoveryStore`].
#[async_trait::async_trait]
pub trait Store: RecoveryStore + Send + Sync + 'static {
    fn backend(&self) -> Backend;
    /// Applies the embedded migrations.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// One round trip, for `/ready`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Closes the pool, waiting for connections in use to be returned.
    async fn close(&self);
    /// Open and idle connections now.
    fn pool_stats(&self) -> PoolStats;

    /// # Errors
    /// [`StoreError::Conflict`] when the email is taken.
    async fn create_user(&self, user: &NewUser) -> Result<User, StoreError>;
    async fn find_user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;
    async fn find_user(&self, user_id: Uuid) -> Result<Option<User>, StoreError>;
    async fn set_password_hash(&self, user_id: Uuid, password_hash: &str, now: i64) -> Result<(), StoreError>;
    /// Deactivates and soft-deletes the user and revokes every session, in
    /// one transaction; returns the sessions revoked, or `None` when there
    /// is no such (undeleted) user.
    async fn delete_user(&self, user_id: Uuid, now: i64) -> Result<Option<Vec<Uuid>>, StoreError>;
    /// Returns whether the user exists.
    async fn set_user_active(&self, user_id: Uuid, active: bool, now: i64) -> Result<bool, StoreError>;
    /// Sets the new hash and revokes every other active session of the user,
    /// in one transaction; returns the sessions revoked.
    async fn change_password(
        &self,
        user_id: Uuid,
        password_hash: &str,
        keep_session: Uuid,
        now: i64,
    ) -> Result<Vec<Uuid>, StoreError>;

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
    /// Revokes every active session of a user, but `except`; returns them.
    async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        except: Option<Uuid>,
        reason: &str,
        now: i64,
    ) -> Result<Vec<Uuid>, StoreError>;
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
    async fn list_audit_events(&self, user_id: Option<Uuid>, limit: i64) -> Result<Vec<AuditEvent>, StoreError> {
        self.list_audit_events_since(user_id, i64::MIN, limit).await
    }
    /// The newest events at or after `since` first, optionally for one user.
    async fn list_audit_events_since(
        &self,
        user_id: Option<Uuid>,
        since: i64,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Accounts that are not deleted, oldest first, a page at a time.
    async fn list_users(&self, limit: i64, offset: i64) -> Result<Vec<User>, StoreError>;

    async fn find_totp(&self, user_id: Uuid) -> Result<Option<TotpEnrolment>, StoreError>;
    /// Stores a new, unconfirmed TOTP seed, replacing an unconfirmed one;
    /// `false` (and nothing written) when TOTP is already enabled.
    async fn begin_totp_setup(&self, secret: &SealedTotpSecret, now: i64) -> Result<bool, StoreError>;
    /// Enables TOTP, in one transaction: marks the pending setup confirmed
    /// with `step` as used (only if still unconfirmed and `step` is newer than
    /// the last used one) and replaces the user's recovery codes with
    /// `recovery_code_hashes`. `false` (and nothing written) if it lost.
    async fn confirm_totp(
        &self,
        user_id: Uuid,
        step: i64,
        recovery_code_hashes: &[String],
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Compare-and-swap: records `step` as used if it is newer than the last
    /// used one on a confirmed enrolment. Of concurrent uses of one code, one wins.
    async fn use_totp_step(&self, user_id: Uuid, step: i64, now: i64) -> Result<bool, StoreError>;
    /// Replaces the ciphertext if the row still holds the one sealed with
    /// `old_nonce` (nonces are random per seal, so this names one ciphertext):
    /// finishing a key rotation. `false` if the row changed meanwhile.
    async fn reseal_totp_secret(
        &self,
        old_nonce: &[u8],
        secret: &SealedTotpSecret,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Removes the enrolment (confirmed or not), every recovery code and
    /// every pending challenge, in one transaction; `false` if there was no
    /// enrolment.
    async fn delete_totp(&self, user_id: Uuid) -> Result<bool, StoreError>;
    /// Spends one recovery code: `true` only for the first use of an issued code.
    async fn use_recovery_code(&self, user_id: Uuid, code_hash: &str, now: i64) -> Result<bool, StoreError>;
    async fn count_unused_recovery_codes(&self, user_id: Uuid) -> Result<i64, StoreError>;

    /// Stores a challenge, and forgets challenges that expired before `now`.
    async fn create_mfa_challenge(&self, challenge: &MfaChallenge, now: i64) -> Result<(), StoreError>;
    /// Counts one attempt on the challenge with `token_hash`, if it is
    /// unspent, unexpired and has had fewer than `max_attempts`; returns it
    /// after the increment. One statement, so concurrent attempts can never
    /// exceed the limit.
    async fn claim_mfa_attempt(
        &self,
        token_hash: &str,
        now: i64,
        max_attempts: i64,
    ) -> Result<Option<MfaChallenge>, StoreError>;
    /// Marks the challenge spent; `false` if it already was.
    async fn spend_mfa_challenge(&self, mfa_challenge_id: Uuid, now: i64) -> Result<bool, StoreError>;
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
