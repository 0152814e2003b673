//! `linkage token create`: a new API token, printed once.

use anyhow::Context;
use clap::Subcommand;
use schemas::{ActorId, AgencyId, ProviderId, Role};
use services::config::LogFormat;
use services::store::TokenRecord;
use services::{auth, telemetry};

use super::StoreArgs;

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
        /// The provider a `service` token speaks for: it sets the receiving side's statuses of
        /// the referrals sent to that provider (required for role service)
        #[arg(long)]
        provider: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Create {
        role,
        actor,
        agency,
        provider,
        store,
    } = command;
    anyhow::ensure!(
        (role == Role::Service) == provider.is_some(),
        "--provider is required for role service, and only for it"
    );
    telemetry::init(LogFormat::Pretty);
    let record = TokenRecord {
        actor_id: ActorId::parse(actor).context("--actor")?,
        role,
        agency: AgencyId::parse(agency).context("--agency")?,
        provider: provider
            .map(ProviderId::parse)
            .transpose()
            .context("--provider")?,
    };
    let (_, store) = store.open().await?;
    let token = auth::issue_token(&store, &record).await?;
    store.close().await;
    #[allow(clippy::print_stdout)]
    {
        println!("{token}");
    }
    Ok(())
}
