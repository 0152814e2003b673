//! Storage of the billing projection: each case's header (a `BillingCase` without contacts), one
//! row per contact, and the months each case has contacts in; a batch and the checkpoint after
//! it commit together. Readers get whole `BillingCase`s, assembled by the statements below: a
//! month's export takes only the contacts of the month's window (`Month::window`).

use std::sync::LazyLock;

use chrono::Utc;
use futures::{Stream, StreamExt, TryStreamExt};
use projections::billing::{
    adjustments, fingerprint, BillingCase, Exported, Line, LineKind, Month, Profile,
};
use sqlx::types::Json;
use sqlx::Row;

use super::copy::{BinaryRows, CopyIn, Field};
use super::green::COPY_PENDING_VOIDS;
use super::projections::{case_ids, sequence_column, CaseRow, Claim, CLAIM_FIRST, CLAIM_NEXT};
use super::BeginWrite;
use super::{Backend, LogEvent, LogPosition, Store, Work};
use crate::error::StoreError;
use projections::log::group_by_case;

/// Headers only: what the projection folds a batch onto.
const PG_LOAD_HEADERS: &str = "\
SELECT case_id, state FROM billing_cases WHERE case_id IN (SELECT jsonb_array_elements_text($1))";

const SQLITE_LOAD_HEADERS: &str = "\
SELECT case_id, state FROM billing_cases WHERE case_id IN (SELECT value FROM json_each($1))";

/// Headers of the listed cases, each with every contact (the text of a JSON array, in log
/// order: `Contacts`).
const PG_LOAD_CASES: &str = "\
SELECT c.case_id, c.state,
       COALESCE((SELECT '[' || string_agg(k.contact, ',' ORDER BY k.sequence) || ']'
                 FROM billing_contacts k WHERE k.case_id = c.case_id::uuid), '[]')
FROM billing_cases c WHERE c.case_id IN (SELECT jsonb_array_elements_text($1))";

const SQLITE_LOAD_CASES: &str = "\
SELECT c.case_id, c.state,
       (SELECT json_group_array(json(k.contact) ORDER BY k.sequence)
        FROM billing_contacts k WHERE k.case_id = c.case_id)
FROM billing_cases c WHERE c.case_id IN (SELECT value FROM json_each($1))";

const PG_UPSERT_CASES: &str = "\
INSERT INTO billing_cases (case_id, agency, state)
SELECT x ->> 'case_id', x ->> 'agency', x -> 'state' FROM jsonb_array_elements($1) AS x
ON CONFLICT (case_id) DO UPDATE SET agency = excluded.agency, state = excluded.state";

/// `WHERE true` lets SQLite tell the upsert's ON CONFLICT from a join's ON.
const SQLITE_UPSERT_CASES: &str = "\
INSERT INTO billing_cases (case_id, agency, state)
SELECT value ->> 'case_id', value ->> 'agency', json(value -> 'state') FROM json_each($1) WHERE true
ON CONFLICT (case_id) DO UPDATE SET agency = excluded.agency, state = excluded.state";

/// A contact row whose sequence (a replayed batch) or activity id the case holds is not added.
/// Each contact is stored as the text this process wrote, as `COPY_CONTACTS` stores it (the
/// column is text: migration 0021), so that a row reads the same whichever way it was written.
///
/// PostgreSQL takes the rows as one typed array per column, which it reads as they are: as a
/// JSON array of row objects instead, it parsed the whole array into jsonb and then took every
/// field out of it again, and this statement was the dearest per row of all the projections'
/// live writes (56 µs of server time a row in the HTTP benchmark, 2026-12-01).
const PG_INSERT_CONTACTS: &str = "\
INSERT INTO billing_contacts (case_id, sequence, event_id, activity_id, at, contact)
SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::uuid[], $4::uuid[], $5::bigint[], $6::text[])
ON CONFLICT DO NOTHING";

/// SQLite reads the rows from one JSON array of `ContactInsert`s.
const SQLITE_INSERT_CONTACTS: &str = "\
INSERT INTO billing_contacts (case_id, sequence, event_id, activity_id, at, contact)
SELECT value ->> 'case_id', value ->> 'sequence', value ->> 'event_id', value ->> 'activity_id',
       value ->> 'at', json(value ->> 'contact')
FROM json_each($1) WHERE true
ON CONFLICT DO NOTHING";

/// One contact row as the contacts statements read it: the contact is its JSON text.
#[derive(serde::Serialize)]
struct ContactInsert<'a> {
    case_id: &'a str,
    sequence: u64,
    event_id: &'a schemas::EventId,
    activity_id: &'a schemas::ActivityId,
    at: i64,
    contact: String,
}

/// How a live batch's contact rows reach the table (`PG_INSERT_CONTACTS`,
/// `SQLITE_INSERT_CONTACTS`).
trait InsertContacts {
    async fn insert_contacts(&mut self, rows: &[ContactInsert<'_>]) -> Result<(), StoreError>;
}

impl InsertContacts for sqlx::PgConnection {
    async fn insert_contacts(&mut self, rows: &[ContactInsert<'_>]) -> Result<(), StoreError> {
        let mut case_ids = Vec::with_capacity(rows.len());
        let mut sequences = Vec::with_capacity(rows.len());
        let mut event_ids = Vec::with_capacity(rows.len());
        let mut activity_ids = Vec::with_capacity(rows.len());
        let mut ats = Vec::with_capacity(rows.len());
        let mut contacts = Vec::with_capacity(rows.len());
        for r in rows {
            case_ids.push(case_uuid(r.case_id)?);
            sequences.push(sequence_column(r.sequence)?);
            event_ids.push(r.event_id.as_uuid());
            activity_ids.push(r.activity_id.as_uuid());
            ats.push(r.at);
            contacts.push(r.contact.as_str());
        }
        sqlx::query(PG_INSERT_CONTACTS)
            .bind(case_ids)
            .bind(sequences)
            .bind(event_ids)
            .bind(activity_ids)
            .bind(ats)
            .bind(contacts)
            .execute(self)
            .await?;
        Ok(())
    }
}

impl InsertContacts for sqlx::SqliteConnection {
    async fn insert_contacts(&mut self, rows: &[ContactInsert<'_>]) -> Result<(), StoreError> {
        sqlx::query(SQLITE_INSERT_CONTACTS)
            .bind(Json(rows))
            .execute(self)
            .await?;
        Ok(())
    }
}

/// A case's header as the header upserts read it (a JSON array of these): serialized straight
/// from the state, with no `serde_json::Value` tree built first.
#[derive(serde::Serialize)]
struct CaseUpsert<'a> {
    case_id: &'a str,
    agency: &'a str,
    state: &'a BillingCase,
}

/// A case id as `billing_contacts` keeps it on PostgreSQL (a `uuid`, migration 0022).
fn case_uuid(case_id: &str) -> Result<uuid::Uuid, StoreError> {
    uuid::Uuid::parse_str(case_id)
        .map_err(|e| StoreError::Unexpected(format!("case id {case_id:?} is not a UUID: {e}")))
}

/// A contact as both write paths store it (`COPY_CONTACTS` and the contacts statements), so
/// that a row reads the same whichever path wrote it.
fn contact_text(contact: &projections::billing::StoredContact) -> Result<String, StoreError> {
    serde_json::to_string(contact).map_err(|e| StoreError::Unexpected(e.to_string()))
}

/// A bulk load's contact rows (`Store::loads_in_bulk`): the fold ahead knows each case's stream
/// position, so no row is one the table holds; a second contact of an activity id is refused
/// when the unique index is built (`Green::index`).
const COPY_CONTACTS: &str =
    "COPY billing_contacts (case_id, sequence, event_id, activity_id, at, contact) FROM STDIN (FORMAT binary)";

/// How a void marks contact row `k`, here and where a bulk load's voids are applied together
/// (`Green::index`).
macro_rules! pg_mark_voided {
    () => {
        "contact = jsonb_set(k.contact::jsonb, '{voided}', 'true')::text"
    };
}
pub(super) const PG_MARK_VOIDED: &str = pg_mark_voided!();

/// A void marks the row it names, by case, sequence and event id (a void of anything else,
/// a transition say, matches no row).
const PG_VOID_CONTACTS: &str = concat!(
    "UPDATE billing_contacts k SET ",
    pg_mark_voided!(),
    "
FROM jsonb_array_elements($1) AS x
WHERE k.case_id = (x ->> 'case_id')::uuid AND k.sequence = (x ->> 'sequence')::bigint
  AND k.event_id = (x ->> 'event_id')::uuid"
);

const SQLITE_VOID_CONTACTS: &str = "\
UPDATE billing_contacts SET contact = json_set(contact, '$.voided', json('true'))
WHERE EXISTS (SELECT 1 FROM json_each($1) AS x
              WHERE billing_contacts.case_id = x.value ->> 'case_id'
                AND billing_contacts.sequence = x.value ->> 'sequence'
                AND billing_contacts.event_id = x.value ->> 'event_id')";

const PG_INSERT_MONTHS: &str = "\
INSERT INTO billing_case_months (month, case_id, agency)
SELECT x ->> 'month', x ->> 'case_id', x ->> 'agency' FROM jsonb_array_elements($1) AS x
ON CONFLICT (month, case_id) DO NOTHING";

const SQLITE_INSERT_MONTHS: &str = "\
INSERT INTO billing_case_months (month, case_id, agency)
SELECT value ->> 'month', value ->> 'case_id', value ->> 'agency' FROM json_each($1) WHERE true
ON CONFLICT (month, case_id) DO NOTHING";

/// A month a case has contacts in, as the months statement reads it.
#[derive(serde::Serialize)]
struct MonthRow<'a> {
    month: String,
    case_id: &'a str,
    agency: String,
}

/// The statements of one backend that apply a batch.
struct Statements {
    load: &'static str,
    upsert: &'static str,
    voids: &'static str,
    months: &'static str,
}

const PG: Statements = Statements {
    load: PG_LOAD_HEADERS,
    upsert: PG_UPSERT_CASES,
    voids: PG_VOID_CONTACTS,
    months: PG_INSERT_MONTHS,
};

const SQLITE: Statements = Statements {
    load: SQLITE_LOAD_HEADERS,
    upsert: SQLITE_UPSERT_CASES,
    voids: SQLITE_VOID_CONTACTS,
    months: SQLITE_INSERT_MONTHS,
};

fn statements(backend: &Backend) -> &'static Statements {
    match backend {
        Backend::Postgres { .. } => &PG,
        Backend::Sqlite { .. } => &SQLITE,
    }
}

/// A batch folded into billing rows: the touched cases' headers after it (those with an agency,
/// with it, and whether the batch changed each: contacts in months the case is recorded in do
/// not), the contacts it logged and voided, and the months they fall in (by index into
/// `headers`).
#[derive(Debug, Default)]
pub struct BillingFold {
    headers: Vec<(String, BillingCase)>,
    changed: Vec<bool>,
    agencies: Vec<String>,
    contacts: Vec<(usize, projections::billing::ContactRow)>,
    voids: Vec<(usize, projections::log::VoidRow)>,
    months: Vec<(usize, Month)>,
}

impl BillingFold {
    /// Folds `batch` onto the stored headers of its cases (absent: none yet). Pure.
    fn of(
        batch: &[LogEvent],
        mut states: std::collections::HashMap<String, BillingCase>,
    ) -> Result<Self, StoreError> {
        let mut folded = Self::default();
        for (case_id, events) in group_by_case(batch) {
            let id = case_id.to_string();
            let mut case = states.remove(&id).unwrap_or_default();
            let version = case.version;
            let rows = projections::billing::fold(&mut case, &events)?;
            let Some(agency) = case.agency.clone() else {
                continue;
            };
            let at = folded.headers.len();
            // Only the months new to the case: recording every contact's months again cost
            // PostgreSQL a conflicting insert per case and batch.
            let months = rows.new_months(&mut case);
            // The fold moves `version` with every event it folds into the header, and the new
            // months go into it too; nothing else changes it.
            folded
                .changed
                .push(case.version != version || !months.is_empty());
            folded.months.extend(months.into_iter().map(|m| (at, m)));
            folded
                .contacts
                .extend(rows.contacts.into_iter().map(|row| (at, row)));
            folded
                .voids
                .extend(rows.voided.into_iter().map(|row| (at, row)));
            folded.agencies.push(agency.to_string());
            folded.headers.push((id, case));
        }
        Ok(folded)
    }
}

/// Writes a `BillingFold` in transaction `$tx` with statements `$sql`: five statements at most
/// whatever the batch's size. A header the batch left as it was (contacts alone, in months the
/// case is recorded in) is not written back.
macro_rules! write_billing {
    ($tx:ident, $sql:expr, $folded:expr, $bulk:expr) => {{
        let f = &$folded;
        let rows: Vec<CaseUpsert> = f
            .headers
            .iter()
            .zip(&f.agencies)
            .zip(&f.changed)
            .filter(|(_, changed)| **changed)
            .map(|(((case_id, state), agency), _)| CaseUpsert {
                case_id,
                agency,
                state,
            })
            .collect();
        if !rows.is_empty() {
            sqlx::query($sql.upsert)
                .bind(Json(&rows))
                .execute(&mut *$tx)
                .await?;
        }
        if $bulk && !f.contacts.is_empty() {
            // About 470 bytes a row, most of it the contact's JSON: room for all in one go.
            let mut copy = BinaryRows::new(6, f.contacts.len() * 512);
            for (at, row) in &f.contacts {
                let c = &row.contact;
                let json = contact_text(c)?;
                copy.push(&[
                    Field::Uuid(case_uuid(&f.headers[*at].0)?),
                    Field::Int8(sequence_column(row.sequence)?),
                    Field::Uuid(c.event_id.as_uuid()),
                    Field::Uuid(c.contact.activity_id.as_uuid()),
                    Field::Int8(row.at),
                    Field::Text(&json),
                ])?;
            }
            CopyIn::copy_binary(&mut *$tx, COPY_CONTACTS, copy).await?;
        } else if !f.contacts.is_empty() {
            let contacts = f
                .contacts
                .iter()
                .map(|(at, row)| {
                    Ok(ContactInsert {
                        case_id: f.headers[*at].0.as_str(),
                        sequence: row.sequence,
                        event_id: &row.contact.event_id,
                        activity_id: &row.contact.contact.activity_id,
                        at: row.at,
                        contact: contact_text(&row.contact)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            InsertContacts::insert_contacts(&mut *$tx, &contacts).await?;
        }
        if !f.months.is_empty() {
            let months: Vec<_> = f
                .months
                .iter()
                .map(|&(at, month)| MonthRow {
                    month: month.to_string(),
                    case_id: f.headers[at].0.as_str(),
                    agency: f.agencies[at].clone(),
                })
                .collect();
            sqlx::query($sql.months)
                .bind(Json(&months))
                .execute(&mut *$tx)
                .await?;
        }
        if $bulk && !f.voids.is_empty() {
            // The contact rows' key is built when they are all in (`green::KEYED_LATER`): the
            // voids wait beside them until then.
            let mut copy = BinaryRows::new(3, f.voids.len() * 64);
            for (at, void) in &f.voids {
                copy.push(&[
                    Field::Uuid(case_uuid(&f.headers[*at].0)?),
                    Field::Int8(sequence_column(void.sequence)?),
                    Field::Uuid(void.event_id.as_uuid()),
                ])?;
            }
            CopyIn::copy_binary(&mut *$tx, COPY_PENDING_VOIDS, copy).await?;
        } else if !f.voids.is_empty() {
            let voids = CaseRow::each(&f.headers, &f.voids);
            sqlx::query($sql.voids)
                .bind(Json(&voids))
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

impl Store {
    /// Folds a batch into each touched case's billing state and moves the checkpoint past it,
    /// atomically. False: another replica applied the batch first; nothing written.
    pub async fn project_billing(
        &self,
        name: &str,
        claim: Claim<'_>,
        batch: &[LogEvent],
    ) -> Result<bool, StoreError> {
        let Some(last) = batch.last() else {
            return Ok(true);
        };
        let ids = case_ids(batch);
        let sql = statements(&self.backend);
        let (mut states, missing) = self.remembered.billing.recall(claim.from, &ids);
        on_pool_for!(self, Work::Projections, pool => {
            let mut tx = pool.begin_write().await?;
            claim_batch!(tx, name, claim, last, batch.len());
            // One statement reads the touched cases' headers this process does not remember,
            // one writes them back, one adds the contacts, one marks the voided, one records the
            // months: five round trips per batch at most whatever its size.
            if !missing.is_empty() {
                let stored: Vec<(String, Json<BillingCase>)> = sqlx::query_as(sql.load)
                    .bind(Json(&missing))
                    .fetch_all(&mut *tx)
                    .await?;
                states.extend(stored.into_iter().map(|(id, Json(c))| (id, c)));
            }
            let folded = BillingFold::of(batch, states)?;
            write_billing!(tx, sql, folded, false);
            tx.commit().await?;
            self.remembered.billing.remember(last.at, folded.headers);
            Ok(true)
        })
    }

    /// As `fold_audit`, for the billing rows.
    pub async fn fold_billing(
        &self,
        from: LogPosition,
        batch: std::sync::Arc<Vec<LogEvent>>,
    ) -> Result<BillingFold, StoreError> {
        let load = statements(&self.backend).load;
        self.fold_states_ahead(
            &self.remembered.billing,
            from,
            batch,
            load,
            |batch, states| {
                let folded = BillingFold::of(batch, states)?;
                let headers = folded.headers.clone();
                Ok((folded, headers))
            },
        )
        .await
    }

    /// As `write_audit`, for what `fold_billing` folded.
    pub async fn write_billing(
        &self,
        name: &str,
        claim: Claim<'_>,
        batch: &[LogEvent],
        folded: BillingFold,
    ) -> Result<bool, StoreError> {
        let sql = statements(&self.backend);
        let bulk = self.loads_in_bulk();
        write_in_claim!(self, name, claim, batch, tx => write_billing!(tx, sql, folded, bulk))
    }

    /// The billing states of the listed cases (those the billing projection has reached).
    pub async fn billing_states(
        &self,
        cases: &[schemas::CaseId],
    ) -> Result<std::collections::HashMap<schemas::CaseId, BillingCase>, StoreError> {
        let ids: Vec<String> = cases.iter().map(ToString::to_string).collect();
        let sql = match &self.backend {
            Backend::Postgres { .. } => PG_LOAD_CASES,
            Backend::Sqlite { .. } => SQLITE_LOAD_CASES,
        };
        on_pool!(self, pool => {
            let rows: Vec<(String, Json<BillingCase>, Contacts)> =
                sqlx::query_as(sql).bind(Json(&ids)).fetch_all(pool).await?;
            rows.into_iter()
                .map(|(id, header, contacts)| {
                    let id = schemas::CaseId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    Ok((id, whole(header, contacts)?))
                })
                .collect()
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
        self.billing_cases_of_month_from(month, agency, None)
    }

    /// As `billing_cases_of_month`, from the case `from` on (inclusive), for a page.
    pub fn billing_cases_of_month_from<'a>(
        &'a self,
        month: Month,
        agency: Option<&'a str>,
        from: Option<&'a str>,
    ) -> impl Stream<Item = Result<BillingCase, StoreError>> + Send + 'a {
        let sql: &'static str = match self.backend {
            Backend::Postgres { .. } => &PG_CASES_OF_MONTH,
            Backend::Sqlite { .. } => &SQLITE_CASES_OF_MONTH,
        };
        let (lo, hi) = month.window();
        let month = month.to_string();
        on_pool!(self, pool => sqlx::query_as::<_, (Json<BillingCase>, Contacts)>(sql)
            .bind(month)
            .bind(agency)
            .bind(from)
            .bind(lo)
            .bind(hi)
            .fetch(pool)
            .map_err(StoreError::from)
            .and_then(|(header, contacts)| std::future::ready(whole(header, contacts)))
            .boxed())
    }
}

/// What a batch bills: a month of one agency, dated in the agency's time zone.
#[derive(Debug, Clone, Copy)]
pub struct BatchOf<'a> {
    pub month: Month,
    pub agency: &'a str,
    pub zone: chrono_tz::Tz,
}

/// A recorded export batch.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BatchRecord {
    pub batch_id: String,
    pub month: String,
    pub agency: String,
    pub batch_no: i64,
    pub profile: String,
    pub lines: i64,
    /// SHA-256 of the batch's CSV rendering (header and rows), hex.
    pub checksum: String,
    pub created_at: chrono::DateTime<Utc>,
}

/// One line of a batch, as exported.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRow {
    pub line_id: String,
    pub kind: LineKind,
    pub adjusts: Option<String>,
    pub line: Line,
}

fn batch_record<R: Row>(r: &R) -> Result<BatchRecord, sqlx::Error>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'c> String: sqlx::Decode<'c, R::Database> + sqlx::Type<R::Database>,
    for<'c> i64: sqlx::Decode<'c, R::Database> + sqlx::Type<R::Database>,
    for<'c> chrono::DateTime<Utc>: sqlx::Decode<'c, R::Database> + sqlx::Type<R::Database>,
{
    Ok(BatchRecord {
        batch_id: r.try_get("batch_id")?,
        month: r.try_get("month")?,
        agency: r.try_get("agency")?,
        batch_no: r.try_get("batch_no")?,
        profile: r.try_get("profile")?,
        lines: r.try_get("lines")?,
        checksum: r.try_get("checksum")?,
        created_at: r.try_get("created_at")?,
    })
}

fn batch_row(
    line_id: String,
    kind: String,
    adjusts: Option<String>,
    Json(line): Json<Line>,
) -> Result<BatchRow, StoreError> {
    let kind = LineKind::parse(&kind)
        .ok_or_else(|| StoreError::Corrupt(format!("billing line {line_id} has kind `{kind}`")))?;
    Ok(BatchRow {
        line_id,
        kind,
        adjusts,
        line,
    })
}

/// Rows written by one statement when a batch is recorded.
const BATCH_INSERT_ROWS: usize = 1_000;

const PG_INSERT_BATCH_LINES: &str = "\
INSERT INTO billing_batch_lines (batch_id, seq, month, agency, batch_no, case_id, activity_id, line_id,
                                 kind, adjusts, fingerprint, line)
SELECT $1, (x ->> 'seq')::bigint, $2, $3, $4, x ->> 'case_id', x ->> 'activity_id', x ->> 'line_id',
       x ->> 'kind', x ->> 'adjusts', x ->> 'fingerprint', x -> 'line'
FROM jsonb_array_elements($5) AS x";

const SQLITE_INSERT_BATCH_LINES: &str = "\
INSERT INTO billing_batch_lines (batch_id, seq, month, agency, batch_no, case_id, activity_id, line_id,
                                 kind, adjusts, fingerprint, line)
SELECT $1, value ->> 'seq', $2, $3, $4, value ->> 'case_id', value ->> 'activity_id', value ->> 'line_id',
       value ->> 'kind', value ->> 'adjusts', value ->> 'fingerprint', json(value -> 'line')
FROM json_each($5)";

/// A case of a month as its export reads it: the header, and the contacts of the month's window
/// (`Month::window`, from parameter `$lo` to `$hi`) as a JSON array in log order (`whole`).
fn month_state(pg: bool, lo: u8, hi: u8) -> String {
    if pg {
        format!(
            "c.state, \
             COALESCE((SELECT '[' || string_agg(k.contact, ',' ORDER BY k.sequence) || ']' \
                       FROM billing_contacts k \
                       WHERE k.case_id = c.case_id::uuid AND k.at >= ${lo} AND k.at < ${hi}), '[]')"
        )
    } else {
        format!(
            "c.state, \
             (SELECT json_group_array(json(k.contact) ORDER BY k.sequence) \
              FROM billing_contacts k \
              WHERE k.case_id = c.case_id AND k.at >= ${lo} AND k.at < ${hi})"
        )
    }
}

/// The contacts of a case as the readers select them: the text of a JSON array beside the
/// header, which the database joins from the stored texts without parsing any of them (on
/// PostgreSQL the column is text, migration 0021); this process parses it (`whole`).
type Contacts = String;

/// A stored header with its contacts: a whole `BillingCase`. Contacts that do not read back
/// are a corrupt projection.
fn whole(Json(header): Json<BillingCase>, contacts: Contacts) -> Result<BillingCase, StoreError> {
    let contacts = serde_json::from_str(&contacts)
        .map_err(|e| StoreError::Corrupt(format!("billing contacts that do not read back: {e}")))?;
    Ok(BillingCase { contacts, ..header })
}

/// The cases of month $1 (of agency $2, or all; from case $3 on), window $4 to $5.
fn cases_of_month(pg: bool) -> String {
    format!(
        "SELECT {} FROM billing_case_months m JOIN billing_cases c ON c.case_id = m.case_id \
         WHERE m.month = $1 AND ($2 IS NULL OR m.agency = $2) AND ($3 IS NULL OR m.case_id >= $3) \
         ORDER BY m.case_id",
        month_state(pg, 4, 5)
    )
}

/// The cases of month $1 and agency $2, window $3 to $4, each with the lines earlier batches
/// exported for it.
fn cases_with_exported(pg: bool) -> String {
    let exported = if pg {
        "COALESCE((SELECT jsonb_agg(jsonb_build_array(l.line_id, l.kind, l.fingerprint, l.line) \
                                        ORDER BY l.batch_no, l.seq) \
                       FROM billing_batch_lines l \
                       WHERE l.month = m.month AND l.agency = m.agency AND l.case_id = m.case_id), '[]')"
    } else {
        "(SELECT json_group_array(json_array(l.line_id, l.kind, l.fingerprint, json(l.line)) \
                                      ORDER BY l.batch_no, l.seq) \
              FROM billing_batch_lines l \
              WHERE l.month = m.month AND l.agency = m.agency AND l.case_id = m.case_id)"
    };
    format!(
        "SELECT {}, {exported} \
         FROM billing_case_months m JOIN billing_cases c ON c.case_id = m.case_id \
         WHERE m.month = $1 AND m.agency = $2 ORDER BY m.case_id",
        month_state(pg, 3, 4)
    )
}

static PG_CASES_OF_MONTH: LazyLock<String> = LazyLock::new(|| cases_of_month(true));
static SQLITE_CASES_OF_MONTH: LazyLock<String> = LazyLock::new(|| cases_of_month(false));
static PG_CASES_WITH_EXPORTED: LazyLock<String> = LazyLock::new(|| cases_with_exported(true));
static SQLITE_CASES_WITH_EXPORTED: LazyLock<String> = LazyLock::new(|| cases_with_exported(false));

/// The stored shape of BillingBatchExported (version 1), serialised without copying the ids.
#[derive(serde::Serialize)]
struct BatchExportedPayload<'a> {
    #[serde(rename = "BillingBatchExported")]
    exported: BatchExported<'a>,
}

#[derive(serde::Serialize)]
struct BatchExported<'a> {
    batch_id: &'a str,
    month: &'a str,
    agency: &'a str,
    batch_no: i64,
    profile: &'a str,
    lines: i64,
    checksum: &'a str,
    line_ids: &'a [uuid::Uuid],
}

const BATCH_COLUMNS: &str =
    "batch_id, month, agency, batch_no, profile, lines, checksum, created_at";

impl Store {
    /// Records the next export batch of `month` for `agency`: every line that changed since the
    /// previous batches (originals, voids, replacements), its checksum over `header` and each
    /// row's `render`ing, and a BillingBatchExported event, all in one transaction. One batch of
    /// a month and agency is made at a time.
    pub async fn create_billing_batch(
        &self,
        profile: &Profile,
        BatchOf {
            month,
            agency,
            zone,
        }: BatchOf<'_>,
        metadata: &schemas::EventMetadata,
        header: &[u8],
        render: impl Fn(&BatchRow) -> bytes::Bytes,
    ) -> Result<BatchRecord, StoreError> {
        use sha2::{Digest, Sha256};
        let is_pg = matches!(self.backend, Backend::Postgres { .. });
        let month_text = month.to_string();
        on_pool!(self, pool => {
            // SQLite: take the write lock now, not at the first INSERT after all the reads.
            let mut tx = pool.begin_with(if is_pg { "BEGIN" } else { "BEGIN IMMEDIATE" }).await?;
            if is_pg {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1)::bigint)")
                    .bind(format!("billing-batch:{month_text}:{agency}"))
                    .execute(&mut *tx)
                    .await?;
            }
            let batch_no: i64 = sqlx::query_scalar(
                "SELECT COALESCE(MAX(batch_no), 0) + 1 FROM billing_batches WHERE month = $1 AND agency = $2",
            )
            .bind(&month_text)
            .bind(agency)
            .fetch_one(&mut *tx)
            .await?;
            let batch_id = uuid::Uuid::now_v7().to_string();
            let mut hasher = Sha256::new();
            hasher.update(header);
            // Uuids, not strings: a million-line batch keeps 16 MB of ids for its event, not 70.
            let mut line_ids: Vec<uuid::Uuid> = Vec::new();
            let mut pending: Vec<serde_json::Value> = Vec::with_capacity(BATCH_INSERT_ROWS);
            let insert_sql = if is_pg { PG_INSERT_BATCH_LINES } else { SQLITE_INSERT_BATCH_LINES };
            // One streamed statement reads each case with every line of it exported before
            // (this connection's snapshot starts after the lock above, so it sees every earlier
            // batch); lines are written BATCH_INSERT_ROWS to a statement.
            let mut cases = self.billing_cases_with_exported(month, agency);
            while let Some(case) = cases.next().await {
                let (case, exported) = case?;
                let Some(case_id) = case.case_id else { continue };
                let case_id = case_id.to_string();
                for adj in adjustments(&case.lines(profile, month, zone), &exported) {
                    let line_id = uuid::Uuid::now_v7();
                    let row = BatchRow {
                        line_id: line_id.to_string(),
                        kind: adj.kind,
                        adjusts: adj.adjusts,
                        line: adj.line,
                    };
                    hasher.update(render(&row));
                    line_ids.push(line_id);
                    pending.push(serde_json::json!({
                        "seq": line_ids.len(), "case_id": case_id,
                        "activity_id": row.line.activity_id.to_string(), "line_id": row.line_id,
                        "kind": row.kind.as_str(), "adjusts": row.adjusts,
                        "fingerprint": fingerprint(&row.line), "line": row.line,
                    }));
                    if pending.len() == BATCH_INSERT_ROWS {
                        sqlx::query(insert_sql)
                            .bind(&batch_id).bind(&month_text).bind(agency).bind(batch_no)
                            .bind(Json(&pending))
                            .execute(&mut *tx)
                            .await?;
                        pending.clear();
                    }
                }
            }
            drop(cases);
            if !pending.is_empty() {
                sqlx::query(insert_sql)
                    .bind(&batch_id).bind(&month_text).bind(agency).bind(batch_no)
                    .bind(Json(&pending))
                    .execute(&mut *tx)
                    .await?;
            }
            let record = BatchRecord {
                batch_id: batch_id.clone(),
                month: month_text.clone(),
                agency: agency.to_owned(),
                batch_no,
                profile: profile.name.clone(),
                lines: line_ids.len() as i64,
                checksum: hex::encode(hasher.finalize()),
                // When the batch was asked for, by the application's clock.
                created_at: metadata.occurred_at.unwrap_or_else(Utc::now),
            };
            sqlx::query(&format!(
                "INSERT INTO billing_batches ({BATCH_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ))
            .bind(&record.batch_id)
            .bind(&record.month)
            .bind(&record.agency)
            .bind(record.batch_no)
            .bind(&record.profile)
            .bind(record.lines)
            .bind(&record.checksum)
            .bind(record.created_at)
            .execute(&mut *tx)
            .await?;
            let payload = BatchExportedPayload {
                exported: BatchExported {
                    batch_id: &record.batch_id, month: &record.month, agency: &record.agency,
                    batch_no: record.batch_no, profile: &record.profile, lines: record.lines,
                    checksum: &record.checksum, line_ids: &line_ids,
                },
            };
            sqlx::query(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                 VALUES ('BillingBatch', $1, 1, 'BillingBatchExported', '1', $2, $3)",
            )
            .bind(&record.batch_id)
            .bind(Json(&payload))
            .bind(Json(metadata.to_map()))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(record)
        })
    }

    /// Each case of `month` and `agency`, in case id order, with the lines exported for it in
    /// earlier batches (oldest first), streamed.
    fn billing_cases_with_exported<'a>(
        &'a self,
        month: Month,
        agency: &'a str,
    ) -> impl Stream<Item = Result<(BillingCase, Vec<Exported>), StoreError>> + Send + 'a {
        type Earlier = Vec<(String, String, String, Line)>;
        let sql: &'static str = match self.backend {
            Backend::Postgres { .. } => &PG_CASES_WITH_EXPORTED,
            Backend::Sqlite { .. } => &SQLITE_CASES_WITH_EXPORTED,
        };
        let (lo, hi) = month.window();
        let month = month.to_string();
        let exported =
            |(header, contacts, Json(earlier)): (Json<BillingCase>, Contacts, Json<Earlier>)| {
                let earlier = earlier
                    .into_iter()
                    .map(|(line_id, kind, fingerprint, line)| {
                        let row = batch_row(line_id, kind, None, Json(line))?;
                        Ok(Exported {
                            line_id: row.line_id,
                            kind: row.kind,
                            fingerprint,
                            line: row.line,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                Ok((whole(header, contacts)?, earlier))
            };
        on_pool!(self, pool => sqlx::query_as::<_, (Json<BillingCase>, Contacts, Json<Earlier>)>(sql)
            .bind(month)
            .bind(agency)
            .bind(lo)
            .bind(hi)
            .fetch(pool)
            .map_err(StoreError::from)
            .map(move |r| r.and_then(exported))
            .boxed())
    }

    /// One recorded batch.
    pub async fn billing_batch(&self, batch_id: &str) -> Result<Option<BatchRecord>, StoreError> {
        let sql = format!("SELECT {BATCH_COLUMNS} FROM billing_batches WHERE batch_id = $1");
        on_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(batch_id).fetch_optional(pool).await?;
            Ok(row.as_ref().map(batch_record).transpose()?)
        })
    }

    /// The batches of a month (of `agency`, or all), oldest first.
    pub async fn billing_batches(
        &self,
        month: Month,
        agency: Option<&str>,
    ) -> Result<Vec<BatchRecord>, StoreError> {
        let sql = format!(
            "SELECT {BATCH_COLUMNS} FROM billing_batches WHERE month = $1 AND ($2 IS NULL OR agency = $2) \
             ORDER BY agency, batch_no"
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(month.to_string()).bind(agency).fetch_all(pool).await?;
            Ok(rows.iter().map(batch_record).collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// A batch's lines in order, streamed.
    pub fn billing_batch_rows<'a>(
        &'a self,
        batch_id: &'a str,
    ) -> impl Stream<Item = Result<BatchRow, StoreError>> + Send + 'a {
        let sql = "SELECT line_id, kind, adjusts, line FROM billing_batch_lines WHERE batch_id = $1 ORDER BY seq";
        on_pool!(self, pool => sqlx::query_as::<_, (String, String, Option<String>, Json<Line>)>(sql)
            .bind(batch_id)
            .fetch(pool)
            .map_err(StoreError::from)
            .map(|r| r.and_then(|(id, kind, adjusts, line)| batch_row(id, kind, adjusts, line)))
            .boxed())
    }
}
