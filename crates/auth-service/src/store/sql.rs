//! The SQL of the auth store, written once for both backends.
//!
//! PostgreSQL and SQLite both accept `$n` placeholders, `returning`, partial
//! indexes and the types used here (uuid/blob ids, bigint unix seconds, text,
//! boolean), so each statement below serves both. The macro instantiates the
//! same method bodies for each pool type; what differs (migrations, pool
//! options) lives outside it.

use async_trait::async_trait;
use uuid::Uuid;

use super::{
    AuditEvent, Backend, FailureCount, MfaChallenge, NewSession, NewUser, PoolStats, RevokedSession, SealedTotpSecret,
    Session, Store, StoreError, TotpEnrolment, User,
};

const USER_COLUMNS: &str = "user_id, email, password_hash, name, active, created_at, updated_at, email_verified_at";
const TOTP_COLUMNS: &str = "user_id, key_id, nonce, ciphertext, confirmed_at, last_used_step, created_at, updated_at";
const CHALLENGE_COLUMNS: &str = "mfa_challenge_id, user_id, token_hash, created_at, expires_at, used_at, attempts";
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

/// Revokes a user's live sessions (all, or all but `except`) on any
/// executor — the pool, or the transaction of a delete, a password change or
/// a reset — and evaluates to the revoked session ids.
macro_rules! revoke_user_sessions {
    ($executor:expr, $user_id:expr, $except:expr, $reason:expr, $now:expr) => {
        sqlx::query_as::<_, (Uuid,)>(
            "update auth_session set revoked_at = $3, revoked_reason = $4 \
             where user_id = $1 and revoked_at is null and ($2 is null or session_id <> $2) \
             returning session_id",
        )
        .bind($user_id)
        .bind($except)
        .bind($now)
        .bind($reason)
        .fetch_all($executor)
        .await
        .map(|rows| rows.into_iter().map(|(id,)| id).collect::<Vec<Uuid>>())
    };
}

mod recovery;

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

            fn pool_stats(&self) -> PoolStats {
                PoolStats { open: self.pool.size(), idle: self.pool.num_idle() }
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

            async fn delete_user(&self, user_id: Uuid, now: i64) -> Result<Option<Vec<Uuid>>, StoreError> {
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
                let revoked = revoke_user_sessions!(&mut *tx, user_id, None::<Uuid>, "account_deleted", now)?;
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
            ) -> Result<Vec<Uuid>, StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("update user_account set password_hash = $2, updated_at = $3 where user_id = $1")
                    .bind(user_id)
                    .bind(hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let revoked = revoke_user_sessions!(&mut *tx, user_id, Some(keep_session), "password_changed", now)?;
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
            ) -> Result<Vec<Uuid>, StoreError> {
                Ok(revoke_user_sessions!(&self.pool, user_id, except, reason, now)?)
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

            async fn list_audit_events_since(
                &self,
                user_id: Option<Uuid>,
                since: i64,
                limit: i64,
            ) -> Result<Vec<AuditEvent>, StoreError> {
                Ok(sqlx::query_as::<_, AuditEvent>(
                    "select audit_event_id, occurred_at, kind, user_id, email, session_id, ip, user_agent, detail \
                     from audit_event where ($1 is null or user_id = $1) and occurred_at >= $2 \
                     order by occurred_at desc, audit_event_id desc limit $3",
                )
                .bind(user_id)
                .bind(since)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn list_users(&self, limit: i64, offset: i64) -> Result<Vec<User>, StoreError> {
                let q = format!(
                    "select {USER_COLUMNS} from user_account where deleted_at is null \
                     order by created_at, user_id limit $1 offset $2"
                );
                Ok(sqlx::query_as::<_, User>(sql(q)).bind(limit).bind(offset).fetch_all(&self.pool).await?)
            }

            async fn find_totp(&self, user_id: Uuid) -> Result<Option<TotpEnrolment>, StoreError> {
                let q = format!("select {TOTP_COLUMNS} from user_mfa_totp where user_id = $1");
                Ok(sqlx::query_as::<_, TotpEnrolment>(sql(q)).bind(user_id).fetch_optional(&self.pool).await?)
            }

            async fn begin_totp_setup(&self, s: &SealedTotpSecret, now: i64) -> Result<bool, StoreError> {
                // The `where` of the upsert leaves a confirmed enrolment alone:
                // a second setup cannot silently replace a working factor.
                let done = sqlx::query(
                    "insert into user_mfa_totp (user_id, key_id, nonce, ciphertext, confirmed_at, last_used_step, \
                     created_at, updated_at) values ($1, $2, $3, $4, null, 0, $5, $5) \
                     on conflict (user_id) do update set key_id = excluded.key_id, nonce = excluded.nonce, \
                     ciphertext = excluded.ciphertext, created_at = excluded.created_at, \
                     updated_at = excluded.updated_at \
                     where user_mfa_totp.confirmed_at is null",
                )
                .bind(s.user_id)
                .bind(&s.key_id)
                .bind(&s.nonce)
                .bind(&s.ciphertext)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn confirm_totp(
                &self,
                user_id: Uuid,
                step: i64,
                recovery_code_hashes: &[String],
                now: i64,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let confirmed = sqlx::query(
                    "update user_mfa_totp set confirmed_at = $3, last_used_step = $2, updated_at = $3 \
                     where user_id = $1 and confirmed_at is null and last_used_step < $2",
                )
                .bind(user_id)
                .bind(step)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if confirmed == 0 {
                    return Ok(false);
                }
                sqlx::query("delete from mfa_recovery_code where user_id = $1").bind(user_id).execute(&mut *tx).await?;
                for hash in recovery_code_hashes {
                    sqlx::query(
                        "insert into mfa_recovery_code (mfa_recovery_code_id, user_id, code_hash, created_at) \
                         values ($1, $2, $3, $4)",
                    )
                    .bind(Uuid::now_v7())
                    .bind(user_id)
                    .bind(hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn use_totp_step(&self, user_id: Uuid, step: i64, now: i64) -> Result<bool, StoreError> {
                // One statement: the row lock (PostgreSQL) or the write lock
                // (SQLite) serialises racing verifications of one code, and
                // only the first still finds `last_used_step < step`.
                let done = sqlx::query(
                    "update user_mfa_totp set last_used_step = $2, updated_at = $3 \
                     where user_id = $1 and confirmed_at is not null and last_used_step < $2",
                )
                .bind(user_id)
                .bind(step)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn reseal_totp_secret(
                &self,
                old_nonce: &[u8],
                s: &SealedTotpSecret,
                now: i64,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "update user_mfa_totp set key_id = $2, nonce = $3, ciphertext = $4, updated_at = $5 \
                     where user_id = $1 and nonce = $6",
                )
                .bind(s.user_id)
                .bind(&s.key_id)
                .bind(&s.nonce)
                .bind(&s.ciphertext)
                .bind(now)
                .bind(old_nonce)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_totp(&self, user_id: Uuid) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let deleted = sqlx::query("delete from user_mfa_totp where user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query("delete from mfa_recovery_code where user_id = $1").bind(user_id).execute(&mut *tx).await?;
                sqlx::query("delete from mfa_challenge where user_id = $1").bind(user_id).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(deleted == 1)
            }

            async fn use_recovery_code(&self, user_id: Uuid, code_hash: &str, now: i64) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "update mfa_recovery_code set used_at = $3 \
                     where user_id = $1 and code_hash = $2 and used_at is null",
                )
                .bind(user_id)
                .bind(code_hash)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn count_unused_recovery_codes(&self, user_id: Uuid) -> Result<i64, StoreError> {
                let (count,): (i64,) =
                    sqlx::query_as("select count(*) from mfa_recovery_code where user_id = $1 and used_at is null")
                        .bind(user_id)
                        .fetch_one(&self.pool)
                        .await?;
                Ok(count)
            }

            async fn create_mfa_challenge(&self, c: &MfaChallenge, now: i64) -> Result<(), StoreError> {
                sqlx::query("delete from mfa_challenge where expires_at < $1").bind(now).execute(&self.pool).await?;
                sqlx::query(
                    "insert into mfa_challenge (mfa_challenge_id, user_id, token_hash, created_at, expires_at, \
                     used_at, attempts) values ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(c.mfa_challenge_id)
                .bind(c.user_id)
                .bind(&c.token_hash)
                .bind(c.created_at)
                .bind(c.expires_at)
                .bind(c.used_at)
                .bind(c.attempts)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn claim_mfa_attempt(
                &self,
                token_hash: &str,
                now: i64,
                max_attempts: i64,
            ) -> Result<Option<MfaChallenge>, StoreError> {
                let q = format!(
                    "update mfa_challenge set attempts = attempts + 1 \
                     where token_hash = $1 and used_at is null and expires_at > $2 and attempts < $3 \
                     returning {CHALLENGE_COLUMNS}"
                );
                Ok(sqlx::query_as::<_, MfaChallenge>(sql(q))
                    .bind(token_hash)
                    .bind(now)
                    .bind(max_attempts)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn spend_mfa_challenge(&self, mfa_challenge_id: Uuid, now: i64) -> Result<bool, StoreError> {
                let done =
                    sqlx::query("update mfa_challenge set used_at = $2 where mfa_challenge_id = $1 and used_at is null")
                        .bind(mfa_challenge_id)
                        .bind(now)
                        .execute(&self.pool)
                        .await?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

impl_store!(PgStore, Backend::Postgres, "migrations/postgres");
impl_store!(SqliteStore, Backend::Sqlite, "migrations/sqlite");
