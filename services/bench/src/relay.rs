//! `linkage-bench relay`: the relay's catch-up over a large log, beside a plain async-nats publish
//! loop with the same pipelining (same batch, same message sizes and subjects, a Nats-Msg-Id on
//! every message) to an identically configured stream, in the same run on the same server; then
//! commit-to-ack latency while commands arrive at a fixed rate.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aggregates::{CaseAction, CaseServices};
use async_nats::jetstream::{self, message::PublishMessage};
use chrono::{Duration as Days, Utc};
use hdrhistogram::Histogram;
use schemas::wire::*;
use schemas::*;
use uuid::Uuid;

use super::{
    bench_err, bench_state, case_services, command_capacity, commands_at_rate, fresh_cases,
    memory_mib, open_case, seed_cases, write_starvations, BenchError, Scratch,
};

use services::bus::relay::{self, Relay};
use services::bus::{BusConfig, PublicReader};
use services::store::{LogPosition, Store, Work};

#[derive(Debug, Clone, clap::Args)]
pub struct RelayBench {
    /// PostgreSQL URL of a role that may create databases (a scratch one is made and dropped)
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// NATS URL (streams named BENCH_* are made and deleted)
    #[arg(long, env = "NATS_URL")]
    pub nats_url: String,
    /// Events in the synthetic log (10 per case, 9 of them public)
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Messages per pipelined batch, for the relay and the baseline alike
    #[arg(long, default_value_t = services::bus::BusConfig::default().batch)]
    pub batch: u32,
    /// Commands per second while latency is measured, beside the fraction of capacity below
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Seconds of latency measurement, per rate
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// Seconds of the command-capacity measurement before the latency measurements
    #[arg(long, default_value_t = 3)]
    pub capacity_seconds: u64,
    /// The fraction of the measured command capacity that commands arrive at while latency is
    /// measured (beside `rate`)
    #[arg(long, default_value_t = 0.5)]
    pub fraction: f64,
}

/// A referral loop: intake (2 events), referral sent and accepted, an appointment scheduled,
/// missed, rescheduled and kept, the referral completed, a step-down: 10 events, 9 public.
fn referral_loop(id: CaseId) -> Vec<CaseAction> {
    let today = Utc::now().date_naive();
    let referral_id = ReferralId::generate();
    let appointment_id = AppointmentId::generate();
    let outcome =
        |outcome, on, missed_reason, rescheduled_for| CaseAction::RecordAppointmentOutcome {
            appointment_id,
            request: AppointmentOutcomeRequest {
                outcome,
                on,
                missed_reason,
                rescheduled_for,
            },
        };
    vec![
        open_case(id, today - Days::days(60)),
        CaseAction::SendReferral {
            referral_id,
            request: referral(today - Days::days(50)),
        },
        CaseAction::UpdateReferralStatus {
            referral_id,
            request: ReferralStatusRequest {
                status: ReferralStatusUpdate::Accepted,
                on: today - Days::days(48),
                reason: None,
                outcome: None,
                reason_code: None,
                reported_by: Some(by_phone()),
            },
        },
        CaseAction::ScheduleAppointment {
            appointment_id,
            request: ScheduleAppointmentRequest {
                on: Some(today - Days::days(47)),
                referral_id,
                scheduled_for: Utc::now() - Days::days(45),
            },
        },
        outcome(
            AppointmentOutcomeKind::Missed,
            today - Days::days(45),
            Some(MissedReason::NoShow),
            None,
        ),
        outcome(
            AppointmentOutcomeKind::Rescheduled,
            today - Days::days(44),
            None,
            Some(Utc::now() - Days::days(40)),
        ),
        outcome(
            AppointmentOutcomeKind::Kept,
            today - Days::days(40),
            None,
            None,
        ),
        CaseAction::UpdateReferralStatus {
            referral_id,
            request: ReferralStatusRequest {
                status: ReferralStatusUpdate::Completed,
                on: today - Days::days(10),
                reason: None,
                outcome: Some(ReferralOutcome::Connected),
                reason_code: None,
                reported_by: Some(by_phone()),
            },
        },
        CaseAction::TransitionCase(TransitionRequest {
            kind: TransitionKind::StepDown,
            reason: Text::parse("plan goals met").expect("static"),
            effective_on: today - Days::days(5),
            open_referrals: None,
        }),
    ]
}

/// The bench's staff record the provider's statuses as heard by phone.
fn by_phone() -> ReportedBy {
    ReportedBy {
        provider_id: ProviderId::parse("prov-bench").expect("static"),
        channel: ReportChannel::Phone,
    }
}

fn referral(sent_on: chrono::NaiveDate) -> SendReferralRequest {
    SendReferralRequest {
        service_type: ServiceType::parse("outpatient_therapy").expect("static"),
        provider: ProviderIn {
            id: ProviderId::parse("prov-bench").expect("static"),
            name: None,
        },
        reason: Text::parse("synthetic benchmark referral").expect("static"),
        goal_ids: vec![],
        urgency: None,
        sent_on,
        do_not_contact_subject: false,
    }
}

impl RelayBench {
    pub async fn run(&self, out: &mut impl Write) -> Result<(), BenchError> {
        Scratch::with(&self.database_url, async |s| {
            self.run_on(&s.url, &s.version, out).await
        })
        .await
    }

    async fn run_on(
        &self,
        url: &str,
        version: &str,
        out: &mut impl Write,
    ) -> Result<(), BenchError> {
        let store = Arc::new(
            Store::postgres(
                url,
                services::config::Config::default().group_commit_writers,
            )
            .await?,
        );
        let services = case_services()?;
        let client = services::bus::relay::connect(&self.nats_url, "linkage-bench")
            .await
            .map_err(bench_err)?;
        let server = client.server_info();
        writeln!(
            out,
            "linkage-bench relay: PostgreSQL {version}, nats-server {}, {} CPUs, batch {}",
            server.version,
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            self.batch
        )?;

        // Seed: cases of 10 events, four writers at a time.
        let cases = (self.events as usize).div_ceil(10);
        let t0 = Instant::now();
        seed_cases(&store, &services, cases, referral_loop).await?;
        let total = store.events_after(LogPosition::START).await?;
        let pool = sqlx::PgPool::connect(url).await?;
        super::settle(&pool).await;
        pool.close().await;
        writeln!(
            out,
            "seeded {total} events in {cases} case streams in {:.1} s",
            t0.elapsed().as_secs_f64()
        )?;

        let run_id = Uuid::new_v4().simple().to_string()[..8].to_uppercase();
        let relay_config = BusConfig {
            stream: format!("BENCH_RELAY_{run_id}"),
            subject_prefix: format!("benchrelay{run_id}").to_lowercase(),
            batch: self.batch,
            ..BusConfig::default()
        };
        let base_config = BusConfig {
            stream: format!("BENCH_PLAIN_{run_id}"),
            subject_prefix: format!("benchplain{run_id}").to_lowercase(),
            ..relay_config.clone()
        };

        // Baseline: the same messages (sizes and subjects) published by a bare loop.
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(relay_config.ack_timeout_ms))
            .max_ack_inflight(self.batch as usize * 2)
            .backpressure_on_inflight(true)
            .build(client.clone());
        services::bus::relay::ensure_stream(&js, &base_config)
            .await
            .map_err(bench_err)?;
        // The log shows a commit only once no older transaction in the cluster is still open
        // (so that a follower never skips one): on a shared server, wait until the seeded
        // events are readable.
        let mut reader = PublicReader::new(&base_config.subject_prefix, Work::Api);
        let wanted = total.clamp(0, 10_000) as usize;
        let deadline = Instant::now() + Duration::from_secs(60);
        let samples: Vec<_> = loop {
            let read = reader.read(&store, LogPosition::START, 10_000).await?;
            if read.len() >= wanted || Instant::now() > deadline {
                break read.into_iter().filter_map(|o| o.message).collect();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if samples.is_empty() {
            return Err(bench_err(
                "the seeded events did not become readable within 60 s",
            ));
        }
        let public_total = cases as u64 * 9;
        let t0 = Instant::now();
        let mut sent = 0u64;
        while sent < public_total {
            let n = (public_total - sent).min(self.batch as u64);
            let mut acks = Vec::with_capacity(n as usize);
            for i in 0..n {
                let sample = &samples[((sent + i) % samples.len() as u64) as usize];
                let publish = PublishMessage::build()
                    .payload(sample.bytes.clone())
                    .message_id(Uuid::now_v7().to_string());
                acks.push(
                    js.send_publish(sample.subject.clone(), publish)
                        .await
                        .map_err(bench_err)?,
                );
            }
            for ack in acks {
                ack.await.map_err(bench_err)?;
            }
            sent += n;
        }
        let base_secs = t0.elapsed().as_secs_f64();
        let base_rate = sent as f64 / base_secs;

        // The relay, from an empty checkpoint, over the whole log.
        let mut relay = Relay::connect(store.clone(), &self.nats_url, relay_config.clone())
            .await
            .map_err(bench_err)?;
        let published = Arc::new(std::sync::atomic::AtomicU64::new(0));
        {
            let published = published.clone();
            relay.on_ack(Arc::new(move |_| {
                published.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }));
        }
        let rss_before = memory_mib("VmHWM:");
        let t0 = Instant::now();
        let examined = relay.catch_up(|_| {}).await.map_err(bench_err)?;
        let relay_secs = t0.elapsed().as_secs_f64();
        let messages = published.load(std::sync::atomic::Ordering::Relaxed);
        let relay_rate = messages as f64 / relay_secs;
        drop(relay);

        writeln!(out)?;
        writeln!(
            out,
            "{:<44} {:>10} {:>9} {:>12} {:>9}",
            "catch-up", "messages", "seconds", "messages/s", "vs plain"
        )?;
        writeln!(
            out,
            "{:<44} {:>10} {:>9.2} {:>12.0} {:>8.0}%",
            "plain async-nats pipelined publish (baseline)", sent, base_secs, base_rate, 100.0
        )?;
        writeln!(
            out,
            "{:<44} {:>10} {:>9.2} {:>12.0} {:>8.0}%",
            "linkage relay (log -> JetStream, checkpointed)",
            messages,
            relay_secs,
            relay_rate,
            100.0 * relay_rate / base_rate
        )?;
        writeln!(
            out,
            "  the relay read {examined} log events ({:.0}/s); peak resident memory {:.0} MiB before, {:.0} MiB after",
            examined as f64 / relay_secs,
            rss_before,
            memory_mib("VmHWM:")
        )?;
        writeln!(out, "target: relay catch-up >= 50% of the plain loop")?;

        self.latency(&store, &services, &relay_config, out).await?;
        for name in [&relay_config.stream, &base_config.stream] {
            let _ = js.delete_stream(name).await;
        }
        store.close().await;
        Ok(())
    }

    /// Commit-to-ack latency: each acked message's ack time minus its event's `recorded_at`
    /// (stamped by the database when the row is written, microseconds before the commit). First
    /// the machine's command capacity (16 clients in process, the relay idle); then referrals at
    /// `fraction` of it and at `rate`/s, each on fresh cases after the relay has caught up.
    async fn latency(
        &self,
        store: &Arc<Store>,
        services: &CaseServices,
        config: &BusConfig,
        out: &mut impl Write,
    ) -> Result<(), BenchError> {
        let state = bench_state(store, services)?;
        let send_referral = |_| CaseAction::SendReferral {
            referral_id: ReferralId::generate(),
            request: referral(Utc::now().date_naive()),
        };
        let capacity = command_capacity(
            &state,
            services,
            self.capacity_seconds,
            "referrals",
            send_referral,
        )
        .await?;
        writeln!(out)?;
        writeln!(
            out,
            "command capacity: {capacity:.0} referrals/s (16 clients in process, {} s, relay idle)",
            self.capacity_seconds
        )?;
        writeln!(
            out,
            "commit-to-ack latency, every message acked (target p99 < 100 ms at {:.0}% of capacity)",
            self.fraction * 100.0
        )?;
        writeln!(
            out,
            "{:>8} {:>10} {:>9} {:>9} {:>7} {:>7} {:>8}",
            "asked/s", "achieved/s", "achieved", "messages", "p50 ms", "p99 ms", "max ms"
        )?;
        let starved_before = services::telemetry::pool_starvations();
        let asked = [
            ((capacity * self.fraction).round() as u64).max(1),
            self.rate,
        ];
        for rate in asked {
            let targets = fresh_cases(store, services).await?;
            // Start from a caught-up log: the capacity run and the last rate left messages.
            Relay::connect(store.clone(), &self.nats_url, config.clone())
                .await
                .map_err(bench_err)?
                .catch_up(|_| {})
                .await
                .map_err(bench_err)?;
            let hist = Arc::new(Mutex::new(
                Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(bench_err)?,
            ));
            let hook: relay::AckHook = {
                let hist = hist.clone();
                Arc::new(move |m| {
                    let micros = (Utc::now() - m.envelope.recorded_at)
                        .num_microseconds()
                        .unwrap_or(0)
                        .max(1) as u64;
                    if let Ok(mut h) = hist.lock() {
                        let _ = h.record(micros);
                    }
                })
            };
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let runner = tokio::spawn(relay::run_observed(
                store.clone(),
                self.nats_url.clone(),
                config.clone(),
                Duration::from_millis(50),
                relay::handle(config),
                stop_rx,
                Some(hook),
            ));
            // Let the relay connect and find the fresh cases' events before the clock starts.
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Ok(mut h) = hist.lock() {
                h.reset();
            }
            let achieved = commands_at_rate(
                &state,
                &targets,
                rate,
                self.latency_seconds,
                "referrals",
                send_referral,
            )
            .await;
            // Until every event committed has been published and acked.
            let deadline = Instant::now() + Duration::from_secs(600);
            while relay::checkpoint(store).await?.lag > 0 {
                if Instant::now() > deadline {
                    return Err(BenchError::Refused("the relay did not catch up".into()));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = stop_tx.send(true);
            let _ = runner.await;
            let h = hist.lock().map_err(bench_err)?.clone();
            writeln!(
                out,
                "{rate:>8} {achieved:>10.0} {:>8.1}% {:>9} {:>7.1} {:>7.1} {:>8.1}",
                100.0 * achieved / rate as f64,
                h.len(),
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
                h.max() as f64 / 1000.0,
            )?;
        }
        write_starvations(out, starved_before)?;
        Ok(())
    }
}
