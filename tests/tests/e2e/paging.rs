//! Every list pages the same way: `limit` (default 100, 1 to 1,000) and an opaque `cursor`, the
//! answer's `next_cursor` null at the end; pages neither skip nor repeat items while new ones
//! arrive; bad paging and bad query strings are the contract's JSON errors.

use std::collections::HashSet;

use linkage_tests::{both_stores, TestApp};
use reqwest::StatusCode;
use schemas::Role;
use serde_json::{json, Value};

const MONTH: &str = "2026-09";

async fn open_case(app: &TestApp, token: &str, worker: &str) -> String {
    let (s, b) = app
        .post(
            "/v1/cases",
            token,
            &json!({"program": "tcm", "assigned_to": worker, "intake_date": "2026-08-01",
                "child": {"given_name": "Robin", "family_name": "Sample", "birth_date": linkage_tests::unique_birth_date(),
                          "medicaid_id": format!("ZZ{:08}", worker.len() * 7 + worker.as_bytes()[3] as usize)}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["case_id"].as_str().expect("case id").to_owned()
}

async fn call(app: &TestApp, token: &str, case: &str, day: u32, minutes: u32) {
    let (s, b) = app
        .post(
            &format!("/v1/cases/{case}/contacts"),
            token,
            &json!({"component": "monitoring", "contact_type": "phone", "with": ["guardian"],
                "occurred_at": format!("{MONTH}-{day:02}T15:00:00Z"), "minutes": minutes,
                "note": "monitoring call"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

/// Follows `next_cursor` from `path` (which has a query string) to the end; `between` runs after
/// each page. Returns every item of `field`, in order, and the number of pages.
async fn follow(
    app: &TestApp,
    token: &str,
    path: &str,
    field: &str,
    mut between: impl FnMut(usize) -> Option<(String, Value)>,
) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let (s, b) = app.get(&url, token).await;
        assert_eq!(s, StatusCode::OK, "{url}: {b}");
        items.extend(b[field].as_array().expect("a list").iter().cloned());
        pages += 1;
        if let Some((post, body)) = between(pages) {
            let (s, r) = app.post(&post, token, &body).await;
            assert!(s.is_success(), "{r}");
        }
        match b["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => {
                assert!(b["next_cursor"].is_null(), "{b}");
                return (items, pages);
            }
        }
        assert!(pages < 100, "paging does not end");
    }
}

both_stores!(every_list_pages, |app: TestApp| async move {
    let sup = app.token(Role::Supervisor, "sup-1", "default").await;
    let case = open_case(&app, &sup, "cm-ada").await;
    for i in 0..25 {
        call(&app, &sup, &case, 1 + i % 28, 20).await;
    }
    app.wait_projected().await;

    // Events: 27, ten at a time, while a contact arrives after the first page: it is seen once,
    // at the end, and nothing is skipped or repeated.
    let contact = json!({"component": "monitoring", "contact_type": "phone", "with": ["guardian"],
        "occurred_at": format!("{MONTH}-29T15:00:00Z"), "minutes": 20, "note": "late call"});
    let (events, pages) = follow(
        &app,
        &sup,
        &format!("/v1/cases/{case}/events?limit=10"),
        "events",
        |page| (page == 1).then(|| (format!("/v1/cases/{case}/contacts"), contact.clone())),
    )
    .await;
    let sequences: Vec<u64> = events
        .iter()
        .map(|e| e["sequence"].as_u64().expect("sequence"))
        .collect();
    assert_eq!(
        sequences,
        (1..=28).collect::<Vec<u64>>(),
        "each event once, in order"
    );
    assert_eq!(pages, 3);
    let (s, all) = app.get(&format!("/v1/cases/{case}/events"), &sup).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        all["events"].as_array().expect("events").len(),
        28,
        "default limit 100"
    );
    assert!(all["next_cursor"].is_null());

    // The audit trail and the read log page the same way; the reads grow as they are paged
    // (every page is itself a read), and still come out once each.
    app.wait_projected().await;
    let auditor = app.token(Role::Auditor, "aud-1", "default").await;
    let (entries, _) = follow(
        &app,
        &auditor,
        &format!("/v1/cases/{case}/audit?limit=7"),
        "entries",
        |_| None,
    )
    .await;
    assert_eq!(entries.len(), 28);
    let (reads, pages) = follow(
        &app,
        &auditor,
        &format!("/v1/cases/{case}/reads?limit=3"),
        "reads",
        |_| None,
    )
    .await;
    assert!(pages >= 3, "{pages}");
    let reads_now = {
        let (_, b) = app
            .get(&format!("/v1/cases/{case}/reads?limit=1000"), &auditor)
            .await;
        b["reads"].as_array().expect("reads").len()
    };
    assert!(
        reads.len() < reads_now && reads.len() >= 4,
        "paged {} of {reads_now}",
        reads.len()
    );

    // The team view: workers in id order, two at a time.
    for worker in ["cm-bo", "cm-cy", "cm-di", "cm-ed"] {
        open_case(&app, &sup, worker).await;
    }
    app.wait_projected().await;
    let (workers, pages) = follow(&app, &sup, "/v1/caseloads?limit=2", "workers", |_| None).await;
    let ids: Vec<&str> = workers
        .iter()
        .map(|w| w["worker_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["cm-ada", "cm-bo", "cm-cy", "cm-di", "cm-ed"]);
    assert_eq!(pages, 3);

    // The month's billing lines as JSON: each once across pages; the CSV streams whole.
    let billing = app.token(Role::Billing, "bill-1", "default").await;
    let (lines, pages) = follow(
        &app,
        &billing,
        &format!("/v1/billing/tcm?month={MONTH}&limit=4"),
        "lines",
        |_| None,
    )
    .await;
    let activities: HashSet<&str> = lines
        .iter()
        .map(|l| l["activity_id"].as_str().expect("activity"))
        .collect();
    assert_eq!((lines.len(), activities.len()), (26, 26));
    assert_eq!(pages, 7);
    let (s, b) = app
        .get(
            &format!("/v1/billing/tcm?month={MONTH}&format=csv&limit=4"),
            &billing,
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("not_paged"))
    );

    // Batches of a month.
    for _ in 0..3 {
        let (s, b) = app
            .post(
                "/v1/billing/tcm/batches",
                &billing,
                &json!({"month": MONTH}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let (batches, pages) = follow(
        &app,
        &billing,
        &format!("/v1/billing/tcm/batches?month={MONTH}&limit=2"),
        "batches",
        |_| None,
    )
    .await;
    let numbers: Vec<u64> = batches
        .iter()
        .map(|b| b["batch_no"].as_u64().expect("no"))
        .collect();
    assert_eq!((numbers, pages), (vec![1, 2, 3], 2));
});

both_stores!(bad_paging_is_a_json_error, |app: TestApp| async move {
    let sup = app.token(Role::Supervisor, "sup-1", "default").await;
    let case = open_case(&app, &sup, "cm-ada").await;
    let events = format!("/v1/cases/{case}/events");
    let audit_cursor = {
        let auditor = app.token(Role::Auditor, "aud-1", "default").await;
        call(&app, &sup, &case, 3, 20).await;
        app.wait_projected().await;
        let (_, b) = app
            .get(&format!("/v1/cases/{case}/audit?limit=1"), &auditor)
            .await;
        b["next_cursor"].as_str().expect("a next page").to_owned()
    };
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=1001", "invalid_limit"),
        ("limit=ten", "invalid_limit"),
        ("limit=", "invalid_limit"),
        ("cursor=not-a-cursor", "invalid_cursor"),
        (&format!("cursor={audit_cursor}") as &str, "invalid_cursor"),
        ("colour=red", "unknown_parameter"),
        ("limit=5&limit=6", "repeated_parameter"),
    ] {
        let resp = app
            .client
            .get(format!("{}{events}?{query}", app.address))
            .bearer_auth(&sup)
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{query}"
        );
        let b: Value = resp.json().await.expect("json");
        assert_eq!(b["error"]["code"], code, "{query}: {b}");
    }
    // The billing routes' query errors are JSON too (they were plain text).
    let billing = app.token(Role::Billing, "bill-1", "default").await;
    for (path, code) in [
        ("/v1/billing/tcm/batches", "missing_parameter"),
        (
            "/v1/billing/tcm?month=2026-09&colour=red",
            "unknown_parameter",
        ),
    ] {
        let (s, b) = app.get(path, &billing).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(b["error"]["code"], code, "{path}: {b}");
    }
});
