//! Commands: imperative, each carrying everything the decision needs. The caller supplies new ids
//! and the time the command was received, so `Case::handle` stays deterministic.

use chrono::{DateTime, NaiveDate, Utc};
use schemas::wire::*;
use schemas::*;
use serde::{Deserialize, Serialize};

/// Who issues a command, as their token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub id: ActorId,
    pub role: Role,
    pub agency: AgencyId,
    /// The provider a `service` token speaks for (the receiving side of its referrals).
    #[serde(default)]
    pub provider: Option<ProviderId>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CaseCommand {
    pub actor: Actor,
    /// When the server received the command: the "now" of every date check.
    pub received_at: DateTime<Utc>,
    /// The case's agency's time zone: "today", and the date of an instant, are local there.
    pub zone: chrono_tz::Tz,
    pub action: CaseAction,
}

/// An event to void, as the store found it by id on this case.
#[derive(Debug, Clone, PartialEq)]
pub struct VoidTarget {
    pub event_id: EventId,
    pub sequence: u64,
    pub event_type: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CaseAction {
    OpenCase {
        case_id: CaseId,
        agency: AgencyId,
        request: OpenCaseRequest,
        /// Open cases of the agency that match the child (by Medicaid id, or by name and birth
        /// date), as the caller found them.
        possible_duplicates: Vec<CaseId>,
    },
    AssignCaseManager(AssignCaseManagerRequest),
    RecordScreening {
        screening_id: ScreeningId,
        request: RecordScreeningRequest,
    },
    ReviseCarePlan {
        /// One new id per goal in `request.goals`, in order.
        goal_ids: Vec<GoalId>,
        request: ReviseCarePlanRequest,
    },
    SendReferral {
        referral_id: ReferralId,
        request: SendReferralRequest,
    },
    UpdateReferralStatus {
        referral_id: ReferralId,
        request: ReferralStatusRequest,
    },
    ScheduleAppointment {
        appointment_id: AppointmentId,
        request: ScheduleAppointmentRequest,
    },
    RecordAppointmentOutcome {
        appointment_id: AppointmentId,
        request: AppointmentOutcomeRequest,
    },
    LogContact {
        activity_id: ActivityId,
        request: LogContactRequest,
    },
    TransitionCase(TransitionRequest),
    ReopenCase(ReopenRequest),
    VoidEntry {
        target: VoidTarget,
        reason: Text,
    },
}

impl CaseAction {
    /// The command's name, for logs and metadata.
    pub fn name(&self) -> &'static str {
        match self {
            CaseAction::OpenCase { .. } => "OpenCase",
            CaseAction::AssignCaseManager(_) => "AssignCaseManager",
            CaseAction::RecordScreening { .. } => "RecordScreening",
            CaseAction::ReviseCarePlan { .. } => "ReviseCarePlan",
            CaseAction::SendReferral { .. } => "SendReferral",
            CaseAction::UpdateReferralStatus { .. } => "UpdateReferralStatus",
            CaseAction::ScheduleAppointment { .. } => "ScheduleAppointment",
            CaseAction::RecordAppointmentOutcome { .. } => "RecordAppointmentOutcome",
            CaseAction::LogContact { .. } => "LogContact",
            CaseAction::TransitionCase(_) => "TransitionCase",
            CaseAction::ReopenCase(_) => "ReopenCase",
            CaseAction::VoidEntry { .. } => "VoidEntry",
        }
    }

    /// When the activity happened in the world (the envelope's occurred_at): the command's own
    /// service date, or `received_at` when it has none.
    pub fn occurred_at(&self, received_at: DateTime<Utc>) -> DateTime<Utc> {
        let day = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        let at = match self {
            CaseAction::OpenCase { request, .. } => day(request.intake_date),
            CaseAction::AssignCaseManager(r) => day(r.on),
            CaseAction::RecordScreening { request, .. } => day(request.administered_on),
            CaseAction::SendReferral { request, .. } => day(request.sent_on),
            CaseAction::UpdateReferralStatus { request, .. } => day(request.on),
            CaseAction::RecordAppointmentOutcome { request, .. } => day(request.on),
            CaseAction::LogContact { request, .. } => Some(request.occurred_at.to_utc()),
            CaseAction::TransitionCase(r) => day(r.effective_on),
            CaseAction::ReopenCase(r) => day(r.on),
            CaseAction::ReviseCarePlan { request, .. } => request.revised_on.and_then(day),
            CaseAction::ScheduleAppointment { request, .. } => request.on.and_then(day),
            CaseAction::VoidEntry { .. } => None,
        };
        at.unwrap_or(received_at)
    }
}
