//! `linkage`: wires telemetry, configuration and graceful shutdown around the library.

use anyhow::Context;
use clap::Parser;
use schemas::{ActorId, AgencyId};
use services::bench::AppendBench;
use services::cli::{BenchCommand, Cli, Command, TokenCommand};
use services::config::{Config, LogFormat, Overrides};
use services::store::TokenRecord;
use services::{auth, startup, telemetry, Application};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            listen,
            store,
            nats_url,
            log_format,
        } => {
            let config = Config::load(Overrides {
                listen,
                nats_url,
                log_format,
                ..store.overrides()
            })?;
            telemetry::init(config.log_format);
            tracing::info!(?config, "starting");
            let app = Application::build(config).await?;
            app.run_until_stopped(shutdown_signal()).await?;
            tracing::info!("stopped");
        }
        Command::Bench {
            command:
                BenchCommand::Append {
                    database_url,
                    clients,
                    seconds,
                    long_stream,
                    cases_per_client,
                },
        } => {
            telemetry::init(LogFormat::Pretty);
            let bench = AppendBench {
                database_url,
                clients,
                seconds,
                long_stream,
                cases_per_client,
            };
            bench.run(&mut std::io::stdout().lock()).await?;
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
