//! The `linkage` command line (clap).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use schemas::Role;

use crate::config::{LogFormat, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "linkage",
    version,
    about = "Event-sourced referral tracking for family case management"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args, Default)]
pub struct StoreArgs {
    /// Directory of the embedded store and the admin token [default: ./linkage-data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL; without it the embedded SQLite store is used
    #[arg(long)]
    pub database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API
    Serve {
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
    },
    /// Inspect and rebuild projections
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Look at one case
    Case {
        #[command(subcommand)]
        command: CaseCommand,
    },
    /// Check the audit trail
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Publish committed public events to NATS JetStream (what `serve --nats-url` also runs)
    Relay {
        #[command(subcommand)]
        command: Option<RelayCommand>,
        #[command(flatten)]
        args: RelayArgs,
    },
    /// Print public events from the stream as JSON lines (a durable pull consumer, explicit acks)
    Subscribe {
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
    },
    /// Medicaid TCM billing
    Billing {
        #[command(subcommand)]
        command: BillingCommand,
    },
    /// Manage API tokens
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (it is shown only once; only its hash is stored)
    Create {
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long)]
        actor: String,
        #[arg(long, default_value = "default")]
        agency: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, clap::Args, Default)]
pub struct RelayArgs {
    /// NATS URL of the event bus
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Subcommand)]
pub enum RelayCommand {
    /// The relay's checkpoint, backlog and the stream's state (JSON)
    Status {
        #[command(flatten)]
        args: RelayArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum BillingCommand {
    /// Write a month of the billing-eligible activity log to a file, with a progress bar
    Export {
        /// The month of service, YYYY-MM
        #[arg(long)]
        month: String,
        /// The file to write
        #[arg(long)]
        out: PathBuf,
        /// csv (with a header row, ready for a spreadsheet) or json
        #[arg(long, default_value = "csv")]
        format: String,
        /// Only this agency's cases [default: all]
        #[arg(long)]
        agency: Option<String>,
        /// The billing rules profile [default: the configured one, else texas_like]
        #[arg(long)]
        billing_profile: Option<String>,
        /// Record an export batch of the agency (only what changed since the month's previous
        /// batches: originals, voids, replacements) and write that, instead of the whole log
        #[arg(long)]
        batch: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Write a recorded export batch again, byte for byte (its checksum is checked first)
    Reproduce {
        /// The batch id
        batch_id: String,
        /// The file to write
        #[arg(long)]
        out: PathBuf,
        /// csv or json
        #[arg(long, default_value = "csv")]
        format: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Position, events applied, lag and error of every projection
    Status {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Drop a projection and project the whole log again (stop `serve` first)
    Rebuild {
        /// The projection's name (see `status`)
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

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

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute every case's hash chain from the stored events and name the first broken link
    Verify {
        /// Only this case
        #[arg(long)]
        case: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

impl StoreArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            ..Overrides::default()
        }
    }
}
