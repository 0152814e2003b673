//! The command pipeline: how one command on a case runs to completion, whichever door it came
//! through (the HTTP routes today; the benchmark drives it in process). Idempotency check, load
//! from the cache or the store, role check, decide (the aggregate), commit with optimistic
//! concurrency, bounded retry on conflict. `http::commands` maps each route onto it.

use aggregates::{Actor, Case, CaseAction, CaseCommand, CaseEvent};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use schemas::metadata::Idempotency;
use schemas::{CaseId, EventMetadata, IdempotencyKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::{check, Access};
use crate::error::ApiError;
use crate::startup::AppState;
use crate::store::Commit;

/// Everything about a command request that is not its body: who sends it, with which
/// idempotency key and correlation id, to which route.
pub struct CommandMeta {
    pub actor: Actor,
    pub idempotency_key: Option<IdempotencyKey>,
    pub correlation_id: String,
    /// The id of this command: the causation id of the events it produces.
    pub command_id: Uuid,
    pub route: String,
}

impl CommandMeta {
    /// Fingerprint of the request: its route and what its body means. A JSON body is taken in
    /// its RFC 8785 canonical form (keys sorted, no whitespace, numbers in one spelling), so a
    /// retry whose body differs only in key order, whitespace or `1e2` for `100` is the same
    /// request. A body that is not JSON (refused before it matters) is taken as its bytes.
    pub fn request_hash(&self, body: &[u8]) -> String {
        let canonical = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| serde_jcs::to_vec(&v).ok());
        self.fingerprint(canonical.as_deref().unwrap_or(body))
    }

    /// The fingerprint earlier releases recorded (route and exact bytes): a retry of a request
    /// first answered by one of them still finds its answer.
    fn byte_hash(&self, body: &[u8]) -> String {
        self.fingerprint(body)
    }

    fn fingerprint(&self, body: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(self.route.as_bytes());
        h.update([0u8]);
        h.update(body);
        hex::encode(h.finalize())
    }

    /// Idempotency keys are scoped to the actor who sent them.
    pub fn idempotency_scope(&self) -> Option<String> {
        self.idempotency_key
            .as_ref()
            .map(|k| format!("{}\u{1f}{}", self.actor.id, k))
    }
}

/// How the route reaches the case: opening a new one, or acting on an existing one.
pub enum Target {
    New,
    Existing(Access),
}

/// Runs one command to completion. `action` is called once per attempt with the freshly loaded
/// case; it must not have side effects.
pub async fn execute(
    state: &AppState,
    meta: CommandMeta,
    body: &[u8],
    case_id: CaseId,
    target: Target,
    status: StatusCode,
    action: impl Fn(&Case) -> Result<CaseAction, ApiError>,
) -> Result<Response, ApiError> {
    let scope = meta.idempotency_scope();
    // Only a request with an Idempotency-Key is fingerprinted: the rest never replay.
    let request_hash = scope.as_ref().map(|_| meta.request_hash(body));
    let same_request =
        |earlier: &str| request_hash.as_deref() == Some(earlier) || earlier == meta.byte_hash(body);
    // Commands on one case take turns in this process: each starts from the state the one
    // before it left in the cache, instead of racing it and replaying the stream.
    let _turn = state.store.case_turn(case_id).await;
    for attempt in 0..=state.config.conflict_retries {
        if let Some(answer) = replay(state, scope.as_deref(), same_request).await? {
            return answer;
        }
        let mut context = state.store.load_for_command(case_id).await?;
        // The state is checked out of the cache: every exit below commits or releases it.
        let permitted = match target {
            Target::New => Ok(()),
            Target::Existing(_) if !context.aggregate.exists() => Err(ApiError::not_found(
                "case_not_found",
                "no case with this id",
            )),
            Target::Existing(access) => check(&meta.actor, &context.aggregate, access),
        };
        let action = match permitted.and_then(|()| action(&context.aggregate)) {
            Ok(action) => action,
            Err(e) => {
                if !refusal_stands(state, case_id, &context).await? {
                    continue;
                }
                state.store.release(case_id, context);
                return Err(e);
            }
        };
        let received_at = state.clock.now();
        let command_name = action.name();
        let occurred_at = action.occurred_at(received_at);
        // "Today" is the case's agency's (a new case's: the caller's agency's).
        let agency = context.aggregate.agency().unwrap_or(&meta.actor.agency);
        let command = CaseCommand {
            actor: meta.actor.clone(),
            received_at,
            zone: state.zones.of(Some(agency)),
            action,
        };
        let sink = EventSink::default();
        if let Err(refusal) = context
            .aggregate
            .handle(command, &state.case_services, &sink)
            .await
        {
            // Refused before any event was written: the state is unchanged.
            if !refusal_stands(state, case_id, &context).await? {
                continue;
            }
            state.store.release(case_id, context);
            // A duplicate of this request may have committed since the check above (for
            // example, the same intake retried concurrently): then its answer is ours.
            if let Some(answer) = replay(state, scope.as_deref(), same_request).await? {
                return answer;
            }
            return Err(refusal.into());
        }
        let events = sink.collect().await;
        let answer = answer_for(&events);
        let metadata = EventMetadata {
            command: Some(command_name.to_owned()),
            command_id: Some(meta.command_id),
            causation_id: Some(meta.command_id),
            correlation_id: Some(meta.correlation_id.clone()),
            actor_id: Some(meta.actor.id.clone()),
            actor_role: Some(meta.actor.role),
            actor_agency: Some(meta.actor.agency.clone()),
            occurred_at: Some(occurred_at),
            received_at: Some(received_at),
            // What a retry with the same key must get back, committed with the events.
            idempotency: match (&meta.idempotency_key, &scope, &request_hash) {
                (Some(key), Some(scope), Some(request_hash)) => Some(Idempotency {
                    key: key.to_string(),
                    scope: scope.clone(),
                    request_hash: request_hash.clone(),
                    reply_status: status.as_u16(),
                    reply: answer.to_string(),
                }),
                _ => None,
            },
        };
        match state
            .store
            .commit(case_id, events, context, &metadata)
            .await?
        {
            Commit::Done(committed) => {
                let version = committed
                    .last()
                    .map(|e| e.sequence as u64)
                    .unwrap_or_default();
                tracing::debug!(%case_id, command = command_name, version, "command accepted");
                return Ok(reply(status, answer, version));
            }
            Commit::Conflict => {
                tracing::debug!(%case_id, attempt, "concurrent append; retrying");
            }
        }
    }
    Err(ApiError::Conflict {
        code: "concurrency_conflict",
        message: "the case kept changing under this command; nothing was changed, try again".into(),
    })
}

/// A refusal is an answer only if the state it was decided on is the stream's newest: the cache
/// may hold a state another replica has moved on from. When it is not, the checked-out state is
/// dropped and the command is decided again on a full replay.
async fn refusal_stands(
    state: &AppState,
    case_id: CaseId,
    context: &crate::store::CaseContext,
) -> Result<bool, ApiError> {
    let current = state
        .store
        .is_current(case_id, context.current_sequence)
        .await?;
    if !current {
        tracing::debug!(%case_id, "refused on a stale state; deciding again");
    }
    Ok(current)
}

/// The first answer to an earlier request with the same idempotency scope, if there was one:
/// `Ok(Some(Ok(..)))` to replay it, `Ok(Some(Err(..)))` when the key was used for another body.
/// `same_request` tells whether the earlier request's recorded fingerprint is this request's.
async fn replay(
    state: &AppState,
    scope: Option<&str>,
    same_request: impl Fn(&str) -> bool,
) -> Result<Option<Result<Response, ApiError>>, ApiError> {
    let Some(scope) = scope else {
        return Ok(None);
    };
    let Some(earlier) = state.store.idempotent_reply(scope).await? else {
        return Ok(None);
    };
    if !same_request(&earlier.request_hash) {
        return Ok(Some(Err(ApiError::Conflict {
            code: "idempotency_key_reused",
            message: "this Idempotency-Key was used for a different request".into(),
        })));
    }
    let status = StatusCode::from_u16(earlier.status).unwrap_or(StatusCode::OK);
    Ok(Some(Ok(reply(status, earlier.reply, earlier.version))))
}

fn reply(status: StatusCode, mut answer: Value, version: u64) -> Response {
    if let Value::Object(m) = &mut answer {
        m.insert("version".into(), json!(version));
    }
    (status, Json(answer)).into_response()
}

/// The ids a command created, for its answer (the version is added at commit).
fn answer_for(events: &[CaseEvent]) -> Value {
    let mut m = serde_json::Map::new();
    for e in events {
        match e {
            CaseEvent::CaseOpened { case_id, .. } => {
                m.insert("case_id".into(), json!(case_id));
            }
            CaseEvent::ScreeningRecorded {
                screening_id,
                actionable_needs,
                ..
            } => {
                m.insert("screening_id".into(), json!(screening_id));
                m.insert("actionable_needs".into(), json!(actionable_needs));
            }
            CaseEvent::CarePlanRevised {
                plan_version,
                goals,
                ..
            } => {
                m.insert("plan_version".into(), json!(plan_version));
                let ids: Vec<_> = goals.iter().map(|g| g.goal_id).collect();
                m.insert("goal_ids".into(), json!(ids));
            }
            CaseEvent::ReferralSent { referral_id, .. } => {
                m.insert("referral_id".into(), json!(referral_id));
            }
            CaseEvent::AppointmentScheduled { appointment_id, .. } => {
                m.insert("appointment_id".into(), json!(appointment_id));
            }
            CaseEvent::ContactLogged { activity_id, .. } => {
                m.insert("activity_id".into(), json!(activity_id));
            }
            _ => {}
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{ActorId, AgencyId, Role};

    fn meta(route: &str) -> CommandMeta {
        CommandMeta {
            actor: Actor {
                id: ActorId::parse("cm-ada").unwrap(),
                role: Role::CaseManager,
                agency: AgencyId::parse("north").unwrap(),
                provider: None,
            },
            idempotency_key: None,
            correlation_id: "c".into(),
            command_id: Uuid::now_v7(),
            route: route.into(),
        }
    }

    #[test]
    fn a_request_is_fingerprinted_by_what_its_body_means() {
        let m = meta("POST /v1/cases/x/contacts");
        let h = |body: &str| m.request_hash(body.as_bytes());
        let first = h(r#"{"a":1,"b":[100,"x"],"c":{"d":null,"e":true}}"#);
        assert_eq!(
            first,
            h("{ \"c\": {\"e\": true, \"d\": null},\n \"b\": [1e2, \"x\"], \"a\": 1.0 }")
        );
        assert_ne!(first, h(r#"{"a":1,"b":[101,"x"],"c":{"d":null,"e":true}}"#));
        assert_ne!(
            first,
            h(r#"{"a":1,"b":["x",100],"c":{"d":null,"e":true}}"#),
            "order in arrays matters"
        );
        assert_ne!(
            first,
            meta("POST /v1/cases/y/contacts")
                .request_hash(br#"{"a":1,"b":[100,"x"],"c":{"d":null,"e":true}}"#),
            "so does the route"
        );
        // Not JSON: its bytes.
        assert_eq!(h("{not json"), m.byte_hash(b"{not json"));
    }
}
