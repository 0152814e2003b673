//! Stored events of earlier versions, lifted to the current shape as they are read. A stored
//! event is never edited: a changed shape is a new `event_version`, and an upcaster here turns
//! the old payload into the new one on every read path (the command path through cqrs-es's
//! `with_upcasters`, projections, history and the bus through `decode`).

use std::collections::HashMap;

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use schemas::EventMetadata;
use serde_json::Value;

use super::events::CaseEvent;

/// `AppointmentScheduled` 1 -> 2: version 2 says when the appointment was made (`made_on`).
/// Version 1 was recorded as made when its command was received: the envelope's `occurred_at`.
struct AppointmentScheduledMadeOn;

impl EventUpcaster for AppointmentScheduledMadeOn {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "AppointmentScheduled" && event_version == "1"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        let occurred = serde_json::from_value::<HashMap<String, String>>(event.metadata.clone())
            .ok()
            .and_then(|m| EventMetadata::from_map(&m).ok())
            .and_then(|m| m.occurred_at);
        if let Some(body) = event
            .payload
            .get_mut("AppointmentScheduled")
            .and_then(Value::as_object_mut)
        {
            // Without an envelope time, the appointment was made no later than its own date.
            let made_on = occurred.map(|t| t.date_naive().to_string()).or_else(|| {
                body.get("scheduled_for")
                    .and_then(Value::as_str)
                    .map(|s| s.chars().take(10).collect())
            });
            if let Some(made_on) = made_on {
                body.insert("made_on".into(), Value::String(made_on));
            }
        }
        event.event_version = "2".into();
        event
    }
}

/// Version 1 -> 2 of an event whose version 2 only added fields, each with the value a
/// version 1 event means.
struct AddFields {
    event_type: &'static str,
    /// The added fields, as JSON.
    fields: &'static str,
}

impl EventUpcaster for AddFields {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == self.event_type && event_version == "1"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        let added: serde_json::Map<String, Value> =
            serde_json::from_str(self.fields).expect("static JSON");
        if let Some(body) = event
            .payload
            .get_mut(self.event_type)
            .and_then(Value::as_object_mut)
        {
            body.extend(added);
        }
        event.event_version = "2".into();
        event
    }
}

/// The referral statuses of version 1 did not say who reported them, and closed a loop with an
/// outcome only when completed.
const REFERRAL_ACCEPTED: AddFields = AddFields {
    event_type: "ReferralAccepted",
    fields: r#"{"reported": {"by": "unrecorded"}}"#,
};
const REFERRAL_DECLINED: AddFields = AddFields {
    event_type: "ReferralDeclined",
    fields: r#"{"outcome": null, "reported": {"by": "unrecorded"}}"#,
};
const REFERRAL_CANCELLED: AddFields = AddFields {
    event_type: "ReferralCancelled",
    fields: r#"{"outcome": null}"#,
};
/// Version 1 did not keep the offset a contact's time was written with.
const CONTACT_LOGGED: AddFields = AddFields {
    event_type: "ContactLogged",
    fields: r#"{"stated_offset_seconds": null}"#,
};
const REFERRAL_COMPLETED: AddFields = AddFields {
    event_type: "ReferralCompleted",
    fields: r#"{"reported": {"by": "unrecorded"}}"#,
};

/// Every upcaster, in the order they apply.
static UPCASTERS: [&dyn EventUpcaster; 6] = [
    &AppointmentScheduledMadeOn,
    &REFERRAL_ACCEPTED,
    &REFERRAL_DECLINED,
    &REFERRAL_CANCELLED,
    &REFERRAL_COMPLETED,
    &CONTACT_LOGGED,
];

/// Every upcaster, for cqrs-es's `PersistedEventStore::with_upcasters`.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![
        Box::new(AppointmentScheduledMadeOn),
        Box::new(REFERRAL_ACCEPTED),
        Box::new(REFERRAL_DECLINED),
        Box::new(REFERRAL_CANCELLED),
        Box::new(REFERRAL_COMPLETED),
        Box::new(CONTACT_LOGGED),
    ]
}

/// A stored event of any version as the current `CaseEvent`. A current one is read straight
/// from the stored payload; an older one is lifted first.
pub fn decode(
    event_type: &str,
    event_version: &str,
    payload: &Value,
    metadata: &HashMap<String, String>,
) -> Result<CaseEvent, serde_json::Error> {
    use serde::Deserialize;
    if !UPCASTERS
        .iter()
        .any(|u| u.can_upcast(event_type, event_version))
    {
        return CaseEvent::deserialize(payload);
    }
    let mut event = SerializedEvent {
        aggregate_id: String::new(),
        sequence: 0,
        aggregate_type: "Case".into(),
        event_type: event_type.to_owned(),
        event_version: event_version.to_owned(),
        payload: payload.clone(),
        metadata: serde_json::to_value(metadata)?,
    };
    for upcaster in UPCASTERS {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            event = upcaster.upcast(event);
        }
    }
    serde_json::from_value(event.payload)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn v1() -> Value {
        json!({"AppointmentScheduled": {
            "appointment_id": "0190c6f2-5a8e-7c3b-9a43-0d2f1c6e4b13",
            "referral_id": "0190c6f2-5a8e-7c3b-9a43-0d2f1c6e4b12",
            "scheduled_for": "2026-02-01T15:00:00Z"}})
    }

    fn made_on(e: CaseEvent) -> String {
        match e {
            CaseEvent::AppointmentScheduled { made_on, .. } => made_on.to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_version_1_appointment_was_made_when_its_command_was_received() {
        let metadata = HashMap::from([(
            "occurred_at".to_owned(),
            "2026-01-25T09:30:00+00:00".to_owned(),
        )]);
        let e = decode("AppointmentScheduled", "1", &v1(), &metadata).unwrap();
        assert_eq!(made_on(e), "2026-01-25");
        // Without an envelope time: no later than the appointment itself.
        let e = decode("AppointmentScheduled", "1", &v1(), &HashMap::new()).unwrap();
        assert_eq!(made_on(e), "2026-02-01");
    }

    #[test]
    fn a_current_event_reads_as_stored_and_an_old_one_does_not_without_its_upcaster() {
        let mut v2 = v1();
        v2["AppointmentScheduled"]["made_on"] = json!("2026-01-23");
        let e = decode("AppointmentScheduled", "2", &v2, &HashMap::new()).unwrap();
        assert_eq!(made_on(e), "2026-01-23");
        assert!(
            serde_json::from_value::<CaseEvent>(v1()).is_err(),
            "version 1 is not the current shape: the upcaster is what reads it"
        );
    }

    #[test]
    fn version_1_referral_statuses_read_as_unrecorded_reports_without_an_outcome() {
        let id = "0190c6f2-5a8e-7c3b-9a43-0d2f1c6e4b12";
        let e = decode(
            "ReferralAccepted",
            "1",
            &json!({"ReferralAccepted": {"referral_id": id, "on": "2026-01-22"}}),
            &HashMap::new(),
        )
        .unwrap();
        assert!(
            matches!(
                e,
                CaseEvent::ReferralAccepted {
                    reported: crate::case::Reporter::Unrecorded,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = decode(
            "ReferralDeclined",
            "1",
            &json!({"ReferralDeclined": {"referral_id": id, "on": "2026-01-22", "reason": "full"}}),
            &HashMap::new(),
        )
        .unwrap();
        assert!(
            matches!(
                e,
                CaseEvent::ReferralDeclined {
                    outcome: None,
                    reported: crate::case::Reporter::Unrecorded,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = decode(
            "ReferralCancelled",
            "1",
            &json!({"ReferralCancelled": {"referral_id": id, "on": "2026-01-22", "reason": null}}),
            &HashMap::new(),
        )
        .unwrap();
        assert!(
            matches!(e, CaseEvent::ReferralCancelled { outcome: None, .. }),
            "{e:?}"
        );
        let e = decode(
            "ReferralCompleted",
            "1",
            &json!({"ReferralCompleted": {"referral_id": id, "on": "2026-02-22",
                "outcome": "connected", "reason": null}}),
            &HashMap::new(),
        )
        .unwrap();
        assert!(
            matches!(
                e,
                CaseEvent::ReferralCompleted {
                    reported: crate::case::Reporter::Unrecorded,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn a_version_1_contact_kept_no_stated_offset() {
        let e = decode(
            "ContactLogged",
            "1",
            &json!({"ContactLogged": {"activity_id": "0190c6f2-5a8e-7c3b-9a43-0d2f1c6e4b16",
                "component": "monitoring", "contact_type": "phone", "with": ["guardian"],
                "occurred_at": "2026-02-01T10:00:00Z", "minutes": 20, "note": null,
                "location": null}}),
            &HashMap::new(),
        )
        .unwrap();
        assert!(
            matches!(
                e,
                CaseEvent::ContactLogged {
                    stated_offset_seconds: None,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
