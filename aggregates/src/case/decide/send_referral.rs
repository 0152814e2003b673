//! `SendReferral`.

use schemas::wire::*;
use schemas::*;

use super::Dates;
use crate::case::*;

impl Case {
    /// Send a referral to a provider, linked only to goals of the plan in force.
    pub(super) fn decide_send_referral(
        &self,
        dates: &Dates,
        referral_id: ReferralId,
        r: SendReferralRequest,
    ) -> Result<CaseEvent, CaseError> {
        dates.past("sent_on", r.sent_on)?;
        let plan_goals: Vec<GoalId> = self
            .current_plan()
            .map(|p| p.goals.iter().map(|g| g.goal_id).collect())
            .unwrap_or_default();
        if r.goal_ids.iter().any(|g| !plan_goals.contains(g)) {
            return Err(CaseError::UnknownGoal);
        }
        Ok(CaseEvent::ReferralSent {
            referral_id,
            service_type: r.service_type,
            provider: r.provider.into(),
            reason: r.reason,
            goal_ids: r.goal_ids,
            urgency: r.urgency.unwrap_or(Urgency::Routine),
            sent_on: r.sent_on,
            do_not_contact_subject: r.do_not_contact_subject,
        })
    }
}
