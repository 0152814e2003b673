//! `/fhir/r4/Subscription`: a provider's system subscribes to its changed Tasks (the R4
//! Subscriptions backport: `criteria` the topic `schemas::fhir::TASK_TOPIC`, channel
//! `rest-hook`, payload `id-only`); `crate::fhir_notify` delivers. Create, read, delete.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use schemas::fhir::{
    Resource, Subscription, SubscriptionChannel, BACKPORT_PAYLOAD_CONTENT, FHIR_JSON, TASK_TOPIC,
};
use schemas::Role;
use serde_json::json;
use tracing::instrument;
use uuid::Uuid;

use super::{fhir_response, FhirError};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::startup::AppState;
use crate::store::subscriptions::StoredSubscription;

fn render(s: &StoredSubscription) -> Subscription {
    Subscription {
        id: Some(s.id.clone()),
        status: s.status.clone(),
        reason: s.reason.clone(),
        criteria: TASK_TOPIC.to_owned(),
        error: s.error.clone(),
        channel: SubscriptionChannel {
            kind: "rest-hook".into(),
            endpoint: Some(s.endpoint.clone()),
            payload: Some(FHIR_JSON.to_owned()),
            payload_element: Some(json!({"extension": [
                {"url": BACKPORT_PAYLOAD_CONTENT, "valueCode": "id-only"}
            ]})),
            header: vec![],
        },
    }
}

/// The provider a caller subscribes for: only a provider's own system (a `service` token).
fn subscriber(caller: &Caller) -> Result<(String, String), ApiError> {
    let actor = &caller.0;
    match (&actor.role, &actor.provider) {
        (Role::Service, Some(p)) => Ok((actor.agency.as_str().to_owned(), p.as_str().to_owned())),
        _ => Err(ApiError::forbidden(
            "role_not_allowed",
            "a provider's own system (a service token bound to it) subscribes to its Tasks",
        )),
    }
}

fn invalid(code: &'static str, message: &str) -> FhirError {
    FhirError(ApiError::invalid(code, message.to_owned()))
}

#[instrument(skip_all)]
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    body: Bytes,
) -> Result<Response, FhirError> {
    let caller = caller?;
    let (agency, provider) = subscriber(&caller)?;
    let wanted = match serde_json::from_slice::<Resource>(&body) {
        Ok(Resource::Subscription(s)) => s,
        Ok(_) => {
            return Err(invalid(
                "wrong_resource_type",
                "the body must be a Subscription",
            ))
        }
        Err(e) => {
            return Err(FhirError(ApiError::bad_request(
                "malformed_resource",
                format!("the body is not a FHIR Subscription in JSON: {e}"),
            )))
        }
    };
    if wanted.criteria != TASK_TOPIC {
        return Err(invalid(
            "unknown_topic",
            &format!("the one topic served is {TASK_TOPIC} (criteria)"),
        ));
    }
    if !matches!(wanted.status.as_str(), "requested" | "active") {
        return Err(invalid(
            "invalid_status",
            "a new subscription is `requested`",
        ));
    }
    let channel = &wanted.channel;
    if channel.kind != "rest-hook" {
        return Err(invalid(
            "unsupported_channel",
            "the channel served is rest-hook",
        ));
    }
    let endpoint = channel
        .endpoint
        .as_deref()
        .and_then(|e| url::Url::parse(e).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| {
            invalid(
                "invalid_endpoint",
                "channel.endpoint must be an http(s) URL",
            )
        })?;
    if channel
        .payload
        .as_deref()
        .is_some_and(|p| p != FHIR_JSON && p != "application/json")
    {
        return Err(invalid(
            "unsupported_payload",
            "the payload served is application/fhir+json",
        ));
    }
    let content = channel
        .payload_element
        .as_ref()
        .and_then(|p| p["extension"].as_array())
        .and_then(|exts| {
            exts.iter()
                .find(|e| e["url"] == BACKPORT_PAYLOAD_CONTENT)
                .and_then(|e| e["valueCode"].as_str())
        });
    if content.is_some_and(|c| c != "id-only") {
        return Err(invalid(
            "unsupported_payload",
            "the payload content served is id-only",
        ));
    }
    if channel.header.iter().any(|h| {
        h.split_once(':').is_none_or(|(name, _)| {
            name.trim().is_empty() || !name.trim().bytes().all(|b| b.is_ascii_graphic())
        })
    }) {
        return Err(invalid(
            "invalid_header",
            "each channel.header is `Name: value`",
        ));
    }
    let stored = StoredSubscription {
        id: Uuid::now_v7().to_string(),
        agency,
        provider_id: provider,
        actor_id: caller.0.id.as_str().to_owned(),
        reason: wanted.reason.clone(),
        endpoint: endpoint.to_string(),
        headers: channel.header.clone(),
        status: "active".into(),
        error: None,
        created_at: state.clock.now().to_rfc3339(),
        events_since_start: 0,
    };
    state.store.create_subscription(&stored).await?;
    tracing::info!(subscription = %stored.id, provider = %stored.provider_id, "subscribed");
    let mut response = fhir_response(
        StatusCode::CREATED,
        &Resource::Subscription(render(&stored)),
        None,
    );
    if let Ok(v) = HeaderValue::from_str(&format!("Subscription/{}", stored.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// The caller's own subscription `id` (an admin's: any).
async fn own(state: &AppState, caller: &Caller, id: &str) -> Result<StoredSubscription, ApiError> {
    let not_found = || ApiError::not_found("not_found", "no resource with this id");
    let s = state.store.subscription(id).await?.ok_or_else(not_found)?;
    let actor = &caller.0;
    let mine = actor.role == Role::Admin
        || (actor.agency.as_str() == s.agency
            && actor
                .provider
                .as_ref()
                .is_some_and(|p| p.as_str() == s.provider_id));
    if mine {
        Ok(s)
    } else {
        Err(not_found())
    }
}

#[instrument(skip_all, fields(id = %id))]
pub(super) async fn read(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let s = own(&state, &caller?, &id).await?;
    Ok(fhir_response(
        StatusCode::OK,
        &Resource::Subscription(render(&s)),
        None,
    ))
}

#[instrument(skip_all, fields(id = %id))]
pub(super) async fn delete(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let s = own(&state, &caller?, &id).await?;
    state.store.end_subscription(&s.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
