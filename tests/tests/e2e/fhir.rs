//! The FHIR R4 endpoint (`/fhir/r4`) against both stores: referrals as Task and ServiceRequest,
//! read and searched by the provider they were sent to and by agency staff, every resource
//! checked against the official FHIR R4 JSON Schema (`ops/fhir-schema-install.sh`, run by node). All names
//! and ids are synthetic.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use chrono::Duration;
use linkage_tests::{both_stores, days_ago as day, TestApp};
use reqwest::StatusCode;
use schemas::Role;
use serde_json::{json, Value};

/// Every resource the server returned, to be validated (`assert_all_valid`).
static SEEN: Mutex<Vec<Value>> = Mutex::new(Vec::new());

/// Fails unless every resource returned so far is valid FHIR R4 JSON, as the official R4 JSON
/// Schema says, checked by the validator that ships it (`ops/fhir-schema-install.sh`, on node).
/// Skipped, and said so, when `LINKAGE_FHIR_VALIDATOR` is not set and not required.
fn assert_all_valid() {
    let seen: Vec<Value> = std::mem::take(&mut *SEEN.lock().unwrap());
    let script = match std::env::var("LINKAGE_FHIR_VALIDATOR") {
        Ok(p) if !p.is_empty() => p,
        _ if std::env::var_os("LINKAGE_REQUIRE_FHIR_VALIDATOR").is_some() => {
            panic!("LINKAGE_REQUIRE_FHIR_VALIDATOR is set but LINKAGE_FHIR_VALIDATOR is not; run ops/test.sh")
        }
        _ => {
            eprintln!("not validating FHIR resources: LINKAGE_FHIR_VALIDATOR is not set");
            return;
        }
    };
    let mut child = Command::new("node")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start node");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(&seen).unwrap())
        .unwrap();
    let out = child.wait_with_output().expect("the validator ran");
    assert!(out.status.success(), "the validator failed");
    let results: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).expect("its report");
    assert_eq!(results.len(), seen.len());
    for (resource, errors) in seen.iter().zip(&results) {
        assert!(
            errors.is_empty(),
            "not valid FHIR R4: {errors:?}\n{resource:#}"
        );
    }
}

/// GET on the FHIR endpoint: status, the body, and the ETag.
async fn fhir_get(app: &TestApp, path: &str, token: &str) -> (StatusCode, Value, Option<String>) {
    let url = if path.starts_with("http") {
        path.to_owned()
    } else {
        format!("{}/fhir/r4{path}", app.address)
    };
    let mut req = app
        .client
        .get(url)
        .header("Accept", "application/fhir+json");
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    fhir_answer(req, path).await
}

/// Sends a request to the FHIR endpoint and takes its answer: status, body (kept to be
/// validated), ETag. Every answer, refusals included, is `application/fhir+json`.
async fn fhir_answer(
    req: reqwest::RequestBuilder,
    path: &str,
) -> (StatusCode, Value, Option<String>) {
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/fhir+json"),
        "{path}: content type {content_type}"
    );
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = resp.json().await.expect("a JSON body");
    SEEN.lock().unwrap().push(body.clone());
    (status, body, etag)
}

fn intake() -> Value {
    json!({
        "program": "wraparound",
        "assigned_to": "cm-fhir",
        "intake_date": day(60),
        "child": {"given_name": "Quinn", "family_name": "Example",
                  "birth_date": linkage_tests::unique_birth_date(), "medicaid_id": "ZZ99000777"},
    })
}

fn at(offset_days: i64) -> String {
    (linkage_tests::now() - Duration::days(offset_days))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn business_status(task: &Value) -> &str {
    task["businessStatus"]["coding"][0]["code"]
        .as_str()
        .unwrap_or("")
}

both_stores!(
    a_provider_reads_its_referrals_as_fhir_tasks,
    |app: TestApp| async move {
        let admin = app.admin_token.clone();
        let (s, b) = app.post("/v1/cases", &admin, &intake()).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let case = b["case_id"].as_str().unwrap().to_owned();
        let p = |s: &str| format!("/v1/cases/{case}{s}");
        let mut referrals = Vec::new();
        for (provider, dnc) in [("prov-fhir-a", true), ("prov-fhir_b@x", false)] {
            let (s, b) = app
                .post(
                    &p("/referrals"),
                    &admin,
                    &json!({"service_type": "outpatient_therapy",
                        "provider": {"id": provider, "name": "Clinic (synthetic)"},
                        "reason": "depressive symptoms", "urgency": "urgent",
                        "sent_on": day(50), "do_not_contact_subject": dnc}),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
            referrals.push(b["referral_id"].as_str().unwrap().to_owned());
        }
        let (ra, rb) = (referrals[0].clone(), referrals[1].clone());
        let service = app.service_token("svc-a", "default", "prov-fhir-a").await;
        app.wait_projected().await;

        // What is served, stated.
        let (s, cap, _) = fhir_get(&app, "/metadata", "").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(cap["resourceType"], "CapabilityStatement");
        assert_eq!(cap["fhirVersion"], "4.0.1");

        // The provider finds its one Task, with what it references.
        let (s, bundle, _) = fhir_get(
            &app,
            "/Task?status=requested&_include=Task:focus&_include=Task:patient",
            &service,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{bundle}");
        assert_eq!(bundle["type"], "searchset");
        assert_eq!(bundle["total"], 1, "{bundle}");
        let entries = bundle["entry"].as_array().unwrap();
        assert_eq!(
            entries.len(),
            3,
            "the Task, its ServiceRequest, the Patient: {bundle}"
        );
        let task = &entries[0]["resource"];
        assert_eq!(task["id"], ra.as_str());
        assert_eq!(task["status"], "requested");
        assert_eq!(business_status(task), "2.0");
        assert_eq!(task["intent"], "order");
        assert_eq!(task["priority"], "urgent");
        assert_eq!(task["focus"]["reference"], format!("ServiceRequest/{ra}"));
        assert_eq!(task["for"]["reference"], format!("Patient/{case}"));
        assert_eq!(task["meta"]["versionId"], "1");
        let owner = task["owner"]["reference"].as_str().unwrap().to_owned();
        let request = &entries[1]["resource"];
        assert_eq!(request["resourceType"], "ServiceRequest");
        assert_eq!(entries[1]["search"]["mode"], "include");
        assert_eq!(request["status"], "active");
        assert_eq!(
            request["orderDetail"][0]["coding"][0]["code"],
            "contacting-subject-prohibited"
        );
        assert_eq!(request["performer"][0]["reference"], owner);
        let patient = &entries[2]["resource"];
        assert_eq!(patient["resourceType"], "Patient");
        assert_eq!(patient["name"][0]["family"], "Example");
        assert!(
            patient.get("identifier").is_none(),
            "a provider is not shown the Medicaid id: {patient}"
        );

        // Its Organization, by the owner reference and by identifier.
        let (s, org, _) = fhir_get(&app, &format!("/{owner}"), &service).await;
        assert_eq!(s, StatusCode::OK, "{org}");
        assert_eq!(org["identifier"][0]["value"], "prov-fhir-a");
        let (s, found, _) = fhir_get(
            &app,
            "/Organization?identifier=urn:linkage:provider|prov-fhir-a",
            &service,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{found}");
        assert_eq!(found["entry"][0]["resource"]["id"], org["id"]);

        // Another provider's referral is not its to read; an unknown one is not found.
        let (s, refused, _) = fhir_get(&app, &format!("/Task/{rb}"), &service).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{refused}");
        assert_eq!(refused["resourceType"], "OperationOutcome");
        assert_eq!(refused["issue"][0]["code"], "forbidden");
        let (s, _, _) = fhir_get(&app, &format!("/Task/{}", uuid::Uuid::now_v7()), &service).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, b, _) =
            fhir_get(&app, &format!("/Task?owner=Organization/{}", "x"), &service).await;
        assert_eq!((s, b["total"].clone()), (StatusCode::OK, json!(0)));

        // A read carries its version as the ETag.
        let (s, task, etag) = fhir_get(&app, &format!("/Task/{ra}"), &service).await;
        assert_eq!(s, StatusCode::OK, "{task}");
        assert_eq!(etag.as_deref(), Some("W/\"1\""));

        // The loop, recorded by staff, shows in the Task: accepted, scheduled, unattended,
        // rescheduled, kept, completed.
        let (s, b) = app
            .post(
                &p(&format!("/referrals/{ra}/status")),
                &admin,
                &json!({"status": "accepted", "on": day(48),
                    "reported_by": {"provider_id": "prov-fhir-a", "channel": "fax"}}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        app.wait_projected().await;
        let (_, task, etag) = fhir_get(&app, &format!("/Task/{ra}"), &service).await;
        assert_eq!(
            (task["status"].as_str(), business_status(&task)),
            (Some("accepted"), "3.0")
        );
        assert_eq!(etag.as_deref(), Some("W/\"2\""));
        let accepted_at = task["meta"]["lastUpdated"].as_str().unwrap().to_owned();

        let (s, b) = app
            .post(
                &p("/appointments"),
                &admin,
                &json!({"referral_id": ra, "scheduled_for": at(40), "on": day(47)}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let appt = b["appointment_id"].as_str().unwrap().to_owned();
        for (outcome, expected) in [
            (
                json!({"outcome": "missed", "on": day(40), "missed_reason": "no_show"}),
                "5.1.2",
            ),
            (
                json!({"outcome": "rescheduled", "on": day(39), "rescheduled_for": at(30)}),
                "5.1.1",
            ),
            (json!({"outcome": "kept", "on": day(30)}), "5.1.4"),
        ] {
            let (s, b) = app
                .post(
                    &p(&format!("/appointments/{appt}/outcome")),
                    &admin,
                    &outcome,
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{b}");
            app.wait_projected().await;
            let (_, task, _) = fhir_get(&app, &format!("/Task/{ra}"), &service).await;
            assert_eq!(task["status"], "in-progress", "{task}");
            assert_eq!(business_status(&task), expected, "{outcome}: {task}");
            assert!(task["output"][0]["type"]["coding"][0]["code"]
                .as_str()
                .unwrap()
                .starts_with("appointment-"));
        }
        let (s, b) = app
            .post(
                &p(&format!("/referrals/{ra}/status")),
                &admin,
                &json!({"status": "completed", "on": day(20), "outcome": "connected",
                    "reported_by": {"provider_id": "prov-fhir-a", "channel": "portal"}}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        app.wait_projected().await;
        let (_, task, etag) = fhir_get(&app, &format!("/Task/{ra}"), &service).await;
        assert_eq!(
            (task["status"].as_str(), business_status(&task)),
            (Some("completed"), "7.0")
        );
        assert_eq!(
            etag.as_deref(),
            Some("W/\"7\""),
            "sent, accepted, scheduled, 3 outcomes, completed"
        );
        let outcome = task["output"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            outcome["valueCodeableConcept"]["coding"][0]["code"],
            "connected"
        );
        let (_, request, _) = fhir_get(&app, &format!("/ServiceRequest/{ra}"), &service).await;
        assert_eq!(request["status"], "completed");

        // _lastUpdated: changed after the acceptance, and not before it.
        let after = fhir_get(
            &app,
            &format!("/Task?_lastUpdated=gt{accepted_at}"),
            &service,
        )
        .await
        .1;
        assert_eq!(after["total"], 1, "{after}");
        let before = fhir_get(
            &app,
            &format!("/Task?_lastUpdated=lt{accepted_at}"),
            &service,
        )
        .await
        .1;
        assert_eq!(before["total"], 0, "{before}");
        let (s, _, _) = fhir_get(&app, "/ServiceRequest?status=completed", &service).await;
        assert_eq!(s, StatusCode::OK);

        // Staff see both referrals, a page at a time, and the child's Medicaid id.
        let (s, page1, _) = fhir_get(&app, "/Task?_count=1", &admin).await;
        assert_eq!(s, StatusCode::OK, "{page1}");
        assert_eq!(page1["total"], 2);
        assert_eq!(page1["entry"].as_array().unwrap().len(), 1);
        let next = page1["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .expect("a next link")["url"]
            .as_str()
            .unwrap()
            .to_owned();
        let (s, page2, _) = fhir_get(&app, &next, &admin).await;
        assert_eq!(s, StatusCode::OK, "{page2}");
        let ids: Vec<String> = [&page1, &page2]
            .iter()
            .map(|b| b["entry"][0]["resource"]["id"].as_str().unwrap().to_owned())
            .collect();
        let mut expected = [ra.clone(), rb.clone()];
        expected.sort();
        assert_eq!(
            ids, expected,
            "pages in referral id order, none skipped or repeated"
        );
        assert!(page2["link"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["relation"] != "next"));
        let (_, patient, _) = fhir_get(&app, &format!("/Patient/{case}"), &admin).await;
        assert_eq!(patient["identifier"][0]["value"], "ZZ99000777", "{patient}");

        // Refusals are OperationOutcomes with the contract's codes.
        let (s, b, _) = fhir_get(&app, "/Task?subject=x", &service).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(
            b["issue"][0]["details"]["coding"][0]["code"],
            "unknown_parameter"
        );
        let (s, b, _) = fhir_get(&app, "/Task?_count=0", &service).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        let (s, b, _) = fhir_get(&app, "/Task", "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
        assert_eq!(b["issue"][0]["code"], "login");
        let billing = app.token(Role::Billing, "bill-1", "default").await;
        let (s, b, _) = fhir_get(&app, "/Task", &billing).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
        let other_cm = app.token(Role::CaseManager, "cm-other", "default").await;
        let (_, b, _) = fhir_get(&app, "/Task", &other_cm).await;
        assert_eq!(
            b["total"], 0,
            "a case manager sees their own cases' referrals only: {b}"
        );
        let (s, b, _) = fhir_get(&app, "/Nothing", &service).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{b}");

        // Every read was logged in the case's read log.
        let (s, reads) = app.get(&p("/reads?limit=1000"), &admin).await;
        assert_eq!(s, StatusCode::OK, "{reads}");
        let routes: Vec<&str> = reads["reads"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["route"].as_str())
            .collect();
        assert!(routes.contains(&"GET /fhir/r4/Task/{id}"), "{routes:?}");
        assert!(routes.contains(&"GET /fhir/r4/Patient/{id}"), "{routes:?}");
        assert!(reads["reads"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["outcome"] == "denied"));
        assert_all_valid();
    }
);

/// PUT on the FHIR endpoint, with `If-Match` when given: status, body, ETag.
async fn fhir_put(
    app: &TestApp,
    path: &str,
    token: &str,
    if_match: Option<&str>,
    body: &Value,
) -> (StatusCode, Value, Option<String>) {
    let mut req = app
        .client
        .put(format!("{}/fhir/r4{path}", app.address))
        .bearer_auth(token)
        .header("Content-Type", "application/fhir+json")
        .json(body);
    if let Some(v) = if_match {
        req = req.header("If-Match", v);
    }
    fhir_answer(req, path).await
}

fn with_business(task: &Value, status: &str, code: &str) -> Value {
    let mut t = task.clone();
    t["status"] = json!(status);
    t["businessStatus"] = json!({"coding": [{
        "system": "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS", "code": code}]});
    t
}

both_stores!(
    a_provider_answers_through_the_task,
    |app: TestApp| async move {
        let admin = app.admin_token.clone();
        let (s, b) = app.post("/v1/cases", &admin, &intake()).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let case = b["case_id"].as_str().unwrap().to_owned();
        let (s, b) = app
            .post(
                &format!("/v1/cases/{case}/referrals"),
                &admin,
                &json!({"service_type": "family_therapy",
                    "provider": {"id": "prov-put", "name": "Clinic (synthetic)"},
                    "reason": "family conflict", "sent_on": day(10)}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let r = b["referral_id"].as_str().unwrap().to_owned();
        let path = format!("/Task/{r}");
        let service = app.service_token("svc-put", "default", "prov-put").await;
        let other = app
            .service_token("svc-other", "default", "prov-other")
            .await;
        app.wait_projected().await;
        let (_, task, etag) = fhir_get(&app, &path, &service).await;
        let etag = etag.unwrap();

        // Refused, and nothing stored: no If-Match, a stale one, a field not the recipient's,
        // another provider, staff, the initiator's status, a step that is not one.
        let events_before = app.event_count(&case).await;
        let accepted = with_business(&task, "accepted", "3.0");
        let (s, b, _) = fhir_put(&app, &path, &service, None, &accepted).await;
        assert_eq!(s, StatusCode::PRECONDITION_REQUIRED, "{b}");
        let (s, b, _) = fhir_put(&app, &path, &service, Some("W/\"9\""), &accepted).await;
        assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{b}");
        assert_eq!(
            b["issue"][0]["details"]["coding"][0]["code"],
            "version_conflict"
        );
        let mut urgent = accepted.clone();
        urgent["priority"] = json!("urgent");
        let (s, b, _) = fhir_put(&app, &path, &service, Some(&etag), &urgent).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
        assert_eq!(
            b["issue"][0]["details"]["coding"][0]["code"],
            "field_not_changeable"
        );
        let (s, b, _) = fhir_put(&app, &path, &other, Some(&etag), &accepted).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
        let (s, b, _) = fhir_put(&app, &path, &admin, Some(&etag), &accepted).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
        let cancelled = with_business(&task, "cancelled", "6.0");
        let (s, b, _) = fhir_put(&app, &path, &service, Some(&etag), &cancelled).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
        assert_eq!(
            b["issue"][0]["details"]["coding"][0]["code"],
            "initiator_status"
        );
        let unattended = with_business(&task, "in-progress", "5.1.2");
        let (s, b, _) = fhir_put(&app, &path, &service, Some(&etag), &unattended).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
        assert_eq!(
            app.event_count(&case).await,
            events_before,
            "nothing was stored"
        );

        // The loop: accept, schedule, unattended, reschedule, kept, completed.
        let (s, task, etag) = fhir_put(&app, &path, &service, Some(&etag), &accepted).await;
        assert_eq!(s, StatusCode::OK, "{task}");
        assert_eq!(
            (task["status"].as_str(), business_status(&task)),
            (Some("accepted"), "3.0")
        );
        // The same update again changes nothing and stores nothing.
        let (s, _, same) = fhir_put(&app, &path, &service, etag.as_deref(), &task).await;
        assert_eq!((s, &same), (StatusCode::OK, &etag));
        let appointment_output = |at: String| {
            json!({"type": {"coding": [{"system": "urn:linkage:task-output",
                "code": "appointment-scheduled"}]}, "valueDateTime": at})
        };
        let mut scheduled = with_business(&task, "in-progress", "5.1.1");
        scheduled["output"] = json!([appointment_output(at(1))]);
        let (s, task, etag) = fhir_put(&app, &path, &service, etag.as_deref(), &scheduled).await;
        assert_eq!(s, StatusCode::OK, "{task}");
        assert_eq!(business_status(&task), "5.1.1");
        let (_, view) = app.get(&format!("/v1/cases/{case}"), &admin).await;
        assert_eq!(view["referrals"][0]["status"], "scheduled", "{view}");
        assert_eq!(view["appointments"][0]["status"], "scheduled", "{view}");

        let unattended = with_business(&task, "in-progress", "5.1.2");
        let (s, task, etag) = fhir_put(&app, &path, &service, etag.as_deref(), &unattended).await;
        assert_eq!(s, StatusCode::OK, "{task}");
        assert_eq!(business_status(&task), "5.1.2");
        let (_, view) = app.get(&format!("/v1/cases/{case}"), &admin).await;
        assert_eq!(view["appointments"][0]["status"], "missed", "{view}");

        let mut rescheduled = with_business(&task, "in-progress", "5.1.1");
        rescheduled["output"]
            .as_array_mut()
            .unwrap()
            .push(appointment_output(at(0)));
        let (s, task, etag) = fhir_put(&app, &path, &service, etag.as_deref(), &rescheduled).await;
        assert_eq!(s, StatusCode::OK, "{task}");
        assert_eq!(business_status(&task), "5.1.1");

        let kept = with_business(&task, "in-progress", "5.1.4");
        let (s, task, etag) = fhir_put(&app, &path, &service, etag.as_deref(), &kept).await;
        assert_eq!(s, StatusCode::OK, "{task}");
        assert_eq!(business_status(&task), "5.1.4");

        let mut completed = with_business(&task, "completed", "7.0");
        completed["output"].as_array_mut().unwrap().push(json!({
            "type": {"coding": [{"system": "urn:linkage:task-output", "code": "referral-outcome"}]},
            "valueCodeableConcept": {"coding": [{"system": "urn:linkage:referral-outcome",
                "code": "connected"}]}}));
        let (s, task, etag) = fhir_put(&app, &path, &service, etag.as_deref(), &completed).await;
        assert_eq!(s, StatusCode::OK, "{task}");
        assert_eq!(
            (task["status"].as_str(), business_status(&task)),
            (Some("completed"), "7.0")
        );
        assert!(etag.is_some());

        // The case view and the stored events agree: the provider's own reports.
        let (_, view) = app.get(&format!("/v1/cases/{case}"), &admin).await;
        assert_eq!(view["referrals"][0]["status"], "completed", "{view}");
        assert_eq!(view["referrals"][0]["outcome"], "connected", "{view}");
        assert_eq!(view["appointments"][0]["status"], "kept", "{view}");
        let (_, events) = app.get(&format!("/v1/cases/{case}/events"), &admin).await;
        let types: Vec<&str> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["event_type"].as_str())
            .collect();
        assert_eq!(
            types[types.len() - 6..],
            [
                "ReferralAccepted",
                "AppointmentScheduled",
                "AppointmentMissed",
                "AppointmentRescheduled",
                "AppointmentKept",
                "ReferralCompleted"
            ],
            "{types:?}"
        );
        let last = events["events"].as_array().unwrap().last().unwrap();
        assert_eq!(last["actor"]["id"], "svc-put", "{last}");
        assert_eq!(last["payload"]["reported"]["by"], "provider", "{last}");
        // The Task's history: every version, newest first, its business statuses the loop's.
        let (s, history, _) = fhir_get(&app, &format!("{path}/_history"), &service).await;
        assert_eq!(s, StatusCode::OK, "{history}");
        assert_eq!(history["type"], "history");
        let codes: Vec<&str> = history["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| business_status(&e["resource"]))
            .collect();
        assert_eq!(
            codes,
            ["7.0", "5.1.4", "5.1.1", "5.1.2", "5.1.1", "3.0", "2.0"]
        );
        let (s, second, etag2) = fhir_get(&app, &format!("{path}/_history/2"), &service).await;
        assert_eq!(s, StatusCode::OK, "{second}");
        assert_eq!(
            (second["status"].as_str(), etag2.as_deref()),
            (Some("accepted"), Some("W/\"2\""))
        );
        let (s, _, _) = fhir_get(&app, &format!("{path}/_history/99"), &service).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _, _) = fhir_get(&app, &format!("{path}/_history"), &other).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        // And the projection, once caught up, serves what the update answered.
        app.wait_projected().await;
        let (_, read, read_etag) = fhir_get(&app, &path, &service).await;
        assert_eq!(read, task);
        assert_eq!(read_etag, etag);
        assert_all_valid();
    }
);

both_stores!(
    two_updates_from_one_version_one_wins_on_any_replica,
    |app: TestApp| async move {
        let admin = app.admin_token.clone();
        let second = app.second_instance().await;
        let (s, b) = app.post("/v1/cases", &admin, &intake()).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let case = b["case_id"].as_str().unwrap().to_owned();
        let service = app.service_token("svc-race", "default", "prov-race").await;
        for round in 0..4 {
            let (s, b) = app
                .post(
                    &format!("/v1/cases/{case}/referrals"),
                    &admin,
                    &json!({"service_type": "respite", "provider": {"id": "prov-race"},
                        "reason": "caregiver strain", "sent_on": day(5)}),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
            let r = b["referral_id"].as_str().unwrap().to_owned();
            app.wait_projected().await;
            let path = format!("/Task/{r}");
            let (_, task, etag) = fhir_get(&app, &path, &service).await;
            // Two different answers from the same version, on two replicas at once.
            let accept = with_business(&task, "accepted", "3.0");
            let mut decline = with_business(&task, "rejected", "4.0");
            decline["statusReason"] = json!({"coding": [{"system": "urn:linkage:status-reason",
                "code": "no_capacity"}], "text": "no openings this quarter"});
            let (first, second_answer) = tokio::join!(
                fhir_put(&app, &path, &service, etag.as_deref(), &accept),
                fhir_put(&second, &path, &service, etag.as_deref(), &decline),
            );
            let statuses = [first.0, second_answer.0];
            assert!(
                statuses.contains(&StatusCode::OK)
                    && statuses.contains(&StatusCode::PRECONDITION_FAILED),
                "round {round}: one wins, one is told its version is stale: {statuses:?} {} {}",
                first.1,
                second_answer.1
            );
            let (_, view) = app.get(&format!("/v1/cases/{case}"), &admin).await;
            let referral = view["referrals"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["referral_id"] == r.as_str())
                .unwrap()
                .clone();
            let winner = if first.0 == StatusCode::OK {
                "accepted"
            } else {
                "declined"
            };
            assert_eq!(referral["status"], winner, "round {round}: {referral}");
            assert_eq!(
                referral["history"].as_array().map(Vec::len),
                Some(1),
                "round {round}: one status stored: {referral}"
            );
        }
        assert_all_valid();
    }
);

/// Runs one step of `ops/fhir/client_loop.py` (fhirpy, a real FHIR client) against the app:
/// its JSON answer. None (skipped, said so) when `LINKAGE_FHIRPY` is not set and not required.
async fn fhirpy(app: &TestApp, token: &str, args: &[&str]) -> Option<Value> {
    let python = match std::env::var("LINKAGE_FHIRPY") {
        Ok(p) if !p.is_empty() => p,
        _ if std::env::var_os("LINKAGE_REQUIRE_FHIRPY").is_some() => {
            panic!("LINKAGE_REQUIRE_FHIRPY is set but LINKAGE_FHIRPY is not; run ops/test.sh")
        }
        _ => {
            eprintln!("skipping the FHIR client loop: LINKAGE_FHIRPY is not set");
            return None;
        }
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../ops/fhir/client_loop.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(format!("{}/fhir/r4", app.address))
        .arg(token)
        .args(args)
        .output()
        .await
        .expect("run the FHIR client");
    assert!(
        out.status.success(),
        "fhirpy {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("the client's JSON"))
}

/// The public events on the bus for `case`, as event types, once the relay has caught up.
async fn relayed_types(app: &TestApp, bus: &linkage_tests::nats::Bus, case: &str) -> Vec<String> {
    crate::bus::wait_relayed(app).await;
    crate::bus::stream_messages(bus)
        .await
        .into_iter()
        .filter(|(_, _, m)| m["case_id"] == case)
        .map(|(_, _, m)| m["event_type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn loop_through_a_fhir_client(backend: linkage_tests::Backend) {
    let Some(bus) = linkage_tests::nats::Bus::shared() else {
        return;
    };
    let Some(app) = crate::bus::spawn(backend, Some(&bus)).await else {
        return;
    };
    let admin = app.admin_token.clone();
    let (s, b) = app.post("/v1/cases", &admin, &intake()).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let case = b["case_id"].as_str().unwrap().to_owned();
    let (s, b) = app
        .post(
            &format!("/v1/cases/{case}/referrals"),
            &admin,
            &json!({"service_type": "parent_support", "provider": {"id": "prov-loop"},
                "reason": "parenting stress", "sent_on": day(10), "do_not_contact_subject": true}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let referral = b["referral_id"].as_str().unwrap().to_owned();
    let service = app.service_token("svc-loop", "default", "prov-loop").await;
    app.wait_projected().await;

    // The provider's client finds the new Task and reads what it references.
    let Some(found) = fhirpy(&app, &service, &["find"]).await else {
        return;
    };
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
    let task = &found[0];
    assert_eq!(task["task"], referral.as_str());
    assert_eq!(task["service_request"], referral.as_str());
    assert_eq!(task["service_type"], "parent_support");
    assert_eq!(task["owner"], task["performer"]);
    assert_eq!(task["patient"], case.as_str());
    assert_eq!(task["patient_family"], "Example");
    assert_eq!(
        task["patient_identifiers"], 0,
        "no Medicaid id for a provider"
    );

    // Each step: the client's answer, the case view and the bus agree.
    let steps: [(&[&str], &str, &str, &str, &str); 6] = [
        (
            &["accept"],
            "accepted",
            "3.0",
            "accepted",
            "ReferralAccepted",
        ),
        (
            &["schedule", &at(1)],
            "in-progress",
            "5.1.1",
            "scheduled",
            "AppointmentScheduled",
        ),
        (
            &["unattended"],
            "in-progress",
            "5.1.2",
            "scheduled",
            "AppointmentMissed",
        ),
        (
            &["schedule", &at(0)],
            "in-progress",
            "5.1.1",
            "scheduled",
            "AppointmentRescheduled",
        ),
        (
            &["kept"],
            "in-progress",
            "5.1.4",
            "scheduled",
            "AppointmentKept",
        ),
        (
            &["complete", "connected"],
            "completed",
            "7.0",
            "completed",
            "ReferralCompleted",
        ),
    ];
    let mut version = 1;
    for (args, status, business, referral_status, event) in steps {
        let mut argv = vec![args[0], referral.as_str()];
        argv.extend(&args[1..]);
        let answer = fhirpy(&app, &service, &argv).await.expect("fhirpy runs");
        assert_eq!(answer["status"], status, "{args:?}: {answer}");
        assert_eq!(answer["business_status"], business, "{args:?}: {answer}");
        assert_eq!(answer["was"], version.to_string(), "{args:?}: {answer}");
        version += 1;
        assert_eq!(answer["version"], version.to_string(), "{args:?}: {answer}");
        let (_, view) = app.get(&format!("/v1/cases/{case}"), &admin).await;
        assert_eq!(
            view["referrals"][0]["status"], referral_status,
            "{args:?}: {view}"
        );
        let on_bus = relayed_types(&app, &bus, &case).await;
        assert_eq!(
            on_bus.last().map(String::as_str),
            Some(event),
            "{args:?}: {on_bus:?}"
        );
        let stored: Vec<String> = crate::bus::public_events_of(&app, &case)
            .await
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        assert_eq!(
            on_bus, stored,
            "{args:?}: the bus carries every public event once"
        );
    }
    let (_, view) = app.get(&format!("/v1/cases/{case}"), &admin).await;
    assert_eq!(view["referrals"][0]["outcome"], "connected", "{view}");
    assert_eq!(view["appointments"][0]["status"], "kept", "{view}");
    let supervisor = app.token(Role::Supervisor, "sup-loop", "default").await;
    let (s, measures) = app
        .get(
            &format!("/v1/measures?from={}&to={}", day(30), day(0)),
            &supervisor,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{measures}");
    assert_eq!(
        measures["closed_loops_by_reporter"]["provider"], 1,
        "{measures}"
    );
    assert_eq!(
        measures["closed_loops_by_outcome"]["connected"], 1,
        "{measures}"
    );
    assert_all_valid();
}

linkage_tests::both_backends!(a_fhir_client_drives_the_loop, loop_through_a_fhir_client);

/// POSTs a Subscription to `address` (an app, or a second replica): status and body.
async fn post_subscription(
    app: &TestApp,
    address: &str,
    token: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let req = app
        .client
        .post(format!("{address}/fhir/r4/Subscription"))
        .bearer_auth(token)
        .header("Content-Type", "application/fhir+json")
        .json(body);
    let (status, body, _) = fhir_answer(req, "/Subscription").await;
    (status, body)
}

/// The least a subscription to the one topic says.
fn subscription_to(endpoint: &str) -> Value {
    json!({"resourceType": "Subscription", "status": "requested", "reason": "ours",
        "criteria": "urn:linkage:topic:task-owner-changed",
        "channel": {"type": "rest-hook", "endpoint": endpoint}})
}

/// What the receiver took: each body, with its Authorization header.
type Received = std::sync::Arc<Mutex<Vec<(Value, Option<String>)>>>;

/// An HTTP endpoint of the test's own that takes notifications: every body POSTed to it, and
/// the number of requests it still refuses (500) before it takes them.
struct Receiver {
    url: String,
    received: Received,
    refuse: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(refuse_first: usize) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let received: Received = Arc::default();
        let refuse = Arc::new(AtomicUsize::new(refuse_first));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post({
                let (received, refuse) = (received.clone(), refuse.clone());
                move |headers: axum::http::HeaderMap, body: String| {
                    let (received, refuse) = (received.clone(), refuse.clone());
                    async move {
                        if refuse
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok()
                        {
                            return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        received
                            .lock()
                            .unwrap()
                            .push((serde_json::from_str(&body).expect("JSON"), auth));
                        axum::http::StatusCode::OK
                    }
                }
            }),
        );
        // `/moved` sends every notification on to `/hook`, which a notifier must not follow.
        let app = app.route(
            "/moved",
            axum::routing::post(|| async {
                (
                    axum::http::StatusCode::TEMPORARY_REDIRECT,
                    [(axum::http::header::LOCATION, "/hook")],
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            received,
            refuse,
            _server: server,
        }
    }

    /// The Tasks named by the notifications received so far, in order (with repeats).
    fn focuses(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(bundle, _)| {
                bundle["entry"][0]["resource"]["parameter"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|p| p["name"] == "notification-event")
            .filter_map(|p| {
                p["part"]
                    .as_array()?
                    .iter()
                    .find(|x| x["name"] == "focus")?["valueReference"]["reference"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    }

    /// The event numbers of the notifications received so far, in order.
    fn numbers(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(b, _)| {
                b["entry"][0]["resource"]["parameter"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|p| p["name"] == "notification-event")
            .filter_map(|p| p["part"][0]["valueString"].as_str().map(str::to_owned))
            .collect()
    }

    async fn wait_for(&self, task: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !self.focuses().iter().any(|f| f == &format!("Task/{task}")) {
            assert!(
                std::time::Instant::now() < deadline,
                "no notification of {task}: {:?}",
                self.focuses()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

both_stores!(
    a_subscribed_provider_hears_of_its_tasks,
    |app: TestApp| async move {
        let admin = app.admin_token.clone();
        // The endpoint refuses the first two deliveries: they are retried.
        let hook = Receiver::start(2).await;
        let service = app.service_token("svc-sub", "default", "prov-sub").await;
        let (s, b) = app.post("/v1/cases", &admin, &intake()).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let case = b["case_id"].as_str().unwrap().to_owned();
        let send = |provider: &'static str| {
            let (app, admin, case) = (&app, admin.clone(), case.clone());
            async move {
                let (s, b) = app
                    .post(
                        &format!("/v1/cases/{case}/referrals"),
                        &admin,
                        &json!({"service_type": "mentoring", "provider": {"id": provider},
                            "reason": "peer support", "sent_on": day(3)}),
                    )
                    .await;
                assert_eq!(s, StatusCode::CREATED, "{b}");
                b["referral_id"].as_str().unwrap().to_owned()
            }
        };
        // A referral from before the subscription is not announced.
        let before = send("prov-sub").await;
        app.wait_projected().await;

        let subscription = json!({"resourceType": "Subscription", "status": "requested",
            "reason": "referrals to us", "criteria": "urn:linkage:topic:task-owner-changed",
            "channel": {"type": "rest-hook", "endpoint": hook.url, "payload": "application/fhir+json",
                "_payload": {"extension": [{"url":
                    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content",
                    "valueCode": "id-only"}]},
                "header": ["Authorization: Bearer hook-secret"]}});
        let post = |body: Value, token: String| {
            let app = &app;
            async move { post_subscription(app, &app.address, &token, &body).await }
        };
        // Refused: another topic, another channel, a staff token.
        let mut other_topic = subscription.clone();
        other_topic["criteria"] = json!("Task?status=requested");
        assert_eq!(
            post(other_topic, service.clone()).await.0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let mut email = subscription.clone();
        email["channel"]["type"] = json!("email");
        assert_eq!(
            post(email, service.clone()).await.0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            post(subscription.clone(), admin.clone()).await.0,
            StatusCode::FORBIDDEN
        );
        let (s, created) = post(subscription.clone(), service.clone()).await;
        assert_eq!(s, StatusCode::CREATED, "{created}");
        assert_eq!(created["status"], "active");
        assert!(
            created["channel"].get("header").is_none(),
            "header values are never shown back"
        );
        let id = created["id"].as_str().unwrap().to_owned();

        // A new referral to the provider, and a change to it, are announced; another
        // provider's referral is not.
        let theirs = send("prov-sub").await;
        let _elsewhere = send("prov-elsewhere").await;
        hook.wait_for(&theirs).await;
        let (s, b) = app
            .post(
                &format!("/v1/cases/{case}/referrals/{theirs}/status"),
                &admin,
                &json!({"status": "accepted", "on": day(1),
                    "reported_by": {"provider_id": "prov-sub", "channel": "phone"}}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while hook
            .focuses()
            .iter()
            .filter(|f| **f == format!("Task/{theirs}"))
            .count()
            < 2
        {
            assert!(std::time::Instant::now() < deadline, "{:?}", hook.focuses());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            hook.refuse.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the refusals were retried"
        );
        let focuses = hook.focuses();
        assert!(
            focuses.iter().all(|f| *f == format!("Task/{theirs}")),
            "only the subscriber's new Task: {focuses:?} (not {before})"
        );
        let received = hook.received.lock().unwrap().clone();
        for (bundle, auth) in &received {
            assert_eq!(bundle["type"], "history");
            assert_eq!(auth.as_deref(), Some("Bearer hook-secret"));
            let status = &bundle["entry"][0]["resource"];
            assert_eq!(status["resourceType"], "Parameters");
            SEEN.lock().unwrap().push(bundle.clone());
        }
        let numbers = hook.numbers();
        assert_eq!(
            numbers,
            ["1", "2"],
            "events numbered from the subscription's start"
        );

        // The subscription reads back; deleted, it hears nothing more.
        let (s, read, _) = fhir_get(&app, &format!("/Subscription/{id}"), &service).await;
        assert_eq!(s, StatusCode::OK, "{read}");
        assert_eq!(read["criteria"], "urn:linkage:topic:task-owner-changed");
        let other = app
            .service_token("svc-sub2", "default", "prov-elsewhere")
            .await;
        let (s, _, _) = fhir_get(&app, &format!("/Subscription/{id}"), &other).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let resp = app
            .client
            .delete(format!("{}/fhir/r4/Subscription/{id}", app.address))
            .bearer_auth(&service)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let (_, read, _) = fhir_get(&app, &format!("/Subscription/{id}"), &service).await;
        assert_eq!(read["status"], "off");
        assert_all_valid();
    }
);

/// Two replicas on one database: one notifies at a time, every new Task is announced, and no
/// event number is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_notify_once() {
    let Some(app) = TestApp::spawn(linkage_tests::Backend::Postgres).await else {
        return;
    };
    let second = app.second_instance().await;
    let hook = Receiver::start(0).await;
    let admin = app.admin_token.clone();
    let service = app.service_token("svc-two", "default", "prov-two").await;
    let (s, b) =
        post_subscription(&app, &second.address, &service, &subscription_to(&hook.url)).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = app.post("/v1/cases", &admin, &intake()).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let case = b["case_id"].as_str().unwrap().to_owned();
    let mut referrals = Vec::new();
    for (i, replica) in [&app, &second, &app, &second, &app, &second]
        .into_iter()
        .enumerate()
    {
        let (s, b) = replica
            .post(
                &format!("/v1/cases/{case}/referrals"),
                &admin,
                &json!({"service_type": "tutoring", "provider": {"id": "prov-two"},
                    "reason": format!("round {i}"), "sent_on": day(2)}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        referrals.push(b["referral_id"].as_str().unwrap().to_owned());
    }
    for r in &referrals {
        hook.wait_for(r).await;
    }
    let numbers = hook.numbers();
    let expected: Vec<String> = (1..=referrals.len()).map(|n| n.to_string()).collect();
    assert_eq!(numbers, expected, "each change once, numbered in order");
}

both_stores!(
    a_notification_is_not_redirected,
    |app: TestApp| async move {
        let hook = Receiver::start(0).await;
        let service = app
            .service_token("svc-moved", "default", "prov-moved")
            .await;
        let moved = hook.url.replace("/hook", "/moved");
        let (s, created) =
            post_subscription(&app, &app.address, &service, &subscription_to(&moved)).await;
        assert_eq!(s, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let (s, b) = app.post("/v1/cases", &app.admin_token, &intake()).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let case = b["case_id"].as_str().unwrap().to_owned();
        let (s, b) = app
            .post(
                &format!("/v1/cases/{case}/referrals"),
                &app.admin_token,
                &json!({"service_type": "tutoring", "provider": {"id": "prov-moved"},
                    "reason": "reading", "sent_on": day(2)}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        // The delivery fails on the redirect and shows on the Subscription; nothing arrives.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (_, sub, _) = fhir_get(&app, &format!("/Subscription/{id}"), &service).await;
            if sub["status"] == "error" {
                assert!(sub["error"].as_str().unwrap().contains("307"), "{sub}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{sub}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(hook.received.lock().unwrap().is_empty());
        assert_all_valid();
    }
);
