//! `linkage audit verify`: recompute every hash chain from the stored events, and check them
//! against the signed anchors; `linkage audit keygen`: the anchors' signing key.

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
        /// Also check the chains against this file of signed anchors (`[audit_anchor] out`)
        #[arg(long, requires = "public_key")]
        anchors: Option<std::path::PathBuf>,
        /// The anchors' public key (hex), as `linkage audit keygen` printed it
        #[arg(long)]
        public_key: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Write a new Ed25519 key for signing audit anchors (mode 0600) and print its public key
    Keygen {
        /// Where to write it (must not exist); keep it outside the database's reach
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

pub async fn run(command: AuditCommand) -> anyhow::Result<()> {
    let (case, anchors, public_key, store) = match command {
        AuditCommand::Verify {
            case,
            anchors,
            public_key,
            store,
        } => (case, anchors, public_key, store),
        AuditCommand::Keygen { out } => {
            let public = services::anchor::generate_key(&out)?;
            writeln!(
                std::io::stdout(),
                "wrote a signing key to {}; its public key (give it to `audit verify --public-key`):\n{public}",
                out.display()
            )?;
            return Ok(());
        }
    };
    telemetry::init(LogFormat::Pretty);
    let case = case
        .map(|c| schemas::CaseId::parse(&c))
        .transpose()
        .context("--case")?;
    let (_, store) = store.open().await?;
    let report = projector::verify(&store, case).await?;
    let anchored = match (&anchors, &public_key) {
        (Some(path), Some(key)) => {
            let key = services::anchor::public_key(key)
                .map_err(|e| anyhow::anyhow!("--public-key: {e}"))?;
            Some(services::anchor::verify(&store, path, &key).await?)
        }
        _ => None,
    };
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
    if let Some(anchored) = &anchored {
        writeln!(
            out,
            "checked {} signed anchors, {} anchored case heads",
            anchored.anchors, anchored.heads
        )?;
        for b in &anchored.broken {
            writeln!(out, "ANCHOR MISMATCH: {b}")?;
        }
    }
    if !report.broken.is_empty() {
        anyhow::bail!("{} audit chains are broken", report.broken.len());
    }
    if let Some(anchored) = anchored.filter(|a| !a.broken.is_empty()) {
        anyhow::bail!(
            "{} differences from the signed anchors",
            anchored.broken.len()
        );
    }
    writeln!(out, "every chain is intact")?;
    Ok(())
}
