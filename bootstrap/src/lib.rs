//! Cluster bootstrap: after infra is applied, install the baseline charts and Beta9 on the new
//! cluster. This crate decides and prepares the whole step — the release plan and its values
//! ([`plan`]), the kubeconfig ([`kubeconfig`]), the Helm command lines ([`helm`]), and the
//! ordered files and invocations ([`step`]) — from the typed infrastructure outputs
//! (`domain::outputs::InfraOutputs`) and the spec; the executor runs the prepared step through a
//! [`BootstrapRunner`], and reports. It also owns the way into the cluster in-process: the EKS
//! token ([`eks_token`]), the `kube` client ([`cluster`]) and the readiness waits
//! ([`readiness`]), which talk to the cluster themselves. A destroy first uninstalls the same
//! releases in reverse order ([`teardown`]).
//!
//! It never depends on `executors` (which depends on it), nor on the command side.

pub mod beta9_values;
pub mod charts;
pub mod cluster;
pub mod cluster_issuer;
pub mod config_keys;
pub mod eks_token;
pub mod helm;
pub mod kubeconfig;
pub mod plan;
pub mod readiness;
pub mod step;
pub mod teardown;

pub use beta9_values::Beta9Secrets;
pub use charts::{BaselineChart, ChartError, ChartRef, Charts};
pub use plan::{BootstrapPlan, PlanInputs, Release};
pub use step::{
    Action, BootstrapRunner, BootstrapStep, ClusterAccess, FileToWrite, HelmInvocation,
    RecoverCheck,
};
pub use teardown::{Teardown, TeardownFailed};

#[cfg(test)]
mod test_support {
    use domain::infra_model::InfraModel;
    use domain::outputs::InfraOutputs;
    use domain::spec::{Beta9Spec, EnvironmentSpec, Profile};
    use serde_json::json;

    /// The Beta9 settings of the `demo` environment.
    pub fn beta9(gpu_enabled: bool) -> Beta9Spec {
        serde_json::from_value(json!({
            "domain": "api.demo.example.com",
            "workers": {"gpu_enabled": gpu_enabled},
        }))
        .unwrap()
    }

    /// The infrastructure model of an aws environment of `profile`, with or without GPU nodes.
    pub fn model(profile: Profile, gpu_enabled: bool) -> InfraModel {
        let spec: EnvironmentSpec = serde_json::from_value(json!({
            "name": "demo",
            "cloud": {"provider": "aws", "region": "us-east-1", "account_id": "123456789012",
                      "role_arn": "arn:aws:iam::123456789012:role/beta9-provisioner"},
            "cluster": {"profile": profile},
            "data": {"postgres": {"size": "small", "multi_az": false},
                     "redis": {"size": "small", "ha": false}},
            "beta9": beta9(gpu_enabled),
        }))
        .unwrap();
        InfraModel::for_spec(&spec)
    }

    /// Secrets for tests, recognisable wherever they leak.
    pub fn secrets() -> crate::Beta9Secrets {
        crate::Beta9Secrets {
            database_password: "test-db-password".into(),
            encryption_key: "test-encryption-key".into(),
        }
    }

    /// Outputs as the sandbox's infrastructure step reports them.
    pub fn infra() -> InfraOutputs {
        InfraOutputs {
            vpc_id: "vpc-0123abcd".into(),
            cluster_name: "beta9-env-x".into(),
            cluster_endpoint: "https://c1.sandbox.invalid".into(),
            database_endpoint: "db.sandbox.invalid".into(),
            database_password_secret_arn: "arn:aws:secretsmanager:us-east-1:000000000000:secret:db"
                .into(),
            redis_endpoint: "redis.sandbox.invalid".into(),
            bucket_name: "beta9-env-x-artifacts".into(),
            cluster_certificate_authority: "Q0E=".into(),
            cluster_oidc_issuer: "https://oidc.eks.us-east-1.amazonaws.com/id/X".into(),
            cluster_autoscaler_role_arn: Some(
                "arn:aws:iam::000000000000:role/beta9-env-x-cluster-autoscaler".into(),
            ),
        }
    }
}
