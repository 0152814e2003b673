//! `AssignCaseManager`.

use schemas::wire::*;

use super::Dates;
use crate::case::*;

impl Case {
    /// Reassign the case manager: a new person, from a date not in the future.
    pub(super) fn decide_assign_case_manager(
        &self,
        dates: &Dates,
        r: AssignCaseManagerRequest,
    ) -> Result<CaseEvent, CaseError> {
        dates.past("on", r.on)?;
        if self.assigned_to.as_ref() == Some(&r.assigned_to) {
            return Err(CaseError::AlreadyAssigned(r.assigned_to.to_string()));
        }
        Ok(CaseEvent::CaseManagerAssigned {
            case_manager: r.assigned_to,
            effective_on: r.on,
        })
    }
}
