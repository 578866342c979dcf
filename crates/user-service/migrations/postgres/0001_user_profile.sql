-- The user service's own table. user_id is the auth service's id as the
-- gateway asserts it (text: this service never joins the auth tables).
create table user_profile (
    user_id text primary key,
    email text not null,
    name text not null default '',
    bio text not null default '',
    created_at bigint not null,
    updated_at bigint not null,
    deleted_at bigint
);
