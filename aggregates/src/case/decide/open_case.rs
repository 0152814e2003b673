//! `OpenCase`: intake.

use chrono::NaiveDate;
use schemas::wire::*;
use schemas::*;

use crate::case::*;

impl Case {
    /// Open a case: only once, with an intake date that is not in the future and not before the
    /// child's birth, and not beside an open case of the same child unless the intake worker
    /// reviewed the match and says why. The intake assigns the first case manager from the
    /// intake date.
    pub(super) fn decide_open_case(
        &self,
        today: NaiveDate,
        case_id: CaseId,
        agency: AgencyId,
        request: OpenCaseRequest,
        possible_duplicates: Vec<CaseId>,
    ) -> Result<Vec<CaseEvent>, CaseError> {
        if self.exists() {
            return Err(CaseError::CaseAlreadyExists);
        }
        if !possible_duplicates.is_empty() && request.duplicate_reviewed.is_none() {
            return Err(CaseError::PossibleDuplicate(possible_duplicates));
        }
        if request.intake_date > today {
            return Err(CaseError::DateInFuture {
                field: "intake_date",
                date: request.intake_date,
            });
        }
        if request.child.birth_date > request.intake_date {
            return Err(CaseError::DateOutOfOrder {
                field: "intake_date",
                date: request.intake_date,
                after: request.child.birth_date,
            });
        }
        Ok(vec![
            CaseEvent::CaseOpened {
                case_id,
                agency,
                program: request.program,
                intake_date: request.intake_date,
                child: request.child.into(),
                guardians: request.guardians.into_iter().map(Into::into).collect(),
                referral_source: request.referral_source,
                presenting_concerns: request.presenting_concerns,
                duplicate_reviewed: request.duplicate_reviewed.map(|r| DuplicateReview {
                    reason: r.reason,
                    matched: possible_duplicates,
                }),
            },
            CaseEvent::CaseManagerAssigned {
                case_manager: request.assigned_to,
                effective_on: request.intake_date,
            },
        ])
    }
}
