//! Assembling the API process: database, migrations, NATS topology, the HTTP server and the
//! background loops (relay, process manager, deadline sweep, projection, metrics sampler).

use crate::database;
use crate::deadlines::DeadlineSweep;
use crate::environments::{Environments, Providers};
use crate::http::rate_limit::CommandLimiter;
use crate::http::{self, AppState, auth::Tokens};
use crate::jetstream::ensure_streams;
use crate::metrics::{self, sampler::Sampler};
use crate::process_manager::ProcessManager;
use crate::relay::Relay;
use crate::runbook::Runbook;
use crate::secrets::{SealedExternalIds, ensure_bucket};
use crate::server;
use crate::settings::{HttpSettings, Settings};
use crate::store::{self, EventStore};
use anyhow::Context;
use domain::aggregate::StepTimeouts;
use domain::wire::Subjects;
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::ExposeSecret;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A built, bound, not yet running API process.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    store: EventStore,
    step_timeouts: StepTimeouts,
    metrics_interval: Duration,
    http: HttpSettings,
}

impl Application {
    /// Connects to Postgres (running migrations) and NATS (creating the streams), and binds the
    /// listen address (port 0 picks a free port). `metrics` is the handle of the process's
    /// installed Prometheus recorder, rendered at `GET /metrics`.
    pub async fn build(
        settings: &Settings,
        admin_token: &str,
        metrics: PrometheusHandle,
    ) -> anyhow::Result<Self> {
        metrics::describe();
        let pool = database::connect(
            settings.database_url.expose_secret(),
            settings.database_max_connections,
        )
        .await
        .context("failed to connect to postgres")?;
        store::migrate(&pool)
            .await
            .context("failed to run database migrations")?;
        let nats = async_nats::ConnectOptions::new()
            .name("provisioner-api")
            .retry_on_initial_connect()
            .connect(&settings.nats_url)
            .await
            .context("failed to connect to nats")?;
        let js = async_nats::jetstream::new(nats.clone());
        let subjects = Subjects::new(settings.subject_prefix.clone());
        ensure_streams(&js, &subjects, settings.stream_replicas)
            .await
            .context("failed to create jetstream streams (is this NATS >= 2.10 with JetStream?)")?;
        let secrets = ensure_bucket(&js, &subjects, settings.stream_replicas)
            .await
            .context("failed to create the secrets bucket")?;
        settings
            .tenant_policy
            .publish(&pool)
            .await
            .context("failed to write the tenants' quotas")?;
        let store = EventStore::new(pool.clone());
        let environments = Environments::new(
            store.clone(),
            Providers {
                enabled: settings.enabled_providers.clone(),
                tf_state_bucket_set: settings.tf_state_bucket_set,
                external_ids: settings
                    .secrets_key
                    .clone()
                    .map(|key| SealedExternalIds::new(secrets.clone(), key)),
            },
            settings.tenant_policy.clone(),
        );
        let runbook = Runbook::new(
            environments.clone(),
            js.clone(),
            subjects.clone(),
            settings.step_timeouts,
        );
        let state = AppState {
            auth: Tokens::new(admin_token, pool.clone()),
            commands: CommandLimiter::new(settings.rate_limit),
            environments,
            runbook,
            pool,
            nats,
            js,
            subjects,

            sse_keep_alive: settings.sse_keep_alive,
            shutdown: CancellationToken::new(),
            metrics,
        };
        let listener = server::bind(settings.listen)
            .with_context(|| format!("failed to bind {}", settings.listen))?;
        Ok(Self {
            listener,
            state,
            store,
            step_timeouts: settings.step_timeouts,
            metrics_interval: settings.metrics_interval,
            http: settings.http.clone(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves HTTP and runs the background loops until `shutdown`, then drains them (HTTP
    /// requests in progress for at most the drain timeout).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tasks = TaskTracker::new();
        let state = self.state;
        // Open SSE streams end when the process shuts down, so the server can drain.
        let streams_end = state.shutdown.clone();
        let shutdown_seen = shutdown.clone();
        tokio::spawn(async move {
            shutdown_seen.cancelled().await;
            streams_end.cancel();
        });
        tasks.spawn(
            Relay::new(
                state.pool.clone(),
                state.js.clone(),
                state.subjects.clone(),
                self.store.committed(),
            )
            .run(shutdown.clone()),
        );
        tasks.spawn(
            ProcessManager::new(
                self.store.clone(),
                state.js.clone(),
                state.subjects.clone(),
                self.step_timeouts,
            )
            .run(shutdown.clone()),
        );
        tasks.spawn(
            DeadlineSweep::new(self.store.clone(), self.step_timeouts).run(shutdown.clone()),
        );
        tasks.spawn(
            Sampler::new(
                state.pool.clone(),
                state.js.clone(),
                state.subjects.clone(),
                self.step_timeouts,
                self.metrics_interval,
            )
            .run(shutdown.clone()),
        );
        {
            let (js, subjects, pool, shutdown) = (
                state.js.clone(),
                state.subjects.clone(),
                state.pool.clone(),
                shutdown.clone(),
            );
            tasks.spawn(async move {
                if let Err(error) = projections::consumer::run(js, subjects, pool, shutdown).await {
                    tracing::error!(error = %error, "projection stopped");
                }
            });
        }
        tasks.close();
        let router = http::router(state);
        server::serve(self.listener, router, &self.http, shutdown.clone()).await;
        shutdown.cancel();
        tasks.wait().await;
        Ok(())
    }
}
