//! /v1/openapi.json, generated from the handlers' annotations so it cannot drift from the code.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{billing, caseloads, commands, events, measures, reads, tokens};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Linkage", description = "Event-sourced referral tracking for children's and family mental-health case management."),
    paths(
        commands::open_case,
        commands::assign_case_manager,
        commands::record_screening,
        commands::revise_care_plan,
        commands::send_referral,
        commands::update_referral_status,
        commands::schedule_appointment,
        commands::record_appointment_outcome,
        commands::log_contact,
        commands::transition_case,
        commands::reopen_case,
        commands::correct_entry,
        reads::search_cases,
        reads::get_case,
        reads::get_events,
        reads::get_audit,
        reads::get_history,
        reads::get_reads,
        caseloads::get_caseload,
        caseloads::get_team,
        measures::get_measures,
        tokens::create_token,
        tokens::list_tokens,
        tokens::revoke_token,
        events::stream,
        billing::get_tcm,
        billing::create_batch,
        billing::list_batches,
        billing::get_batch,
        reads::list_instruments,
        reads::get_instrument,
        reads::healthz,
        reads::readyz,
        serve,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// This document. The committed copy is `schemas/openapi.json`; a test keeps the two equal.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "the OpenAPI 3.1 document of this API")))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
