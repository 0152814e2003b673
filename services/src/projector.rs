//! The projection engine: each projection follows the global log from its durable checkpoint.
//! It catches up at start, then waits for the log to move (a commit in this process, or another
//! replica's word: `Store::log_moved`) or for its poll period. It reads each batch of the log
//! once for every projection whose checkpoint stands at its start; a batch and the checkpoint
//! after it commit together, so
//! a crash between an event's commit and its projection loses nothing and applies nothing twice.
//! A projection that cannot apply an event stops there, visibly (its checkpoint records the
//! error; `linkage projections status` and /readyz show it) instead of skipping the event.
//!
//! Replicas on one database: each batch is claimed by a compare-and-set on the checkpoint it was
//! read after, inside the batch's transaction (`store::Claim`), so under any interleaving exactly
//! one applier commits a given batch and a loser writes nothing. On top of that, each projection
//! has a lease (`store::ProjectorLeases`): one replica runs it, the others stand by and take over
//! when its session ends. The lease saves work; the claim is what makes double application
//! impossible, also while a lease changes hands or a rebuild runs beside a server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;

use futures::future::BoxFuture;
use projections::audit::{chain, chain_input, GENESIS};
use projections::log::{LogEvent, LogPosition};
use schemas::CaseId;
use serde::Serialize;
use tokio::sync::watch;

use crate::error::StoreError;
use crate::store::{Claim, Store, Work};

/// The most events one batch reads and applies. A projection rewrote each case a batch touches
/// once per batch (since 2026-12-02 only those whose state the batch changed, not a case's
/// contacts alone), so a projection that has fallen behind catches up faster in larger batches:
/// in the HTTP benchmark (16 connections posting contacts to 128 cases, 2026-11-30), 5,000
/// instead of 500 left it 1,351-4,240 events behind when the clients stopped, not 12,546-16,958,
/// and caught up in 0.5 s instead of 7-10 s. SQLite keeps 500: its one writer waits for a batch's
/// transaction, and commands must not wait long.
fn batch_size(store: &Store) -> u32 {
    if let Some(events) = store.log_batch() {
        events
    } else if store.has_one_writer() {
        500
    } else {
        5_000
    }
}

/// How soon an engine woken by a commit looks again when the commit's events were not final yet
/// (doubling each time, up to the poll period).
const CHASE: Duration = Duration::from_millis(5);

/// How often a busy engine re-checks its leases (an idle one checks at every poll).
const LEASE_CHECK: Duration = Duration::from_secs(1);

/// A read model that follows the global log. The engine reads a batch after its checkpoint and
/// hands it to `apply`, which claims it (`store::Claim`), folds it (pure code in the projections
/// crate) and writes the rows and the checkpoint past the batch in one transaction. `reset` drops
/// the rows and the checkpoint for a rebuild.
pub trait Projection: Sync {
    /// Its name: the checkpoint's key, and what `linkage projections` and /readyz call it.
    fn name(&self) -> &'static str;
    /// Applies `batch` and moves the checkpoint past it, atomically, if the checkpoint still
    /// stands at `claim.from`; false (nothing written) if another applier moved it first. An
    /// event the fold cannot apply is `StoreError::CannotApply`.
    fn apply<'a>(
        &'a self,
        store: &'a Store,
        claim: Claim<'a>,
        batch: &'a [LogEvent],
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Folds `batch`, read after `from`, into the rows it writes, without writing them: only on
    /// a store whose rows one catch-up alone writes (`Store::folds_ahead`), so that batch n+1 is
    /// folded while batch n is written. None: this projection folds as it writes (`apply`).
    fn fold<'a>(
        &'a self,
        store: &'a Store,
        from: LogPosition,
        batch: Arc<Vec<LogEvent>>,
    ) -> BoxFuture<'a, Result<Option<Folded>, StoreError>>;
    /// Whether `fold` folds ahead (else it gives None and `write` applies).
    fn folds_ahead(&self) -> bool;
    /// Writes what `fold` made of `batch` and moves the checkpoint past it, atomically, if the
    /// checkpoint still stands at `claim.from` (as `apply`; without a fold it is `apply`).
    fn write<'a>(
        &'a self,
        store: &'a Store,
        claim: Claim<'a>,
        batch: &'a [LogEvent],
        folded: Option<Folded>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Drops the rows and the checkpoint, in one transaction.
    fn reset<'a>(&'a self, store: &'a Store) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The tables it writes (a reset empties them in this order; a blue/green rebuild copies
    /// them).
    fn tables(&self) -> &'static [&'static str];
}

/// A batch a projection folded ahead of writing it (`Projection::fold`); each projection's
/// `write` knows its own type.
pub type Folded = Box<dyn std::any::Any + Send>;

/// A projection: its name, the store method that applies a batch, optionally the two that fold
/// one ahead and write it, and the tables a reset empties (in order).
macro_rules! projection {
    ($(#[$doc:meta])* $type:ident, $name:literal, $apply:ident, [$($table:literal),+]) => {
        projection!($(#[$doc])* $type, $name, $apply, [$($table),+], ahead: false,
            folds: |_store, _from, _batch| async { Ok(None) },
            writes: |store: &'a Store, claim, batch, _folded| store.$apply($name, claim, batch));
    };
    ($(#[$doc:meta])* $type:ident, $name:literal, $apply:ident, [$($table:literal),+],
     $fold:ident, $write:ident, $fold_type:ty) => {
        projection!($(#[$doc])* $type, $name, $apply, [$($table),+], ahead: true,
            folds: |store: &'a Store, from, batch| async move {
                Ok(Some(Box::new(store.$fold(from, batch).await?) as Folded))
            },
            writes: |store: &'a Store, claim, batch, folded: Option<Folded>| async move {
                match folded.map(|f| f.downcast::<$fold_type>()) {
                    Some(Ok(folded)) => store.$write($name, claim, batch, *folded).await,
                    _ => store.$apply($name, claim, batch).await,
                }
            });
    };
    ($(#[$doc:meta])* $type:ident, $name:literal, $apply:ident, [$($table:literal),+],
     ahead: $ahead:literal, folds: $folds:expr, writes: $writes:expr) => {
        $(#[$doc])*
        pub struct $type;

        impl Projection for $type {
            fn name(&self) -> &'static str {
                $name
            }
            fn apply<'a>(
                &'a self,
                store: &'a Store,
                claim: Claim<'a>,
                batch: &'a [LogEvent],
            ) -> BoxFuture<'a, Result<bool, StoreError>> {
                Box::pin(store.$apply($name, claim, batch))
            }
            fn fold<'a>(
                &'a self,
                store: &'a Store,
                from: LogPosition,
                batch: Arc<Vec<LogEvent>>,
            ) -> BoxFuture<'a, Result<Option<Folded>, StoreError>> {
                Box::pin(($folds)(store, from, batch))
            }
            fn folds_ahead(&self) -> bool {
                $ahead
            }
            fn write<'a>(
                &'a self,
                store: &'a Store,
                claim: Claim<'a>,
                batch: &'a [LogEvent],
                folded: Option<Folded>,
            ) -> BoxFuture<'a, Result<bool, StoreError>> {
                Box::pin(($writes)(store, claim, batch, folded))
            }
            fn reset<'a>(&'a self, store: &'a Store) -> BoxFuture<'a, Result<(), StoreError>> {
                Box::pin(store.reset_projection($name, self.tables()))
            }
            fn tables(&self) -> &'static [&'static str] {
                &[$($table),+]
            }
        }
    };
}

projection!(
    /// The hash-chained audit trail of every case (`projections::audit`).
    AuditTrail,
    "audit_trail",
    project_audit,
    ["audit_entries"],
    fold_audit,
    write_audit,
    crate::store::AuditFold
);
projection!(
    /// Each case's folded state and contact rows for caseload views (`projections::caseload`).
    Caseloads,
    "caseloads",
    project_caseloads,
    ["caseload_contacts", "caseload_cases"],
    fold_caseloads,
    write_caseloads,
    crate::store::CaseloadsFold
);
projection!(
    /// Each case's billing header, contacts and months (`projections::billing`).
    Billing,
    "billing",
    project_billing,
    ["billing_case_months", "billing_contacts", "billing_cases"],
    fold_billing,
    write_billing,
    crate::store::BillingFold
);

projection!(
    /// Referrals as FHIR resources, and the rows `/fhir/r4` searches (`projections::fhir`).
    Fhir,
    "fhir",
    project_fhir,
    ["fhir_tasks", "fhir_cases"]
);

/// Every projection this server runs: the engine, `linkage projections status|rebuild` and
/// /readyz all read this list.
pub static PROJECTIONS: &[&dyn Projection] = &[&AuditTrail, &Caseloads, &Billing, &Fhir];

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("unknown projection `{0}`; known: {known}", known = names().join(", "))]
    Unknown(String),
    #[error("projection {name} is stopped: {error}")]
    Stopped { name: String, error: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The registered projections' names.
pub fn names() -> Vec<&'static str> {
    PROJECTIONS.iter().map(|p| p.name()).collect()
}

/// The registered projection called `name`.
pub fn known(name: &str) -> Result<&'static dyn Projection, ProjectionError> {
    PROJECTIONS
        .iter()
        .copied()
        .find(|p| p.name() == name)
        .ok_or_else(|| ProjectionError::Unknown(name.to_owned()))
}

/// What one step of a projection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stepped {
    /// Applied this many events (0: it had caught up with the log).
    Applied(usize),
    /// Another applier moved the checkpoint first; this one wrote nothing.
    Lost,
}

/// Applies the next batch after the checkpoint, on behalf of this store's replica.
pub async fn step(store: &Store, projection: &dyn Projection) -> Result<Stepped, ProjectionError> {
    step_together(store, &[projection])
        .await
        .pop()
        .expect("one result per projection")
}

/// Applies the next batch to each of `projections`, reading the log once for all those whose
/// checkpoints stand at one position (in a steady state, all of them): the same events, read
/// and decoded once instead of once per projection. The results are in `projections`' order.
///
/// On PostgreSQL the projections apply a batch side by side, each in its own transaction. In
/// `linkage-bench projections` on 2026-11-30 (commands at half the measured capacity,
/// alternating builds) lag p99 was 136/168/199 ms one after another and 77/86/92 ms side by side
/// (audit_trail/caseloads/billing): the last no longer waits for the other two. Runs vary widely
/// (README, Performance), but the slowest projection did better side by side in every pair
/// measured. The price is peak throughput: three transactions at once take a larger share of
/// the CPU from commands, and the HTTP benchmark at saturation fell from 49%/48% to 43%/45% of
/// the raw INSERT.
pub async fn step_together(
    store: &Store,
    projections: &[&dyn Projection],
) -> Vec<Result<Stepped, ProjectionError>> {
    step_from_known(store, projections, &mut Known::default()).await
}

/// Where each projection's checkpoint stood after this engine's last step of it, as far as
/// this engine knows: a step starts from there without reading the checkpoint (four round
/// trips a step saved, about 150 steps a second under load). Knowledge is only a guess at
/// where to read from: the claim compares it with the checkpoint inside the batch's
/// transaction, so a checkpoint another replica moved (or stopped, or reset) makes the step
/// `Lost`, and the next step reads the checkpoint again.
#[derive(Debug, Default)]
pub struct Known(HashMap<&'static str, LogPosition>);

impl Known {
    /// After a step of `name` that read up to `to`: applied, the checkpoint stands at `to`;
    /// anything else (lost to another applier, failed), it is read again next time.
    fn note(
        &mut self,
        name: &'static str,
        result: &Result<Stepped, ProjectionError>,
        to: LogPosition,
    ) {
        match result {
            Ok(Stepped::Applied(_)) => {
                self.0.insert(name, to);
            }
            Ok(Stepped::Lost) | Err(_) => {
                self.0.remove(name);
            }
        }
    }
}

/// `step_together`, starting each projection from where `known` has it (reading the
/// checkpoint of any other), and keeping `known` up to date.
pub async fn step_from_known(
    store: &Store,
    projections: &[&dyn Projection],
    known: &mut Known,
) -> Vec<Result<Stepped, ProjectionError>> {
    let mut results: Vec<Option<Result<Stepped, ProjectionError>>> =
        projections.iter().map(|_| None).collect();
    let mut waiting: Vec<(usize, LogPosition)> = Vec::new();
    for (i, projection) in projections.iter().enumerate() {
        if let Some(&at) = known.0.get(projection.name()) {
            waiting.push((i, at));
            continue;
        }
        match standing(store, *projection).await {
            Ok(from) => waiting.push((i, from)),
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    while let Some(&(_, from)) = waiting.first() {
        let (here, later): (Vec<_>, Vec<_>) = waiting.into_iter().partition(|(_, at)| *at == from);
        waiting = later;
        match store
            .read_log(Work::Projections, from, batch_size(store))
            .await
        {
            Ok(batch) if store.has_one_writer() => {
                // SQLite: one writer at a time, so one projection's transaction at a time.
                let to = batch.last().map_or(from, |e| e.at);
                for (i, _) in here {
                    let result = apply(store, projections[i], from, &batch).await;
                    known.note(projections[i].name(), &result, to);
                    results[i] = Some(result);
                }
            }
            Ok(batch) => {
                // PostgreSQL: the projections apply the batch side by side, so that none waits
                // for the others' transactions (see `step_together`).
                let to = batch.last().map_or(from, |e| e.at);
                let applied = futures::future::join_all(
                    here.iter()
                        .map(|(i, _)| apply(store, projections[*i], from, &batch)),
                )
                .await;
                for ((i, _), result) in here.into_iter().zip(applied) {
                    known.note(projections[i].name(), &result, to);
                    results[i] = Some(result);
                }
            }
            Err(e) => {
                // The first projection reading here gets the error, the others its message (the
                // error is not `Clone`); each is retried like any store failure.
                let message = e.to_string();
                let mut error = Some(e);
                for (i, _) in here {
                    known.0.remove(projections[i].name());
                    let e = error
                        .take()
                        .unwrap_or_else(|| StoreError::Unavailable(message.clone()));
                    results[i] = Some(Err(ProjectionError::Store(e)));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every projection has a result"))
        .collect()
}

/// Where a running projection's checkpoint stands; a stopped projection's error.
async fn standing(
    store: &Store,
    projection: &dyn Projection,
) -> Result<LogPosition, ProjectionError> {
    let checkpoint = store
        .checkpoint(Work::Projections, projection.name())
        .await?;
    match checkpoint.error {
        Some(error) => Err(ProjectionError::Stopped {
            name: projection.name().to_owned(),
            error,
        }),
        None => Ok(checkpoint.at),
    }
}

/// Projection lag measured from inside the engine: for every event a projection applied, the
/// time from its commit (the `recorded_at` the database stamped) to the commit of the batch that
/// applied it, in milliseconds, per projection. Every event is counted, nothing is sampled, and
/// nothing is asked of the database. The time is the machine's, not the application clock: this
/// measures, it decides nothing.
#[derive(Default)]
pub struct AppliedLag {
    by_projection: std::sync::Mutex<HashMap<&'static str, Histogram<u64>>>,
}

impl AppliedLag {
    fn record(&self, name: &'static str, batch: &[LogEvent], applied_at: DateTime<Utc>) {
        let mut all = self
            .by_projection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let histogram = all.entry(name).or_insert_with(|| {
            Histogram::new_with_bounds(1, 24 * 3_600_000, 3).expect("valid histogram bounds")
        });
        for e in batch {
            let ms = (applied_at - e.event.recorded_at).num_milliseconds();
            histogram.saturating_record(ms.max(0) as u64);
        }
    }

    /// What `name` applied since the last take (empty if nothing), and a fresh start.
    pub fn take(&self, name: &str) -> Option<Histogram<u64>> {
        self.by_projection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name)
    }
}

/// Applies `batch`, read after `from`, to a projection whose checkpoint stood at `from`.
async fn apply(
    store: &Store,
    projection: &dyn Projection,
    from: LogPosition,
    batch: &[LogEvent],
) -> Result<Stepped, ProjectionError> {
    let claim = Claim {
        from,
        by: store.replica(),
    };
    let applied = projection.apply(store, claim, batch).await;
    settle(store, projection, batch, applied).await
}

/// What a batch's application came to: applied, lost to another applier, or (an event the fold
/// cannot apply) the projection stopped there, visibly; an event is never skipped.
async fn settle(
    store: &Store,
    projection: &dyn Projection,
    batch: &[LogEvent],
    applied: Result<bool, StoreError>,
) -> Result<Stepped, ProjectionError> {
    let name = projection.name();
    match applied {
        Ok(true) => {
            store.applied_lag().record(name, batch, Utc::now());
            Ok(Stepped::Applied(batch.len()))
        }
        Ok(false) => {
            tracing::debug!(projection = name, "another applier took the batch first");
            Ok(Stepped::Lost)
        }
        Err(StoreError::CannotApply(e)) => {
            let error = e.to_string();
            store.mark_projection_failed(name, &error).await?;
            Err(ProjectionError::Stopped {
                name: name.to_owned(),
                error,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Applies batches until the projection has caught up with the log; `progress` gets the running
/// total after each batch. Batches another applier took are read again from its checkpoint.
///
/// Batches go through stages that overlap. On a store whose rows this catch-up alone writes (a
/// blue/green rebuild's copy, `Store::folds_ahead`): while batch n is written, batch n+1 is
/// folded (on the blocking pool) and batch n+2 read. On any other, a batch is folded as it is
/// written, inside its claim (`Projection::apply`), while the next is read.
pub async fn catch_up(
    store: &Store,
    projection: &dyn Projection,
    mut progress: impl FnMut(u64),
) -> Result<u64, ProjectionError> {
    let read = |after: Option<LogPosition>| async move {
        match after {
            Some(after) => store
                .read_log(Work::Projections, after, batch_size(store))
                .await
                .map(Arc::new),
            None => Ok(Arc::new(Vec::new())),
        }
    };
    if !(store.folds_ahead() && projection.folds_ahead()) {
        return catch_up_folding_in_claim(store, projection, progress).await;
    }
    let fold = |from: LogPosition, batch: Arc<Vec<LogEvent>>| async move {
        match batch.is_empty() {
            false => projection.fold(store, from, batch).await,
            true => Ok(None),
        }
    };
    let end = |batch: &[LogEvent]| batch.last().map(|e| e.at);
    let mut total = 0u64;
    let mut from = standing(store, projection).await?;
    // Batch n, what its fold made of it, and batch n+1.
    let mut batch = read(Some(from)).await?;
    let (mut folded, next) = tokio::join!(fold(from, batch.clone()), read(end(&batch)));
    let mut next = next?;
    while let Some(next_from) = end(&batch) {
        let claim = Claim {
            from,
            by: store.replica(),
        };
        let written = async {
            match folded {
                Ok(folded) => projection.write(store, claim, &batch, folded).await,
                Err(e) => Err(e),
            }
        };
        let (written, next_folded, after_next) =
            tokio::join!(written, fold(next_from, next.clone()), read(end(&next)));
        match settle(store, projection, &batch, written).await? {
            Stepped::Applied(n) => {
                total += n as u64;
                progress(total);
                from = next_from;
                batch = next;
                folded = next_folded;
                next = after_next?;
            }
            // Another applier took the batch: go on from wherever it left the checkpoint.
            Stepped::Lost => {
                from = standing(store, projection).await?;
                batch = read(Some(from)).await?;
                let (f, n) = tokio::join!(fold(from, batch.clone()), read(end(&batch)));
                (folded, next) = (f, n?);
            }
        }
    }
    Ok(total)
}

/// `catch_up` on a store other appliers may write: each batch folded inside its claim
/// (`Projection::apply`), the next read meanwhile.
async fn catch_up_folding_in_claim(
    store: &Store,
    projection: &dyn Projection,
    mut progress: impl FnMut(u64),
) -> Result<u64, ProjectionError> {
    let read = |after| store.read_log(Work::Projections, after, batch_size(store));
    let mut total = 0u64;
    let mut from = standing(store, projection).await?;
    let mut batch = read(from).await?;
    while let Some(last) = batch.last() {
        let next_from = last.at;
        let (applied, next) = tokio::join!(apply(store, projection, from, &batch), read(next_from));
        match applied? {
            Stepped::Applied(n) => {
                total += n as u64;
                progress(total);
                from = next_from;
                batch = next?;
            }
            // Another applier took the batch: go on from wherever it left the checkpoint.
            Stepped::Lost => {
                from = standing(store, projection).await?;
                batch = read(from).await?;
            }
        }
    }
    Ok(total)
}

/// The default of `Config::projection_step_period_ms`: see `pace`.
pub const STEP_PERIOD_MS: u64 = 40;

/// How long the engine waits before its next step, after a step that applied events and
/// started `took` ago: none after a full batch (the projection is behind: it goes on at once)
/// or a claim lost to another applier (`full` in both cases), else the rest of `period`. While
/// commands keep arriving, steps then start at most once a period and each applies what arrived
/// meanwhile, instead of one small batch after another. The first step after an idle spell is
/// not held: the wait follows a step that applied events.
///
/// Each step pays fixed costs whatever its size: a read of the log, and per projection a
/// transaction with its claim, its checkpoint and a flush of the WAL at commit, and (then) one
/// state row per case it touched. In `linkage-bench http` (2026-12-02, alternating runs, README Performance)
/// a period of 40 ms took 12-23% off an HTTP contact's CPU (each run's mean against the raw
/// INSERT's): with one core taken, HTTP medians 59%, 64% and 63% of the raw INSERT against 55%,
/// 61% and 53% back to back; on a quiet machine 80% against 68%. The projections' lag p99 there
/// rose from 22-60 ms to 60-80 ms.
/// Counted from the step's start, the period adds nothing where steps already take longer.
fn pace(full: bool, took: Duration, period: Duration) -> Duration {
    if full {
        Duration::ZERO
    } else {
        period.saturating_sub(took)
    }
}

/// Runs the projections whose leases this replica holds until `stop` turns true, taking over
/// the others' leases when their holders go. An idle engine looks at the log every `idle` (and
/// whenever it moves); a busy one starts a step at most once a `period` (`pace`).
pub async fn run(
    store: Arc<Store>,
    idle: Duration,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let names = names();
    let mut leases = store.projector_leases();
    let mut checked: Option<tokio::time::Instant> = None;
    let mut stopped: Vec<&str> = Vec::new();
    let mut moved = store.log_moved();
    let mut chase: Option<Duration> = None;
    let mut known = Known::default();
    loop {
        let mut busy = false;
        if checked.is_none_or(|at| at.elapsed() >= LEASE_CHECK) {
            if let Err(e) = store.take_leases(&mut leases, &names).await {
                tracing::warn!(error = %e, "could not take or keep the projection leases; retrying");
            }
            checked = Some(tokio::time::Instant::now());
        }
        let running: Vec<&dyn Projection> = PROJECTIONS
            .iter()
            .copied()
            .filter(|p| !stopped.contains(&p.name()) && leases.holds(p.name()))
            .collect();
        let started = tokio::time::Instant::now();
        let results = step_from_known(&store, &running, &mut known).await;
        let mut full = false;
        for (projection, result) in running.iter().zip(results) {
            let name = projection.name();
            match result {
                Ok(Stepped::Applied(0)) => {}
                Ok(Stepped::Applied(n)) => {
                    busy = true;
                    full |= n as u32 >= batch_size(&store);
                }
                Ok(Stepped::Lost) => {
                    // Another applier moved the checkpoint: read where it stands at once.
                    busy = true;
                    full = true;
                }
                Err(ProjectionError::Store(e)) => {
                    // The store may be briefly unreachable: try again, skipping nothing.
                    tracing::warn!(projection = name, error = %e, "projection step failed; retrying");
                    store.note_step_retry();
                }
                Err(e) => {
                    tracing::error!(projection = name, error = %e, "projection stopped");
                    stopped.push(name);
                }
            }
        }
        if busy {
            chase = None;
            let pause = pace(full, started.elapsed(), period);
            if !pause.is_zero() {
                tokio::select! {
                    _ = stop.changed() => return,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            continue;
        }
        // Idle until the log moves (`Store::log_moved`) or the poll period ends. After a wake-up
        // that found nothing final yet (an older transaction still running holds the log back),
        // look again soon, backing off to the poll period.
        let wait = chase.map_or(idle, |d| d.min(idle));
        tokio::select! {
            _ = stop.changed() => return,
            Ok(()) = moved.changed() => chase = Some(CHASE),
            () = tokio::time::sleep(wait) => {
                chase = chase.map(|d| d * 2).filter(|d| *d < idle);
                // The next round re-checks the leases (a standby takes over promptly).
                checked = None;
            }
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Where a follower of the log stands: a projection, or the relay (which applies events to the
/// bus). One type for both, in `linkage projections status`, `linkage relay status` and /readyz.
#[derive(Debug, Clone, Serialize)]
pub struct FollowerStatus {
    pub name: &'static str,
    pub txid: i64,
    pub position: i64,
    pub events_applied: i64,
    /// Events in the log beyond the checkpoint.
    pub lag: i64,
    pub error: Option<String>,
    /// The replica that moved the checkpoint last.
    pub applied_by: Option<String>,
    /// The replica holding the follower's lease now (PostgreSQL; None on SQLite, or when no
    /// replica runs it).
    pub running_in: Option<String>,
}

impl FollowerStatus {
    /// The status of the follower whose checkpoint is called `name`; `running_in` is filled in
    /// by the caller, who knows which lease the follower takes.
    pub async fn of(store: &Store, name: &'static str) -> Result<Self, StoreError> {
        let c = store.checkpoint(Work::Api, name).await?;
        Ok(Self {
            name,
            txid: c.at.txid,
            position: c.at.position,
            events_applied: c.events,
            lag: store.events_after(c.at).await?,
            error: c.error,
            applied_by: c.applied_by,
            running_in: None,
        })
    }
}

pub async fn status(store: &Store) -> Result<Vec<FollowerStatus>, ProjectionError> {
    let mut out = Vec::with_capacity(PROJECTIONS.len());
    for projection in PROJECTIONS {
        let mut s = FollowerStatus::of(store, projection.name()).await?;
        s.running_in = store.projection_runner(projection.name()).await?;
        out.push(s);
    }
    Ok(out)
}

/// How a rebuild replaced the projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RebuildMode {
    /// Built beside the live projection, which went on serving reads and following the log,
    /// and swapped in when it had caught up (PostgreSQL).
    BlueGreen,
    /// Emptied and projected again where it stands: readers see it fill up (SQLite, where one
    /// server runs, or when asked).
    InPlace,
}

impl RebuildMode {
    /// What it means for readers, in a sentence.
    pub fn explain(self) -> &'static str {
        match self {
            Self::BlueGreen => {
                "blue/green: built beside the live projection, which kept serving reads, then swapped in"
            }
            Self::InPlace => {
                "in place: the projection was emptied and refilled; readers saw it partial meanwhile"
            }
        }
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy)]
pub struct Rebuilt {
    /// Events projected.
    pub events: u64,
    pub mode: RebuildMode,
}

/// Projects the whole log again into projection `name`: blue/green on PostgreSQL (a copy built
/// beside the live projection, then swapped in; `store::Green`), in place on SQLite or when
/// `in_place` asks (its rows and checkpoint dropped, then caught up). `progress` gets the running
/// total of events projected.
pub async fn rebuild(
    store: &Store,
    name: &str,
    in_place: bool,
    mut progress: impl FnMut(u64),
) -> Result<Rebuilt, ProjectionError> {
    let projection = known(name)?;
    let green = match in_place {
        true => None,
        false => store.green(projection.name(), projection.tables()).await?,
    };
    let Some(mut green) = green else {
        projection.reset(store).await?;
        let events = catch_up(store, projection, progress).await?;
        return Ok(Rebuilt {
            events,
            mode: RebuildMode::InPlace,
        });
    };
    let mut events = 0;
    // Caught up in bulk, indexed, then caught up once more for what arrived meanwhile, so that
    // the swap lands close to the head of the log.
    for pass in 0..2 {
        let step = async {
            let n = catch_up(&green.store, projection, |n| progress(events + n)).await?;
            if pass == 0 {
                green.index().await?;
            }
            Ok::<_, ProjectionError>(n)
        };
        match step.await {
            Ok(n) => events += n,
            Err(e) => {
                green.abandon().await?;
                return Err(e);
            }
        }
    }
    let swapped = green.swap(store).await?;
    tracing::info!(
        projection = name,
        txid = swapped.at.txid,
        position = swapped.at.position,
        events = swapped.events,
        "rebuilt beside the live projection and swapped in"
    );
    Ok(Rebuilt {
        events,
        mode: RebuildMode::BlueGreen,
    })
}

/// The first link of a case's audit chain that does not match its stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    pub case_id: String,
    pub sequence: u64,
    pub event_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub cases: usize,
    pub entries: usize,
    /// Events not yet in the trail (projection lag), not a break.
    pub pending: usize,
    pub broken: Vec<BrokenLink>,
}

/// Recomputes every chain (or one case's) from the stored events and compares it with the
/// trail; names the first broken link of each case.
pub async fn verify(store: &Store, only: Option<CaseId>) -> Result<VerifyReport, ProjectionError> {
    let cases = match only {
        Some(id) => vec![id],
        None => store.case_ids().await?,
    };
    let mut report = VerifyReport {
        cases: cases.len(),
        ..VerifyReport::default()
    };
    for case in cases {
        let case_id = case.to_string();
        let events = store.events_of(case).await?;
        let entries = store.audit_entries(case).await?;
        report.entries += entries.len();
        report.pending += events.len().saturating_sub(entries.len());
        let mut prev = GENESIS.to_owned();
        for (event, entry) in events.iter().zip(&entries) {
            let (event_id, bytes) = match chain_input(event, &case_id) {
                Ok(input) => input,
                Err(e) => {
                    report.broken.push(BrokenLink {
                        case_id: case_id.clone(),
                        sequence: event.sequence,
                        event_id: event.event_id.to_string(),
                        reason: format!("the stored event cannot be read: {}", e.reason),
                    });
                    break;
                }
            };
            let expected = chain(&prev, &bytes);
            let reason = if entry.sequence as u64 != event.sequence || entry.event_id != event_id {
                Some("the trail's entry is for another event".to_owned())
            } else if entry.prev_hash != prev {
                Some("prev_hash does not match the previous entry".to_owned())
            } else if entry.hash != expected {
                Some("the stored event no longer matches its recorded hash".to_owned())
            } else {
                None
            };
            if let Some(reason) = reason {
                report.broken.push(BrokenLink {
                    case_id: case_id.clone(),
                    sequence: event.sequence,
                    event_id,
                    reason,
                });
                break;
            }
            prev = expected;
        }
        if entries.len() > events.len() {
            report.broken.push(BrokenLink {
                case_id: case_id.clone(),
                sequence: events.len() as u64 + 1,
                event_id: String::new(),
                reason: "the trail has entries for events that are not stored".into(),
            });
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_millis(40);

    #[test]
    fn a_step_short_of_a_batch_is_followed_after_the_rest_of_the_period() {
        assert_eq!(
            pace(false, Duration::from_millis(15), PERIOD),
            Duration::from_millis(25)
        );
        assert_eq!(pace(false, Duration::ZERO, PERIOD), PERIOD);
    }

    #[test]
    fn a_step_that_took_the_period_or_read_a_full_batch_is_followed_at_once() {
        assert_eq!(pace(false, PERIOD, PERIOD), Duration::ZERO);
        assert_eq!(
            pace(false, Duration::from_millis(90), PERIOD),
            Duration::ZERO
        );
        // Behind the log: catching up goes on without a pause.
        assert_eq!(pace(true, Duration::from_millis(1), PERIOD), Duration::ZERO);
    }

    #[test]
    fn a_period_of_zero_steps_back_to_back() {
        assert_eq!(
            pace(false, Duration::from_millis(1), Duration::ZERO),
            Duration::ZERO
        );
    }
}
