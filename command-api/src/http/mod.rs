//! The REST surface (see the API contract): router, shared state and middleware.

pub mod auth;
mod environments;
pub mod error;
mod health;
mod logs;
mod sse;

use crate::environments::Environments;
use async_nats::jetstream;
use axum::Router;
use axum::extract::Request;
use axum::http::HeaderName;
use axum::middleware;
use axum::routing::{get, post};
use domain::wire::Subjects;
use sqlx::PgPool;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Everything a handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub environments: Environments,
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub subjects: Subjects,
    pub auth: auth::Tokens,
    pub sse_keep_alive: Duration,
    /// Cancelled when the process shuts down; ends open SSE streams.
    pub shutdown: tokio_util::sync::CancellationToken,
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids: `req_<ulid>` unless the client sent one.
#[derive(Clone, Copy, Default)]
struct MakeUlidRequestId;

impl MakeRequestId for MakeUlidRequestId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let id = format!("req_{}", ulid::Ulid::new().to_string().to_lowercase());
        axum::http::HeaderValue::from_str(&id)
            .ok()
            .map(RequestId::new)
    }
}

/// The whole API; pure, so tests can drive it without binding a port.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route(
            "/environments",
            post(environments::create).get(environments::list),
        )
        .route(
            "/environments/{id}",
            get(environments::get).delete(environments::delete),
        )
        .route("/environments/{id}/retry", post(environments::retry))
        .route("/environments/{id}/history", get(environments::history))
        .route("/environments/{id}/events", get(sse::environment_events))
        .route("/environments/{id}/logs", get(logs::logs))
        .route("/events", get(sse::all_events))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_bearer,
        ));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(
                    REQUEST_ID.clone(),
                    MakeUlidRequestId,
                ))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|request: &Request| {
                        let request_id = request
                            .headers()
                            .get(&REQUEST_ID)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        tracing::info_span!(
                            "http",
                            method = %request.method(),
                            path = %request.uri().path(),
                            request_id = %request_id,
                        )
                    }),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone())),
        )
}
