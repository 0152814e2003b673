//! The audit trail's pure core: an event's canonical bytes, the per-case hash chain, and a
//! one-line summary of what the event did.
//!
//! Each entry's hash is SHA-256 over the previous entry's hash and the event's canonical bytes,
//! so editing any stored event, or any entry, breaks every later link of that case's chain.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::log::{ApplyError, LogEvent, StoredEvent};
use crate::sorted_json::SortedJson;

/// The `prev_hash` of a case's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What of an event the chain covers: everything stored about it.
#[derive(Debug, Clone, Copy)]
pub struct ChainInput<'a> {
    pub case_id: &'a str,
    pub sequence: u64,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub recorded_at: DateTime<Utc>,
    pub payload: &'a SortedJson<'a>,
    pub metadata: &'a HashMap<String, String>,
}

/// Deterministic bytes: JSON with sorted keys (serde_json's map is ordered), times at
/// microsecond precision, so both stores and every reader produce the same bytes.
///
/// The fields are serialised straight from the stored event, in key order, rather than through a
/// `json!` document (which deep-copied every payload: a tenth of a rebuild's CPU), and the
/// payload from a `SortedJson` read from the stored text (which serialises as a
/// `serde_json::Value` does, without building one). A golden test holds the bytes to what every
/// stored chain covers.
pub fn canonical_bytes(e: &ChainInput<'_>) -> Vec<u8> {
    /// The keys in the order a sorted map gives them; never reorder.
    #[derive(Serialize)]
    struct Canonical<'a> {
        case_id: &'a str,
        event_id: &'a str,
        event_type: &'a str,
        event_version: &'a str,
        metadata: BTreeMap<&'a String, &'a String>,
        payload: &'a SortedJson<'a>,
        recorded_at: String,
        sequence: u64,
    }
    // Room for a typical event: one allocation rather than a vector grown several times.
    let mut bytes = Vec::with_capacity(1024);
    serde_json::to_writer(
        &mut bytes,
        &Canonical {
            case_id: e.case_id,
            event_id: e.event_id,
            event_type: e.event_type,
            event_version: e.event_version,
            metadata: e.metadata.iter().collect(),
            payload: e.payload,
            recorded_at: e.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            sequence: e.sequence,
        },
    )
    .expect("a JSON value always serialises");
    bytes
}

/// The next link: hex SHA-256 of `prev_hash`, a zero byte, and the canonical bytes.
pub fn chain(prev_hash: &str, canonical: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update([0u8]);
    h.update(canonical);
    hex::encode(h.finalize())
}

/// The chain input of a stored event: its id, and the canonical bytes the chain covers.
pub fn chain_input(e: &StoredEvent, case_id: &str) -> Result<(String, Vec<u8>), ApplyError> {
    Ok(chain_input_of(e, case_id, &e.sorted_payload()?))
}

/// `chain_input` with the payload already read.
fn chain_input_of(e: &StoredEvent, case_id: &str, payload: &SortedJson<'_>) -> (String, Vec<u8>) {
    let event_id = e.event_id.to_string();
    let bytes = canonical_bytes(&ChainInput {
        case_id,
        sequence: e.sequence,
        event_id: &event_id,
        event_type: &e.event_type,
        event_version: &e.event_version,
        recorded_at: e.recorded_at,
        payload,
        metadata: &e.stored_metadata,
    });
    (event_id, bytes)
}

/// One entry of the trail, as the audit projection stores it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    pub case_id: String,
    pub sequence: u64,
    pub event_id: String,
    pub event_type: String,
    pub event_version: String,
    pub actor_id: Option<String>,
    pub actor_role: Option<&'static str>,
    pub occurred_at: Option<String>,
    /// Written at microsecond precision, as the chain covers it.
    #[serde(serialize_with = "micros")]
    pub recorded_at: DateTime<Utc>,
    pub correlation_id: Option<String>,
    pub summary: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The audit projection's fold: chains each event of a batch onto its case's trail. `heads`
/// holds the newest hash of each case's trail (absent: none yet) and is moved along. An event
/// whose payload cannot be read fails the batch.
pub fn entries(
    batch: &[LogEvent],
    heads: &mut HashMap<String, String>,
) -> Result<Vec<AuditRow>, ApplyError> {
    let mut rows = Vec::with_capacity(batch.len());
    for e in batch {
        let case_id = e.case_id.to_string();
        let payload = e.event.sorted_payload()?;
        let (event_id, bytes) = chain_input_of(&e.event, &case_id, &payload);
        let head = heads
            .entry(case_id.clone())
            .or_insert_with(|| GENESIS.to_owned());
        let hash = chain(head, &bytes);
        let prev = std::mem::replace(head, hash.clone());
        let m = &e.event.metadata;
        rows.push(AuditRow {
            case_id,
            sequence: e.event.sequence,
            event_id,
            event_type: e.event.event_type.clone(),
            event_version: e.event.event_version.clone(),
            actor_id: m.actor_id.as_ref().map(ToString::to_string),
            actor_role: m.actor_role.map(|r| r.as_str()),
            occurred_at: m.occurred_at.map(|t| t.to_rfc3339()),
            recorded_at: e.event.recorded_at,
            correlation_id: m.correlation_id.clone(),
            summary: summary(&e.event.event_type, &payload),
            prev_hash: prev,
            hash,
        });
    }
    Ok(rows)
}

/// A time as the trail writes it: RFC 3339 at microsecond precision, in UTC.
fn micros<S: serde::Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
}

/// A one-line, PHI-free description of an event for the trail.
pub fn summary(event_type: &str, payload: &SortedJson<'_>) -> String {
    let body = payload.get(event_type).unwrap_or(payload);
    let f = |k: &str| {
        body.get(k)
            .and_then(SortedJson::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    match event_type {
        "CaseOpened" => format!(
            "case opened in program {} (intake {})",
            f("program"),
            f("intake_date")
        ),
        "CaseManagerAssigned" => format!("case manager {} assigned", f("case_manager")),
        "ScreeningRecorded" => format!(
            "{} screening recorded ({} actionable needs)",
            f("instrument"),
            body.get("actionable_needs")
                .and_then(SortedJson::as_array)
                .map_or(0, <[_]>::len)
        ),
        "CarePlanRevised" => format!(
            "care plan revision {} ({} goals)",
            body.get("plan_version")
                .and_then(SortedJson::as_u64)
                .unwrap_or(0),
            body.get("goals")
                .and_then(SortedJson::as_array)
                .map_or(0, <[_]>::len)
        ),
        "ReferralSent" => format!(
            "referral {} sent for {}",
            f("referral_id"),
            f("service_type")
        ),
        "ReferralAccepted" => format!("referral {} accepted", f("referral_id")),
        "ReferralDeclined" => format!("referral {} declined", f("referral_id")),
        "ReferralCancellationRequested" => {
            format!("cancellation of referral {} requested", f("referral_id"))
        }
        "ReferralCancelled" => format!("referral {} cancelled", f("referral_id")),
        "ReferralCompleted" => format!("referral {} completed: {}", f("referral_id"), f("outcome")),
        "AppointmentScheduled" => format!("appointment {} scheduled", f("appointment_id")),
        "AppointmentKept" => format!("appointment {} kept", f("appointment_id")),
        "AppointmentMissed" => format!(
            "appointment {} missed ({})",
            f("appointment_id"),
            f("missed_reason")
        ),
        "AppointmentCancelled" => format!("appointment {} cancelled", f("appointment_id")),
        "AppointmentRescheduled" => format!("appointment {} rescheduled", f("appointment_id")),
        "ContactLogged" => format!(
            "{} contact, {} minutes ({})",
            f("contact_type"),
            body.get("minutes")
                .and_then(SortedJson::as_u64)
                .unwrap_or(0),
            f("component")
        ),
        "CaseTransitioned" => format!("case closed: {}", f("kind")),
        "CaseReopened" => "case reopened".to_owned(),
        "EntryVoided" => format!(
            "{} {} voided as entered in error",
            f("voided_event_type"),
            f("voided_event_id")
        ),
        other => format!("{other} recorded"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN_CANONICAL: &str = r#"{"case_id":"c1","event_id":"e1","event_type":"CaseReopened","event_version":"1","metadata":{"actor_id":"cm-1","correlation_id":"k-1"},"payload":{"CaseReopened":{"n":[1,2.5,null,true],"on":"2026-01-02","reason":"ré \"q\""}},"recorded_at":"2026-01-02T03:04:05.123456Z","sequence":1}"#;

    fn input<'a>(
        payload: &'a SortedJson<'a>,
        metadata: &'a HashMap<String, String>,
    ) -> ChainInput<'a> {
        ChainInput {
            case_id: "c1",
            sequence: 1,
            event_id: "e1",
            event_type: "CaseReopened",
            event_version: "1",
            recorded_at: "2026-01-02T03:04:05.123456Z".parse().unwrap(),
            payload,
            metadata,
        }
    }

    /// The bytes every stored chain was computed over: they may never change.
    #[test]
    fn canonical_bytes_are_what_stored_chains_cover() {
        let payload = SortedJson::parse(
            r#"{"CaseReopened":{"on":"2026-01-02","reason":"r\u00e9 \"q\"","n":[1,2.5,null,true]}}"#,
        )
        .unwrap();
        let m = HashMap::from([
            ("correlation_id".to_owned(), "k-1".to_owned()),
            ("actor_id".to_owned(), "cm-1".to_owned()),
        ]);
        let bytes = canonical_bytes(&input(&payload, &m));
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), GOLDEN_CANONICAL);
        assert_eq!(
            chain(GENESIS, &bytes),
            "3d7ed6e124dd8d3720435868bb349375a57a7805a080c9350f194ea6fb6e3264"
        );
    }

    #[test]
    fn canonical_bytes_do_not_depend_on_map_order() {
        let a = SortedJson::parse(r#"{"x":1,"y":{"b":2,"a":1}}"#).unwrap();
        let b = SortedJson::parse(r#"{"y":{"a":1,"b":2},"x":1}"#).unwrap();
        let m = HashMap::from([
            ("k".to_owned(), "v".to_owned()),
            ("a".to_owned(), "b".to_owned()),
        ]);
        assert_eq!(
            canonical_bytes(&input(&a, &m)),
            canonical_bytes(&input(&b, &m))
        );
    }

    #[test]
    fn any_change_breaks_the_link() {
        let p = SortedJson::parse(r#"{"reason": "x"}"#).unwrap();
        let m = HashMap::new();
        let h = chain(GENESIS, &canonical_bytes(&input(&p, &m)));
        let edited = SortedJson::parse(r#"{"reason": "y"}"#).unwrap();
        assert_ne!(h, chain(GENESIS, &canonical_bytes(&input(&edited, &m))));
        assert_ne!(
            h,
            chain(&h, &canonical_bytes(&input(&p, &m))),
            "the previous hash counts"
        );
        assert_eq!(h.len(), 64);
    }

    #[test]
    fn summaries_name_what_happened_without_names_of_people() {
        let p = SortedJson::parse(
            r#"{"ContactLogged": {"contact_type": "phone", "minutes": 20, "component": "monitoring",
                "note": "private note"}}"#,
        )
        .unwrap();
        let s = summary("ContactLogged", &p);
        assert_eq!(s, "phone contact, 20 minutes (monitoring)");
        assert!(!s.contains("private"));
    }

    /// A payload that does not read as JSON (here: nested deeper than serde_json reads) fails
    /// the batch with the event named, and nothing panics.
    #[test]
    fn a_payload_too_deep_to_read_fails_the_batch_naming_the_event() {
        use crate::log::LogPosition;
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let event = StoredEvent {
            event_id: schemas::EventId::parse("0190c6f2-5a8e-7c3b-9a43-0d2f1c6e4b13").unwrap(),
            sequence: 1,
            position: 1,
            event_type: "CaseReopened".into(),
            event_version: "1".into(),
            recorded_at: "2026-01-02T03:04:05Z".parse().unwrap(),
            payload: deep,
            metadata: schemas::EventMetadata::default(),
            stored_metadata: HashMap::new(),
        };
        let batch = [LogEvent {
            at: LogPosition::START,
            case_id: schemas::CaseId::parse("0190c6f2-5a8e-7c3b-9a43-0d2f1c6e4b12").unwrap(),
            event: event.clone(),
        }];
        let err = entries(&batch, &mut HashMap::new()).unwrap_err();
        assert_eq!(err.event_id, event.event_id);
        assert!(err.reason.contains("recursion limit"), "{}", err.reason);
        assert!(chain_input(&event, "c1").is_err());
    }
}
