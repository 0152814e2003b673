//! The `linkage` binary itself: first-start admin token and `token create`, on the embedded store.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use services::auth::hash_token;
use services::store::Store;

mod common;
use common::{free_port, linkage, open_case, serve, temp_dir, wait_projected};

/// The token record stored for `token` (by its hash) in the embedded store under `dir`.
async fn stored_token(dir: &std::path::Path, token: &str) -> services::store::TokenRecord {
    stored(dir, token).await.record
}

/// The stored token (record and lifecycle) for `token`, unless revoked.
async fn stored(dir: &std::path::Path, token: &str) -> services::store::StoredToken {
    let store = Store::sqlite(dir).await.unwrap();
    let record = store
        .token(&hash_token(token))
        .await
        .unwrap()
        .expect("stored by hash");
    store.close().await;
    record
}

/// The last line printed: the token, after its id and expiry.
fn last_line(printed: &str) -> String {
    printed.trim().lines().last().unwrap_or_default().to_owned()
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
    assert!(
        !printed.contains('\u{1b}'),
        "logs to a pipe carry no colour codes: {printed:?}"
    );

    let record = stored_token(&dir.0, &token).await;
    assert_eq!(record.role.as_str(), "admin");
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
    let printed = String::from_utf8(out.stdout).unwrap();
    let token = last_line(&printed);
    assert!(token.starts_with("lkg_"), "{printed}");
    assert!(
        printed.starts_with("id: "),
        "the token's id comes first: {printed}"
    );

    let record = stored_token(&dir.0, &token).await;
    assert_eq!(record.actor_id.as_str(), "cm-ada");
    assert_eq!(record.agency.as_str(), "north");
    let store = Store::sqlite(&dir.0).await.unwrap();
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

    // A service token speaks for one receiving provider, named when it is made.
    let service = |provider: Option<&str>| {
        let mut c = linkage();
        c.args(["token", "create", "--role", "service", "--actor", "svc-1"]);
        if let Some(p) = provider {
            c.args(["--provider", p]);
        }
        c.arg("--data-dir").arg(&dir.0).output().unwrap()
    };
    let unbound = service(None);
    assert!(!unbound.status.success());
    assert!(String::from_utf8_lossy(&unbound.stderr).contains("--provider"));
    let bound = service(Some("prov-1"));
    assert!(
        bound.status.success(),
        "{}",
        String::from_utf8_lossy(&bound.stderr)
    );
    let token = last_line(&String::from_utf8(bound.stdout).unwrap());
    let record = stored_token(&dir.0, &token).await;
    assert_eq!(record.provider.as_ref().map(|p| p.as_str()), Some("prov-1"));
}

/// A token's lifecycle from the command line: it expires when asked (90 days by default; `never`
/// only for service tokens), is listed without its secret, and is refused once revoked.
#[tokio::test]
async fn tokens_expire_are_listed_and_are_revoked() {
    let dir = temp_dir();
    let run = |args: &[&str]| {
        let out = linkage()
            .args(args)
            .arg("--data-dir")
            .arg(&dir.0)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let field = |printed: &str, name: &str| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_default()
            .to_owned()
    };
    let (ok, made, err) = run(&[
        "token",
        "create",
        "--role",
        "supervisor",
        "--actor",
        "sup-1",
    ]);
    assert!(ok, "{err}");
    let (id, token) = (field(&made, "id"), last_line(&made));
    assert_eq!(
        field(&made, "expires"),
        "2027-02-14T23:59:30+00:00",
        "90 days from the clock"
    );
    let (ok, short, err) = run(&[
        "token",
        "create",
        "--role",
        "auditor",
        "--actor",
        "aud-1",
        "--expires-in",
        "12h",
    ]);
    assert!(ok, "{err}");
    assert_eq!(field(&short, "expires"), "2026-11-17T11:59:30+00:00");
    let (ok, _, err) = run(&[
        "token",
        "create",
        "--role",
        "admin",
        "--actor",
        "a",
        "--expires-in",
        "never",
    ]);
    assert!(
        !ok && err.contains("only service tokens may never expire"),
        "{err}"
    );
    let (ok, never, err) = run(&[
        "token",
        "create",
        "--role",
        "service",
        "--actor",
        "svc",
        "--provider",
        "prov-1",
        "--expires-in",
        "never",
    ]);
    assert!(ok, "{err}");
    assert_eq!(field(&never, "expires"), "never");
    let (ok, _, err) = run(&[
        "token",
        "create",
        "--role",
        "auditor",
        "--actor",
        "a",
        "--expires-in",
        "soon",
    ]);
    assert!(!ok && err.contains("soon"), "{err}");

    let (ok, listed, err) = run(&["token", "list"]);
    assert!(ok, "{err}");
    assert!(listed.contains(&id) && listed.contains("sup-1"), "{listed}");
    assert!(!listed.contains("lkg_"), "never a secret: {listed}");
    assert_eq!(
        listed.lines().count(),
        4,
        "a header and three tokens: {listed}"
    );

    let life = stored(&dir.0, &token).await;
    assert_eq!(life.life.id, id);
    let (ok, _, err) = run(&["token", "revoke", &id]);
    assert!(ok, "{err}");
    let store = Store::sqlite(&dir.0).await.unwrap();
    assert!(
        store.token(&hash_token(&token)).await.unwrap().is_none(),
        "refused once revoked"
    );
    store.close().await;
    let (ok, _, err) = run(&["token", "revoke", "no-such-id"]);
    assert!(!ok && err.contains("no token with id"), "{err}");
    let (_, listed, _) = run(&["token", "list"]);
    let line = listed
        .lines()
        .find(|l| l.starts_with(&id))
        .expect("still listed");
    assert!(
        line.ends_with("2026-11-16T23:59Z"),
        "revoked at the clock's time: {line}"
    );
}

/// The operations commands against a store with data in it: status, rebuild, verify (intact,
/// then after a hand edit), and a case's history.
#[tokio::test]
async fn projections_and_audit_commands_work_from_the_command_line() {
    let dir = temp_dir();
    let keys = temp_dir();
    std::fs::create_dir_all(&keys.0).unwrap();
    let (key_file, anchors) = (keys.0.join("anchor.key"), keys.0.join("anchors.jsonl"));
    let keygen = linkage()
        .args(["audit", "keygen", "--out"])
        .arg(&key_file)
        .output()
        .expect("runs");
    let printed = String::from_utf8_lossy(&keygen.stdout).into_owned();
    let public_key = printed.lines().last().unwrap_or_default().to_owned();
    assert!(
        keygen.status.success() && public_key.len() == 64,
        "{printed}"
    );
    let config = services::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.0.clone(),
        audit_anchor: Some(services::anchor::AnchorConfig {
            key_file,
            out: anchors.clone(),
            interval_secs: 3_600,
        }),
        ..services::Config::default()
    };
    let app = services::Application::build(config).await.expect("builds");
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let token = std::fs::read_to_string(dir.0.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let client = reqwest::Client::new();
    let case_id = open_case(&client, &base, &token, "Max", "2019-09-09").await;
    // Let the projections catch up, then stop the server (commands below want the store alone).
    wait_projected(&client, &base).await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();

    let run = |args: &[&str]| {
        let out = linkage()
            .args(args)
            .arg("--data-dir")
            .arg(&dir.0)
            .output()
            .expect("runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&["projections", "status"]);
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("audit_trail") && l.split_whitespace().nth(3) == Some("2")),
        "{out}"
    );
    let (ok, out, err) = run(&["projections", "rebuild", "audit_trail"]);
    assert!(ok, "{err}");
    assert!(out.contains("rebuilt audit_trail: 2 events"), "{out}");
    assert!(out.contains("in place"), "SQLite rebuilds in place: {out}");
    let (ok, _, err) = run(&["projections", "rebuild", "nonsense"]);
    assert!(!ok && err.contains("unknown projection"), "{err}");
    let (ok, out, err) = run(&["audit", "verify"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("verified 1 cases, 2 entries") && out.contains("intact"),
        "{out}"
    );
    // The server signed an anchor when it stopped; the chains agree with it.
    let (ok, out, err) = run(&[
        "audit",
        "verify",
        "--anchors",
        anchors.to_str().unwrap(),
        "--public-key",
        &public_key,
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("checked 1 signed anchors, 1 anchored case heads"),
        "{out}"
    );
    // A backup restores into another, empty data directory, whose chains verify; a second
    // restore there, or a backup over an existing file, is refused.
    let copy = temp_dir();
    let file = copy.0.join("linkage.backup");
    let (ok, _, err) = run(&["backup", "--out", file.to_str().unwrap()]);
    assert!(!ok && err.contains("does not exist"), "{err}");
    std::fs::create_dir_all(&copy.0).unwrap();
    let (ok, out, err) = run(&["backup", "--out", file.to_str().unwrap()]);
    assert!(
        ok && out.contains("backed up the sqlite store"),
        "{out}{err}"
    );
    let (ok, _, err) = run(&["backup", "--out", file.to_str().unwrap()]);
    assert!(!ok && err.contains("never overwrites"), "{err}");
    let restored = copy.0.join("restored");
    let in_copy = |args: &[&str]| {
        let out = linkage()
            .args(args)
            .arg("--data-dir")
            .arg(&restored)
            .output()
            .expect("runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = in_copy(&["restore", file.to_str().unwrap()]);
    assert!(ok && out.contains(": 2 events"), "{out}{err}");
    let (ok, _, err) = in_copy(&["restore", file.to_str().unwrap()]);
    assert!(
        !ok && err.contains("restore into an empty data directory"),
        "{err}"
    );
    let (ok, out, err) = in_copy(&["audit", "verify"]);
    assert!(ok && out.contains("intact"), "{out}{err}");
    let (ok, out, err) = run(&["case", "history", &case_id, "--basis", "occurred"]);
    assert!(ok, "{err}");
    let history: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(history["events"].as_array().unwrap().len(), 2);
    assert_eq!(history["state"]["status"], "open");

    // Edit a stored event behind the store's back; verify names it and fails.
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.0.join("linkage.db").display()))
        .await
        .unwrap();
    sqlx::query("DROP TRIGGER events_immutable_update")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("UPDATE events SET payload = replace(payload, 'Max', 'Mox') WHERE sequence = 1")
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let (ok, out, _) = run(&["audit", "verify", "--case", &case_id]);
    assert!(!ok, "verify fails on a broken chain");
    assert!(
        out.contains(&format!("BROKEN case {case_id} at sequence 1")),
        "{out}"
    );
}

/// SIGKILL after commits the projector has not yet applied (the first server runs none: a
/// projector with a long poll period still wakes on this process's commits, and raced the
/// readiness check): the restarted server catches up from its durable checkpoint, nothing lost.
#[tokio::test]
async fn a_killed_server_loses_no_projected_event() {
    let dir = temp_dir();
    let port = free_port();
    let serve = |projections: &str| {
        serve(port, &dir.0, None)
            .env("LINKAGE_RUN_PROJECTIONS", projections)
            .spawn()
            .expect("linkage serve starts")
    };
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let wait_ready = |client: reqwest::Client, base: String| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    return v;
                }
            }
            assert!(Instant::now() < deadline, "server never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    let mut first = serve("false");
    wait_ready(client.clone(), base.clone()).await;
    let token = std::fs::read_to_string(dir.0.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let case_id = open_case(&client, &base, &token, "Ivy", "2020-02-02").await;
    let ready = wait_ready(client.clone(), base.clone()).await;
    assert!(
        ready["projections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["lag"] == 2),
        "committed, acknowledged, not yet projected: {ready}"
    );
    first.kill().expect("SIGKILL");
    let _ = first.wait();

    let mut second = serve("true");
    wait_projected(&client, &base).await;
    let audit: serde_json::Value = client
        .get(format!("{base}/v1/cases/{case_id}/audit"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    second.kill().expect("stopped");
    let _ = second.wait();
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2, "{audit}");
    assert_eq!(audit["pending"], 0);
}
