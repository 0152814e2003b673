//! A case as it was known at a time: the state and the events up to T, each with what it changed.
//!
//! Two bases: `recorded` (what the record held at T: only events stored by T, so late entries
//! documented after T are excluded; what an auditor would have seen then) and `occurred` (the
//! state as of the service date T: every event that happened by T, however late it was
//! documented). Voided entries are shown voided, never dropped.

use std::collections::BTreeSet;

use aggregates::{Case, CaseEvent};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::sorted_json::SortedJson;
use crate::CaseView;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    Recorded,
    Occurred,
}

/// Read through serde, whose `rename_all` is the one definition of the names.
impl std::str::FromStr for Basis {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use serde::de::IntoDeserializer;
        Self::deserialize(s.into_deserializer()).map_err(|_: serde::de::value::Error| {
            format!("basis must be `recorded` or `occurred`, not `{s}`")
        })
    }
}

/// One stored event, as history needs it.
#[derive(Debug, Clone)]
pub struct HistoryInput {
    pub event_id: String,
    pub sequence: u64,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub actor: Option<String>,
    pub event: CaseEvent,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryEntry {
    pub event_id: String,
    pub sequence: u64,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub actor: Option<String>,
    pub summary: String,
    /// The top-level fields of the case view this event changed.
    pub changed: Vec<String>,
    /// Voided, as entered in error, by an event also within the window.
    pub voided: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryView {
    pub as_of: DateTime<Utc>,
    pub basis: Basis,
    /// None when the case did not exist yet at T on this basis.
    pub state: Option<CaseView>,
    pub events: Vec<HistoryEntry>,
}

fn fields(view: &Option<CaseView>) -> serde_json::Map<String, Value> {
    match view.as_ref().map(serde_json::to_value) {
        Some(Ok(Value::Object(m))) => m,
        _ => serde_json::Map::new(),
    }
}

/// The cut-off of a history asked for without `as_of`: `now`, or the case's latest recorded or
/// occurred time when that is later (the database stamps `recorded_at` by its own clock, which may
/// run ahead of the application's), so that "as known now" never hides an entry already made.
pub fn now_or_latest(inputs: &[HistoryInput], now: DateTime<Utc>) -> DateTime<Utc> {
    inputs
        .iter()
        .flat_map(|e| [e.recorded_at, e.occurred_at])
        .fold(now, DateTime::max)
}

/// Folds the events within the window (in stream order) into the state at T.
pub fn as_of(inputs: &[HistoryInput], at: DateTime<Utc>, basis: Basis) -> HistoryView {
    let within: Vec<&HistoryInput> = inputs
        .iter()
        .filter(|e| match basis {
            Basis::Recorded => e.recorded_at <= at,
            Basis::Occurred => e.occurred_at <= at,
        })
        .collect();
    let voided: BTreeSet<u64> = within
        .iter()
        .filter_map(|e| match &e.event {
            CaseEvent::EntryVoided {
                voided_sequence, ..
            } => Some(*voided_sequence),
            _ => None,
        })
        .collect();
    let mut case = Case::default();
    let mut before = fields(&None);
    let mut events = Vec::with_capacity(within.len());
    for e in within {
        case.apply_at(e.sequence, e.event.clone());
        let after = fields(&CaseView::from_case(&case));
        let changed = after
            .iter()
            .filter(|(k, v)| k.as_str() != "version" && before.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        let payload = serde_json::to_string(&e.event).unwrap_or_default();
        let payload = SortedJson::parse(&payload).unwrap_or(SortedJson::Null);
        events.push(HistoryEntry {
            event_id: e.event_id.clone(),
            sequence: e.sequence,
            event_type: e.event_type.clone(),
            occurred_at: e.occurred_at,
            recorded_at: e.recorded_at,
            actor: e.actor.clone(),
            summary: crate::audit::summary(&e.event_type, &payload),
            changed,
            voided: voided.contains(&e.sequence),
        });
        before = after;
    }
    HistoryView {
        as_of: at,
        basis,
        state: CaseView::from_case(&case),
        events,
    }
}

#[cfg(test)]
mod tests {
    use super::Basis;

    #[test]
    fn a_basis_is_named_as_serde_names_it() {
        for b in [Basis::Recorded, Basis::Occurred] {
            let name = serde_json::to_value(b).unwrap();
            assert_eq!(name.as_str().unwrap().parse::<Basis>(), Ok(b));
        }
        assert!("sideways"
            .parse::<Basis>()
            .unwrap_err()
            .contains("sideways"));
    }
}
