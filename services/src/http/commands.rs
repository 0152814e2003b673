//! Command routes. Every one runs through `execute`: idempotency check, load, role check,
//! decide (the aggregate), commit with optimistic concurrency, bounded retry on conflict.

use aggregates::{Case, CaseAction, CaseCommand, CaseEvent, VoidTarget};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use schemas::metadata::Idempotency;
use schemas::wire::*;
use schemas::*;
use serde_json::{json, Value};
use tracing::instrument;
use uuid::Uuid;

use crate::auth::{check, Access};
use crate::error::ApiError;
use crate::http::extract::{CommandMeta, JsonBody};
use crate::startup::AppState;
use crate::store::Commit;

/// Namespace for case ids derived from an idempotency scope (UUID v5), so that two concurrent
/// retries of one intake collide on the same stream instead of opening two cases.
const CASE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c696e6b_6167_4500_8000_636173656964);

pub fn parse_case_id(s: &str) -> Result<CaseId, ApiError> {
    CaseId::parse(s).map_err(|_| ApiError::not_found("case_not_found", "no case with this id"))
}

/// How the route reaches the case: opening a new one, or acting on an existing one.
pub enum Target {
    New,
    Existing(Access),
}

/// Runs one command to completion. `action` is called once per attempt with the freshly loaded
/// case; it must not have side effects. Public for the benchmark, which drives it without HTTP.
pub async fn execute(
    state: &AppState,
    meta: CommandMeta,
    body: &[u8],
    case_id: CaseId,
    target: Target,
    status: StatusCode,
    action: impl Fn(&Case) -> Result<CaseAction, ApiError>,
) -> Result<Response, ApiError> {
    let request_hash = meta.request_hash(body);
    let scope = meta.idempotency_scope();
    for attempt in 0..=state.config.conflict_retries {
        if let Some(answer) = replay(state, scope.as_deref(), &request_hash).await? {
            return answer;
        }
        let mut context = state.store.load_for_command(case_id).await?;
        // The state is checked out of the cache: every exit below commits or releases it.
        let permitted = match target {
            Target::New => Ok(()),
            Target::Existing(_) if !context.aggregate.exists() => Err(ApiError::not_found(
                "case_not_found",
                "no case with this id",
            )),
            Target::Existing(access) => check(&meta.actor, &context.aggregate, access),
        };
        let action = match permitted.and_then(|()| action(&context.aggregate)) {
            Ok(action) => action,
            Err(e) => {
                state.store.release(case_id, context);
                return Err(e);
            }
        };
        let received_at = state.clock.now();
        let command_name = action.name();
        let occurred_at = action.occurred_at(received_at);
        let command = CaseCommand {
            actor: meta.actor.clone(),
            received_at,
            action,
        };
        let sink = EventSink::default();
        if let Err(refusal) = context
            .aggregate
            .handle(command, &state.case_services, &sink)
            .await
        {
            // Refused before any event was written: the state is unchanged.
            state.store.release(case_id, context);
            // A duplicate of this request may have committed since the check above (for
            // example, the same intake retried concurrently): then its answer is ours.
            if let Some(answer) = replay(state, scope.as_deref(), &request_hash).await? {
                return answer;
            }
            return Err(refusal.into());
        }
        let events = sink.collect().await;
        let answer = answer_for(&events);
        let metadata = EventMetadata {
            command: Some(command_name.to_owned()),
            command_id: Some(meta.command_id),
            causation_id: Some(meta.command_id),
            correlation_id: Some(meta.correlation_id.clone()),
            actor_id: Some(meta.actor.id.clone()),
            actor_role: Some(meta.actor.role),
            actor_agency: Some(meta.actor.agency.clone()),
            occurred_at: Some(occurred_at),
            received_at: Some(received_at),
            // What a retry with the same key must get back, committed with the events.
            idempotency: match (&meta.idempotency_key, &scope) {
                (Some(key), Some(scope)) => Some(Idempotency {
                    key: key.to_string(),
                    scope: scope.clone(),
                    request_hash: request_hash.clone(),
                    reply_status: status.as_u16(),
                    reply: answer.clone(),
                }),
                _ => None,
            },
        };
        match state
            .store
            .commit(case_id, events, context, &metadata)
            .await?
        {
            Commit::Done(committed) => {
                let version = committed
                    .last()
                    .map(|e| e.sequence as u64)
                    .unwrap_or_default();
                tracing::debug!(%case_id, command = command_name, version, "command accepted");
                return Ok(reply(status, answer, version));
            }
            Commit::Conflict => {
                tracing::debug!(%case_id, attempt, "concurrent append; retrying");
            }
        }
    }
    Err(ApiError::Conflict {
        code: "concurrency_conflict",
        message: "the case kept changing under this command; nothing was changed, try again".into(),
    })
}

/// The first answer to an earlier request with the same idempotency scope, if there was one:
/// `Ok(Some(Ok(..)))` to replay it, `Ok(Some(Err(..)))` when the key was used for another body.
async fn replay(
    state: &AppState,
    scope: Option<&str>,
    request_hash: &str,
) -> Result<Option<Result<Response, ApiError>>, ApiError> {
    let Some(scope) = scope else {
        return Ok(None);
    };
    let Some(earlier) = state.store.idempotent_reply(scope).await? else {
        return Ok(None);
    };
    if earlier.request_hash != request_hash {
        return Ok(Some(Err(ApiError::Conflict {
            code: "idempotency_key_reused",
            message: "this Idempotency-Key was used for a different request".into(),
        })));
    }
    let status = StatusCode::from_u16(earlier.status).unwrap_or(StatusCode::OK);
    Ok(Some(Ok(reply(status, earlier.reply, earlier.version))))
}

fn reply(status: StatusCode, mut answer: Value, version: u64) -> Response {
    if let Value::Object(m) = &mut answer {
        m.insert("version".into(), json!(version));
    }
    (status, Json(answer)).into_response()
}

/// The ids a command created, for its answer (the version is added at commit).
fn answer_for(events: &[CaseEvent]) -> Value {
    let mut m = serde_json::Map::new();
    for e in events {
        match e {
            CaseEvent::CaseOpened { case_id, .. } => {
                m.insert("case_id".into(), json!(case_id));
            }
            CaseEvent::ScreeningRecorded {
                screening_id,
                actionable_needs,
                ..
            } => {
                m.insert("screening_id".into(), json!(screening_id));
                m.insert("actionable_needs".into(), json!(actionable_needs));
            }
            CaseEvent::CarePlanRevised {
                plan_version,
                goals,
                ..
            } => {
                m.insert("plan_version".into(), json!(plan_version));
                let ids: Vec<_> = goals.iter().map(|g| g.goal_id).collect();
                m.insert("goal_ids".into(), json!(ids));
            }
            CaseEvent::ReferralSent { referral_id, .. } => {
                m.insert("referral_id".into(), json!(referral_id));
            }
            CaseEvent::AppointmentScheduled { appointment_id, .. } => {
                m.insert("appointment_id".into(), json!(appointment_id));
            }
            CaseEvent::ContactLogged { activity_id, .. } => {
                m.insert("activity_id".into(), json!(activity_id));
            }
            _ => {}
        }
    }
    Value::Object(m)
}

#[utoipa::path(post, path = "/v1/cases", tag = "cases",
    request_body = OpenCaseRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes a retry safe")),
    responses((status = 201, body = OpenCaseResponse), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(actor = %meta.actor.id))]
pub async fn open_case(
    State(state): State<AppState>,
    meta: CommandMeta,
    body: JsonBody<OpenCaseRequest>,
) -> Result<Response, ApiError> {
    let actor = meta.actor.clone();
    match actor.role {
        Role::Admin | Role::Supervisor => {}
        Role::CaseManager if body.value.assigned_to == actor.id => {}
        Role::CaseManager => {
            return Err(ApiError::forbidden(
                "case_not_allowed",
                "a case manager opens cases assigned to themselves; a supervisor assigns others",
            ))
        }
        role => {
            return Err(ApiError::forbidden(
                "role_not_allowed",
                format!("the {role} role may not open cases"),
            ))
        }
    }
    let case_id = match meta.idempotency_scope() {
        Some(scope) => CaseId::from_uuid(Uuid::new_v5(&CASE_ID_NAMESPACE, scope.as_bytes())),
        None => CaseId::generate(),
    };
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
            })
        },
    )
    .await
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
                ("Idempotency-Key" = Option<String>, Header, description = "makes a retry safe"),
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
           ("Idempotency-Key" = Option<String>, Header)),
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
           ("Idempotency-Key" = Option<String>, Header)),
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
    params(("case_id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
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
    execute(
        &state,
        meta,
        &body.raw,
        case_id,
        Target::Existing(Access::Command),
        StatusCode::CREATED,
        |_| {
            let (sequence, event_type) = found
                .clone()
                .ok_or(ApiError::Refused(aggregates::CaseError::EventNotFound))?;
            Ok(CaseAction::VoidEntry {
                target: VoidTarget {
                    event_id,
                    sequence,
                    event_type,
                },
                reason: body.value.reason.clone(),
            })
        },
    )
    .await
}
