//! The audit trail: a checkpointed projection of the global log, hash-chained per case, that
//! loses nothing when the server stops between a commit and its projection, rebuilds to the same
//! chain, and names the first broken link when a stored event is edited by hand.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use linkage_tests::{both_stores, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use services::projector;

use linkage_tests::days_ago as day;

/// Edits event 4 of `case` (its second contact, of 11 minutes) to 99 minutes by hand, going
/// around the immutability trigger as only a database superuser could.
async fn edit_by_hand(app: &TestApp, case: &str) {
    let edit = "UPDATE events SET payload = REPLACE(CAST(payload AS TEXT), '\"minutes\":11', '\"minutes\":99') \
            WHERE aggregate_id = $1 AND sequence = 4";
    match &app.config.database_url {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query("ALTER TABLE events DISABLE TRIGGER events_immutable")
                .execute(&pool)
                .await
                .unwrap();
            let edit =
                "UPDATE events SET payload = jsonb_set(payload, '{ContactLogged,minutes}', '99') \
                    WHERE aggregate_id = $1 AND sequence = 4";
            let r = sqlx::query(edit).bind(case).execute(&pool).await.unwrap();
            assert_eq!(r.rows_affected(), 1);
            pool.close().await;
        }
        None => {
            let path = app.config.data_dir.join("linkage.db");
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            sqlx::query("DROP TRIGGER IF EXISTS events_immutable_update")
                .execute(&pool)
                .await
                .unwrap();
            let r = sqlx::query(edit).bind(case).execute(&pool).await.unwrap();
            assert_eq!(r.rows_affected(), 1);
            pool.close().await;
        }
    }
}

async fn case_with_activity(app: &TestApp, contacts: usize) -> String {
    let t = &app.admin_token;
    let (s, b) = app
        .post(
            "/v1/cases",
            t,
            &json!({"program": "tcm", "assigned_to": "cm-ada", "intake_date": day(20),
            "child": {"given_name": "Ari", "family_name": "Sample", "birth_date": linkage_tests::unique_birth_date()}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let case = b["case_id"].as_str().unwrap().to_owned();
    for i in 0..contacts {
        let (s, b) = app
            .post(
                &format!("/v1/cases/{case}/contacts"),
                t,
                &json!({"component": "monitoring",
                "contact_type": "phone", "with": ["guardian"], "minutes": 10 + i,
                "occurred_at": format!("{}T09:00:00Z", day(2))}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    case
}

/// Polls the audit route until the trail holds `n` entries.
async fn trail(app: &TestApp, case: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, b) = app
            .get(&format!("/v1/cases/{case}/audit"), &app.admin_token)
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let entries = b["entries"].as_array().unwrap().clone();
        if entries.len() == n {
            assert_eq!(b["pending"], 0);
            return entries;
        }
        assert!(
            Instant::now() < deadline,
            "the trail has {} of {n} entries",
            entries.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

both_stores!(
    every_event_enters_a_hash_chained_trail,
    |app: TestApp| async move {
        let case = case_with_activity(&app, 3).await;
        let entries = trail(&app, &case, 5).await;
        let (_, ev) = app
            .get(&format!("/v1/cases/{case}/events"), &app.admin_token)
            .await;
        let mut prev = projections::audit::GENESIS.to_owned();
        for (entry, event) in entries.iter().zip(ev["events"].as_array().unwrap()) {
            assert_eq!(entry["event_id"], event["event_id"]);
            assert_eq!(entry["event_type"], event["event_type"]);
            assert_eq!(entry["actor"], "admin");
            assert_eq!(entry["role"], "admin");
            assert!(entry["correlation_id"].is_string() && entry["occurred_at"].is_string());
            assert_eq!(entry["prev_hash"], prev.as_str());
            assert!(!entry["summary"].as_str().unwrap().is_empty());
            prev = entry["hash"].as_str().unwrap().to_owned();
        }
        assert_eq!(
            entries[2]["summary"],
            "phone contact, 10 minutes (monitoring)"
        );

        let report = projector::verify(&app.store, None).await.unwrap();
        assert_eq!(
            (report.cases, report.entries, report.broken.len()),
            (1, 5, 0),
            "{report:?}"
        );

        let (s, b) = app.get("/readyz", "").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["projections"][0]["name"], "audit_trail");
        assert_eq!(b["projections"][0]["lag"], 0);
    }
);

both_stores!(
    a_stop_between_commit_and_projection_loses_nothing,
    |app: TestApp| async move {
        // The first server commits events but never projects them: as if it died right after
        // each commit. The next server starts from the durable checkpoint and catches up.
        let mut app = app;
        app.stop().await;
        let mut config = app.config.clone();
        config.run_projections = false;
        config.listen = "127.0.0.1:0".parse().unwrap();
        let crashed = TestApp::spawn_on(app.backend, config.clone()).await;
        let case = case_with_activity(&crashed, 4).await;
        let status = projector::status(&crashed.store).await.unwrap();
        assert_eq!(
            (status[0].events_applied, status[0].lag),
            (0, 6),
            "{status:?}"
        );
        drop(crashed);

        config.run_projections = true;
        let restarted = TestApp::spawn_on(app.backend, config).await;
        let entries = trail(&restarted, &case, 6).await;
        assert_eq!(entries.len(), 6);
        let status = projector::status(&restarted.store).await.unwrap();
        assert_eq!(
            (status[0].events_applied, status[0].lag),
            (6, 0),
            "{status:?}"
        );
    }
);

both_stores!(
    a_rebuild_reproduces_the_same_chain,
    |app: TestApp| async move {
        let case = case_with_activity(&app, 2).await;
        let before = trail(&app, &case, 4).await;
        let (s, events) = app
            .get(&format!("/v1/cases/{case}/events"), &app.admin_token)
            .await;
        assert_eq!(s, StatusCode::OK, "{events}");
        let mut app = app;
        app.stop().await;
        // Rebuilds run with the server stopped, from a store of their own (as the CLI does).
        let store = services::startup::open_store(&app.config).await.unwrap();
        let rebuilt = projector::rebuild(&store, "audit_trail", false, |_| {})
            .await
            .unwrap();
        assert_eq!(rebuilt.events, 4);
        let id = schemas::CaseId::parse(&case).unwrap();
        let after = store.audit_entries(id).await.unwrap();
        // Every field of every entry reads back as the live trail had it (on PostgreSQL both
        // were loaded by binary COPY, the rebuild's in bulk), and each entry's time is its
        // event's in the log, to the microsecond.
        let after: Vec<Value> = after
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect();
        assert_eq!(before, after);
        let logged: Vec<DateTime<Utc>> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["recorded_at"].as_str().unwrap().parse().unwrap())
            .collect();
        let trailed: Vec<DateTime<Utc>> = after
            .iter()
            .map(|e| e["recorded_at"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(logged, trailed);
        assert!(matches!(
            projector::rebuild(&store, "nope", false, |_| {}).await,
            Err(projector::ProjectionError::Unknown(_))
        ));
    }
);

both_stores!(
    verify_names_the_first_broken_link,
    |app: TestApp| async move {
        let case = case_with_activity(&app, 3).await;
        let other = case_with_activity(&app, 1).await;
        trail(&app, &case, 5).await;
        trail(&app, &other, 3).await;
        edit_by_hand(&app, &case).await;
        let report = projector::verify(&app.store, None).await.unwrap();
        assert_eq!(report.cases, 2);
        assert_eq!(report.broken.len(), 1, "{report:?}");
        assert_eq!(report.broken[0].case_id, case);
        assert_eq!(
            report.broken[0].sequence, 4,
            "the edited event is the first broken link"
        );
        let id = schemas::CaseId::parse(&other).unwrap();
        assert!(projector::verify(&app.store, Some(id))
            .await
            .unwrap()
            .broken
            .is_empty());
    }
);

both_stores!(
    every_read_of_a_case_is_logged_allowed_or_denied,
    |app: TestApp| async move {
        use schemas::Role;
        let case = case_with_activity(&app, 0).await;
        let ada = app.token(Role::CaseManager, "cm-ada", "default").await;
        let bo = app.token(Role::CaseManager, "cm-bo", "default").await;
        let auditor = app.token(Role::Auditor, "aud-1", "default").await;

        let (s, _) = app.get(&format!("/v1/cases/{case}"), &ada).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = app.get(&format!("/v1/cases/{case}/events"), &ada).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = app.get(&format!("/v1/cases/{case}"), &bo).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "not bo's case");
        let (s, _) = app.get(&format!("/v1/cases/{case}/reads"), &ada).await;
        assert_eq!(
            s,
            StatusCode::FORBIDDEN,
            "case managers do not read the read log"
        );

        let (s, b) = app.get(&format!("/v1/cases/{case}/reads"), &auditor).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let reads: Vec<(String, String, String)> = b["reads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["actor"].as_str().unwrap().to_owned(),
                    r["route"].as_str().unwrap().to_owned(),
                    r["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let expect = |a: &str, r: &str, o: &str| (a.to_owned(), r.to_owned(), o.to_owned());
        assert_eq!(
            reads,
            vec![
                expect("cm-ada", "GET /v1/cases/{case_id}", "allowed"),
                expect("cm-ada", "GET /v1/cases/{case_id}/events", "allowed"),
                expect("cm-bo", "GET /v1/cases/{case_id}", "denied"),
                expect("cm-ada", "GET /v1/cases/{case_id}/reads", "denied"),
                expect("aud-1", "GET /v1/cases/{case_id}/reads", "allowed"),
            ]
        );
        assert!(b["reads"][0]["read_at"].is_string() && b["reads"][0]["role"] == "case_manager");
    }
);

both_stores!(
    a_projection_that_cannot_apply_an_event_stops_visibly,
    |app: TestApp| async move {
        let case = case_with_activity(&app, 1).await;
        trail(&app, &case, 3).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while projector::status(&app.store)
            .await
            .unwrap()
            .iter()
            .any(|p| p.lag > 0)
        {
            assert!(Instant::now() < deadline, "projections never caught up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // An event no code of this version can read (as if written by a buggy or newer release).
        let bad = uuid::Uuid::now_v7().to_string();
        app.insert_stored_event(
            &bad,
            1,
            "CaseOpened",
            "9",
            &json!({"CaseOpened": {"shape": "unknown"}}),
            &json!({}),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            let status = projector::status(&app.store).await.unwrap();
            let caseloads = status.iter().find(|p| p.name == "caseloads").unwrap();
            if caseloads.error.is_some() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the caseload projection never stopped: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let caseloads = status.iter().find(|p| p.name == "caseloads").unwrap();
        // The error names the event and says it cannot be applied (its own kind of error, not
        // a corrupt store).
        let error = caseloads.error.as_deref().unwrap();
        assert!(
            error.contains("(CaseOpened) cannot be applied"),
            "{caseloads:?}"
        );
        assert_eq!(caseloads.lag, 1, "stopped at the bad event, not past it");
        let (s, b) = app.get("/readyz", "").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
        assert_eq!(b["status"], "degraded");
        // The audit trail hashes whatever is stored, so it carries on.
        let bad_id = schemas::CaseId::parse(&bad).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while app.store.audit_entries(bad_id).await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the audit trail stopped too");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
);

/// Someone who can write the database rewrites an event and recomputes every later link of the
/// trail (here: edits the payload, then rebuilds the trail): the chains verify by themselves,
/// but not against the anchors signed before, which name the case. An anchor taken out of the
/// middle of the file is named too. The server signs one at shutdown.
async fn anchors_catch_a_rewritten_history(backend: linkage_tests::Backend) {
    use services::anchor::{self, AnchorConfig, Anchorer};
    let dir = std::env::temp_dir().join(format!("linkage-anchors-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("anchor.key");
    let public = anchor::public_key(&anchor::generate_key(&key_file).unwrap()).unwrap();
    assert!(
        anchor::generate_key(&key_file).is_err(),
        "a key is never replaced"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let shared = dir.join("shared.key");
        std::fs::copy(&key_file, &shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            anchor::load_key(&shared).is_err(),
            "a readable key is refused"
        );
    }
    let served = dir.join("served.anchors");
    let config = AnchorConfig {
        key_file: key_file.clone(),
        out: served.clone(),
        interval_secs: 3_600,
    };
    let Some(mut app) =
        TestApp::spawn_with(backend, |c| c.audit_anchor = Some(config.clone())).await
    else {
        return;
    };
    // The test anchors between commits itself, into a file of its own.
    let out = dir.join("test.anchors");
    let mut anchorer = Anchorer::open(anchor::load_key(&key_file).unwrap(), &out).unwrap();
    let mut cases = Vec::new();
    for contacts in [2, 1, 3] {
        cases.push(case_with_activity(&app, contacts).await);
        app.wait_projected().await;
        let signed = anchorer
            .anchor(&app.store, linkage_tests::now())
            .await
            .unwrap()
            .expect("a trail grew");
        assert_eq!(signed.body.heads.len(), 1, "only the case that grew");
    }
    assert!(anchorer
        .anchor(&app.store, linkage_tests::now())
        .await
        .unwrap()
        .is_none());
    app.stop().await;
    let at_shutdown = std::fs::read_to_string(&served).expect("an anchor at shutdown");
    assert_eq!(at_shutdown.lines().count(), 1, "{at_shutdown}");

    let store = services::startup::open_store(&app.config).await.unwrap();
    for file in [&out, &served] {
        let report = anchor::verify(&store, file, &public).await.unwrap();
        assert!(report.broken.is_empty(), "{:?}", report.broken);
    }
    assert_eq!(
        anchor::verify(&store, &out, &public).await.unwrap().heads,
        3
    );

    // One anchor out of the middle.
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut = dir.join("cut.anchors");
    std::fs::write(&cut, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
    let report = anchor::verify(&store, &cut, &public).await.unwrap();
    assert!(
        report
            .broken
            .iter()
            .any(|b| b.contains("anchor 3 is at place 2"))
            && report.broken.iter().any(|b| b.contains("does not link")),
        "{:?}",
        report.broken
    );
    // Another key's word counts for nothing.
    let other = anchor::public_key(&anchor::generate_key(&dir.join("other.key")).unwrap()).unwrap();
    let report = anchor::verify(&store, &out, &other).await.unwrap();
    assert_eq!(report.broken.len(), 3, "{:?}", report.broken);

    // The history rewritten: a contact's minutes changed, the trail recomputed after it.
    let tampered = &cases[2];
    edit_by_hand(&app, tampered).await;
    projector::rebuild(&store, "audit_trail", true, |_| {})
        .await
        .unwrap();
    let report = projector::verify(&store, None).await.unwrap();
    assert!(
        report.broken.is_empty(),
        "the recomputed trail verifies by itself: {:?}",
        report.broken
    );
    let report = anchor::verify(&store, &out, &public).await.unwrap();
    assert_eq!(report.broken.len(), 1, "{:?}", report.broken);
    assert!(
        report.broken[0].contains(tampered.as_str())
            && report.broken[0].contains("no longer give the signed hash"),
        "{:?}",
        report.broken
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anchors_catch_a_rewritten_history_sqlite() {
    anchors_catch_a_rewritten_history(linkage_tests::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anchors_catch_a_rewritten_history_postgres() {
    anchors_catch_a_rewritten_history(linkage_tests::Backend::Postgres).await;
}
