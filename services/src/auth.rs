//! Tokens and the role model.
//!
//! A token is 32 random bytes, shown once; the store keeps only its SHA-256 (a token has full
//! entropy, so a slow password hash adds nothing). Who may do what:
//!
//! | role | commands | reads of a case |
//! |---|---|---|
//! | admin | all, any agency | all |
//! | supervisor | all on cases of their agency | cases of their agency and their history |
//! | case_manager | cases assigned to them; may open a case only for themselves | cases assigned to them |
//! | service | referral status and appointment outcomes on cases of their agency (a receiving system) | none |
//! | auditor | none | cases of their agency, their audit trail and history |
//! | billing | none | none (billing reads the TCM log, issue 5) |

use aggregates::{Actor, Case};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use schemas::Role;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, StoreError};
use crate::startup::AppState;
use crate::store::{Store, TokenRecord};

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

/// Creates and stores a token; returns the plain token, which is never stored.
pub async fn issue_token(store: &Store, record: &TokenRecord) -> Result<String, StoreError> {
    let token = new_token();
    store.insert_token(&hash_token(&token), record).await?;
    Ok(token)
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
            .filter(|t| t.starts_with(TOKEN_PREFIX))
            .ok_or(ApiError::Unauthorized)?;
        let record = state
            .store
            .token(&hash_token(token))
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Caller(Actor {
            id: record.actor_id,
            role: record.role,
            agency: record.agency,
        }))
    }
}

/// What a route does to a case, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    /// Any clinical or case-management command.
    Command,
    /// Reassigning the case manager.
    Assign,
    /// What a receiving provider reports: referral status, appointment outcomes.
    RecipientReport,
    /// The audit trail: auditors and admins only.
    Audit,
    /// A case as of a past time: auditors, supervisors and admins.
    History,
}

/// May `actor` do `access` to `case`? Refuses with 403 and says why.
pub fn check(actor: &Actor, case: &Case, access: Access) -> Result<(), ApiError> {
    let same_agency = case.agency() == Some(&actor.agency);
    let assigned = case.assigned_to.as_ref() == Some(&actor.id);
    let allowed = match (actor.role, access) {
        (Role::Admin, _) => true,
        (Role::Auditor, Access::Audit | Access::History) => same_agency,
        (_, Access::Audit) => false,
        (Role::CaseManager, Access::History) => false,
        (Role::Supervisor, _) => same_agency,
        (Role::CaseManager, Access::Assign) => false,
        (Role::CaseManager, _) => same_agency && assigned,
        (Role::Auditor, Access::Read) => same_agency,
        (Role::Service, Access::RecipientReport) => same_agency,
        (Role::Auditor | Role::Billing | Role::Service, _) => false,
    };
    if allowed {
        return Ok(());
    }
    let role_can_ever = match (actor.role, access) {
        (Role::Billing, _) => false,
        (Role::Auditor, a) => matches!(a, Access::Read | Access::Audit | Access::History),
        (_, Access::Audit) => false,
        (Role::Service, a) => a == Access::RecipientReport,
        (Role::CaseManager, a) => !matches!(a, Access::Assign | Access::History),
        _ => true,
    };
    Err(if role_can_ever {
        ApiError::forbidden(
            "case_not_allowed",
            "this case is not assigned to you or is outside your agency",
        )
    } else {
        ApiError::forbidden(
            "role_not_allowed",
            format!("the {} role may not do this", actor.role),
        )
    })
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
}
