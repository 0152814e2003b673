//! The contract's enums. Their serialised names are fixed by `schemas/CONTRACT.md`: never rename a variant.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! contract_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $wire:tt),+ $(,)? }) => {
        $(#[$doc])*
        // The literal beside each variant is its one wire name: serde (and through it the
        // OpenAPI document and the JSON Schemas), `as_str`, `Display` and `FromStr` all read it.
        // It is matched as `tt`, not `literal`: utoipa does not see through the invisible group a
        // `literal` fragment is passed in, and would name the variants in Rust's case instead.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The name on the wire and in storage.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} `{}`; expected one of: {}",
                        stringify!($name),
                        other,
                        [$($wire),+].join(", ")
                    )),
                }
            }
        }
    };
}

contract_enum!(
    /// Who a token speaks for.
    Role {
        Admin => "admin",
        Supervisor => "supervisor",
        CaseManager => "case_manager",
        Auditor => "auditor",
        Billing => "billing",
        Service => "service",
    }
);

contract_enum!(Program {
    Tcm => "tcm",
    Wraparound => "wraparound",
    EarlyIntervention => "early_intervention",
    CareCoordination => "care_coordination",
});

contract_enum!(CaseStatus { Open => "open", Closed => "closed" });

contract_enum!(InstrumentKind { Cans => "cans", Prapare => "prapare" });

contract_enum!(Urgency { Routine => "routine", Urgent => "urgent" });

contract_enum!(
    /// A status a referral's recipient (or the initiator, for cancellation) reports.
    ReferralStatusUpdate {
        Accepted => "accepted",
        Declined => "declined",
        CancellationRequested => "cancellation_requested",
        Cancelled => "cancelled",
        Completed => "completed",
    }
);

contract_enum!(
    /// A referral's business status (HL7 BSeR). `sent` is BSeR's Created; `scheduled` its Event
    /// Scheduled. Terminal: declined, cancelled, completed.
    ReferralStatus {
        Sent => "sent",
        Accepted => "accepted",
        Scheduled => "scheduled",
        Declined => "declined",
        CancellationRequested => "cancellation_requested",
        Cancelled => "cancelled",
        Completed => "completed",
    }
);

impl ReferralStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Declined | Self::Cancelled | Self::Completed)
    }
}

contract_enum!(ReferralOutcome {
    Connected => "connected",
    NotConnected => "not_connected",
    FamilyDeclined => "family_declined",
    UnableToContact => "unable_to_contact",
    NoCapacity => "no_capacity",
    NoLongerNeeded => "no_longer_needed",
    Other => "other",
});

contract_enum!(
    /// Why a referral was declined, cancelled (or asked to be) or closed, as a code: what the
    /// public events carry instead of the free-text reason, which may hold health information and
    /// stays in the case record (HL7 FHIR Task.statusReason's role).
    StatusReason {
        NoCapacity => "no_capacity",
        FamilyDeclined => "family_declined",
        UnableToContact => "unable_to_contact",
        NoLongerNeeded => "no_longer_needed",
        Ineligible => "ineligible",
        FamilyMoved => "family_moved",
        Duplicate => "duplicate",
        Other => "other",
    }
);

impl StatusReason {
    /// The reason a loop-closure outcome implies, when it implies one (`connected` does not).
    pub fn implied_by(outcome: ReferralOutcome) -> Option<Self> {
        use ReferralOutcome as O;
        Some(match outcome {
            O::Connected => return None,
            O::NotConnected | O::Other => StatusReason::Other,
            O::FamilyDeclined => StatusReason::FamilyDeclined,
            O::UnableToContact => StatusReason::UnableToContact,
            O::NoCapacity => StatusReason::NoCapacity,
            O::NoLongerNeeded => StatusReason::NoLongerNeeded,
        })
    }
}

contract_enum!(
    /// How staff heard of a status the receiving provider set.
    ReportChannel {
        Phone => "phone",
        Fax => "fax",
        Email => "email",
        Portal => "portal",
        InPerson => "in_person",
    }
);

contract_enum!(AppointmentOutcomeKind {
    Kept => "kept",
    Missed => "missed",
    Cancelled => "cancelled",
    Rescheduled => "rescheduled",
});

contract_enum!(MissedReason {
    NoShow => "no_show",
    FamilyCancelled => "family_cancelled",
    ProviderCancelled => "provider_cancelled",
});

contract_enum!(AppointmentStatus {
    Scheduled => "scheduled",
    Kept => "kept",
    Missed => "missed",
    Cancelled => "cancelled",
});

contract_enum!(
    /// The four billable TCM components of 42 CFR 440.169(d).
    TcmComponent {
        Assessment => "assessment",
        CarePlanning => "care_planning",
        ReferralLinkage => "referral_linkage",
        Monitoring => "monitoring",
    }
);

contract_enum!(ContactType {
    FaceToFace => "face_to_face",
    Phone => "phone",
    Video => "video",
    Collateral => "collateral",
    Written => "written",
    Voicemail => "voicemail",
});

contract_enum!(Participant {
    Child => "child",
    Guardian => "guardian",
    Provider => "provider",
    School => "school",
    OtherCaseManager => "other_case_manager",
    Other => "other",
});

contract_enum!(Location {
    Community => "community",
    Office => "office",
    Home => "home",
    School => "school",
    Institution => "institution",
});

contract_enum!(TransitionKind {
    StepDown => "step_down",
    Transfer => "transfer",
    Discharge => "discharge",
});

contract_enum!(
    /// What a transition does with referrals that are still open.
    OpenReferralDisposition {
        CarryOver => "carry_over",
        Cancel => "cancel",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_the_contract() {
        assert_eq!(
            serde_json::to_string(&Role::CaseManager).unwrap(),
            "\"case_manager\""
        );
        assert_eq!(
            serde_json::to_string(&ContactType::FaceToFace).unwrap(),
            "\"face_to_face\""
        );
        assert_eq!(
            serde_json::to_string(&ReferralStatusUpdate::CancellationRequested).unwrap(),
            "\"cancellation_requested\""
        );
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), *r);
            assert_eq!(
                serde_json::to_string(r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
        for p in Program::ALL {
            assert_eq!(
                serde_json::to_string(p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
        assert!("nurse".parse::<Role>().is_err());
    }
}
