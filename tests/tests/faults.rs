//! Failures and recovery: simulated step failures, retry from the failed phase, and destroy
//! cancelling an in-flight step.

use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;
use system_tests::{Stack, count, sandbox_yaml};

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
    stack.assert_no_overlap(&id);
}
