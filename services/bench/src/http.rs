//! `linkage-bench http`: the whole HTTP command path. Real HTTP/1.1 keep-alive connections post
//! contacts to a real server (`Application`, on PostgreSQL, in this process), beside the raw
//! single-row INSERT into the same events table at the same concurrency, in the same run.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::serve::Served;

/// The raw baseline: one contact event, as a bare row in the events table.
const RAW_INSERT: &str = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
    event_version, payload, metadata) VALUES ('Raw', $1, $2, 'ContactLogged', '2', $3, '{}')";
use crate::{row, run_clients_costed, settle, BenchError, CpuSpan, Row, Scratch};

/// The rows of a round, in the order they run: the held-connection INSERT, the pooled raw
/// INSERT, HTTP, and the pooled raw INSERT again.
const HELD: &str = "held-connection INSERT (as pgbench)";
const RAW_BEFORE: &str = "raw single-row INSERT (baseline)";
const HTTP: &str = "POST /v1/cases/{id}/contacts";
const RAW_AFTER: &str = "raw single-row INSERT (after HTTP)";

#[derive(Debug, Clone, clap::Args)]
pub struct HttpBench {
    /// PostgreSQL URL of a role that may create databases (a scratch one is made and dropped)
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Concurrent connections, one measurement each
    #[arg(long, value_delimiter = ',', default_values_t = [16])]
    pub clients: Vec<usize>,
    /// Seconds per measurement
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Rounds at each number of connections, each the held-connection INSERT, the raw INSERT,
    /// HTTP, and the raw INSERT again: each round's HTTP rate is set beside the mean of the raw
    /// rates measured just before and just after it, so a machine whose speed drifts during the
    /// run (a busy day) moves both alike
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Cases each connection cycles through
    #[arg(long, default_value_t = 8)]
    pub cases_per_client: usize,
    /// Run the server without its projection engine (to see what the projections cost; the
    /// target is measured with them running, as a server runs)
    #[arg(long)]
    pub without_projections: bool,
    /// The server's projection step period (`Config::projection_step_period_ms`; 0 steps back
    /// to back)
    #[arg(long, default_value_t = services::projector::STEP_PERIOD_MS)]
    pub step_period_ms: u64,
    /// Threads spinning on the CPU throughout the rounds, at the benchmark's own priority: a busy
    /// day made reproducible (one spinning thread takes one core's worth from the baseline and
    /// HTTP alike). Their CPU time is left out of the CPU columns
    #[arg(long, default_value_t = 0)]
    pub contend: usize,
}

impl HttpBench {
    pub async fn run(&self, out: &mut impl Write) -> Result<(), BenchError> {
        Scratch::with(&self.database_url, async |s| {
            self.run_on(&s.url, &s.version, &s.fsync, out).await
        })
        .await
    }

    async fn run_on(
        &self,
        url: &str,
        version: &str,
        fsync: &str,
        out: &mut impl Write,
    ) -> Result<(), BenchError> {
        let max_clients = self.clients.iter().copied().max().unwrap_or(1);
        let rounds = self.rounds.max(1);
        let period = self.step_period_ms;
        let served = Served::start(url, !self.without_projections, max_clients * 2, |c| {
            c.projection_step_period_ms = period;
        })
        .await?;
        let (base, token, client, store) = (
            served.base.clone(),
            served.token.clone(),
            served.client.clone(),
            served.store.clone(),
        );
        writeln!(
            out,
            "linkage-bench http: PostgreSQL {version} (fsync {fsync}), {} rounds of {} s per row after 0.5 s warm-up, \
             {} CPUs; the server and the HTTP clients share this process; projections {}",
            rounds,
            self.seconds,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            match self.without_projections {
                true => "off".to_owned(),
                false => format!("on, step period {period} ms"),
            }
        )?;
        let today = chrono::Utc::now().date_naive();
        let mut cases = Vec::new();
        for n in 0..max_clients * self.cases_per_client {
            let birth = (today - chrono::Duration::days(2000 + n as i64)).to_string();
            let body = json!({"program": "tcm", "assigned_to": "cm-bench",
                "intake_date": (today - chrono::Duration::days(30)).to_string(),
                "child": {"given_name": "Bench", "family_name": "Sample", "birth_date": birth}});
            let r = client
                .post(format!("{base}/v1/cases"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .map_err(|e| BenchError::Refused(e.to_string()))?;
            let v: Value = r
                .json()
                .await
                .map_err(|e| BenchError::Refused(e.to_string()))?;
            let id = v["case_id"]
                .as_str()
                .ok_or_else(|| BenchError::Refused(format!("intake refused: {v}")))?;
            cases.push(id.to_owned());
        }
        let raw_pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(max_clients as u32 + 4)
            .connect(url)
            .await?;
        let contact = json!({"component": "monitoring", "contact_type": "phone", "with": ["guardian"],
            "occurred_at": (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339(),
            "minutes": 20, "note": "called the guardian about the next appointment",
            "location": "office"});
        let requests = Arc::new(Requests::new(&served, &token, &cases, &contact)?);
        let contention = match self.contend {
            0 => None,
            threads => {
                writeln!(
                    out,
                    "{threads} thread(s) spinning on the CPU throughout the rounds (a busy day); \
                     the CPU columns leave their time out"
                )?;
                Some(crate::Contention::start(threads)?)
            }
        };
        let mut rows: Vec<Row> = Vec::new();
        // Beside each row: its round, and the machine's and this process's CPU per operation,
        // in µs.
        let mut costs: Vec<(usize, f64, f64)> = Vec::new();
        let seconds = self.seconds;
        let mut costed =
            |label: &str, clients: usize, round: usize, (rate, hist, cpu): (f64, _, CpuSpan)| {
                let ops = (rate * seconds as f64).round() as u64;
                costs.push((
                    round,
                    cpu.machine_micros_per(ops),
                    cpu.process_micros_per(ops),
                ));
                rows.push(row(label, clients, (rate, hist)));
            };
        let mut lag: Vec<String> = Vec::new();
        let run_id = Uuid::new_v4().simple().to_string();
        for (clients, round) in self
            .clients
            .iter()
            .flat_map(|&c| (1..=rounds).map(move |r| (c, r)))
        {
            // The same INSERT with one connection held by each client, as pgbench runs it: sqlx
            // checks a pooled connection with a round trip (a "ping") each time it goes back to
            // the pool, so the pooled baseline pays two round trips an INSERT. Printed beside
            // it, not in its place, so that figures stay comparable across runs.
            settle(&raw_pool).await;
            let mut held = Vec::with_capacity(clients);
            for _ in 0..clients {
                held.push(Arc::new(tokio::sync::Mutex::new(
                    raw_pool.acquire().await?.detach(),
                )));
            }
            let (run_id2, stored) = (run_id.clone(), contact.clone());
            let on_held = run_clients_costed(clients, self.seconds, move |c, n| {
                let connection = held[c].clone();
                let stream = format!("held-{run_id2}-{clients}-{round}-{c}");
                let payload = json!({"ContactLogged": stored});
                async move {
                    let mut connection = connection.lock().await;
                    sqlx::query(RAW_INSERT)
                        .bind(stream)
                        .bind(n as i64 + 1)
                        .bind(payload)
                        .execute(&mut *connection)
                        .await?;
                    Ok(())
                }
            })
            .await?;
            costed(HELD, clients, round, on_held);
            // The pooled raw INSERT just before the HTTP phase, and again just after it (below).
            settle(&raw_pool).await;
            let before = raw_inserts(
                &raw_pool,
                clients,
                self.seconds,
                format!("raw-{run_id}-{clients}-{round}"),
                &contact,
            )
            .await?;
            costed(RAW_BEFORE, clients, round, before);
            settle(&raw_pool).await;
            // The projections' lag is measured over this phase and its catch-up only.
            for name in services::projector::names() {
                store.applied_lag().take(name);
            }
            let mut connections = Vec::with_capacity(clients);
            for _ in 0..clients {
                connections.push(Arc::new(tokio::sync::Mutex::new(
                    connect(served.addr).await?,
                )));
            }
            let (requests, per) = (requests.clone(), self.cases_per_client);
            let measured = run_clients_costed(clients, self.seconds, move |c, n| {
                let connection = connections[c].clone();
                let request = requests.contact(c * per + n % per);
                async move {
                    let mut connection = connection.lock().await;
                    connection.ready().await.map_err(refused)?;
                    let response = connection.send_request(request).await.map_err(refused)?;
                    let status = response.status();
                    let body = response
                        .into_body()
                        .collect()
                        .await
                        .map_err(refused)?
                        .to_bytes();
                    if status != hyper::StatusCode::CREATED {
                        return Err(BenchError::Refused(format!(
                            "{status}: {}",
                            String::from_utf8_lossy(&body)
                        )));
                    }
                    Ok(())
                }
            })
            .await?;
            costed(HTTP, clients, round, measured);
            if !self.without_projections {
                // Where the projections stood when the clients stopped, and how long they took
                // to catch up (before the next row starts).
                let behind = backlog(&store).await?;
                let started = std::time::Instant::now();
                while backlog(&store).await?.iter().any(|(_, n)| *n > 0) {
                    if started.elapsed() > Duration::from_secs(900) {
                        return Err(BenchError::Refused(
                            "the projections did not catch up".into(),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let behind: Vec<String> = behind
                    .iter()
                    .map(|(name, n)| format!("{name} {n}"))
                    .collect();
                // Commit to applied, every event of the phase (`projector::AppliedLag`).
                let applied: Vec<String> = services::projector::names()
                    .into_iter()
                    .filter_map(|name| {
                        let h = store.applied_lag().take(name)?;
                        Some(format!(
                            "{name} {}/{}/{}",
                            h.value_at_quantile(0.5),
                            h.value_at_quantile(0.99),
                            h.max()
                        ))
                    })
                    .collect();
                lag.push(format!(
                    "{clients:>2} connections, round {round}: when the clients stopped, the projections were behind by \
                     {} events; caught up {:.1} s later; lag p50/p99/max ms: {}",
                    behind.join(", "),
                    started.elapsed().as_secs_f64(),
                    applied.join(", ")
                ));
            }
            settle(&raw_pool).await;
            let after = raw_inserts(
                &raw_pool,
                clients,
                self.seconds,
                format!("raw-after-{run_id}-{clients}-{round}"),
                &contact,
            )
            .await?;
            costed(RAW_AFTER, clients, round, after);
        }
        drop(contention);
        writeln!(out)?;
        writeln!(
            out,
            "{:<36} {:>7} {:>5} {:>10} {:>8} {:>8} {:>12} {:>14} {:>14}",
            "workload",
            "clients",
            "round",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "vs baseline",
            "machine µs/op",
            "process µs/op"
        )?;
        // The row `label` at `clients` connections in `round`, with its costs.
        let find = |label: &str, clients: usize, round: usize| {
            rows.iter()
                .zip(&costs)
                .find(|(r, c)| r.clients == clients && c.0 == round && r.label == label)
        };
        // The raw INSERT's rate around a round's HTTP phase: the mean of the runs just before
        // and just after it, so that a machine whose speed drifts during the round (a busy day)
        // moves the baseline as it moves the HTTP rate.
        let bracket = |clients: usize, round: usize| {
            let before = find(RAW_BEFORE, clients, round)?;
            let after = find(RAW_AFTER, clients, round)?;
            Some((
                (before.0.ops_per_sec + after.0.ops_per_sec) / 2.0,
                (before.1 .1 + after.1 .1) / 2.0,
                before.0.ops_per_sec,
                after.0.ops_per_sec,
            ))
        };
        for (r, &(round, machine, process)) in rows.iter().zip(&costs) {
            let base = match r.label.as_str() {
                HTTP => bracket(r.clients, round).map(|b| b.0),
                _ => find(RAW_BEFORE, r.clients, round).map(|(b, _)| b.ops_per_sec),
            }
            .unwrap_or(f64::NAN);
            writeln!(
                out,
                "{:<36} {:>7} {:>5} {:>10.0} {:>8.2} {:>8.2} {:>11.0}% {:>14.0} {:>14.0}",
                r.label,
                r.clients,
                round,
                r.ops_per_sec,
                r.p50_ms,
                r.p99_ms,
                100.0 * r.ops_per_sec / base,
                machine,
                process
            )?;
        }
        for &clients in &self.clients {
            // Each round's ratios; on a saturated machine the rates stand in the inverse ratio
            // of the machine's CPU per operation, which varies less from run to run than the
            // rates do.
            let (mut vs_raw, mut vs_before) = (Vec::new(), Vec::new());
            for round in 1..=rounds {
                let (Some((http, h)), Some((raw, raw_cpu, before, after)), Some((held, _))) = (
                    find(HTTP, clients, round),
                    bracket(clients, round),
                    find(HELD, clients, round),
                ) else {
                    continue;
                };
                vs_raw.push(100.0 * http.ops_per_sec / raw);
                vs_before.push(100.0 * http.ops_per_sec / before);
                writeln!(
                    out,
                    "{clients:>2} connections, round {round}: HTTP contacts at {:.0}% of raw INSERT (the mean of \
                     {before:.0}/s before and {after:.0}/s after: {:.0}% and {:.0}% of each), {:.0}% of the held-connection \
                     INSERT; an HTTP contact costs the machine {:.0} µs of CPU, {:.2}x a raw INSERT's {:.0} µs",
                    100.0 * http.ops_per_sec / raw,
                    100.0 * http.ops_per_sec / before,
                    100.0 * http.ops_per_sec / after,
                    100.0 * http.ops_per_sec / held.ops_per_sec,
                    h.1,
                    h.1 / raw_cpu,
                    raw_cpu
                )?;
            }
            vs_raw.sort_by(f64::total_cmp);
            vs_before.sort_by(f64::total_cmp);
            if let (Some(low), Some(high)) = (vs_raw.first(), vs_raw.last()) {
                writeln!(
                    out,
                    "{clients:>2} connections: HTTP contacts at {:.0}% of raw INSERT (median of {} rounds; \
                     lowest {low:.0}%, highest {high:.0}%; target at 16 >= 60%); {:.0}% against the raw INSERT \
                     before each round alone (as measured until 2026-12-02)",
                    median(&vs_raw),
                    vs_raw.len(),
                    median(&vs_before)
                )?;
            }
        }
        for line in &lag {
            writeln!(out, "{line}")?;
        }
        raw_pool.close().await;
        served.stop().await?;
        Ok(())
    }
}

/// The contact requests the HTTP phase sends, made once: the clients only clone them, so that
/// the load generator costs the machine about what `wrk` (which the issue measured with) would,
/// and the CPU the run measures is the server's.
struct Requests {
    /// `/v1/cases/{id}/contacts` for each case.
    paths: Vec<hyper::Uri>,
    host: hyper::header::HeaderValue,
    authorization: hyper::header::HeaderValue,
    body: bytes::Bytes,
}

impl Requests {
    fn new(
        served: &Served,
        token: &str,
        cases: &[String],
        contact: &Value,
    ) -> Result<Self, BenchError> {
        let invalid = |e: &dyn std::fmt::Display| BenchError::Refused(e.to_string());
        Ok(Self {
            paths: cases
                .iter()
                .map(|id| {
                    format!("/v1/cases/{id}/contacts")
                        .parse()
                        .map_err(|e| invalid(&e))
                })
                .collect::<Result<_, _>>()?,
            host: served.addr.to_string().parse().map_err(|e| invalid(&e))?,
            authorization: format!("Bearer {token}").parse().map_err(|e| invalid(&e))?,
            body: bytes::Bytes::from(contact.to_string()),
        })
    }

    /// A POST of the contact to the `case`th case.
    fn contact(&self, case: usize) -> hyper::Request<Full<bytes::Bytes>> {
        let mut request = hyper::Request::new(Full::new(self.body.clone()));
        *request.method_mut() = hyper::Method::POST;
        *request.uri_mut() = self.paths[case].clone();
        let headers = request.headers_mut();
        headers.insert(hyper::header::HOST, self.host.clone());
        headers.insert(hyper::header::AUTHORIZATION, self.authorization.clone());
        headers.insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        request
    }
}

/// One keep-alive HTTP/1.1 connection to the server, driven by hyper's connection-level client
/// (no pool, no URL parsing per request), as `wrk` holds one connection per client.
async fn connect(
    addr: std::net::SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>>, BenchError> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(refused)?;
    // Ends when `send` is dropped, at the end of the phase.
    tokio::spawn(connection);
    Ok(send)
}

/// The pooled raw INSERT at `clients` connections for `seconds`, each client on a stream of its
/// own named after `streams`.
async fn raw_inserts(
    pool: &sqlx::PgPool,
    clients: usize,
    seconds: u64,
    streams: String,
    contact: &Value,
) -> Result<(f64, hdrhistogram::Histogram<u64>, CpuSpan), BenchError> {
    let (pool, payload) = (pool.clone(), json!({"ContactLogged": contact}));
    run_clients_costed(clients, seconds, move |c, n| {
        let (pool, payload) = (pool.clone(), payload.clone());
        let stream = format!("{streams}-{c}");
        async move {
            sqlx::query(RAW_INSERT)
                .bind(stream)
                .bind(n as i64 + 1)
                .bind(payload)
                .execute(&pool)
                .await?;
            Ok(())
        }
    })
    .await
}

fn refused(e: impl std::fmt::Display) -> BenchError {
    BenchError::Refused(e.to_string())
}

/// The middle of sorted `values` (the mean of the two middle ones when their number is even).
fn median(values: &[f64]) -> f64 {
    let n = values.len();
    match n % 2 {
        1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Each projection's name and how many events lie beyond its checkpoint.
async fn backlog(store: &services::store::Store) -> Result<Vec<(&'static str, i64)>, BenchError> {
    let status = services::projector::status(store)
        .await
        .map_err(|e| BenchError::Refused(e.to_string()))?;
    Ok(status.into_iter().map(|s| (s.name, s.lag)).collect())
}
