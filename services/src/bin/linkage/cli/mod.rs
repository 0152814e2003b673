//! The `linkage` command line (clap): one module per subcommand, each with its arguments and its
//! `run`, in the manner of mini-redis's `cmd/`. Helpers shared by several live here.

pub mod audit;
pub mod backup;
pub mod billing;
pub mod case;
pub mod projections;
pub mod relay;
pub mod serve;
pub mod subscribe;
pub mod token;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use services::config::{Config, Overrides};
use services::store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "linkage",
    version,
    about = "Event-sourced referral tracking for family case management"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API
    Serve(serve::Args),
    /// Inspect and rebuild projections
    Projections {
        #[command(subcommand)]
        command: projections::ProjectionsCommand,
    },
    /// Look at one case
    Case {
        #[command(subcommand)]
        command: case::CaseCommand,
    },
    /// Check the audit trail
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Publish committed public events to NATS JetStream (what `serve --nats-url` also runs)
    Relay(relay::Args),
    /// Print public events from the stream as JSON lines (a durable pull consumer, explicit acks)
    Subscribe(subscribe::Args),
    /// Medicaid TCM billing
    Billing {
        #[command(subcommand)]
        command: billing::BillingCommand,
    },
    /// Write a consistent copy of the whole store to a file, while servers run
    Backup(backup::BackupArgs),
    /// Restore a backup into an empty store
    Restore(backup::RestoreArgs),
    /// Manage API tokens
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
}

/// Where the store is, for every subcommand that opens it.
#[derive(Debug, clap::Args, Default)]
pub struct StoreArgs {
    /// Directory of the embedded store and the admin token [default: ./linkage-data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL; without it the embedded SQLite store is used
    #[arg(long)]
    pub database_url: Option<String>,
}

impl StoreArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            ..Overrides::default()
        }
    }

    /// The configuration with these flags on top, and the store it names.
    pub async fn open(&self) -> anyhow::Result<(Config, Store)> {
        let config = Config::load(self.overrides())?;
        let store = services::startup::open_store(&config).await?;
        Ok((config, store))
    }
}

/// A progress bar over `len` items called `unit`.
pub fn progress_bar(len: u64, unit: &str) -> anyhow::Result<indicatif::ProgressBar> {
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{msg}} [{{bar:40}}] {{pos}}/{{len}} {unit}, {{per_sec}}, ETA {{eta}}"
    ))?
    .progress_chars("=> ");
    Ok(indicatif::ProgressBar::new(len).with_style(style))
}

/// Resolves on Ctrl-C or SIGTERM, so in-flight work finishes before the process exits.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
