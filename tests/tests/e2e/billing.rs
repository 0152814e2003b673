//! A month of the TCM billing log through the API, on both stores: every contact is a line that
//! explains itself (billable, units, reasons), as JSON and as CSV with a header row, for the
//! roles that may see it and no others; the rules profile is configuration.

use linkage_tests::{both_stores, Backend, TestApp};
use reqwest::StatusCode;
use schemas::Role;
use serde_json::{json, Value};

const MONTH: &str = "2026-09";

async fn open_case(app: &TestApp, token: &str, medicaid_id: Option<&str>) -> String {
    let mut child = json!({"given_name": "Robin", "family_name": "Sample", "birth_date": linkage_tests::unique_birth_date()});
    if let Some(id) = medicaid_id {
        child["medicaid_id"] = json!(id);
    }
    let (s, b) = app
        .post(
            "/v1/cases",
            token,
            &json!({"program": "tcm", "assigned_to": "cm-ada", "intake_date": "2026-08-01",
                "child": child}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["case_id"].as_str().expect("case id").to_owned()
}

/// Logs a contact; returns (activity id, event id).
async fn contact(app: &TestApp, token: &str, case: &str, body: Value) -> (String, String) {
    let (s, b) = app
        .post(&format!("/v1/cases/{case}/contacts"), token, &body)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let activity = b["activity_id"].as_str().expect("activity").to_owned();
    let (_, events) = app
        .get(&format!("/v1/cases/{case}/events"), &app.admin_token)
        .await;
    let event_id = events["events"]
        .as_array()
        .expect("events")
        .last()
        .expect("the contact's event")["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    (activity, event_id)
}

fn phone(minutes: u32, day: u32) -> Value {
    json!({"component": "monitoring", "contact_type": "phone", "with": ["guardian"],
        "occurred_at": format!("{MONTH}-{day:02}T15:00:00Z"), "minutes": minutes,
        "note": "checked on the first therapy session", "location": "office"})
}

async fn pull(app: &TestApp, token: &str, query: &str) -> (StatusCode, String) {
    pull_path(app, token, &format!("/v1/billing/tcm?{query}")).await
}

/// Lines by activity id.
fn line<'a>(lines: &'a [Value], activity: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["activity_id"] == activity)
        .unwrap_or_else(|| panic!("no line for {activity}"))
}

both_stores!(a_month_of_the_billing_log, |app: TestApp| async move {
    let sup = app.token(Role::Supervisor, "sup-1", "default").await;
    let case = open_case(&app, &sup, Some("ZZ00000007")).await;
    let (billable, _) = contact(&app, &sup, &case, phone(20, 3)).await;
    let (short, _) = contact(&app, &sup, &case, phone(7, 4)).await;
    let (voicemail, _) = contact(
        &app,
        &sup,
        &case,
        json!({"component": "monitoring", "contact_type": "voicemail", "with": ["guardian"],
            "occurred_at": format!("{MONTH}-05T15:00:00Z"), "minutes": 2}),
    )
    .await;
    let (visit, _) = contact(
        &app,
        &sup,
        &case,
        json!({"component": "care_planning", "contact_type": "face_to_face",
            "with": ["child", "guardian"], "occurred_at": format!("{MONTH}-06T15:00:00Z"),
            "minutes": 45, "note": "revised goals with the family", "location": "home"}),
    )
    .await;
    let (undocumented, _) = contact(
        &app,
        &sup,
        &case,
        json!({"component": "monitoring", "contact_type": "phone", "with": ["guardian"],
            "occurred_at": format!("{MONTH}-07T15:00:00Z"), "minutes": 30}),
    )
    .await;
    let (mistake, mistake_event) = contact(&app, &sup, &case, phone(25, 8)).await;
    let (s, b) = app
        .post(
            &format!("/v1/cases/{case}/corrections"),
            &sup,
            &json!({"voids_event_id": mistake_event, "reason": "logged on the wrong case"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (_other_month, _) = contact(
        &app,
        &sup,
        &case,
        json!({"component": "monitoring", "contact_type": "phone", "with": ["guardian"],
            "occurred_at": "2026-10-02T15:00:00Z", "minutes": 20, "note": "follow-up"}),
    )
    .await;
    let no_id = open_case(&app, &sup, None).await;
    let (unenrolled, _) = contact(&app, &sup, &no_id, phone(20, 9)).await;
    let elsewhere_sup = app.token(Role::Supervisor, "sup-2", "elsewhere").await;
    let elsewhere = open_case(&app, &elsewhere_sup, Some("ZZ00000008")).await;
    contact(&app, &elsewhere_sup, &elsewhere, phone(20, 3)).await;
    app.wait_projected().await;

    let billing = app.token(Role::Billing, "bill-1", "default").await;
    let (s, body) = pull(&app, &billing, &format!("month={MONTH}&format=json")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).expect("the stream is one JSON document");
    assert_eq!(v["month"], MONTH);
    assert_eq!(v["profile"], "texas_like");
    let lines = v["lines"].as_array().expect("lines").clone();
    assert_eq!(lines.len(), 7, "six contacts of the case in September and one without a Medicaid id; not October's, not another agency's");
    assert_eq!(v["summary"]["lines"], 7);

    let l = line(&lines, &billable);
    assert_eq!(l["billable"], true);
    assert_eq!(l["units"], 1);
    assert_eq!(l["reasons"], json!([]));
    assert_eq!(l["procedure_code"], "T1017");
    assert_eq!(l["modifiers"], json!(["U2"]));
    assert_eq!(l["medicaid_id"], "ZZ00000007");
    assert_eq!(l["case_id"], case);
    assert_eq!(l["date_of_service"], format!("{MONTH}-03"));
    assert_eq!(l["rendering_provider"], "sup-1");
    assert_eq!(l["component"], "monitoring");
    assert_eq!(l["contact_type"], "phone");
    assert_eq!(l["minutes"], 20);
    assert!(l.get("note").is_none(), "billing sees no clinical notes");

    let expect = [
        // 7 minutes alone on its day: the day's total does not reach the first unit.
        (&short, false, 0, json!(["below_minimum_minutes"])),
        // A voicemail is not counted into any day's total, so no minimum applies to it.
        (
            &voicemail,
            false,
            0,
            json!(["contact_type_not_billable", "missing_documentation:note"]),
        ),
        (&visit, true, 3, json!([])),
        (
            &undocumented,
            false,
            0,
            json!(["missing_documentation:note"]),
        ),
        (&mistake, false, 0, json!(["voided"])),
        (&unenrolled, false, 0, json!(["no_medicaid_id"])),
    ];
    for (activity, billable, units, reasons) in expect {
        let l = line(&lines, activity);
        assert_eq!(l["billable"], billable, "{l}");
        assert_eq!(l["units"], units, "{l}");
        assert_eq!(l["reasons"], reasons, "{l}");
    }
    assert_eq!(
        line(&lines, &visit)["modifiers"],
        json!(["U1"]),
        "face-to-face modifier"
    );
    assert!(!body.contains("revised goals"), "no note text in the log");

    // CSV: a header row, then one row per line, ready for a spreadsheet.
    let (s, csv) = pull(&app, &billing, &format!("month={MONTH}&format=csv")).await;
    assert_eq!(s, StatusCode::OK);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "activity_id,case_id,medicaid_id,date_of_service,component,contact_type,minutes,units,billable,reasons,procedure_code,modifiers,rendering_provider"
    );
    assert_eq!(rows.len(), 8);
    let voicemail_row = rows
        .iter()
        .find(|r| r.starts_with(voicemail.as_str()))
        .expect("row");
    assert!(
        voicemail_row
            .contains(",false,contact_type_not_billable;missing_documentation:note,T1017,,"),
        "{voicemail_row}"
    );

    // Who may pull it.
    let admin = pull(&app, &app.admin_token, &format!("month={MONTH}")).await;
    let all: Value = serde_json::from_str(&admin.1).expect("json");
    assert_eq!(
        all["lines"].as_array().expect("lines").len(),
        8,
        "admin sees every agency"
    );
    let auditor = app.token(Role::Auditor, "aud-1", "default").await;
    assert_eq!(
        pull(&app, &auditor, &format!("month={MONTH}")).await.0,
        StatusCode::OK
    );
    for role in [Role::CaseManager, Role::Supervisor, Role::Service] {
        let t = app.token(role, "someone", "default").await;
        let (s, b) = pull(&app, &t, &format!("month={MONTH}")).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{role}: {b}");
    }
    // Bad input: a clear 400 each.
    for (query, code) in [
        ("month=2026-13", "invalid_month"),
        ("month=September", "invalid_month"),
        (
            &format!("month={MONTH}&format=xlsx") as &str,
            "invalid_format",
        ),
    ] {
        let (s, b) = pull(&app, &billing, query).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {b}");
        let v: Value = serde_json::from_str(&b).expect("an error body");
        assert_eq!(v["error"]["code"], code, "{query}");
    }
    let (s, _) = pull(&app, &billing, "format=csv").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "month is required");
    // An empty month is a valid, empty log.
    let (s, empty) = pull(&app, &billing, "month=2025-01").await;
    assert_eq!(s, StatusCode::OK);
    let empty: Value = serde_json::from_str(&empty).expect("json");
    assert_eq!(empty["lines"], json!([]));
});

/// The same contacts under the encounter profile: one encounter per day, significant phone
/// contacts only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_profile_is_configuration() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.billing_profile = "california_like".into();
    })
    .await
    .expect("sqlite");
    let sup = app.token(Role::Supervisor, "sup-1", "default").await;
    let case = open_case(&app, &sup, Some("ZZ00000009")).await;
    let (first, _) = contact(&app, &sup, &case, phone(20, 3)).await;
    let mut later = phone(40, 3);
    later["occurred_at"] = json!(format!("{MONTH}-03T18:00:00Z"));
    let (second, _) = contact(&app, &sup, &case, later).await;
    let (short, _) = contact(&app, &sup, &case, phone(10, 4)).await;
    app.wait_projected().await;
    let (s, body) = pull(&app, &app.admin_token, &format!("month={MONTH}")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["profile"], "california_like");
    let lines = v["lines"].as_array().expect("lines").clone();
    assert_eq!(line(&lines, &first)["units"], 1);
    assert_eq!(line(&lines, &first)["modifiers"], json!(["GT"]));
    assert_eq!(
        line(&lines, &second)["reasons"],
        json!(["duplicate_encounter"])
    );
    assert_eq!(
        line(&lines, &short)["reasons"],
        json!(["below_minimum_minutes"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_profile_stops_the_server_at_start() {
    let dir = std::env::temp_dir().join(format!("linkage-test-{}", uuid::Uuid::new_v4()));
    let config = services::config::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.clone(),
        billing_profile: "ohio_like".into(),
        ..services::config::Config::default()
    };
    let err = services::Application::build(config)
        .await
        .err()
        .expect("an unknown profile is refused")
        .to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        err.contains("ohio_like") && err.contains("texas_like"),
        "{err}"
    );
}

async fn post_batch(app: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    app.post("/v1/billing/tcm/batches", token, &body).await
}

/// A recorded batch as JSON, and its lines as (activity id, kind, units).
async fn batch_lines(
    app: &TestApp,
    token: &str,
    batch_id: &str,
) -> (Value, Vec<(String, String, u64)>) {
    let (s, body) = pull_path(
        app,
        token,
        &format!("/v1/billing/tcm/batches/{batch_id}?format=json"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    let lines = v["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                l["activity_id"].as_str().expect("a").to_owned(),
                l["kind"].as_str().expect("k").to_owned(),
                l["units"].as_u64().expect("u"),
            )
        })
        .collect();
    (v, lines)
}

fn at(day: u32, hour: u32) -> String {
    format!("{MONTH}-{day:02}T{hour:02}:00:00Z")
}

fn call(minutes: u32, day: u32, hour: u32) -> Value {
    json!({"component": "monitoring", "contact_type": "phone", "with": ["guardian"],
        "occurred_at": at(day, hour), "minutes": minutes, "note": "monitoring call"})
}

both_stores!(
    export_batches_adjust_and_reproduce,
    |app: TestApp| async move {
        let sup = app.token(Role::Supervisor, "sup-1", "default").await;
        let billing = app.token(Role::Billing, "bill-1", "default").await;
        let case = open_case(&app, &sup, Some("ZZ00000011")).await;
        let (a, a_event) = contact(&app, &sup, &case, call(20, 3, 10)).await;
        let (b, _) = contact(&app, &sup, &case, call(90, 10, 8)).await;
        let (c, _) = contact(&app, &sup, &case, call(90, 10, 9)).await;
        contact(
            &app,
            &sup,
            &case,
            json!({"component": "monitoring", "contact_type": "voicemail", "with": ["guardian"],
            "occurred_at": at(11, 9), "minutes": 1}),
        )
        .await;
        app.wait_projected().await;

        // The first batch bills every billable line once.
        let (s, first) = post_batch(&app, &billing, json!({"month": MONTH})).await;
        assert_eq!(s, StatusCode::CREATED, "{first}");
        assert_eq!(first["batch_no"], 1);
        assert_eq!(first["lines"], 3, "the voicemail is not billed: {first}");
        assert_eq!(first["profile"], "texas_like");
        let first_id = first["batch_id"].as_str().expect("id").to_owned();
        let (s, csv) = pull_path(
            &app,
            &billing,
            &format!("/v1/billing/tcm/batches/{first_id}"),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{csv}");
        let rows: Vec<&str> = csv.lines().collect();
        assert!(
            rows[0].starts_with("line_id,kind,adjusts,activity_id,case_id"),
            "{}",
            rows[0]
        );
        assert_eq!(rows.len(), 4);
        assert!(rows[1..]
            .iter()
            .all(|r| r.split(',').nth(1) == Some("original")));
        let billed_c = rows
            .iter()
            .find(|r| r.contains(&c))
            .expect("c billed")
            .to_string();
        let c_line_id = billed_c.split(',').next().expect("id").to_owned();

        // Nothing changed: the next batch is empty, and recorded all the same.
        let (s, second) = post_batch(&app, &billing, json!({"month": MONTH})).await;
        assert_eq!(s, StatusCode::CREATED);
        assert_eq!(second["lines"], 0, "{second}");
        assert_eq!(second["batch_no"], 2);

        // After the export: a billed contact is voided, and a contact documented late, earlier the
        // same day as b and c, pushes c over the daily cap.
        let (s, v) = app
            .post(
                &format!("/v1/cases/{case}/corrections"),
                &sup,
                &json!({"voids_event_id": a_event, "reason": "entered on the wrong case"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (early, _) = contact(&app, &sup, &case, call(90, 10, 7)).await;
        app.wait_projected().await;
        let (s, third) = post_batch(&app, &billing, json!({"month": MONTH})).await;
        assert_eq!(s, StatusCode::CREATED, "{third}");
        let third_id = third["batch_id"].as_str().expect("id").to_owned();
        let (v, got) = batch_lines(&app, &billing, &third_id).await;
        assert_eq!(v["batch"]["batch_no"], 3);
        let lines = v["lines"].as_array().expect("lines");
        assert_eq!(
        got,
        vec![
            (a.clone(), "void".to_owned(), 1),
            (early.clone(), "original".to_owned(), 6),
            (c.clone(), "void".to_owned(), 6),
            (c.clone(), "replacement".to_owned(), 4),
        ],
        "a voided; the late contact billed; c reversed and billed again with fewer units; b untouched"
    );
        assert_eq!(
            lines[2]["adjusts"], c_line_id,
            "the void names the line it reverses"
        );
        assert_eq!(lines[3]["adjusts"], c_line_id);
        assert_eq!(lines[3]["reasons"], json!(["daily_cap_reached"]));
        assert!(
            !got.iter().any(|(id, _, _)| *id == b),
            "an unchanged line is not sent again"
        );

        // Past batches reproduce byte for byte, and match their recorded checksums.
        let (_, again) = pull_path(
            &app,
            &billing,
            &format!("/v1/billing/tcm/batches/{first_id}"),
        )
        .await;
        assert_eq!(again, csv, "a past batch reproduces exactly");
        let (s, list) = app
            .get(&format!("/v1/billing/tcm/batches?month={MONTH}"), &billing)
            .await;
        assert_eq!(s, StatusCode::OK, "{list}");
        let batches = list["batches"].as_array().expect("batches");
        assert_eq!(batches.len(), 3);
        use sha2::Digest;
        assert_eq!(
            batches[0]["checksum"],
            hex::encode(sha2::Sha256::digest(csv.as_bytes())),
            "the checksum is the SHA-256 of the batch's CSV"
        );

        // Each batch is recorded by an event in the log, in its version 1 shape, naming its
        // lines in order.
        let events = app
            .sql(
                "SELECT CAST(payload AS TEXT) FROM events WHERE aggregate_type = 'BillingBatch' \
             AND event_type = 'BillingBatchExported' AND event_version = '1' ORDER BY aggregate_id",
            )
            .await
            .expect("batch events");
        assert_eq!(events.len(), 3, "one event per batch");
        let recorded: Value = serde_json::from_str(&events[0]).expect("json");
        let recorded = &recorded["BillingBatchExported"];
        let mut keys: Vec<&str> = recorded
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "agency", "batch_id", "batch_no", "checksum", "line_ids", "lines", "month",
                "profile"
            ]
        );
        assert_eq!(recorded["batch_id"], first_id.as_str());
        assert_eq!(recorded["checksum"], batches[0]["checksum"]);
        let line_ids: Vec<&str> = rows[1..]
            .iter()
            .map(|r| r.split(',').next().expect("id"))
            .collect();
        assert_eq!(recorded["line_ids"], json!(line_ids));
        assert_eq!(recorded["lines"], 3);

        // Exported batches cannot be edited in place.
        let refused = app
            .sql("UPDATE billing_batch_lines SET kind = 'original'")
            .await;
        assert!(
            refused.is_err_and(|e| e.contains("immutable")),
            "an exported line was editable"
        );

        // The store itself refuses a line exported twice: a second original of an activity in its
        // month, a void of a line never exported, a second void of one line.
        let insert = |activity: &str, line_id: &str, kind: &str, adjusts: Option<&str>| {
            let adjusts = adjusts.map_or("NULL".to_owned(), |a| format!("'{a}'"));
            format!(
                "INSERT INTO billing_batch_lines (batch_id, seq, month, agency, batch_no, case_id, \
                 activity_id, line_id, kind, adjusts, fingerprint, line) VALUES ('{first_id}', 99, \
                 '{MONTH}', 'default', 1, '{case}', '{activity}', '{line_id}', '{kind}', {adjusts}, \
                 'f', '{{}}')"
            )
        };
        let twice = app.sql(&insert(&b, "dup-1", "original", None)).await;
        assert!(
            twice
                .as_ref()
                .is_err_and(|e| e.contains("billing_batch_lines_one_original")
                    || e.contains("billing_batch_lines.month, billing_batch_lines.activity_id")),
            "a second original of one activity: {twice:?}"
        );
        let dangling = app
            .sql(&insert(&b, "dup-2", "void", Some("no-such-line")))
            .await;
        assert!(
            dangling
                .as_ref()
                .is_err_and(|e| e.contains("billing_batch_lines_adjusts")
                    || e.contains("adjust a line already exported")),
            "a void of a line never exported: {dangling:?}"
        );
        let again = app
            .sql(&insert(&c, "dup-3", "void", Some(&c_line_id)))
            .await;
        assert!(
            again
                .as_ref()
                .is_err_and(|e| e.contains("billing_batch_lines_one_void")
                    || e.contains("billing_batch_lines.adjusts")),
            "a line voided twice: {again:?}"
        );

        // Who may do what.
        let cm = app.token(Role::CaseManager, "cm-ada", "default").await;
        let auditor = app.token(Role::Auditor, "aud-1", "default").await;
        assert_eq!(
            post_batch(&app, &cm, json!({"month": MONTH})).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            post_batch(&app, &auditor, json!({"month": MONTH})).await.0,
            StatusCode::FORBIDDEN
        );
        let (s, b) = post_batch(
            &app,
            &billing,
            json!({"month": MONTH, "agency": "elsewhere"}),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
        let (s, b) = post_batch(&app, &app.admin_token, json!({"month": MONTH})).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
        assert_eq!(b["error"]["code"], "agency_required");
        let (s, b) = post_batch(&app, &billing, json!({"month": "2026-9"})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        let (s, _) = pull_path(
            &app,
            &auditor,
            &format!("/v1/billing/tcm/batches/{first_id}"),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "auditors read batches");
        let other = app.token(Role::Billing, "bill-2", "elsewhere").await;
        let (s, _) = pull_path(&app, &other, &format!("/v1/billing/tcm/batches/{first_id}")).await;
        assert_eq!(
            s,
            StatusCode::NOT_FOUND,
            "another agency's batch is not there for them"
        );
        let (s, b) = app
            .get(&format!("/v1/billing/tcm/batches?month={MONTH}"), &other)
            .await;
        assert_eq!(b["batches"], json!([]), "{s} {b}");
    }
);

async fn pull_path(app: &TestApp, token: &str, path: &str) -> (StatusCode, String) {
    let resp = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    (status, resp.text().await.expect("body"))
}

/// The agency's day: dates of service, billing months and "today" are local to the agency's time
/// zone (America/Chicago here, America/New_York for the agency `east`), whatever offset a time is
/// written with.
async fn local_days(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.time_zone = Some(chrono_tz::Tz::America__Chicago);
        c.agency_time_zones
            .insert("east".into(), chrono_tz::Tz::America__New_York);
    })
    .await
    else {
        return;
    };
    let sup = app.token(Role::Supervisor, "sup-1", "default").await;
    let east = app.token(Role::Supervisor, "sup-e", "east").await;
    let case = open_case(&app, &sup, Some("ZZ00000051")).await;
    let east_case = open_case(&app, &east, Some("ZZ00000052")).await;
    let call = |at: &str| {
        json!({"component": "monitoring", "contact_type": "phone", "with": ["guardian"],
            "occurred_at": at, "minutes": 20, "note": "follow-up", "location": "office"})
    };
    // 23:30 on 31 October in Chicago, written with its offset, and 23:40 written in UTC.
    let (late_evening, _) = contact(&app, &sup, &case, call("2026-10-31T23:30:00-05:00")).await;
    let (in_utc, _) = contact(&app, &sup, &case, call("2026-11-01T04:40:00Z")).await;
    // The same instant is already 1 November in New York.
    let (east_line, _) = contact(&app, &east, &east_case, call("2026-11-01T04:40:00Z")).await;
    app.wait_projected().await;

    let lines_of = |month: &str| {
        let (app, month) = (&app, month.to_owned());
        async move {
            let (s, body) =
                pull(app, &app.admin_token, &format!("month={month}&format=json")).await;
            assert_eq!(s, StatusCode::OK, "{body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            v["lines"].as_array().unwrap().clone()
        }
    };
    let october = lines_of("2026-10").await;
    for id in [&late_evening, &in_utc] {
        assert_eq!(
            line(&october, id)["date_of_service"],
            "2026-10-31",
            "{october:?}"
        );
    }
    assert!(!october
        .iter()
        .any(|l| l["activity_id"] == east_line.as_str()));
    let november = lines_of("2026-11").await;
    assert_eq!(line(&november, &east_line)["date_of_service"], "2026-11-01");
    assert!(
        !november.iter().any(|l| l["case_id"] == case.as_str()),
        "Chicago's contacts are October's: {november:?}"
    );

    // The events keep the offsets the times were written with.
    let (_, events) = app
        .get(&format!("/v1/cases/{case}/events"), &app.admin_token)
        .await;
    let offsets: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "ContactLogged")
        .map(|e| &e["payload"]["stated_offset_seconds"])
        .collect();
    assert_eq!(offsets, [&json!(-18000), &json!(0)], "{events}");

    // A history as of 31 October is as of the end of that day in Chicago: both contacts count.
    let (s, h) = app
        .get(
            &format!("/v1/cases/{case}/history?as_of=2026-10-31&basis=occurred"),
            &app.admin_token,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{h}");
    let contacts = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "ContactLogged")
        .count();
    assert_eq!(contacts, 2, "{h}");

    // "Today" is Chicago's: under the clock just after 00:00 UTC it is still yesterday there.
    let chicago_today = app
        .clock
        .now()
        .with_timezone(&chrono_tz::Tz::America__Chicago)
        .date_naive();
    let intake = |date: chrono::NaiveDate| {
        json!({"program": "tcm", "assigned_to": "cm-ada", "intake_date": date.to_string(),
            "child": {"given_name": "Lou", "family_name": "Sample", "birth_date": linkage_tests::unique_birth_date()}})
    };
    let (s, b) = app
        .post(
            "/v1/cases",
            &sup,
            &intake(chicago_today.succ_opt().unwrap()),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("date_in_future")),
        "{b}"
    );
    let (s, b) = app.post("/v1/cases", &sup, &intake(chicago_today)).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

linkage_tests::both_backends!(dates_are_local_to_the_agency, local_days);

both_stores!(
    a_day_of_short_contacts_bills_its_total,
    |app: TestApp| async move {
        let sup = app.token(Role::Supervisor, "sup-1", "default").await;
        let billing = app.token(Role::Billing, "bill-1", "default").await;
        let case = open_case(&app, &sup, Some("ZZ00000021")).await;
        // Four short calls on the 14th: 33 minutes, 2 units (per contact it would be 4).
        let mut day = Vec::new();
        for (hour, minutes) in [(9, 8), (10, 8), (11, 8), (12, 9)] {
            day.push(contact(&app, &sup, &case, call(minutes, 14, hour)).await);
        }
        app.wait_projected().await;
        let (s, body) = pull(&app, &billing, &format!("month={MONTH}&format=json")).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        let lines = v["lines"].as_array().expect("lines");
        let got: Vec<(u64, u64, Value)> = day
            .iter()
            .map(|(activity, _)| {
                let l = line(lines, activity);
                (
                    l["minutes"].as_u64().expect("minutes"),
                    l["units"].as_u64().expect("units"),
                    l["reasons"].clone(),
                )
            })
            .collect();
        let combined = json!(["combined_into_day_total"]);
        assert_eq!(
            got,
            [
                (8, 1, json!([])),
                (8, 0, combined.clone()),
                (8, 1, json!([])),
                (9, 0, combined.clone()),
            ]
        );
        let (_, csv) = pull(&app, &billing, &format!("month={MONTH}&format=csv")).await;
        let second = csv
            .lines()
            .find(|r| r.starts_with(day[1].0.as_str()))
            .expect("the second call's row");
        assert!(
            second.contains(",8,0,false,combined_into_day_total,"),
            "{second}"
        );

        // Exported, then the first call is voided: the day's units move to other lines, and the
        // next batch reverses and bills exactly the lines whose units changed.
        let (s, first) = post_batch(&app, &billing, json!({"month": MONTH})).await;
        assert_eq!(s, StatusCode::CREATED, "{first}");
        assert_eq!(first["lines"], 2, "{first}");
        let (s, v) = app
            .post(
                &format!("/v1/cases/{case}/corrections"),
                &sup,
                &json!({"voids_event_id": day[0].1, "reason": "logged twice"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        app.wait_projected().await;
        let (s, second) = post_batch(&app, &billing, json!({"month": MONTH})).await;
        assert_eq!(s, StatusCode::CREATED, "{second}");
        let id = second["batch_id"].as_str().expect("id");
        let (_, got) = batch_lines(&app, &billing, id).await;
        let kind = |i: usize, k: &str| (day[i].0.clone(), k.to_owned(), 1);
        assert_eq!(
            got,
            [
                kind(0, "void"),
                kind(1, "original"),
                kind(2, "void"),
                kind(3, "original"),
            ]
        );
    }
);

/// The billing projection keeps each contact as a row of its own and the case's state as its
/// header: a void finds the row it names whether the contact came in an earlier batch or in the
/// same one, and what the readers assemble equals the fold of the whole history in memory.
async fn contact_rows(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| c.run_projections = false).await else {
        return;
    };
    let step = || app.project("billing");
    let sup = app.token(Role::Supervisor, "sup-1", "default").await;
    let case = open_case(&app, &sup, Some("ZZ00000061")).await;
    let void = |event: String| {
        let (app, sup, case) = (&app, &sup, &case);
        async move {
            let (s, b) = app
                .post(
                    &format!("/v1/cases/{case}/corrections"),
                    sup,
                    &json!({"voids_event_id": event, "reason": "logged twice"}),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
        }
    };
    let (earlier, earlier_event) = contact(&app, &sup, &case, phone(20, 3)).await;
    let (kept, _) = contact(&app, &sup, &case, phone(20, 4)).await;
    step().await;
    // One batch: a contact and its void, and the void of a contact of the batch before.
    let (same, same_event) = contact(&app, &sup, &case, phone(20, 5)).await;
    void(same_event).await;
    void(earlier_event).await;
    step().await;

    let case_id = schemas::CaseId::parse(&case).expect("case id");
    let states = app.store.billing_states(&[case_id]).await.expect("states");
    let state = &states[&case_id];
    let voided: Vec<(String, bool)> = state
        .contacts
        .iter()
        .map(|c| (c.contact.activity_id.to_string(), c.contact.voided))
        .collect();
    assert_eq!(
        voided,
        [
            (earlier.clone(), true),
            (kept.clone(), false),
            (same.clone(), true)
        ],
        "every contact once, in log order, voided where a void named it"
    );
    // The same history folded in memory, in one go, gives the same state.
    let events = app
        .store
        .read_log(
            services::store::Work::Api,
            services::store::LogPosition::START,
            1000,
        )
        .await
        .expect("log");
    // The months the store recorded the case in are its bookkeeping, not the fold's.
    let recorded: Vec<String> = state
        .recorded_months
        .iter()
        .map(|m| m.to_string())
        .collect();
    assert!(recorded.contains(&MONTH.to_owned()), "{recorded:?}");
    let mut whole = projections::billing::BillingCase {
        recorded_months: state.recorded_months.clone(),
        ..Default::default()
    };
    for e in events.iter().filter(|e| e.case_id == case_id) {
        whole.version = e.event.sequence;
        whole.apply(
            e.event.event_id,
            e.event.metadata.actor_id.clone(),
            &e.event.case_event().expect("event"),
        );
    }
    assert_eq!(state, &whole);

    let (s, body) = pull(
        &app,
        &app.admin_token,
        &format!("month={MONTH}&format=json"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    let lines = v["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (activity, billable) in [(&earlier, false), (&kept, true), (&same, false)] {
        let l = line(lines, activity);
        assert_eq!(l["billable"], billable, "{l}");
        assert_eq!(
            l["reasons"]
                .as_array()
                .expect("reasons")
                .contains(&json!("voided")),
            !billable,
            "{l}"
        );
    }
}

linkage_tests::both_backends!(contacts_are_rows_and_voids_find_them, contact_rows);
