//! The admins' token management: `POST /v1/tokens` (the token is in this answer only),
//! `GET /v1/tokens`, `DELETE /v1/tokens/{id}` (revoke).

use super::AppState;
use super::auth::{Principal, RequireRole};
use super::error::{AppError, ErrorBody};
use super::extract::{Path, Query};
use super::runbook::json_body;
use crate::access::{CreatedToken, NewToken, TokenInfo};
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use domain::config::FieldError;
use domain::tenant::{Role, TenantId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The most tokens one list answers.
const MAX_LISTED: u32 = 1000;

/// `{"name", "tenant", "role", "expires_in_days"}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTokenBody {
    /// What the token is for, for people (1-100 characters).
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// The tenant it acts in (1-63 of `a-z`, `0-9`, `-`).
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
    )]
    tenant: String,
    /// `viewer`, `operator` or `admin`.
    #[schema(value_type = Role)]
    role: String,
    /// Days until it expires, 1-365 (default 90).
    #[schema(minimum = 1, maximum = 365)]
    expires_in_days: Option<u64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TokenListParams {
    /// Only this tenant's tokens.
    #[param(pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", max_length = 63)]
    tenant: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    /// Oldest first; at most 1000.
    pub items: Vec<TokenInfo>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by `Path<String>`; this describes it
pub(super) struct TokenPath {
    id: String,
}

fn invalid(path: &str, message: String) -> AppError {
    AppError::Validation(vec![FieldError {
        path: path.into(),
        message,
    }])
}

#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "tokens",
    operation_id = "create_token",
    request_body(content = CreateTokenBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Created. `token` is shown only here: keep it; only its digest is stored.", body = CreatedToken),
        (status = 400, description = "`bad_request`: the body is not the expected JSON object.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only an admin manages tokens.", body = ErrorBody),
        (status = 422, description = "`validation_failed`: a bad name, tenant, role or lifetime, named in `details`.", body = ErrorBody),
        (status = 503, description = "`unavailable`: Postgres cannot be reached.", body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Body,
) -> Result<Response, AppError> {
    principal.require_admin()?;
    let body: CreateTokenBody = json_body(body).await?;
    let tenant =
        TenantId::parse(&body.tenant).map_err(|error| invalid("tenant", error.to_string()))?;
    let role: Role = body
        .role
        .parse()
        .map_err(|error: domain::tenant::TenantInputError| invalid("role", error.to_string()))?;
    let new = NewToken::new(&body.name, tenant, role, body.expires_in_days)
        .map_err(|error| invalid(error.field(), error.to_string()))?;
    let created = state.auth.create(&principal, new).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "tokens",
    operation_id = "list_tokens",
    params(TokenListParams),
    responses(
        (status = 200, description = "The tokens (never the tokens themselves), revoked and expired ones included.", body = TokenList),
        (status = 400, description = "`bad_request`: a bad `tenant`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only an admin manages tokens.", body = ErrorBody),
        (status = 503, description = "`unavailable`: Postgres cannot be reached.", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(params): Query<TokenListParams>,
) -> Result<Json<TokenList>, AppError> {
    principal.require_admin()?;
    let tenant = params
        .tenant
        .as_deref()
        .map(TenantId::parse)
        .transpose()
        .map_err(|error| AppError::BadRequest(error.to_string()))?;
    let items = state.auth.list(tenant.as_ref(), MAX_LISTED).await?;
    Ok(Json(TokenList { items }))
}

#[utoipa::path(
    delete,
    path = "/v1/tokens/{id}",
    tag = "tokens",
    operation_id = "revoke_token",
    params(TokenPath),
    responses(
        (status = 200, description = "Revoked (again: the first revocation's time is kept). It authenticates nothing from now on.", body = TokenInfo),
        (status = 403, description = "`forbidden`: only an admin manages tokens.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such token.", body = ErrorBody),
        (status = 503, description = "`unavailable`: Postgres cannot be reached.", body = ErrorBody),
    ),
)]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, AppError> {
    principal.require_admin()?;
    let revoked = if id.len() <= 64 {
        state.auth.revoke(&principal, &id).await?
    } else {
        None
    };
    revoked
        .map(Json)
        .ok_or_else(|| AppError::NotFound(format!("token {} not found", domain::text::shown(&id))))
}
