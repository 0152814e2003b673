//! Group commit on PostgreSQL: the events of concurrent commands are stored together, in one
//! statement (`linkage_append_commands`, migration 0013; a group of one-event commands on
//! distinct cases, the usual group, by a plain INSERT, `APPEND_SINGLES`), so that they share a
//! transaction, a WAL flush and a round trip instead of paying for one each.
//!
//! Leaders and followers, with no timer and no task of its own: a command that finds fewer than
//! `writers` groups being written writes at once, on its own task, together with whatever
//! commands are waiting; one that finds them all busy waits in the queue. A writer that finishes
//! hands its turn to the first command waiting, which writes the next group. A lone command is
//! therefore written at once, as without group commit, and groups grow only with concurrency.
//!
//! Each command keeps its own answer. The statement stores a command's events all or none; a
//! command that another writer got ahead of (its sequence is taken) is refused alone with an
//! optimistic-lock error and decided again by its caller, as without group commit. Two commands
//! on one case never share a group (the second waits for the next one), so within a group they
//! cannot collide. The statement is one transaction: if the database refuses it (a command it
//! cannot keep whole, such as a multi-event command that another replica's append overlaps in
//! part; a row that breaks a constraint; a deadlock), nothing of it is stored and each command of
//! the group is written on its own, so a bad command fails alone. If the connection fails, the
//! outcome is unknown and every command of the group fails, as a lone command would.
//!
//! The statement inserts its rows in (stream, sequence) order, so that two groups of this or
//! another replica that share streams take their row locks in one order and cannot deadlock.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, Connection, PgConnection, PgPool};
use tokio::sync::oneshot;

use super::is_code;
use super::pg_pool::IDLE_CHECK;

/// The most commands one statement stores.
const MAX_GROUP: usize = 64;

/// Waiting commands a writer looks at when it gathers a group (see `take_group`).
const SCAN: usize = 4 * MAX_GROUP;

const INSERT_EVENT: &str = "\
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
VALUES ($1, $2, $3, $4, $5, $6, $7)";

const INSERT_EVENTS: &str = "\
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])";

/// A group of one-event commands (what most groups are) in one plain statement: with one row per
/// command and no two commands on a stream, a command is stored whole or refused whole by its
/// row alone, so the function's checks (two claims on one row, a command stored in part) cannot
/// arise, and the rows returned say which commands were stored.
const APPEND_SINGLES: &str = "\
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])
    AS t(aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
ORDER BY aggregate_type, aggregate_id, sequence
ON CONFLICT (aggregate_type, aggregate_id, sequence) DO NOTHING
RETURNING aggregate_type, aggregate_id";

const APPEND_COMMANDS: &str =
    "SELECT linkage_append_commands($1, $2, $3, $4, $5, $6, $7, $8) AS refused";

/// A command waiting for a writer.
struct Waiting {
    events: Vec<SerializedEvent>,
    wake: oneshot::Sender<Wake>,
}

enum Wake {
    /// Another writer stored (or failed to store) the command's events.
    Done(Result<(), PersistenceError>),
    /// The command's turn to write a group, its own events first.
    Lead(Vec<SerializedEvent>),
}

/// What the writers have done since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Groups of two or more commands stored by one statement.
    pub groups: u64,
    /// Commands stored in those groups.
    pub grouped_commands: u64,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    /// Groups being written now.
    writing: usize,
    stats: GroupStats,
}

/// Where commands meet to be written together.
pub struct GroupCommit(Arc<Shared>);

struct Shared {
    pool: PgPool,
    writers: usize,
    queue: Mutex<Queue>,
    /// Connections the writers keep between writes (see `Held`).
    held: Held,
}

/// Connections kept by the writers between writes, at most one per writer, instead of going back
/// to the pool after each: sqlx tests every connection with a round trip each time it returns
/// to the pool (it cannot be turned off), a second round trip for every command's one. A
/// connection is kept only after a statement that completed or that the database refused (the
/// connection is sound); one idle for `IDLE_CHECK` is tested before it is used again, as the
/// pool tests its own (`pg_pool`).
#[derive(Default)]
struct Held(Mutex<Vec<(PgConnection, Instant)>>);

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(PgConnection, Instant)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Shared {
    /// A kept connection, or one taken from the pool for keeping.
    async fn connection(&self) -> Result<PgConnection, sqlx::Error> {
        loop {
            let kept = self.held.lock().pop();
            let Some((mut connection, since)) = kept else {
                return Ok(self.pool.acquire().await?.detach());
            };
            if since.elapsed() < IDLE_CHECK || connection.ping().await.is_ok() {
                return Ok(connection);
            }
            tracing::info!("replacing a kept writer connection that failed its test");
        }
    }

    /// Runs `statement` on a kept connection and keeps the connection again if it is sound.
    async fn on_connection<T>(
        &self,
        statement: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let mut connection = self.connection().await?;
        let result = statement(&mut connection).await;
        if matches!(result, Ok(_) | Err(sqlx::Error::Database(_))) {
            let mut held = self.held.lock();
            if held.len() < self.writers {
                held.push((connection, Instant::now()));
            }
        }
        result
    }
}

/// A writer's turn: when it ends (also when the writing future is dropped), it passes to the
/// first command waiting.
struct Turn(Arc<Shared>);

impl Drop for Turn {
    fn drop(&mut self) {
        self.0.hand_on();
    }
}

impl GroupCommit {
    /// Commands waiting for a writer now.
    pub fn waiting(&self) -> usize {
        self.0.lock().waiting.len()
    }

    pub fn stats(&self) -> GroupStats {
        self.0.lock().stats
    }

    /// At most `writers` groups (at least one) are written at a time on `pool`.
    pub fn new(pool: PgPool, writers: usize) -> Self {
        Self(Arc::new(Shared {
            pool,
            writers: writers.max(1),
            queue: Mutex::default(),
            held: Held::default(),
        }))
    }

    /// Stores one command's events, alone or in a group: `OptimisticLockError` if another writer
    /// appended to the case first.
    pub async fn append(&self, events: &[SerializedEvent]) -> Result<(), PersistenceError> {
        let own = match self.0.join(events) {
            Ok(own) => own,
            Err(woken) => match woken.await {
                Ok(Wake::Done(result)) => return result,
                Ok(Wake::Lead(own)) => own,
                // Never dropped unanswered: a writer answers every command it takes.
                Err(_) => {
                    return Err(PersistenceError::UnknownError(
                        "the command's writer went away".into(),
                    ))
                }
            },
        };
        // This task writes a group now: its own events and the commands waiting.
        let turn = Turn(self.0.clone());
        let others = self.0.take_group(&own);
        if others.is_empty() {
            return insert(&self.0, &own).await;
        }
        // Others wait on this group: it is written to the end even if this command's request
        // goes away meanwhile.
        let shared = self.0.clone();
        tokio::spawn(async move {
            let _turn = turn;
            shared.write(own, others).await
        })
        .await
        .unwrap_or_else(|e| Err(PersistenceError::UnknownError(e.to_string().into())))
    }
}

impl Shared {
    /// Takes a writer's turn (Ok, with the command's events) if one is free, or queues the
    /// command (Err, to wait for its answer or its turn).
    fn join(
        &self,
        events: &[SerializedEvent],
    ) -> Result<Vec<SerializedEvent>, oneshot::Receiver<Wake>> {
        let mut queue = self.lock();
        if queue.writing < self.writers {
            queue.writing += 1;
            return Ok(events.to_vec());
        }
        let (wake, woken) = oneshot::channel();
        queue.waiting.push_back(Waiting {
            events: events.to_vec(),
            wake,
        });
        Err(woken)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Nothing panics while holding the lock; recover the queue all the same.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Up to `MAX_GROUP - 1` waiting commands, oldest first, none on a case already in the group.
    ///
    /// It looks at no more than `SCAN` commands from the front of the queue, whatever the
    /// queue's length. It used to move the whole queue and compare every command with the whole
    /// group: under overload (a queue of thousands) each group cost the writer more than its
    /// statement, the queue grew faster, and the command rate fell to a few percent of what was
    /// asked (seen in `linkage-bench projections`: 435 commands/s achieved of 6,581 asked).
    fn take_group(&self, own: &[SerializedEvent]) -> Vec<Waiting> {
        let mut queue = self.lock();
        let mut streams: HashSet<(String, String)> = HashSet::new();
        if let Some((kind, id)) = stream(own) {
            streams.insert((kind.to_owned(), id.to_owned()));
        }
        let mut group: Vec<Waiting> = Vec::new();
        let mut at = 0;
        while group.len() + 1 < MAX_GROUP && at < queue.waiting.len() && at + group.len() < SCAN {
            let key = stream(&queue.waiting[at].events).map(|(k, i)| (k.to_owned(), i.to_owned()));
            // A second command on a case already in the group waits for the next one.
            if key.is_some_and(|key| !streams.insert(key)) {
                at += 1;
                continue;
            }
            group.extend(queue.waiting.remove(at));
        }
        group
    }

    /// Passes this writer's turn to the first command waiting, or gives it up.
    fn hand_on(&self) {
        let mut queue = self.lock();
        while let Some(w) = queue.waiting.pop_front() {
            // A command whose request went away no longer waits; its events are not written.
            if w.wake.send(Wake::Lead(w.events)).is_ok() {
                return;
            }
        }
        queue.writing -= 1;
    }

    /// Writes `own` and `others` together; answers the others and returns `own`'s result.
    async fn write(
        &self,
        own: Vec<SerializedEvent>,
        others: Vec<Waiting>,
    ) -> Result<(), PersistenceError> {
        let mut group: Vec<&[SerializedEvent]> = vec![&own];
        group.extend(others.iter().map(|w| w.events.as_slice()));
        match insert_group(self, &group).await {
            Ok(refused) => {
                {
                    let mut queue = self.lock();
                    queue.stats.groups += 1;
                    queue.stats.grouped_commands += group.len() as u64;
                }
                let outcome = |n: usize| {
                    if refused.contains(&(n as i32)) {
                        Err(PersistenceError::OptimisticLockError)
                    } else {
                        Ok(())
                    }
                };
                for (n, w) in others.into_iter().enumerate() {
                    let _ = w.wake.send(Wake::Done(outcome(n + 1)));
                }
                outcome(0)
            }
            // The database refused the statement, so nothing of it is stored: a command it could
            // not keep whole (LK001) or one it refused (a constraint) fails alone this way.
            Err(e @ sqlx::Error::Database(_)) => {
                tracing::debug!(error = %e, "a group was refused; writing each command alone");
                for w in others {
                    let result = insert(self, &w.events).await;
                    let _ = w.wake.send(Wake::Done(result));
                }
                insert(self, &own).await
            }
            Err(e) => {
                // The outcome is unknown (the connection failed): fail every command, as a lone
                // command would fail, rather than write any twice.
                for w in others {
                    let _ = w.wake.send(Wake::Done(Err(persistence_error(&e))));
                }
                Err(persistence_error(&e))
            }
        }
    }
}

/// The stream (aggregate type and id) a command appends to.
fn stream(events: &[SerializedEvent]) -> Option<(&str, &str)> {
    events
        .first()
        .map(|e| (e.aggregate_type.as_str(), e.aggregate_id.as_str()))
}

/// One command's events in one statement, as without group commit.
async fn insert(shared: &Shared, events: &[SerializedEvent]) -> Result<(), PersistenceError> {
    let query = match events {
        [] => return Ok(()),
        // Most commands produce one event: the plain statement is cheaper to bind and plan.
        [e] => sqlx::query(INSERT_EVENT)
            .bind(&e.aggregate_type)
            .bind(&e.aggregate_id)
            .bind(e.sequence as i64)
            .bind(&e.event_type)
            .bind(&e.event_version)
            .bind(&e.payload)
            .bind(&e.metadata),
        _ => sqlx::query_with(
            INSERT_EVENTS,
            event_columns(events.iter()).map_err(|e| persistence_error(&e))?,
        ),
    };
    shared
        .on_connection(async |c| query.execute(c).await)
        .await
        .map_err(|e| {
            if is_code(&e, "23505") {
                PersistenceError::OptimisticLockError
            } else {
                persistence_error(&e)
            }
        })?;
    Ok(())
}

/// The group in one statement; the numbers (positions in `group`) of the commands refused.
async fn insert_group(
    shared: &Shared,
    group: &[&[SerializedEvent]],
) -> Result<Vec<i32>, sqlx::Error> {
    if let Some(singles) = singles(group) {
        return insert_singles(shared, &singles).await;
    }
    let rows = group.iter().map(|events| events.len()).sum();
    let mut commands = Vec::with_capacity(rows);
    let mut types = Vec::with_capacity(rows);
    let mut ids = Vec::with_capacity(rows);
    let mut sequences = Vec::with_capacity(rows);
    let mut event_types = Vec::with_capacity(rows);
    let mut versions = Vec::with_capacity(rows);
    let mut payloads = Vec::with_capacity(rows);
    let mut metadata = Vec::with_capacity(rows);
    for (n, events) in group.iter().enumerate() {
        for e in *events {
            commands.push(n as i32);
            types.push(e.aggregate_type.as_str());
            ids.push(e.aggregate_id.as_str());
            sequences.push(e.sequence as i64);
            event_types.push(e.event_type.as_str());
            versions.push(e.event_version.as_str());
            payloads.push(&e.payload);
            metadata.push(&e.metadata);
        }
    }
    let query = sqlx::query_scalar(APPEND_COMMANDS)
        .bind(commands)
        .bind(types)
        .bind(ids)
        .bind(sequences)
        .bind(event_types)
        .bind(versions)
        .bind(payloads)
        .bind(metadata);
    shared
        .on_connection(async |c| query.fetch_one(c).await)
        .await
}

/// The group's events if each of its commands has one event, each on a stream of its own.
fn singles<'a>(group: &[&'a [SerializedEvent]]) -> Option<Vec<&'a SerializedEvent>> {
    let mut streams = HashSet::with_capacity(group.len());
    group
        .iter()
        .map(|events| match events {
            [e] if streams.insert((e.aggregate_type.as_str(), e.aggregate_id.as_str())) => Some(e),
            _ => None,
        })
        .collect()
}

/// A group of one-event commands on distinct streams (`APPEND_SINGLES`); the numbers of the
/// commands refused (their row was taken).
///
/// The function (`APPEND_COMMANDS`) stored such groups too, at a higher price. In
/// `pg_stat_statements` over the HTTP benchmark's contacts (2026-12-02, 16 connections), it took
/// 105 µs of server time an event (839 µs a call of about 8), in a run whose raw single-row
/// INSERT took 139 µs a row; this statement took 64 µs an event, in a run whose raw INSERT took
/// 97 µs a row (the machine was faster then: 0.66 of the raw INSERT's time, against 0.76).
async fn insert_singles(
    shared: &Shared,
    events: &[&SerializedEvent],
) -> Result<Vec<i32>, sqlx::Error> {
    let query = sqlx::query_as_with::<_, (String, String), _>(
        APPEND_SINGLES,
        event_columns(events.iter().copied())?,
    );
    let stored = shared
        .on_connection(async |c| query.fetch_all(c).await)
        .await?;
    let stored: HashSet<(&str, &str)> = stored
        .iter()
        .map(|(kind, id)| (kind.as_str(), id.as_str()))
        .collect();
    Ok(events
        .iter()
        .enumerate()
        .filter(|(_, e)| !stored.contains(&(e.aggregate_type.as_str(), e.aggregate_id.as_str())))
        .map(|(n, _)| n as i32)
        .collect())
}

/// `events` as the `UNNEST` statements (`INSERT_EVENTS`, `APPEND_SINGLES`) take them: one array
/// per column, in the events table's order, borrowed from the events.
fn event_columns<'a>(
    events: impl Iterator<Item = &'a SerializedEvent> + Clone,
) -> Result<PgArguments, sqlx::Error> {
    let texts = |f: fn(&SerializedEvent) -> &str| events.clone().map(f).collect::<Vec<_>>();
    let mut columns = PgArguments::default();
    let add = |column: Result<(), sqlx::error::BoxDynError>| column.map_err(sqlx::Error::Encode);
    add(columns.add(texts(|e| &e.aggregate_type)))?;
    add(columns.add(texts(|e| &e.aggregate_id)))?;
    add(columns.add(
        events
            .clone()
            .map(|e| e.sequence as i64)
            .collect::<Vec<_>>(),
    ))?;
    add(columns.add(texts(|e| &e.event_type)))?;
    add(columns.add(texts(|e| &e.event_version)))?;
    add(columns.add(events.clone().map(|e| &e.payload).collect::<Vec<_>>()))?;
    add(columns.add(events.map(|e| &e.metadata).collect::<Vec<_>>()))?;
    Ok(columns)
}

fn persistence_error(e: &sqlx::Error) -> PersistenceError {
    let message = e.to_string();
    if crate::error::unreachable(e) {
        PersistenceError::ConnectionError(message.into())
    } else {
        PersistenceError::UnknownError(message.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(case: &str) -> Vec<SerializedEvent> {
        vec![SerializedEvent::new(
            case.to_owned(),
            1,
            "Case".into(),
            "ContactLogged".into(),
            "1".into(),
            serde_json::Value::Null,
            serde_json::Value::Null,
        )]
    }

    /// Writers that never write: only the queue is exercised (the pool never connects).
    fn shared(waiting: &[&str]) -> Shared {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("a lazy pool");
        let shared = Shared {
            pool,
            writers: 1,
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                writing: 1,
                stats: GroupStats::default(),
            }),
            held: Held::default(),
        };
        for case in waiting {
            assert!(shared.join(&command(case)).is_err(), "queued");
        }
        shared
    }

    fn cases(shared: &Shared) -> Vec<String> {
        let queue = shared.lock();
        queue
            .waiting
            .iter()
            .map(|w| w.events[0].aggregate_id.clone())
            .collect()
    }

    #[tokio::test]
    async fn a_group_takes_one_command_per_case_oldest_first() {
        let shared = shared(&["a", "b", "a", "own", "c", "b"]);
        let group = shared.take_group(&command("own"));
        let taken: Vec<&str> = group
            .iter()
            .map(|w| w.events[0].aggregate_id.as_str())
            .collect();
        assert_eq!(taken, ["a", "b", "c"]);
        assert_eq!(cases(&shared), ["a", "own", "b"], "the rest wait in order");
    }

    #[tokio::test]
    async fn a_group_looks_only_at_the_front_of_a_long_queue() {
        // A queue of thousands on the writer's own case, then one on another case: gathering a
        // group costs the same whatever the queue's length, and leaves the queue as it was.
        let mut waiting = vec!["own"; 10_000];
        waiting.push("other");
        let shared = shared(&waiting);
        assert!(shared.take_group(&command("own")).is_empty());
        assert_eq!(cases(&shared).len(), 10_001);
        // A queue of distinct cases gives a full group.
        let many: Vec<String> = (0..1_000).map(|n| format!("case-{n}")).collect();
        let shared = self::shared(&many.iter().map(String::as_str).collect::<Vec<_>>());
        let group = shared.take_group(&command("own"));
        assert_eq!(group.len(), MAX_GROUP - 1);
        assert_eq!(group[0].events[0].aggregate_id, "case-0");
        assert_eq!(cases(&shared).len(), 1_000 - (MAX_GROUP - 1));
    }

    #[test]
    fn only_one_event_commands_on_distinct_streams_take_the_plain_statement() {
        let (a, b, again) = (command("a"), command("b"), command("a"));
        let both = [a[0].clone(), a[0].clone()];
        assert_eq!(
            singles(&[&a, &b]).map(|e| e.len()),
            Some(2),
            "one event each, two streams"
        );
        assert!(
            singles(&[&a, &both]).is_none(),
            "a command of two events needs the function's all-or-none check"
        );
        assert!(
            singles(&[&a, &again]).is_none(),
            "two claims on one stream need the function's check"
        );
    }
}
