//! The case as `GET /v1/cases/{case_id}` shows it: the Case aggregate's state, with voided
//! entries kept and marked (an auditor must see them), and referral statuses as BSeR names them.

use chrono::{DateTime, NaiveDate, Utc};
use schemas::instruments::RatingValue;
use schemas::*;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

use aggregates::Case;

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ChildView {
    pub given_name: PersonName,
    pub family_name: PersonName,
    pub birth_date: NaiveDate,
    pub medicaid_id: Option<MedicaidId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct GuardianView {
    pub name: PersonName,
    pub relationship: Option<Text>,
    pub phone: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ScreeningView {
    pub screening_id: ScreeningId,
    pub instrument: InstrumentKind,
    pub instrument_version: String,
    pub administered_on: NaiveDate,
    #[schema(value_type = Object)]
    pub ratings: BTreeMap<ItemCode, RatingValue>,
    pub actionable_needs: Vec<ItemCode>,
    pub voided: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct GoalView {
    pub goal_id: GoalId,
    pub description: Text,
    pub addresses: Vec<ItemCode>,
    pub target_date: Option<NaiveDate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DeferredNeedView {
    pub need: ItemCode,
    pub reason: Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CarePlanView {
    pub plan_version: u32,
    pub revised_on: NaiveDate,
    pub goals: Vec<GoalView>,
    pub deferred_needs: Vec<DeferredNeedView>,
    pub family_participated: bool,
    pub services_timeline: Option<Text>,
    pub reassess_by: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StatusChangeView {
    pub status: ReferralStatus,
    pub on: NaiveDate,
    pub reason: Option<Text>,
    /// The reason as a code: what subscribers to the bus see instead of `reason`.
    pub reason_code: Option<StatusReason>,
    pub voided: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ReferralView {
    pub referral_id: ReferralId,
    pub service_type: ServiceType,
    pub provider_id: ProviderId,
    pub provider_name: Option<Text>,
    pub reason: Text,
    pub goal_ids: Vec<GoalId>,
    pub urgency: Urgency,
    pub sent_on: NaiveDate,
    pub do_not_contact_subject: bool,
    pub status: ReferralStatus,
    pub outcome: Option<ReferralOutcome>,
    pub history: Vec<StatusChangeView>,
    pub voided: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AppointmentView {
    pub appointment_id: AppointmentId,
    pub referral_id: ReferralId,
    pub scheduled_for: DateTime<Utc>,
    pub status: AppointmentStatus,
    pub missed_reason: Option<MissedReason>,
    pub voided: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ContactView {
    pub activity_id: ActivityId,
    pub component: TcmComponent,
    pub contact_type: ContactType,
    pub with: Vec<Participant>,
    pub occurred_at: DateTime<Utc>,
    pub minutes: Minutes,
    pub note: Option<Text>,
    pub location: Option<Location>,
    pub voided: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ClosureView {
    pub kind: TransitionKind,
    pub reason: Text,
    pub effective_on: NaiveDate,
}

/// `GET /v1/cases/{case_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CaseView {
    pub case_id: CaseId,
    pub status: CaseStatus,
    pub program: Program,
    pub agency: AgencyId,
    pub assigned_to: Option<ActorId>,
    pub intake_date: NaiveDate,
    pub child: ChildView,
    pub guardians: Vec<GuardianView>,
    pub referral_source: Option<Text>,
    pub presenting_concerns: Vec<Text>,
    pub screenings: Vec<ScreeningView>,
    /// The plan in force (the newest revision that is not voided).
    pub care_plan: Option<CarePlanView>,
    pub care_plan_revisions: u32,
    pub referrals: Vec<ReferralView>,
    pub appointments: Vec<AppointmentView>,
    pub contacts: Vec<ContactView>,
    pub closure: Option<ClosureView>,
    pub version: u64,
}

impl CaseView {
    /// None when the case was never opened.
    pub fn from_case(case: &Case) -> Option<Self> {
        let o = case.opened.as_ref()?;
        Some(Self {
            case_id: o.case_id,
            status: case.status(),
            program: o.program,
            agency: o.agency.clone(),
            assigned_to: case.assigned_to.clone(),
            intake_date: o.intake_date,
            child: ChildView {
                given_name: o.child.given_name.clone(),
                family_name: o.child.family_name.clone(),
                birth_date: o.child.birth_date,
                medicaid_id: o.child.medicaid_id.clone(),
            },
            guardians: o
                .guardians
                .iter()
                .map(|g| GuardianView {
                    name: g.name.clone(),
                    relationship: g.relationship.clone(),
                    phone: g.phone.clone(),
                })
                .collect(),
            referral_source: o.referral_source.clone(),
            presenting_concerns: o.presenting_concerns.clone(),
            screenings: case
                .screenings
                .iter()
                .map(|s| ScreeningView {
                    screening_id: s.screening_id,
                    instrument: s.instrument,
                    instrument_version: s.instrument_version.clone(),
                    administered_on: s.administered_on,
                    ratings: s.ratings.clone(),
                    actionable_needs: s.actionable_needs.clone(),
                    voided: s.voided,
                })
                .collect(),
            care_plan: case.current_plan().map(|p| CarePlanView {
                plan_version: p.plan_version,
                revised_on: p.revised_on,
                goals: p
                    .goals
                    .iter()
                    .map(|g| GoalView {
                        goal_id: g.goal_id,
                        description: g.description.clone(),
                        addresses: g.addresses.clone(),
                        target_date: g.target_date,
                    })
                    .collect(),
                deferred_needs: p
                    .deferred_needs
                    .iter()
                    .map(|d| DeferredNeedView {
                        need: d.need.clone(),
                        reason: d.reason.clone(),
                    })
                    .collect(),
                family_participated: p.family_participated,
                services_timeline: p.services_timeline.clone(),
                reassess_by: p.reassess_by,
            }),
            care_plan_revisions: case.care_plans.len() as u32,
            referrals: case
                .referrals
                .iter()
                .map(|r| ReferralView {
                    referral_id: r.referral_id,
                    service_type: r.service_type.clone(),
                    provider_id: r.provider.id.clone(),
                    provider_name: r.provider.name.clone(),
                    reason: r.reason.clone(),
                    goal_ids: r.goal_ids.clone(),
                    urgency: r.urgency,
                    sent_on: r.sent_on,
                    do_not_contact_subject: r.do_not_contact_subject,
                    status: case.referral_status(r),
                    outcome: r.outcome,
                    history: r
                        .history
                        .iter()
                        .map(|c| StatusChangeView {
                            status: c.status,
                            on: c.on,
                            reason: c.reason.clone(),
                            reason_code: c.reason_code,
                            voided: c.voided,
                        })
                        .collect(),
                    voided: r.voided,
                })
                .collect(),
            appointments: case
                .appointments
                .iter()
                .map(|a| AppointmentView {
                    appointment_id: a.appointment_id,
                    referral_id: a.referral_id,
                    scheduled_for: a.scheduled_for(),
                    status: a.status(),
                    missed_reason: a
                        .history
                        .iter()
                        .rev()
                        .find(|c| !c.voided)
                        .and_then(|c| c.missed_reason),
                    voided: a.voided,
                })
                .collect(),
            contacts: case
                .contacts
                .iter()
                .map(|c| ContactView {
                    activity_id: c.activity_id,
                    component: c.component,
                    contact_type: c.contact_type,
                    with: c.with.clone(),
                    occurred_at: c.occurred_at,
                    minutes: c.minutes,
                    note: c.note.clone(),
                    location: c.location,
                    voided: c.voided,
                })
                .collect(),
            closure: case.closed.as_ref().map(|c| ClosureView {
                kind: c.kind,
                reason: c.reason.clone(),
                effective_on: c.effective_on,
            }),
            version: case.version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unopened_case_has_no_view() {
        assert!(CaseView::from_case(&Case::default()).is_none());
    }
}
