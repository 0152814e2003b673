//! Property tests (proptest) over what clients send and what the aggregate decides.
//!
//! - Any JSON at all, decoded as any command body, is a value or an error: never a panic.
//! - Any sequence of command bodies (drawn from valid and invalid field values: dates far and
//!   near, minutes out of range, text with NUL and other controls, unknown enum values, ids that
//!   name nothing), decoded and decided one after another on one case, never panics, and after
//!   every step: the state equals a replay of every event accepted so far, its version counts
//!   them, every event reads back from its JSON as itself, and nothing is accepted before the
//!   case is opened. A third of the sequences start from nothing, a third after the referral
//!   loop's valid start (a case, a referral accepted, an appointment made), a third after the
//!   whole loop (the appointment kept, the referral completed); a test checks that the
//!   generator keeps reaching the loop's end.
//!
//! CI runs proptest's default number of cases; a long run sets `PROPTEST_CASES` (for example
//! `PROPTEST_CASES=1000000 cargo test --release -p aggregates --test properties`).

use std::sync::Arc;

use aggregates::{Actor, Case, CaseAction, CaseCommand, CaseEvent, CaseServices};
use chrono::{Duration, TimeZone, Utc};
use cqrs_es::Aggregate;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestCaseError;
use schemas::instruments::Catalog;
use schemas::wire::*;
use schemas::*;
use serde_json::{json, Value};

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,16}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Decodes `value` as every command body the API takes: each is a value or an error.
fn decode_all(value: &Value) {
    let _ = serde_json::from_value::<OpenCaseRequest>(value.clone());
    let _ = serde_json::from_value::<AssignCaseManagerRequest>(value.clone());
    let _ = serde_json::from_value::<RecordScreeningRequest>(value.clone());
    let _ = serde_json::from_value::<ReviseCarePlanRequest>(value.clone());
    let _ = serde_json::from_value::<SendReferralRequest>(value.clone());
    let _ = serde_json::from_value::<ReferralStatusRequest>(value.clone());
    let _ = serde_json::from_value::<ScheduleAppointmentRequest>(value.clone());
    let _ = serde_json::from_value::<AppointmentOutcomeRequest>(value.clone());
    let _ = serde_json::from_value::<LogContactRequest>(value.clone());
    let _ = serde_json::from_value::<TransitionRequest>(value.clone());
    let _ = serde_json::from_value::<ReopenRequest>(value.clone());
    let _ = serde_json::from_value::<CorrectionRequest>(value.clone());
}

/// "Now" of every command: 2026-03-10 12:00 UTC.
fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap()
}

fn date() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => Just(json!(now().date_naive().to_string())),
        6 => (-20i64..=0).prop_map(|d| json!((now().date_naive() + Duration::days(d)).to_string())),
        2 => (-400i64..30).prop_map(|d| json!((now().date_naive() + Duration::days(d)).to_string())),
        1 => prop_oneof![Just(json!("2026-02-30")), Just(json!("")), Just(json!("yesterday")), Just(json!(20260310))],
    ]
}

fn instant() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => (-24 * 20i64..24 * 10, prop_oneof![Just("Z"), Just("+05:30"), Just("-10:00")])
            .prop_map(|(h, zone)| {
                let at = (now() + Duration::hours(h)).format("%Y-%m-%dT%H:%M:%S").to_string();
                json!(format!("{at}{zone}"))
            }),
        1 => prop_oneof![Just(json!("2026-03-10")), Just(json!("soon")), Just(Value::Null)],
    ]
}

/// Text: mostly ordinary, sometimes empty, long, or with NUL and other control characters.
fn text() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => "[A-Za-z ]{1,30}".prop_map(Value::String),
        1 => "\\PC{0,40}".prop_map(Value::String),
        1 => prop_oneof![Just(json!("")), Just(json!("a\u{0}b")), Just(json!("x".repeat(5000))), Just(json!("\t\n"))],
    ]
}

fn one_of(values: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => prop::sample::select(values).prop_map(|v| json!(v)),
        1 => Just(json!("bogus")),
    ]
}

fn minutes() -> impl Strategy<Value = Value> {
    prop_oneof![8 => (1i64..240).prop_map(|m| json!(m)), 1 => (-5i64..2000).prop_map(|m| json!(m))]
}

/// One client request: which command, its JSON body, and which earlier id it names (by index).
#[derive(Debug, Clone)]
struct Step {
    kind: u8,
    body: Value,
    pick: usize,
}

fn step() -> impl Strategy<Value = Step> {
    let open = (date(), text(), text()).prop_map(|(intake, given, family)| {
        json!({"program": "tcm", "assigned_to": "cm-ada", "intake_date": intake,
            "child": {"given_name": given, "family_name": family, "birth_date": "2016-05-04"}})
    });
    let assign = (one_of(&["cm-bo", "cm-ada"]), date())
        .prop_map(|(who, on)| json!({"assigned_to": who, "on": on}));
    let contact = (
        one_of(&[
            "assessment",
            "care_planning",
            "referral_linkage",
            "monitoring",
        ]),
        one_of(&[
            "face_to_face",
            "phone",
            "video",
            "collateral",
            "written",
            "voicemail",
        ]),
        one_of(&["child", "guardian", "provider", "school"]),
        instant(),
        minutes(),
        prop::option::of(text()),
    )
        .prop_map(|(component, kind, with, at, minutes, note)| {
            json!({"component": component, "contact_type": kind, "with": [with],
                "occurred_at": at, "minutes": minutes, "note": note})
        });
    let referral = (text(), date(), any::<bool>()).prop_map(|(reason, sent_on, dnc)| {
        json!({"service_type": "outpatient_therapy", "provider": {"id": "prov-1"},
            "reason": reason, "sent_on": sent_on, "do_not_contact_subject": dnc})
    });
    let status = (
        one_of(&[
            "accepted",
            "declined",
            "cancellation_requested",
            "cancelled",
            "completed",
        ]),
        date(),
        prop::option::of(text()),
        prop_oneof![
            3 => Just(Value::Null),
            1 => one_of(&["connected", "not_connected", "family_declined"]),
        ],
        any::<bool>(),
    )
        .prop_map(|(status, on, reason, outcome, by_staff)| {
            let reported_by =
                by_staff.then(|| json!({"provider_id": "prov-1", "channel": "phone"}));
            json!({"status": status, "on": on, "reason": reason, "outcome": outcome,
                "reported_by": reported_by})
        });
    let schedule = instant().prop_map(|at| json!({"referral_id": "", "scheduled_for": at}));
    let outcome = (
        one_of(&["kept", "missed", "cancelled", "rescheduled"]),
        // An outcome is recorded on or after the day the appointment was made (today, here).
        prop_oneof![3 => Just(json!(now().date_naive().to_string())), 1 => date()],
        prop::option::of(one_of(&["no_show", "family_cancelled", "provider_cancelled"])),
        prop::option::of(instant()),
    )
        .prop_map(|(outcome, on, missed, again)| {
            json!({"outcome": outcome, "on": on, "missed_reason": missed, "rescheduled_for": again})
        });
    let transition = (
        one_of(&["step_down", "transfer", "discharge"]),
        text(),
        date(),
        prop::option::of(one_of(&["carry_over", "cancel"])),
    )
        .prop_map(|(kind, reason, on, open)| {
            json!({"kind": kind, "reason": reason, "effective_on": on, "open_referrals": open})
        });
    let reopen = (text(), date()).prop_map(|(reason, on)| json!({"reason": reason, "on": on}));
    // Weighted toward the referral loop, which needs several steps in order to get far.
    let body = prop_oneof![
        2 => (Just(0u8), open),
        1 => (Just(1u8), assign),
        3 => (Just(2u8), contact),
        3 => (Just(3u8), referral),
        4 => (Just(4u8), status),
        3 => (Just(5u8), schedule),
        3 => (Just(6u8), outcome),
        1 => (Just(7u8), transition),
        1 => (Just(8u8), reopen),
    ];
    (body, any::<usize>()).prop_map(|((kind, body), pick)| Step { kind, body, pick })
}

/// Ids the steps so far made, so that later steps can name them (or name nothing).
#[derive(Default)]
struct Made {
    referrals: Vec<ReferralId>,
    appointments: Vec<AppointmentId>,
}

/// One of the ids made so far, or (when there is none, and one time in five) one that names
/// nothing.
fn pick<T: Clone>(made: &[T], pick: usize, fresh: impl FnOnce() -> T) -> T {
    if made.is_empty() || pick % 5 == 0 {
        fresh()
    } else {
        made[pick % made.len()].clone()
    }
}

/// The action a step's body decodes to, or None when the body does not decode (the API's 400).
fn action(step: &Step, made: &Made) -> Option<CaseAction> {
    let body = step.body.clone();
    Some(match step.kind {
        0 => CaseAction::OpenCase {
            case_id: CaseId::parse("0190c6f2-5a8e-7c3b-9a43-0d2f1c6e4b11").unwrap(),
            agency: AgencyId::parse("agency-north").unwrap(),
            request: serde_json::from_value(body).ok()?,
            possible_duplicates: vec![],
        },
        1 => CaseAction::AssignCaseManager(serde_json::from_value(body).ok()?),
        2 => CaseAction::LogContact {
            activity_id: ActivityId::generate(),
            request: serde_json::from_value(body).ok()?,
        },
        3 => CaseAction::SendReferral {
            referral_id: ReferralId::generate(),
            request: serde_json::from_value(body).ok()?,
        },
        4 => CaseAction::UpdateReferralStatus {
            referral_id: pick(&made.referrals, step.pick, ReferralId::generate),
            request: serde_json::from_value(body).ok()?,
        },
        5 => {
            let mut body = body;
            body["referral_id"] =
                json!(pick(&made.referrals, step.pick, ReferralId::generate).to_string());
            CaseAction::ScheduleAppointment {
                appointment_id: AppointmentId::generate(),
                request: serde_json::from_value(body).ok()?,
            }
        }
        6 => CaseAction::RecordAppointmentOutcome {
            appointment_id: pick(&made.appointments, step.pick, AppointmentId::generate),
            request: serde_json::from_value(body).ok()?,
        },
        7 => CaseAction::TransitionCase(serde_json::from_value(body).ok()?),
        _ => CaseAction::ReopenCase(serde_json::from_value(body).ok()?),
    })
}

fn services() -> CaseServices {
    CaseServices {
        instruments: Arc::new(Catalog::builtin().unwrap()),
        documentation_window_days: 90,
    }
}

fn actor() -> Actor {
    Actor {
        id: ActorId::parse("cm-ada").unwrap(),
        role: Role::CaseManager,
        agency: AgencyId::parse("agency-north").unwrap(),
        provider: None,
    }
}

/// Decides `action` on `case` through `handle` (which applies what it accepts); the events.
fn decide(case: &mut Case, action: CaseAction, services: &CaseServices) -> Option<Vec<CaseEvent>> {
    let sink = cqrs_es::event_sink::EventSink::default();
    let command = CaseCommand {
        actor: actor(),
        received_at: now(),
        zone: chrono_tz::Tz::UTC,
        action,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        match case.handle(command, services, &sink).await {
            Ok(()) => Some(sink.collect().await),
            Err(_) => None,
        }
    })
}

/// Decides `steps` one after another on a new case, checking the invariants after each: the
/// events accepted.
fn run(steps: &[Step]) -> Result<Vec<CaseEvent>, TestCaseError> {
    let services = services();
    let mut case = Case::default();
    let mut accepted: Vec<CaseEvent> = Vec::new();
    let mut made = Made::default();
    for step in steps {
        let Some(action) = action(step, &made) else {
            continue;
        };
        let before = case.clone();
        let referral = match &action {
            CaseAction::SendReferral { referral_id, .. } => Some(*referral_id),
            _ => None,
        };
        let appointment = match &action {
            CaseAction::ScheduleAppointment { appointment_id, .. } => Some(*appointment_id),
            _ => None,
        };
        match decide(&mut case, action, &services) {
            Some(events) => {
                prop_assert!(
                    before.exists()
                        || matches!(events.first(), Some(CaseEvent::CaseOpened { .. }) | None),
                    "nothing before the case is opened: {events:?}"
                );
                made.referrals.extend(referral);
                made.appointments.extend(appointment);
                accepted.extend(events);
            }
            None => prop_assert_eq!(&case, &before, "a refused command changes nothing"),
        }
        let mut replayed = Case::default();
        for event in &accepted {
            let json = serde_json::to_value(event).unwrap();
            let read: CaseEvent = serde_json::from_value(json).unwrap();
            prop_assert_eq!(&read, event, "an event reads back as itself");
            replayed.apply(read);
        }
        prop_assert_eq!(&replayed, &case, "the state is the replay of its events");
        prop_assert_eq!(case.version as usize, accepted.len());
    }
    Ok(accepted)
}

/// The start of the referral loop, valid: a case opened, a referral sent and accepted, an
/// appointment scheduled. Arbitrary steps after it then reach the loop's end (an appointment
/// kept or missed, the referral completed) far more often than from nothing.
fn loop_prefix() -> Vec<Step> {
    let day = |d: i64| (now().date_naive() - Duration::days(d)).to_string();
    let at = (now() - Duration::hours(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    vec![
        Step {
            kind: 0,
            body: json!({"program": "tcm", "assigned_to": "cm-ada", "intake_date": day(30),
                "child": {"given_name": "Robin", "family_name": "Sample", "birth_date": "2016-05-04"}}),
            pick: 0,
        },
        Step {
            kind: 3,
            body: json!({"service_type": "outpatient_therapy", "provider": {"id": "prov-1"},
                "reason": "therapy", "sent_on": day(25), "do_not_contact_subject": false}),
            pick: 0,
        },
        Step {
            kind: 4,
            body: json!({"status": "accepted", "on": day(20),
                "reported_by": {"provider_id": "prov-1", "channel": "phone"}}),
            pick: 1,
        },
        Step {
            kind: 5,
            body: json!({"referral_id": "", "scheduled_for": at}),
            pick: 1,
        },
    ]
}

/// The whole referral loop, valid: its start, the appointment kept, the referral completed.
fn whole_loop() -> Vec<Step> {
    let today = now().date_naive().to_string();
    let mut steps = loop_prefix();
    steps.extend([
        Step {
            kind: 6,
            body: json!({"outcome": "kept", "on": today}),
            pick: 1,
        },
        Step {
            kind: 4,
            body: json!({"status": "completed", "on": today, "outcome": "connected",
                "reported_by": {"provider_id": "prov-1", "channel": "phone"}}),
            pick: 1,
        },
    ]);
    steps
}

/// A third of the sequences from nothing, a third after the loop's valid start, a third after
/// the whole loop (so that what follows meets a referral and an appointment in their final
/// states).
fn sequence() -> impl Strategy<Value = Vec<Step>> {
    let after = |start: fn() -> Vec<Step>| {
        prop::collection::vec(step(), 0..20).prop_map(move |rest| {
            let mut steps = start();
            steps.extend(rest);
            steps
        })
    };
    prop_oneof![
        prop::collection::vec(step(), 1..24),
        after(loop_prefix),
        after(whole_loop),
    ]
}

proptest! {
    #[test]
    fn any_json_decodes_to_a_value_or_an_error(value in any_json()) {
        decode_all(&value);
    }

    #[test]
    fn any_command_sequence_keeps_the_invariants(steps in sequence()) {
        run(&steps)?;
    }
}

/// The generator reaches the end of the referral loop: of 2,000 sequences, enough record an
/// appointment kept or missed and complete a referral that the invariants are checked there too
/// (a generator that stopped getting that far would pass the property vacuously).
#[test]
fn the_sequences_reach_the_end_of_the_referral_loop() {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = sequence();
    let (mut outcomes, mut completed, n) = (0, 0, 2_000);
    for _ in 0..n {
        let steps = strategy.new_tree(&mut runner).unwrap().current();
        let events = run(&steps).expect("the invariants hold");
        outcomes += usize::from(events.iter().any(|e| {
            matches!(
                e,
                CaseEvent::AppointmentKept { .. } | CaseEvent::AppointmentMissed { .. }
            )
        }));
        completed += usize::from(
            events
                .iter()
                .any(|e| matches!(e, CaseEvent::ReferralCompleted { .. })),
        );
    }
    eprintln!("of {n} sequences: {outcomes} record an appointment's outcome, {completed} complete a referral");
    assert!(
        outcomes * 10 >= n,
        "{outcomes} of {n} reach an appointment's outcome"
    );
    assert!(
        completed * 20 >= n,
        "{completed} of {n} complete a referral"
    );
}
