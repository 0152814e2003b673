//! A service of your own that follows Linkage's referral events: a durable JetStream pull
//! consumer with explicit acks, decoding each message into the public types of `schemas::public`.
//!
//! ```sh
//! cargo run -p linkage-services --example referral_consumer -- nats://127.0.0.1:4222
//! ```
//!
//! What to rely on (README, "Events on the bus"):
//! - one stream, `LINKAGE_EVENTS`; subjects `linkage.v1.<agency>.<entity>.<event_type>`, so
//!   `linkage.v1.*.referral.>` is every referral event of every agency;
//! - every message is one `PublicMessage`: its `event_id` is unique (redeliveries repeat it),
//!   `case_sequence` orders a case's events, `event_type`/`event_version` name the shape, whose
//!   JSON Schema is `schemas/public/v1/<event_type>.json` (version 1) or
//!   `<event_type>.v<N>.json`; messages of a retired version (version 1 of the referral statuses
//!   that carried free text, published before 2026-11-30) read as `schemas::public::v1`;
//! - delivery is at least once: ack after your own write commits, and ignore an `event_id` you
//!   have already applied.

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use schemas::public::{PublicEvent, PublicMessage};

#[tokio::main]
async fn main() -> Result<(), async_nats::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client);
    let stream = js.get_stream("LINKAGE_EVENTS").await?;
    // Durable: the server remembers what this consumer acked, across restarts of this program.
    let consumer = stream
        .get_or_create_consumer(
            "referral-example",
            consumer::pull::Config {
                durable_name: Some("referral-example".into()),
                filter_subject: "linkage.v1.*.referral.>".into(),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let event: PublicMessage = match serde_json::from_slice(&message.payload) {
            Ok(event) => event,
            // A retired version the stream still holds: this example has no use for it.
            Err(e) => {
                tracing_line(&format!("skipped a message of a retired shape: {e}"));
                message.ack().await?;
                continue;
            }
        };
        match &event.event {
            PublicEvent::ReferralSent(sent) => tracing_line(&format!(
                "case {} referred to {} for {} (do not contact: {})",
                event.envelope.case_id,
                sent.provider_id,
                sent.service_type,
                sent.do_not_contact_subject
            )),
            PublicEvent::ReferralCompleted(done) => tracing_line(&format!(
                "referral {} closed: {}",
                done.referral_id, done.outcome
            )),
            other => tracing_line(&format!(
                "case {} {}",
                event.envelope.case_id,
                other.event_type()
            )),
        }
        // Ack only after the event is handled: an unacked message is delivered again.
        message.ack().await?;
    }
    Ok(())
}

/// Where a real service would update its own records.
fn tracing_line(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}
