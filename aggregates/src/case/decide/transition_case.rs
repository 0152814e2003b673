//! `TransitionCase`.

use schemas::wire::*;
use schemas::*;

use super::Dates;
use crate::case::*;

impl Case {
    /// Step down, transfer or discharge: open referrals need a disposition, which the event records.
    pub(super) fn decide_transition_case(
        &self,
        dates: &Dates,
        r: TransitionRequest,
    ) -> Result<CaseEvent, CaseError> {
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
        Ok(CaseEvent::CaseTransitioned {
            kind: r.kind,
            reason: r.reason,
            effective_on: r.effective_on,
            open_referrals: r.open_referrals,
            cancelled_referrals: cancelled,
            carried_over_referrals: carried,
        })
    }
}
