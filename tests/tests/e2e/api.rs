//! The API against both stores: one family's case end to end, bad input, idempotency,
//! concurrency, restarts and immutability. All names and ids are synthetic.

use chrono::Duration;
use linkage_tests::{both_stores, TestApp};
use reqwest::StatusCode;
use schemas::Role;
use serde_json::{json, Value};

use linkage_tests::days_ago as day;

fn at(offset_days: i64) -> String {
    (linkage_tests::now() - Duration::days(offset_days))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn intake(assigned_to: &str) -> Value {
    json!({
        "program": "wraparound",
        "assigned_to": assigned_to,
        "intake_date": day(60),
        "child": {"given_name": "Robin", "family_name": "Sample", "birth_date": "2018-05-04",
                  "medicaid_id": "ZZ99000001"},
        "guardians": [{"name": "Alex Sample", "relationship": "parent", "phone": "555-0100"}],
        "referral_source": "pediatrician",
        "presenting_concerns": ["school refusal", "sleep"]
    })
}

async fn open_case(app: &TestApp, token: &str, assigned_to: &str) -> String {
    let (s, body) = app.post("/v1/cases", token, &intake(assigned_to)).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["version"], 2, "CaseOpened + CaseManagerAssigned");
    body["case_id"].as_str().expect("case_id").to_owned()
}

both_stores!(
    a_family_from_intake_to_transition,
    |app: TestApp| async move {
        let t = app.admin_token.clone();
        let case = open_case(&app, &t, "cm-ada").await;
        let p = |s: &str| format!("/v1/cases/{case}{s}");

        let (s, b) = app
        .post(&p("/screenings"), &t, &json!({"instrument": "cans", "administered_on": day(55),
            "ratings": {"bhn.depression": 2, "lf.sleep": 3, "bhn.anxiety": 1, "str.resilience": 0}}))
        .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        assert_eq!(b["actionable_needs"], json!(["lf.sleep", "bhn.depression"]));
        assert_eq!(b["version"], 3);

        let (s, b) = app
            .post(
                &p("/screenings"),
                &t,
                &json!({"instrument": "prapare", "administered_on": day(55),
            "ratings": {"fh.housing_worry": "yes", "se.stress": "choose_not_to_answer"}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");

        // A plan that leaves a need unaddressed is refused; addressing it works.
        let (s, b) = app
            .post(
                &p("/care-plan"),
                &t,
                &json!({"goals": [{"description": "sleep through the night",
            "addresses": ["lf.sleep"]}], "family_participated": true, "reassess_by": day(-90)}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
        assert_eq!(b["error"]["code"], "unaddressed_needs");
        let (s, b) = app
            .post(
                &p("/care-plan"),
                &t,
                &json!({
            "goals": [{"description": "sleep through the night", "addresses": ["lf.sleep"]},
                      {"description": "connect to therapy", "addresses": ["bhn.depression"],
                       "target_date": day(-60)}],
            "family_participated": true, "services_timeline": "therapy within 30 days",
            "reassess_by": day(-90)}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        assert_eq!(b["plan_version"], 1);
        let goal = b["goal_ids"][1].as_str().unwrap().to_owned();

        let (s, b) = app
            .post(
                &p("/referrals"),
                &t,
                &json!({"service_type": "outpatient_therapy",
            "provider": {"id": "prov-riverside", "name": "Riverside Family Clinic (synthetic)"},
            "reason": "depressive symptoms", "goal_ids": [goal], "urgency": "routine",
            "sent_on": day(50)}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let referral = b["referral_id"].as_str().unwrap().to_owned();

        let (s, b) = app
            .post(
                &p(&format!("/referrals/{referral}/status")),
                &t,
                &json!({"status": "accepted", "on": day(48),
                    "reported_by": {"provider_id": "prov-riverside", "channel": "fax"}}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");

        let (s, b) = app
            .post(
                &p("/appointments"),
                &t,
                &json!({"referral_id": referral, "scheduled_for": at(40), "on": day(47)}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let appt = b["appointment_id"].as_str().unwrap().to_owned();
        let (s, b) = app
            .post(
                &p(&format!("/appointments/{appt}/outcome")),
                &t,
                &json!({"outcome": "missed", "on": day(40), "missed_reason": "no_show"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b) = app
            .post(
                &p(&format!("/appointments/{appt}/outcome")),
                &t,
                &json!({"outcome": "rescheduled", "on": day(39), "rescheduled_for": at(30)}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b) = app
            .post(
                &p(&format!("/appointments/{appt}/outcome")),
                &t,
                &json!({"outcome": "kept", "on": day(30)}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");

        let (s, b) = app
            .post(
                &p("/contacts"),
                &t,
                &json!({"component": "monitoring", "contact_type": "phone",
            "with": ["guardian"], "occurred_at": at(29), "minutes": 25,
            "note": "family reports first session went well", "location": "office"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");

        let (s, b) = app
            .post(
                &p(&format!("/referrals/{referral}/status")),
                &t,
                &json!({"status": "completed", "on": day(20), "outcome": "connected",
                    "reported_by": {"provider_id": "prov-riverside", "channel": "portal"}}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");

        let (s, b) = app
            .post(
                &p("/transition"),
                &t,
                &json!({"kind": "step_down", "reason": "goals met",
            "effective_on": day(10)}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let final_version = b["version"].as_u64().unwrap();

        // Closed: nothing but reopen.
        let (s, b) = app
            .post(
                &p("/contacts"),
                &t,
                &json!({"component": "monitoring", "contact_type": "phone",
            "with": ["guardian"], "occurred_at": at(5), "minutes": 10}),
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT, "{b}");
        assert_eq!(b["error"]["code"], "case_closed");

        app.assert_cache_matches_replay(&case).await;
        let (s, view) = app.get(&p(""), &t).await;
        assert_eq!(s, StatusCode::OK, "{view}");
        assert_eq!(view["status"], "closed");
        assert_eq!(view["version"], final_version);
        assert_eq!(view["assigned_to"], "cm-ada");
        assert_eq!(view["referrals"][0]["status"], "completed");
        assert_eq!(view["referrals"][0]["outcome"], "connected");
        assert_eq!(view["appointments"][0]["status"], "kept");
        assert_eq!(view["care_plan"]["goals"].as_array().unwrap().len(), 2);
        assert_eq!(view["screenings"].as_array().unwrap().len(), 2);
        assert_eq!(view["closure"]["kind"], "step_down");

        // The envelope: ids, order, actors, times.
        let (s, ev) = app.get(&p("/events"), &t).await;
        assert_eq!(s, StatusCode::OK);
        let events = ev["events"].as_array().unwrap();
        assert_eq!(events.len() as u64, final_version);
        let types: Vec<&str> = events
            .iter()
            .map(|e| e["event_type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            vec![
                "CaseOpened",
                "CaseManagerAssigned",
                "ScreeningRecorded",
                "ScreeningRecorded",
                "CarePlanRevised",
                "ReferralSent",
                "ReferralAccepted",
                "AppointmentScheduled",
                "AppointmentMissed",
                "AppointmentRescheduled",
                "AppointmentKept",
                "ContactLogged",
                "ReferralCompleted",
                "CaseTransitioned"
            ]
        );
        let mut last_position = 0;
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["sequence"], i as u64 + 1);
            // Version 2: when an appointment was made; who reported a referral's status and
            // why its loop closed; the offset a contact's time was written with. Version 3 (2
            // for a cancellation request): the reason as a code. A case opening says whether a
            // possible duplicate was reviewed (version 2).
            let version = match e["event_type"].as_str().unwrap() {
                "ReferralDeclined" | "ReferralCancelled" | "ReferralCompleted" => "3",
                "CaseOpened"
                | "AppointmentScheduled"
                | "ReferralAccepted"
                | "ReferralCancellationRequested"
                | "ContactLogged" => "2",
                _ => "1",
            };
            assert_eq!(e["event_version"], version);
            let id = uuid::Uuid::parse_str(e["event_id"].as_str().unwrap()).unwrap();
            assert_eq!(id.get_version_num(), 7, "event ids are UUID v7");
            let pos = e["position"].as_i64().unwrap();
            assert!(pos > last_position, "global positions increase");
            last_position = pos;
            assert_eq!(e["actor"]["id"], "admin");
            assert_eq!(e["actor"]["role"], "admin");
            assert!(e["recorded_at"].is_string() && e["occurred_at"].is_string());
            assert!(e["correlation_id"].is_string() && e["causation_id"].is_string());
        }
        // Late documentation: the contact happened 29 days before it was recorded.
        let contact = &events[11];
        assert!(
            contact["occurred_at"].as_str().unwrap() < contact["recorded_at"].as_str().unwrap()
        );

        // Reopen, then the case takes activity again.
        let (s, b) = app
            .post(
                &p("/reopen"),
                &t,
                &json!({"reason": "new concerns", "on": day(2)}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b) = app
        .post(&p("/contacts"), &t, &json!({"component": "assessment", "contact_type": "face_to_face",
            "with": ["child", "guardian"], "occurred_at": at(1), "minutes": 60, "location": "home"}))
        .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
);

both_stores!(bad_input_changes_nothing, |app: TestApp| async move {
    let t = app.admin_token.clone();
    let case = open_case(&app, &t, "cm-ada").await;
    let contacts = format!("/v1/cases/{case}/contacts");
    let good = json!({"component": "monitoring", "contact_type": "phone", "with": ["guardian"],
                      "occurred_at": at(1), "minutes": 15});
    let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (
            b"{\"component\": ".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            b"not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            {
                let mut v = good.clone();
                v["colour"] = json!("blue");
                v.to_string().into_bytes()
            },
            StatusCode::BAD_REQUEST,
            "unknown_field",
        ),
        (
            {
                let mut v = good.clone();
                v["contact_type"] = json!("telepathy");
                v.to_string().into_bytes()
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_enum_value",
        ),
        (
            {
                let mut v = good.clone();
                v.as_object_mut().unwrap().remove("minutes");
                v.to_string().into_bytes()
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_field",
        ),
        (
            {
                let mut v = good.clone();
                v["minutes"] = json!(0);
                v.to_string().into_bytes()
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
        ),
        (
            {
                let mut v = good.clone();
                v["occurred_at"] = json!(at(-2));
                v.to_string().into_bytes()
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "date_in_future",
        ),
        (
            {
                let mut v = good.clone();
                v["note"] = json!("x".repeat(400_000));
                v.to_string().into_bytes()
            },
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (body, status, code) in cases {
        let (s, b) = app.post_raw(&contacts, &t, body, None).await;
        assert_eq!(s, status, "{b}");
        assert_eq!(b["error"]["code"], code, "{b}");
        assert!(b["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(
        app.event_count(&case).await,
        2,
        "no refused request appended anything"
    );

    // Unknown ids.
    let (s, b) = app
        .post(
            &format!("/v1/cases/{}/contacts", uuid::Uuid::now_v7()),
            &t,
            &good,
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("case_not_found"))
    );
    let (s, b) = app.post("/v1/cases/not-a-uuid/contacts", &t, &good).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("case_not_found"))
    );
    let (s, b) = app
        .post(
            &format!("/v1/cases/{case}/referrals/{}/status", uuid::Uuid::now_v7()),
            &t,
            &json!({"status": "accepted", "on": day(1)}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("referral_not_found"))
    );
    let (s, b) = app
        .post(
            &format!("/v1/cases/{case}/corrections"),
            &t,
            &json!({"voids_event_id": uuid::Uuid::now_v7(), "reason": "typo"}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("event_not_found"))
    );

    // Invalid transitions: 409.
    let (s, b) = app
        .post(
            &format!("/v1/cases/{case}/reopen"),
            &t,
            &json!({"reason": "x", "on": day(1)}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("case_not_closed"))
    );

    // Tokens.
    let (s, b) = app.post(&contacts, "lkg_0000", &good).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let resp = app
        .client
        .post(format!("{}{contacts}", app.address))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Unknown route and method.
    let (s, b) = app.get("/v1/nothing-here", &t).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("route_not_found"))
    );
    let (s, _) = app.get(&contacts, &t).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);

    assert_eq!(app.event_count(&case).await, 2, "still nothing appended");
});

both_stores!(
    idempotency_keys_replay_the_first_answer,
    |app: TestApp| async move {
        let t = app.admin_token.clone();
        let case = open_case(&app, &t, "cm-ada").await;
        let contacts = format!("/v1/cases/{case}/contacts");
        let body = json!({"component": "monitoring", "contact_type": "phone", "with": ["guardian"],
                      "occurred_at": at(1), "minutes": 15});
        let first = app.post_with_key(&contacts, &t, &body, "contact-1").await;
        assert_eq!(first.0, StatusCode::CREATED, "{}", first.1);
        let again = app.post_with_key(&contacts, &t, &body, "contact-1").await;
        assert_eq!(again, first, "a retry returns the first answer");
        assert_eq!(app.event_count(&case).await, 3, "and appends nothing");

        // The same body in other words (keys reordered, other whitespace) is the same request.
        let reworded = format!(
            "{{\n  \"minutes\" : 15,\"with\":[ \"guardian\" ],\n\t\"occurred_at\": \"{}\",              \"contact_type\": \"phone\",   \"component\":\"monitoring\"}}",
            at(1)
        );
        assert_ne!(reworded.as_bytes(), body.to_string().as_bytes());
        let (s, b) = app
            .post_raw(&contacts, &t, reworded.into_bytes(), Some("contact-1"))
            .await;
        assert_eq!((s, &b), (first.0, &first.1), "a reworded retry replays");
        assert_eq!(app.event_count(&case).await, 3, "and appends nothing");

        let mut other = body.clone();
        other["minutes"] = json!(16);
        let (s, b) = app.post_with_key(&contacts, &t, &other, "contact-1").await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("idempotency_key_reused"))
        );
        assert_eq!(app.event_count(&case).await, 3);

        // Keys belong to the actor: another actor's same key is a new request.
        let sup = app.token(Role::Supervisor, "sup-lee", "default").await;
        let (s, b) = app.post_with_key(&contacts, &sup, &body, "contact-1").await;
        assert_eq!(s, StatusCode::CREATED, "{b}");

        // Concurrent retries of one intake (another child's) open one case.
        let mut sibling = intake("cm-ada");
        sibling["child"]["given_name"] = json!("Sam");
        sibling["child"]["medicaid_id"] = json!("ZZ99000002");
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let sibling = sibling.clone();
                let client = app.client.clone();
                let url = format!("{}/v1/cases", app.address);
                let t = t.clone();
                tokio::spawn(async move {
                    let r = client
                        .post(url)
                        .bearer_auth(t)
                        .header("Idempotency-Key", "intake-77")
                        .json(&sibling)
                        .send()
                        .await
                        .unwrap();
                    (r.status(), r.json::<Value>().await.unwrap())
                })
            })
            .collect();
        let mut ids = std::collections::BTreeSet::new();
        for task in tasks {
            let (s, b) = task.await.unwrap();
            assert_eq!(s, StatusCode::CREATED, "{b}");
            assert_eq!(b["version"], 2);
            ids.insert(b["case_id"].as_str().unwrap().to_owned());
        }
        assert_eq!(ids.len(), 1, "one case, whatever the retries");
        assert_eq!(app.event_count(ids.first().unwrap()).await, 2);
    }
);

/// `n` contacts posted to `case` at once, each on its own connection; every answer, in the
/// order the requests were made.
async fn concurrent_contacts(
    app: &TestApp,
    token: &str,
    case: &str,
    n: u64,
) -> Vec<(StatusCode, Value)> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let client = app.client.clone();
            let url = format!("{}/v1/cases/{case}/contacts", app.address);
            let t = token.to_owned();
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .bearer_auth(t)
                    .json(&json!({"component": "monitoring", "contact_type": "phone",
                    "with": ["guardian"], "occurred_at": at(1), "minutes": 10 + i}))
                    .send()
                    .await
                    .unwrap();
                (r.status(), r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

both_stores!(
    concurrent_commands_never_append_on_a_stale_version,
    |app: TestApp| async move {
        let t = app.admin_token.clone();
        let case = open_case(&app, &t, "cm-ada").await;
        let n = 16;
        let mut versions = Vec::new();
        for (s, b) in concurrent_contacts(&app, &t, &case, n).await {
            match s {
                StatusCode::CREATED => versions.push(b["version"].as_u64().unwrap()),
                StatusCode::CONFLICT => {
                    assert_eq!(b["error"]["code"], "concurrency_conflict", "{b}")
                }
                other => panic!("unexpected {other}: {b}"),
            }
        }
        versions.sort_unstable();
        let expected: Vec<u64> = (3..3 + versions.len() as u64).collect();
        assert_eq!(
            versions, expected,
            "every accepted command got its own next version"
        );
        assert!(
            versions.len() >= n as usize / 2,
            "bounded retries let most through: {versions:?}"
        );
        assert_eq!(app.event_count(&case).await, 2 + versions.len());
        let (_, view) = app.get(&format!("/v1/cases/{case}"), &t).await;
        assert_eq!(view["contacts"].as_array().unwrap().len(), versions.len());
        app.assert_cache_matches_replay(&case).await;
    }
);

/// Commands on one case in one process take turns: none races another to append, so even with
/// no conflict retries at all every one of them goes through, each on the state the one before
/// left (and none replays the stream: a lost race used to cost a full replay).
async fn one_case_takes_turns(backend: linkage_tests::Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| c.conflict_retries = 0).await else {
        return;
    };
    let t = app.admin_token.clone();
    let case = open_case(&app, &t, "cm-ada").await;
    let n = 24;
    let mut versions = Vec::new();
    for (s, b) in concurrent_contacts(&app, &t, &case, n).await {
        assert_eq!(s, StatusCode::CREATED, "no command lost a race: {b}");
        versions.push(b["version"].as_u64().unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (3..3 + n).collect::<Vec<u64>>());
    assert_eq!(app.event_count(&case).await, 2 + n as usize);
    app.assert_cache_matches_replay(&case).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_case_takes_turns_sqlite() {
    one_case_takes_turns(linkage_tests::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_case_takes_turns_postgres() {
    one_case_takes_turns(linkage_tests::Backend::Postgres).await;
}

both_stores!(
    two_instances_on_one_store_stay_consistent,
    |app: TestApp| async move {
        // Each instance caches case states and neither knows of the other's writes. The stream's
        // primary key turns every decision made on stale state into a retry on fresh state.
        let t = app.admin_token.clone();
        let other = app.second_instance().await;
        let case = open_case(&app, &t, "cm-ada").await;
        let mut expected_version = 2;
        for i in 0..12 {
            let instance = if i % 3 == 0 { &app } else { &other };
            let (s, b) = instance
            .post(&format!("/v1/cases/{case}/contacts"), &t, &json!({"component": "monitoring",
                "contact_type": "phone", "with": ["guardian"], "occurred_at": at(1), "minutes": 5 + i}))
            .await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
            expected_version += 1;
            assert_eq!(b["version"], expected_version, "{b}");
        }
        // A refusal decided on stale state would be wrong too: reassign on one; the other, whose
        // cache still says cm-ada, must let the new case manager act.
        let (s, b) = other
            .post(
                &format!("/v1/cases/{case}/assignment"),
                &t,
                &json!({"assigned_to": "cm-bo", "on": day(1)}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let bo = app.token(Role::CaseManager, "cm-bo", "default").await;
        let (s, b) = app
            .post(
                &format!("/v1/cases/{case}/contacts"),
                &bo,
                &json!({"component": "monitoring",
                "contact_type": "phone", "with": ["guardian"], "occurred_at": at(1), "minutes": 9}),
            )
            .await;
        assert_eq!(
            s,
            StatusCode::CREATED,
            "the replica's stale cache decided: {b}"
        );
        let ada = app.token(Role::CaseManager, "cm-ada", "default").await;
        let (s, b) = other
            .post(
                &format!("/v1/cases/{case}/contacts"),
                &ada,
                &json!({"component": "monitoring",
                "contact_type": "phone", "with": ["guardian"], "occurred_at": at(1), "minutes": 9}),
            )
            .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("case_not_allowed")),
            "the former case manager is refused on current state: {b}"
        );
        // A rule decided on stale state would be wrong: close on one, then the other must refuse
        // a contact dated after the closure (one dated before it is late documentation).
        let (s, b) = other
            .post(
                &format!("/v1/cases/{case}/transition"),
                &t,
                &json!({"kind": "discharge", "reason": "done", "effective_on": day(1)}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b) = app
            .post(
                &format!("/v1/cases/{case}/contacts"),
                &t,
                &json!({"component": "monitoring",
            "contact_type": "phone", "with": ["guardian"], "occurred_at": at(0), "minutes": 5}),
            )
            .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("case_closed")),
            "{b}"
        );
        app.assert_cache_matches_replay(&case).await;
        other.assert_cache_matches_replay(&case).await;
    }
);

both_stores!(
    corrections_void_and_never_delete,
    |app: TestApp| async move {
        let t = app.admin_token.clone();
        let case = open_case(&app, &t, "cm-ada").await;
        let (s, b) = app
            .post(
                &format!("/v1/cases/{case}/contacts"),
                &t,
                &json!({"component": "monitoring",
            "contact_type": "phone", "with": ["guardian"], "occurred_at": at(1), "minutes": 15}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (_, ev) = app.get(&format!("/v1/cases/{case}/events"), &t).await;
        let contact_event = ev["events"][2]["event_id"].as_str().unwrap().to_owned();
        let (s, b) = app
            .post(
                &format!("/v1/cases/{case}/corrections"),
                &t,
                &json!({"voids_event_id": contact_event, "reason": "logged on the wrong case"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        assert_eq!(b["version"], 4);
        let (s, b) = app
            .post(
                &format!("/v1/cases/{case}/corrections"),
                &t,
                &json!({"voids_event_id": contact_event, "reason": "again"}),
            )
            .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("already_voided"))
        );
        let (_, view) = app.get(&format!("/v1/cases/{case}"), &t).await;
        assert_eq!(
            view["contacts"][0]["voided"], true,
            "voided, still there: {view}"
        );
        let (_, ev) = app.get(&format!("/v1/cases/{case}/events"), &t).await;
        assert_eq!(ev["events"].as_array().unwrap().len(), 4);
        assert_eq!(
            ev["events"][3]["payload"]["voided_event_id"],
            contact_event.as_str()
        );
    }
);

both_stores!(
    stored_events_cannot_be_edited_or_deleted,
    |app: TestApp| async move {
        let t = app.admin_token.clone();
        let _case = open_case(&app, &t, "cm-ada").await;
        let url = app.config.database_url.clone();
        let refused = match url {
            Some(url) => {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                let u = sqlx::query("UPDATE events SET event_type = 'Edited'")
                    .execute(&pool)
                    .await;
                let d = sqlx::query("DELETE FROM events").execute(&pool).await;
                pool.close().await;
                u.is_err() && d.is_err()
            }
            None => {
                let path = app.config.data_dir.join("linkage.db");
                let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                    .await
                    .unwrap();
                let u = sqlx::query("UPDATE events SET event_type = 'Edited'")
                    .execute(&pool)
                    .await;
                let d = sqlx::query("DELETE FROM events").execute(&pool).await;
                pool.close().await;
                u.is_err() && d.is_err()
            }
        };
        assert!(refused, "the store refuses UPDATE and DELETE on events");
        assert_eq!(app.event_count(&_case).await, 2);
    }
);

both_stores!(a_restart_keeps_everything, |app: TestApp| async move {
    let t = app.admin_token.clone();
    let case = open_case(&app, &t, "cm-ada").await;
    let cm = app.token(Role::CaseManager, "cm-ada", "default").await;
    let (_, before) = app.get(&format!("/v1/cases/{case}"), &t).await;
    let app = app.restart().await;
    let (s, after) = app.get(&format!("/v1/cases/{case}"), &t).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(before, after);
    let (s, _) = app.get(&format!("/v1/cases/{case}"), &cm).await;
    assert_eq!(s, StatusCode::OK, "tokens survive a restart");
    let (s, b) = app
        .post(
            &format!("/v1/cases/{case}/contacts"),
            &cm,
            &json!({"component": "monitoring",
            "contact_type": "video", "with": ["child"], "occurred_at": at(0), "minutes": 30}),
        )
        .await;
    assert_eq!(
        (s, b["version"].as_u64()),
        (StatusCode::CREATED, Some(3)),
        "{b}"
    );
});

both_stores!(health_instruments_and_openapi, |app: TestApp| async move {
    let (s, b) = app.get("/healthz", "").await;
    assert_eq!((s, b["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, b) = app.get("/readyz", "").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let billing = app.token(Role::Billing, "bill-1", "default").await;
    let (s, b) = app.get("/v1/instruments", &billing).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["instruments"].as_array().unwrap().len(), 2);
    let (s, b) = app.get("/v1/instruments/prapare", &billing).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["instruments"][0]["items"].as_array().unwrap().len(), 17);
    let (s, _) = app.get("/v1/instruments/phq9", &billing).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, doc) = app.get("/v1/openapi.json", "").await;
    assert_eq!(s, StatusCode::OK);
    for (path, method) in [
        ("/v1/cases", "post"),
        ("/v1/cases/{case_id}", "get"),
        ("/v1/cases/{case_id}/events", "get"),
        ("/v1/cases/{case_id}/screenings", "post"),
        ("/v1/cases/{case_id}/care-plan", "post"),
        ("/v1/cases/{case_id}/referrals", "post"),
        ("/v1/cases/{case_id}/referrals/{referral_id}/status", "post"),
        ("/v1/cases/{case_id}/appointments", "post"),
        (
            "/v1/cases/{case_id}/appointments/{appointment_id}/outcome",
            "post",
        ),
        ("/v1/cases/{case_id}/contacts", "post"),
        ("/v1/cases/{case_id}/transition", "post"),
        ("/v1/cases/{case_id}/reopen", "post"),
        ("/v1/cases/{case_id}/corrections", "post"),
        ("/v1/instruments", "get"),
        ("/v1/instruments/{instrument}", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from the OpenAPI"
        );
    }
    for (path, method) in [
        ("/v1/cases/{case_id}/audit", "get"),
        ("/v1/cases/{case_id}/history", "get"),
        ("/v1/cases/{case_id}/reads", "get"),
        ("/v1/caseloads/{worker_id}", "get"),
        ("/v1/caseloads", "get"),
        ("/v1/measures", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from the OpenAPI"
        );
    }
    // Each measure's definition is in the schema, from the same doc comment as the code's.
    let definition = doc["components"]["schemas"]["Measures"]["properties"]["loop_closure_rate"]
        ["description"]
        .as_str()
        .unwrap_or_default();
    assert!(definition.contains("loop closed"), "{definition}");
    // Enum values agree with the contract.
    let contact_types = &doc["components"]["schemas"]["ContactType"]["enum"];
    assert_eq!(
        contact_types,
        &json!([
            "face_to_face",
            "phone",
            "video",
            "collateral",
            "written",
            "voicemail"
        ])
    );
});

both_stores!(
    the_servers_clock_decides_what_is_in_the_future,
    |app: TestApp| async move {
        let t = app.admin_token.clone();
        let case = open_case(&app, &t, "cm-ada").await;
        // Ten minutes ahead: beyond the five minutes of clock skew a contact time may have.
        let ahead = (app.clock.now() + Duration::minutes(10))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let contact = json!({"component": "monitoring", "contact_type": "phone",
            "with": ["guardian"], "occurred_at": ahead, "minutes": 10});
        let path = format!("/v1/cases/{case}/contacts");
        let (s, b) = app.post(&path, &t, &contact).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("date_in_future")),
            "{b}"
        );
        assert_eq!(app.event_count(&case).await, 2, "a refusal changes nothing");

        // Ten minutes later by the server's clock the same contact is no longer in the future.
        app.clock
            .advance(Duration::minutes(10))
            .expect("a pinned clock");
        let (s, b) = app.post(&path, &t, &contact).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let id = schemas::CaseId::parse(&case).expect("case id");
        let stored = app.store.events_of(id).await.expect("events");
        assert_eq!(
            stored[2].metadata.received_at,
            Some(app.clock.now()),
            "received_at is the server's clock"
        );
    }
);
