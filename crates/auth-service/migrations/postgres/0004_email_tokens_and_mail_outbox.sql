-- Password reset, email verification and the outgoing-mail queue
-- (crate::recovery and crate::mail_queue explain the design).

-- Set when the user followed a verification (or password reset) link.
alter table user_account add column email_verified_at bigint;

-- Single-use links mailed to a user. The token is 256 random bits, kept only
-- as its SHA-256 (hex). purpose is 'password_reset' or 'email_verification';
-- a token is spent by one conditional update (used_at is null and unexpired),
-- and issuing a new one spends the older unused ones of the same purpose.
create table email_token (
    email_token_id uuid primary key,
    user_id uuid not null references user_account (user_id) on delete cascade,
    purpose text not null,
    token_hash text not null,
    created_at bigint not null,
    expires_at bigint not null,
    used_at bigint
);
create unique index email_token_hash_key on email_token (token_hash);
create index email_token_user_idx on email_token (user_id, purpose);

-- The outbox: written in the same transaction as the token it carries, sent by
-- a background sender with retries. locked_until is the lease of the sender
-- working on a row; sent_at or failed_at ends it, and then body is emptied, so
-- a link outlives its delivery nowhere but in the recipient's mailbox.
create table mail_outbox (
    mail_id uuid primary key,
    kind text not null,
    recipient text not null,
    subject text not null,
    body text not null,
    user_id uuid,
    created_at bigint not null,
    expires_at bigint not null,
    attempts bigint not null default 0,
    next_attempt_at bigint not null,
    locked_until bigint,
    sent_at bigint,
    failed_at bigint,
    last_error text
);
create index mail_outbox_due_idx on mail_outbox (next_attempt_at) where sent_at is null and failed_at is null;
create index mail_outbox_recipient_idx on mail_outbox (recipient, created_at);
