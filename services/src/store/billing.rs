//! Storage of the billing projection: one folded `BillingCase` per case and the months each case
//! has contacts in; a batch and the checkpoint after it commit together.

use aggregates::CaseEvent;
use chrono::Utc;
use futures::{Stream, StreamExt, TryStreamExt};
use projections::billing::{BillingCase, Month};
use schemas::ActorId;
use sqlx::types::Json;

use super::projections::{group_by_case, UPSERT_CHECKPOINT};
use super::{Backend, LogEvent, Store};
use crate::error::StoreError;

/// The name of the billing projection.
pub const BILLING: &str = "billing";

const UPSERT_CASE: &str = "\
INSERT INTO billing_cases (case_id, agency, state) VALUES ($1, $2, $3)
ON CONFLICT (case_id) DO UPDATE SET agency = excluded.agency, state = excluded.state";

const INSERT_MONTH: &str = "\
INSERT INTO billing_case_months (month, case_id, agency) VALUES ($1, $2, $3)
ON CONFLICT (month, case_id) DO NOTHING";

impl Store {
    /// Folds a batch into each touched case's billing state and moves the checkpoint past it,
    /// atomically.
    pub async fn project_billing(&self, batch: &[LogEvent]) -> Result<(), StoreError> {
        let Some(last) = batch.last() else {
            return Ok(());
        };
        let by_case = group_by_case(batch);
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for (case_id, events) in &by_case {
                let id = case_id.to_string();
                let stored: Option<Json<BillingCase>> =
                    sqlx::query_scalar("SELECT state FROM billing_cases WHERE case_id = $1")
                        .bind(&id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let mut case = stored.map(|Json(c)| c).unwrap_or_default();
                for e in events {
                    let event: CaseEvent = serde_json::from_value(e.event.payload.clone()).map_err(|err| {
                        StoreError::Corrupt(format!("event {} does not read back: {err}", e.event.event_id))
                    })?;
                    let actor = e.event.metadata.get("actor_id").and_then(|a| ActorId::parse(a.as_str()).ok());
                    case.apply(e.event.event_id, actor, &event);
                }
                let Some(agency) = case.agency.clone() else {
                    continue;
                };
                sqlx::query(UPSERT_CASE)
                    .bind(&id)
                    .bind(agency.as_str())
                    .bind(Json(&case))
                    .execute(&mut *tx)
                    .await?;
                for month in case.months() {
                    sqlx::query(INSERT_MONTH)
                        .bind(month.to_string())
                        .bind(&id)
                        .bind(agency.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
            }
            commit_with_checkpoint!(tx, BILLING, last, batch.len())
        })
    }

    /// How many cases have contacts in `month` (of `agency`, or all).
    pub async fn billing_case_count(
        &self,
        month: Month,
        agency: Option<&str>,
    ) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM billing_case_months WHERE month = $1 AND ($2 IS NULL OR agency = $2)";
        on_pool!(self, pool => {
            Ok(sqlx::query_scalar(sql).bind(month.to_string()).bind(agency).fetch_one(pool).await?)
        })
    }

    /// The billing state of every case with contacts in `month` (of `agency`, or all), in case id
    /// order, streamed: memory stays flat however many cases the month has.
    pub fn billing_cases_of_month<'a>(
        &'a self,
        month: Month,
        agency: Option<&'a str>,
    ) -> impl Stream<Item = Result<BillingCase, StoreError>> + Send + 'a {
        let sql = "SELECT c.state FROM billing_case_months m JOIN billing_cases c ON c.case_id = m.case_id \
                   WHERE m.month = $1 AND ($2 IS NULL OR m.agency = $2) ORDER BY m.case_id";
        let month = month.to_string();
        on_pool!(self, pool => sqlx::query_scalar::<_, Json<BillingCase>>(sql)
            .bind(month)
            .bind(agency)
            .fetch(pool)
            .map_ok(|Json(c)| c)
            .map_err(StoreError::from)
            .boxed())
    }
}
