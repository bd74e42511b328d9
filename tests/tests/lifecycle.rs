//! The main job, end to end: create → live events → ready with outputs → delete → history.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use system_tests::{Stack, sandbox_yaml};

const READY_WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn an_environment_goes_from_request_to_ready_to_destroyed_with_a_complete_history() {
    let stack = Stack::start().await;
    let response = stack.create(&sandbox_yaml("production", "")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(response.headers().contains_key("x-request-id"));
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("env_"));
    assert_eq!(created["status"], "queued");
    assert_eq!(created["name"], "production");
    assert_eq!(location, format!("/v1/environments/{id}"));

    let ready = stack.wait_for_status(&id, "ready", READY_WITHIN).await;
    let outputs = &ready["outputs"];
    assert!(outputs["cluster_name"].is_string(), "outputs: {outputs}");
    assert!(
        outputs["endpoint"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    assert!(ready["error"].is_null());
    assert!(ready["operation"].is_null());
    assert_eq!(ready["spec"]["name"], "production");
    assert_eq!(
        conditions(&ready),
        [
            ("InfraReady", "True"),
            ("ClusterReachable", "True"),
            ("BaselineInstalled", "True"),
            ("AppReady", "True"),
        ],
        "{ready}"
    );

    let response = stack.delete(&id).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "destroy_queued");
    let destroyed = stack.wait_for_status(&id, "destroyed", READY_WITHIN).await;
    assert_eq!(destroyed["outputs"], serde_json::json!({}));
    assert!(
        conditions(&destroyed)
            .iter()
            .all(|(_, status)| *status == "False"),
        "{destroyed}"
    );
    the_destroy_uninstalled_the_releases_before_terraform_destroyed(&stack.workdir(&id));

    let history = stack.history(&id).await;
    // The bootstrap's observations on the way (the cluster reachable, the baseline installed)
    // are recorded while it runs; they are checked below, apart from the steps.
    let types: Vec<&str> = history
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .filter(|t| *t != "BootstrapProgressed")
        .collect();
    assert_eq!(
        types,
        [
            "EnvironmentRequested",
            "InfraApplyStarted",
            "InfraApplied",
            "BootstrapStarted",
            "BootstrapCompleted",
            "DestroyRequested",
            "DestroyStarted",
            "InfraDestroyed",
        ]
    );
    for (index, event) in history.iter().enumerate() {
        assert_eq!(event["sequence"], index as u64 + 1);
        assert_eq!(event["version"], "1");
        let metadata = &event["metadata"];
        for field in [
            "actor",
            "request_id",
            "correlation_id",
            "causation_id",
            "recorded_at",
        ] {
            assert!(
                metadata[field].as_str().is_some_and(|v| !v.is_empty()),
                "event {} lacks metadata.{field}: {metadata}",
                event["type"]
            );
        }
    }
    // Who did what: the user requested and destroyed, the system ran the steps.
    assert_eq!(history[0]["metadata"]["actor"], "token:admin");
    let destroy_requested = history
        .iter()
        .find(|e| e["type"] == "DestroyRequested")
        .unwrap();
    assert_eq!(destroy_requested["metadata"]["actor"], "token:admin");
    for progressed in history
        .iter()
        .filter(|e| e["type"] == "BootstrapProgressed")
    {
        assert_eq!(progressed["metadata"]["actor"], "system:executor");
    }
    assert_eq!(history[1]["metadata"]["actor"], "system:process-manager");
    assert_eq!(history[2]["metadata"]["actor"], "system:executor");
    // A step's events are correlated by their operation.
    let infra_op = history[1]["payload"]["operation_id"].as_str().unwrap();
    assert_eq!(history[1]["metadata"]["correlation_id"], infra_op);
    assert_eq!(history[2]["metadata"]["correlation_id"], infra_op);
    assert_eq!(history[2]["payload"]["operation_id"], infra_op);
    // The first step was caused by the request's event.
    assert_eq!(history[1]["metadata"]["causation_id"], format!("{id}:1"));

    // Everything committed is on the stream, exactly once, in order.
    let published = stack.stream_events(&id).await;
    let sequences: Vec<u64> = published.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=history.len() as u64).collect::<Vec<u64>>());
}

/// Each condition's type and status, in order.
fn conditions(view: &Value) -> Vec<(&str, &str)> {
    view["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect()
}

/// What the sandbox's stand-ins recorded in `workdir`: the bootstrap gave helm owner-only
/// values files, gone after the step, with a real database password; the destroy uninstalled
/// every release, Beta9 first, before `terraform destroy` ran.
fn the_destroy_uninstalled_the_releases_before_terraform_destroyed(workdir: &Path) {
    use standins::helm_invocations::{self, sha256};
    let invocations = helm_invocations::read(workdir).unwrap();
    let installs: Vec<_> = invocations
        .iter()
        .filter(|run| run.args[0] == "upgrade")
        .collect();
    assert_eq!(installs.len(), 5, "{invocations:?}");
    for install in &installs {
        let [values] = install.values_files.as_slice() else {
            panic!("one values file each: {install:?}")
        };
        assert_eq!(values.mode.as_deref(), Some("0600"), "{values:?}");
        assert!(!workdir.join(&values.path).exists(), "{} left", values.path);
    }
    let beta9 = installs.iter().find(|run| run.args[2] == "beta9").unwrap();
    let password = &beta9.values_files[0].values.as_ref().unwrap()["config"]["database"]["postgres"]
        ["password"];
    let password = password.as_str().unwrap();
    assert!(password.starts_with("sha256:"), "{password}");
    assert_ne!(
        password,
        sha256(""),
        "an empty database password reached helm"
    );

    let uninstalled: Vec<&str> = invocations
        .iter()
        .filter(|run| run.args[0] == "uninstall")
        .map(|run| run.args[1].as_str())
        .collect();
    assert_eq!(
        uninstalled,
        [
            "beta9",
            "cluster-autoscaler",
            "metrics-server",
            "cert-manager",
            "ingress-nginx"
        ]
    );
    let runs = standins::overlap::read(workdir).unwrap();
    let destroy_order: Vec<&str> = runs
        .started
        .iter()
        .map(|run| run.operation.as_str())
        .filter(|op| op.starts_with("helm-uninstall:") || *op == "destroy")
        .collect();
    assert_eq!(
        destroy_order,
        [
            "helm-uninstall:beta9",
            "helm-uninstall:cluster-autoscaler",
            "helm-uninstall:metrics-server",
            "helm-uninstall:cert-manager",
            "helm-uninstall:ingress-nginx",
            "destroy"
        ]
    );
    assert_eq!(
        standins::helm::Store::load(workdir).unwrap().releases,
        Vec::new()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_list_filters_by_status_and_name_and_pages_with_a_cursor() {
    let stack = Stack::start().await;
    let mut ids = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        ids.push(stack.create_ok(&sandbox_yaml(name, "")).await);
    }
    for id in &ids {
        stack.wait_for_status(id, "ready", READY_WITHIN).await;
    }
    let page = |query: &'static str| {
        let request = stack.request(Method::GET, &format!("/v1/environments{query}"));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.unwrap()
        }
    };
    let by_name = page("?name=beta").await;
    assert_eq!(by_name["items"].as_array().unwrap().len(), 1);
    assert_eq!(by_name["items"][0]["id"], ids[1].as_str());
    let ready = page("?status=ready").await;
    assert_eq!(ready["items"].as_array().unwrap().len(), 3);
    assert_eq!(page("?status=failed").await["items"], serde_json::json!([]));

    let first = page("?limit=2").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next cursor")
        .to_owned();
    let response = stack
        .request(Method::GET, "/v1/environments")
        .query(&[("limit", "2"), ("cursor", cursor.as_str())])
        .send()
        .await
        .unwrap();
    let second: Value = response.json().await.unwrap();
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert_eq!(second["items"][0]["id"], ids[2].as_str());
    assert!(second["next_cursor"].is_null());

    let bad = stack
        .request(Method::GET, "/v1/environments?status=sleeping")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_rebuilds_read_models_equal_to_the_live_ones() {
    let stack = Stack::start().await;
    let id = stack.create_ok(&sandbox_yaml("replayed", "")).await;
    stack.wait_for_status(&id, "ready", READY_WITHIN).await;
    let run_replay = || {
        std::process::Command::new(system_tests::binary_dir().join("provisioner"))
            .arg("replay")
            .env("DATABASE_URL", stack.database_url())
            .output()
            .expect("run provisioner replay")
    };
    let output = run_replay();
    assert!(
        output.status.success(),
        "replay reported a difference: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    // A read model that drifted from the history is reported, with a non-zero exit code.
    sqlx::query("UPDATE environments_view SET status = 'failed' WHERE id = $1")
        .bind(&id)
        .execute(&stack.pool)
        .await
        .unwrap();
    let output = run_replay();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains(&id));
}
