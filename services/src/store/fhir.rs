//! Storage of the FHIR projection (`projections::fhir`): each case's state, and a row per
//! referral that the searches of `/fhir/r4` select on. The fold is the projections crate's.

use chrono::{DateTime, SecondsFormat, Utc};
use projections::fhir::FhirCase;
use projections::log::group_by_case;
use schemas::{ProviderId, ReferralId};
use sqlx::types::Json;

use super::projections::{Claim, CLAIM_FIRST, CLAIM_NEXT};
use super::BeginWrite;
use super::{Backend, LogEvent, LogPosition, Store, Work};
use crate::error::StoreError;

/// The touched cases' states (a JSON array of case ids).
const PG_LOAD: &str =
    "SELECT case_id, state FROM fhir_cases WHERE case_id IN (SELECT jsonb_array_elements_text($1))";
const SQLITE_LOAD: &str =
    "SELECT case_id, state FROM fhir_cases WHERE case_id IN (SELECT value FROM json_each($1))";

const PG_UPSERT_CASES: &str = "\
INSERT INTO fhir_cases (case_id, agency, state)
SELECT x ->> 'case_id', x ->> 'agency', x -> 'state' FROM jsonb_array_elements($1) AS x
ON CONFLICT (case_id) DO UPDATE SET agency = excluded.agency, state = excluded.state";
const SQLITE_UPSERT_CASES: &str = "\
INSERT INTO fhir_cases (case_id, agency, state)
SELECT value ->> 'case_id', value ->> 'agency', json(value -> 'state') FROM json_each($1) WHERE true
ON CONFLICT (case_id) DO UPDATE SET agency = excluded.agency, state = excluded.state";

const PG_UPSERT_TASKS: &str = "\
INSERT INTO fhir_tasks (referral_id, case_id, agency, worker_id, provider_id, provider_name,
  status, version, last_updated)
SELECT x ->> 'referral_id', x ->> 'case_id', x ->> 'agency', x ->> 'worker_id',
       x ->> 'provider_id', x ->> 'provider_name', x ->> 'status', (x ->> 'version')::bigint,
       x ->> 'last_updated'
FROM jsonb_array_elements($1) AS x
ON CONFLICT (referral_id) DO UPDATE SET worker_id = excluded.worker_id,
  provider_name = excluded.provider_name, status = excluded.status,
  version = excluded.version, last_updated = excluded.last_updated";
const SQLITE_UPSERT_TASKS: &str = "\
INSERT INTO fhir_tasks (referral_id, case_id, agency, worker_id, provider_id, provider_name,
  status, version, last_updated)
SELECT value ->> 'referral_id', value ->> 'case_id', value ->> 'agency', value ->> 'worker_id',
       value ->> 'provider_id', value ->> 'provider_name', value ->> 'status', value ->> 'version',
       value ->> 'last_updated'
FROM json_each($1) WHERE true
ON CONFLICT (referral_id) DO UPDATE SET worker_id = excluded.worker_id,
  provider_name = excluded.provider_name, status = excluded.status,
  version = excluded.version, last_updated = excluded.last_updated";

#[derive(serde::Serialize)]
struct CaseRow<'a> {
    case_id: &'a str,
    agency: &'a str,
    state: &'a FhirCase,
}

#[derive(serde::Serialize)]
struct TaskRow {
    referral_id: String,
    case_id: String,
    agency: String,
    worker_id: Option<String>,
    provider_id: String,
    provider_name: Option<String>,
    status: String,
    version: u64,
    last_updated: String,
}

/// A time as the `last_updated` column holds it: ordered as text.
pub fn column_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Which Tasks a search selects. Every field given must hold.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// The caller's agency (None: every agency, for an admin).
    pub agency: Option<String>,
    /// A case manager's own cases.
    pub worker_id: Option<String>,
    pub provider_id: Option<ProviderId>,
    pub statuses: Vec<String>,
    pub referral_id: Option<ReferralId>,
    /// `meta.lastUpdated` strictly after / before.
    pub updated_after: Option<DateTime<Utc>>,
    pub updated_before: Option<DateTime<Utc>>,
    /// Only referral ids after this one (the next page).
    pub after: Option<ReferralId>,
}

/// One search's page: the states of the cases of the matching referrals, in referral id order,
/// and whether more follow.
pub struct TaskPage {
    pub rows: Vec<(ReferralId, FhirCase)>,
    pub more: bool,
    /// How many match in all (the Bundle's `total`).
    pub total: u64,
}

const SEARCH_WHERE: &str = "\
 WHERE ($1 IS NULL OR t.agency = $1) AND ($2 IS NULL OR t.worker_id = $2)
   AND ($3 IS NULL OR t.provider_id = $3)
   AND ($4 IS NULL OR t.status IN (SELECT value FROM json_each($4)))
   AND ($5 IS NULL OR t.referral_id = $5)
   AND ($6 IS NULL OR t.last_updated > $6) AND ($7 IS NULL OR t.last_updated < $7)";

const PG_SEARCH_WHERE: &str = "\
 WHERE ($1::text IS NULL OR t.agency = $1) AND ($2::text IS NULL OR t.worker_id = $2)
   AND ($3::text IS NULL OR t.provider_id = $3)
   AND ($4::jsonb IS NULL OR t.status IN (SELECT jsonb_array_elements_text($4)))
   AND ($5::text IS NULL OR t.referral_id = $5)
   AND ($6::text IS NULL OR t.last_updated > $6) AND ($7::text IS NULL OR t.last_updated < $7)";

/// A filter's values as its statements bind them: `$1` to `$7` of the search's WHERE clause,
/// bound in that order by `bind_filter!`.
struct Binds<'a> {
    agency: Option<&'a str>,
    worker: Option<&'a str>,
    statuses: Option<Json<&'a Vec<String>>>,
    provider: Option<&'a str>,
    referral: Option<String>,
    after_time: Option<String>,
    before_time: Option<String>,
}

impl<'a> Binds<'a> {
    fn of(filter: &'a TaskFilter) -> Self {
        Self {
            agency: filter.agency.as_deref(),
            worker: filter.worker_id.as_deref(),
            statuses: (!filter.statuses.is_empty()).then_some(Json(&filter.statuses)),
            provider: filter.provider_id.as_ref().map(|p| p.as_str()),
            referral: filter.referral_id.map(|r| r.to_string()),
            after_time: filter.updated_after.map(column_time),
            before_time: filter.updated_before.map(column_time),
        }
    }
}

/// Binds a filter's values (`Binds`) onto a query as `$1` to `$7`.
macro_rules! bind_filter {
    ($query:expr, $b:expr) => {
        $query
            .bind($b.agency)
            .bind($b.worker)
            .bind($b.provider)
            .bind($b.statuses)
            .bind($b.referral.as_deref())
            .bind($b.after_time.as_deref())
            .bind($b.before_time.as_deref())
    };
}

impl Store {
    /// Applies a batch to the FHIR projection and moves its checkpoint past it, atomically.
    /// False: the checkpoint had moved from `claim.from`; nothing written.
    pub async fn project_fhir(
        &self,
        name: &str,
        claim: Claim<'_>,
        batch: &[LogEvent],
    ) -> Result<bool, StoreError> {
        let Some(last) = batch.last() else {
            return Ok(true);
        };
        // A contact changes no referral resource: a case whose events in the batch are all
        // contacts is neither read nor written (its stored state stays at an older sequence, and
        // the fold passes over the contacts it never saw). Contacts are most of the log.
        let mut by_case = group_by_case(batch);
        by_case.retain(|(_, events)| events.iter().any(|e| e.event.event_type != "ContactLogged"));
        let ids: Vec<String> = by_case.iter().map(|(id, _)| id.to_string()).collect();
        let (load_sql, cases_sql, tasks_sql) = match &self.backend {
            Backend::Postgres { .. } => (PG_LOAD, PG_UPSERT_CASES, PG_UPSERT_TASKS),
            Backend::Sqlite { .. } => (SQLITE_LOAD, SQLITE_UPSERT_CASES, SQLITE_UPSERT_TASKS),
        };
        on_pool_for!(self, Work::Projections, pool => {
            let mut tx = pool.begin_write().await?;
            claim_batch!(tx, name, claim, last, batch.len());
            let rows: Vec<(String, Json<FhirCase>)> =
                sqlx::query_as(load_sql).bind(Json(&ids)).fetch_all(&mut *tx).await?;
            let mut stored: std::collections::HashMap<String, FhirCase> =
                rows.into_iter().map(|(id, Json(s))| (id, s)).collect();
            let mut states = Vec::with_capacity(by_case.len());
            for ((_, events), id) in by_case.iter().zip(&ids) {
                let mut state = stored.remove(id).unwrap_or_default();
                ::projections::fhir::fold(&mut state, events)?;
                if state.case.opened.is_some() {
                    states.push((id, state));
                }
            }
            let mut cases = Vec::with_capacity(states.len());
            let mut tasks = Vec::new();
            for (id, state) in &states {
                let Some(agency) = state.case.agency() else { continue };
                cases.push(CaseRow { case_id: id, agency: agency.as_str(), state });
                let worker = state.case.assigned_to.as_ref().map(|w| w.as_str().to_owned());
                for r in &state.case.referrals {
                    let Some(touch) = state.referrals.get(&r.referral_id) else {
                        continue;
                    };
                    tasks.push(TaskRow {
                        referral_id: r.referral_id.to_string(),
                        case_id: (*id).clone(),
                        agency: agency.as_str().to_owned(),
                        worker_id: worker.clone(),
                        provider_id: r.provider.id.as_str().to_owned(),
                        provider_name: r.provider.name.as_ref().map(|n| n.as_str().to_owned()),
                        status: ::projections::fhir::task_status(&state.case, r).to_owned(),
                        version: touch.version,
                        last_updated: column_time(touch.last_updated),
                    });
                }
            }
            if !cases.is_empty() {
                sqlx::query(cases_sql).bind(Json(&cases)).execute(&mut *tx).await?;
            }
            if !tasks.is_empty() {
                sqlx::query(tasks_sql).bind(Json(&tasks)).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// The projection's state of the case that holds referral `id`, if it is known.
    pub async fn fhir_referral(&self, id: ReferralId) -> Result<Option<FhirCase>, StoreError> {
        let sql = "SELECT c.state FROM fhir_tasks t JOIN fhir_cases c ON c.case_id = t.case_id \
                   WHERE t.referral_id = $1";
        on_pool!(self, pool => {
            let row: Option<Json<FhirCase>> =
                sqlx::query_scalar(sql).bind(id.to_string()).fetch_optional(pool).await?;
            Ok(row.map(|Json(s)| s))
        })
    }

    /// The agencies and providers of the Tasks `filter` selects (the Organizations a caller may
    /// see): (agency, provider id, a provider name it was given).
    pub async fn fhir_organizations(
        &self,
        filter: &TaskFilter,
    ) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
        let (where_, _) = self.search_where();
        let sql = format!(
            "SELECT t.agency, t.provider_id, max(t.provider_name) FROM fhir_tasks t {where_} \
             GROUP BY t.agency, t.provider_id ORDER BY t.agency, t.provider_id"
        );
        let binds = Binds::of(filter);
        on_pool!(self, pool => {
            Ok(bind_filter!(sqlx::query_as(&sql), binds).fetch_all(pool).await?)
        })
    }

    fn search_where(&self) -> (&'static str, &'static str) {
        match &self.backend {
            Backend::Postgres { .. } => (PG_SEARCH_WHERE, "::text"),
            Backend::Sqlite { .. } => (SEARCH_WHERE, ""),
        }
    }

    /// The projection's state of a case.
    pub async fn fhir_case(&self, case_id: &str) -> Result<Option<FhirCase>, StoreError> {
        let sql = "SELECT state FROM fhir_cases WHERE case_id = $1";
        on_pool!(self, pool => {
            let row: Option<Json<FhirCase>> =
                sqlx::query_scalar(sql).bind(case_id).fetch_optional(pool).await?;
            Ok(row.map(|Json(s)| s))
        })
    }

    /// One page of the Tasks `filter` selects, at most `count`, in referral id order.
    pub async fn fhir_tasks(
        &self,
        filter: &TaskFilter,
        count: u32,
    ) -> Result<TaskPage, StoreError> {
        let (where_, cast) = self.search_where();
        let page_sql = format!(
            "SELECT t.referral_id, c.state FROM fhir_tasks t JOIN fhir_cases c ON c.case_id = t.case_id \
             {where_} AND ($8{cast} IS NULL OR t.referral_id > $8) ORDER BY t.referral_id LIMIT $9"
        );
        let count_sql = format!("SELECT count(*) FROM fhir_tasks t {where_}");
        let binds = Binds::of(filter);
        let after = filter.after.map(|r| r.to_string());
        on_pool!(self, pool => {
            let rows: Vec<(String, Json<FhirCase>)> = bind_filter!(sqlx::query_as(&page_sql), binds)
                .bind(after.as_deref())
                .bind(i64::from(count) + 1)
                .fetch_all(pool)
                .await?;
            let total: i64 =
                bind_filter!(sqlx::query_scalar(&count_sql), binds).fetch_one(pool).await?;
            let more = rows.len() > count as usize;
            let rows = rows
                .into_iter()
                .take(count as usize)
                .map(|(id, Json(s))| {
                    ReferralId::parse(&id)
                        .map(|id| (id, s))
                        .map_err(|e| StoreError::Corrupt(format!("fhir_tasks referral id: {e}")))
                })
                .collect::<Result<_, _>>()?;
            Ok(TaskPage { rows, more, total: total as u64 })
        })
    }
}
