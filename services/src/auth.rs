//! Tokens and the role model.
//!
//! A token is 32 random bytes, shown once; the store keeps only its SHA-256 (a token has full
//! entropy, so a slow password hash adds nothing).
//!
//! Who may do what is one table, `reach(role, access)`: every check (`check` on a case, `permit`
//! on a target, `agency_scope` for views across an agency) is derived from it, and
//! `schemas/CONTRACT.md` shows it to readers.

use aggregates::{Actor, Case};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use schemas::{ActorId, AgencyId, ProviderId, Role};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, StoreError};
use crate::startup::AppState;
use crate::store::{Store, TokenLife, TokenRecord};
use chrono::{DateTime, Utc};

const TOKEN_PREFIX: &str = "lkg_";

/// A new random token. Only its hash is stored.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("the operating system's random source works");
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// How long a token holds unless asked otherwise.
pub const DEFAULT_TOKEN_LIFETIME: chrono::Duration = chrono::Duration::days(90);

/// How often a token's `last_used_at` is written: at most once a minute per token, so that the
/// request path does not write on every request.
const TOUCH_EVERY: chrono::Duration = chrono::Duration::minutes(1);

/// How long a new token holds: a duration (`90d`, `12h`, `30m`; humantime's units) or `never`,
/// which only `service` tokens (a receiving system's) may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    For(chrono::Duration),
    Never,
}

impl Lifetime {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "never" {
            return Ok(Lifetime::Never);
        }
        let d = humantime::parse_duration(s)
            .map_err(|e| format!("`{s}` is not a duration like 90d, 12h or never: {e}"))?;
        let d = chrono::Duration::from_std(d).map_err(|e| e.to_string())?;
        if d < chrono::Duration::minutes(1) || d > chrono::Duration::days(3650) {
            return Err(format!("`{s}`: a token lives from 1 minute to 10 years"));
        }
        Ok(Lifetime::For(d))
    }

    /// When a token of `role` made at `now` expires; `never` is refused but for `service`.
    pub fn expires_at(
        self,
        role: Role,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, String> {
        match self {
            Lifetime::For(d) => Ok(Some(now + d)),
            Lifetime::Never if role == Role::Service => Ok(None),
            Lifetime::Never => Err("only service tokens may never expire".into()),
        }
    }
}

impl Default for Lifetime {
    fn default() -> Self {
        Lifetime::For(DEFAULT_TOKEN_LIFETIME)
    }
}

/// When a new token of `role` (speaking for `provider`) made at `now` expires, as `expires_in`
/// asks (default 90 days), or why it may not be made: the one rule the admin routes and
/// `linkage token create` share.
pub fn token_expiry(
    role: Role,
    provider: Option<ProviderId>,
    expires_in: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    match (role, &provider) {
        (Role::Service, None) => {
            return Err(ApiError::invalid(
                "provider_required",
                "a service token speaks for a provider: name it",
            ))
        }
        (r, Some(_)) if r != Role::Service => {
            return Err(ApiError::invalid(
                "provider_not_allowed",
                "only a service token speaks for a provider",
            ))
        }
        _ => {}
    }
    let lifetime = expires_in
        .map(Lifetime::parse)
        .transpose()
        .map_err(|e| ApiError::invalid("invalid_value", format!("expires_in: {e}")))?
        .unwrap_or_default();
    lifetime
        .expires_at(role, now)
        .map_err(|e| ApiError::invalid("never_expires_not_allowed", e))
}

/// A token just made: the secret (shown once, never stored) and what is stored beside its hash.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub token: String,
    pub life: TokenLife,
}

/// Creates and stores a token made at `now` that expires at `expires_at` (None: never).
pub async fn issue_token(
    store: &Store,
    record: &TokenRecord,
    now: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<NewToken, StoreError> {
    let token = new_token();
    let life = TokenLife {
        id: uuid::Uuid::now_v7().to_string(),
        created_at: now,
        expires_at,
    };
    store
        .insert_token(&hash_token(&token), record, &life)
        .await?;
    Ok(NewToken { token, life })
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Actor);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        if !token.starts_with(TOKEN_PREFIX) {
            // Not one of ours: the agency's identity provider's, if single sign-on is set up.
            return match &state.oidc {
                Some(oidc) if crate::oidc::Verifier::looks_like_jwt(token) => {
                    Ok(Caller(oidc.verify(token, state.clock.now()).await?))
                }
                _ => Err(ApiError::Unauthorized),
            };
        }
        let found = state
            .store
            .token(&hash_token(token))
            .await?
            .ok_or(ApiError::Unauthorized)?;
        let now = state.clock.now();
        if found.life.expires_at.is_some_and(|at| at <= now) {
            return Err(ApiError::TokenExpired);
        }
        if found.last_used_at.is_none_or(|at| now - at >= TOUCH_EVERY) {
            // Off the request's path: a lost touch only makes `last_used_at` a minute older.
            let (store, id) = (state.store.clone(), found.life.id.clone());
            tokio::spawn(async move {
                if let Err(e) = store.touch_token(&id, now).await {
                    tracing::debug!(error = %e, "could not record a token's use");
                }
            });
        }
        let record = found.record;
        Ok(Caller(Actor {
            id: record.actor_id,
            role: record.role,
            agency: record.agency,
            provider: record.provider,
        }))
    }
}

/// What a route does to a case, for the role check.
/// Everything a caller may ask for: something done to or read of one case, or a view across an
/// agency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read a case, its events.
    Read,
    /// Any command on a case (screening, care plan, referral, contact, transition, correction).
    Command,
    /// Reassign a case's case manager.
    Assign,
    /// Report what became of a referral or an appointment (the receiving side's report).
    RecipientReport,
    /// A case's audit trail and its read log.
    Audit,
    /// A case as known at a time.
    History,
    /// Open a case (the target is the new case: the caller's agency, its assignee).
    OpenCase,
    /// A worker's caseload.
    Caseload,
    /// The team's caseloads.
    TeamView,
    /// Referral and engagement measures.
    Measures,
    /// The billing log and recorded export batches.
    BillingLog,
    /// Recording an export batch.
    BillingBatch,
    /// The public event stream.
    EventStream,
    /// Finding cases (`GET /v1/cases`); which rows show the child is decided by `Read`.
    Search,
    /// Creating, listing and revoking tokens.
    ManageTokens,
    /// Referrals as FHIR resources (`/fhir/r4`): a `service` token sees only the referrals sent
    /// to the provider it is bound to.
    Referrals,
}

/// How far a role's permission for one `Access` reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Not at all: the role may never do this.
    None,
    /// The caller's own, in their agency: cases assigned to them (opening one: assigned to
    /// themselves), their own caseload.
    Own,
    /// Everything of the caller's agency.
    Agency,
    /// Every agency.
    All,
}

/// The role model: the one table every permission check is derived from.
pub const fn reach(role: Role, access: Access) -> Reach {
    use Access::*;
    match (role, access) {
        (Role::Admin, _) => Reach::All,
        (Role::Supervisor, Audit | BillingLog | BillingBatch | ManageTokens) => Reach::None,
        (Role::Supervisor, _) => Reach::Agency,
        (Role::CaseManager, Read | Command | RecipientReport | OpenCase | Caseload | Referrals) => {
            Reach::Own
        }
        (Role::CaseManager, EventStream | Search) => Reach::Agency,
        (Role::CaseManager, _) => Reach::None,
        (
            Role::Auditor,
            Read | Audit | History | Measures | BillingLog | EventStream | Search | Referrals,
        ) => Reach::Agency,
        (Role::Auditor, _) => Reach::None,
        (Role::Billing, BillingLog | BillingBatch) => Reach::Agency,
        (Role::Billing, _) => Reach::None,
        (Role::Service, RecipientReport | EventStream | Referrals) => Reach::Agency,
        (Role::Service, _) => Reach::None,
    }
}

impl Access {
    /// Every access, in declaration order.
    pub const ALL: [Access; 16] = [
        Access::Read,
        Access::Command,
        Access::Assign,
        Access::RecipientReport,
        Access::Audit,
        Access::History,
        Access::OpenCase,
        Access::Caseload,
        Access::TeamView,
        Access::Measures,
        Access::BillingLog,
        Access::BillingBatch,
        Access::EventStream,
        Access::Search,
        Access::ManageTokens,
        Access::Referrals,
    ];

    /// What it is, for a refusal: "the billing role may not <this>".
    fn what(self) -> &'static str {
        match self {
            Access::Read => "read cases",
            Access::Command => "act on cases",
            Access::Assign => "reassign cases",
            Access::RecipientReport => "report referral and appointment outcomes",
            Access::Audit => "see audit trails",
            Access::History => "see case histories",
            Access::OpenCase => "open cases",
            Access::Caseload => "see caseloads",
            Access::TeamView => "see the team view",
            Access::Measures => "see measures",
            Access::BillingLog => "see the billing log",
            Access::BillingBatch => "record export batches",
            Access::EventStream => "receive referral events",
            Access::Search => "search cases",
            Access::ManageTokens => "manage tokens",
            Access::Referrals => "read referrals over FHIR",
        }
    }

    /// The refusal for a role that may never do this.
    fn role_refusal(self, role: Role) -> ApiError {
        ApiError::forbidden(
            "role_not_allowed",
            format!("the {role} role may not {}", self.what()),
        )
    }

    /// The refusal for a role that may do this, but not to this target.
    fn reach_refusal(self) -> ApiError {
        match self {
            Access::Caseload => ApiError::forbidden(
                "caseload_not_allowed",
                "a case manager sees only their own caseload",
            ),
            Access::OpenCase => ApiError::forbidden(
                "case_not_allowed",
                "a case manager opens cases assigned to themselves; a supervisor assigns others",
            ),
            _ => ApiError::forbidden(
                "case_not_allowed",
                "this case is not assigned to you or is outside your agency",
            ),
        }
    }
}

/// Whether `actor` may do `access` to `case` (an existing case).
pub fn check(actor: &Actor, case: &Case, access: Access) -> Result<(), ApiError> {
    permit(
        actor,
        access,
        case.agency(),
        case.assigned_to.as_ref().map(ActorId::as_str),
    )
}

/// Whether `actor` may do `access` to a target of `agency` owned by `owner` (a case's assignee,
/// a caseload's worker).
pub fn permit(
    actor: &Actor,
    access: Access,
    agency: Option<&AgencyId>,
    owner: Option<&str>,
) -> Result<(), ApiError> {
    let same_agency = agency == Some(&actor.agency);
    let allowed = match reach(actor.role, access) {
        Reach::None => return Err(access.role_refusal(actor.role)),
        Reach::All => true,
        Reach::Agency => same_agency,
        Reach::Own => same_agency && owner == Some(actor.id.as_str()),
    };
    if allowed {
        Ok(())
    } else {
        Err(access.reach_refusal())
    }
}

/// For a view across agencies: the agency whose data `actor` sees (None: every agency), or the
/// refusal. Where the role reaches only its own, `owner` must be the caller.
pub fn agency_scope(
    actor: &Actor,
    access: Access,
    owner: Option<&str>,
) -> Result<Option<AgencyId>, ApiError> {
    match reach(actor.role, access) {
        Reach::None => Err(access.role_refusal(actor.role)),
        Reach::All => Ok(None),
        Reach::Agency => Ok(Some(actor.agency.clone())),
        Reach::Own if owner == Some(actor.id.as_str()) => Ok(Some(actor.agency.clone())),
        Reach::Own => Err(access.reach_refusal()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_only_hashes_are_kept() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), a);
        assert_eq!(hash_token(&a), hash_token(&a));
    }

    /// The whole table, so that a change to who may do what is a deliberate, visible one.
    #[test]
    fn the_role_table() {
        let accesses = Access::ALL;
        let row = |role: Role| -> String {
            accesses
                .iter()
                .map(|a| match reach(role, *a) {
                    Reach::None => '-',
                    Reach::Own => 'o',
                    Reach::Agency => 'a',
                    Reach::All => '*',
                })
                .collect()
        };
        //                                       RCAPAHOCTMBBESTF
        assert_eq!(row(Role::Admin), /*       */ "****************");
        assert_eq!(row(Role::Supervisor), /*  */ "aaaa-aaaaa--aa-a");
        assert_eq!(row(Role::CaseManager), /* */ "oo-o--oo----aa-o");
        assert_eq!(row(Role::Auditor), /*     */ "a---aa---aa-aa-a");
        assert_eq!(row(Role::Billing), /*     */ "----------aa----");
        assert_eq!(row(Role::Service), /*     */ "---a--------a--a");
    }
}
