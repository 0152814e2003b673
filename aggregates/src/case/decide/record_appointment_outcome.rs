//! `RecordAppointmentOutcome`.

use schemas::wire::*;
use schemas::*;

use super::Dates;
use crate::case::*;

impl Case {
    /// Record what became of an appointment: kept, missed (with why), cancelled or rescheduled; kept and missed only once it was due.
    pub(super) fn decide_record_appointment_outcome(
        &self,
        dates: &Dates,
        appointment_id: AppointmentId,
        r: AppointmentOutcomeRequest,
    ) -> Result<CaseEvent, CaseError> {
        let appt = self
            .appointment(appointment_id)
            .ok_or(CaseError::AppointmentNotFound)?;
        dates.past("on", r.on)?;
        // Nothing became of an appointment before it was made.
        if let Some(made_on) = appt.made_on.filter(|m| r.on < *m) {
            return Err(CaseError::DateOutOfOrder {
                field: "on",
                date: r.on,
                after: made_on,
            });
        }
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
            K::Kept | K::Missed | K::Cancelled if status != AppointmentStatus::Scheduled => {
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
        Ok(match r.outcome {
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
        })
    }
}
