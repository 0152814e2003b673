//! `linkage-bench costs`: how the costs users feel grow with the store. One scratch database is
//! grown step by step to each size asked (10,000, 1,000,000 and 10,000,000 events by default),
//! the projections are caught up, the database is settled, and at each size the same probes run:
//! commands, a cold load of a 500-event case, a page of a case's events, a worker's caseload and
//! one month's billing export. The baseline of each figure is the same figure at the smallest
//! size, in the same run: a flat curve is the target.
//!
//! What grows is history, as it does in an agency: cases of `stream_len` events, 30 to a case
//! manager, their contacts spread over 24 past months (2024-2025). What the probes read stays
//! the same size: case manager `cm-probe` has `probe_cases` cases of `stream_len` events, all
//! contacts in October 2026, the month exported.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use aggregates::CaseAction;
use hdrhistogram::Histogram;
use projections::billing::Month;
use schemas::*;

use super::serve::Served;
use super::{
    bench_err, bench_state, case_services, case_with_contacts, commit_actions, contact,
    fresh_cases, heap_mib, memory_mib, one_command, run_clients, seed_cases, settle_database,
    BenchError, Scratch,
};
use services::billing::export::{export_month, Format, Selection};
use services::projector::{self, PROJECTIONS};

#[derive(Debug, Clone, clap::Args)]
pub struct CostBench {
    /// PostgreSQL URL of a role that may create databases (a scratch one is made and dropped)
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Events stored at each measurement, ascending
    #[arg(long, value_delimiter = ',', default_values_t = [10_000, 1_000_000, 10_000_000])]
    pub sizes: Vec<u64>,
    /// Events per case stream (history and probes alike)
    #[arg(long, default_value_t = 500)]
    pub stream_len: usize,
    /// Seconds of the command measurement at each size
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// The probe case manager's cases (read back at every size)
    #[arg(long, default_value_t = 20)]
    pub probe_cases: usize,
}

/// The month the probes' contacts fall in, and the month exported.
const PROBE_MONTH: Month = Month {
    year: 2026,
    month: 10,
};

/// Cases per case manager in the history.
const CASELOAD: usize = 30;

/// The figures measured at one size.
struct Point {
    events: i64,
    database_mib: f64,
    seed_secs: f64,
    catch_up_secs: f64,
    commands_per_sec: f64,
    command_p99_ms: f64,
    cold_load: Histogram<u64>,
    page: Histogram<u64>,
    caseload: Histogram<u64>,
    export_secs: f64,
    export_lines: u64,
    export_mib: f64,
}

fn histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| BenchError::Histogram(e.to_string()))
}

fn record(h: &mut Histogram<u64>, t0: Instant) -> Result<(), BenchError> {
    h.record(t0.elapsed().as_micros().max(1) as u64)
        .map_err(|e| BenchError::Histogram(e.to_string()))
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// The history's `k`th case: `stream_len` events, its case manager's and its month's.
fn history_case(id: CaseId, k: usize, stream_len: usize) -> Vec<CaseAction> {
    let worker = ActorId::parse(format!("cm-h{:05}", k / CASELOAD)).expect("a worker id");
    let month = Month {
        year: 2024 + (k % 24 / 12) as i32,
        month: 1 + (k % 12) as u32,
    };
    case_with_contacts(id, stream_len - 2, worker, month)
}

impl CostBench {
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
        // The projections are caught up between sizes, not while the probes run.
        let served = Served::start(url, false, 32, |_| {}).await?;
        let store = served.store.clone();
        let services = case_services()?;
        let state = bench_state(&store, &services)?;
        let pool = sqlx::PgPool::connect(url).await?;
        writeln!(
            out,
            "linkage-bench costs: PostgreSQL {version}, {} CPUs; history of {}-event cases, {CASELOAD} to a case manager, \
             probes on {} cases of cm-probe with every contact in {PROBE_MONTH}",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            self.stream_len,
            self.probe_cases,
        )?;

        let probe_worker = ActorId::parse("cm-probe").expect("static");
        let mut probes = Vec::with_capacity(self.probe_cases);
        for _ in 0..self.probe_cases {
            let id = CaseId::generate();
            let actions =
                case_with_contacts(id, self.stream_len - 2, probe_worker.clone(), PROBE_MONTH);
            commit_actions(&store, &services, id, actions).await?;
            store.uncache(id);
            probes.push(id);
        }

        let history = Arc::new(AtomicUsize::new(0));
        let mut points = Vec::new();
        for &size in &self.sizes {
            let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
                .fetch_one(&pool)
                .await?;
            let cases = ((size as i64 - stored).max(0) as usize).div_ceil(self.stream_len);
            let t0 = Instant::now();
            let (counter, len) = (history.clone(), self.stream_len);
            seed_cases(&store, &services, cases, move |id| {
                history_case(id, counter.fetch_add(1, Ordering::Relaxed), len)
            })
            .await?;
            let seed_secs = t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            for projection in PROJECTIONS.iter().copied() {
                projector::catch_up(&store, projection, |_| {})
                    .await
                    .map_err(bench_err)?;
            }
            let catch_up_secs = t0.elapsed().as_secs_f64();
            settle_database(&pool).await;
            let point = self
                .measure(
                    &served,
                    &state,
                    &services,
                    &pool,
                    &probes,
                    seed_secs,
                    catch_up_secs,
                )
                .await?;
            let largest: Vec<(String, i64)> = sqlx::query_as(
                "SELECT relname::text, pg_total_relation_size(oid) FROM pg_class \
                 WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace \
                 ORDER BY 2 DESC LIMIT 4",
            )
            .fetch_all(&pool)
            .await?;
            let largest: Vec<String> = largest
                .iter()
                .map(|(table, bytes)| format!("{table} {:.0}", *bytes as f64 / 1048576.0))
                .collect();
            writeln!(
                out,
                "{} events stored ({:.0} MiB; largest tables with indexes, MiB: {}): seeded in {:.1} s, projections caught up in {:.1} s",
                point.events,
                point.database_mib,
                largest.join(", "),
                point.seed_secs,
                point.catch_up_secs
            )?;
            points.push(point);
        }
        self.report(&points, out)?;
        pool.close().await;
        served.stop().await
    }

    /// The probes at one size: reads first (of a settled database), then commands.
    #[allow(clippy::too_many_arguments)]
    async fn measure(
        &self,
        served: &Served,
        state: &services::startup::AppState,
        services: &aggregates::CaseServices,
        pool: &sqlx::PgPool,
        probes: &[CaseId],
        seed_secs: f64,
        catch_up_secs: f64,
    ) -> Result<Point, BenchError> {
        let store = &served.store;
        let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(pool)
            .await?;
        let bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(pool)
            .await?;

        // A cold load: the whole stream replayed, as on a command cache miss.
        let mut cold_load = histogram()?;
        for _ in 0..3 {
            for &id in probes {
                store.uncache(id);
                let t0 = Instant::now();
                store.load(id).await?;
                record(&mut cold_load, t0)?;
            }
        }
        // A page of a case's events over HTTP: the first 100, then the next by cursor.
        let mut page = histogram()?;
        for _ in 0..3 {
            for &id in probes {
                let t0 = Instant::now();
                let first = served
                    .get(&format!("/v1/cases/{id}/events?limit=100"))
                    .await?;
                record(&mut page, t0)?;
                let first: serde_json::Value = serde_json::from_slice(&first).map_err(bench_err)?;
                // The next page, when the stream is longer than one.
                if let Some(cursor) = first["next_cursor"].as_str() {
                    let t0 = Instant::now();
                    served
                        .get(&format!("/v1/cases/{id}/events?limit=100&cursor={cursor}"))
                        .await?;
                    record(&mut page, t0)?;
                }
            }
        }
        // The probe case manager's caseload over HTTP.
        let mut caseload = histogram()?;
        for _ in 0..30 {
            let t0 = Instant::now();
            let body = served.get("/v1/caseloads/cm-probe").await?;
            record(&mut caseload, t0)?;
            let body: serde_json::Value = serde_json::from_slice(&body).map_err(bench_err)?;
            let open = body["cases"].as_array().map_or(0, Vec::len);
            if open != probes.len() {
                return Err(BenchError::Refused(format!(
                    "the probe caseload holds {open} cases, not {}",
                    probes.len()
                )));
            }
        }
        // One month's billing export, CSV, with the heap in use sampled after every case (the
        // process's resident size when the binary counts no heap).
        let in_use = || heap_mib().unwrap_or_else(|| memory_mib("VmRSS:"));
        let mut sink = super::billing::counting_sink();
        let before = in_use();
        let mut peak = before;
        let t0 = Instant::now();
        let summary = export_month(
            store,
            &state.billing,
            &Default::default(),
            Selection {
                month: PROBE_MONTH,
                agency: None,
                format: Format::Csv,
            },
            &mut sink,
            |_| peak = peak.max(in_use()),
        )
        .await
        .map_err(bench_err)?;
        let export_secs = t0.elapsed().as_secs_f64();

        // Commands: 16 clients in process, flat out, on fresh cases.
        let targets = Arc::new(fresh_cases(store, services).await?);
        let (rate, hist) = {
            let state = state.clone();
            run_clients(16, self.seconds, move |client, n| {
                let (state, targets) = (state.clone(), targets.clone());
                async move {
                    let id = targets[(client * 31 + n) % targets.len()];
                    let action = CaseAction::LogContact {
                        activity_id: ActivityId::generate(),
                        request: contact(n),
                    };
                    one_command(&state, id, "contacts", b"{}", action).await
                }
            })
            .await?
        };
        Ok(Point {
            events,
            database_mib: bytes as f64 / (1024.0 * 1024.0),
            seed_secs,
            catch_up_secs,
            commands_per_sec: rate,
            command_p99_ms: ms(&hist, 0.99),
            cold_load,
            page,
            caseload,
            export_secs,
            export_lines: summary.lines,
            export_mib: peak - before,
        })
    }

    fn report(&self, points: &[Point], out: &mut impl Write) -> Result<(), BenchError> {
        let (Some(first), Some(last)) = (points.first(), points.last()) else {
            return Ok(());
        };
        writeln!(out)?;
        write!(out, "{:<44}", "events stored")?;
        for p in points {
            write!(out, " {:>12}", p.events)?;
        }
        writeln!(out, " {:>14}", "largest/first")?;
        let line = |out: &mut dyn Write, label: &str, f: &dyn Fn(&Point) -> f64, digits: usize| {
            write!(out, "{label:<44}")?;
            for p in points {
                write!(out, " {:>12.digits$}", f(p))?;
            }
            writeln!(out, " {:>13.2}x", f(last) / f(first))
        };
        line(out, "database MiB", &|p| p.database_mib, 0)?;
        line(out, "commands/s, 16 clients", &|p| p.commands_per_sec, 0)?;
        line(out, "command p99 ms", &|p| p.command_p99_ms, 2)?;
        let cold = format!("cold load of a {}-event case p50 ms", self.stream_len);
        line(out, &cold, &|p| ms(&p.cold_load, 0.5), 2)?;
        line(out, "  p99 ms", &|p| ms(&p.cold_load, 0.99), 2)?;
        line(
            out,
            "page of 100 of a case's events p50 ms",
            &|p| ms(&p.page, 0.5),
            2,
        )?;
        line(out, "  p99 ms", &|p| ms(&p.page, 0.99), 2)?;
        let load = format!("caseload of a worker ({} cases) p50 ms", self.probe_cases);
        line(out, &load, &|p| ms(&p.caseload, 0.5), 2)?;
        line(out, "  p99 ms", &|p| ms(&p.caseload, 0.99), 2)?;
        let export = format!("month export ({} lines) ms", first.export_lines);
        line(out, &export, &|p| p.export_secs * 1000.0, 2)?;
        line(
            out,
            "  heap MiB added while exporting (peak)",
            &|p| p.export_mib,
            1,
        )?;
        writeln!(
            out,
            "target: flat curves (each figure at the largest size near the first); the baseline of each is its value at {} events",
            first.events
        )?;
        Ok(())
    }
}
