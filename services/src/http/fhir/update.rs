//! `PUT /fhir/r4/Task/{id}`: the provider answers through the Task (HL7 BSeR). The provider's
//! system, with a `service` token bound to the referral's provider, sends the Task back with
//! `If-Match: W/"<versionId>"` and one step changed in its status, businessStatus,
//! statusReason or output; that step becomes the command `/v1` would run for it (accepted,
//! declined, scheduled or rescheduled, unattended = missed, event cancelled, event completed =
//! kept, completed), decided by the same aggregate, recorded as the provider's own report.
//!
//! The version check is exact under any interleaving: the Task's current version is folded
//! from the case's stored events, and the command runs only on the case state that fold saw
//! (a command that finds the case moved on is not run; the whole update is decided again).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use projections::fhir::{self as render, FhirCase};
use projections::log::LogEvent;
use schemas::fhir::{system, Resource, Task};
use schemas::wire::{AppointmentOutcomeRequest, ReferralStatusRequest, ScheduleAppointmentRequest};
use schemas::{
    AppointmentId, AppointmentOutcomeKind, AppointmentStatus, CaseId, MissedReason, ReferralId,
    ReferralOutcome, ReferralStatusUpdate, Role, StatusReason, Text,
};
use tracing::instrument;
use uuid::Uuid;

use super::{ok, sees, visible, FhirError};
use crate::auth::{Access, Caller};
use crate::command::{execute, CommandMeta, Target};
use crate::error::ApiError;
use crate::startup::AppState;

/// How often an update is decided again when the case moved between its fold and its command.
const ATTEMPTS: usize = 5;

/// The code the command pipeline is told to refuse with when the case it loads is not the one
/// the update was decided on; never answered.
const MOVED: &str = "case_moved_under_update";

#[instrument(skip_all, fields(id = %id))]
pub(super) async fn update_task(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FhirError> {
    let caller = caller?;
    if caller.0.role != Role::Service {
        return Err(ApiError::forbidden(
            "role_not_allowed",
            "a Task is updated by the provider's own system (a service token); staff record \
             statuses through /v1",
        )
        .into());
    }
    let not_found = || ApiError::not_found("not_found", "no resource with this id");
    let referral_id = ReferralId::parse(&id).map_err(|_| not_found())?;
    let expected = if_match(&headers)?;
    let wanted = match serde_json::from_slice::<Resource>(&body) {
        Ok(Resource::Task(task)) => task,
        Ok(_) => {
            return Err(ApiError::invalid("wrong_resource_type", "the body must be a Task").into())
        }
        Err(e) => {
            return Err(ApiError::bad_request(
                "malformed_resource",
                format!("the body is not a FHIR Task in JSON: {e}"),
            )
            .into())
        }
    };
    if wanted.id.as_deref() != Some(id.as_str()) {
        return Err(
            ApiError::invalid("id_mismatch", "the Task's id must be the id in the URL").into(),
        );
    }
    let filter = visible(&caller)?;
    let case_id = state
        .store
        .fhir_referral(referral_id)
        .await?
        .and_then(|s| s.case.opened.as_ref().map(|o| o.case_id))
        .ok_or_else(not_found)?;
    for _ in 0..ATTEMPTS {
        let folded = fold_case(&state, case_id).await?;
        if !sees(&filter, &folded, referral_id) {
            return Err(ApiError::forbidden(
                "case_not_allowed",
                "this referral is not sent to your provider",
            )
            .into());
        }
        let (task, version) = current(&folded, referral_id).ok_or_else(not_found)?;
        if version != expected {
            return Err(ApiError::PreconditionFailed {
                message: format!(
                    "the Task is at version {version}, not {expected}: read it again and \
                     reapply the change"
                ),
            }
            .into());
        }
        let Some(step) = plan(&folded, referral_id, &task, &wanted)? else {
            // Nothing changed: the Task as it stands.
            return Ok(ok(Resource::Task(task)));
        };
        let at_version = folded.case.version;
        let meta = CommandMeta {
            actor: caller.0.clone(),
            idempotency_key: None,
            correlation_id: Uuid::now_v7().to_string(),
            command_id: Uuid::now_v7(),
            route: "PUT /fhir/r4/Task/{id}".into(),
        };
        let today = state.clock.today_in(state.zones.of(folded.case.agency()));
        let ran = execute(
            &state,
            meta,
            &body,
            case_id,
            Target::Existing(Access::RecipientReport),
            StatusCode::OK,
            |case| {
                if case.version != at_version {
                    return Err(ApiError::Conflict {
                        code: MOVED,
                        message: String::new(),
                    });
                }
                Ok(step.action(referral_id, today))
            },
        )
        .await;
        match ran {
            Ok(_) => {
                let folded = fold_case(&state, case_id).await?;
                let (task, _) = current(&folded, referral_id).ok_or_else(not_found)?;
                return Ok(ok(Resource::Task(task)));
            }
            Err(ApiError::Conflict { code: MOVED, .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Conflict {
        code: "concurrency_conflict",
        message: "the case kept changing under this update; nothing was changed, try again".into(),
    }
    .into())
}

/// The version `If-Match` names: `W/"3"` or `"3"`.
fn if_match(headers: &HeaderMap) -> Result<u64, ApiError> {
    let value = headers
        .get(header::IF_MATCH)
        .ok_or(ApiError::PreconditionRequired)?
        .to_str()
        .unwrap_or_default()
        .trim();
    value
        .strip_prefix("W/")
        .unwrap_or(value)
        .trim_matches('"')
        .parse()
        .map_err(|_| {
            ApiError::bad_request(
                "malformed_if_match",
                "If-Match must be the Task's ETag, W/\"<versionId>\"",
            )
        })
}

/// The case's FHIR state folded from its stored events: what the projection holds once it has
/// caught up, read now.
async fn fold_case(state: &AppState, case_id: CaseId) -> Result<FhirCase, ApiError> {
    let events = super::case_log(state, case_id).await?;
    let refs: Vec<&LogEvent> = events.iter().collect();
    let mut folded = FhirCase::default();
    render::fold(&mut folded, &refs).map_err(super::unfoldable)?;
    Ok(folded)
}

fn current(folded: &FhirCase, id: ReferralId) -> Option<(Task, u64)> {
    let task = render::task(folded, id)?;
    let version = folded.referrals.get(&id)?.version;
    Some((task, version))
}

/// One step of the loop, as the command that records it.
enum Step {
    Status {
        status: ReferralStatusUpdate,
        outcome: Option<ReferralOutcome>,
        reason_code: Option<StatusReason>,
        /// `statusReason.text`: the case record's free-text reason.
        reason: Option<Text>,
    },
    Schedule {
        at: DateTime<Utc>,
    },
    Outcome {
        appointment: AppointmentId,
        outcome: AppointmentOutcomeKind,
        missed_reason: Option<MissedReason>,
        rescheduled_for: Option<DateTime<Utc>>,
    },
}

impl Step {
    fn action(&self, referral_id: ReferralId, today: chrono::NaiveDate) -> aggregates::CaseAction {
        use aggregates::CaseAction;
        match self {
            Step::Status {
                status,
                outcome,
                reason_code,
                reason,
            } => CaseAction::UpdateReferralStatus {
                referral_id,
                request: ReferralStatusRequest {
                    status: *status,
                    on: today,
                    reason: reason.clone(),
                    outcome: *outcome,
                    reason_code: *reason_code,
                    reported_by: None,
                },
            },
            Step::Schedule { at } => CaseAction::ScheduleAppointment {
                appointment_id: AppointmentId::generate(),
                request: ScheduleAppointmentRequest {
                    on: Some(today),
                    referral_id,
                    scheduled_for: *at,
                },
            },
            Step::Outcome {
                appointment,
                outcome,
                missed_reason,
                rescheduled_for,
            } => CaseAction::RecordAppointmentOutcome {
                appointment_id: *appointment,
                request: AppointmentOutcomeRequest {
                    outcome: *outcome,
                    on: today,
                    missed_reason: *missed_reason,
                    rescheduled_for: *rescheduled_for,
                },
            },
        }
    }
}

fn unchangeable() -> ApiError {
    ApiError::invalid(
        "field_not_changeable",
        "a recipient changes only status, businessStatus, statusReason and output; every other \
         element must be sent back as it was read",
    )
}

fn unsupported(detail: &str) -> ApiError {
    ApiError::invalid("unsupported_transition", detail.to_owned())
}

/// The times of `appointment-scheduled` outputs.
fn scheduled_times(task: &Task) -> Vec<DateTime<Utc>> {
    task.output
        .iter()
        .filter(|o| o.kind.code_in(system::TASK_OUTPUT) == Some("appointment-scheduled"))
        .filter_map(|o| o.value_date_time)
        .collect()
}

/// What the recipient's Task asks for, as one step from `current`; None when it asks for
/// nothing new.
fn plan(
    folded: &FhirCase,
    referral_id: ReferralId,
    current: &Task,
    wanted: &Task,
) -> Result<Option<Step>, ApiError> {
    // Everything but what a recipient may change must come back as it was read.
    let strip = |t: &Task| Task {
        meta: None,
        last_modified: None,
        status: String::new(),
        status_reason: None,
        business_status: None,
        output: vec![],
        ..t.clone()
    };
    if strip(current) != strip(wanted) {
        return Err(unchangeable());
    }
    let business = |t: &Task| {
        t.business_status
            .as_ref()
            .and_then(|b| b.code_in(system::BSER_BUSINESS_STATUS))
            .map(str::to_owned)
    };
    let (status, code) = (wanted.status.as_str(), business(wanted));
    let new_times: Vec<DateTime<Utc>> = {
        let mut known = scheduled_times(current);
        scheduled_times(wanted)
            .into_iter()
            .filter(|t| match known.iter().position(|k| k == t) {
                Some(i) => {
                    known.remove(i);
                    false
                }
                None => true,
            })
            .collect()
    };
    if status == current.status && code == business(current) && new_times.is_empty() {
        return Ok(None);
    }
    let reason_code = wanted
        .status_reason
        .as_ref()
        .and_then(|r| r.code_in(system::STATUS_REASON))
        .map(|c| {
            c.parse::<StatusReason>()
                .map_err(|e| ApiError::invalid("invalid_status_reason", e.to_string()))
        })
        .transpose()?;
    let reason = wanted
        .status_reason
        .as_ref()
        .and_then(|r| r.text.as_deref())
        .map(|t| {
            Text::parse(t).map_err(|e| ApiError::invalid("invalid_status_reason", e.to_string()))
        })
        .transpose()?;
    let outcome = wanted
        .output
        .iter()
        .find(|o| o.kind.code_in(system::TASK_OUTPUT) == Some("referral-outcome"))
        .and_then(|o| o.value_codeable_concept.as_ref())
        .and_then(|c| c.code_in(system::REFERRAL_OUTCOME))
        .map(|c| {
            c.parse::<ReferralOutcome>()
                .map_err(|e| ApiError::invalid("invalid_outcome", e.to_string()))
        })
        .transpose()?;
    let referral_status = |status| {
        Ok(Some(Step::Status {
            status,
            outcome,
            reason_code,
            reason: reason.clone(),
        }))
    };
    let latest = render::latest_appointment(&folded.case, referral_id);
    let on_latest = |outcome, missed_reason| {
        let a = latest.ok_or_else(|| unsupported("there is no appointment to report on"))?;
        Ok(Some(Step::Outcome {
            appointment: a.appointment_id,
            outcome,
            missed_reason,
            rescheduled_for: None,
        }))
    };
    match (status, code.as_deref()) {
        ("accepted", Some("3.0") | None) => referral_status(ReferralStatusUpdate::Accepted),
        ("rejected", Some("4.0") | None) => referral_status(ReferralStatusUpdate::Declined),
        ("completed", Some("7.0") | None) => referral_status(ReferralStatusUpdate::Completed),
        // The initiator's statuses: the aggregate refuses them to a provider, as on /v1.
        ("cancelled", _) => referral_status(ReferralStatusUpdate::Cancelled),
        (_, Some("5.2")) => referral_status(ReferralStatusUpdate::CancellationRequested),
        ("in-progress", Some("5.1.1")) => {
            let [at] = new_times[..] else {
                return Err(unsupported(
                    "to schedule or reschedule, add one appointment-scheduled output with its time",
                ));
            };
            // A scheduled, missed or cancelled appointment is rescheduled; after a kept one
            // (or none), a new one is made.
            match latest.filter(|a| a.status() != AppointmentStatus::Kept) {
                Some(a) => Ok(Some(Step::Outcome {
                    appointment: a.appointment_id,
                    outcome: AppointmentOutcomeKind::Rescheduled,
                    missed_reason: None,
                    rescheduled_for: Some(at),
                })),
                None => Ok(Some(Step::Schedule { at })),
            }
        }
        ("in-progress", Some("5.1.2")) => {
            on_latest(AppointmentOutcomeKind::Missed, Some(MissedReason::NoShow))
        }
        ("in-progress", Some("5.1.3")) => on_latest(
            AppointmentOutcomeKind::Cancelled,
            Some(MissedReason::ProviderCancelled),
        ),
        ("in-progress", Some("5.1.4")) => on_latest(AppointmentOutcomeKind::Kept, None),
        _ => Err(unsupported(
            "this status and businessStatus are not a step of the referral loop (see the \
             contract's FHIR mapping)",
        )),
    }
}
