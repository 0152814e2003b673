//! Group commit on PostgreSQL (`services::store::group_commit`): commands that queue while the
//! writers are busy are stored by one statement, and each keeps its own answer. A conflict or a
//! command the database refuses fails that command alone; two commands on one case never share a
//! group.
//!
//! The groups are formed deterministically: the only writer is held on a row lock (another
//! transaction has inserted, and not committed, the row its command appends), the commands of the
//! group queue behind it, and releasing the lock lets the first of them write them all.

use std::sync::Arc;
use std::time::Duration;

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use linkage_tests::{Backend, TestApp};
use serde_json::json;
use services::store::group_commit::{GroupCommit, GroupStats};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::task::JoinHandle;

const STREAM: &str = "GroupTest";

fn event(stream: &str, sequence: usize) -> SerializedEvent {
    SerializedEvent::new(
        stream.to_owned(),
        sequence,
        STREAM.to_owned(),
        "Tested".to_owned(),
        "1".to_owned(),
        json!({"Tested": {"n": sequence}}),
        json!({}),
    )
}

fn command(stream: &str, sequences: std::ops::RangeInclusive<usize>) -> Vec<SerializedEvent> {
    sequences.map(|n| event(stream, n)).collect()
}

async fn rows(pool: &PgPool, stream: &str) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT sequence FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
    )
    .bind(STREAM)
    .bind(stream)
    .fetch_all(pool)
    .await
    .expect("rows")
}

/// Polls `ready` every 10 ms until it holds; a bound stops a broken test instead of hanging it.
async fn until(what: &str, mut ready: impl AsyncFnMut() -> bool) {
    for _ in 0..3000 {
        if ready().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting: {what}");
}

/// Holds the only writer, queues `commands` behind it, then lets them go; their answers in order.
async fn group_of(
    url: &str,
    pool: &PgPool,
    writers: &Arc<GroupCommit>,
    gate: &str,
    commands: Vec<Vec<SerializedEvent>>,
) -> Vec<Result<(), PersistenceError>> {
    let mut holder = PgConnection::connect(url).await.expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES ($1, $2, 1, 'Tested', '1', '{}', '{}')",
    )
    .bind(STREAM)
    .bind(gate)
    .execute(&mut holder)
    .await
    .expect("the holder's row");
    let lead = {
        let w = writers.clone();
        let e = command(gate, 1..=1);
        tokio::spawn(async move { w.append(&e).await })
    };
    until("the writer waits on the holder's row lock", async || {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .expect("pg_stat_activity");
        waiting == 1
    })
    .await;
    let n = commands.len();
    let queued: Vec<JoinHandle<_>> = commands
        .into_iter()
        .map(|e| {
            let w = writers.clone();
            tokio::spawn(async move { w.append(&e).await })
        })
        .collect();
    until("every command queues behind the writer", async || {
        writers.waiting() == n
    })
    .await;
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("rollback");
    lead.await
        .expect("lead")
        .expect("the lead's row is free once the holder rolls back");
    let mut answers = Vec::new();
    for q in queued {
        answers.push(q.await.expect("command"));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_command_of_a_group_keeps_its_own_answer() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let url = app.config.database_url.clone().expect("a PostgreSQL app");
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .expect("pool");
    let writers = Arc::new(GroupCommit::new(pool.clone(), 1));
    for (stream, seq) in [("taken", 1), ("partly-taken", 1)] {
        writers
            .append(&command(stream, seq..=seq))
            .await
            .expect("seeded");
    }
    assert_eq!(
        writers.stats(),
        GroupStats::default(),
        "lone commands are not groups"
    );

    // A group with a conflict: the others are stored, in one statement.
    let answers = group_of(
        &url,
        &pool,
        &writers,
        "gate-1",
        vec![
            command("one", 1..=1),
            command("three", 1..=3),
            command("taken", 1..=1),
            command("twin", 1..=1),
            command("twin", 1..=1),
            command("another", 1..=1),
        ],
    )
    .await;
    assert!(
        answers[0].is_ok() && answers[1].is_ok() && answers[5].is_ok(),
        "{answers:?}"
    );
    assert!(
        matches!(answers[2], Err(PersistenceError::OptimisticLockError)),
        "a command whose sequence is taken is refused alone: {:?}",
        answers[2]
    );
    let twins: Vec<_> = answers[3..5].iter().map(Result::is_ok).collect();
    assert!(
        twins.contains(&true) && twins.contains(&false),
        "two commands at one sequence: one stored, one refused: {answers:?}"
    );
    assert!(answers[3..5]
        .iter()
        .any(|a| matches!(a, Err(PersistenceError::OptimisticLockError))));
    assert_eq!(rows(&pool, "one").await, [1]);
    assert_eq!(rows(&pool, "three").await, [1, 2, 3]);
    assert_eq!(
        rows(&pool, "taken").await,
        [1],
        "the refused command stored nothing"
    );
    assert_eq!(rows(&pool, "twin").await, [1]);
    assert_eq!(rows(&pool, "another").await, [1]);
    assert_eq!(
        writers.stats(),
        GroupStats {
            groups: 1,
            grouped_commands: 5
        },
        "one statement stored the group; the second twin waited for a turn of its own"
    );

    // A group the database refuses (a row breaks a constraint; a command overlaps a stored one
    // in part): nothing of the statement is stored, and each command is written alone.
    let answers = group_of(
        &url,
        &pool,
        &writers,
        "gate-2",
        vec![
            command("four", 1..=1),
            vec![event("bad", usize::MAX)],
            command("partly-taken", 1..=2),
            command("five", 1..=2),
        ],
    )
    .await;
    assert!(answers[0].is_ok() && answers[3].is_ok(), "{answers:?}");
    assert!(
        matches!(answers[1], Err(PersistenceError::UnknownError(_))),
        "a row the database refuses fails its own command: {:?}",
        answers[1]
    );
    assert!(
        matches!(answers[2], Err(PersistenceError::OptimisticLockError)),
        "a command overlapping a stored one is refused whole: {:?}",
        answers[2]
    );
    assert_eq!(rows(&pool, "four").await, [1]);
    assert_eq!(rows(&pool, "five").await, [1, 2]);
    assert!(rows(&pool, "bad").await.is_empty());
    assert_eq!(rows(&pool, "partly-taken").await, [1], "not stored in part");
    assert_eq!(
        writers.stats().groups,
        1,
        "the refused statement stored no group"
    );

    // A group of one-event commands (the usual group, stored by a plain INSERT, not the
    // function): a command whose row is taken is refused alone, the others are stored.
    let answers = group_of(
        &url,
        &pool,
        &writers,
        "gate-3",
        vec![
            command("six", 1..=1),
            command("taken", 1..=1),
            command("seven", 1..=1),
        ],
    )
    .await;
    assert!(answers[0].is_ok() && answers[2].is_ok(), "{answers:?}");
    assert!(
        matches!(answers[1], Err(PersistenceError::OptimisticLockError)),
        "a one-event command whose row is taken is refused alone: {:?}",
        answers[1]
    );
    assert_eq!(rows(&pool, "six").await, [1]);
    assert_eq!(rows(&pool, "seven").await, [1]);
    assert_eq!(rows(&pool, "taken").await, [1]);
    assert_eq!(writers.stats().groups, 2, "one statement stored the group");

    // The same kind of group with a row the database refuses: nothing of the statement is
    // stored, and each command is written alone.
    let answers = group_of(
        &url,
        &pool,
        &writers,
        "gate-4",
        vec![
            command("eight", 1..=1),
            vec![event("bad", usize::MAX)],
            command("nine", 1..=1),
        ],
    )
    .await;
    assert!(answers[0].is_ok() && answers[2].is_ok(), "{answers:?}");
    assert!(
        matches!(answers[1], Err(PersistenceError::UnknownError(_))),
        "{answers:?}"
    );
    assert_eq!(rows(&pool, "eight").await, [1]);
    assert_eq!(rows(&pool, "nine").await, [1]);
    assert_eq!(
        writers.stats().groups,
        2,
        "the refused statement stored no group"
    );
    for gate in ["gate-1", "gate-2", "gate-3", "gate-4"] {
        assert_eq!(rows(&pool, gate).await, [1]);
    }
}
