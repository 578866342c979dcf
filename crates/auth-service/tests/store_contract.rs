//! The storage contract: every behaviour of [`auth_service::store::Store`],
//! run unchanged against PostgreSQL and SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use auth_service::store::{self, AuditEvent, MfaChallenge, NewSession, NewUser, SealedTotpSecret, Store, StoreError};
use testkit::{Backend, TestDatabase, backend_tests};
use uuid::Uuid;

async fn open(backend: Backend) -> (Arc<dyn Store>, TestDatabase) {
    let db = TestDatabase::new(backend).await;
    let s = store::connect(db.target.clone(), store::PoolSettings::default()).await.unwrap();
    assert_eq!(s.backend(), backend);
    (s, db)
}

fn new_user(email: &str) -> NewUser {
    NewUser {
        user_id: Uuid::now_v7(),
        email: email.to_owned(),
        password_hash: "$argon2id$x".into(),
        name: "N".into(),
        now: 1000,
    }
}

fn new_session(user_id: Uuid, now: i64) -> NewSession {
    NewSession {
        session_id: Uuid::now_v7(),
        user_id,
        now,
        expires_at: now + 3600,
        user_agent: Some("ua".into()),
        ip: Some("127.0.0.1".into()),
    }
}

async fn migrations_are_idempotent_and_ping_works(backend: Backend) {
    let (s, _db) = open(backend).await;
    s.migrate().await.unwrap();
    s.ping().await.unwrap();
}

async fn users_are_created_found_and_unique_by_email(backend: Backend) {
    let (s, _db) = open(backend).await;
    let u = s.create_user(&new_user("a@example.com")).await.unwrap();
    assert_eq!((u.email.as_str(), u.active, u.created_at, u.updated_at), ("a@example.com", true, 1000, 1000));
    assert_eq!(s.find_user(u.user_id).await.unwrap().unwrap().email, "a@example.com");
    assert_eq!(s.find_user_by_email("a@example.com").await.unwrap().unwrap().user_id, u.user_id);
    assert!(s.find_user_by_email("b@example.com").await.unwrap().is_none());
    assert!(s.find_user(Uuid::now_v7()).await.unwrap().is_none());
    assert!(matches!(s.create_user(&new_user("a@example.com")).await, Err(StoreError::Conflict)));
}

async fn users_can_be_disabled_and_rehashed(backend: Backend) {
    let (s, _db) = open(backend).await;
    let u = s.create_user(&new_user("d@example.com")).await.unwrap();
    assert!(s.set_user_active(u.user_id, false, 2000).await.unwrap());
    let got = s.find_user(u.user_id).await.unwrap().unwrap();
    assert!(!got.active);
    assert_eq!(got.updated_at, 2000);
    assert!(!s.set_user_active(Uuid::now_v7(), false, 2000).await.unwrap());
    s.set_password_hash(u.user_id, "$argon2id$new", 3000).await.unwrap();
    assert_eq!(s.find_user(u.user_id).await.unwrap().unwrap().password_hash, "$argon2id$new");
}

async fn deleting_a_user_frees_the_email_and_revokes_every_session(backend: Backend) {
    let (s, _db) = open(backend).await;
    let u = s.create_user(&new_user("del@example.com")).await.unwrap();
    let a = s.create_session(&new_session(u.user_id, 100)).await.unwrap();
    let b = s.create_session(&new_session(u.user_id, 100)).await.unwrap();
    assert_eq!(s.delete_user(u.user_id, 500).await.unwrap().map(|v| v.len()), Some(2));
    assert!(s.find_user(u.user_id).await.unwrap().is_none());
    assert!(s.find_user_by_email("del@example.com").await.unwrap().is_none());
    for sess in [a, b] {
        assert_eq!(
            s.find_session(sess.session_id).await.unwrap().unwrap().revoked_reason.as_deref(),
            Some("account_deleted")
        );
    }
    assert_eq!(s.delete_user(u.user_id, 600).await.unwrap(), None, "already deleted");
    // The email is free again.
    s.create_user(&new_user("del@example.com")).await.unwrap();
}

async fn the_refresh_counter_advances_by_compare_and_swap(backend: Backend) {
    let (s, _db) = open(backend).await;
    let u = s.create_user(&new_user("c@example.com")).await.unwrap();
    let session = s.create_session(&new_session(u.user_id, 100)).await.unwrap();
    assert_eq!((session.refresh_counter, session.last_rotated_at), (0, 100));
    assert_eq!(s.advance_refresh_counter(session.session_id, 0, 150).await.unwrap(), Some(1));
    assert_eq!(s.advance_refresh_counter(session.session_id, 0, 160).await.unwrap(), None, "stale counter");
    assert_eq!(s.advance_refresh_counter(session.session_id, 1, 170).await.unwrap(), Some(2));
    let got = s.find_session(session.session_id).await.unwrap().unwrap();
    assert_eq!((got.refresh_counter, got.last_rotated_at), (2, 170));
    assert!(s.revoke_session(session.session_id, "test", 180).await.unwrap());
    assert_eq!(s.advance_refresh_counter(session.session_id, 2, 190).await.unwrap(), None, "revoked");
    assert_eq!(s.advance_refresh_counter(Uuid::now_v7(), 0, 190).await.unwrap(), None, "unknown");
}

async fn concurrent_swaps_of_one_counter_have_one_winner(backend: Backend) {
    let (s, _db) = open(backend).await;
    let u = s.create_user(&new_user("r@example.com")).await.unwrap();
    let session = s.create_session(&new_session(u.user_id, 100)).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.advance_refresh_counter(session.session_id, 0, 200 + i).await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap().is_some());
    }
    assert_eq!(winners, 1);
    assert_eq!(s.find_session(session.session_id).await.unwrap().unwrap().refresh_counter, 1);
}

async fn sessions_are_revoked_singly_or_all_but_one(backend: Backend) {
    let (s, _db) = open(backend).await;
    let u = s.create_user(&new_user("s@example.com")).await.unwrap();
    let other = s.create_user(&new_user("o@example.com")).await.unwrap();
    let a = s.create_session(&new_session(u.user_id, 100)).await.unwrap();
    let b = s.create_session(&new_session(u.user_id, 101)).await.unwrap();
    let c = s.create_session(&new_session(u.user_id, 102)).await.unwrap();
    let o = s.create_session(&new_session(other.user_id, 100)).await.unwrap();
    let listed: Vec<Uuid> =
        s.list_active_sessions(u.user_id, 150).await.unwrap().iter().map(|x| x.session_id).collect();
    assert_eq!(listed, vec![c.session_id, b.session_id, a.session_id], "newest first");
    assert!(s.revoke_session(a.session_id, "logout", 200).await.unwrap());
    assert!(!s.revoke_session(a.session_id, "again", 201).await.unwrap(), "already revoked");
    let got = s.find_session(a.session_id).await.unwrap().unwrap();
    assert_eq!((got.revoked_at, got.revoked_reason.as_deref()), (Some(200), Some("logout")));
    assert!(!got.is_active(150));
    assert_eq!(
        s.revoke_user_sessions(u.user_id, Some(c.session_id), "logout_all", 300).await.unwrap(),
        vec![b.session_id]
    );
    let listed: Vec<Uuid> =
        s.list_active_sessions(u.user_id, 150).await.unwrap().iter().map(|x| x.session_id).collect();
    assert_eq!(listed, vec![c.session_id]);
    assert_eq!(s.revoke_user_sessions(u.user_id, None, "logout_all", 300).await.unwrap(), vec![c.session_id]);
    assert!(s.list_active_sessions(u.user_id, 150).await.unwrap().is_empty());
    assert!(s.find_session(o.session_id).await.unwrap().unwrap().is_active(150), "other users untouched");
    // The revocation feed lists them by revocation time.
    let feed = s.revoked_sessions_since(0, 100).await.unwrap();
    assert_eq!(feed.iter().map(|r| r.revoked_at).collect::<Vec<_>>(), vec![200, 300, 300]);
    assert_eq!(feed[0].session_id, a.session_id);
    assert_eq!(s.revoked_sessions_since(250, 100).await.unwrap().len(), 2);
    assert_eq!(s.revoked_sessions_since(0, 1).await.unwrap().len(), 1);
    // Expired sessions are not listed.
    let d = s.create_session(&new_session(u.user_id, 100)).await.unwrap();
    assert!(s.list_active_sessions(u.user_id, d.expires_at).await.unwrap().is_empty());
}

async fn a_password_change_revokes_the_other_sessions_in_one_transaction(backend: Backend) {
    let (s, _db) = open(backend).await;
    let u = s.create_user(&new_user("p@example.com")).await.unwrap();
    let keep = s.create_session(&new_session(u.user_id, 100)).await.unwrap();
    let drop1 = s.create_session(&new_session(u.user_id, 100)).await.unwrap();
    let drop2 = s.create_session(&new_session(u.user_id, 100)).await.unwrap();
    assert_eq!(s.change_password(u.user_id, "$argon2id$changed", keep.session_id, 500).await.unwrap().len(), 2);
    assert_eq!(s.find_user(u.user_id).await.unwrap().unwrap().password_hash, "$argon2id$changed");
    assert!(s.find_session(keep.session_id).await.unwrap().unwrap().is_active(600));
    for d in [drop1, drop2] {
        let got = s.find_session(d.session_id).await.unwrap().unwrap();
        assert_eq!(got.revoked_reason.as_deref(), Some("password_changed"));
    }
}

async fn login_failures_are_counted_in_a_window_and_cleared(backend: Backend) {
    let (s, _db) = open(backend).await;
    for t in [100, 200, 300] {
        s.record_login_failure("f@example.com", t, 0).await.unwrap();
    }
    s.record_login_failure("g@example.com", 300, 0).await.unwrap();
    let all = s.login_failures_since("f@example.com", 0).await.unwrap();
    assert_eq!((all.count, all.oldest), (3, Some(100)));
    let recent = s.login_failures_since("f@example.com", 150).await.unwrap();
    assert_eq!((recent.count, recent.oldest), (2, Some(200)));
    // Recording forgets failures older than the horizon.
    s.record_login_failure("f@example.com", 400, 250).await.unwrap();
    assert_eq!(s.login_failures_since("f@example.com", 0).await.unwrap().count, 2);
    s.clear_login_failures("f@example.com").await.unwrap();
    let none = s.login_failures_since("f@example.com", 0).await.unwrap();
    assert_eq!((none.count, none.oldest), (0, None));
    assert_eq!(s.login_failures_since("g@example.com", 0).await.unwrap().count, 1, "other emails untouched");
}

async fn audit_events_are_stored_and_listed_newest_first(backend: Backend) {
    let (s, _db) = open(backend).await;
    let user = Uuid::now_v7();
    let event = |t: i64, kind: &str, user_id: Option<Uuid>| AuditEvent {
        audit_event_id: Uuid::now_v7(),
        occurred_at: t,
        kind: kind.into(),
        user_id,
        email: Some("e@example.com".into()),
        session_id: None,
        ip: Some("::1".into()),
        user_agent: None,
        detail: Some("d".into()),
    };
    let e1 = event(10, "login_failed", Some(user));
    let e2 = event(20, "login_succeeded", Some(user));
    let e3 = event(30, "login_failed", None);
    for e in [&e1, &e2, &e3] {
        s.insert_audit_event(e).await.unwrap();
    }
    assert_eq!(s.list_audit_events(None, 10).await.unwrap(), vec![e3.clone(), e2.clone(), e1.clone()]);
    assert_eq!(s.list_audit_events(Some(user), 10).await.unwrap(), vec![e2.clone(), e1]);
    assert_eq!(s.list_audit_events(None, 1).await.unwrap(), vec![e3.clone()]);
    assert_eq!(s.list_audit_events_since(None, 20, 10).await.unwrap(), vec![e3, e2.clone()]);
    assert_eq!(s.list_audit_events_since(Some(user), 11, 10).await.unwrap(), vec![e2]);
}

async fn users_are_listed_a_page_at_a_time_without_deleted_ones(backend: Backend) {
    let (s, _db) = open(backend).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut u = new_user(&format!("list{i}@example.com"));
        u.now = 1000 + i;
        ids.push(s.create_user(&u).await.unwrap().user_id);
    }
    s.delete_user(ids[1], 2000).await.unwrap();
    let page = |limit, offset| {
        let s = Arc::clone(&s);
        async move { s.list_users(limit, offset).await.unwrap().into_iter().map(|u| u.user_id).collect::<Vec<_>>() }
    };
    assert_eq!(page(2, 0).await, vec![ids[0], ids[2]]);
    assert_eq!(page(2, 2).await, vec![ids[3], ids[4]]);
    assert!(page(2, 4).await.is_empty());
}

async fn closing_makes_the_store_unavailable(backend: Backend) {
    let (s, _db) = open(backend).await;
    s.close().await;
    assert!(matches!(s.ping().await, Err(StoreError::Unavailable(_))));
}

fn sealed(user_id: Uuid, key_id: &str, nonce: u8) -> SealedTotpSecret {
    SealedTotpSecret { user_id, key_id: key_id.into(), nonce: vec![nonce; 12], ciphertext: vec![0xc1, nonce, 0xff] }
}

async fn a_totp_setup_is_replaced_until_confirmed_then_kept(backend: Backend) {
    let (s, _db) = open(backend).await;
    let u = s.create_user(&new_user("t@example.com")).await.unwrap();
    assert!(s.find_totp(u.user_id).await.unwrap().is_none());
    assert!(s.begin_totp_setup(&sealed(u.user_id, "k1", 1), 100).await.unwrap());
    let pending = s.find_totp(u.user_id).await.unwrap().unwrap();
    assert!(!pending.is_enabled());
    assert_eq!((pending.key_id.as_str(), pending.nonce.clone(), pending.last_used_step), ("k1", vec![1; 12], 0));
    assert!(!format!("{pending:?}").contains("193"), "Debug leaves the ciphertext out");
    // A second setup replaces the pending one.
    assert!(s.begin_totp_setup(&sealed(u.user_id, "k1", 2), 110).await.unwrap());
    let replaced = s.find_totp(u.user_id).await.unwrap().unwrap();
    assert_eq!(
        (replaced.nonce.clone(), replaced.ciphertext.clone(), replaced.created_at),
        (vec![2; 12], vec![0xc1, 2, 0xff], 110)
    );
    // Confirmation records the step and the recovery codes, once.
    assert!(!s.confirm_totp(u.user_id, 0, &["h1".into()], 120).await.unwrap(), "step 0 is not newer than none");
    assert!(s.confirm_totp(u.user_id, 500, &["h1".into(), "h2".into()], 120).await.unwrap());
    assert!(!s.confirm_totp(u.user_id, 600, &["h3".into()], 130).await.unwrap(), "already confirmed");
    let enabled = s.find_totp(u.user_id).await.unwrap().unwrap();
    assert_eq!((enabled.confirmed_at, enabled.last_used_step, enabled.nonce.clone()), (Some(120), 500, vec![2; 12]));
    assert_eq!(s.count_unused_recovery_codes(u.user_id).await.unwrap(), 2);
    // An enabled factor is never replaced by a new setup.
    assert!(!s.begin_totp_setup(&sealed(u.user_id, "k1", 3), 140).await.unwrap());
    assert_eq!(s.find_totp(u.user_id).await.unwrap().unwrap().nonce, vec![2; 12]);
    // Nor confirmed without a setup.
    let other = s.create_user(&new_user("t2@example.com")).await.unwrap();
    assert!(!s.confirm_totp(other.user_id, 500, &[], 120).await.unwrap());
}

async fn totp_steps_are_accepted_once_and_only_forward(backend: Backend) {
    let (s, _db) = open(backend).await;
    let u = s.create_user(&new_user("steps@example.com")).await.unwrap();
    s.begin_totp_setup(&sealed(u.user_id, "k1", 1), 100).await.unwrap();
    assert!(!s.use_totp_step(u.user_id, 700, 100).await.unwrap(), "not confirmed yet");
    s.confirm_totp(u.user_id, 500, &[], 100).await.unwrap();
    assert!(!s.use_totp_step(u.user_id, 500, 101).await.unwrap(), "the confirming step");
    assert!(!s.use_totp_step(u.user_id, 499, 101).await.unwrap(), "an older step");
    assert!(s.use_totp_step(u.user_id, 501, 102).await.unwrap());
    assert!(!s.use_totp_step(u.user_id, 501, 103).await.unwrap(), "replayed");
    assert_eq!(s.find_totp(u.user_id).await.unwrap().unwrap().last_used_step, 501);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.use_totp_step(u.user_id, 502, 200 + i).await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1, "one of twenty concurrent uses of a code wins");
}

async fn recovery_codes_are_spent_once_and_go_with_the_enrolment(backend: Backend) {
    let (s, _db) = open(backend).await;
    let u = s.create_user(&new_user("rc@example.com")).await.unwrap();
    let other = s.create_user(&new_user("rc2@example.com")).await.unwrap();
    s.begin_totp_setup(&sealed(u.user_id, "k1", 1), 100).await.unwrap();
    s.confirm_totp(u.user_id, 500, &["a".into(), "b".into(), "c".into()], 100).await.unwrap();
    assert!(s.use_recovery_code(u.user_id, "a", 110).await.unwrap());
    assert!(!s.use_recovery_code(u.user_id, "a", 111).await.unwrap(), "used");
    assert!(!s.use_recovery_code(u.user_id, "zzz", 111).await.unwrap(), "unknown");
    assert!(!s.use_recovery_code(other.user_id, "b", 111).await.unwrap(), "another user's");
    assert_eq!(s.count_unused_recovery_codes(u.user_id).await.unwrap(), 2);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.use_recovery_code(u.user_id, "b", 120).await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1);
    // Removal takes the seed, the codes and any pending challenge.
    let challenge = challenge(u.user_id, "pending", 100, 400);
    s.create_mfa_challenge(&challenge, 100).await.unwrap();
    assert!(s.delete_totp(u.user_id).await.unwrap());
    assert!(!s.delete_totp(u.user_id).await.unwrap(), "already gone");
    assert!(s.find_totp(u.user_id).await.unwrap().is_none());
    assert_eq!(s.count_unused_recovery_codes(u.user_id).await.unwrap(), 0);
    assert!(!s.use_recovery_code(u.user_id, "c", 130).await.unwrap());
    assert!(s.claim_mfa_attempt("pending", 130, 5).await.unwrap().is_none());
}

async fn a_seed_is_resealed_only_if_unchanged(backend: Backend) {
    let (s, _db) = open(backend).await;
    let u = s.create_user(&new_user("reseal@example.com")).await.unwrap();
    s.begin_totp_setup(&sealed(u.user_id, "old", 1), 100).await.unwrap();
    s.confirm_totp(u.user_id, 500, &[], 100).await.unwrap();
    assert!(!s.reseal_totp_secret(&[9; 12], &sealed(u.user_id, "new", 2), 200).await.unwrap(), "stale nonce");
    assert!(s.reseal_totp_secret(&[1; 12], &sealed(u.user_id, "new", 2), 200).await.unwrap());
    let got = s.find_totp(u.user_id).await.unwrap().unwrap();
    assert_eq!((got.key_id.as_str(), got.nonce.clone(), got.updated_at), ("new", vec![2; 12], 200));
    assert_eq!((got.confirmed_at, got.last_used_step), (Some(100), 500), "the rest is kept");
    assert!(!s.reseal_totp_secret(&[1; 12], &sealed(u.user_id, "new", 3), 300).await.unwrap(), "done once");
}

fn challenge(user_id: Uuid, token_hash: &str, now: i64, expires_at: i64) -> MfaChallenge {
    MfaChallenge {
        mfa_challenge_id: Uuid::now_v7(),
        user_id,
        token_hash: token_hash.into(),
        created_at: now,
        expires_at,
        used_at: None,
        attempts: 0,
    }
}

async fn mfa_challenges_allow_limited_attempts_expire_and_are_spent_once(backend: Backend) {
    let (s, _db) = open(backend).await;
    let u = s.create_user(&new_user("ch@example.com")).await.unwrap();
    let a = challenge(u.user_id, "hash-a", 100, 400);
    s.create_mfa_challenge(&a, 100).await.unwrap();
    for expected in 1..=3 {
        let claimed = s.claim_mfa_attempt("hash-a", 150, 3).await.unwrap().unwrap();
        assert_eq!((claimed.mfa_challenge_id, claimed.attempts), (a.mfa_challenge_id, expected));
    }
    assert!(s.claim_mfa_attempt("hash-a", 150, 3).await.unwrap().is_none(), "out of attempts");
    assert!(s.claim_mfa_attempt("unknown", 150, 3).await.unwrap().is_none());
    // Spent once, then dead.
    let b = challenge(u.user_id, "hash-b", 100, 400);
    s.create_mfa_challenge(&b, 100).await.unwrap();
    assert!(s.claim_mfa_attempt("hash-b", 150, 5).await.unwrap().is_some());
    assert!(s.spend_mfa_challenge(b.mfa_challenge_id, 160).await.unwrap());
    assert!(!s.spend_mfa_challenge(b.mfa_challenge_id, 161).await.unwrap());
    assert!(s.claim_mfa_attempt("hash-b", 170, 5).await.unwrap().is_none());
    // Expired: unusable, and swept when the next challenge is created.
    let c = challenge(u.user_id, "hash-c", 100, 200);
    s.create_mfa_challenge(&c, 100).await.unwrap();
    assert!(s.claim_mfa_attempt("hash-c", 199, 5).await.unwrap().is_some());
    assert!(s.claim_mfa_attempt("hash-c", 200, 5).await.unwrap().is_none(), "expired");
    s.create_mfa_challenge(&challenge(u.user_id, "hash-d", 300, 600), 300).await.unwrap();
    assert!(s.claim_mfa_attempt("hash-c", 150, 5).await.unwrap().is_none(), "swept");
    // Concurrent attempts never exceed the limit.
    s.create_mfa_challenge(&challenge(u.user_id, "hash-e", 300, 600), 300).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.claim_mfa_attempt("hash-e", 310, 5).await.unwrap().is_some() })
        })
        .collect();
    let mut claimed = 0;
    for t in tasks {
        claimed += usize::from(t.await.unwrap());
    }
    assert_eq!(claimed, 5);
}

backend_tests!(
    migrations_are_idempotent_and_ping_works,
    users_are_created_found_and_unique_by_email,
    users_can_be_disabled_and_rehashed,
    deleting_a_user_frees_the_email_and_revokes_every_session,
    the_refresh_counter_advances_by_compare_and_swap,
    concurrent_swaps_of_one_counter_have_one_winner,
    sessions_are_revoked_singly_or_all_but_one,
    a_password_change_revokes_the_other_sessions_in_one_transaction,
    login_failures_are_counted_in_a_window_and_cleared,
    audit_events_are_stored_and_listed_newest_first,
    users_are_listed_a_page_at_a_time_without_deleted_ones,
    closing_makes_the_store_unavailable,
    a_totp_setup_is_replaced_until_confirmed_then_kept,
    totp_steps_are_accepted_once_and_only_forward,
    recovery_codes_are_spent_once_and_go_with_the_enrolment,
    a_seed_is_resealed_only_if_unchanged,
    mfa_challenges_allow_limited_attempts_expire_and_are_spent_once,
);
