//! Storage of projections: checkpoints, the audit trail's rows and the caseload rows. The folds
//! are the projections crate's; this module holds only their SQL. A batch of events and the
//! checkpoint after it are written in one transaction: a crash leaves both or neither.

use std::collections::HashMap;

use aggregates::Case;
use chrono::{DateTime, Utc};
use schemas::CaseId;
use sqlx::types::Json;
use sqlx::Row;

use projections::caseload::{CaseloadState, ContactDates};
use projections::log::group_by_case;
use projections::search::name_key;

use super::copy::{BinaryRows, CopyIn, Field};
use super::BeginWrite;
use super::{Backend, LogEvent, LogPosition, Store, Work};
use crate::error::StoreError;

#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    pub at: LogPosition,
    pub events: i64,
    pub error: Option<String>,
    /// The replica that committed the last batch.
    pub applied_by: Option<String>,
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

/// Which batch a projection applies: the events after `from` (the checkpoint they were read
/// after), on behalf of replica `by`.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub from: LogPosition,
    pub by: &'a str,
}

/// Claims a batch as the first statement of its transaction: a compare-and-set that moves the
/// projection's checkpoint from `claim.from` past `last` (counting `n` events) only if it still
/// stands at `claim.from`. The row lock it takes makes a second applier of the same projection
/// wait until this transaction ends, then find the checkpoint moved: it rolls back, having
/// written nothing, and the macro returns `Ok(false)` from the enclosing function. Rows and
/// checkpoint then commit together or not at all.
macro_rules! claim_batch {
    ($tx:ident, $name:expr, $claim:expr, $last:expr, $n:expr) => {{
        let claim: &Claim = &$claim;
        let sql = if claim.from == LogPosition::START {
            CLAIM_FIRST
        } else {
            CLAIM_NEXT
        };
        let claimed = sqlx::query(sql)
            .bind($name)
            .bind(claim.from.txid)
            .bind(claim.from.position)
            .bind($last.at.txid)
            .bind($last.at.position)
            .bind($n as i64)
            .bind(Utc::now())
            .bind(claim.by)
            .execute(&mut *$tx)
            .await?
            .rows_affected();
        if claimed != 1 {
            $tx.rollback().await?;
            return Ok(false);
        }
    }};
}

/// The write half of a batch folded ahead (`Store::write_audit` and the like): in one
/// transaction on the projections' pool, claims `$batch` from `$claim` (false, nothing written,
/// if another applier moved the checkpoint first), runs `$body` with the transaction as `$tx`,
/// and commits.
macro_rules! write_in_claim {
    ($self:ident, $name:expr, $claim:expr, $batch:expr, $tx:ident => $body:expr) => {{
        let Some(last) = $batch.last() else {
            return Ok(true);
        };
        on_pool_for!($self, Work::Projections, pool => {
            let mut $tx = pool.begin_write().await?;
            claim_batch!($tx, $name, $claim, last, $batch.len());
            $body;
            $tx.commit().await?;
            Ok(true)
        })
    }};
}

/// The claim of a batch after an existing checkpoint.
pub(super) const CLAIM_NEXT: &str = "\
UPDATE projection_checkpoints SET txid = $4, position = $5, events = events + $6, error = NULL,
  updated_at = $7, applied_by = $8
WHERE name = $1 AND txid = $2 AND position = $3 AND error IS NULL";

/// The claim of the first batch: the checkpoint row may not exist yet (or was reset to start).
pub(super) const CLAIM_FIRST: &str = "\
INSERT INTO projection_checkpoints (name, txid, position, events, error, updated_at, applied_by)
VALUES ($1, $4, $5, $6, NULL, $7, $8)
ON CONFLICT (name) DO UPDATE SET txid = excluded.txid, position = excluded.position,
  events = projection_checkpoints.events + excluded.events, updated_at = excluded.updated_at,
  applied_by = excluded.applied_by
WHERE projection_checkpoints.txid = $2 AND projection_checkpoints.position = $3
  AND projection_checkpoints.error IS NULL";

/// Moves a checkpoint that only one process moves at a time (the relay's, under its lease).
pub(super) const UPSERT_CHECKPOINT: &str = "\
INSERT INTO projection_checkpoints (name, txid, position, events, error, updated_at, applied_by)
VALUES ($1, $2, $3, $4, NULL, $5, $6)
ON CONFLICT (name) DO UPDATE SET txid = excluded.txid, position = excluded.position,
  events = projection_checkpoints.events + excluded.events, error = NULL,
  updated_at = excluded.updated_at, applied_by = excluded.applied_by";

/// Open cases (of worker $1, or all; of agency $2, or all), each with its contact dates.
const OPEN_CASELOAD: &str = "\
SELECT c.state,
       (SELECT max(k.day) FROM caseload_contacts k WHERE k.case_id = c.case_id AND NOT k.voided),
       (SELECT max(k.day) FROM caseload_contacts k
         WHERE k.case_id = c.case_id AND NOT k.voided AND k.with_family)
FROM caseload_cases c
WHERE c.open AND ($1 IS NULL OR c.worker_id = $1) AND ($2 IS NULL OR c.agency = $2)
ORDER BY c.case_id";

/// Every touched case's caseload row, from a JSON array of `CaseloadRow`s: one statement a batch.
const PG_UPSERT_CASELOADS: &str = "\
INSERT INTO caseload_cases (case_id, agency, worker_id, open, version, state, medicaid_id,
  given_key, family_key, birth_date, program)
SELECT x ->> 'case_id', x ->> 'agency', x ->> 'worker_id', (x ->> 'open')::boolean,
       (x ->> 'version')::bigint, x -> 'state', x ->> 'medicaid_id', x ->> 'given_key',
       x ->> 'family_key', x ->> 'birth_date', x ->> 'program'
FROM jsonb_array_elements($1) AS x
ON CONFLICT (case_id) DO UPDATE SET agency = excluded.agency, worker_id = excluded.worker_id,
  open = excluded.open, version = excluded.version, state = excluded.state,
  medicaid_id = excluded.medicaid_id, given_key = excluded.given_key,
  family_key = excluded.family_key, birth_date = excluded.birth_date, program = excluded.program";

/// `WHERE true` lets SQLite tell the upsert's ON CONFLICT from a join's ON.
const SQLITE_UPSERT_CASELOADS: &str = "\
INSERT INTO caseload_cases (case_id, agency, worker_id, open, version, state, medicaid_id,
  given_key, family_key, birth_date, program)
SELECT value ->> 'case_id', value ->> 'agency', value ->> 'worker_id', value ->> 'open',
       value ->> 'version', json(value -> 'state'), value ->> 'medicaid_id',
       value ->> 'given_key', value ->> 'family_key', value ->> 'birth_date', value ->> 'program'
FROM json_each($1) WHERE true
ON CONFLICT (case_id) DO UPDATE SET agency = excluded.agency, worker_id = excluded.worker_id,
  open = excluded.open, version = excluded.version, state = excluded.state,
  medicaid_id = excluded.medicaid_id, given_key = excluded.given_key,
  family_key = excluded.family_key, birth_date = excluded.birth_date, program = excluded.program";

/// A batch's audit rows, folded ahead of their write (`Store::fold_audit`).
#[derive(Debug, Default)]
pub struct AuditFold {
    entries: Vec<::projections::audit::AuditRow>,
}

/// The case ids a batch touches, in the order `group_by_case` gives them.
pub(super) fn case_ids(batch: &[LogEvent]) -> Vec<String> {
    group_by_case(batch)
        .iter()
        .map(|(id, _)| id.to_string())
        .collect()
}

/// The caseload projection's statements on one backend.
struct CaseloadStatements {
    load: &'static str,
    upsert: &'static str,
    contacts: &'static str,
    voids: &'static str,
}

fn caseload_statements(backend: &Backend) -> CaseloadStatements {
    match backend {
        Backend::Postgres { .. } => CaseloadStatements {
            load: PG_LOAD_CASELOADS,
            upsert: PG_UPSERT_CASELOADS,
            contacts: PG_INSERT_CASELOAD_CONTACTS,
            voids: PG_VOID_CASELOAD_CONTACTS,
        },
        Backend::Sqlite { .. } => CaseloadStatements {
            load: SQLITE_LOAD_CASELOADS,
            upsert: SQLITE_UPSERT_CASELOADS,
            contacts: SQLITE_INSERT_CASELOAD_CONTACTS,
            voids: SQLITE_VOID_CASELOAD_CONTACTS,
        },
    }
}

/// A batch folded into caseload rows: the opened cases it touched with their states after it
/// (and whether the batch changed each: a case's contacts alone do not), and the contacts it
/// logged and voided (by index into `cases`).
#[derive(Debug, Default)]
pub struct CaseloadsFold {
    cases: Vec<(String, Case)>,
    changed: Vec<bool>,
    contacts: Vec<(usize, ::projections::caseload::ContactRow)>,
    voids: Vec<(usize, ::projections::log::VoidRow)>,
}

impl CaseloadsFold {
    /// Folds `batch` onto the `stored` states of its cases (absent: none yet). Pure.
    fn of(batch: &[LogEvent], mut stored: HashMap<String, Case>) -> Result<Self, StoreError> {
        let mut folded = Self::default();
        for (case_id, events) in group_by_case(batch) {
            let id = case_id.to_string();
            let mut case = stored.remove(&id).unwrap_or_default();
            let version = case.version;
            let rows = ::projections::caseload::fold(&mut case, &events)?;
            if case.opened.is_none() {
                continue;
            }
            // The fold moves `version` with every event it folds into the state, and with
            // nothing else.
            folded.changed.push(case.version != version);
            let at = folded.cases.len();
            folded
                .contacts
                .extend(rows.contacts.into_iter().map(|row| (at, row)));
            folded
                .voids
                .extend(rows.voided.into_iter().map(|row| (at, row)));
            folded.cases.push((id, case));
        }
        Ok(folded)
    }
}

/// Writes a `CaseloadsFold` in transaction `$tx` with statements `$sql`: the states the batch
/// changed, the contacts and the voids in one statement each. A state the batch left as it was
/// (a case's contacts alone) is not written back: in the HTTP benchmark, where contacts are
/// nearly every event, that was a state row rewritten for almost every contact.
macro_rules! write_caseloads {
    ($tx:ident, $sql:expr, $folded:expr, $bulk:expr) => {{
        let folded = &$folded;
        let rows: Vec<CaseloadRow> = folded
            .cases
            .iter()
            .zip(&folded.changed)
            .filter(|(_, changed)| **changed)
            .filter_map(|((id, case), _)| CaseloadRow::of(id, case))
            .collect();
        if !rows.is_empty() {
            sqlx::query($sql.upsert)
                .bind(Json(&rows))
                .execute(&mut *$tx)
                .await?;
        }
        if $bulk && !folded.contacts.is_empty() {
            let mut copy = BinaryRows::new(5, folded.contacts.len() * 100);
            for (at, row) in &folded.contacts {
                let event_id = row.event_id.to_string();
                let day = row.day.to_string();
                copy.push(&[
                    Field::Text(folded.cases[*at].0.as_str()),
                    Field::Int8(sequence_column(row.sequence)?),
                    Field::Text(&event_id),
                    Field::Text(&day),
                    Field::Bool(row.with_family),
                ])?;
            }
            CopyIn::copy_binary(&mut *$tx, COPY_CASELOAD_CONTACTS, copy).await?;
        } else if !folded.contacts.is_empty() {
            let contacts = CaseRow::each(&folded.cases, &folded.contacts);
            sqlx::query($sql.contacts)
                .bind(Json(&contacts))
                .execute(&mut *$tx)
                .await?;
        }
        let voids = CaseRow::each(&folded.cases, &folded.voids);
        if !voids.is_empty() {
            sqlx::query($sql.voids)
                .bind(Json(&voids))
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

/// A case's caseload row: its state and the columns that select and search it.
#[derive(serde::Serialize)]
struct CaseloadRow<'a> {
    case_id: &'a str,
    agency: &'a str,
    worker_id: Option<&'a str>,
    open: bool,
    version: u64,
    state: &'a Case,
    medicaid_id: Option<&'a str>,
    given_key: String,
    family_key: String,
    birth_date: String,
    program: &'a str,
}

impl<'a> CaseloadRow<'a> {
    /// None for a case not opened (nothing to show or search).
    fn of(case_id: &'a str, case: &'a Case) -> Option<Self> {
        let opened = case.opened.as_ref()?;
        let child = &opened.child;
        Some(Self {
            case_id,
            agency: opened.agency.as_str(),
            worker_id: case.assigned_to.as_ref().map(|w| w.as_str()),
            open: case.closed.is_none(),
            version: case.version,
            state: case,
            medicaid_id: child.medicaid_id.as_ref().map(|m| m.as_str()),
            given_key: name_key(child.given_name.as_str()),
            family_key: name_key(child.family_name.as_str()),
            birth_date: child.birth_date.to_string(),
            program: opened.program.as_str(),
        })
    }
}

/// The caseload states of the listed cases (a JSON array of case ids).
const PG_LOAD_CASELOADS: &str =
    "SELECT case_id, state FROM caseload_cases WHERE case_id IN (SELECT jsonb_array_elements_text($1))";

const SQLITE_LOAD_CASELOADS: &str =
    "SELECT case_id, state FROM caseload_cases WHERE case_id IN (SELECT value FROM json_each($1))";

/// A batch's contact rows of the caseload projection (a JSON array of objects). A row the case
/// holds (a batch replayed) is not added again.
const PG_INSERT_CASELOAD_CONTACTS: &str = "\
INSERT INTO caseload_contacts (case_id, sequence, event_id, day, with_family)
SELECT x ->> 'case_id', (x ->> 'sequence')::bigint, x ->> 'event_id', x ->> 'day',
       (x ->> 'with_family')::boolean
FROM jsonb_array_elements($1) AS x
ON CONFLICT DO NOTHING";

const SQLITE_INSERT_CASELOAD_CONTACTS: &str = "\
INSERT INTO caseload_contacts (case_id, sequence, event_id, day, with_family)
SELECT value ->> 'case_id', value ->> 'sequence', value ->> 'event_id', value ->> 'day',
       value ->> 'with_family'
FROM json_each($1) WHERE true
ON CONFLICT DO NOTHING";

/// A bulk load's contact rows (`Store::loads_in_bulk`): its fold ahead knows each case's
/// stream position, so nothing it sends is a row the table holds.
const COPY_CASELOAD_CONTACTS: &str =
    "COPY caseload_contacts (case_id, sequence, event_id, day, with_family) FROM STDIN (FORMAT binary)";

/// A void marks the contact row it names, by case, sequence and event id (a void of anything
/// else matches no row).
const PG_VOID_CASELOAD_CONTACTS: &str = "\
UPDATE caseload_contacts k SET voided = true
FROM jsonb_array_elements($1) AS x
WHERE k.case_id = x ->> 'case_id' AND k.sequence = (x ->> 'sequence')::bigint
  AND k.event_id = x ->> 'event_id'";

const SQLITE_VOID_CASELOAD_CONTACTS: &str = "\
UPDATE caseload_contacts SET voided = 1
WHERE EXISTS (SELECT 1 FROM json_each($1) AS x
              WHERE caseload_contacts.case_id = x.value ->> 'case_id'
                AND caseload_contacts.sequence = x.value ->> 'sequence'
                AND caseload_contacts.event_id = x.value ->> 'event_id')";

/// A projection's row of one case (a contact, a void), as the statements that write a batch's
/// rows read it: the row's fields and the case's id, in one JSON object.
#[derive(serde::Serialize)]
pub(super) struct CaseRow<'a, T> {
    pub(super) case_id: &'a str,
    #[serde(flatten)]
    pub(super) row: T,
}

impl<'a, T> CaseRow<'a, &'a T> {
    /// Each of a folded batch's `rows`, numbered by its case's place in `cases`, with the case's
    /// id.
    pub(super) fn each<S>(cases: &'a [(String, S)], rows: &'a [(usize, T)]) -> Vec<Self> {
        rows.iter()
            .map(|(at, row)| CaseRow {
                case_id: cases[*at].0.as_str(),
                row,
            })
            .collect()
    }
}

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

/// How a batch's audit rows reach the table: PostgreSQL takes them by `COPY` (binary format,
/// `copy.rs`: one round trip, nothing for the server to parse), SQLite as one JSON array.
trait InsertAudit {
    async fn insert_audit(
        &mut self,
        json_sql: &str,
        rows: &[::projections::audit::AuditRow],
    ) -> Result<(), StoreError>;
}

/// A stream position as its `bigint` column holds it.
pub(super) fn sequence_column(sequence: u64) -> Result<i64, StoreError> {
    i64::try_from(sequence)
        .map_err(|_| StoreError::Unexpected(format!("sequence {sequence} is beyond a bigint")))
}

impl InsertAudit for sqlx::PgConnection {
    async fn insert_audit(
        &mut self,
        _json_sql: &str,
        rows: &[::projections::audit::AuditRow],
    ) -> Result<(), StoreError> {
        let mut copy = BinaryRows::new(13, rows.len() * 400);
        for r in rows {
            copy.push(&[
                Field::Text(&r.case_id),
                Field::Int8(sequence_column(r.sequence)?),
                Field::Text(&r.event_id),
                Field::Text(&r.event_type),
                Field::Text(&r.event_version),
                Field::from(r.actor_id.as_deref()),
                Field::from(r.actor_role),
                Field::from(r.occurred_at.as_deref()),
                Field::Timestamptz(r.recorded_at),
                Field::from(r.correlation_id.as_deref()),
                Field::Text(&r.summary),
                Field::Text(&r.prev_hash),
                Field::Text(&r.hash),
            ])?;
        }
        self.copy_binary(COPY_AUDIT, copy).await
    }
}

impl InsertAudit for sqlx::SqliteConnection {
    async fn insert_audit(
        &mut self,
        json_sql: &str,
        rows: &[::projections::audit::AuditRow],
    ) -> Result<(), StoreError> {
        sqlx::query(json_sql).bind(Json(rows)).execute(self).await?;
        Ok(())
    }
}

const COPY_AUDIT: &str =
    "COPY audit_entries (case_id, sequence, event_id, event_type, event_version, \
  actor_id, actor_role, occurred_at, recorded_at, correlation_id, summary, prev_hash, hash) \
  FROM STDIN (FORMAT binary)";

/// The trail's hash at each listed (case, sequence), from a JSON array of `{case_id, sequence}`.
const PG_AUDIT_HASHES: &str = "\
SELECT a.case_id, a.sequence, a.hash FROM audit_entries a
  JOIN jsonb_to_recordset($1) AS x(case_id text, sequence bigint)
    ON a.case_id = x.case_id AND a.sequence = x.sequence";

const SQLITE_AUDIT_HASHES: &str = "\
SELECT a.case_id, a.sequence, a.hash FROM audit_entries a
  JOIN json_each($1) AS x
    ON a.case_id = x.value ->> 'case_id' AND a.sequence = x.value ->> 'sequence'";

impl Store {
    /// The trail's hash at each (case, sequence) of `newest` that the trail holds.
    pub async fn audit_hashes(
        &self,
        newest: &std::collections::BTreeMap<String, u64>,
    ) -> Result<std::collections::HashMap<(String, u64), String>, StoreError> {
        let wanted: Vec<serde_json::Value> = newest
            .iter()
            .map(
                |(case_id, sequence)| serde_json::json!({"case_id": case_id, "sequence": sequence}),
            )
            .collect();
        let sql = match &self.backend {
            Backend::Postgres { .. } => PG_AUDIT_HASHES,
            Backend::Sqlite { .. } => SQLITE_AUDIT_HASHES,
        };
        on_pool!(self, pool => {
            let rows: Vec<(String, i64, String)> =
                sqlx::query_as(sql).bind(Json(&wanted)).fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|(case_id, sequence, hash)| ((case_id, sequence as u64), hash))
                .collect())
        })
    }

    /// The checkpoint `name`, read through the pool of `work` (whoever follows the log asks
    /// through its own).
    pub async fn checkpoint(&self, work: Work, name: &str) -> Result<Checkpoint, StoreError> {
        let sql =
            "SELECT txid, position, events, error, applied_by FROM projection_checkpoints WHERE name = $1";
        on_pool_for!(self, work, pool => {
            let Some(row) = sqlx::query(sql).bind(name).fetch_optional(pool).await? else {
                return Ok(Checkpoint::default());
            };
            Ok(Checkpoint {
                at: LogPosition { txid: row.try_get("txid")?, position: row.try_get("position")? },
                events: row.try_get("events")?,
                error: row.try_get("error")?,
                applied_by: row.try_get("applied_by")?,
            })
        })
    }

    /// Applies a batch to the audit trail and moves its checkpoint past it, atomically: one
    /// statement finds the chain heads of the batch's cases, one inserts every entry. False: the
    /// checkpoint had moved from `claim.from` (another replica applied the batch); nothing written.
    pub async fn project_audit(
        &self,
        name: &str,
        claim: Claim<'_>,
        batch: &[LogEvent],
    ) -> Result<bool, StoreError> {
        let Some(last) = batch.last() else {
            return Ok(true);
        };
        let mut cases: Vec<String> = batch.iter().map(|e| e.case_id.to_string()).collect();
        cases.sort_unstable();
        cases.dedup();
        let (heads_sql, insert_sql) = match &self.backend {
            Backend::Postgres { .. } => (PG_AUDIT_HEADS, PG_INSERT_AUDIT),
            Backend::Sqlite { .. } => (SQLITE_AUDIT_HEADS, SQLITE_INSERT_AUDIT),
        };
        let (mut heads, missing) = self.remembered.audit.recall(claim.from, &cases);
        on_pool_for!(self, Work::Projections, pool => {
            let mut tx = pool.begin_write().await?;
            claim_batch!(tx, name, claim, last, batch.len());
            if !missing.is_empty() {
                let rows = sqlx::query(heads_sql)
                    .bind(Json(&missing))
                    .fetch_all(&mut *tx)
                    .await?;
                for r in rows {
                    if let Some(hash) = r.try_get::<Option<String>, _>("hash")? {
                        heads.insert(r.try_get("case_id")?, hash);
                    }
                }
            }
            let entries = ::projections::audit::entries(batch, &mut heads)?;
            InsertAudit::insert_audit(&mut *tx, insert_sql, &entries).await?;
            tx.commit().await?;
            self.remembered.audit.remember(last.at, heads);
            Ok(true)
        })
    }

    /// Folds a batch into its audit rows without writing them, for a store whose rows this
    /// process's catch-up alone writes (`Store::folds_ahead`): chain heads it does not remember
    /// are read before any claim, and the heads after the batch are remembered at once, so the
    /// next batch can be folded while this one is written (`write_audit`).
    pub async fn fold_audit(
        &self,
        from: LogPosition,
        batch: std::sync::Arc<Vec<LogEvent>>,
    ) -> Result<AuditFold, StoreError> {
        self.may_fold_ahead()?;
        let Some(last) = batch.last().map(|e| e.at) else {
            return Ok(AuditFold::default());
        };
        let cases = case_ids(&batch);
        let heads_sql = match &self.backend {
            Backend::Postgres { .. } => PG_AUDIT_HEADS,
            Backend::Sqlite { .. } => SQLITE_AUDIT_HEADS,
        };
        let (mut heads, missing) = self.remembered.audit.recall(from, &cases);
        if !missing.is_empty() {
            let rows: Vec<(String, Option<String>)> = on_pool_for!(self, Work::Projections, pool => {
                sqlx::query_as(heads_sql).bind(Json(&missing)).fetch_all(pool).await?
            });
            heads.extend(
                rows.into_iter()
                    .filter_map(|(case, hash)| Some((case, hash?))),
            );
        }
        let (entries, heads) = super::off_thread(move || {
            let entries = ::projections::audit::entries(&batch, &mut heads);
            (entries, heads)
        })
        .await?;
        let entries = entries?;
        self.remembered.audit.remember(last, heads);
        Ok(AuditFold { entries })
    }

    /// Writes a batch `fold_audit` folded and moves the checkpoint past it, atomically, if the
    /// checkpoint still stands at `claim.from`.
    pub async fn write_audit(
        &self,
        name: &str,
        claim: Claim<'_>,
        batch: &[LogEvent],
        fold: AuditFold,
    ) -> Result<bool, StoreError> {
        let insert_sql = match &self.backend {
            Backend::Postgres { .. } => PG_INSERT_AUDIT,
            Backend::Sqlite { .. } => SQLITE_INSERT_AUDIT,
        };
        write_in_claim!(self, name, claim, batch, tx => {
            InsertAudit::insert_audit(&mut *tx, insert_sql, &fold.entries).await?
        })
    }

    /// Folds a batch into each case's caseload row and moves the checkpoint past it, atomically.
    /// An event that does not read back as a `CaseEvent` fails the batch (the engine stops the
    /// projection there rather than skip it).
    pub async fn project_caseloads(
        &self,
        name: &str,
        claim: Claim<'_>,
        batch: &[LogEvent],
    ) -> Result<bool, StoreError> {
        let Some(last) = batch.last() else {
            return Ok(true);
        };
        let ids = case_ids(batch);
        let sql = caseload_statements(&self.backend);
        let (mut stored, missing) = self.remembered.caseloads.recall(claim.from, &ids);
        on_pool_for!(self, Work::Projections, pool => {
            let mut tx = pool.begin_write().await?;
            claim_batch!(tx, name, claim, last, batch.len());
            // The touched cases' states this process does not remember, in one statement, not
            // one round trip per case; the states, the contacts and the voids go back in one
            // statement each.
            if !missing.is_empty() {
                let rows: Vec<(String, Json<Case>)> =
                    sqlx::query_as(sql.load).bind(Json(&missing)).fetch_all(&mut *tx).await?;
                stored.extend(rows.into_iter().map(|(id, Json(c))| (id, c)));
            }
            let folded = CaseloadsFold::of(batch, stored)?;
            write_caseloads!(tx, sql, folded, false);
            tx.commit().await?;
            self.remembered.caseloads.remember(last.at, folded.cases);
            Ok(true)
        })
    }

    /// As `fold_audit`, for the caseload rows.
    pub async fn fold_caseloads(
        &self,
        from: LogPosition,
        batch: std::sync::Arc<Vec<LogEvent>>,
    ) -> Result<CaseloadsFold, StoreError> {
        let load = caseload_statements(&self.backend).load;
        self.fold_states_ahead(
            &self.remembered.caseloads,
            from,
            batch,
            load,
            |batch, stored| {
                let folded = CaseloadsFold::of(batch, stored)?;
                let states = folded.cases.clone();
                Ok((folded, states))
            },
        )
        .await
    }

    /// Folds a batch read after `from` ahead of writing it, for a projection whose state per
    /// case is `T` (`Store::may_fold_ahead`): the states of the cases it touches are those
    /// `remembered` holds at `from` and the others read with `load_sql` (a JSON array of case
    /// ids in, `(case_id, state)` rows out), before any claim; `fold` (pure, on the blocking
    /// pool) gives what the write needs and the states after the batch, which are remembered
    /// at once.
    pub(super) async fn fold_states_ahead<T, F>(
        &self,
        remembered: &super::remembered::Remembered<T>,
        from: LogPosition,
        batch: std::sync::Arc<Vec<LogEvent>>,
        load_sql: &str,
        fold: impl FnOnce(&[LogEvent], HashMap<String, T>) -> Result<(F, Vec<(String, T)>), StoreError>
            + Send
            + 'static,
    ) -> Result<F, StoreError>
    where
        T: serde::de::DeserializeOwned + Send + Unpin + 'static,
        F: Default + Send + 'static,
    {
        self.may_fold_ahead()?;
        let Some(last) = batch.last().map(|e| e.at) else {
            return Ok(F::default());
        };
        let (mut states, missing) = remembered.recall(from, &case_ids(&batch));
        if !missing.is_empty() {
            let rows: Vec<(String, Json<T>)> = on_pool_for!(self, Work::Projections, pool => {
                sqlx::query_as(load_sql).bind(Json(&missing)).fetch_all(pool).await?
            });
            states.extend(rows.into_iter().map(|(id, Json(state))| (id, state)));
        }
        let (folded, after) = super::off_thread(move || fold(&batch, states)).await??;
        remembered.remember(last, after);
        Ok(folded)
    }

    /// As `write_audit`, for what `fold_caseloads` folded.
    pub async fn write_caseloads(
        &self,
        name: &str,
        claim: Claim<'_>,
        batch: &[LogEvent],
        folded: CaseloadsFold,
    ) -> Result<bool, StoreError> {
        let sql = caseload_statements(&self.backend);
        let bulk = self.loads_in_bulk();
        write_in_claim!(self, name, claim, batch, tx => write_caseloads!(tx, sql, folded, bulk))
    }

    /// Open cases as caseload views read them (state and contact dates): one worker's, or (with
    /// `agency`) a whole agency's, or all.
    pub async fn open_caseload(
        &self,
        worker: Option<&str>,
        agency: Option<&str>,
    ) -> Result<Vec<CaseloadState>, StoreError> {
        on_pool!(self, pool => {
            let rows: Vec<(Json<Case>, Option<String>, Option<String>)> = sqlx::query_as(OPEN_CASELOAD)
                .bind(worker)
                .bind(agency)
                .fetch_all(pool)
                .await?;
            rows.into_iter()
                .map(|(Json(case), last, last_with_family)| {
                    let day = |d: Option<String>| {
                        d.map(|d| d.parse::<chrono::NaiveDate>())
                            .transpose()
                            .map_err(|e| StoreError::Corrupt(format!("caseload contact day: {e}")))
                    };
                    Ok(CaseloadState {
                        case,
                        contacts: ContactDates {
                            last: day(last)?,
                            last_with_family: day(last_with_family)?,
                        },
                    })
                })
                .collect()
        })
    }

    /// Case states from the caseload projection, open or (unless `only_open`) closed too. They
    /// hold no contacts: the projection keeps those as rows (`open_caseload` reads what caseload
    /// views need of them).
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
    /// transaction, for a rebuild from zero. The checkpoint goes first: deleting it waits for a
    /// batch another replica is applying to commit, so the rows deleted after it include that
    /// batch's, and that replica's next claim finds the checkpoint gone.
    pub async fn reset_projection(&self, name: &str, tables: &[&str]) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            for table in tables {
                sqlx::query(&format!("DELETE FROM {table}")).execute(&mut *tx).await?;
            }
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

/// The advisory-lock key of a lease: "LNK" and a kind letter in the high half, a hash of the
/// name in the low half, so that `pg_locks` (classid, objid) tells whose lease a lock is.
pub(super) fn lease_key(kind: u8, name: &str) -> i64 {
    // FNV-1a, 32 bits: stable across releases, unlike std's hasher.
    let low = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let high = u32::from_be_bytes([b'L', b'N', b'K', kind]);
    (i64::from(high) << 32) | i64::from(low)
}

const PROJECTOR_LEASE: u8 = b'P';
/// The `application_name` prefix of a lease's session; the replica's name follows it.
pub(super) const LEASE_APPLICATION: &str = "linkage lease ";

/// The projections this replica runs. On PostgreSQL each projection has a lease (a session
/// advisory lock, all held on one connection of this replica's own): one replica applies a
/// projection's batches while the others stand by, and when its session ends (the process died,
/// the connection broke) another takes the lease over. The lease only saves work; correctness
/// comes from each batch's compare-and-set claim, which holds however leases interleave. SQLite
/// has one writer process by construction: every lease is granted.
pub struct ProjectorLeases {
    conn: Option<sqlx::PgConnection>,
    held: Vec<&'static str>,
}

impl ProjectorLeases {
    /// Whether this replica runs the projection called `name`.
    pub fn holds(&self, name: &str) -> bool {
        self.held.contains(&name)
    }
}

impl Store {
    /// No leases yet: `take_leases` takes them.
    pub fn projector_leases(&self) -> ProjectorLeases {
        ProjectorLeases {
            conn: None,
            held: Vec::new(),
        }
    }

    /// Takes every lease of `names` that no other replica holds, and checks that the session
    /// holding the others is alive; on an error the session and its leases are dropped (another
    /// replica may take them) and the next call opens a new one.
    pub async fn take_leases(
        &self,
        leases: &mut ProjectorLeases,
        names: &[&'static str],
    ) -> Result<(), StoreError> {
        let Backend::Postgres { background, .. } = &self.backend else {
            leases.held = names.to_vec();
            return Ok(());
        };
        let result: Result<(), sqlx::Error> = async {
            if leases.conn.is_none() {
                let mut conn = background.projections.acquire().await?.detach();
                sqlx::query("SELECT set_config('application_name', $1, false)")
                    .bind(lease_application(&self.replica))
                    .execute(&mut conn)
                    .await?;
                leases.conn = Some(conn);
            }
            let conn = leases.conn.as_mut().expect("opened above");
            let wanted: Vec<&'static str> = names
                .iter()
                .copied()
                .filter(|n| !leases.held.contains(n))
                .collect();
            if wanted.is_empty() {
                sqlx::query("SELECT 1").execute(&mut *conn).await?;
            }
            for name in wanted {
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(lease_key(PROJECTOR_LEASE, name))
                    .fetch_one(&mut *conn)
                    .await?;
                if got {
                    tracing::info!(projection = name, replica = %self.replica, "took the projection's lease");
                    leases.held.push(name);
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            // Closing the session (or its having died) releases every lock it held.
            leases.conn = None;
            leases.held.clear();
            return Err(e.into());
        }
        Ok(())
    }

    /// The replica whose session holds the projection `name`'s lease (PostgreSQL; None on SQLite
    /// or when no replica runs it).
    pub async fn projection_runner(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.lease_holder(lease_key(PROJECTOR_LEASE, name)).await
    }

    /// The replica holding the advisory lock `key` in this database (advisory locks are
    /// per database; `pg_locks` lists the whole cluster's), from the holder's `application_name`.
    pub(super) async fn lease_holder(&self, key: i64) -> Result<Option<String>, StoreError> {
        let Backend::Postgres { pool, .. } = &self.backend else {
            return Ok(None);
        };
        let app: Option<String> = sqlx::query_scalar(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND l.classid::bigint = $1 AND l.objid::bigint = $2 LIMIT 1",
        )
        .bind(key >> 32)
        .bind(key & 0xffff_ffff)
        .fetch_optional(pool)
        .await?;
        Ok(app.map(|a| a.strip_prefix(LEASE_APPLICATION).unwrap_or(&a).to_owned()))
    }
}

/// A lease session's `application_name` (PostgreSQL keeps 63 bytes of it).
pub(super) fn lease_application(replica: &str) -> String {
    let mut name = format!("{LEASE_APPLICATION}{replica}");
    while name.len() > 63 {
        name.pop();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_read_back_from_pg_locks_halves() {
        let key = lease_key(PROJECTOR_LEASE, "billing");
        assert_eq!(key >> 32, 0x4c4e_4b50, "LNKP in the high half");
        assert_ne!(key, lease_key(PROJECTOR_LEASE, "caseloads"));
        assert_eq!(key, lease_key(PROJECTOR_LEASE, "billing"), "stable");
        assert!(key > 0);
    }
}
