//! `GET /v1/events/stream`: the public events (schemas/public) as server-sent events, straight
//! from the durable log. Works in every mode, NATS or not, so the embedded `run` command shows
//! the same events a JetStream subscriber gets.
//!
//! Each SSE event's `id` is its log position (`<txid>-<position>`); a client that reconnects with
//! `Last-Event-ID` resumes right after it, missing nothing. Without one it starts with new events,
//! or with the oldest when `?from=start`. Callers see their own agency's events (admins: all);
//! billing has no business with referral traffic and is refused.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use schemas::AgencyId;
use serde::Deserialize;

use crate::auth::Caller;
use crate::bus::{Outgoing, PublicReader};
use crate::error::ApiError;
use crate::startup::AppState;
use crate::store::{LogPosition, Store, Work};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// `start` for every event in the log, `now` (default) for new ones only.
    #[param(pattern = "^(start|now)$")]
    pub from: Option<String>,
}

#[utoipa::path(get, path = "/v1/events/stream", tag = "events",
    params(StreamQuery, ("Last-Event-ID" = Option<String>, Header, pattern = "^([0-9]{1,18}-[0-9]{1,18})?$", description = "resume after this event (an SSE id this stream sent; empty: none)")),
    responses((status = 200, description = "text/event-stream of public events (schemas/public)"),
              (status = "4XX", body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(actor = %caller.0.id, role = %caller.0.role))]
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    crate::http::page::StrictQuery(query): crate::http::page::StrictQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let actor = caller.0;
    // Callers see their own agency's events (admins: all); billing has no business with them.
    let agency = crate::auth::agency_scope(&actor, crate::auth::Access::EventStream, None)?;
    // An empty Last-Event-ID is no id (as an EventSource sends after an empty `id:` line).
    let resume = headers
        .get("last-event-id")
        .filter(|v| !v.as_bytes().trim_ascii().is_empty())
        .map(|v| {
            v.to_str().ok().and_then(parse_event_id).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_last_event_id",
                    "Last-Event-ID must be an id this stream sent (<txid>-<position>)",
                )
            })
        })
        .transpose()?;
    // `from` is checked even when Last-Event-ID (which takes precedence) makes it moot.
    let from_start = match query.from.as_deref() {
        Some("start") => true,
        None | Some("now") => false,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_from",
                format!("from must be `start` or `now`, not `{other}`"),
            ))
        }
    };
    let start = match resume {
        Some(at) => at,
        None if from_start => LogPosition::START,
        None => state.store.log_head().await?,
    };
    tracing::info!(?start, "event stream opened");
    let tail = Tail {
        store: state.store.clone(),
        reader: PublicReader::new(&state.config.bus.subject_prefix, Work::Api),
        at: start,
        agency,
        buffered: VecDeque::new(),
        commits: state.store.log_moved(),
        idle: Duration::from_millis(state.config.projection_poll_ms),
    };
    let events = futures::stream::unfold(tail, |mut tail| async move {
        let event = tail.next().await;
        Some((Ok(event), tail))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

fn parse_event_id(s: &str) -> Option<LogPosition> {
    let (txid, position) = s.trim().split_once('-')?;
    Some(LogPosition {
        txid: txid.parse().ok()?,
        position: position.parse().ok()?,
    })
}

struct Tail {
    store: Arc<Store>,
    reader: PublicReader,
    at: LogPosition,
    agency: Option<AgencyId>,
    buffered: VecDeque<Outgoing>,
    commits: tokio::sync::watch::Receiver<u64>,
    idle: Duration,
}

impl Tail {
    /// The next event this subscriber may see; waits for one.
    async fn next(&mut self) -> Event {
        loop {
            while let Some(item) = self.buffered.pop_front() {
                self.at = item.at;
                let Some(rendered) = item.message else {
                    continue;
                };
                if self
                    .agency
                    .as_ref()
                    .is_some_and(|a| *a != rendered.message.envelope.agency)
                {
                    continue;
                }
                return Event::default()
                    .id(format!("{}-{}", item.at.txid, item.at.position))
                    .event(rendered.message.event.event_type())
                    .data(String::from_utf8_lossy(&rendered.bytes));
            }
            match self.reader.read(&self.store, self.at, 500).await {
                Ok(batch) if !batch.is_empty() => self.buffered.extend(batch),
                Ok(_) => {
                    tokio::select! {
                        _ = self.commits.changed() => {}
                        () = tokio::time::sleep(self.idle) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event stream cannot read the log; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
