//! Storage of projections: checkpoints, the audit trail's rows and the caseload rows. The folds
//! are the projections crate's; this module holds only their SQL. A batch of events and the
//! checkpoint after it are written in one transaction: a crash leaves both or neither.

use std::collections::HashMap;

use aggregates::Case;
use chrono::{DateTime, Utc};
use schemas::CaseId;
use sqlx::types::Json;
use sqlx::Row;

use projections::log::group_by_case;

use super::{Backend, LogEvent, LogPosition, Store};
use crate::error::StoreError;

#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    pub at: LogPosition,
    pub events: i64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub sequence: i64,
    pub event_id: String,
    pub event_type: String,
    pub event_version: String,
    pub actor: Option<String>,
    pub role: Option<String>,
    pub occurred_at: Option<String>,
    pub recorded_at: DateTime<Utc>,
    pub correlation_id: Option<String>,
    pub summary: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Moves a projection's checkpoint past `last` (counting `n` events) inside the batch's
/// transaction, then commits it: rows and checkpoint land together or not at all.
macro_rules! commit_with_checkpoint {
    ($tx:ident, $name:expr, $last:expr, $n:expr) => {{
        sqlx::query(UPSERT_CHECKPOINT)
            .bind($name)
            .bind($last.at.txid)
            .bind($last.at.position)
            .bind($n as i64)
            .bind(Utc::now())
            .execute(&mut *$tx)
            .await?;
        $tx.commit().await?;
        Ok(())
    }};
}

pub(super) const UPSERT_CHECKPOINT: &str = "\
INSERT INTO projection_checkpoints (name, txid, position, events, error, updated_at)
VALUES ($1, $2, $3, $4, NULL, $5)
ON CONFLICT (name) DO UPDATE SET txid = excluded.txid, position = excluded.position,
  events = projection_checkpoints.events + excluded.events, error = NULL,
  updated_at = excluded.updated_at";

const UPSERT_CASELOAD: &str = "\
INSERT INTO caseload_cases (case_id, agency, worker_id, open, version, state)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (case_id) DO UPDATE SET agency = excluded.agency, worker_id = excluded.worker_id,
  open = excluded.open, version = excluded.version, state = excluded.state";

/// The newest entry's hash of each listed case (a JSON array of case ids), NULL for a case with
/// none yet: one primary-key lookup per case, whatever plan the statement is given.
const PG_AUDIT_HEADS: &str = "\
SELECT c.case_id,
       (SELECT a.hash FROM audit_entries a WHERE a.case_id = c.case_id
         ORDER BY a.sequence DESC LIMIT 1) AS hash
  FROM jsonb_array_elements_text($1) AS c(case_id)";

const SQLITE_AUDIT_HEADS: &str = "\
SELECT c.value AS case_id,
       (SELECT a.hash FROM audit_entries a WHERE a.case_id = c.value
         ORDER BY a.sequence DESC LIMIT 1) AS hash
  FROM json_each($1) AS c";

/// Every entry of a batch in one statement (a JSON array of entries).
const PG_INSERT_AUDIT: &str = "\
INSERT INTO audit_entries (case_id, sequence, event_id, event_type, event_version, actor_id,
  actor_role, occurred_at, recorded_at, correlation_id, summary, prev_hash, hash)
SELECT case_id, sequence, event_id, event_type, event_version, actor_id, actor_role, occurred_at,
       recorded_at, correlation_id, summary, prev_hash, hash
  FROM jsonb_to_recordset($1) AS x(case_id text, sequence bigint, event_id text, event_type text,
       event_version text, actor_id text, actor_role text, occurred_at text, recorded_at timestamptz,
       correlation_id text, summary text, prev_hash text, hash text)";

const SQLITE_INSERT_AUDIT: &str = "\
INSERT INTO audit_entries (case_id, sequence, event_id, event_type, event_version, actor_id,
  actor_role, occurred_at, recorded_at, correlation_id, summary, prev_hash, hash)
SELECT value ->> 'case_id', value ->> 'sequence', value ->> 'event_id', value ->> 'event_type',
       value ->> 'event_version', value ->> 'actor_id', value ->> 'actor_role',
       value ->> 'occurred_at', value ->> 'recorded_at', value ->> 'correlation_id',
       value ->> 'summary', value ->> 'prev_hash', value ->> 'hash'
  FROM json_each($1)";

impl Store {
    pub async fn checkpoint(&self, name: &str) -> Result<Checkpoint, StoreError> {
        let sql =
            "SELECT txid, position, events, error FROM projection_checkpoints WHERE name = $1";
        on_pool!(self, pool => {
            let Some(row) = sqlx::query(sql).bind(name).fetch_optional(pool).await? else {
                return Ok(Checkpoint::default());
            };
            Ok(Checkpoint {
                at: LogPosition { txid: row.try_get("txid")?, position: row.try_get("position")? },
                events: row.try_get("events")?,
                error: row.try_get("error")?,
            })
        })
    }

    /// Applies a batch to the audit trail and moves its checkpoint past it, atomically: one
    /// statement finds the chain heads of the batch's cases, one inserts every entry.
    pub async fn project_audit(&self, name: &str, batch: &[LogEvent]) -> Result<(), StoreError> {
        let Some(last) = batch.last() else {
            return Ok(());
        };
        let mut cases: Vec<String> = batch.iter().map(|e| e.case_id.to_string()).collect();
        cases.sort_unstable();
        cases.dedup();
        let (heads_sql, insert_sql) = match &self.backend {
            Backend::Postgres { .. } => (PG_AUDIT_HEADS, PG_INSERT_AUDIT),
            Backend::Sqlite { .. } => (SQLITE_AUDIT_HEADS, SQLITE_INSERT_AUDIT),
        };
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let rows = sqlx::query(heads_sql)
                .bind(Json(&cases))
                .fetch_all(&mut *tx)
                .await?;
            let mut heads: HashMap<String, String> = HashMap::with_capacity(rows.len());
            for r in rows {
                if let Some(hash) = r.try_get::<Option<String>, _>("hash")? {
                    heads.insert(r.try_get("case_id")?, hash);
                }
            }
            let entries = ::projections::audit::entries(batch, &mut heads);
            sqlx::query(insert_sql).bind(Json(&entries)).execute(&mut *tx).await?;
            commit_with_checkpoint!(tx, name, last, batch.len())
        })
    }

    /// Folds a batch into each case's caseload row and moves the checkpoint past it, atomically.
    /// An event that does not read back as a `CaseEvent` fails the batch (the engine stops the
    /// projection there rather than skip it).
    pub async fn project_caseloads(
        &self,
        name: &str,
        batch: &[LogEvent],
    ) -> Result<(), StoreError> {
        let Some(last) = batch.last() else {
            return Ok(());
        };
        let by_case = group_by_case(batch);
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for (case_id, events) in &by_case {
                let id = case_id.to_string();
                let stored: Option<Json<Case>> = sqlx::query_scalar("SELECT state FROM caseload_cases WHERE case_id = $1")
                    .bind(&id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let mut case = stored.map(|Json(c)| c).unwrap_or_default();
                ::projections::caseload::fold(&mut case, events)?;
                let Some(agency) = case.agency().cloned() else {
                    continue;
                };
                sqlx::query(UPSERT_CASELOAD)
                    .bind(&id)
                    .bind(agency.as_str())
                    .bind(case.assigned_to.as_ref().map(|w| w.as_str().to_owned()))
                    .bind(case.closed.is_none())
                    .bind(case.version as i64)
                    .bind(Json(&case))
                    .execute(&mut *tx)
                    .await?;
            }
            commit_with_checkpoint!(tx, name, last, batch.len())
        })
    }

    /// Open cases' states: one worker's, or (with `agency`) a whole agency's, or all.
    pub async fn open_caseload(
        &self,
        worker: Option<&str>,
        agency: Option<&str>,
    ) -> Result<Vec<Case>, StoreError> {
        self.case_states(worker, agency, true).await
    }

    /// Case states from the caseload projection, open or (unless `only_open`) closed too.
    pub async fn case_states(
        &self,
        worker: Option<&str>,
        agency: Option<&str>,
        only_open: bool,
    ) -> Result<Vec<Case>, StoreError> {
        let sql = "SELECT state FROM caseload_cases WHERE (open OR NOT $3) \
                   AND ($1 IS NULL OR worker_id = $1) AND ($2 IS NULL OR agency = $2) ORDER BY case_id";
        on_pool!(self, pool => {
            let rows: Vec<Json<Case>> = sqlx::query_scalar(sql)
                .bind(worker)
                .bind(agency)
                .bind(only_open)
                .fetch_all(pool)
                .await?;
            Ok(rows.into_iter().map(|Json(c)| c).collect())
        })
    }

    /// Records that a projection stopped on an event, so status and /readyz show it.
    pub async fn mark_projection_failed(&self, name: &str, error: &str) -> Result<(), StoreError> {
        let sql = "INSERT INTO projection_checkpoints (name, error, updated_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (name) DO UPDATE SET error = excluded.error, updated_at = excluded.updated_at";
        on_pool!(self, pool => {
            sqlx::query(sql).bind(name).bind(error).bind(Utc::now()).execute(pool).await?;
        });
        Ok(())
    }

    /// Drops a projection's rows (every row of `tables`, in order) and its checkpoint, in one
    /// transaction, for a rebuild from zero.
    pub async fn reset_projection(&self, name: &str, tables: &[&str]) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for table in tables {
                sqlx::query(&format!("DELETE FROM {table}")).execute(&mut *tx).await?;
            }
            sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// How many events of the log lie beyond `at`.
    pub async fn events_after(&self, at: LogPosition) -> Result<i64, StoreError> {
        match &self.backend {
            Backend::Postgres { pool, .. } => Ok(sqlx::query_scalar(
                "SELECT COUNT(*) FROM events WHERE aggregate_type = 'Case' \
                 AND (txid, position) > ($1::text::xid8, $2)",
            )
            .bind(at.txid.to_string())
            .bind(at.position)
            .fetch_one(pool)
            .await?),
            Backend::Sqlite { pool, .. } => Ok(sqlx::query_scalar(
                "SELECT COUNT(*) FROM events WHERE aggregate_type = 'Case' AND position > ?1",
            )
            .bind(at.position)
            .fetch_one(pool)
            .await?),
        }
    }

    pub async fn audit_entries(&self, case: CaseId) -> Result<Vec<AuditEntry>, StoreError> {
        let sql = "SELECT sequence, event_id, event_type, event_version, actor_id, actor_role, \
                   occurred_at, recorded_at, correlation_id, summary, prev_hash, hash \
                   FROM audit_entries WHERE case_id = $1 ORDER BY sequence";
        let case = case.to_string();
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(&case).fetch_all(pool).await?;
            rows.iter()
                .map(|r| Ok(AuditEntry {
                    sequence: r.try_get("sequence")?,
                    event_id: r.try_get("event_id")?,
                    event_type: r.try_get("event_type")?,
                    event_version: r.try_get("event_version")?,
                    actor: r.try_get("actor_id")?,
                    role: r.try_get("actor_role")?,
                    occurred_at: r.try_get("occurred_at")?,
                    recorded_at: r.try_get("recorded_at")?,
                    correlation_id: r.try_get("correlation_id")?,
                    summary: r.try_get("summary")?,
                    prev_hash: r.try_get("prev_hash")?,
                    hash: r.try_get("hash")?,
                }))
                .collect()
        })
    }

    /// Every case id in the store.
    pub async fn case_ids(&self) -> Result<Vec<CaseId>, StoreError> {
        let sql = "SELECT DISTINCT aggregate_id FROM events WHERE aggregate_type = 'Case' ORDER BY aggregate_id";
        let ids: Vec<String> =
            on_pool!(self, pool => sqlx::query_scalar(sql).fetch_all(pool).await?);
        ids.iter()
            .map(|s| CaseId::parse(s).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect()
    }
}
