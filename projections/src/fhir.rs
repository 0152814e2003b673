//! Referrals as HL7 FHIR R4 resources, for the provider at the other end (HL7 BSeR, the Gravity
//! SDOH Clinical Care guide): one ServiceRequest (what is asked) and one Task (its fulfilment,
//! whose status the recipient reads and updates) per referral, the child as a Patient, the
//! agency and each provider as an Organization.
//!
//! The projection keeps, per case, the folded case (without contacts, which no referral
//! resource shows) and a version and a time per referral and for the child: a resource's
//! `meta.versionId` counts the events that changed what it shows, and `meta.lastUpdated` is the
//! time the newest of them was recorded. The mapping of the referral's states onto Task.status
//! and BSeR's business statuses is data (`MAPPING`), the table the contract shows.

use std::collections::BTreeMap;

use aggregates::case::{Appointment, Referral};
use aggregates::Case;
use chrono::{DateTime, Utc};
use schemas::fhir::{
    system, CodeableConcept, HumanName, Identifier, Meta, Organization, Patient, Reference,
    ServiceRequest, Task, TaskOutput,
};
use schemas::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::log::{ApplyError, LogEvent};

/// When a resource last changed and how often it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touch {
    /// Events that changed it, the first included: its `meta.versionId`.
    pub version: u64,
    /// When the first of them was recorded (a Task's `authoredOn`).
    pub created: DateTime<Utc>,
    /// When the newest of them was recorded: its `meta.lastUpdated`.
    pub last_updated: DateTime<Utc>,
}

impl Touch {
    fn new(at: DateTime<Utc>) -> Self {
        Self {
            version: 1,
            created: at,
            last_updated: at,
        }
    }

    fn again(&mut self, at: DateTime<Utc>) {
        self.version += 1;
        self.last_updated = at;
    }

    pub fn meta(&self) -> Meta {
        Meta {
            version_id: self.version.to_string(),
            last_updated: self.last_updated,
        }
    }
}

/// The projection's state of one case.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FhirCase {
    /// The case folded without its contacts.
    pub case: Case,
    /// The child, as a Patient.
    pub patient: Option<Touch>,
    pub referrals: BTreeMap<ReferralId, Touch>,
}

/// What one referral shows: it and its appointments (compared before and after each event).
fn shown(case: &Case, id: ReferralId) -> (Option<&Referral>, Vec<&Appointment>) {
    (
        case.referrals.iter().find(|r| r.referral_id == id),
        case.appointments
            .iter()
            .filter(|a| a.referral_id == id)
            .collect(),
    )
}

type Shown = (Option<Referral>, Vec<Appointment>);

fn owned(case: &Case, id: ReferralId) -> Shown {
    let (r, a) = shown(case, id);
    (r.cloned(), a.into_iter().cloned().collect())
}

/// Folds a case's events of one batch, in log order, onto its state; the ids of the referrals
/// whose resources changed.
pub fn fold(state: &mut FhirCase, events: &[&LogEvent]) -> Result<Vec<ReferralId>, ApplyError> {
    let mut changed = Vec::new();
    for e in events {
        // Idempotent: an event this state already holds (a batch replayed) changes nothing.
        let sequence = e.event.sequence;
        if sequence <= state.case.version {
            continue;
        }
        let event = e.event.case_event()?;
        if matches!(event, aggregates::CaseEvent::ContactLogged { .. }) {
            state.case.version = sequence;
            continue;
        }
        let at = e.event.recorded_at;
        let before: Vec<(ReferralId, Shown)> = state
            .case
            .referrals
            .iter()
            .map(|r| (r.referral_id, owned(&state.case, r.referral_id)))
            .collect();
        let child_before = state.case.opened.as_ref().map(|o| o.child.clone());
        state.case.apply_at(sequence, event);
        let child_after = state.case.opened.as_ref().map(|o| &o.child);
        if child_after.is_some() && child_before.as_ref() != child_after {
            match &mut state.patient {
                Some(t) => t.again(at),
                None => state.patient = Some(Touch::new(at)),
            }
        }
        for r in &state.case.referrals {
            let id = r.referral_id;
            let now = shown(&state.case, id);
            let was = before.iter().find(|(b, _)| *b == id).map(|(_, s)| s);
            let same = was.is_some_and(|(wr, wa)| {
                wr.as_ref() == now.0
                    && wa.len() == now.1.len()
                    && wa.iter().zip(&now.1).all(|(a, b)| a == *b)
            });
            if same {
                continue;
            }
            match state.referrals.get_mut(&id) {
                Some(t) => t.again(at),
                None => {
                    state.referrals.insert(id, Touch::new(at));
                }
            }
            if !changed.contains(&id) {
                changed.push(id);
            }
        }
    }
    Ok(changed)
}

/// Every version of a referral's Task, oldest first: the case's events folded one at a time,
/// the Task taken after each that changed it (its businessStatus history, appointments
/// included).
pub fn task_history(events: &[&LogEvent], id: ReferralId) -> Result<Vec<Task>, ApplyError> {
    let mut state = FhirCase::default();
    let mut versions = Vec::new();
    for e in events {
        if fold(&mut state, std::slice::from_ref(e))?.contains(&id) {
            versions.extend(task(&state, id));
        }
    }
    Ok(versions)
}

/// A BSeR business status (`system::BSER_BUSINESS_STATUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BusinessStatus {
    pub code: &'static str,
    pub display: &'static str,
}

/// One row of the mapping: a referral's status as clients see it (and, for a scheduled one, its
/// latest appointment's) to the Task's status and business status and the ServiceRequest's
/// status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StatusMapping {
    pub referral: ReferralStatus,
    pub appointment: Option<AppointmentStatus>,
    pub task_status: &'static str,
    pub business_status: BusinessStatus,
    pub service_request_status: &'static str,
}

const fn row(
    referral: ReferralStatus,
    appointment: Option<AppointmentStatus>,
    task_status: &'static str,
    code: &'static str,
    display: &'static str,
    service_request_status: &'static str,
) -> StatusMapping {
    StatusMapping {
        referral,
        appointment,
        task_status,
        business_status: BusinessStatus { code, display },
        service_request_status,
    }
}

/// The mapping, as the contract's table shows it. A referral's Task.status follows the
/// referral; while it is scheduled, the business status follows its latest appointment (an
/// appointment cancelled or missed leaves the referral open, so the Task stays in progress).
pub const MAPPING: &[StatusMapping] = {
    use AppointmentStatus as A;
    use ReferralStatus as R;
    &[
        row(
            R::Sent,
            None,
            "requested",
            "2.0",
            "Service Request Created",
            "active",
        ),
        row(
            R::Accepted,
            None,
            "accepted",
            "3.0",
            "Service Request Accepted",
            "active",
        ),
        row(
            R::Declined,
            None,
            "rejected",
            "4.0",
            "Service Request Declined",
            "revoked",
        ),
        row(
            R::Scheduled,
            Some(A::Scheduled),
            "in-progress",
            "5.1.1",
            "Service Request Event Scheduled",
            "active",
        ),
        row(
            R::Scheduled,
            Some(A::Missed),
            "in-progress",
            "5.1.2",
            "Scheduled Service Request Event Unattended",
            "active",
        ),
        row(
            R::Scheduled,
            Some(A::Cancelled),
            "in-progress",
            "5.1.3",
            "Scheduled Service Request Event Cancelled",
            "active",
        ),
        row(
            R::Scheduled,
            Some(A::Kept),
            "in-progress",
            "5.1.4",
            "Service Request Event Completed",
            "active",
        ),
        row(
            R::CancellationRequested,
            None,
            "in-progress",
            "5.2",
            "Service Request Cancellation Requested",
            "active",
        ),
        row(
            R::Cancelled,
            None,
            "cancelled",
            "6.0",
            "Service Request Fulfillment Cancelled",
            "revoked",
        ),
        row(
            R::Completed,
            None,
            "completed",
            "7.0",
            "Service Request Fulfillment Completed",
            "completed",
        ),
    ]
};

/// The row for a referral of `case`.
pub fn mapping(case: &Case, r: &Referral) -> &'static StatusMapping {
    let status = case.referral_status(r);
    let appointment = match status {
        ReferralStatus::Scheduled => latest_appointment(case, r.referral_id).map(|a| a.status()),
        _ => None,
    };
    MAPPING
        .iter()
        .find(|m| m.referral == status && m.appointment == appointment)
        .or_else(|| MAPPING.iter().find(|m| m.referral == status))
        .expect("every referral status has a row")
}

/// A referral voided in error: its Task's and its ServiceRequest's status.
pub const ENTERED_IN_ERROR: &str = "entered-in-error";

/// The Task.status of a referral of `case` (what the search rows hold).
pub fn task_status(case: &Case, r: &Referral) -> &'static str {
    match r.voided {
        true => ENTERED_IN_ERROR,
        false => mapping(case, r).task_status,
    }
}

/// Each of `statuses` once, in order.
fn distinct(statuses: impl Iterator<Item = &'static str>) -> Vec<&'static str> {
    let mut out = Vec::new();
    for s in statuses {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Every Task.status served.
pub fn task_statuses() -> Vec<&'static str> {
    distinct(
        MAPPING
            .iter()
            .map(|m| m.task_status)
            .chain([ENTERED_IN_ERROR]),
    )
}

/// Every ServiceRequest.status served.
pub fn service_request_statuses() -> Vec<&'static str> {
    distinct(
        MAPPING
            .iter()
            .map(|m| m.service_request_status)
            .chain([ENTERED_IN_ERROR]),
    )
}

/// The Task statuses a ServiceRequest status goes with (a ServiceRequest search runs on the
/// Tasks' rows).
pub fn task_statuses_behind(service_request_status: &str) -> Vec<&'static str> {
    if service_request_status == ENTERED_IN_ERROR {
        return vec![ENTERED_IN_ERROR];
    }
    distinct(
        MAPPING
            .iter()
            .filter(|m| m.service_request_status == service_request_status)
            .map(|m| m.task_status),
    )
}

/// The live appointment of a referral that was made or changed last.
pub fn latest_appointment(case: &Case, id: ReferralId) -> Option<&Appointment> {
    let made = |a: &Appointment| {
        case.entries.iter().find_map(|(sequence, e)| {
            matches!(e, aggregates::EntryRef::AppointmentScheduled(x) if *x == a.appointment_id)
                .then_some(*sequence)
        })
    };
    case.appointments
        .iter()
        .filter(|a| a.referral_id == id && !a.voided)
        .max_by_key(|a| {
            let changed = a
                .history
                .iter()
                .filter(|c| !c.voided)
                .map(|c| c.sequence)
                .max();
            changed.max(made(a))
        })
}

/// The namespace of the Organization ids (UUID v5 of `agency/<id>` or `provider/<id>`): FHIR ids
/// allow only letters, digits, `-` and `.`, up to 64, and agency and provider ids may hold `_`
/// and `@`.
const ORGANIZATION_NAMESPACE: Uuid = Uuid::from_u128(0x5d0c_7d1e_8a0b_4f43_9b1e_2c9a_6c51_7e02);

/// The Organization id of an agency.
pub fn agency_organization_id(agency: &AgencyId) -> String {
    Uuid::new_v5(
        &ORGANIZATION_NAMESPACE,
        format!("agency/{agency}").as_bytes(),
    )
    .to_string()
}

/// The Organization id of a provider.
pub fn provider_organization_id(provider: &ProviderId) -> String {
    Uuid::new_v5(
        &ORGANIZATION_NAMESPACE,
        format!("provider/{provider}").as_bytes(),
    )
    .to_string()
}

pub fn agency_organization(agency: &AgencyId) -> Organization {
    Organization {
        id: agency_organization_id(agency),
        identifier: vec![Identifier::of(system::AGENCY, agency.as_str())],
        active: true,
        name: None,
    }
}

pub fn provider_organization(provider: &ProviderId, name: Option<&str>) -> Organization {
    Organization {
        id: provider_organization_id(provider),
        identifier: vec![Identifier::of(system::PROVIDER, provider.as_str())],
        active: true,
        name: name.map(str::to_owned),
    }
}

fn referral_of(state: &FhirCase, id: ReferralId) -> Option<(&Referral, &Touch, &AgencyId)> {
    let r = state.case.referrals.iter().find(|r| r.referral_id == id)?;
    let touch = state.referrals.get(&id)?;
    let agency = state.case.agency()?;
    Some((r, touch, agency))
}

fn case_id_of(state: &FhirCase) -> Option<String> {
    state.case.opened.as_ref().map(|o| o.case_id.to_string())
}

/// The Task of a referral.
pub fn task(state: &FhirCase, id: ReferralId) -> Option<Task> {
    let (r, touch, agency) = referral_of(state, id)?;
    let case = &state.case;
    let id_text = id.to_string();
    let status = task_status(case, r);
    let business_status = (!r.voided).then(|| {
        let m = mapping(case, r);
        CodeableConcept::of(
            system::BSER_BUSINESS_STATUS,
            m.business_status.code,
            Some(m.business_status.display),
        )
    });
    let status_reason = matches!(status, "rejected" | "cancelled" | "in-progress")
        .then(|| r.history.iter().rev().find(|c| !c.voided))
        .flatten()
        .filter(|c| {
            matches!(
                c.status,
                ReferralStatus::Declined
                    | ReferralStatus::Cancelled
                    | ReferralStatus::CancellationRequested
            )
        })
        .and_then(|c| c.reason_code)
        .map(|code| CodeableConcept::of(system::STATUS_REASON, code.as_str(), None));
    let mut output: Vec<TaskOutput> = case
        .appointments
        .iter()
        .filter(|a| a.referral_id == id && !a.voided)
        .map(|a| TaskOutput {
            kind: CodeableConcept::of(
                system::TASK_OUTPUT,
                &format!("appointment-{}", a.status()),
                None,
            ),
            value_date_time: Some(a.scheduled_for()),
            value_codeable_concept: None,
        })
        .collect();
    if let Some(outcome) = r.outcome.filter(|_| !r.voided) {
        output.push(TaskOutput {
            kind: CodeableConcept::of(system::TASK_OUTPUT, "referral-outcome", None),
            value_date_time: None,
            value_codeable_concept: Some(CodeableConcept::of(
                system::REFERRAL_OUTCOME,
                outcome.as_str(),
                None,
            )),
        });
    }
    Some(Task {
        id: Some(id_text.clone()),
        meta: Some(touch.meta()),
        identifier: vec![Identifier::of(system::REFERRAL, &id_text)],
        status: status.to_owned(),
        status_reason,
        business_status,
        intent: "order".into(),
        priority: Some(r.urgency.to_string()),
        code: Some(CodeableConcept::of(
            system::TASK_CODE,
            "fulfill",
            Some("Fulfill the focal request"),
        )),
        focus: Some(Reference::to("ServiceRequest", &id_text, None)),
        for_: case_id_of(state).map(|c| Reference::to("Patient", &c, None)),
        authored_on: Some(touch.created),
        last_modified: Some(touch.last_updated),
        requester: Some(Reference::to(
            "Organization",
            &agency_organization_id(agency),
            None,
        )),
        owner: Some(Reference::to(
            "Organization",
            &provider_organization_id(&r.provider.id),
            r.provider.name.as_ref().map(|n| n.as_str()),
        )),
        output,
    })
}

/// The ServiceRequest of a referral. Its version is the Task's (the two change together).
pub fn service_request(state: &FhirCase, id: ReferralId) -> Option<ServiceRequest> {
    let (r, touch, agency) = referral_of(state, id)?;
    let id_text = id.to_string();
    let status = match r.voided {
        true => ENTERED_IN_ERROR,
        false => mapping(&state.case, r).service_request_status,
    };
    Some(ServiceRequest {
        id: Some(id_text.clone()),
        meta: Some(touch.meta()),
        identifier: vec![Identifier::of(system::REFERRAL, &id_text)],
        status: status.to_owned(),
        intent: "order".into(),
        priority: r.urgency.to_string(),
        code: CodeableConcept::of(system::SERVICE_TYPE, r.service_type.as_str(), None),
        order_detail: r
            .do_not_contact_subject
            .then(|| {
                CodeableConcept::of(
                    system::SDOHCC_TEMPORARY,
                    "contacting-subject-prohibited",
                    Some("Contacting Subject Prohibited"),
                )
            })
            .into_iter()
            .collect(),
        subject: Reference::to("Patient", &case_id_of(state)?, None),
        authored_on: r.sent_on,
        requester: Reference::to("Organization", &agency_organization_id(agency), None),
        performer: vec![Reference::to(
            "Organization",
            &provider_organization_id(&r.provider.id),
            r.provider.name.as_ref().map(|n| n.as_str()),
        )],
    })
}

/// The child as a Patient: name and birth date, and the Medicaid id when `with_medicaid_id`
/// (agency staff; a recipient provider is not shown it).
pub fn patient(state: &FhirCase, with_medicaid_id: bool) -> Option<Patient> {
    let o = state.case.opened.as_ref()?;
    let touch = state.patient?;
    let child = &o.child;
    let identifier = match (&child.medicaid_id, with_medicaid_id) {
        (Some(m), true) => vec![Identifier {
            kind: Some(CodeableConcept::of(
                system::V2_0203,
                "MA",
                Some("Patient Medicaid number"),
            )),
            system: Some(system::MEDICAID_ID.to_owned()),
            value: Some(m.as_str().to_owned()),
        }],
        _ => vec![],
    };
    Some(Patient {
        id: o.case_id.to_string(),
        meta: touch.meta(),
        identifier,
        name: vec![HumanName {
            family: child.family_name.as_str().to_owned(),
            given: vec![child.given_name.as_str().to_owned()],
        }],
        birth_date: child.birth_date,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_referral_status_has_a_row_and_rows_are_unique() {
        for status in [
            ReferralStatus::Sent,
            ReferralStatus::Accepted,
            ReferralStatus::Scheduled,
            ReferralStatus::Declined,
            ReferralStatus::CancellationRequested,
            ReferralStatus::Cancelled,
            ReferralStatus::Completed,
        ] {
            assert!(MAPPING.iter().any(|m| m.referral == status), "{status}");
        }
        for (i, a) in MAPPING.iter().enumerate() {
            for b in &MAPPING[i + 1..] {
                assert!(
                    (a.referral, a.appointment) != (b.referral, b.appointment),
                    "{a:?}"
                );
                assert_ne!(a.business_status.code, b.business_status.code);
            }
        }
    }

    #[test]
    fn the_status_lists_come_from_the_mapping() {
        assert_eq!(
            task_statuses(),
            [
                "requested",
                "accepted",
                "rejected",
                "in-progress",
                "cancelled",
                "completed",
                "entered-in-error"
            ]
        );
        assert_eq!(
            service_request_statuses(),
            ["active", "revoked", "completed", "entered-in-error"]
        );
        assert_eq!(
            task_statuses_behind("active"),
            ["requested", "accepted", "in-progress"]
        );
        assert_eq!(task_statuses_behind("revoked"), ["rejected", "cancelled"]);
        assert_eq!(task_statuses_behind("completed"), ["completed"]);
        assert_eq!(
            task_statuses_behind("entered-in-error"),
            ["entered-in-error"]
        );
    }

    #[test]
    fn organization_ids_are_fhir_ids_and_differ_by_side() {
        let agency = AgencyId::parse("agency_a@x").unwrap();
        let provider = ProviderId::parse("agency_a@x").unwrap();
        let a = agency_organization_id(&agency);
        assert_ne!(a, provider_organization_id(&provider));
        assert!(a.len() <= 64);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert_eq!(a, agency_organization_id(&agency));
    }
}
