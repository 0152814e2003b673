//! Single sign-on against a real OpenID provider (npm's oidc-provider, started by the test): its
//! JWT access tokens are accepted after the signature, issuer, audience, expiry and not-before are
//! checked; a key rotation needs no restart; an expired token, a wrong audience and a role Linkage
//! does not know are refused.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use linkage_tests::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};
use services::oidc::OidcConfig;

const AUDIENCE: &str = "https://linkage.example/api";

/// A running provider; stopped when dropped.
struct Provider {
    child: Child,
    port: u16,
}

impl Provider {
    /// Starts the provider on `port` (0: a free one) signing with a new key called `kid`; None
    /// when the run allows skipping and no provider is installed.
    fn start(port: u16, kid: &str) -> Option<Self> {
        let script = match std::env::var("LINKAGE_OIDC_PROVIDER") {
            Ok(s) if !s.is_empty() => s,
            _ if std::env::var_os("LINKAGE_REQUIRE_OIDC").is_some() => {
                panic!(
                    "LINKAGE_REQUIRE_OIDC is set but LINKAGE_OIDC_PROVIDER is not; run ops/test.sh"
                )
            }
            _ => {
                eprintln!("skipping a single-sign-on test: LINKAGE_OIDC_PROVIDER is not set");
                return None;
            }
        };
        let port = if port == 0 {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        } else {
            port
        };
        let mut child = Command::new("node")
            .arg(&script)
            .env("PORT", port.to_string())
            .env("KID", kid)
            .env("AUDIENCE", AUDIENCE)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs the provider");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the provider says it is ready");
        assert!(line.starts_with("ready "), "{line}");
        Some(Self { child, port })
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An access token of the client `client` (client-credentials grant).
    async fn token(&self, client: &str) -> String {
        let r: Value = reqwest::Client::new()
            .post(format!("{}/token", self.issuer()))
            .basic_auth(client, Some("secret"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .expect("token request")
            .json()
            .await
            .expect("JSON");
        r["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {r}"))
            .to_owned()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A claim of a token, read without verifying it (to set the server's clock from `iat`).
fn claim(token: &str, name: &str) -> i64 {
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    let v: Value = serde_json::from_slice(&bytes).expect("JSON claims");
    v[name].as_i64().expect("a numeric claim")
}

async fn caseloads(app: &TestApp, token: &str) -> (StatusCode, Value) {
    app.get("/v1/caseloads", token).await
}

async fn sign_in(backend: linkage_tests::Backend) {
    let Some(provider) = Provider::start(0, "key-1") else {
        return;
    };
    let issuer = provider.issuer();
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.auth.oidc = Some(OidcConfig {
            issuer: issuer.clone(),
            audience: AUDIENCE.into(),
            jwks_url: format!("{issuer}/jwks"),
            actor_claim: "sub".into(),
            role_claim: "linkage_role".into(),
            agency_claim: "linkage_agency".into(),
            provider_claim: "linkage_provider".into(),
        });
    })
    .await
    else {
        return;
    };
    let supervisor = provider.token("sup-north").await;
    // Time is an input: the server's clock stands where the provider says the token was made.
    let issued = chrono::DateTime::from_timestamp(claim(&supervisor, "iat"), 0).expect("iat");
    app.clock
        .set(issued + chrono::Duration::seconds(1))
        .expect("pinned");

    // Accepted: the claims give the actor, the role and the agency.
    let (s, b) = caseloads(&app, &supervisor).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["agency"], "north", "{b}");
    let (s, b) = app
        .post(
            "/v1/cases",
            &supervisor,
            &json!({"program": "tcm", "assigned_to": "cm-ada", "intake_date": "2026-08-01",
                "child": {"given_name": "Sky", "family_name": "Sample", "birth_date": "2018-01-01"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let case = b["case_id"].as_str().expect("case").to_owned();
    let (_, events) = app
        .get(&format!("/v1/cases/{case}/events"), &supervisor)
        .await;
    assert_eq!(events["events"][0]["actor"]["id"], "sup-north");
    assert_eq!(events["events"][0]["actor"]["role"], "supervisor");

    // Refused: a role Linkage does not know (403), a token for another audience (401), a token
    // that is not even a JWT (401), a billing role where billing may not go (403, as any token).
    let (s, b) = caseloads(&app, &provider.token("odd-role").await).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("unknown_role"))
    );
    let (s, _) = caseloads(&app, &provider.token("elsewhere").await).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "wrong audience");
    assert_eq!(
        caseloads(&app, "not.a.jwt").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, b) = caseloads(&app, &provider.token("billing-north").await).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("role_not_allowed"))
    );

    // Key rotation: the provider restarts signing with a new key; its new tokens are accepted
    // without restarting Linkage (it fetches the keys again), the old key's are not.
    let port = provider.port;
    drop(provider);
    let provider = Provider::start(port, "key-2").expect("restarted");
    let rotated = provider.token("sup-north").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (s, b) = caseloads(&app, &rotated).await;
        if s == StatusCode::OK {
            break;
        }
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
        assert!(Instant::now() < deadline, "the new key was never fetched");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        caseloads(&app, &supervisor).await.0,
        StatusCode::UNAUTHORIZED,
        "signed with a key the provider no longer has"
    );

    // Expired, by the server's clock: a distinct refusal.
    let expires = chrono::DateTime::from_timestamp(claim(&rotated, "exp"), 0).expect("exp");
    app.clock
        .set(expires + chrono::Duration::minutes(1))
        .expect("pinned");
    let (s, b) = caseloads(&app, &rotated).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_expired"))
    );
}

linkage_tests::both_backends!(single_sign_on, sign_in);
