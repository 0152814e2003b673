//! `ScheduleAppointment`.

use schemas::wire::*;
use schemas::*;

use super::Dates;
use crate::case::*;

impl Case {
    /// Schedule an appointment on an accepted referral, made on a day (`on`, by default the day
    /// received) not before the referral was accepted.
    pub(super) fn decide_schedule_appointment(
        &self,
        dates: &Dates,
        appointment_id: AppointmentId,
        r: ScheduleAppointmentRequest,
    ) -> Result<CaseEvent, CaseError> {
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
        let made_on = r.on.unwrap_or(dates.today);
        dates.past("on", made_on)?;
        let accepted_on = referral
            .history
            .iter()
            .rev()
            .find(|c| !c.voided && c.status == ReferralStatus::Accepted)
            .map_or(referral.sent_on, |c| c.on);
        if made_on < accepted_on {
            return Err(CaseError::DateOutOfOrder {
                field: "on",
                date: made_on,
                after: accepted_on,
            });
        }
        Ok(CaseEvent::AppointmentScheduled {
            appointment_id,
            referral_id: r.referral_id,
            scheduled_for: r.scheduled_for,
            made_on,
        })
    }
}
