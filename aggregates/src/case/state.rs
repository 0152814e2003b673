//! The Case's state, folded from its events, and the decisions that guard every command.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use schemas::instruments::{Catalog, RatingValue};
use schemas::*;
use serde::{Deserialize, Serialize};

use super::commands::*;
use super::error::CaseError;
use super::events::*;

/// What a command handler may consult besides the case itself.
#[derive(Debug, Clone)]
pub struct CaseServices {
    pub instruments: Arc<Catalog>,
}

/// How far ahead of the server's clock a reported time may be (device clocks drift).
const CLOCK_SKEW: Duration = Duration::minutes(5);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Screening {
    pub screening_id: ScreeningId,
    pub instrument: InstrumentKind,
    pub instrument_version: String,
    pub administered_on: NaiveDate,
    pub ratings: BTreeMap<ItemCode, RatingValue>,
    pub actionable_needs: Vec<ItemCode>,
    pub voided: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CarePlan {
    pub plan_version: u32,
    pub revised_on: NaiveDate,
    pub goals: Vec<Goal>,
    pub deferred_needs: Vec<DeferredNeed>,
    pub family_participated: bool,
    pub services_timeline: Option<Text>,
    pub reassess_by: NaiveDate,
    pub voided: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    pub sequence: u64,
    pub status: ReferralStatus,
    pub on: NaiveDate,
    pub reason: Option<Text>,
    pub voided: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Referral {
    pub referral_id: ReferralId,
    pub service_type: ServiceType,
    pub provider: Provider,
    pub reason: Text,
    pub goal_ids: Vec<GoalId>,
    pub urgency: Urgency,
    pub sent_on: NaiveDate,
    pub do_not_contact_subject: bool,
    pub outcome: Option<ReferralOutcome>,
    /// Status changes after `sent`, oldest first; voided ones stay, marked.
    pub history: Vec<StatusChange>,
    pub voided: bool,
}

impl Referral {
    /// The BSeR base status: the latest live status change, or `sent`.
    pub fn base_status(&self) -> ReferralStatus {
        self.history
            .iter()
            .rev()
            .find(|c| !c.voided)
            .map(|c| c.status)
            .unwrap_or(ReferralStatus::Sent)
    }

    pub fn is_open(&self) -> bool {
        !self.voided && !self.base_status().is_terminal()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppointmentChange {
    pub sequence: u64,
    pub status: AppointmentStatus,
    pub scheduled_for: DateTime<Utc>,
    pub on: NaiveDate,
    pub missed_reason: Option<MissedReason>,
    pub voided: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Appointment {
    pub appointment_id: AppointmentId,
    pub referral_id: ReferralId,
    pub first_scheduled_for: DateTime<Utc>,
    /// Outcomes and reschedules, oldest first.
    pub history: Vec<AppointmentChange>,
    pub voided: bool,
}

impl Appointment {
    fn latest(&self) -> Option<&AppointmentChange> {
        self.history.iter().rev().find(|c| !c.voided)
    }
    pub fn status(&self) -> AppointmentStatus {
        self.latest()
            .map(|c| c.status)
            .unwrap_or(AppointmentStatus::Scheduled)
    }
    pub fn scheduled_for(&self) -> DateTime<Utc> {
        self.latest()
            .map(|c| c.scheduled_for)
            .unwrap_or(self.first_scheduled_for)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Closure {
    pub kind: TransitionKind,
    pub reason: Text,
    pub effective_on: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opened {
    pub case_id: CaseId,
    pub agency: AgencyId,
    pub program: Program,
    pub intake_date: NaiveDate,
    pub child: Child,
    pub guardians: Vec<Guardian>,
    pub referral_source: Option<Text>,
    pub presenting_concerns: Vec<Text>,
}

/// What the event at a sequence number did, so that voiding it can undo exactly that.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EntryRef {
    Screening(ScreeningId),
    CarePlan(u32),
    ReferralSent(ReferralId),
    ReferralStatus(ReferralId),
    AppointmentScheduled(AppointmentId),
    AppointmentChange(AppointmentId),
    Contact(ActivityId),
    /// Intake, assignment, transition, reopening and voids themselves are never voided.
    Fixed(String),
    Voided(u64),
}

/// The Case aggregate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// How many events have been applied: the stream's sequence number.
    pub version: u64,
    pub opened: Option<Opened>,
    pub assigned_to: Option<ActorId>,
    pub closed: Option<Closure>,
    pub reopened_on: Option<NaiveDate>,
    pub screenings: Vec<Screening>,
    pub care_plans: Vec<CarePlan>,
    pub referrals: Vec<Referral>,
    pub appointments: Vec<Appointment>,
    pub contacts: Vec<Contact>,
    /// One entry per applied event, by sequence number.
    pub entries: BTreeMap<u64, EntryRef>,
}

impl Case {
    pub fn exists(&self) -> bool {
        self.opened.is_some()
    }

    pub fn status(&self) -> CaseStatus {
        if self.closed.is_some() {
            CaseStatus::Closed
        } else {
            CaseStatus::Open
        }
    }

    pub fn agency(&self) -> Option<&AgencyId> {
        self.opened.as_ref().map(|o| &o.agency)
    }

    /// The newest live CANS screening.
    pub fn latest_cans(&self) -> Option<&Screening> {
        self.screenings
            .iter()
            .filter(|s| !s.voided && s.instrument == InstrumentKind::Cans)
            .max_by_key(|s| {
                (
                    s.administered_on,
                    self.screenings.iter().position(|x| x == *s),
                )
            })
    }

    /// The care plan in force: the newest live revision.
    pub fn current_plan(&self) -> Option<&CarePlan> {
        self.care_plans.iter().rev().find(|p| !p.voided)
    }

    pub fn referral(&self, id: ReferralId) -> Option<&Referral> {
        self.referrals
            .iter()
            .find(|r| r.referral_id == id && !r.voided)
    }

    fn referral_mut(&mut self, id: ReferralId) -> Option<&mut Referral> {
        self.referrals.iter_mut().find(|r| r.referral_id == id)
    }

    pub fn appointment(&self, id: AppointmentId) -> Option<&Appointment> {
        self.appointments
            .iter()
            .find(|a| a.appointment_id == id && !a.voided)
    }

    fn appointment_mut(&mut self, id: AppointmentId) -> Option<&mut Appointment> {
        self.appointments
            .iter_mut()
            .find(|a| a.appointment_id == id)
    }

    /// A referral's status as clients see it: BSeR's Event Scheduled when an accepted referral
    /// has a live appointment.
    pub fn referral_status(&self, r: &Referral) -> ReferralStatus {
        let base = r.base_status();
        if base == ReferralStatus::Accepted
            && self
                .appointments
                .iter()
                .any(|a| !a.voided && a.referral_id == r.referral_id)
        {
            ReferralStatus::Scheduled
        } else {
            base
        }
    }

    pub fn open_referrals(&self) -> impl Iterator<Item = &Referral> {
        self.referrals.iter().filter(|r| r.is_open())
    }

    fn opened(&self) -> Result<&Opened, CaseError> {
        self.opened.as_ref().ok_or(CaseError::CaseNotFound)
    }

    /// A command other than reopen needs an existing, open case.
    fn open_case(&self) -> Result<&Opened, CaseError> {
        let o = self.opened()?;
        if self.closed.is_some() {
            return Err(CaseError::CaseClosed);
        }
        Ok(o)
    }
}

/// Date checks shared by every command: nothing in the future, nothing before intake.
struct Dates {
    today: NaiveDate,
    now: DateTime<Utc>,
    intake: NaiveDate,
}

impl Dates {
    fn past(&self, field: &'static str, date: NaiveDate) -> Result<(), CaseError> {
        if date > self.today {
            return Err(CaseError::DateInFuture { field, date });
        }
        if date < self.intake {
            return Err(CaseError::DateBeforeIntake {
                field,
                date,
                intake: self.intake,
            });
        }
        Ok(())
    }

    fn past_instant(&self, field: &'static str, at: DateTime<Utc>) -> Result<(), CaseError> {
        if at > self.now + CLOCK_SKEW {
            return Err(CaseError::DateInFuture {
                field,
                date: at.date_naive(),
            });
        }
        self.past(field, at.date_naive().min(self.today))
    }

    /// A date that may lie ahead (an appointment, a target) but not before intake.
    fn not_before_intake(&self, field: &'static str, date: NaiveDate) -> Result<(), CaseError> {
        if date < self.intake {
            return Err(CaseError::DateBeforeIntake {
                field,
                date,
                intake: self.intake,
            });
        }
        Ok(())
    }
}

fn required(reason: &Option<Text>, what: &'static str) -> Result<Text, CaseError> {
    reason.clone().ok_or(CaseError::ReasonRequired(what))
}

impl Case {
    fn decide(
        &self,
        command: CaseCommand,
        services: &CaseServices,
    ) -> Result<Vec<CaseEvent>, CaseError> {
        let now = command.received_at;
        let today = now.date_naive();
        if let CaseAction::OpenCase {
            case_id,
            agency,
            request,
        } = command.action
        {
            if self.exists() {
                return Err(CaseError::CaseAlreadyExists);
            }
            if request.intake_date > today {
                return Err(CaseError::DateInFuture {
                    field: "intake_date",
                    date: request.intake_date,
                });
            }
            if request.child.birth_date > request.intake_date {
                return Err(CaseError::DateOutOfOrder {
                    field: "intake_date",
                    date: request.intake_date,
                    after: request.child.birth_date,
                });
            }
            let c = request.child;
            return Ok(vec![
                CaseEvent::CaseOpened {
                    case_id,
                    agency,
                    program: request.program,
                    intake_date: request.intake_date,
                    child: Child {
                        given_name: c.given_name,
                        family_name: c.family_name,
                        birth_date: c.birth_date,
                        medicaid_id: c.medicaid_id,
                    },
                    guardians: request
                        .guardians
                        .into_iter()
                        .map(|g| Guardian {
                            name: g.name,
                            relationship: g.relationship,
                            phone: g.phone,
                        })
                        .collect(),
                    referral_source: request.referral_source,
                    presenting_concerns: request.presenting_concerns,
                },
                CaseEvent::CaseManagerAssigned {
                    case_manager: request.assigned_to,
                    effective_on: request.intake_date,
                },
            ]);
        }

        if let CaseAction::ReopenCase(r) = &command.action {
            self.opened()?;
            let Some(closed) = &self.closed else {
                return Err(CaseError::CaseNotClosed);
            };
            if r.on > today {
                return Err(CaseError::DateInFuture {
                    field: "on",
                    date: r.on,
                });
            }
            if r.on < closed.effective_on {
                return Err(CaseError::DateOutOfOrder {
                    field: "on",
                    date: r.on,
                    after: closed.effective_on,
                });
            }
            return Ok(vec![CaseEvent::CaseReopened {
                reason: r.reason.clone(),
                on: r.on,
            }]);
        }

        let opened = self.open_case()?;
        let dates = Dates {
            today,
            now,
            intake: opened.intake_date,
        };

        let event = match command.action {
            CaseAction::OpenCase { .. } | CaseAction::ReopenCase(_) => {
                unreachable!("handled above")
            }
            CaseAction::AssignCaseManager(r) => {
                dates.past("on", r.on)?;
                if self.assigned_to.as_ref() == Some(&r.assigned_to) {
                    return Err(CaseError::AlreadyAssigned(r.assigned_to.to_string()));
                }
                CaseEvent::CaseManagerAssigned {
                    case_manager: r.assigned_to,
                    effective_on: r.on,
                }
            }
            CaseAction::RecordScreening {
                screening_id,
                request: r,
            } => {
                dates.past("administered_on", r.administered_on)?;
                let instrument = services
                    .instruments
                    .get(r.instrument, r.instrument_version.as_deref())
                    .map_err(|e| CaseError::UnknownInstrument(e.to_string()))?;
                let actionable_needs = instrument
                    .check(&r.ratings)
                    .map_err(CaseError::InvalidRatings)?;
                CaseEvent::ScreeningRecorded {
                    screening_id,
                    instrument: r.instrument,
                    instrument_version: instrument.version.clone(),
                    administered_on: r.administered_on,
                    ratings: r.ratings,
                    actionable_needs,
                }
            }
            CaseAction::ReviseCarePlan {
                goal_ids,
                request: r,
            } => {
                if r.goals.is_empty() {
                    return Err(CaseError::NoGoals);
                }
                let revised_on = r.revised_on.unwrap_or(today);
                dates.past("revised_on", revised_on)?;
                if r.reassess_by <= revised_on {
                    return Err(CaseError::DateOutOfOrder {
                        field: "reassess_by",
                        date: r.reassess_by,
                        after: revised_on,
                    });
                }
                let cans = services
                    .instruments
                    .get(
                        InstrumentKind::Cans,
                        self.latest_cans().map(|s| s.instrument_version.as_str()),
                    )
                    .map_err(|e| CaseError::UnknownInstrument(e.to_string()))?;
                let mut unknown: Vec<ItemCode> = r
                    .goals
                    .iter()
                    .flat_map(|g| g.addresses.iter())
                    .chain(r.deferred_needs.iter().map(|d| &d.need))
                    .filter(|code| cans.item(code.as_str()).is_none())
                    .cloned()
                    .collect();
                if !unknown.is_empty() {
                    unknown.dedup();
                    return Err(CaseError::UnknownItems(unknown));
                }
                let latest = self.latest_cans();
                let unaddressed: Vec<ItemCode> = latest
                    .map(|s| s.actionable_needs.as_slice())
                    .unwrap_or_default()
                    .iter()
                    .filter(|need| {
                        !r.goals.iter().any(|g| g.addresses.contains(need))
                            && !r.deferred_needs.iter().any(|d| &d.need == *need)
                    })
                    .cloned()
                    .collect();
                if !unaddressed.is_empty() {
                    return Err(CaseError::UnaddressedNeeds(unaddressed));
                }
                let plan_version = self.care_plans.len() as u32 + 1;
                CaseEvent::CarePlanRevised {
                    plan_version,
                    revised_on,
                    goals: r
                        .goals
                        .into_iter()
                        .zip(goal_ids)
                        .map(|(g, goal_id)| Goal {
                            goal_id,
                            description: g.description,
                            addresses: g.addresses,
                            target_date: g.target_date,
                        })
                        .collect(),
                    deferred_needs: r
                        .deferred_needs
                        .into_iter()
                        .map(|d| DeferredNeed {
                            need: d.need,
                            reason: d.reason,
                        })
                        .collect(),
                    family_participated: r.family_participated,
                    services_timeline: r.services_timeline,
                    reassess_by: r.reassess_by,
                    based_on_screening: latest.map(|s| s.screening_id),
                }
            }
            CaseAction::SendReferral {
                referral_id,
                request: r,
            } => {
                dates.past("sent_on", r.sent_on)?;
                let plan_goals: Vec<GoalId> = self
                    .current_plan()
                    .map(|p| p.goals.iter().map(|g| g.goal_id).collect())
                    .unwrap_or_default();
                if r.goal_ids.iter().any(|g| !plan_goals.contains(g)) {
                    return Err(CaseError::UnknownGoal);
                }
                CaseEvent::ReferralSent {
                    referral_id,
                    service_type: r.service_type,
                    provider: Provider {
                        id: r.provider.id,
                        name: r.provider.name,
                    },
                    reason: r.reason,
                    goal_ids: r.goal_ids,
                    urgency: r.urgency.unwrap_or(Urgency::Routine),
                    sent_on: r.sent_on,
                    do_not_contact_subject: r.do_not_contact_subject,
                }
            }
            CaseAction::UpdateReferralStatus {
                referral_id,
                request: r,
            } => {
                let referral = self
                    .referral(referral_id)
                    .ok_or(CaseError::ReferralNotFound)?;
                dates.past("on", r.on)?;
                if r.on < referral.sent_on {
                    return Err(CaseError::DateOutOfOrder {
                        field: "on",
                        date: r.on,
                        after: referral.sent_on,
                    });
                }
                let from = referral.base_status();
                if from.is_terminal() {
                    return Err(CaseError::ReferralTerminal(from));
                }
                if r.outcome.is_some() && r.status != ReferralStatusUpdate::Completed {
                    return Err(CaseError::OutcomeNotAllowed);
                }
                use ReferralStatus as S;
                use ReferralStatusUpdate as U;
                let allowed = match r.status {
                    U::Accepted | U::Declined => from == S::Sent,
                    U::CancellationRequested => matches!(from, S::Sent | S::Accepted),
                    U::Cancelled => from == S::CancellationRequested,
                    U::Completed => from == S::Accepted,
                };
                if !allowed {
                    return Err(CaseError::InvalidReferralTransition {
                        from: self.referral_status(referral),
                        to: r.status,
                    });
                }
                match r.status {
                    U::Accepted => CaseEvent::ReferralAccepted {
                        referral_id,
                        on: r.on,
                    },
                    U::Declined => CaseEvent::ReferralDeclined {
                        referral_id,
                        on: r.on,
                        reason: required(&r.reason, "a declined referral")?,
                    },
                    U::CancellationRequested => CaseEvent::ReferralCancellationRequested {
                        referral_id,
                        on: r.on,
                        reason: required(&r.reason, "a cancellation request")?,
                    },
                    U::Cancelled => CaseEvent::ReferralCancelled {
                        referral_id,
                        on: r.on,
                        reason: r.reason,
                    },
                    U::Completed => CaseEvent::ReferralCompleted {
                        referral_id,
                        on: r.on,
                        outcome: r.outcome.ok_or(CaseError::OutcomeRequired)?,
                        reason: r.reason,
                    },
                }
            }
            CaseAction::ScheduleAppointment {
                appointment_id,
                request: r,
            } => {
                let referral = self
                    .referral(r.referral_id)
                    .ok_or(CaseError::ReferralNotFound)?;
                let status = referral.base_status();
                if status.is_terminal() {
                    return Err(CaseError::ReferralTerminal(status));
                }
                if status != ReferralStatus::Accepted {
                    return Err(CaseError::ReferralNotAccepted(status));
                }
                dates.not_before_intake("scheduled_for", r.scheduled_for.date_naive())?;
                CaseEvent::AppointmentScheduled {
                    appointment_id,
                    referral_id: r.referral_id,
                    scheduled_for: r.scheduled_for,
                }
            }
            CaseAction::RecordAppointmentOutcome {
                appointment_id,
                request: r,
            } => {
                let appt = self
                    .appointment(appointment_id)
                    .ok_or(CaseError::AppointmentNotFound)?;
                dates.past("on", r.on)?;
                let status = appt.status();
                let due = appt.scheduled_for().date_naive();
                use AppointmentOutcomeKind as K;
                if r.missed_reason.is_some() && !matches!(r.outcome, K::Missed | K::Cancelled) {
                    return Err(CaseError::FieldNotAllowed(
                        "missed_reason",
                        "missed or cancelled",
                    ));
                }
                if r.rescheduled_for.is_some() && r.outcome != K::Rescheduled {
                    return Err(CaseError::FieldNotAllowed("rescheduled_for", "rescheduled"));
                }
                let reschedulable = matches!(
                    status,
                    AppointmentStatus::Scheduled | AppointmentStatus::Missed
                );
                match r.outcome {
                    K::Rescheduled if !reschedulable => {
                        return Err(CaseError::AppointmentOutcomeAlreadyRecorded(status))
                    }
                    K::Kept | K::Missed | K::Cancelled
                        if status != AppointmentStatus::Scheduled =>
                    {
                        return Err(CaseError::AppointmentOutcomeAlreadyRecorded(status))
                    }
                    _ => {}
                }
                match r.outcome {
                    K::Kept | K::Missed if r.on < due => {
                        return Err(CaseError::AppointmentNotYetDue {
                            outcome: r.outcome.as_str(),
                            scheduled_for: due,
                            on: r.on,
                        })
                    }
                    _ => {}
                }
                match r.outcome {
                    K::Kept => CaseEvent::AppointmentKept {
                        appointment_id,
                        on: r.on,
                    },
                    K::Missed => CaseEvent::AppointmentMissed {
                        appointment_id,
                        on: r.on,
                        missed_reason: r.missed_reason.ok_or(CaseError::MissedReasonRequired)?,
                    },
                    K::Cancelled => CaseEvent::AppointmentCancelled {
                        appointment_id,
                        on: r.on,
                        cancelled_by: r.missed_reason,
                    },
                    K::Rescheduled => {
                        let to = r.rescheduled_for.ok_or(CaseError::RescheduledForRequired)?;
                        dates.not_before_intake("rescheduled_for", to.date_naive())?;
                        CaseEvent::AppointmentRescheduled {
                            appointment_id,
                            on: r.on,
                            rescheduled_for: to,
                        }
                    }
                }
            }
            CaseAction::LogContact {
                activity_id,
                request: r,
            } => {
                dates.past_instant("occurred_at", r.occurred_at)?;
                if r.with.is_empty() {
                    return Err(CaseError::NoParticipants);
                }
                let mut with = r.with;
                with.sort();
                with.dedup();
                CaseEvent::ContactLogged {
                    activity_id,
                    component: r.component,
                    contact_type: r.contact_type,
                    with,
                    occurred_at: r.occurred_at,
                    minutes: r.minutes,
                    note: r.note,
                    location: r.location,
                }
            }
            CaseAction::TransitionCase(r) => {
                dates.past("effective_on", r.effective_on)?;
                if let Some(reopened) = self.reopened_on {
                    if r.effective_on < reopened {
                        return Err(CaseError::DateOutOfOrder {
                            field: "effective_on",
                            date: r.effective_on,
                            after: reopened,
                        });
                    }
                }
                let open: Vec<ReferralId> = self.open_referrals().map(|r| r.referral_id).collect();
                let (cancelled, carried) = match (r.open_referrals, open.is_empty()) {
                    (_, true) => (vec![], vec![]),
                    (None, false) => return Err(CaseError::OpenReferralsNeedDisposition),
                    (Some(OpenReferralDisposition::Cancel), false) => (open, vec![]),
                    (Some(OpenReferralDisposition::CarryOver), false) => (vec![], open),
                };
                CaseEvent::CaseTransitioned {
                    kind: r.kind,
                    reason: r.reason,
                    effective_on: r.effective_on,
                    open_referrals: r.open_referrals,
                    cancelled_referrals: cancelled,
                    carried_over_referrals: carried,
                }
            }
            CaseAction::VoidEntry { target, reason } => self.decide_void(target, reason)?,
        };
        Ok(vec![event])
    }

    fn decide_void(&self, target: VoidTarget, reason: Text) -> Result<CaseEvent, CaseError> {
        let entry = self
            .entries
            .get(&target.sequence)
            .ok_or(CaseError::EventNotFound)?;
        let voided_already = self
            .entries
            .values()
            .any(|e| *e == EntryRef::Voided(target.sequence));
        if voided_already {
            return Err(CaseError::AlreadyVoided);
        }
        match entry {
            EntryRef::Fixed(kind) => return Err(CaseError::NotVoidable(kind.clone())),
            EntryRef::Voided(_) => return Err(CaseError::NotVoidable("EntryVoided".into())),
            EntryRef::ReferralSent(id) => {
                let r = self.referral(*id).ok_or(CaseError::AlreadyVoided)?;
                let has_appt = self
                    .appointments
                    .iter()
                    .any(|a| !a.voided && a.referral_id == *id);
                if r.history.iter().any(|c| !c.voided) || has_appt {
                    return Err(CaseError::LaterEntryDepends);
                }
            }
            EntryRef::ReferralStatus(id) => {
                let r = self.referral(*id).ok_or(CaseError::LaterEntryDepends)?;
                let latest = r.history.iter().rev().find(|c| !c.voided);
                if latest.map(|c| c.sequence) != Some(target.sequence) {
                    return Err(CaseError::LaterEntryDepends);
                }
            }
            EntryRef::AppointmentScheduled(id) => {
                let a = self.appointment(*id).ok_or(CaseError::AlreadyVoided)?;
                if a.history.iter().any(|c| !c.voided) {
                    return Err(CaseError::LaterEntryDepends);
                }
            }
            EntryRef::AppointmentChange(id) => {
                let a = self.appointment(*id).ok_or(CaseError::LaterEntryDepends)?;
                if a.latest().map(|c| c.sequence) != Some(target.sequence) {
                    return Err(CaseError::LaterEntryDepends);
                }
            }
            EntryRef::Screening(_) | EntryRef::CarePlan(_) | EntryRef::Contact(_) => {}
        }
        Ok(CaseEvent::EntryVoided {
            voided_event_id: target.event_id,
            voided_sequence: target.sequence,
            voided_event_type: target.event_type,
            reason,
        })
    }
}

impl Aggregate for Case {
    const TYPE: &'static str = "Case";
    type Command = CaseCommand;
    type Event = CaseEvent;
    type Error = CaseError;
    type Services = CaseServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        // Decide first, against the unchanged state; only then write (EventSink::write applies).
        let events = self.decide(command, services)?;
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.version += 1;
        let seq = self.version;
        let entry = match event {
            CaseEvent::CaseOpened {
                case_id,
                agency,
                program,
                intake_date,
                child,
                guardians,
                referral_source,
                presenting_concerns,
            } => {
                self.opened = Some(Opened {
                    case_id,
                    agency,
                    program,
                    intake_date,
                    child,
                    guardians,
                    referral_source,
                    presenting_concerns,
                });
                EntryRef::Fixed("CaseOpened".into())
            }
            CaseEvent::CaseManagerAssigned { case_manager, .. } => {
                self.assigned_to = Some(case_manager);
                EntryRef::Fixed("CaseManagerAssigned".into())
            }
            CaseEvent::ScreeningRecorded {
                screening_id,
                instrument,
                instrument_version,
                administered_on,
                ratings,
                actionable_needs,
            } => {
                self.screenings.push(Screening {
                    screening_id,
                    instrument,
                    instrument_version,
                    administered_on,
                    ratings,
                    actionable_needs,
                    voided: false,
                });
                EntryRef::Screening(screening_id)
            }
            CaseEvent::CarePlanRevised {
                plan_version,
                revised_on,
                goals,
                deferred_needs,
                family_participated,
                services_timeline,
                reassess_by,
                ..
            } => {
                self.care_plans.push(CarePlan {
                    plan_version,
                    revised_on,
                    goals,
                    deferred_needs,
                    family_participated,
                    services_timeline,
                    reassess_by,
                    voided: false,
                });
                EntryRef::CarePlan(plan_version)
            }
            CaseEvent::ReferralSent {
                referral_id,
                service_type,
                provider,
                reason,
                goal_ids,
                urgency,
                sent_on,
                do_not_contact_subject,
            } => {
                self.referrals.push(Referral {
                    referral_id,
                    service_type,
                    provider,
                    reason,
                    goal_ids,
                    urgency,
                    sent_on,
                    do_not_contact_subject,
                    outcome: None,
                    history: vec![],
                    voided: false,
                });
                EntryRef::ReferralSent(referral_id)
            }
            CaseEvent::ReferralAccepted { referral_id, on } => {
                self.push_status(seq, referral_id, ReferralStatus::Accepted, on, None)
            }
            CaseEvent::ReferralDeclined {
                referral_id,
                on,
                reason,
            } => self.push_status(seq, referral_id, ReferralStatus::Declined, on, Some(reason)),
            CaseEvent::ReferralCancellationRequested {
                referral_id,
                on,
                reason,
            } => self.push_status(
                seq,
                referral_id,
                ReferralStatus::CancellationRequested,
                on,
                Some(reason),
            ),
            CaseEvent::ReferralCancelled {
                referral_id,
                on,
                reason,
            } => self.push_status(seq, referral_id, ReferralStatus::Cancelled, on, reason),
            CaseEvent::ReferralCompleted {
                referral_id,
                on,
                outcome,
                reason,
            } => {
                if let Some(r) = self.referral_mut(referral_id) {
                    r.outcome = Some(outcome);
                }
                self.push_status(seq, referral_id, ReferralStatus::Completed, on, reason)
            }
            CaseEvent::AppointmentScheduled {
                appointment_id,
                referral_id,
                scheduled_for,
            } => {
                self.appointments.push(Appointment {
                    appointment_id,
                    referral_id,
                    first_scheduled_for: scheduled_for,
                    history: vec![],
                    voided: false,
                });
                EntryRef::AppointmentScheduled(appointment_id)
            }
            CaseEvent::AppointmentKept { appointment_id, on } => {
                self.push_appt(seq, appointment_id, AppointmentStatus::Kept, on, None, None)
            }
            CaseEvent::AppointmentMissed {
                appointment_id,
                on,
                missed_reason,
            } => self.push_appt(
                seq,
                appointment_id,
                AppointmentStatus::Missed,
                on,
                Some(missed_reason),
                None,
            ),
            CaseEvent::AppointmentCancelled {
                appointment_id,
                on,
                cancelled_by,
            } => self.push_appt(
                seq,
                appointment_id,
                AppointmentStatus::Cancelled,
                on,
                cancelled_by,
                None,
            ),
            CaseEvent::AppointmentRescheduled {
                appointment_id,
                on,
                rescheduled_for,
            } => self.push_appt(
                seq,
                appointment_id,
                AppointmentStatus::Scheduled,
                on,
                None,
                Some(rescheduled_for),
            ),
            CaseEvent::ContactLogged {
                activity_id,
                component,
                contact_type,
                with,
                occurred_at,
                minutes,
                note,
                location,
            } => {
                self.contacts.push(Contact {
                    activity_id,
                    component,
                    contact_type,
                    with,
                    occurred_at,
                    minutes,
                    note,
                    location,
                    voided: false,
                });
                EntryRef::Contact(activity_id)
            }
            CaseEvent::CaseTransitioned {
                kind,
                reason,
                effective_on,
                cancelled_referrals,
                ..
            } => {
                for id in cancelled_referrals {
                    self.push_status(
                        seq,
                        id,
                        ReferralStatus::Cancelled,
                        effective_on,
                        Some(reason.clone()),
                    );
                }
                self.closed = Some(Closure {
                    kind,
                    reason,
                    effective_on,
                });
                EntryRef::Fixed("CaseTransitioned".into())
            }
            CaseEvent::CaseReopened { on, .. } => {
                self.closed = None;
                self.reopened_on = Some(on);
                EntryRef::Fixed("CaseReopened".into())
            }
            CaseEvent::EntryVoided {
                voided_sequence, ..
            } => {
                self.undo(voided_sequence);
                EntryRef::Voided(voided_sequence)
            }
        };
        self.entries.insert(seq, entry);
    }
}

impl Case {
    /// Applies the event stored at `sequence`. Identical to `apply` on a whole stream; on a
    /// subset (history as of a service date) it keeps entries keyed by their stream sequence, so
    /// a later `EntryVoided` still finds the entry it names.
    pub fn apply_at(&mut self, sequence: u64, event: CaseEvent) {
        self.version = sequence.saturating_sub(1);
        self.apply(event);
    }

    fn push_status(
        &mut self,
        sequence: u64,
        id: ReferralId,
        status: ReferralStatus,
        on: NaiveDate,
        reason: Option<Text>,
    ) -> EntryRef {
        if let Some(r) = self.referral_mut(id) {
            r.history.push(StatusChange {
                sequence,
                status,
                on,
                reason,
                voided: false,
            });
        }
        EntryRef::ReferralStatus(id)
    }

    fn push_appt(
        &mut self,
        sequence: u64,
        id: AppointmentId,
        status: AppointmentStatus,
        on: NaiveDate,
        missed_reason: Option<MissedReason>,
        rescheduled_for: Option<DateTime<Utc>>,
    ) -> EntryRef {
        if let Some(a) = self.appointment_mut(id) {
            let scheduled_for = rescheduled_for.unwrap_or_else(|| a.scheduled_for());
            a.history.push(AppointmentChange {
                sequence,
                status,
                scheduled_for,
                on,
                missed_reason,
                voided: false,
            });
        }
        EntryRef::AppointmentChange(id)
    }

    /// Reverts what the event at `sequence` did; the event itself stays in the stream.
    fn undo(&mut self, sequence: u64) {
        let Some(entry) = self.entries.get(&sequence).cloned() else {
            return;
        };
        match entry {
            EntryRef::Screening(id) => {
                if let Some(s) = self.screenings.iter_mut().find(|s| s.screening_id == id) {
                    s.voided = true;
                }
            }
            EntryRef::CarePlan(v) => {
                if let Some(p) = self.care_plans.iter_mut().find(|p| p.plan_version == v) {
                    p.voided = true;
                }
            }
            EntryRef::ReferralSent(id) => {
                if let Some(r) = self.referral_mut(id) {
                    r.voided = true;
                }
            }
            EntryRef::ReferralStatus(id) => {
                if let Some(r) = self.referral_mut(id) {
                    for c in r.history.iter_mut().filter(|c| c.sequence == sequence) {
                        c.voided = true;
                        if c.status == ReferralStatus::Completed {
                            r.outcome = None;
                        }
                    }
                }
            }
            EntryRef::AppointmentScheduled(id) => {
                if let Some(a) = self.appointment_mut(id) {
                    a.voided = true;
                }
            }
            EntryRef::AppointmentChange(id) => {
                if let Some(a) = self.appointment_mut(id) {
                    for c in a.history.iter_mut().filter(|c| c.sequence == sequence) {
                        c.voided = true;
                    }
                }
            }
            EntryRef::Contact(id) => {
                if let Some(c) = self.contacts.iter_mut().find(|c| c.activity_id == id) {
                    c.voided = true;
                }
            }
            EntryRef::Fixed(_) | EntryRef::Voided(_) => {}
        }
    }
}
