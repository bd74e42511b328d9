//! The executor process's own HTTP endpoint (`PROVISIONER_EXECUTOR_LISTEN`): `GET /metrics`
//! (Prometheus's text format, from the process's one recorder), `GET /healthz` (the process is
//! up) and `GET /readyz` (NATS is connected and the events and results streams exist). It has a
//! NATS connection of its own, so it answers while the runner waits for the streams. The binary
//! serves [`router`] with the API's own server (`command_api::server`): header, body and idle
//! timeouts and a connection limit, so a client that sends nothing cannot hold it.

use async_nats::jetstream;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use domain::wire::Subjects;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use std::time::Duration;

/// The longest a readiness check waits for NATS.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// The exposition format Prometheus scrapes.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the endpoint answers from.
#[derive(Clone)]
pub struct Status {
    metrics: PrometheusHandle,
    nats: async_nats::Client,
    subjects: Subjects,
}

impl Status {
    /// Connects to NATS in the background (the endpoint answers at once; `/readyz` says 503
    /// until the connection is up).
    pub async fn connect(
        metrics: PrometheusHandle,
        nats_url: &str,
        subjects: Subjects,
    ) -> Result<Self, async_nats::ConnectError> {
        let nats = async_nats::ConnectOptions::new()
            .name("provisioner-executor-status")
            .retry_on_initial_connect()
            .connect(nats_url)
            .await?;
        Ok(Self {
            metrics,
            nats,
            subjects,
        })
    }
}

/// The endpoint's routes.
pub fn router(status: Status) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(status)
}

async fn metrics(State(status): State<Status>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        status.metrics.render(),
    )
}

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(json!({"status": "ok"}))
}

async fn readyz(State(status): State<Status>) -> (StatusCode, axum::Json<serde_json::Value>) {
    let connected = matches!(
        status.nats.connection_state(),
        async_nats::connection::State::Connected
    );
    let streams = connected && {
        let js = jetstream::new(status.nats.clone());
        let present = async {
            js.get_stream(status.subjects.events_stream()).await.is_ok()
                && js
                    .get_stream(status.subjects.results_stream())
                    .await
                    .is_ok()
        };
        tokio::time::timeout(CHECK_TIMEOUT, present)
            .await
            .unwrap_or(false)
    };
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let ready = connected && streams;
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        axum::Json(json!({
            "status": word(ready),
            "checks": {"nats": word(connected), "streams": word(streams)},
        })),
    )
}
