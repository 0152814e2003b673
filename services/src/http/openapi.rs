//! /v1/openapi.json, generated from the handlers' annotations so it cannot drift from the code.

use std::sync::OnceLock;

use axum::Json;
use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{billing, caseloads, commands, events, measures, reads, tokens};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Linkage", description = "Event-sourced referral tracking for children's and family mental-health case management."),
    paths(
        commands::open_case,
        commands::assign_case_manager,
        commands::record_screening,
        commands::revise_care_plan,
        commands::send_referral,
        commands::update_referral_status,
        commands::schedule_appointment,
        commands::record_appointment_outcome,
        commands::log_contact,
        commands::transition_case,
        commands::reopen_case,
        commands::correct_entry,
        reads::search_cases,
        reads::get_case,
        reads::get_events,
        reads::get_audit,
        reads::get_history,
        reads::get_reads,
        caseloads::get_caseload,
        caseloads::get_team,
        measures::get_measures,
        tokens::create_token,
        tokens::list_tokens,
        tokens::revoke_token,
        events::stream,
        billing::get_tcm,
        billing::create_batch,
        billing::list_batches,
        billing::get_batch,
        reads::list_instruments,
        reads::get_instrument,
        reads::healthz,
        reads::readyz,
        serve,
    ),
    // Referred to from header parameters only, which do not collect their schemas.
    components(schemas(schemas::IdempotencyKey)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// This document. The committed copy is `schemas/openapi.json`; a test keeps the two equal.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "the OpenAPI 3.1 document of this API")))]
pub async fn serve() -> Json<&'static Value> {
    Json(document())
}

/// The document as served: what the annotations generate, finished by [`finish`]. Built once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
        finish(&mut doc);
        doc
    })
}

/// Where the ids a response creates are used: (operation, status, the id's JSON pointer in the
/// body, the path parameter it fills, the operations that take it). Links let clients and
/// generated tests (schemathesis's stateful phase) follow a new case into the routes under it.
const LINKS: &[(&str, &str, &str, &str, &[&str])] = &[
    ("open_case", "201", "/case_id", "case_id", &["*"]),
    (
        "send_referral",
        "201",
        "/referral_id",
        "referral_id",
        &["update_referral_status"],
    ),
    (
        "schedule_appointment",
        "201",
        "/appointment_id",
        "appointment_id",
        &["record_appointment_outcome"],
    ),
    (
        "create_batch",
        "201",
        "/batch_id",
        "batch_id",
        &["get_batch"],
    ),
    (
        "create_token",
        "201",
        "/token_id",
        "token_id",
        &["revoke_token"],
    ),
];

/// What the annotations cannot say, applied to the generated document:
/// - the parameters of [`parameter_schema`];
/// - a query, path or header parameter is never JSON `null` (absent is its only "none"), so the
///   `null` that `Option` adds to a parameter's schema goes;
/// - every operation behind a token documents `4XX` with the error shape, and every operation
///   that can fail documents `5XX` the same way;
/// - the links of [`LINKS`].
fn finish(doc: &mut Value) {
    let mut operations: Vec<(String, String, Vec<String>)> = Vec::new(); // (id, path, path params)
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for operation in item.values_mut() {
                let id = operation["operationId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let parameters = operation
                    .get_mut("parameters")
                    .and_then(Value::as_array_mut);
                for parameter in parameters.into_iter().flatten() {
                    let name = parameter["name"].as_str().unwrap_or_default();
                    if let Some(spelled) = parameter_schema(&id, name) {
                        parameter["schema"] = spelled;
                    } else if let Some(schema) = parameter.get_mut("schema") {
                        drop_null(schema);
                    }
                }
                let secured = operation.get("security").is_some();
                let responses = &mut operation["responses"];
                let error = json!({"$ref": "#/components/schemas/ErrorBody"});
                if secured && responses.get("4XX").is_none() {
                    responses["4XX"] = json!({
                        "description": "refused, in the contract's error shape with a machine-readable code: \
                                        400 bad input, 401 no or bad token, 403 not allowed, 404 unknown, \
                                        408 request not complete in time, 409 conflict, 413 body too large, \
                                        422 a value or rule refused, 431 headers too large",
                        "content": {"application/json": {"schema": error.clone()}}
                    });
                }
                if responses.get("4XX").is_some() && responses.get("5XX").is_none() {
                    responses["5XX"] = json!({
                        "description": "the server could not answer now (503 store_unavailable: the store cannot \
                                        be reached; 507 storage_full: its disk is full); nothing was stored, \
                                        and a command may be retried with the same Idempotency-Key",
                        "content": {"application/json": {"schema": error}}
                    });
                }
                let params = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str().map(str::to_owned))
                    .collect();
                if !id.is_empty() {
                    operations.push((id, path.clone(), params));
                }
            }
        }
    }
    for (source, status, pointer, parameter, targets) in LINKS {
        let Some((_, source_path, source_params)) = operations.iter().find(|(id, ..)| id == source)
        else {
            continue;
        };
        let mut links = serde_json::Map::new();
        for (target, _, target_params) in &operations {
            let wanted = targets.contains(&"*") || targets.contains(&target.as_str());
            let fillable = |p: &String| p == parameter || source_params.contains(p);
            if !wanted
                || !target_params.iter().any(|p| p == parameter)
                || !target_params.iter().all(fillable)
            {
                continue;
            }
            let mut parameters = serde_json::Map::new();
            for p in target_params {
                let value = if p == parameter {
                    format!("$response.body#{pointer}")
                } else {
                    format!("$request.path.{p}")
                };
                parameters.insert(p.clone(), Value::String(value));
            }
            links.insert(
                target.clone(),
                json!({"operationId": target, "parameters": parameters}),
            );
        }
        let method_item = doc["paths"][source_path.as_str()]
            .as_object_mut()
            .and_then(|item| item.values_mut().find(|op| op["operationId"] == *source));
        if let Some(op) = method_item {
            op["responses"][*status]["links"] = Value::Object(links);
        }
    }
}

/// Parameters whose rule an annotation cannot spell: one of two formats.
fn parameter_schema(operation: &str, name: &str) -> Option<Value> {
    match (operation, name) {
        ("get_history", "as_of") => Some(json!({"oneOf": [
            {"type": "string", "format": "date-time"},
            {"type": "string", "format": "date"}
        ]})),
        _ => None,
    }
}

/// `type: [T, "null"]` becomes `type: T`; `oneOf: [{"type": "null"}, S]` becomes S.
fn drop_null(schema: &mut Value) {
    if let Some(types) = schema["type"].as_array() {
        let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        schema["type"] = match kept.as_slice() {
            [one] => one.clone(),
            _ => Value::Array(kept),
        };
    }
    if let Some(variants) = schema["oneOf"].as_array() {
        let kept: Vec<Value> = variants
            .iter()
            .filter(|v| v.get("type") != Some(&json!("null")))
            .cloned()
            .collect();
        if let [one] = kept.as_slice() {
            *schema = one.clone();
        }
    }
}
