//! The SQL of [`RecoveryStore`], shared by both backends except the claim of
//! due mails: PostgreSQL locks the rows it claims with `for update skip
//! locked` so concurrent senders (several auth instances) pass over each
//! other's rows; SQLite has no row locks and needs none, because its single
//! writer runs the claim statement atomically.

use async_trait::async_trait;
use uuid::Uuid;

use super::super::recovery::{
    MailStatus, NewEmailToken, NewMail, PasswordReset, QueuedMail, RecoveryStore, TokenPurpose,
};
use super::{PgStore, SqliteStore, StoreError};

const QUEUED_COLUMNS: &str = "mail_id, kind, recipient, subject, body, user_id, created_at, expires_at, attempts";

const DUE: &str = "sent_at is null and failed_at is null and next_attempt_at <= $1 \
     and (locked_until is null or locked_until <= $1)";

fn claim_sql(lock: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!(
        "update mail_outbox set attempts = attempts + 1, locked_until = $2 \
         where mail_id in (select mail_id from mail_outbox where {DUE} \
         order by next_attempt_at, mail_id limit $3 {lock}) \
         returning {QUEUED_COLUMNS}"
    ))
}

macro_rules! insert_mail {
    ($mail:expr, $executor:expr) => {
        sqlx::query(
            "insert into mail_outbox (mail_id, kind, recipient, subject, body, user_id, created_at, expires_at, \
             attempts, next_attempt_at) values ($1, $2, $3, $4, $5, $6, $7, $8, 0, $7)",
        )
        .bind($mail.mail_id)
        .bind(&$mail.kind)
        .bind(&$mail.recipient)
        .bind(&$mail.subject)
        .bind(&$mail.body)
        .bind($mail.user_id)
        .bind($mail.created_at)
        .bind($mail.expires_at)
        .execute($executor)
        .await?
    };
}

macro_rules! impl_recovery_store {
    ($store:ty, $claim_lock:literal) => {
        #[async_trait]
        impl RecoveryStore for $store {
            async fn issue_email_token(&self, token: &NewEmailToken, mail: &NewMail) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "update email_token set used_at = $3 where user_id = $1 and purpose = $2 and used_at is null",
                )
                .bind(token.user_id)
                .bind(token.purpose.as_str())
                .bind(token.created_at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "insert into email_token (email_token_id, user_id, purpose, token_hash, created_at, expires_at) \
                     values ($1, $2, $3, $4, $5, $6)",
                )
                .bind(token.email_token_id)
                .bind(token.user_id)
                .bind(token.purpose.as_str())
                .bind(&token.token_hash)
                .bind(token.created_at)
                .bind(token.expires_at)
                .execute(&mut *tx)
                .await?;
                insert_mail!(mail, &mut *tx);
                tx.commit().await?;
                Ok(())
            }

            async fn enqueue_mail(&self, mail: &NewMail) -> Result<(), StoreError> {
                insert_mail!(mail, &self.pool);
                Ok(())
            }

            async fn find_email_token(
                &self,
                token_hash: &str,
                purpose: TokenPurpose,
                now: i64,
            ) -> Result<Option<Uuid>, StoreError> {
                let row: Option<(Uuid,)> = sqlx::query_as(
                    "select user_id from email_token \
                     where token_hash = $1 and purpose = $2 and used_at is null and expires_at > $3",
                )
                .bind(token_hash)
                .bind(purpose.as_str())
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(u,)| u))
            }

            async fn reset_password(
                &self,
                token_hash: &str,
                password_hash: &str,
                now: i64,
            ) -> Result<Option<PasswordReset>, StoreError> {
                let mut tx = self.pool.begin().await?;
                // The spend: of concurrent uses of one token, one finds it unspent.
                let spent: Option<(Uuid,)> = sqlx::query_as(
                    "update email_token set used_at = $2 \
                     where token_hash = $1 and purpose = 'password_reset' and used_at is null and expires_at > $2 \
                     returning user_id",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((user_id,)) = spent else {
                    return Ok(None);
                };
                let updated = sqlx::query(
                    "update user_account set password_hash = $2, updated_at = $3, \
                     email_verified_at = coalesce(email_verified_at, $3) \
                     where user_id = $1 and deleted_at is null",
                )
                .bind(user_id)
                .bind(password_hash)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    return Ok(None);
                }
                sqlx::query(
                    "update email_token set used_at = $2 \
                     where user_id = $1 and purpose = 'password_reset' and used_at is null",
                )
                .bind(user_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let revoked_sessions = revoke_user_sessions!(&mut *tx, user_id, None::<Uuid>, "password_reset", now)?;
                tx.commit().await?;
                Ok(Some(PasswordReset { user_id, revoked_sessions }))
            }

            async fn verify_email(&self, token_hash: &str, now: i64) -> Result<Option<Uuid>, StoreError> {
                let mut tx = self.pool.begin().await?;
                let spent: Option<(Uuid,)> = sqlx::query_as(
                    "update email_token set used_at = $2 \
                     where token_hash = $1 and purpose = 'email_verification' and used_at is null \
                     and expires_at > $2 returning user_id",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((user_id,)) = spent else {
                    return Ok(None);
                };
                let updated = sqlx::query(
                    "update user_account set email_verified_at = coalesce(email_verified_at, $2), updated_at = $2 \
                     where user_id = $1 and deleted_at is null",
                )
                .bind(user_id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    return Ok(None);
                }
                tx.commit().await?;
                Ok(Some(user_id))
            }

            async fn mark_email_verified(&self, user_id: Uuid, now: i64) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "update user_account set email_verified_at = coalesce(email_verified_at, $2), updated_at = $2 \
                     where user_id = $1 and deleted_at is null",
                )
                .bind(user_id)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn count_mails_since(&self, recipient: &str, since: i64) -> Result<i64, StoreError> {
                let (count,): (i64,) =
                    sqlx::query_as("select count(*) from mail_outbox where recipient = $1 and created_at >= $2")
                        .bind(recipient)
                        .bind(since)
                        .fetch_one(&self.pool)
                        .await?;
                Ok(count)
            }

            async fn claim_due_mails(
                &self,
                now: i64,
                lease_until: i64,
                limit: i64,
            ) -> Result<Vec<QueuedMail>, StoreError> {
                Ok(sqlx::query_as::<_, QueuedMail>(claim_sql($claim_lock))
                    .bind(now)
                    .bind(lease_until)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn mark_mail_sent(&self, mail_id: Uuid, now: i64) -> Result<(), StoreError> {
                sqlx::query(
                    "update mail_outbox set sent_at = $2, body = '', locked_until = null, last_error = null \
                     where mail_id = $1",
                )
                .bind(mail_id)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn reschedule_mail(&self, mail_id: Uuid, retry_at: i64, error: &str) -> Result<(), StoreError> {
                sqlx::query(
                    "update mail_outbox set next_attempt_at = $2, locked_until = null, last_error = $3 \
                     where mail_id = $1 and sent_at is null",
                )
                .bind(mail_id)
                .bind(retry_at)
                .bind(error)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn give_up_mail(&self, mail_id: Uuid, now: i64, error: &str) -> Result<(), StoreError> {
                sqlx::query(
                    "update mail_outbox set failed_at = $2, body = '', locked_until = null, last_error = $3 \
                     where mail_id = $1 and sent_at is null",
                )
                .bind(mail_id)
                .bind(now)
                .bind(error)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn purge_recovery_rows(&self, before: i64) -> Result<u64, StoreError> {
                let mails = sqlx::query(
                    "delete from mail_outbox where (sent_at is not null and sent_at < $1) \
                     or (failed_at is not null and failed_at < $1)",
                )
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected();
                let tokens = sqlx::query("delete from email_token where expires_at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(mails + tokens)
            }

            async fn list_mails(&self, recipient: &str) -> Result<Vec<MailStatus>, StoreError> {
                Ok(sqlx::query_as::<_, MailStatus>(
                    "select mail_id, kind, recipient, attempts, next_attempt_at, sent_at, failed_at, last_error, \
                     body <> '' as has_body from mail_outbox where recipient = $1 order by created_at, mail_id",
                )
                .bind(recipient)
                .fetch_all(&self.pool)
                .await?)
            }
        }
    };
}

impl_recovery_store!(PgStore, "for update skip locked");
impl_recovery_store!(SqliteStore, "");
