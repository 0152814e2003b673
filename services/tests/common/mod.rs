//! Helpers of the tests that run the `linkage` binary.

#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

/// The instant every server these tests start is pinned at (`LINKAGE_CLOCK`): the dates they
/// send are computed from it, never from the machine's clock.
pub const CLOCK: &str = "2026-11-16T23:59:30Z";

pub fn linkage() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_linkage"));
    command.env("LINKAGE_CLOCK", CLOCK);
    command
}

pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port free now, for a server that restarts on the same address.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `linkage serve` on 127.0.0.1:`port`, its store in `dir` (or at `database_url`), following the
/// log every 20 ms, its output discarded.
pub fn serve(port: u16, dir: &std::path::Path, database_url: Option<&str>) -> Command {
    let mut command = linkage();
    command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .env("LINKAGE_PROJECTION_POLL_MS", "20")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(url) = database_url {
        command.args(["--database-url", url]);
    }
    command
}

pub fn temp_dir() -> TempDir {
    let dir = std::env::temp_dir().join(format!("linkage-cli-{}", uuid::Uuid::new_v4().simple()));
    TempDir(dir)
}

/// Polls `/readyz` until every projection has caught up (lag 0), retrying while the server is
/// still starting.
pub async fn wait_projected(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = serde_json::Value::Null;
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if let Ok(ready) = r.json::<serde_json::Value>().await {
                let caught_up = ready["projections"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().all(|p| p["lag"] == 0));
                if caught_up {
                    return;
                }
                last = ready;
            }
        }
        assert!(Instant::now() < deadline, "never caught up: {last}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens a case over HTTP as `token`; returns its id.
pub async fn open_case(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    given_name: &str,
    birth_date: &str,
) -> String {
    let today = &CLOCK[..10];
    let case: serde_json::Value = client
        .post(format!("{base}/v1/cases"))
        .bearer_auth(token)
        .json(&serde_json::json!({"program": "tcm", "assigned_to": "cm-ada", "intake_date": today,
            "child": {"given_name": given_name, "family_name": "Sample", "birth_date": birth_date}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    case["case_id"].as_str().expect("a case").to_owned()
}
