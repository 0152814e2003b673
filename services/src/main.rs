//! `linkage`: wires telemetry, configuration and graceful shutdown around the library.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use schemas::{ActorId, AgencyId};
use services::cli::{
    AuditCommand, BillingCommand, CaseCommand, Cli, Command, ProjectionsCommand, RelayCommand,
    TokenCommand,
};
use services::config::{Config, LogFormat, Overrides};
use services::store::TokenRecord;
use services::{auth, projector, startup, telemetry, Application};

/// mimalloc instead of glibc's malloc: the relay and the projections allocate many small, short-lived
/// values per event, and glibc's allocator was a third of the relay's CPU profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            listen,
            store,
            nats_url,
            billing_profile,
            log_format,
        } => {
            let config = Config::load(Overrides {
                listen,
                nats_url,
                log_format,
                billing_profile,
                ..store.overrides()
            })?;
            telemetry::init(config.log_format);
            tracing::info!(?config, "starting");
            let app = Application::build(config).await?;
            app.run_until_stopped(shutdown_signal()).await?;
            tracing::info!("stopped");
        }
        Command::Projections { command } => {
            telemetry::init(LogFormat::Pretty);
            match command {
                ProjectionsCommand::Status { store } => {
                    let store = open(&store).await?;
                    let status = projector::status(&store).await?;
                    store.close().await;
                    let mut out = std::io::stdout().lock();
                    writeln!(
                        out,
                        "{:<16} {:>12} {:>10} {:>10} {:>8}  error",
                        "projection", "txid", "position", "applied", "lag"
                    )?;
                    for p in status {
                        writeln!(
                            out,
                            "{:<16} {:>12} {:>10} {:>10} {:>8}  {}",
                            p.name,
                            p.txid,
                            p.position,
                            p.events_applied,
                            p.lag,
                            p.error.as_deref().unwrap_or("-")
                        )?;
                    }
                }
                ProjectionsCommand::Rebuild { name, store } => {
                    let store = open(&store).await?;
                    projector::known(&name)?;
                    let total = store.events_after(Default::default()).await?.max(0) as u64;
                    let bar = progress_bar(total, "events")?;
                    bar.set_message(format!("rebuilding {name}"));
                    let started = std::time::Instant::now();
                    let n =
                        projector::rebuild(&store, &name, |done| bar.set_position(done)).await?;
                    bar.finish();
                    store.close().await;
                    let secs = started.elapsed().as_secs_f64();
                    writeln!(
                        std::io::stdout(),
                        "rebuilt {name}: {n} events in {secs:.2} s ({:.0} events/s)",
                        n as f64 / secs.max(1e-9)
                    )?;
                }
            }
        }
        Command::Case {
            command:
                CaseCommand::History {
                    case_id,
                    as_of,
                    basis,
                    store,
                },
        } => {
            telemetry::init(LogFormat::Pretty);
            let id = schemas::CaseId::parse(&case_id).context("case id")?;
            let at = match as_of {
                Some(t) => Some(
                    services::http::reads::parse_as_of(&t)
                        .map_err(|e| anyhow::anyhow!("--as-of: {e}"))?,
                ),
                None => None,
            };
            let basis: projections::history::Basis =
                basis.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let store_args = store;
            let store = open(&store_args).await?;
            let events = store.events_of(id).await?;
            store.close().await;
            anyhow::ensure!(!events.is_empty(), "no case {case_id}");
            let inputs = services::http::reads::history_inputs(events)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let now =
                services::Clock::from_config(Config::load(store_args.overrides())?.clock).now();
            let at = at.unwrap_or_else(|| projections::history::now_or_latest(&inputs, now));
            let view = projections::history::as_of(&inputs, at, basis);
            writeln!(
                std::io::stdout(),
                "{}",
                serde_json::to_string_pretty(&view)?
            )?;
        }
        Command::Audit {
            command: AuditCommand::Verify { case, store },
        } => {
            telemetry::init(LogFormat::Pretty);
            let case = case
                .map(|c| schemas::CaseId::parse(&c))
                .transpose()
                .context("--case")?;
            let store = open(&store).await?;
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
        }
        Command::Relay { command, args } => {
            let (args, alone) = match command {
                None => (args, true),
                Some(RelayCommand::Status { args }) => (args, false),
            };
            let config = Config::load(Overrides {
                nats_url: args.nats_url,
                ..args.store.overrides()
            })?;
            telemetry::init(config.log_format);
            if alone {
                relay_alone(config).await?;
            } else {
                relay_status(config).await?;
            }
        }
        Command::Subscribe {
            nats_url,
            subject,
            from_start,
            durable,
            count,
        } => {
            let config = Config::load(Overrides {
                nats_url,
                ..Overrides::default()
            })?;
            telemetry::init(config.log_format);
            let url = config
                .nats_url
                .context("no NATS URL: pass --nats-url or set NATS_URL")?;
            let options = services::bus::subscribe::SubscribeOptions {
                url,
                config: config.bus,
                subject,
                durable,
                from_start,
                count,
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
        }
        Command::Billing {
            command:
                BillingCommand::Export {
                    month,
                    out,
                    format,
                    agency,
                    billing_profile,
                    batch,
                    store,
                },
        } => {
            let config = Config::load(Overrides {
                billing_profile,
                ..store.overrides()
            })?;
            telemetry::init(config.log_format);
            if batch {
                billing_batch(config, &month, &out, &format, agency.as_deref()).await?;
            } else {
                billing_export(config, &month, &out, &format, agency.as_deref()).await?;
            }
        }
        Command::Billing {
            command:
                BillingCommand::Reproduce {
                    batch_id,
                    out,
                    format,
                    store,
                },
        } => {
            let config = Config::load(store.overrides())?;
            telemetry::init(config.log_format);
            let format = parse_format(&format)?;
            let store = startup::open_store(&config).await?;
            let record = store
                .billing_batch(&batch_id)
                .await?
                .with_context(|| format!("no billing batch {batch_id}"))?;
            write_batch_file(&store, &record, format, &out).await?;
            store.close().await;
            writeln!(
                std::io::stdout(),
                "wrote {}: batch {} of {} for {} ({} lines), checksum {} verified",
                out.display(),
                record.batch_no,
                record.month,
                record.agency,
                record.lines,
                record.checksum
            )?;
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    role,
                    actor,
                    agency,
                    store,
                },
        } => {
            let config = Config::load(store.overrides())?;
            telemetry::init(LogFormat::Pretty);
            let record = TokenRecord {
                actor_id: ActorId::parse(actor).context("--actor")?,
                role,
                agency: AgencyId::parse(agency).context("--agency")?,
            };
            let store = startup::open_store(&config).await?;
            let token = auth::issue_token(&store, &record).await?;
            store.close().await;
            #[allow(clippy::print_stdout)]
            {
                println!("{token}");
            }
        }
    }
    Ok(())
}

/// A progress bar over `len` items called `unit`.
fn progress_bar(len: u64, unit: &str) -> anyhow::Result<indicatif::ProgressBar> {
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{msg}} [{{bar:40}}] {{pos}}/{{len}} {unit}, {{per_sec}}, ETA {{eta}}"
    ))?
    .progress_chars("=> ");
    Ok(indicatif::ProgressBar::new(len).with_style(style))
}

fn parse_format(format: &str) -> anyhow::Result<services::billing::export::Format> {
    services::billing::export::Format::parse(format)
        .with_context(|| format!("--format must be csv or json, got `{format}`"))
}

/// `--month YYYY-MM` and `--format csv|json` of the billing commands.
fn month_and_format(
    month: &str,
    format: &str,
) -> anyhow::Result<(
    projections::billing::Month,
    services::billing::export::Format,
)> {
    let month = projections::billing::Month::parse(month)
        .with_context(|| format!("--month must be YYYY-MM, got `{month}`"))?;
    Ok((month, parse_format(format)?))
}

/// `linkage billing export`: a month of the billing log into a file, with a progress bar.
async fn billing_export(
    config: Config,
    month: &str,
    out: &std::path::Path,
    format: &str,
    agency: Option<&str>,
) -> anyhow::Result<()> {
    use services::billing::export::export_month;
    let (month, format) = month_and_format(month, format)?;
    let profile =
        services::billing::select(&config.billing_profile, config.billing_rules_dir.as_deref())?;
    let store = startup::open_store(&config).await?;
    let lag = projector::status(&store)
        .await?
        .into_iter()
        .find(|p| p.name == services::store::BILLING)
        .map_or(0, |p| p.lag);
    if lag > 0 {
        tracing::warn!(
            lag,
            "the billing projection has not applied the newest events; is `linkage serve` running?"
        );
    }
    let cases = store.billing_case_count(month, agency).await?;
    let bar = progress_bar(cases.max(0) as u64, "cases")?;
    bar.set_message(format!("exporting {month}"));
    let mut sink = file_sink(out, |_| {})?;
    let summary = export_month(&store, &profile, month, agency, format, &mut sink, |done| {
        bar.set_position(done)
    })
    .await?;
    drop(sink);
    bar.finish();
    store.close().await;
    writeln!(
        std::io::stdout(),
        "wrote {}: {} lines ({} billable, {} units) for {} cases, profile {}",
        out.display(),
        summary.lines,
        summary.billable_lines,
        summary.units,
        summary.cases,
        profile.name
    )?;
    Ok(())
}

/// `linkage billing export --batch`: records the month's next export batch and writes it.
async fn billing_batch(
    config: Config,
    month: &str,
    out: &std::path::Path,
    format: &str,
    agency: Option<&str>,
) -> anyhow::Result<()> {
    let (month, format) = month_and_format(month, format)?;
    let agency = agency.context("--batch needs --agency: a batch is one agency's claims")?;
    let profile =
        services::billing::select(&config.billing_profile, config.billing_rules_dir.as_deref())?;
    let store = startup::open_store(&config).await?;
    // The command line acts as an administrator for the batch's agency.
    let cli = aggregates::Actor {
        id: schemas::ActorId::parse("cli").expect("static id"),
        role: schemas::Role::Admin,
        agency: schemas::AgencyId::parse(agency).context("--agency")?,
    };
    let metadata =
        services::billing::batch::metadata(&cli, services::Clock::from_config(config.clock).now());
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(format!("recording the next batch of {month} for {agency}"));
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    let record =
        services::billing::batch::create(&store, &profile, month, agency, &metadata).await?;
    bar.finish_and_clear();
    write_batch_file(&store, &record, format, out).await?;
    store.close().await;
    writeln!(
        std::io::stdout(),
        "batch {} ({} of {month} for {agency}): {} lines, checksum {}, written to {}",
        record.batch_id,
        record.batch_no,
        record.lines,
        record.checksum,
        out.display()
    )?;
    Ok(())
}

/// Writes a recorded batch to `out` with a progress bar over its lines.
async fn write_batch_file(
    store: &services::store::Store,
    record: &services::store::BatchRecord,
    format: services::billing::export::Format,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let bar = progress_bar(record.lines.max(0) as u64, "lines")?;
    bar.set_message(format!("writing batch {}", record.batch_no));
    let counter = bar.clone();
    let mut sink = file_sink(out, move |chunk| {
        counter.inc(chunk.iter().filter(|b| **b == b'\n').count() as u64)
    })?;
    services::billing::batch::write(store, record, format, &mut sink).await?;
    bar.finish();
    Ok(())
}

/// A sink writing chunks to a new file `out`, calling `seen` with each. Unbuffered: a chunk is a
/// whole case's lines or more, and a failed write must surface at once, not in a buffer's drop.
fn file_sink(
    out: &std::path::Path,
    seen: impl Fn(&[u8]) + Clone,
) -> anyhow::Result<std::pin::Pin<Box<impl futures::Sink<bytes::Bytes, Error = std::io::Error>>>> {
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    Ok(Box::pin(futures::sink::unfold(
        file,
        move |mut w, chunk: bytes::Bytes| {
            let seen = seen.clone();
            async move {
                w.write_all(&chunk)?;
                seen(&chunk);
                Ok::<_, std::io::Error>(w)
            }
        },
    )))
}

/// `linkage relay`: the relay without the HTTP API, until Ctrl-C or SIGTERM.
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

/// `linkage relay status`: checkpoint and backlog from the store; the stream's state if NATS
/// answers.
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

async fn open(args: &services::cli::StoreArgs) -> anyhow::Result<services::store::Store> {
    let config = Config::load(args.overrides())?;
    Ok(startup::open_store(&config).await?)
}

/// Resolves on Ctrl-C or SIGTERM, so in-flight requests finish before the process exits.
async fn shutdown_signal() {
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
