//! Storage of FHIR subscriptions (`http::fhir::subscription`, `fhir_notify`): each
//! subscription's channel and status, and per subscription the version of each Task it was last
//! notified of. A subscription starts from the Tasks' versions when it was made, so it hears of
//! changes after that only; a delivery is recorded after the endpoint acknowledged it.

use sqlx::Row;

use super::BeginWrite;
use super::{Backend, Store};
use crate::error::StoreError;

/// A subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    pub id: String,
    pub agency: String,
    pub provider_id: String,
    pub actor_id: String,
    pub reason: String,
    pub endpoint: String,
    /// channel.header: "Name: value" lines sent with each notification; never shown back.
    pub headers: Vec<String>,
    pub status: String,
    pub error: Option<String>,
    pub created_at: String,
    pub events_since_start: i64,
}

/// A Task a subscription has not been told about at its current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChange {
    pub referral_id: String,
    pub version: i64,
    pub last_updated: String,
}

const COLUMNS: &str =
    "id, agency, provider_id, actor_id, reason, endpoint, headers, status, error, \
                       created_at, events_since_start";

fn read(row: &impl RowLike) -> Result<StoredSubscription, StoreError> {
    row.subscription()
}

/// Reads a subscription from either backend's row.
trait RowLike {
    fn subscription(&self) -> Result<StoredSubscription, StoreError>;
}

macro_rules! row_like {
    ($row:ty) => {
        impl RowLike for $row {
            fn subscription(&self) -> Result<StoredSubscription, StoreError> {
                let headers: String = self.try_get("headers")?;
                Ok(StoredSubscription {
                    id: self.try_get("id")?,
                    agency: self.try_get("agency")?,
                    provider_id: self.try_get("provider_id")?,
                    actor_id: self.try_get("actor_id")?,
                    reason: self.try_get("reason")?,
                    endpoint: self.try_get("endpoint")?,
                    headers: serde_json::from_str(&headers)
                        .map_err(|e| StoreError::Corrupt(format!("subscription headers: {e}")))?,
                    status: self.try_get("status")?,
                    error: self.try_get("error")?,
                    created_at: self.try_get("created_at")?,
                    events_since_start: self.try_get("events_since_start")?,
                })
            }
        }
    };
}
row_like!(sqlx::postgres::PgRow);
row_like!(sqlx::sqlite::SqliteRow);

impl Store {
    /// Stores a new subscription, active, with every Task of its provider recorded at its
    /// current version (it hears of later changes only), in one transaction.
    pub async fn create_subscription(&self, s: &StoredSubscription) -> Result<(), StoreError> {
        let headers = serde_json::to_string(&s.headers)
            .map_err(|e| StoreError::Corrupt(format!("subscription headers: {e}")))?;
        let insert = format!(
            "INSERT INTO fhir_subscriptions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        );
        let baseline = "INSERT INTO fhir_deliveries (subscription_id, referral_id, version) \
                        SELECT $1, referral_id, version FROM fhir_tasks WHERE agency = $2 AND provider_id = $3";
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(&insert)
                .bind(&s.id)
                .bind(&s.agency)
                .bind(&s.provider_id)
                .bind(&s.actor_id)
                .bind(&s.reason)
                .bind(&s.endpoint)
                .bind(&headers)
                .bind(&s.status)
                .bind(&s.error)
                .bind(&s.created_at)
                .bind(s.events_since_start)
                .execute(&mut *tx)
                .await?;
            sqlx::query(baseline)
                .bind(&s.id)
                .bind(&s.agency)
                .bind(&s.provider_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn subscription(&self, id: &str) -> Result<Option<StoredSubscription>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM fhir_subscriptions WHERE id = $1");
        on_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await?;
            row.map(|r| read(&r)).transpose()
        })
    }

    /// Subscriptions that are delivering (active, or failing and retried).
    pub async fn live_subscriptions(&self) -> Result<Vec<StoredSubscription>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM fhir_subscriptions WHERE status IN ('active', 'error') ORDER BY id"
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(&sql).fetch_all(pool).await?;
            rows.iter().map(read).collect()
        })
    }

    /// Turns a subscription off (nothing more is delivered); its deliveries go with it.
    pub async fn end_subscription(&self, id: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query("UPDATE fhir_subscriptions SET status = 'off' WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM fhir_deliveries WHERE subscription_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The Tasks of the subscription's provider that changed since it was last told, oldest
    /// change first, at most `limit`.
    pub async fn pending_changes(
        &self,
        s: &StoredSubscription,
        limit: i64,
    ) -> Result<Vec<PendingChange>, StoreError> {
        let sql = "SELECT t.referral_id, t.version, t.last_updated FROM fhir_tasks t \
                   LEFT JOIN fhir_deliveries d ON d.subscription_id = $1 AND d.referral_id = t.referral_id \
                   WHERE t.agency = $2 AND t.provider_id = $3 AND t.version > COALESCE(d.version, 0) \
                   ORDER BY t.last_updated, t.referral_id LIMIT $4";
        on_pool!(self, pool => {
            let rows = sqlx::query(sql)
                .bind(&s.id)
                .bind(&s.agency)
                .bind(&s.provider_id)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(PendingChange {
                        referral_id: r.try_get("referral_id")?,
                        version: r.try_get("version")?,
                        last_updated: r.try_get("last_updated")?,
                    })
                })
                .collect()
        })
    }

    /// Records that the endpoint acknowledged a notification of `changes`: each Task's version,
    /// the event count, the subscription active again.
    pub async fn record_delivery(
        &self,
        id: &str,
        changes: &[PendingChange],
    ) -> Result<(), StoreError> {
        let upsert = "INSERT INTO fhir_deliveries (subscription_id, referral_id, version) VALUES ($1, $2, $3) \
                      ON CONFLICT (subscription_id, referral_id) DO UPDATE SET version = excluded.version \
                      WHERE fhir_deliveries.version < excluded.version";
        let count = "UPDATE fhir_subscriptions SET events_since_start = events_since_start + $2, \
                     status = 'active', error = NULL WHERE id = $1 AND status <> 'off'";
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for c in changes {
                sqlx::query(upsert)
                    .bind(id)
                    .bind(&c.referral_id)
                    .bind(c.version)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(count)
                .bind(id)
                .bind(changes.len() as i64)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records that a delivery failed (`error` shows on the Subscription; it is retried).
    pub async fn record_delivery_error(&self, id: &str, error: &str) -> Result<(), StoreError> {
        let sql = "UPDATE fhir_subscriptions SET status = 'error', error = $2 WHERE id = $1 AND status <> 'off'";
        on_pool!(self, pool => {
            sqlx::query(sql).bind(id).bind(error).execute(pool).await?;
        });
        Ok(())
    }
}
