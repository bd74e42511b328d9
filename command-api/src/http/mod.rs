//! The REST surface (see the API contract): router, shared state and middleware.

pub mod auth;
mod environments;
pub mod error;
mod extract;
pub mod head_limit;
mod health;
mod logs;
pub mod openapi;
mod paced;
mod plans;
mod prometheus;
pub mod rate_limit;
pub mod request_id;
mod runbook;
mod sse;
mod tokens;

use crate::environments::Environments;
use crate::runbook::Runbook;
use async_nats::jetstream;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware;
use domain::wire::Subjects;
use metrics_exporter_prometheus::PrometheusHandle;
use request_id::X_REQUEST_ID;
use sqlx::PgPool;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    /// Each token's rate limit on commands.
    pub commands: rate_limit::CommandLimiter,
    pub sse_keep_alive: Duration,
    /// Cancelled when the process shuts down; ends open SSE streams.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The process's metrics recorder, rendered at `GET /metrics`.
    pub metrics: PrometheusHandle,
}

/// The operations that need the bearer token. The router serves exactly the operations of these
/// two lists, and the OpenAPI document ([`openapi`]) is built from the same lists, so the two
/// cannot drift apart. To add an operation: give its handler a `#[utoipa::path(...)]` (method,
/// path, parameters, body, every answer) and add one `.routes(routes!(module::handler))` line
/// here (handlers of one path go in one `routes!`).
fn authenticated_operations() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(environments::create, environments::list))
        .routes(routes!(environments::get, environments::delete))
        .routes(routes!(environments::retry))
        .routes(routes!(runbook::cancel))
        .routes(routes!(runbook::force_unlock))
        .routes(routes!(runbook::mark_destroyed))
        .routes(routes!(runbook::mark_failed))
        .routes(routes!(runbook::requeue_stuck))
        .routes(routes!(environments::outputs))
        .routes(routes!(environments::history))
        .routes(routes!(sse::environment_events))
        .routes(routes!(logs::logs))
        .routes(routes!(sse::all_events))
        .routes(routes!(plans::create))
        .routes(routes!(tokens::create, tokens::list))
        .routes(routes!(tokens::revoke))
}

/// The operations anyone may call (see [`authenticated_operations`]).
fn public_operations() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(prometheus::metrics))
}

/// The whole API and its OpenAPI document; pure, so tests can drive it without binding a port.
/// Besides the operations it serves only the document itself (`GET /v1/openapi.json`) and its
/// interactive page (`GET /v1/docs`), public both.
pub fn router(state: AppState) -> Router {
    let (authenticated, authenticated_doc) = authenticated_operations().split_for_parts();
    // Before the auth layer, so a wrong method needs the token too, as any other request.
    let authenticated = authenticated
        .method_not_allowed_fallback(error::method_not_allowed)
        // Inside the auth layer: a command's token is known when its rate is checked.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            rate_limit::limit_commands,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_bearer,
        ));
    let (public, public_doc) = public_operations().split_for_parts();
    let document = openapi::document(authenticated_doc, public_doc);
    public
        .merge(authenticated)
        .merge(openapi::routes(document))
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

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::openapi::HttpMethod;

    /// The document of the router's two lists, as `router` builds it.
    fn document() -> utoipa::openapi::OpenApi {
        let (_, authenticated) = authenticated_operations().split_for_parts();
        let (_, public) = public_operations().split_for_parts();
        openapi::document(authenticated, public)
    }

    /// The router serves what the two lists hold (each operation at the method and path of its
    /// `#[utoipa::path]`, by `routes!`) and the document itself, and nothing else: no route is
    /// added another way. (`tests/openapi.rs` checks the served router against the document.)
    #[test]
    fn routes_are_added_only_through_the_lists_of_documented_operations() {
        let source = include_str!("mod.rs");
        let (code, _) = source
            .split_once("#[cfg(test)]")
            .expect("the tests follow the code");
        for undocumented in [
            ".route(",
            ".route_service(",
            ".nest(",
            ".nest_service(",
            ".fallback_service(",
        ] {
            assert!(
                !code.contains(undocumented),
                "http/mod.rs adds a route with `{undocumented}`: add the operation to \
                 `authenticated_operations` or `public_operations` with `routes!` instead, so \
                 the OpenAPI document has it"
            );
        }
        let merges: Vec<&str> = code.matches(".merge(").collect();
        assert_eq!(
            merges.len(),
            2,
            "the router merges only the authenticated operations and the documentation"
        );
        assert!(code.contains(".merge(authenticated)"));
        assert!(code.contains(".merge(openapi::routes(document))"));
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_title_and_the_crate_version() {
        let document = document();
        let json = serde_json::to_value(&document).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        assert_eq!(json["info"]["title"], "Beta9 Provisioner API");
        assert_eq!(json["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(
            json["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }

    #[test]
    fn every_v1_operation_needs_the_bearer_token_and_documents_401() {
        let document = document();
        let mut seen = 0;
        for (path, item) in &document.paths.paths {
            for method in [
                HttpMethod::Get,
                HttpMethod::Post,
                HttpMethod::Put,
                HttpMethod::Delete,
                HttpMethod::Patch,
            ] {
                let operation = match method {
                    HttpMethod::Get => &item.get,
                    HttpMethod::Post => &item.post,
                    HttpMethod::Put => &item.put,
                    HttpMethod::Delete => &item.delete,
                    _ => &item.patch,
                };
                let Some(operation) = operation else {
                    continue;
                };
                seen += 1;
                let secured = operation
                    .security
                    .as_ref()
                    .is_some_and(|requirements| !requirements.is_empty());
                let answers = &operation.responses.responses;
                assert_eq!(secured, path.starts_with("/v1/"), "{path}");
                assert_eq!(answers.contains_key("401"), secured, "{path}");
                for status in ["431", "500"] {
                    assert!(answers.contains_key(status), "{path} lacks {status}");
                }
            }
        }
        assert!(seen >= 13, "only {seen} operations");
    }
}
