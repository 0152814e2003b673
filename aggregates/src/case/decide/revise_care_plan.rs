//! `ReviseCarePlan`.

use schemas::wire::*;
use schemas::*;

use super::Dates;
use crate::case::*;

impl Case {
    /// Revise the care plan with the family: at least one goal, only known items, and every actionable need of the latest CANS addressed by a goal or deferred with a reason.
    pub(super) fn decide_revise_care_plan(
        &self,
        dates: &Dates,
        services: &CaseServices,
        goal_ids: Vec<GoalId>,
        r: ReviseCarePlanRequest,
    ) -> Result<CaseEvent, CaseError> {
        if r.goals.is_empty() {
            return Err(CaseError::NoGoals);
        }
        let revised_on = r.revised_on.unwrap_or(dates.today);
        dates.past("revised_on", revised_on)?;
        if r.reassess_by <= revised_on {
            return Err(CaseError::DateOutOfOrder {
                field: "reassess_by",
                date: r.reassess_by,
                after: revised_on,
            });
        }
        let cans = services
            .instruments
            .get(
                InstrumentKind::Cans,
                self.latest_cans().map(|s| s.instrument_version.as_str()),
            )
            .map_err(|e| CaseError::UnknownInstrument(e.to_string()))?;
        let mut unknown: Vec<ItemCode> = r
            .goals
            .iter()
            .flat_map(|g| g.addresses.iter())
            .chain(r.deferred_needs.iter().map(|d| &d.need))
            .filter(|code| cans.item(code.as_str()).is_none())
            .cloned()
            .collect();
        if !unknown.is_empty() {
            unknown.dedup();
            return Err(CaseError::UnknownItems(unknown));
        }
        let latest = self.latest_cans();
        let unaddressed: Vec<ItemCode> = latest
            .map(|s| s.actionable_needs.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|need| {
                !r.goals.iter().any(|g| g.addresses.contains(need))
                    && !r.deferred_needs.iter().any(|d| &d.need == *need)
            })
            .cloned()
            .collect();
        if !unaddressed.is_empty() {
            return Err(CaseError::UnaddressedNeeds(unaddressed));
        }
        let plan_version = self.care_plans.len() as u32 + 1;
        Ok(CaseEvent::CarePlanRevised {
            plan_version,
            revised_on,
            goals: goal_ids.into_iter().zip(r.goals).map(Goal::from).collect(),
            deferred_needs: r.deferred_needs.into_iter().map(Into::into).collect(),
            family_participated: r.family_participated,
            services_timeline: r.services_timeline,
            reassess_by: r.reassess_by,
            based_on_screening: latest.map(|s| s.screening_id),
        })
    }
}
