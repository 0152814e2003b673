//! `GET /v1/billing/tcm?month=YYYY-MM&format=json|csv`: a month of the billing-eligible activity
//! log, evaluated with the rules profile in force, streamed (memory flat in the number of lines).
//! Billing, auditors and admins only; lines carry units, dates and codes, never clinical notes.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use projections::billing::Month;
use schemas::Role;
use serde::Deserialize;

use crate::auth::Caller;
use crate::billing::export::{export_month, Format};
use crate::error::ApiError;
use crate::startup::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TcmQuery {
    /// The month of service, `YYYY-MM`.
    pub month: String,
    /// `json` (default) or `csv` (with a header row).
    pub format: Option<String>,
}

#[utoipa::path(get, path = "/v1/billing/tcm", tag = "billing", params(TcmQuery),
    responses((status = 200, description = "the month's activity lines: {month, profile, lines: [{activity_id, case_id, medicaid_id, date_of_service, component, contact_type, minutes, units, billable, reasons, procedure_code, modifiers, rendering_provider}], summary}, or the same as CSV"),
              (status = "4XX", body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(actor = %caller.0.id, role = %caller.0.role, month = %query.month))]
pub async fn get_tcm(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<TcmQuery>,
) -> Result<Response, ApiError> {
    let actor = caller.0;
    if !matches!(actor.role, Role::Billing | Role::Auditor | Role::Admin) {
        return Err(ApiError::forbidden(
            "role_not_allowed",
            "the billing log is for billing, auditor and admin roles",
        ));
    }
    let month = Month::parse(&query.month).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_month",
            format!("month must be YYYY-MM, got `{}`", query.month),
        )
    })?;
    let format = match query.format.as_deref() {
        None => Format::Json,
        Some(f) => Format::parse(f).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_format",
                format!("format must be json or csv, got `{f}`"),
            )
        })?,
    };
    let agency = (actor.role != Role::Admin).then(|| actor.agency.to_string());
    tracing::info!(%month, ?agency, "billing log pulled");
    // A task renders the month into a bounded channel that is the response body: the client's
    // pace sets the export's, and nothing is held beyond a few cases' lines.
    let (mut tx, rx) = futures::channel::mpsc::channel::<Bytes>(16);
    let (store, profile) = (state.store.clone(), state.billing.clone());
    tokio::spawn(async move {
        let done = export_month(
            &store,
            &profile,
            month,
            agency.as_deref(),
            format,
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
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(rx.map(Ok::<_, std::io::Error>)),
    )
        .into_response())
}
