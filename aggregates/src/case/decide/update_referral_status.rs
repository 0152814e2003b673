//! `UpdateReferralStatus`.

use schemas::wire::*;
use schemas::*;

use super::{required, Dates};
use crate::case::*;

impl Case {
    /// Move a referral along BSeR's business statuses: only the transitions the status allows,
    /// each from the side that owns it, with a reason where one is due and an outcome when the
    /// loop closes.
    pub(super) fn decide_update_referral_status(
        &self,
        dates: &Dates,
        actor: &Actor,
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
        use ReferralStatus as S;
        use ReferralStatusUpdate as U;
        let closes = matches!(r.status, U::Declined | U::Cancelled | U::Completed);
        match r.outcome {
            Some(_) if !closes => return Err(CaseError::OutcomeNotAllowed),
            Some(ReferralOutcome::Connected) if r.status != U::Completed => {
                return Err(CaseError::OutcomeNotAllowed)
            }
            _ => {}
        }
        if r.reason_code.is_some() && r.status == U::Accepted {
            return Err(CaseError::ReasonCodeNotAllowed);
        }
        // The coded reason subscribers see: as given, or as the outcome implies it.
        let reason_code = r
            .reason_code
            .or_else(|| r.outcome.and_then(StatusReason::implied_by));
        let reported = reporter(actor, referral, r.status, r.reported_by.as_ref())?;
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
                reported: reported.ok_or(CaseError::ReportedByRequired)?,
            },
            U::Declined => CaseEvent::ReferralDeclined {
                referral_id,
                on: r.on,
                reason: required(&r.reason, "a declined referral")?,
                outcome: r.outcome,
                reported: reported.ok_or(CaseError::ReportedByRequired)?,
                reason_code: reason_code.unwrap_or(StatusReason::Other),
            },
            U::CancellationRequested => CaseEvent::ReferralCancellationRequested {
                referral_id,
                on: r.on,
                reason: required(&r.reason, "a cancellation request")?,
                reason_code: reason_code.unwrap_or(StatusReason::Other),
            },
            U::Cancelled => CaseEvent::ReferralCancelled {
                referral_id,
                on: r.on,
                reason_code: reason_code.or_else(|| r.reason.as_ref().map(|_| StatusReason::Other)),
                reason: r.reason,
                outcome: r.outcome,
            },
            U::Completed => CaseEvent::ReferralCompleted {
                referral_id,
                on: r.on,
                outcome: r.outcome.ok_or(CaseError::OutcomeRequired)?,
                reason: r.reason,
                reported: reported.ok_or(CaseError::ReportedByRequired)?,
                reason_code,
            },
        })
    }
}

/// Who reports `status` of `referral`, if the caller may set it (HL7 BSeR: the recipient
/// accepts, declines and completes; the initiator requests cancellation and cancels).
/// `Some` for a recipient status, `None` for an initiator's.
fn reporter(
    actor: &Actor,
    referral: &Referral,
    status: ReferralStatusUpdate,
    reported_by: Option<&ReportedBy>,
) -> Result<Option<Reporter>, CaseError> {
    use ReferralStatusUpdate as U;
    let recipients = matches!(status, U::Accepted | U::Declined | U::Completed);
    match (actor.role, recipients) {
        // The receiving system speaks for its own referrals only, and only for its side.
        (Role::Service, false) => Err(CaseError::InitiatorStatus(status)),
        (Role::Service, true) => match &actor.provider {
            Some(p) if *p == referral.provider.id && reported_by.is_none() => {
                Ok(Some(Reporter::Provider {
                    provider_id: p.clone(),
                }))
            }
            Some(p) if *p == referral.provider.id => Err(CaseError::ReportedByNotAllowed),
            _ => Err(CaseError::NotTheReferralsProvider),
        },
        // Staff set the initiator's statuses themselves ...
        (_, false) if reported_by.is_some() => Err(CaseError::ReportedByNotAllowed),
        (_, false) => Ok(None),
        // ... and record the recipient's as the provider reported them.
        (_, true) => match reported_by {
            None => Err(CaseError::ReportedByRequired),
            Some(by) if by.provider_id != referral.provider.id => {
                Err(CaseError::ReportedByMismatch)
            }
            Some(by) => Ok(Some(Reporter::Staff {
                provider_id: by.provider_id.clone(),
                channel: by.channel,
            })),
        },
    }
}
