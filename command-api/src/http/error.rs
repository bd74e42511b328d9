//! The API's one error type. Renders the contract's body:
//! `{"error": {"code", "message", "details": [{"path", "message"}]}}`.
//! Internal failures answer a generic 500 and are logged once here, with the request id from the
//! current span.

use crate::relay::error_chain;
use crate::store::StoreError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::aggregate::DomainError;
use domain::config::{ConfigError, FieldError};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported content type {0:?}: use application/json or application/yaml")]
    UnsupportedMediaType(String),
    #[error("the document could not be parsed: {0}")]
    MalformedDocument(String),
    #[error("the configuration is invalid")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    IdempotencyKeyReused(String),
    #[error("environment {0} not found")]
    NotFound(String),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("the service is temporarily unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AppError {
    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        AppError::Internal(Box::new(error))
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AppError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            AppError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            AppError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            AppError::MalformedDocument(_) => (StatusCode::BAD_REQUEST, "malformed_document"),
            AppError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            AppError::IdempotencyKeyReused(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AppError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            AppError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<ConfigError> for AppError {
    fn from(error: ConfigError) -> Self {
        match error {
            ConfigError::Syntax(message) => AppError::MalformedDocument(message),
            ConfigError::Invalid(details) => AppError::Validation(details),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Rejected(DomainError::NotFound) => AppError::NotFound(String::new()),
            StoreError::Rejected(rejected @ DomainError::AlreadyExists) => AppError::Conflict {
                code: "already_exists",
                message: rejected.to_string(),
            },
            StoreError::Rejected(rejected @ DomainError::NotFailed { .. }) => AppError::Conflict {
                code: "not_failed",
                message: rejected.to_string(),
            },
            StoreError::Rejected(rejected @ DomainError::NotAllowed { .. }) => AppError::Conflict {
                code: "invalid_state",
                message: rejected.to_string(),
            },
            StoreError::NameTaken(message) => AppError::Conflict {
                code: "name_taken",
                message,
            },
            StoreError::Conflict => AppError::Unavailable(Box::new(StoreError::Conflict)),
            StoreError::Unavailable(source) => AppError::Unavailable(source),
            StoreError::Internal(source) => AppError::Internal(source),
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        if crate::store::is_connection_error(&error) {
            AppError::Unavailable(Box::new(error))
        } else {
            AppError::internal(error)
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            AppError::Internal(source) => {
                tracing::error!(error = %error_chain(source.as_ref()), "internal error");
                self.to_string()
            }
            AppError::Unavailable(source) => {
                tracing::warn!(error = %error_chain(source.as_ref()), "dependency unavailable");
                self.to_string()
            }
            other => other.to_string(),
        };
        let details = match &self {
            AppError::Validation(details) => json!(details),
            _ => json!([]),
        };
        let body = json!({"error": {"code": code, "message": message, "details": details}});
        let mut response = (status, axum::Json(body)).into_response();
        match self {
            AppError::Unavailable(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            AppError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
