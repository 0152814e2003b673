//! `VoidEntry`: a correction. Nothing is deleted; the voided entry stays in the stream, marked.

use schemas::*;

use crate::case::*;

impl Case {
    /// Void an entry made in error: only an entry that can be undone (not intake, assignment,
    /// transition, reopening or a void), once, and only when no later live entry depends on it.
    pub(super) fn decide_void_entry(
        &self,
        target: VoidTarget,
        reason: Text,
    ) -> Result<CaseEvent, CaseError> {
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
