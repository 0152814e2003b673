//! `linkage relay [status]`: the relay without the HTTP API, or its state.

use std::io::Write;

use anyhow::Context;
use clap::Subcommand;
use services::config::{Config, Overrides};
use services::{startup, telemetry};

use super::{shutdown_signal, StoreArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Option<RelayCommand>,
    #[command(flatten)]
    args: RelayArgs,
}

#[derive(Debug, clap::Args, Default)]
pub struct RelayArgs {
    /// NATS URL of the event bus
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Subcommand)]
enum RelayCommand {
    /// The relay's checkpoint, backlog and the stream's state (JSON)
    Status {
        #[command(flatten)]
        args: RelayArgs,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (args, alone) = match args.command {
        None => (args.args, true),
        Some(RelayCommand::Status { args }) => (args, false),
    };
    let config = Config::load(Overrides {
        nats_url: args.nats_url,
        ..args.store.overrides()
    })?;
    telemetry::init(config.log_format);
    if alone {
        relay_alone(config).await
    } else {
        relay_status(config).await
    }
}

/// The relay without the HTTP API, until Ctrl-C or SIGTERM.
async fn relay_alone(config: Config) -> anyhow::Result<()> {
    let url = config
        .nats_url
        .clone()
        .context("no NATS URL: pass --nats-url or set NATS_URL")?;
    config.bus.validate().map_err(|e| anyhow::anyhow!(e))?;
    let store = std::sync::Arc::new(startup::open_store(&config).await?);
    let status = services::bus::relay::handle(&config.bus);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let relay = tokio::spawn(services::bus::relay::run(
        store.clone(),
        url,
        config.bus.clone(),
        std::time::Duration::from_millis(config.projection_poll_ms),
        status,
        stop_rx,
    ));
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = relay.await;
    store.close().await;
    Ok(())
}

/// Checkpoint and backlog from the store; the stream's state if NATS answers.
async fn relay_status(config: Config) -> anyhow::Result<()> {
    let store = startup::open_store(&config).await?;
    let checkpoint = services::bus::relay::checkpoint(&store).await?;
    store.close().await;
    let stream = match &config.nats_url {
        Some(url) => match services::bus::relay::stream_state(url, &config.bus).await {
            Ok(state) => serde_json::to_value(state)?,
            Err(e) => serde_json::json!({"error": e.to_string()}),
        },
        None => serde_json::json!({"error": "no NATS URL: pass --nats-url or set NATS_URL"}),
    };
    let report = serde_json::json!({"relay": checkpoint, "stream": stream});
    writeln!(
        std::io::stdout(),
        "{}",
        serde_json::to_string_pretty(&report)?
    )?;
    Ok(())
}
