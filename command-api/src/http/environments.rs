//! Handlers for `/v1/environments`.

use super::error::AppError;
use super::{AppState, MAX_BODY_BYTES, auth::Principal};
use crate::environments::{Accepted, Caller};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::aggregate::Command;
use domain::config::Format;
use domain::ids::EnvironmentId;
use projections::environment_view::EnvironmentView;
use projections::queries::{self, ListQuery};
use serde_json::json;

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

fn caller(principal: &Principal, headers: &HeaderMap) -> Caller {
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Caller {
        actor: principal.actor.clone(),
        tenant: None,
        request_id,
    }
}

fn parse_id(id: &str) -> Result<EnvironmentId, AppError> {
    // A malformed id cannot name an environment: answer 404, as for any unknown id.
    EnvironmentId::parse(id).map_err(|_| AppError::NotFound(id.to_owned()))
}

fn content_format(headers: &HeaderMap) -> Result<Format, AppError> {
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
        _ => Err(AppError::UnsupportedMediaType(content_type.to_owned())),
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

fn accepted(accepted: Accepted) -> Response {
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

/// `POST /v1/environments`
pub async fn create(
    State(state): State<AppState>,
    axum::Extension(principal): axum::Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let format = content_format(&headers)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            }
        } else {
            AppError::BadRequest(rejection.body_text())
        }
    })?;
    if body.len() > MAX_BODY_BYTES {
        return Err(AppError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    let document = std::str::from_utf8(&body)
        .map_err(|_| AppError::MalformedDocument("the body is not valid UTF-8".into()))?;
    let key = idempotency_key(&headers)?;
    let result = state
        .environments
        .create(&caller(&principal, &headers), document, format, key)
        .await?;
    Ok(accepted(result))
}

/// `GET /v1/environments?status=&name=&limit=&cursor=`
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    let Query(query) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
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
    let id = parse_id(&id)?;
    if let Some(view) = queries::get(&state.pool, id.as_str())
        .await
        .map_err(projection_error)?
    {
        return Ok(Json(view));
    }
    let history = state.environments.store().history(id.as_str()).await?;
    let mut view = None;
    for envelope in &history {
        view = projections::environment_view::apply(view, envelope).map_err(AppError::internal)?;
    }
    view.map(Json)
        .ok_or_else(|| AppError::NotFound(id.to_string()))
}

/// `DELETE /v1/environments/{id}`
pub async fn delete(
    State(state): State<AppState>,
    axum::Extension(principal): axum::Extension<Principal>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    user_command(&state, &principal, &headers, &id, Command::Destroy).await
}

/// `POST /v1/environments/{id}/retry`
pub async fn retry(
    State(state): State<AppState>,
    axum::Extension(principal): axum::Extension<Principal>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    user_command(&state, &principal, &headers, &id, Command::Retry).await
}

/// Runs a user's command on an existing environment and answers 202 with its status.
async fn user_command(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    id: &str,
    command: Command,
) -> Result<Response, AppError> {
    let id = parse_id(id)?;
    let result = state
        .environments
        .run(&caller(principal, headers), &id, command)
        .await?;
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
        return Err(AppError::NotFound(id.to_string()));
    }
    let items: Vec<_> = history
        .into_iter()
        .map(|e| {
            json!({
                "sequence": e.sequence,
                "type": e.event_type,
                "version": e.version,
                "payload": e.payload,
                "metadata": e.metadata,
                "recorded_at": e.recorded_at,
            })
        })
        .collect();
    Ok(Json(items).into_response())
}

fn projection_error(error: projections::Error) -> AppError {
    match error {
        projections::Error::InvalidCursor
        | projections::Error::InvalidLimit { .. }
        | projections::Error::InvalidStatus(_) => AppError::BadRequest(error.to_string()),
        projections::Error::Database(source) => AppError::from(source),
        other => AppError::internal(other),
    }
}
