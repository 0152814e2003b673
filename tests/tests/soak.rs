//! Soak: commands at a fixed rate for minutes on PostgreSQL, with the projections running, and
//! every interval the process's resident memory, its open files, the database's connections and
//! the projections' lag sampled. Nothing may fail, and nothing may grow without bound: memory and
//! open files end near where they stood after the warm-up, connections within the pools, lag
//! caught up at the end.
//!
//! The README's test command runs two minutes at 100 commands/s; `LINKAGE_SOAK_SECONDS=1800`
//! (and `LINKAGE_SOAK_RATE`) makes the long run. The samples are printed. It is a test binary
//! of its own, so that no other test shares the process whose memory and files it samples.

use std::time::{Duration, Instant};

use linkage_tests::{Backend, TestApp};
use reqwest::StatusCode;
use serde_json::json;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A family name of letters for intake `n`, new for each: the open cases of a long run outnumber
/// the test's distinct birth dates, and the same child twice is a duplicate intake, refused.
fn family_name(n: usize) -> String {
    let mut name = String::from("Sample");
    let mut k = n;
    loop {
        name.push((b'a' + (k % 26) as u8) as char);
        k /= 26;
        if k == 0 {
            return name;
        }
    }
}

/// This process's resident memory in MiB and its open file descriptors (Linux).
fn process() -> (f64, usize) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0);
    let files = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    (rss, files)
}

/// One sample, printed (all its fields are read through `Debug`).
#[derive(Debug)]
#[allow(dead_code)]
struct Sample {
    at_secs: u64,
    rss_mib: f64,
    open_files: usize,
    connections: i64,
    max_lag: i64,
    answered: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_steady_load_leaves_nothing_growing() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let seconds = setting("LINKAGE_SOAK_SECONDS", 120);
    let rate = setting("LINKAGE_SOAK_RATE", 100);
    let every = Duration::from_secs(if seconds >= 600 { 60 } else { 10 });
    let t = app.admin_token.clone();
    // 64 cases take the contacts; every 50 commands the oldest is replaced by a new intake, so
    // a case gets about 50 contacts, as in an agency, and the open cases keep turning over.
    let intake = |n: usize| {
        let app = &app;
        let t = t.clone();
        async move {
            let (s, b) = app
                .post(
                    "/v1/cases",
                    &t,
                    &json!({"program": "tcm", "assigned_to": format!("cm-{}", n % 8), "intake_date": "2026-09-01",
                        "child": {"given_name": "Robin", "family_name": family_name(n),
                                  "birth_date": linkage_tests::unique_birth_date()}}),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
            b["case_id"].as_str().unwrap().to_owned()
        }
    };
    let mut cases = Vec::new();
    for n in 0..64 {
        cases.push(intake(n).await);
    }
    let connections = || async {
        app.sql("SELECT CAST(COUNT(*) AS TEXT) FROM pg_stat_activity WHERE datname = current_database()")
            .await
            .expect("pg_stat_activity")[0]
            .parse::<i64>()
            .expect("a count")
    };
    let max_lag = || async {
        let (_, ready) = app.get("/readyz", &t).await;
        ready["projections"].as_array().map_or(0, |ps| {
            ps.iter()
                .filter_map(|p| p["lag"].as_i64())
                .max()
                .unwrap_or(0)
        })
    };

    // The load's own HTTP client, keeping few idle connections, so that what is sampled is the
    // server's use of files, not the client's idle pool.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(16)
        .build()
        .expect("a client");
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    let mut next_sample = started + every;
    let mut samples = Vec::new();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut answered = 0usize;
    let mut n = 0usize;
    let mut intakes = 0usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        if n > 0 && n % 50 == 0 {
            cases[intakes % 64] = intake(64 + intakes).await;
            intakes += 1;
        }
        let (client, url, t) = (
            client.clone(),
            format!(
                "{}/v1/cases/{}/contacts",
                app.address,
                cases[n % cases.len()]
            ),
            t.clone(),
        );
        let minutes = 5 + (n % 50) as u64;
        in_flight.spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(t)
                .json(&json!({"component": "monitoring", "contact_type": "phone",
                    "with": ["guardian"], "occurred_at": "2026-10-05T15:00:00Z", "minutes": minutes}))
                .send()
                .await
                .expect("an answer");
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            assert_eq!(status, StatusCode::CREATED, "{body}");
        });
        n += 1;
        while let Some(done) = in_flight.try_join_next() {
            done.expect("a command");
            answered += 1;
        }
        if Instant::now() >= next_sample {
            next_sample += every;
            let (rss_mib, open_files) = process();
            samples.push(Sample {
                at_secs: started.elapsed().as_secs(),
                rss_mib,
                open_files,
                connections: connections().await,
                max_lag: max_lag().await,
                answered,
            });
            eprintln!("soak {:?}", samples.last().expect("a sample"));
        }
    }
    while let Some(done) = in_flight.join_next().await {
        done.expect("a command");
        answered += 1;
    }
    app.wait_projected().await;
    assert_eq!(answered, n, "every command answered 201");
    let achieved = n as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "soak: {n} commands and {intakes} intakes in {seconds} s ({achieved:.0}/s asked {rate}/s)"
    );

    // Nothing keeps growing: the end stands near the highest point of the first half (pools
    // filled, caches grown to their bounds, connections opened for bursts).
    assert!(samples.len() >= 4, "{samples:?}");
    let first_half = &samples[..samples.len() / 2];
    let last = samples.last().expect("a sample");
    let rss_bound = first_half.iter().map(|s| s.rss_mib).fold(0.0, f64::max) * 1.5 + 64.0;
    let files_bound = first_half.iter().map(|s| s.open_files).max().unwrap_or(0) + 64;
    assert!(
        last.rss_mib <= rss_bound,
        "resident memory kept growing, to {:.0} MiB: {samples:?}",
        last.rss_mib
    );
    assert!(
        last.open_files <= files_bound,
        "open files kept growing, to {}: {samples:?}",
        last.open_files
    );
    // The pools hold at most 20 + 5 + 2 connections per store, and the test makes one more.
    assert!(
        samples.iter().all(|s| s.connections <= 40),
        "connections beyond the pools: {samples:?}"
    );
    assert!(
        samples.iter().all(|s| s.max_lag < (rate * 10) as i64),
        "projections fell behind: {samples:?}"
    );
}
