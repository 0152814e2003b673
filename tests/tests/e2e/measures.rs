//! Outcome measures over a scenario whose every figure is known by hand.

use std::time::{Duration, Instant};

use linkage_tests::{both_stores, TestApp};
use reqwest::StatusCode;
use schemas::Role;
use serde_json::{json, Value};

use linkage_tests::days_ago as day;

async fn ok(app: &TestApp, path: String, body: Value) -> Value {
    let (s, b) = app.post(&path, &app.admin_token, &body).await;
    assert!(s.is_success(), "{path}: {s} {b}");
    b
}

async fn open(app: &TestApp, program: &str) -> String {
    let b = ok(app, "/v1/cases".into(), json!({"program": program, "assigned_to": "cm-ada",
        "intake_date": day(40), "child": {"given_name": "Rae", "family_name": "Sample", "birth_date": linkage_tests::unique_birth_date()}})).await;
    b["case_id"].as_str().unwrap().to_owned()
}

async fn referral(app: &TestApp, case: &str, sent: i64) -> String {
    let b = ok(
        app,
        format!("/v1/cases/{case}/referrals"),
        json!({"service_type": "outpatient_therapy",
        "provider": {"id": "prov-1"}, "reason": "r", "sent_on": day(sent)}),
    )
    .await;
    b["referral_id"].as_str().unwrap().to_owned()
}

both_stores!(measures_over_a_known_scenario, |app: TestApp| async move {
    // Case 1 (wraparound): R1 sent 30 days ago, accepted after 2 days, first appointment a
    // no-show, kept after rescheduling 15 days after sending, completed `connected`;
    // R2 declined. A current care plan.
    let c1 = open(&app, "wraparound").await;
    ok(
        &app,
        format!("/v1/cases/{c1}/care-plan"),
        json!({"goals": [{"description": "therapy"}],
        "family_participated": true, "revised_on": day(35), "reassess_by": day(-60)}),
    )
    .await;
    let r1 = referral(&app, &c1, 30).await;
    ok(
        &app,
        format!("/v1/cases/{c1}/referrals/{r1}/status"),
        json!({"status": "accepted", "on": day(28), "reported_by": {"provider_id": "prov-1", "channel": "phone"}}),
    )
    .await;
    let a = ok(
        &app,
        format!("/v1/cases/{c1}/appointments"),
        json!({"referral_id": r1, "scheduled_for": format!("{}T15:00:00Z", day(20)),
            "on": day(27)}),
    )
    .await;
    let a = a["appointment_id"].as_str().unwrap().to_owned();
    ok(
        &app,
        format!("/v1/cases/{c1}/appointments/{a}/outcome"),
        json!({"outcome": "missed", "on": day(20), "missed_reason": "no_show"}),
    )
    .await;
    ok(&app, format!("/v1/cases/{c1}/appointments/{a}/outcome"),
        json!({"outcome": "rescheduled", "on": day(19), "rescheduled_for": format!("{}T15:00:00Z", day(15))})).await;
    ok(
        &app,
        format!("/v1/cases/{c1}/appointments/{a}/outcome"),
        json!({"outcome": "kept", "on": day(15)}),
    )
    .await;
    ok(
        &app,
        format!("/v1/cases/{c1}/referrals/{r1}/status"),
        json!({"status": "completed", "on": day(10), "outcome": "connected", "reported_by": {"provider_id": "prov-1", "channel": "phone"}}),
    )
    .await;
    // R2: the provider's own system declines it, saying why the loop closed.
    let r2 = referral(&app, &c1, 25).await;
    let prov = app.service_token("svc-prov-1", "default", "prov-1").await;
    let (s, b) = app
        .post(
            &format!("/v1/cases/{c1}/referrals/{r2}/status"),
            &prov,
            &json!({"status": "declined", "on": day(24), "reason": "waitlist closed",
                "outcome": "no_capacity"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Case 2 (tcm): R3 sent and never answered; the family leaves; the transition cancels it.
    let c2 = open(&app, "tcm").await;
    referral(&app, &c2, 20).await;
    ok(
        &app,
        format!("/v1/cases/{c2}/transition"),
        json!({"kind": "discharge", "reason": "family moved",
        "effective_on": day(5), "open_referrals": "cancel"}),
    )
    .await;

    let sup = app.token(Role::Supervisor, "sup-lee", "default").await;
    let query = format!("/v1/measures?from={}&to={}", day(40), day(0));
    let deadline = Instant::now() + Duration::from_secs(20);
    let m = loop {
        let (s, m) = app.get(&query, &sup).await;
        assert_eq!(s, StatusCode::OK, "{m}");
        if m["cases"] == 2 && m["dropout_rate"]["denominator"] == 1 && m["referrals_sent"] == 3 {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "measures never saw the scenario: {m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let rate = |k: &str| {
        (
            m[k]["numerator"].as_u64().unwrap(),
            m[k]["denominator"].as_u64().unwrap(),
        )
    };
    assert_eq!(
        rate("loop_closure_rate"),
        (3, 3),
        "completed, declined, cancelled"
    );
    assert_eq!(rate("successful_connection_rate"), (1, 3));
    assert_eq!(
        m["closed_loops_by_outcome"],
        json!({"connected": 1, "no_capacity": 1, "unrecorded": 1}),
        "the transition's cancellation gave no outcome"
    );
    assert_eq!(
        m["closed_loops_by_reporter"],
        json!({"provider": 1, "staff": 1, "referring_side": 1})
    );
    assert_eq!(m["days_to_acceptance"], json!({"median": 2.0, "n": 1}));
    assert_eq!(
        m["days_to_first_kept_appointment"],
        json!({"median": 15.0, "n": 1})
    );
    assert_eq!(rate("initial_no_show_rate"), (1, 1));
    assert_eq!(
        rate("dropout_rate"),
        (1, 1),
        "case 2 left without a connection"
    );
    assert_eq!(rate("current_care_plan_rate"), (1, 1));
    assert_eq!(m["overdue_reassessments"], 0);

    // A program filter and a narrower window.
    let (_, m) = app.get(&format!("{query}&program=tcm"), &sup).await;
    assert_eq!(
        (m["cases"].as_u64(), m["referrals_sent"].as_u64()),
        (Some(1), Some(1))
    );
    let (_, m) = app
        .get(
            &format!("/v1/measures?from={}&to={}", day(22), day(0)),
            &sup,
        )
        .await;
    assert_eq!(
        m["referrals_sent"], 1,
        "only R3 was sent in the last 22 days"
    );

    // Who, and bad queries.
    let cm = app.token(Role::CaseManager, "cm-ada", "default").await;
    let (s, _) = app.get(&query, &cm).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let other = app.token(Role::Auditor, "aud-far", "elsewhere").await;
    let (s, m) = app.get(&query, &other).await;
    assert_eq!(
        (s, m["cases"].as_u64()),
        (StatusCode::OK, Some(0)),
        "another agency's auditor"
    );
    for (q, status) in [
        ("from=2026-13-01", 422),
        ("program=dentistry", 422),
        ("window=9", 400),
    ] {
        let (s, b) = app.get(&format!("/v1/measures?{q}"), &sup).await;
        assert_eq!(s.as_u16(), status, "{q}: {b}");
    }
    let (s, _) = app
        .get(&format!("/v1/measures?from={}&to={}", day(0), day(5)), &sup)
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "from after to");
});
