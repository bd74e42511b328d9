//! Handlers of the runbook's operations, admin only: `POST /v1/environments/{id}/cancel`,
//! `…/force-unlock`, `…/mark-destroyed`, `…/mark-failed` (202 with the environment's new
//! status; 409 when its state does not allow it; 404 unknown id; 400 a body that is not the
//! expected JSON object; 422 a reason or lock id out of bounds) and `POST /v1/requeue-stuck`
//! (200 with the environments it touched).

use super::AppState;
use super::auth::{Principal, RequireRole};
use super::environments::{AcceptedBody, EnvironmentPath, accepted, caller, parse_id, read_body};
use super::error::{AppError, ErrorBody};
use super::extract::Path;
use super::request_id::RequestId;
use crate::environments::Caller;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use domain::ids::EnvironmentId;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// `{"reason": "..."}`: mark-failed and mark-destroyed.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReasonBody {
    /// Why the state is declared by hand; recorded in the event (1 to 1000 characters, no
    /// control characters).
    #[schema(min_length = 1, max_length = 1000)]
    reason: String,
}

/// `{"lock_id": "...", "reason": "..."}`: force-unlock.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ForceUnlockBody {
    /// The Terraform state lock's ID, as terraform printed it under "Lock Info".
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9-]+$")]
    lock_id: String,
    /// Why; recorded in the event.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 1000)]
    reason: Option<String>,
}

/// An admin's command on environment `id`: who calls (403 unless an admin) and which
/// environment (404 for a malformed id).
fn admin_command(
    principal: &Principal,
    request_id: &RequestId,
    id: &str,
) -> Result<(Caller, EnvironmentId), AppError> {
    principal.require_admin()?;
    Ok((caller(principal, request_id), parse_id(id)?))
}

/// The JSON object of a request body (bounded by [`read_body`]): 400 naming what is wrong when
/// it is not one, or not of this shape.
pub(super) async fn json_body<T: DeserializeOwned>(body: Body) -> Result<T, AppError> {
    let bytes = read_body(body).await?;
    serde_json::from_slice(&bytes).map_err(|error| {
        let message = format!("the body must be a JSON object: {error}");
        AppError::BadRequest(domain::text::truncated(&message, 200).to_owned())
    })
}

/// `POST /v1/environments/{id}/cancel` (no body).
#[utoipa::path(
    post,
    path = "/v1/environments/{id}/cancel",
    tag = "runbook",
    operation_id = "cancel_operation",
    params(EnvironmentPath),
    responses(
        (status = 202, description = "Cancelled: the environment is failed, and `retry` resumes its phase.", body = AcceptedBody,
            headers(("Location" = String, description = "`/v1/environments/{id}`"))),
        (status = 403, description = "`forbidden`: only an admin may run the runbook's operations.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such environment (or a malformed id).", body = ErrorBody),
        (status = 409, description = "`invalid_state`: no operation is in flight.", body = ErrorBody),
        (status = 503, description = "`unavailable`: Postgres (or, for force-unlock, NATS) cannot be reached, or the command kept losing races.", body = ErrorBody),
    ),
)]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let (caller, id) = admin_command(&principal, &request_id, &id)?;
    Ok(accepted(state.runbook.cancel(&caller, &id).await?))
}

/// `POST /v1/environments/{id}/mark-failed` `{"reason"}`.
#[utoipa::path(
    post,
    path = "/v1/environments/{id}/mark-failed",
    tag = "runbook",
    operation_id = "mark_failed",
    params(EnvironmentPath),
    request_body(content = ReasonBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Declared failed: any in-flight operation is ended and its late result ignored.", body = AcceptedBody,
            headers(("Location" = String, description = "`/v1/environments/{id}`"))),
        (status = 403, description = "`forbidden`: only an admin may run the runbook's operations.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such environment (or a malformed id).", body = ErrorBody),
        (status = 400, description = "`bad_request`: the body is not the JSON object described.", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body stopped arriving.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the limit.", body = ErrorBody),
        (status = 422, description = "`validation_failed`: a reason or lock id out of bounds, named in `details`.", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the environment is not active (nothing to declare failed).", body = ErrorBody),
        (status = 503, description = "`unavailable`: Postgres (or, for force-unlock, NATS) cannot be reached, or the command kept losing races.", body = ErrorBody),
    ),
)]
pub async fn mark_failed(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, AppError> {
    let (caller, id) = admin_command(&principal, &request_id, &id)?;
    let body: ReasonBody = json_body(body).await?;
    let result = state
        .runbook
        .mark_failed(&caller, &id, &body.reason)
        .await?;
    Ok(accepted(result))
}

/// `POST /v1/environments/{id}/mark-destroyed` `{"reason"}`.
#[utoipa::path(
    post,
    path = "/v1/environments/{id}/mark-destroyed",
    tag = "runbook",
    operation_id = "mark_destroyed",
    params(EnvironmentPath),
    request_body(content = ReasonBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Declared destroyed: the environment is `destroyed` and its name is free.", body = AcceptedBody,
            headers(("Location" = String, description = "`/v1/environments/{id}`"))),
        (status = 403, description = "`forbidden`: only an admin may run the runbook's operations.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such environment (or a malformed id).", body = ErrorBody),
        (status = 400, description = "`bad_request`: the body is not the JSON object described.", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body stopped arriving.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the limit.", body = ErrorBody),
        (status = 422, description = "`validation_failed`: a reason or lock id out of bounds, named in `details`.", body = ErrorBody),
        (status = 409, description = "`invalid_state`: an operation is in flight (cancel or mark-failed first), or it is already destroyed.", body = ErrorBody),
        (status = 503, description = "`unavailable`: Postgres (or, for force-unlock, NATS) cannot be reached, or the command kept losing races.", body = ErrorBody),
    ),
)]
pub async fn mark_destroyed(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, AppError> {
    let (caller, id) = admin_command(&principal, &request_id, &id)?;
    let body: ReasonBody = json_body(body).await?;
    let result = state
        .runbook
        .mark_destroyed(&caller, &id, &body.reason)
        .await?;
    Ok(accepted(result))
}

/// `POST /v1/environments/{id}/force-unlock` `{"lock_id", "reason"?}`.
#[utoipa::path(
    post,
    path = "/v1/environments/{id}/force-unlock",
    tag = "runbook",
    operation_id = "force_unlock",
    params(EnvironmentPath),
    request_body(content = ForceUnlockBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Authorised: the next run of the step may force open that lock (a failed environment is retried with it).", body = AcceptedBody,
            headers(("Location" = String, description = "`/v1/environments/{id}`"))),
        (status = 403, description = "`forbidden`: only an admin may run the runbook's operations.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such environment (or a malformed id).", body = ErrorBody),
        (status = 400, description = "`bad_request`: the body is not the JSON object described.", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body stopped arriving.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the limit.", body = ErrorBody),
        (status = 422, description = "`validation_failed`: a reason or lock id out of bounds, named in `details`.", body = ErrorBody),
        (status = 409, description = "`executor_alive`: the executor running the step is alive; or `invalid_state`.", body = ErrorBody),
        (status = 503, description = "`unavailable`: Postgres (or, for force-unlock, NATS) cannot be reached, or the command kept losing races.", body = ErrorBody),
    ),
)]
pub async fn force_unlock(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, AppError> {
    let (caller, id) = admin_command(&principal, &request_id, &id)?;
    let body: ForceUnlockBody = json_body(body).await?;
    let result = state
        .runbook
        .force_unlock(&caller, &id, &body.lock_id, body.reason.as_deref())
        .await?;
    Ok(accepted(result))
}

/// `POST /v1/requeue-stuck` (no body): `{"started": [ids], "timed_out": [ids]}`.
#[utoipa::path(
    post,
    path = "/v1/requeue-stuck",
    tag = "runbook",
    operation_id = "requeue_stuck",
    responses(
        (status = 200, description = "What it did: the environments whose pending step it started and whose overdue operation it timed out.", body = crate::runbook::Requeued),
        (status = 403, description = "`forbidden`: only an admin may run the runbook's operations.", body = ErrorBody),
        (status = 503, description = "`unavailable`: Postgres (or, for force-unlock, NATS) cannot be reached, or the command kept losing races.", body = ErrorBody),
    ),
)]
pub async fn requeue_stuck(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(request_id): Extension<RequestId>,
) -> Result<Response, AppError> {
    principal.require_admin()?;
    let caller = caller(&principal, &request_id);
    let requeued = state.runbook.requeue_stuck(&caller).await?;
    Ok(Json(requeued).into_response())
}
