//! `GET /v1/environments/{id}/logs`: executor output, per operation, from the logs stream.
//!
//! Without `follow` it answers the lines recorded so far as JSON; with `?follow=true` it streams
//! them as Server-Sent Events (`id:` = position in the logs stream; like the event streams it
//! resumes after `Last-Event-ID` or `?after=N`) until the client goes away.

use super::AppState;
use super::auth::Principal;
use super::environments::EnvironmentPath;
use super::environments::{parse_id, visible_history};
use super::error::{AppError, ErrorBody};
use super::extract::{Path, Query};
use super::sse::{Delivered, LastEventId, ordered_messages, resume_after, start_after};
use async_nats::jetstream::consumer::DeliverPolicy;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use domain::ids::OperationId;
use domain::wire::LogLine;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// How long a non-follow read waits for the next line before answering with what it has.
const READ_IDLE: Duration = Duration::from_millis(300);
/// The most lines one non-follow read returns.
const MAX_LINES: usize = 10_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// Only this operation's lines (`op_<ulid>`).
    operation: Option<String>,
    /// Stream the lines as Server-Sent Events until the client leaves.
    #[serde(default)]
    follow: bool,
    /// Resume after this position in the logs stream (wins over `Last-Event-ID`).
    after: Option<u64>,
}

/// The lines of a non-follow read.
#[derive(Serialize, ToSchema)]
pub struct LogLines {
    /// At most 10,000, oldest first.
    lines: Vec<LogLine>,
}

/// `GET /v1/environments/{id}/logs?operation=&follow=&after=` (or `Last-Event-ID`)
#[utoipa::path(
    get,
    path = "/v1/environments/{id}/logs",
    tag = "streams",
    operation_id = "get_environment_logs",
    params(EnvironmentPath, LogParams, LastEventId),
    responses(
        (status = 200, description = "The lines recorded so far (JSON), or with `follow=true` Server-Sent Events (`event: log`, `id:` the position in the logs stream, `data:` a `LogLine`) until the client leaves. Lines are kept 7 days.",
            content((LogLines = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "`bad_request`: a bad `operation`, `after`, `follow` or `Last-Event-ID`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such environment (or a malformed id).", body = ErrorBody),
        (status = 503, description = "`unavailable`: Postgres or NATS cannot be reached.", body = ErrorBody),
    ),
)]
pub async fn logs(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(params): Query<LogParams>,
) -> Result<Response, AppError> {
    let id = parse_id(&id)?;
    visible_history(&state, &principal, &id).await?;
    let filter = match &params.operation {
        Some(operation) => {
            let operation = OperationId::parse(operation).map_err(|_| {
                AppError::BadRequest(format!(
                    "{} is not an operation id",
                    domain::text::shown(operation)
                ))
            })?;
            state.subjects.logs(id.as_str(), operation.as_str())
        }
        None => state.subjects.environment_logs(id.as_str()),
    };
    let deliver_policy = match resume_after(&headers, params.after)? {
        Some(after) => DeliverPolicy::ByStartSequence {
            start_sequence: start_after(after)?,
        },
        None => DeliverPolicy::All,
    };
    let lines =
        ordered_messages::<LogLine>(&state, state.subjects.logs_stream(), filter, deliver_policy)
            .await?;
    if params.follow {
        let events = lines.map(
            |Delivered {
                 position, value, ..
             }| {
                Ok::<_, std::convert::Infallible>(
                    SseEvent::default()
                        .id(position.to_string())
                        .event("log")
                        .data(serde_json::to_string(&value).unwrap_or_default()),
                )
            },
        );
        return Ok(Sse::new(events)
            .keep_alive(KeepAlive::new().interval(state.sse_keep_alive))
            .into_response());
    }
    let mut lines = Box::pin(lines);
    let mut collected = Vec::new();
    while collected.len() < MAX_LINES {
        match tokio::time::timeout(READ_IDLE, lines.next()).await {
            Ok(Some(delivered)) => {
                let last = delivered.pending == 0;
                collected.push(delivered.value);
                if last {
                    break;
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    Ok(Json(LogLines { lines: collected }).into_response())
}
