//! The REST surface (see the API contract): router, shared state and middleware.

pub mod auth;
mod environments;
pub mod error;
mod extract;
pub mod head_limit;
mod health;
mod logs;
mod plans;
mod prometheus;
pub mod request_id;
mod runbook;
mod sse;

use crate::environments::Environments;
use crate::runbook::Runbook;
use async_nats::jetstream;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware;
use axum::routing::{get, post};
use domain::wire::Subjects;
use metrics_exporter_prometheus::PrometheusHandle;
use request_id::X_REQUEST_ID;
use sqlx::PgPool;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;

/// Largest accepted request body: the largest MetaConfig document, so the two limits are one
/// (answered 413).
pub const MAX_BODY_BYTES: usize = domain::config::MAX_DOCUMENT_BYTES;

/// Everything a handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub environments: Environments,
    /// The runbook's admin operations.
    pub runbook: Runbook,
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub subjects: Subjects,
    pub auth: auth::Tokens,
    pub sse_keep_alive: Duration,
    /// Cancelled when the process shuts down; ends open SSE streams.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The process's metrics recorder, rendered at `GET /metrics`.
    pub metrics: PrometheusHandle,
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
        .route("/environments/{id}/cancel", post(runbook::cancel))
        .route(
            "/environments/{id}/force-unlock",
            post(runbook::force_unlock),
        )
        .route(
            "/environments/{id}/mark-destroyed",
            post(runbook::mark_destroyed),
        )
        .route("/environments/{id}/mark-failed", post(runbook::mark_failed))
        .route("/requeue-stuck", post(runbook::requeue_stuck))
        .route("/environments/{id}/outputs", get(environments::outputs))
        .route("/environments/{id}/history", get(environments::history))
        .route("/environments/{id}/events", get(sse::environment_events))
        .route("/environments/{id}/logs", get(logs::logs))
        .route("/events", get(sse::all_events))
        .route("/plans", post(plans::create))
        .method_not_allowed_fallback(error::method_not_allowed)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_bearer,
        ));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(prometheus::metrics))
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::no_route)
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            ServiceBuilder::new()
                // Outermost, so every answer is counted, an oversized head's 431 included.
                .layer(middleware::from_fn(prometheus::track))
                // Then, on the head exactly as the client sent it.
                .layer(middleware::from_fn(head_limit::refuse_oversized))
                // Then, so the span, the handlers and the response all see the settled id.
                .layer(middleware::from_fn(request_id::assign))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|request: &Request| {
                        let request_id = request
                            .headers()
                            .get(&X_REQUEST_ID)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        tracing::info_span!(
                            "http",
                            method = %request.method(),
                            route = %route_label(request),
                            request_id = %request_id,
                        )
                    }),
                ),
        )
}

/// The label of a request's span: the route it matched (`/v1/environments/{id}`), never the raw
/// path, which is client text with ids in it; `unmatched` for a path no route serves. The label
/// of the request metrics too.
fn route_label(request: &Request) -> &str {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
}
