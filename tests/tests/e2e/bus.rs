//! The event bus against a real nats-server: a scenario's public events reach the stream in log
//! order with the right subjects and valid against their schemas; the relay rides out a broker
//! that dies and comes back mid-stream; a relay that dies between publishing and moving its
//! checkpoint leaves no duplicate; local subscribers get the same events over SSE.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use chrono::Duration as Days;
use futures::StreamExt;
use linkage_tests::nats::Bus;
use linkage_tests::{Backend, TestApp};
use reqwest::StatusCode;
use schemas::public::PublicEvent;
use schemas::Role;
use serde_json::{json, Value};
use services::bus::relay::{self, Relay};

use linkage_tests::days_ago as day;

fn at(offset_days: i64) -> String {
    (linkage_tests::now() - Days::days(offset_days))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub(crate) async fn spawn(backend: Backend, bus: Option<&Bus>) -> Option<TestApp> {
    let bus = bus.map(|b| (b.url.clone(), b.config.clone()));
    TestApp::spawn_with(backend, move |c| {
        if let Some((url, config)) = bus {
            c.nats_url = Some(url);
            c.bus = config;
        }
        c.bus.retry_ms = 200;
        c.bus.ack_timeout_ms = 2000;
    })
    .await
}

/// A family's referral loop: intake, a referral accepted, an appointment missed, rescheduled and
/// kept, a contact, the referral completed, a step-down. Returns the case id.
async fn scenario(app: &TestApp, agency: &str) -> String {
    scenario_with(app, agency, false).await
}

/// Free text the walkthrough types that must never reach a subscriber: the child's identity, and
/// every reason, note, concern and goal a person wrote.
const TYPED_TEXT: &[&str] = &[
    "Robin",
    "Sample",
    "2018-05-04",
    "ZZ99000001",
    "sleep",
    "night terrors",
    "first session went well",
    "plan goals met",
    "caregiver support",
    "mother started opioid treatment",
    "sister",
    "eviction notice",
    "found housing through their church",
];

/// The walkthrough; `closures` adds a referral the provider declines, with a sensitive reason,
/// and one the case manager cancels.
async fn scenario_with(app: &TestApp, agency: &str, closures: bool) -> String {
    let t = app.token(Role::Supervisor, "sup-1", agency).await;
    let (s, b) = app
        .post(
            "/v1/cases",
            &t,
            &json!({"program": "tcm", "assigned_to": "cm-ada", "intake_date": day(60),
                "child": {"given_name": "Robin", "family_name": "Sample", "birth_date": "2018-05-04",
                          "medicaid_id": "ZZ99000001"},
                "guardians": [{"name": "Alex Sample", "relationship": "parent"}],
                "presenting_concerns": ["sleep"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let case = b["case_id"].as_str().expect("case id").to_owned();
    let p = |s: &str| format!("/v1/cases/{case}{s}");
    let (s, b) = app
        .post(
            &p("/referrals"),
            &t,
            &json!({"service_type": "outpatient_therapy", "provider": {"id": "prov-riverside"},
                "reason": "night terrors", "sent_on": day(50), "do_not_contact_subject": true}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let referral = b["referral_id"].as_str().expect("referral").to_owned();
    let steps: Vec<(String, Value)> = vec![
        (
            format!("/referrals/{referral}/status"),
            json!({"status": "accepted", "on": day(48),
                "reported_by": {"provider_id": "prov-riverside", "channel": "phone"}}),
        ),
        (
            "/appointments".into(),
            json!({"referral_id": referral, "scheduled_for": at(45), "on": day(47)}),
        ),
    ];
    let mut appointment = String::new();
    for (path, body) in steps {
        let (s, b) = app.post(&p(&path), &t, &body).await;
        assert!(s.is_success(), "{path}: {b}");
        if let Some(id) = b["appointment_id"].as_str() {
            appointment = id.to_owned();
        }
    }
    for body in [
        json!({"outcome": "missed", "on": day(45), "missed_reason": "no_show"}),
        json!({"outcome": "rescheduled", "on": day(44), "rescheduled_for": at(40)}),
        json!({"outcome": "kept", "on": day(40)}),
    ] {
        let (s, b) = app
            .post(
                &p(&format!("/appointments/{appointment}/outcome")),
                &t,
                &body,
            )
            .await;
        assert!(s.is_success(), "{b}");
    }
    let (s, b) = app
        .post(
            &p("/contacts"),
            &t,
            &json!({"component": "monitoring", "contact_type": "phone", "with": ["guardian"],
                "occurred_at": at(39), "minutes": 20, "note": "first session went well"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = app
        .post(
            &p(&format!("/referrals/{referral}/status")),
            &t,
            &json!({"status": "completed", "on": day(10), "outcome": "connected",
                "reported_by": {"provider_id": "prov-riverside", "channel": "phone"}}),
        )
        .await;
    assert!(s.is_success(), "{b}");
    if closures {
        let send = |provider: &str, reason: &str| {
            json!({"service_type": "family_support", "provider": {"id": provider},
                "reason": reason, "sent_on": day(35)})
        };
        let mut referrals = Vec::new();
        for (provider, reason) in [
            ("prov-harbor", "caregiver support"),
            ("prov-shelter", "eviction notice"),
        ] {
            let (s, b) = app
                .post(&p("/referrals"), &t, &send(provider, reason))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
            referrals.push(b["referral_id"].as_str().expect("referral").to_owned());
        }
        for (referral, body) in [
            (
                &referrals[0],
                json!({"status": "declined", "on": day(30),
                "reason": "mother started opioid treatment, family moving to her sister's",
                "reason_code": "family_moved",
                "reported_by": {"provider_id": "prov-harbor", "channel": "fax"}}),
            ),
            (
                &referrals[1],
                json!({"status": "cancellation_requested", "on": day(30),
                "reason": "family found housing through their church"}),
            ),
            (
                &referrals[1],
                json!({"status": "cancelled", "on": day(29),
                "reason": "family found housing through their church",
                "outcome": "no_longer_needed"}),
            ),
        ] {
            let (s, b) = app
                .post(&p(&format!("/referrals/{referral}/status")), &t, &body)
                .await;
            assert!(s.is_success(), "{body}: {b}");
        }
    }
    let (s, b) = app
        .post(
            &p("/transition"),
            &t,
            &json!({"kind": "step_down", "reason": "plan goals met", "effective_on": day(5)}),
        )
        .await;
    assert!(s.is_success(), "{b}");
    case
}

/// The case's stored events that are public, in order: (event id, event type).
pub(crate) async fn public_events_of(app: &TestApp, case: &str) -> Vec<(String, String)> {
    let (s, b) = app
        .get(
            &format!("/v1/cases/{case}/events?limit=1000"),
            &app.admin_token,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| PublicEvent::TYPES.contains(&e["event_type"].as_str().unwrap_or_default()))
        .map(|e| {
            (
                e["event_id"].as_str().expect("id").to_owned(),
                e["event_type"].as_str().expect("type").to_owned(),
            )
        })
        .collect()
}

/// Every message in the stream, oldest first: (subject, Nats-Msg-Id, payload).
pub(crate) async fn stream_messages(bus: &Bus) -> Vec<(String, String, Value)> {
    let client = async_nats::connect(&bus.url).await.expect("connect");
    let js = jetstream::new(client);
    let mut stream = js
        .get_stream(&bus.config.stream)
        .await
        .expect("the relay created the stream");
    let last = stream.info().await.expect("info").state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.expect("message");
        let id = m
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .expect("every message has a Nats-Msg-Id")
            .to_string();
        out.push((
            m.subject.to_string(),
            id,
            serde_json::from_slice(&m.payload).expect("JSON"),
        ));
    }
    out
}

/// Waits until the relay has published everything in the log.
pub(crate) async fn wait_relayed(app: &TestApp) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, b) = app.get("/readyz", &app.admin_token).await;
        if b["relay"]["lag"] == 0 && b["relay"]["phase"] == "publishing" {
            return b;
        }
        assert!(Instant::now() < deadline, "the relay did not catch up: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn schema_validator(event_type: &str, version: &str) -> jsonschema::Validator {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../schemas/public/v1")
        .join(schemas::public::schema_file(event_type, version));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("schema file"))
        .expect("schema JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("a valid schema")
}

async fn events_arrive_in_order(backend: Backend) {
    let Some(bus) = Bus::shared() else {
        return;
    };
    let Some(app) = spawn(backend, Some(&bus)).await else {
        return;
    };
    let case = scenario_with(&app, "north.county", true).await;
    let expected = public_events_of(&app, &case).await;
    let types: Vec<&str> = expected.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "CaseOpened",
            "ReferralSent",
            "ReferralAccepted",
            "AppointmentScheduled",
            "AppointmentMissed",
            "AppointmentRescheduled",
            "AppointmentKept",
            "ReferralCompleted",
            "ReferralSent",
            "ReferralSent",
            "ReferralDeclined",
            "ReferralCancellationRequested",
            "ReferralCancelled",
            "CaseTransitioned"
        ],
        "the contact and the assignment are not public"
    );
    wait_relayed(&app).await;
    let messages = stream_messages(&bus).await;
    let got: Vec<(String, String)> = messages
        .iter()
        .map(|(_, id, m)| {
            (
                id.clone(),
                m["event_type"].as_str().expect("type").to_owned(),
            )
        })
        .collect();
    assert_eq!(got, expected, "every public event once, in order");
    for (subject, id, message) in &messages {
        let event_type = message["event_type"].as_str().expect("type");
        let entity = match event_type {
            t if t.starts_with("Referral") => "referral",
            t if t.starts_with("Appointment") => "appointment",
            _ => "case",
        };
        assert_eq!(
            subject,
            &format!(
                "{}.v1.north~county.{entity}.{event_type}",
                bus.config.subject_prefix
            )
        );
        assert_eq!(&message["event_id"], id, "Nats-Msg-Id is the event id");
        assert_eq!(message["case_id"], case);
        let version = message["event_version"].as_str().expect("version");
        let validator = schema_validator(event_type, version);
        let errors: Vec<String> = validator
            .iter_errors(message)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{event_type} breaks its schema: {errors:?}\n{message}"
        );
        let text = message.to_string();
        for secret in TYPED_TEXT {
            assert!(!text.contains(secret), "{secret} on the bus: {text}");
        }
    }
    let sent = &messages[1].2;
    assert_eq!(sent["data"]["provider_id"], "prov-riverside");
    assert_eq!(sent["data"]["do_not_contact_subject"], true);
    // The decline's sensitive words stayed in the case record; its codes went out, at version 2.
    let declined = &messages[10].2;
    assert_eq!(declined["event_type"], "ReferralDeclined");
    assert_eq!(declined["event_version"], "2");
    assert_eq!(declined["data"]["reason_code"], "family_moved");
    assert_eq!(declined["data"]["outcome"], Value::Null);
    let cancelled = &messages[12].2;
    assert_eq!(cancelled["data"]["reason_code"], "no_longer_needed");
    assert_eq!(cancelled["data"]["outcome"], "no_longer_needed");
    let (_, record) = app
        .get(&format!("/v1/cases/{case}"), &app.admin_token)
        .await;
    assert!(
        record
            .to_string()
            .contains("mother started opioid treatment"),
        "the words stay in the case record, where roles govern them"
    );
}

linkage_tests::both_backends!(
    events_arrive_in_order_with_subjects_and_schemas,
    events_arrive_in_order
);

/// Commands keep committing while the broker is gone; /readyz says the relay is disconnected
/// and how many events wait; when the broker is back everything is published, in log order,
/// each event once.
async fn survives_a_broker_restart(backend: Backend) {
    let Some(mut bus) = Bus::own() else {
        return;
    };
    let Some(app) = spawn(backend, Some(&bus)).await else {
        return;
    };
    let app = Arc::new(app);
    let t = app.token(Role::Supervisor, "sup-1", "north").await;
    let mut cases = Vec::new();
    for _ in 0..4 {
        let (s, b) = app
            .post(
                "/v1/cases",
                &t,
                &json!({"program": "tcm", "assigned_to": "cm-ada", "intake_date": day(30),
                    "child": {"given_name": "Kim", "family_name": "Sample", "birth_date": linkage_tests::unique_birth_date()}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        cases.push(b["case_id"].as_str().expect("id").to_owned());
    }
    // A writer sends referrals round-robin over the cases for the whole test.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let writer = {
        let (app, t, cases) = (app.clone(), t.clone(), cases.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            while !*stop_rx.borrow() {
                let case = &cases[n % cases.len()];
                let (s, b) = app
                    .post(
                        &format!("/v1/cases/{case}/referrals"),
                        &t,
                        &json!({"service_type": "housing", "provider": {"id": format!("prov-{n}")},
                            "reason": "rent arrears", "sent_on": day(1)}),
                    )
                    .await;
                assert_eq!(s, StatusCode::CREATED, "a command needs no broker: {b}");
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    bus.server().stop();
    // While the broker is down the relay says so and the backlog grows.
    let deadline = Instant::now() + Duration::from_secs(30);
    let down = loop {
        let (s, b) = app.get("/readyz", &app.admin_token).await;
        if b["relay"]["phase"] == "disconnected" && b["relay"]["lag"].as_i64() > Some(5) {
            assert_eq!(
                s,
                StatusCode::OK,
                "a bus outage does not take the API out: {b}"
            );
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "the relay never reported the outage: {b}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(down["relay"]["last_error"].is_string(), "{down}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    bus.server().restart();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let _ = stop_tx.send(true);
    let sent = writer.await.expect("writer");
    assert!(sent > 20, "the writer kept going: {sent}");
    wait_relayed(&app).await;

    let mut expected = Vec::new();
    for case in &cases {
        expected.extend(public_events_of(&app, case).await);
    }
    let messages = stream_messages(&bus).await;
    let ids: Vec<String> = messages.iter().map(|(_, id, _)| id.clone()).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no event twice in the stream");
    let want: HashSet<&String> = expected.iter().map(|(id, _)| id).collect();
    assert_eq!(unique, want, "nothing lost, nothing extra");
    // Log order: each case's events in sequence order, and the stream follows the log.
    let log = app
        .store
        .read_log(
            services::store::Work::Api,
            services::store::LogPosition::START,
            100_000,
        )
        .await
        .expect("log");
    let log_order: Vec<String> = log
        .iter()
        .map(|e| e.event.event_id.to_string())
        .filter(|id| want.contains(id))
        .collect();
    assert_eq!(ids, log_order, "the stream is in log order");
}

linkage_tests::both_backends!(
    the_relay_survives_a_broker_restart,
    survives_a_broker_restart
);

/// A relay publishes a batch and dies before moving its checkpoint. The next relay starts from
/// the old checkpoint and publishes nothing twice; JetStream itself drops a re-published event id.
async fn no_duplicate_after_a_crash(backend: Backend) {
    let Some(bus) = Bus::shared() else {
        return;
    };
    // No relay inside the server: this test drives relays by hand.
    let Some(app) = spawn(backend, None).await else {
        return;
    };
    let case = scenario(&app, "north").await;
    let expected = public_events_of(&app, &case).await;
    let config = bus.config.clone();
    let url = bus.url.clone();

    let mut first = Relay::connect(app.store.clone(), &url, config.clone())
        .await
        .expect("connect");
    let published = first.publish_next().await.expect("publish");
    assert_eq!(published.messages as usize, expected.len());
    drop(first); // the crash: acks received, checkpoint never moved
    let before = relay::checkpoint(&app.store).await.expect("checkpoint");
    assert!(before.lag > 0, "the checkpoint did not move: {before:?}");
    assert_eq!(stream_messages(&bus).await.len(), expected.len());

    let mut second = Relay::connect(app.store.clone(), &url, config.clone())
        .await
        .expect("connect");
    second.catch_up(|_| {}).await.expect("catch up");
    let after = relay::checkpoint(&app.store).await.expect("checkpoint");
    assert_eq!(after.lag, 0, "{after:?}");
    let messages = stream_messages(&bus).await;
    let ids: Vec<(String, String)> = messages
        .iter()
        .map(|(_, id, m)| (id.clone(), m["event_type"].as_str().expect("t").to_owned()))
        .collect();
    assert_eq!(ids, expected, "each event exactly once, in order");

    // New events after the crash still flow, after the old ones.
    let t = app.admin_token.clone();
    let (s, b) = app
        .post(
            &format!("/v1/cases/{case}/reopen"),
            &t,
            &json!({"reason": "new concerns", "on": day(1)}),
        )
        .await;
    assert!(s.is_success(), "{b}");
    // The log shows a reader an event only once every transaction older than it has ended (a
    // projection's batch in flight holds it back for a moment), so the relay may need more than
    // one pass to see it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let messages = loop {
        second.catch_up(|_| {}).await.expect("catch up");
        let messages = stream_messages(&bus).await;
        if messages.len() > expected.len() || std::time::Instant::now() > deadline {
            break messages;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(messages.len(), expected.len() + 1);
    assert_eq!(
        messages.last().expect("last").2["event_type"],
        "CaseReopened"
    );

    // And the stream's own guard: the same event id published again is a duplicate.
    let client = async_nats::connect(&url).await.expect("connect");
    let js = jetstream::new(client);
    let (subject, id, message) = messages[0].clone();
    let ack = js
        .send_publish(
            subject,
            jetstream::message::PublishMessage::build()
                .payload(message.to_string().into())
                .message_id(id),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    assert!(ack.duplicate, "JetStream drops a re-published event id");
    assert_eq!(stream_messages(&bus).await.len(), expected.len() + 1);
}

linkage_tests::both_backends!(
    a_relay_killed_between_publish_and_checkpoint_duplicates_nothing,
    no_duplicate_after_a_crash
);

/// `linkage subscribe`'s consumer: a durable pull consumer with explicit acks delivers every
/// event once and, run again under the same name, resumes after what it acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_durable_subscriber_gets_every_event_and_resumes() {
    let Some(bus) = Bus::shared() else {
        return;
    };
    let app = spawn(Backend::Sqlite, Some(&bus)).await.expect("sqlite");
    let case = scenario(&app, "north").await;
    wait_relayed(&app).await;
    let mut options = services::bus::subscribe::SubscribeOptions {
        url: bus.url.clone(),
        config: app.config.bus.clone(),
        subject: Some(format!("{}.v1.north.referral.>", bus.config.subject_prefix)),
        durable: "test-consumer".into(),
        from_start: true,
        count: Some(2),
    };
    let mut seen = Vec::new();
    let n = services::bus::subscribe::subscribe(
        &options,
        |d| {
            seen.push(d.clone());
            Ok(())
        },
        std::future::pending(),
    )
    .await
    .expect("subscribe");
    assert_eq!(n, 2);
    assert_eq!(seen[0].event["event_type"], "ReferralSent");
    assert_eq!(seen[1].event["event_type"], "ReferralAccepted");
    assert_eq!(seen[0].event["case_id"], case);
    // The same durable again, not from the start: the next referral event, not the first.
    options.from_start = false;
    options.count = Some(1);
    let mut next = Vec::new();
    services::bus::subscribe::subscribe(
        &options,
        |d| {
            next.push(d.clone());
            Ok(())
        },
        std::future::pending(),
    )
    .await
    .expect("resume");
    assert_eq!(next[0].event["event_type"], "ReferralCompleted");
    assert!(next[0].stream_sequence > seen[1].stream_sequence);
}

/// Embedded mode without NATS: the same public events reach local subscribers as server-sent
/// events, filtered to the caller's agency, resumable with Last-Event-ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_subscribers_get_the_events_over_sse() {
    let app = spawn(Backend::Sqlite, None).await.expect("sqlite");
    let north = app.token(Role::Supervisor, "sup-n", "north").await;
    let south = app.token(Role::Supervisor, "sup-s", "south").await;
    let billing = app.token(Role::Billing, "bill-1", "north").await;

    let (s, b) = app.get("/v1/events/stream", &billing).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let (s, b) = app.get("/v1/events/stream?from=yesterday", &north).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"]["code"], "invalid_from");
    // Checked even when a Last-Event-ID makes it moot (schemathesis found it accepted there).
    let r = open_stream(&app, &north, "?from=yesterday", "1-1").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // An empty Last-Event-ID is none (as an EventSource sends it), not a bad one.
    let r = open_stream(&app, &north, "?from=nowhere", "").await;
    let b: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(b["error"]["code"], "invalid_from", "{b}");

    // A live subscriber opened before anything happens.
    let live = app
        .client
        .get(format!("{}/v1/events/stream", app.address))
        .bearer_auth(&north)
        .send()
        .await
        .expect("open the stream");
    assert_eq!(live.status(), StatusCode::OK);
    let case = scenario(&app, "north").await;
    let _other = scenario(&app, "south").await;
    let events = read_sse(live, 9).await;
    let types: Vec<&str> = events.iter().map(|(_, t, _)| t.as_str()).collect();
    assert_eq!(types[0], "CaseOpened");
    assert_eq!(types[8], "CaseTransitioned");
    for (_, _, data) in &events {
        assert_eq!(data["agency"], "north", "only the caller's agency");
        assert_eq!(data["case_id"], case);
    }

    // South's supervisor, from the start, sees only south's case.
    let from_start = app
        .client
        .get(format!("{}/v1/events/stream?from=start", app.address))
        .bearer_auth(&south)
        .send()
        .await
        .expect("open");
    let south_events = read_sse(from_start, 9).await;
    assert!(south_events.iter().all(|(_, _, d)| d["agency"] == "south"));

    // Resuming after the third event gives the fourth next.
    let resumed = open_stream(&app, &north, "", &events[2].0).await;
    let again = read_sse(resumed, 1).await;
    assert_eq!(again[0].0, events[3].0);
    let bad = open_stream(&app, &north, "", "yesterday").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

/// Opens the event stream (`query` appended to its path) resuming after `last_event_id`.
async fn open_stream(
    app: &TestApp,
    token: &str,
    query: &str,
    last_event_id: &str,
) -> reqwest::Response {
    app.client
        .get(format!("{}/v1/events/stream{query}", app.address))
        .bearer_auth(token)
        .header("Last-Event-ID", last_event_id)
        .send()
        .await
        .expect("open the stream")
}

/// Reads `n` SSE events: (id, event type, data).
async fn read_sse(resp: reqwest::Response, n: usize) -> Vec<(String, String, Value)> {
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("events arrive in time")
            .expect("the stream stays open")
            .expect("a chunk");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.to_owned();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    kind = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if !data.is_empty() {
                out.push((id, kind, serde_json::from_str(&data).expect("JSON data")));
            }
        }
    }
    out.truncate(n);
    out
}

/// Two replicas on one PostgreSQL store, both configured with the bus: one publishes, the other
/// stands by, and every event reaches the stream once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_one_replica_relays() {
    let Some(bus) = Bus::shared() else {
        return;
    };
    let Some(app) = spawn(Backend::Postgres, Some(&bus)).await else {
        return;
    };
    let replica = app.second_instance().await;
    let case = scenario(&replica, "north").await;
    let expected = public_events_of(&app, &case).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let phases = loop {
        let (_, a) = app.get("/readyz", &app.admin_token).await;
        let (_, b) = replica.get("/readyz", &app.admin_token).await;
        let mut phases = [
            a["relay"]["phase"].as_str().unwrap_or_default().to_owned(),
            b["relay"]["phase"].as_str().unwrap_or_default().to_owned(),
        ];
        phases.sort();
        if a["relay"]["lag"] == 0 && phases == ["publishing", "standby"] {
            break phases;
        }
        assert!(Instant::now() < deadline, "relays never settled: {a} {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(phases, ["publishing", "standby"]);
    let got: Vec<(String, String)> = stream_messages(&bus)
        .await
        .into_iter()
        .map(|(_, id, m)| (id, m["event_type"].as_str().expect("type").to_owned()))
        .collect();
    assert_eq!(got, expected, "each event once, in order");
}

/// With a bus configured, each signed audit anchor also goes to a stream of its own that
/// refuses deletes and purges: the server's shutdown anchor is there, byte for byte the file's
/// line, and cannot be deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_anchors_are_published_to_an_append_only_stream() {
    let Some(bus) = Bus::shared() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("linkage-anchor-bus-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("anchor.key");
    services::anchor::generate_key(&key_file).unwrap();
    let out = dir.join("anchors.jsonl");
    let anchor = services::anchor::AnchorConfig {
        key_file,
        out: out.clone(),
        interval_secs: 3_600,
    };
    let (url, config) = (bus.url.clone(), bus.config.clone());
    let Some(mut app) = TestApp::spawn_with(Backend::Sqlite, move |c| {
        c.nats_url = Some(url);
        c.bus = config;
        c.audit_anchor = Some(anchor);
    })
    .await
    else {
        return;
    };
    scenario(&app, "north.county").await;
    app.wait_projected().await;
    app.stop().await;
    let line = std::fs::read_to_string(&out).expect("the shutdown anchor");
    let line = line.trim();
    assert_eq!(line.lines().count(), 1, "{line}");

    let client = async_nats::connect(&bus.url).await.expect("connect");
    let js = jetstream::new(client);
    let mut stream = js
        .get_stream(services::anchor::AnchorBus::stream_name(&bus.config))
        .await
        .expect("the anchors' stream");
    let info = stream.info().await.expect("info").clone();
    assert!(info.config.deny_delete && info.config.deny_purge);
    assert_eq!(info.state.messages, 1);
    let published = stream.get_raw_message(1).await.expect("the anchor");
    assert_eq!(std::str::from_utf8(&published.payload).unwrap(), line);
    assert!(
        stream.delete_message(1).await.is_err(),
        "an anchor cannot be deleted from the stream"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
