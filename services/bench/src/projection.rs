//! `linkage-bench projections`: rebuild of every projection from a large synthetic log, beside a
//! plain scan of the same events table in the same run, with resident memory sampled as the
//! rebuild progresses; then projection lag while commands arrive at a fixed rate.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::{CaseAction, CaseServices};
use hdrhistogram::Histogram;
use schemas::*;
use sqlx::Row;

use super::{
    bench_state, case_services, commands_at_rate, contact, contact_stream, memory_mib, seed_case,
    seed_cases, settle, BenchError, Scratch,
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
    /// Commands per second while lag is measured
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Seconds of lag measurement
    #[arg(long, default_value_t = 10)]
    pub lag_seconds: u64,
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

        // Baseline: a plain scan of the same table, in position order, 10,000 rows a query.
        let t0 = Instant::now();
        let (mut at, mut scanned, mut bytes) = (0i64, 0u64, 0usize);
        loop {
            let rows = sqlx::query(
                "SELECT position, aggregate_id, sequence, event_type, payload, metadata, recorded_at \
                 FROM events WHERE position > $1 ORDER BY position LIMIT 10000",
            )
            .bind(at)
            .fetch_all(&pool)
            .await?;
            let Some(last) = rows.last() else { break };
            at = last.try_get("position")?;
            for r in &rows {
                let payload: serde_json::Value = r.try_get("payload")?;
                bytes += payload.as_object().map_or(0, |o| o.len());
            }
            scanned += rows.len() as u64;
        }
        let scan_secs = t0.elapsed().as_secs_f64();
        let scan_rate = scanned as f64 / scan_secs;
        std::hint::black_box(bytes);

        writeln!(out)?;
        writeln!(
            out,
            "{:<34} {:>10} {:>9} {:>12} {:>9}   resident MiB at 25/50/75/100%",
            "rebuild", "events", "seconds", "events/s", "vs scan"
        )?;
        writeln!(
            out,
            "{:<34} {:>10} {:>9.2} {:>12.0} {:>8.0}%",
            "plain scan of events (baseline)", scanned, scan_secs, scan_rate, 100.0
        )?;
        let mut all_secs = 0.0;
        for name in projector::names() {
            let mut marks = Vec::new();
            let t0 = Instant::now();
            let n = projector::rebuild(&store, name, |done| {
                let quarter = (marks.len() as u64 + 1) * scanned / 4;
                if done >= quarter && marks.len() < 4 {
                    marks.push(memory_mib("VmRSS:"));
                }
            })
            .await
            .map_err(|e| BenchError::Refused(e.to_string()))?;
            let secs = t0.elapsed().as_secs_f64();
            all_secs += secs;
            let rate = n as f64 / secs;
            let marks: Vec<String> = marks.iter().map(|m| format!("{m:.0}")).collect();
            writeln!(
                out,
                "{:<34} {:>10} {:>9.2} {:>12.0} {:>8.0}%   {}",
                format!("projection {name}"),
                n,
                secs,
                rate,
                100.0 * rate / scan_rate,
                marks.join(" / ")
            )?;
        }
        writeln!(
            out,
            "{:<34} {:>10} {:>9.2} {:>12.0}",
            "all projections",
            scanned,
            all_secs,
            scanned as f64 * PROJECTIONS.len() as f64 / all_secs
        )?;
        writeln!(
            out,
            "target: each rebuild >= 50,000 events/s, memory flat as events grow"
        )?;

        self.lag(&store, &services, &pool, out).await?;
        pool.close().await;
        store.close().await;
        Ok(())
    }

    /// Projection lag while commands arrive at `rate`/s: every 10 ms, how long the oldest event
    /// not yet projected has been waiting (0 when none is).
    async fn lag(
        &self,
        store: &Arc<Store>,
        services: &CaseServices,
        pool: &sqlx::PgPool,
        out: &mut impl Write,
    ) -> Result<(), BenchError> {
        let state = bench_state(store, services)?;
        let mut targets = Vec::new();
        for _ in 0..64 {
            let id = seed_case(store, services, 2).await?;
            targets.push(id);
        }
        // Let the projections catch up with the seeding before measuring.
        for projection in PROJECTIONS.iter().copied() {
            projector::catch_up(store, projection, |_| {})
                .await
                .map_err(|e| BenchError::Refused(e.to_string()))?;
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let runner = tokio::spawn(projector::run(
            store.clone(),
            Duration::from_millis(50),
            stop_rx,
        ));
        let sampler = {
            let pool = pool.clone();
            let mut stop = stop_tx.subscribe();
            tokio::spawn(async move {
                let mut hists: Vec<Histogram<u64>> = PROJECTIONS
                    .iter()
                    .map(|_| Histogram::new(3).expect("histogram"))
                    .collect();
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                loop {
                    tokio::select! { _ = stop.changed() => break, _ = tick.tick() => {} }
                    for (i, name) in projector::names().into_iter().enumerate() {
                        let ms: Option<f64> = sqlx::query_scalar(
                            "SELECT (EXTRACT(EPOCH FROM clock_timestamp() - MIN(e.recorded_at)) * 1000)::float8 \
                             FROM events e, projection_checkpoints c WHERE c.name = $1 \
                             AND (e.txid, e.position) > (c.txid::text::xid8, c.position)",
                        )
                        .bind(name)
                        .fetch_one(&pool)
                        .await
                        .unwrap_or(None);
                        let _ = hists[i].record(ms.unwrap_or(0.0).max(0.0) as u64);
                    }
                }
                hists
            })
        };
        let achieved = commands_at_rate(
            &state,
            &targets,
            self.rate,
            self.lag_seconds,
            "contacts",
            |n| CaseAction::LogContact {
                activity_id: ActivityId::generate(),
                request: contact(n),
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = stop_tx.send(true);
        let hists = sampler
            .await
            .map_err(|e| BenchError::Refused(e.to_string()))?;
        let _ = runner.await;
        writeln!(out)?;
        writeln!(
            out,
            "projection lag with commands at {achieved:.0}/s for {} s (target p99 < 250 ms):",
            self.lag_seconds
        )?;
        for (name, h) in projector::names().into_iter().zip(hists) {
            writeln!(
                out,
                "  {name:<14} p50 {:>5} ms   p99 {:>5} ms   max {:>5} ms   ({} samples)",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.max(),
                h.len()
            )?;
        }
        Ok(())
    }
}
