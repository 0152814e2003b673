//! A real server (`Application`, on PostgreSQL) in this process, for the benchmarks that go
//! through HTTP: bound to port 0, with its first admin token, stopped gracefully at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use services::config::Config;
use services::store::Store;
use services::Application;
use uuid::Uuid;

use crate::BenchError;

pub(crate) struct Served {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The address the server listens on.
    pub addr: std::net::SocketAddr,
    /// The admin token the server wrote on first start.
    pub token: String,
    pub client: reqwest::Client,
    pub store: Arc<Store>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    data_dir: PathBuf,
}

impl Served {
    /// Starts a server on the database at `url`, with or without its projection engine, and an
    /// HTTP client that keeps up to `connections` idle keep-alive connections. `tweak` sets
    /// anything else of the server's configuration.
    pub(crate) async fn start(
        url: &str,
        run_projections: bool,
        connections: usize,
        tweak: impl FnOnce(&mut Config),
    ) -> Result<Self, BenchError> {
        let data_dir =
            std::env::temp_dir().join(format!("linkage-bench-http-{}", Uuid::new_v4().simple()));
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("static address"),
            data_dir: data_dir.clone(),
            database_url: Some(url.to_owned()),
            run_projections,
            ..Config::default()
        };
        tweak(&mut config);
        let app = Application::build(config)
            .await
            .map_err(|e| BenchError::Refused(e.to_string()))?;
        let addr = app.local_addr();
        let base = format!("http://{addr}");
        let token = std::fs::read_to_string(data_dir.join("admin.token"))?
            .trim()
            .to_owned();
        let store = app.state().store.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .build()
            .map_err(crate::bench_err)?;
        Ok(Self {
            base,
            addr,
            token,
            client,
            store,
            stop,
            server,
            data_dir,
        })
    }

    /// A GET of `path` with the admin token; an answer other than 200 is an error.
    pub(crate) async fn get(&self, path: &str) -> Result<bytes::Bytes, BenchError> {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(crate::bench_err)?;
        let status = r.status();
        let body = r.bytes().await.map_err(crate::bench_err)?;
        if status != reqwest::StatusCode::OK {
            return Err(BenchError::Refused(format!(
                "GET {path}: {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(body)
    }

    /// Stops the server gracefully and removes its data directory.
    pub(crate) async fn stop(self) -> Result<(), BenchError> {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.server)
            .await
            .map_err(|_| BenchError::Refused("the server did not stop".into()))?
            .map_err(crate::bench_err)?
            .map_err(BenchError::Io)?;
        let _ = std::fs::remove_dir_all(&self.data_dir);
        Ok(())
    }
}
