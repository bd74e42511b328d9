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
    /// Start executor processes.
    pub executor: bool,
    /// How many executors (when `executor`): 1 by default; they share the data directory and
    /// NATS, and compete for jobs.
    pub executor_replicas: usize,
    /// How many API (`serve`) processes: 1 by default. Replicas share the database and NATS;
    /// one of them leads the relay ([`Stack::relay_leader`]), their process managers race on the
    /// same events.
    pub api_replicas: usize,
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
            executor_replicas: 1,
            api_replicas: 1,
            api_env: Vec::new(),
            executor_env: Vec::new(),
            log_filter: None,
        }
    }
}

/// One process of a [`Stack`], for [`Stack::kill9`] and [`Stack::respawn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Member {
    /// The API replica with this index (0 is [`Stack::api`]).
    Api(usize),
    /// The executor with this index (0 is [`Stack::executor`]).
    Executor(usize),
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Member::Api(i) => write!(f, "api-{i}"),
            Member::Executor(i) => write!(f, "executor-{i}"),
        }
    }
}

/// The `application_name` API replica `index` connects to Postgres with, so the test can tell
/// which replica holds the relay's lock.
fn api_application_name(index: usize) -> String {
    format!("provisioner-api-{index}")
}

pub struct Stack {
    /// API replica 0.
    pub api: ProviderProcess,
    /// Executor 0.
    pub executor: Option<ProviderProcess>,
    /// API replicas 1.. ([`StackOptions::api_replicas`]).
    more_apis: Vec<ProviderProcess>,
    /// A client of each API replica, in replica order (the first is [`Stack::client`]).
    replicas: Vec<ApiClient>,
    /// Executors 1.. ([`StackOptions::executor_replicas`]); `None` while killed.
    more_executors: Vec<Option<ProviderProcess>>,
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
        // The tests' traffic is one admin token's: no rate limit or quota of theirs may refuse
        // it (tests of the limits set their own).
        api_env.insert(
            "PROVISIONER_RATE_LIMIT_PER_MINUTE".into(),
            "10000000".into(),
        );
        api_env.insert("PROVISIONER_RATE_LIMIT_BURST".into(), "1000000".into());
        api_env.insert(
            "PROVISIONER_MAX_ENVIRONMENTS_PER_TENANT".into(),
            "100000".into(),
        );
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

        let replicas = options.api_replicas.max(1);
        let mut apis = Vec::with_capacity(replicas);
        let mut clients = Vec::with_capacity(replicas);
        for index in 0..replicas {
            let mut env = api_env.clone();
            let port = if index == 0 {
                port
            } else {
                free_port().expect("free port")
            };
            env.insert("PROVISIONER_LISTEN".into(), format!("127.0.0.1:{port}"));
            env.insert(
                "DATABASE_URL".into(),
                format!(
                    "{database_url}?application_name={}",
                    api_application_name(index)
                ),
            );
            apis.push(ProviderProcess::spawn_logging(
                "serve",
                env,
                log_file(API_LOG),
            ));
            clients.push(ApiClient::new(format!("http://127.0.0.1:{port}"), TOKEN));
        }
        let mut apis = apis.into_iter();
        let api = apis.next().expect("one API replica");
        let executors = if options.executor {
            options.executor_replicas.max(1)
        } else {
            0
        };
        let executor = (executors > 0).then(|| {
            ProviderProcess::spawn_logging("executor", executor_env.clone(), log_file(EXECUTOR_LOG))
        });
        let more_executors = (1..executors)
            .map(|_| {
                let mut env = executor_env.clone();
                env.insert("PROVISIONER_EXECUTOR_LISTEN".into(), "127.0.0.1:0".into());
                Some(ProviderProcess::spawn_logging(
                    "executor",
                    env,
                    log_file(EXECUTOR_LOG),
                ))
            })
            .collect();
        let pool = PgPool::connect(&database_url)
            .await
            .expect("connect test db");
        let stack = Self {
            api,
            executor,
            more_apis: apis.collect(),
            replicas: clients,
            more_executors,
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
        for replica in &stack.replicas {
            replica.wait_ready().await;
        }
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

/// The relay's advisory lock key (`command_api::relay`'s "relay" in ASCII), as `pg_locks` shows
/// a bigint key: its high and low 32 bits.
const RELAY_LOCK_CLASSID: i64 = 0x0072;
const RELAY_LOCK_OBJID: i64 = 0x656c_6179;

/// Two API replicas and two executors competing; and, for a kill, which processes a stack has.
impl Stack {
    /// A client of each API replica, in replica order.
    pub fn replicas(&self) -> &[ApiClient] {
        &self.replicas
    }

    /// The process id of a member, while it runs.
    pub fn pid(&self, member: Member) -> Option<u32> {
        match member {
            Member::Api(0) => self.api.id(),
            Member::Api(i) => self.more_apis.get(i - 1)?.id(),
            Member::Executor(0) => self.executor.as_ref()?.id(),
            Member::Executor(i) => self.more_executors.get(i - 1)?.as_ref()?.id(),
        }
    }

    /// Kills a member (SIGKILL); [`Self::respawn`] brings it back.
    pub async fn kill9(&mut self, member: Member) {
        match member {
            Member::Api(0) => self.api.kill9().await,
            Member::Api(i) => self.more_apis[i - 1].kill9().await,
            Member::Executor(0) => self.kill9_executor().await,
            Member::Executor(i) => {
                if let Some(executor) = self.more_executors[i - 1].as_mut() {
                    executor.kill9().await;
                }
            }
        }
    }

    /// Starts a killed member again with its settings; an API replica is waited for until it
    /// is ready.
    pub async fn respawn(&mut self, member: Member) {
        match member {
            Member::Api(0) => self.respawn_api(&[], &[]).await,
            Member::Api(i) => {
                self.more_apis[i - 1] = self.more_apis[i - 1].respawn(&[], &[]);
                self.replicas[i].wait_ready().await;
            }
            Member::Executor(0) => self.restart_executor(),
            Member::Executor(i) => {
                let mut env = self.executor_env.clone();
                env.insert("PROVISIONER_EXECUTOR_LISTEN".into(), "127.0.0.1:0".into());
                self.more_executors[i - 1] = Some(ProviderProcess::spawn_logging(
                    "executor",
                    env,
                    self.executor_log(),
                ));
            }
        }
    }

    /// The API replica whose relay is the active one: the one whose connection holds the
    /// relay's advisory lock (found through `pg_locks` and the replica's `application_name`).
    /// `None` while no replica holds it (between a leader's death and the next one's start).
    pub async fn relay_leader(&self) -> Option<usize> {
        let name: Option<String> = sqlx::query_scalar(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 1",
        )
        .bind(RELAY_LOCK_CLASSID)
        .bind(RELAY_LOCK_OBJID)
        .fetch_optional(&self.pool)
        .await
        .expect("query pg_locks");
        let name = name?;
        (0..self.replicas.len()).find(|&i| api_application_name(i) == name)
    }

    /// The one invariant check every fault scenario ends with ([`invariants`]): waits (bounded)
    /// until every environment is settled, the outbox drained and the projection caught up,
    /// then checks every committed event on the stream exactly once and in order, no overlapping
    /// terraform/helm runs of any environment, the read models equal to their replay, and no
    /// outbox row left. Fails the test naming every violation.
    pub async fn assert_invariants(&self) -> invariants::Report {
        self.check_invariants(invariants::Limits::default())
            .await
            .unwrap_or_else(|violations| {
                panic!(
                    "invariants violated:\n{}",
                    violations
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })
    }

    /// [`Self::assert_invariants`]'s check with other waits, handing back what it found (for
    /// the test that the check finds each violation).
    pub async fn check_invariants(
        &self,
        limits: invariants::Limits,
    ) -> Result<invariants::Report, Vec<invariants::Violation>> {
        invariants::check(
            &invariants::Target {
                pool: &self.pool,
                nats_url: &self.nats.url(),
                subjects: &self.subjects,
                database_url: &self.database_url,
                workdirs: &self.data_dir.path().join("workdirs"),
            },
            limits,
        )
        .await
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

    /// Waits until the relay has published (and so deleted) every outbox row with an id above
    /// `after` (0: every row); panics naming `what` after `within`.
    pub async fn wait_outbox_published_after(&self, after: i64, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        loop {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM event_outbox WHERE id > $1")
                .bind(after)
                .fetch_one(&self.pool)
                .await
                .expect("count outbox rows");
            if left == 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {left} rows left"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
