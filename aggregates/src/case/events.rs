//! Stored events. Each is past tense with a stable `event_type` and `event_version`.
//!
//! A stored shape is never edited: to change one, add a new version and an upcaster
//! (cqrs-es `EventUpcaster`, in `upcast.rs`) that lifts old payloads. Every event here is version
//! "1" except `CaseOpened`, `AppointmentScheduled`, `ContactLogged`, `ReferralAccepted` and
//! `ReferralCancellationRequested` at "2", and `ReferralDeclined`, `ReferralCancelled` and
//! `ReferralCompleted` at "3".

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::DomainEvent;
use schemas::instruments::RatingValue;
use schemas::*;
use serde::{Deserialize, Serialize};

/// An intake that went ahead although open cases of the agency matched the child: why, and
/// which cases the intake worker reviewed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicateReview {
    pub reason: Text,
    pub matched: Vec<CaseId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Child {
    pub given_name: PersonName,
    pub family_name: PersonName,
    pub birth_date: NaiveDate,
    pub medicaid_id: Option<MedicaidId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guardian {
    pub name: PersonName,
    pub relationship: Option<Text>,
    pub phone: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Goal {
    pub goal_id: GoalId,
    pub description: Text,
    pub addresses: Vec<ItemCode>,
    pub target_date: Option<NaiveDate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeferredNeed {
    pub need: ItemCode,
    pub reason: Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provider {
    pub id: ProviderId,
    pub name: Option<Text>,
}

/// Who reported a status that belongs to the receiving side (HL7 BSeR: the recipient accepts,
/// declines and completes a referral).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Reporter {
    /// The provider's own system, through a `service` token bound to it.
    Provider { provider_id: ProviderId },
    /// Staff recording what the provider reported, and how they heard it.
    Staff {
        provider_id: ProviderId,
        channel: ReportChannel,
    },
    /// Recorded before Linkage kept who reported (version 1 events).
    Unrecorded,
}

// What a request carries becomes what the event records: one conversion per shape, so a decision
// never copies fields one by one.

impl From<wire::ChildIn> for Child {
    fn from(c: wire::ChildIn) -> Self {
        Self {
            given_name: c.given_name,
            family_name: c.family_name,
            birth_date: c.birth_date,
            medicaid_id: c.medicaid_id,
        }
    }
}

impl From<wire::GuardianIn> for Guardian {
    fn from(g: wire::GuardianIn) -> Self {
        Self {
            name: g.name,
            relationship: g.relationship,
            phone: g.phone,
        }
    }
}

/// A goal of the plan with the id the command gave it.
impl From<(GoalId, wire::GoalIn)> for Goal {
    fn from((goal_id, g): (GoalId, wire::GoalIn)) -> Self {
        Self {
            goal_id,
            description: g.description,
            addresses: g.addresses,
            target_date: g.target_date,
        }
    }
}

impl From<wire::DeferredNeedIn> for DeferredNeed {
    fn from(d: wire::DeferredNeedIn) -> Self {
        Self {
            need: d.need,
            reason: d.reason,
        }
    }
}

impl From<wire::ProviderIn> for Provider {
    fn from(p: wire::ProviderIn) -> Self {
        Self {
            id: p.id,
            name: p.name,
        }
    }
}

/// The events of a case. The serialised enum tag is the event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CaseEvent {
    /// Intake: the case exists from here on.
    /// Version 2 added `duplicate_reviewed`.
    CaseOpened {
        case_id: CaseId,
        agency: AgencyId,
        program: Program,
        intake_date: NaiveDate,
        child: Child,
        guardians: Vec<Guardian>,
        referral_source: Option<Text>,
        presenting_concerns: Vec<Text>,
        duplicate_reviewed: Option<DuplicateReview>,
    },
    CaseManagerAssigned {
        case_manager: ActorId,
        effective_on: NaiveDate,
    },
    ScreeningRecorded {
        screening_id: ScreeningId,
        instrument: InstrumentKind,
        instrument_version: String,
        administered_on: NaiveDate,
        ratings: BTreeMap<ItemCode, RatingValue>,
        actionable_needs: Vec<ItemCode>,
    },
    CarePlanRevised {
        plan_version: u32,
        revised_on: NaiveDate,
        goals: Vec<Goal>,
        deferred_needs: Vec<DeferredNeed>,
        family_participated: bool,
        services_timeline: Option<Text>,
        reassess_by: NaiveDate,
        /// The CANS screening whose actionable needs this revision answers, if any.
        based_on_screening: Option<ScreeningId>,
    },
    ReferralSent {
        referral_id: ReferralId,
        service_type: ServiceType,
        provider: Provider,
        reason: Text,
        goal_ids: Vec<GoalId>,
        urgency: Urgency,
        sent_on: NaiveDate,
        do_not_contact_subject: bool,
    },
    /// Version 2 added `reported` (see `upcast.rs`).
    ReferralAccepted {
        referral_id: ReferralId,
        on: NaiveDate,
        reported: Reporter,
    },
    /// Version 2 added `outcome` and `reported`; version 3 `reason_code`.
    ReferralDeclined {
        referral_id: ReferralId,
        on: NaiveDate,
        reason: Text,
        outcome: Option<ReferralOutcome>,
        reported: Reporter,
        reason_code: StatusReason,
    },
    /// Version 2 added `reason_code`.
    ReferralCancellationRequested {
        referral_id: ReferralId,
        on: NaiveDate,
        reason: Text,
        reason_code: StatusReason,
    },
    /// Version 2 added `outcome`; version 3 `reason_code`.
    ReferralCancelled {
        referral_id: ReferralId,
        on: NaiveDate,
        reason: Option<Text>,
        outcome: Option<ReferralOutcome>,
        reason_code: Option<StatusReason>,
    },
    /// Version 2 added `reported`; version 3 `reason_code`.
    ReferralCompleted {
        referral_id: ReferralId,
        on: NaiveDate,
        outcome: ReferralOutcome,
        reason: Option<Text>,
        reported: Reporter,
        reason_code: Option<StatusReason>,
    },
    /// Version 2 added `made_on` (see `upcast.rs`).
    AppointmentScheduled {
        appointment_id: AppointmentId,
        referral_id: ReferralId,
        scheduled_for: DateTime<Utc>,
        /// When the appointment was made.
        made_on: NaiveDate,
    },
    AppointmentKept {
        appointment_id: AppointmentId,
        on: NaiveDate,
    },
    AppointmentMissed {
        appointment_id: AppointmentId,
        on: NaiveDate,
        missed_reason: MissedReason,
    },
    AppointmentCancelled {
        appointment_id: AppointmentId,
        on: NaiveDate,
        cancelled_by: Option<MissedReason>,
    },
    AppointmentRescheduled {
        appointment_id: AppointmentId,
        on: NaiveDate,
        rescheduled_for: DateTime<Utc>,
    },
    /// A case-management activity: the unit TCM billing works on.
    /// Version 2 added `stated_offset_seconds`.
    ContactLogged {
        activity_id: ActivityId,
        component: TcmComponent,
        contact_type: ContactType,
        with: Vec<Participant>,
        occurred_at: DateTime<Utc>,
        /// The UTC offset the time was written with (seconds east of UTC), as the writer
        /// stated it; absent in version 1 events.
        stated_offset_seconds: Option<i32>,
        minutes: Minutes,
        note: Option<Text>,
        location: Option<Location>,
    },
    /// Step-down, transfer or discharge: closes the case.
    CaseTransitioned {
        kind: TransitionKind,
        reason: Text,
        effective_on: NaiveDate,
        open_referrals: Option<OpenReferralDisposition>,
        cancelled_referrals: Vec<ReferralId>,
        carried_over_referrals: Vec<ReferralId>,
    },
    CaseReopened {
        reason: Text,
        on: NaiveDate,
    },
    /// Entered in error: voids an earlier event of this case. The voided event stays stored.
    EntryVoided {
        voided_event_id: EventId,
        voided_sequence: u64,
        voided_event_type: String,
        reason: Text,
    },
}

impl CaseEvent {
    pub fn event_type_str(&self) -> &'static str {
        match self {
            CaseEvent::CaseOpened { .. } => "CaseOpened",
            CaseEvent::CaseManagerAssigned { .. } => "CaseManagerAssigned",
            CaseEvent::ScreeningRecorded { .. } => "ScreeningRecorded",
            CaseEvent::CarePlanRevised { .. } => "CarePlanRevised",
            CaseEvent::ReferralSent { .. } => "ReferralSent",
            CaseEvent::ReferralAccepted { .. } => "ReferralAccepted",
            CaseEvent::ReferralDeclined { .. } => "ReferralDeclined",
            CaseEvent::ReferralCancellationRequested { .. } => "ReferralCancellationRequested",
            CaseEvent::ReferralCancelled { .. } => "ReferralCancelled",
            CaseEvent::ReferralCompleted { .. } => "ReferralCompleted",
            CaseEvent::AppointmentScheduled { .. } => "AppointmentScheduled",
            CaseEvent::AppointmentKept { .. } => "AppointmentKept",
            CaseEvent::AppointmentMissed { .. } => "AppointmentMissed",
            CaseEvent::AppointmentCancelled { .. } => "AppointmentCancelled",
            CaseEvent::AppointmentRescheduled { .. } => "AppointmentRescheduled",
            CaseEvent::ContactLogged { .. } => "ContactLogged",
            CaseEvent::CaseTransitioned { .. } => "CaseTransitioned",
            CaseEvent::CaseReopened { .. } => "CaseReopened",
            CaseEvent::EntryVoided { .. } => "EntryVoided",
        }
    }

    /// The version of this event type's stored shape.
    pub fn event_version_str(&self) -> &'static str {
        match self {
            CaseEvent::ReferralDeclined { .. }
            | CaseEvent::ReferralCancelled { .. }
            | CaseEvent::ReferralCompleted { .. } => "3",
            CaseEvent::CaseOpened { .. }
            | CaseEvent::AppointmentScheduled { .. }
            | CaseEvent::ReferralAccepted { .. }
            | CaseEvent::ReferralCancellationRequested { .. }
            | CaseEvent::ContactLogged { .. } => "2",
            _ => "1",
        }
    }
}

impl DomainEvent for CaseEvent {
    fn event_type(&self) -> String {
        self.event_type_str().to_owned()
    }
    fn event_version(&self) -> String {
        self.event_version_str().to_owned()
    }
}
