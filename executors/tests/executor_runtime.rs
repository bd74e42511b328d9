//! The executor runtime against a real NATS JetStream server (one per test, on a free port) and
//! the real stand-in executables of this crate.
//!
//! Needs `nats-server` (>= 2.10) on PATH. `TEST_LOG=1` shows the executor's tracing output.

mod support;

use local_services::nats::LocalNats;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use domain::aggregate::OperationOutcome;
use domain::spec::{Simulation, Step};
use domain::wire::{
    Actor, EventEnvelope, EventMetadata, LogLine, OperationResult, RequestId, Subjects,
};
use domain::{EnvironmentId, Event, OperationId};
use executors::driver::Drivers;
use executors::runner;
use executors::runner::Exclusion;
use executors::settings::ExecutorSettings;
use futures::StreamExt;
use standins::overlap::{self, OverlapKind};
use support::{LOCK_FILE, job, sandbox_tools};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A server with the command side's streams, and an executor consuming from it.
struct Harness {
    server: LocalNats,
    subjects: Subjects,
    jetstream: jetstream::Context,
    data_dir: tempfile::TempDir,
    executor: Executor,
}

/// One running `runner::run`.
struct Executor {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Executor {
    /// Shuts the executor down gracefully and waits for it to return.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the executor stops")
            .unwrap()
            .unwrap();
    }
}

fn init_tracing() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("executors=debug,info")
            .with_test_writer()
            .try_init();
    }
}

/// Polls `check` every `every` until it gives a value; panics with `what` once `deadline` has
/// passed.
async fn eventually<T>(
    what: &str,
    deadline: Instant,
    every: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(every).await;
    }
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server and an executor whose settings `adjust` may change.
    async fn start_with(adjust: impl Fn(&mut ExecutorSettings)) -> Self {
        Self::start_with_exclusion(adjust, Exclusion::PerEnvironment).await
    }

    async fn start_with_exclusion(
        adjust: impl Fn(&mut ExecutorSettings),
        exclusion: Exclusion,
    ) -> Self {
        init_tracing();
        let server = system_tests::services::nats().await;
        let client = async_nats::connect(server.url()).await.unwrap();
        let jetstream = jetstream::new(client);
        let subjects = Subjects::new("exectest");
        create_streams(&jetstream, &subjects).await;
        let data_dir = tempfile::tempdir().unwrap();
        let mut settings = test_settings(&server.url(), &subjects, data_dir.path());
        adjust(&mut settings);
        Harness {
            executor: Executor::spawn_with(settings, exclusion),
            server,
            subjects,
            jetstream,
            data_dir,
        }
    }

    fn workdir(&self, env: &EnvironmentId) -> PathBuf {
        self.data_dir.path().join("workdirs").join(env.as_str())
    }

    /// Publishes `event` as the command side's relay does: an envelope on its subject.
    async fn publish(&self, env: &EnvironmentId, sequence: u64, event: Event) {
        let envelope = EventEnvelope {
            environment_id: env.clone(),
            sequence,
            event_type: event.event_type().to_owned(),
            version: event.version().to_string(),
            payload: event.payload(),
            metadata: EventMetadata::request(
                Actor::caller("system:test"),
                None,
                RequestId::new("req_test"),
            ),
            recorded_at: chrono::Utc::now(),
        };
        self.jetstream
            .publish(
                self.subjects.event(env.as_str(), event.event_type()),
                serde_json::to_vec(&envelope).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// The result for `env`, if one has been published.
    async fn result(&self, env: &EnvironmentId) -> Option<OperationResult> {
        let results = self
            .jetstream
            .get_stream(self.subjects.results_stream())
            .await
            .unwrap();
        let message = results
            .get_last_raw_message_by_subject(&self.subjects.result(env.as_str()))
            .await
            .ok()?;
        Some(serde_json::from_slice(&message.payload).unwrap())
    }

    /// Waits for the result of `op`.
    async fn wait_for_result(&self, env: &EnvironmentId, op: &OperationId) -> OperationResult {
        eventually(
            &format!("no result for {op} within 60s"),
            Instant::now() + Duration::from_secs(60),
            Duration::from_millis(100),
            async || {
                // Not a condition observed on the way: the result that ends the operation.
                self.result(env).await.filter(|result| {
                    &result.operation_id == op
                        && !matches!(result.outcome, OperationOutcome::Progressed { .. })
                })
            },
        )
        .await
    }

    /// Every log line of `op` published so far.
    async fn logs(&self, env: &EnvironmentId, op: &OperationId) -> Vec<LogLine> {
        let logs = self
            .jetstream
            .get_stream(self.subjects.logs_stream())
            .await
            .unwrap();
        let consumer = logs
            .create_consumer(jetstream::consumer::pull::Config {
                filter_subject: self.subjects.logs(env.as_str(), op.as_str()),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = consumer
            .fetch()
            .max_messages(10_000)
            .messages()
            .await
            .unwrap();
        let mut lines = Vec::new();
        while let Some(Ok(message)) = messages.next().await {
            lines.push(serde_json::from_slice(&message.payload).unwrap());
        }
        lines
    }

    /// Waits until the executor has acknowledged every job delivered to it.
    async fn wait_until_jobs_settled(&self) {
        let events = self
            .jetstream
            .get_stream(self.subjects.events_stream())
            .await
            .unwrap();
        eventually(
            "jobs were not acknowledged",
            Instant::now() + Duration::from_secs(15),
            Duration::from_millis(100),
            async || {
                let mut consumer = events
                    .get_consumer::<jetstream::consumer::pull::Config>(runner::CONSUMER)
                    .await
                    .ok()?;
                let info = consumer.info().await.unwrap();
                (info.num_ack_pending == 0
                    && info.num_pending == 0
                    && info.delivered.stream_sequence > 0)
                    .then_some(())
            },
        )
        .await
    }

    /// Publishes the start of the infra apply `op` of `env` (sequence 2), as the relay does.
    async fn start_infra(
        &self,
        env: &EnvironmentId,
        op: &OperationId,
        simulate: Option<Simulation>,
    ) {
        let event = Event::InfraApplyStarted {
            operation_id: op.clone(),
            job: job(env, Step::Infra, simulate),
        };
        self.publish(env, 2, event).await;
    }

    /// Publishes the cancellation of `op` (at `sequence`), as a destroy request causes it.
    async fn cancel(&self, env: &EnvironmentId, sequence: u64, op: &OperationId) {
        let event = Event::OperationCancelled {
            operation_id: op.clone(),
            reason: "destroy requested".into(),
            failed_phase: None,
        };
        self.publish(env, sequence, event).await;
    }

    /// Publishes that `op` passed its deadline (at `sequence`), as the deadline sweep causes it.
    async fn time_out(&self, env: &EnvironmentId, sequence: u64, op: &OperationId) {
        let event = Event::OperationTimedOut {
            operation_id: op.clone(),
            phase: Step::Infra,
            timeout_seconds: Some(1),
            error: "timed out".into(),
        };
        self.publish(env, sequence, event).await;
    }

    async fn stop(self) {
        self.executor.stop().await;
    }
}

impl Executor {
    fn spawn(settings: ExecutorSettings) -> Self {
        Self::spawn_with(settings, Exclusion::PerEnvironment)
    }

    fn spawn_with(settings: ExecutorSettings, exclusion: Exclusion) -> Self {
        let shutdown = CancellationToken::new();
        let drivers = Drivers::from_settings(&settings);
        let task = tokio::spawn(runner::run_with_drivers(
            settings,
            drivers,
            exclusion,
            shutdown.clone(),
        ));
        Executor { shutdown, task }
    }
}

/// Fast heartbeats and short waits, the stand-ins of this build.
fn test_settings(url: &str, subjects: &Subjects, data_dir: &Path) -> ExecutorSettings {
    let mut settings = ExecutorSettings::new(url, subjects.prefix());
    settings.data_dir = data_dir.to_owned();
    settings.sandbox_tools = Some(sandbox_tools());
    settings.heartbeat = Duration::from_millis(500);
    settings.ack_wait = Duration::from_secs(5);
    settings.cancel_grace = Duration::from_secs(5);
    settings.shutdown_grace = Duration::from_secs(10);
    settings
}

async fn create_streams(jetstream: &jetstream::Context, subjects: &Subjects) {
    for config in [
        stream::Config {
            name: subjects.events_stream(),
            subjects: vec![subjects.all_events()],
            ..Default::default()
        },
        stream::Config {
            name: subjects.results_stream(),
            subjects: vec![subjects.all_results()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        },
        stream::Config {
            name: subjects.logs_stream(),
            subjects: vec![subjects.all_logs()],
            ..Default::default()
        },
    ] {
        jetstream.create_stream(config).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------------------------

/// An infra apply that takes `seconds`.
fn slow_apply(seconds: f64) -> Option<Simulation> {
    Some(Simulation {
        apply_seconds: Some(seconds),
        ..Simulation::default()
    })
}

fn succeeded(result: &OperationResult) -> &BTreeMap<String, String> {
    match &result.outcome {
        OperationOutcome::Succeeded { outputs } => outputs,
        OperationOutcome::Failed { error } => panic!("expected success, got failure: {error}"),
        OperationOutcome::Progressed { report } => panic!("expected success, got {report:?}"),
    }
}

fn pid_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn infra_job_reports_success_with_every_infra_output() {
    let harness = Harness::start().await;
    let env = EnvironmentId::generate();
    let op = OperationId::generate();
    harness.start_infra(&env, &op, None).await;

    let result = harness.wait_for_result(&env, &op).await;
    assert_eq!(result.environment_id, env);
    let outputs = succeeded(&result);
    for name in domain::outputs::InfraOutput::reported().map(|o| o.name()) {
        assert!(
            outputs.contains_key(name),
            "missing output {name}: {outputs:?}"
        );
    }
    assert_eq!(
        outputs["cluster_name"],
        format!("beta9-{}", env.as_str().replace('_', "-"))
    );
    assert!(outputs.contains_key("cluster_certificate_authority"));

    harness.wait_until_jobs_settled().await;
    let logs = harness.logs(&env, &op).await;
    assert!(
        logs.iter()
            .any(|l| l.stream == "terraform:stdout" && l.line.starts_with("Apply complete!")),
        "the apply's output reached the operation's log subject"
    );
    assert!(logs.iter().all(|l| l.operation_id == op));
    assert!(harness.workdir(&env).join("main.tf.json").is_file());
    assert!(!harness.workdir(&env).join("simulate.json").exists());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(harness.workdir(&env))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o700, "the workdir is the executor's alone");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn infra_job_that_fails_reports_the_standins_message() {
    let harness = Harness::start().await;
    let env = EnvironmentId::generate();
    let op = OperationId::generate();
    let simulate = Simulation {
        fail: Some(Step::Infra),
        ..Simulation::default()
    };
    harness.start_infra(&env, &op, Some(simulate)).await;

    let result = harness.wait_for_result(&env, &op).await;
    match result.outcome {
        OperationOutcome::Failed { error } => {
            assert!(error.contains("simulated infra failure"), "{error}");
            assert!(error.lines().count() <= 20, "{error}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    harness.wait_until_jobs_settled().await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_running_apply_stops_the_standin_and_reports_nothing() {
    ending_a_running_apply_early_stops_the_standin_and_reports_nothing(Harness::cancel).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_apply_that_timed_out_stops_its_standin_and_reports_nothing() {
    ending_a_running_apply_early_stops_the_standin_and_reports_nothing(Harness::time_out).await;
}

async fn ending_a_running_apply_early_stops_the_standin_and_reports_nothing(
    end: impl AsyncFnOnce(&Harness, &EnvironmentId, u64, &OperationId),
) {
    let harness = Harness::start().await;
    let env = EnvironmentId::generate();
    let op = OperationId::generate();
    harness.start_infra(&env, &op, slow_apply(5.0)).await;

    // The apply holds the state lock while it runs; the lock names the stand-in's pid.
    let lock_path = harness.workdir(&env).join(LOCK_FILE);
    let pid = eventually(
        "the apply never started",
        Instant::now() + Duration::from_secs(15),
        Duration::from_millis(50),
        async || {
            let text = std::fs::read_to_string(&lock_path).ok()?;
            let info = serde_json::from_str::<serde_json::Value>(&text).ok()?;
            Some(info["Pid"].as_i64()? as i32)
        },
    )
    .await;
    assert!(pid_alive(pid));

    let cancelled_at = Instant::now();
    end(&harness, &env, 3, &op).await;
    eventually(
        "the stand-in still runs (or its lock remains) 4s after the cancellation",
        cancelled_at + Duration::from_secs(4),
        Duration::from_millis(50),
        async || (!pid_alive(pid) && !lock_path.exists()).then_some(()),
    )
    .await;

    harness.wait_until_jobs_settled().await;
    // Longer than the apply would have taken: still no result.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(harness.result(&env).await, None);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_operation_was_already_cancelled_is_skipped() {
    a_job_whose_operation_already_ended_is_skipped(Harness::cancel).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_operation_already_timed_out_is_skipped() {
    a_job_whose_operation_already_ended_is_skipped(Harness::time_out).await;
}

async fn a_job_whose_operation_already_ended_is_skipped(
    end: impl AsyncFnOnce(&Harness, &EnvironmentId, u64, &OperationId),
) {
    let harness = Harness::start().await;
    let env = EnvironmentId::generate();
    let op = OperationId::generate();
    // Published in this order by the relay when the job is redelivered after it ended.
    end(&harness, &env, 3, &op).await;
    harness.start_infra(&env, &op, None).await;

    harness.wait_until_jobs_settled().await;
    assert!(!harness.workdir(&env).join("main.tf.json").exists());
    assert_eq!(harness.result(&env).await, None);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn infra_then_bootstrap_then_destroy_run_in_order_in_one_workdir() {
    let harness = Harness::start().await;
    let env = EnvironmentId::generate();

    let infra = OperationId::generate();
    harness.start_infra(&env, &infra, None).await;
    let outputs = succeeded(&harness.wait_for_result(&env, &infra).await).clone();

    let bootstrap = OperationId::generate();
    let mut bootstrap_job = job(&env, Step::Bootstrap, None);
    bootstrap_job.infra_outputs = outputs;
    harness
        .publish(
            &env,
            4,
            Event::BootstrapStarted {
                operation_id: bootstrap.clone(),
                job: bootstrap_job,
            },
        )
        .await;
    let result = harness.wait_for_result(&env, &bootstrap).await;
    assert_eq!(
        succeeded(&result),
        &BTreeMap::from([(
            "endpoint".to_owned(),
            "https://api.demo.example.com".to_owned()
        )])
    );
    let workdir = harness.workdir(&env);
    let kubeconfig = std::fs::read_to_string(workdir.join("kubeconfig")).unwrap();
    assert!(
        kubeconfig.contains("\"server\": \"https://"),
        "{kubeconfig}"
    );
    let releases = std::fs::read_to_string(workdir.join(".standin/helm-releases.json")).unwrap();
    assert!(releases.contains("\"beta9\""), "{releases}");

    let destroy = OperationId::generate();
    harness
        .publish(
            &env,
            6,
            Event::DestroyStarted {
                operation_id: destroy.clone(),
                job: job(&env, Step::Destroy, None),
            },
        )
        .await;
    let result = harness.wait_for_result(&env, &destroy).await;
    assert!(succeeded(&result).is_empty());
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(workdir.join("terraform.tfstate")).unwrap())
            .unwrap();
    assert_eq!(state["resources"], serde_json::json!([]));
    let found = overlap::overlaps(&workdir).unwrap();
    assert!(
        found.is_empty(),
        "two steps ran in the workdir at once: {found:?}"
    );
    assert!(overlap::runs(&workdir).unwrap().len() >= 3);
    harness.wait_until_jobs_settled().await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_hands_back_a_job_that_outlasts_the_grace_and_another_executor_finishes_it() {
    let harness = Harness::start_with(|s| s.shutdown_grace = Duration::from_millis(500)).await;
    let env = EnvironmentId::generate();
    let op = OperationId::generate();
    harness.start_infra(&env, &op, slow_apply(3.0)).await;
    let lock_path = harness.workdir(&env).join(LOCK_FILE);
    eventually(
        "the apply never started",
        Instant::now() + Duration::from_secs(15),
        Duration::from_millis(50),
        async || lock_path.exists().then_some(()),
    )
    .await;

    let Harness {
        server,
        subjects,
        jetstream,
        data_dir,
        executor,
    } = harness;
    let stopping = Instant::now();
    executor.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        stopping.elapsed()
    );
    assert!(
        !lock_path.exists(),
        "the interrupted apply released its lock"
    );
    let harness = Harness {
        executor: Executor::spawn(test_settings(&server.url(), &subjects, data_dir.path())),
        server,
        subjects,
        jetstream,
        data_dir,
    };
    assert_eq!(harness.result(&env).await, None, "nothing was reported");

    let result = harness.wait_for_result(&env, &op).await;
    assert!(succeeded(&result).contains_key("cluster_name"));
    harness.wait_until_jobs_settled().await;
    harness.stop().await;
}

/// Publishes a second infra apply of `env` while a slow first one runs, and returns the runs
/// recorded in the workdir once both have reported.
async fn two_applies_of_one_environment(harness: &Harness) -> Vec<overlap::RunRecord> {
    let env = EnvironmentId::generate();
    let (first, second) = (OperationId::generate(), OperationId::generate());
    // Long enough that the second job starts while it runs, even on a loaded machine.
    harness.start_infra(&env, &first, slow_apply(4.0)).await;
    let workdir = harness.workdir(&env);
    let lock_path = workdir.join(LOCK_FILE);
    // The apply's lock, not its plan's: a second plan taking the lock in between would make
    // the first step's saved plan stale, and its retry a third apply.
    eventually(
        "the first apply never took the lock",
        Instant::now() + Duration::from_secs(15),
        Duration::from_millis(20),
        async || {
            let applying = overlap::read(&workdir)
                .is_ok_and(|log| log.started.iter().any(|run| run.operation == "apply"));
            (applying && lock_path.exists()).then_some(())
        },
    )
    .await;
    // As a redelivered or duplicated job would arrive: a second step of the same environment.
    let event = Event::InfraApplyStarted {
        operation_id: second.clone(),
        job: job(&env, Step::Infra, slow_apply(0.2)),
    };
    harness.publish(&env, 3, event).await;
    harness.wait_for_result(&env, &second).await;
    harness.wait_until_jobs_settled().await;
    let runs = overlap::runs(&harness.workdir(&env)).unwrap();
    assert_eq!(
        runs.iter()
            .filter(|r| r.started.operation == "apply")
            .count(),
        2,
        "both applies ran: {runs:?}"
    );
    runs
}

#[tokio::test(flavor = "multi_thread")]
async fn two_steps_of_one_environment_run_one_after_the_other_and_the_check_finds_no_overlap() {
    let harness = Harness::start().await;
    let runs = two_applies_of_one_environment(&harness).await;
    let found = overlap::find_overlaps(&runs);
    assert!(found.is_empty(), "{found:?}");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_per_environment_exclusion_the_overlap_check_sees_two_applies_at_once() {
    let harness = Harness::start_with_exclusion(|_| {}, Exclusion::Disabled).await;
    let runs = two_applies_of_one_environment(&harness).await;
    let found = overlap::find_overlaps(&runs);
    // The state lock still kept their changes apart; the executor ran both at once.
    assert!(
        found.iter().any(|o| o.kind == OverlapKind::SameParent),
        "the check missed the overlap: {runs:?}"
    );
    assert!(
        found.iter().all(|o| o.kind != OverlapKind::Section),
        "{found:?}"
    );
    harness.stop().await;
}
