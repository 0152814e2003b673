//! Command routes: each maps its path and body onto one `CaseAction` and runs it through the
//! command pipeline (`crate::command::execute`).

use aggregates::{Case, CaseAction, VoidTarget};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use schemas::wire::*;
use schemas::*;
use tracing::instrument;
use uuid::Uuid;

use crate::auth::{permit, Access};
use crate::command::{execute, CommandMeta, Target};
use crate::error::ApiError;
use crate::http::extract::JsonBody;
use crate::startup::AppState;

/// Namespace for case ids derived from an idempotency scope (UUID v5), so that two concurrent
/// retries of one intake collide on the same stream instead of opening two cases.
const CASE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c696e6b_6167_4500_8000_636173656964);

pub fn parse_case_id(s: &str) -> Result<CaseId, ApiError> {
    CaseId::parse(s).map_err(|_| ApiError::not_found("case_not_found", "no case with this id"))
}

#[utoipa::path(post, path = "/v1/cases", tag = "cases",
    request_body = OpenCaseRequest,
    params(("Idempotency-Key" = Option<schemas::IdempotencyKey>, Header, description = "makes a retry safe")),
    responses((status = 201, body = OpenCaseResponse), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(actor = %meta.actor.id))]
pub async fn open_case(
    State(state): State<AppState>,
    meta: CommandMeta,
    body: JsonBody<OpenCaseRequest>,
) -> Result<Response, ApiError> {
    let actor = meta.actor.clone();
    // The new case is of the caller's agency, owned by its assignee.
    permit(
        &actor,
        Access::OpenCase,
        Some(&actor.agency),
        Some(body.value.assigned_to.as_str()),
    )?;
    let case_id = match meta.idempotency_scope() {
        Some(scope) => CaseId::from_uuid(Uuid::new_v5(&CASE_ID_NAMESPACE, scope.as_bytes())),
        None => CaseId::generate(),
    };
    let possible_duplicates =
        possible_duplicates(&state, &actor.agency, &body.value, case_id).await?;
    execute(
        &state,
        meta,
        &body.raw,
        case_id,
        Target::New,
        StatusCode::CREATED,
        |_| {
            Ok(CaseAction::OpenCase {
                case_id,
                agency: actor.agency.clone(),
                request: body.value.clone(),
                possible_duplicates: possible_duplicates.clone(),
            })
        },
    )
    .await
}

/// Open cases of `agency` that an intake of `request` would duplicate: the same Medicaid id, or
/// the same given and family name (case and accents ignored) and birth date. Read from the
/// caseload projection, so a case opened a moment ago elsewhere may not be seen yet (this guards
/// against duplicates by accident, not by a race). The case being opened (an idempotent retry)
/// is not its own duplicate.
async fn possible_duplicates(
    state: &AppState,
    agency: &AgencyId,
    request: &OpenCaseRequest,
    case_id: CaseId,
) -> Result<Vec<CaseId>, ApiError> {
    use projections::search::{name_key, CaseFilter};
    const ENOUGH: usize = 20;
    let mut found = std::collections::BTreeSet::new();
    let child = &request.child;
    if let Some(m) = &child.medicaid_id {
        let by_id = CaseFilter {
            medicaid_id: Some(m.clone()),
            open: Some(true),
            ..CaseFilter::default()
        };
        for case in state
            .store
            .search_cases(&by_id, Some(agency.as_str()), None, ENOUGH)
            .await?
        {
            found.extend(case.opened.map(|o| o.case_id));
        }
    }
    let (given, family) = (
        name_key(child.given_name.as_str()),
        name_key(child.family_name.as_str()),
    );
    let by_name = CaseFilter {
        name: family.split(' ').map(str::to_owned).collect(),
        birth_date: Some(child.birth_date),
        open: Some(true),
        ..CaseFilter::default()
    };
    for case in state
        .store
        .search_cases(&by_name, Some(agency.as_str()), None, ENOUGH)
        .await?
    {
        if let Some(o) = case.opened {
            if name_key(o.child.given_name.as_str()) == given
                && name_key(o.child.family_name.as_str()) == family
            {
                found.insert(o.case_id);
            }
        }
    }
    found.remove(&case_id);
    Ok(found.into_iter().collect())
}

macro_rules! case_command {
    (
        $(#[$doc:meta])*
        $name:ident, $path:literal, $req:ty, $resp:ty, $status:expr, $access:expr,
        |$case:ident, $body:ident $(, $extra:ident : $extra_ty:ty)?| $build:expr
    ) => {
        $(#[$doc])*
        #[utoipa::path(post, path = $path, tag = "cases",
            request_body = $req,
            params(
                ("case_id" = String, Path, description = "the case"),
                ("Idempotency-Key" = Option<schemas::IdempotencyKey>, Header, description = "makes a retry safe"),
            ),
            responses((status = $status, body = $resp), (status = "4XX", body = ErrorBody)),
            security(("bearer" = [])))]
        #[instrument(skip_all, fields(case_id = %case_id, actor = %meta.actor.id))]
        pub async fn $name(
            State(state): State<AppState>,
            meta: CommandMeta,
            Path(case_id): Path<String>,
            body: JsonBody<$req>,
        ) -> Result<Response, ApiError> {
            let case_id = parse_case_id(&case_id)?;
            let $body = &body.value;
            execute(
                &state,
                meta,
                &body.raw,
                case_id,
                Target::Existing($access),
                StatusCode::from_u16($status).expect("static status"),
                |$case: &Case| {
                    let _ = $case;
                    Ok($build)
                },
            )
            .await
        }
    };
}

case_command!(
    /// Reassign the case manager (supervisor or admin). An addition to the contract.
    assign_case_manager, "/v1/cases/{case_id}/assignment", AssignCaseManagerRequest, VersionResponse,
    200, Access::Assign,
    |case, body| CaseAction::AssignCaseManager(body.clone())
);

case_command!(
    record_screening,
    "/v1/cases/{case_id}/screenings",
    RecordScreeningRequest,
    RecordScreeningResponse,
    201,
    Access::Command,
    |case, body| CaseAction::RecordScreening {
        screening_id: ScreeningId::generate(),
        request: body.clone(),
    }
);

case_command!(
    revise_care_plan,
    "/v1/cases/{case_id}/care-plan",
    ReviseCarePlanRequest,
    ReviseCarePlanResponse,
    201,
    Access::Command,
    |case, body| CaseAction::ReviseCarePlan {
        goal_ids: body.goals.iter().map(|_| GoalId::generate()).collect(),
        request: body.clone(),
    }
);

case_command!(
    send_referral,
    "/v1/cases/{case_id}/referrals",
    SendReferralRequest,
    SendReferralResponse,
    201,
    Access::Command,
    |case, body| CaseAction::SendReferral {
        referral_id: ReferralId::generate(),
        request: body.clone(),
    }
);

case_command!(
    schedule_appointment,
    "/v1/cases/{case_id}/appointments",
    ScheduleAppointmentRequest,
    ScheduleAppointmentResponse,
    201,
    Access::Command,
    |case, body| CaseAction::ScheduleAppointment {
        appointment_id: AppointmentId::generate(),
        request: body.clone(),
    }
);

case_command!(
    log_contact,
    "/v1/cases/{case_id}/contacts",
    LogContactRequest,
    LogContactResponse,
    201,
    Access::Command,
    |case, body| CaseAction::LogContact {
        activity_id: ActivityId::generate(),
        request: body.clone(),
    }
);

case_command!(
    transition_case,
    "/v1/cases/{case_id}/transition",
    TransitionRequest,
    VersionResponse,
    200,
    Access::Command,
    |case, body| CaseAction::TransitionCase(body.clone())
);

case_command!(
    reopen_case,
    "/v1/cases/{case_id}/reopen",
    ReopenRequest,
    VersionResponse,
    200,
    Access::Command,
    |case, body| CaseAction::ReopenCase(body.clone())
);

#[utoipa::path(post, path = "/v1/cases/{case_id}/referrals/{referral_id}/status", tag = "cases",
    request_body = ReferralStatusRequest,
    params(("case_id" = String, Path), ("referral_id" = String, Path),
           ("Idempotency-Key" = Option<schemas::IdempotencyKey>, Header)),
    responses((status = 200, body = VersionResponse), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(case_id = %case_id, referral_id = %referral_id, actor = %meta.actor.id))]
pub async fn update_referral_status(
    State(state): State<AppState>,
    meta: CommandMeta,
    Path((case_id, referral_id)): Path<(String, String)>,
    body: JsonBody<ReferralStatusRequest>,
) -> Result<Response, ApiError> {
    let case_id = parse_case_id(&case_id)?;
    let referral_id = ReferralId::parse(&referral_id)
        .map_err(|_| ApiError::Refused(aggregates::CaseError::ReferralNotFound))?;
    execute(
        &state,
        meta,
        &body.raw,
        case_id,
        Target::Existing(Access::RecipientReport),
        StatusCode::OK,
        |_| {
            Ok(CaseAction::UpdateReferralStatus {
                referral_id,
                request: body.value.clone(),
            })
        },
    )
    .await
}

#[utoipa::path(post, path = "/v1/cases/{case_id}/appointments/{appointment_id}/outcome", tag = "cases",
    request_body = AppointmentOutcomeRequest,
    params(("case_id" = String, Path), ("appointment_id" = String, Path),
           ("Idempotency-Key" = Option<schemas::IdempotencyKey>, Header)),
    responses((status = 200, body = VersionResponse), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(case_id = %case_id, appointment_id = %appointment_id, actor = %meta.actor.id))]
pub async fn record_appointment_outcome(
    State(state): State<AppState>,
    meta: CommandMeta,
    Path((case_id, appointment_id)): Path<(String, String)>,
    body: JsonBody<AppointmentOutcomeRequest>,
) -> Result<Response, ApiError> {
    let case_id = parse_case_id(&case_id)?;
    let appointment_id = AppointmentId::parse(&appointment_id)
        .map_err(|_| ApiError::Refused(aggregates::CaseError::AppointmentNotFound))?;
    execute(
        &state,
        meta,
        &body.raw,
        case_id,
        Target::Existing(Access::RecipientReport),
        StatusCode::OK,
        |_| {
            Ok(CaseAction::RecordAppointmentOutcome {
                appointment_id,
                request: body.value.clone(),
            })
        },
    )
    .await
}

#[utoipa::path(post, path = "/v1/cases/{case_id}/corrections", tag = "cases",
    request_body = CorrectionRequest,
    params(("case_id" = String, Path), ("Idempotency-Key" = Option<schemas::IdempotencyKey>, Header)),
    responses((status = 201, body = VersionResponse), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(case_id = %case_id, actor = %meta.actor.id))]
pub async fn correct_entry(
    State(state): State<AppState>,
    meta: CommandMeta,
    Path(case_id): Path<String>,
    body: JsonBody<CorrectionRequest>,
) -> Result<Response, ApiError> {
    let case_id = parse_case_id(&case_id)?;
    let event_id = body.value.voids_event_id;
    let found = state.store.find_event(case_id, event_id).await?;
    let actor = meta.actor.clone();
    execute(
        &state,
        meta,
        &body.raw,
        case_id,
        Target::Existing(Access::Command),
        StatusCode::CREATED,
        |case| {
            let found = found
                .clone()
                .ok_or(ApiError::Refused(aggregates::CaseError::EventNotFound))?;
            // Once a case has closed, an entry is corrected by whoever made it, a supervisor of
            // the agency or an admin: the entry's author is its owner.
            if case.closed.is_some() {
                permit(
                    &actor,
                    Access::Command,
                    case.agency(),
                    found.author.as_ref().map(ActorId::as_str),
                )?;
            }
            Ok(CaseAction::VoidEntry {
                target: VoidTarget {
                    event_id,
                    sequence: found.sequence,
                    event_type: found.event_type,
                },
                reason: body.value.reason.clone(),
            })
        },
    )
    .await
}
