//! Layered configuration: built-in defaults, then a TOML file (`linkage.toml` in the working
//! directory, or `LINKAGE_CONFIG`), then `LINKAGE_*` environment variables, then command-line
//! flags. Secrets (the database URL's password) never reach a log: `Debug` redacts them.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct Config {
    /// Where the HTTP API listens. Port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// Where the embedded store and the first-start admin token live.
    pub data_dir: PathBuf,
    /// PostgreSQL URL; when absent the embedded SQLite store under `data_dir` is used.
    pub database_url: Option<String>,
    /// NATS URL of the event bus. When set, `serve` runs the relay that publishes public events
    /// to JetStream; when absent, events reach local subscribers only (`/v1/events/stream`).
    pub nats_url: Option<String>,
    /// The stream definition and relay tuning; defaults from `ops/nats/stream.toml`.
    pub bus: crate::bus::BusConfig,
    /// The TCM billing rules profile (`ops/billing/<name>.toml`, or a file in `billing_rules_dir`).
    pub billing_profile: String,
    /// A directory of more billing rules files (`*.toml`); each is validated at start.
    pub billing_rules_dir: Option<PathBuf>,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Seconds a request may take until its answer starts (`LINKAGE_REQUEST_TIMEOUT_SECS`): a
    /// client that sends its body a byte at a time is answered 408 and let go, instead of
    /// holding a connection and a task for ever. Streamed answers (exports, the event stream)
    /// are not cut: the limit ends when the answer starts.
    pub request_timeout_secs: u64,
    /// Seconds a client has to send a request's line and headers once the connection waits for
    /// them (`LINKAGE_HEADER_READ_TIMEOUT_SECS`); the connection is then closed. It is also how
    /// long an idle keep-alive connection is kept.
    pub header_read_timeout_secs: u64,
    /// The largest request line and headers accepted, in bytes (`LINKAGE_MAX_HEADER_BYTES`):
    /// larger is `431 headers_too_large`. Past 2 MiB, or past 100 header fields, the HTTP layer
    /// answers a bare 431 and closes the connection before the application sees the request.
    pub max_header_bytes: usize,
    /// How many times a command that lost an optimistic-concurrency race is retried.
    pub conflict_retries: u32,
    /// PostgreSQL: how many groups of commands' events may be written at once (group commit).
    pub group_commit_writers: usize,
    /// `pretty` for people, `json` for production log shipping.
    pub log_format: LogFormat,
    /// Run the projection engine inside `serve` (off only to stage a crash in tests).
    pub run_projections: bool,
    /// How long an idle projection waits before polling the log again, in milliseconds.
    pub projection_poll_ms: u64,
    /// While the log keeps moving, the projection engine starts a step at most once in this
    /// many milliseconds (`LINKAGE_PROJECTION_STEP_PERIOD_MS`): events that arrive meanwhile
    /// wait and are applied together, so each step's fixed costs (its log read, its
    /// transactions and checkpoints) are shared by more events. A step after an idle spell
    /// starts at once, and a step that read a full batch is followed at once; 0 steps back to
    /// back. See `projector::pace`.
    pub projection_step_period_ms: u64,
    /// Caseload limits per program and the thresholds behind caseload flags
    /// (`LINKAGE_CASELOAD__STALE_REFERRAL_DAYS=7`, or a `[caseload]` table in the file).
    pub caseload: projections::caseload::Thresholds,
    /// The agencies' time zone (an IANA name, `LINKAGE_TIME_ZONE=America/Chicago`): a date of
    /// service, a billing month and "today" are local there. Absent: UTC, with a warning.
    pub time_zone: Option<chrono_tz::Tz>,
    /// Per-agency time zones that differ from `time_zone` (`[agency_time_zones]` in the file:
    /// `north = "America/New_York"`).
    pub agency_time_zones: std::collections::BTreeMap<String, chrono_tz::Tz>,
    /// Days after a case closes during which what happened before the closure may still be
    /// documented (`LINKAGE_DOCUMENTATION_WINDOW_DAYS`).
    pub documentation_window_days: u32,
    /// Pins the application clock at this instant (tests and demonstrations:
    /// `LINKAGE_CLOCK=2026-06-15T23:59:30Z`); absent, the system clock. See `crate::clock`.
    pub clock: Option<chrono::DateTime<chrono::Utc>>,
    /// This server's name among replicas (`LINKAGE_REPLICA_ID`), shown by `linkage projections
    /// status` and `linkage relay status`. Absent: `<hostname>-<pid>-<random>`, new at each start.
    pub replica_id: Option<String>,
    /// How callers sign in besides Linkage's own tokens (`[auth.oidc]`).
    pub auth: AuthConfig,
    /// Signed anchors of the audit trail outside the database (`[audit_anchor]`,
    /// `LINKAGE_AUDIT_ANCHOR__KEY_FILE`, `__OUT`, `__INTERVAL_SECS`); absent, none are written.
    pub audit_anchor: Option<crate::anchor::AnchorConfig>,
}

/// `[auth]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Single sign-on with the agency's OpenID provider (`LINKAGE_AUTH__OIDC__ISSUER`, ...).
    pub oidc: Option<crate::oidc::OidcConfig>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            data_dir: PathBuf::from("./linkage-data"),
            database_url: None,
            nats_url: None,
            bus: crate::bus::BusConfig::default(),
            billing_profile: crate::billing::DEFAULT_PROFILE.to_owned(),
            billing_rules_dir: None,
            max_body_bytes: 256 * 1024,
            request_timeout_secs: 60,
            header_read_timeout_secs: 30,
            max_header_bytes: 64 * 1024,
            conflict_retries: 8,
            group_commit_writers: 4,
            log_format: LogFormat::Pretty,
            run_projections: true,
            projection_poll_ms: 50,
            projection_step_period_ms: crate::projector::STEP_PERIOD_MS,
            caseload: projections::caseload::Thresholds::default(),
            time_zone: None,
            agency_time_zones: Default::default(),
            documentation_window_days: aggregates::CaseServices::DEFAULT_DOCUMENTATION_WINDOW_DAYS,
            clock: None,
            replica_id: None,
            auth: AuthConfig::default(),
            audit_anchor: None,
        }
    }
}

/// Overrides given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_profile: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration is invalid: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration is invalid: {0}")]
    Invalid(String),
}

impl Config {
    /// The agencies' time zones, validated (an agency name must be a valid agency id).
    pub fn zones(&self) -> Result<projections::zones::Zones, ConfigError> {
        let agencies = self
            .agency_time_zones
            .iter()
            .map(|(agency, zone)| {
                schemas::AgencyId::parse(agency.as_str())
                    .map(|a| (a, *zone))
                    .map_err(|e| ConfigError::Invalid(format!("agency_time_zones: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(projections::zones::Zones::new(
            self.time_zone.unwrap_or(chrono_tz::Tz::UTC),
            agencies,
        ))
    }

    /// Defaults, then the file, then the environment, then `overrides`.
    pub fn load(overrides: Overrides) -> Result<Self, ConfigError> {
        let file = std::env::var("LINKAGE_CONFIG").unwrap_or_else(|_| "linkage.toml".into());
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(file))
            .merge(Env::prefixed("LINKAGE_").split("__"))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)?;
        Ok(config)
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("nats_url", &self.nats_url.as_deref().map(redact_url))
            .field("bus", &self.bus)
            .field("billing_profile", &self.billing_profile)
            .field("billing_rules_dir", &self.billing_rules_dir)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("header_read_timeout_secs", &self.header_read_timeout_secs)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("conflict_retries", &self.conflict_retries)
            .field("group_commit_writers", &self.group_commit_writers)
            .field("log_format", &self.log_format)
            .field("run_projections", &self.run_projections)
            .field("projection_poll_ms", &self.projection_poll_ms)
            .field("projection_step_period_ms", &self.projection_step_period_ms)
            .field("caseload", &self.caseload)
            .field("audit_anchor", &self.audit_anchor)
            .field("time_zone", &self.time_zone)
            .field("agency_time_zones", &self.agency_time_zones)
            .field("documentation_window_days", &self.documentation_window_days)
            .field("clock", &self.clock)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_database_password() {
        let c = Config {
            database_url: Some("postgres://linkage:s3cret@db.local:5432/linkage".into()),
            ..Config::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://linkage:***@db.local:5432/linkage"),
            "{shown}"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "linkage.toml",
                "max_body_bytes = 1000\nconflict_retries = 2",
            )?;
            jail.set_env("LINKAGE_CONFLICT_RETRIES", "3");
            jail.set_env("LINKAGE_CASELOAD__STALE_REFERRAL_DAYS", "7");
            let c = Config::load(Overrides {
                data_dir: Some("/tmp/x".into()),
                ..Overrides::default()
            })
            .expect("loads");
            assert_eq!(c.max_body_bytes, 1000, "file beats default");
            assert_eq!(c.conflict_retries, 3, "env beats file");
            assert_eq!(c.data_dir, PathBuf::from("/tmp/x"), "flag beats all");
            assert_eq!(
                c.caseload.stale_referral_days, 7,
                "nested keys from the environment"
            );
            assert_eq!(
                c.caseload.contact_overdue_days, 30,
                "the rest keep their defaults"
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn time_zones_come_from_the_environment_and_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "linkage.toml",
                "[agency_time_zones]\neast = \"America/New_York\"",
            )?;
            jail.set_env("LINKAGE_TIME_ZONE", "America/Chicago");
            let c = Config::load(Overrides::default()).expect("loads");
            let zones = c.zones().expect("valid");
            let east = schemas::AgencyId::parse("east").unwrap();
            let west = schemas::AgencyId::parse("west").unwrap();
            assert_eq!(zones.of(Some(&east)), chrono_tz::Tz::America__New_York);
            assert_eq!(zones.of(Some(&west)), chrono_tz::Tz::America__Chicago);
            jail.set_env("LINKAGE_TIME_ZONE", "Mars/Olympus_Mons");
            assert!(
                Config::load(Overrides::default()).is_err(),
                "an unknown zone is refused at start"
            );
            Ok(())
        });
    }
}
