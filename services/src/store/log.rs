//! The global log: every event of every case in one order that a reader can tail without ever
//! skipping an event or seeing one twice.
//!
//! PostgreSQL assigns `position` from a sequence when a row is inserted, not when its
//! transaction commits, so position 11 can become visible after position 12: a reader that tails
//! by position alone skips 11. Linkage reads instead in (`txid`, `position`) order and only below
//! `pg_snapshot_xmin(pg_current_snapshot())`: every transaction with a smaller id has ended, so no
//! row will ever appear behind the reader. A long-running writing transaction holds the reader
//! back (it lags; it never skips). SQLite has one writer at a time, so position order is commit
//! order and the transaction id is always 0.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use schemas::{CaseId, EventId, EventMetadata};
use sqlx::types::Json;
use sqlx::Row;

use super::{Backend, Store, StoredEvent, Work};
use crate::error::StoreError;

pub use projections::log::{LogEvent, LogPosition};

/// Ordered by the `events` columns themselves (not the output alias `tx`), so the
/// `events_case_log_order` index serves it; the limit is spliced in as a literal because a generic
/// plan with `LIMIT $n` guesses a large share of the table and scans and sorts it all.
///
/// It is never prepared as a named statement (`persistent(false)`): a connection's cached
/// generic plan is made for the table as it was, and one made while the table was small scans
/// all of it once it has grown. Measured in the HTTP benchmark: followers' reads took 23-37 ms
/// each, a sequential scan of 60,000 rows returning none, until the plan was made per read.
///
/// `txid` and `event_id` come in their binary forms (`Xid8`, a UUID's 16 bytes): as text, each
/// row cost the server a conversion of each and this process a parse of each (about a tenth of
/// the server's time for a read of the whole log in `EXPLAIN ANALYZE`, 2026-12-02).
const PG_READ: &str = "\
SELECT txid AS tx, position, aggregate_id, event_id,
       sequence, event_type, event_version, recorded_at, CAST(payload AS TEXT) AS payload, metadata
  FROM events
 WHERE aggregate_type = 'Case'
   AND (txid, position) > ($1::text::xid8, $2)
   AND txid < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY events.txid, events.position
 LIMIT ";

/// The two reads' columns, in the same order; `decode` takes them by place. By name, each
/// column of each row was a lookup of its name in a hashed map (the profile that led here,
/// 2026-12-02, showed hashing at 3.5% of an audit rebuild's samples, but did not tell these
/// lookups from the fold's own maps).
mod col {
    pub const TX: usize = 0;
    pub const POSITION: usize = 1;
    pub const CASE: usize = 2;
    pub const EVENT_ID: usize = 3;
    pub const SEQUENCE: usize = 4;
    pub const EVENT_TYPE: usize = 5;
    pub const EVENT_VERSION: usize = 6;
    pub const RECORDED_AT: usize = 7;
    pub const PAYLOAD: usize = 8;
    pub const METADATA: usize = 9;
}

const SQLITE_READ: &str = "\
SELECT 0 AS tx, position, aggregate_id, event_id, sequence, event_type, event_version,
       recorded_at, payload, metadata
  FROM events
 WHERE aggregate_type = 'Case' AND position > ?1
 ORDER BY position
 LIMIT ";

impl Store {
    /// Up to `limit` events after `after`, in log order, read through the pool of `work`. An
    /// empty answer means the reader has caught up with everything that is final now.
    pub async fn read_log(
        &self,
        work: Work,
        after: LogPosition,
        limit: u32,
    ) -> Result<Vec<LogEvent>, StoreError> {
        // Each row is decoded as it arrives, while the database is still sending the rest: the
        // server's work and the decoding overlap instead of following each other (a rebuild
        // reads 5,000 events a batch, and decoding them took as long as the query).
        match &self.backend {
            Backend::Postgres {
                pool, background, ..
            } => {
                let sql = format!("{PG_READ}{limit}");
                let rows = sqlx::query(&sql)
                    .persistent(false)
                    .bind(after.txid.to_string())
                    .bind(after.position)
                    .fetch(background.pick(work, pool))
                    .map_err(StoreError::from)
                    .and_then(|row| {
                        std::future::ready(decode(&row, |row| {
                            let Xid8(txid) = row.try_get(col::TX)?;
                            let event_id: uuid::Uuid = row.try_get(col::EVENT_ID)?;
                            Ok((txid, EventId::from_uuid(event_id)))
                        }))
                    });
                collect(rows, limit).await
            }
            Backend::Sqlite {
                pool, background, ..
            } => {
                let sql = format!("{SQLITE_READ}{limit}");
                let rows = sqlx::query(&sql)
                    .bind(after.position)
                    .fetch(background.pick(work, pool))
                    .map_err(StoreError::from)
                    .and_then(|row| {
                        std::future::ready(decode(&row, |row| {
                            let event_id: String = row.try_get(col::EVENT_ID)?;
                            let event_id = EventId::parse(&event_id)
                                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                            Ok((row.try_get(col::TX)?, event_id))
                        }))
                    });
                collect(rows, limit).await
            }
        }
    }
}

/// The events of one read. The vector starts small, for a live read of a few events, and once
/// that fills it is sized for the whole batch at once (up to the projections' batch of 5,000; a
/// larger read grows from there). Collected by doubling instead, a batch of 5,000 events was
/// copied 11 times into ever larger buffers, each fresh from the kernel: a profile of an audit
/// rebuild (2026-12-01) spent 12% of the process's samples in those copies and the page faults
/// they took.
async fn collect(
    rows: impl futures::Stream<Item = Result<LogEvent, StoreError>>,
    limit: u32,
) -> Result<Vec<LogEvent>, StoreError> {
    const FIRST: usize = 64;
    let whole = limit.min(5_000) as usize;
    let batch = Vec::with_capacity(whole.min(FIRST));
    rows.try_fold(batch, move |mut batch, event| {
        if batch.len() == batch.capacity() && batch.len() < whole {
            batch.reserve_exact(whole - batch.len());
        }
        batch.push(event);
        std::future::ready(Ok(batch))
    })
    .await
}

impl Store {
    /// The position of the newest event that is final now: a reader starting here sees exactly
    /// the events that become final later.
    pub async fn log_head(&self) -> Result<LogPosition, StoreError> {
        let row: Option<(i64, i64)> = match &self.backend {
            Backend::Postgres { pool, .. } => {
                sqlx::query_as(
                    "SELECT txid::text::bigint, position FROM events \
                     WHERE aggregate_type = 'Case' AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
                     ORDER BY events.txid DESC, events.position DESC LIMIT 1",
                )
                .fetch_optional(pool)
                .await?
            }
            Backend::Sqlite { pool, .. } => {
                sqlx::query_as(
                    "SELECT 0, position FROM events WHERE aggregate_type = 'Case' \
                     ORDER BY position DESC LIMIT 1",
                )
                .fetch_optional(pool)
                .await?
            }
        };
        Ok(
            row.map_or(LogPosition::START, |(txid, position)| LogPosition {
                txid,
                position,
            }),
        )
    }
}

/// A PostgreSQL `xid8` (a 64-bit transaction id that never wraps), read in its binary form. The
/// log's positions hold it as an `i64`: ids stay far below 2^63.
struct Xid8(i64);

impl sqlx::Type<sqlx::Postgres> for Xid8 {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        sqlx::postgres::PgTypeInfo::with_name("xid8")
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for Xid8 {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let id = match value.format() {
            sqlx::postgres::PgValueFormat::Binary => {
                u64::from_be_bytes(value.as_bytes()?.try_into()?)
            }
            sqlx::postgres::PgValueFormat::Text => value.as_str()?.parse()?,
        };
        Ok(Xid8(i64::try_from(id)?))
    }
}

/// A log event from `row`, whose transaction id and event id `ids` reads (each store keeps them
/// in a type of its own).
fn decode<'r, R>(
    row: &'r R,
    ids: impl FnOnce(&'r R) -> Result<(i64, EventId), StoreError>,
) -> Result<LogEvent, StoreError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Json<HashMap<String, String>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let corrupt = |e: String| StoreError::Corrupt(e);
    let case: String = row.try_get(col::CASE)?;
    let (txid, event_id) = ids(row)?;
    let sequence: i64 = row.try_get(col::SEQUENCE)?;
    let position: i64 = row.try_get(col::POSITION)?;
    // As text, unchecked: whoever reads it parses it, and fails on what does not parse.
    let payload: String = row.try_get(col::PAYLOAD)?;
    let Json(stored_metadata): Json<HashMap<String, String>> = row.try_get(col::METADATA)?;
    Ok(LogEvent {
        at: LogPosition { txid, position },
        case_id: CaseId::parse(&case).map_err(|e| corrupt(e.to_string()))?,
        event: StoredEvent {
            event_id,
            sequence: sequence as u64,
            position,
            event_type: row.try_get(col::EVENT_TYPE)?,
            event_version: row.try_get(col::EVENT_VERSION)?,
            recorded_at: row.try_get(col::RECORDED_AT)?,
            payload,
            metadata: EventMetadata::from_map(&stored_metadata)
                .map_err(|e| corrupt(e.to_string()))?,
            stored_metadata,
        },
    })
}
