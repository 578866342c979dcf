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

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use uuid::Uuid;

pub use sql::{PgStore, SqliteStore};

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write (an email already registered).
    #[error("unique constraint violated")]
    Conflict,
    /// The database could not be reached or the pool is exhausted.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                Self::Unavailable(e)
            }
            _ => Self::Database(e),
        }
    }
}

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

/// Where the database is, parsed from `DATABASE_URL` / `DB_DSN`.
#[derive(Debug, Clone)]
pub enum DatabaseTarget {
    Postgres(PgConnectOptions),
    Sqlite(SqliteConnectOptions),
}

impl DatabaseTarget {
    /// Accepts `postgres://…` / `postgresql://…` URLs, `sqlite:…` URLs, and
    /// the seed's libpq key/value DSN (`host=… user=… dbname=… sslmode=…`).
    ///
    /// # Errors
    /// [`StoreError::InvalidUrl`] with a message that never echoes a password.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return PgConnectOptions::from_str(url)
                .map(Self::Postgres)
                .map_err(|_| StoreError::InvalidUrl("not a valid postgres:// URL".into()));
        }
        if url.starts_with("sqlite:") {
            return SqliteConnectOptions::from_str(url)
                .map(Self::Sqlite)
                .map_err(|_| StoreError::InvalidUrl("not a valid sqlite: URL".into()));
        }
        if url.contains('=') && !url.contains("://") {
            return parse_key_value_dsn(url).map(Self::Postgres);
        }
        Err(StoreError::InvalidUrl("expected a postgres://, postgresql:// or sqlite: URL, or a host=… DSN".into()))
    }

    pub fn backend(&self) -> Backend {
        match self {
            Self::Postgres(_) => Backend::Postgres,
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }
}

fn parse_key_value_dsn(dsn: &str) -> Result<PgConnectOptions, StoreError> {
    let mut options = PgConnectOptions::new_without_pgpass();
    for pair in dsn.split_whitespace() {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(StoreError::InvalidUrl("DSN entries must look like key=value".into()));
        };
        options = match key {
            "host" => options.host(value),
            "port" => options.port(value.parse().map_err(|_| StoreError::InvalidUrl("port is not a number".into()))?),
            "user" => options.username(value),
            "password" => options.password(value),
            "dbname" => options.database(value),
            "sslmode" => options
                .ssl_mode(value.parse().map_err(|_| StoreError::InvalidUrl("sslmode is not a libpq ssl mode".into()))?),
            "TimeZone" | "timezone" | "connect_timeout" | "application_name" => options,
            other => {
                let other: String = other.chars().take(32).collect();
                return Err(StoreError::InvalidUrl(format!("unknown DSN key `{other}`")));
            }
        };
    }
    Ok(options)
}

/// Pool settings shared by both backends.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self { max_connections: 16, acquire_timeout: Duration::from_secs(5) }
    }
}

/// Opens a pool to `target` and applies the migrations.
///
/// # Errors
/// [`StoreError`] when the database is unreachable or a migration fails.
pub async fn connect(target: DatabaseTarget, pool: PoolSettings) -> Result<Arc<dyn Store>, StoreError> {
    let store: Arc<dyn Store> = match target {
        DatabaseTarget::Postgres(options) => {
            let pool = PgPoolOptions::new()
                .max_connections(pool.max_connections)
                .acquire_timeout(pool.acquire_timeout)
                .connect_with(options)
                .await?;
            Arc::new(PgStore::new(pool))
        }
        DatabaseTarget::Sqlite(options) => {
            // WAL lets readers run beside the one writer; the busy timeout makes
            // concurrent writers wait for the lock instead of failing.
            let options = options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(pool.max_connections.min(8))
                .acquire_timeout(pool.acquire_timeout)
                .connect_with(options)
                .await?;
            Arc::new(SqliteStore::new(pool))
        }
    };
    store.migrate().await?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_targets() {
        assert_eq!(DatabaseTarget::parse("postgres://u:p@h:5432/db").unwrap().backend(), Backend::Postgres);
        assert_eq!(DatabaseTarget::parse("sqlite://./data/x.db").unwrap().backend(), Backend::Sqlite);
        let dsn =
            DatabaseTarget::parse("host=db user=postgres password=secret dbname=authdb port=5432 sslmode=disable");
        assert_eq!(dsn.unwrap().backend(), Backend::Postgres);
        let err = DatabaseTarget::parse("mysql://u:hunter2@h/db").unwrap_err().to_string();
        assert!(!err.contains("hunter2"));
        assert!(DatabaseTarget::parse("host=db port=x").is_err());
    }
}
