//! The user service's table, on PostgreSQL or SQLite with the same SQL (the
//! store pattern of the auth service; pools and errors come from `db`).

use std::sync::Arc;

use async_trait::async_trait;
use db::{Backend, DatabaseTarget, PoolSettings, StoreError};

/// A profile.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct Profile {
    #[serde(rename = "id")]
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub bio: String,
}

#[async_trait]
pub trait ProfileStore: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    async fn migrate(&self) -> Result<(), StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
    async fn close(&self);
    /// The caller's profile, created on first use from the asserted identity;
    /// `None` once the account was deleted.
    async fn get_or_create(
        &self,
        user_id: &str,
        email: &str,
        name: &str,
        now: i64,
    ) -> Result<Option<Profile>, StoreError>;
    /// The profile, if there is one that is not deleted.
    async fn get(&self, user_id: &str) -> Result<Option<Profile>, StoreError>;
    /// Sets the given fields; `None` when there is no (undeleted) profile.
    async fn update(
        &self,
        user_id: &str,
        name: Option<&str>,
        bio: Option<&str>,
        now: i64,
    ) -> Result<Option<Profile>, StoreError>;
    /// Soft-deletes the profile; whether there was one.
    async fn soft_delete(&self, user_id: &str, now: i64) -> Result<bool, StoreError>;
}

const COLUMNS: &str = "user_id, email, name, bio";

pub struct PgProfileStore(sqlx::PgPool);
pub struct SqliteProfileStore(sqlx::SqlitePool);

macro_rules! impl_profile_store {
    ($store:ty, $backend:expr, $migrations:literal) => {
        #[async_trait]
        impl ProfileStore for $store {
            fn backend(&self) -> Backend {
                $backend
            }

            async fn migrate(&self) -> Result<(), StoreError> {
                db::run_migrations(sqlx::migrate!($migrations), "user_service_migrations", &self.0).await
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("select 1").execute(&self.0).await?;
                Ok(())
            }

            async fn close(&self) {
                self.0.close().await;
            }

            async fn get_or_create(
                &self,
                user_id: &str,
                email: &str,
                name: &str,
                now: i64,
            ) -> Result<Option<Profile>, StoreError> {
                sqlx::query(
                    "insert into user_profile (user_id, email, name, created_at, updated_at) \
                     values ($1, $2, $3, $4, $4) on conflict (user_id) do nothing",
                )
                .bind(user_id)
                .bind(email)
                .bind(name)
                .bind(now)
                .execute(&self.0)
                .await?;
                self.get(user_id).await
            }

            async fn get(&self, user_id: &str) -> Result<Option<Profile>, StoreError> {
                let q = format!("select {COLUMNS} from user_profile where user_id = $1 and deleted_at is null");
                Ok(sqlx::query_as::<_, Profile>(sqlx::AssertSqlSafe(q)).bind(user_id).fetch_optional(&self.0).await?)
            }

            async fn update(
                &self,
                user_id: &str,
                name: Option<&str>,
                bio: Option<&str>,
                now: i64,
            ) -> Result<Option<Profile>, StoreError> {
                let q = format!(
                    "update user_profile set name = coalesce($2, name), bio = coalesce($3, bio), updated_at = $4 \
                     where user_id = $1 and deleted_at is null returning {COLUMNS}"
                );
                Ok(sqlx::query_as::<_, Profile>(sqlx::AssertSqlSafe(q))
                    .bind(user_id)
                    .bind(name)
                    .bind(bio)
                    .bind(now)
                    .fetch_optional(&self.0)
                    .await?)
            }

            async fn soft_delete(&self, user_id: &str, now: i64) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "update user_profile set deleted_at = $2, updated_at = $2 where user_id = $1 and deleted_at is null",
                )
                .bind(user_id)
                .bind(now)
                .execute(&self.0)
                .await?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

impl_profile_store!(PgProfileStore, Backend::Postgres, "migrations/postgres");
impl_profile_store!(SqliteProfileStore, Backend::Sqlite, "migrations/sqlite");

/// Opens the store and applies its migrations.
///
/// # Errors
/// [`StoreError`] when the database is unreachable or a migration fails.
pub async fn connect(target: DatabaseTarget, pool: PoolSettings) -> Result<Arc<dyn ProfileStore>, StoreError> {
    let store: Arc<dyn ProfileStore> = match target {
        DatabaseTarget::Postgres(o) => Arc::new(PgProfileStore(db::open_postgres(o, pool).await?)),
        DatabaseTarget::Sqlite(o) => Arc::new(SqliteProfileStore(db::open_sqlite(o, pool).await?)),
    };
    store.migrate().await?;
    Ok(store)
}
