//! The event bus: public events (schemas::public) from the durable log to NATS JetStream through a
//! transactional relay, and to local subscribers (`GET /v1/events/stream`) in any mode.
//!
//! Nothing here publishes from a command handler: a command commits to the event store and
//! returns; the relay follows the log (the same gap-free order as the projections) and publishes
//! what is committed. Events wait in the log while NATS is down.

pub mod config;
pub mod relay;
pub mod subscribe;

use std::collections::HashSet;
use std::num::NonZeroUsize;

use aggregates::CaseEvent;
use bytes::Bytes;
use lru::LruCache;
use projections::public::{subject, to_public, StoredFacts};
use schemas::public::PublicMessage;
use schemas::{AgencyId, CaseId};

pub use config::BusConfig;

use crate::error::StoreError;
use crate::store::{LogEvent, LogPosition, Store, Work};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot reach NATS at {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("the stream {stream} cannot be set up: {detail}")]
    Stream { stream: String, detail: String },
    #[error("publishing failed: {0}")]
    Publish(String),
    #[error("subscribing failed: {0}")]
    Subscribe(String),
    #[error("the bus configuration is invalid: {0}")]
    Config(String),
}

/// One event of the log on its way out: where it is, and its public message if it has one.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub at: LogPosition,
    pub message: Option<Rendered>,
}

/// A public message ready to send: its subject, the message and its JSON bytes.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub subject: String,
    pub message: PublicMessage,
    pub bytes: Bytes,
}

/// Turns log events into public messages. Remembers the agency of recent cases (subjects need
/// it; most events do not carry it), asking the store once per batch for the ones it lacks.
pub struct PublicReader {
    prefix: String,
    agencies: LruCache<CaseId, AgencyId>,
    /// Whose connections it reads through: the relay's, or the API's for local subscribers.
    work: Work,
}

impl PublicReader {
    pub fn new(prefix: &str, work: Work) -> Self {
        Self {
            prefix: prefix.to_owned(),
            agencies: LruCache::new(NonZeroUsize::new(100_000).expect("non-zero")),
            work,
        }
    }

    /// Up to `limit` log events after `after`, rendered. An event that does not read back as a
    /// `CaseEvent` is an error: the caller stops there rather than skip it.
    pub async fn read(
        &mut self,
        store: &Store,
        after: LogPosition,
        limit: u32,
    ) -> Result<Vec<Outgoing>, StoreError> {
        let batch = store.read_log(self.work, after, limit).await?;
        self.render(store, batch).await
    }

    pub async fn render(
        &mut self,
        store: &Store,
        batch: Vec<LogEvent>,
    ) -> Result<Vec<Outgoing>, StoreError> {
        let mut decoded = Vec::with_capacity(batch.len());
        let mut missing = HashSet::new();
        for e in batch {
            let event: CaseEvent = e.event.case_event()?;
            if let CaseEvent::CaseOpened { agency, .. } = &event {
                self.agencies.put(e.case_id, agency.clone());
            } else if !self.agencies.contains(&e.case_id) {
                missing.insert(e.case_id);
            }
            decoded.push((e, event));
        }
        if !missing.is_empty() {
            let ids: Vec<CaseId> = missing.into_iter().collect();
            for (case, agency) in store.case_agencies(self.work, &ids).await? {
                self.agencies.put(case, agency);
            }
        }
        let mut out = Vec::with_capacity(decoded.len());
        for (e, event) in decoded {
            let agency = self.agencies.get(&e.case_id).cloned().ok_or_else(|| {
                StoreError::Corrupt(format!("case {} has no CaseOpened event", e.case_id))
            })?;
            let occurred_at = e.event.metadata.occurred_at;
            let facts = StoredFacts {
                case_id: e.case_id,
                agency: &agency,
                event_id: e.event.event_id,
                sequence: e.event.sequence,
                recorded_at: e.event.recorded_at,
                occurred_at,
            };
            let message = to_public(facts, event).map(|message| {
                let bytes =
                    Bytes::from(serde_json::to_vec(&message).expect("a public message serialises"));
                Rendered {
                    subject: subject(&self.prefix, &message),
                    message,
                    bytes,
                }
            });
            out.push(Outgoing { at: e.at, message });
        }
        Ok(out)
    }
}
