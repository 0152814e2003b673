//! Logging: `tracing` everywhere, human-readable by default, JSON for production.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` overrides the default filter.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(PoolStarvation);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        // Colour only for a person at a terminal: a file, a pipe or a journal gets plain text.
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

/// Warnings that a database connection took longer than the pool's slow threshold to acquire
/// (sqlx logs them under `sqlx::pool::acquire`), since the process started: work starved of
/// connections. Counted only while the log filter lets sqlx's warnings through (the default).
pub fn pool_starvations() -> u64 {
    POOL_STARVATIONS.load(Ordering::Relaxed)
}

static POOL_STARVATIONS: AtomicU64 = AtomicU64::new(0);

/// Counts sqlx's slow-acquire warnings (see `pool_starvations`).
struct PoolStarvation;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PoolStarvation {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() == "sqlx::pool::acquire" && *meta.level() <= tracing::Level::WARN {
            POOL_STARVATIONS.fetch_add(1, Ordering::Relaxed);
        }
    }
}
