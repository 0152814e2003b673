//! The decisions: one function per command, each in its own file, each refusing with a
//! `CaseError` variant or returning the events to record. `Case::decide` only dispatches.
//!
//! Every decision is pure: "now" is the time the server received the command (`received_at`), and
//! new ids come with the command.

mod assign_case_manager;
mod log_contact;
mod open_case;
mod record_appointment_outcome;
mod record_screening;
mod reopen_case;
mod revise_care_plan;
mod schedule_appointment;
mod send_referral;
mod transition_case;
mod update_referral_status;
mod void_entry;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use schemas::*;

use super::commands::{CaseAction, CaseCommand};
use super::error::CaseError;
use super::events::CaseEvent;
use super::state::{Case, CaseServices};

/// How far ahead of the server's clock a reported time may be (device clocks drift).
const CLOCK_SKEW: Duration = Duration::minutes(5);

impl Case {
    pub(super) fn decide(
        &self,
        command: CaseCommand,
        services: &CaseServices,
    ) -> Result<Vec<CaseEvent>, CaseError> {
        let CaseCommand {
            actor,
            received_at: now,
            zone,
            action,
        } = command;
        let today = now.with_timezone(&zone).date_naive();
        // Every command but intake, reopening and a correction acts on an open case, checked
        // before anything else the command says. What happened before a closure may still be
        // documented within the documentation window.
        let open = || Dates::of_open_case(self, now, zone);
        let documented =
            || Dates::of_documented_case(self, now, zone, services.documentation_window_days);
        let one = |event: CaseEvent| vec![event];
        match action {
            CaseAction::OpenCase {
                case_id,
                agency,
                request,
                possible_duplicates,
            } => self.decide_open_case(today, case_id, agency, request, possible_duplicates),
            CaseAction::ReopenCase(r) => self.decide_reopen_case(today, r).map(one),
            CaseAction::AssignCaseManager(r) => {
                self.decide_assign_case_manager(&open()?, r).map(one)
            }
            CaseAction::RecordScreening {
                screening_id,
                request,
            } => self
                .decide_record_screening(&documented()?, services, screening_id, request)
                .map(one),
            CaseAction::ReviseCarePlan { goal_ids, request } => self
                .decide_revise_care_plan(&open()?, services, goal_ids, request)
                .map(one),
            CaseAction::SendReferral {
                referral_id,
                request,
            } => self
                .decide_send_referral(&open()?, referral_id, request)
                .map(one),
            CaseAction::UpdateReferralStatus {
                referral_id,
                request,
            } => self
                .decide_update_referral_status(&documented()?, &actor, referral_id, request)
                .map(one),
            CaseAction::ScheduleAppointment {
                appointment_id,
                request,
            } => self
                .decide_schedule_appointment(&open()?, appointment_id, request)
                .map(one),
            CaseAction::RecordAppointmentOutcome {
                appointment_id,
                request,
            } => self
                .decide_record_appointment_outcome(&documented()?, appointment_id, request)
                .map(one),
            CaseAction::LogContact {
                activity_id,
                request,
            } => self
                .decide_log_contact(&documented()?, activity_id, request)
                .map(one),
            CaseAction::TransitionCase(r) => self.decide_transition_case(&open()?, r).map(one),
            // A correction is accepted on a closed case at any time; the case stays closed.
            CaseAction::VoidEntry { target, reason } => {
                self.opened()?;
                self.decide_void_entry(target, reason).map(one)
            }
        }
    }
}

/// The date checks shared by the commands on a case: nothing in the future, nothing before
/// intake, and on a closed case nothing after its closure.
pub(super) struct Dates {
    /// Today in the agency's time zone.
    pub(super) today: NaiveDate,
    now: DateTime<Utc>,
    zone: Tz,
    intake: NaiveDate,
    /// The closure's effective date, when a closed case is being documented late.
    closed_on: Option<NaiveDate>,
}

impl Dates {
    /// The dates of a command on `case`, which must exist and be open.
    fn of_open_case(case: &Case, now: DateTime<Utc>, zone: Tz) -> Result<Self, CaseError> {
        let opened = case.open_case()?;
        Ok(Self {
            today: now.with_timezone(&zone).date_naive(),
            now,
            zone,
            intake: opened.intake_date,
            closed_on: None,
        })
    }

    /// The dates of documenting what happened on `case`: open, or closed no more than
    /// `window_days` ago (then only dates up to the closure are accepted).
    fn of_documented_case(
        case: &Case,
        now: DateTime<Utc>,
        zone: Tz,
        window_days: u32,
    ) -> Result<Self, CaseError> {
        let opened = case.opened()?;
        let today = now.with_timezone(&zone).date_naive();
        let closed_on = case.closed.as_ref().map(|c| c.effective_on);
        if let Some(closed_on) = closed_on {
            if today > closed_on + Duration::days(i64::from(window_days)) {
                return Err(CaseError::DocumentationWindowClosed {
                    closed_on,
                    window_days,
                });
            }
        }
        Ok(Self {
            today,
            now,
            zone,
            intake: opened.intake_date,
            closed_on,
        })
    }

    pub(super) fn past(&self, field: &'static str, date: NaiveDate) -> Result<(), CaseError> {
        if date > self.today {
            return Err(CaseError::DateInFuture { field, date });
        }
        if self.closed_on.is_some_and(|closed| date > closed) {
            return Err(CaseError::CaseClosed);
        }
        self.not_before_intake(field, date)
    }

    pub(super) fn past_instant(
        &self,
        field: &'static str,
        at: DateTime<Utc>,
    ) -> Result<(), CaseError> {
        // The instant's date where the agency is, not in UTC.
        let date = at.with_timezone(&self.zone).date_naive();
        if at > self.now + CLOCK_SKEW {
            return Err(CaseError::DateInFuture { field, date });
        }
        self.past(field, date.min(self.today))
    }

    /// A date that may lie ahead (an appointment, a target) but not before intake.
    pub(super) fn not_before_intake(
        &self,
        field: &'static str,
        date: NaiveDate,
    ) -> Result<(), CaseError> {
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

/// A reason the command must carry for this transition.
pub(super) fn required(reason: &Option<Text>, what: &'static str) -> Result<Text, CaseError> {
    reason.clone().ok_or(CaseError::ReasonRequired(what))
}
