//! Database plumbing every Gatehouse service with tables shares.
//!
//! Each service owns its tables, migrations and SQL (the store pattern of
//! the auth service: one `Store` trait, the same SQL for PostgreSQL and
//! SQLite). What they share lives here, once: parsing `DATABASE_URL` /
//! `DB_DSN` (URLs and the seed's libpq key/value DSN), opening pools with
//! the right settings for each backend, and the error type that tells a
//! unique violation (409) and an unreachable database (503) from a bug (500).

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

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
            sqlx::Error::Database(db) if db.code().is_some_and(|code| is_unavailable_sqlstate(&code)) => {
                Self::Unavailable(e)
            }
            _ => Self::Database(e),
        }
    }
}

/// SQLSTATEs with which PostgreSQL says "not now" rather than "wrong": a
/// restart or failover in progress (a fast shutdown ends each session with
/// 57P01 `admin_shutdown`; connecting during startup or shutdown gets 57P03
/// `cannot_connect_now`), a crashed peer (57P02), a connection lost (class
/// 08), or no connection slot left (53300). The request may succeed when
/// retried, so it is a 503, not a 500.
fn is_unavailable_sqlstate(code: &str) -> bool {
    matches!(code, "57P01" | "57P02" | "57P03" | "53300") || code.starts_with("08")
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

/// Opens a PostgreSQL pool.
///
/// # Errors
/// [`StoreError`] when the database cannot be reached.
pub async fn open_postgres(options: PgConnectOptions, pool: PoolSettings) -> Result<sqlx::PgPool, StoreError> {
    Ok(PgPoolOptions::new()
        .max_connections(pool.max_connections)
        .acquire_timeout(pool.acquire_timeout)
        .connect_with(options)
        .await?)
}

/// Opens a SQLite pool, creating the file if needed.
///
/// WAL lets readers run beside the one writer; the busy timeout makes
/// concurrent writers wait for the lock instead of failing.
///
/// # Errors
/// [`StoreError`] when the file cannot be opened.
pub async fn open_sqlite(options: SqliteConnectOptions, pool: PoolSettings) -> Result<sqlx::SqlitePool, StoreError> {
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    Ok(SqlitePoolOptions::new()
        .max_connections(pool.max_connections.min(8))
        .acquire_timeout(pool.acquire_timeout)
        .connect_with(options)
        .await?)
}

/// Applies a service's `migrator` (from `sqlx::migrate!`) to `pool`, with
/// its history in the service's own `history_table`.
///
/// Services may share one database (the embedded SQLite file, or one
/// PostgreSQL database): in sqlx's default history table, each service
/// would find the others' migrations applied but unknown to it, and refuse
/// to start.
///
/// # Errors
/// [`StoreError`] when a migration fails or the database cannot be reached.
pub async fn run_migrations<DB>(
    mut migrator: sqlx::migrate::Migrator,
    history_table: &'static str,
    pool: &sqlx::Pool<DB>,
) -> Result<(), StoreError>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
{
    migrator.dangerous_set_table_name(history_table);
    migrator.run(pool).await?;
    Ok(())
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

    #[test]
    fn sqlstates_of_an_outage_are_unavailable() {
        for code in ["57P01", "57P02", "57P03", "53300", "08006", "08001"] {
            assert!(is_unavailable_sqlstate(code), "{code}");
        }
        // A constraint or a syntax error is a bug or bad input, not an outage.
        for code in ["23505", "42601", "40001", "57014"] {
            assert!(!is_unavailable_sqlstate(code), "{code}");
        }
    }

    /// A session ended by the server (what every open connection gets when
    /// PostgreSQL is stopped with a fast shutdown) is an outage, a 503.
    #[tokio::test]
    async fn a_terminated_session_is_unavailable() {
        let url = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/gatehouse_test".to_owned());
        let DatabaseTarget::Postgres(options) = DatabaseTarget::parse(&url).unwrap() else {
            panic!("TEST_DATABASE_URL is a PostgreSQL URL");
        };
        let pool =
            open_postgres(options, PoolSettings { max_connections: 1, ..PoolSettings::default() }).await.unwrap();
        let err = sqlx::query("select pg_terminate_backend(pg_backend_pid())").execute(&pool).await.unwrap_err();
        let err = StoreError::from(err);
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }
}
