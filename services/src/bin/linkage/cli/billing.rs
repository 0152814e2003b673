//! `linkage billing export|reproduce`: the month's billing log, or an export batch, into a file.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use services::config::{Config, Overrides};
use services::projector::Projection;
use services::store::BatchOf;
use services::telemetry;

use super::{progress_bar, StoreArgs};

#[derive(Debug, Subcommand)]
pub enum BillingCommand {
    /// Write a month of the billing-eligible activity log to a file, with a progress bar
    Export {
        /// The month of service, YYYY-MM
        #[arg(long)]
        month: String,
        /// The file to write
        #[arg(long)]
        out: PathBuf,
        /// csv (with a header row, ready for a spreadsheet) or json
        #[arg(long, default_value = "csv")]
        format: String,
        /// Only this agency's cases [default: all]
        #[arg(long)]
        agency: Option<String>,
        /// The billing rules profile [default: the configured one, else texas_like]
        #[arg(long)]
        billing_profile: Option<String>,
        /// Record an export batch of the agency (only what changed since the month's previous
        /// batches: originals, voids, replacements) and write that, instead of the whole log
        #[arg(long)]
        batch: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Write a recorded export batch again, byte for byte (its checksum is checked first)
    Reproduce {
        /// The batch id
        batch_id: String,
        /// The file to write
        #[arg(long)]
        out: PathBuf,
        /// csv or json
        #[arg(long, default_value = "csv")]
        format: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub async fn run(command: BillingCommand) -> anyhow::Result<()> {
    match command {
        BillingCommand::Export {
            month,
            out,
            format,
            agency,
            billing_profile,
            batch,
            store,
        } => {
            let config = Config::load(Overrides {
                billing_profile,
                ..store.overrides()
            })?;
            telemetry::init(config.log_format);
            if batch {
                billing_batch(config, &month, &out, &format, agency.as_deref()).await
            } else {
                billing_export(config, &month, &out, &format, agency.as_deref()).await
            }
        }
        BillingCommand::Reproduce {
            batch_id,
            out,
            format,
            store,
        } => {
            let config = Config::load(store.overrides())?;
            telemetry::init(config.log_format);
            let format = parse_format(&format)?;
            let store = services::startup::open_store(&config).await?;
            let record = store
                .billing_batch(&batch_id)
                .await?
                .with_context(|| format!("no billing batch {batch_id}"))?;
            write_batch_file(&store, &record, format, &out).await?;
            store.close().await;
            writeln!(
                std::io::stdout(),
                "wrote {}: batch {} of {} for {} ({} lines), checksum {} verified",
                out.display(),
                record.batch_no,
                record.month,
                record.agency,
                record.lines,
                record.checksum
            )?;
            Ok(())
        }
    }
}

fn parse_format(format: &str) -> anyhow::Result<services::billing::export::Format> {
    services::billing::export::Format::parse(format)
        .with_context(|| format!("--format must be csv or json, got `{format}`"))
}

/// `--month YYYY-MM` and `--format csv|json` of the billing commands.
fn month_and_format(
    month: &str,
    format: &str,
) -> anyhow::Result<(
    projections::billing::Month,
    services::billing::export::Format,
)> {
    let month = projections::billing::Month::parse(month)
        .with_context(|| format!("--month must be YYYY-MM, got `{month}`"))?;
    Ok((month, parse_format(format)?))
}

/// `linkage billing export`: a month of the billing log into a file, with a progress bar.
async fn billing_export(
    config: Config,
    month: &str,
    out: &std::path::Path,
    format: &str,
    agency: Option<&str>,
) -> anyhow::Result<()> {
    use services::billing::export::export_month;
    let (month, format) = month_and_format(month, format)?;
    let profile =
        services::billing::select(&config.billing_profile, config.billing_rules_dir.as_deref())?;
    let store = services::startup::open_store(&config).await?;
    let lag = services::projector::status(&store)
        .await?
        .into_iter()
        .find(|p| p.name == services::projector::Billing.name())
        .map_or(0, |p| p.lag);
    if lag > 0 {
        tracing::warn!(
            lag,
            "the billing projection has not applied the newest events; is `linkage serve` running?"
        );
    }
    let cases = store.billing_case_count(month, agency).await?;
    let bar = progress_bar(cases.max(0) as u64, "cases")?;
    bar.set_message(format!("exporting {month}"));
    let mut sink = file_sink(out, |_| {})?;
    let zones = config.zones()?;
    let summary = export_month(
        &store,
        &profile,
        &zones,
        services::billing::export::Selection {
            month,
            agency,
            format,
        },
        &mut sink,
        |done| bar.set_position(done),
    )
    .await?;
    drop(sink);
    bar.finish();
    store.close().await;
    writeln!(
        std::io::stdout(),
        "wrote {}: {} lines ({} billable, {} units) for {} cases, profile {}",
        out.display(),
        summary.lines,
        summary.billable_lines,
        summary.units,
        summary.cases,
        profile.name
    )?;
    Ok(())
}

/// `linkage billing export --batch`: records the month's next export batch and writes it.
async fn billing_batch(
    config: Config,
    month: &str,
    out: &std::path::Path,
    format: &str,
    agency: Option<&str>,
) -> anyhow::Result<()> {
    let (month, format) = month_and_format(month, format)?;
    let agency = agency.context("--batch needs --agency: a batch is one agency's claims")?;
    let profile =
        services::billing::select(&config.billing_profile, config.billing_rules_dir.as_deref())?;
    let store = services::startup::open_store(&config).await?;
    // The command line acts as an administrator for the batch's agency.
    let cli = aggregates::Actor {
        id: schemas::ActorId::parse("cli").expect("static id"),
        role: schemas::Role::Admin,
        agency: schemas::AgencyId::parse(agency).context("--agency")?,
        provider: None,
    };
    let metadata =
        services::billing::batch::metadata(&cli, services::Clock::from_config(config.clock).now());
    let zone = config.zones()?.of(Some(&cli.agency));
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(format!("recording the next batch of {month} for {agency}"));
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    let record = services::billing::batch::create(
        &store,
        &profile,
        BatchOf {
            month,
            agency,
            zone,
        },
        &metadata,
    )
    .await?;
    bar.finish_and_clear();
    write_batch_file(&store, &record, format, out).await?;
    store.close().await;
    writeln!(
        std::io::stdout(),
        "batch {} ({} of {month} for {agency}): {} lines, checksum {}, written to {}",
        record.batch_id,
        record.batch_no,
        record.lines,
        record.checksum,
        out.display()
    )?;
    Ok(())
}

/// Writes a recorded batch to `out` with a progress bar over its lines.
async fn write_batch_file(
    store: &services::store::Store,
    record: &services::store::BatchRecord,
    format: services::billing::export::Format,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let bar = progress_bar(record.lines.max(0) as u64, "lines")?;
    bar.set_message(format!("writing batch {}", record.batch_no));
    let counter = bar.clone();
    let mut sink = file_sink(out, move |chunk| {
        counter.inc(chunk.iter().filter(|b| **b == b'\n').count() as u64)
    })?;
    services::billing::batch::write(store, record, format, &mut sink).await?;
    bar.finish();
    Ok(())
}

/// A sink writing chunks to a new file `out`, calling `seen` with each. Unbuffered: a chunk is a
/// whole case's lines or more, and a failed write must surface at once, not in a buffer's drop.
fn file_sink(
    out: &std::path::Path,
    seen: impl Fn(&[u8]) + Clone,
) -> anyhow::Result<std::pin::Pin<Box<impl futures::Sink<bytes::Bytes, Error = std::io::Error>>>> {
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    Ok(Box::pin(futures::sink::unfold(
        file,
        move |mut w, chunk: bytes::Bytes| {
            let seen = seen.clone();
            async move {
                w.write_all(&chunk)?;
                seen(&chunk);
                Ok::<_, std::io::Error>(w)
            }
        },
    )))
}
