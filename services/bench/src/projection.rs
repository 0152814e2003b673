//! `linkage-bench projections`: rebuild of every projection from a large synthetic log, beside a
//! plain scan of the same events table in the same run, with resident memory sampled as the
//! rebuild progresses; then projection lag, measured by the engine, while commands arrive at
//! half the machine's measured command capacity and at a fixed rate.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::{CaseAction, CaseServices};
use hdrhistogram::Histogram;
use schemas::*;
use sqlx::Row;

use super::{
    bench_state, case_services, command_capacity, commands_at_rate, contact, contact_stream,
    fresh_cases, memory_mib, seed_cases, settle, settle_database, write_starvations, BenchError,
    CpuSpent, Scratch,
};
use services::projector;
use services::projector::PROJECTIONS;
use services::store::Store;

#[derive(Debug, Clone, clap::Args)]
pub struct ProjectionBench {
    /// PostgreSQL URL of a role that may create databases (a scratch one is made and dropped)
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Events in the synthetic log
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Events per case stream
    #[arg(long, default_value_t = 500)]
    pub stream_len: usize,
    /// Commands per second while lag is measured, beside the fraction of capacity below
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Seconds of lag measurement, per rate (0: rebuilds only)
    #[arg(long, default_value_t = 10)]
    pub lag_seconds: u64,
    /// Seconds of the command-capacity measurement before the lag measurements
    #[arg(long, default_value_t = 3)]
    pub capacity_seconds: u64,
    /// The fraction of the measured command capacity that commands arrive at while lag is
    /// measured (beside `rate`)
    #[arg(long, default_value_t = 0.5)]
    pub fraction: f64,
    /// The projection engine's step periods to measure lag with, each at each rate, in the same
    /// run (`Config::projection_step_period_ms`; 0 steps back to back): `40,0` sets the default
    /// beside steps without a period
    #[arg(long, value_delimiter = ',', default_values_t = [projector::STEP_PERIOD_MS])]
    pub step_period_ms: Vec<u64>,
    /// Rebuild only these projections (comma-separated names); all by default
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

impl ProjectionBench {
    pub async fn run(&self, out: &mut impl Write) -> Result<(), BenchError> {
        Scratch::with(&self.database_url, async |s| {
            self.run_on(&s.url, &s.version, out).await
        })
        .await
    }

    async fn run_on(
        &self,
        url: &str,
        version: &str,
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
        let pool = sqlx::PgPool::connect(url).await?;
        writeln!(
            out,
            "linkage-bench projections: PostgreSQL {version}, {} CPUs",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        )?;

        // Seed: cases of `stream_len` events, four writers at a time, none left in the cache.
        let cases = (self.events as usize).div_ceil(self.stream_len);
        let t0 = Instant::now();
        let len = self.stream_len;
        seed_cases(&store, &services, cases, move |id| contact_stream(id, len)).await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&pool)
            .await?;
        writeln!(
            out,
            "seeded {total} events in {cases} case streams in {:.1} s",
            t0.elapsed().as_secs_f64()
        )?;
        settle(&pool).await;

        // Baseline: a plain scan of the same table, run again just before each rebuild, which
        // is compared with the scan next to it: this machine's speed moves within minutes, and
        // a scan taken once at the start made the later rebuilds' ratios drift with it.
        let first = scan(&pool).await?;
        let scanned = first.events;
        writeln!(out)?;
        writeln!(
            out,
            "{:<34} {:>10} {:>9} {:>12} {:>9} {:>12} {:>9} {:>8}   resident MiB at 25/50/75/100%",
            "rebuild",
            "events",
            "seconds",
            "events/s",
            "vs scan",
            "CPU µs/event",
            "machine",
            "scan s"
        )?;
        writeln!(
            out,
            "{:<34} {:>10} {:>9.2} {:>12.0} {:>8.0}% {:>12.2} {:>8.0}% {:>8.2}",
            "plain scan of events (baseline)",
            scanned,
            first.secs,
            first.rate(),
            100.0,
            first.cpu.process_micros_per(scanned),
            first.cpu.machine_busy_percent(),
            first.secs
        )?;
        let mut all_secs = 0.0;
        let mut mode = "";
        let mut rebuilt_names = 0;
        for name in projector::names() {
            if !self.only.is_empty() && !self.only.iter().any(|o| o == name) {
                continue;
            }
            rebuilt_names += 1;
            // The scan this rebuild is compared with, then a checkpoint, so that the rebuild
            // starts as the first scan did rather than paying for writing out the pages the
            // rebuild before it left dirty.
            let baseline = match rebuilt_names {
                1 => first.secs,
                _ => scan(&pool).await?.secs,
            };
            let scan_rate = scanned as f64 / baseline;
            let _ = sqlx::query("CHECKPOINT").execute(&pool).await;
            let mut marks = Vec::new();
            let cpu = CpuSpent::start();
            let t0 = Instant::now();
            let rebuilt = projector::rebuild(&store, name, false, |done| {
                let quarter = (marks.len() as u64 + 1) * scanned / 4;
                if done >= quarter && marks.len() < 4 {
                    marks.push(memory_mib("VmRSS:"));
                }
            })
            .await
            .map_err(|e| BenchError::Refused(e.to_string()))?;
            let secs = t0.elapsed().as_secs_f64();
            let cpu = cpu.stop();
            let n = rebuilt.events;
            mode = rebuilt.mode.explain();
            all_secs += secs;
            let rate = n as f64 / secs;
            let marks: Vec<String> = marks.iter().map(|m| format!("{m:.0}")).collect();
            writeln!(
                out,
                "{:<34} {:>10} {:>9.2} {:>12.0} {:>8.0}% {:>12.2} {:>8.0}% {:>8.2}   {}",
                format!("projection {name}"),
                n,
                secs,
                rate,
                100.0 * rate / scan_rate,
                cpu.process_micros_per(n),
                cpu.machine_busy_percent(),
                baseline,
                marks.join(" / ")
            )?;
        }
        writeln!(
            out,
            "{:<34} {:>10} {:>9.2} {:>12.0}",
            "all projections",
            scanned,
            all_secs,
            scanned as f64 * rebuilt_names as f64 / all_secs
        )?;
        writeln!(out, "each rebuild {mode}")?;
        writeln!(
            out,
            "target: each rebuild >= 50% of the plain scan, memory flat as events grow"
        )?;
        writeln!(
            out,
            "vs scan: against the plain scan run just before that rebuild (scan s); each rebuild \
             starts from a checkpoint"
        )?;
        writeln!(
            out,
            "CPU µs/event: this process's CPU time per event; machine: how busy all CPUs were \
             (the database's share when it runs here)"
        )?;
        if self.lag_seconds == 0 {
            pool.close().await;
            store.close().await;
            return Ok(());
        }

        self.lag(&store, &services, &pool, out).await?;
        pool.close().await;
        store.close().await;
        Ok(())
    }

    /// Projection lag from inside the engine. First the machine's command capacity (16
    /// clients flat out, the projection engine idle); then commands at `fraction` of it and at
    /// `rate`/s, each after the projections have caught up, with every applied event's time from
    /// commit to applied recorded by the engine (`projector::AppliedLag`). Each rate starts
    /// settled, as every row of the other benchmarks does: the rebuilds' and the last phase's
    /// dead rows vacuumed, every table's statistics current and dirty pages flushed, so that
    /// the aftermath of a bulk rebuild (a checkpoint writing millions of rows' pages) does not
    /// land in the measurement.
    async fn lag(
        &self,
        store: &Arc<Store>,
        services: &CaseServices,
        pool: &sqlx::PgPool,
        out: &mut impl Write,
    ) -> Result<(), BenchError> {
        let state = bench_state(store, services)?;
        let capacity = command_capacity(
            &state,
            services,
            self.capacity_seconds,
            "contacts",
            log_contact,
        )
        .await?;
        let starved_before = services::telemetry::pool_starvations();
        writeln!(out)?;
        writeln!(
            out,
            "command capacity: {capacity:.0} commands/s (16 clients in process, {} s, projection engine idle)",
            self.capacity_seconds
        )?;
        writeln!(
            out,
            "projection lag from inside the engine: commit to applied, every event (target p99 < 100 ms at {:.0}% of capacity)",
            self.fraction * 100.0
        )?;
        writeln!(
            out,
            "{:>8} {:>9} {:>10} {:>9}  {:<14} {:>8} {:>7} {:>7} {:>7}",
            "asked/s",
            "period ms",
            "achieved/s",
            "achieved",
            "projection",
            "events",
            "p50 ms",
            "p99 ms",
            "max ms"
        )?;
        let asked = [
            ((capacity * self.fraction).round() as u64).max(1),
            self.rate,
        ];
        for (rate, period) in asked
            .into_iter()
            .flat_map(|rate| self.step_period_ms.iter().map(move |&p| (rate, p)))
        {
            let targets = fresh_cases(store, services).await?;
            // Start from a caught-up log (the capacity run, the last rate and the fresh cases
            // left a backlog). One catch-up can stop short of the log's end: it reads only
            // events no older transaction can still precede, and it goes on until a read finds
            // nothing. What it left would be counted in this rate's lag (once 180 events where
            // 100 commands ran, the oldest 1.3 s late), so it runs again until no projection
            // lags behind the log.
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                for projection in PROJECTIONS.iter().copied() {
                    projector::catch_up(store, projection, |_| {})
                        .await
                        .map_err(|e| BenchError::Refused(e.to_string()))?;
                }
                if !behind(store).await? {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(BenchError::Refused(
                        "the projections did not catch up".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            for name in projector::names() {
                store.applied_lag().take(name);
            }
            settle_database(pool).await;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let runner = tokio::spawn(projector::run(
                store.clone(),
                Duration::from_millis(50),
                Duration::from_millis(period),
                stop_rx,
            ));
            let achieved = commands_at_rate(
                &state,
                &targets,
                rate,
                self.lag_seconds,
                "contacts",
                log_contact,
            )
            .await;
            // Until every event committed has been applied.
            let deadline = Instant::now() + Duration::from_secs(600);
            while behind(store).await? {
                if Instant::now() > deadline {
                    return Err(BenchError::Refused(
                        "the projections did not catch up".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = stop_tx.send(true);
            let _ = runner.await;
            for name in projector::names() {
                let h = store
                    .applied_lag()
                    .take(name)
                    .unwrap_or_else(|| Histogram::new(3).expect("an empty histogram"));
                writeln!(
                    out,
                    "{rate:>8} {period:>9} {achieved:>10.0} {:>8.1}%  {name:<14} {:>8} {:>7} {:>7} {:>7}",
                    100.0 * achieved / rate as f64,
                    h.len(),
                    h.value_at_quantile(0.5),
                    h.value_at_quantile(0.99),
                    h.max()
                )?;
            }
        }
        write_starvations(out, starved_before)?;
        Ok(())
    }
}

/// Whether any projection has events of the log still to apply.
async fn behind(store: &Store) -> Result<bool, BenchError> {
    Ok(projector::status(store)
        .await
        .map_err(|e| BenchError::Refused(e.to_string()))?
        .iter()
        .any(|s| s.lag > 0))
}

fn log_contact(n: usize) -> CaseAction {
    CaseAction::LogContact {
        activity_id: ActivityId::generate(),
        request: contact(n),
    }
}

/// One plain scan of the events table: what a rebuild is compared with.
struct Scan {
    events: u64,
    secs: f64,
    cpu: super::CpuSpan,
}

impl Scan {
    fn rate(&self) -> f64 {
        self.events as f64 / self.secs
    }
}

/// Reads every event in position order, 10,000 rows a query, and parses each payload (as a
/// reader that does nothing with the events would).
async fn scan(pool: &sqlx::PgPool) -> Result<Scan, BenchError> {
    let cpu = CpuSpent::start();
    let t0 = Instant::now();
    let (mut at, mut events, mut bytes) = (0i64, 0u64, 0usize);
    loop {
        let rows = sqlx::query(
            "SELECT position, aggregate_id, sequence, event_type, payload, metadata, recorded_at \
             FROM events WHERE position > $1 ORDER BY position LIMIT 10000",
        )
        .bind(at)
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else { break };
        at = last.try_get("position")?;
        for r in &rows {
            let payload: serde_json::Value = r.try_get("payload")?;
            bytes += payload.as_object().map_or(0, |o| o.len());
        }
        events += rows.len() as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    Ok(Scan {
        events,
        secs,
        cpu: cpu.stop(),
    })
}
