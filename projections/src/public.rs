//! The bus projection: which stored events other services see, and as what. Pure: the relay
//! (services) reads the log, calls `to_public` and publishes what comes back under `subject`.
//!
//! Published: the case's lifecycle (opened, transitioned, reopened), every referral and
//! appointment event, and a void of one of those. Not published: assignments, screenings, care
//! plans, contacts, and voids of them: they are clinical or internal, and nobody outside needs
//! them to close a referral loop.

use aggregates::CaseEvent;
use chrono::{DateTime, Utc};
use schemas::public::*;
use schemas::{AgencyId, CaseId, EventId};

/// What the log knows about a stored event besides its payload.
#[derive(Debug, Clone, Copy)]
pub struct StoredFacts<'a> {
    pub case_id: CaseId,
    pub agency: &'a AgencyId,
    pub event_id: EventId,
    pub sequence: u64,
    pub recorded_at: DateTime<Utc>,
    /// From the event's metadata; the recorded time when absent.
    pub occurred_at: Option<DateTime<Utc>>,
}

/// The public message for a stored event, or `None` when the event is not published.
pub fn to_public(facts: StoredFacts<'_>, event: CaseEvent) -> Option<PublicMessage> {
    let event = public_event(event)?;
    Some(PublicMessage {
        envelope: Envelope {
            event_id: facts.event_id,
            event_version: event.event_version().to_owned(),
            case_id: facts.case_id,
            agency: facts.agency.clone(),
            case_sequence: facts.sequence,
            occurred_at: facts.occurred_at.unwrap_or(facts.recorded_at),
            recorded_at: facts.recorded_at,
        },
        event,
    })
}

/// `<prefix>.v1.<agency>.<entity>.<event_type>`, e.g. `linkage.v1.north.referral.ReferralSent`.
/// An agency id may contain `.`, which separates subject tokens: it is written as `~` (which an
/// agency id cannot contain), so the mapping stays one to one.
pub fn subject(prefix: &str, message: &PublicMessage) -> String {
    format!(
        "{prefix}.{CONTRACT_VERSION}.{}.{}.{}",
        subject_token(message.envelope.agency.as_str()),
        message.event.entity().as_str(),
        message.event.event_type()
    )
}

/// An agency id as one subject token.
pub fn subject_token(agency: &str) -> String {
    agency.replace('.', "~")
}

fn public_event(event: CaseEvent) -> Option<PublicEvent> {
    use CaseEvent as E;
    use PublicEvent as P;
    Some(match event {
        E::CaseOpened {
            program,
            intake_date,
            ..
        } => P::CaseOpened(CaseOpened {
            program,
            intake_date,
        }),
        E::CaseTransitioned {
            kind,
            effective_on,
            cancelled_referrals,
            carried_over_referrals,
            ..
        } => P::CaseTransitioned(CaseTransitioned {
            kind,
            effective_on,
            cancelled_referrals,
            carried_over_referrals,
        }),
        E::CaseReopened { on, .. } => P::CaseReopened(CaseReopened { on }),
        E::ReferralSent {
            referral_id,
            service_type,
            provider,
            urgency,
            sent_on,
            do_not_contact_subject,
            ..
        } => P::ReferralSent(ReferralSent {
            referral_id,
            service_type,
            provider_id: provider.id,
            urgency,
            sent_on,
            do_not_contact_subject,
        }),
        E::ReferralAccepted {
            referral_id, on, ..
        } => P::ReferralAccepted(ReferralAccepted { referral_id, on }),
        // A status's free-text reason never leaves the case record: the bus carries its code.
        E::ReferralDeclined {
            referral_id,
            on,
            outcome,
            reason_code,
            ..
        } => P::ReferralDeclined(ReferralDeclined {
            referral_id,
            on,
            outcome,
            reason_code,
        }),
        E::ReferralCancellationRequested {
            referral_id,
            on,
            reason_code,
            ..
        } => P::ReferralCancellationRequested(ReferralCancellationRequested {
            referral_id,
            on,
            reason_code,
        }),
        E::ReferralCancelled {
            referral_id,
            on,
            outcome,
            reason_code,
            ..
        } => P::ReferralCancelled(ReferralCancelled {
            referral_id,
            on,
            outcome,
            reason_code,
        }),
        E::ReferralCompleted {
            referral_id,
            on,
            outcome,
            reason_code,
            ..
        } => P::ReferralCompleted(ReferralCompleted {
            referral_id,
            on,
            outcome,
            reason_code,
        }),
        E::AppointmentScheduled {
            appointment_id,
            referral_id,
            scheduled_for,
            ..
        } => P::AppointmentScheduled(AppointmentScheduled {
            appointment_id,
            referral_id,
            scheduled_for,
        }),
        E::AppointmentKept { appointment_id, on } => {
            P::AppointmentKept(AppointmentKept { appointment_id, on })
        }
        E::AppointmentMissed {
            appointment_id,
            on,
            missed_reason,
        } => P::AppointmentMissed(AppointmentMissed {
            appointment_id,
            on,
            missed_reason,
        }),
        E::AppointmentCancelled {
            appointment_id,
            on,
            cancelled_by,
        } => P::AppointmentCancelled(AppointmentCancelled {
            appointment_id,
            on,
            cancelled_by,
        }),
        E::AppointmentRescheduled {
            appointment_id,
            on,
            rescheduled_for,
        } => P::AppointmentRescheduled(AppointmentRescheduled {
            appointment_id,
            on,
            rescheduled_for,
        }),
        E::EntryVoided {
            voided_event_id,
            voided_event_type,
            ..
        } if PublicEvent::TYPES.contains(&voided_event_type.as_str()) => {
            P::EntryVoided(EntryVoided {
                voided_event_id,
                voided_event_type,
            })
        }
        E::EntryVoided { .. }
        | E::CaseManagerAssigned { .. }
        | E::ScreeningRecorded { .. }
        | E::CarePlanRevised { .. }
        | E::ContactLogged { .. } => return None,
    })
}

#[cfg(test)]
mod tests {
    use aggregates::case::{Child, Provider};
    use chrono::NaiveDate;
    use schemas::*;

    use super::*;

    fn facts(agency: &AgencyId) -> StoredFacts<'_> {
        StoredFacts {
            case_id: CaseId::generate(),
            agency,
            event_id: EventId::generate(),
            sequence: 2,
            recorded_at: Utc::now(),
            occurred_at: None,
        }
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 5, 4).unwrap()
    }

    #[test]
    fn a_case_opening_carries_nothing_about_the_child() {
        let agency = AgencyId::parse("north.county").unwrap();
        let opened = CaseEvent::CaseOpened {
            case_id: CaseId::generate(),
            agency: agency.clone(),
            program: Program::Tcm,
            intake_date: day(),
            child: Child {
                given_name: PersonName::parse("Synthia").unwrap(),
                family_name: PersonName::parse("Testcase").unwrap(),
                birth_date: NaiveDate::from_ymd_opt(2019, 1, 2).unwrap(),
                medicaid_id: Some(MedicaidId::parse("ZZ00000001").unwrap()),
            },
            guardians: vec![],
            referral_source: Some(Text::parse("school nurse").unwrap()),
            presenting_concerns: vec![Text::parse("sleep").unwrap()],
            duplicate_reviewed: None,
        };
        let m = to_public(facts(&agency), opened.clone()).expect("published");
        let text = serde_json::to_string(&m).unwrap();
        for secret in [
            "Synthia",
            "Testcase",
            "2019-01-02",
            "ZZ00000001",
            "school nurse",
            "sleep",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(
            subject("linkage", &m),
            "linkage.v1.north~county.case.CaseOpened"
        );
    }

    #[test]
    fn a_referral_keeps_the_provider_id_and_drops_the_clinical_reason() {
        let agency = AgencyId::parse("north").unwrap();
        let sent = CaseEvent::ReferralSent {
            referral_id: ReferralId::generate(),
            service_type: ServiceType::parse("outpatient_therapy").unwrap(),
            provider: Provider {
                id: ProviderId::parse("prov-7").unwrap(),
                name: Some(Text::parse("Example Clinic").unwrap()),
            },
            reason: Text::parse("night terrors since the move").unwrap(),
            goal_ids: vec![],
            urgency: Urgency::Urgent,
            sent_on: day(),
            do_not_contact_subject: true,
        };
        let m = to_public(facts(&agency), sent.clone()).expect("published");
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["data"]["provider_id"], "prov-7");
        assert_eq!(v["data"]["do_not_contact_subject"], true);
        assert!(!v.to_string().contains("night terrors"));
        assert_eq!(
            subject("linkage", &m),
            "linkage.v1.north.referral.ReferralSent"
        );
    }

    #[test]
    fn a_decline_goes_out_as_codes_at_version_2_without_its_words() {
        let agency = AgencyId::parse("north").unwrap();
        let declined = CaseEvent::ReferralDeclined {
            referral_id: ReferralId::generate(),
            on: day(),
            reason: Text::parse("mother started opioid treatment, family moving to her sister's")
                .unwrap(),
            outcome: Some(ReferralOutcome::FamilyDeclined),
            reported: aggregates::case::Reporter::Unrecorded,
            reason_code: StatusReason::FamilyMoved,
        };
        let m = to_public(facts(&agency), declined).expect("published");
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["event_version"], "2");
        assert_eq!(v["data"]["reason_code"], "family_moved");
        assert_eq!(v["data"]["outcome"], "family_declined");
        assert!(v["data"].get("reason").is_none(), "{v}");
        for word in ["opioid", "sister", "mother"] {
            assert!(!v.to_string().contains(word), "{word} on the bus: {v}");
        }
    }

    #[test]
    fn clinical_events_and_their_voids_are_not_published() {
        let agency = AgencyId::parse("north").unwrap();
        let contact = CaseEvent::ContactLogged {
            activity_id: ActivityId::generate(),
            component: TcmComponent::Monitoring,
            contact_type: ContactType::Phone,
            with: vec![Participant::Guardian],
            occurred_at: Utc::now(),
            stated_offset_seconds: Some(0),
            minutes: Minutes::parse(10).unwrap(),
            note: None,
            location: None,
        };
        assert!(to_public(facts(&agency), contact.clone()).is_none());
        let void_of = |t: &str| CaseEvent::EntryVoided {
            voided_event_id: EventId::generate(),
            voided_sequence: 1,
            voided_event_type: t.to_owned(),
            reason: Text::parse("entered on the wrong case").unwrap(),
        };
        assert!(to_public(facts(&agency), void_of("ContactLogged")).is_none());
        let m = to_public(facts(&agency), void_of("ReferralAccepted")).expect("published");
        assert!(!serde_json::to_string(&m).unwrap().contains("wrong case"));
    }
}
