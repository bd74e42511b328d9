//! Live lifecycle streams over Server-Sent Events, read from the JetStream events stream.
//!
//! Each client gets its own ordered consumer, paced by it ([`super::paced`]), so a slow client
//! only slows itself: JetStream holds what it has not read yet, no shared buffer can fill up,
//! and a client that never reads does not make the API hold what flows past it.
//!
//! * `/v1/environments/{id}/events`: `id:` is the event's sequence in the environment's history;
//!   resumes after `Last-Event-ID` or `?after=N`; ends after `InfraDestroyed` or `MarkedDestroyed` (at once when
//!   resuming after it).
//! * `/v1/events`: every environment the caller may see (its tenant's; an admin's, all);
//!   `id:` is the position in the events stream (sequences are
//!   per environment, so they cannot order a merged stream); without `Last-Event-ID`/`?after`
//!   it starts with new events.

use super::AppState;
use super::auth::Principal;
use super::environments::EnvironmentPath;
use super::environments::{parse_id, visible_history};
use super::error::{AppError, ErrorBody};
use super::extract::{Path, Query};
use async_nats::jetstream::consumer::DeliverPolicy;
use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use domain::aggregate::event_sets::FINAL_EVENTS;
use domain::wire::EventEnvelope;
use futures::{Stream, StreamExt, stream};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::convert::Infallible;
use utoipa::IntoParams;

/// The last event an environment can have: its stream ends after it.

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResumeParams {
    /// Resume after this position (wins over `Last-Event-ID`).
    after: Option<u64>,
}

/// The SSE resume header.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // read from the headers; this describes it
pub(super) struct LastEventId {
    /// Resume after this position (the last `id:` received).
    #[param(rename = "Last-Event-ID")]
    last_event_id: Option<u64>,
}

/// Where a stream resumed after position `after` starts: 400 when nothing can come after it.
pub(super) fn start_after(after: u64) -> Result<u64, AppError> {
    after.checked_add(1).ok_or_else(|| {
        AppError::BadRequest(format!(
            "the resume position (after or Last-Event-ID) must be at most {}",
            u64::MAX - 1
        ))
    })
}

/// The resume point: `?after=N` wins over `Last-Event-ID`.
pub(super) fn resume_after(
    headers: &HeaderMap,
    after: Option<u64>,
) -> Result<Option<u64>, AppError> {
    if let Some(after) = after {
        return Ok(Some(after));
    }
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| AppError::BadRequest("Last-Event-ID must be a number".into())),
    }
}

fn sse_event(id: u64, envelope: &EventEnvelope) -> SseEvent {
    SseEvent::default()
        .id(id.to_string())
        .event(envelope.event_type.clone())
        .data(serde_json::to_string(envelope).unwrap_or_default())
}

pub(super) use super::paced::Delivered;

/// A private ordered consumer over `stream_name` for one SSE client or read, paced by it
/// ([`super::paced`]): messages that do not decode as `T` are skipped; the stream ends when the
/// process shuts down.
pub(super) async fn ordered_messages<T: DeserializeOwned + Send + 'static>(
    state: &AppState,
    stream_name: String,
    filter_subject: String,
    deliver_policy: DeliverPolicy,
) -> Result<impl Stream<Item = Delivered<T>> + use<T>, AppError> {
    let stream = state
        .js
        .get_stream(stream_name)
        .await
        .map_err(|e| AppError::Unavailable(e.into()))?;
    super::paced::ordered(
        stream,
        filter_subject,
        deliver_policy,
        state.shutdown.clone(),
    )
    .await
}

/// `GET /v1/environments/{id}/events`
#[utoipa::path(
    get,
    path = "/v1/environments/{id}/events",
    tag = "streams",
    operation_id = "stream_environment_events",
    params(EnvironmentPath, ResumeParams, LastEventId),
    responses(
        (status = 200, description = "Server-Sent Events: `id:` the event's sequence, `event:` its type, `data:` the history item (`HistoryItem`) plus `environment_id`; keep-alive comments. Ends after `InfraDestroyed` or `MarkedDestroyed`.", content_type = "text/event-stream", body = String),
        (status = 400, description = "`bad_request`: a bad `Last-Event-ID` or `after`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such environment (or a malformed id).", body = ErrorBody),
        (status = 503, description = "`unavailable`: Postgres or NATS cannot be reached.", body = ErrorBody),
    ),
)]
pub async fn environment_events(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(params): Query<ResumeParams>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, AppError> {
    let id = parse_id(&id)?;
    let after = resume_after(&headers, params.after)?.unwrap_or(0);
    // 404 for an environment that was never requested (or is another tenant's), rather than an
    // empty stream forever.
    visible_history(&state, &principal, &id).await?;
    let messages = ordered_messages::<EventEnvelope>(
        &state,
        state.subjects.events_stream(),
        state.subjects.environment_events(id.as_str()),
        DeliverPolicy::All,
    )
    .await?;
    // Sends the events after `after`, and ends right after the last event an environment can
    // have — also when that event is at or before `after` (a client resuming after the end).
    let events = stream::unfold(Some(Box::pin(messages)), move |messages| async move {
        let mut messages = messages?;
        while let Some(Delivered { value, .. }) = messages.next().await {
            let last = FINAL_EVENTS.contains(&value.event_type.as_str());
            if value.sequence > after {
                let event = Ok(sse_event(value.sequence, &value));
                return Some((event, (!last).then_some(messages)));
            }
            if last {
                return None;
            }
        }
        None
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(state.sse_keep_alive)))
}

/// `GET /v1/events`
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "streams",
    operation_id = "stream_all_events",
    params(ResumeParams, LastEventId),
    responses(
        (status = 200, description = "Server-Sent Events of every environment the token may see (its tenant's; an admin's, all): `id:` the position in the events stream, `event:` the type, `data:` the history item (`HistoryItem`) plus `environment_id`; keep-alive comments. Without `Last-Event-ID`/`after` it starts with new events.", content_type = "text/event-stream", body = String),
        (status = 400, description = "`bad_request`: a bad `Last-Event-ID` or `after` (nothing follows 18446744073709551615).", body = ErrorBody),
        (status = 503, description = "`unavailable`: NATS cannot be reached.", body = ErrorBody),
    ),
)]
pub async fn all_events(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    Query(params): Query<ResumeParams>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, AppError> {
    let deliver_policy = match resume_after(&headers, params.after)? {
        Some(after) => DeliverPolicy::ByStartSequence {
            start_sequence: start_after(after)?,
        },
        None => DeliverPolicy::New,
    };
    let messages = ordered_messages::<EventEnvelope>(
        &state,
        state.subjects.events_stream(),
        state.subjects.all_events(),
        deliver_policy,
    )
    .await?;
    // Only the caller's tenant's events (an admin's: all), filtered here, before anything is
    // sent; the positions of the others are skipped, so a resume still works.
    let events = messages
        .filter(move |d| std::future::ready(principal.sees(d.value.tenant())))
        .map(|d| Ok(sse_event(d.position, &d.value)));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(state.sse_keep_alive)))
}
