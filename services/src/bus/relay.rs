//! The transactional relay: committed events -> JetStream, exactly once in effect, in log order.
//!
//! Each step reads the next batch after the relay's durable checkpoint, sends every message of
//! the batch before awaiting the first ack (pipelined), waits for all the acks, then moves the
//! checkpoint. Three guards make "nothing lost, nothing twice, in order" hold across crashes and
//! broker outages:
//!
//! 1. Every message carries `Nats-Msg-Id` = the event id: within the stream's duplicate window
//!    JetStream stores a re-published event once.
//! 2. Every message carries `Nats-Expected-Last-Sequence` = the stream sequence its predecessor
//!    got. If one message of a pipelined batch is lost (a broker restart), every later one is
//!    refused instead of being stored out of order; nothing can overtake a lost event.
//! 3. At start and after any failure the relay re-synchronises: it reads the stream's last
//!    message; when that event lies past the checkpoint (published, then a crash before the
//!    checkpoint moved), the checkpoint moves to it, so the relay resumes right after the last
//!    event the stream holds instead of re-publishing.
//!
//! Only one relay publishes at a time (a PostgreSQL advisory lock); others wait on standby.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage, stream};
use chrono::{DateTime, Utc};
use schemas::EventId;
use serde::Serialize;
use tokio::sync::watch;

use super::{BusConfig, BusError, PublicReader};
use crate::error::StoreError;
use crate::store::{LogPosition, Store, Work};

/// The relay's checkpoint name (a row of `projection_checkpoints`).
pub const RELAY: &str = "nats_relay";

/// What the relay is doing, for `/readyz` and `linkage relay status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayPhase {
    /// Connecting to NATS or setting up the stream.
    Starting,
    /// Connected; publishing or caught up.
    Publishing,
    /// NATS does not answer; events wait in the log.
    Disconnected,
    /// Another process holds the relay lease.
    Standby,
    /// An event could not be read; the relay stopped there (see `last_error`).
    Failed,
    /// Shut down.
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
pub struct RelayState {
    pub phase: RelayPhase,
    pub stream: String,
    /// Messages JetStream acknowledged since this process started.
    pub published: u64,
    pub last_ack_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// Shared view of the relay's state.
pub type RelayHandle = Arc<Mutex<RelayState>>;

pub fn handle(config: &BusConfig) -> RelayHandle {
    Arc::new(Mutex::new(RelayState {
        phase: RelayPhase::Starting,
        stream: config.stream.clone(),
        published: 0,
        last_ack_at: None,
        last_error: None,
    }))
}

fn set(handle: &RelayHandle, f: impl FnOnce(&mut RelayState)) {
    if let Ok(mut s) = handle.lock() {
        f(&mut s);
    }
}

/// What one pipelined batch did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Published {
    /// Log events examined (public or not).
    pub events: u64,
    /// Messages JetStream stored (or recognised as already stored).
    pub messages: u64,
    /// The last log position covered; `None` when there was nothing to do.
    pub through: Option<LogPosition>,
}

pub struct Relay {
    store: Arc<Store>,
    js: jetstream::Context,
    config: BusConfig,
    reader: PublicReader,
    /// The stream's last sequence as this relay knows it; `None` until re-synchronised.
    last_seq: Option<u64>,
    on_ack: Option<AckHook>,
    /// The batch after a log position, read while the previous batch's acks were awaited.
    ahead: Option<(LogPosition, Vec<super::Outgoing>)>,
}

/// Called with every message JetStream acknowledged (benchmarks measure commit-to-ack with it).
pub type AckHook = Arc<dyn Fn(&schemas::public::PublicMessage) + Send + Sync>;

/// Connects to NATS with reconnection that keeps trying (fast at first), named for the server's
/// connection list.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, BusError> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(3))
        .reconnect_delay_callback(|attempt| Duration::from_millis((100 * attempt as u64).min(1000)))
        .connect(url)
        .await
        .map_err(|e| BusError::Connect {
            url: crate::config::redact_url(url),
            detail: e.to_string(),
        })
}

/// The stream as the definition says it should be.
pub fn stream_config(config: &BusConfig) -> stream::Config {
    stream::Config {
        name: config.stream.clone(),
        description: Some(
            "Linkage public events (schemas/public); subjects <prefix>.v1.<agency>.<entity>.<event_type>"
                .into(),
        ),
        subjects: vec![config.stream_subjects()],
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        storage: match config.storage {
            super::config::StorageKind::File => stream::StorageType::File,
            super::config::StorageKind::Memory => stream::StorageType::Memory,
        },
        num_replicas: config.replicas,
        duplicate_window: Duration::from_secs(config.duplicate_window_secs),
        max_age: Duration::from_secs(config.max_age_days * 86_400),
        allow_direct: true,
        deny_delete: true,
        ..Default::default()
    }
}

/// Creates the stream from the definition, or brings an existing one back to it.
pub async fn ensure_stream(js: &jetstream::Context, config: &BusConfig) -> Result<(), BusError> {
    let want = stream_config(config);
    let fail = |detail: String| BusError::Stream {
        stream: config.stream.clone(),
        detail,
    };
    match js.get_stream(&config.stream).await {
        Ok(mut existing) => {
            let have = existing
                .info()
                .await
                .map_err(|e| fail(e.to_string()))?
                .config
                .clone();
            let same = have.subjects == want.subjects
                && have.retention == want.retention
                && have.storage == want.storage
                && have.num_replicas == want.num_replicas
                && have.duplicate_window == want.duplicate_window
                && have.max_age == want.max_age
                && have.discard == want.discard
                && have.deny_delete == want.deny_delete;
            if !same {
                js.update_stream(&want)
                    .await
                    .map_err(|e| fail(format!("it differs from the definition and {e}")))?;
                tracing::info!(stream = %config.stream, "brought the stream back to its definition");
            }
            Ok(())
        }
        Err(e) => {
            let not_found = matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            );
            if !not_found {
                return Err(fail(e.to_string()));
            }
            js.create_stream(want)
                .await
                .map_err(|e| fail(e.to_string()))?;
            tracing::info!(stream = %config.stream, "created the stream");
            Ok(())
        }
    }
}

impl Relay {
    /// Connects, sets up the stream, and is ready to publish from the durable checkpoint.
    pub async fn connect(
        store: Arc<Store>,
        url: &str,
        config: BusConfig,
    ) -> Result<Self, BusError> {
        config.validate().map_err(BusError::Config)?;
        let client = connect(url, "linkage-relay").await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(config.ack_timeout_ms))
            .max_ack_inflight(config.batch as usize * 2)
            .backpressure_on_inflight(true)
            .build(client);
        ensure_stream(&js, &config).await?;
        Ok(Self {
            store,
            js,
            reader: PublicReader::new(&config.subject_prefix, Work::Relay),
            config,
            last_seq: None,
            on_ack: None,
            ahead: None,
        })
    }

    /// Calls `hook` with every acked message.
    pub fn on_ack(&mut self, hook: AckHook) {
        self.on_ack = Some(hook);
    }

    /// Re-synchronises with the stream (see the module comment, point 3).
    pub async fn resync(&mut self) -> Result<(), BusError> {
        let publish_err = |e: String| BusError::Publish(e);
        let mut stream = self
            .js
            .get_stream(&self.config.stream)
            .await
            .map_err(|e| publish_err(e.to_string()))?;
        let last = stream
            .info()
            .await
            .map_err(|e| publish_err(e.to_string()))?
            .state
            .last_sequence;
        if last > 0 {
            // The last message may have aged out; then the duplicate window covers re-publishes.
            if let Ok(message) = stream.get_raw_message(last).await {
                let id = message
                    .headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .and_then(|v| EventId::parse(v.as_str()).ok());
                if let Some(id) = id {
                    self.skip_through(id).await?;
                }
            }
        }
        self.last_seq = Some(last);
        Ok(())
    }

    /// Moves the checkpoint to event `id` when it lies past it: the stream already has it and,
    /// the stream being in log order, everything before it.
    async fn skip_through(&self, id: EventId) -> Result<(), BusError> {
        let Some(at) = self.store.log_position_of(id).await? else {
            return Ok(());
        };
        let checkpoint = self.store.checkpoint(Work::Relay, RELAY).await?;
        if at > checkpoint.at {
            let n =
                self.store.events_after(checkpoint.at).await? - self.store.events_after(at).await?;
            self.store
                .advance_relay_checkpoint(RELAY, at, n.max(0) as u64)
                .await?;
            tracing::info!(event_id = %id, skipped = n, "the stream already had events past the checkpoint; resuming after them");
        }
        Ok(())
    }

    /// Publishes the next batch after the checkpoint and waits for every ack, without moving the
    /// checkpoint (`step` does both).
    pub async fn publish_next(&mut self) -> Result<Published, BusError> {
        if self.last_seq.is_none() {
            self.resync().await?;
        }
        let checkpoint = self.store.checkpoint(Work::Relay, RELAY).await?;
        if let Some(error) = checkpoint.error {
            return Err(BusError::Store(StoreError::Corrupt(error)));
        }
        let batch = match self.ahead.take() {
            Some((after, batch)) if after == checkpoint.at => batch,
            _ => {
                self.reader
                    .read(&self.store, checkpoint.at, self.config.batch)
                    .await?
            }
        };
        let Some(last) = batch.last() else {
            return Ok(Published::default());
        };
        let through = last.at;
        let base = self.last_seq.unwrap_or_default();
        let mut expected = base;
        let mut pending = Vec::with_capacity(batch.len());
        for item in &batch {
            let Some(rendered) = &item.message else {
                continue;
            };
            let publish = PublishMessage::build()
                .payload(rendered.bytes.clone())
                .message_id(rendered.message.envelope.event_id.to_string())
                .expected_last_sequence(expected);
            let ack = self
                .js
                .send_publish(rendered.subject.clone(), publish)
                .await
                .map_err(|e| self.failed(e.to_string()))?;
            pending.push((rendered, ack));
            expected += 1;
        }
        let messages = pending.len() as u64;
        // Await the acks and, meanwhile, read and render the next batch.
        let (results, next) = tokio::join!(
            acks_until_first_failure(pending),
            self.reader.read(&self.store, through, self.config.batch)
        );
        if let Ok(next) = next {
            if !next.is_empty() {
                self.ahead = Some((through, next));
            }
        }
        for (rendered, ack) in results {
            match ack {
                Ok(ack) if !ack.duplicate => {
                    if let Some(f) = &self.on_ack {
                        f(&rendered.message);
                    }
                }
                Ok(_) => {
                    // Stored before (e.g. by a relay that lost its lease mid-batch); the
                    // sequence chain no longer holds, so re-synchronise before the next batch.
                    self.last_seq = None;
                }
                Err(e) => {
                    let why = match e.kind() {
                        PublishErrorKind::WrongLastSequence => {
                            "the stream moved on without this relay (a message before it was not stored)".to_owned()
                        }
                        _ => e.to_string(),
                    };
                    return Err(self.failed(why));
                }
            }
        }
        if self.last_seq.is_some() {
            self.last_seq = Some(expected);
        }
        Ok(Published {
            events: batch.len() as u64,
            messages,
            through: Some(through),
        })
    }

    fn failed(&mut self, why: String) -> BusError {
        self.last_seq = None;
        self.ahead = None;
        BusError::Publish(why)
    }

    /// One batch: publish, await the acks, move the checkpoint.
    pub async fn step(&mut self) -> Result<Published, BusError> {
        let published = self.publish_next().await?;
        if let Some(at) = published.through {
            self.store
                .advance_relay_checkpoint(RELAY, at, published.events)
                .await?;
        }
        Ok(published)
    }

    /// Steps until the checkpoint has caught up with the log.
    pub async fn catch_up(&mut self, mut progress: impl FnMut(u64)) -> Result<u64, BusError> {
        let mut total = 0;
        loop {
            let p = self.step().await?;
            if p.through.is_none() {
                return Ok(total);
            }
            total += p.events;
            progress(total);
        }
    }
}

/// Each message's ack, awaited in order, up to and including the first that failed: the batch
/// fails there, so the acks after it are not awaited. Each would wait out its own ack timeout in
/// turn, and a broker that went away under a batch of a thousand messages kept the relay
/// "publishing" for a thousand timeouts instead of reporting the outage after one.
async fn acks_until_first_failure<M, A, T, E>(pending: Vec<(M, A)>) -> Vec<(M, Result<T, E>)>
where
    A: std::future::IntoFuture<Output = Result<T, E>>,
{
    let mut results = Vec::with_capacity(pending.len());
    for (message, ack) in pending {
        let ack = ack.await;
        let failed = ack.is_err();
        results.push((message, ack));
        if failed {
            break;
        }
    }
    results
}

/// Runs the relay until `stop` turns true: holds the lease, (re)connects, publishes, and records
/// what it is doing in `status`. NATS being down is not an error to give up on: events wait in
/// the log and the relay keeps trying.
pub async fn run(
    store: Arc<Store>,
    url: String,
    config: BusConfig,
    idle: Duration,
    status: RelayHandle,
    stop: watch::Receiver<bool>,
) {
    run_observed(store, url, config, idle, status, stop, None).await;
}

/// `run`, calling `on_ack` with every acknowledged message.
pub async fn run_observed(
    store: Arc<Store>,
    url: String,
    config: BusConfig,
    idle: Duration,
    status: RelayHandle,
    mut stop: watch::Receiver<bool>,
    on_ack: Option<AckHook>,
) {
    let retry = Duration::from_millis(config.retry_ms);
    let stopped = |stop: &watch::Receiver<bool>| *stop.borrow();
    'outer: while !stopped(&stop) {
        let mut lease = match store.try_relay_lease().await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                set(&status, |s| s.phase = RelayPhase::Standby);
                if wait(&mut stop, retry).await {
                    break;
                }
                continue;
            }
            Err(e) => {
                set(&status, |s| s.last_error = Some(e.to_string()));
                if wait(&mut stop, retry).await {
                    break;
                }
                continue;
            }
        };
        let mut relay = match Relay::connect(store.clone(), &url, config.clone()).await {
            Ok(mut relay) => {
                if let Some(hook) = &on_ack {
                    relay.on_ack(hook.clone());
                }
                relay
            }
            Err(e) => {
                tracing::warn!(error = %e, "event bus unreachable; events wait in the log");
                set(&status, |s| {
                    s.phase = RelayPhase::Disconnected;
                    s.last_error = Some(e.to_string());
                });
                if wait(&mut stop, retry).await {
                    break;
                }
                continue;
            }
        };
        tracing::info!(stream = %config.stream, "relay publishing to the event bus");
        let mut commits = store.log_moved();
        loop {
            if stopped(&stop) {
                break 'outer;
            }
            match relay.step().await {
                Ok(p) if p.through.is_some() => {
                    set(&status, |s| {
                        s.phase = RelayPhase::Publishing;
                        s.published += p.messages;
                        if p.messages > 0 {
                            s.last_ack_at = Some(Utc::now());
                        }
                        s.last_error = None;
                    });
                }
                Ok(_) => {
                    set(&status, |s| {
                        s.phase = RelayPhase::Publishing;
                        s.last_error = None;
                    });
                    tokio::select! {
                        _ = stop.changed() => {}
                        _ = commits.changed() => {}
                        () = tokio::time::sleep(idle) => {}
                    }
                    if !lease.alive().await {
                        tracing::warn!("lost the relay lease; trying to take it again");
                        continue 'outer;
                    }
                }
                Err(BusError::Store(StoreError::Corrupt(e))) => {
                    tracing::error!(error = %e, "relay stopped: an event cannot be read");
                    let _ = store.mark_projection_failed(RELAY, &e).await;
                    set(&status, |s| {
                        s.phase = RelayPhase::Failed;
                        s.last_error = Some(e);
                    });
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "relay could not publish; retrying from the checkpoint");
                    set(&status, |s| {
                        s.phase = RelayPhase::Disconnected;
                        s.last_error = Some(e.to_string());
                    });
                    if wait(&mut stop, retry).await {
                        break 'outer;
                    }
                }
            }
        }
    }
    set(&status, |s| s.phase = RelayPhase::Stopped);
}

/// Sleeps `d` unless `stop` turns true first; returns whether it did.
async fn wait(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = stop.changed() => {}
        () = tokio::time::sleep(d) => {}
    }
    *stop.borrow()
}

/// The relay's durable position and backlog (events it has not published yet), for `linkage
/// relay status` and /readyz: the same status a projection reports.
pub async fn checkpoint(store: &Store) -> Result<crate::projector::FollowerStatus, StoreError> {
    let mut status = crate::projector::FollowerStatus::of(store, RELAY).await?;
    status.running_in = store.relay_runner().await?;
    Ok(status)
}

/// What the stream holds, for `linkage relay status`.
#[derive(Debug, Clone, Serialize)]
pub struct StreamState {
    pub name: String,
    pub messages: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub consumers: usize,
}

pub async fn stream_state(url: &str, config: &BusConfig) -> Result<StreamState, BusError> {
    let client = connect(url, "linkage-relay-status").await?;
    let js = jetstream::new(client);
    let fail = |detail: String| BusError::Stream {
        stream: config.stream.clone(),
        detail,
    };
    let mut stream = js
        .get_stream(&config.stream)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let info = stream.info().await.map_err(|e| fail(e.to_string()))?;
    Ok(StreamState {
        name: info.config.name.clone(),
        messages: info.state.messages,
        first_sequence: info.state.first_sequence,
        last_sequence: info.state.last_sequence,
        consumers: info.state.consumer_count,
    })
}

#[cfg(test)]
mod tests {
    use std::future::{pending, ready, Future};
    use std::pin::Pin;

    use futures::FutureExt;

    use super::acks_until_first_failure;

    type Ack = Pin<Box<dyn Future<Output = Result<u64, &'static str>> + Send>>;

    /// After a failed ack the later ones are never awaited: here one never completes, and the
    /// batch's outcome is still ready at once.
    #[test]
    fn the_first_failed_ack_ends_the_batch_without_awaiting_the_rest() {
        let acks: Vec<(&str, Ack)> = vec![
            ("m1", Box::pin(ready(Ok(1)))),
            ("m2", Box::pin(ready(Err("broker gone")))),
            ("m3", Box::pin(pending())),
        ];
        let results = acks_until_first_failure(acks)
            .now_or_never()
            .expect("nothing after the failed ack is awaited");
        assert_eq!(results, vec![("m1", Ok(1)), ("m2", Err("broker gone"))]);
    }

    #[test]
    fn every_ack_is_awaited_when_none_fails() {
        let acks: Vec<(&str, Ack)> = vec![
            ("m1", Box::pin(ready(Ok(1)))),
            ("m2", Box::pin(ready(Ok(2)))),
        ];
        let results = acks_until_first_failure(acks).now_or_never().unwrap();
        assert_eq!(results, vec![("m1", Ok(1)), ("m2", Ok(2))]);
    }
}
