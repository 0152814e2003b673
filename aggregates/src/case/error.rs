use chrono::NaiveDate;
use schemas::instruments::RatingProblem;
use schemas::{AppointmentStatus, CaseId, ItemCode, ReferralStatus, ReferralStatusUpdate};

/// Every business-rule refusal of the Case aggregate. Each is a variant with a stable `code()`;
/// the HTTP layer maps `kind()` to a status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CaseError {
    #[error("no case with this id")]
    CaseNotFound,
    #[error("a case with this id already exists")]
    CaseAlreadyExists,
    #[error("the case is closed: it takes reopening, corrections, and documentation of what happened before it closed")]
    CaseClosed,
    #[error("the case closed on {closed_on}; what happened before may be documented for {window_days} days after, and that window has passed")]
    DocumentationWindowClosed {
        closed_on: NaiveDate,
        window_days: u32,
    },
    #[error("the case is open; only a closed case can be reopened")]
    CaseNotClosed,
    #[error("{field} {date} is in the future")]
    DateInFuture {
        field: &'static str,
        date: NaiveDate,
    },
    #[error("{field} {date} is before the intake date {intake}")]
    DateBeforeIntake {
        field: &'static str,
        date: NaiveDate,
        intake: NaiveDate,
    },
    #[error("{field} {date} must come after {after}")]
    DateOutOfOrder {
        field: &'static str,
        date: NaiveDate,
        after: NaiveDate,
    },
    #[error("the case is already assigned to {0}")]
    AlreadyAssigned(String),
    #[error("unknown instrument: {0}")]
    UnknownInstrument(String),
    #[error("the ratings do not fit the instrument: {}", describe_problems(.0))]
    InvalidRatings(Vec<RatingProblem>),
    #[error("a care plan needs at least one goal")]
    NoGoals,
    #[error("actionable needs of the latest CANS are neither addressed by a goal nor deferred with a reason: {}", join_codes(.0))]
    UnaddressedNeeds(Vec<ItemCode>),
    #[error("goals address items that are not in the CANS definition: {}", join_codes(.0))]
    UnknownItems(Vec<ItemCode>),
    #[error("the referral names goals that are not in the current care plan")]
    UnknownGoal,
    #[error("no referral with this id on this case")]
    ReferralNotFound,
    #[error("the referral is {0} and can no longer change")]
    ReferralTerminal(ReferralStatus),
    #[error("a referral that is {from} cannot become {to}")]
    InvalidReferralTransition {
        from: ReferralStatus,
        to: ReferralStatusUpdate,
    },
    #[error("a referral must be accepted before an appointment is scheduled (it is {0})")]
    ReferralNotAccepted(ReferralStatus),
    #[error("{0} needs a reason")]
    ReasonRequired(&'static str),
    #[error("a completed referral needs an outcome")]
    OutcomeRequired,
    #[error("an outcome is recorded only when a referral's loop closes (declined, cancelled or completed), and `connected` only when it is completed")]
    OutcomeNotAllowed,
    #[error("an open case of this agency matches the child: {}; if this intake is deliberate, send duplicate_reviewed with a reason", join_ids(.0))]
    PossibleDuplicate(Vec<CaseId>),
    #[error("a reason code is given only when a referral is declined, cancelled (or asked to be) or completed")]
    ReasonCodeNotAllowed,
    #[error("{0} is the referring side's status; the receiving provider does not set it")]
    InitiatorStatus(ReferralStatusUpdate),
    #[error("this referral was sent to another provider")]
    NotTheReferralsProvider,
    #[error("staff recording a status the provider set say who reported it and how (reported_by)")]
    ReportedByRequired,
    #[error("reported_by names another provider than the one the referral was sent to")]
    ReportedByMismatch,
    #[error("reported_by is only for staff recording a status the receiving provider set")]
    ReportedByNotAllowed,
    #[error("no appointment with this id on this case")]
    AppointmentNotFound,
    #[error("the appointment's outcome is already recorded ({0})")]
    AppointmentOutcomeAlreadyRecorded(AppointmentStatus),
    #[error("the appointment is scheduled for {scheduled_for}; it cannot be {outcome} on {on}")]
    AppointmentNotYetDue {
        outcome: &'static str,
        scheduled_for: NaiveDate,
        on: NaiveDate,
    },
    #[error("a missed appointment needs missed_reason")]
    MissedReasonRequired,
    #[error("a rescheduled appointment needs rescheduled_for")]
    RescheduledForRequired,
    #[error("{0} is only allowed with outcome {1}")]
    FieldNotAllowed(&'static str, &'static str),
    #[error("a contact needs at least one participant")]
    NoParticipants,
    #[error("the case has open referrals; say whether to carry them over or cancel them (open_referrals)")]
    OpenReferralsNeedDisposition,
    #[error("no event with this id on this case")]
    EventNotFound,
    #[error("{0} entries cannot be voided")]
    NotVoidable(String),
    #[error("this entry is already voided")]
    AlreadyVoided,
    #[error("a later entry depends on this one; void that first")]
    LaterEntryDepends,
}

/// How a refusal reads to a client: the HTTP layer maps each kind to one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    NotFound,
    /// The rule is about who may do it (403).
    Forbidden,
    Conflict,
    Invalid,
}

impl CaseError {
    pub fn code(&self) -> &'static str {
        use CaseError::*;
        match self {
            CaseNotFound => "case_not_found",
            CaseAlreadyExists => "case_already_exists",
            CaseClosed => "case_closed",
            DocumentationWindowClosed { .. } => "documentation_window_closed",
            CaseNotClosed => "case_not_closed",
            DateInFuture { .. } => "date_in_future",
            DateBeforeIntake { .. } => "date_before_intake",
            DateOutOfOrder { .. } => "date_out_of_order",
            AlreadyAssigned(_) => "already_assigned",
            UnknownInstrument(_) => "unknown_instrument",
            InvalidRatings(_) => "invalid_ratings",
            NoGoals => "no_goals",
            UnaddressedNeeds(_) => "unaddressed_needs",
            UnknownItems(_) => "unknown_items",
            UnknownGoal => "unknown_goal",
            ReferralNotFound => "referral_not_found",
            ReferralTerminal(_) => "referral_terminal",
            InvalidReferralTransition { .. } => "invalid_referral_transition",
            ReferralNotAccepted(_) => "referral_not_accepted",
            ReasonRequired(_) => "reason_required",
            OutcomeRequired => "outcome_required",
            OutcomeNotAllowed => "outcome_not_allowed",
            ReasonCodeNotAllowed => "reason_code_not_allowed",
            PossibleDuplicate(_) => "possible_duplicate",
            InitiatorStatus(_) => "initiator_status",
            NotTheReferralsProvider => "other_provider",
            ReportedByRequired => "reported_by_required",
            ReportedByMismatch => "reported_by_mismatch",
            ReportedByNotAllowed => "reported_by_not_allowed",
            AppointmentNotFound => "appointment_not_found",
            AppointmentOutcomeAlreadyRecorded(_) => "appointment_outcome_already_recorded",
            AppointmentNotYetDue { .. } => "appointment_not_yet_due",
            MissedReasonRequired => "missed_reason_required",
            RescheduledForRequired => "rescheduled_for_required",
            FieldNotAllowed(..) => "field_not_allowed",
            NoParticipants => "no_participants",
            OpenReferralsNeedDisposition => "open_referrals_need_disposition",
            EventNotFound => "event_not_found",
            NotVoidable(_) => "not_voidable",
            AlreadyVoided => "already_voided",
            LaterEntryDepends => "later_entry_depends",
        }
    }

    pub fn kind(&self) -> RefusalKind {
        use CaseError::*;
        match self {
            CaseNotFound | ReferralNotFound | AppointmentNotFound | EventNotFound => {
                RefusalKind::NotFound
            }
            InitiatorStatus(_) | NotTheReferralsProvider => RefusalKind::Forbidden,
            CaseAlreadyExists
            | CaseClosed
            | DocumentationWindowClosed { .. }
            | CaseNotClosed
            | AlreadyAssigned(_)
            | ReferralTerminal(_)
            | InvalidReferralTransition { .. }
            | ReferralNotAccepted(_)
            | AppointmentOutcomeAlreadyRecorded(_)
            | AppointmentNotYetDue { .. }
            | OpenReferralsNeedDisposition
            | NotVoidable(_)
            | AlreadyVoided
            | LaterEntryDepends
            | PossibleDuplicate(_) => RefusalKind::Conflict,
            _ => RefusalKind::Invalid,
        }
    }
}

fn join_ids(ids: &[CaseId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn join_codes(codes: &[ItemCode]) -> String {
    codes
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_problems(p: &[RatingProblem]) -> String {
    p.iter()
        .map(|p| {
            if p.item.is_empty() {
                p.problem.clone()
            } else {
                format!("{}: {}", p.item, p.problem)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
