//! SIGKILL of the real `linkage serve` process at several moments while eight clients post
//! contacts, then a last start: every command that was answered 201 is stored exactly once,
//! nothing is stored twice, every chain verifies and each projection equals a rebuild from zero.
//! On the embedded store, and on PostgreSQL when the test server is configured.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use services::projector::{self, PROJECTIONS};
use sqlx::Connection;

mod common;
use common::{free_port, open_case, serve, temp_dir, wait_projected};

/// A database made for the test on the test PostgreSQL server, dropped at the end.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    /// None when no test server is configured (and the run allows skipping).
    async fn create() -> Option<Self> {
        let admin = match std::env::var("LINKAGE_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ if std::env::var_os("LINKAGE_REQUIRE_PG").is_some() => {
                panic!("LINKAGE_REQUIRE_PG is set but LINKAGE_TEST_DATABASE_URL is not")
            }
            _ => return None,
        };
        let name = format!("linkage_crash_{}", uuid::Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
        let (base, query) = admin
            .split_once('?')
            .map_or((admin.as_str(), None), |(b, q)| (b, Some(q)));
        let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
        let url = match query {
            Some(q) => format!("{base}/{name}?{q}"),
            None => format!("{base}/{name}"),
        };
        Some(Self { admin, name, url })
    }

    async fn drop_it(self) {
        let mut c = sqlx::PgConnection::connect(&self.admin).await.unwrap();
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut c)
        .await;
    }
}

/// How long each server lives under load before SIGKILL: varied, so that the kills land at
/// different points of a command's or a batch's way.
const LIVES_MS: [u64; 3] = [350, 900, 600];

async fn killed_under_load(database_url: Option<&str>) {
    let dir = temp_dir();
    let port = free_port();
    let serve = || {
        serve(port, &dir.0, database_url)
            .spawn()
            .expect("linkage serve starts")
    };
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let mut server = serve();
    wait_projected(&client, &base).await;
    let token = std::fs::read_to_string(dir.0.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let mut cases = Vec::new();
    for n in 0..8 {
        cases.push(
            open_case(
                &client,
                &base,
                &token,
                "Ivy",
                &format!("2020-02-{:02}", n + 1),
            )
            .await,
        );
    }
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    for (round, life) in LIVES_MS.iter().enumerate() {
        if round > 0 {
            server = serve();
            wait_projected(&client, &base).await;
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let clients: Vec<_> = cases
            .iter()
            .map(|case| {
                let (client, base, token, case) =
                    (client.clone(), base.clone(), token.clone(), case.clone());
                let (acked, stopped) = (acked.clone(), stopped.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !*stopped.borrow() {
                        i += 1;
                        let sent = client
                            .post(format!("{base}/v1/cases/{case}/contacts"))
                            .bearer_auth(&token)
                            .json(&serde_json::json!({"component": "monitoring",
                                "contact_type": "phone", "with": ["guardian"],
                                "occurred_at": "2026-11-16T15:00:00Z", "minutes": 5 + i % 50}))
                            .send()
                            .await;
                        // A request the kill cut off has no answer: it may or may not be stored.
                        let Ok(r) = sent else { continue };
                        if r.status() != reqwest::StatusCode::CREATED {
                            continue;
                        }
                        let Ok(body) = r.json::<serde_json::Value>().await else {
                            continue;
                        };
                        let activity = body["activity_id"]
                            .as_str()
                            .expect("an activity")
                            .to_owned();
                        acked.lock().unwrap().push((case.clone(), activity));
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(*life)).await;
        server.kill().expect("SIGKILL");
        let _ = server.wait();
        let _ = stop.send(true);
        for c in clients {
            c.await.expect("client");
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "the clients got answers: {}", acked.len());
    eprintln!(
        "{}: {} contacts acknowledged across {} kills",
        if database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        acked.len(),
        LIVES_MS.len()
    );

    // A last start catches the projections up from wherever the kills left them.
    let mut last = serve();
    wait_projected(&client, &base).await;
    last.kill().expect("stopped");
    let _ = last.wait();

    let config = services::Config {
        data_dir: dir.0.clone(),
        database_url: database_url.map(str::to_owned),
        ..services::Config::default()
    };
    let store = services::startup::open_store(&config).await.unwrap();
    let mut stored_activities = std::collections::HashMap::<String, usize>::new();
    for case in &cases {
        let id = schemas::CaseId::parse(case).unwrap();
        for e in store.events_of(id).await.unwrap() {
            let payload = e.payload_value().unwrap();
            if let Some(a) = payload["ContactLogged"]["activity_id"].as_str() {
                *stored_activities.entry(a.to_owned()).or_default() += 1;
            }
        }
    }
    assert!(
        stored_activities.values().all(|n| *n == 1),
        "nothing is stored twice"
    );
    for (case, activity) in &acked {
        assert_eq!(
            stored_activities.get(activity),
            Some(&1),
            "contact {activity} of {case} was answered 201 and is stored once"
        );
    }
    let report = projector::verify(&store, None).await.unwrap();
    assert!(report.broken.is_empty(), "{:?}", report.broken);
    assert_eq!(report.pending, 0);
    let ids: Vec<schemas::CaseId> = cases
        .iter()
        .map(|c| schemas::CaseId::parse(c).unwrap())
        .collect();
    let projected = views(&store, &ids).await;
    for projection in PROJECTIONS {
        projector::rebuild(&store, projection.name(), true, |_| {})
            .await
            .unwrap();
    }
    assert_eq!(
        views(&store, &ids).await,
        projected,
        "each projection equals a rebuild"
    );
    store.close().await;
}

/// What readers see of the cases: audit chains, caseload states, billing states.
async fn views(store: &services::store::Store, ids: &[schemas::CaseId]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        let entries = store.audit_entries(*id).await.unwrap();
        let chain: Vec<String> = entries.into_iter().map(|e| e.hash).collect();
        out.push(format!("{id} {chain:?}"));
    }
    for case in store.case_states(None, None, false).await.unwrap() {
        out.push(serde_json::to_string(&case).unwrap());
    }
    let billing = store.billing_states(ids).await.unwrap();
    for id in ids {
        out.push(serde_json::to_string(&billing.get(id)).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_under_load_loses_nothing_acknowledged_sqlite() {
    killed_under_load(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_under_load_loses_nothing_acknowledged_postgres() {
    let Some(db) = Database::create().await else {
        return;
    };
    killed_under_load(Some(&db.url)).await;
    db.drop_it().await;
}
