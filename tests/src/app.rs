//! The API in the test's own process: the real `command_api::app::Application` (router, server,
//! relay, process manager, deadline sweep, projection) over a fresh database and a private
//! nats-server, with no executor. For tests of the HTTP edge — validation, errors, auth, limits —
//! which need no child process; the black-box [`crate::Stack`] stays for what does (crashes,
//! kill -9, restarts, the executor).

use crate::api::{ApiClient, TOKEN};
use crate::services::{self, TestDb};
use command_api::app::Application;
use command_api::http::rate_limit::RateLimit;
use command_api::settings::{HttpSettings, Settings};
use command_api::tenancy::TenantPolicy;
use domain::aggregate::StepTimeouts;
use domain::spec::Provider;
use domain::wire::Subjects;
use local_services::nats::LocalNats;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use std::sync::OnceLock;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The test process's one metrics recorder, installed on first use, with the API's histogram
/// buckets (as the binary installs it): every [`App`] of the process records into it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for (name, buckets) in command_api::metrics::HISTOGRAM_BUCKETS {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)
                    .expect("valid buckets");
            }
            builder
                .install_recorder()
                .expect("install the metrics recorder")
        })
        .clone()
}

/// A rate limit no test's traffic reaches.
pub fn unlimited() -> RateLimit {
    RateLimit {
        per_minute: std::num::NonZeroU32::new(10_000_000).expect("not zero"),
        burst: std::num::NonZeroU32::new(1_000_000).expect("not zero"),
    }
}

/// A running in-process API; stopped on drop.
pub struct App {
    /// The API's client (`app.create(…)` through `Deref`).
    pub client: ApiClient,
    pub pool: PgPool,
    pub nats: LocalNats,
    pub subjects: Subjects,
    shutdown: CancellationToken,
    _db: TestDb,
}

impl std::ops::Deref for App {
    type Target = ApiClient;

    fn deref(&self) -> &ApiClient {
        &self.client
    }
}

impl App {
    /// The API with the settings `serve` has by default (sandbox only).
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// The API with its settings changed by `configure` first.
    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> Self {
        command_api::install_tls_provider();
        let db = TestDb::new("provisioner_app").await;
        let nats = services::nats().await;
        let prefix = format!("a{:08x}", rand::random::<u32>());
        let mut settings = Settings {
            database_url: services::postgres().await.url(&db.name).into(),
            database_max_connections: 8,
            nats_url: nats.url(),
            subject_prefix: prefix.clone(),
            stream_replicas: 1,
            listen: "127.0.0.1:0".parse().expect("a socket address"),
            admin_token: Some(TOKEN.into()),
            enabled_providers: vec![Provider::Sandbox],
            tf_state_bucket_set: false,
            secrets_key: None,
            sse_keep_alive: Duration::from_secs(1),
            step_timeouts: StepTimeouts::DEFAULT,
            metrics_interval: Duration::from_secs(1),
            http: HttpSettings::default(),
            // The tests' traffic is one admin token's: no rate limit or quota of theirs may
            // refuse it (tests of the limits set their own).
            tenant_policy: TenantPolicy {
                max_environments: 100_000,
                ..TenantPolicy::default()
            },
            rate_limit: unlimited(),
        };
        configure(&mut settings);
        let application = Application::build(&settings, TOKEN, metrics_handle())
            .await
            .expect("build the in-process API");
        let base_url = format!("http://{}", application.local_addr());
        let shutdown = CancellationToken::new();
        let running = shutdown.clone();
        tokio::spawn(async move {
            if let Err(error) = application.run(running).await {
                panic!("the in-process API failed: {error:#}");
            }
        });
        let app = Self {
            client: ApiClient::new(base_url, TOKEN),
            pool: db.pool.clone(),
            nats,
            subjects: Subjects::new(prefix),
            shutdown,
            _db: db,
        };
        app.wait_ready().await;
        app
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
