//! Each projection is applied once across replicas. A batch is claimed by a compare-and-set on
//! the checkpoint it was read after: two engines that read the same checkpoint and both try to
//! apply the batch leave exactly one application (forced here step by step, on both stores).
//! Two and three servers on one PostgreSQL under concurrent writes, several times over, end with
//! every projection's `applied` equal to the events stored, each contact once in the billing
//! log and in an export batch, a lease holder named for every projection, and every projection
//! equal to a rebuild from zero, also after the replica running them stopped.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use linkage_tests::{Backend, TestApp};
use reqwest::StatusCode;
use schemas::Role;
use serde_json::{json, Value};
use services::projector::{self, PROJECTIONS};
use services::store::{Claim, LogPosition};

const MONTH: &str = "2026-10";

async fn open_case(app: &TestApp, token: &str, n: usize) -> String {
    let (s, b) = app
        .post(
            "/v1/cases",
            token,
            &json!({"program": "tcm", "assigned_to": "cm-ada", "intake_date": "2026-09-01",
                "child": {"given_name": "Robin", "family_name": "Sample", "birth_date": linkage_tests::unique_birth_date(),
                          "medicaid_id": format!("ZZ{n:08}")}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["case_id"].as_str().expect("case id").to_owned()
}

/// A billable call on day `day` of the month, `minutes` long (distinct per contact).
fn call(day: u32, minutes: u32) -> Value {
    json!({"component": "monitoring", "contact_type": "phone", "with": ["guardian"],
        "occurred_at": format!("{MONTH}-{day:02}T15:00:00Z"), "minutes": minutes,
        "note": "monitoring call"})
}

/// Opens `cases` cases with a call on each of the first `calls` days; their ids.
async fn cases_with_calls(app: &TestApp, token: &str, cases: usize, calls: u32) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..cases {
        let case = open_case(app, token, n).await;
        for day in 1..=calls {
            let (s, b) = app
                .post(&format!("/v1/cases/{case}/contacts"), token, &call(day, 20))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
        }
        ids.push(case);
    }
    ids
}

/// Two engines read the same checkpoint and the same batch, then both apply it, at once: exactly
/// one commits; the other, and an engine still holding the old checkpoint later, write nothing.
async fn two_engines_one_batch(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| c.run_projections = false).await else {
        return;
    };
    let t = app.admin_token.clone();
    cases_with_calls(&app, &t, 3, 4).await;
    let stored = app.store.events_after(LogPosition::START).await.unwrap();
    assert_eq!(
        stored, 18,
        "3 cases of 6 events: opened, assigned, 4 contacts"
    );
    for projection in PROJECTIONS {
        let name = projection.name();
        let from = app
            .store
            .checkpoint(services::store::Work::Projections, name)
            .await
            .unwrap()
            .at;
        // On PostgreSQL the log shows only what is final cluster-wide (other tests' open
        // transactions hold it back for a moment): wait until it shows the whole batch.
        let deadline = Instant::now() + Duration::from_secs(30);
        let batch = loop {
            let batch = app
                .store
                .read_log(services::store::Work::Projections, from, 500)
                .await
                .unwrap();
            if batch.len() == 18 {
                break batch;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: the log shows {} events",
                batch.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let claim = |by| Claim { from, by };
        let (a, b) = tokio::join!(
            projection.apply(&app.store, claim("engine-a"), &batch),
            projection.apply(&app.store, claim("engine-b"), &batch),
        );
        let (a, b) = (a.expect("engine a"), b.expect("engine b"));
        assert!(
            a ^ b,
            "{name}: exactly one engine applies the batch (a: {a}, b: {b})"
        );
        let checkpoint = app
            .store
            .checkpoint(services::store::Work::Projections, name)
            .await
            .unwrap();
        assert_eq!(checkpoint.events, 18, "{name}: the batch counted once");
        let winner = if a { "engine-a" } else { "engine-b" };
        assert_eq!(checkpoint.applied_by.as_deref(), Some(winner), "{name}");
        // An engine that read the old checkpoint before and comes back now writes nothing.
        let late = projection
            .apply(&app.store, claim("engine-c"), &batch)
            .await;
        assert!(!late.expect("engine c"), "{name}: a stale claim loses");
        assert_eq!(
            app.store
                .checkpoint(services::store::Work::Projections, name)
                .await
                .unwrap()
                .events,
            18
        );
    }
    // What the one application left: every contact once, every event once in the trail.
    let cases = app.store.case_ids().await.unwrap();
    let states = app.store.billing_states(&cases).await.unwrap();
    assert_eq!(states.len(), 3);
    for state in states.values() {
        assert_eq!(state.contacts.len(), 4, "each contact once in billing");
    }
    for case in &cases {
        assert_eq!(app.store.audit_entries(*case).await.unwrap().len(), 6);
    }
    // The folds are idempotent anyway: the batch replayed onto the states it produced changes
    // nothing (each state knows the last event it holds; a contact is kept by its activity id).
    let batch = app
        .store
        .read_log(services::store::Work::Projections, LogPosition::START, 500)
        .await
        .unwrap();
    let caseloads = app.store.case_states(None, None, false).await.unwrap();
    assert_eq!(caseloads.len(), 3);
    for (case_id, events) in projections::log::group_by_case(&batch) {
        let billed = &states[&case_id];
        let mut replayed = billed.clone();
        projections::billing::fold(&mut replayed, &events).unwrap();
        assert_eq!(
            &replayed, billed,
            "a replayed batch changes no billing state"
        );
        let folded = caseloads
            .iter()
            .find(|c| c.opened.as_ref().is_some_and(|o| o.case_id == case_id))
            .expect("the case's caseload row");
        let mut replayed = folded.clone();
        projections::caseload::fold(&mut replayed, &events).unwrap();
        assert!(
            &replayed == folded,
            "a replayed batch changes no caseload state"
        );
    }
    let report = projector::verify(&app.store, None).await.unwrap();
    assert!(report.broken.is_empty(), "{:?}", report.broken);
}

linkage_tests::both_backends!(two_engines, two_engines_one_batch);

/// Every projection's rows, in a stable order, as text.
/// Waits until the log shows `n` events (on PostgreSQL, other tests' open transactions hold
/// back what is final for a moment).
async fn log_shows(app: &TestApp, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while app
        .store
        .read_log(services::store::Work::Projections, LogPosition::START, 500)
        .await
        .unwrap()
        .len()
        != n
    {
        assert!(Instant::now() < deadline, "the log never showed {n} events");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The engine reads the log once for the projections whose checkpoints stand together, and on
/// its own for one that stands elsewhere: each gets exactly the events after its checkpoint.
async fn projections_step_together(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| c.run_projections = false).await else {
        return;
    };
    let t = app.admin_token.clone();
    let cases = cases_with_calls(&app, &t, 2, 2).await;
    log_shows(&app, 8).await;
    let audit = projector::known("audit_trail").unwrap();
    assert_eq!(
        projector::catch_up(&app.store, audit, |_| {})
            .await
            .unwrap(),
        8
    );
    let (s, b) = app
        .post(
            &format!("/v1/cases/{}/contacts", cases[0]),
            &t,
            &call(3, 25),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    log_shows(&app, 9).await;

    let applied = |results: Vec<Result<projector::Stepped, projector::ProjectionError>>| {
        results
            .into_iter()
            .map(|r| match r.expect("a step") {
                projector::Stepped::Applied(n) => n,
                projector::Stepped::Lost => panic!("no other engine runs"),
            })
            .collect::<Vec<_>>()
    };
    let names: Vec<&str> = PROJECTIONS.iter().map(|p| p.name()).collect();
    assert_eq!(names, ["audit_trail", "caseloads", "billing", "fhir"]);
    assert_eq!(
        applied(projector::step_together(&app.store, PROJECTIONS).await),
        [1, 9, 9, 9],
        "the audit trail gets the one event after its checkpoint, the others all nine"
    );
    assert_eq!(
        applied(projector::step_together(&app.store, PROJECTIONS).await),
        [0, 0, 0, 0]
    );
    let head = app
        .store
        .checkpoint(services::store::Work::Api, "audit_trail")
        .await
        .unwrap()
        .at;
    for name in names {
        let c = app
            .store
            .checkpoint(services::store::Work::Projections, name)
            .await
            .unwrap();
        assert_eq!((c.events, c.at), (9, head), "{name}");
    }
    let ids = app.store.case_ids().await.unwrap();
    let states = app.store.billing_states(&ids).await.unwrap();
    let mut contacts: Vec<usize> = states.values().map(|s| s.contacts.len()).collect();
    contacts.sort_unstable();
    assert_eq!(contacts, [2, 3], "each contact once in billing");
    assert_eq!(
        app.store
            .case_states(None, None, false)
            .await
            .unwrap()
            .len(),
        2
    );
    let report = projector::verify(&app.store, None).await.unwrap();
    assert!(
        report.broken.is_empty() && report.pending == 0,
        "{report:?}"
    );
}

linkage_tests::both_backends!(step_together, projections_step_together);

/// An engine steps from where it last left each checkpoint, without reading it; when another
/// applier moved a checkpoint meanwhile, the engine's step is lost (nothing written), and its
/// next step reads the checkpoint and applies exactly the events after it: none twice, none
/// skipped.
async fn stale_known_checkpoints_lose_the_step_and_then_apply_what_follows(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| c.run_projections = false).await else {
        return;
    };
    let t = app.admin_token.clone();
    let cases = cases_with_calls(&app, &t, 2, 2).await;
    log_shows(&app, 8).await;
    let steps = |results: Vec<Result<projector::Stepped, projector::ProjectionError>>| {
        results
            .into_iter()
            .map(|r| r.expect("a step"))
            .collect::<Vec<_>>()
    };
    let mut known = projector::Known::default();
    use projector::Stepped::{Applied, Lost};
    assert_eq!(
        steps(projector::step_from_known(&app.store, PROJECTIONS, &mut known).await),
        [Applied(8); 4]
    );
    // Another applier (an engine that knows nothing) moves every checkpoint past a contact.
    let contact = |n: u32| {
        let (app, t, case) = (&app, &t, cases[0].clone());
        async move {
            let (s, b) = app
                .post(&format!("/v1/cases/{case}/contacts"), t, &call(n, 25))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
        }
    };
    contact(3).await;
    log_shows(&app, 9).await;
    assert_eq!(
        steps(projector::step_together(&app.store, PROJECTIONS).await),
        [Applied(1); 4]
    );
    contact(4).await;
    log_shows(&app, 10).await;
    assert_eq!(
        steps(projector::step_from_known(&app.store, PROJECTIONS, &mut known).await),
        [Lost; 4],
        "the engine read from where it had left the checkpoints, which had moved"
    );
    assert_eq!(
        steps(projector::step_from_known(&app.store, PROJECTIONS, &mut known).await),
        [Applied(1); 4],
        "then only the event after the moved checkpoints"
    );
    assert_eq!(
        steps(projector::step_from_known(&app.store, PROJECTIONS, &mut known).await),
        [Applied(0); 4]
    );
    for p in PROJECTIONS {
        let c = app
            .store
            .checkpoint(services::store::Work::Projections, p.name())
            .await
            .unwrap();
        assert_eq!(c.events, 10, "{}", p.name());
    }
    let ids = app.store.case_ids().await.unwrap();
    let states = app.store.billing_states(&ids).await.unwrap();
    let mut contacts: Vec<usize> = states.values().map(|s| s.contacts.len()).collect();
    contacts.sort_unstable();
    assert_eq!(contacts, [2, 4], "each contact once in billing");
    let report = projector::verify(&app.store, None).await.unwrap();
    assert!(
        report.broken.is_empty() && report.pending == 0 && report.entries == 10,
        "{report:?}"
    );
}

linkage_tests::both_backends!(
    stale_known,
    stale_known_checkpoints_lose_the_step_and_then_apply_what_follows
);

/// With a poll period far longer than the test may take, only a wake-up can bring the
/// projections up to date: a commit in the process itself (both stores), or on another replica
/// (PostgreSQL: NOTIFY).
const NEVER_POLL_MS: u64 = 600_000;

/// Whether `app`'s projections hold every event within `wait`.
async fn projected_within(app: &TestApp, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        let (_, b) = app.get("/readyz", &app.admin_token).await;
        if b["projections"]
            .as_array()
            .is_some_and(|ps| ps.iter().all(|p| p["lag"] == 0))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn a_commit_wakes_the_projector(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| c.projection_poll_ms = NEVER_POLL_MS).await
    else {
        return;
    };
    let t = app.admin_token.clone();
    let case = open_case(&app, &t, 1).await;
    assert!(
        projected_within(&app, Duration::from_secs(30)).await,
        "the commit woke the projector"
    );
    // The engine is idle now, waiting: only this commit can wake it.
    let (s, b) = app
        .post(&format!("/v1/cases/{case}/contacts"), &t, &call(1, 20))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert!(
        projected_within(&app, Duration::from_secs(30)).await,
        "the second commit woke the idle projector"
    );
}

linkage_tests::both_backends!(commit_wakes_the_projector, a_commit_wakes_the_projector);

/// While commands keep coming, the engine starts a step at most once a period
/// (`projector::pace`), so that events arriving meanwhile are applied together; the first event
/// after an idle spell is applied at once.
async fn a_busy_projector_steps_at_most_once_a_period(backend: Backend) {
    const PERIOD: Duration = Duration::from_secs(10);
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.projection_poll_ms = NEVER_POLL_MS;
        c.projection_step_period_ms = PERIOD.as_millis() as u64;
    })
    .await
    else {
        return;
    };
    let t = app.admin_token.clone();
    let before = Instant::now();
    let case = open_case(&app, &t, 1).await;
    assert!(
        projected_within(&app, Duration::from_secs(5)).await,
        "the first commit after an idle spell is applied at once, not a period later"
    );
    // The step that applied the intake read the log after `before` (it found the intake): the
    // next step starts a period after that step began, and no sooner. A step can begin a moment
    // before its read (the engine's first step reads the checkpoints first), hence the second
    // of slack below; without the pause the contact is applied within milliseconds.
    let (s, b) = app
        .post(&format!("/v1/cases/{case}/contacts"), &t, &call(1, 20))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert!(
        projected_within(&app, Duration::from_secs(60)).await,
        "the contact is applied once the period ends"
    );
    assert!(
        before.elapsed() >= PERIOD - Duration::from_secs(1),
        "the contact was applied {:?} after the intake was posted, within the period",
        before.elapsed()
    );
}

linkage_tests::both_backends!(
    busy_projector_steps_at_most_once_a_period,
    a_busy_projector_steps_at_most_once_a_period
);

/// A command on the replica that runs no projection wakes the one that does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_on_another_replica_wakes_the_projector() {
    let Some(runner) = TestApp::spawn_with(Backend::Postgres, |c| {
        c.projection_poll_ms = NEVER_POLL_MS;
        c.replica_id = Some("runner".into());
    })
    .await
    else {
        return;
    };
    // The writer starts once the runner holds every lease (else it takes those not yet taken).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = projector::status(&runner.store).await.unwrap();
        if status
            .iter()
            .all(|s| s.running_in.as_deref() == Some("runner"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first replica runs the projections: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut config = runner.config.clone();
    config.replica_id = Some("writer".into());
    let writer = TestApp::spawn_on(Backend::Postgres, config).await;
    let t = writer.admin_token.clone();
    // A listener that was still connecting may miss one notification; a later one arrives.
    for n in 0..5 {
        open_case(&writer, &t, 100 + n).await;
        if projected_within(&runner, Duration::from_secs(6)).await {
            let status = projector::status(&runner.store).await.unwrap();
            assert!(
                status
                    .iter()
                    .all(|s| s.applied_by.as_deref() == Some("runner")),
                "{status:?}"
            );
            return;
        }
    }
    panic!("the other replica's commits never woke the projector");
}

async fn projected(app: &TestApp) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for sql in [
        "SELECT concat_ws('|', case_id, sequence, event_id, prev_hash, hash) FROM audit_entries \
         ORDER BY case_id, sequence",
        "SELECT concat_ws('|', case_id, agency, worker_id, open, version, state::text) \
         FROM caseload_cases ORDER BY case_id",
        "SELECT concat_ws('|', case_id, sequence, event_id, day, with_family, voided) \
         FROM caseload_contacts ORDER BY case_id, sequence",
        "SELECT concat_ws('|', case_id, agency, state::text) FROM billing_cases ORDER BY case_id",
        "SELECT concat_ws('|', case_id, sequence, event_id, activity_id, at, contact::text) \
         FROM billing_contacts ORDER BY case_id, sequence",
        "SELECT concat_ws('|', month, case_id, agency) FROM billing_case_months \
         ORDER BY month, case_id",
    ] {
        out.push(app.sql(sql).await.expect(sql));
    }
    out
}

/// Waits until every projection has applied every stored event, as `any` replica reports it.
async fn caught_up(any: &TestApp, stored: i64) -> Vec<projector::FollowerStatus> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = projector::status(&any.store).await.expect("status");
        if status
            .iter()
            .all(|p| p.lag == 0 && p.events_applied >= stored)
        {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "projections did not catch up: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the projections have caught up, then checks that each applied exactly the events
/// stored and runs in one of the test's replicas; returns the events stored and the status.
async fn settled(
    app: &TestApp,
    replicas: &HashSet<String>,
) -> (i64, Vec<projector::FollowerStatus>) {
    let stored = app.store.events_after(LogPosition::START).await.unwrap();
    let status = caught_up(app, stored).await;
    for p in &status {
        assert_eq!(
            p.events_applied, stored,
            "{}: applied equals the events stored",
            p.name
        );
        let runner = p.running_in.as_deref().expect("a replica runs it");
        assert!(replicas.contains(runner), "{}: run by {runner}", p.name);
    }
    (stored, status)
}

/// Eight clients post contacts through every replica at once (round robin, as behind a load
/// balancer); returns how many contacts were acknowledged.
async fn wave(replicas: &[Arc<TestApp>], cases: &[String], token: &str, wave: u32) -> usize {
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let replicas = replicas.to_vec();
            let cases = cases.to_vec();
            let token = token.to_owned();
            tokio::spawn(async move {
                let mut posted = 0;
                for i in 0..12u32 {
                    let app = &replicas[(w + i as usize) % replicas.len()];
                    let case = &cases[(w * 5 + i as usize) % cases.len()];
                    // Distinct minutes per contact, so each line is told apart by its content too.
                    let minutes = 15 + wave * 100 + w as u32 * 12 + i;
                    let (s, b) = app
                        .post(
                            &format!("/v1/cases/{case}/contacts"),
                            &token,
                            &call(1 + (i % 28), minutes),
                        )
                        .await;
                    assert_eq!(s, StatusCode::CREATED, "{b}");
                    posted += 1;
                }
                posted
            })
        })
        .collect();
    let mut total = 0;
    for w in writers {
        total += w.await.expect("writer");
    }
    total
}

async fn replicas_round(count: usize) {
    let Some(first) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let mut replicas = vec![Arc::new(first)];
    for _ in 1..count {
        let next = replicas[0].second_instance().await;
        replicas.push(Arc::new(next));
    }
    let names: HashSet<String> = replicas
        .iter()
        .map(|r| r.store.replica().to_owned())
        .collect();
    assert_eq!(names.len(), count, "each replica has its own name");
    let t = replicas[0].admin_token.clone();
    let mut cases = Vec::new();
    for n in 0..20 {
        cases.push(open_case(&replicas[n % count], &t, n).await);
    }
    let mut contacts = wave(&replicas, &cases, &t, 0).await;
    let (_, status) = settled(&replicas[0], &names).await;

    // The replica running the billing projection stops; another takes its leases over.
    let billing_runner = status
        .iter()
        .find(|p| p.name == "billing")
        .and_then(|p| p.running_in.clone())
        .expect("billing runs somewhere");
    let at = replicas
        .iter()
        .position(|r| r.store.replica() == billing_runner)
        .expect("a replica of this test");
    let mut stopped = replicas.remove(at);
    Arc::get_mut(&mut stopped)
        .expect("no writer holds it any more")
        .stop()
        .await;
    contacts += wave(&replicas, &cases, &t, 1).await;
    let (stored, status) = settled(&replicas[0], &names).await;
    for p in &status {
        let runner = p.running_in.as_deref().expect("a replica runs it");
        assert_ne!(
            runner, billing_runner,
            "{}: the stopped replica's lease went",
            p.name
        );
    }
    assert_eq!(contacts, 8 * 12 * 2);

    // The billing log holds each contact exactly once, and so does an export of the month.
    let app = &replicas[0];
    let billing = app.token(Role::Billing, "bill-1", "default").await;
    let (s, body) = app
        .get(
            &format!("/v1/billing/tcm?month={MONTH}&format=json&limit=1000"),
            &billing,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let lines = body["lines"].as_array().expect("lines");
    let activities: HashSet<&str> = lines
        .iter()
        .map(|l| l["activity_id"].as_str().expect("activity"))
        .collect();
    assert_eq!(lines.len(), contacts, "one line per contact");
    assert_eq!(activities.len(), contacts, "no contact twice");
    let (s, batch) = app
        .post(
            "/v1/billing/tcm/batches",
            &billing,
            &json!({"month": MONTH}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{batch}");
    let billable = lines.iter().filter(|l| l["billable"] == true).count();
    assert!(
        billable > contacts / 2,
        "most calls are billable: {billable}"
    );
    assert_eq!(batch["lines"], billable, "each billable line once: {batch}");

    // Each projection equals a rebuild from zero (run beside the live replicas).
    let before = projected(app).await;
    // Rebuilt in batches of 7 events, so that each rebuild goes through many batches with one
    // folded ahead while the one before is written (`projector::catch_up`).
    let small_batches = services::store::Store::postgres(
        app.config.database_url.as_deref().expect("PostgreSQL"),
        1,
    )
    .await
    .unwrap()
    .with_log_batch(7);
    for name in projector::names() {
        let rebuilt = projector::rebuild(&small_batches, name, false, |_| {})
            .await
            .expect("rebuild");
        assert_eq!(rebuilt.mode, projector::RebuildMode::BlueGreen);
        assert!(rebuilt.events > 7 * 10, "many batches: {}", rebuilt.events);
    }
    small_batches.close().await;
    caught_up(app, stored).await;
    assert_eq!(
        projected(app).await,
        before,
        "a rebuild gives the same rows"
    );
    let report = projector::verify(&app.store, None).await.unwrap();
    assert!(report.broken.is_empty(), "{:?}", report.broken);
    assert_eq!(report.pending, 0);
}

/// Two and three replicas, each twice: the race is not deterministic, so it is run more than
/// once; the claim makes every run come out right.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_apply_each_batch_once() {
    for count in [2, 3, 2, 3] {
        replicas_round(count).await;
    }
}

/// Rows each projection's readers see: audit entries, caseload cases, billing contacts.
async fn row_counts(app: &TestApp) -> [i64; 3] {
    let mut counts = [0; 3];
    for (i, table) in ["audit_entries", "caseload_cases", "billing_contacts"]
        .iter()
        .enumerate()
    {
        let n = app
            .sql(&format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table}"))
            .await
            .expect("a count");
        counts[i] = n[0].parse().expect("a number");
    }
    counts
}

/// Each table's indexes (name and definition) and constraints (name and definition).
async fn index_names(app: &TestApp) -> Vec<String> {
    let mut out = app
        .sql(
            "SELECT tablename || '.' || indexname || ': ' || indexdef FROM pg_indexes \
             WHERE schemaname = current_schema() ORDER BY 1",
        )
        .await
        .expect("index names");
    out.extend(
        app.sql(
            "SELECT c.conrelid::regclass::text || '.' || c.conname || ': ' || \
               pg_get_constraintdef(c.oid) \
             FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
             WHERE n.nspname = current_schema() ORDER BY 1",
        )
        .await
        .expect("constraints"),
    );
    out
}

/// Blue/green rebuilds on PostgreSQL, beside two live replicas that take commands and run the
/// projections: readers never see a projection emptied or partial (an in-place rebuild would
/// show them fewer rows), the rebuilt rows equal an in-place rebuild's, the tables keep their
/// index names, nothing of the copy is left behind, and a second rebuild of a projection while
/// one runs is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_is_built_beside_the_live_projection_and_swapped_in() {
    let Some(first) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let second = first.second_instance().await;
    let replicas = [Arc::new(first), Arc::new(second)];
    let app = replicas[0].clone();
    let t = app.admin_token.clone();
    let mut cases = Vec::new();
    for n in 0..12 {
        cases.push(open_case(&replicas[n % 2], &t, n).await);
    }
    wave(&replicas, &cases, &t, 0).await;
    // A contact stored twice under one activity id, far apart in the log (no command does this;
    // a log imported from elsewhere might): billing keeps the first. A bulk-loaded copy writes
    // both rows and refuses the second only when its unique index is built (`Green::index`).
    let twice = open_case(&replicas[0], &t, 99).await;
    let (s, b) = app
        .post(&format!("/v1/cases/{twice}/contacts"), &t, &call(3, 21))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    wave(&replicas, &cases, &t, 2).await;
    app.sql(&format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
           payload, metadata) \
         SELECT aggregate_type, aggregate_id, sequence + 1, event_type, event_version, payload, \
           metadata - 'idempotency_scope' \
         FROM events WHERE aggregate_id = '{twice}' AND event_type = 'ContactLogged' \
         RETURNING event_type"
    ))
    .await
    .expect("the contact stored again");
    // Voids: of a contact logged long before (a bulk load has written its row batches earlier),
    // and of one logged just before (the row and the void arrive together). A bulk-loaded copy
    // applies them only when its contact rows' key is built (`green::KEYED_LATER`).
    let void = |case: String, event: String| {
        let (app, t) = (&app, &t);
        async move {
            let (s, b) = app
                .post(
                    &format!("/v1/cases/{case}/corrections"),
                    t,
                    &json!({"voids_event_id": event, "reason": "logged on the wrong case"}),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
        }
    };
    // The event id of `case`'s first (`ASC`) or latest (`DESC`) contact.
    let contact_event = |case: &str, order: &str| {
        format!(
            "SELECT event_id::text FROM events WHERE aggregate_id = '{case}' \
             AND event_type = 'ContactLogged' ORDER BY sequence {order} LIMIT 1"
        )
    };
    let early = app.sql(&contact_event(&cases[0], "ASC")).await.unwrap();
    void(cases[0].clone(), early[0].clone()).await;
    let (s, b) = app
        .post(
            &format!("/v1/cases/{}/contacts", cases[1]),
            &t,
            &call(27, 33),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let latest = app.sql(&contact_event(&cases[1], "DESC")).await.unwrap();
    void(cases[1].clone(), latest[0].clone()).await;
    let voided =
        "SELECT CAST(case_id AS TEXT) FROM billing_contacts WHERE contact::jsonb -> 'voided' = 'true'";
    let stored = app.store.events_after(LogPosition::START).await.unwrap();
    caught_up(&app, stored).await;
    assert_eq!(
        app.sql(voided).await.unwrap().len(),
        2,
        "two contacts voided"
    );
    let once =
        format!("SELECT CAST(activity_id AS TEXT) FROM billing_contacts WHERE case_id = '{twice}'");
    assert_eq!(app.sql(&once).await.unwrap().len(), 1, "billed once");
    let floor = row_counts(&app).await;
    let indexes = index_names(&app).await;

    // Readers poll every projection's rows while commands arrive and each projection rebuilds.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let reader = tokio::spawn({
        let app = app.clone();
        async move {
            let mut least = [i64::MAX; 3];
            let mut reads = 0;
            while !*stopped.borrow() {
                let now = row_counts(&app).await;
                for i in 0..3 {
                    least[i] = least[i].min(now[i]);
                }
                reads += 1;
            }
            (least, reads)
        }
    });
    let writer = tokio::spawn({
        let (replicas, cases, t) = (replicas.to_vec(), cases.clone(), t.clone());
        async move { wave(&replicas, &cases, &t, 1).await }
    });
    // Rebuilt in batches of 7 events, so that each rebuild goes through many batches with one
    // folded ahead while the one before is written (`projector::catch_up`).
    let small_batches = services::store::Store::postgres(
        app.config.database_url.as_deref().expect("PostgreSQL"),
        1,
    )
    .await
    .unwrap()
    .with_log_batch(7);
    for name in projector::names() {
        let rebuilt = projector::rebuild(&small_batches, name, false, |_| {})
            .await
            .expect("rebuild");
        assert_eq!(rebuilt.mode, projector::RebuildMode::BlueGreen);
        assert!(rebuilt.events > 7 * 10, "many batches: {}", rebuilt.events);
    }
    small_batches.close().await;
    // One rebuild of a projection at a time.
    let projection = projector::known("caseloads").unwrap();
    let running = app
        .store
        .green(projection.name(), projection.tables())
        .await
        .unwrap()
        .expect("a copy on PostgreSQL");
    assert!(matches!(
        projector::rebuild(&app.store, "caseloads", false, |_| {}).await,
        Err(projector::ProjectionError::Store(
            services::error::StoreError::RebuildRunning(_)
        ))
    ));
    running.abandon().await.unwrap();
    writer.await.expect("writer");
    let _ = stop.send(true);
    let (least, reads) = reader.await.expect("reader");
    assert!(reads > 3, "the reader read while the rebuilds ran: {reads}");
    for i in 0..3 {
        assert!(
            least[i] >= floor[i],
            "readers saw fewer rows than before the rebuild: {least:?} < {floor:?}"
        );
    }

    // The swapped-in projections follow the log on, and equal a rebuild in place.
    let stored = app.store.events_after(LogPosition::START).await.unwrap();
    caught_up(&app, stored).await;
    let blue_green = projected(&app).await;
    assert_eq!(
        app.sql(&once).await.unwrap().len(),
        1,
        "billed once after a blue/green rebuild"
    );
    assert_eq!(
        app.sql(voided).await.unwrap().len(),
        2,
        "the voids hold after a blue/green rebuild"
    );
    for name in projector::names() {
        let rebuilt = projector::rebuild(&app.store, name, true, |_| {})
            .await
            .expect("rebuild in place");
        assert_eq!(rebuilt.mode, projector::RebuildMode::InPlace);
    }
    caught_up(&app, stored).await;
    assert_eq!(projected(&app).await, blue_green);
    assert_eq!(
        index_names(&app).await,
        indexes,
        "the tables keep their index names"
    );
    let left = app
        .sql("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'linkage_%'")
        .await
        .unwrap();
    assert!(left.is_empty(), "nothing of the copies is left: {left:?}");
    let report = projector::verify(&app.store, None).await.unwrap();
    assert!(report.broken.is_empty(), "{:?}", report.broken);
}
