//! The global log as projections read it: stored events with their envelopes and their place in
//! the log. Reading the log is the store's job (`services::store::log`); folding it is this
//! crate's.

use std::collections::HashMap;

use aggregates::CaseEvent;
use chrono::{DateTime, Utc};
use schemas::{CaseId, EventId, EventMetadata};
use serde_json::Value;

use crate::sorted_json::SortedJson;

/// Where a reader is in the global log. Ordered: (txid, position).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    /// The writing transaction's id (PostgreSQL `xid8`); 0 on SQLite.
    pub txid: i64,
    pub position: i64,
}

impl LogPosition {
    /// Before the first event.
    pub const START: LogPosition = LogPosition {
        txid: 0,
        position: 0,
    };
}

/// One stored event with its envelope, as `GET /v1/cases/{id}/events` shows it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub event_id: EventId,
    pub sequence: u64,
    pub position: i64,
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    /// The payload's JSON text as the store gives it back, not yet parsed: a projection reads the
    /// event straight from it (`case_event`), and the audit chain its sorted form
    /// (`sorted_payload`), with no `serde_json::Value` in between. Text that is not JSON fails
    /// whichever of them reads it.
    pub payload: String,
    /// The metadata, typed.
    pub metadata: EventMetadata,
    /// The metadata exactly as stored: what the audit chain hashes, so that a chain computed
    /// when the event was written verifies byte for byte however the typed form evolves.
    pub stored_metadata: HashMap<String, String>,
}

impl StoredEvent {
    /// The payload as the Case event it records; an event that does not read back cannot be
    /// applied (a projection stops there rather than skip it).
    pub fn case_event(&self) -> Result<CaseEvent, ApplyError> {
        aggregates::decode(
            &self.event_type,
            &self.event_version,
            &self.payload,
            &self.stored_metadata,
        )
        .map_err(|e| self.unreadable(e))
    }

    /// The payload with its object keys sorted, as the audit chain covers it.
    pub fn sorted_payload(&self) -> Result<SortedJson<'_>, ApplyError> {
        SortedJson::parse(&self.payload).map_err(|e| self.unreadable(e))
    }

    /// The payload as a `serde_json::Value`, as it is shown.
    pub fn payload_value(&self) -> Result<Value, ApplyError> {
        serde_json::from_str(&self.payload).map_err(|e| self.unreadable(e))
    }

    /// This event's payload does not read as what was asked of it: not JSON, not the event its
    /// type says, or nested deeper than serde_json reads.
    fn unreadable(&self, e: serde_json::Error) -> ApplyError {
        ApplyError {
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            reason: e.to_string(),
        }
    }
}

/// One event as the global log delivers it: where it is in the log, whose it is, and the event.
#[derive(Debug, Clone)]
pub struct LogEvent {
    pub at: LogPosition,
    pub case_id: CaseId,
    pub event: StoredEvent,
}

/// A void as a projection's rows see it: the voided event, by its place in its case's stream
/// and its id. It marks the row that event made, if the event made one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct VoidRow {
    pub sequence: u64,
    pub event_id: EventId,
}

/// What a projection's fold of one case's batch adds beside the case's state, as rows: the
/// contacts it logged (each projection keeps its own shape of them, `C`) and the entries it
/// voided.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded<C> {
    pub contacts: Vec<C>,
    pub voided: Vec<VoidRow>,
}

impl<C> Default for Folded<C> {
    fn default() -> Self {
        Self {
            contacts: Vec::new(),
            voided: Vec::new(),
        }
    }
}

/// An event a projection cannot apply. The projection stops at it, visibly; it is never skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {event_id} ({event_type}) cannot be applied: {reason}")]
pub struct ApplyError {
    pub event_id: EventId,
    pub event_type: String,
    pub reason: String,
}

/// A batch's events by case, cases in order of first appearance, events in log order.
pub fn group_by_case(batch: &[LogEvent]) -> Vec<(CaseId, Vec<&LogEvent>)> {
    let mut by_case: Vec<(CaseId, Vec<&LogEvent>)> = Vec::new();
    // Where each case's group is in `by_case`: a batch of thousands of events may touch
    // thousands of cases, and a linear search per event would be quadratic.
    let mut index: std::collections::HashMap<CaseId, usize> = std::collections::HashMap::new();
    for e in batch {
        match index.get(&e.case_id) {
            Some(&i) => by_case[i].1.push(e),
            None => {
                index.insert(e.case_id, by_case.len());
                by_case.push((e.case_id, vec![e]));
            }
        }
    }
    by_case
}

/// Batches of stored events for the folds' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use aggregates::case::Child;
    use schemas::*;

    /// A case's stream, event by event, as the global log would deliver it.
    pub struct Stream {
        pub case_id: CaseId,
        sequence: u64,
    }

    impl Stream {
        pub fn new() -> Self {
            Self {
                case_id: CaseId::generate(),
                sequence: 0,
            }
        }

        /// The case's next event, stored as the store stores it (its current shape).
        pub fn next(&mut self, event: CaseEvent) -> LogEvent {
            self.sequence += 1;
            LogEvent {
                at: LogPosition {
                    txid: 1,
                    position: self.sequence as i64,
                },
                case_id: self.case_id,
                event: StoredEvent {
                    event_id: EventId::generate(),
                    sequence: self.sequence,
                    position: self.sequence as i64,
                    event_type: event.event_type_str().to_owned(),
                    event_version: event.event_version_str().to_owned(),
                    recorded_at: "2026-11-16T00:00:00Z".parse().unwrap(),
                    payload: serde_json::to_string(&event).unwrap(),
                    metadata: EventMetadata::default(),
                    stored_metadata: HashMap::new(),
                },
            }
        }

        /// The case opened (`case_opened`).
        pub fn opened(&mut self) -> LogEvent {
            let case_id = self.case_id;
            self.next(case_opened(case_id, Program::Tcm))
        }

        /// A 20-minute call with the guardian at `at`.
        pub fn contact(&mut self, at: &str) -> LogEvent {
            self.next(CaseEvent::ContactLogged {
                activity_id: ActivityId::generate(),
                component: TcmComponent::Monitoring,
                contact_type: ContactType::Phone,
                with: vec![Participant::Guardian],
                occurred_at: at.parse().unwrap(),
                stated_offset_seconds: Some(0),
                minutes: Minutes::parse(20).unwrap(),
                note: None,
                location: None,
            })
        }

        /// The case handed to `worker`.
        pub fn assigned(&mut self, worker: &str) -> LogEvent {
            self.next(CaseEvent::CaseManagerAssigned {
                case_manager: ActorId::parse(worker).unwrap(),
                effective_on: "2026-11-03".parse().unwrap(),
            })
        }

        /// The void of `event`.
        pub fn void(&mut self, event: &LogEvent) -> LogEvent {
            self.next(CaseEvent::EntryVoided {
                voided_event_id: event.event.event_id,
                voided_sequence: event.event.sequence,
                voided_event_type: event.event.event_type.clone(),
                reason: Text::parse("logged on the wrong case").unwrap(),
            })
        }
    }

    /// Case `case_id` opened in `program`, its intake on 2026-10-30.
    pub fn case_opened(case_id: CaseId, program: Program) -> CaseEvent {
        CaseEvent::CaseOpened {
            case_id,
            agency: AgencyId::parse("a").unwrap(),
            program,
            intake_date: "2026-10-30".parse().unwrap(),
            child: Child {
                given_name: PersonName::parse("Kim").unwrap(),
                family_name: PersonName::parse("Sample").unwrap(),
                birth_date: "2019-01-01".parse().unwrap(),
                medicaid_id: None,
            },
            guardians: vec![],
            referral_source: None,
            presenting_concerns: vec![],
            duplicate_reviewed: None,
        }
    }

    /// A batch's events as a fold takes them (one case's, in log order).
    pub fn refs(batch: &[LogEvent]) -> Vec<&LogEvent> {
        batch.iter().collect()
    }
}
