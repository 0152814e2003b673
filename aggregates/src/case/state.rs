//! The Case's state, folded from its events (`apply`), and undone entry by entry when an entry is
//! voided (`undo`). The decisions that guard every command are in `decide/`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
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
    /// How many days after a case closes what happened before the closure may still be
    /// documented (contacts, appointment outcomes, referral statuses, screenings).
    pub documentation_window_days: u32,
}

impl CaseServices {
    /// The default documentation window: 90 days after the transition's effective date.
    pub const DEFAULT_DOCUMENTATION_WINDOW_DAYS: u32 = 90;
}

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
    /// Who reported a recipient status (absent for the initiator's own, and in states folded
    /// before it was kept).
    #[serde(default)]
    pub reported: Option<Reporter>,
    /// Why the loop closed, on a closing status.
    #[serde(default)]
    pub outcome: Option<ReferralOutcome>,
    /// The reason as a code (what the bus carries instead of `reason`).
    #[serde(default)]
    pub reason_code: Option<StatusReason>,
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

impl StatusChange {
    /// A change before it is given its place in the stream.
    fn new(
        status: ReferralStatus,
        on: NaiveDate,
        reason: Option<Text>,
        reported: Option<Reporter>,
        outcome: Option<ReferralOutcome>,
    ) -> Self {
        Self {
            sequence: 0,
            status,
            on,
            reason,
            reported,
            outcome,
            reason_code: None,
            voided: false,
        }
    }

    fn coded(mut self, reason_code: Option<StatusReason>) -> Self {
        self.reason_code = reason_code;
        self
    }
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
    /// When it was made (absent in states folded before the event said so).
    #[serde(default)]
    pub made_on: Option<NaiveDate>,
    pub first_scheduled_for: DateTime<Utc>,
    /// Outcomes and reschedules, oldest first.
    pub history: Vec<AppointmentChange>,
    pub voided: bool,
}

impl Appointment {
    pub(super) fn latest(&self) -> Option<&AppointmentChange> {
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

    pub(super) fn opened(&self) -> Result<&Opened, CaseError> {
        self.opened.as_ref().ok_or(CaseError::CaseNotFound)
    }

    /// A command other than reopen needs an existing, open case.
    pub(super) fn open_case(&self) -> Result<&Opened, CaseError> {
        let o = self.opened()?;
        if self.closed.is_some() {
            return Err(CaseError::CaseClosed);
        }
        Ok(o)
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
                duplicate_reviewed: _,
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
            CaseEvent::ReferralAccepted {
                referral_id,
                on,
                reported,
            } => self.push_status(
                seq,
                referral_id,
                StatusChange::new(ReferralStatus::Accepted, on, None, Some(reported), None),
            ),
            CaseEvent::ReferralDeclined {
                referral_id,
                on,
                reason,
                outcome,
                reported,
                reason_code,
            } => self.push_status(
                seq,
                referral_id,
                StatusChange::new(
                    ReferralStatus::Declined,
                    on,
                    Some(reason),
                    Some(reported),
                    outcome,
                )
                .coded(Some(reason_code)),
            ),
            CaseEvent::ReferralCancellationRequested {
                referral_id,
                on,
                reason,
                reason_code,
            } => self.push_status(
                seq,
                referral_id,
                StatusChange::new(
                    ReferralStatus::CancellationRequested,
                    on,
                    Some(reason),
                    None,
                    None,
                )
                .coded(Some(reason_code)),
            ),
            CaseEvent::ReferralCancelled {
                referral_id,
                on,
                reason,
                outcome,
                reason_code,
            } => self.push_status(
                seq,
                referral_id,
                StatusChange::new(ReferralStatus::Cancelled, on, reason, None, outcome)
                    .coded(reason_code),
            ),
            CaseEvent::ReferralCompleted {
                referral_id,
                on,
                outcome,
                reason,
                reported,
                reason_code,
            } => self.push_status(
                seq,
                referral_id,
                StatusChange::new(
                    ReferralStatus::Completed,
                    on,
                    reason,
                    Some(reported),
                    Some(outcome),
                )
                .coded(reason_code),
            ),
            CaseEvent::AppointmentScheduled {
                appointment_id,
                referral_id,
                scheduled_for,
                made_on,
            } => {
                self.appointments.push(Appointment {
                    appointment_id,
                    referral_id,
                    made_on: Some(made_on),
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
                ..
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
                        StatusChange::new(
                            ReferralStatus::Cancelled,
                            effective_on,
                            Some(reason.clone()),
                            None,
                            None,
                        ),
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

    fn push_status(&mut self, sequence: u64, id: ReferralId, change: StatusChange) -> EntryRef {
        if let Some(r) = self.referral_mut(id) {
            if change.outcome.is_some() {
                r.outcome = change.outcome;
            }
            r.history.push(StatusChange { sequence, ..change });
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
                        if c.outcome.is_some() {
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
