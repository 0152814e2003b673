//! Caseload views, served from the caseload projection.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::Json;
use chrono::NaiveDate;
use projections::billing::Month;
use projections::caseload::{caseload, Caseload, CaseloadState};
use schemas::CaseId;
use serde::Serialize;
use tracing::instrument;
use utoipa::ToSchema;

use crate::auth::{agency_scope, Access, Caller};
use crate::error::ApiError;
use crate::http::page::{ListQuery, StrictQuery};
use crate::startup::AppState;

const WORKER_ROUTE: &str = "GET /v1/caseloads/{worker_id}";

/// Which agency's cases a caller may see in caseload views: None means every agency (admin).
fn scope(
    caller: &Caller,
    access: Access,
    worker_id: Option<&str>,
) -> Result<Option<String>, ApiError> {
    Ok(agency_scope(&caller.0, access, worker_id)?.map(|a| a.to_string()))
}

#[utoipa::path(get, path = "/v1/caseloads/{worker_id}", tag = "caseloads",
    params(("worker_id" = schemas::ActorId, Path)),
    responses((status = 200, body = Caseload), (status = "4XX", body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(worker_id = %worker_id, actor = %caller.0.id))]
pub async fn get_caseload(
    State(state): State<AppState>,
    caller: Caller,
    Path(worker_id): Path<String>,
) -> Result<Json<Caseload>, ApiError> {
    let worker_id = schemas::ActorId::parse(worker_id)
        .map_err(|e| ApiError::invalid("invalid_value", format!("worker_id: {e}")))?
        .to_string();
    let agency = scope(&caller, Access::Caseload, Some(&worker_id))?;
    let cases = state
        .store
        .open_caseload(Some(&worker_id), agency.as_deref())
        .await?;
    let ids = ids_of(cases.iter().map(|s| &s.case));
    state
        .store
        .log_reads(&caller.0, &ids, WORKER_ROUTE, true, state.clock.now())
        .await?;
    let last_billable = last_billable_of(&state, ids).await?;
    Ok(Json(caseload(
        &worker_id,
        &cases,
        today_of(&state),
        &state.config.caseload,
        last_billable,
    )))
}

/// A case's today: the date where its agency is.
fn today_of(state: &AppState) -> impl Fn(&aggregates::Case) -> NaiveDate + '_ {
    |case| state.clock.today_in(state.zones.of(case.agency()))
}

fn ids_of<'a>(cases: impl IntoIterator<Item = &'a aggregates::Case>) -> Vec<CaseId> {
    cases
        .into_iter()
        .filter_map(|c| c.opened.as_ref().map(|o| o.case_id))
        .collect()
}

/// For each case, the latest date of service of a billable contact up to this month, as the
/// billing profile in force evaluates it: caseloads and the billing log share one definition.
async fn last_billable_of(
    state: &AppState,
    ids: Vec<CaseId>,
) -> Result<impl Fn(&aggregates::Case) -> Option<NaiveDate> + '_, ApiError> {
    let billing = state.store.billing_states(&ids).await?;
    Ok(move |case: &aggregates::Case| {
        let id = case.opened.as_ref()?.case_id;
        let zone = state.zones.of(case.agency());
        let this_month = Month::of(state.clock.today_in(zone));
        billing
            .get(&id)?
            .last_billable(&state.billing, this_month, zone)
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerLoad {
    pub worker_id: String,
    pub open_cases: u32,
    pub limit: u32,
    pub capacity_used: f64,
    pub over_limit: bool,
    /// Open cases with at least one flag.
    pub flagged_cases: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TeamView {
    /// The agency shown; absent for an admin's view of every agency.
    pub agency: Option<String>,
    /// A page of the workers, by worker id.
    pub workers: Vec<WorkerLoad>,
    /// The next page's cursor; null at the end.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/caseloads", tag = "caseloads", params(ListQuery),
    responses((status = 200, body = TeamView), (status = "4XX", body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(actor = %caller.0.id))]
pub async fn get_team(
    State(state): State<AppState>,
    caller: Caller,
    StrictQuery(query): StrictQuery<ListQuery>,
) -> Result<Json<TeamView>, ApiError> {
    let page = query.page("workers")?;
    let agency = scope(&caller, Access::TeamView, None)?;
    let cases = state.store.open_caseload(None, agency.as_deref()).await?;
    let mut by_worker: BTreeMap<String, Vec<CaseloadState>> = BTreeMap::new();
    for case in cases {
        let worker = case
            .case
            .assigned_to
            .as_ref()
            .map(|w| w.to_string())
            .unwrap_or_default();
        by_worker.entry(worker).or_default().push(case);
    }
    // Workers in id order; only this page's are evaluated.
    let (by_worker, next_cursor) = page.of(by_worker.into_iter().collect(), |(w, _)| w.clone());
    let ids = ids_of(
        by_worker
            .iter()
            .flat_map(|(_, cases)| cases)
            .map(|s| &s.case),
    );
    let last_billable = last_billable_of(&state, ids).await?;
    let workers = by_worker
        .into_iter()
        .map(|(worker_id, cases)| {
            let load = caseload(
                &worker_id,
                &cases,
                today_of(&state),
                &state.config.caseload,
                &last_billable,
            );
            WorkerLoad {
                flagged_cases: load.cases.iter().filter(|c| !c.flags.is_empty()).count() as u32,
                worker_id,
                open_cases: load.open_cases,
                limit: load.limit,
                capacity_used: load.capacity_used,
                over_limit: load.over_limit,
            }
        })
        .collect();
    Ok(Json(TeamView {
        agency,
        workers,
        next_cursor,
    }))
}
