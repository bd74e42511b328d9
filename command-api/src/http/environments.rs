//! Handlers for `/v1/environments`.

use super::error::AppError;
use super::extract::{Path, Query};
use super::request_id::RequestId;
use super::{AppState, MAX_BODY_BYTES, auth::Principal};
use crate::environments::{Accepted, Caller};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use domain::aggregate::{Command, Status};
use domain::config::Format;
use domain::ids::EnvironmentId;
use futures::StreamExt;
use projections::environment_view::EnvironmentView;
use projections::queries::{self, ListQuery};
use serde_json::json;

const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// How much of a body over the limit is still read (and dropped) before answering 413: a client
/// that is still sending would otherwise see its connection reset instead of the answer.
const MAX_DRAINED_BYTES: usize = 1024 * 1024;
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

pub(super) fn caller(principal: &Principal, request_id: &RequestId) -> Caller {
    Caller {
        actor: principal.actor.clone(),
        tenant: None,
        request_id: request_id.as_str().to_owned(),
    }
}

/// A malformed id cannot name an environment: 404, as for any unknown id.
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

pub(super) fn accepted(accepted: Accepted) -> Response {
    let id = accepted.id.as_str();
    let location = format!("/v1/environments/{id}");
    let body = json!({
        "id": id,
        "name": accepted.name,
        "status": accepted.status.as_str(),
        "links": {
            "self": location,
            "events": format!("/v1/environments/{id}/events"),
            "history": format!("/v1/environments/{id}/history"),
        },
    });
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
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let (document, format) = document(&headers, body).await?;
    let key = idempotency_key(&headers)?;
    let result = state
        .environments
        .create(&caller(&principal, &request_id), &document, format, key)
        .await?;
    Ok(accepted(result))
}

/// `GET /v1/environments?status=&name=&limit=&cursor=`
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Response, AppError> {
    let page = queries::list(&state.pool, &query)
        .await
        .map_err(projection_error)?;
    Ok(Json(page).into_response())
}

/// `GET /v1/environments/{id}`: the read model; falls back to the event store while the
/// projection has not caught up with a just-created environment.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EnvironmentView>, AppError> {
    Ok(Json(view(&state, &id).await?))
}

/// `GET /v1/environments/{id}/outputs`: the read model's outputs (never a sensitive one: the
/// executor does not report those).
pub async fn outputs(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let view = view(&state, &id).await?;
    let body = json!({
        "id": view.id,
        "name": view.name,
        "status": view.status,
        "outputs": view.outputs,
    });
    Ok(Json(body).into_response())
}

/// One environment's read model, or its history folded while the projection catches up.
async fn view(state: &AppState, id: &str) -> Result<EnvironmentView, AppError> {
    let id = parse_id(id)?;
    if let Some(view) = queries::get(&state.pool, id.as_str())
        .await
        .map_err(projection_error)?
    {
        return Ok(view);
    }
    let history = state.environments.store().history(id.as_str()).await?;
    projections::environment_view::fold(&history)
        .map_err(AppError::internal)?
        .map(|folded| folded.into_view())
        .ok_or_else(|| AppError::environment_not_found(id.as_str()))
}

/// `DELETE /v1/environments/{id}`
pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let caller = caller(&principal, &request_id);
    user_command(&state, &caller, &id, Command::Destroy).await
}

/// `POST /v1/environments/{id}/retry`
pub async fn retry(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
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
pub async fn history(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let id = parse_id(&id)?;
    let history = state.environments.store().history(id.as_str()).await?;
    if history.is_empty() {
        return Err(AppError::environment_not_found(id.as_str()));
    }
    let items: Vec<_> = history
        .into_iter()
        .map(|e| {
            json!({
                "sequence": e.sequence,
                "type": e.event_type,
                "version": e.version,
                "payload": e.payload,
                "metadata": e.published_metadata(),
                "recorded_at": domain::wire::format_recorded_at(&e.recorded_at),
            })
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
        projections::Error::InvalidCursor | projections::Error::InvalidLimit { .. } => {
            AppError::BadRequest(error.to_string())
        }
        projections::Error::Database(source) => AppError::from(source),
        other => AppError::internal(other),
    }
}
