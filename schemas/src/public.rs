//! The public event contract: what Linkage publishes on the event bus (NATS JetStream) and offers
//! to local subscribers. These types are kept apart from the stored events on purpose: a stored
//! event records everything a case manager entered; a public event carries the minimum another
//! service needs to close a referral loop (HIPAA 164.502(b), minimum necessary).
//!
//! What is never here: the child's or a guardian's name, birth date, Medicaid id, address or
//! phone, screening ratings, care-plan text, contact notes, the clinical reason for a referral.
//! The case id is a random UUID minted by Linkage; it identifies nobody outside Linkage.
//!
//! Versioning: every message names its `event_type` and `event_version`. A published shape is
//! never changed incompatibly: a new field is optional, anything else is a new version with its
//! own schema file. `schemas/public/v1/<EventType>.json` holds each type's JSON Schema, generated
//! from these types (`public_schemas`); a test fails when a committed file drifts from its type.

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    AgencyId, AppointmentId, CaseId, EventId, MissedReason, Program, ProviderId, ReferralId,
    ReferralOutcome, ServiceType, Text, TransitionKind, Urgency,
};

/// The major version of the public contract; it is also the second token of every subject.
pub const CONTRACT_VERSION: &str = "v1";

/// The version of every event type's public shape in this contract version.
pub const EVENT_VERSION: &str = "1";

/// What every public message says about itself, beside its `event_type` and `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope {
    /// The stored event's id. Also the message's `Nats-Msg-Id`: JetStream drops a re-publish.
    pub event_id: EventId,
    /// The version of this event type's public shape.
    pub event_version: String,
    /// The case the event belongs to (a random id that identifies nobody outside Linkage).
    pub case_id: CaseId,
    /// The agency the case belongs to.
    pub agency: AgencyId,
    /// The event's position in its case (1, 2, ...): consumers can order a case's events and
    /// see a gap.
    pub case_sequence: u64,
    /// When it happened, as the person who recorded it said.
    pub occurred_at: DateTime<Utc>,
    /// When Linkage stored it.
    pub recorded_at: DateTime<Utc>,
}

/// One public message: the envelope, the event type and its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicMessage {
    #[serde(flatten)]
    pub envelope: Envelope,
    #[serde(flatten)]
    pub event: PublicEvent,
}

/// Which part of a case an event is about: the fourth token of its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Case,
    Referral,
    Appointment,
}

impl Entity {
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Case => "case",
            Entity::Referral => "referral",
            Entity::Appointment => "appointment",
        }
    }
}

macro_rules! public_events {
    ($($entity:ident $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? })+) => {
        $(
            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
            #[serde(deny_unknown_fields)]
            pub struct $name { $($(#[$fdoc])* pub $field: $ty),* }
        )+

        /// Every public event; serialised as `"event_type": "<variant>", "data": {...}`.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "event_type", content = "data")]
        pub enum PublicEvent {
            $($name($name)),+
        }

        impl PublicEvent {
            pub const TYPES: &'static [&'static str] = &[$(stringify!($name)),+];

            pub fn event_type(&self) -> &'static str {
                match self { $(PublicEvent::$name(_) => stringify!($name)),+ }
            }

            pub fn entity(&self) -> Entity {
                match self { $(PublicEvent::$name(_) => Entity::$entity),+ }
            }
        }

        /// The JSON Schema of each public event type's message, by event type.
        pub fn public_schemas() -> Vec<(&'static str, serde_json::Value)> {
            vec![$((stringify!($name), message_schema::<$name>(stringify!($name)))),+]
        }
    };
}

public_events! {
    Case CaseOpened {
        program: Program,
        intake_date: NaiveDate,
    }
    Case CaseTransitioned {
        kind: TransitionKind,
        effective_on: NaiveDate,
        /// Referrals the transition cancelled.
        cancelled_referrals: Vec<ReferralId>,
        /// Referrals that stay open with the family after the transition.
        carried_over_referrals: Vec<ReferralId>,
    }
    Case CaseReopened {
        on: NaiveDate,
    }
    Referral ReferralSent {
        referral_id: ReferralId,
        service_type: ServiceType,
        provider_id: ProviderId,
        urgency: Urgency,
        sent_on: NaiveDate,
        /// The receiving side must not contact the family directly (e.g. domestic violence).
        do_not_contact_subject: bool,
    }
    Referral ReferralAccepted {
        referral_id: ReferralId,
        on: NaiveDate,
    }
    Referral ReferralDeclined {
        referral_id: ReferralId,
        on: NaiveDate,
        reason: Text,
    }
    Referral ReferralCancellationRequested {
        referral_id: ReferralId,
        on: NaiveDate,
        reason: Text,
    }
    Referral ReferralCancelled {
        referral_id: ReferralId,
        on: NaiveDate,
        reason: Option<Text>,
    }
    Referral ReferralCompleted {
        referral_id: ReferralId,
        on: NaiveDate,
        outcome: ReferralOutcome,
        reason: Option<Text>,
    }
    Appointment AppointmentScheduled {
        appointment_id: AppointmentId,
        /// The referral the appointment serves; later appointment events name only the
        /// appointment.
        referral_id: ReferralId,
        scheduled_for: DateTime<Utc>,
    }
    Appointment AppointmentKept {
        appointment_id: AppointmentId,
        on: NaiveDate,
    }
    Appointment AppointmentMissed {
        appointment_id: AppointmentId,
        on: NaiveDate,
        missed_reason: MissedReason,
    }
    Appointment AppointmentCancelled {
        appointment_id: AppointmentId,
        on: NaiveDate,
        cancelled_by: Option<MissedReason>,
    }
    Appointment AppointmentRescheduled {
        appointment_id: AppointmentId,
        on: NaiveDate,
        rescheduled_for: DateTime<Utc>,
    }
    Case EntryVoided {
        /// The earlier public event that was entered in error; consumers undo what it did.
        voided_event_id: EventId,
        voided_event_type: String,
    }
}

/// The message schema of one event type: the envelope's fields, `event_type` fixed to the type,
/// and `data` of the type's shape; nothing else is allowed.
fn message_schema<D: JsonSchema>(event_type: &str) -> serde_json::Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let envelope = generator.subschema_for::<Envelope>();
    let data = generator.subschema_for::<D>();
    let mut defs = serde_json::Map::new();
    for (name, schema) in generator.take_definitions(true) {
        defs.insert(name, schema);
    }
    let envelope_name = "Envelope";
    let envelope_def = defs
        .remove(envelope_name)
        .unwrap_or_else(|| envelope.to_value());
    let mut properties = envelope_def
        .get("properties")
        .and_then(|p| p.as_object())
        .cloned()
        .unwrap_or_default();
    let mut required: Vec<serde_json::Value> = envelope_def
        .get("required")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    properties.insert(
        "event_type".into(),
        serde_json::json!({"const": event_type}),
    );
    properties.insert(
        "event_version".into(),
        serde_json::json!({"const": EVENT_VERSION}),
    );
    properties.insert("data".into(), data.to_value());
    required.extend([serde_json::json!("event_type"), serde_json::json!("data")]);
    let mut schema = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("https://linkage.example/schemas/public/{CONTRACT_VERSION}/{event_type}.json"),
        "title": format!("Linkage {event_type} ({CONTRACT_VERSION})"),
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    });
    if !defs.is_empty() {
        schema["$defs"] = serde_json::Value::Object(defs);
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_serialises_flat_with_type_and_data() {
        let m = PublicMessage {
            envelope: Envelope {
                event_id: EventId::generate(),
                event_version: "1".into(),
                case_id: CaseId::generate(),
                agency: AgencyId::parse("north").unwrap(),
                case_sequence: 3,
                occurred_at: Utc::now(),
                recorded_at: Utc::now(),
            },
            event: PublicEvent::ReferralAccepted(ReferralAccepted {
                referral_id: ReferralId::generate(),
                on: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
            }),
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["event_type"], "ReferralAccepted");
        assert_eq!(v["data"]["on"], "2026-03-02");
        assert_eq!(v["case_sequence"], 3);
        let back: PublicMessage = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.event.entity(), Entity::Referral);
    }

    #[test]
    fn every_type_has_a_schema_that_fixes_its_event_type() {
        let schemas = public_schemas();
        assert_eq!(schemas.len(), PublicEvent::TYPES.len());
        for (name, schema) in schemas {
            assert_eq!(schema["properties"]["event_type"]["const"], name);
            assert_eq!(schema["additionalProperties"], false);
        }
    }
}
