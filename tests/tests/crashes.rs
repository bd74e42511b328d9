//! Nothing lost: kill -9 of the executor mid-step, of the API between commit and publish, and of
//! nats-server; each ends with every committed event on the stream exactly once and the
//! environment where the user expects it.

use futures::StreamExt;
use std::time::{Duration, Instant};
use system_tests::{Stack, StackOptions, count, sandbox_yaml};

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
    stack.assert_no_overlap(&id);
    // The job really was redelivered: the crashed executor's apply and the new executor's.
    let runs = executors::standin::overlap::read(&stack.workdir(&id)).unwrap();
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
    stack.assert_no_overlap(&id);
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
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_api_between_commit_and_publish_loses_nothing() {
    let mut stack = Stack::start_with(StackOptions {
        executor: true,
        api_env: vec![("PROVISIONER_FAULT_RELAY_HOLD".into(), "1".into())],
        ..Default::default()
    })
    .await;
    let id = stack.create_ok(&sandbox_yaml("committed", "")).await;
    // Committed (the request was answered) but held back from JetStream.
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM event_outbox WHERE aggregate_id = $1")
            .bind(&id)
            .fetch_one(&stack.pool)
            .await
            .unwrap();
    assert_eq!(pending, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        stack.stream_events(&id).await.is_empty(),
        "nothing is published yet"
    );

    stack
        .restart_api(&[], &["PROVISIONER_FAULT_RELAY_HOLD"])
        .await;
    stack.wait_for_status(&id, "ready", WITHIN).await;

    let published = stack.stream_events(&id).await;
    let sequences: Vec<u64> = published.iter().map(|e| e.sequence).collect();
    let history = stack.history(&id).await;
    assert_eq!(sequences, (1..=history.len() as u64).collect::<Vec<_>>());
    assert_eq!(published[0].event_type, "EnvironmentRequested");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM event_outbox")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM event_outbox")
            .fetch_one(&stack.pool)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay did not drain the outbox"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stack.stream_events(&id).await.len(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nats_restart_mid_lifecycle_loses_no_event() {
    let mut stack = Stack::start().await;
    let id = stack
        .create_ok(&sandbox_yaml("weathered", "    apply_seconds: 2\n"))
        .await;
    stack.wait_for_status(&id, "provisioning", WITHIN).await;
    stack.stop_nats().await;
    // Not ready without NATS, and says so; commands still commit to Postgres meanwhile.
    stack
        .wait_readiness(reqwest::StatusCode::SERVICE_UNAVAILABLE)
        .await;
    stack.start_nats().await;
    stack.wait_ready().await;
    stack.wait_for_status(&id, "ready", WITHIN).await;
    let history = stack.history(&id).await;
    let published = stack.stream_events(&id).await;
    let sequences: Vec<u64> = published.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=history.len() as u64).collect::<Vec<_>>());
    stack.assert_no_overlap(&id);
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
    let history = stack.history(&id).await;
    let published = stack.stream_events(&id).await;
    let sequences: Vec<u64> = published.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=history.len() as u64).collect::<Vec<_>>());
}
