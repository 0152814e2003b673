//! The log of reads of case data: who read which case, through which route, when, and whether
//! the read was allowed.

use aggregates::Actor;
use chrono::{DateTime, Utc};
use schemas::CaseId;
use sqlx::Row;

use super::{Backend, Store};
use crate::error::StoreError;

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ReadEntry {
    pub read_at: DateTime<Utc>,
    pub actor: String,
    pub role: String,
    pub agency: String,
    pub route: String,
    /// `allowed` or `denied`.
    pub outcome: String,
}

impl Store {
    pub async fn log_read(
        &self,
        actor: &Actor,
        case: CaseId,
        route: &str,
        allowed: bool,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.log_reads(actor, &[case], route, allowed, at).await
    }

    /// Records reads of several cases by one request (a caseload, a search's page) in one
    /// statement: one commit, not one per case.
    pub async fn log_reads(
        &self,
        actor: &Actor,
        cases: &[CaseId],
        route: &str,
        allowed: bool,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let outcome = if allowed { "allowed" } else { "denied" };
        // 1,000 rows of 7 parameters stay under both databases' limits on bound parameters.
        for cases in cases.chunks(1000) {
            self.insert_reads(actor, cases, route, outcome, at).await?;
        }
        Ok(())
    }

    async fn insert_reads(
        &self,
        actor: &Actor,
        cases: &[CaseId],
        route: &str,
        outcome: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO case_reads (read_at, actor_id, actor_role, actor_agency, case_id, route, outcome) ",
            );
            insert.push_values(cases, |mut row, case| {
                row.push_bind(at)
                    .push_bind(actor.id.as_str())
                    .push_bind(actor.role.as_str())
                    .push_bind(actor.agency.as_str())
                    .push_bind(case.to_string())
                    .push_bind(route)
                    .push_bind(outcome);
            });
            insert.build().execute(pool).await?;
        });
        Ok(())
    }

    /// Up to `limit` reads of a case after the read with id `after`, oldest first, with their ids.
    pub async fn reads_of(
        &self,
        case: CaseId,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(i64, ReadEntry)>, StoreError> {
        let sql = "SELECT id, read_at, actor_id, actor_role, actor_agency, route, outcome \
                   FROM case_reads WHERE case_id = $1 AND id > $2 ORDER BY id LIMIT $3";
        let case = case.to_string();
        on_pool!(self, pool => {
            let rows = sqlx::query(sql)
                .bind(&case)
                .bind(after.unwrap_or(0))
                .bind(limit as i64)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| Ok((r.try_get("id")?, ReadEntry {
                    read_at: r.try_get("read_at")?,
                    actor: r.try_get("actor_id")?,
                    role: r.try_get("actor_role")?,
                    agency: r.try_get("actor_agency")?,
                    route: r.try_get("route")?,
                    outcome: r.try_get("outcome")?,
                })))
                .collect()
        })
    }
}
