//! The payment service's table, on PostgreSQL or SQLite with the same SQL
//! (the store pattern of the auth and user services; pools and errors come
//! from `db`). Times are unix seconds.
//!
//! Two writes must stay correct under concurrency, across any number of
//! service processes on one database, and neither needs a transaction:
//!
//! - **Creation** is one `insert … on conflict (user_id, idempotency_key) do
//!   nothing returning …`. The unique constraint lets exactly one of any
//!   number of concurrent inserts of one key win; the others insert nothing
//!   (PostgreSQL makes them wait for the winner's commit first; SQLite runs
//!   writers one at a time), then read the winner's row. Rows are never
//!   deleted, so that read always finds it.
//! - **Refund** is one conditional `update … where status = 'succeeded'`:
//!   of concurrent refunds of one payment, one changes the row and the
//!   others match nothing.

use std::sync::Arc;

use async_trait::async_trait;
use db::{Backend, DatabaseTarget, PoolSettings, StoreError};

use crate::cursor::Cursor;

/// A payment's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PaymentStatus {
    Succeeded,
    Declined,
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Declined => "declined",
            Self::Refunded => "refunded",
        }
    }
}

/// A status column value this code does not know (a bug or a newer schema).
#[derive(Debug)]
pub struct UnknownStatus(String);

impl std::fmt::Display for UnknownStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: String = self.0.chars().take(32).collect();
        write!(f, "unknown payment status `{shown}`")
    }
}

impl std::error::Error for UnknownStatus {}

impl TryFrom<String> for PaymentStatus {
    type Error = UnknownStatus;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "succeeded" => Ok(Self::Succeeded),
            "declined" => Ok(Self::Declined),
            "refunded" => Ok(Self::Refunded),
            _ => Err(UnknownStatus(value)),
        }
    }
}

/// A payment, as clients see it (the JSON of every payment endpoint).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct Payment {
    #[serde(rename = "id")]
    pub payment_id: String,
    pub amount: i64,
    pub currency: String,
    pub description: String,
    #[sqlx(try_from = "String")]
    pub status: PaymentStatus,
    pub decline_reason: Option<String>,
    pub created_at: i64,
    pub refunded_at: Option<i64>,
}

/// A payment to record. The handler has validated and normalised it.
#[derive(Debug, Clone)]
pub struct NewPayment<'a> {
    /// A UUIDv7; `created_at` is the second of its timestamp.
    pub payment_id: &'a str,
    pub user_id: &'a str,
    pub idempotency_key: &'a str,
    /// See [`crate::request::ValidPayment::request_hash`].
    pub request_hash: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub description: &'a str,
    /// `Succeeded` or `Declined`.
    pub status: PaymentStatus,
    /// Set exactly when `status` is `Declined`.
    pub decline_reason: Option<&'a str>,
    pub created_at: i64,
}

/// What [`PaymentStore::create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// This call recorded the payment.
    New(Payment),
    /// The user had already used the key: the payment it created (as it is
    /// now) and the hash of the request it was created with.
    Existing { payment: Payment, request_hash: String },
}

/// What [`PaymentStore::refund`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refund {
    /// This call refunded the payment.
    Refunded(Payment),
    /// The payment exists but is not `succeeded` (declined, or already refunded).
    NotRefundable(Payment),
    /// No such payment of this user.
    NotFound,
}

#[async_trait]
pub trait PaymentStore: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    async fn migrate(&self) -> Result<(), StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
    async fn close(&self);
    /// Records `payment` unless its user already used its idempotency key.
    async fn create(&self, payment: &NewPayment<'_>) -> Result<Created, StoreError>;
    /// The user's payment `payment_id`; `None` for an unknown id or another user's.
    async fn find(&self, user_id: &str, payment_id: &str) -> Result<Option<Payment>, StoreError>;
    /// Up to `limit` of the user's payments, newest first, after `after`.
    async fn list(&self, user_id: &str, after: Option<Cursor>, limit: i64) -> Result<Vec<Payment>, StoreError>;
    /// Refunds the user's payment if, and only if, it is `succeeded`.
    async fn refund(&self, user_id: &str, payment_id: &str, now: i64) -> Result<Refund, StoreError>;
}

const COLUMNS: &str = "payment_id, amount, currency, description, status, decline_reason, created_at, refunded_at";

/// A payment with the hash of the request that created it.
#[derive(sqlx::FromRow)]
struct StoredPayment {
    #[sqlx(flatten)]
    payment: Payment,
    request_hash: String,
}

pub struct PgPaymentStore(sqlx::PgPool);
pub struct SqlitePaymentStore(sqlx::SqlitePool);

macro_rules! impl_payment_store {
    ($store:ty, $backend:expr, $migrations:literal) => {
        #[async_trait]
        impl PaymentStore for $store {
            fn backend(&self) -> Backend {
                $backend
            }

            async fn migrate(&self) -> Result<(), StoreError> {
                db::run_migrations(sqlx::migrate!($migrations), "payment_service_migrations", &self.0).await
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("select 1").execute(&self.0).await?;
                Ok(())
            }

            async fn close(&self) {
                self.0.close().await;
            }

            async fn create(&self, p: &NewPayment<'_>) -> Result<Created, StoreError> {
                let q = format!(
                    "insert into payment (payment_id, user_id, idempotency_key, request_hash, amount, currency, \
                     description, status, decline_reason, created_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     on conflict (user_id, idempotency_key) do nothing returning {COLUMNS}"
                );
                let inserted = sqlx::query_as::<_, Payment>(sqlx::AssertSqlSafe(q))
                    .bind(p.payment_id)
                    .bind(p.user_id)
                    .bind(p.idempotency_key)
                    .bind(p.request_hash)
                    .bind(p.amount)
                    .bind(p.currency)
                    .bind(p.description)
                    .bind(p.status.as_str())
                    .bind(p.decline_reason)
                    .bind(p.created_at)
                    .fetch_optional(&self.0)
                    .await?;
                if let Some(payment) = inserted {
                    return Ok(Created::New(payment));
                }
                let q = format!(
                    "select {COLUMNS}, request_hash from payment where user_id = $1 and idempotency_key = $2"
                );
                let existing = sqlx::query_as::<_, StoredPayment>(sqlx::AssertSqlSafe(q))
                    .bind(p.user_id)
                    .bind(p.idempotency_key)
                    .fetch_one(&self.0)
                    .await?;
                Ok(Created::Existing { payment: existing.payment, request_hash: existing.request_hash })
            }

            async fn find(&self, user_id: &str, payment_id: &str) -> Result<Option<Payment>, StoreError> {
                let q = format!("select {COLUMNS} from payment where payment_id = $1 and user_id = $2");
                Ok(sqlx::query_as::<_, Payment>(sqlx::AssertSqlSafe(q))
                    .bind(payment_id)
                    .bind(user_id)
                    .fetch_optional(&self.0)
                    .await?)
            }

            async fn list(
                &self,
                user_id: &str,
                after: Option<Cursor>,
                limit: i64,
            ) -> Result<Vec<Payment>, StoreError> {
                let order = "order by created_at desc, payment_id desc limit $2";
                let rows = match after {
                    None => {
                        let q = format!("select {COLUMNS} from payment where user_id = $1 {order}");
                        sqlx::query_as::<_, Payment>(sqlx::AssertSqlSafe(q))
                            .bind(user_id)
                            .bind(limit)
                            .fetch_all(&self.0)
                            .await?
                    }
                    Some(cursor) => {
                        // Strictly after the cursor in the list's order: the keyset
                        // condition (created_at, payment_id) < ($3, $4), spelled out.
                        // ORDER BY and `<` compare payment_id under the same collation,
                        // so the pages agree with the order whatever that collation is.
                        let q = format!(
                            "select {COLUMNS} from payment where user_id = $1 \
                             and (created_at < $3 or (created_at = $3 and payment_id < $4)) {order}"
                        );
                        sqlx::query_as::<_, Payment>(sqlx::AssertSqlSafe(q))
                            .bind(user_id)
                            .bind(limit)
                            .bind(cursor.created_at)
                            .bind(cursor.id.hyphenated().to_string())
                            .fetch_all(&self.0)
                            .await?
                    }
                };
                Ok(rows)
            }

            async fn refund(&self, user_id: &str, payment_id: &str, now: i64) -> Result<Refund, StoreError> {
                let q = format!(
                    "update payment set status = 'refunded', refunded_at = $3 \
                     where payment_id = $1 and user_id = $2 and status = 'succeeded' returning {COLUMNS}"
                );
                let refunded = sqlx::query_as::<_, Payment>(sqlx::AssertSqlSafe(q))
                    .bind(payment_id)
                    .bind(user_id)
                    .bind(now)
                    .fetch_optional(&self.0)
                    .await?;
                if let Some(payment) = refunded {
                    return Ok(Refund::Refunded(payment));
                }
                Ok(match self.find(user_id, payment_id).await? {
                    Some(payment) => Refund::NotRefundable(payment),
                    None => Refund::NotFound,
                })
            }
        }
    };
}

impl_payment_store!(PgPaymentStore, Backend::Postgres, "migrations/postgres");
impl_payment_store!(SqlitePaymentStore, Backend::Sqlite, "migrations/sqlite");

/// Opens the store and applies its migrations.
///
/// # Errors
/// [`StoreError`] when the database is unreachable or a migration fails.
pub async fn connect(target: DatabaseTarget, pool: PoolSettings) -> Result<Arc<dyn PaymentStore>, StoreError> {
    let store: Arc<dyn PaymentStore> = match target {
        DatabaseTarget::Postgres(o) => Arc::new(PgPaymentStore(db::open_postgres(o, pool).await?)),
        DatabaseTarget::Sqlite(o) => Arc::new(SqlitePaymentStore(db::open_sqlite(o, pool).await?)),
    };
    store.migrate().await?;
    Ok(store)
}
