//! The `aws` driver's way into the customer's account, with the real `aws-sdk-sts` client
//! against the stand-in STS (HTTP boundary) and a fake `terraform` that records what it saw.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use domain::config::{self, Format};
use domain::spec::{Provider, Step};
use domain::{EnvironmentId, OperationId};
use executors::customer_account::ExecutorIdentity;
use executors::driver::{StepContext, StepDriver, StepError};
use executors::logs::{LogReceiver, LogSink};
use executors::settings::ExecutorSettings;
use executors::terraform_helm::TerraformHelmDriver;
use system_tests::aws::{
    EXECUTOR_ACCESS_KEY_ID, EXECUTOR_SECRET_ACCESS_KEY, StandinSts, StsBehaviour,
};
use terraform_stack::customer_role::VARS_FILE;
use tokio_util::sync::CancellationToken;

const EXTERNAL_ID: &str = "canary-external-id-5b1e";
const ROLE: &str = "arn:aws:iam::210987654321:role/beta9-provisioner";

fn driver(sts_endpoint: &str, terraform: &Path) -> TerraformHelmDriver {
    let mut settings = ExecutorSettings::new("nats://unused", "t");
    settings.terraform_bin = terraform.to_owned();
    settings.aws.sts_endpoint = Some(sts_endpoint.to_owned());
    settings.aws.call_timeout = Duration::from_secs(5);
    settings.aws.identity = ExecutorIdentity::Static {
        access_key_id: EXECUTOR_ACCESS_KEY_ID.to_owned(),
        secret_access_key: EXECUTOR_SECRET_ACCESS_KEY.to_owned(),
    };
    TerraformHelmDriver::aws(&settings)
}

/// An `aws` infra step of a fresh environment, its role expecting [`EXTERNAL_ID`].
fn aws_context(workdir: &Path) -> (StepContext, LogReceiver) {
    let env = EnvironmentId::generate();
    let op = OperationId::generate();
    let (logs, rx) = LogSink::channel(env.clone(), op.clone());
    let spec = config::parse(
        &format!(
            "name: acme\ncloud:\n  provider: aws\n  region: us-east-1\n  account_id: \"210987654321\"\n  role_arn: {ROLE}\n  external_id: {EXTERNAL_ID}\n"
        ),
        Format::Yaml,
    )
    .unwrap();
    let mut job = support::job(&env, Step::Infra, None);
    job.infra_model.provider = Provider::Aws;
    job.customer_role = spec.cloud.customer_role();
    let ctx = StepContext {
        operation_id: op,
        job,
        workdir: workdir.to_owned(),
        cancel: CancellationToken::new(),
        logs,
        takeover: None,
    };
    (ctx, rx)
}

/// A `terraform` that records the variables file it finds (contents, mode), its arguments and
/// its environment, then fails.
fn recording_terraform(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("terraform");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nstat -c %a {VARS_FILE} > seen-mode 2>/dev/null\ncp {VARS_FILE} seen-vars.json 2>/dev/null\necho \"$@\" >> seen-args\nenv > seen-env\necho 'Error: recorded' >&2\nexit 1\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn log_lines(rx: &mut LogReceiver) -> String {
    let mut text = String::new();
    while let Ok(line) = rx.try_recv() {
        text.push_str(&line.line);
        text.push('\n');
    }
    text
}

#[tokio::test]
async fn a_refused_role_fails_the_step_before_any_terraform_runs() {
    let sts = StandinSts::expecting_external_id("another-id").await;
    let tools = tempfile::tempdir().unwrap();
    let workdir = tempfile::tempdir().unwrap();
    let (ctx, mut rx) = aws_context(workdir.path());
    let result = driver(&sts.endpoint(), &recording_terraform(tools.path()))
        .run(ctx)
        .await;
    let message = match result {
        Err(StepError::Failed { message }) => message,
        other => panic!("expected a failure, got {other:?}"),
    };
    assert!(
        message.starts_with("preflight: STS refused to assume"),
        "{message}"
    );
    assert!(message.contains("AccessDenied"), "{message}");
    assert!(!message.contains(EXTERNAL_ID), "{message}");
    assert!(
        !workdir.path().join("seen-args").exists(),
        "terraform ran after a refused preflight"
    );
    assert!(!workdir.path().join("main.tf.json").exists());
    assert!(!log_lines(&mut rx).contains(EXTERNAL_ID));
}

#[tokio::test]
async fn terraform_gets_the_role_in_an_owner_only_file_that_is_gone_after_the_step() {
    let sts = StandinSts::expecting_external_id(EXTERNAL_ID).await;
    let tools = tempfile::tempdir().unwrap();
    let workdir = tempfile::tempdir().unwrap();
    let (ctx, mut rx) = aws_context(workdir.path());
    let env = ctx.job.environment_id.clone();
    let result = driver(&sts.endpoint(), &recording_terraform(tools.path()))
        .run(ctx)
        .await;
    assert!(
        matches!(result, Err(StepError::Failed { .. })),
        "{result:?}"
    );

    let seen: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workdir.path().join("seen-vars.json"))
            .expect("terraform found the variables file"),
    )
    .unwrap();
    assert_eq!(seen["customer_role_arn"], ROLE);
    assert_eq!(seen["customer_external_id"], EXTERNAL_ID);
    assert_eq!(seen["customer_session_name"], format!("provisioner-{env}"));
    assert_eq!(seen["customer_session_duration"], "3600s");
    let mode = std::fs::read_to_string(workdir.path().join("seen-mode")).unwrap();
    assert_eq!(mode.trim(), "600");
    assert!(
        !workdir.path().join(VARS_FILE).exists(),
        "the variables file outlived the step"
    );
    let args = std::fs::read_to_string(workdir.path().join("seen-args")).unwrap();
    let child_env = std::fs::read_to_string(workdir.path().join("seen-env")).unwrap();
    for (what, text) in [("arguments", &args), ("environment", &child_env)] {
        assert!(
            !text.contains(EXTERNAL_ID),
            "external id in terraform's {what}"
        );
        assert!(!text.contains(ROLE), "role in terraform's {what}");
        assert!(
            !text.contains(EXECUTOR_SECRET_ACCESS_KEY),
            "our own key in terraform's {what}"
        );
    }
    let logs = log_lines(&mut rx);
    assert!(
        logs.contains("preflight: the customer role was assumed"),
        "{logs}"
    );
    assert!(
        !logs.contains(EXTERNAL_ID) && !logs.contains(ROLE),
        "{logs}"
    );
}

#[tokio::test]
async fn an_aws_bootstrap_trusts_the_ca_of_the_job_and_runs_no_terraform() {
    use domain::outputs::InfraOutput;
    let sts = StandinSts::expecting_external_id(EXTERNAL_ID).await;
    let tools = tempfile::tempdir().unwrap();
    let workdir = tempfile::tempdir().unwrap();
    let (mut ctx, _rx) = aws_context(workdir.path());
    ctx.job.step = Step::Bootstrap;
    ctx.job.infra_outputs = InfraOutput::ALL
        .iter()
        .map(|output| (output.name().to_owned(), format!("{output}-value")))
        .collect();
    ctx.job.infra_outputs.insert(
        InfraOutput::ClusterEndpoint.name().to_owned(),
        "https://0123ABCD.gr7.us-east-1.eks.amazonaws.com".to_owned(),
    );
    ctx.job.infra_outputs.insert(
        InfraOutput::ClusterCertificateAuthority.name().to_owned(),
        "Y2EtZnJvbS10aGUtam9i".to_owned(),
    );
    // The recording terraform fails any step it is run in: the CA comes from the job.
    let mut driver = driver(&sts.endpoint(), &recording_terraform(tools.path()));
    driver.helm = support::sandbox_tools().helm();
    let result = driver.run(ctx).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(
        !workdir.path().join("seen-args").exists(),
        "terraform ran in a bootstrap"
    );
    let kubeconfig: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workdir.path().join(bootstrap::kubeconfig::KUBECONFIG_FILE))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"],
        "Y2EtZnJvbS10aGUtam9i"
    );
    assert_eq!(kubeconfig["users"][0]["user"]["exec"]["command"], "aws");
}

/// A `terraform` that succeeds at everything (and prints no outputs).
fn succeeding_terraform(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("terraform");
    std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn a_successful_aws_destroy_removes_the_workdir() {
    let sts = StandinSts::start(StsBehaviour::default()).await;
    let tools = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let workdir = data.path().join("env");
    std::fs::create_dir(&workdir).unwrap();
    std::fs::write(workdir.join("leftover"), "x").unwrap();
    let (mut ctx, _rx) = aws_context(&workdir);
    ctx.job.step = Step::Destroy;
    let result = driver(&sts.endpoint(), &succeeding_terraform(tools.path()))
        .run(ctx)
        .await;
    assert!(result.is_ok(), "{result:?}");
    assert!(!workdir.exists(), "the workdir outlived the destroy");
}

#[tokio::test]
async fn a_failed_aws_destroy_keeps_the_workdir() {
    let sts = StandinSts::start(StsBehaviour::default()).await;
    let tools = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let workdir = data.path().join("env");
    std::fs::create_dir(&workdir).unwrap();
    let (mut ctx, _rx) = aws_context(&workdir);
    ctx.job.step = Step::Destroy;
    let result = driver(&sts.endpoint(), &recording_terraform(tools.path()))
        .run(ctx)
        .await;
    assert!(
        matches!(result, Err(StepError::Failed { .. })),
        "{result:?}"
    );
    assert!(workdir.join("main.tf.json").is_file());
    assert!(!workdir.join(VARS_FILE).exists());
}
