//! The release plan: which charts, in which order, with which values.

use domain::spec::Beta9Spec;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

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
    pub fn new(beta9: &Beta9Spec, infra_outputs: &BTreeMap<String, String>) -> Self {
        let output = |key: &str| infra_outputs.get(key).cloned().unwrap_or_default();
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
                    "host": output("database_endpoint"),
                    "passwordSecretArn": output("database_password_secret_arn"),
                },
                "redis": {"host": output("redis_endpoint")},
                "objectStorage": {"bucket": output("bucket_name")},
                "workers": {"gpu": {"enabled": beta9.workers.gpu_enabled}},
            }),
        });
        Self { releases }
    }
}
