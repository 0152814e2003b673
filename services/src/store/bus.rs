//! What the event-bus relay needs from the store: its checkpoint (a row of
//! `projection_checkpoints`, moved only after JetStream acknowledged), the agency of each case
//! (for subjects), where an event sits in the log (to re-synchronise with the stream), and a
//! lease so that one relay publishes at a time.

use std::collections::HashMap;

use chrono::Utc;
use schemas::{AgencyId, CaseId, EventId};
use sqlx::types::Json;
use sqlx::{Connection, Row};

use super::projections::UPSERT_CHECKPOINT;
use super::BeginWrite;
use super::{Backend, LogPosition, Store, Work};
use crate::error::StoreError;

/// Held while this process is the one relay publishing (PostgreSQL: a session advisory lock on a
/// connection of its own, released when the lease is dropped or the process dies).
pub struct RelayLease {
    conn: Option<sqlx::PgConnection>,
}

impl Drop for RelayLease {
    fn drop(&mut self) {
        // Closing the session releases the advisory lock.
        drop(self.conn.take());
    }
}

/// Arbitrary but fixed: the advisory-lock key of the relay ("LNKRELAY").
const RELAY_LOCK_KEY: i64 = 0x4c4e_4b52_454c_4159;

/// The advisory-lock key of the FHIR notifier ("LNKFHIRN").
const NOTIFIER_LOCK_KEY: i64 = 0x4c4e_4b46_4849_524e;

impl Store {
    /// Moves the relay's checkpoint `name` to `at`, counting `events` more. The relay's rows live
    /// in JetStream, so this is not part of any batch transaction. On PostgreSQL it commits
    /// without waiting for the WAL flush: a checkpoint lost in a crash only moves the relay back
    /// to events the stream already holds, and the relay's re-synchronisation (the stream's last
    /// event id, looked up in the log) moves it forward again before anything is re-published.
    pub async fn advance_relay_checkpoint(
        &self,
        name: &str,
        at: LogPosition,
        events: u64,
    ) -> Result<(), StoreError> {
        on_pool_for!(self, Work::Relay, pool => {
            let mut tx = pool.begin_write().await?;
            if matches!(self.backend, Backend::Postgres { .. }) {
                sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
            }
            sqlx::query(UPSERT_CHECKPOINT)
                .bind(name)
                .bind(at.txid)
                .bind(at.position)
                .bind(events as i64)
                .bind(Utc::now())
                .bind(&self.replica)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// The agency of each listed case that exists (from its CaseOpened event), asked through
    /// the pool of `work`.
    pub async fn case_agencies(
        &self,
        work: Work,
        cases: &[CaseId],
    ) -> Result<HashMap<CaseId, AgencyId>, StoreError> {
        let ids: Vec<String> = cases.iter().map(ToString::to_string).collect();
        let sql = match &self.backend {
            Backend::Postgres { .. } => {
                "SELECT aggregate_id, payload -> 'CaseOpened' ->> 'agency' AS agency FROM events \
                 WHERE aggregate_type = 'Case' AND sequence = 1 \
                 AND aggregate_id IN (SELECT jsonb_array_elements_text($1))"
            }
            Backend::Sqlite { .. } => {
                "SELECT aggregate_id, json_extract(payload, '$.CaseOpened.agency') AS agency \
                 FROM events WHERE aggregate_type = 'Case' AND sequence = 1 \
                 AND aggregate_id IN (SELECT value FROM json_each($1))"
            }
        };
        let rows: Vec<(String, Option<String>)> = on_pool_for!(self, work, pool => {
            sqlx::query_as(sql).bind(Json(&ids)).fetch_all(pool).await?
        });
        let corrupt = |e: schemas::SchemaError| StoreError::Corrupt(e.to_string());
        let mut out = HashMap::with_capacity(rows.len());
        for (case, agency) in rows {
            let agency = agency.ok_or_else(|| {
                StoreError::Corrupt(format!("case {case} does not start with CaseOpened"))
            })?;
            out.insert(
                CaseId::parse(&case).map_err(corrupt)?,
                AgencyId::parse(agency).map_err(corrupt)?,
            );
        }
        Ok(out)
    }

    /// Where an event sits in the global log, if it is stored.
    pub async fn log_position_of(&self, event: EventId) -> Result<Option<LogPosition>, StoreError> {
        let row = match &self.backend {
            Backend::Postgres { pool, .. } => sqlx::query(
                "SELECT txid::text::bigint AS tx, position FROM events WHERE event_id = $1::uuid",
            )
            .bind(event.to_string())
            .fetch_optional(pool)
            .await?
            .map(|r| Ok::<_, sqlx::Error>((r.try_get("tx")?, r.try_get("position")?))),
            Backend::Sqlite { pool, .. } => {
                sqlx::query("SELECT 0 AS tx, position FROM events WHERE event_id = ?1")
                    .bind(event.to_string())
                    .fetch_optional(pool)
                    .await?
                    .map(|r| Ok::<_, sqlx::Error>((r.try_get("tx")?, r.try_get("position")?)))
            }
        };
        Ok(row
            .transpose()?
            .map(|(txid, position)| LogPosition { txid, position }))
    }

    /// Tries to become the one relay. `None`: another process holds the lease. SQLite has one
    /// writer process by construction, so its lease is always granted.
    pub async fn try_relay_lease(&self) -> Result<Option<RelayLease>, StoreError> {
        self.try_lease(RELAY_LOCK_KEY).await
    }

    /// Tries to become the one FHIR notifier (`fhir_notify`), as `try_relay_lease` does.
    pub async fn try_notifier_lease(&self) -> Result<Option<RelayLease>, StoreError> {
        self.try_lease(NOTIFIER_LOCK_KEY).await
    }

    async fn try_lease(&self, key: i64) -> Result<Option<RelayLease>, StoreError> {
        match &self.backend {
            Backend::Postgres { background, .. } => {
                let mut conn = background.relay.acquire().await?.detach();
                sqlx::query("SELECT set_config('application_name', $1, false)")
                    .bind(super::projections::lease_application(&self.replica))
                    .execute(&mut conn)
                    .await?;
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(key)
                    .fetch_one(&mut conn)
                    .await?;
                if got {
                    Ok(Some(RelayLease { conn: Some(conn) }))
                } else {
                    let _ = conn.close().await;
                    Ok(None)
                }
            }
            Backend::Sqlite { .. } => Ok(Some(RelayLease { conn: None })),
        }
    }
}

impl Store {
    /// The replica holding the relay's lease (PostgreSQL; None on SQLite or when none does).
    pub async fn relay_runner(&self) -> Result<Option<String>, StoreError> {
        self.lease_holder(RELAY_LOCK_KEY).await
    }
}

impl RelayLease {
    /// Whether the lease still holds (its session is alive).
    pub async fn alive(&mut self) -> bool {
        match &mut self.conn {
            Some(conn) => conn.ping().await.is_ok(),
            None => true,
        }
    }
}
