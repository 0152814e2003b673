//! A real nats-server per test, with JetStream on a store directory of its own, stopped and
//! removed by a Drop guard (the nats.rs test-server pattern). `stop` and `restart` keep the port
//! and the store, so a test can take the broker away mid-stream and bring it back.
//!
//! The binary comes from `LINKAGE_NATS_SERVER` (ops/test.sh installs one with ops/nats-install.sh)
//! or `nats-server` on PATH. Without one the NATS tests are skipped with a notice, unless
//! `LINKAGE_REQUIRE_NATS` is set, as the test command sets it, in which case they fail.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

fn binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("LINKAGE_NATS_SERVER").filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("nats-server"))
            .find(|p| p.is_file())
    });
    if on_path.is_none() && std::env::var_os("LINKAGE_REQUIRE_NATS").is_some() {
        panic!("LINKAGE_REQUIRE_NATS is set but no nats-server was found; run ops/test.sh");
    }
    if on_path.is_none() {
        eprintln!("skipping a NATS test: no nats-server (ops/test.sh installs one)");
    }
    on_path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl NatsServer {
    /// A new server; None when NATS tests may be skipped and no server binary exists.
    pub fn start() -> Option<Self> {
        let bin = binary()?;
        let dir =
            std::env::temp_dir().join(format!("linkage-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the nats dir");
        let mut server = Self {
            bin,
            dir,
            port: free_port(),
            child: None,
        };
        server.launch();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.join("server.log")).expect("log file");
        let child = Command::new(&self.bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.join("jetstream"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            if log.contains("Server is ready") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: no goodbye to clients), keeping its port and store.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same JetStream store.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The broker a test publishes to, with the stream settings it must use. `shared()` uses the
/// server in `LINKAGE_TEST_NATS_URL` (the test command sets it from `NATS_URL`) when there is one,
/// with a stream and subject prefix of the test's own so tests never see each other's messages;
/// otherwise, like `own()`, a nats-server of the test's own. Tests that stop the broker use `own()`.
pub struct Bus {
    pub url: String,
    pub config: services::bus::BusConfig,
    pub server: Option<NatsServer>,
}

impl Bus {
    pub fn shared() -> Option<Self> {
        match std::env::var("LINKAGE_TEST_NATS_URL") {
            Ok(url) if !url.is_empty() => {
                let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
                Some(Self {
                    url,
                    config: services::bus::BusConfig {
                        stream: format!("TEST_{id}"),
                        subject_prefix: format!("t{id}"),
                        ..services::bus::BusConfig::default()
                    },
                    server: None,
                })
            }
            _ => Self::own(),
        }
    }

    pub fn own() -> Option<Self> {
        let server = NatsServer::start()?;
        Some(Self {
            url: server.url(),
            config: services::bus::BusConfig::default(),
            server: Some(server),
        })
    }

    /// The server this test owns (only `own()` guarantees one).
    pub fn server(&mut self) -> &mut NatsServer {
        self.server
            .as_mut()
            .expect("a test that stops the broker uses Bus::own()")
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        if self.server.is_some() {
            return;
        }
        // A shared server: remove this test's stream.
        let (url, stream) = (self.url.clone(), self.config.stream.clone());
        crate::block_on_own_thread(async move {
            if let Ok(client) = async_nats::connect(url).await {
                let _ = async_nats::jetstream::new(client)
                    .delete_stream(stream)
                    .await;
            }
        });
    }
}
