//! `linkage`: parses the command line and hands each subcommand to its module in `cli/`, which
//! wires telemetry, configuration and (for the long-running ones) graceful shutdown around the
//! library. Nothing else lives here.

mod cli;

use clap::Parser;

/// mimalloc instead of glibc's malloc: the relay and the projections allocate many small,
/// short-lived values per event, and glibc's allocator was a third of the relay's CPU profile.
/// Built without transparent huge pages (the workspace's `no_thp` feature, which says why).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use cli::Command;
    match cli::Cli::parse().command {
        Command::Serve(args) => cli::serve::run(args).await,
        Command::Projections { command } => cli::projections::run(command).await,
        Command::Case { command } => cli::case::run(command).await,
        Command::Audit { command } => cli::audit::run(command).await,
        Command::Relay(args) => cli::relay::run(args).await,
        Command::Subscribe(args) => cli::subscribe::run(args).await,
        Command::Billing { command } => cli::billing::run(command).await,
        Command::Backup(args) => cli::backup::backup(args).await,
        Command::Restore(args) => cli::backup::restore_into(args).await,
        Command::Token { command } => cli::token::run(command).await,
    }
}
