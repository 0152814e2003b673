//! Caseload views from the caseload projection: flags for what is overdue, limits per program,
//! the worker's own view, the supervisor's team view, thresholds from configuration.

use std::time::{Duration, Instant};

use linkage_tests::{both_stores, Backend, TestApp};
use reqwest::StatusCode;
use schemas::Role;
use serde_json::{json, Value};

use linkage_tests::days_ago as day;

async fn open(app: &TestApp, worker: &str, intake_days_ago: i64) -> String {
    let (s, b) = app
        .post(
            "/v1/cases",
            &app.admin_token,
            &json!({"program": "wraparound", "assigned_to": worker,
            "intake_date": day(intake_days_ago),
            "child": {"given_name": "Sky", "family_name": "Sample", "birth_date": linkage_tests::unique_birth_date()}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["case_id"].as_str().unwrap().to_owned()
}

async fn post_ok(app: &TestApp, path: String, body: Value) -> Value {
    let (s, b) = app.post(&path, &app.admin_token, &body).await;
    assert!(s.is_success(), "{path}: {s} {b}");
    b
}

/// A case with everything overdue: no contact since intake 60 days ago, no care plan, a referral
/// with no news for 18 days, and a missed appointment nobody followed up.
async fn neglected_case(app: &TestApp, worker: &str) -> String {
    let case = open(app, worker, 60).await;
    let r = post_ok(
        app,
        format!("/v1/cases/{case}/referrals"),
        json!({"service_type": "outpatient_therapy",
        "provider": {"id": "prov-1"}, "reason": "anxiety", "sent_on": day(20)}),
    )
    .await;
    let referral = r["referral_id"].as_str().unwrap().to_owned();
    post_ok(
        app,
        format!("/v1/cases/{case}/referrals/{referral}/status"),
        json!({"status": "accepted", "on": day(18), "reported_by": {"provider_id": "prov-1", "channel": "phone"}}),
    )
    .await;
    let a = post_ok(
        app,
        format!("/v1/cases/{case}/appointments"),
        json!({"referral_id": referral, "scheduled_for": format!("{}T15:00:00Z", day(10)),
            "on": day(17)}),
    )
    .await;
    let appt = a["appointment_id"].as_str().unwrap().to_owned();
    post_ok(
        app,
        format!("/v1/cases/{case}/appointments/{appt}/outcome"),
        json!({"outcome": "missed", "on": day(10), "missed_reason": "no_show"}),
    )
    .await;
    case
}

async fn caseload(app: &TestApp, worker: &str, token: &str, cases: usize) -> Value {
    // Everything committed so far, projected: not just the case openings.
    app.wait_projected().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, b) = app.get(&format!("/v1/caseloads/{worker}"), token).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        if b["open_cases"] == cases {
            return b;
        }
        assert!(
            Instant::now() < deadline,
            "caseload never reached {cases}: {b}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

both_stores!(caseloads_flag_what_is_overdue, |app: TestApp| async move {
    let neglected = neglected_case(&app, "cm-ada").await;
    let fresh = open(&app, "cm-ada", 5).await;
    post_ok(
        &app,
        format!("/v1/cases/{fresh}/contacts"),
        json!({"component": "assessment",
        "contact_type": "face_to_face", "with": ["child", "guardian"],
        // The first instant of today: not in the future at any hour of the day.
        "occurred_at": format!("{}T00:00:00Z", day(0)), "minutes": 45}),
    )
    .await;
    let _other = open(&app, "cm-bo", 3).await;

    let ada = app.token(Role::CaseManager, "cm-ada", "default").await;
    let view = caseload(&app, "cm-ada", &ada, 2).await;
    assert_eq!(view["limit"], 10, "the wraparound limit");
    assert_eq!(view["over_limit"], false);
    let line = |id: &str| {
        view["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["case_id"] == id)
            .unwrap()
            .clone()
    };
    let n = line(&neglected);
    assert_eq!(n["child_display_name"], "Sky S.");
    assert_eq!(n["days_since_last_contact"], 60);
    let flags: Vec<&str> = n["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    for f in [
        "no_contact_30_days",
        "no_billable_contact_last_month",
        "no_care_plan",
        "stale_referral",
        "missed_appointment_needs_outreach",
    ] {
        assert!(flags.contains(&f), "{f} missing from {flags:?}");
    }
    assert_eq!(n["open_referrals"][0]["status"], "scheduled");
    assert_eq!(n["open_referrals"][0]["age_days"], 20);
    assert_eq!(n["open_referrals"][0]["days_since_status_change"], 18);
    assert_eq!(
        n["missed_appointments_awaiting_outreach"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let f = line(&fresh);
    assert_eq!(f["flags"], json!([]), "{f}");
    assert_eq!(f["days_since_last_contact"], 0);

    // Outreach after the missed appointment clears that flag.
    post_ok(&app, format!("/v1/cases/{neglected}/contacts"), json!({"component": "monitoring",
        "contact_type": "phone", "with": ["guardian"], "occurred_at": format!("{}T09:00:00Z", day(1)),
        "minutes": 15})).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = app.get("/v1/caseloads/cm-ada", &ada).await;
        let c = v["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["case_id"] == neglected.as_str())
            .unwrap()
            .clone();
        if c["days_since_last_contact"] == 1 {
            assert!(
                !c["flags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f == "missed_appointment_needs_outreach"),
                "{c}"
            );
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Who sees what.
    let bo = app.token(Role::CaseManager, "cm-bo", "default").await;
    let (s, b) = app.get("/v1/caseloads/cm-ada", &bo).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("caseload_not_allowed"))
    );
    let billing = app.token(Role::Billing, "bill-1", "default").await;
    let (s, _) = app.get("/v1/caseloads/cm-ada", &billing).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let elsewhere = app.token(Role::Supervisor, "sup-far", "elsewhere").await;
    let (s, b) = app.get("/v1/caseloads/cm-ada", &elsewhere).await;
    assert_eq!(
        (s, b["open_cases"].as_u64()),
        (StatusCode::OK, Some(0)),
        "another agency's supervisor sees none"
    );
    let (s, _) = app.get("/v1/caseloads", &ada).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the team view is for supervisors");

    let sup = app.token(Role::Supervisor, "sup-lee", "default").await;
    let (s, team) = app.get("/v1/caseloads", &sup).await;
    assert_eq!(s, StatusCode::OK, "{team}");
    assert_eq!(team["agency"], "default");
    let workers: Vec<(String, u64, u64)> = team["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["worker_id"].as_str().unwrap().to_owned(),
                w["open_cases"].as_u64().unwrap(),
                w["flagged_cases"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        workers,
        vec![("cm-ada".to_owned(), 2, 1), ("cm-bo".to_owned(), 1, 0)]
    );

    // Reading a caseload is a read of each of its cases, in the read log (one statement).
    let auditor = app.token(Role::Auditor, "aud-1", "default").await;
    for case in [&neglected, &fresh] {
        let (_, reads) = app.get(&format!("/v1/cases/{case}/reads"), &auditor).await;
        assert!(
            reads["reads"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["actor"] == "cm-ada" && r["route"] == "GET /v1/caseloads/{worker_id}"),
            "{reads}"
        );
    }

    // A closed case leaves the caseload.
    post_ok(
        &app,
        format!("/v1/cases/{fresh}/transition"),
        json!({"kind": "discharge",
        "reason": "moved away", "effective_on": day(0)}),
    )
    .await;
    caseload(&app, "cm-ada", &ada, 1).await;
});

#[tokio::test]
async fn thresholds_come_from_configuration() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.caseload.stale_referral_days = 30;
        c.caseload.contact_overdue_days = 90;
        c.caseload
            .program_limits
            .insert(schemas::Program::Wraparound, 1);
    })
    .await
    .unwrap();
    neglected_case(&app, "cm-ada").await;
    open(&app, "cm-ada", 1).await;
    let view = caseload(&app, "cm-ada", &app.admin_token, 2).await;
    assert_eq!(view["limit"], 1);
    assert_eq!(view["over_limit"], true);
    let flags = &view["cases"][0]["flags"];
    let flags: Vec<&str> = flags
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        !flags.contains(&"stale_referral") && !flags.iter().any(|f| f.starts_with("no_contact")),
        "{flags:?}"
    );
}

both_stores!(
    billable_means_what_the_billing_profile_says,
    |app: TestApp| async move {
        // The same documented call on two cases; only the one with a Medicaid id bills under the
        // profile (no_medicaid_id), so only the other is flagged for no billable contact.
        let mut ids = Vec::new();
        for medicaid_id in [None, Some("ZZ00000041")] {
            let mut child = json!({"given_name": "Ash", "family_name": "Sample", "birth_date": linkage_tests::unique_birth_date()});
            if let Some(id) = medicaid_id {
                child["medicaid_id"] = json!(id);
            }
            let b = post_ok(
                &app,
                "/v1/cases".into(),
                json!({"program": "tcm",
                "assigned_to": "cm-cy", "intake_date": day(70), "child": child}),
            )
            .await;
            let case = b["case_id"].as_str().unwrap().to_owned();
            post_ok(
                &app,
                format!("/v1/cases/{case}/contacts"),
                json!({"component": "monitoring",
                "contact_type": "phone", "with": ["guardian"], "minutes": 20,
                "occurred_at": format!("{}T00:00:00Z", day(0)), "note": "checked on services"}),
            )
            .await;
            ids.push(case);
        }
        let cy = app.token(Role::CaseManager, "cm-cy", "default").await;
        let view = caseload(&app, "cm-cy", &cy, 2).await;
        let flags_of = |id: &str| -> Vec<String> {
            view["cases"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["case_id"] == id)
                .unwrap()["flags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_owned())
                .collect()
        };
        assert!(
            flags_of(&ids[0]).contains(&"no_billable_contact_last_month".to_owned()),
            "no Medicaid id, nothing billable: {view}"
        );
        assert!(
            !flags_of(&ids[1]).contains(&"no_billable_contact_last_month".to_owned()),
            "billed this month: {view}"
        );
        let (_, log) = app
            .get(
                &format!("/v1/billing/tcm?month={}", &day(0)[..7]),
                &app.admin_token,
            )
            .await;
        let billable: Vec<bool> = ids
            .iter()
            .map(|id| {
                log["lines"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|l| l["case_id"] == id.as_str())
                    .unwrap()["billable"]
                    .as_bool()
                    .unwrap()
            })
            .collect();
        assert_eq!(billable, [false, true], "the billing log agrees: {log}");
    }
);

/// Contacts are rows beside the caseload state: a voided contact stops counting as the last
/// contact and as outreach after a missed appointment, whichever batch it or its void came in.
async fn voided_contacts(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| c.run_projections = false).await else {
        return;
    };
    let step = || app.project("caseloads");
    let case = neglected_case(&app, "cm-cy").await; // missed 10 days ago
    let contact = |days_ago: i64, with: &'static str| {
        let (app, case) = (&app, &case);
        async move {
            post_ok(
                app,
                format!("/v1/cases/{case}/contacts"),
                json!({"component": "monitoring", "contact_type": "phone", "with": [with],
                    "occurred_at": format!("{}T00:00:00Z", day(days_ago)), "minutes": 20}),
            )
            .await;
            let (_, events) = app
                .get(&format!("/v1/cases/{case}/events"), &app.admin_token)
                .await;
            events["events"].as_array().unwrap().last().unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let void = |event: String| {
        let (app, case) = (&app, &case);
        async move {
            post_ok(
                app,
                format!("/v1/cases/{case}/corrections"),
                json!({"voids_event_id": event, "reason": "logged on the wrong case"}),
            )
            .await;
        }
    };
    let line = || async {
        let (s, b) = app.get("/v1/caseloads/cm-cy", &app.admin_token).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let line = b["cases"][0].clone();
        let outreach_due = line["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "missed_appointment_needs_outreach");
        (
            line["days_since_last_contact"].as_i64().unwrap(),
            outreach_due,
        )
    };
    step().await;
    assert_eq!(line().await, (60, true), "no contact since intake");

    let with_guardian = contact(8, "guardian").await;
    let collateral = contact(3, "provider").await;
    step().await;
    assert_eq!(
        line().await,
        (3, false),
        "the guardian was reached after the missed day"
    );

    // One batch: a later contact with the child and its void, and the void of the collateral
    // contact of the batch before.
    let child = contact(1, "child").await;
    void(child).await;
    void(collateral).await;
    step().await;
    assert_eq!(
        line().await,
        (8, false),
        "the voided contacts no longer count"
    );

    void(with_guardian).await;
    step().await;
    assert_eq!(line().await, (60, true), "no live contact is left");
}

linkage_tests::both_backends!(voided_contacts_stop_counting, voided_contacts);

/// A batch of a case's contacts alone writes the contact rows and leaves the case's caseload
/// state and billing header as they were (nothing in them changed, so nothing is written back);
/// a batch with an event that changes them writes them.
async fn contacts_alone(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| c.run_projections = false).await else {
        return;
    };
    let case = open(&app, "cm-dee", 20).await;
    let contact = |days_ago: i64| {
        let (app, case) = (&app, &case);
        async move {
            post_ok(
                app,
                format!("/v1/cases/{case}/contacts"),
                json!({"component": "monitoring", "contact_type": "phone", "with": ["guardian"],
                    "occurred_at": format!("{}T12:00:00Z", day(days_ago)), "minutes": 20}),
            )
            .await;
        }
    };
    let step = || async {
        app.project("caseloads").await;
        app.project("billing").await;
    };
    let sql = |query: String| {
        let app = &app;
        async move { app.sql(&query).await.expect(&query) }
    };
    let marks = || {
        sql(format!(
            "SELECT mark FROM (SELECT 1 AS k, program AS mark FROM caseload_cases \
               WHERE case_id = '{case}' UNION ALL SELECT 2, agency FROM billing_cases \
               WHERE case_id = '{case}') AS m ORDER BY k"
        ))
    };
    let days_since_contact = || async {
        let (s, b) = app.get("/v1/caseloads/cm-dee", &app.admin_token).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["cases"][0]["days_since_last_contact"].as_i64()
    };
    // A contact in the case's month, so that the billing header records the month now.
    contact(5).await;
    step().await;
    assert_eq!(days_since_contact().await, Some(5));
    // Both rows marked behind the projections' back: a write of either would undo its mark.
    sql(format!(
        "UPDATE caseload_cases SET program = 'marked' WHERE case_id = '{case}'"
    ))
    .await;
    sql(format!(
        "UPDATE billing_cases SET agency = 'marked' WHERE case_id = '{case}'"
    ))
    .await;

    contact(3).await;
    contact(1).await;
    step().await;
    assert_eq!(marks().await, ["marked", "marked"], "no state row written");
    assert_eq!(days_since_contact().await, Some(1), "the contacts are in");
    for table in ["caseload_contacts", "billing_contacts"] {
        // A count reads back as a number on one store and text on the other.
        let n = sql(format!(
            "SELECT CAST(count(*) AS text) FROM {table} WHERE case_id = '{case}'"
        ))
        .await;
        assert_eq!(n, ["3"], "{table}");
    }

    // A hand-over changes both: the batch writes them, with its contact.
    post_ok(
        &app,
        format!("/v1/cases/{case}/assignment"),
        json!({"assigned_to": "cm-eve", "on": day(0)}),
    )
    .await;
    contact(2).await;
    step().await;
    assert_eq!(marks().await, ["wraparound", "default"], "both written");
}

linkage_tests::both_backends!(contacts_alone_write_no_state_rows, contacts_alone);
