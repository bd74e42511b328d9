//! The release plan: which charts, in which order, with which values.

use domain::outputs::InfraOutputs;
use domain::spec::Beta9Spec;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One `helm upgrade --install`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub name: String,
    pub chart: String,
    pub namespace: String,
    pub values: Value,
}

/// Every release to install, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BootstrapPlan {
    pub releases: Vec<Release>,
}

impl BootstrapPlan {
    /// Computes the plan from the Beta9 settings and the (non-secret) infra outputs.
    /// Secrets are passed as references (e.g. a Secrets Manager ARN), never as values.
    pub fn new(beta9: &Beta9Spec, infra: &InfraOutputs) -> Self {
        let mut releases = vec![
            Release {
                name: "ingress-nginx".into(),
                chart: "ingress-nginx/ingress-nginx".into(),
                namespace: "ingress-nginx".into(),
                values: json!({"controller": {"service": {"type": "LoadBalancer"}}}),
            },
            Release {
                name: "cert-manager".into(),
                chart: "jetstack/cert-manager".into(),
                namespace: "cert-manager".into(),
                values: json!({"installCRDs": true}),
            },
        ];
        if beta9.workers.gpu_enabled {
            releases.push(Release {
                name: "nvidia-device-plugin".into(),
                chart: "nvdp/nvidia-device-plugin".into(),
                namespace: "kube-system".into(),
                values: json!({"failOnInitError": false}),
            });
        }
        releases.push(Release {
            name: "beta9".into(),
            chart: "beta9/beta9".into(),
            namespace: "beta9".into(),
            values: json!({
                "ingress": {"enabled": true, "host": beta9.domain.as_str()},
                "database": {
                    "host": infra.database_endpoint,
                    "passwordSecretArn": infra.database_password_secret_arn,
                },
                "redis": {"host": infra.redis_endpoint},
                "objectStorage": {"bucket": infra.bucket_name},
                "workers": {"gpu": {"enabled": beta9.workers.gpu_enabled}},
            }),
        });
        Self { releases }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{beta9, infra};

    fn names(plan: &BootstrapPlan) -> Vec<&str> {
        plan.releases.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn the_baseline_charts_come_before_beta9_and_the_gpu_plugin_only_with_gpus() {
        let plan = BootstrapPlan::new(&beta9(false), &infra());
        assert_eq!(names(&plan), ["ingress-nginx", "cert-manager", "beta9"]);
        let plan = BootstrapPlan::new(&beta9(true), &infra());
        assert_eq!(
            names(&plan),
            [
                "ingress-nginx",
                "cert-manager",
                "nvidia-device-plugin",
                "beta9"
            ]
        );
    }

    #[test]
    fn beta9_gets_the_infra_outputs_and_only_a_reference_to_the_password() {
        let plan = BootstrapPlan::new(&beta9(false), &infra());
        let values = &plan.releases.last().unwrap().values;
        assert_eq!(values["ingress"]["host"], json!("api.demo.example.com"));
        assert_eq!(values["database"]["host"], json!("db.sandbox.invalid"));
        assert_eq!(
            values["database"]["passwordSecretArn"],
            json!("arn:aws:secretsmanager:us-east-1:000000000000:secret:db")
        );
        assert_eq!(values["redis"]["host"], json!("redis.sandbox.invalid"));
        assert_eq!(
            values["objectStorage"]["bucket"],
            json!("beta9-env-x-artifacts")
        );
    }
}
