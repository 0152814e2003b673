//! A case as it was known at a time, on both bases, with voided entries shown voided.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use linkage_tests::{both_stores, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

use linkage_tests::days_ago as day;

async fn contact(app: &TestApp, case: &str, days_ago: i64, minutes: u32) -> String {
    let (s, b) = app
        .post(
            &format!("/v1/cases/{case}/contacts"),
            &app.admin_token,
            &json!({
            "component": "monitoring", "contact_type": "phone", "with": ["guardian"],
            "occurred_at": format!("{}T10:00:00Z", day(days_ago)), "minutes": minutes}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["activity_id"].as_str().unwrap().to_owned()
}

fn types(v: &Value) -> Vec<&str> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect()
}

both_stores!(
    history_as_recorded_and_as_occurred,
    |app: TestApp| async move {
        let t = app.admin_token.clone();
        let (s, b) = app
            .post(
                "/v1/cases",
                &t,
                &json!({"program": "tcm", "assigned_to": "cm-ada", "intake_date": day(30),
            "child": {"given_name": "Jo", "family_name": "Sample", "birth_date": "2016-06-06"}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let case = b["case_id"].as_str().unwrap().to_owned();
        contact(&app, &case, 10, 20).await; // contact A: ten days ago
                                            // The checkpoint is the time the store recorded contact A (the database stamps
                                            // `recorded_at`); the next entry is recorded strictly after it.
        let (_, ev) = app.get(&format!("/v1/cases/{case}/events"), &t).await;
        let checkpoint: DateTime<Utc> = ev["events"][2]["recorded_at"]
            .as_str()
            .expect("recorded_at")
            .parse()
            .expect("an RFC 3339 time");
        tokio::time::sleep(Duration::from_millis(20)).await;
        contact(&app, &case, 25, 30).await; // documented late: happened 25 days ago
        let (_, ev) = app.get(&format!("/v1/cases/{case}/events"), &t).await;
        let contact_a = ev["events"][2]["event_id"].as_str().unwrap().to_owned();
        let (s, b) = app
            .post(
                &format!("/v1/cases/{case}/corrections"),
                &t,
                &json!({"voids_event_id": contact_a, "reason": "logged twice"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let h = |q: String| {
            let (app, case) = (&app, &case);
            async move {
                app.get(&format!("/v1/cases/{case}/history?{q}"), &app.admin_token)
                    .await
            }
        };

        // What the record held at the checkpoint: the late entry and the void were not there yet.
        let at = checkpoint
            .to_rfc3339_opts(SecondsFormat::Micros, true)
            .replace('+', "%2B");
        let (s, v) = h(format!("as_of={at}&basis=recorded")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            types(&v),
            vec!["CaseOpened", "CaseManagerAssigned", "ContactLogged"]
        );
        assert_eq!(v["state"]["contacts"].as_array().unwrap().len(), 1);
        assert_eq!(v["state"]["contacts"][0]["voided"], false);
        assert_eq!(v["events"][2]["changed"], json!(["contacts"]));

        // As of a service date 20 days ago: the late entry counts, contact A had not happened.
        let (s, v) = h(format!("as_of={}&basis=occurred", day(20))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            types(&v),
            vec!["CaseOpened", "CaseManagerAssigned", "ContactLogged"]
        );
        assert_eq!(v["state"]["contacts"][0]["minutes"], 30);

        // Now, on the record: everything, the voided entry shown voided, not gone.
        let (s, v) = h("basis=recorded".into()).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(types(&v).len(), 5);
        assert_eq!(v["events"][2]["voided"], true);
        assert_eq!(v["events"][3]["voided"], false);
        let voided: Vec<bool> = v["state"]["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["voided"].as_bool().unwrap())
            .collect();
        assert_eq!(voided, vec![true, false]);
        assert_eq!(v["events"][4]["changed"], json!(["contacts"]));

        // Before the case existed: no state.
        let (s, v) = h(format!("as_of={}&basis=occurred", day(40))).await;
        assert_eq!(s, StatusCode::OK);
        assert!(
            v["state"].is_null() && v["events"].as_array().unwrap().is_empty(),
            "{v}"
        );

        // Bad queries.
        let (s, b) = h("as_of=yesterday".into()).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value"))
        );
        let (s, b) = h("basis=sideways".into()).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_value"))
        );
        let (s, b) = h("asof=2026-01-01".into()).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("unknown_parameter"))
        );
    }
);
