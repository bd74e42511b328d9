//! The runbook's operations end to end, with real `serve` and `executor` processes and the
//! sandbox stand-ins: cancel a slow apply and retry it to ready; mark-destroyed an environment
//! whose destroy always fails, which frees its name; force-unlock a stale state lock the step
//! failed on, which queues the retry that forces it open.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use system_tests::{Stack, StackOptions, binary_dir, sandbox_yaml};

const WITHIN: Duration = Duration::from_secs(90);

async fn operation(
    stack: &Stack,
    id: &str,
    verb: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = stack.request(Method::POST, &format!("/v1/environments/{id}/{verb}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Runs the `provisioner` binary's client `args` against the stack with `-o json`; its answer.
fn provisioner(stack: &Stack, args: &[&str]) -> Value {
    let output = std::process::Command::new(binary_dir().join("provisioner"))
        .args(args)
        .env("PROVISIONER_API_URL", &stack.base_url)
        .env("PROVISIONER_TOKEN", stack.token())
        .env("PROVISIONER_OUTPUT", "json")
        .output()
        .expect("run provisioner");
    assert!(
        output.status.success(),
        "{args:?}: exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json on stdout")
}

/// `provisioner replay` rebuilds read models equal to the live ones.
fn assert_replay_equal(stack: &Stack) {
    let output = std::process::Command::new(binary_dir().join("provisioner"))
        .arg("replay")
        .env("DATABASE_URL", stack.database_url())
        .output()
        .expect("run provisioner replay");
    assert!(
        output.status.success(),
        "replay reported a difference: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

async fn last_of(stack: &Stack, id: &str, event_type: &str) -> Value {
    stack
        .history(id)
        .await
        .into_iter()
        .rev()
        .find(|e| e["type"] == event_type)
        .unwrap_or_else(|| panic!("no {event_type} in the history of {id}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_apply_fails_naming_the_admin_and_a_retry_takes_it_to_ready() {
    let stack = Stack::start().await;
    let id = stack
        .create_ok(&sandbox_yaml("cancel-me", "    apply_seconds: 4\n"))
        .await;
    stack.wait_for_run_start(&id).await;

    let (status, body) = operation(&stack, &id, "cancel", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "failed");
    stack
        .wait_for_failure(&id, "infra", "cancelled by token:admin", WITHIN)
        .await;
    let cancelled = last_of(&stack, &id, "OperationCancelled").await;
    assert_eq!(cancelled["metadata"]["actor"], "token:admin");

    assert_eq!(stack.retry(&id).await.status(), StatusCode::ACCEPTED);
    stack.wait_for_status(&id, "ready", WITHIN).await;
    assert_replay_equal(&stack);
    // The cancelled apply's tools were stopped: no two runs of the environment overlapped.
    stack.assert_no_overlap(&id);
}

#[tokio::test(flavor = "multi_thread")]
async fn mark_destroyed_of_an_environment_whose_destroy_fails_frees_its_name() {
    let stack = Stack::start().await;
    let simulate = "    apply_seconds: 0.2\n    fail: destroy\n";
    let id = stack.create_ok(&sandbox_yaml("stubborn", simulate)).await;
    stack.wait_for_status(&id, "ready", WITHIN).await;
    assert_eq!(stack.delete(&id).await.status(), StatusCode::ACCEPTED);
    stack
        .wait_for_failure(&id, "destroy", "simulated destroy failure", WITHIN)
        .await;
    let taken = stack.create(&sandbox_yaml("stubborn", "")).await;
    assert_eq!(taken.status(), StatusCode::CONFLICT);

    let reason = "VPC and cluster deleted by hand in the console (ticket OPS-12)";
    let body = provisioner(&stack, &["env", "mark-destroyed", &id, "--reason", reason]);
    assert_eq!(body["status"], "destroyed");
    stack.wait_for_status(&id, "destroyed", WITHIN).await;
    assert_replay_equal(&stack);
    let marked = last_of(&stack, &id, "MarkedDestroyed").await;
    assert_eq!(marked["metadata"]["actor"], "token:admin");
    assert_eq!(marked["payload"]["reason"], reason);

    let again = stack.create(&sandbox_yaml("stubborn", "")).await;
    assert_eq!(
        again.status(),
        StatusCode::ACCEPTED,
        "the name was not freed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn force_unlock_of_a_stale_state_lock_retries_the_step_which_forces_it_open() {
    let fast_lock_failure = [
        ("PROVISIONER_TF_LOCK_TIMEOUT_SECS", "1"),
        ("PROVISIONER_TERRAFORM_RETRY_ATTEMPTS", "1"),
    ];
    let stack = Stack::start_with(StackOptions {
        executor_env: fast_lock_failure
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..StackOptions::default()
    })
    .await;
    let simulate = "    apply_seconds: 0.2\n    fail: infra\n    fail_times: 1\n";
    let id = stack.create_ok(&sandbox_yaml("locked", simulate)).await;
    stack
        .wait_for_failure(&id, "infra", "simulated infra failure", WITHIN)
        .await;

    // A run that crashed left the state locked (its process is gone; nothing on this side
    // knows that).
    let lock_id = "5e0c6c1a-7d1f-4b7e-9a51-0c2f8d3e4b6a";
    let dead_pid = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    let lock = json!({"ID": lock_id, "Operation": "OperationTypeApply", "Info": "",
        "Who": format!("{dead_pid}@crashed-host"), "Version": "1.9.8",
        "Created": "2026-01-01T00:00:00Z", "Path": "terraform.tfstate", "Pid": dead_pid});
    let lock_path = stack.workdir(&id).join(".terraform.tfstate.lock.info");
    std::fs::write(&lock_path, lock.to_string()).unwrap();

    assert_eq!(stack.retry(&id).await.status(), StatusCode::ACCEPTED);
    let failed = stack
        .wait_for(&id, WITHIN, |view| {
            view["status"] == "failed"
                && view["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("locked by another run"))
        })
        .await;
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("have an admin force-unlock lock {lock_id}")),
        "{message}"
    );
    assert!(lock_path.exists());

    let body = provisioner(
        &stack,
        &[
            "env",
            "force-unlock",
            &id,
            "--lock-id",
            lock_id,
            "--reason",
            "the run that held it crashed",
        ],
    );
    assert_eq!(body["status"], "provisioning");
    stack.wait_for_status(&id, "ready", WITHIN).await;
    assert_replay_equal(&stack);
    assert!(
        !lock_path.exists(),
        "the authorised lock was not forced open"
    );

    let authorized = last_of(&stack, &id, "ForceUnlockAuthorized").await;
    assert_eq!(authorized["metadata"]["actor"], "token:admin");
    assert_eq!(
        authorized["payload"]["reason"],
        "the run that held it crashed"
    );
    let logs = stack.get_text(&format!("/v1/environments/{id}/logs")).await;
    assert!(
        logs.contains(&format!(
            "forcing the state lock {lock_id} open, as authorised by token:admin"
        )),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mark_failed_of_a_running_apply_stops_its_tool() {
    let stack = Stack::start().await;
    let id = stack
        .create_ok(&sandbox_yaml("abandoned", "    apply_seconds: 30\n"))
        .await;
    stack.wait_for_run_start(&id).await;

    let reason = "its executor's node is gone for good";
    let (status, body) = operation(
        &stack,
        &id,
        "mark-failed",
        Some(json!({ "reason": reason })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "failed");
    stack.wait_for_failure(&id, "infra", reason, WITHIN).await;
    let marked = last_of(&stack, &id, "MarkedFailed").await;
    assert_eq!(marked["metadata"]["actor"], "token:admin");

    // The executor stopped the 30-second apply at once (it did not run to its end).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let runs = standins::overlap::read(&stack.workdir(&id)).unwrap();
        if let Some(apply) = runs
            .finished
            .iter()
            .find(|r| r.started.operation == "apply")
        {
            assert_eq!(
                apply.outcome,
                standins::overlap::Outcome::Interrupted,
                "{apply:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the apply of the operation marked failed was not stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
