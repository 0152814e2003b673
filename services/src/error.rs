//! Errors: `StoreError` for the store, `ApiError` for everything a request can end in. One
//! `IntoResponse` turns an `ApiError` into the contract's error body; internal details are logged,
//! never sent.

use aggregates::case::RefusalKind;
use aggregates::CaseError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemas::wire::{ErrorBody, ErrorDetail};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot create the data directory: {0}")]
    DataDir(#[source] std::io::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("stored data does not read back: {0}")]
    Corrupt(String),
    /// An event a projection cannot apply: the projection stops there, visibly.
    #[error(transparent)]
    CannotApply(#[from] projections::log::ApplyError),
    #[error("unexpected store error: {0}")]
    Unexpected(String),
    /// A backup or restore could not be made; nothing was changed.
    #[error("backup: {0}")]
    Backup(String),
    /// The database's disk is full: nothing was written.
    #[error("the store's disk is full: {0}")]
    Full(String),
    /// Another process is rebuilding this projection.
    #[error("a rebuild of projection {0} is already running")]
    RebuildRunning(String),
}

/// A database error is the store being unreachable (the API's 503, which a client retries) when
/// the connection failed or the server is going away or not yet accepting connections
/// (SQLSTATE classes 08 and 57: connection exception, operator intervention), or when no
/// connection came in time; any other is an error of its own.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if unreachable(&e) {
            StoreError::Unavailable(e.to_string())
        } else if full(&e) {
            StoreError::Full(e.to_string())
        } else {
            StoreError::Database(e)
        }
    }
}

/// Whether `e` is the database's disk being full (SQLite's SQLITE_FULL, PostgreSQL's disk_full).
pub(crate) fn full(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code == "13" || code == "53100"),
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::StorageFull,
        _ => false,
    }
}

/// Whether `e` means the database cannot be reached now (see `From<sqlx::Error>`).
pub(crate) fn unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57")),
        _ => false,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no or unknown bearer token")]
    Unauthorized,
    #[error("the bearer token expired")]
    TokenExpired,
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("this route does not take that method")]
    MethodNotAllowed,
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request was not complete within {secs} s; send it again")]
    RequestTimeout { secs: u64 },
    #[error("the request's line and headers are larger than {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// An update's `If-Match` names a version the resource has moved on from.
    #[error("{message}")]
    PreconditionFailed { message: String },
    /// An update that must name the version it was made on did not (`If-Match`).
    #[error("send If-Match with the version this update was made on")]
    PreconditionRequired,
    #[error(transparent)]
    Refused(#[from] CaseError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            message: message.into(),
        }
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send a valid token as `Authorization: Bearer <token>`".into(),
            ),
            ApiError::TokenExpired => (
                StatusCode::UNAUTHORIZED,
                "token_expired",
                "this token expired; ask an admin for a new one".into(),
            ),
            ApiError::Forbidden { code, message } => (StatusCode::FORBIDDEN, code, message.clone()),
            ApiError::NotFound { code, message } => (StatusCode::NOT_FOUND, code, message.clone()),
            ApiError::BadRequest { code, message } => {
                (StatusCode::BAD_REQUEST, code, message.clone())
            }
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method; see /v1/openapi.json".into(),
            ),
            ApiError::TooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                self.to_string(),
            ),
            ApiError::RequestTimeout { .. } => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                self.to_string(),
            ),
            ApiError::HeadersTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                self.to_string(),
            ),
            ApiError::Invalid { code, message } => {
                (StatusCode::UNPROCESSABLE_ENTITY, code, message.clone())
            }
            ApiError::Conflict { code, message } => (StatusCode::CONFLICT, code, message.clone()),
            ApiError::PreconditionFailed { message } => (
                StatusCode::PRECONDITION_FAILED,
                "version_conflict",
                message.clone(),
            ),
            ApiError::PreconditionRequired => (
                StatusCode::PRECONDITION_REQUIRED,
                "if_match_required",
                self.to_string(),
            ),
            ApiError::Refused(e) => {
                let status = match e.kind() {
                    RefusalKind::NotFound => StatusCode::NOT_FOUND,
                    RefusalKind::Forbidden => StatusCode::FORBIDDEN,
                    RefusalKind::Conflict => StatusCode::CONFLICT,
                    RefusalKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
                };
                (status, e.code(), e.to_string())
            }
            ApiError::Store(StoreError::Full(_)) => (
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_full",
                "the store's disk is full; nothing was changed, try again once space is freed"
                    .into(),
            ),
            ApiError::Store(StoreError::Unavailable(_) | StoreError::Connect(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the event store is unavailable; nothing was changed, try again".into(),
            ),
            ApiError::Store(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "an internal error occurred; it has been logged".into(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self, code, "request failed");
        } else {
            tracing::debug!(code, %message, "request refused");
        }
        // Refused before its body was read whole: the connection cannot carry another request,
        // so the client is told not to reuse it (else its next request meets a closed socket).
        let unread_body = matches!(
            self,
            ApiError::TooLarge { .. }
                | ApiError::RequestTimeout { .. }
                | ApiError::HeadersTooLarge { .. }
        );
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if unread_body {
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}
