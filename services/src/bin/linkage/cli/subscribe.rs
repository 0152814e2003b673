//! `linkage subscribe`: public events from the stream as JSON lines.

use std::io::Write;

use anyhow::Context;
use services::config::{Config, Overrides};
use services::telemetry;

use super::shutdown_signal;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// NATS URL of the event bus
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    /// Only events on this subject (wildcards allowed), e.g. 'linkage.v1.*.referral.>'
    #[arg(long)]
    subject: Option<String>,
    /// Start from the oldest event in the stream instead of resuming (or starting with new ones)
    #[arg(long)]
    from_start: bool,
    /// The durable consumer's name; it remembers what was acknowledged between runs
    #[arg(long, default_value = "linkage-subscribe")]
    durable: String,
    /// Exit after this many events
    #[arg(long)]
    count: Option<u64>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(Overrides {
        nats_url: args.nats_url,
        ..Overrides::default()
    })?;
    telemetry::init(config.log_format);
    let url = config
        .nats_url
        .context("no NATS URL: pass --nats-url or set NATS_URL")?;
    let options = services::bus::subscribe::SubscribeOptions {
        url,
        config: config.bus,
        subject: args.subject,
        durable: args.durable,
        from_start: args.from_start,
        count: args.count,
    };
    let mut out = std::io::stdout().lock();
    services::bus::subscribe::subscribe(
        &options,
        |event| {
            serde_json::to_writer(&mut out, event)?;
            out.write_all(b"\n")?;
            out.flush()
        },
        shutdown_signal(),
    )
    .await?;
    Ok(())
}
