//! Read routes: a case, its events, the instruments, health.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use projections::history::{self, Basis, HistoryInput, HistoryView};
use projections::log::ApplyError;
use projections::CaseView;
use schemas::instruments::Instrument;
use schemas::*;
use serde::Serialize;
use serde_json::{json, Value};
use tracing::instrument;
use utoipa::ToSchema;

use crate::auth::{check, Access, Caller};
use crate::error::{ApiError, StoreError};
use crate::http::commands::parse_case_id;
use crate::http::page::{seq_key, ListQuery, StrictQuery};
use crate::startup::AppState;
use crate::store::StoredEvent;

/// Loads a case for reading (a full replay, never the command cache), checks `access`, and
/// logs the read, allowed or denied, before answering. If the read cannot be logged it is not
/// served (audit controls fail closed).
async fn load_readable(
    state: &AppState,
    caller: &Caller,
    case_id: &str,
    access: Access,
    route: &str,
) -> Result<(CaseId, crate::store::CaseContext), ApiError> {
    let case_id = parse_case_id(case_id)?;
    let context = state.store.load(case_id).await?;
    if !context.aggregate.exists() {
        return Err(ApiError::not_found(
            "case_not_found",
            "no case with this id",
        ));
    }
    let verdict = check(&caller.0, &context.aggregate, access);
    state
        .store
        .log_read(
            &caller.0,
            case_id,
            route,
            verdict.is_ok(),
            state.clock.now(),
        )
        .await?;
    verdict?;
    Ok((case_id, context))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadsResponse {
    /// Every read of this case's data, oldest first, including denied attempts (a page of them).
    pub reads: Vec<crate::store::reads::ReadEntry>,
    /// The next page's cursor; null at the end.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/cases/{case_id}/reads", tag = "cases",
    params(("case_id" = String, Path), ListQuery),
    responses((status = 200, body = ReadsResponse), (status = "4XX", body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(case_id = %case_id, actor = %caller.0.id))]
pub async fn get_reads(
    State(state): State<AppState>,
    caller: Caller,
    Path(case_id): Path<String>,
    StrictQuery(query): StrictQuery<ListQuery>,
) -> Result<Json<ReadsResponse>, ApiError> {
    let page = query.page("reads")?;
    let after = page
        .after
        .as_deref()
        .map(|a| a.parse::<i64>())
        .transpose()
        .map_err(|_| {
            ApiError::bad_request("invalid_cursor", "cursor is not one this list gave out")
        })?;
    let route = "GET /v1/cases/{case_id}/reads";
    let (case_id, _) = load_readable(&state, &caller, &case_id, Access::Audit, route).await?;
    let mut reads = state.store.reads_of(case_id, after, page.limit + 1).await?;
    let next_cursor = page.cut(&mut reads, |(id, _)| id.to_string());
    Ok(Json(ReadsResponse {
        reads: reads.into_iter().map(|(_, r)| r).collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/cases/{case_id}", tag = "cases",
    params(("case_id" = String, Path)),
    responses((status = 200, body = CaseView), (status = "4XX", body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(case_id = %case_id, actor = %caller.0.id))]
pub async fn get_case(
    State(state): State<AppState>,
    caller: Caller,
    Path(case_id): Path<String>,
) -> Result<Json<CaseView>, ApiError> {
    let (_, context) = load_readable(
        &state,
        &caller,
        &case_id,
        Access::Read,
        "GET /v1/cases/{case_id}",
    )
    .await?;
    let view = CaseView::from_case(&context.aggregate)
        .ok_or_else(|| ApiError::not_found("case_not_found", "no case with this id"))?;
    Ok(Json(view))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActorView {
    pub id: String,
    pub role: String,
    pub agency: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    #[schema(value_type = String, format = Uuid)]
    pub event_id: EventId,
    pub sequence: u64,
    /// Global order of all events in the store.
    pub position: i64,
    pub event_type: String,
    pub event_version: String,
    /// When it happened (late documentation is normal).
    pub occurred_at: Option<DateTime<Utc>>,
    /// When the store accepted it.
    pub recorded_at: DateTime<Utc>,
    pub actor: ActorView,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub idempotency_key: Option<String>,
    #[schema(value_type = Object)]
    pub payload: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventsResponse {
    /// A page of the case's events, in sequence order.
    pub events: Vec<EventView>,
    /// The next page's cursor; null at the end.
    pub next_cursor: Option<String>,
}

impl TryFrom<StoredEvent> for EventView {
    type Error = ApplyError;

    fn try_from(e: StoredEvent) -> Result<Self, ApplyError> {
        let payload = e.payload_value()?;
        let m = e.metadata;
        let text = |s: Option<String>| s.unwrap_or_default();
        let payload = match payload {
            // Stored as {"EventType": {...}}: show the body; the type is beside it.
            Value::Object(mut o) if o.len() == 1 && o.contains_key(&e.event_type) => {
                o.remove(&e.event_type).unwrap_or_default()
            }
            other => other,
        };
        Ok(Self {
            event_id: e.event_id,
            sequence: e.sequence,
            position: e.position,
            occurred_at: m.occurred_at,
            recorded_at: e.recorded_at,
            actor: ActorView {
                id: text(m.actor_id.map(|a| a.to_string())),
                role: text(m.actor_role.map(|r| r.to_string())),
                agency: text(m.actor_agency.map(|a| a.to_string())),
            },
            correlation_id: m.correlation_id,
            causation_id: m.causation_id.map(|c| c.to_string()),
            idempotency_key: m.idempotency.map(|i| i.key),
            event_type: e.event_type,
            event_version: e.event_version,
            payload,
        })
    }
}

#[utoipa::path(get, path = "/v1/cases/{case_id}/events", tag = "cases",
    params(("case_id" = String, Path), ListQuery),
    responses((status = 200, body = EventsResponse), (status = "4XX", body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(case_id = %case_id, actor = %caller.0.id))]
pub async fn get_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(case_id): Path<String>,
    StrictQuery(query): StrictQuery<ListQuery>,
) -> Result<Json<EventsResponse>, ApiError> {
    let page = query.page("events")?;
    let (case_id, _) = load_readable(
        &state,
        &caller,
        &case_id,
        Access::Read,
        "GET /v1/cases/{case_id}/events",
    )
    .await?;
    let events = state.store.events_of(case_id).await?;
    let (events, next_cursor) = page.of(events, |e| seq_key(e.sequence));
    Ok(Json(EventsResponse {
        events: events
            .into_iter()
            .map(EventView::try_from)
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)?,
        next_cursor,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditResponse {
    /// One entry per event, hash-chained: each `hash` covers `prev_hash` and the event's bytes.
    pub entries: Vec<crate::store::projections::AuditEntry>,
    /// Events of the case not yet in the trail (the projection follows the log).
    pub pending: usize,
    /// The next page's cursor; null at the end.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/cases/{case_id}/audit", tag = "cases",
    params(("case_id" = String, Path), ListQuery),
    responses((status = 200, body = AuditResponse), (status = "4XX", body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(case_id = %case_id, actor = %caller.0.id))]
pub async fn get_audit(
    State(state): State<AppState>,
    caller: Caller,
    Path(case_id): Path<String>,
    StrictQuery(query): StrictQuery<ListQuery>,
) -> Result<Json<AuditResponse>, ApiError> {
    let page = query.page("audit")?;
    let (case_id, context) = load_readable(
        &state,
        &caller,
        &case_id,
        Access::Audit,
        "GET /v1/cases/{case_id}/audit",
    )
    .await?;
    let entries = state.store.audit_entries(case_id).await?;
    let pending = context.current_sequence.saturating_sub(entries.len());
    let (entries, next_cursor) = page.of(entries, |e| seq_key(e.sequence.max(0) as u64));
    Ok(Json(AuditResponse {
        entries,
        pending,
        next_cursor,
    }))
}

/// The stored events of a case, as history folds them.
pub fn history_inputs(events: Vec<StoredEvent>) -> Result<Vec<HistoryInput>, ApiError> {
    events
        .into_iter()
        .map(|e| {
            let event = e
                .case_event()
                .map_err(|err| ApiError::Store(crate::error::StoreError::CannotApply(err)))?;
            let occurred_at = e.metadata.occurred_at.unwrap_or(e.recorded_at);
            Ok(HistoryInput {
                event_id: e.event_id.to_string(),
                sequence: e.sequence,
                event_type: e.event_type,
                occurred_at,
                recorded_at: e.recorded_at,
                actor: e.metadata.actor_id.map(|a| a.to_string()),
                event,
            })
        })
        .collect()
}

/// `as_of` as an RFC 3339 time, or a date meaning the end of that day (UTC).
/// A history's `as_of`: an instant, or a date meaning the end of that day where the case's
/// agency is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AsOf {
    Instant(DateTime<Utc>),
    EndOfDay(chrono::NaiveDate),
}

impl AsOf {
    /// The instant, with a date's end of day taken in `zone`.
    pub fn at(self, zone: chrono_tz::Tz) -> DateTime<Utc> {
        use chrono::TimeZone;
        match self {
            AsOf::Instant(t) => t,
            AsOf::EndOfDay(d) => {
                // The first instant of the next local day, less a millisecond.
                let next = d.succ_opt().unwrap_or(d).and_time(chrono::NaiveTime::MIN);
                let start = zone
                    .from_local_datetime(&next)
                    .earliest()
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or_else(|| next.and_utc());
                start - chrono::Duration::milliseconds(1)
            }
        }
    }
}

pub fn parse_as_of(s: &str) -> Result<AsOf, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(AsOf::Instant(t.with_timezone(&Utc)));
    }
    s.parse::<chrono::NaiveDate>()
        .ok()
        .map(AsOf::EndOfDay)
        .ok_or_else(|| {
            ApiError::invalid(
                "invalid_value",
                format!("as_of must be an RFC 3339 time or a YYYY-MM-DD date, not `{s}`"),
            )
        })
}

#[utoipa::path(get, path = "/v1/cases/{case_id}/history", tag = "cases",
    params(("case_id" = String, Path),
           ("as_of" = Option<String>, Query, description = "RFC 3339 time or YYYY-MM-DD (end of day); default now"),
           ("basis" = Option<Basis>, Query, description = "`recorded` (default): what the record held at T; `occurred`: every event that happened by T")),
    responses((status = 200, body = HistoryView), (status = "4XX", body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(case_id = %case_id, actor = %caller.0.id))]
pub async fn get_history(
    State(state): State<AppState>,
    caller: Caller,
    Path(case_id): Path<String>,
    StrictQuery(query): StrictQuery<HashMap<String, String>>,
) -> Result<Json<HistoryView>, ApiError> {
    if let Some(unknown) = query
        .keys()
        .find(|k| !matches!(k.as_str(), "as_of" | "basis"))
    {
        return Err(ApiError::bad_request(
            "unknown_parameter",
            format!("unknown query parameter `{unknown}`; known: as_of, basis"),
        ));
    }
    let as_of = query.get("as_of").map(|s| parse_as_of(s)).transpose()?;
    let basis: Basis = query
        .get("basis")
        .map(|b| {
            b.parse()
                .map_err(|e: String| ApiError::invalid("invalid_value", e))
        })
        .transpose()?
        .unwrap_or(Basis::Recorded);
    let (case_id, context) = load_readable(
        &state,
        &caller,
        &case_id,
        Access::History,
        "GET /v1/cases/{case_id}/history",
    )
    .await?;
    let zone = state.zones.of(context.aggregate.agency());
    let inputs = history_inputs(state.store.events_of(case_id).await?)?;
    let at = match as_of {
        Some(as_of) => as_of.at(zone),
        None => history::now_or_latest(&inputs, state.clock.now()),
    };
    Ok(Json(history::as_of(&inputs, at, basis)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InstrumentsResponse {
    pub instruments: Vec<Instrument>,
}

#[utoipa::path(get, path = "/v1/instruments", tag = "instruments",
    responses((status = 200, body = InstrumentsResponse), (status = 401, body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_instruments(
    State(state): State<AppState>,
    _caller: Caller,
) -> Json<InstrumentsResponse> {
    Json(InstrumentsResponse {
        instruments: state.case_services.instruments.all().to_vec(),
    })
}

#[utoipa::path(get, path = "/v1/instruments/{instrument}", tag = "instruments",
    params(("instrument" = InstrumentKind, Path)),
    responses((status = 200, body = InstrumentsResponse), (status = "4XX", body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_instrument(
    State(state): State<AppState>,
    _caller: Caller,
    Path(instrument): Path<String>,
) -> Result<Json<InstrumentsResponse>, ApiError> {
    let kind: InstrumentKind = instrument
        .parse()
        .map_err(|e: String| ApiError::not_found("instrument_not_found", e))?;
    Ok(Json(InstrumentsResponse {
        instruments: state
            .case_services
            .instruments
            .all()
            .iter()
            .filter(|i| i.instrument == kind)
            .cloned()
            .collect(),
    }))
}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200)))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200), (status = 503)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match crate::projector::status(&state.store).await {
        Ok(projections) => {
            let relay = relay_report(&state).await;
            let relay_failed = relay["phase"] == "failed";
            let stopped = projections.iter().any(|p| p.error.is_some()) || relay_failed;
            // A disconnected bus is not a reason to stop serving: commands commit to the store
            // and their events wait in the log. The relay's phase and lag say so.
            let body = json!({"status": if stopped { "degraded" } else { "ready" },
                              "store": state.store.backend_name(), "projections": projections,
                              "relay": relay});
            if stopped {
                tracing::warn!("not ready: a projection or the relay has stopped");
                (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
            } else {
                Json(body).into_response()
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "not ready: store unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    json!({"status": "unavailable", "store": state.store.backend_name(),
                            "reason": "the event store does not answer"}),
                ),
            )
                .into_response()
        }
    }
}

/// The relay's phase, stream, counters and backlog; `disabled` without a NATS URL.
async fn relay_report(state: &AppState) -> serde_json::Value {
    let Some(handle) = &state.relay else {
        return json!({"phase": "disabled",
                      "detail": "no NATS URL configured: events reach local subscribers only (GET /v1/events/stream)"});
    };
    let current = handle.lock().map(|s| s.clone()).ok();
    let checkpoint = crate::bus::relay::checkpoint(&state.store).await.ok();
    let mut report = serde_json::to_value(current).unwrap_or_default();
    if let (Some(obj), Some(c)) = (report.as_object_mut(), checkpoint) {
        obj.insert("lag".into(), json!(c.lag));
        obj.insert("events_relayed".into(), json!(c.events_applied));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_as_of_date_ends_where_the_agency_is() {
        let chicago = chrono_tz::Tz::America__Chicago;
        let at = |s: &str, zone| parse_as_of(s).unwrap().at(zone).to_rfc3339();
        // The end of 31 October in Chicago (daylight time, -05:00) is 1 November in UTC.
        assert_eq!(at("2026-10-31", chicago), "2026-11-01T04:59:59.999+00:00");
        // 1 November ends in standard time (-06:00): the day had 25 hours.
        assert_eq!(at("2026-11-01", chicago), "2026-11-02T05:59:59.999+00:00");
        assert_eq!(
            at("2026-10-31", chrono_tz::Tz::UTC),
            "2026-10-31T23:59:59.999+00:00"
        );
        // An instant is an instant, whatever the zone.
        assert_eq!(
            at("2026-10-31T23:30:00-05:00", chrono_tz::Tz::UTC),
            "2026-11-01T04:30:00+00:00"
        );
        assert!(parse_as_of("yesterday").is_err());
    }
}

/// `GET /v1/cases`: the filters, each optional; every one given must hold.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Exactly this Medicaid id.
    #[param(min_length = 1, max_length = 20, pattern = "^[A-Z0-9]+$")]
    pub medicaid_id: Option<String>,
    /// Words that each begin the child's given or family name (case and accents ignored), one
    /// to three, separated by whitespace: `rob`, `robin sam`.
    #[param(
        min_length = 1,
        max_length = 100,
        pattern = r"^[\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+([\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+[^\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+){0,2}[\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub name: Option<String>,
    #[param(value_type = Option<String>, format = Date)]
    pub birth_date: Option<String>,
    /// `open` or `closed`.
    #[param(pattern = "^(open|closed)$")]
    pub status: Option<String>,
    #[param(value_type = Option<Program>)]
    pub program: Option<String>,
    /// The assigned case manager's actor id.
    #[param(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@-]+$")]
    pub assigned_to: Option<String>,
    /// How many cases (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1, max_length = 512)]
    pub cursor: Option<String>,
}

impl SearchQuery {
    fn filter(&self) -> Result<projections::search::CaseFilter, ApiError> {
        let bad =
            |field: &str, e: String| ApiError::invalid("invalid_value", format!("{field}: {e}"));
        Ok(projections::search::CaseFilter {
            medicaid_id: self
                .medicaid_id
                .as_deref()
                .map(MedicaidId::parse)
                .transpose()
                .map_err(|e| bad("medicaid_id", e.to_string()))?,
            name: match self.name.as_deref() {
                None => Vec::new(),
                Some(n) if n.chars().count() > 100 => {
                    return Err(bad("name", "at most 100 characters".into()))
                }
                Some(n) => projections::search::CaseFilter::name_words(n, 3).ok_or_else(|| {
                    bad(
                        "name",
                        "one to three words, each the start of a name".into(),
                    )
                })?,
            },
            birth_date: self
                .birth_date
                .as_deref()
                .map(|d| d.parse::<chrono::NaiveDate>())
                .transpose()
                .map_err(|e| bad("birth_date", format!("{e} (YYYY-MM-DD)")))?,
            open: match self.status.as_deref() {
                None => None,
                Some("open") => Some(true),
                Some("closed") => Some(false),
                Some(other) => {
                    return Err(bad("status", format!("`{other}`; expected open or closed")))
                }
            },
            program: self
                .program
                .as_deref()
                .map(|p| p.parse::<Program>())
                .transpose()
                .map_err(|e| bad("program", e))?,
            assigned_to: self
                .assigned_to
                .as_deref()
                .map(ActorId::parse)
                .transpose()
                .map_err(|e| bad("assigned_to", e.to_string()))?,
        })
    }

    /// The filters as asked, for the search log (the paging parameters left out).
    fn logged(&self) -> String {
        let pairs = [
            ("medicaid_id", &self.medicaid_id),
            ("name", &self.name),
            ("birth_date", &self.birth_date),
            ("status", &self.status),
            ("program", &self.program),
            ("assigned_to", &self.assigned_to),
        ];
        let map: serde_json::Map<String, Value> = pairs
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), Value::String(v.clone()))))
            .collect();
        Value::Object(map).to_string()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    /// A page of the cases found, by case id. Rows of cases the caller may not read carry only
    /// `case_id`, `status`, `program` and `assigned_to`.
    pub cases: Vec<projections::search::CaseRow>,
    /// The next page's cursor; null at the end.
    pub next_cursor: Option<String>,
}

/// Finds cases by Medicaid id, name, birth date, status, program or case manager. Minimum
/// necessary: the child shows only on cases the caller may read (a case manager's own, any of
/// the agency for supervisors and auditors); other cases of the agency show only that they
/// exist, their status, program and case manager. Billing and service tokens may not search.
/// Every search is logged (who, filters, rows), and each case whose child was shown gets a read.
#[utoipa::path(get, path = "/v1/cases", tag = "cases", params(SearchQuery),
    responses((status = 200, body = SearchResponse), (status = "4XX", body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(actor = %caller.0.id, role = %caller.0.role))]
pub async fn search_cases(
    State(state): State<AppState>,
    caller: Caller,
    StrictQuery(query): StrictQuery<SearchQuery>,
) -> Result<Json<SearchResponse>, ApiError> {
    let actor = &caller.0;
    let agency = crate::auth::agency_scope(actor, Access::Search, None)?.map(|a| a.to_string());
    let page =
        crate::http::page::Page::parse("cases", query.limit.as_deref(), query.cursor.as_deref())?;
    let filter = query.filter()?;
    let mut found = state
        .store
        .search_cases(
            &filter,
            agency.as_deref(),
            page.after.as_deref(),
            page.limit + 1,
        )
        .await?;
    let next_cursor = page.cut(&mut found, |c| {
        c.opened
            .as_ref()
            .map(|o| o.case_id.to_string())
            .unwrap_or_default()
    });
    let rows: Vec<projections::search::CaseRow> = found
        .iter()
        .filter_map(|case| {
            projections::search::CaseRow::of(case, check(actor, case, Access::Read).is_ok())
        })
        .collect();
    let now = state.clock.now();
    let full = rows.iter().filter(|r| r.is_full()).count();
    state
        .store
        .log_search(actor, &query.logged(), rows.len(), full, now)
        .await?;
    let read: Vec<CaseId> = rows
        .iter()
        .filter(|r| r.is_full())
        .map(|r| r.case_id)
        .collect();
    state
        .store
        .log_reads(actor, &read, "GET /v1/cases", true, now)
        .await?;
    Ok(Json(SearchResponse {
        cases: rows,
        next_cursor,
    }))
}
