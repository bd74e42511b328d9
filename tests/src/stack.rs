//! A whole provisioner deployment for one test.

use crate::invariants;
use crate::processes::ProviderProcess;
use crate::services;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use domain::wire::{EventEnvelope, Subjects};
use futures::StreamExt;
use local_services::nats::{LocalNats, free_port};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use standins::overlap;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const TOKEN: &str = "test-admin-token";

/// What to start.
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// Start an executor process.
    pub executor: bool,
    /// Extra environment for the API process.
    pub api_env: Vec<(String, String)>,
    /// Extra environment for the executor process.
    pub executor_env: Vec<(String, String)>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            executor: true,
            api_env: Vec::new(),
            executor_env: Vec::new(),
        }
    }
}

pub struct Stack {
    pub api: ProviderProcess,
    pub executor: Option<ProviderProcess>,
    /// The executor's environment, for [`Stack::start_executor`].
    executor_env: BTreeMap<String, String>,
    pub nats: LocalNats,
    pub pool: PgPool,
    pub subjects: Subjects,
    pub base_url: String,
    pub http: reqwest::Client,
    database: String,
    database_url: String,
    data_dir: tempfile::TempDir,
}

fn random_suffix() -> String {
    let n: u64 = rand::random();
    format!("{n:016x}")
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(StackOptions::default()).await
    }

    pub async fn start_with(options: StackOptions) -> Self {
        command_api::install_tls_provider();
        let suffix = random_suffix();
        let postgres = services::postgres().await;
        let database = postgres.create_database("provisioner_test").await;
        let database_url = postgres.url(&database);
        let nats = services::nats().await;
        let prefix = format!("t{}", &suffix[..8]);
        let data_dir = tempfile::tempdir().expect("tempdir");
        let port = free_port().expect("free port");

        let mut common = BTreeMap::new();
        common.insert("NATS_URL".to_owned(), nats.url());
        common.insert("PROVISIONER_NATS_PREFIX".to_owned(), prefix.clone());
        let mut api_env = common.clone();
        api_env.insert("DATABASE_URL".into(), database_url.clone());
        api_env.insert("PROVISIONER_LISTEN".into(), format!("127.0.0.1:{port}"));
        api_env.insert("PROVISIONER_ADMIN_TOKEN".into(), TOKEN.into());
        api_env.insert("PROVISIONER_SSE_KEEPALIVE_MS".into(), "1000".into());
        api_env.extend(options.api_env.iter().cloned());
        let mut executor_env = common;
        executor_env.insert(
            "PROVISIONER_DATA_DIR".into(),
            data_dir.path().display().to_string(),
        );
        executor_env.insert("PROVISIONER_EXECUTOR_HEARTBEAT_MS".into(), "500".into());
        executor_env.insert("PROVISIONER_EXECUTOR_ACK_WAIT_MS".into(), "3000".into());
        executor_env.extend(options.executor_env.iter().cloned());

        let api = ProviderProcess::spawn("serve", api_env);
        let executor = options
            .executor
            .then(|| ProviderProcess::spawn("executor", executor_env.clone()));
        let pool = PgPool::connect(&database_url)
            .await
            .expect("connect test db");
        let stack = Self {
            api,
            executor,
            executor_env,
            nats,
            pool,
            subjects: Subjects::new(prefix),
            base_url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            database,
            database_url,
            data_dir,
        };
        stack.wait_ready().await;
        stack
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        self.wait_readiness(StatusCode::OK).await;
    }

    /// Waits until `/readyz` answers `status` (panics after 30 s).
    pub async fn wait_readiness(&self, status: StatusCode) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let response = self
                .http
                .get(format!("{}/readyz", self.base_url))
                .send()
                .await;
            if response.is_ok_and(|r| r.status() == status) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("/readyz did not answer {status} within 30s");
    }

    /// The URL of this stack's database.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    pub fn token(&self) -> &'static str {
        TOKEN
    }

    /// An authenticated request.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(TOKEN)
    }

    pub async fn create(&self, yaml: &str) -> reqwest::Response {
        self.request(Method::POST, "/v1/environments")
            .header("content-type", "application/yaml")
            .body(yaml.to_owned())
            .send()
            .await
            .expect("POST /v1/environments")
    }

    /// Creates an environment and returns its id, asserting 202.
    pub async fn create_ok(&self, yaml: &str) -> String {
        let response = self.create(yaml).await;
        let status = response.status();
        let body: Value = response.json().await.expect("json body");
        assert_eq!(status, StatusCode::ACCEPTED, "create failed: {body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// `DELETE /v1/environments/{id}`
    pub async fn delete(&self, id: &str) -> reqwest::Response {
        self.request(Method::DELETE, &format!("/v1/environments/{id}"))
            .send()
            .await
            .expect("DELETE environment")
    }

    /// `POST /v1/environments/{id}/retry`
    pub async fn retry(&self, id: &str) -> reqwest::Response {
        self.request(Method::POST, &format!("/v1/environments/{id}/retry"))
            .send()
            .await
            .expect("POST retry")
    }

    pub async fn get(&self, id: &str) -> (StatusCode, Value) {
        let response = self
            .request(Method::GET, &format!("/v1/environments/{id}"))
            .send()
            .await
            .expect("GET environment");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls the read model until the environment has `status` (panics after `timeout`).
    pub async fn wait_for_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        self.wait_for(id, timeout, |body| body["status"] == status)
            .await
    }

    /// Polls the read model until the environment is `failed`, and asserts its error names
    /// `phase` and says `message`.
    pub async fn wait_for_failure(
        &self,
        id: &str,
        phase: &str,
        message: &str,
        timeout: Duration,
    ) -> Value {
        let failed = self.wait_for_status(id, "failed", timeout).await;
        let error = &failed["error"];
        assert_eq!(error["phase"], phase, "error: {error}");
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains(message),
            "error: {error}"
        );
        failed
    }

    /// Polls the read model until `done` holds for the environment (panics after `timeout`).
    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let (code, body) = self.get(id).await;
            if code == StatusCode::OK && done(&body) {
                return body;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "environment {id} did not reach the expected state within {timeout:?}; last: {last}"
        );
    }

    pub async fn history(&self, id: &str) -> Vec<Value> {
        let response = self
            .request(Method::GET, &format!("/v1/environments/{id}/history"))
            .send()
            .await
            .expect("GET history");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("history json")
    }

    /// The event types of an environment's history, in order.
    pub async fn history_types(&self, id: &str) -> Vec<String> {
        self.history(id)
            .await
            .iter()
            .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Every message on the events stream for one environment, read straight from JetStream.
    pub async fn stream_events(&self, id: &str) -> Vec<EventEnvelope> {
        let client = async_nats::connect(self.nats.url()).await.expect("nats");
        events_on_stream(&async_nats::jetstream::new(client), &self.subjects, id).await
    }

    /// Fails the test unless every event committed now is on the events stream exactly once,
    /// as committed, in order per environment ([`invariants::committed_events_published_once`]);
    /// waits up to 30 s for the relay to publish what is pending.
    pub async fn assert_committed_events_published_once(&self) -> invariants::Checked {
        invariants::committed_events_published_once(
            &self.pool,
            &self.nats.url(),
            &self.subjects,
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|violations| {
            panic!(
                "the events stream does not match the events table:\n{}",
                violations
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
    }

    /// Fails the test if the stand-ins' run intervals show two mutating terraform/helm runs of
    /// one environment changing state at once, or one executor running two at once (see
    /// `standins::overlap`). Also fails when no run was recorded at all, so the check
    /// cannot pass by looking at the wrong place.
    pub fn assert_no_overlap(&self, id: &str) {
        let log = overlap::read(&self.workdir(id)).expect("readable runs.jsonl");
        assert!(
            !log.finished.is_empty(),
            "no terraform/helm run recorded for {id}"
        );
        let found = log.overlaps();
        assert!(
            found.is_empty(),
            "terraform/helm runs overlapped:\n{}",
            found
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// Waits (bounded) until a mutating terraform/helm run of the environment has started.
    pub async fn wait_for_run_start(&self, id: &str) {
        let workdir = self.workdir(id);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !overlap::read(&workdir).is_ok_and(|log| !log.started.is_empty()) {
            assert!(
                Instant::now() < deadline,
                "no terraform/helm run of {id} started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The executor's working directory for one environment.
    pub fn workdir(&self, id: &str) -> PathBuf {
        self.data_dir.path().join("workdirs").join(id)
    }

    pub async fn restart_api(&mut self, extra: &[(&str, &str)], remove: &[&str]) {
        self.kill9_api().await;
        self.respawn_api(extra, remove).await;
    }

    /// Kills the API process (SIGKILL); [`Self::respawn_api`] brings it back.
    pub async fn kill9_api(&mut self) {
        self.api.kill9().await;
    }

    /// Starts the API process again with its settings plus `extra`/minus `remove`, and waits
    /// until it is ready.
    pub async fn respawn_api(&mut self, extra: &[(&str, &str)], remove: &[&str]) {
        self.api = self.api.respawn(extra, remove);
        self.wait_ready().await;
    }

    pub async fn kill9_executor(&mut self) {
        if let Some(executor) = self.executor.as_mut() {
            executor.kill9().await;
        }
    }

    /// Kills nats-server (SIGKILL) and starts it again on the same port and store.
    pub async fn restart_nats(&mut self) {
        self.stop_nats().await;
        self.start_nats().await;
    }

    /// Kills nats-server (SIGKILL); [`Self::start_nats`] brings it back.
    pub async fn stop_nats(&mut self) {
        self.nats.kill().await;
    }

    /// Starts nats-server again on the port and store of the stopped one.
    pub async fn start_nats(&mut self) {
        self.nats.restart().await.expect("restart nats-server");
    }

    /// Starts a (new) executor process, whether or not the stack started with one.
    pub fn restart_executor(&mut self) {
        self.executor = Some(ProviderProcess::spawn(
            "executor",
            self.executor_env.clone(),
        ));
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Processes die with their handles; the database is dropped on a separate thread since
        // Drop cannot await.
        let database = self.database.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                services::postgres().await.drop_database(&database).await;
            });
        })
        .join();
    }
}

/// Every event of one environment on the events stream, in stream order, read straight from
/// JetStream with an ordered consumer (until nothing is pending, or nothing comes for 500 ms).
pub async fn events_on_stream(
    js: &async_nats::jetstream::Context,
    subjects: &Subjects,
    environment_id: &str,
) -> Vec<EventEnvelope> {
    let stream = js
        .get_stream(subjects.events_stream())
        .await
        .expect("events stream");
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subjects.environment_events(environment_id),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(500), messages.next()).await {
            Ok(Some(Ok(message))) => {
                events.push(serde_json::from_slice(&message.payload).expect("envelope"));
                let pending = message.info().map(|i| i.pending).unwrap_or(0);
                if pending == 0 {
                    break;
                }
            }
            Ok(Some(Err(error))) => panic!("consumer error: {error}"),
            Ok(None) | Err(_) => break,
        }
    }
    events
}
