//! `linkage-bench billing`: exporting a month of the TCM billing log (evaluated with the default
//! rules profile, rendered as CSV) beside a plain `COPY (SELECT …) TO STDOUT` of the same rows
//! (one per contact of the month, from the same tables), in the same run on the same database,
//! with the export's resident memory sampled as it goes; then recording that month's export
//! batches beside an `INSERT … SELECT` of the same rows.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use projections::billing::Month;
use schemas::*;
use sqlx::postgres::PgPoolCopyExt;

use super::{
    bench_err, case_services, case_with_contacts, memory_mib, seed_cases, BenchError, Scratch,
};
use services::billing::export::{export_month, Format};
use services::store::Store;

#[derive(Debug, Clone, clap::Args)]
pub struct BillingBench {
    /// PostgreSQL URL of a role that may create databases (a scratch one is made and dropped)
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Activity lines (contacts) in the month
    #[arg(long, default_value_t = 1_000_000)]
    pub lines: u64,
    /// Contacts per case
    #[arg(long, default_value_t = 10)]
    pub per_case: usize,
}

const MONTH: Month = Month {
    year: 2026,
    month: 3,
};

/// A sink that only counts what it is given: the disk is not what is measured (COPY's bytes are
/// not written either).
pub(crate) fn counting_sink(
) -> std::pin::Pin<Box<impl futures::Sink<bytes::Bytes, Error = std::convert::Infallible>>> {
    Box::pin(futures::sink::unfold(
        0u64,
        |n, chunk: bytes::Bytes| async move { Ok(n + chunk.len() as u64) },
    ))
}

impl BillingBench {
    /// Recording the month's batches: the first holds every line as an original, the second
    /// (nothing changed since) holds none, and the first is then reproduced (checksum verified,
    /// rows rendered again). Beside them, the same rows written server-side by
    /// `INSERT … SELECT` into a table of the same shape: a floor no client can beat.
    async fn batches(
        &self,
        store: &Store,
        pool: &sqlx::PgPool,
        profile: &projections::billing::Profile,
        out: &mut impl Write,
    ) -> Result<(), BenchError> {
        sqlx::query("CREATE TABLE bench_batch_lines (LIKE billing_batch_lines INCLUDING INDEXES)")
            .execute(pool)
            .await?;
        let (lo, hi) = MONTH.window();
        let t0 = Instant::now();
        let baseline = sqlx::query(&format!(
            "INSERT INTO bench_batch_lines (batch_id, seq, month, agency, batch_no, case_id, \
             activity_id, line_id, kind, adjusts, fingerprint, line) \
             SELECT 'b', row_number() OVER (), m.month, m.agency, 1, m.case_id, k.activity_id::text, \
             gen_random_uuid()::text, 'original', NULL, md5(k.contact), k.contact::jsonb \
             FROM billing_case_months m JOIN billing_contacts k ON k.case_id = m.case_id::uuid \
             AND k.at >= {lo} AND k.at < {hi} WHERE m.month = '{MONTH}'"
        ))
        .execute(pool)
        .await?
        .rows_affected();
        let baseline_secs = t0.elapsed().as_secs_f64();
        let baseline_rate = baseline as f64 / baseline_secs;

        let timed_batch = || async {
            let t0 = Instant::now();
            let record = services::billing::batch::create(
                store,
                profile,
                services::store::BatchOf {
                    month: MONTH,
                    agency: "bench",
                    zone: chrono_tz::Tz::UTC,
                },
                &Default::default(),
            )
            .await
            .map_err(bench_err)?;
            Ok::<_, BenchError>((record, t0.elapsed().as_secs_f64()))
        };
        let hwm_before = memory_mib("VmHWM:");
        let (first, first_secs) = timed_batch().await?;
        let hwm_first = memory_mib("VmHWM:");
        let (second, second_secs) = timed_batch().await?;
        let mut sink = counting_sink();
        let t0 = Instant::now();
        services::billing::batch::write(store, &first, Format::Csv, &mut sink)
            .await
            .map_err(bench_err)?;
        let reproduce_secs = t0.elapsed().as_secs_f64();

        writeln!(out)?;
        writeln!(
            out,
            "{:<46} {:>10} {:>9} {:>12} {:>9}",
            "export batches", "rows", "seconds", "rows/s", "vs INSERT"
        )?;
        let row = |out: &mut dyn Write, label: &str, rows: i64, secs: f64| {
            let rate = rows as f64 / secs;
            writeln!(
                out,
                "{label:<46} {rows:>10} {secs:>9.2} {rate:>12.0} {:>8.0}%",
                100.0 * rate / baseline_rate
            )
        };
        row(
            out,
            "INSERT ... SELECT the same rows (baseline)",
            baseline as i64,
            baseline_secs,
        )?;
        row(
            out,
            "first batch (every line an original)",
            first.lines,
            first_secs,
        )?;
        writeln!(
            out,
            "{:<46} {:>10} {:>9.2}",
            "second batch (nothing changed since)", second.lines, second_secs
        )?;
        row(
            out,
            "reproduce the first (verify, then write CSV)",
            first.lines,
            reproduce_secs,
        )?;
        writeln!(
            out,
            "  peak resident MiB before the batches {hwm_before:.0}, after the first {hwm_first:.0}"
        )?;
        Ok(())
    }

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
        let profile = services::billing::select(services::billing::DEFAULT_PROFILE, None)
            .map_err(bench_err)?;
        writeln!(
            out,
            "linkage-bench billing: PostgreSQL {version}, {} CPUs, profile {}",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            profile.name
        )?;
        let cases = (self.lines as usize).div_ceil(self.per_case);
        let t0 = Instant::now();
        let n = self.per_case;
        seed_cases(&store, &services, cases, move |id| {
            case_with_contacts(id, n, ActorId::parse("cm-bench").expect("static"), MONTH)
        })
        .await?;
        let seeded = t0.elapsed().as_secs_f64();
        // As after any bulk load (and as autovacuum would): statistics, so the log is read by index.
        let pool = sqlx::PgPool::connect(url).await?;
        super::settle(&pool).await;
        let t0 = Instant::now();
        let projected =
            services::projector::catch_up(&store, &services::projector::Billing, |_| {})
                .await
                .map_err(bench_err)?;
        writeln!(
            out,
            "seeded {} contacts in {cases} cases in {seeded:.1} s; billing projection applied {projected} events in {:.1} s",
            cases * self.per_case,
            t0.elapsed().as_secs_f64()
        )?;
        super::settle(&pool).await;

        // Baseline: the same rows (one per contact of the month), straight out of PostgreSQL.
        let (lo, hi) = MONTH.window();
        let copy = format!(
            "COPY (SELECT m.case_id, k.contact FROM billing_case_months m \
             JOIN billing_contacts k ON k.case_id = m.case_id::uuid AND k.at >= {lo} AND k.at < {hi} \
             WHERE m.month = '{MONTH}') TO STDOUT (FORMAT csv)"
        );
        let t0 = Instant::now();
        let (mut copy_rows, mut copy_bytes) = (0u64, 0u64);
        {
            let mut stream = pool.copy_out_raw(&copy).await?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                copy_bytes += chunk.len() as u64;
                copy_rows += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            }
        }
        let copy_secs = t0.elapsed().as_secs_f64();
        let copy_rate = copy_rows as f64 / copy_secs;

        // The export: every line evaluated with the rules and rendered as CSV.
        let mut sink = counting_sink();
        let mut marks = Vec::new();
        let hwm_before = memory_mib("VmHWM:");
        let t0 = Instant::now();
        let summary = export_month(
            &store,
            &profile,
            &Default::default(),
            services::billing::export::Selection {
                month: MONTH,
                agency: None,
                format: Format::Csv,
            },
            &mut sink,
            |done| {
                let quarter = (marks.len() as u64 + 1) * cases as u64 / 4;
                if done >= quarter && marks.len() < 4 {
                    marks.push(memory_mib("VmRSS:"));
                }
            },
        )
        .await
        .map_err(bench_err)?;
        let export_secs = t0.elapsed().as_secs_f64();
        let export_rate = summary.lines as f64 / export_secs;

        writeln!(out)?;
        writeln!(
            out,
            "{:<46} {:>10} {:>9} {:>12} {:>9}",
            "month export", "rows", "seconds", "rows/s", "vs COPY"
        )?;
        writeln!(
            out,
            "{:<46} {:>10} {:>9.2} {:>12.0} {:>8.0}%   {:.0} MB",
            "COPY (SELECT ...) TO STDOUT (baseline)",
            copy_rows,
            copy_secs,
            copy_rate,
            100.0,
            copy_bytes as f64 / 1e6
        )?;
        writeln!(
            out,
            "{:<46} {:>10} {:>9.2} {:>12.0} {:>8.0}%",
            "linkage billing export, CSV (rules applied)",
            summary.lines,
            export_secs,
            export_rate,
            100.0 * export_rate / copy_rate
        )?;
        let marks: Vec<String> = marks.iter().map(|m| format!("{m:.0}")).collect();
        writeln!(
            out,
            "  {} billable lines, {} units; resident MiB at 25/50/75/100% of cases: {} (peak before {:.0}, after {:.0})",
            summary.billable_lines,
            summary.units,
            marks.join(" / "),
            hwm_before,
            memory_mib("VmHWM:")
        )?;
        writeln!(out, "target: export >= 30% of the COPY rate, memory flat")?;
        self.batches(&store, &pool, &profile, out).await?;
        pool.close().await;
        store.close().await;
        Ok(())
    }
}
