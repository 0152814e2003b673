//! The time zone of each agency: where an instant becomes a date (a date of service, a billing
//! month, "today"). Configuration: a server-wide zone and per-agency overrides.

use std::collections::HashMap;

use chrono_tz::Tz;
use schemas::AgencyId;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Zones {
    default: Tz,
    agencies: HashMap<AgencyId, Tz>,
}

impl Zones {
    pub fn new(default: Tz, agencies: HashMap<AgencyId, Tz>) -> Self {
        Self { default, agencies }
    }

    /// The zone of `agency` (the server-wide one when it has none of its own, or for no agency).
    pub fn of(&self, agency: Option<&AgencyId>) -> Tz {
        agency
            .and_then(|a| self.agencies.get(a))
            .copied()
            .unwrap_or(self.default)
    }
}
