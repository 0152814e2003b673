//! `linkage projections status|rebuild`.

use std::io::Write;

use clap::Subcommand;
use services::config::LogFormat;
use services::{projector, telemetry};

use super::{progress_bar, StoreArgs};

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Position, events applied, lag, error and replicas of every projection
    Status {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Project the whole log again. On PostgreSQL the new copy is built beside the live
    /// projection, which keeps serving reads, and swapped in when it has caught up (blue/green);
    /// on SQLite, or with --in-place, the projection is emptied and refilled where it stands.
    /// Servers may keep running either way: each batch is applied once, by whoever claims it.
    Rebuild {
        /// The projection's name (see `status`)
        name: String,
        /// Empty and refill the live projection instead of building a copy beside it
        #[arg(long)]
        in_place: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub async fn run(command: ProjectionsCommand) -> anyhow::Result<()> {
    telemetry::init(LogFormat::Pretty);
    match command {
        ProjectionsCommand::Status { store } => {
            let (_, store) = store.open().await?;
            let status = projector::status(&store).await?;
            store.close().await;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<16} {:>12} {:>10} {:>10} {:>8}  {:<28} {:<28} error",
                "projection", "txid", "position", "applied", "lag", "running in", "last applied by"
            )?;
            for p in status {
                writeln!(
                    out,
                    "{:<16} {:>12} {:>10} {:>10} {:>8}  {:<28} {:<28} {}",
                    p.name,
                    p.txid,
                    p.position,
                    p.events_applied,
                    p.lag,
                    p.running_in.as_deref().unwrap_or("-"),
                    p.applied_by.as_deref().unwrap_or("-"),
                    p.error.as_deref().unwrap_or("-")
                )?;
            }
        }
        ProjectionsCommand::Rebuild {
            name,
            in_place,
            store,
        } => {
            let (_, store) = store.open().await?;
            projector::known(&name)?;
            let total = store.events_after(Default::default()).await?.max(0) as u64;
            let bar = progress_bar(total, "events")?;
            bar.set_message(format!("rebuilding {name}"));
            let started = std::time::Instant::now();
            let rebuilt =
                projector::rebuild(&store, &name, in_place, |done| bar.set_position(done)).await?;
            bar.finish();
            store.close().await;
            let secs = started.elapsed().as_secs_f64();
            let n = rebuilt.events;
            writeln!(
                std::io::stdout(),
                "rebuilt {name}: {n} events in {secs:.2} s ({:.0} events/s), {}",
                n as f64 / secs.max(1e-9),
                rebuilt.mode.explain()
            )?;
        }
    }
    Ok(())
}
