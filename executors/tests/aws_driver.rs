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
    // The stand-in answers Secrets Manager on the same port.
    settings.aws.secrets_manager_endpoint = Some(sts_endpoint.to_owned());
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
        progress: executors::progress::ProgressSink::channel().0,
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

/// A `helm` that keeps a copy of the kubeconfig it is handed (`--kubeconfig`), with the file's
/// mode, per run, in its working directory; it knows of no release (`status` fails as helm's
/// does for a missing one).
fn recording_helm(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("helm");
    std::fs::write(
        &path,
        "#!/bin/sh\ncommand=$1\nn=$(ls seen-kubeconfig-* 2>/dev/null | wc -l)\nwhile [ $# -gt 0 ]; do\n  if [ \"$1\" = --kubeconfig ]; then cp \"$2\" seen-kubeconfig-$n; stat -c %a \"$2\" > seen-mode-$n; fi\n  shift\ndone\n\
         if [ \"$command\" = status ]; then echo 'Error: release: not found' >&2; exit 1; fi\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The database password RDS keeps for the bootstrap tests' instance.
const DB_PASSWORD: &str = "canary-db-password-41c0";

/// Gives `sts`'s Secrets Manager the RDS secret a bootstrap context's outputs name.
fn with_database_secret(sts: &StandinSts) {
    sts.put_secret(
        "database_password_secret_arn-value",
        &format!(r#"{{"username":"beta9","password":"{DB_PASSWORD}"}}"#),
    );
}

/// An `aws` bootstrap context whose outputs point at `cluster` (the stand-in API).
fn bootstrap_context(workdir: &Path, cluster: &str) -> (StepContext, LogReceiver) {
    use domain::outputs::InfraOutput;
    let (mut ctx, rx) = aws_context(workdir);
    ctx.job.step = Step::Bootstrap;
    ctx.job.infra_outputs = InfraOutput::ALL
        .iter()
        .map(|output| (output.name().to_owned(), format!("{output}-value")))
        .collect();
    ctx.job.infra_outputs.insert(
        InfraOutput::ClusterEndpoint.name().to_owned(),
        cluster.to_owned(),
    );
    ctx.job.infra_outputs.insert(
        InfraOutput::ClusterCertificateAuthority.name().to_owned(),
        "Y2EtZnJvbS10aGUtam9i".to_owned(),
    );
    (ctx, rx)
}

fn quick_readiness(driver: &mut TerraformHelmDriver) {
    driver.readiness = bootstrap::readiness::ReadinessTimeouts {
        api: Duration::from_secs(5),
        nodes: Duration::from_secs(1),
        gateway: Duration::from_secs(1),
        poll: Duration::from_millis(50),
    };
}

#[tokio::test]
async fn an_aws_bootstrap_waits_for_the_cluster_gives_helm_a_fresh_token_and_leaves_none() {
    use bootstrap::readiness::{
        GATEWAY_DEPLOYMENT, GATEWAY_NAMESPACE, INGRESS_NAMESPACE, INGRESS_SERVICE,
    };
    use domain::conditions::{ConditionStatus, ConditionType};
    use executors::progress::ProgressSink;
    use system_tests::kube_api::{KubeBehaviour, StandinKubeApi};
    const LOAD_BALANCER: &str = "a1b2c3-123456789.us-east-1.elb.amazonaws.com";
    let sts = StandinSts::expecting_external_id(EXTERNAL_ID).await;
    with_database_secret(&sts);
    let tools = tempfile::tempdir().unwrap();
    let workdir = tempfile::tempdir().unwrap();
    let min_nodes = usize::from(support::sandbox_model().cluster.cpu_nodes.min_nodes);
    let api = StandinKubeApi::start(
        KubeBehaviour::cpu_nodes_ready_after(min_nodes, Duration::from_millis(200))
            .with_deployment(GATEWAY_NAMESPACE, GATEWAY_DEPLOYMENT, Some(Duration::ZERO))
            .with_load_balancer(
                INGRESS_NAMESPACE,
                INGRESS_SERVICE,
                LOAD_BALANCER,
                Some(Duration::from_millis(100)),
            ),
    )
    .await;
    let (mut ctx, mut rx) = bootstrap_context(workdir.path(), &api.endpoint());
    let (progress, mut progress_rx) = ProgressSink::channel();
    ctx.progress = progress;
    // The recording terraform fails any step it is run in: a bootstrap runs none.
    let mut driver = driver(&sts.endpoint(), &recording_terraform(tools.path()));
    driver.helm = executors::process::Program::new(recording_helm(tools.path()), "test helm");
    quick_readiness(&mut driver);
    let result = driver.run(ctx).await;
    let outputs = result.expect("the bootstrap succeeds");
    // The endpoint, and the load balancer its DNS must point at.
    assert_eq!(outputs["load_balancer_hostname"], LOAD_BALANCER);
    assert!(outputs["endpoint"].starts_with("https://"), "{outputs:?}");
    // On the way, the cluster reachable, then the baseline installed.
    let mut reports = Vec::new();
    while let Ok(report) = progress_rx.try_recv() {
        reports.push((report.condition, report.status, report.reason));
    }
    assert_eq!(
        reports,
        [
            (
                ConditionType::ClusterReachable,
                ConditionStatus::True,
                "NodesReady".to_owned()
            ),
            (
                ConditionType::BaselineInstalled,
                ConditionStatus::True,
                "ReleasesInstalled".to_owned()
            ),
        ]
    );
    assert!(
        !workdir.path().join("seen-args").exists(),
        "terraform ran in a bootstrap"
    );
    // The cluster saw the EKS token on every request.
    let seen = api.authorizations();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|auth| auth
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer k8s-aws-v1."))),
        "{seen:?}"
    );
    // Helm got an owner-only kubeconfig with the same kind of token, at each run.
    let runs = std::fs::read_dir(workdir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("seen-kubeconfig-")
        })
        .count();
    assert!(runs >= 2, "helm ran {runs} times");
    for run in 0..runs {
        let copy: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(workdir.path().join(format!("seen-kubeconfig-{run}")))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            copy["clusters"][0]["cluster"]["certificate-authority-data"],
            "Y2EtZnJvbS10aGUtam9i"
        );
        assert!(copy["users"][0]["user"].get("exec").is_none());
        let token = copy["users"][0]["user"]["token"].as_str().unwrap();
        assert!(token.starts_with("k8s-aws-v1."), "{token}");
        let mode =
            std::fs::read_to_string(workdir.path().join(format!("seen-mode-{run}"))).unwrap();
        assert_eq!(mode.trim(), "600");
    }
    // No token on disk once the step is over.
    assert!(
        !workdir
            .path()
            .join(bootstrap::kubeconfig::KUBECONFIG_FILE)
            .exists()
    );
    let mut lines = Vec::new();
    while let Ok(line) = rx.try_recv() {
        lines.push(line.line);
    }
    let logs = lines.join("\n");
    assert!(logs.contains("the cluster's nodes"), "{logs}");
    assert!(
        logs.contains("the Deployment beta9/beta9-gateway: ready"),
        "{logs}"
    );
}

/// An `aws` bootstrap whose cluster (the stand-in API) has one CPU node, `node`, that never
/// turns Ready; helm records its runs; the readiness waits are short. The servers and
/// directories live as long as this.
struct NeverReadyBootstrap {
    _sts: StandinSts,
    _api: system_tests::kube_api::StandinKubeApi,
    _tools: tempfile::TempDir,
    workdir: tempfile::TempDir,
    ctx: StepContext,
    driver: TerraformHelmDriver,
}

impl NeverReadyBootstrap {
    async fn start(node: &str) -> Self {
        use system_tests::kube_api::{KubeBehaviour, StandinKubeApi, StandinNode};
        let sts = StandinSts::expecting_external_id(EXTERNAL_ID).await;
        with_database_secret(&sts);
        let tools = tempfile::tempdir().unwrap();
        let workdir = tempfile::tempdir().unwrap();
        let api = StandinKubeApi::start(KubeBehaviour {
            nodes: vec![StandinNode::never_ready(node, "cpu")],
            ..KubeBehaviour::default()
        })
        .await;
        let (ctx, _rx) = bootstrap_context(workdir.path(), &api.endpoint());
        let mut driver = driver(&sts.endpoint(), &recording_terraform(tools.path()));
        driver.helm = executors::process::Program::new(recording_helm(tools.path()), "test helm");
        quick_readiness(&mut driver);
        NeverReadyBootstrap {
            _sts: sts,
            _api: api,
            _tools: tools,
            workdir,
            ctx,
            driver,
        }
    }
}

#[tokio::test]
async fn an_aws_bootstrap_whose_nodes_never_turn_ready_fails_naming_them_and_installs_nothing() {
    // Partly moved, the rest (the servers) lives to the end of the test.
    let mut setup = NeverReadyBootstrap::start("ip-10-0-1-7.ec2.internal").await;
    let workdir = setup.workdir.path().to_owned();
    let (progress, mut progress_rx) = executors::progress::ProgressSink::channel();
    setup.ctx.progress = progress;
    let error = setup.driver.run(setup.ctx).await.expect_err("never Ready");
    let report = progress_rx.try_recv().expect("the condition is reported");
    assert_eq!(
        (report.condition, report.status, report.reason.as_str()),
        (
            domain::conditions::ConditionType::ClusterReachable,
            domain::conditions::ConditionStatus::False,
            "NodesNotReady"
        )
    );
    assert!(
        report.message.contains("ip-10-0-1-7.ec2.internal"),
        "{report:?}"
    );
    let message = error.to_string();
    assert!(matches!(error, StepError::Failed { .. }), "{error:?}");
    assert!(
        message.contains("never became ready within 1s")
            && message.contains("not Ready: ip-10-0-1-7.ec2.internal"),
        "{message}"
    );
    assert!(!workdir.join("seen-kubeconfig-0").exists());
}

/// A `terraform` that succeeds at everything (and prints no outputs).
fn succeeding_terraform(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("terraform");
    std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// An `aws` destroy in `<data>/env` (which exists) with `terraform` made by `make_terraform`
/// in `tools`; returns the workdir and the step's result.
async fn destroy_with(
    data: &Path,
    tools: &Path,
    make_terraform: fn(&Path) -> std::path::PathBuf,
) -> (
    std::path::PathBuf,
    Result<domain::aggregate::Outputs, StepError>,
) {
    let sts = StandinSts::start(StsBehaviour::default()).await;
    let workdir = data.join("env");
    std::fs::create_dir_all(&workdir).unwrap();
    let (mut ctx, _rx) = aws_context(&workdir);
    ctx.job.step = Step::Destroy;
    let result = driver(&sts.endpoint(), &make_terraform(tools))
        .run(ctx)
        .await;
    (workdir, result)
}

#[tokio::test]
async fn a_successful_aws_destroy_removes_the_workdir() {
    let (data, tools) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::create_dir(data.path().join("env")).unwrap();
    std::fs::write(data.path().join("env/leftover"), "x").unwrap();
    let (workdir, result) = destroy_with(data.path(), tools.path(), succeeding_terraform).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(!workdir.exists(), "the workdir outlived the destroy");
}

#[tokio::test]
async fn a_failed_aws_destroy_keeps_the_workdir() {
    let (data, tools) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (workdir, result) = destroy_with(data.path(), tools.path(), recording_terraform).await;
    assert!(
        matches!(result, Err(StepError::Failed { .. })),
        "{result:?}"
    );
    assert!(workdir.join("main.tf.json").is_file());
    assert!(!workdir.join(VARS_FILE).exists());
}

#[tokio::test]
async fn a_cancelled_aws_bootstrap_stops_waiting_for_the_cluster() {
    let setup = NeverReadyBootstrap::start("node-1").await;
    let (ctx, mut driver) = (setup.ctx, setup.driver);
    let cancel = ctx.cancel.clone();
    driver.readiness.nodes = Duration::from_secs(600);
    let started = std::time::Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cancel.cancel();
    });
    let error = driver.run(ctx).await.expect_err("cancelled");
    assert!(matches!(error, StepError::Cancelled), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A `terraform` and a `helm` that append what they were run with to `log` (outside the
/// workdir, which a successful destroy removes): `terraform ARGS`, and `helm ARGS` with the
/// mode of the kubeconfig it was handed and whether that holds an EKS token.
fn logging_tools(dir: &Path, log: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let log = log.display();
    let terraform = dir.join("terraform");
    std::fs::write(
        &terraform,
        format!("#!/bin/sh\necho \"terraform $1\" >> '{log}'\nexit 0\n"),
    )
    .unwrap();
    let helm = dir.join("helm");
    std::fs::write(
        &helm,
        format!(
            "#!/bin/sh\nline=\"helm $*\"\nwhile [ $# -gt 0 ]; do\n  if [ \"$1\" = --kubeconfig ]; then\n    \
             line=\"$line mode=$(stat -c %a \"$2\") token=$(grep -c k8s-aws-v1. \"$2\")\"\n  fi\n  \
             shift\ndone\necho \"$line\" >> '{log}'\nexit 0\n"
        ),
    )
    .unwrap();
    for tool in [&terraform, &helm] {
        std::fs::set_permissions(tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (terraform, helm)
}

/// An `aws` destroy of an environment whose cluster is at `cluster`, with [`logging_tools`]
/// logging to `<tools>/log`; returns the step's result, its log lines and the tools' log.
async fn aws_destroy_of_cluster(
    cluster: &str,
) -> (
    Result<domain::aggregate::Outputs, StepError>,
    String,
    String,
) {
    let sts = StandinSts::start(StsBehaviour::default()).await;
    let (data, tools) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let workdir = data.path().join("env");
    std::fs::create_dir_all(&workdir).unwrap();
    let (mut ctx, mut rx) = bootstrap_context(&workdir, cluster);
    ctx.job.step = Step::Destroy;
    let log = tools.path().join("log");
    let (terraform, helm) = logging_tools(tools.path(), &log);
    let mut driver = driver(&sts.endpoint(), &terraform);
    driver.helm = executors::process::Program::new(helm, "test helm");
    quick_readiness(&mut driver);
    let result = driver.run(ctx).await;
    assert!(!workdir.join("kubeconfig").exists(), "a token was left");
    let tools_log = std::fs::read_to_string(&log).unwrap_or_default();
    (result, log_lines(&mut rx), tools_log)
}

#[tokio::test]
async fn an_aws_destroy_uninstalls_the_releases_with_an_eks_token_before_terraform_destroys() {
    use system_tests::kube_api::{KubeBehaviour, StandinKubeApi};
    let api = StandinKubeApi::start(KubeBehaviour::default()).await;
    let (result, _logs, log) = aws_destroy_of_cluster(&api.endpoint()).await;
    assert!(result.is_ok(), "{result:?}");
    let runs: Vec<&str> = log.lines().collect();
    let uninstalled: Vec<&str> = runs
        .iter()
        .filter_map(|l| l.strip_prefix("helm uninstall "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        uninstalled,
        [
            "beta9",
            "cluster-autoscaler",
            "metrics-server",
            "cert-manager",
            "ingress-nginx"
        ],
        "{log}"
    );
    for run in runs.iter().filter(|l| l.starts_with("helm ")) {
        assert!(run.ends_with("mode=600 token=1"), "{run}");
    }
    let first_terraform = runs
        .iter()
        .position(|l| l.starts_with("terraform"))
        .unwrap();
    assert_eq!(first_terraform, uninstalled.len(), "{log}");
    assert!(runs.contains(&"terraform destroy"), "{log}");
    let seen = api.authorizations();
    assert!(!seen.is_empty(), "the cluster was never asked");
    assert!(
        seen.iter().all(|auth| auth
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer k8s-aws-v1."))),
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_aws_destroy_whose_cluster_never_answers_goes_on_and_says_what_may_be_left() {
    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (result, logs, log) = aws_destroy_of_cluster(&endpoint).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(!log.contains("helm "), "{log}");
    assert!(log.contains("terraform destroy"), "{log}");
    assert!(
        logs.contains(
            "cannot uninstall the releases (beta9, cluster-autoscaler, metrics-server, \
             cert-manager, ingress-nginx)"
        ) && logs.contains("going on with terraform destroy")
            && logs.contains("kubernetes.io/cluster/cluster_name-value"),
        "{logs}"
    );
}

/// A NATS server with the secrets bucket of a fresh prefix, holding `sealed` under `env` when
/// given; the prefix.
async fn secrets_bucket(nats_url: &str, held: Option<(&str, Vec<u8>)>) -> String {
    use async_nats::jetstream::kv;
    let prefix = format!("s{:08x}", rand::random::<u32>());
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.unwrap());
    let bucket = js
        .create_key_value(kv::Config {
            bucket: domain::wire::Subjects::new(prefix.clone()).secrets_bucket(),
            ..kv::Config::default()
        })
        .await
        .unwrap();
    if let Some((env, sealed)) = held {
        bucket.put(env, sealed.into()).await.unwrap();
    }
    prefix
}

/// Issue 10: a job carries only the marker that the external id is sealed apart; the driver
/// opens it from the secrets bucket with the key, for the preflight and for Terraform — and
/// without the key, or without the value, the step fails saying so before any tool runs.
#[tokio::test]
async fn a_sealed_external_id_is_opened_from_the_secrets_bucket_for_the_preflight_and_terraform() {
    use domain::sealed::{SEAL_NONCE_LEN, SealingKey, seal};
    use domain::spec::ExternalIdRef;
    let nats = system_tests::services::nats().await;
    let key = SealingKey::from_bytes(&[7; 32]).unwrap();
    let sts = StandinSts::expecting_external_id(EXTERNAL_ID).await;
    let tools = tempfile::tempdir().unwrap();
    let terraform = recording_terraform(tools.path());
    let sealed_context = |workdir: &Path| {
        let (mut ctx, rx) = aws_context(workdir);
        let role = ctx.job.customer_role.as_mut().unwrap();
        let Some(ExternalIdRef::Plain(id)) = role.external_id.replace(ExternalIdRef::Sealed) else {
            panic!("the parsed spec holds the value");
        };
        (ctx, rx, id)
    };
    let sealed_driver = |prefix: &str, key: Option<SealingKey>| {
        let mut driver = driver(&sts.endpoint(), &terraform);
        driver.external_ids = Some(std::sync::Arc::new(
            executors::external_ids::ExternalIds::new(
                nats.url(),
                domain::wire::Subjects::new(prefix),
                key,
            ),
        ));
        driver
    };

    // Opened: STS (which expects it) and Terraform get the value.
    let workdir = tempfile::tempdir().unwrap();
    let (ctx, mut rx, id) = sealed_context(workdir.path());
    let env = ctx.job.environment_id.to_string();
    let payload = serde_json::to_string(&ctx.job).unwrap();
    assert!(!payload.contains(EXTERNAL_ID), "{payload}");
    let sealed = seal(&key, [3; SEAL_NONCE_LEN], &env, &id);
    let prefix = secrets_bucket(&nats.url(), Some((&env, sealed))).await;
    let result = sealed_driver(&prefix, Some(key.clone())).run(ctx).await;
    assert!(
        matches!(&result, Err(StepError::Failed { message }) if message.contains("recorded")),
        "the step reached terraform: {result:?}"
    );
    let seen: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workdir.path().join("seen-vars.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(seen["customer_external_id"], EXTERNAL_ID);
    assert!(!log_lines(&mut rx).contains(EXTERNAL_ID));

    // No key, another key, no value: refused before any tool runs, naming why.
    let right_key = key.clone();
    let other_key = SealingKey::from_bytes(&[8; 32]).unwrap();
    for (key, held, expected) in [
        (None, true, "PROVISIONER_SECRETS_KEY"),
        (Some(other_key), true, "does not open with this key"),
        (Some(key.clone()), false, "no sealed external id is kept"),
    ] {
        let workdir = tempfile::tempdir().unwrap();
        let (ctx, _rx, id) = sealed_context(workdir.path());
        let env = ctx.job.environment_id.to_string();
        // Sealed by the API with its own key.
        let sealed = seal(&right_key, [4; SEAL_NONCE_LEN], &env, &id);
        let prefix = secrets_bucket(&nats.url(), held.then_some((&env, sealed))).await;
        let result = sealed_driver(&prefix, key).run(ctx).await;
        let message = match result {
            Err(StepError::Failed { message }) => message,
            other => panic!("expected a failure, got {other:?}"),
        };
        assert!(message.starts_with("preflight: "), "{message}");
        assert!(message.contains(expected), "{expected}: {message}");
        assert!(!message.contains(EXTERNAL_ID), "{message}");
        assert!(!workdir.path().join("seen-args").exists(), "terraform ran");
    }
}
