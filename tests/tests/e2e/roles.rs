//! The role model, checked by trying every role on every route. "Allowed" means the request got
//! past authorisation (whatever the business rules then said); "denied" means 403.

use linkage_tests::{both_stores, TestApp};
use reqwest::StatusCode;
use schemas::Role;
use serde_json::{json, Value};

use linkage_tests::days_ago as day;

/// Who calls: a role, and whether the case is theirs (assigned / same agency).
#[derive(Debug, Clone, Copy)]
enum Who {
    Admin,
    SupervisorSameAgency,
    SupervisorOtherAgency,
    AssignedCaseManager,
    OtherCaseManager,
    AuditorSameAgency,
    AuditorOtherAgency,
    Billing,
    ServiceSameAgency,
    ServiceOtherAgency,
}

const EVERYONE: [Who; 10] = [
    Who::Admin,
    Who::SupervisorSameAgency,
    Who::SupervisorOtherAgency,
    Who::AssignedCaseManager,
    Who::OtherCaseManager,
    Who::AuditorSameAgency,
    Who::AuditorOtherAgency,
    Who::Billing,
    Who::ServiceSameAgency,
    Who::ServiceOtherAgency,
];

impl Who {
    fn identity(self) -> (Role, &'static str, &'static str) {
        match self {
            Who::Admin => (Role::Admin, "admin-2", "north"),
            Who::SupervisorSameAgency => (Role::Supervisor, "sup-north", "north"),
            Who::SupervisorOtherAgency => (Role::Supervisor, "sup-south", "south"),
            Who::AssignedCaseManager => (Role::CaseManager, "cm-ada", "north"),
            Who::OtherCaseManager => (Role::CaseManager, "cm-bo", "north"),
            Who::AuditorSameAgency => (Role::Auditor, "aud-north", "north"),
            Who::AuditorOtherAgency => (Role::Auditor, "aud-south", "south"),
            Who::Billing => (Role::Billing, "bill-north", "north"),
            Who::ServiceSameAgency => (Role::Service, "svc-north", "north"),
            Who::ServiceOtherAgency => (Role::Service, "svc-south", "south"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    /// Commands on a case: admin, supervisor of the agency, the assigned case manager.
    CaseCommand,
    /// Referral status and appointment outcomes: the above plus a service of the agency.
    RecipientReport,
    /// Reassignment: admin and supervisor of the agency.
    Assign,
    /// Reading a case: admin, supervisor and auditor of the agency, the assigned case manager.
    Read,
    /// The audit trail: admin and the agency's auditor.
    Audit,
    /// History as of a time: admin, and the agency's supervisor and auditor.
    History,
}

fn allowed(rule: Rule, who: Who) -> bool {
    use Who::*;
    match rule {
        Rule::CaseCommand => matches!(who, Admin | SupervisorSameAgency | AssignedCaseManager),
        Rule::RecipientReport => matches!(
            who,
            Admin | SupervisorSameAgency | AssignedCaseManager | ServiceSameAgency
        ),
        Rule::Assign => matches!(who, Admin | SupervisorSameAgency),
        Rule::Audit => matches!(who, Admin | AuditorSameAgency),
        Rule::History => matches!(who, Admin | SupervisorSameAgency | AuditorSameAgency),
        Rule::Read => matches!(
            who,
            Admin | SupervisorSameAgency | AssignedCaseManager | AuditorSameAgency
        ),
    }
}

both_stores!(every_role_on_every_route, |app: TestApp| async move {
    let sup = app.token(Role::Supervisor, "sup-north", "north").await;
    let mut tokens = Vec::new();
    for who in EVERYONE {
        let (role, actor, agency) = who.identity();
        // A receiving system's token speaks for the provider the fixture's referral went to.
        let token = match role {
            Role::Service => app.service_token(actor, agency, "prov-1").await,
            _ => app.token(role, actor, agency).await,
        };
        tokens.push((who, token));
    }

    // A fresh case per route and caller keeps one caller's success from changing another's
    // outcome; the fixture has an accepted referral with a scheduled appointment.
    async fn fixture(app: &TestApp, sup: &str) -> (String, String, String, String) {
        let (s, b) = app
            .post(
                "/v1/cases",
                sup,
                &json!({"program": "tcm", "assigned_to": "cm-ada",
                "intake_date": day(30), "child": {"given_name": "Kit", "family_name": "Sample",
                "birth_date": linkage_tests::unique_birth_date()}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let case = b["case_id"].as_str().unwrap().to_owned();
        let (s, b) = app
            .post(
                &format!("/v1/cases/{case}/referrals"),
                sup,
                &json!({"service_type": "housing",
                "provider": {"id": "prov-1"}, "reason": "housing", "sent_on": day(20)}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let referral = b["referral_id"].as_str().unwrap().to_owned();
        let (s, b) = app
            .post(
                &format!("/v1/cases/{case}/referrals/{referral}/status"),
                sup,
                &json!({"status": "accepted", "on": day(19),
                    "reported_by": {"provider_id": "prov-1", "channel": "phone"}}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b) = app
            .post(
                &format!("/v1/cases/{case}/appointments"),
                sup,
                &json!({"referral_id": referral, "scheduled_for": format!("{}T10:00:00Z", day(10)),
                          "on": day(18)}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let appt = b["appointment_id"].as_str().unwrap().to_owned();
        let (_, ev) = app.get(&format!("/v1/cases/{case}/events"), sup).await;
        let event = ev["events"][4]["event_id"].as_str().unwrap().to_owned();
        (case, referral, appt, event)
    }

    type Route = (
        &'static str,
        Rule,
        fn(&str, &str, &str, &str) -> (String, Option<Value>),
    );
    let routes: Vec<Route> = vec![
        ("GET case", Rule::Read, |c, _, _, _| {
            (format!("/v1/cases/{c}"), None)
        }),
        ("GET events", Rule::Read, |c, _, _, _| {
            (format!("/v1/cases/{c}/events"), None)
        }),
        ("GET audit", Rule::Audit, |c, _, _, _| {
            (format!("/v1/cases/{c}/audit"), None)
        }),
        ("GET reads", Rule::Audit, |c, _, _, _| {
            (format!("/v1/cases/{c}/reads"), None)
        }),
        ("GET history", Rule::History, |c, _, _, _| {
            (format!("/v1/cases/{c}/history?basis=occurred"), None)
        }),
        ("assignment", Rule::Assign, |c, _, _, _| {
            (
                format!("/v1/cases/{c}/assignment"),
                Some(json!({"assigned_to": "cm-bo", "on": day(1)})),
            )
        }),
        ("screenings", Rule::CaseCommand, |c, _, _, _| {
            (
                format!("/v1/cases/{c}/screenings"),
                Some(
                    json!({"instrument": "cans", "administered_on": day(1), "ratings": {"lf.sleep": 1}}),
                ),
            )
        }),
        ("care-plan", Rule::CaseCommand, |c, _, _, _| {
            (
                format!("/v1/cases/{c}/care-plan"),
                Some(
                    json!({"goals": [{"description": "g"}], "family_participated": true, "reassess_by": day(-30)}),
                ),
            )
        }),
        ("referrals", Rule::CaseCommand, |c, _, _, _| {
            (
                format!("/v1/cases/{c}/referrals"),
                Some(
                    json!({"service_type": "food", "provider": {"id": "p2"}, "reason": "r", "sent_on": day(1)}),
                ),
            )
        }),
        ("referral status", Rule::RecipientReport, |c, r, _, _| {
            (
                format!("/v1/cases/{c}/referrals/{r}/status"),
                Some(
                    json!({"status": "completed", "on": day(1), "outcome": "connected",
                    "reported_by": {"provider_id": "prov-1", "channel": "phone"}}),
                ),
            )
        }),
        ("appointments", Rule::CaseCommand, |c, r, _, _| {
            (
                format!("/v1/cases/{c}/appointments"),
                Some(json!({"referral_id": r, "scheduled_for": format!("{}T10:00:00Z", day(-3))})),
            )
        }),
        (
            "appointment outcome",
            Rule::RecipientReport,
            |c, _, a, _| {
                (
                    format!("/v1/cases/{c}/appointments/{a}/outcome"),
                    Some(json!({"outcome": "kept", "on": day(1)})),
                )
            },
        ),
        ("contacts", Rule::CaseCommand, |c, _, _, _| {
            (
                format!("/v1/cases/{c}/contacts"),
                Some(
                    json!({"component": "monitoring", "contact_type": "phone", "with": ["guardian"],
                        "occurred_at": format!("{}T10:00:00Z", day(1)), "minutes": 20}),
                ),
            )
        }),
        ("transition", Rule::CaseCommand, |c, _, _, _| {
            (
                format!("/v1/cases/{c}/transition"),
                Some(
                    json!({"kind": "discharge", "reason": "done", "effective_on": day(1), "open_referrals": "cancel"}),
                ),
            )
        }),
        ("reopen", Rule::CaseCommand, |c, _, _, _| {
            (
                format!("/v1/cases/{c}/reopen"),
                Some(json!({"reason": "again", "on": day(1)})),
            )
        }),
        ("corrections", Rule::CaseCommand, |c, _, _, e| {
            (
                format!("/v1/cases/{c}/corrections"),
                Some(json!({"voids_event_id": e, "reason": "error"})),
            )
        }),
    ];

    let mut failures = Vec::new();
    for (name, rule, build) in &routes {
        for (who, token) in &tokens {
            let (case, referral, appt, event) = fixture(&app, &sup).await;
            let (path, mut body) = build(&case, &referral, &appt, &event);
            // The provider's own system reports as itself; staff say who reported.
            if who.identity().0 == Role::Service {
                if let Some(Value::Object(b)) = &mut body {
                    b.remove("reported_by");
                }
            }
            let before = app.event_count(&case).await;
            let (status, reply) = match &body {
                Some(b) => app.post(&path, token, b).await,
                None => app.get(&path, token).await,
            };
            let expect_allowed = allowed(*rule, *who);
            let denied = status == StatusCode::FORBIDDEN;
            if denied == expect_allowed || status.is_server_error() {
                failures.push(format!("{name} as {who:?}: {status} {reply}"));
            }
            if expect_allowed && body.is_some() && name != &"reopen" && !status.is_success() {
                failures.push(format!(
                    "{name} as {who:?} should succeed: {status} {reply}"
                ));
            }
            if denied {
                assert!(
                    reply["error"]["code"]
                        .as_str()
                        .is_some_and(|c| c.ends_with("_not_allowed")),
                    "{reply}"
                );
                assert_eq!(
                    app.event_count(&case).await,
                    before,
                    "a refusal changes nothing"
                );
            }
        }
    }

    // Opening a case: admin and supervisors for anyone; a case manager only for themselves.
    for (who, token) in &tokens {
        let (role, actor, _) = who.identity();
        let body = json!({"program": "tcm", "assigned_to": "cm-ada", "intake_date": day(5),
            "child": {"given_name": "Kit", "family_name": "Sample", "birth_date": linkage_tests::unique_birth_date()}});
        let (status, reply) = app.post("/v1/cases", token, &body).await;
        let expect = matches!(role, Role::Admin | Role::Supervisor) || actor == "cm-ada";
        if (status == StatusCode::CREATED) != expect {
            failures.push(format!("open case as {who:?}: {status} {reply}"));
        }
    }
    assert!(
        failures.is_empty(),
        "role model violations:\n{}",
        failures.join("\n")
    );
});

/// A referral to prov-1 in the state a status starts from; returns (case, referral).
async fn referral_ready_for(app: &TestApp, sup: &str, status: &str) -> (String, String) {
    let post = |path: String, body: Value| async move {
        let (s, b) = app.post(&path, sup, &body).await;
        assert!(s.is_success(), "{path}: {s} {b}");
        b
    };
    let b = post(
        "/v1/cases".into(),
        json!({"program": "tcm", "assigned_to": "cm-ada",
        "intake_date": day(30),
        "child": {"given_name": "Rae", "family_name": "Sample", "birth_date": linkage_tests::unique_birth_date()}}),
    )
    .await;
    let case = b["case_id"].as_str().unwrap().to_owned();
    let b = post(
        format!("/v1/cases/{case}/referrals"),
        json!({"service_type": "food",
        "provider": {"id": "prov-1"}, "reason": "r", "sent_on": day(20)}),
    )
    .await;
    let referral = b["referral_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/cases/{case}/referrals/{referral}/status");
    match status {
        "completed" => {
            post(
                path,
                json!({"status": "accepted", "on": day(19),
                "reported_by": {"provider_id": "prov-1", "channel": "phone"}}),
            )
            .await;
        }
        "cancelled" => {
            post(
                path,
                json!({"status": "cancellation_requested", "on": day(19),
                "reason": "family moved"}),
            )
            .await;
        }
        _ => {}
    }
    (case, referral)
}

both_stores!(
    referral_statuses_come_from_the_side_that_owns_them,
    |app: TestApp| async move {
        let sup = app.token(Role::Supervisor, "sup-north", "default").await;
        let callers = [
            ("admin", app.admin_token.clone(), false),
            ("supervisor", sup.clone(), false),
            (
                "case manager",
                app.token(Role::CaseManager, "cm-ada", "default").await,
                false,
            ),
            (
                "prov-1's system",
                app.service_token("svc-1", "default", "prov-1").await,
                true,
            ),
            (
                "prov-2's system",
                app.service_token("svc-2", "default", "prov-2").await,
                true,
            ),
        ];
        // status, body, recipient's status?
        let statuses = [
            (
                "accepted",
                json!({"status": "accepted", "on": day(18)}),
                true,
            ),
            (
                "declined",
                json!({"status": "declined", "on": day(18), "reason": "waitlist full",
                "outcome": "no_capacity"}),
                true,
            ),
            (
                "completed",
                json!({"status": "completed", "on": day(10), "outcome": "connected"}),
                true,
            ),
            (
                "cancellation_requested",
                json!({"status": "cancellation_requested", "on": day(18),
                "reason": "no longer needed"}),
                false,
            ),
            (
                "cancelled",
                json!({"status": "cancelled", "on": day(18),
                "outcome": "no_longer_needed"}),
                false,
            ),
        ];
        let mut failures = Vec::new();
        for (status, body, recipients) in &statuses {
            for (who, token, is_service) in &callers {
                let (case, referral) = referral_ready_for(&app, &sup, status).await;
                let mut body = body.clone();
                if *recipients && !is_service {
                    body["reported_by"] = json!({"provider_id": "prov-1", "channel": "email"});
                }
                let before = app.event_count(&case).await;
                let (s, b) = app
                    .post(
                        &format!("/v1/cases/{case}/referrals/{referral}/status"),
                        token,
                        &body,
                    )
                    .await;
                let expected = match (recipients, is_service, *who) {
                    (false, true, _) => Some("initiator_status"),
                    (true, true, "prov-2's system") => Some("other_provider"),
                    _ => None,
                };
                let got = (!s.is_success()).then(|| b["error"]["code"].as_str().unwrap_or("?"));
                if got != expected || (expected.is_some() && s != StatusCode::FORBIDDEN) {
                    failures.push(format!(
                        "{status} by {who}: expected {expected:?}, got {s} {b}"
                    ));
                }
                if got.is_some() {
                    assert_eq!(
                        app.event_count(&case).await,
                        before,
                        "a refusal changes nothing"
                    );
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));

        // Staff say who reported the provider's status, and it is the referral's provider.
        let (case, referral) = referral_ready_for(&app, &sup, "accepted").await;
        let path = format!("/v1/cases/{case}/referrals/{referral}/status");
        for (reported_by, code) in [
            (None, "reported_by_required"),
            (
                Some(json!({"provider_id": "prov-9", "channel": "fax"})),
                "reported_by_mismatch",
            ),
        ] {
            let mut body = json!({"status": "accepted", "on": day(18)});
            if let Some(r) = reported_by {
                body["reported_by"] = r;
            }
            let (s, b) = app.post(&path, &sup, &body).await;
            assert_eq!(
                (s, b["error"]["code"].as_str()),
                (StatusCode::UNPROCESSABLE_ENTITY, Some(code)),
                "{b}"
            );
        }
        // The history keeps who reported it.
        let (s, b) = app
            .post(
                &path,
                &sup,
                &json!({"status": "accepted", "on": day(18),
                "reported_by": {"provider_id": "prov-1", "channel": "in_person"}}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (_, events) = app.get(&format!("/v1/cases/{case}/events"), &sup).await;
        let last = events["events"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            last["payload"]["reported"],
            json!({"by": "staff", "provider_id": "prov-1", "channel": "in_person"}),
            "{last}"
        );
    }
);
