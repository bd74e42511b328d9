//! Helpers for the integration tests: the stand-ins (built from the `standins` crate, which this
//! crate does not link) and the jobs the executor gives them. Included with `mod support;`; each
//! test binary uses a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use domain::EnvironmentId;
use domain::aggregate::OperationJob;
use domain::infra_model::{
    BucketModel, ClusterModel, InfraModel, NatLayout, NetworkModel, NodeGroupModel, PostgresModel,
    RedisModel,
};
use domain::spec::{Beta9Spec, Provider, Simulation, Step, WorkersSpec};
use executors::settings::SandboxTools;

/// Terraform's state lock in a workdir.
pub const LOCK_FILE: &str = ".terraform.tfstate.lock.info";

/// The stand-in binaries of the `standins` crate, in the directory cargo builds binaries into
/// (`target/<profile>`, the parent of this test's `deps/`). This crate does not depend on
/// `standins` for its build, so cargo does not build them for `cargo test -p executors`: the
/// first call builds them with `$CARGO build -p standins --bins` (a no-op when
/// `cargo test --workspace` already did).
pub fn sandbox_tools() -> SandboxTools {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::current_exe()
            .expect("test executable path")
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_owned();
        let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        let target_dir = dir.parent().expect("target dir");
        build
            .args([
                "build",
                "--quiet",
                "-p",
                "standins",
                "--bins",
                "--target-dir",
            ])
            .arg(target_dir);
        if dir.file_name().is_some_and(|name| name == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo starts");
        assert!(status.success(), "building the stand-ins failed: {status}");
        for tool in ["terraform-standin", "helm-standin"] {
            assert!(
                dir.join(tool).is_file(),
                "{} is missing",
                dir.join(tool).display()
            );
        }
        dir
    });
    SandboxTools::Dir(dir.clone())
}

/// The pid of a process that has exited and been reaped.
pub fn dead_pid() -> i32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    child.wait().unwrap();
    pid
}

/// A small sandbox environment: one CPU node group, no GPUs.
pub fn sandbox_model() -> InfraModel {
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

/// The job of `step` for the `demo` environment `env` on [`sandbox_model`], without infra outputs.
pub fn job(env: &EnvironmentId, step: Step, simulate: Option<Simulation>) -> OperationJob {
    OperationJob {
        environment_id: env.clone(),
        name: serde_json::from_value(serde_json::json!("demo")).unwrap(),
        step,
        infra_model: sandbox_model(),
        beta9: Beta9Spec {
            domain: serde_json::from_value(serde_json::json!("api.demo.example.com")).unwrap(),
            workers: WorkersSpec { gpu_enabled: false },
        },
        simulate,
        infra_outputs: BTreeMap::new(),
        timeout_seconds: Some(600),
        customer_role: None,
        force_unlock: None,
    }
}
