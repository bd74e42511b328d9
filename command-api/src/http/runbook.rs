//! Handlers of the runbook's operations, admin only: `POST /v1/environments/{id}/cancel`,
//! `…/force-unlock`, `…/mark-destroyed`, `…/mark-failed` (202 with the environment's new
//! status; 409 when its state does not allow it; 404 unknown id; 400 a body that is not the
//! expected JSON object; 422 a reason or lock id out of bounds) and `POST /v1/requeue-stuck`
//! (200 with the environments it touched).

use super::environments::{accepted, caller, parse_id, read_body};
use super::error::AppError;
use super::extract::Path;
use super::request_id::RequestId;
use super::{AppState, auth::Principal};
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// `{"reason": "..."}`: mark-failed and mark-destroyed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
}

/// `{"lock_id": "...", "reason": "..."}`: force-unlock.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceUnlockBody {
    lock_id: String,
    #[serde(default)]
    reason: Option<String>,
}

/// The JSON object of a request body (bounded by [`read_body`]): 400 naming what is wrong when
/// it is not one, or not of this shape.
async fn json_body<T: DeserializeOwned>(body: Body) -> Result<T, AppError> {
    let bytes = read_body(body).await?;
    serde_json::from_slice(&bytes).map_err(|error| {
        let message = format!("the body must be a JSON object: {error}");
        AppError::BadRequest(domain::text::truncated(&message, 200).to_owned())
    })
}

/// `POST /v1/environments/{id}/cancel` (no body).
pub async fn cancel(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    principal.require_admin()?;
    let id = parse_id(&id)?;
    let caller = caller(&principal, &request_id);
    Ok(accepted(state.runbook.cancel(&caller, &id).await?))
}

/// `POST /v1/environments/{id}/mark-failed` `{"reason"}`.
pub async fn mark_failed(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, AppError> {
    principal.require_admin()?;
    let id = parse_id(&id)?;
    let body: ReasonBody = json_body(body).await?;
    let caller = caller(&principal, &request_id);
    let result = state
        .runbook
        .mark_failed(&caller, &id, &body.reason)
        .await?;
    Ok(accepted(result))
}

/// `POST /v1/environments/{id}/mark-destroyed` `{"reason"}`.
pub async fn mark_destroyed(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, AppError> {
    principal.require_admin()?;
    let id = parse_id(&id)?;
    let body: ReasonBody = json_body(body).await?;
    let caller = caller(&principal, &request_id);
    let result = state
        .runbook
        .mark_destroyed(&caller, &id, &body.reason)
        .await?;
    Ok(accepted(result))
}

/// `POST /v1/environments/{id}/force-unlock` `{"lock_id", "reason"?}`.
pub async fn force_unlock(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, AppError> {
    principal.require_admin()?;
    let id = parse_id(&id)?;
    let body: ForceUnlockBody = json_body(body).await?;
    let caller = caller(&principal, &request_id);
    let result = state
        .runbook
        .force_unlock(&caller, &id, &body.lock_id, body.reason.as_deref())
        .await?;
    Ok(accepted(result))
}

/// `POST /v1/requeue-stuck` (no body): `{"started": [ids], "timed_out": [ids]}`.
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
