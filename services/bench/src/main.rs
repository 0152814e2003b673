//! `linkage-bench`: prints each benchmark's figures beside a baseline measured in the same run, on
//! the same database (and NATS server). `ops/bench.sh` builds it in release mode and runs it.

use clap::{Parser, Subcommand};
use linkage_bench::{AppendBench, BillingBench, CostBench, HttpBench, ProjectionBench, RelayBench};
use services::config::LogFormat;

/// The same allocator as the `linkage` server, so that the figures are the server's, counting
/// the bytes allocated (one atomic add per allocation) so that a benchmark can report heap use.
#[global_allocator]
static GLOBAL: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

#[derive(Debug, Parser)]
#[command(
    name = "linkage-bench",
    version,
    about = "Linkage's benchmarks, each beside its baseline"
)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

/// Each benchmark's options are the fields of its struct in the library.
#[derive(Debug, Subcommand)]
enum Bench {
    /// Command throughput and latency on PostgreSQL beside a raw INSERT into the same table
    Append(AppendBench),
    /// Rebuild of every projection beside a plain scan of the events table; projection lag
    Projections(ProjectionBench),
    /// Relay catch-up beside a plain async-nats pipelined publish loop; commit-to-ack latency
    Relay(RelayBench),
    /// A month's billing export beside a plain COPY (SELECT ...) TO STDOUT of the same rows
    Billing(BillingBench),
    /// Contacts posted over real HTTP connections beside a raw INSERT at the same concurrency
    Http(HttpBench),
    /// Costs users feel at 10,000, 1,000,000 and 10,000,000 events stored, beside the smallest
    Costs(CostBench),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    linkage_bench::count_heap_with(|| GLOBAL.allocated());
    services::telemetry::init(LogFormat::Pretty);
    let out = &mut std::io::stdout().lock();
    match cli.bench {
        Bench::Append(bench) => bench.run(out).await?,
        Bench::Projections(bench) => bench.run(out).await?,
        Bench::Relay(bench) => bench.run(out).await?,
        Bench::Billing(bench) => bench.run(out).await?,
        Bench::Http(bench) => bench.run(out).await?,
        Bench::Costs(bench) => bench.run(out).await?,
    }
    Ok(())
}
