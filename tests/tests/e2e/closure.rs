//! What a closed case still takes, on both stores: documentation of what happened before it
//! closed, within the documentation window (`documentation_window_days`, 90 by default), and
//! corrections at any time, by the entry's author, a supervisor of the agency or an admin. The
//! case stays closed; billing shows the effect, and an exported line's void is the next batch's.

use chrono::Duration;
use linkage_tests::{both_stores, TestApp};
use reqwest::StatusCode;
use schemas::Role;
use serde_json::{json, Value};

async fn ok(app: &TestApp, token: &str, path: &str, body: Value) -> Value {
    let (s, b) = app.post(path, token, &body).await;
    assert!(s.is_success(), "{path}: {s} {b}");
    b
}

async fn open(app: &TestApp, token: &str, intake: &str) -> String {
    let b = ok(
        app,
        token,
        "/v1/cases",
        json!({"program": "tcm", "assigned_to": "cm-ada", "intake_date": intake,
            "child": {"given_name": "Lee", "family_name": "Sample", "birth_date": linkage_tests::unique_birth_date(),
                      "medicaid_id": "ZZ00000031"}}),
    )
    .await;
    b["case_id"].as_str().expect("case id").to_owned()
}

fn call(at: &str) -> Value {
    json!({"component": "monitoring", "contact_type": "phone", "with": ["guardian"],
        "occurred_at": at, "minutes": 20, "note": "follow-up call", "location": "office"})
}

/// Logs a contact; returns its event id.
async fn contact(app: &TestApp, token: &str, case: &str, at: &str) -> String {
    ok(app, token, &format!("/v1/cases/{case}/contacts"), call(at)).await;
    let (_, events) = app
        .get(&format!("/v1/cases/{case}/events"), &app.admin_token)
        .await;
    events["events"]
        .as_array()
        .expect("events")
        .last()
        .expect("last")["event_id"]
        .as_str()
        .expect("id")
        .to_owned()
}

async fn discharge(app: &TestApp, token: &str, case: &str, on: &str) {
    ok(
        app,
        token,
        &format!("/v1/cases/{case}/transition"),
        json!({"kind": "discharge", "reason": "goals met", "effective_on": on}),
    )
    .await;
}

async fn status(app: &TestApp, case: &str) -> Value {
    let (s, b) = app
        .get(&format!("/v1/cases/{case}"), &app.admin_token)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["status"].clone()
}

fn code(b: &Value) -> Option<&str> {
    b["error"]["code"].as_str()
}

both_stores!(
    late_documentation_within_the_window_at_its_edges,
    |app: TestApp| async move {
        let sup = app.token(Role::Supervisor, "sup-1", "default").await;
        let today = app.clock.today();
        let day = |n: i64| (today + Duration::days(n)).to_string();
        let case = open(&app, &sup, &day(-60)).await;
        discharge(&app, &sup, &case, &day(0)).await;
        let contacts = format!("/v1/cases/{case}/contacts");
        let before_closure = format!("{}T10:00:00Z", day(-1));

        // Day 90 after the closure: what happened before it is still documented.
        app.clock.advance(Duration::days(90)).expect("pinned");
        let (s, b) = app.post(&contacts, &sup, &call(&before_closure)).await;
        assert_eq!(s, StatusCode::CREATED, "day 90: {b}");
        // ... but not what is dated after the closure, nor planning on a closed case.
        let (s, b) = app
            .post(&contacts, &sup, &call(&format!("{}T10:00:00Z", day(1))))
            .await;
        assert_eq!(
            (s, code(&b)),
            (StatusCode::CONFLICT, Some("case_closed")),
            "{b}"
        );
        let (s, b) = app
            .post(
                &format!("/v1/cases/{case}/assignment"),
                &sup,
                &json!({"assigned_to": "cm-bo", "on": day(-1)}),
            )
            .await;
        assert_eq!(
            (s, code(&b)),
            (StatusCode::CONFLICT, Some("case_closed")),
            "{b}"
        );

        // Day 91: the window has closed.
        app.clock.advance(Duration::days(1)).expect("pinned");
        let (s, b) = app.post(&contacts, &sup, &call(&before_closure)).await;
        assert_eq!(
            (s, code(&b)),
            (StatusCode::CONFLICT, Some("documentation_window_closed")),
            "day 91: {b}"
        );
        assert!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("90 days")),
            "{b}"
        );
        assert_eq!(
            app.event_count(&case).await,
            4,
            "intake, assignment, discharge, one contact"
        );
        assert_eq!(status(&app, &case).await, "closed");
    }
);

both_stores!(
    corrections_after_discharge_before_and_after_export,
    |app: TestApp| async move {
        let sup = app.token(Role::Supervisor, "sup-1", "default").await;
        let ada = app.token(Role::CaseManager, "cm-ada", "default").await;
        let billing = app.token(Role::Billing, "bill-1", "default").await;
        let case = open(&app, &sup, "2026-08-01").await;
        let a = contact(&app, &sup, &case, "2026-09-03T15:00:00Z").await;
        let b = contact(&app, &sup, &case, "2026-09-10T15:00:00Z").await;
        let c = contact(&app, &ada, &case, "2026-09-12T15:00:00Z").await;
        discharge(&app, &sup, &case, "2026-10-15").await;
        let void = |event: &str| json!({"voids_event_id": event, "reason": "entered in error"});
        let corrections = format!("/v1/cases/{case}/corrections");

        // After the discharge a case manager corrects what they entered, not what others did.
        let (s, r) = app.post(&corrections, &ada, &void(&a)).await;
        assert_eq!(
            (s, code(&r)),
            (StatusCode::FORBIDDEN, Some("case_not_allowed")),
            "{r}"
        );
        ok(&app, &ada, &corrections, void(&c)).await;
        // A supervisor corrects any entry of the agency, before the month is exported ...
        ok(&app, &sup, &corrections, void(&a)).await;
        assert_eq!(
            status(&app, &case).await,
            "closed",
            "a correction does not reopen"
        );
        app.wait_projected().await;
        let (s, log) = app
            .get("/v1/billing/tcm?month=2026-09&format=json", &billing)
            .await;
        assert_eq!(s, StatusCode::OK, "{log}");
        let voided: Vec<&Value> = log["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .filter(|l| {
                l["reasons"]
                    .as_array()
                    .is_some_and(|r| r.contains(&json!("voided")))
            })
            .collect();
        assert_eq!(voided.len(), 2, "a and c show as voided: {log}");
        assert!(voided.iter().all(|l| l["billable"] == false));
        let (s, first) = app
            .post(
                "/v1/billing/tcm/batches",
                &billing,
                &json!({"month": "2026-09"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{first}");
        assert_eq!(first["lines"], 1, "only b is billed: {first}");

        // ... and after it: the next batch reverses the exported line.
        ok(&app, &sup, &corrections, void(&b)).await;
        app.wait_projected().await;
        let (s, second) = app
            .post(
                "/v1/billing/tcm/batches",
                &billing,
                &json!({"month": "2026-09"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{second}");
        let id = second["batch_id"].as_str().expect("id");
        let (s, batch) = app
            .get(
                &format!("/v1/billing/tcm/batches/{id}?format=json"),
                &billing,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{batch}");
        let kinds: Vec<&str> = batch["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .map(|l| l["kind"].as_str().expect("kind"))
            .collect();
        assert_eq!(kinds, ["void"], "{batch}");
        assert_eq!(status(&app, &case).await, "closed");
    }
);
