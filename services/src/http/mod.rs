//! The HTTP API (axum), exactly as `schemas/CONTRACT.md` names it.

pub mod billing;
pub mod caseloads;
pub mod commands;
pub mod events;
pub mod extract;
pub mod fhir;
pub mod measures;
pub mod openapi;
pub mod page;
pub mod reads;
pub mod serve;
pub mod tokens;

use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::startup::AppState;

pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let secs = state.config.request_timeout_secs;
    let max_head = state.config.max_header_bytes;
    Router::new()
        .route(
            "/v1/cases",
            post(commands::open_case).get(reads::search_cases),
        )
        .route("/v1/cases/{case_id}", get(reads::get_case))
        .route("/v1/cases/{case_id}/events", get(reads::get_events))
        .route("/v1/cases/{case_id}/audit", get(reads::get_audit))
        .route("/v1/cases/{case_id}/history", get(reads::get_history))
        .route("/v1/cases/{case_id}/reads", get(reads::get_reads))
        .route("/v1/cases/{case_id}/assignment", post(commands::assign_case_manager))
        .route("/v1/cases/{case_id}/screenings", post(commands::record_screening))
        .route("/v1/cases/{case_id}/care-plan", post(commands::revise_care_plan))
        .route("/v1/cases/{case_id}/referrals", post(commands::send_referral))
        .route(
            "/v1/cases/{case_id}/referrals/{referral_id}/status",
            post(commands::update_referral_status),
        )
        .route("/v1/cases/{case_id}/appointments", post(commands::schedule_appointment))
        .route(
            "/v1/cases/{case_id}/appointments/{appointment_id}/outcome",
            post(commands::record_appointment_outcome),
        )
        .route("/v1/cases/{case_id}/contacts", post(commands::log_contact))
        .route("/v1/cases/{case_id}/transition", post(commands::transition_case))
        .route("/v1/cases/{case_id}/reopen", post(commands::reopen_case))
        .route("/v1/cases/{case_id}/corrections", post(commands::correct_entry))
        .route("/v1/events/stream", get(events::stream))
        .route("/v1/billing/tcm", get(billing::get_tcm))
        .route(
            "/v1/billing/tcm/batches",
            get(billing::list_batches).post(billing::create_batch),
        )
        .route("/v1/billing/tcm/batches/{batch_id}", get(billing::get_batch))
        .route("/v1/caseloads", get(caseloads::get_team))
        .route("/v1/caseloads/{worker_id}", get(caseloads::get_caseload))
        .route("/v1/measures", get(measures::get_measures))
        .route(
            "/v1/tokens",
            post(tokens::create_token).get(tokens::list_tokens),
        )
        .route("/v1/tokens/{token_id}", delete(tokens::revoke_token))
        .route("/v1/instruments", get(reads::list_instruments))
        .route("/v1/instruments/{instrument}", get(reads::get_instrument))
        .route("/v1/openapi.json", get(openapi::serve))
        .route("/healthz", get(reads::healthz))
        .route("/readyz", get(reads::readyz))
        .nest(fhir::BASE, fhir::routes())
        .fallback(|| async {
            ApiError::not_found("route_not_found", "no such route; see /v1/openapi.json")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed
        })
        .layer(DefaultBodyLimit::max(limit))
        // Headers over their limit, or a body declared larger than its limit, are refused before
        // a byte of the body is read; any request (its body included) must be complete within
        // the time limit, the answer's own streaming not counted.
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| async move {
                let declared = request
                    .headers()
                    .get(axum::http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if head_bytes(&request) > max_head {
                    return ApiError::HeadersTooLarge { limit: max_head }.into_response();
                }
                if declared.is_some_and(|n| n > limit as u64) {
                    return ApiError::TooLarge { limit }.into_response();
                }
                let within = std::time::Duration::from_secs(secs);
                match tokio::time::timeout(within, next.run(request)).await {
                    Ok(response) => response,
                    Err(_) => ApiError::RequestTimeout { secs }.into_response(),
                }
            },
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let request_id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id)
        }))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// About the size of a request's line and headers as the client sent them.
fn head_bytes(request: &axum::extract::Request) -> usize {
    let uri = request.uri();
    let line = request.method().as_str().len()
        + uri.path().len()
        + uri.query().map_or(0, |q| q.len() + 1)
        + 12;
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + line
}
