//! A subscriber of the public events: a durable pull consumer with explicit acks. Each message is
//! handed to the caller and acked only after the caller returns, so a subscriber that dies
//! mid-way gets the unacked messages again (at least once; `event_id` tells a redelivery apart).
//! `linkage subscribe` prints them; `services/examples/referral_consumer.rs` shows the same in a
//! few lines of async-nats for a service of your own.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use serde::Serialize;

use super::{BusConfig, BusError};

#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    pub url: String,
    pub config: BusConfig,
    /// A subject filter (wildcards allowed); all public events when `None`.
    pub subject: Option<String>,
    /// The durable consumer's name: it remembers what was acked across runs.
    pub durable: String,
    /// Start from the oldest event the stream holds (recreating the consumer); otherwise resume
    /// where this durable left off, or start with new events if it is new.
    pub from_start: bool,
    /// Stop after this many events.
    pub count: Option<u64>,
}

/// One delivered event.
#[derive(Debug, Clone, Serialize)]
pub struct Delivered {
    pub subject: String,
    pub stream_sequence: u64,
    /// The public message (schemas/public), as JSON.
    pub event: serde_json::Value,
}

/// Delivers events to `on_event` until `count` is reached or `stop` resolves; returns how many.
pub async fn subscribe(
    options: &SubscribeOptions,
    mut on_event: impl FnMut(&Delivered) -> std::io::Result<()>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<u64, BusError> {
    let fail = |e: String| BusError::Subscribe(e);
    let client = super::relay::connect(&options.url, "linkage-subscribe").await?;
    let js = jetstream::new(client);
    let stream = js
        .get_stream(&options.config.stream)
        .await
        .map_err(|e| fail(format!("stream {}: {e}", options.config.stream)))?;
    let filter = options
        .subject
        .clone()
        .unwrap_or_else(|| options.config.stream_subjects());
    let want = consumer::pull::Config {
        durable_name: Some(options.durable.clone()),
        description: Some("linkage subscribe".into()),
        deliver_policy: if options.from_start {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::New
        },
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        filter_subject: filter.clone(),
        ..Default::default()
    };
    let existing = stream
        .get_consumer::<consumer::pull::Config>(&options.durable)
        .await;
    let consumer = match existing {
        Ok(mut c) if !options.from_start => {
            let same_filter = c
                .info()
                .await
                .map(|i| i.config.filter_subject == filter)
                .unwrap_or(false);
            if same_filter {
                c
            } else {
                recreate(&stream, &options.durable, want).await?
            }
        }
        _ => recreate(&stream, &options.durable, want).await?,
    };
    let mut delivered = 0u64;
    tokio::pin!(stop);
    'fetching: loop {
        // Fetch no more than is still wanted: messages fetched and not acked would sit with this
        // consumer until their ack wait ran out before anyone got them again.
        let want = options
            .count
            .map_or(256, |n| n.saturating_sub(delivered).min(256));
        if want == 0 {
            break;
        }
        let mut batch = consumer
            .batch()
            .max_messages(want as usize)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| fail(e.to_string()))?;
        loop {
            let next = tokio::select! {
                () = &mut stop => break 'fetching,
                next = batch.next() => next,
            };
            let Some(message) = next else { break };
            let message = message.map_err(|e| fail(e.to_string()))?;
            let stream_sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
            let event = serde_json::from_slice(&message.payload).map_err(|e| {
                fail(format!(
                    "message {stream_sequence} on {} is not JSON: {e}",
                    message.subject
                ))
            })?;
            let d = Delivered {
                subject: message.subject.to_string(),
                stream_sequence,
                event,
            };
            on_event(&d).map_err(|e| fail(format!("cannot write the event out: {e}")))?;
            // Acked only once handled, and confirmed by the server, so an exit right after
            // cannot lose the ack.
            message
                .double_ack()
                .await
                .map_err(|e| fail(e.to_string()))?;
            delivered += 1;
        }
    }
    Ok(delivered)
}

async fn recreate(
    stream: &jetstream::stream::Stream,
    name: &str,
    config: consumer::pull::Config,
) -> Result<consumer::PullConsumer, BusError> {
    let _ = stream.delete_consumer(name).await;
    stream
        .create_consumer(config)
        .await
        .map_err(|e| BusError::Subscribe(format!("consumer {name}: {e}")))
}
