-- The notification service's own table. notification_id is the id the
-- sender chose (the auth service's audit event id), so a retried delivery
-- inserts nothing new. user_id is the auth service's id as text: this
-- service never joins the auth tables.
create table notification (
    notification_id text primary key,
    user_id text not null,
    kind text not null,
    title text not null,
    body text not null,
    ip text,
    user_agent text,
    created_at bigint not null,
    read_at bigint
);

-- The listing's order: unread first, then newest first.
create index notification_by_user on notification (user_id, created_at desc, notification_id desc);
