//! postgres-es's repository with one change: a command's events are persisted through the group
//! commit writers (`group_commit`), alone or with other commands' in one statement, one round trip
//! and atomic on its own, instead of BEGIN, one INSERT per event, COMMIT. Reads delegate to
//! postgres-es unchanged.

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;

use super::group_commit::GroupCommit;

pub struct PgRepository {
    inner: PostgresEventRepository,
    writers: GroupCommit,
}

impl PgRepository {
    /// Reads through postgres-es on `pool`; writes through `writers` group-committing writers.
    pub fn new(pool: PgPool, writers: usize) -> Self {
        Self {
            inner: PostgresEventRepository::new(pool.clone()),
            writers: GroupCommit::new(pool, writers),
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
        self.writers.append(events).await
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
