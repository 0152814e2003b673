//! `linkage token create|list|revoke`: API tokens with a lifecycle, from the command line (the
//! same as the admin routes under `/v1/tokens`, for whoever can reach the store).

use std::io::Write;

use anyhow::Context;
use clap::Subcommand;
use schemas::{ActorId, AgencyId, ProviderId, Role};
use services::auth::token_expiry;
use services::config::LogFormat;
use services::http::tokens::TokenView;
use services::store::TokenRecord;
use services::{auth, telemetry, Clock};

use super::StoreArgs;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its id and the token (shown only once; only its hash is stored)
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
        /// How long the token holds: 90d (default), 12h, 30m, ...; `never` only for role service
        #[arg(long, default_value = "90d")]
        expires_in: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List tokens: id, actor, role, agency, provider, created, expires, last used, revoked
    /// (never a secret)
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a token by its id: refused from the next request on, on every replica
    Revoke {
        /// The token's id (see `list`)
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    telemetry::init(LogFormat::Pretty);
    let mut out = std::io::stdout().lock();
    match command {
        TokenCommand::Create {
            role,
            actor,
            agency,
            provider,
            expires_in,
            store,
        } => {
            anyhow::ensure!(
                (role == Role::Service) == provider.is_some(),
                "--provider is required for role service, and only for it"
            );
            let provider = provider
                .map(ProviderId::parse)
                .transpose()
                .context("--provider")?;
            let (config, store) = store.open().await?;
            let now = Clock::from_config(config.clock).now();
            let expires_at = token_expiry(role, provider.clone(), Some(&expires_in), now)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let record = TokenRecord {
                actor_id: ActorId::parse(actor).context("--actor")?,
                role,
                agency: AgencyId::parse(agency).context("--agency")?,
                provider,
            };
            let made = auth::issue_token(&store, &record, now, expires_at).await?;
            store.close().await;
            let expires = made
                .life
                .expires_at
                .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339());
            writeln!(out, "id: {}", made.life.id)?;
            writeln!(out, "expires: {expires}")?;
            writeln!(out, "{}", made.token)?;
        }
        TokenCommand::List { store } => {
            let (_, store) = store.open().await?;
            let mut after: Option<String> = None;
            writeln!(
                out,
                "{:<36}  {:<16} {:<12} {:<12} {:<14} {:<20} {:<20} {:<20} revoked",
                "id", "actor", "role", "agency", "provider", "created", "expires", "last used"
            )?;
            let time = |t: Option<chrono::DateTime<chrono::Utc>>, none: &str| {
                t.map_or_else(
                    || none.to_owned(),
                    |t| t.format("%Y-%m-%dT%H:%MZ").to_string(),
                )
            };
            loop {
                let page = store.tokens(after.as_deref(), 500).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.life.id.clone());
                for t in page {
                    let v = TokenView::from(t);
                    writeln!(
                        out,
                        "{:<36}  {:<16} {:<12} {:<12} {:<14} {:<20} {:<20} {:<20} {}",
                        v.token_id,
                        v.actor,
                        v.role.as_str(),
                        v.agency,
                        v.provider.as_deref().unwrap_or("-"),
                        time(Some(v.created_at), "-"),
                        time(v.expires_at, "never"),
                        time(v.last_used_at, "-"),
                        time(v.revoked_at, "-"),
                    )?;
                }
            }
            store.close().await;
        }
        TokenCommand::Revoke { id, store } => {
            let (config, store) = store.open().await?;
            let now = Clock::from_config(config.clock).now();
            let found = store.revoke_token(&id, now).await?;
            store.close().await;
            anyhow::ensure!(found, "no token with id {id}");
            writeln!(out, "revoked {id}")?;
        }
    }
    Ok(())
}
