//! `TerraformHelmDriver` against this crate's real stand-in executables, without NATS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use domain::aggregate::{OperationJob, Outputs};
use domain::infra_model::{
    BucketModel, ClusterModel, InfraModel, NatLayout, NetworkModel, NodeGroupModel, PostgresModel,
    RedisModel,
};
use domain::spec::{Beta9Spec, Provider, Simulation, Step, WorkersSpec};
use domain::{EnvironmentId, OperationId};
use executors::driver::{StepContext, StepDriver, StepError};
use executors::logs::{LogReceiver, LogSink};
use executors::settings::ExecutorSettings;
use executors::standin::state_lock::LockInfo;
use executors::terraform_helm::TerraformHelmDriver;
use tokio_util::sync::CancellationToken;

fn standin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_terraform-standin"))
        .parent()
        .unwrap()
        .to_owned()
}

fn sandbox_driver() -> TerraformHelmDriver {
    TerraformHelmDriver::sandbox(&standin_dir(), &ExecutorSettings::new("nats://unused", "t"))
}

fn model() -> InfraModel {
    InfraModel {
        provider: Provider::Sandbox,
        region: "us-east-1".to_owned(),
        network: NetworkModel {
            vpc_cidr: "10.0.0.0/16".to_owned(),
            availability_zones: 2,
            nat: NatLayout::Single,
        },
        cluster: ClusterModel {
            kubernetes_version: "1.31".to_owned(),
            cpu_nodes: NodeGroupModel {
                instance_type: "m6i.large".to_owned(),
                min_nodes: 1,
                desired_nodes: 2,
                max_nodes: 3,
            },
            gpu_nodes: None,
        },
        postgres: PostgresModel {
            engine_version: "16.4".to_owned(),
            instance_class: "db.t4g.medium".to_owned(),
            allocated_storage_gb: 20,
            multi_az: false,
            backup_retention_days: 7,
        },
        redis: RedisModel {
            node_type: "cache.t4g.small".to_owned(),
            num_cache_nodes: 1,
            automatic_failover: false,
        },
        bucket: BucketModel { versioned: true },
    }
}

/// A step of a fresh environment whose workdir is `workdir`.
fn context(workdir: &Path, step: Step, simulate: Option<Simulation>) -> (StepContext, LogReceiver) {
    let env = EnvironmentId::generate();
    let op = OperationId::generate();
    let (logs, rx) = LogSink::channel(env.clone(), op.clone());
    let job = OperationJob {
        environment_id: env,
        name: serde_json::from_value(serde_json::json!("demo")).unwrap(),
        step,
        infra_model: model(),
        beta9: Beta9Spec {
            domain: serde_json::from_value(serde_json::json!("api.demo.example.com")).unwrap(),
            workers: WorkersSpec { gpu_enabled: false },
        },
        simulate,
        infra_outputs: BTreeMap::new(),
    };
    let ctx = StepContext {
        operation_id: op,
        job,
        workdir: workdir.to_owned(),
        cancel: CancellationToken::new(),
        logs,
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

/// A pid that belonged to a process which has exited (and been reaped).
fn dead_pid() -> i32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    child.wait().unwrap();
    pid
}

#[tokio::test]
async fn a_lock_left_by_a_dead_process_is_forced_open_and_the_apply_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let driver = sandbox_driver();
    apply(&driver, dir.path()).await.unwrap();

    let pid = dead_pid();
    let stale = LockInfo {
        id: "11111111-2222-4333-8444-555555555555".into(),
        operation: "OperationTypeApply".into(),
        info: String::new(),
        who: format!("{pid}@{}", executors::standin::fsutil::hostname()),
        version: "1.9.8".into(),
        created: "2026-01-01T00:00:00Z".into(),
        path: "terraform.tfstate".into(),
        pid,
    };
    let lock_path = dir.path().join(".terraform.tfstate.lock.info");
    std::fs::write(&lock_path, serde_json::to_string(&stale).unwrap()).unwrap();

    let (ctx, mut rx) = context(dir.path(), Step::Infra, None);
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

#[tokio::test]
async fn a_lock_held_by_a_live_process_fails_the_step_after_the_lock_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut driver = sandbox_driver();
    driver.lock_timeout = std::time::Duration::from_secs(1);
    apply(&driver, dir.path()).await.unwrap();

    let pid = std::process::id() as i32;
    let held = LockInfo {
        id: "live-lock".into(),
        operation: "OperationTypeApply".into(),
        info: String::new(),
        who: format!("{pid}@{}", executors::standin::fsutil::hostname()),
        version: "1.9.8".into(),
        created: "2026-01-01T00:00:00Z".into(),
        path: "terraform.tfstate".into(),
        pid,
    };
    let lock_path = dir.path().join(".terraform.tfstate.lock.info");
    std::fs::write(&lock_path, serde_json::to_string(&held).unwrap()).unwrap();

    match apply(&driver, dir.path()).await {
        Err(StepError::Failed { message }) => {
            assert!(
                message.contains("Error acquiring the state lock"),
                "{message}"
            )
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(lock_path.exists(), "a live holder's lock is left alone");
}

#[tokio::test]
async fn a_missing_terraform_binary_fails_the_step_naming_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut driver = sandbox_driver();
    driver.terraform = PathBuf::from("/nonexistent/terraform-standin");
    match apply(&driver, dir.path()).await {
        Err(StepError::Failed { message }) => assert_eq!(
            message,
            "terraform not found at /nonexistent/terraform-standin"
        ),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn simulate_json_holds_only_the_fields_the_job_sets() {
    let dir = tempfile::tempdir().unwrap();
    let simulate = Simulation {
        apply_seconds: Some(0.1),
        fail: Some(Step::Bootstrap),
        fail_times: None,
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
    match sandbox_driver().run(ctx).await {
        Err(StepError::Failed { message }) => {
            assert!(message.contains("cluster_name"), "{message}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
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
    match sandbox_driver().run(ctx).await {
        Err(StepError::Failed { message }) => {
            assert!(message.contains("simulated bootstrap failure"), "{message}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    // fail_times = 1: the retry succeeds.
    let (mut ctx, _rx) = context(dir.path(), Step::Bootstrap, Some(simulate));
    ctx.job.infra_outputs = outputs;
    let result = sandbox_driver().run(ctx).await.unwrap();
    assert_eq!(result["endpoint"], "https://api.demo.example.com");
}
