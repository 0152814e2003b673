//! Proof under faults and load (issue 13): the embedded store under concurrency.

use linkage_tests::{Backend, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

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
    let mut cases = Vec::new();
    for n in 0..16 {
        let (s, b) = app
            .post(
                "/v1/cases",
                &t,
                &json!({"program": "tcm", "assigned_to": format!("cm-{}", n % 4), "intake_date": "2026-09-01",
                    "child": {"given_name": "Robin", "family_name": "Sample",
                              "birth_date": linkage_tests::unique_birth_date()}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        cases.push(b["case_id"].as_str().expect("case id").to_owned());
    }
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
