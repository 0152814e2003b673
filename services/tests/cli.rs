//! The `linkage` binary itself: first-start admin token and `token create`, on the embedded store.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use services::auth::hash_token;
use services::store::Store;

fn linkage() -> Command {
    Command::new(env!("CARGO_BIN_EXE_linkage"))
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> TempDir {
    let dir = std::env::temp_dir().join(format!("linkage-cli-{}", uuid::Uuid::new_v4().simple()));
    TempDir(dir)
}

#[tokio::test]
async fn first_start_writes_a_private_admin_token_and_never_prints_it() {
    let dir = temp_dir();
    let mut child = linkage()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("linkage serve starts");
    let token_file = dir.0.join("admin.token");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !token_file.exists() {
        assert!(Instant::now() < deadline, "no admin token written");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().expect("stopped");
    let mut printed = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    let _ = child.wait();

    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(token.starts_with("lkg_"));
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the admin token file is private");
    assert!(
        printed.contains("admin.token"),
        "the path is shown: {printed}"
    );
    assert!(!printed.contains(&token), "the token is never printed");

    let store = Store::sqlite(&dir.0).await.unwrap();
    let record = store
        .token(&hash_token(&token))
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(record.role.as_str(), "admin");
    store.close().await;
}

#[tokio::test]
async fn token_create_prints_a_token_whose_hash_alone_is_stored() {
    let dir = temp_dir();
    let out = linkage()
        .args([
            "token",
            "create",
            "--role",
            "case_manager",
            "--actor",
            "cm-ada",
            "--agency",
            "north",
        ])
        .arg("--data-dir")
        .arg(&dir.0)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("lkg_"), "{token}");

    let store = Store::sqlite(&dir.0).await.unwrap();
    let record = store
        .token(&hash_token(&token))
        .await
        .unwrap()
        .expect("stored by hash");
    assert_eq!(record.actor_id.as_str(), "cm-ada");
    assert_eq!(record.agency.as_str(), "north");
    assert!(
        store.token(&token).await.unwrap().is_none(),
        "the plain token is not a key"
    );
    store.close().await;

    let bad = linkage()
        .args([
            "token",
            "create",
            "--role",
            "nurse",
            "--actor",
            "x",
            "--data-dir",
        ])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nurse"));
}
