-- The payment service's own table. user_id is the auth service's id as the
-- gateway asserts it (text: this service never joins the auth tables).
-- Times are unix seconds; created_at is the second of payment_id's UUIDv7
-- timestamp, so (created_at, payment_id) orders payments by creation.
create table payment (
    payment_id text primary key,
    user_id text not null,
    -- The client's Idempotency-Key, and the SHA-256 (hex) of the canonical
    -- request it was first used with. Unique per user: the constraint is what
    -- makes concurrent retries of one key create a single payment.
    idempotency_key text not null,
    request_hash text not null,
    amount bigint not null check (amount > 0),
    currency text not null,
    description text not null,
    status text not null check (status in ('succeeded', 'declined', 'refunded')),
    decline_reason text,
    created_at bigint not null,
    refunded_at bigint,
    unique (user_id, idempotency_key),
    check ((status = 'declined') = (decline_reason is not null)),
    check ((status = 'refunded') = (refunded_at is not null))
);

-- The caller's payments, newest first, with keyset pagination.
create index payment_user_recent on payment (user_id, created_at desc, payment_id desc);
