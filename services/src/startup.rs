//! The application as a library: `Application::build` opens the store, makes sure an admin token
//! exists, binds the listener (port 0 picks a free one) and returns; `run_until_stopped` serves
//! until the shutdown future resolves.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aggregates::CaseServices;
use schemas::instruments::Catalog;
use schemas::{ActorId, AgencyId, Role};
use tokio::net::TcpListener;

use crate::auth::issue_token;
use crate::bus::relay::{self, RelayHandle};
use crate::config::{redact_url, Config};
use crate::error::StoreError;
use crate::store::{Store, TokenRecord};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub case_services: Arc<CaseServices>,
    pub config: Arc<Config>,
    /// The relay's state when this server runs one (a NATS URL is configured).
    pub relay: Option<RelayHandle>,
    /// The TCM billing rules in force (validated at start).
    pub billing: Arc<projections::billing::Profile>,
    /// The one clock of every decision that uses "now" or "today".
    pub clock: crate::clock::Clock,
    /// Each agency's time zone: where "now" becomes "today" and a contact a date of service.
    pub zones: Arc<projections::zones::Zones>,
    /// The OpenID provider's token verifier, when single sign-on is configured.
    pub oidc: Option<Arc<crate::oidc::Verifier>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write the admin token to {path}: {source}")]
    AdminToken {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the bus configuration is invalid: {0}")]
    Bus(String),
    #[error(transparent)]
    Billing(#[from] crate::billing::BillingError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("the built-in instrument definitions are invalid: {0}")]
    Instruments(#[from] schemas::SchemaError),
    #[error(transparent)]
    Anchor(#[from] crate::anchor::AnchorError),
}

/// Opens the store the configuration names: PostgreSQL when a database URL is set, otherwise the
/// embedded SQLite store under the data dir.
pub async fn open_store(config: &Config) -> Result<Store, StoreError> {
    let store = match &config.database_url {
        Some(url) => {
            tracing::info!(database = %redact_url(url), "using the PostgreSQL event store");
            Store::postgres(url, config.group_commit_writers).await
        }
        None => {
            tracing::info!(data_dir = %config.data_dir.display(), "using the embedded SQLite event store");
            Store::sqlite(&config.data_dir).await
        }
    }?;
    Ok(match &config.replica_id {
        Some(id) => store.with_replica(id.clone()),
        None => store,
    })
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// Signs and appends audit anchors, when `[audit_anchor]` is configured.
    anchorer: Option<crate::anchor::Anchorer>,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        config.bus.validate().map_err(StartupError::Bus)?;
        let billing =
            crate::billing::select(&config.billing_profile, config.billing_rules_dir.as_deref())?;
        tracing::info!(profile = %billing.name, "billing rules loaded");
        let clock = crate::clock::Clock::from_config(config.clock);
        let zones = config.zones()?;
        if config.time_zone.is_none() {
            tracing::warn!(
                "no time_zone configured: dates of service and \"today\" are taken in UTC; \
                 set LINKAGE_TIME_ZONE (an IANA name such as America/Chicago)"
            );
        }
        if clock.is_pinned() {
            tracing::warn!(now = %clock.now(), "the clock is pinned: \"now\" stands still until set");
        }
        // A bad key or anchor file stops the start, before anything is served.
        let anchorer = match &config.audit_anchor {
            Some(anchor) => Some(crate::anchor::Anchorer::open(
                crate::anchor::load_key(&anchor.key_file)?,
                &anchor.out,
            )?),
            None => None,
        };
        let store = open_store(&config).await?;
        ensure_admin_token(&store, &config.data_dir, clock.now()).await?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let state = AppState {
            store: Arc::new(store),
            case_services: Arc::new(CaseServices {
                instruments: Arc::new(Catalog::builtin()?),
                documentation_window_days: config.documentation_window_days,
            }),
            relay: config.nats_url.as_ref().map(|_| relay::handle(&config.bus)),
            billing: Arc::new(billing),
            clock,
            zones: Arc::new(zones),
            oidc: config
                .auth
                .oidc
                .clone()
                .map(|c| Arc::new(crate::oidc::Verifier::new(c))),
            config: Arc::new(config),
        };
        Ok(Self {
            listener,
            state,
            anchorer,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = self.local_addr();
        let store = self.state.store.clone();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let projector = self.state.config.run_projections.then(|| {
            let config = &self.state.config;
            let idle = std::time::Duration::from_millis(config.projection_poll_ms);
            let period = std::time::Duration::from_millis(config.projection_step_period_ms);
            tokio::spawn(crate::projector::run(
                store.clone(),
                idle,
                period,
                stop_rx.clone(),
            ))
        });
        // Other replicas' commits wake this one's log followers, and this one's wake theirs.
        let wakeups = tokio::spawn({
            let (store, stop) = (store.clone(), stop_rx.clone());
            async move { store.run_wakeups(stop).await }
        });
        let relay = match (&self.state.config.nats_url, &self.state.relay) {
            (Some(url), Some(status)) => Some(tokio::spawn(relay::run(
                store.clone(),
                url.clone(),
                self.state.config.bus.clone(),
                std::time::Duration::from_millis(self.state.config.projection_poll_ms),
                status.clone(),
                stop_rx.clone(),
            ))),
            _ => None,
        };
        let clock = self.state.clock.clone();
        // Subscribed providers hear of their changed Tasks (one replica at a time: a lease).
        let notifier = tokio::spawn(crate::fhir_notify::run(
            store.clone(),
            clock.clone(),
            stop_rx.clone(),
        ));
        let anchor_bus = match (&self.anchorer, &self.state.config.nats_url) {
            (Some(_), Some(url)) => {
                match crate::anchor::AnchorBus::connect(url, &self.state.config.bus).await {
                    Ok(bus) => Some(bus),
                    Err(e) => {
                        tracing::warn!(error = %e, "audit anchors go to their file only: the bus is unreachable");
                        None
                    }
                }
            }
            _ => None,
        };
        let anchors = self.anchorer.map(|anchorer| {
            let every = self
                .state
                .config
                .audit_anchor
                .as_ref()
                .map_or(60, |a| a.interval_secs);
            tokio::spawn(crate::anchor::run(
                anchorer,
                anchor_bus,
                store.clone(),
                clock.clone(),
                std::time::Duration::from_secs(every.max(1)),
                stop_rx.clone(),
            ))
        });
        let header_read_timeout =
            std::time::Duration::from_secs(self.state.config.header_read_timeout_secs.max(1));
        let router = crate::http::router(self.state);
        tracing::info!(%addr, "serving the Linkage API");
        let served =
            crate::http::serve::serve(self.listener, router, header_read_timeout, async move {
                shutdown.await;
                let _ = stop_tx.send(true);
            })
            .await;
        if let Some(projector) = projector {
            let _ = projector.await;
        }
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        let _ = notifier.await;
        let _ = wakeups.await;
        // The last anchor covers what the projection applied before it stopped.
        if let Some(anchors) = anchors {
            if let Ok((mut anchorer, mut bus)) = anchors.await {
                match anchorer.anchor(&store, clock.now()).await {
                    Ok(Some(anchor)) => {
                        if let Some(bus) = bus.as_mut() {
                            bus.publish(&anchor).await;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "could not write the audit anchor at shutdown")
                    }
                }
            }
        }
        store.close().await;
        served
    }
}

/// On first start (no admin token in the store) creates one and writes it to
/// `<data_dir>/admin.token` with mode 0600. Logs the path, never the token. It expires like any
/// token (90 days); `linkage token create --role admin` makes the next one.
async fn ensure_admin_token(
    store: &Store,
    data_dir: &Path,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StartupError> {
    if store.has_admin_token().await? {
        return Ok(());
    }
    let record = TokenRecord {
        actor_id: ActorId::parse("admin").expect("static id"),
        role: Role::Admin,
        agency: AgencyId::parse("default").expect("static id"),
        provider: None,
    };
    let expires_at = Some(now + crate::auth::DEFAULT_TOKEN_LIFETIME);
    let token = issue_token(store, &record, now, expires_at).await?.token;
    let path = data_dir.join("admin.token");
    write_secret(&path, &token).map_err(|source| StartupError::AdminToken {
        path: path.clone(),
        source,
    })?;
    tracing::warn!(path = %path.display(), "first start: wrote an admin token; keep it secret");
    Ok(())
}

fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    writeln!(file, "{secret}")?;
    file.sync_all()
}
