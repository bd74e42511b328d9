//! The `aws` provider end to end, through the real `serve` and `executor` processes: the
//! executor's real `aws-sdk-sts` client against moto's STS (and, for a refusal, the stand-in
//! STS), Terraform's command line played by the terraform stand-in behind a `terraform` on the
//! executor's `PROVISIONER_TERRAFORM_BIN` (which cannot be installed here), as a deployment would
//! configure a real one. The cluster the outputs name is the stand-in Kubernetes API, which the
//! bootstrap's readiness checks reach with the real `kube` client.

use std::time::Duration;

use bootstrap::readiness::{
    GATEWAY_DEPLOYMENT, GATEWAY_NAMESPACE, INGRESS_NAMESPACE, INGRESS_SERVICE,
};
use system_tests::aws::{Moto, StandinSts};
use system_tests::aws_stack::{
    DB_PASSWORD, EXTERNAL_ID, aws_stack, aws_yaml, customer_secrets, rds_password_secret,
};
use system_tests::count;
use system_tests::kube_api::{KubeBehaviour, StandinKubeApi};

const WITHIN: Duration = Duration::from_secs(120);
/// The hostname AWS gives the ingress controller's load balancer.
const LOAD_BALANCER: &str =
    "k8s-ingressn-ingressn-0a1b2c3d4e-0123456789abcdef.elb.us-east-1.amazonaws.com";

#[tokio::test(flavor = "multi_thread")]
async fn an_aws_environment_goes_from_create_to_destroyed_through_moto_sts() {
    let moto = Moto::start().await;
    // The small profile's CPU pool has a minimum of 1 node.
    let cluster = StandinKubeApi::start(
        KubeBehaviour::cpu_nodes_ready_after(2, Duration::from_millis(500))
            .with_deployment(
                GATEWAY_NAMESPACE,
                GATEWAY_DEPLOYMENT,
                Some(Duration::from_secs(1)),
            )
            .with_load_balancer(
                INGRESS_NAMESPACE,
                INGRESS_SERVICE,
                LOAD_BALANCER,
                Some(Duration::from_millis(500)),
            ),
    )
    .await;
    let secrets = customer_secrets(moto.endpoint()).await;
    let database_secret_arn = rds_password_secret(&secrets).await;
    let tools_dir = tempfile::tempdir().unwrap();
    let stack = aws_stack(
        moto.endpoint(),
        tools_dir.path(),
        &cluster.endpoint(),
        &database_secret_arn,
    )
    .await;

    let id = stack.create_ok(&aws_yaml("acme")).await;
    let ready = stack.wait_for_status(&id, "ready", WITHIN).await;
    assert_eq!(ready["provider"], "aws", "{ready}");
    for output in [
        "cluster_name",
        "cluster_certificate_authority",
        "cluster_oidc_issuer",
    ] {
        assert!(ready["outputs"][output].is_string(), "{output} in {ready}");
    }
    // The endpoint: the configured domain, served through the ingress load balancer.
    assert_eq!(ready["outputs"]["load_balancer_hostname"], LOAD_BALANCER);
    assert!(
        ready["outputs"]["endpoint"]
            .as_str()
            .is_some_and(|e| e.starts_with("https://")),
        "{ready}"
    );
    // Every condition true, with the reasons the executor gave on the way.
    let conditions: Vec<(&str, &str, &str)> = ready["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap(),
                c["status"].as_str().unwrap(),
                c["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        conditions,
        [
            ("InfraReady", "True", "Applied"),
            ("ClusterReachable", "True", "NodesReady"),
            ("BaselineInstalled", "True", "ReleasesInstalled"),
            ("AppReady", "True", "Available"),
        ],
        "{ready}"
    );
    let workdir = stack.workdir(&id);
    assert!(workdir.join("main.tf.json").is_file());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(workdir.join("main.tf.json")).unwrap())
            .unwrap();
    assert!(
        !config.to_string().contains(EXTERNAL_ID),
        "the external id was rendered into main.tf.json"
    );
    assert_eq!(
        config["terraform"]["backend"]["s3"]["key"],
        format!("environments/{id}/terraform.tfstate")
    );
    assert!(
        !workdir.join("customer.auto.tfvars.json").exists(),
        "the customer role's variables outlived their step"
    );
    assert!(
        !workdir.join("kubeconfig").exists(),
        "helm's token-bearing kubeconfig outlived the bootstrap"
    );
    let seen = cluster.authorizations();
    assert!(
        !seen.is_empty()
            && seen.iter().all(|a| a
                .as_deref()
                .is_some_and(|a| a.starts_with("Bearer k8s-aws-v1."))),
        "the cluster saw no EKS token: {seen:?}"
    );
    let runs = standins::overlap::read(&workdir).unwrap();
    assert!(
        runs.started.iter().any(|run| run.operation == "apply"),
        "terraform applied: {runs:?}"
    );

    // Every step went through the preflight against moto's STS first; nothing in the logs
    // names the external id.
    let logs = stack.get_text(&format!("/v1/environments/{id}/logs")).await;
    assert!(
        logs.matches("preflight: the customer role was assumed")
            .count()
            >= 2,
        "infra and bootstrap each ran the preflight: {logs}"
    );
    assert!(logs.contains("plan -input=false"), "{logs}");
    for ready in [
        "the cluster's API server: ready",
        "the cluster's nodes (1 cpu Ready): ready",
        "the Deployment beta9/beta9-gateway: ready",
    ] {
        assert!(logs.contains(ready), "{ready} in {logs}");
    }
    assert!(
        logs.contains("-backend-config=bucket=acme-provisioner-state"),
        "{logs}"
    );
    assert!(
        !logs.contains(EXTERNAL_ID),
        "the external id reached the logs"
    );

    // Beta9's secrets were read from the customer's Secrets Manager: the database password
    // from RDS's secret, the encryption key kept once per environment. Neither value shows
    // anywhere the API serves.
    assert!(
        logs.contains("read from the customer's Secrets Manager"),
        "{logs}"
    );
    let key_name = executors::beta9_secrets::encryption_key_name(&id);
    let kept = secrets
        .describe_secret()
        .secret_id(&key_name)
        .send()
        .await
        .expect("the encryption key is kept in the customer's account");
    assert!(kept.deleted_date().is_none());
    let history = stack
        .get_text(&format!("/v1/environments/{id}/history"))
        .await;
    let (_, view) = stack.get(&id).await;
    for (what, text) in [
        ("logs", &logs),
        ("history", &history),
        ("read model", &view.to_string()),
    ] {
        assert!(!text.contains(DB_PASSWORD), "the password in the {what}");
        assert!(!text.contains("sk_"), "an encryption key in the {what}");
    }

    assert_eq!(stack.delete(&id).await.status(), 202);
    stack.wait_for_status(&id, "destroyed", WITHIN).await;
    assert!(!workdir.exists(), "the workdir outlived InfraDestroyed");
    // The destroy uninstalled the releases through the cluster, Beta9 first, then destroyed.
    let logs = stack.get_text(&format!("/v1/environments/{id}/logs")).await;
    let at = |line: &str| {
        logs.find(line)
            .unwrap_or_else(|| panic!("{line:?} not in {logs}"))
    };
    assert!(
        at("uninstalling release beta9 from namespace beta9")
            < at("uninstalling release ingress-nginx from namespace ingress-nginx")
            && at("uninstalling release ingress-nginx from namespace ingress-nginx")
                < at("destroy -auto-approve"),
        "{logs}"
    );
    let gone = secrets
        .describe_secret()
        .secret_id(&key_name)
        .send()
        .await
        .unwrap();
    assert!(
        gone.deleted_date().is_some(),
        "destroy deletes the encryption key it made"
    );
    let types = stack.history_types(&id).await;
    assert_eq!(count(&types, "InfraApplied"), 1, "{types:?}");
    assert_eq!(count(&types, "InfraDestroyed"), 1, "{types:?}");
    stack.assert_committed_events_published_once().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_that_refuses_the_external_id_fails_the_step_before_terraform_runs() {
    let sts = StandinSts::expecting_external_id("the-one-the-role-trusts").await;
    let tools_dir = tempfile::tempdir().unwrap();
    // Never reached: the step fails before terraform runs.
    let stack = aws_stack(
        &sts.endpoint(),
        tools_dir.path(),
        "http://127.0.0.1:9",
        "arn:aws:secretsmanager:us-east-1:210987654321:secret:unused",
    )
    .await;

    let id = stack.create_ok(&aws_yaml("refused")).await;
    let failed = stack
        .wait_for_failure(&id, "infra", "preflight: STS refused to assume", WITHIN)
        .await;
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(message.contains("AccessDenied"), "{message}");
    assert!(!message.contains(EXTERNAL_ID), "{message}");
    let runs = standins::overlap::read(&stack.workdir(&id)).unwrap();
    assert!(runs.started.is_empty(), "terraform ran: {runs:?}");
    assert!(
        !stack.workdir(&id).join("main.tf.json").exists(),
        "nothing was written before the preflight"
    );
    let calls = sts.calls();
    assert!(
        calls.iter().all(|call| call.action == "AssumeRole"),
        "{calls:?}"
    );
    assert!(calls.iter().all(|call| call.sent_external_id));
}
