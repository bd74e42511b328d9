//! Handler for `/v1/plans`.

use super::AppState;
use super::environments::document;
use super::error::AppError;
use crate::plans::Plan;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;

/// `POST /v1/plans`: the document is read and validated as `POST /v1/environments` reads it
/// (same 400/413/415/422), then previewed; nothing is recorded.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Plan>, AppError> {
    let (document, format) = document(&headers, body).await?;
    Ok(Json(state.environments.plan(&document, format)?))
}
