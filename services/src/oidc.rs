//! Single sign-on: a bearer token that is a JWT from the agency's OpenID provider is accepted in
//! place of a Linkage token (`[auth.oidc]` in the configuration). Its signature is checked with
//! the provider's keys (its JWKS, fetched when a key id is first seen, so a key rotation needs no
//! restart), then its issuer, audience, expiry and not-before. Expiry and not-before are checked
//! against the application clock (time is an input), not the machine's. Configured claims give
//! the actor, the role and the agency; a role Linkage does not know is refused (403).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aggregates::Actor;
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use schemas::{ActorId, AgencyId, ProviderId, Role};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::error::ApiError;

/// `[auth.oidc]`: where the provider is and which claims say who the caller is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer (`iss` must equal it).
    pub issuer: String,
    /// This API's audience (`aud` must contain it).
    pub audience: String,
    /// The provider's JWKS (for oidc-provider: `<issuer>/jwks`).
    pub jwks_url: String,
    #[serde(default = "default_actor_claim")]
    pub actor_claim: String,
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    #[serde(default = "default_agency_claim")]
    pub agency_claim: String,
    /// The claim naming the provider a `service` caller speaks for.
    #[serde(default = "default_provider_claim")]
    pub provider_claim: String,
}

fn default_actor_claim() -> String {
    "sub".into()
}
fn default_role_claim() -> String {
    "linkage_role".into()
}
fn default_agency_claim() -> String {
    "linkage_agency".into()
}
fn default_provider_claim() -> String {
    "linkage_provider".into()
}

/// Slack for clocks that differ a little between the provider and this server.
const LEEWAY_SECONDS: i64 = 30;

/// The least time between two JWKS fetches: an unknown key id cannot make this server hammer
/// the provider.
const REFETCH_AFTER: Duration = Duration::from_secs(5);

/// Verifies the provider's tokens; keeps its keys.
pub struct Verifier {
    config: OidcConfig,
    http: reqwest::Client,
    keys: Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    by_id: HashMap<String, (DecodingKey, Algorithm)>,
    fetched: Option<Instant>,
}

impl Verifier {
    pub fn new(config: OidcConfig) -> Self {
        Self {
            config,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client with a timeout builds"),
            keys: Mutex::new(Keys::default()),
        }
    }

    /// Whether `token` looks like a JWT (three base64url parts) rather than a Linkage token.
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3
    }

    /// The caller a provider's token stands for, checked at `now`.
    pub async fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Actor, ApiError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| ApiError::Unauthorized)?;
        let kid = header.kid.ok_or(ApiError::Unauthorized)?;
        let (key, alg) = self.key(&kid).await?;
        if header.alg != alg {
            return Err(ApiError::Unauthorized);
        }
        let mut validation = Validation::new(alg);
        // Expiry and not-before are checked below, against the application clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key,
            &validation,
        )
        .map_err(|e| {
            tracing::info!(error = %e, "a single-sign-on token was refused");
            ApiError::Unauthorized
        })?;
        let claims = data.claims;
        let time = |name: &str| claims.get(name).and_then(serde_json::Value::as_i64);
        let now = now.timestamp();
        if time("exp").is_some_and(|exp| exp + LEEWAY_SECONDS <= now) {
            return Err(ApiError::TokenExpired);
        }
        if time("nbf").is_some_and(|nbf| nbf - LEEWAY_SECONDS > now) {
            return Err(ApiError::Unauthorized);
        }
        let text = |name: &str| claims.get(name).and_then(serde_json::Value::as_str);
        let role_text = text(&self.config.role_claim).ok_or_else(|| unknown_role("none"))?;
        let role: Role = role_text.parse().map_err(|_| unknown_role(role_text))?;
        let actor = text(&self.config.actor_claim)
            .and_then(|a| ActorId::parse(a).ok())
            .ok_or(ApiError::Unauthorized)?;
        let agency = text(&self.config.agency_claim)
            .and_then(|a| AgencyId::parse(a).ok())
            .ok_or(ApiError::Unauthorized)?;
        let provider = text(&self.config.provider_claim)
            .map(ProviderId::parse)
            .transpose()
            .map_err(|_| ApiError::Unauthorized)?;
        Ok(Actor {
            id: actor,
            role,
            agency,
            provider,
        })
    }

    /// The key with id `kid`: from the keys held, or from the provider's JWKS fetched again
    /// (a rotation), at most every `REFETCH_AFTER`.
    async fn key(&self, kid: &str) -> Result<(DecodingKey, Algorithm), ApiError> {
        let mut keys = self.keys.lock().await;
        if let Some(found) = keys.by_id.get(kid) {
            return Ok(found.clone());
        }
        if keys.fetched.is_some_and(|at| at.elapsed() < REFETCH_AFTER) {
            return Err(ApiError::Unauthorized);
        }
        keys.fetched = Some(Instant::now());
        let set: JwkSet = self
            .http
            .get(&self.config.jwks_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| {
                tracing::warn!(error = %e, "could not fetch the OpenID provider's keys");
                ApiError::Unauthorized
            })?
            .json()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "the OpenID provider's keys did not parse");
                ApiError::Unauthorized
            })?;
        keys.by_id = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let id = jwk.common.key_id.clone()?;
                let alg = jwk
                    .common
                    .key_algorithm
                    .and_then(|a| a.to_string().parse::<Algorithm>().ok())?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some((id, (key, alg)))
            })
            .collect();
        tracing::info!(
            keys = keys.by_id.len(),
            "fetched the OpenID provider's keys"
        );
        keys.by_id.get(kid).cloned().ok_or(ApiError::Unauthorized)
    }
}

fn unknown_role(role: &str) -> ApiError {
    ApiError::forbidden(
        "unknown_role",
        format!("the identity provider's role `{role}` is not a Linkage role"),
    )
}
