//! `ReopenCase`.

use chrono::NaiveDate;
use schemas::wire::*;

use crate::case::*;

impl Case {
    /// Reopen a closed case, on a date not in the future and not before it closed. The one
    /// command a closed case accepts.
    pub(super) fn decide_reopen_case(
        &self,
        today: NaiveDate,
        r: ReopenRequest,
    ) -> Result<CaseEvent, CaseError> {
        self.opened()?;
        let Some(closed) = &self.closed else {
            return Err(CaseError::CaseNotClosed);
        };
        if r.on > today {
            return Err(CaseError::DateInFuture {
                field: "on",
                date: r.on,
            });
        }
        if r.on < closed.effective_on {
            return Err(CaseError::DateOutOfOrder {
                field: "on",
                date: r.on,
                after: closed.effective_on,
            });
        }
        Ok(CaseEvent::CaseReopened {
            reason: r.reason,
            on: r.on,
        })
    }
}
