//! Tokens with a lifecycle through the admin routes: made with an expiry, listed without their
//! secrets, refused when expired (`401 token_expired`), and refused at once when revoked, on every
//! replica.

use linkage_tests::{both_stores, Backend, TestApp};
use reqwest::StatusCode;
use schemas::Role;
use serde_json::{json, Value};

async fn delete(app: &TestApp, path: &str, token: &str) -> StatusCode {
    app.client
        .delete(format!("{}{path}", app.address))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent")
        .status()
}

/// A route any valid token of the agency may call.
async fn works(app: &TestApp, token: &str) -> (StatusCode, Value) {
    app.get("/v1/instruments", token).await
}

both_stores!(tokens_have_a_lifecycle, |app: TestApp| async move {
    let admin = app.admin_token.clone();
    let (s, made) = app
        .post(
            "/v1/tokens",
            &admin,
            &json!({"actor": "sup-9", "role": "supervisor", "agency": "north", "expires_in": "2h"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let token = made["token"].as_str().expect("the secret, once").to_owned();
    let id = made["token_id"].as_str().expect("id").to_owned();
    let created: chrono::DateTime<chrono::Utc> =
        made["created_at"].as_str().unwrap().parse().unwrap();
    let expires: chrono::DateTime<chrono::Utc> =
        made["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(created, linkage_tests::now(), "made by the server's clock");
    assert_eq!(expires - created, chrono::Duration::hours(2));
    assert_eq!(works(&app, &token).await.0, StatusCode::OK);

    // Listed, never with a secret; its last use is recorded (to the minute, off the request path).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let listed = loop {
        let (s, list) = app.get("/v1/tokens?limit=1000", &admin).await;
        assert_eq!(s, StatusCode::OK, "{list}");
        let row = list["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .find(|t| t["token_id"] == id.as_str())
            .expect("listed")
            .clone();
        assert!(
            !list.to_string().contains("lkg_"),
            "no secret in the list: {list}"
        );
        if !row["last_used_at"].is_null() {
            break row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "last use never recorded: {row}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        (
            listed["actor"].as_str(),
            listed["role"].as_str(),
            listed["agency"].as_str()
        ),
        (Some("sup-9"), Some("supervisor"), Some("north"))
    );
    assert!(listed["revoked_at"].is_null());

    // Expired: a distinct refusal, so a client knows to get a new token.
    app.clock
        .advance(chrono::Duration::hours(2))
        .expect("pinned");
    let (s, b) = works(&app, &token).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_expired"))
    );

    // Defaults and refusals.
    let (s, b) = app
        .post(
            "/v1/tokens",
            &admin,
            &json!({"actor": "cm-1", "role": "case_manager"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (c, e): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = (
        b["created_at"].as_str().unwrap().parse().unwrap(),
        b["expires_at"].as_str().unwrap().parse().unwrap(),
    );
    assert_eq!(e - c, chrono::Duration::days(90), "90 days by default");
    assert_eq!(b["agency"], "default", "the admin's agency by default");
    for (body, code) in [
        (
            json!({"actor": "a", "role": "auditor", "expires_in": "never"}),
            "never_expires_not_allowed",
        ),
        (
            json!({"actor": "a", "role": "auditor", "expires_in": "soon"}),
            "invalid_value",
        ),
        (
            json!({"actor": "a", "role": "service"}),
            "provider_required",
        ),
        (
            json!({"actor": "a", "role": "auditor", "provider": "p"}),
            "provider_not_allowed",
        ),
    ] {
        let (s, b) = app.post("/v1/tokens", &admin, &body).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(code)),
            "{body}"
        );
    }
    let (s, b) = app
        .post(
            "/v1/tokens",
            &admin,
            &json!({"actor": "svc", "role": "service", "provider": "prov-1", "expires_in": "never"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert!(b["expires_at"].is_null(), "{b}");
    let service = b["token"].as_str().unwrap().to_owned();

    // Only admins manage tokens.
    let sup = app.token(Role::Supervisor, "sup-1", "default").await;
    assert_eq!(
        app.post("/v1/tokens", &sup, &json!({"actor": "x", "role": "admin"}))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.get("/v1/tokens", &sup).await.0, StatusCode::FORBIDDEN);

    // Revoked: refused from the next request on.
    let service_id = b["token_id"].as_str().unwrap().to_owned();
    assert_eq!(works(&app, &service).await.0, StatusCode::OK);
    assert_eq!(
        delete(&app, &format!("/v1/tokens/{service_id}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    let (s, b) = works(&app, &service).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    assert_eq!(
        delete(&app, &format!("/v1/tokens/{service_id}"), &admin).await,
        StatusCode::NO_CONTENT,
        "again: still revoked"
    );
    assert_eq!(
        delete(&app, "/v1/tokens/no-such-token", &admin).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        delete(&app, &format!("/v1/tokens/{service_id}"), &sup).await,
        StatusCode::FORBIDDEN
    );
});

/// A token revoked through one replica is refused by it at once, and by the others within the
/// bound of their token caches (`TOKEN_CACHE_TTL`, 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_token_is_refused_on_every_replica() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let replicas = [app.second_instance().await, app.second_instance().await];
    let (s, made) = app
        .post(
            "/v1/tokens",
            &app.admin_token,
            &json!({"actor": "sup-2", "role": "supervisor"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let token = made["token"].as_str().unwrap().to_owned();
    for r in &replicas {
        assert_eq!(works(r, &token).await.0, StatusCode::OK);
    }
    let id = made["token_id"].as_str().unwrap();
    assert_eq!(
        delete(&replicas[0], &format!("/v1/tokens/{id}"), &app.admin_token).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        works(&replicas[0], &token).await.0,
        StatusCode::UNAUTHORIZED,
        "at once where revoked"
    );
    let revoked = std::time::Instant::now();
    let bound = services::store::TOKEN_CACHE_TTL;
    for r in [&app, &replicas[1]] {
        loop {
            let (s, _) = works(r, &token).await;
            if s == StatusCode::UNAUTHORIZED {
                break;
            }
            assert_eq!(s, StatusCode::OK);
            assert!(
                revoked.elapsed() <= bound + std::time::Duration::from_millis(500),
                "still accepted {:?} after the revocation",
                revoked.elapsed()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
