//! The TCM rule table: each row is a situation from `schemas/DOMAIN.md` evaluated under a shipped profile
//! (`ops/billing/*.toml`), with the billable flag, units and every reason it must produce.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use projections::billing::*;
use schemas::*;

fn load(text: &str) -> Profile {
    let p: Profile = toml::from_str(text).expect("the profile parses");
    p.validate().expect("the profile is valid");
    p
}

fn texas() -> Profile {
    load(include_str!("../../ops/billing/texas_like.toml"))
}

/// The same 15-minute profile, rounding each contact on its own (today's payer that requires it).
fn texas_per_contact() -> Profile {
    let mut p = texas();
    p.units = UnitRule::FifteenMinute {
        first_unit_minimum_minutes: 8,
        rounding: Rounding::PerContact,
    };
    p
}

fn california() -> Profile {
    load(include_str!("../../ops/billing/california_like.toml"))
}

fn case_rate() -> Profile {
    let mut p = texas();
    p.name = "case_rate_example".into();
    p.units = UnitRule::MonthlyCaseRate;
    p.caps = Caps::default();
    p
}

fn date(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, d).expect("a March date")
}

fn at(d: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, d, hour, 0, 0)
        .single()
        .expect("a time")
}

fn recipient() -> Recipient {
    Recipient {
        case_id: Some(CaseId::generate()),
        medicaid_id: Some(MedicaidId::parse("ZZ00000042").expect("synthetic id")),
        intake_date: Some(date(1) - chrono::Days::new(30)),
        closed: vec![],
        discharges: vec![],
        zone: chrono_tz::Tz::UTC,
    }
}

/// A documented 20-minute monitoring phone call with the guardian on March 10th at 10:00.
fn contact(minutes: u16) -> Contact {
    Contact {
        activity_id: ActivityId::generate(),
        occurred_at: at(10, 10),
        component: TcmComponent::Monitoring,
        contact_type: ContactType::Phone,
        with: vec![Participant::Guardian],
        minutes,
        has_note: true,
        location: Some(Location::Office),
        rendering_provider: Some(ActorId::parse("cm-ada").expect("actor")),
        voided: false,
    }
}

fn with(minutes: u16, f: impl FnOnce(&mut Contact)) -> Contact {
    let mut c = contact(minutes);
    f(&mut c);
    c
}

struct Row {
    name: &'static str,
    profile: Profile,
    recipient: Recipient,
    contacts: Vec<Contact>,
    /// Per line, in evaluation order: billable, units, reasons.
    expect: Vec<(bool, u32, Vec<&'static str>)>,
}

fn row(
    name: &'static str,
    profile: Profile,
    contacts: Vec<Contact>,
    expect: Vec<(bool, u32, Vec<&'static str>)>,
) -> Row {
    Row {
        name,
        profile,
        recipient: recipient(),
        contacts,
        expect,
    }
}

fn ok(units: u32) -> (bool, u32, Vec<&'static str>) {
    (true, units, vec![])
}

fn no(reasons: &[&'static str]) -> (bool, u32, Vec<&'static str>) {
    (false, 0, reasons.to_vec())
}

fn same_day(n: usize, minutes: u16) -> Vec<Contact> {
    (0..n)
        .map(|i| with(minutes, |c| c.occurred_at = at(10, 8 + i as u32)))
        .collect()
}

/// Contacts of these minutes on March 10th, 20 minutes apart from 08:00, in that order.
fn a_day_of(minutes: &[u16]) -> Vec<Contact> {
    minutes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            with(*m, |c| {
                c.occurred_at = at(10, 8) + chrono::Duration::minutes(20 * i as i64)
            })
        })
        .collect()
}

/// A batch's adjustments as the store would hold them once exported: `line-0`, `line-1`, ...
fn as_exported(batch: &[Adjustment]) -> Vec<Exported> {
    batch
        .iter()
        .enumerate()
        .map(|(i, x)| Exported {
            line_id: format!("line-{i}"),
            kind: x.kind,
            fingerprint: fingerprint(&x.line),
            line: x.line.clone(),
        })
        .collect()
}

fn combined() -> (bool, u32, Vec<&'static str>) {
    (false, 0, vec!["combined_into_day_total"])
}

fn rows() -> Vec<Row> {
    let discharged_in = |days: u64| {
        let mut r = recipient();
        r.discharges = vec![date(10) + chrono::Days::new(days)];
        r
    };
    let in_institution = |c: &mut Contact| {
        c.location = Some(Location::Institution);
        c.contact_type = ContactType::FaceToFace;
        c.component = TcmComponent::CarePlanning;
    };
    vec![
        // The 8-minute rule's edges.
        row(
            "7 minutes is below the first unit",
            texas(),
            vec![contact(7)],
            vec![no(&["below_minimum_minutes"])],
        ),
        row(
            "8 minutes is one unit",
            texas(),
            vec![contact(8)],
            vec![ok(1)],
        ),
        row(
            "22 minutes is still one unit",
            texas(),
            vec![contact(22)],
            vec![ok(1)],
        ),
        row(
            "23 minutes is two units",
            texas(),
            vec![contact(23)],
            vec![ok(2)],
        ),
        row(
            "37 minutes is two units",
            texas(),
            vec![contact(37)],
            vec![ok(2)],
        ),
        row(
            "38 minutes is three units",
            texas(),
            vec![contact(38)],
            vec![ok(3)],
        ),
        row(
            "52 minutes is three units",
            texas(),
            vec![contact(52)],
            vec![ok(3)],
        ),
        row(
            "53 minutes is four units",
            texas(),
            vec![contact(53)],
            vec![ok(4)],
        ),
        // Contact types and participants.
        row(
            "voicemail is never billable",
            texas(),
            vec![with(20, |c| c.contact_type = ContactType::Voicemail)],
            vec![no(&["contact_type_not_billable"])],
        ),
        row(
            "a letter is not a billable contact",
            texas(),
            vec![with(20, |c| c.contact_type = ContactType::Written)],
            vec![no(&["contact_type_not_billable"])],
        ),
        row(
            "collateral with the child's provider counts",
            texas(),
            vec![with(20, |c| {
                c.contact_type = ContactType::Collateral;
                c.with = vec![Participant::Provider];
            })],
            vec![ok(1)],
        ),
        row(
            "collateral with someone not shown to be about the child does not",
            texas(),
            vec![with(20, |c| {
                c.contact_type = ContactType::Collateral;
                c.with = vec![Participant::Other];
            })],
            vec![no(&["collateral_not_about_child"])],
        ),
        row(
            "a component the payer does not cover",
            {
                let mut p = texas();
                p.billable_components = vec![TcmComponent::Monitoring];
                p
            },
            vec![with(20, |c| c.component = TcmComponent::Assessment)],
            vec![no(&["component_not_billable"])],
        ),
        // The institution window.
        Row {
            name: "in an institution with no discharge in sight",
            profile: texas(),
            recipient: recipient(),
            contacts: vec![with(30, in_institution)],
            expect: vec![no(&["institution_outside_window"])],
        },
        Row {
            name: "transition planning 100 days before discharge (window 180)",
            profile: texas(),
            recipient: discharged_in(100),
            contacts: vec![with(30, in_institution)],
            expect: vec![ok(2)],
        },
        Row {
            name: "200 days before discharge is outside a 180-day window",
            profile: texas(),
            recipient: discharged_in(200),
            contacts: vec![with(30, in_institution)],
            expect: vec![no(&["institution_outside_window"])],
        },
        Row {
            name: "90 days before discharge is outside a 60-day window",
            profile: california(),
            recipient: discharged_in(90),
            contacts: vec![with(30, in_institution)],
            expect: vec![no(&["institution_outside_window"])],
        },
        Row {
            name: "the discharge day itself is inside the window",
            profile: california(),
            recipient: discharged_in(0),
            contacts: vec![with(30, in_institution)],
            expect: vec![ok(1)],
        },
        // Documentation (441.18(a)(7)).
        row(
            "no note: nature and content missing",
            texas(),
            vec![with(20, |c| c.has_note = false)],
            vec![no(&["missing_documentation:note"])],
        ),
        row(
            "nobody named as having delivered it",
            texas(),
            vec![with(20, |c| c.rendering_provider = None)],
            vec![no(&["missing_documentation:rendering_provider"])],
        ),
        row(
            "location required by the encounter profile",
            california(),
            vec![with(20, |c| {
                c.location = None;
                c.contact_type = ContactType::FaceToFace;
            })],
            vec![no(&["missing_documentation:location"])],
        ),
        row(
            "location not required by the 15-minute profile",
            texas(),
            vec![with(20, |c| c.location = None)],
            vec![ok(1)],
        ),
        // The recipient.
        Row {
            name: "no Medicaid id",
            profile: texas(),
            recipient: Recipient {
                medicaid_id: None,
                ..recipient()
            },
            contacts: vec![contact(20)],
            expect: vec![no(&["no_medicaid_id"])],
        },
        Row {
            name: "a contact before intake",
            profile: texas(),
            recipient: Recipient {
                intake_date: Some(date(15)),
                ..recipient()
            },
            contacts: vec![contact(20)],
            expect: vec![no(&["not_enrolled_on_date"])],
        },
        Row {
            name: "a contact after the case was closed",
            profile: texas(),
            recipient: Recipient {
                closed: vec![(date(5), None)],
                ..recipient()
            },
            contacts: vec![contact(20)],
            expect: vec![no(&["case_closed"])],
        },
        Row {
            name: "closed, then reopened before the contact",
            profile: texas(),
            recipient: Recipient {
                closed: vec![(date(5), Some(date(8)))],
                ..recipient()
            },
            contacts: vec![contact(20)],
            expect: vec![ok(1)],
        },
        row(
            "a voided contact bills nothing",
            texas(),
            vec![with(20, |c| c.voided = true)],
            vec![no(&["voided"])],
        ),
        Row {
            name: "every reason is named, in order",
            profile: texas_per_contact(),
            recipient: Recipient {
                medicaid_id: None,
                ..recipient()
            },
            contacts: vec![with(5, |c| {
                c.contact_type = ContactType::Voicemail;
                c.has_note = false;
            })],
            expect: vec![no(&[
                "no_medicaid_id",
                "contact_type_not_billable",
                "below_minimum_minutes",
                "missing_documentation:note",
            ])],
        },
        // Units from the day's minutes (`per_day_total`, the shipped default).
        row(
            "8+8+8+9 minutes on one day are 33 minutes: 2 units, not 4",
            texas(),
            a_day_of(&[8, 8, 8, 9]),
            vec![ok(1), combined(), ok(1), combined()],
        ),
        row(
            "calls of 7 and 5 minutes reach the minimum together: 1 unit",
            texas(),
            a_day_of(&[7, 5]),
            vec![combined(), ok(1)],
        ),
        row(
            "a voicemail among them is not counted",
            texas(),
            // 4 + 3 minutes stay below the minimum; with the voicemail's 5 they would not.
            {
                let mut day = a_day_of(&[4, 5, 3]);
                day[1].contact_type = ContactType::Voicemail;
                day
            },
            vec![
                no(&["below_minimum_minutes"]),
                no(&["contact_type_not_billable"]),
                no(&["below_minimum_minutes"]),
            ],
        ),
        row(
            "a non-qualifying contact's minutes do not count either",
            texas(),
            {
                let mut day = a_day_of(&[5, 5]);
                day[0].has_note = false;
                day
            },
            vec![
                no(&["missing_documentation:note"]),
                no(&["below_minimum_minutes"]),
            ],
        ),
        Row {
            name: "either side of local midnight are two days, each below the minimum",
            profile: texas(),
            recipient: Recipient {
                zone: chrono_tz::America::Chicago,
                ..recipient()
            },
            // 23:50 on March 9th and 00:10 on March 10th in Chicago (CDT, UTC-5).
            contacts: vec![
                with(7, |c| {
                    c.occurred_at = at(10, 4) + chrono::Duration::minutes(50)
                }),
                with(7, |c| {
                    c.occurred_at = at(10, 5) + chrono::Duration::minutes(10)
                }),
            ],
            expect: vec![
                no(&["below_minimum_minutes"]),
                no(&["below_minimum_minutes"]),
            ],
        },
        row(
            "the same two calls in one UTC day make a unit",
            texas(),
            vec![
                with(7, |c| {
                    c.occurred_at = at(10, 4) + chrono::Duration::minutes(50)
                }),
                with(7, |c| {
                    c.occurred_at = at(10, 5) + chrono::Duration::minutes(10)
                }),
            ],
            vec![combined(), ok(1)],
        ),
        row(
            "twenty 15-minute calls in a day: the daily cap applies after the allocation",
            texas(),
            a_day_of(&[15; 20]),
            {
                let mut e: Vec<_> = (0..16).map(|_| ok(1)).collect();
                e.extend((0..4).map(|_| no(&["daily_cap_reached"])));
                e
            },
        ),
        row(
            "per_contact rounds each contact up on its own: 4 units",
            texas_per_contact(),
            a_day_of(&[8, 8, 8, 9]),
            vec![ok(1), ok(1), ok(1), ok(1)],
        ),
        row(
            "per_contact: 7 and 5 minutes bill nothing",
            texas_per_contact(),
            a_day_of(&[7, 5]),
            vec![
                no(&["below_minimum_minutes"]),
                no(&["below_minimum_minutes"]),
            ],
        ),
        // Caps, applied daily then monthly, in date-time order.
        row(
            "the daily cap cuts the third 90-minute contact",
            texas(),
            same_day(3, 90),
            vec![ok(6), ok(6), (true, 4, vec!["daily_cap_reached"])],
        ),
        row(
            "after the daily cap nothing more that day",
            texas(),
            same_day(4, 90),
            vec![
                ok(6),
                ok(6),
                (true, 4, vec!["daily_cap_reached"]),
                no(&["daily_cap_reached"]),
            ],
        ),
        row(
            "the monthly cap stops the seventh full day",
            texas(),
            (1..=7)
                .flat_map(|d| (0..2).map(move |h| with(120, |c| c.occurred_at = at(d + 1, 9 + h))))
                .collect(),
            {
                let mut e: Vec<_> = (0..12).map(|_| ok(8)).collect();
                e.push(no(&["monthly_cap_reached"]));
                e.push(no(&["monthly_cap_reached"]));
                e
            },
        ),
        row(
            "the monthly cap cuts a line short",
            texas(),
            (1..=6)
                .map(|d| with(240, |c| c.occurred_at = at(d, 9)))
                .chain([
                    with(90, |c| c.occurred_at = at(7, 9)),
                    with(90, |c| c.occurred_at = at(7, 10)),
                ])
                .collect(),
            {
                let mut e: Vec<_> = (0..6).map(|_| (true, 16, vec![])).collect();
                e.push(no(&["monthly_cap_reached"]));
                e.push(no(&["monthly_cap_reached"]));
                e
            },
        ),
        row(
            "caps follow time order, not arrival order",
            texas(),
            vec![
                with(90, |c| c.occurred_at = at(10, 15)),
                with(90, |c| c.occurred_at = at(10, 9)),
                with(90, |c| c.occurred_at = at(10, 12)),
            ],
            vec![ok(6), ok(6), (true, 4, vec!["daily_cap_reached"])],
        ),
        row(
            "a voided contact does not use up the cap",
            texas(),
            vec![
                with(90, |c| {
                    c.voided = true;
                    c.occurred_at = at(10, 8);
                }),
                with(90, |c| c.occurred_at = at(10, 9)),
                with(90, |c| c.occurred_at = at(10, 10)),
                with(90, |c| c.occurred_at = at(10, 11)),
            ],
            vec![
                no(&["voided"]),
                ok(6),
                ok(6),
                (true, 4, vec!["daily_cap_reached"]),
            ],
        ),
        // Encounters.
        row(
            "one encounter per day: the second face-to-face is a duplicate",
            california(),
            same_day(2, 30)
                .into_iter()
                .map(|mut c| {
                    c.contact_type = ContactType::FaceToFace;
                    c
                })
                .collect(),
            vec![ok(1), no(&["duplicate_encounter"])],
        ),
        row(
            "a 14-minute call is not a significant phone contact",
            california(),
            vec![contact(14)],
            vec![no(&["below_minimum_minutes"])],
        ),
        row(
            "a 15-minute call is an encounter",
            california(),
            vec![contact(15)],
            vec![ok(1)],
        ),
        row(
            "encounters on two days are two units",
            california(),
            vec![
                with(20, |c| c.occurred_at = at(10, 9)),
                with(20, |c| c.occurred_at = at(11, 9)),
            ],
            vec![ok(1), ok(1)],
        ),
        row(
            "a short call does not use up the day's encounter",
            california(),
            vec![
                with(10, |c| c.occurred_at = at(10, 9)),
                with(20, |c| c.occurred_at = at(10, 11)),
            ],
            vec![no(&["below_minimum_minutes"]), ok(1)],
        ),
        row(
            "the encounter profile's monthly cap",
            california(),
            (1..=21)
                .map(|d| with(20, |c| c.occurred_at = at(d, 9)))
                .collect(),
            {
                let mut e: Vec<_> = (0..20).map(|_| ok(1)).collect();
                e.push(no(&["monthly_cap_reached"]));
                e
            },
        ),
        // A monthly case rate.
        row(
            "a case rate: the month's first qualifying contact carries it",
            case_rate(),
            vec![
                with(20, |c| {
                    c.contact_type = ContactType::Voicemail;
                    c.occurred_at = at(2, 9);
                }),
                with(20, |c| c.occurred_at = at(3, 9)),
                with(20, |c| c.occurred_at = at(4, 9)),
            ],
            vec![
                no(&["contact_type_not_billable"]),
                ok(1),
                no(&["case_rate_already_billed"]),
            ],
        ),
    ]
}

#[test]
fn the_rule_table() {
    let rows = rows();
    assert!(
        rows.len() >= 30,
        "the issue asks for at least 30 rule cases"
    );
    let mut failures = Vec::new();
    for r in &rows {
        let lines = evaluate_month(&r.profile, &r.recipient, &r.contacts);
        let got: Vec<(bool, u32, Vec<String>)> = lines
            .iter()
            .map(|l| {
                (
                    l.billable,
                    l.units,
                    l.reasons.iter().map(ToString::to_string).collect(),
                )
            })
            .collect();
        let want: Vec<(bool, u32, Vec<String>)> = r
            .expect
            .iter()
            .map(|(b, u, rs)| (*b, *u, rs.iter().map(|s| (*s).to_owned()).collect()))
            .collect();
        if got != want {
            failures.push(format!("{}:\n  want {want:?}\n  got  {got:?}", r.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rule cases failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

#[test]
fn a_billable_line_carries_code_modifiers_provider_and_recipient() {
    let r = recipient();
    let face = with(30, |c| c.contact_type = ContactType::FaceToFace);
    let video = with(30, |c| {
        c.contact_type = ContactType::Video;
        c.occurred_at = at(11, 9);
    });
    let lines = evaluate_month(&texas(), &r, &[face, video]);
    assert_eq!(lines[0].procedure_code, "T1017");
    assert_eq!(lines[0].modifiers, ["U1"]);
    assert_eq!(lines[1].modifiers, ["U2", "95"]);
    assert_eq!(lines[0].medicaid_id, r.medicaid_id);
    assert_eq!(
        lines[0].rendering_provider.as_ref().map(|a| a.as_str()),
        Some("cm-ada")
    );
    assert_eq!(lines[0].date_of_service, date(10));
    let refused = evaluate_month(&texas(), &r, &[with(5, |_| {})]);
    assert!(
        refused[0].modifiers.is_empty(),
        "no modifiers on a line that bills nothing"
    );
}

#[test]
fn a_broken_profile_is_refused_with_a_clear_reason() {
    let mut p = texas();
    p.caps = Caps {
        daily_units: Some(20),
        monthly_units: Some(10),
    };
    assert!(p
        .validate()
        .unwrap_err()
        .to_string()
        .contains("daily_units (20) exceeds"));
    let mut p = texas();
    p.contacts.billable_types.push(ContactType::Voicemail);
    assert!(p
        .validate()
        .unwrap_err()
        .to_string()
        .contains("never billable"));
    let mut p = texas();
    p.units = UnitRule::FifteenMinute {
        first_unit_minimum_minutes: 0,
        rounding: Rounding::PerDayTotal,
    };
    assert!(p.validate().unwrap_err().to_string().contains("1 to 15"));
    let unknown = include_str!("../../ops/billing/texas_like.toml")
        .replace("[caps]", "[caps]\nweekly_units = 3");
    let err = toml::from_str::<Profile>(&unknown).unwrap_err().to_string();
    assert!(err.contains("weekly_units"), "{err}");
    // The rounding basis is data the profile must state: a file without it is refused.
    let unstated = include_str!("../../ops/billing/texas_like.toml")
        .replace("rounding = \"per_day_total\"\n", "");
    let err = toml::from_str::<Profile>(&unstated)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rounding"), "{err}");
    let bad_type = include_str!("../../ops/billing/texas_like.toml")
        .replace("\"phone\", \"video\"", "\"pigeon\", \"video\"");
    let err = toml::from_str::<Profile>(&bad_type)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pigeon"), "{err}");
}

#[test]
fn units_follow_the_eight_minute_rule_everywhere() {
    for minutes in 0u16..=300 {
        let want = if minutes < 8 {
            0
        } else {
            (u32::from(minutes) - 8) / 15 + 1
        };
        assert_eq!(
            fifteen_minute_units(u32::from(minutes), 8),
            want,
            "{minutes} minutes"
        );
    }
    assert_eq!(
        fifteen_minute_units(14, 15),
        0,
        "whole units only when the minimum is 15"
    );
    assert_eq!(fifteen_minute_units(15, 15), 1);
}

#[test]
fn adjustments_bill_new_lines_once_and_reverse_what_changed() {
    let profile = texas();
    let r = recipient();
    let a = with(20, |c| c.occurred_at = at(3, 9));
    let b = with(90, |c| c.occurred_at = at(10, 9));
    let first = evaluate_month(&profile, &r, &[a.clone(), b.clone()]);
    let batch1 = adjustments(&first, &[]);
    assert_eq!(
        batch1.iter().map(|x| x.kind).collect::<Vec<_>>(),
        [LineKind::Original, LineKind::Original]
    );
    let exported = as_exported(&batch1);
    assert!(
        adjustments(&first, &exported).is_empty(),
        "nothing changed, nothing sent"
    );
    // a is voided; two earlier contacts the same day as b push it over the daily cap.
    let mut a_voided = a.clone();
    a_voided.voided = true;
    let early1 = with(90, |c| c.occurred_at = at(10, 7));
    let early2 = with(90, |c| c.occurred_at = at(10, 8));
    let now = evaluate_month(&profile, &r, &[a_voided, b, early1, early2]);
    let batch2 = adjustments(&now, &exported);
    let kinds: Vec<(LineKind, Option<&str>, u32)> = batch2
        .iter()
        .map(|x| (x.kind, x.adjusts.as_deref(), x.line.units))
        .collect();
    assert_eq!(
        kinds,
        [
            (LineKind::Void, Some("line-0"), 1),
            (LineKind::Original, None, 6),
            (LineKind::Original, None, 6),
            (LineKind::Void, Some("line-1"), 6),
            (LineKind::Replacement, Some("line-1"), 4),
        ]
    );
    // Once voided and not billable again, a line is never voided twice.
    let mut after = exported.clone();
    after.push(Exported {
        line_id: "line-2".into(),
        kind: LineKind::Void,
        fingerprint: exported[0].fingerprint.clone(),
        line: exported[0].line.clone(),
    });
    assert!(adjustments(&now[..1], &after).is_empty());
}

#[test]
fn a_line_billed_again_after_its_void_replaces_the_voided_line() {
    let profile = texas();
    let r = recipient();
    let a = with(20, |c| c.occurred_at = at(3, 9));
    let billed = evaluate_month(&profile, &r, std::slice::from_ref(&a));
    let line = billed[0].clone();
    // Exported as an original, then voided (say the recipient's enrollment lapsed that day).
    let exported = vec![
        Exported {
            line_id: "line-0".into(),
            kind: LineKind::Original,
            fingerprint: fingerprint(&line),
            line: line.clone(),
        },
        Exported {
            line_id: "line-1".into(),
            kind: LineKind::Void,
            fingerprint: fingerprint(&line),
            line: line.clone(),
        },
    ];
    // Billable again: an activity is an original once in its month (the store holds it to
    // that), so it comes back as a replacement of the line that was voided.
    let again = adjustments(&billed, &exported);
    let kinds: Vec<(LineKind, Option<&str>)> = again
        .iter()
        .map(|x| (x.kind, x.adjusts.as_deref()))
        .collect();
    assert_eq!(kinds, [(LineKind::Replacement, Some("line-0"))]);
}

#[test]
fn a_void_after_export_reallocates_the_day_in_the_next_batch() {
    let profile = texas();
    let r = recipient();
    let day = a_day_of(&[8, 8, 8, 9]);
    let first = evaluate_month(&profile, &r, &day);
    let units: Vec<u32> = first.iter().map(|l| l.units).collect();
    assert_eq!(
        units,
        [1, 0, 1, 0],
        "33 minutes: 2 units, on the lines that complete them"
    );
    let batch1 = adjustments(&first, &[]);
    assert_eq!(batch1.len(), 2, "only the lines with units are billed");
    let exported = as_exported(&batch1);
    // The first contact is voided after the export: 25 minutes remain, still 2 units, now on the
    // second and fourth lines.
    let mut corrected = day.clone();
    corrected[0].voided = true;
    let now = evaluate_month(&profile, &r, &corrected);
    let units: Vec<u32> = now.iter().map(|l| l.units).collect();
    assert_eq!(units, [0, 1, 0, 1]);
    assert_eq!(
        now.iter().map(|l| u32::from(l.minutes)).sum::<u32>(),
        33,
        "minutes always show"
    );
    let batch2 = adjustments(&now, &exported);
    let got: Vec<(LineKind, ActivityId, Option<&str>, u32)> = batch2
        .iter()
        .map(|x| {
            (
                x.kind,
                x.line.activity_id,
                x.adjusts.as_deref(),
                x.line.units,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (LineKind::Void, day[0].activity_id, Some("line-0"), 1),
            (LineKind::Original, day[1].activity_id, None, 1),
            (LineKind::Void, day[2].activity_id, Some("line-1"), 1),
            (LineKind::Original, day[3].activity_id, None, 1),
        ],
        "every line of the day whose units changed, once"
    );
    let signed = |x: &Adjustment| match x.kind {
        LineKind::Void => -i64::from(x.line.units),
        LineKind::Original | LineKind::Replacement => i64::from(x.line.units),
    };
    let billed: i64 = batch1.iter().chain(&batch2).map(signed).sum();
    assert_eq!(billed, 2, "the day stands billed for its 2 units");
}
