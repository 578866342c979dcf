//! The storage contract of password reset, email verification and the mail
//! queue ([`auth_service::store::RecoveryStore`]), run unchanged against
//! PostgreSQL and SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;

use auth_service::store::recovery::{NewEmailToken, NewMail, TokenPurpose};
use auth_service::store::{self, NewSession, NewUser, Store};
use testkit::{Backend, TestDatabase, backend_tests};
use uuid::Uuid;

async fn open(backend: Backend) -> (Arc<dyn Store>, TestDatabase) {
    let db = TestDatabase::new(backend).await;
    let s = store::connect(db.target.clone(), store::PoolSettings::default()).await.unwrap();
    (s, db)
}

async fn user(s: &Arc<dyn Store>, email: &str) -> Uuid {
    let new = NewUser {
        user_id: Uuid::now_v7(),
        email: email.to_owned(),
        password_hash: "old-hash".into(),
        name: "N".into(),
        now: 1000,
    };
    s.create_user(&new).await.unwrap().user_id
}

async fn session(s: &Arc<dyn Store>, user_id: Uuid) -> Uuid {
    let new =
        NewSession { session_id: Uuid::now_v7(), user_id, now: 1000, expires_at: 100_000, user_agent: None, ip: None };
    s.create_session(&new).await.unwrap().session_id
}

fn token(user_id: Uuid, purpose: TokenPurpose, hash: &str, now: i64, ttl: i64) -> NewEmailToken {
    NewEmailToken {
        email_token_id: Uuid::now_v7(),
        user_id,
        purpose,
        token_hash: hash.to_owned(),
        created_at: now,
        expires_at: now + ttl,
    }
}

fn mail(recipient: &str, user_id: Option<Uuid>, now: i64) -> NewMail {
    NewMail {
        mail_id: Uuid::now_v7(),
        kind: "password_reset".into(),
        recipient: recipient.to_owned(),
        subject: "Subject".into(),
        body: "a link with a token".into(),
        user_id,
        created_at: now,
        expires_at: now + 1800,
    }
}

async fn a_reset_token_is_spent_once_sets_the_password_and_revokes_every_session(backend: Backend) {
    let (s, _db) = open(backend).await;
    let u = user(&s, "r@example.com").await;
    let sessions = [session(&s, u).await, session(&s, u).await];
    let bystander = user(&s, "b@example.com").await;
    let bystander_session = session(&s, bystander).await;
    s.issue_email_token(
        &token(u, TokenPurpose::PasswordReset, "h1", 1000, 1800),
        &mail("r@example.com", Some(u), 1000),
    )
    .await
    .unwrap();
    // The token and its mail were written together.
    assert_eq!(s.list_mails("r@example.com").await.unwrap().len(), 1);
    assert_eq!(s.find_email_token("h1", TokenPurpose::PasswordReset, 1500).await.unwrap(), Some(u));
    assert_eq!(s.find_email_token("h1", TokenPurpose::EmailVerification, 1500).await.unwrap(), None, "purpose");
    assert_eq!(s.verify_email("h1", 1500).await.unwrap(), None, "a reset token does not verify");

    let done = s.reset_password("h1", "new-hash", 1500).await.unwrap().unwrap();
    assert_eq!(done.user_id, u);
    assert_eq!(done.revoked_sessions.iter().copied().collect::<HashSet<_>>(), sessions.into_iter().collect());
    let after = s.find_user(u).await.unwrap().unwrap();
    assert_eq!((after.password_hash.as_str(), after.email_verified_at), ("new-hash", Some(1500)));
    for sid in sessions {
        assert_eq!(s.find_session(sid).await.unwrap().unwrap().revoked_reason.as_deref(), Some("password_reset"));
    }
    assert!(s.find_session(bystander_session).await.unwrap().unwrap().revoked_at.is_none());
    // Spent: neither found nor usable again.
    assert_eq!(s.find_email_token("h1", TokenPurpose::PasswordReset, 1501).await.unwrap(), None);
    assert_eq!(s.reset_password("h1", "other", 1501).await.unwrap(), None);
    assert_eq!(s.find_user(u).await.unwrap().unwrap().password_hash, "new-hash");
}

async fn tokens_expire_and_a_newer_one_spends_the_older(backend: Backend) {
    let (s, _db) = open(backend).await;
    let u = user(&s, "e@example.com").await;
    let issue = |hash: &'static str, now: i64| {
        let s = Arc::clone(&s);
        async move {
            let t = token(u, TokenPurpose::PasswordReset, hash, now, 1800);
            s.issue_email_token(&t, &mail("e@example.com", Some(u), now)).await.unwrap();
        }
    };
    issue("old", 1000).await;
    issue("new", 1100).await;
    assert_eq!(s.reset_password("old", "x", 1200).await.unwrap(), None, "replaced by the newer token");
    assert_eq!(s.reset_password("new", "x", 1100 + 1800).await.unwrap(), None, "expired at its deadline");
    assert_eq!(s.find_user(u).await.unwrap().unwrap().password_hash, "old-hash", "nothing written");
    // A verification token does not spend reset tokens, and verifies once.
    issue("reset", 5000).await;
    let v = token(u, TokenPurpose::EmailVerification, "verify", 5000, 86_400);
    s.issue_email_token(&v, &mail("e@example.com", Some(u), 5000)).await.unwrap();
    assert_eq!(s.verify_email("verify", 5001).await.unwrap(), Some(u));
    assert_eq!(s.verify_email("verify", 5002).await.unwrap(), None);
    assert_eq!(s.find_user(u).await.unwrap().unwrap().email_verified_at, Some(5001));
    assert!(s.reset_password("reset", "x", 5003).await.unwrap().is_some());
    // Purging drops expired tokens and finished mail, nothing pending.
    let pending = mail("p@example.com", None, 9000);
    s.enqueue_mail(&pending).await.unwrap();
    assert!(s.purge_recovery_rows(1_000_000).await.unwrap() >= 3);
    assert_eq!(s.list_mails("p@example.com").await.unwrap().len(), 1);
}

async fn concurrent_resets_with_one_token_have_one_winner(backend: Backend) {
    let (s, _db) = open(backend).await;
    let u = user(&s, "c@example.com").await;
    let t = token(u, TokenPurpose::PasswordReset, "race", 1000, 1800);
    s.issue_email_token(&t, &mail("c@example.com", Some(u), 1000)).await.unwrap();
    let attempts = (0..8).map(|i| {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.reset_password("race", &format!("hash-{i}"), 1001).await })
    });
    let mut winners = 0;
    for a in attempts {
        // SQLite may refuse a racing writer as busy; that is a loss, not a second win.
        if matches!(a.await.unwrap(), Ok(Some(_))) {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

async fn the_queue_claims_leases_retries_and_forgets_bodies(backend: Backend) {
    let (s, _db) = open(backend).await;
    let (a, b) = (mail("q@example.com", None, 1000), mail("q@example.com", None, 1000));
    s.enqueue_mail(&a).await.unwrap();
    s.enqueue_mail(&b).await.unwrap();
    assert_eq!(s.count_mails_since("q@example.com", 1000).await.unwrap(), 2);
    assert_eq!(s.count_mails_since("q@example.com", 1001).await.unwrap(), 0);
    assert!(s.claim_due_mails(999, 1119, 10).await.unwrap().is_empty(), "not due yet");

    let first = s.claim_due_mails(1000, 1120, 1).await.unwrap();
    let second = s.claim_due_mails(1000, 1120, 1).await.unwrap();
    assert_eq!((first.len(), second.len()), (1, 1));
    assert_ne!(first[0].mail_id, second[0].mail_id, "a leased mail is not claimed twice");
    assert_eq!((first[0].attempts, first[0].body.as_str()), (1, "a link with a token"));
    assert!(s.claim_due_mails(1001, 1121, 10).await.unwrap().is_empty(), "both leased");

    s.reschedule_mail(first[0].mail_id, 1010, "connection refused").await.unwrap();
    s.mark_mail_sent(second[0].mail_id, 1002).await.unwrap();
    assert!(s.claim_due_mails(1005, 1125, 10).await.unwrap().is_empty(), "rescheduled for later");
    let retry = s.claim_due_mails(1010, 1130, 10).await.unwrap();
    assert_eq!((retry.len(), retry[0].mail_id, retry[0].attempts), (1, first[0].mail_id, 2));
    // The lease runs out without an answer (the sender died): claimed again.
    let again = s.claim_due_mails(1130, 1250, 10).await.unwrap();
    assert_eq!((again.len(), again[0].attempts), (1, 3));
    s.give_up_mail(first[0].mail_id, 1131, "3 attempts failed").await.unwrap();
    assert!(s.claim_due_mails(5000, 5120, 10).await.unwrap().is_empty(), "sent and given up are done");

    let rows = s.list_mails("q@example.com").await.unwrap();
    let by_id = |id| rows.iter().find(|r| r.mail_id == id).unwrap();
    let (given_up, sent) = (by_id(first[0].mail_id), by_id(second[0].mail_id));
    assert_eq!(
        (given_up.failed_at, given_up.last_error.as_deref(), given_up.has_body),
        (Some(1131), Some("3 attempts failed"), false)
    );
    assert_eq!((sent.sent_at, sent.has_body), (Some(1002), false));
}

async fn concurrent_claims_never_share_a_mail(backend: Backend) {
    let (s, _db) = open(backend).await;
    for _ in 0..12 {
        s.enqueue_mail(&mail("many@example.com", None, 1000)).await.unwrap();
    }
    let claimers = (0..4).map(|_| {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.claim_due_mails(1000, 1120, 3).await })
    });
    let mut seen = Vec::new();
    for c in claimers {
        // A busy SQLite writer is an empty claim, never a shared one.
        if let Ok(batch) = c.await.unwrap() {
            seen.extend(batch.into_iter().map(|m| m.mail_id));
        }
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a mail was claimed twice");
    assert!(!seen.is_empty());
}

backend_tests!(
    a_reset_token_is_spent_once_sets_the_password_and_revokes_every_session,
    tokens_expire_and_a_newer_one_spends_the_older,
    concurrent_resets_with_one_token_have_one_winner,
    the_queue_claims_leases_retries_and_forgets_bodies,
    concurrent_claims_never_share_a_mail,
);
