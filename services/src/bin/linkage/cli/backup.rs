//! `linkage backup` and `linkage restore`: a consistent copy of the whole store, taken while
//! servers run, and its return into an empty store (`services::store::backup`).

use std::io::Write;
use std::path::PathBuf;

use services::config::{Config, LogFormat};
use services::store::backup::{restore, BackupKind, RestoreTarget};
use services::telemetry;

use super::StoreArgs;

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// The file to write (must not exist): a SQLite database, or a pg_dump archive on PostgreSQL
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// A file `linkage backup` wrote
    pub file: PathBuf,
    /// The empty store to restore into: --data-dir (SQLite) or --database-url (PostgreSQL)
    #[command(flatten)]
    pub store: StoreArgs,
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    telemetry::init(LogFormat::Pretty);
    let (_, store) = args.store.open().await?;
    let started = std::time::Instant::now();
    let bytes = store.backup(&args.out).await;
    store.close().await;
    let bytes = bytes?;
    writeln!(
        std::io::stdout(),
        "backed up the {} store to {}: {bytes} bytes in {:.2} s",
        store.backend_name(),
        args.out.display(),
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

pub async fn restore_into(args: RestoreArgs) -> anyhow::Result<()> {
    telemetry::init(LogFormat::Pretty);
    let config = Config::load(args.store.overrides())?;
    let kind = BackupKind::of(&args.file)?;
    let target = match &config.database_url {
        Some(url) => RestoreTarget::Postgres { url },
        None => RestoreTarget::Sqlite {
            data_dir: &config.data_dir,
        },
    };
    restore(&args.file, target).await?;
    // Opening it runs any migration newer than the backup.
    let store = services::startup::open_store(&config).await?;
    let events = store.events_after(Default::default()).await?;
    store.close().await;
    writeln!(
        std::io::stdout(),
        "restored {} ({kind:?}): {events} events; run `linkage audit verify` and start the server",
        args.file.display()
    )?;
    Ok(())
}
