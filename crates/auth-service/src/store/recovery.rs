//! Storage for password reset and email verification: single-use emailed
//! tokens and the outgoing-mail queue (outbox).
//!
//! Invariants kept for callers:
//! - a token and the mail that carries it are written in one transaction
//!   ([`RecoveryStore::issue_email_token`]), so a token never exists without
//!   its mail and a crash loses neither;
//! - a token is spent by one conditional `update … where used_at is null and
//!   expires_at > now`, inside the same transaction as what it authorises
//!   (the new password and the revocation of every session; the verified
//!   mark), so of two concurrent uses exactly one succeeds;
//! - a mail is claimed with a lease (`locked_until`): PostgreSQL claims with
//!   `for update skip locked`, so several auth instances never take the same
//!   row; SQLite has a single writer, so its claim statement is atomic alone.

use uuid::Uuid;

use super::StoreError;

/// What an emailed token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    PasswordReset,
    EmailVerification,
}

impl TokenPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::EmailVerification => "email_verification",
        }
    }
}

/// A token to store: only its hash.
#[derive(Debug, Clone)]
pub struct NewEmailToken {
    pub email_token_id: Uuid,
    pub user_id: Uuid,
    pub purpose: TokenPurpose,
    /// SHA-256 (hex) of the token; the token itself is never stored.
    pub token_hash: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A mail to queue.
#[derive(Clone)]
pub struct NewMail {
    pub mail_id: Uuid,
    /// What the mail is (`password_reset`, `email_verification`), for logs and audit.
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    /// Plain text; holds the link (and so the token) until the mail is sent.
    pub body: String,
    pub user_id: Option<Uuid>,
    pub created_at: i64,
    /// Not sent after this (the link it carries has expired by then).
    pub expires_at: i64,
}

impl std::fmt::Debug for NewMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewMail").field("mail_id", &self.mail_id).field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// A mail claimed for sending. `Debug` leaves the body (the link) out.
#[derive(Clone, sqlx::FromRow)]
pub struct QueuedMail {
    pub mail_id: Uuid,
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub user_id: Option<Uuid>,
    pub created_at: i64,
    pub expires_at: i64,
    /// Attempts so far, this one included.
    pub attempts: i64,
}

impl std::fmt::Debug for QueuedMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedMail")
            .field("mail_id", &self.mail_id)
            .field("kind", &self.kind)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// A row of the outbox as it stands, for tests and operators. No body.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MailStatus {
    pub mail_id: Uuid,
    pub kind: String,
    pub recipient: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub sent_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub last_error: Option<String>,
    /// Whether the body (with its link) is still stored.
    pub has_body: bool,
}

/// What a successful password reset did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordReset {
    pub user_id: Uuid,
    /// Every session of the user, now revoked.
    pub revoked_sessions: Vec<Uuid>,
}

/// Persistence of emailed tokens and the mail queue. All times are unix seconds.
#[async_trait::async_trait]
pub trait RecoveryStore: Send + Sync {
    /// In one transaction: spends the user's unused tokens of the same
    /// purpose, stores `token`, and queues `mail` (due at once).
    async fn issue_email_token(&self, token: &NewEmailToken, mail: &NewMail) -> Result<(), StoreError>;
    /// Queues a mail that carries no token.
    async fn enqueue_mail(&self, mail: &NewMail) -> Result<(), StoreError>;
    /// The user of an unspent, unexpired token of `purpose`, without spending it.
    async fn find_email_token(
        &self,
        token_hash: &str,
        purpose: TokenPurpose,
        now: i64,
    ) -> Result<Option<Uuid>, StoreError>;
    /// In one transaction: spends the reset token (if unspent and unexpired),
    /// sets the password hash, marks the email verified (the link proved the
    /// mailbox), spends the user's other reset tokens and revokes every
    /// session of the user. `None` (and nothing written) when the token was
    /// unknown, spent or expired.
    async fn reset_password(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<Option<PasswordReset>, StoreError>;
    /// In one transaction: spends the verification token and marks the
    /// user's email verified; the user, or `None` when the token was unknown,
    /// spent or expired.
    async fn verify_email(&self, token_hash: &str, now: i64) -> Result<Option<Uuid>, StoreError>;
    /// Marks the email verified (operator); `false` if there is no such user.
    async fn mark_email_verified(&self, user_id: Uuid, now: i64) -> Result<bool, StoreError>;

    /// Mails queued for `recipient` at or after `since`, sent or not: the
    /// per-address throttle.
    async fn count_mails_since(&self, recipient: &str, since: i64) -> Result<i64, StoreError>;
    /// Claims up to `limit` due mails (unsent, not given up, not leased,
    /// `next_attempt_at <= now`), oldest due first: leases them until
    /// `lease_until` and counts one attempt on each.
    async fn claim_due_mails(&self, now: i64, lease_until: i64, limit: i64) -> Result<Vec<QueuedMail>, StoreError>;
    /// Records the mail sent and forgets its body.
    async fn mark_mail_sent(&self, mail_id: Uuid, now: i64) -> Result<(), StoreError>;
    /// Records a failed attempt: due again at `retry_at`.
    async fn reschedule_mail(&self, mail_id: Uuid, retry_at: i64, error: &str) -> Result<(), StoreError>;
    /// Gives the mail up (attempts exhausted or expired) and forgets its body.
    async fn give_up_mail(&self, mail_id: Uuid, now: i64, error: &str) -> Result<(), StoreError>;
    /// Deletes finished mails (sent or given up) and tokens that expired
    /// before `before`; returns the rows deleted.
    async fn purge_recovery_rows(&self, before: i64) -> Result<u64, StoreError>;
    /// Every mail to `recipient`, oldest first (tests, diagnostics).
    async fn list_mails(&self, recipient: &str) -> Result<Vec<MailStatus>, StoreError>;
}
