//! The API's one error type. Renders the contract's body:
//! `{"error": {"code", "message", "details": [{"path", "message"}]}}`.
//! Internal failures answer a generic 500 and are logged once here, with the request id from the
//! current span.

use crate::environments::ServiceError;
use crate::store::StoreError;
use axum::extract::OriginalUri;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::aggregate::DomainError;
use domain::config::{ConfigError, FieldError};
use domain::text::error_chain;
use domain::text::{shown, truncated};
use serde::Serialize;

/// The most characters of a message built from a library's description of bad input (which may
/// quote the input) that are sent back.
const MAX_ECHOED_MESSAGE_CHARS: usize = 200;

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable word for programs: `bad_request`, `malformed_document`, `unauthorized`,
    /// `forbidden`, `not_found`, `method_not_allowed`, `request_timeout`, `already_exists`,
    /// `name_taken`, `not_failed`, `invalid_state`, `executor_alive`, `payload_too_large`,
    /// `unsupported_media_type`, `validation_failed`, `idempotency_key_reused`,
    /// `request_header_fields_too_large`, `quota_exceeded`, `rate_limited`, `internal`,
    /// `unavailable`.
    #[schema(example = "not_found")]
    pub code: &'static str,
    /// For people; client values quoted in it are cut short.
    pub message: String,
    /// One entry per bad field (`validation_failed`); empty otherwise.
    pub details: Vec<FieldError>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// Authenticated, but not allowed this operation.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body stopped arriving (PROVISIONER_HTTP_BODY_TIMEOUT_MS)")]
    BodyTimeout,
    #[error("the request line and headers are larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
    /// The client's content type, quoted and cut short.
    #[error("unsupported content type {0}: use application/json or application/yaml")]
    UnsupportedMediaType(String),
    #[error("the document could not be parsed: {0}")]
    MalformedDocument(String),
    #[error("the configuration is invalid")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// The message names what was not found, any client value in it cut short.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The tenant's quota of active environments is full (429, no `Retry-After`: it frees only
    /// when one of them is destroyed).
    #[error("{0}")]
    QuotaExceeded(String),
    /// The token sent commands faster than its rate limit; `Retry-After` says when to try again.
    #[error(
        "too many commands: at most {per_minute} per minute for each token; retry in \
         {retry_after_seconds}s"
    )]
    RateLimited {
        per_minute: u32,
        retry_after_seconds: u64,
    },
    #[error("the service is temporarily unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AppError {
    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        AppError::Internal(Box::new(error))
    }

    /// 404 for an environment id (or anything in its place), echoing at most a short prefix.
    pub fn environment_not_found(id: &str) -> Self {
        AppError::NotFound(format!("environment {} not found", shown(id)))
    }

    /// 400 from a library's description of bad input, cut short.
    fn bad_input(context: &str, error: &dyn std::error::Error) -> Self {
        let message = format!("{context}: {error}");
        let head = truncated(&message, MAX_ECHOED_MESSAGE_CHARS);
        if head.len() == message.len() {
            AppError::BadRequest(message)
        } else {
            AppError::BadRequest(format!("{head}..."))
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            AppError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            AppError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            AppError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            AppError::HeadTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request_header_fields_too_large",
            ),
            AppError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            AppError::MalformedDocument(_) => (StatusCode::BAD_REQUEST, "malformed_document"),
            AppError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            AppError::IdempotencyKeyReused(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AppError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            AppError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            AppError::QuotaExceeded(_) => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
            AppError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            AppError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<ConfigError> for AppError {
    fn from(error: ConfigError) -> Self {
        match error {
            ConfigError::TooLarge { limit } => AppError::PayloadTooLarge { limit },
            ConfigError::Syntax(message) => AppError::MalformedDocument(message),
            ConfigError::Invalid(details) => AppError::Validation(details),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Rejected(DomainError::NotFound) => {
                AppError::NotFound("environment not found".into())
            }
            StoreError::Rejected(rejected @ DomainError::AlreadyExists) => AppError::Conflict {
                code: "already_exists",
                message: rejected.to_string(),
            },
            StoreError::Rejected(rejected @ DomainError::NotFailed { .. }) => AppError::Conflict {
                code: "not_failed",
                message: rejected.to_string(),
            },
            StoreError::Rejected(
                rejected @ (DomainError::NotAllowed { .. } | DomainError::Refused { .. }),
            ) => AppError::Conflict {
                code: "invalid_state",
                message: rejected.to_string(),
            },
            StoreError::NameTaken(message) => AppError::Conflict {
                code: "name_taken",
                message,
            },
            StoreError::QuotaExceeded(message) => AppError::QuotaExceeded(format!(
                "{message}: destroy one first, or ask an admin to raise the quota \
                 (PROVISIONER_TENANT_QUOTAS)"
            )),
            StoreError::Conflict => AppError::Unavailable(Box::new(StoreError::Conflict)),
            // Every client value is bounded before it reaches an event, so only a defect can
            // build an event this large: an internal error, and nothing was recorded.
            error @ StoreError::EventTooLarge(_) => AppError::internal(error),
            // The service seals the external id apart first: only a defect records it.
            error @ StoreError::Rejected(DomainError::ExternalIdNotSealed) => {
                AppError::internal(error)
            }
            StoreError::Unavailable(source) => AppError::Unavailable(source),
            StoreError::Internal(source) => AppError::Internal(source),
        }
    }
}

impl From<ServiceError> for AppError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::NotFound(id) => AppError::environment_not_found(id.as_str()),
            ServiceError::Config(error) => error.into(),
            error @ (ServiceError::ProviderNotEnabled { .. }
            | ServiceError::AwsStateBucketUnset
            | ServiceError::AwsSecretsKeyUnset) => {
                AppError::Validation(error.provider_refusal().into_iter().collect())
            }
            error @ ServiceError::IdempotencyKeyReused { .. } => {
                AppError::IdempotencyKeyReused(error.to_string())
            }
            error @ ServiceError::IdempotencyKeyContended => AppError::Unavailable(Box::new(error)),
            ServiceError::Store(error) => error.into(),
            ServiceError::Operator(error) => AppError::Validation(vec![FieldError {
                path: error.field().into(),
                message: error.to_string(),
            }]),
            error @ ServiceError::ExecutorAlive { .. } => AppError::Conflict {
                code: "executor_alive",
                message: error.to_string(),
            },
            error @ ServiceError::LeasesUnavailable(_) => AppError::Unavailable(Box::new(error)),
            error @ ServiceError::Secrets(_) => AppError::Unavailable(Box::new(error)),
            ServiceError::Database(error) => error.into(),
            ServiceError::Corrupt(source) => AppError::Internal(source),
        }
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        match std::error::Error::source(&rejection) {
            Some(source) => AppError::bad_input("invalid query string", source),
            None => AppError::bad_input("invalid query string", &rejection),
        }
    }
}

impl From<PathRejection> for AppError {
    /// Path parameters are ids (strings): only a value that is not UTF-8 gets here, and it
    /// cannot name an environment.
    fn from(_: PathRejection) -> Self {
        AppError::NotFound("environment not found".into())
    }
}

/// The router's fallback: 404 with the error body for a path no route matches.
pub async fn no_route(method: Method, OriginalUri(uri): OriginalUri) -> AppError {
    AppError::NotFound(format!(
        "no route for {} {}",
        method_name(&method),
        shown(uri.path())
    ))
}

/// The routes' fallback for a method they do not serve: 405 with the error body (axum adds
/// `Allow`).
pub async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> AppError {
    AppError::MethodNotAllowed(format!(
        "method {} is not allowed on {}",
        method_name(&method),
        shown(uri.path())
    ))
}

/// A method as written when it is a plausible one, quoted and cut short otherwise.
fn method_name(method: &Method) -> String {
    const PLAIN_MAX: usize = 10;
    let name = method.as_str();
    if name.len() <= PLAIN_MAX && name.bytes().all(|b| b.is_ascii_uppercase()) {
        name.to_owned()
    } else {
        shown(name)
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

impl From<crate::store::ReadError> for AppError {
    fn from(error: crate::store::ReadError) -> Self {
        match error {
            crate::store::ReadError::Database(error) => error.into(),
            error @ crate::store::ReadError::Decode(_) => AppError::internal(error),
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
            AppError::Validation(details) => details.clone(),
            _ => Vec::new(),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message,
                details,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        match self {
            // A client that sends that much is not one to keep talking to.
            AppError::HeadTooLarge { .. } => {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
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
            AppError::RateLimited {
                retry_after_seconds,
                ..
            } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
            }
            _ => {}
        }
        response
    }
}
