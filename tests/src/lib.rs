//! The end-to-end harness: the real application on port 0, against a fresh SQLite data dir or a
//! fresh PostgreSQL database per test, torn down by a Drop guard (zero-to-production's
//! `spawn_app`).
//!
//! PostgreSQL comes from `LINKAGE_TEST_DATABASE_URL` (ops/test.sh starts one). Without it the
//! PostgreSQL variants are skipped with a notice, unless `LINKAGE_REQUIRE_PG` is set, as the test
//! command sets it, in which case they fail.

pub mod nats;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, NaiveDate, Utc};

use reqwest::StatusCode;
use schemas::{ActorId, AgencyId, Role};
use serde_json::Value;
use services::config::Config;
use services::store::{Store, TokenRecord};
use services::Application;
use sqlx::Connection;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The admin URL of the test PostgreSQL server, or None (skip) when the run allows it.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("LINKAGE_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("LINKAGE_REQUIRE_PG").is_some() => {
            panic!(
                "LINKAGE_REQUIRE_PG is set but LINKAGE_TEST_DATABASE_URL is not; run ops/test.sh"
            )
        }
        _ => {
            eprintln!("skipping a PostgreSQL test: LINKAGE_TEST_DATABASE_URL is not set (ops/test.sh sets it)");
            None
        }
    }
}

/// The instant every test app's clock is pinned at: `LINKAGE_TEST_CLOCK` (RFC 3339) when set, or
/// a fixed midday. `ops/test.sh` runs the end-to-end suites once just after 00:00 UTC and once just
/// before 24:00 UTC, so a test that mixes the machine's clock into a date fails on every run, not
/// only at some hours. Tests take "now" and "today" from here, never from the machine.
pub fn now() -> DateTime<Utc> {
    static NOW: OnceLock<DateTime<Utc>> = OnceLock::new();
    *NOW.get_or_init(|| match std::env::var("LINKAGE_TEST_CLOCK") {
        Ok(s) if !s.is_empty() => DateTime::parse_from_rfc3339(&s)
            .unwrap_or_else(|e| panic!("LINKAGE_TEST_CLOCK={s} is not an RFC 3339 time: {e}"))
            .with_timezone(&Utc),
        _ => DEFAULT_TEST_CLOCK.parse().expect("static time"),
    })
}

/// The test clock's date (UTC).
pub fn today() -> NaiveDate {
    now().date_naive()
}

/// `today()` less `days`, as `YYYY-MM-DD`.
pub fn days_ago(days: i64) -> String {
    (today() - chrono::Duration::days(days)).to_string()
}

/// A birth date no other child of this test process has (2010-01-01 plus a counter), for tests
/// that open several cases in one agency: an intake that matches an open case's child by name
/// and birth date is refused as a possible duplicate.
pub fn unique_birth_date() -> String {
    static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = NaiveDate::from_ymd_opt(2010, 1, 1).expect("a date");
    (base + chrono::Duration::days(n % 4000)).to_string()
}

/// The clock of a test run that names none.
/// It is later than every fixed date the suites use (the billing suite's months run to 2026-10).
pub const DEFAULT_TEST_CLOCK: &str = "2026-11-16T12:00:00Z";

/// Drops what a test created (its database or its data dir) even when the test panics.
struct Cleanup {
    data_dir: PathBuf,
    pg: Option<(String, String)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
        if let Some((admin_url, db)) = self.pg.take() {
            block_on_own_thread(async move {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                }
            });
        }
    }
}

/// Runs async clean-up from a `Drop`, which runs outside any runtime guarantee (and may run
/// inside a runtime, where blocking on one is refused): a thread with its own runtime, joined.
pub(crate) fn block_on_own_thread(cleanup: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(cleanup);
    })
    .join();
}

/// A new, empty database `linkage_test_<id>` on the test PostgreSQL server: its URL, and the
/// admin URL and name `Cleanup` drops it by. None when no test server is configured.
async fn create_database(id: &str) -> Option<(String, (String, String))> {
    let admin_url = postgres_admin_url()?;
    let db = format!("linkage_test_{id}");
    let mut c = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect to the test PostgreSQL server");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut c)
        .await
        .expect("create a test database");
    Some((replace_database(&admin_url, &db), (admin_url, db)))
}

/// A store that does not exist yet (a data directory with no database, or an empty PostgreSQL
/// database), dropped with everything in it at the end: where a test restores a backup.
pub struct EmptyStore {
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    _cleanup: Cleanup,
}

impl EmptyStore {
    /// None for PostgreSQL when no test server is configured.
    pub async fn new(backend: Backend) -> Option<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let data_dir = std::env::temp_dir().join(format!("linkage-test-empty-{id}"));
        let mut cleanup = Cleanup {
            data_dir: data_dir.clone(),
            pg: None,
        };
        let mut database_url = None;
        if backend == Backend::Postgres {
            let (url, pg) = create_database(&id).await?;
            database_url = Some(url);
            cleanup.pg = Some(pg);
        }
        Some(Self {
            data_dir,
            database_url,
            _cleanup: cleanup,
        })
    }

    /// The configuration of a server on this store.
    pub fn config(&self) -> Config {
        Config {
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            clock: Some(now()),
            ..Config::default()
        }
    }
}

/// A running application and a client for it.
pub struct TestApp {
    pub backend: Backend,
    pub address: String,
    pub config: Config,
    pub store: Arc<Store>,
    pub admin_token: String,
    pub client: reqwest::Client,
    /// This server's clock (pinned at `now()`); a test may move it.
    pub clock: services::Clock,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _cleanup: Arc<Cleanup>,
}

fn replace_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(i) if i > base.find("://").map(|s| s + 2).unwrap_or(0) => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

impl TestApp {
    /// A fresh store of the given kind; None when PostgreSQL is not configured and may be skipped.
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// A server on an existing store (a previous `TestApp`'s config), e.g. after a crash.
    /// The store is cleaned up by the first app's guard, not this one's.
    pub async fn spawn_on(backend: Backend, config: Config) -> Self {
        let cleanup = Cleanup {
            data_dir: std::env::temp_dir().join("linkage-test-nothing-to-clean"),
            pg: None,
        };
        Self::start(backend, config, Arc::new(cleanup)).await
    }

    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let data_dir = std::env::temp_dir().join(format!("linkage-test-{id}"));
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: data_dir.clone(),
            clock: Some(now()),
            ..Config::default()
        };
        let mut cleanup = Cleanup { data_dir, pg: None };
        if backend == Backend::Postgres {
            let (url, pg) = create_database(&id).await?;
            config.database_url = Some(url);
            cleanup.pg = Some(pg);
        }
        tweak(&mut config);
        Some(Self::start(backend, config, Arc::new(cleanup)).await)
    }

    async fn start(backend: Backend, config: Config, cleanup: Arc<Cleanup>) -> Self {
        let app = Application::build(config.clone())
            .await
            .expect("the app builds");
        let address = format!("http://{}", app.local_addr());
        let store = app.state().store.clone();
        let clock = app.state().clock.clone();
        // The first start wrote an admin token (it expires in 90 days); tests act as an admin
        // whose token outlives the clock moves they make.
        let first_admin = std::fs::read_to_string(config.data_dir.join("admin.token"))
            .expect("an admin token on first start");
        assert!(first_admin.trim().starts_with("lkg_"));
        let now = clock.now();
        let admin_token = services::auth::issue_token(
            &store,
            &TokenRecord {
                actor_id: ActorId::parse("admin").expect("actor"),
                role: Role::Admin,
                agency: AgencyId::parse("default").expect("agency"),
                provider: None,
            },
            now,
            Some(now + chrono::Duration::days(3650)),
        )
        .await
        .expect("an admin token for the tests")
        .token;
        let (tx, rx) = oneshot::channel();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        let client = client_for(&config);
        Self {
            backend,
            address,
            config,
            store,
            admin_token,
            client,
            clock,
            shutdown: Some(tx),
            server: Some(server),
            _cleanup: cleanup,
        }
    }

    /// Stops the server gracefully and starts a new one on the same store: a restart.
    pub async fn restart(mut self) -> Self {
        self.stop().await;
        let cleanup = self._cleanup.clone();
        let mut config = self.config.clone();
        config.listen = "127.0.0.1:0".parse().expect("addr");
        let admin_token = self.admin_token.clone();
        let first_admin = std::fs::read_to_string(config.data_dir.join("admin.token")).ok();
        let mut app = Self::start(self.backend, config.clone(), cleanup).await;
        assert_eq!(
            std::fs::read_to_string(config.data_dir.join("admin.token")).ok(),
            first_admin,
            "a restart keeps the admin token"
        );
        app.admin_token = admin_token;
        app
    }

    /// A second server on the same store, as a second replica would be: it has its own cache.
    pub async fn second_instance(&self) -> Self {
        let mut config = self.config.clone();
        config.listen = "127.0.0.1:0".parse().expect("addr");
        Self::start(self.backend, config, self._cleanup.clone()).await
    }

    /// Asserts that the command path's view of a case (cache, if it holds the case) equals a
    /// full replay of its stream.
    pub async fn assert_cache_matches_replay(&self, case_id: &str) {
        let id = schemas::CaseId::parse(case_id).expect("case id");
        let cached = self.store.load_for_command(id).await.expect("load");
        let replayed = self.store.load(id).await.expect("replay");
        assert_eq!(
            cached.current_sequence, replayed.current_sequence,
            "versions differ"
        );
        assert!(
            cached.aggregate == replayed.aggregate,
            "cached state differs from a full replay:\ncached: {:?}\nreplay: {:?}",
            cached.aggregate,
            replayed.aggregate
        );
    }

    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }

    /// A token for `role`, acting as `actor` in `agency`.
    pub async fn token(&self, role: Role, actor: &str, agency: &str) -> String {
        self.issue(TokenRecord {
            actor_id: ActorId::parse(actor).expect("actor"),
            role,
            agency: AgencyId::parse(agency).expect("agency"),
            provider: None,
        })
        .await
    }

    /// A token for `record`, made now by this server's clock. It lasts ten years, so that a test
    /// that moves the clock on by months keeps its caller (expiry has tests of its own).
    pub async fn issue(&self, record: TokenRecord) -> String {
        let now = self.clock.now();
        services::auth::issue_token(
            &self.store,
            &record,
            now,
            Some(now + chrono::Duration::days(3650)),
        )
        .await
        .expect("token stored")
        .token
    }

    /// A `service` token of `agency` speaking for `provider` (a receiving system).
    pub async fn service_token(&self, actor: &str, agency: &str, provider: &str) -> String {
        self.issue(TokenRecord {
            actor_id: ActorId::parse(actor).expect("actor"),
            role: Role::Service,
            agency: AgencyId::parse(agency).expect("agency"),
            provider: Some(schemas::ProviderId::parse(provider).expect("provider")),
        })
        .await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        self.post_raw(path, token, body.to_string().into_bytes(), None)
            .await
    }

    pub async fn post_with_key(
        &self,
        path: &str,
        token: &str,
        body: &Value,
        key: &str,
    ) -> (StatusCode, Value) {
        self.post_raw(path, token, body.to_string().into_bytes(), Some(key))
            .await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        token: &str,
        body: Vec<u8>,
        idempotency_key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.address))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.address))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Waits until every projection has applied everything in the log (`/readyz` lag 0).
    pub async fn wait_projected(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (_, b) = self.get("/readyz", &self.admin_token).await;
            let caught_up = b["projections"]
                .as_array()
                .is_some_and(|ps| ps.iter().all(|p| p["lag"] == 0));
            if caught_up {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "projections did not catch up: {b}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Applies the projection called `name` in this process, batch by batch, until it has
    /// applied every event in the log (for an app spawned with `run_projections` off). A step
    /// that applies nothing is not enough: on PostgreSQL the log stops short of any transaction
    /// still running in the cluster, another test's included.
    pub async fn project(&self, name: &str) {
        let projection = services::projector::known(name).expect("a known projection");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let stepped = services::projector::step(&self.store, projection)
                .await
                .expect("a projection step");
            if stepped == services::projector::Stepped::Applied(0) {
                let status = services::projector::status(&self.store)
                    .await
                    .expect("status");
                if status.iter().any(|s| s.name == name && s.lag == 0) {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{name} never caught up: {status:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    }

    /// Writes an event row straight into the store, as another release (an earlier one, or a
    /// buggy or newer one) would have: for tests of what this version does with it.
    pub async fn insert_stored_event(
        &self,
        case_id: &str,
        sequence: i64,
        event_type: &str,
        event_version: &str,
        payload: &Value,
        metadata: &Value,
    ) {
        let insert = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                      event_version, payload, metadata) VALUES ('Case', $1, $2, $3, $4, $5, $6)";
        match &self.config.database_url {
            Some(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
                sqlx::query(insert)
                    .bind(case_id)
                    .bind(sequence)
                    .bind(event_type)
                    .bind(event_version)
                    .bind(payload)
                    .bind(metadata)
                    .execute(&mut c)
                    .await
                    .expect("insert an event row");
            }
            None => {
                let path = self.config.data_dir.join("linkage.db");
                let mut c =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                        .await
                        .expect("connect");
                sqlx::query(insert)
                    .bind(case_id)
                    .bind(sequence)
                    .bind(event_type)
                    .bind(event_version)
                    .bind(payload.to_string())
                    .bind(metadata.to_string())
                    .execute(&mut c)
                    .await
                    .expect("insert an event row");
            }
        }
    }

    /// Runs a statement against the test's store directly, as someone with database access
    /// would, and returns its rows' first column as text (or the database's refusal).
    pub async fn sql(&self, sql: &str) -> Result<Vec<String>, String> {
        let rows = match &self.config.database_url {
            Some(url) => {
                let mut c = sqlx::PgConnection::connect(url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query_scalar(sql).fetch_all(&mut c).await
            }
            None => {
                let path = self.config.data_dir.join("linkage.db");
                let mut c =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                        .await
                        .map_err(|e| e.to_string())?;
                sqlx::query_scalar(sql).fetch_all(&mut c).await
            }
        };
        rows.map_err(|e| e.to_string())
    }

    /// The number of events stored for a case, read through the API as admin.
    pub async fn event_count(&self, case_id: &str) -> usize {
        let (s, body) = self
            .get(
                &format!("/v1/cases/{case_id}/events?limit=1000"),
                &self.admin_token,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        body["events"].as_array().expect("events").len()
    }
}

/// A test per store for a body that builds its own app (with a bus, say):
/// `both_backends!(name, body)` runs `body(Backend::Sqlite)` and `body(Backend::Postgres)`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$body($crate::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$body($crate::Backend::Postgres).await;
            }
        }
    };
}

/// Runs an async test body against both stores: `both_stores!(name, |app| async move { ... })`.
#[macro_export]
macro_rules! both_stores {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let app = $crate::TestApp::spawn($crate::Backend::Sqlite)
                    .await
                    .expect("sqlite always runs");
                ($body)(app).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(app) = $crate::TestApp::spawn($crate::Backend::Postgres).await {
                    ($body)(app).await;
                }
            }
        }
    };
}

/// An HTTP client that lets an idle connection go before the server closes it (the server
/// closes a keep-alive connection idle for `header_read_timeout_secs`): a request sent on a
/// connection the server is closing at that moment would fail.
fn client_for(config: &Config) -> reqwest::Client {
    let server_idle = std::time::Duration::from_secs(config.header_read_timeout_secs.max(1));
    reqwest::Client::builder()
        .pool_idle_timeout(server_idle / 2)
        .build()
        .expect("an HTTP client")
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn database_names_are_swapped_in_urls() {
        assert_eq!(
            replace_database("postgres://u@h:5/postgres", "t1"),
            "postgres://u@h:5/t1"
        );
        assert_eq!(
            replace_database("postgres://u@h:5/postgres?sslmode=disable", "t1"),
            "postgres://u@h:5/t1?sslmode=disable"
        );
    }
}
