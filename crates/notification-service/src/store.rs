//! The notification service's table, on PostgreSQL or SQLite with the same
//! SQL (the store pattern of the auth service; pools and errors come from
//! `db`).
//!
//! Listing order is "unread first, then newest first", paged by a keyset
//! cursor over `(unread, created_at, notification_id)`, so a page never
//! repeats or skips a row because others were inserted meanwhile. Marking
//! rows read between pages moves them to the read part of the order; a client
//! that pages while reading may then see a row twice, never lose one unread.

use std::sync::Arc;

use async_trait::async_trait;
use db::{Backend, DatabaseTarget, PoolSettings, StoreError};

/// A notification as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Notification {
    pub notification_id: String,
    pub user_id: String,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: i64,
    pub read_at: Option<i64>,
}

/// Where a page starts: just after this row in the listing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    pub unread: bool,
    pub created_at: i64,
    pub notification_id: String,
}

impl PageCursor {
    /// The cursor that continues after `n`.
    pub fn after(n: &Notification) -> Self {
        Self { unread: n.read_at.is_none(), created_at: n.created_at, notification_id: n.notification_id.clone() }
    }
}

#[async_trait]
pub trait NotificationStore: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    async fn migrate(&self) -> Result<(), StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
    async fn close(&self);
    /// Stores `n` unless a notification with its id exists; whether it was new.
    async fn insert(&self, n: &Notification) -> Result<bool, StoreError>;
    /// Up to `limit` of the user's notifications after `after`, unread first,
    /// then newest first.
    async fn list(
        &self,
        user_id: &str,
        after: Option<&PageCursor>,
        limit: i64,
    ) -> Result<Vec<Notification>, StoreError>;
    async fn unread_count(&self, user_id: &str) -> Result<i64, StoreError>;
    /// Marks one of the user's notifications read (keeping the first read
    /// time); `None` when the user has no notification with that id.
    async fn mark_read(
        &self,
        user_id: &str,
        notification_id: &str,
        now: i64,
    ) -> Result<Option<Notification>, StoreError>;
    /// Marks every unread notification of the user read; how many were.
    async fn mark_all_read(&self, user_id: &str, now: i64) -> Result<u64, StoreError>;
}

const COLUMNS: &str = "notification_id, user_id, kind, title, body, ip, user_agent, created_at, read_at";

pub struct PgNotificationStore(sqlx::PgPool);
pub struct SqliteNotificationStore(sqlx::SqlitePool);

macro_rules! impl_notification_store {
    ($store:ty, $backend:expr, $migrations:literal) => {
        #[async_trait]
        impl NotificationStore for $store {
            fn backend(&self) -> Backend {
                $backend
            }

            async fn migrate(&self) -> Result<(), StoreError> {
                db::run_migrations(sqlx::migrate!($migrations), "notification_service_migrations", &self.0).await
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("select 1").execute(&self.0).await?;
                Ok(())
            }

            async fn close(&self) {
                self.0.close().await;
            }

            async fn insert(&self, n: &Notification) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "insert into notification (notification_id, user_id, kind, title, body, ip, user_agent, \
                     created_at, read_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     on conflict (notification_id) do nothing",
                )
                .bind(&n.notification_id)
                .bind(&n.user_id)
                .bind(&n.kind)
                .bind(&n.title)
                .bind(&n.body)
                .bind(&n.ip)
                .bind(&n.user_agent)
                .bind(n.created_at)
                .bind(n.read_at)
                .execute(&self.0)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn list(
                &self,
                user_id: &str,
                after: Option<&PageCursor>,
                limit: i64,
            ) -> Result<Vec<Notification>, StoreError> {
                // `unread` is 1 for unread rows; the order is (unread desc,
                // created_at desc, id desc) and the cursor condition is
                // "strictly after" in that order.
                let q = format!(
                    "select {COLUMNS} from notification \
                     where user_id = $1 and ( \
                       $2 = 0 \
                       or (case when read_at is null then 1 else 0 end) < $3 \
                       or ((case when read_at is null then 1 else 0 end) = $3 and created_at < $4) \
                       or ((case when read_at is null then 1 else 0 end) = $3 and created_at = $4 \
                           and notification_id < $5)) \
                     order by (case when read_at is null then 1 else 0 end) desc, created_at desc, \
                              notification_id desc \
                     limit $6"
                );
                let (has_cursor, unread, created_at, id) = match after {
                    Some(c) => (1_i64, i64::from(c.unread), c.created_at, c.notification_id.as_str()),
                    None => (0, 0, 0, ""),
                };
                Ok(sqlx::query_as::<_, Notification>(sqlx::AssertSqlSafe(q))
                    .bind(user_id)
                    .bind(has_cursor)
                    .bind(unread)
                    .bind(created_at)
                    .bind(id)
                    .bind(limit)
                    .fetch_all(&self.0)
                    .await?)
            }

            async fn unread_count(&self, user_id: &str) -> Result<i64, StoreError> {
                let (count,): (i64,) =
                    sqlx::query_as("select count(*) from notification where user_id = $1 and read_at is null")
                        .bind(user_id)
                        .fetch_one(&self.0)
                        .await?;
                Ok(count)
            }

            async fn mark_read(
                &self,
                user_id: &str,
                notification_id: &str,
                now: i64,
            ) -> Result<Option<Notification>, StoreError> {
                let q = format!(
                    "update notification set read_at = coalesce(read_at, $3) \
                     where user_id = $1 and notification_id = $2 returning {COLUMNS}"
                );
                Ok(sqlx::query_as::<_, Notification>(sqlx::AssertSqlSafe(q))
                    .bind(user_id)
                    .bind(notification_id)
                    .bind(now)
                    .fetch_optional(&self.0)
                    .await?)
            }

            async fn mark_all_read(&self, user_id: &str, now: i64) -> Result<u64, StoreError> {
                let done = sqlx::query("update notification set read_at = $2 where user_id = $1 and read_at is null")
                    .bind(user_id)
                    .bind(now)
                    .execute(&self.0)
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}

impl_notification_store!(PgNotificationStore, Backend::Postgres, "migrations/postgres");
impl_notification_store!(SqliteNotificationStore, Backend::Sqlite, "migrations/sqlite");

/// Opens the store and applies its migrations.
///
/// # Errors
/// [`StoreError`] when the database is unreachable or a migration fails.
pub async fn connect(target: DatabaseTarget, pool: PoolSettings) -> Result<Arc<dyn NotificationStore>, StoreError> {
    let store: Arc<dyn NotificationStore> = match target {
        DatabaseTarget::Postgres(o) => Arc::new(PgNotificationStore(db::open_postgres(o, pool).await?)),
        DatabaseTarget::Sqlite(o) => Arc::new(SqliteNotificationStore(db::open_sqlite(o, pool).await?)),
    };
    store.migrate().await?;
    Ok(store)
}
