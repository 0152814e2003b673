//! `LogContact`.

use schemas::wire::*;
use schemas::*;

use super::Dates;
use crate::case::*;

impl Case {
    /// Log a contact with or about the family: not in the future (within the clock skew), with someone.
    pub(super) fn decide_log_contact(
        &self,
        dates: &Dates,
        activity_id: ActivityId,
        r: LogContactRequest,
    ) -> Result<CaseEvent, CaseError> {
        let occurred_at = r.occurred_at.with_timezone(&chrono::Utc);
        dates.past_instant("occurred_at", occurred_at)?;
        if r.with.is_empty() {
            return Err(CaseError::NoParticipants);
        }
        let mut with = r.with;
        with.sort();
        with.dedup();
        Ok(CaseEvent::ContactLogged {
            activity_id,
            component: r.component,
            contact_type: r.contact_type,
            with,
            occurred_at,
            stated_offset_seconds: Some(r.occurred_at.offset().local_minus_utc()),
            minutes: r.minutes,
            note: r.note,
            location: r.location,
        })
    }
}
