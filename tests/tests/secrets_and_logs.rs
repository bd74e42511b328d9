//! Executor output is readable per operation, and sensitive Terraform outputs appear nowhere a
//! user or operator can read: not in events, the read model, the logs or API responses.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;
use system_tests::{Stack, sandbox_yaml};

#[tokio::test(flavor = "multi_thread")]
async fn logs_show_each_operations_output_and_no_sensitive_value_leaks_anywhere() {
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

    let all_logs = stack
        .request(Method::GET, &format!("/v1/environments/{id}/logs"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        all_logs.contains("helm") || all_logs.contains("Release"),
        "bootstrap logs too"
    );

    // The sandbox's terraform state holds the values of outputs marked sensitive.
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(stack.workdir(&id).join("terraform.tfstate")).unwrap(),
    )
    .unwrap();
    let secrets: Vec<String> = state["outputs"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, output)| output["sensitive"] == true)
        .map(|(_, output)| output["value"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !secrets.is_empty(),
        "the rendered stack has a sensitive output"
    );
    let events_text = serde_json::to_string(&history).unwrap();
    let view_text = ready.to_string();
    let stream_text = serde_json::to_string(&stack.stream_events(&id).await).unwrap();
    for secret in &secrets {
        assert!(!events_text.contains(secret), "a secret is in the history");
        assert!(!view_text.contains(secret), "a secret is in the read model");
        assert!(!all_logs.contains(secret), "a secret is in the logs");
        assert!(
            !stream_text.contains(secret),
            "a secret is on the events stream"
        );
    }
}
