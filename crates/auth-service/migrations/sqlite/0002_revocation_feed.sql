-- The revocation feed (GET /internal/revocations) reads sessions by revocation time.
create index auth_session_revoked_at_idx on auth_session (revoked_at) where revoked_at is not null;
