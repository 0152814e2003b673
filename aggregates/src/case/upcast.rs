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
/// Version 1 knew nothing of duplicate intakes: none was reviewed.
const CASE_OPENED: AddFields = AddFields {
    event_type: "CaseOpened",
    fields: r#"{"duplicate_reviewed": null}"#,
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

/// The reason code a status recorded before codes were kept gets when there is no outcome to
/// imply one.
#[derive(Clone, Copy)]
enum Fallback {
    /// `other`: the status always had a reason (declines, cancellation requests).
    Other,
    /// `other` if it had a reason, none if not (cancellations).
    OtherIfReason,
    /// None (completions: a reason was optional and the outcome says how the loop closed).
    Nothing,
}

/// A referral status's last version without `reason_code` -> the next: the code its outcome
/// implies (`StatusReason::implied_by`, the same rule a new command follows), or the fallback.
/// The free-text reason is never read for a code: nobody can tell a code from it.
struct AddReasonCode {
    event_type: &'static str,
    from: &'static str,
    to: &'static str,
    fallback: Fallback,
}

impl EventUpcaster for AddReasonCode {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == self.event_type && event_version == self.from
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(body) = event
            .payload
            .get_mut(self.event_type)
            .and_then(Value::as_object_mut)
        {
            let implied = body
                .get("outcome")
                .and_then(|o| serde_json::from_value::<schemas::ReferralOutcome>(o.clone()).ok())
                .and_then(schemas::StatusReason::implied_by);
            let had_reason = body.get("reason").is_some_and(|r| !r.is_null());
            let code = implied.or(match self.fallback {
                Fallback::Other => Some(schemas::StatusReason::Other),
                Fallback::OtherIfReason if had_reason => Some(schemas::StatusReason::Other),
                Fallback::OtherIfReason | Fallback::Nothing => None,
            });
            body.insert(
                "reason_code".into(),
                code.map_or(Value::Null, |c| Value::String(c.as_str().into())),
            );
        }
        event.event_version = self.to.into();
        event
    }
}

const DECLINED_CODED: AddReasonCode = AddReasonCode {
    event_type: "ReferralDeclined",
    from: "2",
    to: "3",
    fallback: Fallback::Other,
};
const CANCELLATION_REQUESTED_CODED: AddReasonCode = AddReasonCode {
    event_type: "ReferralCancellationRequested",
    from: "1",
    to: "2",
    fallback: Fallback::Other,
};
const CANCELLED_CODED: AddReasonCode = AddReasonCode {
    event_type: "ReferralCancelled",
    from: "2",
    to: "3",
    fallback: Fallback::OtherIfReason,
};
const COMPLETED_CODED: AddReasonCode = AddReasonCode {
    event_type: "ReferralCompleted",
    from: "2",
    to: "3",
    fallback: Fallback::Nothing,
};

/// Every upcaster, in the order they apply: a version 1 event goes through each step to the
/// current version.
static UPCASTERS: [&dyn EventUpcaster; 11] = [
    &AppointmentScheduledMadeOn,
    &CASE_OPENED,
    &REFERRAL_ACCEPTED,
    &REFERRAL_DECLINED,
    &REFERRAL_CANCELLED,
    &REFERRAL_COMPLETED,
    &CONTACT_LOGGED,
    &DECLINED_CODED,
    &CANCELLATION_REQUESTED_CODED,
    &CANCELLED_CODED,
    &COMPLETED_CODED,
];

/// Every upcaster, for cqrs-es's `PersistedEventStore::with_upcasters` (which applies each that
/// can upcast, in this order, as `decode` does).
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![
        Box::new(AppointmentScheduledMadeOn),
        Box::new(CASE_OPENED),
        Box::new(REFERRAL_ACCEPTED),
        Box::new(REFERRAL_DECLINED),
        Box::new(REFERRAL_CANCELLED),
        Box::new(REFERRAL_COMPLETED),
        Box::new(CONTACT_LOGGED),
        Box::new(DECLINED_CODED),
        Box::new(CANCELLATION_REQUESTED_CODED),
        Box::new(CANCELLED_CODED),
        Box::new(COMPLETED_CODED),
    ]
}

/// A stored event of any version as the current `CaseEvent`, from its payload's JSON text. A
/// current one is read straight from the text into the event (no `serde_json::Value` in
/// between: projections decode every event of a rebuild); an older one is lifted first.
pub fn decode(
    event_type: &str,
    event_version: &str,
    payload: &str,
    metadata: &HashMap<String, String>,
) -> Result<CaseEvent, serde_json::Error> {
    if !UPCASTERS
        .iter()
        .any(|u| u.can_upcast(event_type, event_version))
    {
        return serde_json::from_str(payload);
    }
    let mut event = SerializedEvent {
        aggregate_id: String::new(),
        sequence: 0,
        aggregate_type: "Case".into(),
        event_type: event_type.to_owned(),
        event_version: event_version.to_owned(),
        payload: serde_json::from_str(payload)?,
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

    /// `decode` of a payload written as a `Value`.
    fn decode(
        event_type: &str,
        event_version: &str,
        payload: &Value,
        metadata: &HashMap<String, String>,
    ) -> Result<CaseEvent, serde_json::Error> {
        super::decode(event_type, event_version, &payload.to_string(), metadata)
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
    fn statuses_recorded_before_codes_get_the_code_their_outcome_implies() {
        use schemas::StatusReason as R;
        let id = "0190c6f2-5a8e-7c3b-9a43-0d2f1c6e4b12";
        let code = |event_type: &str, version: &str, body: Value| {
            let e = decode(
                event_type,
                version,
                &json!({ event_type: body }),
                &HashMap::new(),
            )
            .unwrap_or_else(|e| panic!("{event_type} v{version}: {e}"));
            match e {
                CaseEvent::ReferralDeclined { reason_code, .. }
                | CaseEvent::ReferralCancellationRequested { reason_code, .. } => Some(reason_code),
                CaseEvent::ReferralCancelled { reason_code, .. }
                | CaseEvent::ReferralCompleted { reason_code, .. } => reason_code,
                other => panic!("{other:?}"),
            }
        };
        let reported = json!({"by": "unrecorded"});
        let on = "2026-01-22";
        // (type, stored version, payload, the code it reads with); version 1 goes through 2.
        let table = [
            (
                "ReferralDeclined",
                "1",
                json!({"referral_id": id, "on": on, "reason": "full"}),
                Some(R::Other),
            ),
            (
                "ReferralDeclined",
                "2",
                json!({"referral_id": id, "on": on, "reason": "full",
                "outcome": "no_capacity", "reported": reported}),
                Some(R::NoCapacity),
            ),
            (
                "ReferralCancellationRequested",
                "1",
                json!({"referral_id": id, "on": on,
                "reason": "moved"}),
                Some(R::Other),
            ),
            (
                "ReferralCancelled",
                "1",
                json!({"referral_id": id, "on": on, "reason": null}),
                None,
            ),
            (
                "ReferralCancelled",
                "2",
                json!({"referral_id": id, "on": on,
                "reason": "moved away", "outcome": null}),
                Some(R::Other),
            ),
            (
                "ReferralCompleted",
                "2",
                json!({"referral_id": id, "on": on, "outcome": "connected",
                "reason": null, "reported": reported}),
                None,
            ),
            (
                "ReferralCompleted",
                "1",
                json!({"referral_id": id, "on": on,
                "outcome": "unable_to_contact", "reason": null}),
                Some(R::UnableToContact),
            ),
        ];
        for (event_type, version, body, want) in table {
            assert_eq!(
                code(event_type, version, body),
                want,
                "{event_type} v{version}"
            );
        }
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
