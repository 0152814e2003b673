//! `linkage-bench append`: the command path's throughput and latency on PostgreSQL, printed
//! beside a raw single-row INSERT into the same events table, measured in the same run on the
//! same database, at 1 and 16 concurrent clients, on short (2-event) and long (500-event)
//! streams. It creates a scratch database, and drops it at the end.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::{Actor, Case, CaseAction, CaseCommand, CaseEvent, CaseServices};
use chrono::{Duration as Days, NaiveDate, TimeZone, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use hdrhistogram::Histogram;
use schemas::instruments::Catalog;
use schemas::wire::{ChildIn, LogContactRequest, OpenCaseRequest};
use schemas::*;
use serde_json::json;
use sqlx::Connection;
use uuid::Uuid;

use services::command::{execute, CommandMeta, Target};
use services::config::Config;
use services::error::StoreError;
use services::startup::AppState;
use services::store::{Commit, Store};

mod billing;
mod contend;
mod costs;
mod http;
mod projection;
mod relay;
mod serve;
pub use billing::BillingBench;
pub use contend::{spinning_threads, Contention};
pub use costs::CostBench;
pub use http::HttpBench;
pub use projection::ProjectionBench;
pub use relay::RelayBench;

#[derive(Debug, Clone, clap::Args)]
pub struct AppendBench {
    /// PostgreSQL URL of a role that may create databases (a scratch one is made and dropped)
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Concurrent clients, one measurement each
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16])]
    pub clients: Vec<usize>,
    /// Seconds per measurement
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Events in a long stream
    #[arg(long, default_value_t = 500)]
    pub long_stream: usize,
    /// Cases each client cycles through
    #[arg(long, default_value_t = 8)]
    pub cases_per_client: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot write the report: {0}")]
    Io(#[from] std::io::Error),
    #[error("the command path refused a benchmark command: {0}")]
    Refused(String),
    #[error("histogram: {0}")]
    Histogram(String),
}

pub(crate) struct Row {
    pub(crate) label: String,
    pub(crate) clients: usize,
    pub(crate) ops_per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

pub(crate) fn actor() -> Actor {
    Actor {
        id: ActorId::parse("bench-admin").expect("static"),
        role: Role::Admin,
        agency: AgencyId::parse("bench").expect("static"),
        provider: None,
    }
}

pub(crate) fn contact(i: usize) -> LogContactRequest {
    LogContactRequest {
        component: TcmComponent::Monitoring,
        contact_type: ContactType::Phone,
        with: vec![Participant::Guardian],
        occurred_at: (Utc::now() - Days::days(1)).fixed_offset(),
        minutes: Minutes::parse(5 + (i % 50) as i64).expect("in range"),
        note: Some(Text::parse("called the guardian about the next appointment").expect("text")),
        location: Some(Location::Office),
    }
}

/// The intake of a synthetic bench case (2 events: opened, assigned).
pub(crate) fn open_case(id: CaseId, intake_date: NaiveDate) -> CaseAction {
    open_case_for(id, intake_date, ActorId::parse("cm-bench").expect("static"))
}

/// The intake of a synthetic bench case assigned to `worker`.
pub(crate) fn open_case_for(id: CaseId, intake_date: NaiveDate, worker: ActorId) -> CaseAction {
    CaseAction::OpenCase {
        case_id: id,
        agency: actor().agency,
        request: OpenCaseRequest {
            program: Program::Tcm,
            assigned_to: worker,
            intake_date,
            child: ChildIn {
                given_name: PersonName::parse("Bench").expect("static"),
                family_name: PersonName::parse("Sample").expect("static"),
                birth_date: intake_date - Days::days(2000),
                medicaid_id: Some(MedicaidId::parse("ZZ00000000").expect("static")),
            },
            guardians: vec![],
            referral_source: None,
            presenting_concerns: vec![],
            duplicate_reviewed: None,
        },
        // The bench drives the aggregate directly: no intake check in front of it.
        possible_duplicates: vec![],
    }
}

/// A case of `worker`'s opened on the first day of the month before `month`, with `n` contacts
/// in `month` spread over its days and hours: mostly billable calls and visits, with voicemails,
/// short calls and undocumented ones among them, so that billing lines carry reasons.
pub(crate) fn case_with_contacts(
    id: CaseId,
    n: usize,
    worker: ActorId,
    month: projections::billing::Month,
) -> Vec<CaseAction> {
    let (year, before) = match month.month {
        1 => (month.year - 1, 12),
        m => (month.year, m - 1),
    };
    let intake = NaiveDate::from_ymd_opt(year, before, 1).expect("a month's first day");
    let mut actions = vec![open_case_for(id, intake, worker)];
    for i in 0..n {
        let day = 1 + (i % 28) as u32;
        let contact_type = match i % 10 {
            0 => ContactType::Voicemail,
            1 | 2 => ContactType::FaceToFace,
            _ => ContactType::Phone,
        };
        actions.push(CaseAction::LogContact {
            activity_id: ActivityId::generate(),
            request: LogContactRequest {
                component: TcmComponent::Monitoring,
                contact_type,
                with: vec![Participant::Guardian],
                occurred_at: Utc
                    .with_ymd_and_hms(month.year, month.month, day, 9 + (i % 8) as u32, 0, 0)
                    .single()
                    .expect("a time")
                    .fixed_offset(),
                minutes: Minutes::parse(5 + (i * 7 % 60) as i64).expect("in range"),
                note: (i % 9 != 4).then(|| Text::parse("monitoring call").expect("text")),
                location: Some(Location::Office),
            },
        });
    }
    actions
}

/// A case stream of `len` events: intake, assignment, then contacts.
pub(crate) fn contact_stream(id: CaseId, len: usize) -> Vec<CaseAction> {
    let mut actions = vec![open_case(id, Utc::now().date_naive() - Days::days(30))];
    actions.extend((2..len).map(|i| CaseAction::LogContact {
        activity_id: ActivityId::generate(),
        request: contact(i),
    }));
    actions
}

/// A case stream of `len` events, committed in one statement.
pub(crate) async fn seed_case(
    store: &Store,
    services: &CaseServices,
    len: usize,
) -> Result<CaseId, BenchError> {
    let id = CaseId::generate();
    commit_actions(store, services, id, contact_stream(id, len)).await?;
    Ok(id)
}

/// Cases each phase of a rate-driven benchmark spreads its commands over: as many as a busy
/// agency has active at once, new for each phase, so that what a phase measures is not the long
/// streams or same-case conflicts an earlier one left.
pub(crate) const CASES_PER_PHASE: usize = 512;

/// `CASES_PER_PHASE` new cases of two events each.
pub(crate) async fn fresh_cases(
    store: &Store,
    services: &CaseServices,
) -> Result<Vec<CaseId>, BenchError> {
    let mut targets = Vec::with_capacity(CASES_PER_PHASE);
    for _ in 0..CASES_PER_PHASE {
        targets.push(seed_case(store, services, 2).await?);
    }
    Ok(targets)
}

/// This machine's command capacity: 16 clients in process, flat out for `seconds` over fresh
/// cases, each command `action(n)` through the whole command pipeline; commands per second.
/// The rate-driven phases ask for a fraction of it, so that their load is relative to the
/// machine (a busy day's capacity is lower, and so is what they ask).
pub(crate) async fn command_capacity(
    state: &AppState,
    services: &CaseServices,
    seconds: u64,
    route: &'static str,
    action: impl Fn(usize) -> CaseAction + Clone + Send + Sync + 'static,
) -> Result<f64, BenchError> {
    let targets = Arc::new(fresh_cases(&state.store, services).await?);
    let state = state.clone();
    let (rate, _) = run_clients(16, seconds, move |client, n| {
        let (state, targets, action) = (state.clone(), targets.clone(), action.clone());
        async move {
            let id = targets[(client * 31 + n) % targets.len()];
            one_command(&state, id, route, b"{}", action(n)).await
        }
    })
    .await?;
    Ok(rate)
}

/// Commits `cases` new cases, each from `actions`, four writers at a time, none left in the
/// command cache (a bulk load that will not touch them again).
pub(crate) async fn seed_cases(
    store: &Arc<Store>,
    services: &CaseServices,
    cases: usize,
    actions: impl Fn(CaseId) -> Vec<CaseAction> + Clone + Send + Sync + 'static,
) -> Result<(), BenchError> {
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let (store, services, actions) = (store.clone(), services.clone(), actions.clone());
        writers.spawn(async move {
            for _ in (w..cases).step_by(4) {
                let id = CaseId::generate();
                commit_actions(&store, &services, id, actions(id)).await?;
                store.uncache(id);
            }
            Ok::<_, BenchError>(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done.map_err(bench_err)??;
    }
    Ok(())
}

/// Sends `rate` commands a second for `seconds`, round-robin over `targets`, each deciding
/// `action(n)` through the real command pipeline; returns the rate achieved.
pub(crate) async fn commands_at_rate(
    state: &AppState,
    targets: &[CaseId],
    rate: u64,
    seconds: u64,
    route: &'static str,
    action: impl Fn(usize) -> CaseAction + Clone + Send + Sync + 'static,
) -> f64 {
    let t0 = Instant::now();
    let total = rate * seconds;
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    let mut commands = tokio::task::JoinSet::new();
    for n in 0..total as usize {
        tick.tick().await;
        let (state, id, action) = (state.clone(), targets[n % targets.len()], action.clone());
        // A refusal is counted like any command: the benchmark reports the rate asked.
        commands.spawn(async move {
            let _ = one_command(&state, id, route, b"{}", action(n)).await;
        });
    }
    while commands.join_next().await.is_some() {}
    total as f64 / t0.elapsed().as_secs_f64()
}

/// One command through the whole command pipeline, as a POST of `body` to `route` of case `id`
/// would run it; an answer other than 201 is an error.
pub(crate) async fn one_command(
    state: &AppState,
    id: CaseId,
    route: &str,
    body: &[u8],
    action: CaseAction,
) -> Result<(), BenchError> {
    let meta = CommandMeta {
        actor: actor(),
        idempotency_key: None,
        correlation_id: Uuid::now_v7().to_string(),
        command_id: Uuid::now_v7(),
        route: format!("POST /v1/cases/{id}/{route}"),
    };
    let response = execute(
        state,
        meta,
        body,
        id,
        Target::Existing(services::auth::Access::Command),
        axum::http::StatusCode::CREATED,
        |_| Ok(action.clone()),
    )
    .await
    .map_err(|e| BenchError::Refused(e.to_string()))?;
    if response.status() != axum::http::StatusCode::CREATED {
        return Err(BenchError::Refused(format!("status {}", response.status())));
    }
    Ok(())
}

/// The case services every bench decides commands with.
pub(crate) fn case_services() -> Result<CaseServices, BenchError> {
    Ok(CaseServices {
        instruments: Arc::new(Catalog::builtin().map_err(bench_err)?),
        documentation_window_days: CaseServices::DEFAULT_DOCUMENTATION_WINDOW_DAYS,
    })
}

/// What the command pipeline needs, with the default configuration and billing rules.
pub(crate) fn bench_state(
    store: &Arc<Store>,
    services: &CaseServices,
) -> Result<AppState, BenchError> {
    Ok(AppState {
        store: store.clone(),
        case_services: Arc::new(services.clone()),
        config: Arc::new(Config::default()),
        relay: None,
        clock: services::clock::Clock::system(),
        zones: Default::default(),
        oidc: None,
        billing: Arc::new(
            services::billing::select(services::billing::DEFAULT_PROFILE, None)
                .map_err(bench_err)?,
        ),
    })
}

pub(crate) fn bench_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Refused(e.to_string())
}

static HEAP_GAUGE: std::sync::OnceLock<fn() -> usize> = std::sync::OnceLock::new();

/// Lets the benchmarks read the bytes the global allocator has handed out and not taken back
/// (the binary's counting allocator); without it they report no heap figure.
pub fn count_heap_with(gauge: fn() -> usize) {
    let _ = HEAP_GAUGE.set(gauge);
}

/// Heap in use now, in MiB, when a gauge was given.
pub(crate) fn heap_mib() -> Option<f64> {
    HEAP_GAUGE
        .get()
        .map(|gauge| gauge() as f64 / (1024.0 * 1024.0))
}

/// This process's memory in MiB (Linux): `VmRSS:` (resident now) or `VmHWM:` (peak so far).
pub(crate) fn memory_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Decides `actions` on a new case `id` in order and commits all their events in one statement.
pub(crate) async fn commit_actions(
    store: &Store,
    services: &CaseServices,
    id: CaseId,
    actions: Vec<CaseAction>,
) -> Result<(), BenchError> {
    let mut case = Case::default();
    let sink = EventSink::default();
    let received_at = Utc::now();
    for action in actions {
        let command = CaseCommand {
            actor: actor(),
            received_at,
            zone: chrono_tz::Tz::UTC,
            action,
        };
        case.handle(command, services, &sink)
            .await
            .map_err(|e| BenchError::Refused(e.to_string()))?;
    }
    let events: Vec<CaseEvent> = sink.collect().await;
    let context = services::store::CaseContext {
        aggregate_id: id.to_string(),
        aggregate: case,
        current_sequence: 0,
        current_snapshot: None,
    };
    let metadata = schemas::EventMetadata {
        command: Some("BenchSeed".into()),
        actor_id: Some(actor().id),
        ..Default::default()
    };
    match store.commit(id, events, context, &metadata).await? {
        Commit::Done(_) => Ok(()),
        Commit::Conflict => Err(BenchError::Refused("seed conflict".into())),
    }
}

pub(crate) async fn run_clients<F, Fut>(
    clients: usize,
    seconds: u64,
    op: F,
) -> Result<(f64, Histogram<u64>), BenchError>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), BenchError>> + Send,
{
    let (rate, hist, _) = run_clients_costed(clients, seconds, op).await?;
    Ok((rate, hist))
}

/// `run_clients`, and the CPU the process and the whole machine spent during the measured
/// seconds (the warm-up left out): on a machine whose speed varies from day to day, CPU per
/// operation moves less than operations per second.
pub(crate) async fn run_clients_costed<F, Fut>(
    clients: usize,
    seconds: u64,
    op: F,
) -> Result<(f64, Histogram<u64>, CpuSpan), BenchError>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), BenchError>> + Send,
{
    let warmup = Duration::from_millis(500);
    let measure = Duration::from_secs(seconds);
    let start = Instant::now();
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until((start + warmup).into()).await;
        let spent = CpuSpent::start();
        tokio::time::sleep_until((start + warmup + measure).into()).await;
        spent.stop()
    });
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                    .map_err(|e| BenchError::Histogram(e.to_string()))?;
                let mut n = 0usize;
                loop {
                    let t0 = Instant::now();
                    if t0 - start >= warmup + measure {
                        break;
                    }
                    op(client, n).await?;
                    n += 1;
                    if t0 - start >= warmup {
                        hist.record(t0.elapsed().as_micros().max(1) as u64)
                            .map_err(|e| BenchError::Histogram(e.to_string()))?;
                    }
                }
                Ok::<_, BenchError>(hist)
            })
        })
        .collect();
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| BenchError::Histogram(e.to_string()))?;
    for t in tasks {
        let h = t.await.map_err(|e| BenchError::Refused(e.to_string()))??;
        total
            .add(h)
            .map_err(|e| BenchError::Histogram(e.to_string()))?;
    }
    let cpu = cpu.await.map_err(|e| BenchError::Refused(e.to_string()))?;
    Ok((total.len() as f64 / measure.as_secs_f64(), total, cpu))
}

pub(crate) fn row(label: &str, clients: usize, (rate, hist): (f64, Histogram<u64>)) -> Row {
    Row {
        label: label.to_owned(),
        clients,
        ops_per_sec: rate,
        p50_ms: hist.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
    }
}

impl AppendBench {
    pub async fn run(&self, out: &mut impl Write) -> Result<(), BenchError> {
        Scratch::with(&self.database_url, async |s| {
            self.run_on(&s.url, &s.version, &s.fsync, out).await
        })
        .await
    }

    async fn run_on(
        &self,
        url: &str,
        version: &str,
        fsync: &str,
        out: &mut impl Write,
    ) -> Result<(), BenchError> {
        let store = Arc::new(
            Store::postgres(
                url,
                services::config::Config::default().group_commit_writers,
            )
            .await?,
        );
        let services = case_services()?;
        let state = AppState {
            config: Arc::new(Config {
                database_url: Some(url.to_owned()),
                ..Config::default()
            }),
            ..bench_state(&store, &services)?
        };
        let raw_pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(20)
            .connect(url)
            .await?;
        let max_clients = self.clients.iter().copied().max().unwrap_or(1);
        writeln!(
            out,
            "linkage-bench append: PostgreSQL {version} (fsync {fsync}), {} s per row after 0.5 s warm-up, {} CPUs",
            self.seconds,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        )?;
        writeln!(
            out,
            "seeding {} short (2-event) and {} long ({}-event) case streams …",
            max_clients * self.cases_per_client,
            max_clients * self.cases_per_client,
            self.long_stream
        )?;
        let mut short = Vec::new();
        let mut long = Vec::new();
        for _ in 0..max_clients * self.cases_per_client {
            short.push(seed_case(&store, &services, 2).await?);
            long.push(seed_case(&store, &services, self.long_stream).await?);
        }
        // A cold load replays the stream; the cache serves later commands.
        let cold = |ids: Vec<CaseId>| {
            let store = store.clone();
            async move {
                let t0 = Instant::now();
                for id in &ids[..ids.len().min(50)] {
                    store.load(*id).await?;
                }
                Ok::<_, BenchError>(t0.elapsed().as_secs_f64() * 1000.0 / ids.len().min(50) as f64)
            }
        };
        let cold_short = cold(short.clone()).await?;
        let cold_long = cold(long.clone()).await?;

        let payload = serde_json::to_value(CaseEvent::ContactLogged {
            activity_id: ActivityId::generate(),
            component: TcmComponent::Monitoring,
            contact_type: ContactType::Phone,
            with: vec![Participant::Guardian],
            occurred_at: Utc::now(),
            stated_offset_seconds: Some(0),
            minutes: Minutes::parse(20).expect("static"),
            note: Some(
                Text::parse("called the guardian about the next appointment").expect("static"),
            ),
            location: Some(Location::Office),
        })
        .map_err(|e| BenchError::Refused(e.to_string()))?;
        // The baseline's row carries metadata of the size a command's events carry (the same
        // bytes as in every earlier run, so that figures stay comparable across runs).
        let metadata = json!({"command": "LogContact", "actor_id": "bench-admin", "actor_role": "admin",
            "actor_agency": "bench", "correlation_id": Uuid::now_v7().to_string(),
            "causation_id": Uuid::now_v7().to_string(), "occurred_at": Utc::now().to_rfc3339(),
            "received_at": Utc::now().to_rfc3339(), "request_hash": "0".repeat(64),
            "reply_status": "201", "reply": "{\"activity_id\":\"00000000-0000-0000-0000-000000000000\"}"});

        let mut rows = Vec::new();
        let mut baseline = std::collections::HashMap::new();
        let run_id = Uuid::new_v4().simple().to_string();
        for &clients in &self.clients {
            settle(&raw_pool).await;
            let (pool, payload, metadata, run_id) = (
                raw_pool.clone(),
                payload.clone(),
                metadata.clone(),
                run_id.clone(),
            );
            let raw = run_clients(clients, self.seconds, move |client, n| {
                let (pool, payload, metadata) = (pool.clone(), payload.clone(), metadata.clone());
                let stream = format!("raw-{run_id}-{clients}-{client}");
                async move {
                    sqlx::query(
                        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                         event_version, payload, metadata) VALUES ('Raw', $1, $2, 'ContactLogged', '1', $3, $4)",
                    )
                    .bind(stream)
                    .bind(n as i64 + 1)
                    .bind(payload)
                    .bind(metadata)
                    .execute(&pool)
                    .await?;
                    Ok(())
                }
            })
            .await?;
            let r = row("raw single-row INSERT (baseline)", clients, raw);
            baseline.insert(clients, r.ops_per_sec);
            rows.push(r);
            for (label, ids) in [
                ("command, 2-event streams", &short),
                ("command, long streams (see header)", &long),
            ] {
                // Warm the cache as a running server's would be (check out, hand back).
                for id in ids.iter().take(clients * self.cases_per_client) {
                    let context = store.load_for_command(*id).await?;
                    store.release(*id, context);
                }
                settle(&raw_pool).await;
                let (state, ids, per) = (state.clone(), ids.clone(), self.cases_per_client);
                let measured = run_clients(clients, self.seconds, move |client, n| {
                    let state = state.clone();
                    let id = ids[client * per + n % per];
                    async move {
                        let request = contact(n);
                        let body = serde_json::to_vec(&request)
                            .map_err(|e| BenchError::Refused(e.to_string()))?;
                        let action = CaseAction::LogContact {
                            activity_id: ActivityId::generate(),
                            request,
                        };
                        one_command(&state, id, "contacts", &body, action).await
                    }
                })
                .await?;
                rows.push(row(label, clients, measured));
            }
        }

        writeln!(out)?;
        writeln!(
            out,
            "{:<36} {:>7} {:>10} {:>8} {:>8} {:>12}",
            "workload", "clients", "ops/s", "p50 ms", "p99 ms", "vs baseline"
        )?;
        for r in &rows {
            let base = baseline.get(&r.clients).copied().unwrap_or(f64::NAN);
            writeln!(
                out,
                "{:<36} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>11.0}%",
                r.label,
                r.clients,
                r.ops_per_sec,
                r.p50_ms,
                r.p99_ms,
                100.0 * r.ops_per_sec / base
            )?;
        }
        writeln!(out)?;
        for &clients in &self.clients {
            let rate = |label: &str| {
                rows.iter()
                    .find(|r| r.clients == clients && r.label == label)
                    .map(|r| r.ops_per_sec)
            };
            if let (Some(s), Some(l)) = (
                rate("command, 2-event streams"),
                rate("command, long streams (see header)"),
            ) {
                writeln!(out, "{clients:>2} clients: {}-event streams run at {:.0}% of 2-event streams (target >= 90%)", self.long_stream, 100.0 * l / s)?;
            }
            if let (Some(s), Some(b)) = (rate("command, 2-event streams"), baseline.get(&clients)) {
                writeln!(out, "{clients:>2} clients: commands run at {:.0}% of raw INSERT (target at 16 clients >= 60%)", 100.0 * s / b)?;
            }
        }
        writeln!(out, "cold load (full replay, cache miss): 2-event stream {cold_short:.2} ms, {}-event stream {cold_long:.2} ms", self.long_stream)?;
        raw_pool.close().await;
        store.close().await;
        Ok(())
    }
}

/// A scratch database on the benchmark's server, dropped afterwards.
pub(crate) struct Scratch {
    admin: sqlx::PgConnection,
    name: String,
    pub url: String,
    pub version: String,
    pub fsync: String,
}

impl Scratch {
    async fn create(admin_url: &str) -> Result<Self, BenchError> {
        let mut admin = sqlx::PgConnection::connect(admin_url).await?;
        let version = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut admin)
            .await?;
        let fsync = sqlx::query_scalar("SHOW fsync")
            .fetch_one(&mut admin)
            .await?;
        let name = format!("linkage_bench_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        Ok(Self {
            url: swap_database(admin_url, &name),
            admin,
            name,
            version,
            fsync,
        })
    }

    /// Runs `bench` on a scratch database made for it on the server at `admin_url`, and drops
    /// the database afterwards whatever the outcome.
    pub(crate) async fn with<T>(
        admin_url: &str,
        bench: impl AsyncFnOnce(&Scratch) -> Result<T, BenchError>,
    ) -> Result<T, BenchError> {
        let scratch = Self::create(admin_url).await?;
        let result = bench(&scratch).await;
        scratch.drop().await?;
        result
    }

    async fn drop(mut self) -> Result<(), BenchError> {
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut self.admin)
        .await?;
        Ok(())
    }
}

/// Starts each measurement from the same state: the previous row's dead tuples vacuumed, its
/// statistics current and its dirty pages flushed, so background work does not land in the next
/// row. CHECKPOINT needs a privileged role; without one it is skipped.
pub(crate) async fn settle(pool: &sqlx::PgPool) {
    let _ = sqlx::query("VACUUM (ANALYZE) events").execute(pool).await;
    let _ = sqlx::query("CHECKPOINT").execute(pool).await;
}

/// `settle` for every table of the database, not only the events (a rebuild's rows too).
pub(crate) async fn settle_database(pool: &sqlx::PgPool) {
    let _ = sqlx::query("VACUUM (ANALYZE)").execute(pool).await;
    let _ = sqlx::query("CHECKPOINT").execute(pool).await;
}

/// Prints how many times a connection waited past the pools' slow threshold since `since` (a
/// `telemetry::pool_starvations` reading): work starved of connections.
pub(crate) fn write_starvations(out: &mut impl Write, since: u64) -> std::io::Result<()> {
    writeln!(
        out,
        "pool-starvation warnings (a connection waited over {} ms) while commands arrived: {} (target 0)",
        services::store::ACQUIRE_SLOW.as_millis(),
        services::telemetry::pool_starvations() - since
    )
}

pub(crate) fn swap_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// CPU time spent between two points: this process's (user and system) and the whole machine's,
/// from `/proc` (zero where there is none), leaving out the time of any threads spinning to
/// contend for the CPU (`Contention`).
pub(crate) struct CpuSpent {
    process_ticks: u64,
    machine: (u64, u64),
    spun: u64,
}

/// Clock ticks per second of `/proc`'s CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

impl CpuSpent {
    pub(crate) fn start() -> Self {
        Self {
            process_ticks: process_ticks(),
            machine: machine_ticks(),
            spun: contend::spinner_ticks(),
        }
    }

    pub(crate) fn stop(self) -> CpuSpan {
        let (busy, total) = machine_ticks();
        let spun = contend::spinner_ticks().saturating_sub(self.spun);
        CpuSpan {
            process_secs: process_ticks()
                .saturating_sub(self.process_ticks)
                .saturating_sub(spun) as f64
                / TICKS_PER_SECOND,
            machine_busy: busy.saturating_sub(self.machine.0).saturating_sub(spun) as f64,
            machine_total: total.saturating_sub(self.machine.1) as f64,
        }
    }
}

pub(crate) struct CpuSpan {
    process_secs: f64,
    machine_busy: f64,
    machine_total: f64,
}

impl CpuSpan {
    /// This process's CPU time per item, in microseconds.
    pub(crate) fn process_micros_per(&self, items: u64) -> f64 {
        self.process_secs * 1e6 / items.max(1) as f64
    }

    /// The whole machine's CPU time per item (this process, the database, anything else
    /// running), in microseconds.
    pub(crate) fn machine_micros_per(&self, items: u64) -> f64 {
        self.machine_busy / TICKS_PER_SECOND * 1e6 / items.max(1) as f64
    }

    /// How busy the machine's CPUs were, all of them together, in percent.
    pub(crate) fn machine_busy_percent(&self) -> f64 {
        100.0 * self.machine_busy / self.machine_total.max(1.0)
    }
}

/// utime + stime of this process, in ticks.
fn process_ticks() -> u64 {
    stat_ticks(std::path::Path::new("/proc/self/stat"))
}

/// utime + stime from a process's or thread's `/proc` stat file, in ticks (0 if unreadable).
fn stat_ticks(path: &std::path::Path) -> u64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are the 14th and 15th fields of stat; 12th and 13th after the name.
    field(11) + field(12)
}

/// (busy, total) ticks of all CPUs from `/proc/stat`'s first line; idle and iowait are not busy.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return (0, 0);
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

#[cfg(test)]
mod tests {
    /// Spinning threads' CPU time is left out of a span's figures: with the test's own thread
    /// asleep, the span's process time is what the rest of the process spent, far below what
    /// the spinner alone spent.
    #[test]
    fn cpu_spans_leave_the_spinning_threads_out() {
        let contention = super::Contention::start(1).expect("a spinner starts");
        assert_eq!(super::spinning_threads(), 1);
        let spent = super::CpuSpent::start();
        let from = super::contend::spinner_ticks();
        // At least 0.3 s of the spinner's CPU time, however long the machine takes to give it.
        let mut waited = 0;
        while super::contend::spinner_ticks() < from + 30 {
            waited += 1;
            assert!(waited < 3_000, "the spinner's CPU time is not counted");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let span = spent.stop();
        drop(contention);
        assert_eq!(super::spinning_threads(), 0, "the spinner stops");
        assert!(
            span.process_secs < 0.15,
            "the span counts {} s of process time, the spinner's 0.3 s included",
            span.process_secs
        );
    }

    #[test]
    fn the_scratch_database_replaces_the_path() {
        assert_eq!(
            super::swap_database("postgres://u@h:1/postgres", "b"),
            "postgres://u@h:1/b"
        );
        assert_eq!(
            super::swap_database("postgres://u@h:1", "b"),
            "postgres://u@h:1/b"
        );
        assert_eq!(
            super::swap_database("postgres://u@h/x?sslmode=disable", "b"),
            "postgres://u@h/b?sslmode=disable"
        );
    }
}
