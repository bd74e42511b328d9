//! Handlers for `/v1/environments`.

use super::auth::{Principal, RequireRole};
use super::error::{AppError, ErrorBody};
use super::extract::{Path, Query};
use super::request_id::RequestId;
use super::{AppState, MAX_BODY_BYTES};
use crate::environments::{Accepted, Caller};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use domain::aggregate::{Command, Status};
use domain::config::Format;
use domain::ids::EnvironmentId;
use domain::tenant::{Role, TenantId};
use domain::wire::PublishedMetadata;
use futures::StreamExt;
use projections::environment_view::EnvironmentView;
use projections::queries::{self, ListQuery, Page};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The environment named in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by `Path<String>`; this describes it
pub(super) struct EnvironmentPath {
    /// The environment's id, `env_<ulid>` (any other value answers 404).
    id: String,
}

/// How much of a body over the limit is still read (and dropped) before answering 413: a client
/// that is still sending would otherwise see its connection reset instead of the answer.
const MAX_DRAINED_BYTES: usize = 1024 * 1024;
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// `POST /v1/environments`'s optional header.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // read from the headers; this describes it
struct IdempotencyKey {
    /// Binds, per caller, the key to the environment the first request created: the same key
    /// with the same body answers that environment again; with another body, 422.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255)]
    // MAX_IDEMPOTENCY_KEY_LEN
    idempotency_key: Option<String>,
}

pub(super) fn caller(principal: &Principal, request_id: &RequestId) -> Caller {
    Caller {
        actor: principal.actor.clone(),
        tenant: principal.tenant.clone(),
        all_tenants: principal.scope().is_none(),
        request_id: request_id.as_str().to_owned(),
    }
}

/// A malformed id cannot name an environment: 404, as for any unknown id.
/// Refuses an environment `principal` may not see exactly as one that does not exist (404), so
/// another tenant's ids tell nothing; answers its history (never empty) otherwise.
pub(super) async fn visible_history(
    state: &AppState,
    principal: &Principal,
    id: &EnvironmentId,
) -> Result<Vec<domain::wire::EventEnvelope>, AppError> {
    let history = state.environments.store().history(id.as_str()).await?;
    match history.first() {
        Some(first) if principal.sees(first.tenant()) => Ok(history),
        _ => Err(AppError::environment_not_found(id.as_str())),
    }
}

pub(super) fn parse_id(id: &str) -> Result<EnvironmentId, AppError> {
    EnvironmentId::parse(id).map_err(|_| AppError::environment_not_found(id))
}

pub(super) fn content_format(headers: &HeaderMap) -> Result<Format, AppError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => Ok(Format::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => Ok(Format::Yaml),
        _ => Err(AppError::UnsupportedMediaType(domain::text::shown(
            content_type,
        ))),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, AppError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN)
        .ok_or_else(|| {
            AppError::BadRequest(format!(
                "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
            ))
        })?;
    Ok(Some(key))
}

/// The answer to a command: the environment and where to follow it.
#[derive(Serialize, ToSchema)]
pub struct AcceptedBody {
    /// `env_<ulid>`.
    pub id: EnvironmentId,
    pub name: String,
    /// The status right after the command.
    pub status: Status,
    pub links: Links,
}

/// Where to read an environment and follow it.
#[derive(Serialize, ToSchema)]
pub struct Links {
    /// `/v1/environments/{id}`.
    #[serde(rename = "self")]
    pub self_: String,
    /// `/v1/environments/{id}/events` (SSE).
    pub events: String,
    /// `/v1/environments/{id}/history`.
    pub history: String,
}

/// `GET /v1/environments/{id}/outputs`.
#[derive(Serialize, ToSchema)]
pub struct OutputsBody {
    pub id: String,
    pub name: String,
    #[schema(value_type = Status)]
    pub status: String,
    /// Non-secret outputs: an object of strings (`{}` until infra is applied).
    #[schema(value_type = BTreeMap<String, String>)]
    pub outputs: serde_json::Value,
}

/// One event of an environment's history: its envelope without `environment_id`.
#[derive(Serialize, ToSchema)]
pub struct HistoryItem<'a> {
    /// 1-based position in the environment's history.
    pub sequence: u64,
    /// The event type, e.g. `EnvironmentRequested`.
    #[serde(rename = "type")]
    pub event_type: &'a str,
    /// The payload's version.
    pub version: &'a str,
    /// The event's fields.
    #[schema(value_type = Object)]
    pub payload: &'a serde_json::Value,
    pub metadata: PublishedMetadata<'a>,
    /// When the event was committed (RFC 3339, UTC, microseconds).
    #[schema(format = DateTime)]
    pub recorded_at: String,
}

pub(super) fn accepted(accepted: Accepted) -> Response {
    let id = accepted.id.as_str();
    let location = format!("/v1/environments/{id}");
    let body = AcceptedBody {
        links: Links {
            self_: location.clone(),
            events: format!("{location}/events"),
            history: format!("{location}/history"),
        },
        id: accepted.id,
        name: accepted.name,
        status: accepted.status,
    };
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response()
}

/// The MetaConfig document of a request and its format, as `POST /v1/environments` and
/// `POST /v1/plans` read it: 415 for another content type, 413 over the limit, 400 for a body
/// that is not UTF-8.
pub(super) async fn document(
    headers: &HeaderMap,
    body: Body,
) -> Result<(String, Format), AppError> {
    let format = content_format(headers)?;
    let body = read_body(body).await?;
    let document = String::from_utf8(body.into())
        .map_err(|_| AppError::MalformedDocument("the body is not valid UTF-8".into()))?;
    Ok((document, format))
}

/// Reads a body of at most [`MAX_BODY_BYTES`] (the document limit); a larger one is 413.
pub(super) async fn read_body(body: Body) -> Result<Bytes, AppError> {
    let mut chunks = body.into_data_stream();
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|error| {
            let error = error.into_inner();
            if error.is::<tower_http::timeout::TimeoutError>() {
                AppError::BodyTimeout
            } else {
                AppError::BadRequest(format!("the request body could not be read: {error}"))
            }
        })?;
        total = total.saturating_add(chunk.len());
        if total <= MAX_BODY_BYTES {
            kept.extend_from_slice(&chunk);
        } else {
            kept = Vec::new();
            if total > MAX_BODY_BYTES + MAX_DRAINED_BYTES {
                break;
            }
        }
    }
    if total > MAX_BODY_BYTES {
        return Err(AppError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    Ok(Bytes::from(kept))
}

/// `POST /v1/environments`. The body limit is the document limit (`MAX_DOCUMENT_BYTES`); the
/// parser checks it again.
#[utoipa::path(
    post,
    path = "/v1/environments",
    tag = "environments",
    operation_id = "create_environment",
    params(IdempotencyKey),
    request_body(
        description = "A MetaConfig document, as YAML or JSON (at most 256 KiB).",
        content(
            (Object = "application/json", example = json!({
                "name": "demo", "cloud": {"provider": "sandbox"}, "cluster": {"profile": "small"}
            })),
            (String = "application/yaml", example = json!("name: demo\ncloud:\n  provider: sandbox\ncluster:\n  profile: small\n")),
            (String = "application/x-yaml"),
            (String = "text/yaml"),
            (String = "text/x-yaml"),
        ),
    ),
    responses(
        (status = 202, description = "Requested: the environment is queued.", body = AcceptedBody,
            headers(("Location" = String, description = "`/v1/environments/{id}`"))),
        (status = 400, description = "`malformed_document` (not YAML/JSON, not UTF-8) or `bad_request` (a bad `Idempotency-Key`).", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body stopped arriving.", body = ErrorBody),
        (status = 403, description = "`forbidden`: a viewer's token.", body = ErrorBody),
        (status = 409, description = "`name_taken`: an active environment of the tenant has this name.", body = ErrorBody),
        (status = 429, description = "`quota_exceeded`: the tenant has as many active environments as its quota allows; or `rate_limited` (with `Retry-After`).", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 256 KiB.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`validation_failed` (every bad field in `details`: a region outside `PROVISIONER_ALLOWED_REGIONS` on `cloud.region` too) or `idempotency_key_reused`.", body = ErrorBody),
        (status = 503, description = "`unavailable`: Postgres cannot be reached, or the command kept losing races.", body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    principal.require(Role::Operator)?;
    let (document, format) = document(&headers, body).await?;
    let key = idempotency_key(&headers)?;
    let result = state
        .environments
        .create(&caller(&principal, &request_id), &document, format, key)
        .await?;
    Ok(accepted(result))
}

/// `GET /v1/environments?status=&name=&limit=&cursor=`
#[utoipa::path(
    get,
    path = "/v1/environments",
    tag = "environments",
    operation_id = "list_environments",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of environments, oldest first.", body = Page),
        (status = 400, description = "`bad_request`: an unknown status, a limit out of range, a bad cursor, or a name no environment can have.", body = ErrorBody),
        (status = 503, description = "`unavailable`: Postgres cannot be reached.", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<ListQuery>,
) -> Result<Response, AppError> {
    let scope = principal.scope().map(TenantId::as_str);
    let page = queries::list(&state.pool, &query, scope)
        .await
        .map_err(projection_error)?;
    Ok(Json(page).into_response())
}

/// `GET /v1/environments/{id}`: the read model; falls back to the event store while the
/// projection has not caught up with a just-created environment.
#[utoipa::path(
    get,
    path = "/v1/environments/{id}",
    tag = "environments",
    operation_id = "get_environment",
    params(EnvironmentPath),
    responses(
        (status = 200, description = "The environment.", body = EnvironmentView),
        (status = 404, description = "`not_found`: no such environment (or a malformed id).", body = ErrorBody),
        (status = 503, description = "`unavailable`: Postgres cannot be reached.", body = ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<EnvironmentView>, AppError> {
    Ok(Json(view(&state, &principal, &id).await?))
}

/// `GET /v1/environments/{id}/outputs`: the read model's outputs (never a sensitive one: the
/// executor does not report those).
#[utoipa::path(
    get,
    path = "/v1/environments/{id}/outputs",
    tag = "environments",
    operation_id = "get_environment_outputs",
    params(EnvironmentPath),
    responses(
        (status = 200, description = "The environment's outputs.", body = OutputsBody),
        (status = 404, description = "`not_found`: no such environment (or a malformed id).", body = ErrorBody),
        (status = 503, description = "`unavailable`: Postgres cannot be reached.", body = ErrorBody),
    ),
)]
pub async fn outputs(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let view = view(&state, &principal, &id).await?;
    Ok(Json(OutputsBody {
        id: view.id,
        name: view.name,
        status: view.status,
        outputs: view.outputs,
    })
    .into_response())
}

/// One environment's read model, or its history folded while the projection catches up.
/// The environment `principal` may see: from the read model, or folded from the events when
/// the read model does not have it yet; "not found" for another tenant's.
async fn view(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<EnvironmentView, AppError> {
    let id = parse_id(id)?;
    let view = match queries::get(&state.pool, id.as_str())
        .await
        .map_err(projection_error)?
    {
        Some(view) => Some(view),
        None => {
            let history = state.environments.store().history(id.as_str()).await?;
            projections::environment_view::fold(&history)
                .map_err(AppError::internal)?
                .map(|folded| folded.into_view())
        }
    };
    view.filter(|view| principal.sees(&view.tenant))
        .ok_or_else(|| AppError::environment_not_found(id.as_str()))
}

/// `DELETE /v1/environments/{id}`
#[utoipa::path(
    delete,
    path = "/v1/environments/{id}",
    tag = "environments",
    operation_id = "destroy_environment",
    params(EnvironmentPath),
    responses(
        (status = 202, description = "Destroying (an in-flight step is cancelled first); repeated while destroying or after, the current status.", body = AcceptedBody,
            headers(("Location" = String, description = "`/v1/environments/{id}`"))),
        (status = 403, description = "`forbidden`: a viewer's token.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such environment (or a malformed id).", body = ErrorBody),
        (status = 409, description = "`invalid_state`: not allowed in the environment's status.", body = ErrorBody),
        (status = 503, description = "`unavailable`: Postgres cannot be reached, or the command kept losing races.", body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    principal.require(Role::Operator)?;
    let caller = caller(&principal, &request_id);
    user_command(&state, &caller, &id, Command::Destroy).await
}

/// `POST /v1/environments/{id}/retry`
#[utoipa::path(
    post,
    path = "/v1/environments/{id}/retry",
    tag = "environments",
    operation_id = "retry_environment",
    params(EnvironmentPath),
    responses(
        (status = 202, description = "Retrying the failed phase.", body = AcceptedBody,
            headers(("Location" = String, description = "`/v1/environments/{id}`"))),
        (status = 403, description = "`forbidden`: a viewer's token.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such environment (or a malformed id).", body = ErrorBody),
        (status = 409, description = "`not_failed`: only a failed environment is retried.", body = ErrorBody),
        (status = 503, description = "`unavailable`: Postgres cannot be reached, or the command kept losing races.", body = ErrorBody),
    ),
)]
pub async fn retry(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    principal.require(Role::Operator)?;
    let caller = caller(&principal, &request_id);
    user_command(&state, &caller, &id, Command::Retry).await
}

/// Runs a user's command on an existing environment and answers 202 with its status.
async fn user_command(
    state: &AppState,
    caller: &Caller,
    id: &str,
    command: Command,
) -> Result<Response, AppError> {
    let id = parse_id(id)?;
    let result = state.environments.run(caller, &id, command).await?;
    Ok(accepted(result))
}

/// `GET /v1/environments/{id}/history`: every event with its metadata, in order.
#[utoipa::path(
    get,
    path = "/v1/environments/{id}/history",
    tag = "environments",
    operation_id = "get_environment_history",
    params(EnvironmentPath),
    responses(
        (status = 200, description = "Every event, in order.", body = Vec<HistoryItem>),
        (status = 404, description = "`not_found`: no such environment (or a malformed id).", body = ErrorBody),
        (status = 503, description = "`unavailable`: Postgres cannot be reached.", body = ErrorBody),
    ),
)]
pub async fn history(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let id = parse_id(&id)?;
    let history = visible_history(&state, &principal, &id).await?;
    let items: Vec<_> = history
        .iter()
        .map(|e| HistoryItem {
            sequence: e.sequence,
            event_type: &e.event_type,
            version: &e.version,
            payload: &e.payload,
            metadata: e.published_metadata(),
            recorded_at: domain::wire::format_recorded_at(&e.recorded_at),
        })
        .collect();
    Ok(Json(items).into_response())
}

fn projection_error(error: projections::Error) -> AppError {
    match error {
        projections::Error::InvalidStatus(status) => {
            let words: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
            AppError::BadRequest(format!(
                "unknown status {}, expected one of: {}",
                domain::text::shown(&status),
                words.join(", ")
            ))
        }
        projections::Error::InvalidCursor
        | projections::Error::InvalidLimit { .. }
        | projections::Error::InvalidName { .. } => AppError::BadRequest(error.to_string()),
        projections::Error::Database(source) => AppError::from(source),
        other => AppError::internal(other),
    }
}
