//! The SQL of the auth store, written once for both backends.
//!
//! PostgreSQL and SQLite both accept `$n` placeholders, `returning`, partial
//! indexes and the types used here (uuid/blob ids, bigint unix seconds, text,
//! boolean), so each statement below serves both. The macro instantiates the
//! same method bodies for each pool type; what differs (migrations, pool
//! options) lives outside it.

use async_trait::async_trait;
use uuid::Uuid;

use super::{AuditEvent, Backend, FailureCount, NewSession, NewUser, RevokedSession, Session, Store, StoreError, User};

const USER_COLUMNS: &str = "user_id, email, password_hash, name, active, created_at, updated_at";
const SESSION_COLUMNS: &str = "session_id, user_id, refresh_counter, created_at, last_rotated_at, expires_at, \
     revoked_at, revoked_reason, user_agent, ip";

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    pool: sqlx::PgPool,
}

impl PgStore {
    pub fn new(pool: sqlx::PgPool) -> Self {
        Self { pool }
    }
}

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    pool: sqlx::SqlitePool,
}

impl SqliteStore {
    pub fn new(pool: sqlx::SqlitePool) -> Self {
        Self { pool }
    }
}

fn sql(s: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(s)
}

macro_rules! impl_store {
    ($store:ty, $backend:expr, $migrations:literal) => {
        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> Backend {
                $backend
            }

            async fn migrate(&self) -> Result<(), StoreError> {
                sqlx::migrate!($migrations).run(&self.pool).await?;
                Ok(())
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("select 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn close(&self) {
                self.pool.close().await;
            }

            async fn create_user(&self, u: &NewUser) -> Result<User, StoreError> {
                let q = format!(
                    "insert into user_account (user_id, email, password_hash, name, active, created_at, updated_at) \
                     values ($1, $2, $3, $4, true, $5, $5) returning {USER_COLUMNS}"
                );
                Ok(sqlx::query_as::<_, User>(sql(q))
                    .bind(u.user_id)
                    .bind(&u.email)
                    .bind(&u.password_hash)
                    .bind(&u.name)
                    .bind(u.now)
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn find_user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
                let q = format!("select {USER_COLUMNS} from user_account where email = $1 and deleted_at is null");
                Ok(sqlx::query_as::<_, User>(sql(q)).bind(email).fetch_optional(&self.pool).await?)
            }

            async fn find_user(&self, user_id: Uuid) -> Result<Option<User>, StoreError> {
                let q = format!("select {USER_COLUMNS} from user_account where user_id = $1 and deleted_at is null");
                Ok(sqlx::query_as::<_, User>(sql(q)).bind(user_id).fetch_optional(&self.pool).await?)
            }

            async fn set_password_hash(&self, user_id: Uuid, hash: &str, now: i64) -> Result<(), StoreError> {
                sqlx::query("update user_account set password_hash = $2, updated_at = $3 where user_id = $1")
                    .bind(user_id)
                    .bind(hash)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn delete_user(&self, user_id: Uuid, now: i64) -> Result<Option<u64>, StoreError> {
                let mut tx = self.pool.begin().await?;
                let deleted = sqlx::query(
                    "update user_account set active = false, deleted_at = $2, updated_at = $2 \
                     where user_id = $1 and deleted_at is null",
                )
                .bind(user_id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if deleted == 0 {
                    return Ok(None);
                }
                let revoked = sqlx::query(
                    "update auth_session set revoked_at = $2, revoked_reason = 'account_deleted' \
                     where user_id = $1 and revoked_at is null",
                )
                .bind(user_id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(Some(revoked))
            }

            async fn set_user_active(&self, user_id: Uuid, active: bool, now: i64) -> Result<bool, StoreError> {
                let done = sqlx::query("update user_account set active = $2, updated_at = $3 where user_id = $1")
                    .bind(user_id)
                    .bind(active)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn change_password(
                &self,
                user_id: Uuid,
                hash: &str,
                keep_session: Uuid,
                now: i64,
            ) -> Result<u64, StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("update user_account set password_hash = $2, updated_at = $3 where user_id = $1")
                    .bind(user_id)
                    .bind(hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let revoked = sqlx::query(
                    "update auth_session set revoked_at = $3, revoked_reason = 'password_changed' \
                     where user_id = $1 and session_id <> $2 and revoked_at is null",
                )
                .bind(user_id)
                .bind(keep_session)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(revoked)
            }

            async fn create_session(&self, s: &NewSession) -> Result<Session, StoreError> {
                let q = format!(
                    "insert into auth_session (session_id, user_id, refresh_counter, created_at, last_rotated_at, \
                     expires_at, user_agent, ip) values ($1, $2, 0, $3, $3, $4, $5, $6) returning {SESSION_COLUMNS}"
                );
                Ok(sqlx::query_as::<_, Session>(sql(q))
                    .bind(s.session_id)
                    .bind(s.user_id)
                    .bind(s.now)
                    .bind(s.expires_at)
                    .bind(&s.user_agent)
                    .bind(&s.ip)
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn find_session(&self, session_id: Uuid) -> Result<Option<Session>, StoreError> {
                let q = format!("select {SESSION_COLUMNS} from auth_session where session_id = $1");
                Ok(sqlx::query_as::<_, Session>(sql(q)).bind(session_id).fetch_optional(&self.pool).await?)
            }

            async fn advance_refresh_counter(
                &self,
                session_id: Uuid,
                expected: i64,
                now: i64,
            ) -> Result<Option<i64>, StoreError> {
                // One statement: the row lock (PostgreSQL) or the database write
                // lock (SQLite) serialises racing rotations, and only the first
                // still finds `refresh_counter = expected`.
                let row: Option<(i64,)> = sqlx::query_as(
                    "update auth_session set refresh_counter = refresh_counter + 1, last_rotated_at = $3 \
                     where session_id = $1 and refresh_counter = $2 and revoked_at is null \
                     returning refresh_counter",
                )
                .bind(session_id)
                .bind(expected)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(c,)| c))
            }

            async fn revoke_session(&self, session_id: Uuid, reason: &str, now: i64) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "update auth_session set revoked_at = $2, revoked_reason = $3 \
                     where session_id = $1 and revoked_at is null",
                )
                .bind(session_id)
                .bind(now)
                .bind(reason)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn revoke_user_sessions(
                &self,
                user_id: Uuid,
                except: Option<Uuid>,
                reason: &str,
                now: i64,
            ) -> Result<u64, StoreError> {
                let done = sqlx::query(
                    "update auth_session set revoked_at = $3, revoked_reason = $4 \
                     where user_id = $1 and revoked_at is null and ($2 is null or session_id <> $2)",
                )
                .bind(user_id)
                .bind(except)
                .bind(now)
                .bind(reason)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }

            async fn revoked_sessions_since(
                &self,
                since: i64,
                limit: i64,
            ) -> Result<Vec<RevokedSession>, StoreError> {
                Ok(sqlx::query_as::<_, RevokedSession>(
                    "select session_id, revoked_at from auth_session \
                     where revoked_at is not null and revoked_at >= $1 \
                     order by revoked_at, session_id limit $2",
                )
                .bind(since)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn list_active_sessions(&self, user_id: Uuid, now: i64) -> Result<Vec<Session>, StoreError> {
                let q = format!(
                    "select {SESSION_COLUMNS} from auth_session \
                     where user_id = $1 and revoked_at is null and expires_at > $2 \
                     order by created_at desc, session_id desc"
                );
                Ok(sqlx::query_as::<_, Session>(sql(q)).bind(user_id).bind(now).fetch_all(&self.pool).await?)
            }

            async fn record_login_failure(&self, email: &str, now: i64, forget_before: i64) -> Result<(), StoreError> {
                sqlx::query("delete from login_failure where email = $1 and failed_at < $2")
                    .bind(email)
                    .bind(forget_before)
                    .execute(&self.pool)
                    .await?;
                sqlx::query("insert into login_failure (email, failed_at) values ($1, $2)")
                    .bind(email)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn login_failures_since(&self, email: &str, since: i64) -> Result<FailureCount, StoreError> {
                let (count, oldest): (i64, Option<i64>) = sqlx::query_as(
                    "select count(*), min(failed_at) from login_failure where email = $1 and failed_at > $2",
                )
                .bind(email)
                .bind(since)
                .fetch_one(&self.pool)
                .await?;
                Ok(FailureCount { count, oldest })
            }

            async fn clear_login_failures(&self, email: &str) -> Result<(), StoreError> {
                sqlx::query("delete from login_failure where email = $1").bind(email).execute(&self.pool).await?;
                Ok(())
            }

            async fn insert_audit_event(&self, e: &AuditEvent) -> Result<(), StoreError> {
                sqlx::query(
                    "insert into audit_event (audit_event_id, occurred_at, kind, user_id, email, session_id, ip, \
                     user_agent, detail) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(e.audit_event_id)
                .bind(e.occurred_at)
                .bind(&e.kind)
                .bind(e.user_id)
                .bind(&e.email)
                .bind(e.session_id)
                .bind(&e.ip)
                .bind(&e.user_agent)
                .bind(&e.detail)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_audit_events(
                &self,
                user_id: Option<Uuid>,
                limit: i64,
            ) -> Result<Vec<AuditEvent>, StoreError> {
                Ok(sqlx::query_as::<_, AuditEvent>(
                    "select audit_event_id, occurred_at, kind, user_id, email, session_id, ip, user_agent, detail \
                     from audit_event where ($1 is null or user_id = $1) \
                     order by occurred_at desc, audit_event_id desc limit $2",
                )
                .bind(user_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }
        }
    };
}

impl_store!(PgStore, Backend::Postgres, "migrations/postgres");
impl_store!(SqliteStore, Backend::Sqlite, "migrations/sqlite");
