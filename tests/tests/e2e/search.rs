//! Finding a case (`GET /v1/cases`) and refusing a duplicate intake, on both stores; and the
//! search's query plan at 100,000 cases on PostgreSQL.

use linkage_tests::{both_stores, Backend, TestApp};
use reqwest::StatusCode;
use schemas::Role;
use serde_json::{json, Value};

fn intake(given: &str, family: &str, birth: &str, medicaid: Option<&str>, worker: &str) -> Value {
    let mut child = json!({"given_name": given, "family_name": family, "birth_date": birth});
    if let Some(m) = medicaid {
        child["medicaid_id"] = json!(m);
    }
    json!({"program": "tcm", "assigned_to": worker, "intake_date": "2026-08-01", "child": child})
}

async fn open(app: &TestApp, token: &str, body: &Value) -> String {
    let (s, b) = app.post("/v1/cases", token, body).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["case_id"].as_str().expect("case id").to_owned()
}

/// The case ids of a search, in order, and whether each row shows the child.
async fn search(app: &TestApp, token: &str, query: &str) -> Vec<(String, bool)> {
    let (s, b) = app.get(&format!("/v1/cases?{query}"), token).await;
    assert_eq!(s, StatusCode::OK, "{query}: {b}");
    b["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|r| {
            (
                r["case_id"].as_str().expect("id").to_owned(),
                r.get("child").is_some(),
            )
        })
        .collect()
}

fn sorted(mut ids: Vec<(String, bool)>) -> Vec<(String, bool)> {
    ids.sort();
    ids
}

both_stores!(finding_a_case, |app: TestApp| async move {
    let sup = app.token(Role::Supervisor, "sup-1", "default").await;
    let zoe = open(
        &app,
        &sup,
        &intake("Zoë", "Núñez", "2018-05-04", Some("ZZ00000101"), "cm-ada"),
    )
    .await;
    let zoe_too = open(
        &app,
        &sup,
        &intake("Zoe", "Nunez-Park", "2019-02-02", None, "cm-bo"),
    )
    .await;
    let robin = open(
        &app,
        &sup,
        &intake(
            "Robin",
            "Sample",
            "2017-03-03",
            Some("ZZ00000102"),
            "cm-ada",
        ),
    )
    .await;
    let (s, b) = app
        .post(
            &format!("/v1/cases/{robin}/transition"),
            &sup,
            &json!({"kind": "discharge", "reason": "goals met", "effective_on": "2026-08-20"}),
        )
        .await;
    assert!(s.is_success(), "{b}");
    let other_sup = app.token(Role::Supervisor, "sup-2", "elsewhere").await;
    let elsewhere = open(
        &app,
        &other_sup,
        &intake("Zoë", "Núñez", "2018-05-04", Some("ZZ00000101"), "cm-cy"),
    )
    .await;
    app.wait_projected().await;

    // Case- and accent-insensitive prefixes of the given or family name; the agency's cases only.
    let ada = app.token(Role::CaseManager, "cm-ada", "default").await;
    let mut want = vec![(zoe.clone(), true), (zoe_too.clone(), false)];
    want.sort();
    assert_eq!(
        sorted(search(&app, &ada, "name=zoe").await),
        want,
        "own case full, another's minimal"
    );
    assert_eq!(
        sorted(search(&app, &ada, "name=N%C3%9A%C3%91").await),
        want,
        "NÚÑ"
    );
    assert_eq!(
        search(&app, &ada, "name=zo%20nunez-p").await,
        [(zoe_too.clone(), false)]
    );
    assert!(
        search(&app, &ada, "name=oe").await.is_empty(),
        "a prefix, not a substring"
    );
    // A minimal row says only that the case exists, its status, program and case manager.
    let (_, b) = app.get("/v1/cases?name=zoe", &ada).await;
    let minimal = b["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|r| r["case_id"] == zoe_too.as_str())
        .expect("the other case")
        .clone();
    assert_eq!(
        minimal,
        json!({"case_id": zoe_too, "status": "open", "program": "tcm", "assigned_to": "cm-bo"})
    );
    let full = b["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|r| r["case_id"] == zoe.as_str())
        .expect("the own case")
        .clone();
    assert_eq!(full["child"]["medicaid_id"], "ZZ00000101");
    assert_eq!(full["child"]["given_name"], "Zoë");

    // Every other filter, alone and together; a supervisor sees full rows of the agency.
    assert_eq!(
        search(&app, &sup, "medicaid_id=ZZ00000101").await,
        [(zoe.clone(), true)]
    );
    assert_eq!(
        search(&app, &sup, "birth_date=2019-02-02").await,
        [(zoe_too.clone(), true)]
    );
    assert_eq!(
        search(&app, &sup, "status=closed").await,
        [(robin.clone(), true)]
    );
    assert_eq!(
        sorted(search(&app, &sup, "assigned_to=cm-ada").await),
        sorted(vec![(zoe.clone(), true), (robin.clone(), true)])
    );
    assert_eq!(
        search(
            &app,
            &sup,
            "assigned_to=cm-ada&status=open&program=tcm&name=z"
        )
        .await,
        [(zoe.clone(), true)]
    );
    assert!(search(&app, &sup, "program=wraparound").await.is_empty());
    // An admin searches every agency.
    let all = search(&app, &app.admin_token, "medicaid_id=ZZ00000101").await;
    assert_eq!(
        sorted(all),
        sorted(vec![(zoe.clone(), true), (elsewhere.clone(), true)])
    );

    // Pages like every list.
    let (_, first) = app.get("/v1/cases?limit=2", &sup).await;
    assert_eq!(first["cases"].as_array().expect("cases").len(), 2);
    let cursor = first["next_cursor"].as_str().expect("more").to_owned();
    let (_, second) = app
        .get(&format!("/v1/cases?limit=2&cursor={cursor}"), &sup)
        .await;
    assert_eq!(second["cases"].as_array().expect("cases").len(), 1);
    assert!(second["next_cursor"].is_null());

    // Who may not search, and bad filters.
    for role in [Role::Billing] {
        let t = app.token(role, "someone", "default").await;
        let (s, _) = app.get("/v1/cases?name=zoe", &t).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{role:?}");
    }
    let service = app.service_token("prov-system", "default", "prov-1").await;
    assert_eq!(
        app.get("/v1/cases?name=zoe", &service).await.0,
        StatusCode::FORBIDDEN
    );
    for (query, code) in [
        ("birth_date=yesterday", "invalid_value"),
        ("status=lost", "invalid_value"),
        ("program=golf", "invalid_value"),
        ("name=%20", "invalid_value"),
        ("medicaid_id=x", "invalid_value"),
        ("colour=red", "unknown_parameter"),
    ] {
        let (s, b) = app.get(&format!("/v1/cases?{query}"), &sup).await;
        assert!(s.is_client_error(), "{query}: {s}");
        assert_eq!(b["error"]["code"], code, "{query}: {b}");
    }

    // Every search is logged: who, the filters, how many rows; a full row is a read of its case.
    let ada_searches = app
        .sql(
            "SELECT filters || '|' || CAST(rows AS TEXT) || '|' || CAST(full_rows AS TEXT) \
             FROM case_searches WHERE actor_id = 'cm-ada' ORDER BY id",
        )
        .await
        .expect("the search log");
    assert_eq!(ada_searches[0], r#"{"name":"zoe"}|2|1"#, "{ada_searches:?}");
    let auditor = app.token(Role::Auditor, "aud-1", "default").await;
    let (_, reads) = app.get(&format!("/v1/cases/{zoe}/reads"), &auditor).await;
    assert!(
        reads["reads"]
            .as_array()
            .expect("reads")
            .iter()
            .any(|r| r["route"] == "GET /v1/cases" && r["actor"] == "cm-ada"),
        "{reads}"
    );
    let (_, reads) = app
        .get(&format!("/v1/cases/{zoe_too}/reads"), &auditor)
        .await;
    assert!(
        !reads["reads"]
            .as_array()
            .expect("reads")
            .iter()
            .any(|r| r["actor"] == "cm-ada"),
        "a minimal row disclosed nothing to log: {reads}"
    );
});

both_stores!(
    a_duplicate_intake_is_stopped_unless_reviewed,
    |app: TestApp| async move {
        let sup = app.token(Role::Supervisor, "sup-1", "default").await;
        let first = open(
            &app,
            &sup,
            &intake("Zoë", "Núñez", "2018-05-04", Some("ZZ00000201"), "cm-ada"),
        )
        .await;
        app.wait_projected().await;
        let refused = |b: &Value| {
            assert_eq!(b["error"]["code"], "possible_duplicate", "{b}");
            assert!(
                b["error"]["message"]
                    .as_str()
                    .expect("message")
                    .contains(&first),
                "{b}"
            );
        };
        // The same Medicaid id, whatever the name; the same name and birth date, whatever the id.
        let (s, b) = app
            .post(
                "/v1/cases",
                &sup,
                &intake("Zed", "Other", "2016-01-01", Some("ZZ00000201"), "cm-bo"),
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT);
        refused(&b);
        let (s, b) = app
            .post(
                "/v1/cases",
                &sup,
                &intake("ZOE", "nunez", "2018-05-04", None, "cm-bo"),
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT);
        refused(&b);
        let (s, b) = app.get("/v1/cases?name=zoe", &sup).await;
        assert_eq!(
            (s, b["cases"].as_array().map(Vec::len)),
            (StatusCode::OK, Some(1)),
            "nothing opened"
        );

        // Reviewed: it goes ahead, and the reason is kept with the case.
        let mut reviewed = intake("ZOE", "nunez", "2018-05-04", None, "cm-bo");
        reviewed["duplicate_reviewed"] =
            json!({"reason": "a second child of the same name and birthday in a foster home"});
        let second = open(&app, &sup, &reviewed).await;
        let (_, events) = app.get(&format!("/v1/cases/{second}/events"), &sup).await;
        let opened = &events["events"][0];
        assert_eq!(opened["event_type"], "CaseOpened");
        assert_eq!(opened["event_version"], "2");
        assert_eq!(
            opened["payload"]["duplicate_reviewed"],
            json!({"reason": "a second child of the same name and birthday in a foster home",
               "matched": [first]})
        );

        // A closed case, or another agency's, does not stop an intake.
        let (s, b) = app
            .post(
                &format!("/v1/cases/{first}/transition"),
                &sup,
                &json!({"kind": "discharge", "reason": "moved away", "effective_on": "2026-08-20"}),
            )
            .await;
        assert!(s.is_success(), "{b}");
        let other = app.token(Role::Supervisor, "sup-2", "elsewhere").await;
        open(
            &app,
            &other,
            &intake("Kai", "Sample", "2015-05-05", Some("ZZ00000202"), "cm-cy"),
        )
        .await;
        app.wait_projected().await;
        open(
            &app,
            &sup,
            &intake("Kai", "Sample", "2015-05-05", Some("ZZ00000202"), "cm-bo"),
        )
        .await;
        let (s, b) = app
            .post(
                "/v1/cases",
                &sup,
                &intake("Zoé", "Nuñez", "2018-05-04", Some("ZZ00000203"), "cm-bo"),
            )
            .await;
        assert_eq!(
            s,
            StatusCode::CONFLICT,
            "the reviewed second case is still open: {b}"
        );
        assert!(
            b["error"]["message"]
                .as_str()
                .expect("message")
                .contains(&second),
            "{b}"
        );
    }
);

/// At 100,000 cases every filter is served by an index: no plan reads the whole table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_reads_indexes_at_100_000_cases() {
    let Some(app) = TestApp::spawn_with(Backend::Postgres, |c| c.run_projections = false).await
    else {
        return;
    };
    use sqlx::Connection;
    let url = app.config.database_url.clone().expect("PostgreSQL");
    let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::query(
        "INSERT INTO caseload_cases (case_id, agency, worker_id, open, version, state, medicaid_id, \
           given_key, family_key, birth_date, program) \
         SELECT md5(i::text), 'agency-' || (i % 20), 'cm-' || (i % 400), i % 5 <> 0, 2, '{}', \
           'ZZ' || lpad(i::text, 8, '0'), 'given' || (i % 997), 'family' || i, \
           to_char(date '2008-01-01' + (i % 6000), 'YYYY-MM-DD'), 'tcm' \
         FROM generate_series(1, 100000) AS i",
    )
    .execute(&mut c)
    .await
    .expect("100,000 cases");
    sqlx::query("ANALYZE caseload_cases")
        .execute(&mut c)
        .await
        .expect("analyze");
    use projections::search::CaseFilter;
    let agency = Some("agency-7");
    let filters = [
        CaseFilter {
            medicaid_id: Some(schemas::MedicaidId::parse("ZZ00012345").unwrap()),
            ..CaseFilter::default()
        },
        CaseFilter {
            name: vec!["family1234".into()],
            ..CaseFilter::default()
        },
        CaseFilter {
            name: vec!["given12".into(), "family1".into()],
            ..CaseFilter::default()
        },
        CaseFilter {
            birth_date: Some("2010-06-01".parse().unwrap()),
            open: Some(true),
            ..CaseFilter::default()
        },
        CaseFilter {
            assigned_to: Some(schemas::ActorId::parse("cm-17").unwrap()),
            ..CaseFilter::default()
        },
        CaseFilter {
            open: Some(false),
            ..CaseFilter::default()
        },
        CaseFilter::default(),
    ];
    for filter in &filters {
        let plan = app
            .store
            .search_plan(filter, agency)
            .await
            .expect("explain")
            .expect("a plan");
        eprintln!("{filter:?}\n{plan}\n");
        assert!(
            !plan.contains("Seq Scan"),
            "{filter:?} scans every case:\n{plan}"
        );
    }
}
