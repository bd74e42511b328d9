//! Handler for `/v1/plans`.

use super::AppState;
use super::auth::Principal;
use super::environments::document;
use super::error::{AppError, ErrorBody};
use crate::plans::Plan;
use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;

/// `POST /v1/plans`: the document is read and validated as `POST /v1/environments` reads it
/// (same 400/413/415/422), then previewed; nothing is recorded.
#[utoipa::path(
    post,
    path = "/v1/plans",
    tag = "plans",
    operation_id = "create_plan",
    request_body(
        description = "A MetaConfig document, as YAML or JSON (at most 256 KiB), read as `POST /v1/environments` reads it.",
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
        (status = 200, description = "The preview; nothing is recorded.", body = Plan),
        (status = 400, description = "`malformed_document`: not YAML/JSON, or not UTF-8.", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body stopped arriving.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 256 KiB.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`validation_failed`: every bad field in `details`.", body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Plan>, AppError> {
    let (document, format) = document(&headers, body).await?;
    // An admin's preview is checked against the deployment's limits, a tenant's against its own.
    let tenant = principal.scope();
    Ok(Json(state.environments.plan(&document, format, tenant)?))
}
