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
