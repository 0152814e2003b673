//! The event store: PostgreSQL through postgres-es, or embedded SQLite through sqlite-es, with one
//! behaviour. Commands go through cqrs-es's `PersistedEventStore` in event-sourced mode (it
//! never applies an event twice; see ARCHITECTURE.md), in front of which sits a cache of case
//! states (`CaseCache`) that a stale entry can never fool: a decision made on it appends at a
//! sequence number the database already has, conflicts, and is retried on a fresh load. Reads of the added envelope columns
//! (event id, recorded_at, position), idempotency lookups and tokens use plain SQL that both
//! dialects accept.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use aggregates::{Case, CaseError, CaseEvent};
use chrono::{DateTime, Utc};

use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{AggregateError, EventEnvelope, EventStore};
use schemas::{ActorId, AgencyId, CaseId, EventId, EventMetadata, ProviderId, Role};
use serde_json::Value;
use sqlite_es::SqliteEventRepository;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{PgPool, Row, SqlitePool};

use crate::error::StoreError;

/// Runs the same body against whichever pool the store has. The body is type-checked once per
/// backend, so one query text serves both dialects.
macro_rules! on_pool {
    ($self:expr, $pool:ident => $body:expr) => {
        match &$self.backend {
            Backend::Postgres { pool: $pool, .. } => $body,
            Backend::Sqlite { pool: $pool, .. } => $body,
        }
    };
}

/// Runs CPU work (folding a batch ahead) on the blocking pool, so that the runtime's thread goes
/// on driving the database work of the batch before it (see `projector::catch_up`). Decoding
/// the log there too was tried and was slower (2026-12-01: the fhir and caseloads rebuilds fell
/// from 49-51% and 36-38% of the plain scan to 43-44% and 32-33%).
pub(crate) async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => Ok(done),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels it.
        Err(e) => Err(StoreError::Unexpected(format!(
            "work off the runtime's thread: {e}"
        ))),
    }
}

/// Begins a transaction that writes. On SQLite it is `BEGIN IMMEDIATE`: the write lock is taken
/// at once (waiting up to the busy timeout for another writer), so the transaction never holds a
/// read snapshot it then cannot upgrade, which SQLite refuses at once as "database is locked"
/// whatever the timeout. The embedded store so has one writer path: writers queue for the lock.
pub(crate) trait BeginWrite<DB: sqlx::Database> {
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, DB>, sqlx::Error>;
}

impl BeginWrite<sqlx::Postgres> for PgPool {
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

impl BeginWrite<sqlx::Sqlite> for SqlitePool {
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

/// Like `on_pool!`, with the pool of the given `Work` (on SQLite all work shares one pool).
macro_rules! on_pool_for {
    ($self:expr, $work:expr, $pool:ident => $body:expr) => {
        match &$self.backend {
            Backend::Postgres {
                pool, background, ..
            } => {
                let $pool = background.pick($work, pool);
                $body
            }
            Backend::Sqlite {
                pool, background, ..
            } => {
                let $pool = background.pick($work, pool);
                $body
            }
        }
    };
}

macro_rules! on_es {
    ($self:expr, $es:ident => $body:expr) => {
        match &$self.backend {
            Backend::Postgres { es: $es, .. } => $body,
            Backend::Sqlite { es: $es, .. } => $body,
        }
    };
}

/// Whether `e` is the database's refusal with SQLSTATE `code`.
pub(crate) fn is_code(e: &sqlx::Error, code: &str) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some(code))
}

pub mod backup;
mod bus;
mod cache;
mod copy;
mod green;
pub mod group_commit;
mod log;
mod pg_repository;
mod remembered;
mod wake;
#[macro_use]
pub mod projections;
mod billing;
pub mod fhir;
pub mod pg_pool;
pub mod reads;
mod search;
pub mod sqlite_pool;
use sqlite_pool::sqlite_pool_options;
pub mod subscriptions;

pub use billing::{BatchOf, BatchRecord, BatchRow, BillingFold};
pub use bus::RelayLease;
pub use cache::CaseCache;
pub use green::{Green, Swapped};
pub use log::{LogEvent, LogPosition};
use pg_repository::PgRepository;
pub use projections::{AuditFold, CaseloadsFold, Claim, ProjectorLeases};

/// How many case states the command path keeps in memory by default.
pub const DEFAULT_CACHED_CASES: usize = 10_000;

pub type CaseContext = EventStoreAggregateContext<Case>;

enum Backend {
    Postgres {
        /// The API's pool: commands (the group-commit writers), reads, tokens.
        pool: PgPool,
        background: Background<sqlx::Postgres>,
        es: PersistedEventStore<PgRepository, Case>,
    },
    Sqlite {
        pool: SqlitePool,
        /// The same pool again: SQLite has one writer whichever work asks.
        background: Background<sqlx::Sqlite>,
        es: PersistedEventStore<SqliteEventRepository, Case>,
    },
}

/// The work a database connection serves. On PostgreSQL each has a pool of its own, so that
/// none can starve another: a burst of API requests holding every connection cannot stall the
/// projections (their lag) or the relay (its commit-to-ack time), nor they the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Commands, reads, tokens, local event subscribers.
    Api,
    /// The projection engine: reading the log, applying batches, leases.
    Projections,
    /// The relay to NATS: reading the log, its checkpoint, its lease.
    Relay,
}

/// The pools of the work that runs behind the API.
struct Background<DB: sqlx::Database> {
    projections: sqlx::Pool<DB>,
    relay: sqlx::Pool<DB>,
}

impl<DB: sqlx::Database> Background<DB> {
    fn pick<'a>(&'a self, work: Work, api: &'a sqlx::Pool<DB>) -> &'a sqlx::Pool<DB> {
        match work {
            Work::Api => api,
            Work::Projections => &self.projections,
            Work::Relay => &self.relay,
        }
    }

    /// SQLite: every work on the one pool.
    fn shared(pool: &sqlx::Pool<DB>) -> Self {
        Self {
            projections: pool.clone(),
            relay: pool.clone(),
        }
    }
}

/// A connection acquired later than this is logged (`telemetry::pool_starvations` counts them):
/// any work waiting this long misses the latency targets by far.
pub const ACQUIRE_SLOW: Duration = Duration::from_millis(500);

/// Connections of the API's pool on PostgreSQL: the group-commit writers and the readers.
const API_CONNECTIONS: u32 = 20;

/// How long a request waits for a connection of the API's pool before it is answered 503.
const API_WAIT: Duration = Duration::from_secs(3);

/// How long the projections and the relay wait for one (they retry on their own).
const BACKGROUND_WAIT: Duration = Duration::from_secs(10);
/// The projection engine applies its projections side by side (one connection each) and reads
/// the log between batches.
const PROJECTION_CONNECTIONS: u32 = 5;
/// The relay reads the log and moves its checkpoint, one at a time.
const RELAY_CONNECTIONS: u32 = 2;

pub struct Store {
    backend: Backend,
    cache: CaseCache,
    /// Tokens looked up in the last `TOKEN_CACHE_TTL`, by hash (see `token`).
    tokens: std::sync::Mutex<HashMap<String, (std::time::Instant, StoredToken)>>,
    /// Counts this process's commits; `run_wakeups` tells the other replicas of them.
    commits: tokio::sync::watch::Sender<u64>,
    /// Changes when the log may have grown: this process committed, or (PostgreSQL) another
    /// replica said it did. Log followers (projector, relay, event stream) wake on a change
    /// instead of waiting for their next poll; polling remains the fallback.
    log_moved: tokio::sync::watch::Sender<u64>,
    /// This process's name among replicas: who applied a projection's batch, who holds a lease.
    replica: String,
    /// How long the events this process's projection engine applied had waited.
    applied_lag: crate::projector::AppliedLag,
    /// Projection steps that failed on a store error and were retried (`projection_step_retries`).
    step_retries: std::sync::atomic::AtomicU64,
    /// The PostgreSQL URL it was opened with (the client tools of `backup` connect with it).
    pg_url: Option<String>,
    /// What this process's projection appliers remember of the rows they last wrote.
    remembered: Remembrance,
    /// Whether this store's projection rows have one writer, this process's catch-up (a
    /// blue/green rebuild's copy): it may then fold a batch ahead of writing the one before.
    exclusive: bool,
    /// Whether this store's projection tables are being bulk-loaded (a blue/green copy before
    /// `Green::index`): primary keys only, rows by `COPY` where a projection can, nothing
    /// refused by a secondary unique index until it is built.
    bulk: bool,
    /// The most events a projection batch reads, if not the engine's default.
    log_batch: Option<u32>,
}

/// Per projection, the rows its last batch wrote (`remembered::Remembered`).
#[derive(Default)]
struct Remembrance {
    /// Each case's chain head.
    audit: remembered::Remembered<String>,
    caseloads: remembered::Remembered<aggregates::Case>,
    /// Each case's header.
    billing: remembered::Remembered<::projections::billing::BillingCase>,
}

/// A replica's default name: `<hostname>-<pid>-<4 random hex digits>`, so that two servers in
/// one process (as the tests run them) differ too.
pub fn default_replica_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let salt = &uuid::Uuid::new_v4().simple().to_string()[..4];
    format!("{host}-{}-{salt}", std::process::id())
}

pub use ::projections::log::StoredEvent;

/// An event of a case as a correction needs it.
#[derive(Debug, Clone)]
pub struct FoundEvent {
    pub sequence: u64,
    pub event_type: String,
    /// Who recorded it.
    pub author: Option<ActorId>,
}

/// What an earlier request with the same idempotency key did.
#[derive(Debug, Clone)]
pub struct IdempotentReply {
    pub request_hash: String,
    pub status: u16,
    pub reply: Value,
    pub version: u64,
}

/// A token's identity.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub actor_id: ActorId,
    pub role: Role,
    pub agency: AgencyId,
    /// The provider a `service` token speaks for.
    pub provider: Option<ProviderId>,
}

/// When a token was made and until when it holds, under its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLife {
    /// A UUID v7, shown by `linkage token list` and `GET /v1/tokens`; revocation names it.
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// None: never (service tokens only).
    pub expires_at: Option<DateTime<Utc>>,
}

/// A stored token, without its secret.
#[derive(Debug, Clone)]
pub struct StoredToken {
    pub record: TokenRecord,
    pub life: TokenLife,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// How long a token looked up is trusted without asking the store again: the bound on how long
/// a revocation through another replica takes to reach this one.
pub const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// Tokens remembered at most; past that, expired entries go, then all.
const TOKEN_CACHE_ENTRIES: usize = 10_000;

const TOKEN_COLUMNS: &str = "actor_id, role, agency_id, provider_id, token_id, created_at, \
                             expires_at, last_used_at, revoked_at";

fn stored_token<R: Row>(row: &R) -> Result<StoredToken, StoreError>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'c> String: sqlx::Decode<'c, R::Database> + sqlx::Type<R::Database>,
    for<'c> Option<String>: sqlx::Decode<'c, R::Database> + sqlx::Type<R::Database>,
    for<'c> DateTime<Utc>: sqlx::Decode<'c, R::Database> + sqlx::Type<R::Database>,
    for<'c> Option<DateTime<Utc>>: sqlx::Decode<'c, R::Database> + sqlx::Type<R::Database>,
{
    let corrupt = |e: String| StoreError::Corrupt(e);
    Ok(StoredToken {
        record: TokenRecord {
            actor_id: ActorId::parse(row.try_get::<String, _>("actor_id")?)
                .map_err(|e| corrupt(e.to_string()))?,
            role: Role::from_str(&row.try_get::<String, _>("role")?).map_err(corrupt)?,
            agency: AgencyId::parse(row.try_get::<String, _>("agency_id")?)
                .map_err(|e| corrupt(e.to_string()))?,
            provider: row
                .try_get::<Option<String>, _>("provider_id")?
                .map(|p| ProviderId::parse(p).map_err(|e| corrupt(e.to_string())))
                .transpose()?,
        },
        life: TokenLife {
            id: row.try_get("token_id")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
        },
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// The outcome of committing a command's events.
pub enum Commit {
    Done(Vec<EventEnvelope<Case>>),
    /// Another writer appended first: reload and decide again.
    Conflict,
}

const EVENT_COLUMNS: &str = "CAST(event_id AS TEXT) AS event_id, sequence, position, event_type, \
     event_version, recorded_at, CAST(payload AS TEXT) AS payload, metadata";

impl Store {
    /// PostgreSQL at `url`, migrated to the current schema; commands' events are written by up
    /// to `writers` group-commit writers at a time (`group_commit`).
    pub async fn postgres(url: &str, writers: usize) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse().map_err(StoreError::Connect)?;
        Self::postgres_with(Some(url), options, writers, None).await
    }

    /// PostgreSQL with these options. With `search_path`, every connection looks for tables
    /// there first and nothing is migrated: a shadow store over a migrated database (`green`).
    async fn postgres_with(
        url: Option<&str>,
        options: PgConnectOptions,
        writers: usize,
        search_path: Option<&str>,
    ) -> Result<Self, StoreError> {
        let pool_of = |connections: u32, wait: Duration, settings: &[(&str, &str)]| {
            let mut settings = settings.to_vec();
            if let Some(path) = search_path {
                settings.push(("search_path", path));
            }
            let options = options.clone().options(settings);
            pg_pool::pg_pool_options()
                .max_connections(connections)
                .acquire_timeout(wait)
                // A wait this long for a connection is logged as a warning: the work starved.
                .acquire_slow_threshold(ACQUIRE_SLOW)
                .connect_with(options)
        };
        // A request waits at most API_WAIT for a connection: while the database is down the API
        // answers 503 within seconds instead of holding every client.
        let pool = pool_of(API_CONNECTIONS, API_WAIT, &[])
            .await
            .map_err(StoreError::Connect)?;
        if search_path.is_none() {
            sqlx::migrate!("../ops/migrations/postgres")
                .run(&pool)
                .await?;
        }
        // A projection's rows and its checkpoint commit in one transaction, and the events it
        // reads are durable before anyone can see them. So a projection commit lost in a crash of
        // the database only moves the projection back to a checkpoint its rows agree with, and
        // the engine applies the same events again to the same rows: it need not wait for the
        // WAL flush (any later synchronous commit, a billing batch say, flushes it first).
        let projections = pool_of(
            PROJECTION_CONNECTIONS,
            BACKGROUND_WAIT,
            &[("synchronous_commit", "off")],
        )
        .await
        .map_err(StoreError::Connect)?;
        let relay = pool_of(RELAY_CONNECTIONS, BACKGROUND_WAIT, &[])
            .await
            .map_err(StoreError::Connect)?;
        let es = PersistedEventStore::new_event_store(PgRepository::new(pool.clone(), writers))
            .with_upcasters(aggregates::upcasters());
        Ok(Self {
            backend: Backend::Postgres {
                pool,
                background: Background { projections, relay },
                es,
            },
            cache: CaseCache::new(DEFAULT_CACHED_CASES),
            tokens: Default::default(),
            commits: tokio::sync::watch::Sender::new(0),
            log_moved: tokio::sync::watch::Sender::new(0),
            applied_lag: Default::default(),
            step_retries: Default::default(),
            pg_url: url.map(str::to_owned),
            remembered: Default::default(),
            exclusive: false,
            bulk: false,
            log_batch: None,
            replica: default_replica_id(),
        })
    }

    /// SQLite in `<data_dir>/linkage.db`, created and migrated if needed.
    pub async fn sqlite(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(StoreError::DataDir)?;
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join("linkage.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = sqlite_pool_options()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(StoreError::Connect)?;
        sqlx::migrate!("../ops/migrations/sqlite")
            .run(&pool)
            .await?;
        let es = PersistedEventStore::new_event_store(SqliteEventRepository::new(pool.clone()))
            .with_upcasters(aggregates::upcasters());
        Ok(Self {
            backend: Backend::Sqlite {
                background: Background::shared(&pool),
                pool,
                es,
            },
            cache: CaseCache::new(DEFAULT_CACHED_CASES),
            tokens: Default::default(),
            commits: tokio::sync::watch::Sender::new(0),
            log_moved: tokio::sync::watch::Sender::new(0),
            applied_lag: Default::default(),
            step_retries: Default::default(),
            pg_url: None,
            remembered: Default::default(),
            exclusive: false,
            bulk: false,
            log_batch: None,
            replica: default_replica_id(),
        })
    }

    /// How long the events this process's projection engine applied had waited, per projection.
    pub fn applied_lag(&self) -> &crate::projector::AppliedLag {
        &self.applied_lag
    }

    /// How many of this process's projection steps failed on a store error (a lock, a lost
    /// connection) and were retried: zero on a healthy store.
    pub fn projection_step_retries(&self) -> u64 {
        self.step_retries.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn note_step_retry(&self) {
        self.step_retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Names this process among replicas.
    pub fn with_replica(mut self, replica: impl Into<String>) -> Self {
        self.replica = replica.into();
        self
    }

    /// Caps a projection batch at `events` instead of the engine's default (5,000 on PostgreSQL,
    /// 500 on SQLite); a rebuild's copy inherits it.
    pub fn with_log_batch(mut self, events: u32) -> Self {
        self.log_batch = Some(events.max(1));
        self
    }

    /// The cap `with_log_batch` set, if any.
    pub fn log_batch(&self) -> Option<u32> {
        self.log_batch
    }

    /// Marks the store's projection rows as written by one catch-up alone (see `exclusive`).
    pub(crate) fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }

    /// Marks the store's projection tables as bulk-loaded (see `bulk`); only with `exclusive`.
    pub(crate) fn bulk_loading(mut self) -> Self {
        self.bulk = self.exclusive;
        self
    }

    /// Whether the projection tables are being bulk-loaded (see `bulk`).
    pub(crate) fn loads_in_bulk(&self) -> bool {
        self.bulk
    }

    /// Whether a catch-up may fold a batch ahead of writing the one before
    /// (`projector::catch_up`).
    pub fn folds_ahead(&self) -> bool {
        self.exclusive
    }

    /// Refuses folding ahead on a store other appliers may write: a fold ahead reads states
    /// before any claim, which only a sole writer may trust.
    pub(crate) fn may_fold_ahead(&self) -> Result<(), StoreError> {
        match self.exclusive {
            true => Ok(()),
            false => Err(StoreError::Unexpected(
                "a batch folded ahead on a store other appliers write".into(),
            )),
        }
    }

    /// This process's name among replicas.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Changes when the log may have grown (see `log_moved`).
    pub fn log_moved(&self) -> tokio::sync::watch::Receiver<u64> {
        self.log_moved.subscribe()
    }

    /// Whether one writer at a time may write this store (SQLite): a long transaction there
    /// makes every other writer wait.
    pub fn has_one_writer(&self) -> bool {
        matches!(self.backend, Backend::Sqlite { .. })
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Postgres { .. } => "postgres",
            Backend::Sqlite { .. } => "sqlite",
        }
    }

    /// Loads a case by replaying its whole stream from the database: what reads use.
    pub async fn load(&self, id: CaseId) -> Result<CaseContext, StoreError> {
        let id = id.to_string();
        on_es!(self, es => es.load_aggregate(&id).await).map_err(aggregate_error)
    }

    /// Loads a case for a command: from the cache when it holds the case, else by replay. A
    /// cached state may be stale (another process appended); `commit` then reports a conflict.
    ///
    /// The state is checked out of the cache: hand it back with `release` if the command does
    /// not commit (`commit` puts the new state back itself).
    pub async fn load_for_command(&self, id: CaseId) -> Result<CaseContext, StoreError> {
        if let Some((aggregate, version)) = self.cache.take(id) {
            return Ok(CaseContext {
                aggregate_id: id.to_string(),
                aggregate,
                current_sequence: version,
                current_snapshot: None,
            });
        }
        self.load(id).await
    }

    /// Whether `version` is still the newest event of the case's stream: a command refused on a
    /// state checked out of the cache answers only if it is (one primary-key lookup, on the
    /// refusal path only).
    pub async fn is_current(&self, id: CaseId, version: usize) -> Result<bool, StoreError> {
        let sql = "SELECT COALESCE(MAX(sequence), 0) FROM events \
                   WHERE aggregate_type = 'Case' AND aggregate_id = $1";
        let id = id.to_string();
        on_pool!(self, pool => {
            let newest: i64 = sqlx::query_scalar(sql).bind(&id).fetch_one(pool).await?;
            Ok(newest as usize == version)
        })
    }

    /// The case's turn in this process's command path (see `CaseCache::turn`).
    pub async fn case_turn(&self, id: CaseId) -> tokio::sync::OwnedMutexGuard<()> {
        self.cache.turn(id).await
    }

    /// Drops a case from the command cache (bulk loaders that will not touch it again).
    pub fn uncache(&self, id: CaseId) {
        self.cache.forget(id);
    }

    /// Returns an unchanged, checked-out state to the cache (a refused or unauthorised command).
    pub fn release(&self, id: CaseId, context: CaseContext) {
        if context.aggregate.exists() {
            self.cache
                .put(id, context.aggregate, context.current_sequence);
        }
    }

    /// Appends `events` after the context's version, all or nothing. `context.aggregate` must
    /// already have the events applied (as `Case::handle` leaves it): it becomes the cached state.
    pub async fn commit(
        &self,
        id: CaseId,
        events: Vec<CaseEvent>,
        mut context: CaseContext,
        metadata: &EventMetadata,
    ) -> Result<Commit, StoreError> {
        // Event-sourced mode never reads the aggregate on commit: take it instead of cloning.
        let after = std::mem::take(&mut context.aggregate);
        let metadata = metadata.to_map();
        match on_es!(self, es => es.commit(events, context, metadata).await) {
            Ok(done) => {
                if let Some(last) = done.last() {
                    self.cache.put(id, after, last.sequence);
                }
                self.commits.send_modify(|n| *n = n.wrapping_add(1));
                self.log_moved.send_modify(|n| *n = n.wrapping_add(1));
                Ok(Commit::Done(done))
            }
            Err(AggregateError::AggregateConflict) => {
                self.cache.forget(id);
                Ok(Commit::Conflict)
            }
            Err(e) => {
                self.cache.forget(id);
                Err(aggregate_error(e))
            }
        }
    }

    /// Every event of a case, oldest first, with its envelope.
    pub async fn events_of(&self, id: CaseId) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE aggregate_type = 'Case' AND aggregate_id = $1 ORDER BY sequence"
        );
        let id = id.to_string();
        on_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(&id).fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    let event_id: String = row.try_get("event_id")?;
                    let sequence: i64 = row.try_get("sequence")?;
                    let position: Option<i64> = row.try_get("position")?;
                    let payload: String = row.try_get("payload")?;
                    let Json(stored_metadata): Json<HashMap<String, String>> = row.try_get("metadata")?;
                    Ok(StoredEvent {
                        event_id: EventId::parse(&event_id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        sequence: sequence as u64,
                        position: position.unwrap_or_default(),
                        event_type: row.try_get("event_type")?,
                        event_version: row.try_get("event_version")?,
                        recorded_at: row.try_get("recorded_at")?,
                        payload,
                        metadata: EventMetadata::from_map(&stored_metadata).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        stored_metadata,
                    })
                })
                .collect()
        })
    }

    /// One event of a case, found by its id: its sequence, type and author.
    pub async fn find_event(
        &self,
        case: CaseId,
        event: EventId,
    ) -> Result<Option<FoundEvent>, StoreError> {
        let sql = "SELECT sequence, event_type, metadata FROM events \
                   WHERE aggregate_type = 'Case' AND aggregate_id = $1 AND CAST(event_id AS TEXT) = $2";
        let (case, event) = (case.to_string(), event.to_string());
        on_pool!(self, pool => {
            let row = sqlx::query(sql).bind(&case).bind(&event).fetch_optional(pool).await?;
            row.map(|r| {
                let Json(metadata): Json<HashMap<String, String>> = r.try_get("metadata")?;
                Ok(FoundEvent {
                    sequence: r.try_get::<i64, _>("sequence")? as u64,
                    event_type: r.try_get("event_type")?,
                    author: EventMetadata::from_map(&metadata)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?
                        .actor_id,
                })
            })
            .transpose()
        })
    }

    /// The answer an earlier request with this idempotency scope got, if any.
    pub async fn idempotent_reply(
        &self,
        scope: &str,
    ) -> Result<Option<IdempotentReply>, StoreError> {
        let sql = "SELECT sequence, metadata FROM events WHERE idempotency_scope = $1 \
                   ORDER BY sequence DESC LIMIT 1";
        on_pool!(self, pool => {
            let Some(row) = sqlx::query(sql).bind(scope).fetch_optional(pool).await? else {
                return Ok(None);
            };
            let sequence: i64 = row.try_get("sequence")?;
            let Json(meta): Json<HashMap<String, String>> = row.try_get("metadata")?;
            let idempotency = EventMetadata::from_map(&meta)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?
                .idempotency
                .ok_or_else(|| StoreError::Corrupt("an event found by its idempotency scope has none".into()))?;
            Ok(Some(IdempotentReply {
                request_hash: idempotency.request_hash,
                status: idempotency.reply_status,
                reply: serde_json::from_str(&idempotency.reply)
                    .map_err(|e| StoreError::Corrupt(format!("a stored reply is not JSON: {e}")))?,
                version: sequence as u64,
            }))
        })
    }

    /// Stores a token (its hash only) under `id`.
    pub async fn insert_token(
        &self,
        hash: &str,
        token: &TokenRecord,
        life: &TokenLife,
    ) -> Result<(), StoreError> {
        let sql =
            "INSERT INTO tokens (token_hash, actor_id, role, agency_id, provider_id, token_id, \
                   created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(hash)
                .bind(token.actor_id.as_str())
                .bind(token.role.as_str())
                .bind(token.agency.as_str())
                .bind(token.provider.as_ref().map(ProviderId::as_str))
                .bind(&life.id)
                .bind(life.created_at)
                .bind(life.expires_at)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The token with this hash, unless it was revoked (expired ones are returned: the caller
    /// tells an expired token from an unknown one). A token found is remembered for
    /// `TOKEN_CACHE_TTL`, so a busy client costs the store one lookup per interval, not one per
    /// request; a revocation through another replica therefore takes effect here within that
    /// bound (through this one, at once). Unknown tokens are never remembered.
    pub async fn token(&self, hash: &str) -> Result<Option<StoredToken>, StoreError> {
        if let Some((at, found)) = self.tokens.lock().expect("not poisoned").get(hash) {
            if at.elapsed() < TOKEN_CACHE_TTL {
                return Ok(Some(found.clone()));
            }
        }
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_hash = $1 AND revoked_at IS NULL"
        );
        let found = on_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(hash).fetch_optional(pool).await?;
            row.as_ref().map(stored_token).transpose()?
        });
        let mut cache = self.tokens.lock().expect("not poisoned");
        match &found {
            Some(token) => {
                if cache.len() >= TOKEN_CACHE_ENTRIES {
                    cache.retain(|_, (at, _)| at.elapsed() < TOKEN_CACHE_TTL);
                    if cache.len() >= TOKEN_CACHE_ENTRIES {
                        cache.clear();
                    }
                }
                cache.insert(hash.to_owned(), (std::time::Instant::now(), token.clone()));
            }
            None => {
                cache.remove(hash);
            }
        }
        Ok(found)
    }

    /// Up to `limit` tokens after the id `after`, by id (ids are UUID v7: creation order),
    /// revoked ones included. Never the secret: only its hash is stored.
    pub async fn tokens(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredToken>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_id > $1 ORDER BY token_id LIMIT $2"
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(&sql)
                .bind(after.unwrap_or(""))
                .bind(limit as i64)
                .fetch_all(pool)
                .await?;
            rows.iter().map(stored_token).collect()
        })
    }

    /// Revokes a token from `at` on; false when there is no token with this id. Revoking a
    /// revoked token keeps its first revocation time.
    pub async fn revoke_token(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let sql = "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE token_id = $1";
        let done = on_pool!(self, pool => sqlx::query(sql).bind(id).bind(at).execute(pool).await?.rows_affected());
        // Refused here from the next request on; other replicas' caches let it go within
        // `TOKEN_CACHE_TTL`.
        self.tokens
            .lock()
            .expect("not poisoned")
            .retain(|_, (_, t)| t.life.id != id);
        Ok(done == 1)
    }

    /// Records that a token was used at `at`.
    pub async fn touch_token(&self, id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        for (_, t) in self.tokens.lock().expect("not poisoned").values_mut() {
            if t.life.id == id {
                t.last_used_at = Some(at);
            }
        }
        let sql = "UPDATE tokens SET last_used_at = $2 WHERE token_id = $1";
        on_pool!(self, pool => {
            sqlx::query(sql).bind(id).bind(at).execute(pool).await?;
        });
        Ok(())
    }

    pub async fn has_admin_token(&self) -> Result<bool, StoreError> {
        let sql = "SELECT COUNT(*) AS n FROM tokens WHERE role = 'admin' AND revoked_at IS NULL";
        on_pool!(self, pool => {
            let n: i64 = sqlx::query(sql).fetch_one(pool).await?.try_get("n")?;
            Ok(n > 0)
        })
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
        for work in [Work::Projections, Work::Relay] {
            on_pool_for!(self, work, pool => pool.close().await);
        }
    }
}

fn aggregate_error(e: AggregateError<CaseError>) -> StoreError {
    match e {
        AggregateError::UserError(e) => StoreError::Corrupt(format!("unexpected refusal: {e}")),
        AggregateError::AggregateConflict => StoreError::Corrupt("unexpected conflict".into()),
        AggregateError::DatabaseConnectionError(e) => StoreError::Unavailable(e.to_string()),
        AggregateError::DeserializationError(e) => StoreError::Corrupt(e.to_string()),
        // postgres-es reports a pool that timed out, or a server shutting down, as unknown.
        AggregateError::UnexpectedError(e) => match e.downcast_ref::<sqlx::Error>() {
            Some(db) if crate::error::unreachable(db) => StoreError::Unavailable(e.to_string()),
            Some(db) if crate::error::full(db) => StoreError::Full(e.to_string()),
            _ => StoreError::Unexpected(e.to_string()),
        },
    }
}
