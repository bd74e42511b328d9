//! The client verbs of the `provisioner` binary against a running deployment.

use serde_json::Value;
use std::process::Output;
use system_tests::{ApiClient, App, binary_dir, sandbox_yaml};

fn provisioner(stack: &ApiClient, args: &[&str]) -> Output {
    std::process::Command::new(binary_dir().join("provisioner"))
        .args(args)
        .env("PROVISIONER_API_URL", &stack.base_url)
        .env("PROVISIONER_TOKEN", stack.token())
        .output()
        .expect("run provisioner")
}

fn stdout_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json on stdout")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_creates_watches_lists_shows_logs_and_destroys_an_environment() {
    let stack = system_tests::Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env.yaml");
    std::fs::write(&file, sandbox_yaml("from-cli", "")).unwrap();

    let created = stdout_json(&provisioner(
        &stack,
        &["env", "create", "-f", file.to_str().unwrap()],
    ));
    let id = created["id"].as_str().unwrap().to_owned();

    // watch follows the live stream and exits 0 once the environment is ready.
    let watch = provisioner(&stack, &["env", "watch", &id]);
    assert!(watch.status.success());
    let watched = String::from_utf8_lossy(&watch.stdout);
    assert!(watched.contains("BootstrapCompleted"), "{watched}");
    assert!(watched.contains("-> ready"), "{watched}");

    let list = stdout_json(&provisioner(&stack, &["env", "list", "--name", "from-cli"]));
    assert_eq!(list["items"][0]["id"], id.as_str());

    // The outputs of a ready environment: the reported ones, never a sensitive one.
    let outputs = stdout_json(&provisioner(&stack, &["env", "outputs", &id]));
    assert_eq!(outputs["status"], "ready");
    for name in domain::outputs::InfraOutput::ALL {
        let shown = outputs["outputs"].get(name.name()).is_some();
        assert_eq!(shown, !name.is_sensitive(), "{name}: {outputs}");
    }

    let logs = provisioner(&stack, &["env", "logs", &id]);
    assert!(logs.status.success());
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains("Apply complete!"), "{logs}");

    let deleted = stdout_json(&provisioner(&stack, &["env", "delete", &id]));
    assert_eq!(deleted["status"], "destroy_queued");
    let watch = provisioner(&stack, &["env", "watch", &id]);
    assert!(String::from_utf8_lossy(&watch.stdout).contains("-> destroyed"));

    let history = stdout_json(&provisioner(&stack, &["env", "history", &id]));
    assert_eq!(
        history.as_array().unwrap().last().unwrap()["type"],
        "InfraDestroyed"
    );

    // A bad file is refused with the API's field errors and a non-zero exit.
    std::fs::write(&file, "name: Bad Name\ncloud: {provider: sandbox}\n").unwrap();
    let refused = provisioner(&stack, &["env", "create", "-f", file.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("validation_failed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_prints_a_readable_preview_or_the_json_and_creates_nothing() {
    let app = App::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env.yaml");
    std::fs::write(
        &file,
        "name: preview\ncloud:\n  provider: sandbox\ncluster:\n  profile: large\n\
         beta9:\n  workers: {gpu_enabled: true}\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();

    let output = provisioner(&app, &["plan", "-f", file]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "Plan for preview (sandbox, sandbox-local); can be created here: yes",
        "gpu nodes g5.12xlarge × 2 (0..8)",
        "aws_eks_node_group",
        "EKS control plane",
        "Monthly cost estimate (USD)",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }

    let plan = stdout_json(&provisioner(&app, &["plan", "-f", file, "--json"]));
    let total = plan["cost"]["monthly_total"].as_str().unwrap();
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("total") && l.ends_with(total)),
        "the summary's total is the API's {total}:\n{text}"
    );
    assert_eq!(plan["resources"]["by_type"]["aws_eks_node_group"], 2);

    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(events, 0, "a plan creates nothing");

    // A bad file: the API's field errors and a non-zero exit, as for create.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "name: Bad Name\ncloud: {provider: sandbox}\n").unwrap();
    let refused = provisioner(&app, &["plan", "-f", bad.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("validation_failed"));
}

/// The binary alone, with a clean environment plus `env`.
fn provisioner_alone(args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(binary_dir().join("provisioner"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run provisioner")
}

#[test]
fn serve_help_lists_the_variables_and_a_bad_value_names_its_variable() {
    let help = provisioner_alone(&["serve", "--help"], &[]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for variable in [
        "NATS_URL",
        "PROVISIONER_NATS_PREFIX",
        "PROVISIONER_LISTEN",
        "PROVISIONER_PROVIDERS",
        "PROVISIONER_HTTP_MAX_CONNECTIONS",
        "PROVISIONER_INFRA_TIMEOUT_SECS",
        "DATABASE_URL",
        "PROVISIONER_ADMIN_TOKEN",
    ] {
        assert!(help.contains(variable), "{variable} missing from:\n{help}");
    }

    let refused = provisioner_alone(&["serve"], &[("PROVISIONER_HTTP_MAX_CONNECTIONS", "0")]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("PROVISIONER_HTTP_MAX_CONNECTIONS=\"0\""),
        "{stderr}"
    );

    // A secret is never a flag: argv is visible to every user of the machine.
    let refused = provisioner_alone(&["env", "--token", "pvt_x", "list"], &[]);
    assert_eq!(refused.status.code(), Some(2));
    let missing = provisioner_alone(&["env", "list"], &[]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no token"));
}

/// `provisioner executor` configured for aws with `terraform` as its Terraform: its stderr
/// once it refused to start (the check comes before any connection: NATS is unreachable).
fn executor_refusal(data_dir: &std::path::Path, terraform: &std::path::Path) -> String {
    let refused = provisioner_alone(
        &["executor"],
        &[
            ("PROVISIONER_TF_STATE_BUCKET", "acme-provisioner-state"),
            ("PROVISIONER_TERRAFORM_BIN", terraform.to_str().unwrap()),
            ("PROVISIONER_DATA_DIR", data_dir.to_str().unwrap()),
            ("NATS_URL", "nats://127.0.0.1:1"),
            ("PROVISIONER_EXECUTOR_LISTEN", "127.0.0.1:0"),
        ],
    );
    assert!(!refused.status.success());
    String::from_utf8_lossy(&refused.stderr).into_owned()
}

#[test]
fn an_executor_configured_for_aws_refuses_to_start_without_a_new_enough_terraform() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = executor_refusal(dir.path(), &dir.path().join("no-terraform-here"));
    assert!(
        stderr.contains("Terraform at") && stderr.contains("no-terraform-here"),
        "{stderr}"
    );
    assert!(stderr.contains("PROVISIONER_TERRAFORM_BIN"), "{stderr}");

    // A release older than the rendering needs (S3-native locking).
    let old = dir.path().join("terraform");
    std::fs::write(
        &old,
        "#!/bin/sh\necho '{\"terraform_version\":\"1.9.8\"}'\n",
    )
    .unwrap();
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let stderr = executor_refusal(dir.path(), &old);
    assert!(
        stderr.contains("1.9.8") && stderr.contains("older than 1.10.0"),
        "{stderr}"
    );
}
