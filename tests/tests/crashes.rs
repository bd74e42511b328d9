//! Nothing lost: kill -9 of the executor mid-step, of the API at random moments while its relay
//! publishes, and of nats-server; each ends with the environment where the user expects it and
//! the one invariant check (`Stack::assert_invariants`). The random suite over two replicas of
//! each is `fault_suite.rs`.

use futures::StreamExt;
use std::time::{Duration, Instant};
use system_tests::{Stack, StackOptions, Traffic, count, sandbox_yaml};

const WITHIN: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_executor_mid_apply_still_ends_ready_with_one_infra_applied() {
    let mut stack = Stack::start().await;
    let id = stack
        .create_ok(&sandbox_yaml("survivor", "    apply_seconds: 3\n"))
        .await;
    // Let the apply get going, then crash the executor in the middle of it.
    stack.wait_for_run_start(&id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.kill9_executor().await;
    stack.restart_executor();

    stack.wait_for_status(&id, "ready", WITHIN).await;
    let types = stack.history_types(&id).await;
    assert_eq!(count(&types, "InfraApplyStarted"), 1, "{types:?}");
    assert_eq!(count(&types, "InfraApplied"), 1, "{types:?}");
    assert_eq!(count(&types, "BootstrapCompleted"), 1, "{types:?}");
    stack.assert_invariants().await;
    // The job really was redelivered: the crashed executor's apply and the new executor's.
    let runs = standins::overlap::read(&stack.workdir(&id)).unwrap();
    let applies = runs
        .started
        .iter()
        .filter(|run| run.operation == "apply")
        .count();
    assert!(
        applies >= 2,
        "expected a second apply after the crash; runs: {runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_no_executor_finishes_fails_visibly_and_can_be_retried() {
    let mut stack = Stack::start_with(StackOptions {
        executor_env: vec![("PROVISIONER_EXECUTOR_MAX_DELIVER".into(), "1".into())],
        ..Default::default()
    })
    .await;
    let id = stack
        .create_ok(&sandbox_yaml("abandoned", "    apply_seconds: 2\n"))
        .await;
    // Crash the executor once it has the job (its terraform is running).
    stack.wait_for_run_start(&id).await;
    stack.kill9_executor().await;
    // The only delivery died with its executor: JetStream gives up, and the user sees why.
    stack
        .wait_for_failure(&id, "infra", "no executor finished this step", WITHIN)
        .await;
    stack.restart_executor();
    let response = stack.retry(&id).await;
    assert_eq!(response.status(), 202);
    stack.wait_for_status(&id, "ready", WITHIN).await;
    let types = stack.history_types(&id).await;
    assert_eq!(count(&types, "InfraApplyFailed"), 1, "{types:?}");
    assert_eq!(count(&types, "InfraApplied"), 1, "{types:?}");
    stack.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_abandoned_while_the_api_was_down_still_times_out_after_it_restarts() {
    let mut stack = Stack::start_with(StackOptions {
        api_env: vec![("PROVISIONER_INFRA_TIMEOUT_SECS".into(), "8".into())],
        executor_env: vec![("PROVISIONER_EXECUTOR_MAX_DELIVER".into(), "1".into())],
        ..Default::default()
    })
    .await;
    // The test hears JetStream give up on the job; the API, down by then, does not.
    let nats = async_nats::connect(stack.nats.url()).await.unwrap();
    let mut advisories = nats
        .subscribe(format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.executor",
            stack.subjects.events_stream()
        ))
        .await
        .unwrap();
    let id = stack
        .create_ok(&sandbox_yaml(
            "forgotten",
            "    apply_seconds: 30
",
        ))
        .await;
    stack.wait_for_run_start(&id).await;
    stack.kill9_api().await;
    stack.kill9_executor().await;
    tokio::time::timeout(WITHIN, advisories.next())
        .await
        .expect("JetStream gives up on the only delivery")
        .expect("an advisory");

    stack.respawn_api(&[], &[]).await;
    let failed = stack
        .wait_for_failure(
            &id,
            "infra",
            "timed out: the infra step did not finish within its timeout of 8s",
            WITHIN,
        )
        .await;
    let types = stack.history_types(&id).await;
    assert_eq!(
        types,
        [
            "EnvironmentRequested",
            "InfraApplyStarted",
            "OperationTimedOut"
        ]
    );
    let history = stack.history(&id).await;
    assert_eq!(history[2]["metadata"]["actor"], "system:deadline-sweep");
    assert_eq!(
        failed["error"]["operation_id"],
        history[1]["payload"]["operation_id"]
    );
    stack.assert_invariants().await;
}

/// Kills that must land while events wait in the outbox: 3, or `PROVISIONER_TEST_CRASH_TRIALS`
/// (at most 100). At most four kills per landed one, and five minutes in all.
fn crash_trials() -> usize {
    system_tests::trials("PROVISIONER_TEST_CRASH_TRIALS", 3, 100)
}

/// Waits (bounded) until the relay is really publishing: committed events wait in the outbox
/// and the events stream grows.
async fn wait_until_publishing(stack: &Stack, js: &async_nats::jetstream::Context) {
    let last_sequence = async || {
        let mut stream = js.get_stream(stack.subjects.events_stream()).await.ok()?;
        Some(stream.info().await.ok()?.state.last_sequence)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = last_sequence().await.unwrap_or(0);
    loop {
        let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM event_outbox")
            .fetch_one(&stack.pool)
            .await
            .unwrap();
        if waiting > 0 && last_sequence().await.unwrap_or(0) > before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the relay never published while events waited"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_api_at_random_moments_while_the_relay_publishes_loses_and_duplicates_nothing()
{
    let trials = crash_trials();
    let budget = Instant::now() + Duration::from_secs(300);
    let mut stack = Stack::start().await;
    let nats = async_nats::connect(stack.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    let traffic = Traffic::start(&stack.base_url, stack.token(), 4);
    let (mut kills, mut landed, mut stranded) = (0, 0, 0);
    while landed < trials && kills < 4 * trials && Instant::now() < budget {
        // A random moment after traffic resumed, at which the relay is publishing.
        let pause = rand::random_range(100..1000);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        wait_until_publishing(&stack, &js).await;
        stack.kill9_api().await;
        kills += 1;
        // Committed, and not yet known to JetStream or not yet forgotten by the relay.
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM event_outbox")
            .fetch_one(&stack.pool)
            .await
            .unwrap();
        if left > 0 {
            landed += 1;
            stranded += left;
        }
        stack.respawn_api(&[], &[]).await;
    }
    let accepted = traffic.stop().await;
    let checked = stack.assert_invariants().await;
    eprintln!(
        "{kills} kills, {landed} with events in the outbox ({stranded} in all); {accepted} creates \
         accepted; {} events of {} environments checked",
        checked.events, checked.environments
    );
    assert!(
        landed >= trials.min(kills),
        "only {landed} of {kills} kills hit events waiting in the outbox"
    );
    assert!(accepted > 0, "no traffic got through");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_published_twice_is_on_the_stream_once() {
    let stack = Stack::start().await;
    let id = stack.create_ok(&sandbox_yaml("twice", "")).await;
    stack.wait_for_status(&id, "ready", WITHIN).await;
    let before = stack.stream_events(&id).await.len();
    // As if the relay died after JetStream's ack but before deleting the outbox row.
    sqlx::query(
        "INSERT INTO event_outbox (aggregate_type, aggregate_id, sequence)
         VALUES ('Environment', $1, 1), ('Environment', $1, 2)",
    )
    .bind(&id)
    .execute(&stack.pool)
    .await
    .unwrap();
    stack
        .wait_outbox_published_after(
            0,
            Duration::from_secs(10),
            "the relay did not drain the outbox",
        )
        .await;
    assert_eq!(stack.stream_events(&id).await.len(), before);
    stack.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nats_restart_mid_lifecycle_loses_no_event() {
    let mut stack = Stack::start().await;
    // Several lifecycles, each at its own point (queued, applying, bootstrapping) when the
    // server dies, at a random moment while the first one applies.
    let mut ids = Vec::new();
    for (n, seconds) in ["2", "0.3", "1"].into_iter().enumerate() {
        let simulate = format!("    apply_seconds: {seconds}\n");
        let id = stack
            .create_ok(&sandbox_yaml(&format!("weathered-{n}"), &simulate))
            .await;
        ids.push(id);
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..300))).await;
    }
    stack.wait_for_status(&ids[0], "provisioning", WITHIN).await;
    tokio::time::sleep(Duration::from_millis(rand::random_range(0..1000))).await;
    stack.stop_nats().await;
    // Not ready without NATS, and says so; commands still commit to Postgres meanwhile.
    stack
        .wait_readiness(reqwest::StatusCode::SERVICE_UNAVAILABLE)
        .await;
    ids.push(stack.create_ok(&sandbox_yaml("weathered-late", "")).await);
    stack.start_nats().await;
    stack.wait_ready().await;
    for id in &ids {
        stack.wait_for_status(id, "ready", WITHIN).await;
    }
    stack.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_every_database_connection_mid_lifecycle_loses_no_event() {
    let stack = Stack::start().await;
    let id = stack
        .create_ok(&sandbox_yaml("reconnected", "    apply_seconds: 1\n"))
        .await;
    stack.wait_for_status(&id, "provisioning", WITHIN).await;
    // What a Postgres restart does to the provisioner: every connection it holds is cut,
    // including the relay's leader lock.
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&stack.pool)
    .await
    .unwrap();
    assert!(!cut.is_empty(), "the provisioner had connections to cut");
    stack.wait_for_status(&id, "ready", WITHIN).await;
    stack.assert_invariants().await;
}

/// Sends `signal` to `pid` (SIGSTOP/SIGCONT: an executor paused, as a stalled VM or a frozen
/// container would be, and resumed).
fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("signal");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_executor_paused_past_its_lease_is_superseded_and_neither_reports_nor_applies_again() {
    use nix::sys::signal::Signal;
    let stack = Stack::start().await;
    let id = stack
        .create_ok(&sandbox_yaml("paused", "    apply_seconds: 5\n"))
        .await;
    // Executor A is applying; pause it (its terraform goes on and finishes, holding the state
    // lock until then), and start executor B.
    stack.wait_for_run_start(&id).await;
    let a = stack
        .executor
        .as_ref()
        .unwrap()
        .id()
        .expect("executor A runs");
    signal(a, Signal::SIGSTOP);
    let _b = stack.spawn_executor();
    // A's heartbeats stop: JetStream hands the job to B once the ack wait passed, B takes over
    // the lapsed lease, waits for the state lock A's terraform still holds, and applies.
    stack.wait_for_status(&id, "ready", WITHIN).await;
    let types = stack.history_types(&id).await;
    assert_eq!(count(&types, "InfraApplied"), 1, "{types:?}");

    // A resumes: its lease was taken over, so it stops and reports nothing, and never runs
    // another apply.
    signal(a, Signal::SIGCONT);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let types = stack.history_types(&id).await;
    assert_eq!(count(&types, "InfraApplied"), 1, "{types:?}");
    assert_eq!(count(&types, "InfraApplyFailed"), 0, "{types:?}");
    assert_eq!(count(&types, "BootstrapCompleted"), 1, "{types:?}");
    let runs = standins::overlap::read(&stack.workdir(&id)).unwrap();
    let applies: Vec<_> = runs
        .started
        .iter()
        .filter(|run| run.operation == "apply")
        .collect();
    assert_eq!(
        applies.len(),
        2,
        "A's apply, then B's (after A's terraform let go of the state); runs: {runs:?}"
    );
    assert_eq!(
        applies
            .iter()
            .filter(|run| run.parent_pid == a as i32)
            .count(),
        1,
        "A applied again after it resumed: {runs:?}"
    );
    stack.assert_invariants().await;
}
