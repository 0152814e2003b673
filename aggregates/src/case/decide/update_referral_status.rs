//! `UpdateReferralStatus`.

use schemas::wire::*;
use schemas::*;

use super::{required, Dates};
use crate::case::*;

impl Case {
    /// Move a referral along BSeR's business statuses: only the transitions the status allows, with a reason where one is due.
    pub(super) fn decide_update_referral_status(
        &self,
        dates: &Dates,
        referral_id: ReferralId,
        r: ReferralStatusRequest,
    ) -> Result<CaseEvent, CaseError> {
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
        Ok(match r.status {
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
        })
    }
}
