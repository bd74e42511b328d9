//! Executor output is readable per operation, and what Terraform outputs reaches the read model
//! as it is: the stack declares nothing secret.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;
use system_tests::{Stack, sandbox_yaml};

#[tokio::test(flavor = "multi_thread")]
async fn logs_show_each_operations_output_and_every_terraform_output_is_reported() {
    let stack = Stack::start().await;
    let id = stack.create_ok(&sandbox_yaml("secretive", "")).await;
    let ready = stack
        .wait_for_status(&id, "ready", Duration::from_secs(60))
        .await;

    let history = stack.history(&id).await;
    let infra_op = history[1]["payload"]["operation_id"].as_str().unwrap();
    let response = stack
        .request(
            Method::GET,
            &format!("/v1/environments/{id}/logs?operation={infra_op}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let logs: Value = response.json().await.unwrap();
    let lines = logs["lines"].as_array().unwrap();
    assert!(
        lines.iter().any(|l| l["line"]
            .as_str()
            .unwrap_or_default()
            .contains("Apply complete!")),
        "terraform's output is in the infra operation's logs: {logs}"
    );
    assert!(lines.iter().all(|l| l["operation_id"] == infra_op));

    let all_logs = stack.get_text(&format!("/v1/environments/{id}/logs")).await;
    assert!(
        all_logs.contains("helm") || all_logs.contains("Release"),
        "bootstrap logs too"
    );

    // The state holds every output's value. None is secret (`domain::outputs` marks none
    // sensitive: the cluster's CA and OIDC issuer are public, the database password is only a
    // Secrets Manager reference), so each is reported as it is; the executor's dropping of
    // outputs marked sensitive is unit-tested in `executors::terraform_helm`.
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(stack.workdir(&id).join("terraform.tfstate")).unwrap(),
    )
    .unwrap();
    let outputs = state["outputs"].as_object().unwrap();
    assert!(
        outputs.contains_key("cluster_certificate_authority"),
        "{state}"
    );
    for (name, output) in outputs {
        assert_ne!(output["sensitive"], true, "{name} is marked sensitive");
        assert_eq!(ready["outputs"][name], output["value"], "{name}");
    }
}

/// With `PROVISIONER_LOG_FORMAT=json`, every line an executor logs for a job carries the job's
/// environment, operation and the id of the API request that caused it, and the API's lines of
/// that request carry the same request id: one id finds the whole story across processes.
#[tokio::test(flavor = "multi_thread")]
async fn json_log_lines_carry_the_request_environment_and_operation_ids() {
    let json_logs = vec![("PROVISIONER_LOG_FORMAT".to_owned(), "json".to_owned())];
    let stack = Stack::start_with(system_tests::StackOptions {
        log_filter: Some("info".to_owned()),
        api_env: json_logs.clone(),
        executor_env: json_logs,
        ..Default::default()
    })
    .await;
    let request_id = "req-log-context-1";
    let response = stack
        .request(Method::POST, "/v1/environments")
        .header("content-type", "application/yaml")
        .header("x-request-id", request_id)
        .body(sandbox_yaml("traced", ""))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    stack
        .wait_for_status(&id, "ready", Duration::from_secs(60))
        .await;
    let operations: Vec<String> = stack
        .history(&id)
        .await
        .iter()
        .filter(|event| event["type"].as_str().unwrap().ends_with("Started"))
        .map(|event| {
            event["payload"]["operation_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(operations.len(), 2, "infra and bootstrap started");

    let logs = stack.process_logs();
    let lines = |name: &str| -> Vec<Value> {
        let (_, text) = logs.iter().find(|(file, _)| file.contains(name)).unwrap();
        text.lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect()
    };
    let job_lines: Vec<Value> = lines("executor")
        .into_iter()
        .filter(|line| {
            line["spans"]
                .as_array()
                .is_some_and(|spans| spans.iter().any(|s| s["name"] == "executor_job"))
        })
        .collect();
    assert!(!job_lines.is_empty(), "the executor logged its jobs");
    let mut seen_operations = std::collections::BTreeSet::new();
    for line in &job_lines {
        let span = &line["span"];
        assert_eq!(span["request_id"], request_id, "{line}");
        assert_eq!(span["env_id"], id.as_str(), "{line}");
        seen_operations.insert(span["op_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        seen_operations,
        operations.into_iter().collect(),
        "each job's lines name its operation"
    );
    let in_request = |line: &Value| {
        line["spans"].as_array().is_some_and(|spans| {
            spans.iter().any(|span| {
                span["name"] == "http"
                    && span["request_id"] == request_id
                    && span["route"] == "/v1/environments"
            })
        })
    };
    assert!(
        lines("serve")
            .iter()
            .any(|line| in_request(line) && line["span"]["env_id"] == id.as_str()),
        "the API's lines of the request carry its id, matched route and environment"
    );
}
