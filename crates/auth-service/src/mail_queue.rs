//! The outgoing-mail queue: mail is written to the `mail_outbox` table by the
//! request (in the same transaction as the token it carries) and sent by a
//! background sender, so an SMTP outage loses nothing and never blocks or
//! fails a request.
//!
//! The sender ([`run_sender`], spawned by [`crate::serve`] and stopped by its
//! shutdown token) wakes when a request queues mail and otherwise every
//! `poll_interval`. It claims due rows with a lease ([`LEASE_SECS`]): a
//! sender that dies mid-send leaves its rows to another after the lease, and
//! on PostgreSQL concurrent senders (several auth instances) skip each
//! other's rows (`for update skip locked`). A failed attempt is retried after
//! `retry_base_secs`, doubling each time (capped at an hour); after
//! `max_attempts` attempts, or once the link in it has expired, the mail is
//! given up: logged as an error and audited (`mail_given_up`). A sent or
//! given-up mail keeps its row (for the per-address throttle and for
//! diagnostics) but loses its body, so the link it carried is nowhere in the
//! database; finished rows are purged after [`RETAIN_SECS`].
//!
//! The body holds the link, so it is stored sealed (AES-256-GCM under
//! `MFA_ENCRYPTION_KEY`, bound to the mail id) when that key is configured,
//! as it is in production and development: a database dump, or a raw copy of
//! the SQLite file, holds no working link even for mail not yet sent.
//!
//! Delivery is at least once: a crash between the SMTP server's acceptance
//! and the `sent_at` write sends the mail again after the lease. Both copies
//! carry the same `Message-ID` and the same link.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use tokens::sealed::{SealError, Sealed, SealingKeys};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::audit::{self, Event, EventKind};
use crate::http::ClientInfo;
use crate::mailer::{Mailbox, Mailer, OutgoingMail};
use crate::state::AppState;
use crate::store::recovery::QueuedMail;

/// How long a claimed mail stays leased to its sender.
pub const LEASE_SECS: i64 = 120;
/// How long finished mails and expired tokens are kept.
pub const RETAIN_SECS: i64 = 7 * 86_400;
/// Mails claimed per round.
const BATCH: i64 = 16;
/// The longest wait between two attempts of one mail.
const MAX_BACKOFF_SECS: i64 = 3600;
/// How long one attempt may take (the SMTP conversation has its own, shorter timeout).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Mail settings of the auth service. Without them (`AuthConfig::mail` is
/// `None`) nothing is queued: forgot-password and resend still answer 202,
/// and registration sends no verification mail.
#[derive(Debug, Clone)]
pub struct MailSettings {
    pub mailer: Arc<dyn Mailer>,
    /// `MAIL_FROM`.
    pub from: Mailbox,
    /// `PUBLIC_URL`, without a trailing slash: links point at
    /// `<PUBLIC_URL>/reset-password#token=…` and `<PUBLIC_URL>/verify-email#token=…`.
    pub public_url: String,
    /// How long a password-reset link works (30 minutes).
    pub reset_token_ttl_secs: i64,
    /// How long a verification link works (24 hours: it is sent at
    /// registration, and people do not always read mail at once).
    pub verification_token_ttl_secs: i64,
    /// `MAIL_MAX_PER_ADDRESS_PER_HOUR`: mails queued for one address in an
    /// hour beyond which further requests are silently ignored.
    pub max_per_address_per_hour: i64,
    /// `MAIL_MAX_ATTEMPTS`: attempts before a mail is given up.
    pub max_attempts: i64,
    /// `MAIL_RETRY_BASE`: seconds before the first retry; doubles each time.
    pub retry_base_secs: i64,
    /// How often the sender looks for due mail when nothing woke it.
    pub poll_interval: Duration,
}

impl MailSettings {
    /// The documented defaults around `mailer`, `from` and `public_url`.
    pub fn new(mailer: Arc<dyn Mailer>, from: Mailbox, public_url: &str) -> Self {
        Self {
            mailer,
            from,
            public_url: public_url.trim_end_matches('/').to_owned(),
            reset_token_ttl_secs: 30 * 60,
            verification_token_ttl_secs: 24 * 3600,
            max_per_address_per_hour: 5,
            max_attempts: 8,
            retry_base_secs: 10,
            poll_interval: Duration::from_secs(5),
        }
    }

    /// Seconds to wait after the `attempts`-th failed attempt.
    pub fn backoff_secs(&self, attempts: i64) -> i64 {
        let exponent = u32::try_from((attempts - 1).clamp(0, 20)).unwrap_or(20);
        self.retry_base_secs.max(1).saturating_mul(1_i64 << exponent).min(MAX_BACKOFF_SECS)
    }
}

/// Sends queued mail until `shutdown` fires; returns at once when mail is
/// not configured.
pub async fn run_sender(state: AppState, shutdown: CancellationToken) {
    let Some(settings) = state.config.mail.clone() else { return };
    tracing::info!(mailer = ?settings.mailer, "mail sender started");
    let mut last_purge = i64::MIN;
    while !shutdown.is_cancelled() {
        let now = state.now();
        if now.saturating_sub(last_purge) >= 3600 {
            last_purge = now;
            match state.store.purge_recovery_rows(now - RETAIN_SECS).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "purged finished mails and expired tokens"),
                Err(e) => tracing::warn!(error = %e, "could not purge finished mails"),
            }
        }
        let batch = match state.store.claim_due_mails(now, now + LEASE_SECS, BATCH).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the mail queue; retrying");
                Vec::new()
            }
        };
        let full = i64::try_from(batch.len()).unwrap_or(i64::MAX) >= BATCH;
        for mail in batch {
            if shutdown.is_cancelled() {
                // Unsent rows stay leased and are taken up again after the lease.
                break;
            }
            deliver(&state, &settings, mail).await;
        }
        if full {
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = state.mail_wake.notified() => {}
            () = tokio::time::sleep(settings.poll_interval) => {}
        }
    }
    tracing::info!("mail sender stopped");
}

const SEALED_PREFIX: &str = "sealed:v1:";

fn body_context(mail_id: Uuid) -> Vec<u8> {
    [b"gatehouse mail body\0".as_slice(), mail_id.as_bytes()].concat()
}

/// The body as stored: sealed under `keys` (bound to `mail_id`) when there
/// are keys, else as it is.
///
/// # Errors
/// [`SealError`] when encryption fails.
pub fn seal_body(keys: Option<&SealingKeys>, mail_id: Uuid, body: &str) -> Result<String, SealError> {
    let Some(keys) = keys else { return Ok(body.to_owned()) };
    let sealed = keys.seal(body.as_bytes(), &body_context(mail_id))?;
    Ok(format!(
        "{SEALED_PREFIX}{}:{}:{}",
        sealed.key_id,
        STANDARD_NO_PAD.encode(&sealed.nonce),
        STANDARD_NO_PAD.encode(&sealed.ciphertext)
    ))
}

/// The body to send, from what [`seal_body`] stored.
fn open_body(keys: Option<&SealingKeys>, mail_id: Uuid, stored: &str) -> Result<String, &'static str> {
    let Some(rest) = stored.strip_prefix(SEALED_PREFIX) else { return Ok(stored.to_owned()) };
    let keys = keys.ok_or("the body is sealed and MFA_ENCRYPTION_KEY is not configured")?;
    let mut parts = rest.rsplitn(3, ':');
    let (Some(ciphertext), Some(nonce), Some(key_id)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("the sealed body is malformed");
    };
    let decode = |s: &str| STANDARD_NO_PAD.decode(s).map_err(|_| "the sealed body is malformed");
    let sealed = Sealed { key_id: key_id.to_owned(), nonce: decode(nonce)?, ciphertext: decode(ciphertext)? };
    let opened =
        keys.open(&sealed, &body_context(mail_id)).map_err(|_| "the body does not open with the configured keys")?;
    String::from_utf8(opened.plaintext).map_err(|_| "the sealed body is not text")
}

async fn deliver(state: &AppState, settings: &MailSettings, mail: QueuedMail) {
    let now = state.now();
    if mail.expires_at <= now {
        give_up(state, &mail, "the link in it expired before it could be sent").await;
        return;
    }
    let body = match open_body(state.config.mfa_keys.as_ref(), mail.mail_id, &mail.body) {
        Ok(body) => body,
        Err(reason) => {
            give_up(state, &mail, reason).await;
            return;
        }
    };
    let outgoing = OutgoingMail {
        mail_id: mail.mail_id,
        from: &settings.from,
        to: &mail.recipient,
        subject: &mail.subject,
        body: &body,
    };
    let result = match tokio::time::timeout(SEND_TIMEOUT, settings.mailer.send(&outgoing)).await {
        Ok(result) => result.map_err(|e| e.0),
        Err(_) => Err("timed out".to_owned()),
    };
    match result {
        Ok(()) => {
            tracing::info!(mail_id = %mail.mail_id, kind = mail.kind, attempts = mail.attempts, "mail sent");
            if let Err(e) = state.store.mark_mail_sent(mail.mail_id, state.now()).await {
                // It stays leased and is sent again after the lease: at least once.
                tracing::error!(error = %e, mail_id = %mail.mail_id, "mail sent but not marked sent");
            }
        }
        Err(reason) if mail.attempts >= settings.max_attempts => {
            give_up(state, &mail, &format!("{} attempts failed; last: {reason}", mail.attempts)).await;
        }
        Err(reason) => {
            let wait = settings.backoff_secs(mail.attempts);
            tracing::warn!(
                mail_id = %mail.mail_id,
                kind = mail.kind,
                attempt = mail.attempts,
                retry_in_secs = wait,
                error = %reason,
                "mail not sent; will retry"
            );
            if let Err(e) = state.store.reschedule_mail(mail.mail_id, state.now() + wait, &reason).await {
                tracing::error!(error = %e, mail_id = %mail.mail_id, "could not reschedule the mail; retried after its lease");
            }
        }
    }
}

async fn give_up(state: &AppState, mail: &QueuedMail, reason: &str) {
    tracing::error!(mail_id = %mail.mail_id, kind = mail.kind, attempts = mail.attempts, reason, "mail given up");
    if let Err(e) = state.store.give_up_mail(mail.mail_id, state.now(), reason).await {
        tracing::error!(error = %e, mail_id = %mail.mail_id, "could not mark the mail given up");
    }
    let event = Event {
        user_id: mail.user_id,
        email: Some(&mail.recipient),
        detail: Some(format!("{} mail {}: {reason}", mail.kind, mail.mail_id)),
        ..Event::default()
    };
    audit::record(state, EventKind::MailGivenUp, &ClientInfo::default(), event).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailer::{FileMailer, parse_mailbox};

    #[test]
    fn bodies_are_sealed_to_their_mail() {
        let keys = SealingKeys::new(tokens::sealed::SealingKey::generate("k1").unwrap(), vec![]).unwrap();
        let id = Uuid::now_v7();
        let stored = seal_body(Some(&keys), id, "the link token=abc").unwrap();
        assert!(!stored.contains("token=abc"));
        assert_eq!(open_body(Some(&keys), id, &stored).unwrap(), "the link token=abc");
        assert!(open_body(Some(&keys), Uuid::now_v7(), &stored).is_err(), "bound to the mail id");
        assert!(open_body(None, id, &stored).is_err());
        assert_eq!(seal_body(None, id, "plain").unwrap(), "plain");
        assert_eq!(open_body(Some(&keys), id, "plain").unwrap(), "plain");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mailer: Arc<dyn Mailer> = Arc::new(FileMailer::new("/nonexistent".into()));
        let s = MailSettings::new(mailer, parse_mailbox("a@example.com").unwrap(), "http://x/");
        assert_eq!(s.public_url, "http://x");
        let waits: Vec<i64> = (1..=10).map(|a| s.backoff_secs(a)).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]);
        assert_eq!(s.backoff_secs(1000), 3600);
    }
}
