-- Times are unix seconds (bigint) in both backends, so every statement is
-- shared by the PostgreSQL and SQLite stores and compares numbers, never text.

create table user_account (
    user_id uuid primary key,
    email text not null,
    password_hash text not null,
    name text not null,
    active boolean not null default true,
    created_at bigint not null,
    updated_at bigint not null,
    deleted_at bigint
);
-- Emails are normalised (trimmed, lowercased) before they get here.
create unique index user_account_email_key on user_account (email) where deleted_at is null;

-- A session is one refresh-token family. Only the counter of the current
-- refresh token is kept: tokens are HMACs over it and are never stored.
create table auth_session (
    session_id uuid primary key,
    user_id uuid not null references user_account (user_id) on delete cascade,
    refresh_counter bigint not null default 0,
    created_at bigint not null,
    last_rotated_at bigint not null,
    expires_at bigint not null,
    revoked_at bigint,
    revoked_reason text,
    user_agent text,
    ip text
);
create index auth_session_user_id_idx on auth_session (user_id);

create table login_failure (
    login_failure_id bigserial primary key,
    email text not null,
    failed_at bigint not null
);
create index login_failure_email_idx on login_failure (email, failed_at);

create table audit_event (
    audit_event_id uuid primary key,
    occurred_at bigint not null,
    kind text not null,
    user_id uuid,
    email text,
    session_id uuid,
    ip text,
    user_agent text,
    detail text
);
create index audit_event_occurred_at_idx on audit_event (occurred_at);
create index audit_event_user_id_idx on audit_event (user_id);
