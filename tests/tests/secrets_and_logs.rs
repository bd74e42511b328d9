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
