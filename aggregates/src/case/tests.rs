//! Given/when/then tests of every invariant, with cqrs-es's TestFramework.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use schemas::instruments::{Catalog, RatingValue};
use schemas::wire::*;
use schemas::*;

use super::*;

type CaseTest = TestFramework<Case>;

fn services() -> CaseServices {
    CaseServices {
        instruments: Arc::new(Catalog::builtin().unwrap()),
        documentation_window_days: 90,
    }
}

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn text(s: &str) -> Text {
    Text::parse(s).unwrap()
}

fn code(s: &str) -> ItemCode {
    ItemCode::parse(s).unwrap()
}

/// "Now" in these tests: 2026-03-10 12:00 UTC.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap()
}

fn actor() -> Actor {
    Actor {
        id: ActorId::parse("cm-ada").unwrap(),
        role: Role::CaseManager,
        agency: AgencyId::parse("agency-north").unwrap(),
        provider: None,
    }
}

/// How the test case manager heard of the provider's statuses.
fn by_phone() -> Reporter {
    Reporter::Staff {
        provider_id: ProviderId::parse("prov-1").unwrap(),
        channel: ReportChannel::Phone,
    }
}

fn cmd(action: CaseAction) -> CaseCommand {
    CaseCommand {
        actor: actor(),
        received_at: now(),
        zone: chrono_tz::Tz::UTC,
        action,
    }
}

fn case_id() -> CaseId {
    CaseId::parse("0190c6f2-5a8e-7c3b-9a43-0d2f1c6e4b11").unwrap()
}
fn referral_id() -> ReferralId {
    ReferralId::parse("0190c6f2-5a8e-7c3b-9a43-0d2f1c6e4b12").unwrap()
}
fn appointment_id() -> AppointmentId {
    AppointmentId::parse("0190c6f2-5a8e-7c3b-9a43-0d2f1c6e4b13").unwrap()
}
fn goal_id() -> GoalId {
    GoalId::parse("0190c6f2-5a8e-7c3b-9a43-0d2f1c6e4b14").unwrap()
}
fn screening_id() -> ScreeningId {
    ScreeningId::parse("0190c6f2-5a8e-7c3b-9a43-0d2f1c6e4b15").unwrap()
}
fn activity_id() -> ActivityId {
    ActivityId::parse("0190c6f2-5a8e-7c3b-9a43-0d2f1c6e4b16").unwrap()
}

fn open_request() -> OpenCaseRequest {
    OpenCaseRequest {
        program: Program::Wraparound,
        assigned_to: ActorId::parse("cm-ada").unwrap(),
        intake_date: d("2026-01-05"),
        child: ChildIn {
            given_name: PersonName::parse("Tess").unwrap(),
            family_name: PersonName::parse("Example").unwrap(),
            birth_date: d("2019-04-01"),
            medicaid_id: Some(MedicaidId::parse("ZZ00000001").unwrap()),
        },
        guardians: vec![],
        referral_source: None,
        presenting_concerns: vec![text("trouble sleeping")],
        duplicate_reviewed: None,
    }
}

fn opened() -> Vec<CaseEvent> {
    vec![
        CaseEvent::CaseOpened {
            case_id: case_id(),
            agency: AgencyId::parse("agency-north").unwrap(),
            program: Program::Wraparound,
            intake_date: d("2026-01-05"),
            child: Child {
                given_name: PersonName::parse("Tess").unwrap(),
                family_name: PersonName::parse("Example").unwrap(),
                birth_date: d("2019-04-01"),
                medicaid_id: Some(MedicaidId::parse("ZZ00000001").unwrap()),
            },
            guardians: vec![],
            referral_source: None,
            presenting_concerns: vec![text("trouble sleeping")],
            duplicate_reviewed: None,
        },
        CaseEvent::CaseManagerAssigned {
            case_manager: ActorId::parse("cm-ada").unwrap(),
            effective_on: d("2026-01-05"),
        },
    ]
}

fn cans_with_needs() -> CaseEvent {
    let mut ratings = BTreeMap::new();
    ratings.insert(code("bhn.depression"), RatingValue::Score(2));
    ratings.insert(code("lf.sleep"), RatingValue::Score(3));
    ratings.insert(code("bhn.anxiety"), RatingValue::Score(1));
    CaseEvent::ScreeningRecorded {
        screening_id: screening_id(),
        instrument: InstrumentKind::Cans,
        instrument_version: "synthetic-2026.1".into(),
        administered_on: d("2026-01-10"),
        ratings,
        actionable_needs: vec![code("lf.sleep"), code("bhn.depression")],
    }
}

fn sent() -> CaseEvent {
    CaseEvent::ReferralSent {
        referral_id: referral_id(),
        service_type: ServiceType::parse("outpatient_therapy").unwrap(),
        provider: Provider {
            id: ProviderId::parse("prov-1").unwrap(),
            name: None,
        },
        reason: text("depression"),
        goal_ids: vec![],
        urgency: Urgency::Routine,
        sent_on: d("2026-01-20"),
        do_not_contact_subject: false,
    }
}

fn accepted() -> CaseEvent {
    CaseEvent::ReferralAccepted {
        referral_id: referral_id(),
        on: d("2026-01-22"),
        reported: by_phone(),
    }
}

/// Made the day after the referral was accepted.
fn scheduled(at: &str) -> CaseEvent {
    CaseEvent::AppointmentScheduled {
        appointment_id: appointment_id(),
        referral_id: referral_id(),
        scheduled_for: t(at),
        made_on: d("2026-01-23"),
    }
}

fn given(extra: Vec<CaseEvent>) -> cqrs_es::test::AggregateTestExecutor<Case> {
    let mut events = opened();
    events.extend(extra);
    CaseTest::with(services()).given(events)
}

fn status(s: ReferralStatusUpdate, on: &str) -> CaseAction {
    CaseAction::UpdateReferralStatus {
        referral_id: referral_id(),
        request: ReferralStatusRequest {
            status: s,
            on: d(on),
            reason: None,
            outcome: None,
            reason_code: None,
            // Staff record the provider's statuses as the provider reported them.
            reported_by: matches!(
                s,
                ReferralStatusUpdate::Accepted
                    | ReferralStatusUpdate::Declined
                    | ReferralStatusUpdate::Completed
            )
            .then(|| ReportedBy {
                provider_id: ProviderId::parse("prov-1").unwrap(),
                channel: ReportChannel::Phone,
            }),
        },
    }
}

fn outcome(kind: AppointmentOutcomeKind, on: &str) -> CaseAction {
    CaseAction::RecordAppointmentOutcome {
        appointment_id: appointment_id(),
        request: AppointmentOutcomeRequest {
            outcome: kind,
            on: d(on),
            missed_reason: None,
            rescheduled_for: None,
        },
    }
}

fn contact(at: &str) -> CaseAction {
    CaseAction::LogContact {
        activity_id: activity_id(),
        request: LogContactRequest {
            component: TcmComponent::Monitoring,
            contact_type: ContactType::Phone,
            with: vec![Participant::Guardian],
            occurred_at: t(at).fixed_offset(),
            minutes: Minutes::parse(20).unwrap(),
            note: None,
            location: None,
        },
    }
}

fn transition(open_referrals: Option<OpenReferralDisposition>) -> CaseAction {
    CaseAction::TransitionCase(TransitionRequest {
        kind: TransitionKind::Discharge,
        reason: text("goals met"),
        effective_on: d("2026-03-01"),
        open_referrals,
    })
}

/// The event `contact(at)` records.
fn logged(at: &str) -> CaseEvent {
    CaseEvent::ContactLogged {
        activity_id: activity_id(),
        component: TcmComponent::Monitoring,
        contact_type: ContactType::Phone,
        with: vec![Participant::Guardian],
        occurred_at: t(at),
        stated_offset_seconds: Some(0),
        minutes: Minutes::parse(20).unwrap(),
        note: None,
        location: None,
    }
}

fn closed() -> CaseEvent {
    CaseEvent::CaseTransitioned {
        kind: TransitionKind::Discharge,
        reason: text("goals met"),
        effective_on: d("2026-03-01"),
        open_referrals: None,
        cancelled_referrals: vec![],
        carried_over_referrals: vec![],
    }
}

// ---- intake -------------------------------------------------------------------------------

#[test]
fn opening_a_case_records_intake_and_assignment() {
    CaseTest::with(services())
        .given_no_previous_events()
        .when(cmd(CaseAction::OpenCase {
            case_id: case_id(),
            agency: AgencyId::parse("agency-north").unwrap(),
            request: open_request(),
            possible_duplicates: vec![],
        }))
        .then_expect_events(opened());
}

/// "Today", and so what is in the future, is the agency's: at 04:30 UTC on 2026-11-01 it is
/// still 31 October in Chicago, Los Angeles and Honolulu.
#[test]
fn today_and_the_future_are_local_to_the_agency() {
    use chrono_tz::Tz;
    let received = t("2026-11-01T04:30:00Z");
    for (zone, today) in [
        (Tz::America__New_York, "2026-11-01"),
        (Tz::America__Chicago, "2026-10-31"),
        (Tz::America__Los_Angeles, "2026-10-31"),
        (Tz::Pacific__Honolulu, "2026-10-31"),
        (Tz::UTC, "2026-11-01"),
    ] {
        let today = d(today);
        let open = |intake: NaiveDate| CaseCommand {
            actor: actor(),
            received_at: received,
            zone,
            action: CaseAction::OpenCase {
                case_id: case_id(),
                agency: AgencyId::parse("agency-north").unwrap(),
                request: OpenCaseRequest {
                    intake_date: intake,
                    ..open_request()
                },
                possible_duplicates: vec![],
            },
        };
        CaseTest::with(services())
            .given_no_previous_events()
            .when(open(today))
            .inspect_result()
            .unwrap_or_else(|e| panic!("intake today in {zone}: {e}"));
        let tomorrow = today.succ_opt().unwrap();
        CaseTest::with(services())
            .given_no_previous_events()
            .when(open(tomorrow))
            .then_expect_error(CaseError::DateInFuture {
                field: "intake_date",
                date: tomorrow,
            });
    }
}

#[test]
fn a_case_opens_once() {
    given(vec![])
        .when(cmd(CaseAction::OpenCase {
            case_id: case_id(),
            agency: AgencyId::parse("agency-north").unwrap(),
            request: open_request(),
            possible_duplicates: vec![],
        }))
        .then_expect_error(CaseError::CaseAlreadyExists);
}

#[test]
fn intake_cannot_be_in_the_future_or_before_birth() {
    let mut r = open_request();
    r.intake_date = d("2026-03-11");
    CaseTest::with(services())
        .given_no_previous_events()
        .when(cmd(CaseAction::OpenCase {
            case_id: case_id(),
            agency: AgencyId::parse("a").unwrap(),
            request: r,
            possible_duplicates: vec![],
        }))
        .then_expect_error(CaseError::DateInFuture {
            field: "intake_date",
            date: d("2026-03-11"),
        });
    let mut r = open_request();
    r.child.birth_date = d("2026-02-01");
    let err = CaseTest::with(services())
        .given_no_previous_events()
        .when(cmd(CaseAction::OpenCase {
            case_id: case_id(),
            agency: AgencyId::parse("a").unwrap(),
            request: r,
            possible_duplicates: vec![],
        }))
        .inspect_result()
        .unwrap_err();
    assert_eq!(err.code(), "date_out_of_order");
}

#[test]
fn commands_on_a_case_that_does_not_exist_are_refused() {
    CaseTest::with(services())
        .given_no_previous_events()
        .when(cmd(contact("2026-02-01T10:00:00Z")))
        .then_expect_error(CaseError::CaseNotFound);
}

// ---- dates ----------------------------------------------------------------------------------

#[test]
fn nothing_is_dated_in_the_future_or_before_intake() {
    given(vec![])
        .when(cmd(contact("2026-03-10T13:00:00Z")))
        .then_expect_error(CaseError::DateInFuture {
            field: "occurred_at",
            date: d("2026-03-10"),
        });
    given(vec![])
        .when(cmd(contact("2026-01-04T13:00:00Z")))
        .then_expect_error(CaseError::DateBeforeIntake {
            field: "occurred_at",
            date: d("2026-01-04"),
            intake: d("2026-01-05"),
        });
    // A few minutes of device clock skew is tolerated.
    given(vec![])
        .when(cmd(contact("2026-03-10T12:03:00Z")))
        .inspect_result()
        .unwrap();
}

// ---- closed cases ---------------------------------------------------------------------------

#[test]
fn a_closed_case_takes_reopening_corrections_and_late_documentation_only() {
    // Planning and linking are over: the case is closed to them.
    given(vec![closed()])
        .when(cmd(CaseAction::AssignCaseManager(
            AssignCaseManagerRequest {
                assigned_to: ActorId::parse("cm-bo").unwrap(),
                on: d("2026-03-02"),
            },
        )))
        .then_expect_error(CaseError::CaseClosed);
    // Something that happened after the closure did not happen in this episode.
    given(vec![closed()])
        .when(cmd(contact("2026-03-05T10:00:00Z")))
        .then_expect_error(CaseError::CaseClosed);
    // Something that happened before it may be written down afterwards.
    given(vec![closed()])
        .when(cmd(contact("2026-02-01T10:00:00Z")))
        .then_expect_events(vec![logged("2026-02-01T10:00:00Z")]);
    given(vec![closed()])
        .when(cmd(CaseAction::ReopenCase(ReopenRequest {
            reason: text("family asked for help again"),
            on: d("2026-03-05"),
        })))
        .then_expect_events(vec![CaseEvent::CaseReopened {
            reason: text("family asked for help again"),
            on: d("2026-03-05"),
        }]);
}

#[test]
fn late_documentation_closes_with_its_window() {
    // Closed on 2026-03-01; a 90-day window ends at the end of 2026-05-30.
    let at = |received: &str| CaseCommand {
        actor: actor(),
        received_at: t(received),
        zone: chrono_tz::Tz::UTC,
        action: contact("2026-02-20T10:00:00Z"),
    };
    given(vec![closed()])
        .when(at("2026-05-30T23:59:59Z"))
        .inspect_result()
        .expect("day 90 is within the window");
    given(vec![closed()])
        .when(at("2026-05-31T00:00:00Z"))
        .then_expect_error(CaseError::DocumentationWindowClosed {
            closed_on: d("2026-03-01"),
            window_days: 90,
        });
    // The window is configuration.
    CaseTest::with(CaseServices {
        documentation_window_days: 100,
        ..services()
    })
    .given(opened().into_iter().chain([closed()]).collect())
    .when(at("2026-05-31T00:00:00Z"))
    .inspect_result()
    .expect("within a 100-day window");
}

#[test]
fn a_correction_is_accepted_on_a_closed_case_at_any_time() {
    let logged = logged("2026-02-01T10:00:00Z");
    let years_later = CaseCommand {
        actor: actor(),
        received_at: t("2029-01-01T09:00:00Z"),
        zone: chrono_tz::Tz::UTC,
        action: void(3, "ContactLogged"),
    };
    let events = given(vec![logged, closed()])
        .when(years_later)
        .inspect_result()
        .expect("a void after discharge");
    assert!(
        matches!(
            &events[..],
            [CaseEvent::EntryVoided {
                voided_sequence: 3,
                ..
            }]
        ),
        "{events:?}"
    );
}

#[test]
fn only_a_closed_case_reopens_and_not_before_it_closed() {
    given(vec![])
        .when(cmd(CaseAction::ReopenCase(ReopenRequest {
            reason: text("x"),
            on: d("2026-03-05"),
        })))
        .then_expect_error(CaseError::CaseNotClosed);
    let err = given(vec![closed()])
        .when(cmd(CaseAction::ReopenCase(ReopenRequest {
            reason: text("x"),
            on: d("2026-02-05"),
        })))
        .inspect_result()
        .unwrap_err();
    assert_eq!(err.code(), "date_out_of_order");
}

// ---- screenings -----------------------------------------------------------------------------

#[test]
fn screening_ratings_are_checked_against_the_instrument() {
    let mut ratings = BTreeMap::new();
    ratings.insert(code("bhn.depression"), RatingValue::Score(4));
    ratings.insert(code("zz.unknown"), RatingValue::Score(1));
    let err = given(vec![])
        .when(cmd(CaseAction::RecordScreening {
            screening_id: screening_id(),
            request: RecordScreeningRequest {
                instrument: InstrumentKind::Cans,
                instrument_version: None,
                administered_on: d("2026-01-10"),
                ratings,
            },
        }))
        .inspect_result()
        .unwrap_err();
    let CaseError::InvalidRatings(problems) = err else {
        panic!("expected InvalidRatings, got {err:?}")
    };
    assert_eq!(problems.len(), 2);
}

#[test]
fn a_screening_reports_its_actionable_needs() {
    let CaseEvent::ScreeningRecorded { ratings, .. } = cans_with_needs() else {
        panic!("cans_with_needs() is a ScreeningRecorded event")
    };
    given(vec![])
        .when(cmd(CaseAction::RecordScreening {
            screening_id: screening_id(),
            request: RecordScreeningRequest {
                instrument: InstrumentKind::Cans,
                instrument_version: None,
                administered_on: d("2026-01-10"),
                ratings,
            },
        }))
        .then_expect_events(vec![cans_with_needs()]);
}

#[test]
fn an_unknown_instrument_version_is_refused() {
    let mut ratings = BTreeMap::new();
    ratings.insert(code("bhn.depression"), RatingValue::Score(1));
    let err = given(vec![])
        .when(cmd(CaseAction::RecordScreening {
            screening_id: screening_id(),
            request: RecordScreeningRequest {
                instrument: InstrumentKind::Cans,
                instrument_version: Some("1999".into()),
                administered_on: d("2026-01-10"),
                ratings,
            },
        }))
        .inspect_result()
        .unwrap_err();
    assert_eq!(err.code(), "unknown_instrument");
}

// ---- care plan ------------------------------------------------------------------------------

fn plan(goals: Vec<GoalIn>, deferred: Vec<DeferredNeedIn>) -> CaseAction {
    let goal_ids = goals.iter().map(|_| GoalId::generate()).collect();
    CaseAction::ReviseCarePlan {
        goal_ids,
        request: ReviseCarePlanRequest {
            goals,
            deferred_needs: deferred,
            family_participated: true,
            services_timeline: None,
            reassess_by: d("2026-06-01"),
            revised_on: None,
        },
    }
}

fn goal(addresses: &[&str]) -> GoalIn {
    GoalIn {
        description: text("sleep through the night"),
        addresses: addresses.iter().map(|c| code(c)).collect(),
        target_date: None,
    }
}

#[test]
fn a_care_plan_must_address_every_actionable_need() {
    given(vec![cans_with_needs()])
        .when(cmd(plan(vec![goal(&["lf.sleep"])], vec![])))
        .then_expect_error(CaseError::UnaddressedNeeds(vec![code("bhn.depression")]));
}

#[test]
fn a_need_may_be_deferred_with_a_reason() {
    let events = given(vec![cans_with_needs()])
        .when(cmd(plan(
            vec![goal(&["lf.sleep"])],
            vec![DeferredNeedIn {
                need: code("bhn.depression"),
                reason: text("family wants to start with sleep"),
            }],
        )))
        .inspect_result()
        .unwrap();
    let [CaseEvent::CarePlanRevised {
        plan_version,
        based_on_screening,
        ..
    }] = events.as_slice()
    else {
        panic!("{events:?}")
    };
    assert_eq!(*plan_version, 1);
    assert_eq!(*based_on_screening, Some(screening_id()));
}

#[test]
fn a_voided_screening_no_longer_drives_the_plan() {
    given(vec![
        cans_with_needs(),
        CaseEvent::EntryVoided {
            voided_event_id: EventId::generate(),
            voided_sequence: 3,
            voided_event_type: "ScreeningRecorded".into(),
            reason: text("wrong child"),
        },
    ])
    .when(cmd(plan(vec![goal(&[])], vec![])))
    .inspect_result()
    .unwrap();
}

#[test]
fn a_care_plan_needs_goals_known_items_and_a_future_reassessment() {
    given(vec![])
        .when(cmd(plan(vec![], vec![])))
        .then_expect_error(CaseError::NoGoals);
    given(vec![])
        .when(cmd(plan(vec![goal(&["zz.nothing"])], vec![])))
        .then_expect_error(CaseError::UnknownItems(vec![code("zz.nothing")]));
    let mut action = plan(vec![goal(&[])], vec![]);
    if let CaseAction::ReviseCarePlan { request, .. } = &mut action {
        request.reassess_by = d("2026-03-01");
    }
    let err = given(vec![])
        .when(cmd(action))
        .inspect_result()
        .unwrap_err();
    assert_eq!(err.code(), "date_out_of_order");
}

// ---- referrals (BSeR) -----------------------------------------------------------------------

#[test]
fn a_referral_names_only_goals_of_the_current_plan() {
    given(vec![])
        .when(cmd(CaseAction::SendReferral {
            referral_id: referral_id(),
            request: SendReferralRequest {
                service_type: ServiceType::parse("housing").unwrap(),
                provider: ProviderIn {
                    id: ProviderId::parse("prov-1").unwrap(),
                    name: None,
                },
                reason: text("housing"),
                goal_ids: vec![goal_id()],
                urgency: None,
                sent_on: d("2026-01-20"),
                do_not_contact_subject: true,
            },
        }))
        .then_expect_error(CaseError::UnknownGoal);
}

#[test]
fn a_referral_moves_sent_accepted_completed() {
    given(vec![sent()])
        .when(cmd(status(ReferralStatusUpdate::Accepted, "2026-01-22")))
        .then_expect_events(vec![accepted()]);
    let mut done = status(ReferralStatusUpdate::Completed, "2026-02-22");
    if let CaseAction::UpdateReferralStatus { request, .. } = &mut done {
        request.outcome = Some(ReferralOutcome::Connected);
    }
    given(vec![sent(), accepted()])
        .when(cmd(done))
        .then_expect_events(vec![CaseEvent::ReferralCompleted {
            referral_id: referral_id(),
            on: d("2026-02-22"),
            outcome: ReferralOutcome::Connected,
            reason: None,
            reported: by_phone(),
            reason_code: None,
        }]);
}

#[test]
fn completion_needs_an_outcome_and_only_completion_takes_one() {
    given(vec![sent(), accepted()])
        .when(cmd(status(ReferralStatusUpdate::Completed, "2026-02-22")))
        .then_expect_error(CaseError::OutcomeRequired);
    let with = |s, on: &str, reason: Option<&str>, outcome| {
        let mut a = status(s, on);
        if let CaseAction::UpdateReferralStatus { request, .. } = &mut a {
            request.reason = reason.map(text);
            request.outcome = Some(outcome);
        }
        cmd(a)
    };
    use ReferralOutcome as O;
    use ReferralStatusUpdate as U;
    // A loop that closes without a connection says why.
    given(vec![sent()])
        .when(with(
            U::Declined,
            "2026-01-22",
            Some("waitlist full"),
            O::NoCapacity,
        ))
        .then_expect_events(vec![CaseEvent::ReferralDeclined {
            referral_id: referral_id(),
            on: d("2026-01-22"),
            reason: text("waitlist full"),
            outcome: Some(O::NoCapacity),
            reported: by_phone(),
            reason_code: StatusReason::NoCapacity,
        }]);
    // Connected only when completed; no outcome while the loop is open.
    given(vec![sent()])
        .when(with(U::Declined, "2026-01-22", Some("x"), O::Connected))
        .then_expect_error(CaseError::OutcomeNotAllowed);
    given(vec![sent()])
        .when(with(U::Accepted, "2026-01-22", None, O::NoCapacity))
        .then_expect_error(CaseError::OutcomeNotAllowed);
}

#[test]
fn a_status_reason_is_coded_as_given_or_as_the_outcome_implies() {
    use ReferralStatusUpdate as U;
    let with = |s, reason: Option<&str>, outcome, code| {
        let mut a = status(s, "2026-01-22");
        if let CaseAction::UpdateReferralStatus { request, .. } = &mut a {
            request.reason = reason.map(text);
            request.outcome = outcome;
            request.reason_code = code;
        }
        cmd(a)
    };
    let declined = |outcome, code| CaseEvent::ReferralDeclined {
        referral_id: referral_id(),
        on: d("2026-01-22"),
        reason: text("mother started treatment, family moving"),
        outcome,
        reported: by_phone(),
        reason_code: code,
    };
    // As given: the free text stays in the stored event, the code is what the bus will carry.
    given(vec![sent()])
        .when(with(
            U::Declined,
            Some("mother started treatment, family moving"),
            None,
            Some(StatusReason::FamilyMoved),
        ))
        .then_expect_events(vec![declined(None, StatusReason::FamilyMoved)]);
    // Not given: the outcome's code, else `other`.
    given(vec![sent()])
        .when(with(
            U::Declined,
            Some("mother started treatment, family moving"),
            Some(ReferralOutcome::FamilyDeclined),
            None,
        ))
        .then_expect_events(vec![declined(
            Some(ReferralOutcome::FamilyDeclined),
            StatusReason::FamilyDeclined,
        )]);
    given(vec![sent()])
        .when(with(
            U::Declined,
            Some("mother started treatment, family moving"),
            None,
            None,
        ))
        .then_expect_events(vec![declined(None, StatusReason::Other)]);
    // A cancellation without a reason or an outcome has no code; an acceptance takes none.
    let requested = CaseEvent::ReferralCancellationRequested {
        referral_id: referral_id(),
        on: d("2026-01-22"),
        reason: text("moved"),
        reason_code: StatusReason::FamilyMoved,
    };
    given(vec![sent(), requested])
        .when(with(U::Cancelled, None, None, None))
        .then_expect_events(vec![CaseEvent::ReferralCancelled {
            referral_id: referral_id(),
            on: d("2026-01-22"),
            reason: None,
            outcome: None,
            reason_code: None,
        }]);
    given(vec![sent()])
        .when(with(U::Accepted, None, None, Some(StatusReason::Other)))
        .then_expect_error(CaseError::ReasonCodeNotAllowed);
}

#[test]
fn a_second_intake_of_an_open_case_s_child_needs_a_reviewed_reason() {
    let other = CaseId::parse("0190c6f2-5a8e-7c3b-9a43-0d2f1c6e4b99").unwrap();
    let open = |reviewed: Option<&str>| {
        cmd(CaseAction::OpenCase {
            case_id: case_id(),
            agency: AgencyId::parse("agency-north").unwrap(),
            request: OpenCaseRequest {
                duplicate_reviewed: reviewed.map(|r| DuplicateReviewed { reason: text(r) }),
                ..open_request()
            },
            possible_duplicates: vec![other],
        })
    };
    CaseTest::with(services())
        .given_no_previous_events()
        .when(open(None))
        .then_expect_error(CaseError::PossibleDuplicate(vec![other]));
    let mut events = opened();
    if let CaseEvent::CaseOpened {
        duplicate_reviewed, ..
    } = &mut events[0]
    {
        *duplicate_reviewed = Some(DuplicateReview {
            reason: text("twins: the other case is the sibling's"),
            matched: vec![other],
        });
    }
    CaseTest::with(services())
        .given_no_previous_events()
        .when(open(Some("twins: the other case is the sibling's")))
        .then_expect_events(events);
}

#[test]
fn declines_and_cancellation_requests_carry_a_reason() {
    given(vec![sent()])
        .when(cmd(status(ReferralStatusUpdate::Declined, "2026-01-22")))
        .then_expect_error(CaseError::ReasonRequired("a declined referral"));
    given(vec![sent()])
        .when(cmd(status(
            ReferralStatusUpdate::CancellationRequested,
            "2026-01-22",
        )))
        .then_expect_error(CaseError::ReasonRequired("a cancellation request"));
}

#[test]
fn terminal_referrals_stay_terminal() {
    let declined = CaseEvent::ReferralDeclined {
        referral_id: referral_id(),
        on: d("2026-01-22"),
        reason: text("full"),
        outcome: None,
        reported: by_phone(),
        reason_code: StatusReason::Other,
    };
    for s in ReferralStatusUpdate::ALL {
        given(vec![sent(), declined.clone()])
            .when(cmd(status(*s, "2026-01-23")))
            .then_expect_error(CaseError::ReferralTerminal(ReferralStatus::Declined));
    }
}

#[test]
fn transitions_follow_the_bser_table() {
    // sent -> completed skips acceptance.
    let err = given(vec![sent()])
        .when(cmd(status(ReferralStatusUpdate::Completed, "2026-01-22")))
        .inspect_result()
        .unwrap_err();
    assert_eq!(err.code(), "invalid_referral_transition");
    // cancelled only after a cancellation request.
    given(vec![sent()])
        .when(cmd(status(ReferralStatusUpdate::Cancelled, "2026-01-22")))
        .then_expect_error(CaseError::InvalidReferralTransition {
            from: ReferralStatus::Sent,
            to: ReferralStatusUpdate::Cancelled,
        });
    // accepted twice.
    given(vec![sent(), accepted()])
        .when(cmd(status(ReferralStatusUpdate::Accepted, "2026-01-23")))
        .then_expect_error(CaseError::InvalidReferralTransition {
            from: ReferralStatus::Accepted,
            to: ReferralStatusUpdate::Accepted,
        });
}

#[test]
fn a_status_cannot_predate_the_referral() {
    let err = given(vec![sent()])
        .when(cmd(status(ReferralStatusUpdate::Accepted, "2026-01-19")))
        .inspect_result()
        .unwrap_err();
    assert_eq!(err.code(), "date_out_of_order");
}

// ---- appointments ---------------------------------------------------------------------------

#[test]
fn appointments_need_an_accepted_referral() {
    let schedule = |on: Option<&str>| {
        cmd(CaseAction::ScheduleAppointment {
            appointment_id: appointment_id(),
            request: ScheduleAppointmentRequest {
                on: on.map(d),
                referral_id: referral_id(),
                scheduled_for: t("2026-02-01T15:00:00Z"),
            },
        })
    };
    given(vec![sent()])
        .when(schedule(Some("2026-01-23")))
        .then_expect_error(CaseError::ReferralNotAccepted(ReferralStatus::Sent));
    given(vec![sent(), accepted()])
        .when(schedule(Some("2026-01-23")))
        .then_expect_events(vec![scheduled("2026-02-01T15:00:00Z")]);
    // Made before the referral was accepted: out of order.
    given(vec![sent(), accepted()])
        .when(schedule(Some("2026-01-21")))
        .then_expect_error(CaseError::DateOutOfOrder {
            field: "on",
            date: d("2026-01-21"),
            after: d("2026-01-22"),
        });
    // Without a date, it was made the day the command arrived.
    let events = given(vec![sent(), accepted()])
        .when(schedule(None))
        .inspect_result()
        .unwrap();
    assert!(
        matches!(&events[..], [CaseEvent::AppointmentScheduled { made_on, .. }] if *made_on == now().date_naive()),
        "{events:?}"
    );
}

#[test]
fn nothing_becomes_of_an_appointment_before_it_was_made() {
    let outcome = |on: &str| {
        cmd(CaseAction::RecordAppointmentOutcome {
            appointment_id: appointment_id(),
            request: AppointmentOutcomeRequest {
                outcome: AppointmentOutcomeKind::Cancelled,
                on: d(on),
                missed_reason: None,
                rescheduled_for: None,
            },
        })
    };
    given(vec![sent(), accepted(), scheduled("2026-02-01T15:00:00Z")])
        .when(outcome("2026-01-22"))
        .then_expect_error(CaseError::DateOutOfOrder {
            field: "on",
            date: d("2026-01-22"),
            after: d("2026-01-23"),
        });
    given(vec![sent(), accepted(), scheduled("2026-02-01T15:00:00Z")])
        .when(outcome("2026-01-23"))
        .inspect_result()
        .expect("cancelled the day it was made");
}

#[test]
fn a_no_show_only_after_the_appointment_time() {
    let mut missed = outcome(AppointmentOutcomeKind::Missed, "2026-01-30");
    if let CaseAction::RecordAppointmentOutcome { request, .. } = &mut missed {
        request.missed_reason = Some(MissedReason::NoShow);
    }
    let err = given(vec![sent(), accepted(), scheduled("2026-02-01T15:00:00Z")])
        .when(cmd(missed.clone()))
        .inspect_result()
        .unwrap_err();
    assert_eq!(err.code(), "appointment_not_yet_due");
    let mut ok = missed;
    if let CaseAction::RecordAppointmentOutcome { request, .. } = &mut ok {
        request.on = d("2026-02-01");
    }
    given(vec![sent(), accepted(), scheduled("2026-02-01T15:00:00Z")])
        .when(cmd(ok))
        .then_expect_events(vec![CaseEvent::AppointmentMissed {
            appointment_id: appointment_id(),
            on: d("2026-02-01"),
            missed_reason: MissedReason::NoShow,
        }]);
    // And no outcome at all for an appointment that was never scheduled.
    given(vec![sent(), accepted()])
        .when(cmd(outcome(AppointmentOutcomeKind::Kept, "2026-02-01")))
        .then_expect_error(CaseError::AppointmentNotFound);
}

#[test]
fn an_appointment_outcome_is_recorded_once_unless_voided() {
    let kept = CaseEvent::AppointmentKept {
        appointment_id: appointment_id(),
        on: d("2026-02-01"),
    };
    let base = vec![sent(), accepted(), scheduled("2026-02-01T15:00:00Z"), kept];
    given(base.clone())
        .when(cmd(outcome(AppointmentOutcomeKind::Kept, "2026-02-02")))
        .then_expect_error(CaseError::AppointmentOutcomeAlreadyRecorded(
            AppointmentStatus::Kept,
        ));
    let mut voided = base;
    voided.push(CaseEvent::EntryVoided {
        voided_event_id: EventId::generate(),
        voided_sequence: 6,
        voided_event_type: "AppointmentKept".into(),
        reason: text("wrong appointment"),
    });
    given(voided)
        .when(cmd(outcome(
            AppointmentOutcomeKind::Cancelled,
            "2026-02-02",
        )))
        .inspect_result()
        .unwrap();
}

#[test]
fn a_missed_appointment_can_be_rescheduled() {
    let missed = CaseEvent::AppointmentMissed {
        appointment_id: appointment_id(),
        on: d("2026-02-01"),
        missed_reason: MissedReason::NoShow,
    };
    let mut r = outcome(AppointmentOutcomeKind::Rescheduled, "2026-02-02");
    given(vec![
        sent(),
        accepted(),
        scheduled("2026-02-01T15:00:00Z"),
        missed.clone(),
    ])
    .when(cmd(r.clone()))
    .then_expect_error(CaseError::RescheduledForRequired);
    if let CaseAction::RecordAppointmentOutcome { request, .. } = &mut r {
        request.rescheduled_for = Some(t("2026-03-20T15:00:00Z"));
    }
    given(vec![
        sent(),
        accepted(),
        scheduled("2026-02-01T15:00:00Z"),
        missed,
    ])
    .when(cmd(r))
    .then_expect_events(vec![CaseEvent::AppointmentRescheduled {
        appointment_id: appointment_id(),
        on: d("2026-02-02"),
        rescheduled_for: t("2026-03-20T15:00:00Z"),
    }]);
}

// ---- contacts -------------------------------------------------------------------------------

#[test]
fn a_contact_needs_participants() {
    let mut c = contact("2026-02-01T10:00:00Z");
    if let CaseAction::LogContact { request, .. } = &mut c {
        request.with.clear();
    }
    given(vec![])
        .when(cmd(c))
        .then_expect_error(CaseError::NoParticipants);
}

// ---- transition -----------------------------------------------------------------------------

#[test]
fn a_transition_disposes_of_every_open_referral() {
    given(vec![sent()])
        .when(cmd(transition(None)))
        .then_expect_error(CaseError::OpenReferralsNeedDisposition);
    given(vec![sent()])
        .when(cmd(transition(Some(OpenReferralDisposition::Cancel))))
        .then_expect_events(vec![CaseEvent::CaseTransitioned {
            kind: TransitionKind::Discharge,
            reason: text("goals met"),
            effective_on: d("2026-03-01"),
            open_referrals: Some(OpenReferralDisposition::Cancel),
            cancelled_referrals: vec![referral_id()],
            carried_over_referrals: vec![],
        }]);
    // No open referrals: no disposition needed.
    given(vec![])
        .when(cmd(transition(None)))
        .then_expect_events(vec![closed()]);
}

#[test]
fn cancelled_by_transition_means_cancelled_in_state() {
    let mut case = Case::default();
    let mut events = opened();
    events.push(sent());
    events.push(CaseEvent::CaseTransitioned {
        kind: TransitionKind::Discharge,
        reason: text("moved away"),
        effective_on: d("2026-03-01"),
        open_referrals: Some(OpenReferralDisposition::Cancel),
        cancelled_referrals: vec![referral_id()],
        carried_over_referrals: vec![],
    });
    for e in events {
        cqrs_es::Aggregate::apply(&mut case, e);
    }
    assert_eq!(case.status(), CaseStatus::Closed);
    let r = case.referral(referral_id()).unwrap();
    assert_eq!(r.base_status(), ReferralStatus::Cancelled);
    assert_eq!(case.version, 4);
}

// ---- voiding --------------------------------------------------------------------------------

fn void(seq: u64, event_type: &str) -> CaseAction {
    CaseAction::VoidEntry {
        target: VoidTarget {
            event_id: EventId::generate(),
            sequence: seq,
            event_type: event_type.into(),
        },
        reason: text("entered in error"),
    }
}

#[test]
fn voiding_marks_and_never_removes() {
    let mut case = Case::default();
    let mut events = opened();
    events.push(logged("2026-02-01T10:00:00Z"));
    events.push(CaseEvent::EntryVoided {
        voided_event_id: EventId::generate(),
        voided_sequence: 3,
        voided_event_type: "ContactLogged".into(),
        reason: text("wrong family"),
    });
    for e in events.clone() {
        cqrs_es::Aggregate::apply(&mut case, e);
    }
    assert_eq!(case.contacts.len(), 1);
    assert!(case.contacts[0].voided);
    // Voiding the same entry twice, intake, or a void is refused.
    let mut given_events = events;
    given_events.drain(..2);
    given(given_events.clone())
        .when(cmd(void(3, "ContactLogged")))
        .then_expect_error(CaseError::AlreadyVoided);
    given(given_events.clone())
        .when(cmd(void(1, "CaseOpened")))
        .then_expect_error(CaseError::NotVoidable("CaseOpened".into()));
    given(given_events.clone())
        .when(cmd(void(4, "EntryVoided")))
        .then_expect_error(CaseError::NotVoidable("EntryVoided".into()));
    given(given_events)
        .when(cmd(void(99, "ContactLogged")))
        .then_expect_error(CaseError::EventNotFound);
}

#[test]
fn only_the_latest_status_change_can_be_voided() {
    let cancel_req = CaseEvent::ReferralCancellationRequested {
        referral_id: referral_id(),
        on: d("2026-01-25"),
        reason: text("moved"),
        reason_code: StatusReason::FamilyMoved,
    };
    // seq 3 sent, 4 accepted, 5 cancellation requested
    given(vec![sent(), accepted(), cancel_req.clone()])
        .when(cmd(void(4, "ReferralAccepted")))
        .then_expect_error(CaseError::LaterEntryDepends);
    given(vec![sent(), accepted(), cancel_req])
        .when(cmd(void(5, "ReferralCancellationRequested")))
        .inspect_result()
        .unwrap();
    given(vec![sent(), accepted()])
        .when(cmd(void(3, "ReferralSent")))
        .then_expect_error(CaseError::LaterEntryDepends);
}

#[test]
fn voided_status_reverts_the_referral() {
    let mut case = Case::default();
    let mut events = opened();
    events.extend([
        sent(),
        accepted(),
        CaseEvent::EntryVoided {
            voided_event_id: EventId::generate(),
            voided_sequence: 4,
            voided_event_type: "ReferralAccepted".into(),
            reason: text("wrong referral"),
        },
    ]);
    for e in events {
        cqrs_es::Aggregate::apply(&mut case, e);
    }
    let r = case.referral(referral_id()).unwrap();
    assert_eq!(r.base_status(), ReferralStatus::Sent);
    assert_eq!(r.history.len(), 1, "the voided change is kept, marked");
}

#[test]
fn applying_a_subset_keeps_stream_sequences_for_voids() {
    // Stream: 1 opened, 2 assigned, 3 contact A, 4 contact B, 5 void of 4. Skip 3.
    let contact = |id: ActivityId| CaseEvent::ContactLogged {
        activity_id: id,
        component: TcmComponent::Monitoring,
        contact_type: ContactType::Phone,
        with: vec![Participant::Guardian],
        occurred_at: t("2026-02-01T10:00:00Z"),
        stated_offset_seconds: Some(0),
        minutes: Minutes::parse(20).unwrap(),
        note: None,
        location: None,
    };
    let (a, b) = (ActivityId::generate(), ActivityId::generate());
    let mut case = Case::default();
    let mut stream: Vec<(u64, CaseEvent)> = opened()
        .into_iter()
        .enumerate()
        .map(|(i, e)| (i as u64 + 1, e))
        .collect();
    stream.push((3, contact(a)));
    stream.push((4, contact(b)));
    stream.push((
        5,
        CaseEvent::EntryVoided {
            voided_event_id: EventId::generate(),
            voided_sequence: 4,
            voided_event_type: "ContactLogged".into(),
            reason: text("duplicate"),
        },
    ));
    for (seq, e) in stream.into_iter().filter(|(seq, _)| *seq != 3) {
        case.apply_at(seq, e);
    }
    assert_eq!(case.contacts.len(), 1);
    assert_eq!(case.contacts[0].activity_id, b);
    assert!(
        case.contacts[0].voided,
        "the void found contact B by its stream sequence"
    );
    assert_eq!(case.version, 5);
}

#[test]
fn every_event_type_has_a_stable_name_and_version() {
    let e = sent();
    assert_eq!(cqrs_es::DomainEvent::event_type(&e), "ReferralSent");
    assert_eq!(cqrs_es::DomainEvent::event_version(&e), "1");
    let json = serde_json::to_value(&e).unwrap();
    assert!(json.get("ReferralSent").is_some(), "{json}");
}
