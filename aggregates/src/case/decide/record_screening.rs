//! `RecordScreening`.

use schemas::wire::*;
use schemas::*;

use super::Dates;
use crate::case::*;

impl Case {
    /// Record a screening (CANS, PRAPARE): the instrument version must exist and every rating must fit its item; the actionable needs are derived here.
    pub(super) fn decide_record_screening(
        &self,
        dates: &Dates,
        services: &CaseServices,
        screening_id: ScreeningId,
        r: RecordScreeningRequest,
    ) -> Result<CaseEvent, CaseError> {
        dates.past("administered_on", r.administered_on)?;
        let instrument = services
            .instruments
            .get(r.instrument, r.instrument_version.as_deref())
            .map_err(|e| CaseError::UnknownInstrument(e.to_string()))?;
        let actionable_needs = instrument
            .check(&r.ratings)
            .map_err(CaseError::InvalidRatings)?;
        Ok(CaseEvent::ScreeningRecorded {
            screening_id,
            instrument: r.instrument,
            instrument_version: instrument.version.clone(),
            administered_on: r.administered_on,
            ratings: r.ratings,
            actionable_needs,
        })
    }
}
