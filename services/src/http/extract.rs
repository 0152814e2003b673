//! Request extractors that refuse bad input with the contract's error codes.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use schemas::IdempotencyKey;

use crate::auth::Caller;
use crate::command::CommandMeta;
use crate::error::ApiError;
use crate::startup::AppState;

/// A JSON body, parsed strictly: 400 for malformed JSON or an unknown field, 413 over the size
/// limit, 422 for a missing field or a value out of its domain. Keeps the raw bytes for the
/// idempotency fingerprint.
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let raw = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge {
                    limit: state.config.max_body_bytes,
                }
            } else {
                ApiError::bad_request("unreadable_body", e.body_text())
            }
        })?;
        let value = parse_json(&raw)?;
        Ok(Self { value, raw })
    }
}

pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(raw).map_err(|e| {
        use serde_json::error::Category;
        let message = e.to_string();
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
                "malformed_json",
                format!("the body is not valid JSON: {message}"),
            ),
            Category::Data if message.starts_with("unknown field") => {
                ApiError::bad_request("unknown_field", message)
            }
            Category::Data if message.starts_with("missing field") => {
                ApiError::invalid("missing_field", message)
            }
            Category::Data if message.starts_with("unknown variant") => {
                ApiError::invalid("invalid_enum_value", message)
            }
            Category::Data => ApiError::invalid("invalid_value", message),
        }
    })
}

impl FromRequestParts<AppState> for CommandMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Caller(actor) = Caller::from_request_parts(parts, state).await?;
        let header = |name: &str| -> Result<Option<String>, ApiError> {
            parts
                .headers
                .get(name)
                .map(|v| {
                    v.to_str().map(str::to_owned).map_err(|_| {
                        ApiError::bad_request(
                            "invalid_header",
                            format!("{name} must be visible ASCII"),
                        )
                    })
                })
                .transpose()
        };
        let idempotency_key = header("idempotency-key")?
            .map(|k| {
                IdempotencyKey::parse(k).map_err(|e| {
                    ApiError::bad_request(
                        "invalid_idempotency_key",
                        format!("Idempotency-Key: {e}"),
                    )
                })
            })
            .transpose()?;
        let correlation_id = match header("x-correlation-id")? {
            Some(c)
                if !c.is_empty() && c.len() <= 128 && c.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                c
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_header",
                    "X-Correlation-Id must be 1-128 visible ASCII characters",
                ))
            }
            None => Uuid::now_v7().to_string(),
        };
        Ok(Self {
            actor,
            idempotency_key,
            correlation_id,
            command_id: Uuid::now_v7(),
            route: format!("{} {}", parts.method, parts.uri.path()),
        })
    }
}
