//! The global log under concurrent writers: a reader that tails it while many clients append
//! ends with exactly the events in the table, none skipped, none twice, and each case's events
//! in sequence order.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Duration as Days;
use linkage_tests::{both_stores, TestApp};
use reqwest::StatusCode;
use serde_json::json;
use services::store::LogPosition;

both_stores!(
    a_tailing_reader_misses_nothing_and_sees_nothing_twice,
    |app: TestApp| async move {
        let app = Arc::new(app);
        // Set once the writers are done: how many events the table holds. An empty read alone does
        // not mean "everything": on PostgreSQL it means "everything final", and any other writing
        // transaction in the cluster briefly holds the horizon back.
        let total = Arc::new(AtomicUsize::new(0));

        let reader = {
            let (app, total) = (app.clone(), total.clone());
            tokio::spawn(async move {
                let mut at = LogPosition::START;
                let mut seen = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let batch = app
                        .store
                        .read_log(services::store::Work::Projections, at, 7)
                        .await
                        .expect("read the log");
                    if let Some(last) = batch.last() {
                        assert!(last.at > at, "the log moves forward");
                        at = last.at;
                    }
                    let empty = batch.is_empty();
                    seen.extend(batch);
                    let expected = total.load(Ordering::SeqCst);
                    if expected > 0 && seen.len() >= expected {
                        return seen;
                    }
                    assert!(Instant::now() < deadline, "the reader did not catch up");
                    if empty {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            })
        };

        let t = app.admin_token.clone();
        let writers: Vec<_> = (0..8)
        .map(|w| {
            let (app, t) = (app.clone(), t.clone());
            tokio::spawn(async move {
                let (s, b) = app
                    .post("/v1/cases", &t, &json!({"program": "tcm", "assigned_to": "cm-ada",
                        "intake_date": (linkage_tests::now().date_naive() - Days::days(10)).to_string(),
                        "child": {"given_name": "Lane", "family_name": "Sample", "birth_date": linkage_tests::unique_birth_date()}}))
                    .await;
                assert_eq!(s, StatusCode::CREATED, "{b}");
                let case = b["case_id"].as_str().unwrap().to_owned();
                for i in 0..12 {
                    let (s, b) = app
                        .post(&format!("/v1/cases/{case}/contacts"), &t, &json!({
                            "component": "monitoring", "contact_type": "phone", "with": ["guardian"],
                            "occurred_at": (linkage_tests::now() - Days::hours(1)).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                            "minutes": 10 + w + i}))
                        .await;
                    assert_eq!(s, StatusCode::CREATED, "{b}");
                }
            })
        })
        .collect();
        for w in writers {
            w.await.expect("writer");
        }
        let in_table = app.store.events_after(LogPosition::START).await.unwrap();
        assert_eq!(in_table, 8 * 14, "8 cases of 2 + 12 events");
        total.store(in_table as usize, Ordering::SeqCst);
        let seen = reader.await.expect("reader");

        // Everything in the table, read back in one go once it is all final.
        let deadline = Instant::now() + Duration::from_secs(30);
        let everything = loop {
            let all = app
                .store
                .read_log(
                    services::store::Work::Projections,
                    LogPosition::START,
                    100_000,
                )
                .await
                .unwrap();
            if all.len() as i64 == in_table {
                break all;
            }
            assert!(
                Instant::now() < deadline,
                "the log never showed the whole table"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let ids: Vec<_> = seen.iter().map(|e| e.event.event_id).collect();
        let unique: HashSet<_> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "no event seen twice");
        let all: HashSet<_> = everything.iter().map(|e| e.event.event_id).collect();
        assert_eq!(unique, all, "the tailing reader saw exactly the table");

        // Within a case, the log delivers events in sequence order.
        let mut last: BTreeMap<_, u64> = BTreeMap::new();
        for e in &seen {
            let prev = last.insert(e.case_id, e.event.sequence).unwrap_or(0);
            assert_eq!(
                e.event.sequence,
                prev + 1,
                "case {} jumped from {prev} to {}",
                e.case_id,
                e.event.sequence
            );
        }
    }
);

/// The case that defeats a reader tailing by position: a transaction takes position p, another
/// takes p+1 and commits first. Forced here step by step on PostgreSQL (SQLite has one writer,
/// so it cannot happen there).
#[tokio::test]
async fn a_position_committed_late_is_not_skipped() {
    let Some(app) = TestApp::spawn(linkage_tests::Backend::Postgres).await else {
        return;
    };
    let url = app.config.database_url.clone().expect("postgres");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let insert = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                  event_version, payload, metadata) VALUES ('Case', $1, 1, 'CaseOpened', '1', '{}', '{}')";
    let (slow, fast) = (
        uuid::Uuid::now_v7().to_string(),
        uuid::Uuid::now_v7().to_string(),
    );

    let mut a = pool.begin().await.unwrap();
    sqlx::query(insert)
        .bind(&slow)
        .execute(&mut *a)
        .await
        .unwrap(); // takes position p
    sqlx::query(insert)
        .bind(&fast)
        .execute(&pool)
        .await
        .unwrap(); // takes p+1, commits first

    let early = app
        .store
        .read_log(services::store::Work::Projections, LogPosition::START, 100)
        .await
        .unwrap();
    assert!(
        early.is_empty(),
        "nothing past a still-open transaction is final yet: {early:?}"
    );

    a.commit().await.unwrap();
    let mut read = Vec::new();
    let mut at = LogPosition::START;
    for _ in 0..100 {
        let batch = app
            .store
            .read_log(services::store::Work::Projections, at, 1)
            .await
            .unwrap();
        if let Some(last) = batch.last() {
            at = last.at;
        }
        read.extend(batch.into_iter().map(|e| e.case_id.to_string()));
        if read.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        read,
        vec![slow, fast],
        "both, once each, in commit-safe order"
    );
    pool.close().await;
}
