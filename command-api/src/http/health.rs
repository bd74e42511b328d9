//! Liveness and readiness.

use super::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The outcome of a check.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    Ok,
    Unavailable,
}

impl Check {
    fn of(ok: bool) -> Self {
        if ok { Check::Ok } else { Check::Unavailable }
    }
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    status: Check,
}

/// `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ok` when every check is.
    status: Check,
    checks: Checks,
}

/// Each dependency's check.
#[derive(Serialize, ToSchema)]
pub struct Checks {
    postgres: Check,
    nats: Check,
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    operation_id = "healthz",
    responses((status = 200, description = "The process is up.", body = Health)),
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: Check::Ok })
}

/// Postgres answers and NATS is connected (with JetStream reachable).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Postgres and NATS (JetStream) answer.", body = Readiness),
        (status = 503, description = "Postgres or NATS does not answer: `checks` says which.", body = Readiness),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let postgres = tokio::time::timeout(
        CHECK_TIMEOUT,
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let nats = matches!(
        state.nats.connection_state(),
        async_nats::connection::State::Connected
    ) && tokio::time::timeout(CHECK_TIMEOUT, state.js.query_account())
        .await
        .is_ok_and(|r| r.is_ok());
    let ready = postgres && nats;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            status: Check::of(ready),
            checks: Checks {
                postgres: Check::of(postgres),
                nats: Check::of(nats),
            },
        }),
    )
}
