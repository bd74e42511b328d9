//! `TerraformHelmDriver` against this crate's real stand-in executables, without NATS.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use domain::aggregate::Outputs;
use domain::outputs::{InfraOutput, InfraOutputs};
use domain::spec::{Simulation, Step};
use domain::wire::StepLease;
use domain::{EnvironmentId, OperationId};
use executors::driver::{StepContext, StepDriver, StepError};
use executors::lease::Takeover;
use executors::logs::{LogReceiver, LogSink};
use executors::settings::ExecutorSettings;
use executors::settings::{SandboxTools, TerraformRetry};
use executors::terraform_helm::{PLAN_FILE, TerraformHelmDriver};
use standins::state_lock::LockInfo;
use support::{LOCK_FILE, dead_pid, job, sandbox_tools};
use tokio_util::sync::CancellationToken;

fn sandbox_driver() -> TerraformHelmDriver {
    let mut driver = TerraformHelmDriver::sandbox(
        &sandbox_tools(),
        &ExecutorSettings::new("nats://unused", "t"),
    );
    driver.retry = quick_retries(3);
    driver
}

/// A step of a fresh environment whose workdir is `workdir`.
fn context(workdir: &Path, step: Step, simulate: Option<Simulation>) -> (StepContext, LogReceiver) {
    let env = EnvironmentId::generate();
    let op = OperationId::generate();
    let (logs, rx) = LogSink::channel(env.clone(), op.clone());
    let ctx = StepContext {
        operation_id: op,
        job: job(&env, step, simulate),
        workdir: workdir.to_owned(),
        cancel: CancellationToken::new(),
        logs,
        progress: executors::progress::ProgressSink::channel().0,
        takeover: None,
    };
    (ctx, rx)
}

fn lines(rx: &mut LogReceiver) -> Vec<String> {
    let mut lines = Vec::new();
    while let Ok(line) = rx.try_recv() {
        lines.push(format!("{}: {}", line.stream, line.line));
    }
    lines
}

async fn apply(driver: &TerraformHelmDriver, workdir: &Path) -> Result<Outputs, StepError> {
    let (ctx, _rx) = context(workdir, Step::Infra, None);
    driver.run(ctx).await
}

/// The message of a step that failed; panics on any other result.
fn failure(result: Result<Outputs, StepError>) -> String {
    match result {
        Err(StepError::Failed { message }) => message,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Writes the state lock of an apply by `pid` into `workdir`, as terraform would; returns its
/// path.
fn write_lock(workdir: &Path, id: &str, pid: i32) -> PathBuf {
    let info = LockInfo {
        id: id.into(),
        operation: "OperationTypeApply".into(),
        info: String::new(),
        who: format!("{pid}@{}", standins::fsutil::hostname()),
        version: "1.9.8".into(),
        created: "2026-01-01T00:00:00Z".into(),
        path: "terraform.tfstate".into(),
        pid,
    };
    let lock_path = workdir.join(LOCK_FILE);
    std::fs::write(&lock_path, serde_json::to_string(&info).unwrap()).unwrap();
    lock_path
}

/// The lease this attempt took over: attempt 1 of an executor whose heartbeat lapsed.
fn takeover(operation_id: &OperationId) -> Takeover {
    Takeover {
        previous: StepLease {
            operation_id: operation_id.clone(),
            attempt: 1,
            executor: "gone-host:4242:0000".into(),
            renewed_at_ms: 0,
            released: false,
            ttl_ms: None,
        },
    }
}

#[tokio::test]
async fn a_lock_left_by_a_holder_whose_lease_was_taken_over_is_forced_open() {
    let dir = tempfile::tempdir().unwrap();
    let driver = sandbox_driver();
    apply(&driver, dir.path()).await.unwrap();

    let lock_path = write_lock(
        dir.path(),
        "11111111-2222-4333-8444-555555555555",
        dead_pid(),
    );

    let (mut ctx, mut rx) = context(dir.path(), Step::Infra, None);
    ctx.takeover = Some(takeover(&ctx.operation_id));
    let outputs = sandbox_driver().run(ctx).await.unwrap();
    assert!(outputs.contains_key("vpc_id"));
    assert!(!lock_path.exists());
    let lines = lines(&mut rx);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("force-unlock -force 11111111-2222-4333-8444-555555555555")),
        "{lines:#?}"
    );
}

/// Retries that wait milliseconds, not seconds.
fn quick_retries(attempts: u32) -> TerraformRetry {
    TerraformRetry {
        attempts,
        first_delay: Duration::from_millis(50),
        max_elapsed: Duration::from_secs(60),
    }
}

/// The executor's own notes among a step's log lines.
fn notes(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("executor: "))
        .collect()
}

#[tokio::test]
async fn a_lock_is_never_forced_without_a_takeover_even_when_its_holder_looks_dead() {
    let dir = tempfile::tempdir().unwrap();
    let driver = sandbox_driver();
    apply(&driver, dir.path()).await.unwrap();
    let lock_path = write_lock(
        dir.path(),
        "22222222-2222-4333-8444-555555555555",
        dead_pid(),
    );

    let message = failure(apply(&driver, dir.path()).await);
    assert!(
        message.contains("locked by another run (lock 22222222-2222-4333-8444-555555555555)"),
        "{message}"
    );
    assert!(lock_path.exists(), "the lock was forced without a takeover");
}

#[tokio::test]
async fn a_lock_held_by_a_live_process_is_waited_for_again_then_fails_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut driver = sandbox_driver();
    driver.lock_timeout = Duration::from_secs(1);
    driver.retry = quick_retries(2);
    apply(&driver, dir.path()).await.unwrap();

    let lock_path = write_lock(dir.path(), "live-lock", std::process::id() as i32);

    let (ctx, mut rx) = context(dir.path(), Step::Infra, None);
    let message = failure(driver.run(ctx).await);
    assert!(message.contains("locked by another run"), "{message}");
    assert!(
        message.contains("Error: Error acquiring the state lock"),
        "{message}"
    );
    assert!(
        message.ends_with("(gave up after 2 attempt(s): another run still holds the state lock)"),
        "{message}"
    );
    let lines = lines(&mut rx);
    let notes = notes(&lines);
    assert!(
        notes.iter().any(|n| n.starts_with(
            "terraform plan and apply failed (another run still holds the state lock); \
             retrying in"
        )),
        "{notes:#?}"
    );
    let plans = notes
        .iter()
        .filter(|n| n.starts_with("$ terraform plan"))
        .count();
    assert_eq!(plans, 2, "{notes:#?}");
    assert!(lock_path.exists(), "a live holder's lock is left alone");
}

#[tokio::test]
async fn a_throttled_plan_is_retried_with_back_off_and_the_step_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let mut driver = sandbox_driver();
    driver.retry = quick_retries(3);
    let simulate = Simulation {
        transient_failures: Some(2),
        ..Simulation::default()
    };
    let (ctx, mut rx) = context(dir.path(), Step::Infra, Some(simulate));
    let outputs = driver.run(ctx).await.unwrap();
    assert!(outputs.contains_key("vpc_id"));
    let lines = lines(&mut rx);
    let notes = notes(&lines);
    let retries: Vec<&&str> = notes
        .iter()
        .filter(|n| n.contains("failed (the cloud API throttled the request); retrying in"))
        .collect();
    assert_eq!(retries.len(), 2, "{notes:#?}");
    assert!(retries[0].ends_with("(attempt 2 of 3)"), "{retries:?}");
    assert!(retries[1].ends_with("(attempt 3 of 3)"), "{retries:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("api error Throttling: Rate exceeded")),
        "terraform's error is in the logs"
    );
    assert!(!dir.path().join(PLAN_FILE).exists());
}

#[tokio::test]
async fn throttling_past_the_attempts_fails_the_step_with_terraforms_error_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut driver = sandbox_driver();
    driver.retry = quick_retries(2);
    let simulate = Simulation {
        transient_failures: Some(5),
        ..Simulation::default()
    };
    let (ctx, _rx) = context(dir.path(), Step::Infra, Some(simulate));
    let message = failure(driver.run(ctx).await);
    assert!(
        message.starts_with("Error: reading EC2 VPCs (simulated transient failure 2 of 5)"),
        "{message}"
    );
    assert!(
        message.ends_with("(gave up after 2 attempt(s): the cloud API throttled the request)"),
        "{message}"
    );
}

#[tokio::test]
async fn a_permanent_failure_fails_the_step_at_once_without_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let mut driver = sandbox_driver();
    driver.retry = quick_retries(3);
    // It fails once only: a retry would have succeeded.
    let simulate = Simulation {
        fail: Some(Step::Infra),
        fail_times: Some(1),
        ..Simulation::default()
    };
    let (ctx, mut rx) = context(dir.path(), Step::Infra, Some(simulate));
    let message = failure(driver.run(ctx).await);
    assert!(
        message.starts_with("Error: simulated infra failure (attempt 1 of 1)"),
        "{message}"
    );
    let lines = lines(&mut rx);
    let notes = notes(&lines);
    assert!(!notes.iter().any(|n| n.contains("retrying")), "{notes:#?}");
    let applies = notes
        .iter()
        .filter(|n| n.starts_with("$ terraform apply"))
        .count();
    assert_eq!(applies, 1, "{notes:#?}");
}

#[tokio::test]
async fn a_missing_terraform_binary_fails_the_step_naming_its_path_and_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut driver = sandbox_driver();
    driver.terraform = SandboxTools::Dir(PathBuf::from("/nonexistent")).terraform();
    assert_eq!(
        failure(apply(&driver, dir.path()).await),
        "terraform not found at /nonexistent/terraform-standin: build it with \
         `cargo build -p standins --bins`, or use the stand-ins built into provisioner"
    );
    let mut driver = TerraformHelmDriver::aws(&ExecutorSettings::new("nats://unused", "t"));
    driver.provider = domain::spec::Provider::Sandbox;
    // The sandbox job needs no customer account (aws_driver.rs tests the preflight).
    driver.accounts = None;
    driver.terraform.path = PathBuf::from("terraform-not-installed-here");
    assert_eq!(
        failure(apply(&driver, dir.path()).await),
        "terraform not found at terraform-not-installed-here (on PATH): install Terraform \
         >= 1.10 (or OpenTofu) on PATH, or set PROVISIONER_TERRAFORM_BIN"
    );
}

#[tokio::test]
async fn infra_applies_exactly_the_plan_it_saved_and_removes_the_plan_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, mut rx) = context(dir.path(), Step::Infra, None);
    sandbox_driver().run(ctx).await.unwrap();
    let commands: Vec<String> = lines(&mut rx)
        .into_iter()
        .filter_map(|l| l.strip_prefix("executor: $ terraform ").map(str::to_owned))
        .collect();
    assert_eq!(
        commands,
        [
            "init -input=false -no-color",
            "plan -input=false -no-color -lock-timeout=300s -out=provisioner.tfplan",
            "apply -input=false -no-color -lock-timeout=300s provisioner.tfplan",
            "output -json -no-color",
        ]
    );
    assert!(!dir.path().join(PLAN_FILE).exists(), "the plan is removed");
}

#[tokio::test]
async fn simulate_json_holds_only_the_fields_the_job_sets() {
    let dir = tempfile::tempdir().unwrap();
    let simulate = Simulation {
        apply_seconds: Some(0.1),
        fail: Some(Step::Bootstrap),
        fail_times: None,
        transient_failures: None,
    };
    let (ctx, _rx) = context(dir.path(), Step::Infra, Some(simulate));
    sandbox_driver().run(ctx).await.unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("simulate.json")).unwrap())
            .unwrap();
    assert_eq!(
        written,
        serde_json::json!({"apply_seconds": 0.1, "fail": "bootstrap"})
    );

    // A later job without fault injection removes it.
    apply(&sandbox_driver(), dir.path()).await.unwrap();
    assert!(!dir.path().join("simulate.json").exists());
}

#[tokio::test]
async fn bootstrap_without_infra_outputs_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _rx) = context(dir.path(), Step::Bootstrap, None);
    let message = failure(sandbox_driver().run(ctx).await);
    assert!(message.contains("cluster_name"), "{message}");
}

#[tokio::test]
async fn a_failing_bootstrap_reports_helms_error() {
    let dir = tempfile::tempdir().unwrap();
    let outputs = apply(&sandbox_driver(), dir.path()).await.unwrap();
    let simulate = Simulation {
        fail: Some(Step::Bootstrap),
        fail_times: Some(1),
        ..Simulation::default()
    };
    let (mut ctx, _rx) = context(dir.path(), Step::Bootstrap, Some(simulate.clone()));
    ctx.job.infra_outputs = outputs.clone();
    let message = failure(sandbox_driver().run(ctx).await);
    assert!(message.contains("simulated bootstrap failure"), "{message}");
    // fail_times = 1: the retry succeeds.
    let (mut ctx, _rx) = context(dir.path(), Step::Bootstrap, Some(simulate));
    ctx.job.infra_outputs = outputs;
    let result = sandbox_driver().run(ctx).await.unwrap();
    assert_eq!(result["endpoint"], "https://api.demo.example.com");
}

#[tokio::test]
async fn the_sandbox_infra_reports_exactly_the_typed_infra_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let outputs = apply(&sandbox_driver(), dir.path()).await.unwrap();
    let infra = InfraOutputs::try_from(&outputs).unwrap();
    assert!(infra.cluster_endpoint.starts_with("https://"), "{infra:?}");
    for output in [
        InfraOutput::ClusterCertificateAuthority,
        InfraOutput::ClusterOidcIssuer,
        InfraOutput::ClusterAutoscalerRoleArn,
    ] {
        assert!(outputs.contains_key(output.name()), "{output}: {outputs:?}");
    }
    let role = infra
        .cluster_autoscaler_role_arn
        .as_deref()
        .unwrap_or_default();
    assert!(role.starts_with("arn:aws:iam:"), "{role}");
    assert_eq!(Outputs::from(&infra), outputs);
}

/// A `helm` that succeeds, noting in `log` its arguments and, for each values file, its mode,
/// how many placeholders are left in it, and the database password it holds; it knows of no
/// release (`status` fails as helm's does for a missing one).
fn recording_helm(log: &Path) -> PathBuf {
    let script = log.with_file_name("helm");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nlog='{}'\necho \"args: $*\" >> \"$log\"\n\
             if [ \"$1\" = status ]; then echo 'Error: release: not found' >&2; exit 1; fi\n\
             while [ $# -gt 0 ]; do\n  if [ \"$1\" = --values ]; then\n    \
             stat -c 'mode %a' \"$2\" >> \"$log\"\n    \
             echo \"placeholders $(grep -c '<secret:' \"$2\")\" >> \"$log\"\n    \
             grep -o '\"password\": \"[^\"]*\"' \"$2\" >> \"$log\"\n  fi\n  shift\ndone\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[tokio::test]
async fn bootstrap_hands_helm_its_values_in_owner_only_files_removed_after_the_step() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let outputs = apply(&sandbox_driver(), dir.path()).await.unwrap();
    let (mut ctx, mut rx) = context(dir.path(), Step::Bootstrap, None);
    ctx.job.infra_outputs = outputs;
    let tools = tempfile::tempdir().unwrap();
    let log = tools.path().join("helm.log");
    let mut driver = sandbox_driver();
    driver.helm = executors::process::Program::new(recording_helm(&log), "test helm");
    driver.run(ctx).await.unwrap();

    let log = std::fs::read_to_string(&log).unwrap();
    let modes: Vec<&str> = log.lines().filter(|l| l.starts_with("mode")).collect();
    // ingress-nginx, cert-manager, metrics-server, cluster-autoscaler, beta9.
    assert_eq!(modes, ["mode 600"; 5], "{log}");
    assert!(
        log.lines()
            .filter(|l| l.starts_with("placeholders"))
            .all(|l| l == "placeholders 0"),
        "{log}"
    );
    let password_line = log
        .lines()
        .find(|l| l.starts_with("\"password\""))
        .expect("beta9's values hold the database password");
    let password = password_line.rsplit('"').nth(1).unwrap();
    assert!(password.len() >= 32, "{password_line}");
    for args in log.lines().filter(|l| l.starts_with("args:")) {
        assert!(!args.contains(password), "{args}");
        if args.starts_with("args: status ") {
            continue;
        }
        assert!(
            args.contains("--version") && args.contains("--atomic"),
            "{args}"
        );
    }
    assert!(!lines(&mut rx).join("\n").contains(password));

    let kubeconfig = std::fs::metadata(dir.path().join("kubeconfig")).unwrap();
    assert_eq!(kubeconfig.permissions().mode() & 0o777, 0o600);
    let left: Vec<_> = std::fs::read_dir(dir.path().join("helm-values"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Writes `release` into the helm stand-in's releases in `workdir` as a helm killed during its
/// first install leaves it: `pending-install`.
fn left_pending_install(workdir: &Path, release: &str, namespace: &str) {
    let mut store = standins::helm::Store::load(workdir).unwrap();
    store.releases.push(standins::helm::Release {
        release: release.into(),
        namespace: namespace.into(),
        chart: "beta9-chart".into(),
        chart_ref: "oci://public.ecr.aws/n4e0e1y0/beta9-chart".into(),
        chart_version: "0.1.762".into(),
        revision: 1,
        status: "pending-install".into(),
        values_files: vec!["helm-values/beta9.json".into()],
        set: Vec::new(),
        first_deployed: "2026-01-01T00:00:00Z".into(),
        updated: "2026-01-01T00:00:00Z".into(),
        description: "Initial install underway".into(),
        previous: None,
    });
    store.namespaces.insert(namespace.into());
    store.save(workdir).unwrap();
}

#[tokio::test]
async fn a_release_a_crashed_attempt_left_pending_install_is_uninstalled_and_installed_again() {
    let dir = tempfile::tempdir().unwrap();
    let outputs = apply(&sandbox_driver(), dir.path()).await.unwrap();
    left_pending_install(dir.path(), "beta9", "beta9");
    let (mut ctx, mut rx) = context(dir.path(), Step::Bootstrap, None);
    ctx.job.infra_outputs = outputs;
    let result = sandbox_driver().run(ctx).await;
    let logged = lines(&mut rx).join("\n");
    assert_eq!(
        result.unwrap()["endpoint"],
        "https://api.demo.example.com",
        "{logged}"
    );

    assert!(
        logged.contains(
            "the release beta9 (namespace beta9) is pending-install: an earlier attempt's helm \
             did not finish; uninstalling release beta9 from namespace beta9 before installing \
             it again"
        ),
        "{logged}"
    );
    let beta9_runs: Vec<String> = standins::helm_invocations::read(dir.path())
        .unwrap()
        .into_iter()
        .filter(|run| run.args.iter().any(|a| a == "beta9"))
        .map(|run| run.args[..2].join(" "))
        .collect();
    assert_eq!(
        beta9_runs,
        ["status beta9", "uninstall beta9", "upgrade --install"],
        "{logged}"
    );
    let store = standins::helm::Store::load(dir.path()).unwrap();
    let beta9 = store.find("beta9", "beta9").unwrap();
    assert_eq!((beta9.revision, beta9.status.as_str()), (1, "deployed"));
    // Every other release was found missing and installed without more ado.
    assert_eq!(logged.matches("an earlier attempt's helm").count(), 1);
}

/// The operations of the stand-ins' runs in `workdir`, in the order they started.
fn run_operations(workdir: &Path) -> Vec<String> {
    standins::overlap::read(workdir)
        .unwrap()
        .started
        .into_iter()
        .map(|run| run.operation)
        .collect()
}

#[tokio::test]
async fn a_destroy_of_an_environment_whose_infra_never_applied_skips_the_uninstall() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, mut rx) = context(dir.path(), Step::Destroy, None);
    assert!(ctx.job.infra_outputs.is_empty());
    sandbox_driver().run(ctx).await.unwrap();
    let lines = lines(&mut rx);
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("no cluster was created: nothing to uninstall")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("$ helm")),
        "helm ran: {lines:?}"
    );
    assert_eq!(
        standins::helm_invocations::read(dir.path()).unwrap(),
        Vec::new()
    );
    assert!(run_operations(dir.path()).contains(&"destroy".to_owned()));
}

/// A `helm` that succeeds, except the uninstall of `failing`, which fails as a helm whose
/// wait ran out does.
fn helm_failing_to_uninstall(dir: &Path, failing: &str) -> PathBuf {
    let script = dir.join("helm");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$*\" in\n  \"uninstall {failing} \"*)\n    \
             echo 'Error: uninstall: timed out waiting for the condition' >&2\n    exit 1;;\n\
             esac\necho \"$*\" >> helm-args\nexit 0\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[tokio::test]
async fn a_failed_uninstall_fails_the_destroy_naming_the_release_before_terraform_destroys() {
    let dir = tempfile::tempdir().unwrap();
    let outputs = apply(&sandbox_driver(), dir.path()).await.unwrap();
    let (mut ctx, _rx) = context(dir.path(), Step::Destroy, None);
    ctx.job.infra_outputs = outputs;
    let env = ctx.job.environment_id.clone();
    let tools = tempfile::tempdir().unwrap();
    let mut driver = sandbox_driver();
    driver.helm = executors::process::Program::new(
        helm_failing_to_uninstall(tools.path(), "cert-manager"),
        "test helm",
    );
    let message = failure(driver.run(ctx).await);
    assert!(
        message
            .starts_with("could not uninstall the release cert-manager (namespace cert-manager): ")
            && message.contains("timed out waiting for the condition"),
        "{message}"
    );
    assert!(
        message.contains(&format!("provisioner env retry {env}")),
        "{message}"
    );
    // Beta9 went first; terraform destroyed nothing.
    let helm_runs = std::fs::read_to_string(dir.path().join("helm-args")).unwrap();
    let uninstalled: Vec<&str> = helm_runs
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(
        uninstalled,
        ["beta9", "cluster-autoscaler", "metrics-server"],
        "{helm_runs}"
    );
    let operations = run_operations(dir.path());
    assert!(
        !operations.contains(&"destroy".to_owned()),
        "{operations:?}"
    );
}

#[tokio::test]
async fn an_environment_applied_before_the_autoscaler_role_bootstraps_without_it_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = apply(&sandbox_driver(), dir.path()).await.unwrap();
    // The outputs as an infrastructure step of an earlier version reported them.
    outputs.remove(InfraOutput::ClusterAutoscalerRoleArn.name());
    let (mut ctx, mut rx) = context(dir.path(), Step::Bootstrap, None);
    ctx.job.infra_outputs = outputs;
    let tools = tempfile::tempdir().unwrap();
    let log = tools.path().join("helm.log");
    let mut driver = sandbox_driver();
    driver.helm = executors::process::Program::new(recording_helm(&log), "test helm");
    let result = driver.run(ctx).await.unwrap();
    assert_eq!(result["endpoint"], "https://api.demo.example.com");

    let helm = std::fs::read_to_string(&log).unwrap();
    let installed: Vec<&str> = helm
        .lines()
        .filter_map(|l| l.strip_prefix("args: upgrade --install "))
        .filter_map(|args| args.split(' ').next())
        .collect();
    assert_eq!(
        installed,
        ["ingress-nginx", "cert-manager", "metrics-server", "beta9"],
        "{helm}"
    );
    let logged = lines(&mut rx).join("\n");
    assert!(
        logged.contains("cluster-autoscaler is not installed")
            && logged.contains("cluster_autoscaler_role_arn")
            && logged.contains("apply the infrastructure again"),
        "{logged}"
    );
}

fn authorized(lock_id: &str) -> domain::operator::AuthorizedUnlock {
    domain::operator::AuthorizedUnlock {
        lock_id: domain::operator::LockId::parse(lock_id).unwrap(),
        authorized_by: "token:admin".into(),
    }
}

#[tokio::test]
async fn a_lock_an_admin_authorised_is_forced_open_and_the_log_says_by_whom() {
    let dir = tempfile::tempdir().unwrap();
    let driver = sandbox_driver();
    apply(&driver, dir.path()).await.unwrap();
    let lock_id = "33333333-2222-4333-8444-555555555555";
    let lock_path = write_lock(dir.path(), lock_id, dead_pid());

    let (mut ctx, mut rx) = context(dir.path(), Step::Infra, None);
    ctx.job.force_unlock = Some(authorized(lock_id));
    let outputs = driver.run(ctx).await.unwrap();
    assert!(outputs.contains_key("vpc_id"));
    assert!(!lock_path.exists());
    let lines = lines(&mut rx);
    let notes = notes(&lines);
    assert!(
        notes.iter().any(|n| n.contains(&format!(
            "forcing the state lock {lock_id} open, as authorised by token:admin"
        ))),
        "{notes:#?}"
    );
}

#[tokio::test]
async fn an_authorisation_for_another_lock_forces_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let driver = sandbox_driver();
    apply(&driver, dir.path()).await.unwrap();
    let lock_id = "44444444-2222-4333-8444-555555555555";
    let lock_path = write_lock(dir.path(), lock_id, dead_pid());

    let (mut ctx, _rx) = context(dir.path(), Step::Infra, None);
    ctx.job.force_unlock = Some(authorized("some-other-lock"));
    let message = failure(driver.run(ctx).await);
    assert!(
        message.contains(&format!("have an admin force-unlock lock {lock_id}")),
        "{message}"
    );
    assert!(lock_path.exists(), "a lock nobody authorised was forced");
}
