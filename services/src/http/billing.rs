//! `GET /v1/billing/tcm?month=YYYY-MM&format=json|csv`: a month of the billing-eligible activity
//! log, evaluated with the rules profile in force, streamed (memory flat in the number of lines).
//! Billing, auditors and admins only; lines carry units, dates and codes, never clinical notes.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use projections::billing::Month;
use serde::Deserialize;

use crate::auth::{agency_scope, Access, Caller};
use crate::billing::export::line_key;
use crate::billing::export::{export_month, Format};
use crate::error::ApiError;
use crate::http::page::{encode, seq_key, Page, StrictQuery};
use crate::startup::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TcmQuery {
    /// The month of service, `YYYY-MM`.
    #[param(pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$")]
    pub month: String,
    /// `json` (default: a page of lines) or `csv` (the whole month, streamed, with a header row).
    #[param(pattern = "^(json|csv)$")]
    pub format: Option<String>,
    /// JSON only: how many lines (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// JSON only: `next_cursor` of the previous page.
    #[param(min_length = 1, max_length = 512)]
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/billing/tcm", tag = "billing", params(TcmQuery),
    responses((status = 200, description = "a page of the month's activity lines: {month, profile, lines: [{activity_id, case_id, medicaid_id, date_of_service, component, contact_type, minutes, units, billable, reasons, procedure_code, modifiers, rendering_provider}], summary (of the page's lines), next_cursor}; or, as CSV, the whole month"),
              (status = "4XX", body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(actor = %caller.0.id, role = %caller.0.role, month = %query.month))]
pub async fn get_tcm(
    State(state): State<AppState>,
    caller: Caller,
    StrictQuery(query): StrictQuery<TcmQuery>,
) -> Result<Response, ApiError> {
    let agency = log_scope(&caller.0)?;
    let month = parse_month(&query.month)?;
    let format = parse_format(query.format.as_deref(), Format::Json)?;
    tracing::info!(%month, ?agency, "billing log pulled");
    if format == Format::Json {
        let page = Page::parse("lines", query.limit.as_deref(), query.cursor.as_deref())?;
        let found = crate::billing::export::page_month(
            &state.store,
            &state.billing,
            &state.zones,
            month,
            agency.as_deref(),
            page.after.as_deref(),
            page.limit,
        )
        .await?;
        let next_cursor = found
            .more
            .then(|| found.lines.last().map(|l| encode("lines", &line_key(l))))
            .flatten();
        return Ok(axum::Json(serde_json::json!({
            "month": month.to_string(),
            "profile": state.billing.name,
            "lines": found.lines,
            "summary": found.summary,
            "next_cursor": next_cursor,
        }))
        .into_response());
    }
    if query.limit.is_some() || query.cursor.is_some() {
        return Err(ApiError::bad_request(
            "not_paged",
            "the CSV export streams the whole month; limit and cursor are for JSON",
        ));
    }
    // A task renders the month into a bounded channel that is the response body: the client's
    // pace sets the export's, and nothing is held beyond a few cases' lines.
    let (mut tx, rx) = futures::channel::mpsc::channel::<Bytes>(16);
    let (store, profile, zones) = (
        state.store.clone(),
        state.billing.clone(),
        state.zones.clone(),
    );
    tokio::spawn(async move {
        let done = export_month(
            &store,
            &profile,
            &zones,
            crate::billing::export::Selection {
                month,
                agency: agency.as_deref(),
                format,
            },
            &mut tx,
            |_| {},
        )
        .await;
        if let Err(e) = done {
            // The status is sent; a broken stream is all the client can be told.
            tracing::warn!(error = %e, "billing export stopped");
        }
    });
    let filename = match format {
        Format::Csv => format!("tcm-{month}.csv"),
        Format::Json => format!("tcm-{month}.json"),
    };
    Ok(streamed(format, &filename, rx))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBatchRequest {
    /// The month of service, `YYYY-MM`.
    #[schema(pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$")]
    pub month: String,
    /// The agency whose lines are exported; a billing user's own by default (admins must name one).
    pub agency: Option<schemas::AgencyId>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BatchesQuery {
    /// The month of service, `YYYY-MM`.
    #[param(pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$")]
    pub month: String,
    /// How many batches (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1, max_length = 512)]
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BatchQuery {
    /// `csv` (default, with a header row) or `json`.
    #[param(pattern = "^(json|csv)$")]
    pub format: Option<String>,
}

fn parse_month(s: &str) -> Result<Month, ApiError> {
    Month::parse(s).ok_or_else(|| {
        ApiError::bad_request("invalid_month", format!("month must be YYYY-MM, got `{s}`"))
    })
}

/// The `format` parameter, or `default` when there is none.
fn parse_format(asked: Option<&str>, default: Format) -> Result<Format, ApiError> {
    match asked {
        None => Ok(default),
        Some(f) => Format::parse(f).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_format",
                format!("format must be json or csv, got `{f}`"),
            )
        }),
    }
}

/// The time zone of the agency named `agency`.
fn zone_of(state: &AppState, agency: &str) -> Result<chrono_tz::Tz, ApiError> {
    let agency = schemas::AgencyId::parse(agency)
        .map_err(|e| ApiError::invalid("invalid_value", format!("agency: {e}")))?;
    Ok(state.zones.of(Some(&agency)))
}

/// The agency a caller's batch request is for: an admin names it; billing records its own.
fn batch_agency(
    actor: &aggregates::Actor,
    asked: Option<schemas::AgencyId>,
) -> Result<String, ApiError> {
    match (
        agency_scope(actor, Access::BillingBatch, None)?,
        asked.map(String::from),
    ) {
        (None, Some(a)) => Ok(a),
        (None, None) => Err(ApiError::invalid(
            "agency_required",
            "an admin must name the agency whose lines are exported",
        )),
        (Some(own), None) => Ok(own.to_string()),
        (Some(own), Some(a)) if a == own.as_str() => Ok(a),
        (Some(_), Some(_)) => Err(ApiError::forbidden(
            "other_agency",
            "billing exports its own agency's lines only",
        )),
    }
}

/// Records the next export batch of a month: only what changed since the month's earlier
/// batches (originals, voids and replacements). The batch itself is then fetched (and can be
/// fetched again, byte for byte) from `GET /v1/billing/tcm/batches/{batch_id}`.
#[utoipa::path(post, path = "/v1/billing/tcm/batches", tag = "billing", request_body = CreateBatchRequest,
    responses((status = 201, description = "the recorded batch: {batch_id, month, agency, batch_no, profile, lines, checksum, created_at}"),
              (status = "4XX", body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(actor = %caller.0.id, role = %caller.0.role))]
pub async fn create_batch(
    State(state): State<AppState>,
    caller: Caller,
    body: crate::http::extract::JsonBody<CreateBatchRequest>,
) -> Result<Response, ApiError> {
    let actor = caller.0;
    let request = body.value;
    let month = parse_month(&request.month)?;
    let agency = batch_agency(&actor, request.agency)?;
    let metadata = crate::billing::batch::metadata(&actor, state.clock.now());
    let of = crate::store::BatchOf {
        month,
        agency: &agency,
        zone: zone_of(&state, &agency)?,
    };
    let record = crate::billing::batch::create(&state.store, &state.billing, of, &metadata)
        .await
        .map_err(|e| match e {
            crate::billing::export::ExportError::Store(s) => ApiError::Store(s),
            other => ApiError::Store(crate::error::StoreError::Unexpected(other.to_string())),
        })?;
    tracing::info!(batch_id = %record.batch_id, lines = record.lines, %month, %agency, "billing batch exported");
    Ok((axum::http::StatusCode::CREATED, axum::Json(record)).into_response())
}

/// The batches of a month, oldest first.
#[utoipa::path(get, path = "/v1/billing/tcm/batches", tag = "billing", params(BatchesQuery),
    responses((status = 200, description = "{batches: [{batch_id, month, agency, batch_no, profile, lines, checksum, created_at}]}"),
              (status = "4XX", body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_batches(
    State(state): State<AppState>,
    caller: Caller,
    StrictQuery(query): StrictQuery<BatchesQuery>,
) -> Result<Response, ApiError> {
    let page = Page::parse("batches", query.limit.as_deref(), query.cursor.as_deref())?;
    let agency = log_scope(&caller.0)?;
    let month = parse_month(&query.month)?;
    let mut batches = state
        .store
        .billing_batches(month, agency.as_deref())
        .await?;
    // By agency, then number: a key that sorts the same everywhere (ids cannot hold a tab).
    let key = |b: &crate::store::BatchRecord| {
        format!("{}\t{}", b.agency, seq_key(b.batch_no.max(0) as u64))
    };
    batches.sort_by_key(key);
    let (batches, next_cursor) = page.of(batches, key);
    Ok(
        axum::Json(serde_json::json!({"batches": batches, "next_cursor": next_cursor}))
            .into_response(),
    )
}

/// The agency whose billing log the caller reads (None: every agency), or the refusal.
fn log_scope(actor: &aggregates::Actor) -> Result<Option<String>, ApiError> {
    Ok(agency_scope(actor, Access::BillingLog, None)?.map(|a| a.to_string()))
}

/// A recorded batch, exactly as it was exported (its checksum is checked first).
#[utoipa::path(get, path = "/v1/billing/tcm/batches/{batch_id}", tag = "billing",
    params(("batch_id" = String, Path), BatchQuery),
    responses((status = 200, description = "the batch as CSV (line_id, kind, adjusts, then the log's columns) or JSON {batch, lines}"),
              (status = "4XX", body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_batch(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Path(batch_id): axum::extract::Path<String>,
    StrictQuery(query): StrictQuery<BatchQuery>,
) -> Result<Response, ApiError> {
    let agency = log_scope(&caller.0)?;
    let format = parse_format(query.format.as_deref(), Format::Csv)?;
    let not_found =
        || ApiError::not_found("batch_not_found", format!("no billing batch {batch_id}"));
    let record = state
        .store
        .billing_batch(&batch_id)
        .await?
        .ok_or_else(not_found)?;
    if agency.is_some_and(|a| a != record.agency) {
        return Err(not_found());
    }
    crate::billing::batch::verify(&state.store, &record)
        .await
        .map_err(|e| ApiError::Store(crate::error::StoreError::Corrupt(e.to_string())))?;
    let (mut tx, rx) = futures::channel::mpsc::channel::<Bytes>(16);
    let store = state.store.clone();
    let filename = format!(
        "tcm-{}-{}-batch{}.{}",
        record.month,
        record.agency,
        record.batch_no,
        if format == Format::Csv { "csv" } else { "json" }
    );
    tokio::spawn(async move {
        if let Err(e) =
            crate::billing::batch::write_verified(&store, &record, format, &mut tx).await
        {
            tracing::warn!(error = %e, "billing batch stream stopped");
        }
    });
    Ok(streamed(format, &filename, rx))
}

/// A response whose body is what a producer task sends into `rx`, as it sends it.
fn streamed(
    format: Format,
    filename: &str,
    rx: futures::channel::mpsc::Receiver<Bytes>,
) -> Response {
    (
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(rx.map(Ok::<_, std::io::Error>)),
    )
        .into_response()
}
