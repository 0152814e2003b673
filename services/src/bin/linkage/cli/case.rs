//! `linkage case history`: a case as known at a time, as JSON.

use std::io::Write;

use anyhow::Context;
use clap::Subcommand;
use projections::history;
use services::config::LogFormat;
use services::http::reads::{history_inputs, parse_as_of};
use services::{telemetry, Clock};

use super::StoreArgs;

#[derive(Debug, Subcommand)]
pub enum CaseCommand {
    /// The case as known at a time, and its events up to then (JSON)
    History {
        case_id: String,
        /// RFC 3339 time, or YYYY-MM-DD for the end of that day [default: now]
        #[arg(long)]
        as_of: Option<String>,
        /// recorded (what the record held then) or occurred (everything that happened by then)
        #[arg(long, default_value = "recorded")]
        basis: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub async fn run(command: CaseCommand) -> anyhow::Result<()> {
    let CaseCommand::History {
        case_id,
        as_of,
        basis,
        store,
    } = command;
    telemetry::init(LogFormat::Pretty);
    let id = schemas::CaseId::parse(&case_id).context("case id")?;
    let as_of = as_of
        .map(|t| parse_as_of(&t).map_err(|e| anyhow::anyhow!("--as-of: {e}")))
        .transpose()?;
    let basis: history::Basis = basis.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let (config, store) = store.open().await?;
    let events = store.events_of(id).await?;
    store.close().await;
    anyhow::ensure!(!events.is_empty(), "no case {case_id}");
    let inputs = history_inputs(events).map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = Clock::from_config(config.clock).now();
    // The case's agency, from its intake: the zone an `--as-of` date ends in.
    let agency = inputs.iter().find_map(|e| match &e.event {
        aggregates::CaseEvent::CaseOpened { agency, .. } => Some(agency),
        _ => None,
    });
    let zone = config.zones()?.of(agency);
    let at = match as_of {
        Some(as_of) => as_of.at(zone),
        None => history::now_or_latest(&inputs, now),
    };
    let view = history::as_of(&inputs, at, basis);
    writeln!(
        std::io::stdout(),
        "{}",
        serde_json::to_string_pretty(&view)?
    )?;
    Ok(())
}
