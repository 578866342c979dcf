-- TOTP two-factor authentication (crate::mfa explains the design).

-- One row per user who started a TOTP setup. The seed cannot be hashed (codes
-- are computed from it), so it is stored AES-256-GCM encrypted under the key
-- named by key_id, with the user id as associated data: a dump alone, or a
-- ciphertext moved to another row, yields no working second factor.
-- confirmed_at is null while the setup awaits its first code; last_used_step
-- is the newest 30-second step accepted, so no code is accepted twice.
create table user_mfa_totp (
    user_id blob primary key references user_account (user_id) on delete cascade,
    key_id text not null,
    nonce blob not null,
    ciphertext blob not null,
    confirmed_at bigint,
    last_used_step bigint not null default 0,
    created_at bigint not null,
    updated_at bigint not null
);

-- Single-use recovery codes, as SHA-256 hex of the user id and the code.
create table mfa_recovery_code (
    mfa_recovery_code_id blob primary key,
    user_id blob not null references user_account (user_id) on delete cascade,
    code_hash text not null,
    created_at bigint not null,
    used_at bigint
);
create unique index mfa_recovery_code_user_hash_key on mfa_recovery_code (user_id, code_hash);

-- A password-verified login waiting for its second factor. The mfa_token is
-- random and kept only as its SHA-256; it expires, dies after a few wrong
-- codes, and is spent by the first success.
create table mfa_challenge (
    mfa_challenge_id blob primary key,
    user_id blob not null references user_account (user_id) on delete cascade,
    token_hash text not null,
    created_at bigint not null,
    expires_at bigint not null,
    used_at bigint,
    attempts bigint not null default 0
);
create unique index mfa_challenge_token_hash_key on mfa_challenge (token_hash);
create index mfa_challenge_expires_at_idx on mfa_challenge (expires_at);
