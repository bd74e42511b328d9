//! The release plan: which charts, in which order, with which values.

use domain::infra_model::InfraModel;
use domain::outputs::InfraOutputs;
use domain::spec::Beta9Spec;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::beta9_values;
use crate::charts::{ChartRef, Charts};

/// One `helm upgrade --install`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub name: String,
    pub chart: ChartRef,
    pub namespace: String,
    /// With placeholders where secrets go (see [`crate::beta9_values::Beta9Secrets::fill`]).
    pub values: Value,
}

/// Every release to install, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BootstrapPlan {
    pub releases: Vec<Release>,
}

/// What the plan is computed from: the Beta9 settings, the (non-secret) infra outputs, the
/// infrastructure model and the charts.
#[derive(Clone, Copy, Debug)]
pub struct PlanInputs<'a> {
    pub beta9: &'a Beta9Spec,
    pub infra: &'a InfraOutputs,
    pub model: &'a InfraModel,
    pub charts: &'a Charts,
}

impl BootstrapPlan {
    /// Computes the plan. Secrets are placeholders in it, never values.
    pub fn new(inputs: &PlanInputs<'_>) -> Self {
        let charts = inputs.charts;
        let release = |name: &str, chart: &ChartRef, namespace: &str, values: Value| Release {
            name: name.into(),
            chart: chart.clone(),
            namespace: namespace.into(),
            values,
        };
        let mut releases = vec![
            release(
                "ingress-nginx",
                &charts.ingress_nginx,
                "ingress-nginx",
                json!({"controller": {"service": {"type": "LoadBalancer"}}}),
            ),
            release(
                "cert-manager",
                &charts.cert_manager,
                "cert-manager",
                json!({"crds": {"enabled": true}}),
            ),
        ];
        if inputs.model.cluster.gpu_nodes.is_some() {
            releases.push(release(
                "nvidia-device-plugin",
                &charts.nvidia_device_plugin,
                "kube-system",
                json!({"failOnInitError": false}),
            ));
        }
        releases.push(release(
            "beta9",
            &charts.beta9,
            "beta9",
            beta9_values::values(inputs.beta9, inputs.infra, inputs.model),
        ));
        Self { releases }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_keys::unknown_paths;
    use crate::test_support::{beta9, infra, model};
    use domain::spec::Profile;

    fn plan(gpu: bool) -> BootstrapPlan {
        let (beta9, model) = (beta9(gpu), model(Profile::Medium, gpu));
        BootstrapPlan::new(&PlanInputs {
            beta9: &beta9,
            infra: &infra(),
            model: &model,
            charts: &Charts::default(),
        })
    }

    fn names(plan: &BootstrapPlan) -> Vec<&str> {
        plan.releases.iter().map(|r| r.name.as_str()).collect()
    }

    fn beta9_values(plan: &BootstrapPlan) -> &Value {
        &plan.releases.last().unwrap().values
    }

    #[test]
    fn the_baseline_charts_come_before_beta9_and_the_gpu_plugin_only_with_gpus() {
        assert_eq!(
            names(&plan(false)),
            ["ingress-nginx", "cert-manager", "beta9"]
        );
        assert_eq!(
            names(&plan(true)),
            [
                "ingress-nginx",
                "cert-manager",
                "nvidia-device-plugin",
                "beta9"
            ]
        );
    }

    #[test]
    fn every_release_is_pinned_and_cert_manager_installs_its_crds_the_current_way() {
        for release in plan(true).releases {
            assert!(!release.chart.version.is_empty(), "{}", release.name);
        }
        let plan = plan(false);
        assert_eq!(plan.releases[1].values, json!({"crds": {"enabled": true}}));
        assert_eq!(plan.releases[2].chart, Charts::default().beta9);
    }

    #[test]
    fn every_computed_config_path_is_a_key_beta9_knows() {
        for gpu in [false, true] {
            let plan = plan(gpu);
            let config = &beta9_values(&plan)["config"];
            assert!(config.is_object());
            assert_eq!(unknown_paths(config), Vec::<String>::new(), "gpu: {gpu}");
        }
    }

    #[test]
    fn beta9_gets_the_infra_outputs_and_only_placeholders_for_secrets() {
        let plan = plan(false);
        let config = &beta9_values(&plan)["config"];
        let postgres = &config["database"]["postgres"];
        assert_eq!(postgres["host"], json!("db.sandbox.invalid"));
        assert_eq!(postgres["password"], json!("<secret:db-password>"));
        assert_eq!(postgres["encryptionKey"], json!("<secret:encryption-key>"));
        assert_eq!(
            config["database"]["redis"]["addrs"],
            json!(["redis.sandbox.invalid:6379"])
        );
        assert_eq!(
            config["imageService"]["registries"]["s3"]["bucketName"],
            json!("beta9-env-x-artifacts")
        );
        assert_eq!(
            config["gateway"]["http"]["externalHost"],
            json!("api.demo.example.com")
        );
        let values = beta9_values(&plan);
        for subchart in ["postgresql", "redis", "juicefs-redis"] {
            assert_eq!(values[subchart]["enabled"], json!(false), "{subchart}");
        }
        let wait =
            values["controllers"]["gateway"]["initContainers"]["wait-on-backends"]["command"][2]
                .as_str()
                .unwrap();
        assert!(wait.contains("nc -z db.sandbox.invalid 5432"), "{wait}");
        assert!(wait.contains("nc -z redis.sandbox.invalid 6379"), "{wait}");
        assert!(!wait.contains("postgresql 5432"), "{wait}");
    }

    #[test]
    fn the_gpu_pool_lands_on_the_gpu_node_group_and_tolerates_its_taint() {
        assert!(beta9_values(&plan(false))["config"]["worker"].is_null());
        let plan = plan(true);
        let values = beta9_values(&plan);
        let pool = &values["config"]["worker"]["pools"]["gpu"];
        assert_eq!(pool["gpuType"], json!("A10G"));
        assert_eq!(pool["runtime"], json!("nvidia"));
        assert_eq!(
            pool["jobSpec"]["nodeSelector"],
            json!({"beta9.io/pool": "gpu"})
        );
        let runtime_class = &values["manifests"]["resources"][0];
        assert_eq!(runtime_class["metadata"]["name"], json!("nvidia"));
        assert_eq!(
            runtime_class["scheduling"]["tolerations"][0]["key"],
            json!("nvidia.com/gpu")
        );
    }
}
