//! The release plan: which charts, in which order, with which values.

use domain::infra_model::{
    CLUSTER_AUTOSCALER_NAMESPACE, CLUSTER_AUTOSCALER_SERVICE_ACCOUNT, InfraModel,
};
use domain::outputs::{InfraOutput, InfraOutputs};
use domain::spec::Beta9Spec;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::beta9_values;
use crate::charts::{BaselineChart, ChartRef, Charts};

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
    /// Lines for the operation's log: what the plan leaves out, and why.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// The annotation that gives a service account an IAM role (EKS's IRSA webhook).
pub const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

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
    /// Computes the plan. Secrets are placeholders in it, never values. Order: ingress-nginx,
    /// cert-manager, metrics-server, cluster-autoscaler, the NVIDIA device plugin (GPU workers
    /// only), Beta9.
    pub fn new(inputs: &PlanInputs<'_>) -> Self {
        let charts = inputs.charts;
        let release = |name: &str, chart: &ChartRef, namespace: &str, values: Value| Release {
            name: name.into(),
            chart: chart.clone(),
            namespace: namespace.into(),
            values,
        };
        // A baseline release is named after its chart.
        let baseline = |chart: BaselineChart, namespace: &str, values: Value| {
            release(chart.name(), charts.baseline(chart), namespace, values)
        };
        let mut notes = Vec::new();
        let mut releases = vec![
            baseline(
                BaselineChart::IngressNginx,
                "ingress-nginx",
                json!({"controller": {"service": {"type": "LoadBalancer"}}}),
            ),
            baseline(
                BaselineChart::CertManager,
                "cert-manager",
                json!({"crds": {"enabled": true}}),
            ),
            baseline(BaselineChart::MetricsServer, "kube-system", json!({})),
        ];
        match &inputs.infra.cluster_autoscaler_role_arn {
            Some(role_arn) => releases.push(baseline(
                BaselineChart::ClusterAutoscaler,
                CLUSTER_AUTOSCALER_NAMESPACE,
                cluster_autoscaler_values(inputs, role_arn),
            )),
            None => notes.push(format!(
                "cluster-autoscaler is not installed: the infrastructure outputs have no {} \
                 (applied before it existed); apply the infrastructure again, then bootstrap \
                 again, to install it",
                InfraOutput::ClusterAutoscalerRoleArn
            )),
        }
        if inputs.model.cluster.gpu_nodes.is_some() {
            releases.push(baseline(
                BaselineChart::NvidiaDevicePlugin,
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
        Self { releases, notes }
    }
}

/// cluster-autoscaler's values, every key one of the chart's `values.yaml` (9.44.0; Helm ignores
/// an unknown key silently): node groups discovered by their EKS tags for this cluster, and its
/// AWS calls made as the IAM role Terraform made for its service account, named here.
fn cluster_autoscaler_values(inputs: &PlanInputs<'_>, role_arn: &str) -> Value {
    json!({
        "cloudProvider": "aws",
        "awsRegion": inputs.model.region,
        "autoDiscovery": {"clusterName": inputs.infra.cluster_name},
        "rbac": {
            "serviceAccount": {
                "create": true,
                "name": CLUSTER_AUTOSCALER_SERVICE_ACCOUNT,
                "annotations": {ROLE_ARN_ANNOTATION: role_arn},
            },
        },
    })
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

    fn release<'p>(plan: &'p BootstrapPlan, name: &str) -> &'p Release {
        plan.releases
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no release {name}"))
    }

    #[test]
    fn the_baseline_charts_come_before_beta9_and_the_gpu_plugin_only_with_gpus() {
        assert_eq!(
            names(&plan(false)),
            [
                "ingress-nginx",
                "cert-manager",
                "metrics-server",
                "cluster-autoscaler",
                "beta9"
            ]
        );
        assert_eq!(
            names(&plan(true)),
            [
                "ingress-nginx",
                "cert-manager",
                "metrics-server",
                "cluster-autoscaler",
                "nvidia-device-plugin",
                "beta9"
            ]
        );
        assert_eq!(plan(true).notes, Vec::<String>::new());
    }

    #[test]
    fn every_release_is_pinned_to_its_chart_from_settings() {
        let mut charts = Charts::default();
        charts.set_baseline(
            BaselineChart::MetricsServer,
            ChartRef::at(
                "https://mirror.example.com/charts",
                "metrics-server",
                "3.12.2",
            )
            .unwrap(),
        );
        let (beta9, model) = (beta9(true), model(Profile::Medium, true));
        let plan = BootstrapPlan::new(&PlanInputs {
            beta9: &beta9,
            infra: &infra(),
            model: &model,
            charts: &charts,
        });
        for chart in BaselineChart::ALL {
            let release = release(&plan, chart.name());
            assert_eq!(&release.chart, charts.baseline(chart), "{}", release.name);
        }
        assert_eq!(release(&plan, "beta9").chart, charts.beta9);
        for release in &plan.releases {
            assert!(!release.chart.version.is_empty(), "{}", release.name);
        }
        assert_eq!(
            release(&plan, "metrics-server").chart.version,
            "3.12.2",
            "the setting, not the default"
        );
    }

    #[test]
    fn cert_manager_installs_its_crds_the_current_way() {
        assert_eq!(
            release(&plan(false), "cert-manager").values,
            json!({"crds": {"enabled": true}})
        );
    }

    #[test]
    fn the_autoscaler_discovers_this_clusters_groups_as_the_role_terraform_made() {
        let plan = plan(true);
        let autoscaler = release(&plan, "cluster-autoscaler");
        assert_eq!(autoscaler.namespace, "kube-system");
        let values = &autoscaler.values;
        assert_eq!(values["autoDiscovery"]["clusterName"], json!("beta9-env-x"));
        assert_eq!(values["awsRegion"], json!("us-east-1"));
        assert_eq!(values["cloudProvider"], json!("aws"));
        let account = &values["rbac"]["serviceAccount"];
        assert_eq!(account["name"], json!("cluster-autoscaler"));
        assert_eq!(
            account["annotations"]["eks.amazonaws.com/role-arn"],
            json!("arn:aws:iam::000000000000:role/beta9-env-x-cluster-autoscaler")
        );
    }

    #[test]
    fn an_environment_applied_before_the_autoscaler_role_is_bootstrapped_without_it_saying_so() {
        let (beta9, model) = (beta9(true), model(Profile::Medium, true));
        let mut infra = infra();
        infra.cluster_autoscaler_role_arn = None;
        let plan = BootstrapPlan::new(&PlanInputs {
            beta9: &beta9,
            infra: &infra,
            model: &model,
            charts: &Charts::default(),
        });
        assert!(
            !names(&plan).contains(&"cluster-autoscaler"),
            "{:?}",
            names(&plan)
        );
        assert_eq!(names(&plan).len(), 5);
        assert_eq!(plan.notes.len(), 1);
        assert!(
            plan.notes[0].contains("cluster_autoscaler_role_arn")
                && plan.notes[0].contains("apply the infrastructure again"),
            "{}",
            plan.notes[0]
        );
    }

    #[test]
    fn the_autoscaler_chart_follows_the_clusters_kubernetes_minor() {
        // BaselineChart::ClusterAutoscaler's default is the last chart of cluster-autoscaler
        // 1.31: when the clusters' Kubernetes version moves, move that pin with it.
        for gpu in [false, true] {
            assert_eq!(
                model(Profile::Small, gpu).cluster.kubernetes_version,
                "1.31"
            );
        }
        assert_eq!(BaselineChart::ClusterAutoscaler.default_version(), "9.44.0");
    }

    #[test]
    fn beta9s_release_carries_the_letsencrypt_cluster_issuer_its_ingresses_name() {
        for gpu in [false, true] {
            let plan = plan(gpu);
            let values = beta9_values(&plan);
            let issuers: Vec<&Value> = values["manifests"]["resources"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["kind"] == json!("ClusterIssuer"))
                .collect();
            assert_eq!(issuers.len(), 1, "gpu: {gpu}");
            let issuer = issuers[0];
            assert_eq!(issuer["apiVersion"], json!("cert-manager.io/v1"));
            assert_eq!(
                issuer["metadata"]["name"],
                values["ingress"]["gateway"]["annotations"]["cert-manager.io/cluster-issuer"]
            );
            let acme = &issuer["spec"]["acme"];
            assert_eq!(
                acme["server"],
                json!("https://acme-v02.api.letsencrypt.org/directory")
            );
            assert_eq!(
                acme["solvers"],
                json!([{"http01": {"ingress": {"ingressClassName": "nginx"}}}])
            );
            assert_eq!(values["ingress"]["gateway"]["className"], json!("nginx"));
        }
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
        let runtime_class = values["manifests"]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["kind"] == json!("RuntimeClass"))
            .unwrap();
        assert_eq!(runtime_class["metadata"]["name"], json!("nvidia"));
        assert_eq!(
            runtime_class["scheduling"]["tolerations"][0]["key"],
            json!("nvidia.com/gpu")
        );
    }
}
