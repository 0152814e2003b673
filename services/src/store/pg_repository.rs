//! postgres-es's repository with one change: a command's events are persisted by a single
//! `INSERT … SELECT FROM UNNEST(…)` statement, one round trip and atomic on its own, instead of
//! BEGIN, one INSERT per event, COMMIT. Reads delegate to postgres-es unchanged.

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;

const INSERT_EVENT: &str = "\
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
VALUES ($1, $2, $3, $4, $5, $6, $7)";

const INSERT_EVENTS: &str = "\
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])";

pub struct PgRepository {
    inner: PostgresEventRepository,
    pool: PgPool,
}

impl PgRepository {
    pub fn new(pool: PgPool) -> Self {
        Self {
            inner: PostgresEventRepository::new(pool.clone()),
            pool,
        }
    }
}

impl PersistedEventRepository for PgRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.inner.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if snapshot_update.is_some() {
            // Linkage never snapshots (ARCHITECTURE.md); keep postgres-es's behaviour if asked.
            return self.inner.persist::<A>(events, snapshot_update).await;
        }
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
            _ => {
                let col =
                    |f: fn(&SerializedEvent) -> String| events.iter().map(f).collect::<Vec<_>>();
                sqlx::query(INSERT_EVENTS)
                    .bind(col(|e| e.aggregate_type.clone()))
                    .bind(col(|e| e.aggregate_id.clone()))
                    .bind(events.iter().map(|e| e.sequence as i64).collect::<Vec<_>>())
                    .bind(col(|e| e.event_type.clone()))
                    .bind(col(|e| e.event_version.clone()))
                    .bind(events.iter().map(|e| e.payload.clone()).collect::<Vec<_>>())
                    .bind(
                        events
                            .iter()
                            .map(|e| e.metadata.clone())
                            .collect::<Vec<_>>(),
                    )
            }
        };
        query.execute(&self.pool).await.map_err(|e| match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                PersistenceError::OptimisticLockError
            }
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                PersistenceError::ConnectionError(Box::new(e))
            }
            _ => PersistenceError::UnknownError(Box::new(e)),
        })?;
        Ok(())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_all_events::<A>().await
    }
}
