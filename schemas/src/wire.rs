//! HTTP wire types, exactly as `schemas/CONTRACT.md` names them. Request bodies refuse unknown fields;
//! their fields parse into domain newtypes, so a value that reaches a handler is already valid.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::instruments::RatingValue;
use crate::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChildIn {
    pub given_name: PersonName,
    pub family_name: PersonName,
    pub birth_date: NaiveDate,
    #[serde(default)]
    pub medicaid_id: Option<MedicaidId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardianIn {
    pub name: PersonName,
    #[serde(default)]
    pub relationship: Option<Text>,
    #[serde(default)]
    pub phone: Option<Text>,
}

/// `POST /v1/cases`: intake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenCaseRequest {
    pub program: Program,
    pub assigned_to: ActorId,
    pub intake_date: NaiveDate,
    pub child: ChildIn,
    #[serde(default)]
    pub guardians: Vec<GuardianIn>,
    #[serde(default)]
    pub referral_source: Option<Text>,
    #[serde(default)]
    pub presenting_concerns: Vec<Text>,
    /// Sent after a `409 possible_duplicate`, when the intake worker has checked that this child
    /// needs a case of its own anyway: why. The reason is kept with the case.
    #[serde(default)]
    pub duplicate_reviewed: Option<DuplicateReviewed>,
}

/// Why an intake goes ahead although an open case of the agency matches the child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DuplicateReviewed {
    pub reason: Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenCaseResponse {
    pub case_id: CaseId,
    pub version: u64,
}

/// `POST /v1/cases/{case_id}/assignment` (an addition to the contract): reassign the case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignCaseManagerRequest {
    pub assigned_to: ActorId,
    pub on: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordScreeningRequest {
    pub instrument: InstrumentKind,
    #[serde(default)]
    pub instrument_version: Option<String>,
    pub administered_on: NaiveDate,
    /// Item code to value: a score for rated items, an answer code for questions.
    pub ratings: BTreeMap<ItemCode, RatingValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecordScreeningResponse {
    pub screening_id: ScreeningId,
    pub actionable_needs: Vec<ItemCode>,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GoalIn {
    pub description: Text,
    #[serde(default)]
    pub addresses: Vec<ItemCode>,
    #[serde(default)]
    pub target_date: Option<NaiveDate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeferredNeedIn {
    pub need: ItemCode,
    pub reason: Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviseCarePlanRequest {
    #[schema(min_items = 1)]
    pub goals: Vec<GoalIn>,
    #[serde(default)]
    pub deferred_needs: Vec<DeferredNeedIn>,
    pub family_participated: bool,
    #[serde(default)]
    pub services_timeline: Option<Text>,
    pub reassess_by: NaiveDate,
    /// When the plan was revised with the family (an addition; defaults to the day received).
    #[serde(default)]
    pub revised_on: Option<NaiveDate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReviseCarePlanResponse {
    pub plan_version: u32,
    pub goal_ids: Vec<GoalId>,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderIn {
    pub id: ProviderId,
    #[serde(default)]
    pub name: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendReferralRequest {
    pub service_type: ServiceType,
    pub provider: ProviderIn,
    pub reason: Text,
    #[serde(default)]
    pub goal_ids: Vec<GoalId>,
    #[serde(default)]
    pub urgency: Option<Urgency>,
    pub sent_on: NaiveDate,
    #[serde(default)]
    pub do_not_contact_subject: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SendReferralResponse {
    pub referral_id: ReferralId,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferralStatusRequest {
    pub status: ReferralStatusUpdate,
    pub on: NaiveDate,
    #[serde(default)]
    pub reason: Option<Text>,
    /// Why the loop closed: with `declined`, `cancelled` or `completed` (required with
    /// `completed`); `connected` only with `completed`.
    #[serde(default)]
    pub outcome: Option<ReferralOutcome>,
    /// The reason as a code, with `declined`, `cancellation_requested`, `cancelled` or
    /// `completed`: what subscribers to the bus see instead of `reason`. When absent, the code
    /// the `outcome` implies; `other` for a decline or a cancellation request without either.
    #[serde(default)]
    pub reason_code: Option<StatusReason>,
    /// A recipient status (`accepted`, `declined`, `completed`) recorded by staff: which
    /// provider reported it and how. Not given when the provider's own system reports it.
    #[serde(default)]
    pub reported_by: Option<ReportedBy>,
}

/// Who reported a recipient status that staff recorded, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportedBy {
    pub provider_id: ProviderId,
    pub channel: ReportChannel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VersionResponse {
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleAppointmentRequest {
    /// When the appointment was made (defaults to the day received); not before the referral
    /// was accepted. An outcome cannot be dated before it.
    #[serde(default)]
    pub on: Option<NaiveDate>,
    pub referral_id: ReferralId,
    pub scheduled_for: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleAppointmentResponse {
    pub appointment_id: AppointmentId,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppointmentOutcomeRequest {
    pub outcome: AppointmentOutcomeKind,
    pub on: NaiveDate,
    #[serde(default)]
    pub missed_reason: Option<MissedReason>,
    #[serde(default)]
    pub rescheduled_for: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogContactRequest {
    pub component: TcmComponent,
    pub contact_type: ContactType,
    #[schema(min_items = 1)]
    pub with: Vec<Participant>,
    /// When it happened, with the offset the writer's clock had; the offset is kept with the
    /// event (the date of service is taken in the agency's time zone).
    pub occurred_at: DateTime<FixedOffset>,
    pub minutes: Minutes,
    #[serde(default)]
    pub note: Option<Text>,
    #[serde(default)]
    pub location: Option<Location>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogContactResponse {
    pub activity_id: ActivityId,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    pub kind: TransitionKind,
    pub reason: Text,
    pub effective_on: NaiveDate,
    #[serde(default)]
    pub open_referrals: Option<OpenReferralDisposition>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReopenRequest {
    pub reason: Text,
    pub on: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CorrectionRequest {
    pub voids_event_id: EventId,
    pub reason: Text,
}

/// The body of every refusal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code a program can branch on.
    pub code: String,
    /// What is wrong, for a person.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_refuse_unknown_fields() {
        let body = r#"{"reason":"moved","on":"2026-01-02","extra":1}"#;
        let e = serde_json::from_str::<ReopenRequest>(body).unwrap_err();
        assert!(e.to_string().starts_with("unknown field"), "{e}");
    }

    #[test]
    fn ratings_accept_scores_and_answers() {
        let body = r#"{"instrument":"prapare","administered_on":"2026-01-02",
            "ratings":{"se.stress":"somewhat","fh.household_size":"3"}}"#;
        let r: RecordScreeningRequest = serde_json::from_str(body).unwrap();
        assert_eq!(r.ratings.len(), 2);
        let body =
            r#"{"instrument":"cans","administered_on":"2026-01-02","ratings":{"bhn.anxiety":2}}"#;
        let r: RecordScreeningRequest = serde_json::from_str(body).unwrap();
        assert_eq!(r.ratings.values().next(), Some(&RatingValue::Score(2)));
    }
}
