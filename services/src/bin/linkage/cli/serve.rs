//! `linkage serve`: the HTTP API (and, with a NATS URL, the relay) until Ctrl-C or SIGTERM.

use std::net::SocketAddr;

use services::config::{Config, LogFormat, Overrides};
use services::{telemetry, Application};

use super::{shutdown_signal, StoreArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    store: StoreArgs,
    /// NATS URL for the event bus
    #[arg(long)]
    nats_url: Option<String>,
    /// TCM billing rules profile (ops/billing/NAME.toml) [default: texas_like]
    #[arg(long)]
    billing_profile: Option<String>,
    /// Log format [default: pretty]
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(Overrides {
        listen: args.listen,
        nats_url: args.nats_url,
        log_format: args.log_format,
        billing_profile: args.billing_profile,
        ..args.store.overrides()
    })?;
    telemetry::init(config.log_format);
    tracing::info!(?config, "starting");
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
