//! `linkage audit verify`: recompute every hash chain from the stored events.

use std::io::Write;

use anyhow::Context;
use clap::Subcommand;
use services::config::LogFormat;
use services::{projector, telemetry};

use super::StoreArgs;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute every case's hash chain from the stored events and name the first broken link
    Verify {
        /// Only this case
        #[arg(long)]
        case: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub async fn run(command: AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::Verify { case, store } = command;
    telemetry::init(LogFormat::Pretty);
    let case = case
        .map(|c| schemas::CaseId::parse(&c))
        .transpose()
        .context("--case")?;
    let (_, store) = store.open().await?;
    let report = projector::verify(&store, case).await?;
    store.close().await;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "verified {} cases, {} entries ({} events not yet projected)",
        report.cases, report.entries, report.pending
    )?;
    for b in &report.broken {
        writeln!(
            out,
            "BROKEN case {} at sequence {} (event {}): {}",
            b.case_id, b.sequence, b.event_id, b.reason
        )?;
    }
    if !report.broken.is_empty() {
        anyhow::bail!("{} audit chains are broken", report.broken.len());
    }
    writeln!(out, "every chain is intact")?;
    Ok(())
}
