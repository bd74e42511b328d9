//! Failures and recovery: simulated step failures, retry from the failed phase, and destroy
//! cancelling an in-flight step.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;
use system_tests::{Stack, StackOptions, count, sandbox_yaml};

const WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_bootstrap_is_retried_without_re_applying_infra() {
    let stack = Stack::start().await;
    let simulate = "    apply_seconds: 0.2\n    fail: bootstrap\n    fail_times: 1\n";
    let id = stack.create_ok(&sandbox_yaml("flaky", simulate)).await;
    stack
        .wait_for_failure(&id, "bootstrap", "simulated bootstrap failure", WITHIN)
        .await;

    assert_eq!(stack.retry(&id).await.status(), StatusCode::ACCEPTED);
    let ready = stack.wait_for_status(&id, "ready", WITHIN).await;
    assert!(ready["error"].is_null());

    let types = stack.history_types(&id).await;
    assert_eq!(count(&types, "InfraApplyStarted"), 1, "{types:?}");
    assert_eq!(count(&types, "InfraApplied"), 1);
    assert_eq!(count(&types, "BootstrapFailed"), 1);
    assert_eq!(count(&types, "RetryRequested"), 1);
    assert_eq!(count(&types, "BootstrapStarted"), 2);
    assert_eq!(types.last().unwrap(), "BootstrapCompleted");
    stack.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_terraform_is_retried_within_the_step_and_the_retries_are_in_its_logs() {
    let stack = Stack::start_with(StackOptions {
        executor_env: vec![("PROVISIONER_TERRAFORM_RETRY_DELAY_MS".into(), "100".into())],
        ..StackOptions::default()
    })
    .await;
    let simulate = "    apply_seconds: 0.2\n    transient_failures: 2\n";
    let id = stack.create_ok(&sandbox_yaml("throttled", simulate)).await;
    let ready = stack.wait_for_status(&id, "ready", WITHIN).await;
    assert!(ready["error"].is_null());
    let types = stack.history_types(&id).await;
    assert_eq!(count(&types, "InfraApplyStarted"), 1, "{types:?}");
    assert_eq!(count(&types, "InfraApplyFailed"), 0, "{types:?}");

    let logs: Value = stack
        .request(Method::GET, &format!("/v1/environments/{id}/logs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let retries: Vec<&str> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["stream"] == "executor")
        .filter_map(|l| l["line"].as_str())
        .filter(|l| l.contains("(the cloud API throttled the request); retrying in"))
        .collect();
    assert_eq!(retries.len(), 2, "{logs}");
    stack.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_infra_apply_keeps_its_error_until_a_retry_succeeds() {
    let stack = Stack::start().await;
    let simulate = "    apply_seconds: 0.2\n    fail: infra\n    fail_times: 2\n";
    let id = stack.create_ok(&sandbox_yaml("quota", simulate)).await;
    let mut seen_version = 0;
    for attempt in 1..=2 {
        let failed = stack
            .wait_for(&id, WITHIN, |body| {
                body["status"] == "failed" && body["version"].as_i64() > Some(seen_version)
            })
            .await;
        assert_eq!(failed["error"]["phase"], "infra", "attempt {attempt}");
        seen_version = failed["version"].as_i64().unwrap();
        let response = stack.retry(&id).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        // The command's answer is read-your-writes: no longer failed.
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "provisioning");
    }
    stack.wait_for_status(&id, "ready", WITHIN).await;
    let types = stack.history_types(&id).await;
    assert_eq!(count(&types, "InfraApplyFailed"), 2);
    assert_eq!(count(&types, "InfraApplied"), 1);
    stack.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_during_an_apply_cancels_it_then_destroys_without_overlap() {
    let stack = Stack::start().await;
    let id = stack
        .create_ok(&sandbox_yaml("impatient", "    apply_seconds: 5\n"))
        .await;
    stack.wait_for_status(&id, "provisioning", WITHIN).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let response = stack.delete(&id).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    stack.wait_for_status(&id, "destroyed", WITHIN).await;

    let types = stack.history_types(&id).await;
    assert_eq!(
        types,
        [
            "EnvironmentRequested",
            "InfraApplyStarted",
            "OperationCancelled",
            "DestroyRequested",
            "DestroyStarted",
            "InfraDestroyed",
        ]
    );
    stack.assert_invariants().await;
    // No infra outputs, so no cluster to uninstall releases from: helm never ran.
    assert_eq!(
        standins::helm_invocations::read(&stack.workdir(&id)).unwrap(),
        Vec::new()
    );
}

/// Every step's timeout set to `seconds`.
fn step_timeouts(seconds: &str) -> Vec<(String, String)> {
    ["INFRA", "BOOTSTRAP", "DESTROY"]
        .map(|step| {
            (
                format!("PROVISIONER_{step}_TIMEOUT_SECS"),
                seconds.to_owned(),
            )
        })
        .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_executor_at_all_a_step_times_out_and_a_retry_runs_once_an_executor_exists() {
    let mut stack = Stack::start_with(StackOptions {
        executor: false,
        api_env: step_timeouts("3"),
        ..Default::default()
    })
    .await;
    let id = stack.create_ok(&sandbox_yaml("unattended", "")).await;
    let failed = stack
        .wait_for_failure(
            &id,
            "infra",
            "timed out: the infra step did not finish within its timeout of 3s; retry to run it again",
            WITHIN,
        )
        .await;
    let history = stack.history(&id).await;
    assert_eq!(history[1]["payload"]["job"]["timeout_seconds"], 3);
    assert_eq!(history[2]["type"], "OperationTimedOut");
    assert_eq!(history[2]["payload"]["phase"], "infra");
    assert_eq!(failed["operation"], Value::Null);

    // Generous timeouts from now on, so a busy machine cannot time the retried steps out.
    let generous: Vec<(String, String)> = step_timeouts("600");
    let generous: Vec<(&str, &str)> = generous
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    stack.restart_api(&generous, &[]).await;
    stack.restart_executor();
    assert_eq!(stack.retry(&id).await.status(), StatusCode::ACCEPTED);
    stack.wait_for_status(&id, "ready", WITHIN).await;
    let types = stack.history_types(&id).await;
    assert_eq!(count(&types, "OperationTimedOut"), 1, "{types:?}");
    assert_eq!(count(&types, "InfraApplyStarted"), 2, "{types:?}");
    assert_eq!(count(&types, "InfraApplied"), 1, "{types:?}");
    // The first job, delivered late to the new executor, was skipped: one apply ran.
    stack.assert_invariants().await;
    let applies = standins::overlap::runs(&stack.workdir(&id))
        .unwrap()
        .into_iter()
        .filter(|run| run.started.operation == "apply")
        .count();
    assert_eq!(applies, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_sweeping_the_same_overdue_operation_record_one_time_out() {
    use command_api::deadlines::DeadlineSweep;
    use domain::aggregate::StepTimeouts;
    use event_store::EventStore;

    // The API's own sweep keeps the default timeouts: this operation is not due for it.
    let stack = Stack::start_with(StackOptions {
        executor: false,
        ..Default::default()
    })
    .await;
    let id = stack.create_ok(&sandbox_yaml("contested", "")).await;
    stack.wait_for_status(&id, "provisioning", WITHIN).await;
    // Two replicas, each with its own store, both sure the deadline has passed.
    let replicas: Vec<DeadlineSweep> = (0..2)
        .map(|_| DeadlineSweep::new(EventStore::new(stack.pool.clone()), StepTimeouts::DEFAULT))
        .collect();
    let later = chrono::Utc::now() + chrono::Duration::hours(2);
    let (a, b) = tokio::join!(replicas[0].sweep(later), replicas[1].sweep(later));
    assert!(a.unwrap() + b.unwrap() >= 1, "the operation was overdue");
    stack
        .wait_for_failure(&id, "infra", "within its timeout of 90m", WITHIN)
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
    // Nothing is left to sweep.
    assert_eq!(replicas[0].sweep(later).await.unwrap(), 0);
    stack.assert_invariants().await;
}
