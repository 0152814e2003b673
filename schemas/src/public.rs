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
//! own schema file. `schemas/public/v1/<EventType>.json` holds version 1 of each type's JSON
//! Schema and `<EventType>.v<N>.json` version N, generated from these types (`public_schemas`, and
//! `retired_schemas` for versions no longer published); a test fails when a committed file drifts
//! from its type.
//!
//! No free text: every string a public event carries is an id, a date or time, or a code from
//! the contract (`schemas/tests/public_strings_are_codes.rs` holds every type to it). Version 1 of
//! the four referral statuses that carried the case manager's free-text `reason` is retired
//! (`v1`); version 2 carries the coded `reason_code` and the loop-closure `outcome` instead.

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    AgencyId, AppointmentId, CaseId, EventId, MissedReason, Program, ProviderId, ReferralId,
    ReferralOutcome, ServiceType, StatusReason, TransitionKind, Urgency,
};

/// The major version of the public contract; it is also the second token of every subject.
pub const CONTRACT_VERSION: &str = "v1";

/// The file of an event type's JSON Schema at `version`, under `schemas/public/<contract>/`.
pub fn schema_file(event_type: &str, version: &str) -> String {
    if version == "1" {
        format!("{event_type}.json")
    } else {
        format!("{event_type}.v{version}.json")
    }
}

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
    ($($entity:ident $name:ident $version:literal { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? })+) => {
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

            /// The version of this type's public shape: what the envelope's `event_version` says.
            pub fn event_version(&self) -> &'static str {
                match self { $(PublicEvent::$name(_) => $version),+ }
            }
        }

        /// The JSON Schema of each published event type's message: (event type, version, schema).
        pub fn public_schemas() -> Vec<(&'static str, &'static str, serde_json::Value)> {
            vec![$((stringify!($name), $version, message_schema::<$name>(stringify!($name), $version))),+]
        }
    };
}

public_events! {
    Case CaseOpened "1" {
        program: Program,
        intake_date: NaiveDate,
    }
    Case CaseTransitioned "1" {
        kind: TransitionKind,
        effective_on: NaiveDate,
        /// Referrals the transition cancelled.
        cancelled_referrals: Vec<ReferralId>,
        /// Referrals that stay open with the family after the transition.
        carried_over_referrals: Vec<ReferralId>,
    }
    Case CaseReopened "1" {
        on: NaiveDate,
    }
    Referral ReferralSent "1" {
        referral_id: ReferralId,
        service_type: ServiceType,
        provider_id: ProviderId,
        urgency: Urgency,
        sent_on: NaiveDate,
        /// The receiving side must not contact the family directly (e.g. domestic violence).
        do_not_contact_subject: bool,
    }
    Referral ReferralAccepted "1" {
        referral_id: ReferralId,
        on: NaiveDate,
    }
    Referral ReferralDeclined "2" {
        referral_id: ReferralId,
        on: NaiveDate,
        /// How the loop closed, when the decline says.
        outcome: Option<ReferralOutcome>,
        /// Why, as a code; the words the provider or case manager used stay in the case record.
        reason_code: StatusReason,
    }
    Referral ReferralCancellationRequested "2" {
        referral_id: ReferralId,
        on: NaiveDate,
        /// Why, as a code.
        reason_code: StatusReason,
    }
    Referral ReferralCancelled "2" {
        referral_id: ReferralId,
        on: NaiveDate,
        /// How the loop closed, when the cancellation says.
        outcome: Option<ReferralOutcome>,
        /// Why, as a code, when a reason was given.
        reason_code: Option<StatusReason>,
    }
    Referral ReferralCompleted "2" {
        referral_id: ReferralId,
        on: NaiveDate,
        outcome: ReferralOutcome,
        /// Why, as a code, when a reason was given or the outcome implies one.
        reason_code: Option<StatusReason>,
    }
    Appointment AppointmentScheduled "1" {
        appointment_id: AppointmentId,
        /// The referral the appointment serves; later appointment events name only the
        /// appointment.
        referral_id: ReferralId,
        scheduled_for: DateTime<Utc>,
    }
    Appointment AppointmentKept "1" {
        appointment_id: AppointmentId,
        on: NaiveDate,
    }
    Appointment AppointmentMissed "1" {
        appointment_id: AppointmentId,
        on: NaiveDate,
        missed_reason: MissedReason,
    }
    Appointment AppointmentCancelled "1" {
        appointment_id: AppointmentId,
        on: NaiveDate,
        cancelled_by: Option<MissedReason>,
    }
    Appointment AppointmentRescheduled "1" {
        appointment_id: AppointmentId,
        on: NaiveDate,
        rescheduled_for: DateTime<Utc>,
    }
    Case EntryVoided "1" {
        /// The earlier public event that was entered in error; consumers undo what it did.
        voided_event_id: EventId,
        /// One of the published event types.
        #[schemars(regex(pattern = "^[A-Z][A-Za-z]*$"), length(min = 1, max = 64))]
        voided_event_type: String,
    }
}

/// Shapes that were published once and no longer are, kept so that their schema files stay
/// generated and a consumer can still read the messages the stream retains. Version 1 of the four
/// referral statuses carried the case manager's free-text reason; it was last published by
/// releases before 2026-11-30, and version 2 replaces it on the same subjects.
pub mod v1 {
    use chrono::NaiveDate;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    use crate::{ReferralId, ReferralOutcome, Text};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct ReferralDeclined {
        pub referral_id: ReferralId,
        pub on: NaiveDate,
        pub reason: Text,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct ReferralCancellationRequested {
        pub referral_id: ReferralId,
        pub on: NaiveDate,
        pub reason: Text,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct ReferralCancelled {
        pub referral_id: ReferralId,
        pub on: NaiveDate,
        pub reason: Option<Text>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct ReferralCompleted {
        pub referral_id: ReferralId,
        pub on: NaiveDate,
        pub outcome: ReferralOutcome,
        pub reason: Option<Text>,
    }
}

/// The JSON Schemas of retired shapes: (event type, version, schema).
pub fn retired_schemas() -> Vec<(&'static str, &'static str, serde_json::Value)> {
    vec![
        (
            "ReferralDeclined",
            "1",
            message_schema::<v1::ReferralDeclined>("ReferralDeclined", "1"),
        ),
        (
            "ReferralCancellationRequested",
            "1",
            message_schema::<v1::ReferralCancellationRequested>(
                "ReferralCancellationRequested",
                "1",
            ),
        ),
        (
            "ReferralCancelled",
            "1",
            message_schema::<v1::ReferralCancelled>("ReferralCancelled", "1"),
        ),
        (
            "ReferralCompleted",
            "1",
            message_schema::<v1::ReferralCompleted>("ReferralCompleted", "1"),
        ),
    ]
}

/// The message schema of one event type: the envelope's fields, `event_type` and
/// `event_version` fixed, and `data` of the type's shape; nothing else is allowed.
fn message_schema<D: JsonSchema>(event_type: &str, version: &str) -> serde_json::Value {
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
        serde_json::json!({"const": version}),
    );
    properties.insert("data".into(), data.to_value());
    required.extend([serde_json::json!("event_type"), serde_json::json!("data")]);
    let mut schema = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!(
            "https://linkage.example/schemas/public/{CONTRACT_VERSION}/{}",
            schema_file(event_type, version)
        ),
        "title": if version == "1" {
            format!("Linkage {event_type} ({CONTRACT_VERSION})")
        } else {
            format!("Linkage {event_type} version {version} ({CONTRACT_VERSION})")
        },
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
        for (name, version, schema) in schemas.into_iter().chain(retired_schemas()) {
            assert_eq!(schema["properties"]["event_type"]["const"], name);
            assert_eq!(schema["properties"]["event_version"]["const"], version);
            assert_eq!(schema["additionalProperties"], false);
        }
    }
}
