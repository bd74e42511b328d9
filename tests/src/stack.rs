//! A whole provisioner deployment for one test.

use crate::api::{ApiClient, TOKEN};
use crate::invariants;
use crate::processes::ProviderProcess;
use crate::services;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use domain::wire::{EventEnvelope, Subjects};
use futures::StreamExt;
use local_services::nats::{LocalNats, free_port};
use sqlx::PgPool;
use standins::overlap;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The log files of the API and executor processes (every executor of the stack appends to
/// the one file), in [`Stack::process_logs`].
const API_LOG: &str = "serve.log";
const EXECUTOR_LOG: &str = "executor.log";

/// What to start.
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// Start an executor process.
    pub executor: bool,
    /// Extra environment for the API process.
    pub api_env: Vec<(String, String)>,
    /// Extra environment for the executor process.
    pub executor_env: Vec<(String, String)>,
    /// Keep the processes' own log output, logged at this `RUST_LOG` filter, for
    /// [`Stack::process_logs`], with or without `TEST_LOG` (without it, their output is
    /// discarded, or shown with `TEST_LOG`).
    pub log_filter: Option<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            executor: true,
            api_env: Vec::new(),
            executor_env: Vec::new(),
            log_filter: None,
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
    /// The API's client (`stack.create(…)`, `stack.base_url`, … through `Deref`).
    pub client: ApiClient,
    /// The URL of the stack's own executor's endpoint (`/metrics`, `/healthz`, `/readyz`).
    pub executor_url: String,
    database: String,
    database_url: String,
    data_dir: tempfile::TempDir,
    /// The processes' log files, when [`StackOptions::log_filter`] asked for them.
    logs_dir: Option<tempfile::TempDir>,
}

fn random_suffix() -> String {
    let n: u64 = rand::random();
    format!("{n:016x}")
}

impl std::ops::Deref for Stack {
    type Target = ApiClient;

    fn deref(&self) -> &ApiClient {
        &self.client
    }
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
        let executor_port = free_port().expect("free port");
        executor_env.insert(
            "PROVISIONER_EXECUTOR_LISTEN".into(),
            format!("127.0.0.1:{executor_port}"),
        );
        executor_env.extend(options.executor_env.iter().cloned());
        if let Some(filter) = &options.log_filter {
            api_env.insert("RUST_LOG".into(), filter.clone());
            executor_env.insert("RUST_LOG".into(), filter.clone());
        }
        let logs_dir = options
            .log_filter
            .is_some()
            .then(|| tempfile::tempdir().expect("tempdir"));
        let log_file = |name: &str| logs_dir.as_ref().map(|dir| dir.path().join(name));

        let api = ProviderProcess::spawn_logging("serve", api_env, log_file(API_LOG));
        let executor = options.executor.then(|| {
            ProviderProcess::spawn_logging("executor", executor_env.clone(), log_file(EXECUTOR_LOG))
        });
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
            client: ApiClient::new(format!("http://127.0.0.1:{port}"), TOKEN),
            executor_url: format!("http://127.0.0.1:{executor_port}"),
            database,
            database_url,
            data_dir,
            logs_dir,
        };
        stack.wait_ready().await;
        stack
    }

    /// The URL of this stack's database.
    pub fn database_url(&self) -> &str {
        &self.database_url
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
        // `plan` is recorded too, but changes nothing.
        let mutating =
            |log: &overlap::RunLog| log.started.iter().any(|run| run.operation != "plan");
        while !overlap::read(&workdir).is_ok_and(|log| mutating(&log)) {
            assert!(
                Instant::now() < deadline,
                "no terraform/helm run of {id} started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The executor's data directory (`PROVISIONER_DATA_DIR`): the workdirs and whatever else
    /// it keeps.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// The processes' own log output so far, as (file name, text), when the stack was started
    /// with [`StackOptions::log_filter`]; empty otherwise.
    pub fn process_logs(&self) -> Vec<(String, String)> {
        let Some(dir) = &self.logs_dir else {
            return Vec::new();
        };
        [API_LOG, EXECUTOR_LOG]
            .into_iter()
            .filter_map(|name| {
                let text = std::fs::read(dir.path().join(name)).ok()?;
                Some((name.to_owned(), String::from_utf8_lossy(&text).into_owned()))
            })
            .collect()
    }

    /// The log file of the stack's executors, when it keeps logs.
    fn executor_log(&self) -> Option<PathBuf> {
        self.logs_dir
            .as_ref()
            .map(|dir| dir.path().join(EXECUTOR_LOG))
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

    /// Starts another executor process beside the stack's own (same settings, same data dir:
    /// as two replicas sharing nothing but NATS and the state backend would), its endpoint on a
    /// port of its own.
    pub fn spawn_executor(&self) -> ProviderProcess {
        let mut env = self.executor_env.clone();
        env.insert("PROVISIONER_EXECUTOR_LISTEN".into(), "127.0.0.1:0".into());
        ProviderProcess::spawn_logging("executor", env, self.executor_log())
    }

    /// Starts a (new) executor process, whether or not the stack started with one; its
    /// endpoint at [`Stack::executor_url`].
    pub fn restart_executor(&mut self) {
        self.executor = Some(ProviderProcess::spawn_logging(
            "executor",
            self.executor_env.clone(),
            self.executor_log(),
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

impl Stack {
    /// Moves the API to another database — one on a test's own PostgreSQL server, which the test
    /// may stop and start: kills the API, starts it again with `database_url` (it migrates the
    /// database at start), and points [`Stack::pool`], [`Stack::database_url`] and the invariant
    /// checks at it. The stack's first database is still dropped with the stack.
    pub async fn move_to_database(&mut self, database_url: &str) {
        self.kill9_api().await;
        self.respawn_api(&[("DATABASE_URL", database_url)], &[])
            .await;
        self.pool = PgPool::connect(database_url)
            .await
            .expect("connect the stack's new database");
        self.database_url = database_url.to_owned();
    }
}
