//! Outcome measures, computed from the caseload projection's case states.

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use chrono::{Duration, NaiveDate};
use projections::measures::{compute, Measures};
use schemas::Program;
use tracing::instrument;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::startup::AppState;

fn date(query: &HashMap<String, String>, key: &str) -> Result<Option<NaiveDate>, ApiError> {
    query
        .get(key)
        .map(|s| {
            s.parse().map_err(|_| {
                ApiError::invalid(
                    "invalid_value",
                    format!("{key} must be a YYYY-MM-DD date, not `{s}`"),
                )
            })
        })
        .transpose()
}

/// Referral and engagement measures over a window (default: the last 90 days). Each measure's
/// definition is in the `Measures` schema. Supervisors and auditors see their agency's cases,
/// admins every agency's.
#[utoipa::path(get, path = "/v1/measures", tag = "measures",
    params(("from" = Option<chrono::NaiveDate>, Query, description = "first day, YYYY-MM-DD (default: 90 days before `to`)"),
           ("to" = Option<chrono::NaiveDate>, Query, description = "last day, YYYY-MM-DD (default: today)"),
           ("program" = Option<Program>, Query, description = "only cases of this program")),
    responses((status = 200, body = Measures), (status = "4XX", body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(actor = %caller.0.id))]
pub async fn get_measures(
    State(state): State<AppState>,
    caller: Caller,
    crate::http::page::StrictQuery(query): crate::http::page::StrictQuery<HashMap<String, String>>,
) -> Result<Json<Measures>, ApiError> {
    let agency = crate::auth::agency_scope(&caller.0, crate::auth::Access::Measures, None)?
        .map(|a| a.to_string());
    if let Some(unknown) = query
        .keys()
        .find(|k| !matches!(k.as_str(), "from" | "to" | "program"))
    {
        return Err(ApiError::bad_request(
            "unknown_parameter",
            format!("unknown query parameter `{unknown}`; known: from, to, program"),
        ));
    }
    // By default, up to today where the caller's agency is.
    let to = date(&query, "to")?
        .unwrap_or_else(|| state.clock.today_in(state.zones.of(Some(&caller.0.agency))));
    let from = date(&query, "from")?.unwrap_or(to - Duration::days(90));
    if from > to {
        return Err(ApiError::invalid(
            "invalid_period",
            "from must not be after to",
        ));
    }
    let program = query
        .get("program")
        .map(|p| {
            p.parse::<Program>()
                .map_err(|e| ApiError::invalid("invalid_enum_value", e))
        })
        .transpose()?;
    let cases = state
        .store
        .case_states(None, agency.as_deref(), false)
        .await?;
    Ok(Json(compute(&cases, from, to, program)))
}
