//! Proof under faults and load: the embedded store under concurrency; backup and restore while
//! clients write.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use linkage_tests::{Backend, EmptyStore, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use services::error::StoreError;
use services::projector::{self, PROJECTIONS};
use services::store::backup::{restore, RestoreTarget};
use services::store::LogPosition;

/// Sixteen clients at once on the embedded store, each logging contacts on its own case and
/// reading it back (a read is a write too: the read log), while the projection engine applies
/// every commit: every request is answered with success, and no projection step meets a locked
/// database (each such step is retried and counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_and_the_projections_share_the_embedded_store() {
    let app = TestApp::spawn(Backend::Sqlite)
        .await
        .expect("SQLite always runs");
    let t = app.admin_token.clone();
    let cases = open_cases(&app, 16).await;
    let clients: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(n, case)| {
            let (client, base, t, case) = (
                app.client.clone(),
                app.address.clone(),
                t.clone(),
                case.clone(),
            );
            tokio::spawn(async move {
                let mut answers: Vec<(String, StatusCode, Value)> = Vec::new();
                for i in 0..25u64 {
                    let r = client
                        .post(format!("{base}/v1/cases/{case}/contacts"))
                        .bearer_auth(&t)
                        .json(&json!({"component": "monitoring", "contact_type": "phone",
                            "with": ["guardian"], "occurred_at": "2026-10-05T15:00:00Z",
                            "minutes": 10 + i, "note": "monitoring call"}))
                        .send()
                        .await
                        .expect("an answer");
                    answers.push(("contact".into(), r.status(), r.json().await.expect("JSON")));
                    let path = match i % 3 {
                        0 => format!("/v1/cases/{case}/events?limit=10"),
                        1 => format!("/v1/caseloads/cm-{}", n % 4),
                        _ => format!("/v1/cases/{case}"),
                    };
                    let r = client
                        .get(format!("{base}{path}"))
                        .bearer_auth(&t)
                        .send()
                        .await
                        .expect("an answer");
                    answers.push((path, r.status(), r.json().await.expect("JSON")));
                }
                answers
            })
        })
        .collect();
    for client in clients {
        for (what, status, body) in client.await.expect("client") {
            assert!(status.is_success(), "{what}: {status} {body}");
        }
    }
    app.wait_projected().await;
    assert_eq!(
        app.store.projection_step_retries(),
        0,
        "a projection step met a locked database"
    );
}

/// Opens `n` cases through the API; their ids.
async fn open_cases(app: &TestApp, n: usize) -> Vec<String> {
    let mut cases = Vec::new();
    for i in 0..n {
        let (s, b) = app
            .post(
                "/v1/cases",
                &app.admin_token,
                &json!({"program": "tcm", "assigned_to": format!("cm-{}", i % 4), "intake_date": "2026-09-01",
                    "child": {"given_name": "Robin", "family_name": "Sample",
                              "birth_date": linkage_tests::unique_birth_date()}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        cases.push(b["case_id"].as_str().expect("case id").to_owned());
    }
    cases
}

/// What readers of a store see: each case's audit chain, caseload state and billing state.
async fn views(store: &services::store::Store, cases: &[String]) -> Vec<String> {
    let ids: Vec<schemas::CaseId> = cases
        .iter()
        .map(|c| schemas::CaseId::parse(c).expect("a case id"))
        .collect();
    let mut out = Vec::new();
    for id in &ids {
        let chain: Vec<String> = store
            .audit_entries(*id)
            .await
            .expect("audit entries")
            .into_iter()
            .map(|e| e.hash)
            .collect();
        out.push(format!("{id} audit {chain:?}"));
    }
    for case in store.case_states(None, None, false).await.expect("states") {
        out.push(serde_json::to_string(&case).expect("JSON"));
    }
    let billing = store.billing_states(&ids).await.expect("billing states");
    for id in &ids {
        out.push(serde_json::to_string(&billing.get(id)).expect("JSON"));
    }
    out
}

/// Every answer the posting clients got: the case, the status, the body.
type Answers = Arc<Mutex<Vec<(String, StatusCode, Value)>>>;

/// One client per case, each posting contacts to its case until `stopped` turns true (pausing
/// `pause` between posts); every answer is recorded.
fn posting_clients(
    app: &TestApp,
    cases: &[String],
    pause: Duration,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> (Vec<tokio::task::JoinHandle<()>>, Answers) {
    let answers: Answers = Arc::default();
    let clients = cases
        .iter()
        .map(|case| {
            let (client, base, t, case) = (
                app.client.clone(),
                app.address.clone(),
                app.admin_token.clone(),
                case.clone(),
            );
            let (answers, stopped) = (answers.clone(), stopped.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !*stopped.borrow() {
                    i += 1;
                    let r = client
                        .post(format!("{base}/v1/cases/{case}/contacts"))
                        .bearer_auth(&t)
                        .json(&json!({"component": "monitoring", "contact_type": "phone",
                            "with": ["guardian"], "occurred_at": "2026-10-05T15:00:00Z",
                            "minutes": 10 + i % 50, "note": "monitoring call"}))
                        .send()
                        .await
                        .expect("the server answers");
                    let status = r.status();
                    let body: Value = r.json().await.expect("a JSON answer");
                    answers.lock().unwrap().push((case.clone(), status, body));
                    tokio::time::sleep(pause).await;
                }
            })
        })
        .collect();
    (clients, answers)
}

/// Each contact activity's number of occurrences in the cases' streams.
async fn stored_activities(
    store: &services::store::Store,
    cases: &[String],
) -> std::collections::HashMap<String, usize> {
    let mut stored = std::collections::HashMap::new();
    for case in cases {
        let id = schemas::CaseId::parse(case).unwrap();
        for e in store.events_of(id).await.unwrap() {
            let payload = e.payload_value().unwrap();
            if let Some(a) = payload["ContactLogged"]["activity_id"].as_str() {
                *stored.entry(a.to_owned()).or_default() += 1;
            }
        }
    }
    stored
}

/// The activities answered 201, with their cases.
fn acknowledged(answers: &[(String, StatusCode, Value)]) -> Vec<(String, String)> {
    answers
        .iter()
        .filter(|(_, s, _)| *s == StatusCode::CREATED)
        .map(|(case, _, body)| {
            let activity = body["activity_id"].as_str().expect("an activity id");
            (case.clone(), activity.to_owned())
        })
        .collect()
}

/// A backup taken while eight clients log contacts: every contact acknowledged before it began
/// is in it, it restores into an empty store (and is refused by one that is not, changing
/// nothing), its chains verify, and its projections, caught up, equal a rebuild from zero.
async fn a_backup_under_load_restores(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let target = EmptyStore::new(backend)
        .await
        .expect("as the app's backend");
    let cases = open_cases(&app, 8).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (clients, answers) = posting_clients(&app, &cases, Duration::ZERO, stopped);
    while answers.lock().unwrap().len() < 40 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = acknowledged(&answers.lock().unwrap());
    let file = std::env::temp_dir().join(format!("linkage-backup-{}", uuid::Uuid::new_v4()));
    let bytes = app.store.backup(&file).await.expect("a backup");
    let _ = stop.send(true);
    for client in clients {
        client.await.expect("client");
    }
    for (case, status, body) in answers.lock().unwrap().iter() {
        assert_eq!(*status, StatusCode::CREATED, "{case}: {body}");
    }
    assert!(bytes > 0);
    assert!(
        app.store.backup(&file).await.is_err(),
        "a backup never overwrites a file"
    );
    let restore_target = match &target.database_url {
        Some(url) => RestoreTarget::Postgres { url },
        None => RestoreTarget::Sqlite {
            data_dir: &target.data_dir,
        },
    };
    restore(&file, restore_target).await.expect("a restore");
    let store = services::startup::open_store(&target.config())
        .await
        .expect("the restored store opens");
    let events = store.events_after(LogPosition::START).await.unwrap();
    assert!(
        matches!(
            restore(&file, restore_target).await,
            Err(StoreError::Backup(_))
        ),
        "a store that exists is not restored over"
    );
    assert_eq!(
        store.events_after(LogPosition::START).await.unwrap(),
        events
    );
    let _ = std::fs::remove_file(&file);

    let stored = stored_activities(&store, &cases).await;
    for (case, activity) in &before {
        assert_eq!(
            stored.get(activity),
            Some(&1),
            "contact {activity} of {case}, acknowledged before the backup, is in it once"
        );
    }
    let report = projector::verify(&store, None).await.unwrap();
    assert!(report.broken.is_empty(), "{:?}", report.broken);
    for projection in PROJECTIONS {
        projector::catch_up(&store, *projection, |_| {})
            .await
            .expect("catch up");
    }
    let restored = views(&store, &cases).await;
    for name in projector::names() {
        projector::rebuild(&store, name, true, |_| {})
            .await
            .expect("rebuild");
    }
    assert_eq!(views(&store, &cases).await, restored);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_restores_sqlite() {
    a_backup_under_load_restores(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_restores_postgres() {
    a_backup_under_load_restores(Backend::Postgres).await;
}

/// POSTs to /v1/cases over a plain TCP connection, declaring `length` bytes and sending `sent`;
/// the raw answer.
async fn raw_exchange(address: &str, token: &str, sent: &[u8], length: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(address.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/cases HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let _ = c.write_all(sent).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The contract's error: a 4xx with a machine-readable code and a human message.
fn contract_error(what: &str, status: StatusCode, body: &Value) {
    assert!(status.is_client_error(), "{what}: {status} {body}");
    assert!(
        body["error"]["code"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
            && body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
        "{what}: {status} {body}"
    );
}

/// Hostile input gets the contract's error and stores nothing: deeply nested JSON, a 10 MiB
/// string, invalid UTF-8, NUL characters, SQL and path tricks in ids and query strings, a body
/// sent a byte at a time and headers sent a byte at a time (both let go; other clients are
/// served meanwhile), a header of 1 MiB.
async fn hostile_input_is_refused(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.request_timeout_secs = 2;
        c.header_read_timeout_secs = 2;
    })
    .await
    else {
        return;
    };
    let t = app.admin_token.clone();
    let case = open_cases(&app, 1).await.remove(0);
    let stored = app.store.events_after(LogPosition::START).await.unwrap();
    let intake = |given: &str| {
        json!({"program": "tcm", "assigned_to": "cm-ada", "intake_date": "2026-09-01",
            "child": {"given_name": given, "family_name": "Sample", "birth_date": "2016-05-04"}})
        .to_string()
        .into_bytes()
    };
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let huge = intake(&"x".repeat(10 * 1024 * 1024));
    let mut invalid_utf8 = intake("Robin");
    let at = invalid_utf8.iter().position(|b| *b == b'R').unwrap();
    invalid_utf8[at] = 0xff;
    let nul = intake("Ro\u{0}bin");
    let contact_nul = json!({"component": "monitoring", "contact_type": "phone",
        "with": ["guardian"], "occurred_at": "2026-10-05T15:00:00Z", "minutes": 10,
        "note": "called\u{0}back"})
    .to_string()
    .into_bytes();
    for (what, path, body) in [
        ("deeply nested JSON", "/v1/cases".to_owned(), nested),
        ("invalid UTF-8", "/v1/cases".to_owned(), invalid_utf8),
        ("a NUL in a name", "/v1/cases".to_owned(), nul),
        (
            "a NUL in a note",
            format!("/v1/cases/{case}/contacts"),
            contact_nul,
        ),
    ] {
        let (s, b) = app.post_raw(&path, &t, body, None).await;
        contract_error(what, s, &b);
    }
    // A 10 MiB body is refused by its declared length, before the server reads it (a client
    // still writing then sees the connection close: the answer is read without the rest).
    let answer = raw_exchange(&app.address, &t, &huge[..64 * 1024], huge.len()).await;
    assert!(
        answer.starts_with("HTTP/1.1 413")
            && answer.contains("\"body_too_large\"")
            && answer.to_ascii_lowercase().contains("connection: close"),
        "refused unread, and the client told not to reuse the connection: {answer}"
    );
    for path in [
        "/v1/cases/'%20OR%201=1--/events".to_owned(),
        "/v1/cases/..%2F..%2Fetc%2Fpasswd".to_owned(),
        "/v1/cases/%00".to_owned(),
        format!("/v1/cases/{case}/events?limit=1;DROP%20TABLE%20events"),
        format!("/v1/cases/{case}/events?cursor=%27%20OR%201=1--"),
        "/v1/caseloads/cm-ada'--".to_owned(),
        "/v1/cases?name=%27%3B%20DELETE%20FROM%20events%3B--".to_owned(),
    ] {
        let (s, b) = app.get(&path, &t).await;
        if s == StatusCode::OK {
            // A search for a strange name is a search: it finds nothing.
            assert_eq!(b["cases"], json!([]), "{path}: {b}");
        } else {
            contract_error(&path, s, &b);
        }
    }
    let r = app
        .client
        .get(format!("{}/v1/cases/{case}", app.address))
        .bearer_auth(&t)
        .header("x-padding", "y".repeat(1024 * 1024))
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(
        r.headers().get("connection").and_then(|v| v.to_str().ok()),
        Some("close")
    );
    let b: serde_json::Value = r.json().await.expect("the contract's error shape");
    assert_eq!(b["error"]["code"], "headers_too_large", "{b}");

    // Headers a byte at a time: the connection is closed when the header time is up (2 s here),
    // and other clients are served meanwhile.
    let started = std::time::Instant::now();
    let dribble = tokio::spawn({
        let address = app.address.trim_start_matches("http://").to_owned();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut c = tokio::net::TcpStream::connect(address).await.unwrap();
            let head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ".repeat(4);
            let mut sent = 0;
            for byte in head {
                if c.write_all(&[byte]).await.is_err() {
                    break;
                }
                sent += 1;
                // Stop once the server has closed the connection.
                let mut probe = [0u8; 1];
                if let Ok(Ok(0)) =
                    tokio::time::timeout(Duration::from_millis(250), c.read(&mut probe)).await
                {
                    break;
                }
            }
            sent
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, _) = app.get(&format!("/v1/cases/{case}"), &t).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "served while a client dribbles its headers"
    );
    let sent = dribble.await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(6) && sent < 24,
        "the dribbling client was let go at the header time limit ({sent} bytes in {took:?})"
    );

    // A body a byte at a time: answered 408 when the request time is up; others are served.
    let slow = tokio::spawn({
        let (address, t) = (
            app.address.trim_start_matches("http://").to_owned(),
            t.clone(),
        );
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut c = tokio::net::TcpStream::connect(address).await.unwrap();
            let head = format!(
                "POST /v1/cases HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {t}\r\n\
                 content-type: application/json\r\ncontent-length: 400\r\n\r\n"
            );
            c.write_all(head.as_bytes()).await.unwrap();
            for _ in 0..40 {
                if c.write_all(b" ").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut answer)).await;
            String::from_utf8_lossy(&answer).into_owned()
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, _) = app.get(&format!("/v1/cases/{case}"), &t).await;
    assert_eq!(s, StatusCode::OK, "served while a slow client sends");
    let answer = slow.await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("\"request_timeout\""),
        "{answer}"
    );
    assert_eq!(
        app.store.events_after(LogPosition::START).await.unwrap(),
        stored,
        "nothing was stored"
    );
    // And the server still serves.
    let (s, _) = app.get(&format!("/v1/cases/{case}"), &t).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_input_is_refused_sqlite() {
    hostile_input_is_refused(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_input_is_refused_postgres() {
    hostile_input_is_refused(Backend::Postgres).await;
}

/// A PostgreSQL cluster of the test's own (`ops/pg-start.sh`), which the test may stop and
/// start again (`ops/pg-ctl.sh`); removed when dropped.
struct OwnCluster {
    dir: std::path::PathBuf,
    url: String,
}

fn ops(script: &str) -> std::process::Command {
    std::process::Command::new(format!("{}/../ops/{script}", env!("CARGO_MANIFEST_DIR")))
}

impl OwnCluster {
    /// None when the run has no PostgreSQL (the shared test server is not configured).
    fn start() -> Option<Self> {
        linkage_tests::postgres_admin_url()?;
        let dir = std::env::temp_dir().join(format!("linkage-own-pg-{}", uuid::Uuid::new_v4()));
        let out = ops("pg-start.sh")
            .env("LINKAGE_PG_DIR", &dir)
            .output()
            .expect("ops/pg-start.sh runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        Some(Self { dir, url })
    }

    fn ctl(&self, action: &str) {
        let out = ops("pg-ctl.sh")
            .arg(&self.dir)
            .arg(action)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = ops("pg-stop.sh").arg(&self.dir).output();
    }
}

/// A client opening cases (each intake a public event for the relay) until stopped: its answers.
fn intake_client(
    app: &TestApp,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> (tokio::task::JoinHandle<()>, Answers) {
    let answers: Answers = Arc::default();
    let (client, base, t) = (
        app.client.clone(),
        app.address.clone(),
        app.admin_token.clone(),
    );
    let task = tokio::spawn({
        let answers = answers.clone();
        async move {
            while !*stopped.borrow() {
                let r = client
                    .post(format!("{base}/v1/cases"))
                    .bearer_auth(&t)
                    .json(&json!({"program": "tcm", "assigned_to": "cm-0",
                        "intake_date": "2026-09-01",
                        "child": {"given_name": "Robin", "family_name": "Sample",
                                  "birth_date": linkage_tests::unique_birth_date()}}))
                    .send()
                    .await
                    .expect("the server answers");
                let status = r.status();
                let body: Value = r.json().await.expect("a JSON answer");
                answers
                    .lock()
                    .unwrap()
                    .push(("intake".into(), status, body));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    (task, answers)
}

/// PostgreSQL stops while clients post commands, stays down for seconds, and starts again: while
/// it is down the API answers 503 with the contract's error and `/readyz` says why; afterwards it
/// accepts again without a restart; no answer is ever a 500; every command answered 201 is
/// stored exactly once; the projections catch up, and so does the relay: every public event of
/// the log, those of intakes acknowledged before, during and after the outage included, is in
/// the bus's stream once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_rides_out_a_postgres_outage() {
    let Some(cluster) = OwnCluster::start() else {
        return;
    };
    let bus = linkage_tests::nats::Bus::shared().expect("a nats-server beside PostgreSQL");
    let (url, nats, bus_config) = (cluster.url.clone(), bus.url.clone(), bus.config.clone());
    let app = TestApp::spawn_with(Backend::Postgres, |c| {
        c.database_url = Some(url);
        c.nats_url = Some(nats);
        c.bus = bus_config;
        c.bus.retry_ms = 200;
        c.bus.ack_timeout_ms = 2000;
    })
    .await
    .expect("PostgreSQL");
    let cases = open_cases(&app, 4).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (clients, answers) =
        posting_clients(&app, &cases, Duration::from_millis(20), stopped.clone());
    let (intakes, intake_answers) = intake_client(&app, stopped);
    tokio::time::sleep(Duration::from_millis(500)).await;

    cluster.ctl("stop");
    let down = std::time::Instant::now();
    // /readyz says why, and commands get the contract's 503.
    let mut said_why = false;
    while down.elapsed() < Duration::from_secs(15) && !said_why {
        let (s, b) = app.get("/readyz", &app.admin_token).await;
        said_why = s == StatusCode::SERVICE_UNAVAILABLE && b["status"] == "unavailable";
    }
    assert!(said_why, "/readyz reports the store unavailable");
    let unavailable = || {
        answers
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
            .count()
    };
    while unavailable() == 0 {
        assert!(
            down.elapsed() < Duration::from_secs(20),
            "no 503 while down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down.elapsed())).await;
    cluster.ctl("start");

    // Accepting again, without a restart.
    let back = std::time::Instant::now();
    let created_after = || {
        answers
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s, _)| *s == StatusCode::CREATED)
            .count()
    };
    let before = created_after();
    while created_after() < before + 8 {
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "commands accepted again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    for c in clients {
        c.await.expect("client");
    }
    intakes.await.expect("intake client");
    let answers = answers.lock().unwrap().clone();
    let intake_answers = intake_answers.lock().unwrap().clone();
    for (_, status, body) in answers.iter().chain(&intake_answers) {
        match *status {
            StatusCode::CREATED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
            }
            other => panic!("{other}: {body}"),
        }
    }
    let acknowledged = acknowledged(&answers);
    let stored = stored_activities(&app.store, &cases).await;
    for (case, activity) in &acknowledged {
        assert_eq!(stored.get(activity), Some(&1), "{activity} of {case}");
    }
    assert!(stored.values().all(|n| *n == 1), "nothing stored twice");
    app.wait_projected().await;

    // The relay catches up: every public event of every case is in the stream, once.
    let opened: Vec<String> = cases
        .iter()
        .cloned()
        .chain(
            intake_answers
                .iter()
                .filter(|(_, s, _)| *s == StatusCode::CREATED)
                .map(|(_, _, b)| b["case_id"].as_str().expect("case id").to_owned()),
        )
        .collect();
    let mut public = Vec::new();
    for case in &opened {
        public.extend(
            crate::bus::public_events_of(&app, case)
                .await
                .into_iter()
                .map(|(id, _)| id),
        );
    }
    crate::bus::wait_relayed(&app).await;
    let mut in_stream = std::collections::HashMap::<String, usize>::new();
    for (_, id, _) in crate::bus::stream_messages(&bus).await {
        *in_stream.entry(id).or_default() += 1;
    }
    for id in &public {
        assert_eq!(
            in_stream.get(id),
            Some(&1),
            "public event {id} relayed once"
        );
    }
    assert_eq!(in_stream.len(), public.len(), "nothing else relayed");
    let intakes_acknowledged = opened.len() - cases.len();
    eprintln!(
        "outage: {} answers, {} acknowledged, {} answered 503; {} intakes acknowledged of {}, \
         {} public events relayed once each",
        answers.len(),
        acknowledged.len(),
        answers.len() - acknowledged.len(),
        intakes_acknowledged,
        intake_answers.len(),
        public.len()
    );
    assert!(
        intake_answers
            .iter()
            .any(|(_, s, _)| *s == StatusCode::SERVICE_UNAVAILABLE),
        "an intake met the outage"
    );
}

/// A small filesystem of the test's own (tmpfs), unmounted when dropped. None where mounting is
/// not allowed (not root): the test then says so and skips.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(mib: u32) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("linkage-small-disk-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipping a full-disk test: cannot mount a tmpfs here (it needs root)");
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(Self(dir))
    }

    /// Fills the disk with a file but for about `room` bytes, and gives the file's path: removing
    /// it frees the space again.
    fn fill_leaving(&self, room: u64) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).and_then(|()| f.sync_all()).is_ok() {}
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(room)).unwrap();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The embedded store's disk fills up under commands: they get `507 storage_full` with the
/// contract's error and nothing half-written remains (every 201 stored, every chain intact);
/// once space is freed the same server carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_is_a_clear_error_and_the_server_carries_on() {
    let Some(disk) = SmallDisk::mount(24) else {
        return;
    };
    let data_dir = disk.0.join("data");
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.data_dir = data_dir.clone())
        .await
        .expect("SQLite");
    let cases = open_cases(&app, 2).await;
    app.wait_projected().await;
    let filler = disk.fill_leaving(512 * 1024);
    let note = "n".repeat(2000);
    let contact = |case: &str, minutes: u64, note: &str| {
        let app = &app;
        let path = format!("/v1/cases/{case}/contacts");
        let body = json!({"component": "monitoring", "contact_type": "phone",
            "with": ["guardian"], "occurred_at": "2026-10-05T15:00:00Z",
            "minutes": minutes, "note": note});
        async move { app.post(&path, &app.admin_token, &body).await }
    };
    let mut created = Vec::new();
    let mut full = None;
    for i in 0..2_000u64 {
        let case = &cases[i as usize % 2];
        let (s, b) = contact(case, 10 + i % 50, &note).await;
        match s {
            StatusCode::CREATED => {
                created.push((case.clone(), b["activity_id"].as_str().unwrap().to_owned()))
            }
            _ => {
                full = Some((s, b));
                break;
            }
        }
    }
    let (status, body) = full.expect("the disk filled up");
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body["error"]["code"], "storage_full", "{body}");
    let stored = app.store.events_after(LogPosition::START).await.unwrap();

    // Nothing half-written: every 201 is stored once, and nothing else was.
    let activities = stored_activities(&app.store, &cases).await;
    assert_eq!(
        activities.len(),
        created.len(),
        "only the acknowledged contacts"
    );
    for (case, activity) in &created {
        assert_eq!(activities.get(activity), Some(&1), "{activity} of {case}");
    }

    // Space freed: the same server carries on, and its projections catch up intact. More writes
    // than the pool has connections, with reads between them, so that every connection that met
    // the full disk is used again; each acknowledged write is seen through a connection of
    // another pool (a connection left inside a failed transaction once swallowed them).
    std::fs::remove_file(&filler).unwrap();
    let outside = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        data_dir.join("linkage.db").display()
    ))
    .await
    .unwrap();
    for i in 1..=12i64 {
        let case = &cases[i as usize % 2];
        let (s, b) = contact(case, 12, "after").await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (s, b) = app
            .get(&format!("/v1/cases/{case}/events"), &app.admin_token)
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let durable: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE aggregate_type = 'Case'")
                .fetch_one(&outside)
                .await
                .unwrap();
        assert_eq!(durable, stored + i, "write {i} after the disk was freed");
    }
    outside.close().await;
    app.wait_projected().await;
    let report = projector::verify(&app.store, None).await.unwrap();
    assert!(report.broken.is_empty(), "{:?}", report.broken);
    eprintln!(
        "full disk: {} contacts stored before the disk filled; then 507, then stored again",
        created.len()
    );
}

async fn count_rows(pool: &sqlx::SqlitePool) -> i64 {
    use sqlx::Row;
    sqlx::query("SELECT count(*) FROM t")
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0)
}

/// A commit that fails on a full disk leaves no connection that swallows later commits: a
/// write acknowledged after space is freed is seen by another connection. Without the guard in
/// `services::store::sqlite_pool` it is not: sqlx still counted the failed transaction as open,
/// so the dropped read transaction below left a real one open, and the "commit" after it was a
/// savepoint's release inside it.
#[tokio::test]
async fn a_failed_commit_leaves_no_connection_inside_a_transaction() {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    use sqlx::Connection;
    let Some(disk) = SmallDisk::mount(4) else {
        return;
    };
    let file = disk.0.join("pool.db");
    let options = SqliteConnectOptions::new()
        .filename(&file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    // One connection, so the one that failed is the one handed out next.
    let pool = services::store::sqlite_pool::sqlite_pool_options()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, x BLOB)")
        .execute(&pool)
        .await
        .unwrap();
    let filler = disk.fill_leaving(256 * 1024);
    let blob = vec![7u8; 3000];
    let mut failed = None;
    for _ in 0..10_000 {
        let mut tx = pool.begin().await.unwrap();
        let inserted = async {
            for _ in 0..2 {
                sqlx::query("INSERT INTO t (x) VALUES (?)")
                    .bind(&blob)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok::<_, sqlx::Error>(())
        }
        .await;
        let result = match inserted {
            Ok(()) => tx.commit().await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            failed = Some(e);
            break;
        }
    }
    let failed = failed.expect("the disk filled up");
    let failed = StoreError::from(failed);
    assert!(matches!(failed, StoreError::Full(_)), "{failed}");

    std::fs::remove_file(&filler).unwrap();
    let before = count_rows(&pool).await;
    {
        // A read transaction, dropped without a commit.
        let mut read = pool.begin().await.unwrap();
        sqlx::query("SELECT count(*) FROM t")
            .fetch_one(&mut *read)
            .await
            .unwrap();
    }
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO t (x) VALUES (?)")
        .bind(&blob)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let other = sqlx::SqlitePool::connect_with(SqliteConnectOptions::new().filename(&file))
        .await
        .unwrap();
    assert_eq!(
        count_rows(&other).await,
        before + 1,
        "the acknowledged write is durable"
    );
    other.close().await;
    assert!(!pool.acquire().await.unwrap().is_in_transaction());
    pool.close().await;
}
