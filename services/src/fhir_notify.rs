//! Notifications of changed Tasks to their providers (issue 14): the FHIR R4 Subscriptions
//! backport, topic `schemas::fhir::TASK_TOPIC` ("a Task owned by me was created or changed"),
//! channel `rest-hook`, payload `id-only`.
//!
//! One replica notifies at a time (a lease, like the relay's). Each round (every `EVERY`), for
//! each live subscription, it reads the Tasks of the subscription's provider whose version is
//! above the one last delivered to it (`Store::pending_changes`, from the FHIR projection), POSTs one
//! notification Bundle naming them (`focus` Task/<id>, numbered from the subscription's event
//! count), and records the versions only after a 2xx answer. A failed delivery is retried with
//! a growing pause (up to a minute), the subscription showing `error` meanwhile; a crash between
//! the answer and the record sends the same notification again, with the same event numbers:
//! at least once. Several changes of a Task before a delivery are one notification (the
//! recipient reads the Task as it is now).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use schemas::fhir::{FHIR_JSON, TASK_TOPIC};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::store::subscriptions::{PendingChange, StoredSubscription};
use crate::store::Store;

/// The most Tasks one notification names.
const PER_NOTIFICATION: i64 = 100;
/// How long an endpoint has to answer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause between retries of a failing endpoint.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How often the replica holding the lease looks for changed Tasks: a bound on how late a
/// notification leaves after the FHIR projection applied the change. A fixed pace, not a
/// wake-up per commit: a busy server commits thousands of times a second, and each round
/// queries the store.
const EVERY: Duration = Duration::from_millis(250);
/// How often a replica without the lease tries to take it (each try opens a connection).
const STANDBY: Duration = Duration::from_secs(1);

/// Delivers until `stop` turns true.
pub async fn run(store: Arc<Store>, clock: crate::clock::Clock, mut stop: watch::Receiver<bool>) {
    // No redirects: a notification goes to the endpoint the subscriber named, nowhere else.
    let client = match reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the FHIR notifier cannot start an HTTP client");
            return;
        }
    };
    let mut lease = None;
    // Per subscription: when it may be tried again, and how many failures in a row.
    let mut backoff: HashMap<String, (Instant, u32)> = HashMap::new();
    while !*stop.borrow() {
        if lease.is_none() {
            match store.try_notifier_lease().await {
                Ok(l) => lease = l,
                Err(e) => tracing::warn!(error = %e, "the FHIR notifier could not take its lease"),
            }
        }
        let alive = match lease.as_mut() {
            Some(held) => held.alive().await,
            None => false,
        };
        let pause = match alive {
            true => {
                if let Err(e) = round(&store, &clock, &client, &mut backoff).await {
                    tracing::warn!(error = %e, "a FHIR notification round failed; retrying");
                }
                EVERY
            }
            false => {
                lease = None;
                STANDBY
            }
        };
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// One pass over the live subscriptions.
async fn round(
    store: &Store,
    clock: &crate::clock::Clock,
    client: &reqwest::Client,
    backoff: &mut HashMap<String, (Instant, u32)>,
) -> Result<(), crate::error::StoreError> {
    for subscription in store.live_subscriptions().await? {
        if backoff
            .get(&subscription.id)
            .is_some_and(|(until, _)| Instant::now() < *until)
        {
            continue;
        }
        let changes = store
            .pending_changes(&subscription, PER_NOTIFICATION)
            .await?;
        if changes.is_empty() {
            continue;
        }
        let body = notification(&subscription, &changes, clock.now());
        match deliver(client, &subscription, body).await {
            Ok(()) => {
                store.record_delivery(&subscription.id, &changes).await?;
                backoff.remove(&subscription.id);
                tracing::debug!(subscription = %subscription.id, tasks = changes.len(), "notified");
            }
            Err(error) => {
                let failures = backoff.get(&subscription.id).map_or(0, |(_, n)| *n) + 1;
                let pause = Duration::from_millis(250 * 2u64.pow(failures.min(8))).min(MAX_BACKOFF);
                backoff.insert(subscription.id.clone(), (Instant::now() + pause, failures));
                tracing::warn!(subscription = %subscription.id, %error, failures, "a notification was not delivered; it will be retried");
                store
                    .record_delivery_error(&subscription.id, &error)
                    .await?;
            }
        }
    }
    Ok(())
}

/// POSTs one notification; Err with what went wrong, for the Subscription's `error`.
async fn deliver(
    client: &reqwest::Client,
    s: &StoredSubscription,
    body: Value,
) -> Result<(), String> {
    let mut request = client
        .post(&s.endpoint)
        .header(reqwest::header::CONTENT_TYPE, FHIR_JSON)
        .body(body.to_string());
    for line in &s.headers {
        if let Some((name, value)) = line.split_once(':') {
            request = request.header(name.trim(), value.trim());
        }
    }
    match request.send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("the endpoint answered {}", r.status())),
        Err(e) if e.is_timeout() => Err("the endpoint did not answer in time".into()),
        Err(_) => Err("the endpoint could not be reached".into()),
    }
}

/// The notification Bundle (R4 backport: a `history` Bundle whose first entry is the
/// subscription status, a Parameters resource), one `notification-event` per changed Task.
pub fn notification(
    s: &StoredSubscription,
    changes: &[PendingChange],
    now: DateTime<Utc>,
) -> Value {
    let first = s.events_since_start + 1;
    let events: Vec<Value> = changes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"name": "notification-event", "part": [
                {"name": "event-number", "valueString": (first + i as i64).to_string()},
                {"name": "timestamp", "valueInstant": c.last_updated},
                {"name": "focus", "valueReference": {"reference": format!("Task/{}", c.referral_id)}}
            ]})
        })
        .collect();
    let mut parameters = vec![
        json!({"name": "subscription", "valueReference": {"reference": format!("Subscription/{}", s.id)}}),
        json!({"name": "topic", "valueCanonical": TASK_TOPIC}),
        json!({"name": "status", "valueCode": "active"}),
        json!({"name": "type", "valueCode": "event-notification"}),
        json!({"name": "events-since-subscription-start",
               "valueString": (s.events_since_start + changes.len() as i64).to_string()}),
    ];
    parameters.extend(events);
    let status_id = Uuid::now_v7();
    json!({
        "resourceType": "Bundle",
        "id": Uuid::now_v7().to_string(),
        "meta": {"profile": ["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification-r4"]},
        "type": "history",
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "entry": [{
            "fullUrl": format!("urn:uuid:{status_id}"),
            "resource": {
                "resourceType": "Parameters",
                "id": status_id.to_string(),
                "meta": {"profile": ["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"]},
                "parameter": parameters
            },
            "request": {"method": "GET", "url": format!("Subscription/{}/$status", s.id)},
            "response": {"status": "200"}
        }]
    })
}
