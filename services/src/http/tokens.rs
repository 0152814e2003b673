//! Token administration (admins only): create a token, list tokens (never their secrets), revoke
//! one. The same as `linkage token create|list|revoke`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use schemas::{ActorId, AgencyId, ProviderId, Role};
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::ToSchema;

use crate::auth::{agency_scope, issue_token, token_expiry, Access, Caller};
use crate::error::ApiError;
use crate::http::extract::JsonBody;
use crate::http::page::{ListQuery, StrictQuery};
use crate::startup::AppState;
use crate::store::{StoredToken, TokenRecord};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Who the token acts as.
    #[schema(value_type = String, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@-]+$")]
    pub actor: ActorId,
    pub role: Role,
    /// The agency it acts in (default: the caller's).
    #[schema(value_type = Option<String>, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@-]+$")]
    #[serde(default)]
    pub agency: Option<AgencyId>,
    /// The provider a `service` token speaks for (required for `service`, refused otherwise).
    #[schema(value_type = Option<String>, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@-]+$")]
    #[serde(default)]
    pub provider: Option<ProviderId>,
    /// How long it holds: `90d` (default), `12h`, `30m` (up to 999 days); `never` only for
    /// `service`.
    #[serde(default)]
    #[schema(pattern = "^(never|[1-9][0-9]{0,2}(m|h|d))$")]
    pub expires_in: Option<String>,
}

/// A token as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub token_id: String,
    pub actor: String,
    pub role: Role,
    pub agency: String,
    pub provider: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Null: never expires (service tokens only).
    pub expires_at: Option<DateTime<Utc>>,
    /// To the minute.
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<StoredToken> for TokenView {
    fn from(t: StoredToken) -> Self {
        Self {
            token_id: t.life.id,
            actor: t.record.actor_id.to_string(),
            role: t.record.role,
            agency: t.record.agency.to_string(),
            provider: t.record.provider.map(|p| p.to_string()),
            created_at: t.life.created_at,
            expires_at: t.life.expires_at,
            last_used_at: t.last_used_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// A new token: the secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenCreated {
    pub token_id: String,
    /// The bearer token. Only its hash is kept: it cannot be shown again.
    pub token: String,
    pub actor: String,
    pub role: Role,
    pub agency: String,
    pub provider: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokensResponse {
    /// A page of the tokens, oldest first, revoked ones included.
    pub tokens: Vec<TokenView>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateTokenRequest,
    responses((status = 201, body = TokenCreated), (status = "4XX", body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(actor = %caller.0.id))]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    body: JsonBody<CreateTokenRequest>,
) -> Result<Response, ApiError> {
    agency_scope(&caller.0, Access::ManageTokens, None)?;
    let r = body.value;
    let now = state.clock.now();
    let expires_at = token_expiry(r.role, r.provider.clone(), r.expires_in.as_deref(), now)?;
    let record = TokenRecord {
        actor_id: r.actor,
        role: r.role,
        agency: r.agency.unwrap_or_else(|| caller.0.agency.clone()),
        provider: r.provider,
    };
    let made = issue_token(&state.store, &record, now, expires_at).await?;
    tracing::info!(token_id = %made.life.id, role = %record.role, "token created");
    let created = TokenCreated {
        token_id: made.life.id,
        token: made.token,
        actor: record.actor_id.to_string(),
        role: record.role,
        agency: record.agency.to_string(),
        provider: record.provider.map(|p| p.to_string()),
        created_at: made.life.created_at,
        expires_at: made.life.expires_at,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", params(ListQuery),
    responses((status = 200, body = TokensResponse), (status = "4XX", body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(actor = %caller.0.id))]
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    StrictQuery(query): StrictQuery<ListQuery>,
) -> Result<Json<TokensResponse>, ApiError> {
    agency_scope(&caller.0, Access::ManageTokens, None)?;
    let page = query.page("tokens")?;
    let mut tokens = state
        .store
        .tokens(page.after.as_deref(), page.limit + 1)
        .await?;
    let next_cursor = page.cut(&mut tokens, |t| t.life.id.clone());
    Ok(Json(TokensResponse {
        tokens: tokens.into_iter().map(TokenView::from).collect(),
        next_cursor,
    }))
}

/// Revokes a token: refused from the next request on, on every replica (tokens are looked up in
/// the store on each request).
#[utoipa::path(delete, path = "/v1/tokens/{token_id}", tag = "tokens",
    params(("token_id" = String, Path)),
    responses((status = 204, description = "revoked (or already revoked)"), (status = "4XX", body = schemas::wire::ErrorBody)),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(actor = %caller.0.id, token_id = %token_id))]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(token_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    agency_scope(&caller.0, Access::ManageTokens, None)?;
    if !state
        .store
        .revoke_token(&token_id, state.clock.now())
        .await?
    {
        return Err(ApiError::not_found(
            "token_not_found",
            "no token with this id",
        ));
    }
    tracing::info!("token revoked");
    Ok(StatusCode::NO_CONTENT)
}
