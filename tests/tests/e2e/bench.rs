//! The benchmark command runs end to end on a real PostgreSQL and prints every row it promises.
//! Figures are not asserted here (machines are noisy); `ops/bench.sh` is where they are read.

use linkage_bench::AppendBench;

/// The command capacity a rate-driven benchmark measured first, in commands per second.
fn capacity(report: &str) -> f64 {
    let capacity: f64 = report
        .lines()
        .find_map(|l| l.strip_prefix("command capacity: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no capacity line in:\n{report}"));
    assert!(capacity > 0.0, "{report}");
    capacity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_append_prints_every_row_beside_its_baseline() {
    let Some(url) = linkage_tests::postgres_admin_url() else {
        return;
    };
    let bench = AppendBench {
        database_url: url,
        clients: vec![1, 2],
        seconds: 1,
        long_stream: 20,
        cases_per_client: 2,
    };
    let mut out = Vec::new();
    bench.run(&mut out).await.expect("the benchmark runs");
    let report = String::from_utf8(out).expect("utf-8");
    for clients in ["1", "2"] {
        for label in [
            "raw single-row INSERT (baseline)",
            "command, 2-event streams",
            "command, long streams (see header)",
        ] {
            let row = report
                .lines()
                .find(|l| l.starts_with(label) && l.split_whitespace().any(|w| w == clients))
                .unwrap_or_else(|| panic!("no row `{label}` at {clients} clients in:\n{report}"));
            let rate: f64 = row
                .split_whitespace()
                .rev()
                .nth(3)
                .and_then(|w| w.parse().ok())
                .unwrap_or_else(|| panic!("no rate in `{row}`"));
            assert!(rate > 0.0, "{row}");
        }
    }
    assert!(report.contains("of raw INSERT"), "{report}");
    assert!(report.contains("cold load"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_projections_prints_rebuilds_beside_the_scan_and_lag() {
    let Some(url) = linkage_tests::postgres_admin_url() else {
        return;
    };
    let bench = linkage_bench::ProjectionBench {
        database_url: url,
        events: 3_000,
        stream_len: 100,
        rate: 100,
        lag_seconds: 1,
        capacity_seconds: 1,
        fraction: 0.5,
        // The default period beside steps back to back, at each rate.
        step_period_ms: vec![40, 0],
        only: Vec::new(),
    };
    let mut out = Vec::new();
    bench.run(&mut out).await.expect("the benchmark runs");
    let report = String::from_utf8(out).expect("utf-8");
    for row in [
        "plain scan of events (baseline)",
        "projection audit_trail",
        "projection caseloads",
        "all projections",
    ] {
        let line = report
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no `{row}` row in:\n{report}"));
        assert!(line.contains("3000"), "every event counted: {line}");
    }
    // Each rebuild's CPU per event (of this process) and how busy the machine was.
    let audit: Vec<&str> = report
        .lines()
        .find(|l| l.starts_with("projection audit_trail"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let cpu: f64 = audit[6].parse().expect("CPU µs per event");
    let busy: f64 = audit[7]
        .trim_end_matches('%')
        .parse()
        .expect("machine busy");
    assert!(cpu > 0.0 && (0.0..=100.0).contains(&busy), "{report}");
    let capacity = capacity(&report);
    assert!(
        report.contains("projection lag from inside the engine"),
        "{report}"
    );
    // Two rates (half the capacity, and 100/s), each under both step periods, each with a line
    // per projection that counts every event the commands wrote.
    for name in ["audit_trail", "caseloads", "billing"] {
        let lines: Vec<Vec<&str>> = report
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() == 9 && f[4] == name)
            .collect();
        assert_eq!(lines.len(), 4, "four lag lines for {name}: {report}");
        let periods: Vec<&str> = lines.iter().map(|f| f[1]).collect();
        assert_eq!(periods, ["40", "0", "40", "0"], "{report}");
        let asked: Vec<u64> = lines.iter().map(|f| f[0].parse().unwrap()).collect();
        assert_eq!(asked[0], asked[1], "{report}");
        assert_eq!(asked[2..], [100, 100], "{report}");
        // Half the capacity, which the report prints rounded.
        assert!(
            asked[0].abs_diff((capacity * 0.5).round() as u64) <= 1,
            "{report}"
        );
        for f in &lines {
            let events: u64 = f[5].parse().unwrap();
            // One second of commands, one event each: every event applied is counted once (a
            // command refused after its conflict retries would write none).
            let expected: u64 = f[0].parse().unwrap();
            assert!(
                events <= expected && events * 100 >= expected * 99,
                "every event applied counted once: {f:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_relay_prints_catch_up_beside_the_plain_loop_and_latency() {
    let Some(url) = linkage_tests::postgres_admin_url() else {
        return;
    };
    let Some(bus) = linkage_tests::nats::Bus::shared() else {
        return;
    };
    let bench = linkage_bench::RelayBench {
        database_url: url,
        nats_url: bus.url.clone(),
        events: 2_000,
        batch: 500,
        rate: 100,
        latency_seconds: 1,
        capacity_seconds: 1,
        fraction: 0.5,
    };
    let mut out = Vec::new();
    bench.run(&mut out).await.expect("the benchmark runs");
    let report = String::from_utf8(out).expect("utf-8");
    for label in [
        "plain async-nats pipelined publish (baseline)",
        "linkage relay (log -> JetStream, checkpointed)",
    ] {
        let row = report
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row `{label}` in:\n{report}"));
        let messages: u64 = row[label.len()..]
            .split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no count in `{row}`"));
        // 200 cases of 9 public events.
        assert_eq!(messages, 200 * 9, "{row}");
    }
    let capacity = capacity(&report);
    // Two rates (half the capacity, and 100/s): every referral sent is acked and timed once.
    let lines: Vec<Vec<&str>> = report
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() == 7 && f[0].parse::<u64>().is_ok() && f[2].ends_with('%'))
        .collect();
    assert_eq!(lines.len(), 2, "two latency lines: {report}");
    assert_eq!(lines[1][0], "100", "{report}");
    let half: u64 = lines[0][0].parse().unwrap();
    assert!(
        half.abs_diff((capacity * 0.5).round() as u64) <= 1,
        "{report}"
    );
    for f in &lines {
        let asked: u64 = f[0].parse().unwrap();
        let messages: u64 = f[3].parse().unwrap();
        assert_eq!(messages, asked, "one ack per referral: {f:?}");
    }
    assert!(
        report.contains(
            "pool-starvation warnings (a connection waited over 500 ms) while commands arrived: "
        ),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_billing_prints_the_export_beside_copy() {
    let Some(url) = linkage_tests::postgres_admin_url() else {
        return;
    };
    let bench = linkage_bench::BillingBench {
        database_url: url,
        // Enough lines that recording a batch writes several statements' worth.
        lines: 3_000,
        per_case: 10,
    };
    let mut out = Vec::new();
    bench.run(&mut out).await.expect("the benchmark runs");
    let report = String::from_utf8(out).expect("utf-8");
    // The first figure of the row that starts with `label`.
    let count = |label: &str| -> u64 {
        let row = report
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no row `{label}` in:\n{report}"));
        row.trim_start()[label.len()..]
            .split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no count in `{row}`"))
    };
    for label in [
        "COPY (SELECT ...) TO STDOUT (baseline)",
        "linkage billing export, CSV (rules applied)",
    ] {
        assert_eq!(
            count(label),
            3_000,
            "the same rows on both sides:\n{report}"
        );
    }
    // Batches: the first bills every billable line, the second finds nothing changed, and the
    // first reproduces (its checksum verified over the stored rows).
    let billable = report
        .lines()
        .find(|l| l.contains(" billable lines,"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|w| w.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no billable count in:\n{report}"));
    assert!(billable > 1_000, "several statements' worth:\n{report}");
    assert_eq!(count("INSERT ... SELECT the same rows (baseline)"), 3_000);
    assert_eq!(count("first batch (every line an original)"), billable);
    assert_eq!(count("second batch (nothing changed since)"), 0);
    assert_eq!(
        count("reproduce the first (verify, then write CSV)"),
        billable
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_costs_prints_every_figure_at_every_size() {
    let Some(url) = linkage_tests::postgres_admin_url() else {
        return;
    };
    let bench = linkage_bench::CostBench {
        database_url: url,
        sizes: vec![1_000, 3_000],
        stream_len: 150,
        seconds: 1,
        probe_cases: 3,
    };
    let mut out = Vec::new();
    bench.run(&mut out).await.expect("the benchmark runs");
    let report = String::from_utf8(out).expect("utf-8");
    let stored = report
        .lines()
        .find(|l| l.starts_with("events stored "))
        .unwrap_or_else(|| panic!("no sizes in:\n{report}"));
    let sizes: Vec<u64> = stored
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(sizes.len(), 2, "{stored}");
    assert!(sizes[0] >= 1_000 && sizes[1] >= 3_000, "{stored}");
    for label in [
        "commands/s, 16 clients",
        "command p99 ms",
        "cold load of a 150-event case p50 ms",
        "page of 100 of a case's events p50 ms",
        "caseload of a worker (3 cases) p50 ms",
        "month export (444 lines) ms",
    ] {
        let line = report
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row `{label}` in:\n{report}"));
        let figures: Vec<f64> = line[label.len()..]
            .split_whitespace()
            .take(2)
            .map(|w| w.parse().unwrap_or_else(|_| panic!("`{w}` in `{line}`")))
            .collect();
        assert!(figures.iter().all(|f| *f > 0.0), "{line}");
    }
    assert!(report.contains("largest/first"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_http_sets_each_round_beside_the_raw_insert_measured_around_it() {
    let Some(url) = linkage_tests::postgres_admin_url() else {
        return;
    };
    let bench = linkage_bench::HttpBench {
        database_url: url,
        clients: vec![2],
        seconds: 1,
        cases_per_client: 2,
        without_projections: false,
        rounds: 2,
        // A busy day: one thread spins throughout the rounds, and stops with them.
        contend: 1,
        step_period_ms: 25,
    };
    let mut out = Vec::new();
    bench.run(&mut out).await.expect("the benchmark runs");
    let report = String::from_utf8(out).expect("utf-8");
    assert!(
        report.contains("1 thread(s) spinning on the CPU throughout the rounds"),
        "{report}"
    );
    assert_eq!(linkage_bench::spinning_threads(), 0, "the spinner stopped");
    assert!(
        report.contains("projections on, step period 25 ms"),
        "the server ran with the period asked for: {report}"
    );
    // Each round's projection lag over its HTTP phase, for every projection.
    for round in 1..=2 {
        let line = report
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    " 2 connections, round {round}: when the clients stopped"
                ))
            })
            .unwrap_or_else(|| panic!("no catch-up line for round {round}:\n{report}"));
        let lag = line
            .split_once("lag p50/p99/max ms: ")
            .unwrap_or_else(|| panic!("no lag in {line}"))
            .1;
        for name in ["audit_trail", "caseloads", "billing"] {
            let figures = lag
                .split(", ")
                .find_map(|part| part.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no lag for {name} in {line}"));
            let ms: Vec<u64> = figures.split('/').map(|n| n.parse().unwrap()).collect();
            assert!(ms.len() == 3 && ms[0] <= ms[1] && ms[1] <= ms[2], "{line}");
        }
    }
    // Every workload once per round, with a rate, and its ratio to that round's raw INSERT.
    let mut ratios = Vec::new();
    for round in ["1", "2"] {
        let row = |label: &str| -> Vec<String> {
            report
                .lines()
                .find(|l| {
                    l.starts_with(label)
                        && l[label.len()..].split_whitespace().nth(1) == Some(round)
                })
                .unwrap_or_else(|| panic!("no row `{label}` in round {round}:\n{report}"))
                [label.len()..]
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        let rate = |cells: &[String]| -> f64 { cells[2].parse().expect("a rate") };
        let before = row("raw single-row INSERT (baseline)");
        let after = row("raw single-row INSERT (after HTTP)");
        let http = row("POST /v1/cases/{id}/contacts");
        assert!(
            rate(&before) > 0.0 && rate(&after) > 0.0 && rate(&http) > 0.0,
            "{report}"
        );
        assert!(
            rate(&row("held-connection INSERT (as pgbench)")) > 0.0,
            "{report}"
        );
        // The round's HTTP rate against the mean of the raw rates just before and after it.
        let raw = (rate(&before) + rate(&after)) / 2.0;
        let printed: f64 = http[5].trim_end_matches('%').parse().expect("a ratio");
        assert!(
            (printed - 100.0 * rate(&http) / raw).abs() <= 1.0,
            "round {round}'s HTTP row is set beside its own raw rows:\n{report}"
        );
        // The raw row after HTTP is set beside the one before: how far the machine drifted.
        let drift: f64 = after[5].trim_end_matches('%').parse().expect("a ratio");
        assert!(
            (drift - 100.0 * rate(&after) / rate(&before)).abs() <= 1.0,
            "{report}"
        );
        let line = report
            .lines()
            .find(|l| l.starts_with(&format!(" 2 connections, round {round}: HTTP contacts at ")))
            .unwrap_or_else(|| panic!("no line for round {round}:\n{report}"));
        assert!(
            line.contains(&format!(
                "the mean of {}/s before and {}/s after",
                before[2], after[2]
            )),
            "{line}"
        );
        ratios.push(100.0 * rate(&http) / raw);
    }
    let median = (ratios[0] + ratios[1]) / 2.0;
    let summary = report
        .lines()
        .find(|l| l.contains("of raw INSERT (median of 2 rounds"))
        .unwrap_or_else(|| panic!("no summary in:\n{report}"));
    let printed: f64 = summary
        .split_whitespace()
        .find_map(|w| w.strip_suffix('%')?.parse().ok())
        .expect("a median");
    // Each round's ratio is rounded from rates printed whole: within a point or two.
    assert!(
        (printed - median).abs() <= 2.0,
        "{summary} (rounds {ratios:?})"
    );
}
